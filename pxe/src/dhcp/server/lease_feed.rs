//! The bound leases of one network, published on a `tokio::sync::watch` channel for whoever
//! follows them live (the DNS server that names guests by their DHCP hostnames).
//!
//! - A set ([`BoundLeases`]) is every lease unexpired at `at`, sorted by address; each [`Lease`]
//!   carries ip, mac, client-id, hostname and `expires` (unix seconds), so a consumer can also
//!   drop a lease itself when its time is up.
//! - The server thread calls [`LeaseFeed::update`] after every batch (after its commit, so the
//!   set holds durable leases, plus after a failed journal flush the ones the pool keeps
//!   reserved) and at every receive timeout (200 ms). A new set goes out when a lease was bound,
//!   renewed, released or declined (the store's generation moved: with a shared database, by any
//!   agent) or when the earliest lease of the last set expired. A store that cannot be read (a
//!   database away) keeps the last set out and is asked again at the next update.
//! - At most one set per [`PUBLISH_EVERY`]: a storm of thousands of ACKs costs a few copies a
//!   second, not one per batch. A change is never lost, only coalesced.
//! - Nothing is copied while nobody holds a receiver.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::dhcp::store::{LeaseBackend, StoreError};
use crate::leases::Lease;

/// Shortest time between two published sets.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// One published set of bound leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundLeases {
    /// Unix seconds the set was taken at: every lease here expires after it.
    pub at: u64,
    /// Sorted by address.
    pub leases: Vec<Lease>,
}

/// The publishing side, owned by the server thread.
pub struct LeaseFeed {
    tx: watch::Sender<Arc<BoundLeases>>,
    /// Pool generation of the last set.
    generation: u64,
    /// Earliest expiry in the last set (u64::MAX when it was empty).
    next_expiry: u64,
    last: Option<Instant>,
    /// A receiver appeared while nobody was listening: the next update publishes.
    stale: bool,
}

impl LeaseFeed {
    pub fn new(pool: &dyn LeaseBackend, now: u64) -> LeaseFeed {
        let set = snapshot(pool, now).unwrap_or_default();
        let next_expiry = earliest(&set);
        let (tx, _) = watch::channel(Arc::new(set));
        LeaseFeed {
            tx,
            generation: pool.generation(),
            next_expiry,
            last: None,
            stale: false,
        }
    }

    /// A receiver of the sets; it sees the current one at once.
    pub fn subscribe(&self) -> watch::Receiver<Arc<BoundLeases>> {
        self.tx.subscribe()
    }

    /// Publish a new set if the leases changed or one expired, and the last set is at least
    /// [`PUBLISH_EVERY`] old. Returns whether it published.
    pub fn update(&mut self, pool: &dyn LeaseBackend, now: u64) -> bool {
        let changed = pool.generation() != self.generation || now >= self.next_expiry;
        if self.tx.receiver_count() == 0 {
            // Nobody listens: remember to catch up, copy nothing. Receivers only come from
            // `subscribe` on the handle, whose own receiver always counts, so this is rare.
            self.stale |= changed;
            return false;
        }
        if !(changed || self.stale) || self.last.is_some_and(|t| t.elapsed() < PUBLISH_EVERY) {
            return false;
        }
        let generation = pool.generation();
        let Ok(set) = snapshot(pool, now) else {
            return false;
        };
        self.generation = generation;
        self.next_expiry = earliest(&set);
        self.last = Some(Instant::now());
        self.stale = false;
        self.tx.send_replace(Arc::new(set));
        true
    }
}

fn snapshot(pool: &dyn LeaseBackend, now: u64) -> Result<BoundLeases, StoreError> {
    Ok(BoundLeases {
        at: now,
        leases: pool.leases_at(now)?,
    })
}

fn earliest(set: &BoundLeases) -> u64 {
    set.leases
        .iter()
        .map(|l| l.expires)
        .min()
        .unwrap_or(u64::MAX)
}
