//! The leases a server handle's `leases()` shows (`hostagent leases`, `status`), published by
//! the server thread only when asked.
//!
//! Building the view clones and sorts every lease: done after every batch it was ~40 % of the
//! DHCP thread's CPU under perfdhcp (see bench/profile-notes.md). A reader raises `requested`
//! and waits; the thread answers between batches, after the flush, so the view shows only
//! durable leases. Both the DHCPv4 and the DHCPv6 server keep one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::lease_feed::LeaseSource;
use crate::dhcp::store::StoreError;

pub(crate) struct LeaseView<L> {
    /// (generation, leases): the generation moves on at every publish.
    published: Mutex<(u64, Vec<L>)>,
    fresh: Condvar,
    requested: AtomicBool,
    /// The serve loop has ended (or never runs): nobody will publish again.
    closed: AtomicBool,
}

impl<L: Clone> LeaseView<L> {
    pub(crate) fn new(initial: Vec<L>) -> LeaseView<L> {
        LeaseView {
            published: Mutex::new((0, initial)),
            fresh: Condvar::new(),
            requested: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// A view nobody publishes to: always empty (a proxyDHCP server's).
    pub(crate) fn empty() -> LeaseView<L> {
        let view = LeaseView::new(Vec::new());
        view.closed.store(true, Ordering::Release);
        view
    }

    /// Called by the serve loop between batches: publish if a reader asked.
    pub(crate) fn publish_if_requested<P: LeaseSource<Lease = L> + ?Sized>(
        &self,
        pool: &P,
        now: u64,
    ) {
        if self.requested.swap(false, Ordering::AcqRel) {
            self.publish(pool.leases_at(now), false);
        }
    }

    /// The serve loop ends: a last view, and readers stop waiting for another.
    pub(crate) fn close<P: LeaseSource<Lease = L> + ?Sized>(&self, pool: &P, now: u64) {
        self.publish(pool.leases_at(now), true);
    }

    /// A new view; a store that cannot be read now (a database away) keeps the last one, and a
    /// waiting reader is still answered with it.
    fn publish(&self, leases: Result<Vec<L>, StoreError>, last: bool) {
        let mut g = self.published.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        match leases {
            Ok(leases) => g.1 = leases,
            Err(e) => tracing::debug!(error = %e, "lease view not refreshed"),
        }
        if last {
            self.closed.store(true, Ordering::Release);
        }
        self.fresh.notify_all();
    }

    /// Ask the serve loop for a fresh view and wait for it (it answers within one receive
    /// timeout or one batch); after `wait`, or once the loop has ended, the last view is used.
    pub(crate) fn read(&self, wait: Duration) -> Vec<L> {
        let mut g = self.published.lock().unwrap_or_else(|p| p.into_inner());
        if !self.closed.load(Ordering::Acquire) {
            let asked_at = g.0;
            self.requested.store(true, Ordering::Release);
            let deadline = Instant::now() + wait;
            while g.0 == asked_at && !self.closed.load(Ordering::Acquire) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                g = self
                    .fresh
                    .wait_timeout(g, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
        g.1.clone()
    }
}
