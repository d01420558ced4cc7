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
//! - Nothing is copied while nobody follows: the server's handle keeps a [`LeaseWatch`], which
//!   subscribes followers without being one. (It used to keep a receiver, which always counted:
//!   then every busy 100 ms cloned and sorted the whole table, ~10 % of the DHCP thread at 60,000
//!   leases under load; see bench/profile-notes.md.)
//!
//! The DHCPv6 server publishes its leases the same way ([`LeaseSource`] is what a feed reads).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::dhcp::pool::Pool;
use crate::dhcp::store::{LeaseBackend, StoreError};
use crate::leases::Lease;

/// Shortest time between two published sets.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// One published set of bound leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundSet<L> {
    /// Unix seconds the set was taken at: every lease here expires after it.
    pub at: u64,
    /// Sorted by address.
    pub leases: Vec<L>,
}

impl<L> Default for BoundSet<L> {
    fn default() -> Self {
        BoundSet {
            at: 0,
            leases: Vec::new(),
        }
    }
}

/// The DHCPv4 server's sets.
pub type BoundLeases = BoundSet<Lease>;

/// What a feed publishes from: a lease table with a generation that moves on every change.
pub trait LeaseSource {
    type Lease: Clone + Send + Sync + 'static;
    fn generation(&self) -> u64;
    /// Unexpired leases at `now`, sorted by address; Err when they cannot be read now.
    fn leases_at(&self, now: u64) -> Result<Vec<Self::Lease>, StoreError>;
    /// The same set for the feed, which asks up to [`PUBLISH_EVERY`]: a store may answer from
    /// a copy it keeps current (see `LeaseBackend::watched_leases`).
    fn watched_leases(&self, now: u64) -> Result<Vec<Self::Lease>, StoreError> {
        self.leases_at(now)
    }
    fn expires(lease: &Self::Lease) -> u64;
}

impl LeaseSource for Pool {
    type Lease = Lease;
    fn generation(&self) -> u64 {
        Pool::generation(self)
    }
    fn leases_at(&self, now: u64) -> Result<Vec<Lease>, StoreError> {
        Ok(Pool::leases_at(self, now))
    }
    fn expires(lease: &Lease) -> u64 {
        lease.expires
    }
}

/// The DHCPv4 server's store, whichever it is (journal or shared database).
impl LeaseSource for dyn LeaseBackend {
    type Lease = Lease;
    fn generation(&self) -> u64 {
        LeaseBackend::generation(self)
    }
    fn leases_at(&self, now: u64) -> Result<Vec<Lease>, StoreError> {
        LeaseBackend::leases_at(self, now)
    }
    fn watched_leases(&self, now: u64) -> Result<Vec<Lease>, StoreError> {
        LeaseBackend::watched_leases(self, now)
    }
    fn expires(lease: &Lease) -> u64 {
        lease.expires
    }
}

/// Subscribes followers of a [`LeaseFeed`] without counting as one.
pub struct LeaseWatch<L = Lease>(Arc<watch::Sender<Arc<BoundSet<L>>>>);

// By hand: a derive would ask `L: Clone`, and only the Arc is cloned.
impl<L> Clone for LeaseWatch<L> {
    fn clone(&self) -> Self {
        LeaseWatch(self.0.clone())
    }
}

impl<L> LeaseWatch<L> {
    /// A watch with no feed behind it: the set never changes (a proxyDHCP server's).
    pub fn fixed(set: BoundSet<L>) -> LeaseWatch<L> {
        LeaseWatch(Arc::new(watch::channel(Arc::new(set)).0))
    }

    /// A receiver: the last published set at once, the current one within one update (a set
    /// that changed while nobody followed goes out at the next update).
    pub fn subscribe(&self) -> watch::Receiver<Arc<BoundSet<L>>> {
        self.0.subscribe()
    }
}

/// The publishing side, owned by the server thread.
pub struct LeaseFeed<P: LeaseSource + ?Sized = Pool> {
    tx: Arc<watch::Sender<Arc<BoundSet<P::Lease>>>>,
    /// Pool generation of the last set.
    generation: u64,
    /// Earliest expiry in the last set (u64::MAX when it was empty).
    next_expiry: u64,
    last: Option<Instant>,
    /// A receiver appeared while nobody was listening: the next update publishes.
    stale: bool,
}

impl<P: LeaseSource + ?Sized> LeaseFeed<P> {
    pub fn new(pool: &P, now: u64) -> LeaseFeed<P> {
        let set = snapshot(pool, now).unwrap_or_default();
        let next_expiry = earliest::<P>(&set);
        let (tx, _) = watch::channel(Arc::new(set));
        LeaseFeed {
            tx: Arc::new(tx),
            generation: pool.generation(),
            next_expiry,
            last: None,
            stale: false,
        }
    }

    /// A receiver of the sets; it sees the last published one at once.
    pub fn subscribe(&self) -> watch::Receiver<Arc<BoundSet<P::Lease>>> {
        self.tx.subscribe()
    }

    /// What a handle keeps to subscribe followers later.
    pub fn watch(&self) -> LeaseWatch<P::Lease> {
        LeaseWatch(self.tx.clone())
    }

    /// Publish a new set if the leases changed or one expired, and the last set is at least
    /// [`PUBLISH_EVERY`] old. Returns whether it published.
    pub fn update(&mut self, pool: &P, now: u64) -> bool {
        let changed = pool.generation() != self.generation || now >= self.next_expiry;
        if self.tx.receiver_count() == 0 {
            // Nobody listens: remember to catch up, copy nothing.
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
        self.next_expiry = earliest::<P>(&set);
        self.last = Some(Instant::now());
        self.stale = false;
        self.tx.send_replace(Arc::new(set));
        true
    }
}

fn snapshot<P: LeaseSource + ?Sized>(pool: &P, now: u64) -> Result<BoundSet<P::Lease>, StoreError> {
    Ok(BoundSet {
        at: now,
        leases: pool.watched_leases(now)?,
    })
}

fn earliest<P: LeaseSource + ?Sized>(set: &BoundSet<P::Lease>) -> u64 {
    set.leases.iter().map(P::expires).min().unwrap_or(u64::MAX)
}
