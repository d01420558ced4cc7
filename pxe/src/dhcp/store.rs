//! The lease store the DHCP server allocates through: the seam between the server's batch loop
//! and where leases live.
//!
//! Two implementations: [`Pool`] (this crate: allocation in memory over the durable journal, one
//! agent per network) and the PostgreSQL store of the `leasedb` crate (allocation by transactions
//! in a database several agents share). The handler calls one operation per client message; the
//! batch loop then calls [`LeaseBackend::commit`] ONCE per batch and sends the batch's ACKs only
//! after it returned Ok:
//!
//! ```text
//! for each packet of the batch: offer / request / release / decline   (staged, not yet durable)
//! commit()                                                            (one fdatasync, or one COMMIT)
//! Ok  → send every reply;  Err → send none of those with `needs_flush`
//! ```
//!
//! The handler asks every question of a batch at once ([`LeaseBackend::answer_all`], one
//! [`StoreOp`] per client message that needs the store, in arrival order), then builds the
//! replies from the answers: a store may send the whole batch in one round trip (the database
//! store does; the journal answers each in memory).
//!
//! An operation that fails (`Err(StoreError)`: the database is unreachable, the journal's disk
//! is gone) leaves its client unanswered: no ACK for a lease that could not be stored, and no
//! NAK either (a NAK would make a bound client give up an address that is still its own).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::dhcp::pool::{unix_now, Client, Lease, LeaseError, Nak, Pool};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The journal could not be written (disk full, I/O error).
    #[error(transparent)]
    Journal(#[from] LeaseError),
    /// The lease database is unreachable, or refused the batch; the message says which and
    /// what to do.
    #[error("{0}")]
    Database(String),
}

/// Where a network's leases are kept, and how that is going; shared between the server thread
/// (which updates it) and whoever reports status.
#[derive(Debug, Default)]
pub struct StoreHealth {
    status: Mutex<StoreStatus>,
}

/// A snapshot of [`StoreHealth`], as `hostagent status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// `journal` or `postgres`.
    pub backend: String,
    /// The journal's path, or the database URL without its password.
    pub location: String,
    /// False while the store cannot take leases (the database is unreachable, the last journal
    /// write failed): no ACK leaves until it is back.
    pub available: bool,
    /// Unix seconds of the last change of `available`.
    pub since: u64,
    /// The last failure, as logged.
    pub last_error: Option<String>,
    /// Failed operations and commits since the server started.
    pub failures: u64,
}

impl StoreHealth {
    pub fn new(backend: &str, location: String) -> Arc<StoreHealth> {
        Arc::new(StoreHealth {
            status: Mutex::new(StoreStatus {
                backend: backend.to_string(),
                location,
                available: true,
                since: unix_now(),
                last_error: None,
                failures: 0,
            }),
        })
    }

    pub fn snapshot(&self) -> StoreStatus {
        self.lock().clone()
    }

    /// Whether the store was available at the last operation.
    pub fn available(&self) -> bool {
        self.lock().available
    }

    /// An operation or commit worked. Returns true when this ends an outage.
    pub fn succeeded(&self) -> bool {
        let mut s = self.lock();
        let recovered = !s.available;
        if recovered {
            s.available = true;
            s.since = unix_now();
        }
        recovered
    }

    /// An operation or commit failed with `error`. Returns true when this starts an outage.
    pub fn failed(&self, error: &str) -> bool {
        let mut s = self.lock();
        let started = s.available;
        if started {
            s.available = false;
            s.since = unix_now();
        }
        s.failures += 1;
        s.last_error = Some(error.to_string());
        started
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One client message's question to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// [`LeaseBackend::offer`].
    Offer {
        client: Client,
        requested: Option<Ipv4Addr>,
    },
    /// [`LeaseBackend::request`].
    Request {
        client: Client,
        ip: Ipv4Addr,
        hostname: Option<String>,
    },
    /// [`LeaseBackend::release`].
    Release { client: Client, ip: Ipv4Addr },
    /// [`LeaseBackend::decline`].
    Decline { client: Client, ip: Ipv4Addr },
    /// [`LeaseBackend::offer_not_taken`].
    OfferNotTaken {
        client: Client,
        chosen: Option<Ipv4Addr>,
    },
}

/// The store's answer to a [`StoreOp`], variant for variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreAnswer {
    Offered(Option<Ipv4Addr>),
    Requested(Result<Lease, Nak>),
    Released(bool),
    Declined(bool),
    OfferDropped,
}

/// `op` asked of `store` alone: what [`LeaseBackend::answer_all`] does for each op unless a
/// store answers a batch better.
pub fn answer_one<S: LeaseBackend + ?Sized>(
    store: &mut S,
    op: &StoreOp,
    now: u64,
) -> Result<StoreAnswer, StoreError> {
    Ok(match op {
        StoreOp::Offer { client, requested } => {
            StoreAnswer::Offered(store.offer(client, *requested, now)?)
        }
        StoreOp::Request {
            client,
            ip,
            hostname,
        } => StoreAnswer::Requested(store.request(client, *ip, hostname.as_deref(), now)?),
        StoreOp::Release { client, ip } => StoreAnswer::Released(store.release(client, *ip)?),
        StoreOp::Decline { client, ip } => StoreAnswer::Declined(store.decline(client, *ip, now)?),
        StoreOp::OfferNotTaken { client, chosen } => {
            store.offer_not_taken(client, *chosen, now)?;
            StoreAnswer::OfferDropped
        }
    })
}

/// What the DHCP server needs from a lease store. Every operation is part of the current batch;
/// nothing of it is durable (and no ACK for it may leave) before [`LeaseBackend::commit`]
/// returned Ok. See the module docs.
pub trait LeaseBackend: Send {
    /// The address to offer `client` (its reservation, its lease, what it asked for, a free
    /// one), held for it a while so that no other client is offered it; None when nothing is
    /// free.
    fn offer(
        &mut self,
        client: &Client,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Result<Option<Ipv4Addr>, StoreError>;

    /// Grant or renew `ip` to `client` (staged), or the reason it may not have it.
    fn request(
        &mut self,
        client: &Client,
        ip: Ipv4Addr,
        hostname: Option<&str>,
        now: u64,
    ) -> Result<Result<Lease, Nak>, StoreError>;

    /// The client gave `ip` back; whether it held it.
    fn release(&mut self, client: &Client, ip: Ipv4Addr) -> Result<bool, StoreError>;

    /// The client found `ip` in use: quarantine it; whether that was honoured.
    fn decline(&mut self, client: &Client, ip: Ipv4Addr, now: u64) -> Result<bool, StoreError>;

    /// The client's REQUEST names another server (RFC 2131 §4.3.2: it took that server's
    /// offer): what this server holds for it, other than `chosen`, may go at once instead of
    /// when the hold runs out. Stores whose holds cost nothing may ignore it.
    fn offer_not_taken(
        &mut self,
        _client: &Client,
        _chosen: Option<Ipv4Addr>,
        _now: u64,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Every op of a batch, in order, each answered as if asked alone after the ones before it
    /// (one answer per op, in the same order). A store may send them together.
    fn answer_all(&mut self, ops: &[StoreOp], now: u64) -> Vec<Result<StoreAnswer, StoreError>> {
        ops.iter().map(|op| answer_one(self, op, now)).collect()
    }

    /// Make the batch durable: one fdatasync, or one database COMMIT. On Err nothing of the
    /// batch may be acknowledged.
    fn commit(&mut self) -> Result<(), StoreError>;

    /// Whether the batch so far holds anything [`LeaseBackend::commit`] must make durable.
    fn has_pending(&self) -> bool;

    /// Whether an OFFER must wait for the commit too: true where the hold behind it only
    /// exists once committed (a database other servers allocate from).
    fn offers_wait_for_commit(&self) -> bool;

    /// Moves on whenever the bound leases change (here or, for a shared store, anywhere):
    /// whoever follows them knows when to look again.
    fn generation(&self) -> u64;

    /// Leases unexpired at `now`, sorted by address (a shared store: every agent's).
    fn leases_at(&self, now: u64) -> Result<Vec<Lease>, StoreError>;

    /// The same leases for whoever follows them live (the lease watch, asked up to 10 times a
    /// second while leases change): a store may answer from a copy it keeps current with its
    /// own commits and reads again when [`LeaseBackend::generation`] moved for another writer.
    fn watched_leases(&self, now: u64) -> Result<Vec<Lease>, StoreError> {
        self.leases_at(now)
    }

    /// The client's lease, expired or not.
    fn lease_for(&self, client: &Client) -> Result<Option<Lease>, StoreError>;

    /// Unexpired leases by the system clock.
    fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.leases_at(unix_now())
    }

    /// The store's state, for status output; shared, so it can be read while the server runs.
    fn health(&self) -> Arc<StoreHealth>;
}

impl LeaseBackend for Pool {
    fn offer(
        &mut self,
        client: &Client,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Result<Option<Ipv4Addr>, StoreError> {
        Ok(Pool::offer(self, client, requested, now))
    }

    fn request(
        &mut self,
        client: &Client,
        ip: Ipv4Addr,
        hostname: Option<&str>,
        now: u64,
    ) -> Result<Result<Lease, Nak>, StoreError> {
        Ok(Pool::request(self, client, ip, hostname, now))
    }

    fn release(&mut self, client: &Client, ip: Ipv4Addr) -> Result<bool, StoreError> {
        Ok(Pool::release(self, client, ip))
    }

    fn decline(&mut self, client: &Client, ip: Ipv4Addr, now: u64) -> Result<bool, StoreError> {
        Ok(Pool::decline(self, client, ip, now))
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let result = Pool::flush(self);
        let health = Pool::health(self);
        match &result {
            Ok(()) => {
                if health.succeeded() {
                    tracing::info!(network = %self.network(), "lease journal writable again");
                }
            }
            Err(e) => {
                health.failed(&e.to_string());
            }
        }
        Ok(result?)
    }

    fn has_pending(&self) -> bool {
        Pool::has_pending(self)
    }

    fn offers_wait_for_commit(&self) -> bool {
        // Holds live in this process's memory: they take effect the moment they are made.
        false
    }

    fn generation(&self) -> u64 {
        Pool::generation(self)
    }

    fn leases_at(&self, now: u64) -> Result<Vec<Lease>, StoreError> {
        Ok(Pool::leases_at(self, now))
    }

    fn lease_for(&self, client: &Client) -> Result<Option<Lease>, StoreError> {
        Ok(Pool::lease_for(self, client))
    }

    fn health(&self) -> Arc<StoreHealth> {
        Pool::health(self)
    }
}
