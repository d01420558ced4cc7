//! One network's leases in the shared database: [`PgStore`] is the `LeaseBackend` the DHCP
//! server of that network allocates through.
//!
//! A batch is one transaction: the first operation of a batch takes a connection from the pool
//! and sends BEGIN; the server asks all the batch's questions at once (`answer_all`), which is
//! ONE call of `hostagent.batch4`: every client message answered by its schema function
//! (`offer4`, `request4`, …) in order, in one round trip; `commit` sends COMMIT and gives the
//! connection back. (A round trip per message made the batch a chain of waits: the DHCP thread
//! and the database backend took turns, each waking the other twice per message, and the rate
//! stopped near 2,000 exchanges/s with both CPUs half idle; one call per batch reached 5,000.)
//! Any failure inside a batch fails the whole batch: the transaction is rolled back, its
//! clients get nothing (no ACK and no OFFER whose hold was not stored), and they retry.
//!
//! The bound leases the lease watch follows (DNS names, `status`' counts by agent) are read
//! whole from the database once, then kept as this agent commits its own changes (a
//! [`LeaseIndex`], as the journal keeps them), and read whole again only when a change this agent did not make is
//! notified (another agent's, a hand edit's: see `listen`), or after [`MIRROR_REFRESH`]. Reading
//! the whole table at every publish (up to 10 a second while leases change) cost the database
//! more than the leases themselves under load.
//!
//! While the database is unreachable, a new attempt is made at most every [`RETRY_EVERY`];
//! batches in between fail at once instead of each waiting the connect timeout. The outage is
//! logged when it starts and when it ends, and [`StoreHealth`] (`hostagent status`) says so.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::types::Type;
use pxe::config::{DhcpConfig, Mac};
use pxe::dhcp::pool::{
    is_host_address, Client, ClientId, ClientKey, Lease, Nak, DECLINE_QUARANTINE_SECS,
    OFFER_HOLD_SECS,
};
use pxe::dhcp::store::{LeaseBackend, StoreAnswer, StoreError, StoreHealth, StoreOp};
use pxe::leases::{LeaseIndex, Record};

use crate::database::{Conn, Database, DbError};
use crate::listen::{Listener, Moved};

/// Longest a network's preparation (its range's rows, its reservations) may take.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often an unreachable database is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The longest the copy of the bound leases is kept without reading them whole again: what it
/// cannot follow (a row another transaction had locked when a REQUEST freed the client's other
/// addresses, a lost notification) is set right within this.
pub const MIRROR_REFRESH: Duration = Duration::from_secs(60);

/// The network's bound leases as this agent knows them (see the module docs).
struct Mirror {
    index: LeaseIndex,
    /// `Moved::foreign` when they were read.
    foreign: u64,
    read_at: Instant,
}

/// The network as the database functions need it.
#[derive(Debug, Clone)]
struct Net {
    name: String,
    subnet: ipnet::Ipv4Net,
    first: IpAddr,
    last: IpAddr,
    server: IpAddr,
    lease_secs: u64,
    reservations: Vec<(Mac, Ipv4Addr)>,
}

/// One network's `LeaseBackend` over the shared database.
pub struct PgStore {
    db: Arc<Database>,
    net: Net,
    /// The batch's connection, inside BEGIN.
    conn: Option<Conn>,
    /// Set by the first failure of a batch: the rest of it fails at once, and so does commit.
    batch_error: Option<String>,
    /// The batch changed a lease (not only offer holds): its COMMIT is synchronous.
    leases_changed: bool,
    /// The network's rows and this agent's reservations are in the database.
    prepared: bool,
    /// The address offered last: the search for a free one goes on after it (see `offer4`).
    last_offer: Option<Ipv4Addr>,
    /// While the database is away: no attempt before this.
    retry_at: Cell<Option<Instant>>,
    /// This agent's committed lease changes plus every NOTIFY for the network; and the changes
    /// this agent did not make.
    moved: Moved,
    /// The bound leases, read whole at the first `leases_at` and kept since.
    mirror: RefCell<Option<Mirror>>,
    /// The batch's lease changes, applied to the mirror once committed.
    pending: Vec<Record>,
    /// How often the bound leases were read whole.
    mirror_reads: Cell<u64>,
    health: Arc<StoreHealth>,
    _listener: Listener,
}

impl PgStore {
    /// The store of `cfg`'s network (its range, server address, lease time and reservations).
    /// Reaches the database now if it can (schema, the range's rows, the reservations), and
    /// otherwise at the first batch after it comes back.
    pub fn new(db: Arc<Database>, cfg: &DhcpConfig) -> PgStore {
        let net = Net {
            name: cfg.network.clone(),
            subnet: cfg.subnet,
            first: IpAddr::V4(cfg.range_start),
            last: IpAddr::V4(cfg.range_end),
            server: IpAddr::V4(cfg.server_ip),
            lease_secs: cfg.lease_time.as_secs(),
            reservations: cfg.hosts.iter().map(|h| (h.mac, h.ip)).collect(),
        };
        let moved = Moved::default();
        let listener = Listener::start(db.clone(), net.name.clone(), moved.clone());
        let mut store = PgStore {
            health: StoreHealth::new("postgres", db.location().to_string()),
            db,
            net,
            conn: None,
            batch_error: None,
            leases_changed: false,
            prepared: false,
            retry_at: Cell::new(None),
            last_offer: None,
            moved,
            mirror: RefCell::new(None),
            pending: Vec::new(),
            mirror_reads: Cell::new(0),
            _listener: listener,
        };
        match store.connect() {
            Ok(_) => {
                store.health.succeeded();
            }
            Err(e) => {
                tracing::error!(network = %store.net.name, error = %e, "lease database not reachable at start: the network's DHCP answers nothing until it is")
            }
        }
        store
    }

    /// A pooled connection with the network prepared; Err at once while the last attempt
    /// failed less than [`RETRY_EVERY`] ago.
    fn connect(&mut self) -> Result<Conn, StoreError> {
        if self.retry_at.get().is_some_and(|t| Instant::now() < t) {
            return Err(self.still_down());
        }
        let mut conn = match self.db.get() {
            Ok(c) => c,
            Err(e) => return Err(self.unavailable(&e)),
        };
        if !self.prepared {
            if let Err(e) = self.prepare(&mut conn) {
                return Err(self.unavailable(&e));
            }
            self.prepared = true;
        }
        self.retry_at.set(None);
        Ok(conn)
    }

    /// The range's rows and this agent's reservations; warns about other agents' reservations
    /// that disagree.
    fn prepare(&self, conn: &mut Conn) -> Result<(), DbError> {
        let n = &self.net;
        let mut conn = conn
            .transaction()
            .map_err(DbError::query("begin preparing the network"))?;
        // A whole range's rows at once (65,024 for a /16) can take longer than `timeout` on a
        // busy server; failing here would fail again at every retry, and the network would
        // never be served.
        conn.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            PREPARE_TIMEOUT.as_millis()
        ))
        .map_err(DbError::query("begin preparing the network"))?;
        let added: i64 = conn
            .query_typed_one(
                "SELECT hostagent.prepare4($1, $2, $3)",
                &[
                    (&n.name, Type::TEXT),
                    (&n.first, Type::INET),
                    (&n.last, Type::INET),
                ],
            )
            .map_err(DbError::query("create the network's address rows"))?
            .get(0);
        if added > 0 {
            // The planner's statistics of a table that just grew by a whole range: without them
            // it scans the table for every offer until autovacuum gets to it.
            conn.batch_execute("ANALYZE hostagent.lease4")
                .map_err(DbError::query("analyze the address rows"))?;
        }
        let macs: Vec<String> = n.reservations.iter().map(|(m, _)| m.to_string()).collect();
        let ips: Vec<IpAddr> = n.reservations.iter().map(|(_, i)| IpAddr::V4(*i)).collect();
        let agent = self.db.agent();
        let disagree = conn
            .query_typed(
                "SELECT agent, mac::text, ip FROM \
                 hostagent.set_reservations4($1, $2, $3::text[]::macaddr[], $4)",
                &[
                    (&n.name, Type::TEXT),
                    (&agent, Type::TEXT),
                    (&macs, Type::TEXT_ARRAY),
                    (&ips, Type::INET_ARRAY),
                ],
            )
            .map_err(DbError::query("store the reservations"))?;
        for row in disagree {
            let (other, mac, ip): (String, String, IpAddr) = (row.get(0), row.get(1), row.get(2));
            tracing::warn!(network = %n.name, agent = %other, %mac, %ip, "another agent's reservation disagrees with this agent's: both are honoured; make the configs agree");
        }
        conn.commit()
            .map_err(DbError::query("commit the network's rows and reservations"))?;
        tracing::info!(network = %n.name, location = %self.db.location(), agent, new_addresses = added, reservations = n.reservations.len(), "lease database ready");
        Ok(())
    }

    /// The batch's connection, with BEGIN sent.
    fn begin(&mut self) -> Result<&mut Conn, StoreError> {
        if let Some(e) = &self.batch_error {
            return Err(StoreError::Database(e.clone()));
        }
        if self.conn.is_none() {
            let mut conn = match self.connect() {
                Ok(c) => c,
                Err(e) => {
                    self.batch_error = Some(e.to_string());
                    return Err(e);
                }
            };
            if let Err(e) = conn.batch_execute("BEGIN") {
                return Err(self.fail_batch("begin a transaction", e, conn.is_closed()));
            }
            self.conn = Some(conn);
        }
        Ok(self
            .conn
            .as_mut()
            .expect("the batch's connection was just set"))
    }

    /// Run one statement of the batch.
    fn call<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let conn = self.begin()?;
        let result = f(conn);
        let closed = conn.is_closed();
        result.map_err(|e| self.fail_batch(what, e, closed))
    }

    /// The batch fails: everything after this in it fails at once, commit rolls it back. A
    /// lost connection is also the start of an outage.
    fn fail_batch(&mut self, what: &str, e: postgres::Error, closed: bool) -> StoreError {
        let err = DbError::Query {
            what: what.to_string(),
            source: e,
        };
        let store_err = if closed {
            self.conn = None;
            self.unavailable(&DbError::Unreachable {
                location: self.db.location().to_string(),
                reason: err.to_string(),
            })
        } else {
            self.health.failed(&err.to_string());
            tracing::warn!(network = %self.net.name, error = %err, "lease database refused the batch: its replies are withheld");
            StoreError::Database(err.to_string())
        };
        self.batch_error = Some(store_err.to_string());
        store_err
    }

    /// The database cannot be reached: note it, and wait [`RETRY_EVERY`] before trying again.
    fn unavailable(&self, e: &DbError) -> StoreError {
        self.retry_at.set(Some(Instant::now() + RETRY_EVERY));
        let msg = e.to_string();
        if self.health.failed(&msg) {
            tracing::error!(network = %self.net.name, error = %msg, "lease database unreachable: no lease is acknowledged on this network until it is back");
        }
        StoreError::Database(msg)
    }

    fn still_down(&self) -> StoreError {
        StoreError::Database(
            self.health
                .snapshot()
                .last_error
                .unwrap_or_else(|| "lease database unreachable".to_string()),
        )
    }

    /// A read outside the batch (the lease view, the DNS feed): a pooled connection of its own.
    fn read<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        if self.retry_at.get().is_some_and(|t| Instant::now() < t) {
            return Err(self.still_down());
        }
        let mut conn = self.db.get().map_err(|e| self.unavailable(&e))?;
        f(&mut conn).map_err(|e| {
            let err = DbError::Query {
                what: what.to_string(),
                source: e,
            };
            if conn.is_closed() {
                self.unavailable(&err)
            } else {
                StoreError::Database(err.to_string())
            }
        })
    }

    fn agent(&self) -> String {
        self.db.agent().to_string()
    }

    /// How many times the bound leases were read whole from the database: every `leases_at`
    /// (`hostagent leases`), and for the lease watch the first time, then only after a change
    /// this agent did not make, or after [`MIRROR_REFRESH`].
    pub fn mirror_reads(&self) -> u64 {
        self.mirror_reads.get()
    }
}

/// The bytes a client is known by in `lease4.client`: `01` + MAC (an Ethernet-type identifier,
/// the same as a client without one) or its own identifier (see `pxe::leases::client`).
pub fn key_bytes(key: &ClientKey) -> Vec<u8> {
    match key {
        ClientKey::Mac(mac) => {
            let mut v = vec![1];
            v.extend_from_slice(&mac.octets());
            v
        }
        ClientKey::Id(id) => id.as_bytes().to_vec(),
    }
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// The columns `ip, mac::text, client_id, hostname, expires, agent` as a lease.
const LEASE_COLUMNS: &str = "ip, mac::text, client_id, hostname, expires, agent";

fn lease_of(row: &postgres::Row) -> Option<Lease> {
    let ip = match row.get::<_, IpAddr>(0) {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => return None,
    };
    let mac: Mac = row.get::<_, String>(1).parse().ok()?;
    let client_id = row
        .get::<_, Option<Vec<u8>>>(2)
        .and_then(|b| ClientId::new(&b));
    Some(Lease {
        mac,
        ip,
        expires: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
        hostname: row.get(3),
        client_id,
        agent: row.get(5),
    })
}

/// The arrays `hostagent.batch4` takes: element i is asked message i.
#[derive(Default)]
struct BatchArrays {
    op: Vec<&'static str>,
    key: Vec<Vec<u8>>,
    mac: Vec<String>,
    client_id: Vec<Option<Vec<u8>>>,
    ip: Vec<Option<IpAddr>>,
    hostname: Vec<Option<String>>,
}

impl BatchArrays {
    fn push(
        &mut self,
        op: &'static str,
        client: &Client,
        ip: Option<Ipv4Addr>,
        hostname: Option<&str>,
    ) {
        self.op.push(op);
        self.key.push(key_bytes(&client.key()));
        self.mac.push(client.mac.to_string());
        self.client_id
            .push(client.id.as_ref().map(|i| i.as_bytes().to_vec()));
        self.ip.push(ip.map(IpAddr::V4));
        self.hostname
            .push(hostname.map(|h| pxe::leases::truncate_hostname(h).to_string()));
    }
}

fn unexpected(answer: StoreAnswer) -> StoreError {
    StoreError::Database(format!("lease database: unexpected answer {answer:?}"))
}

impl PgStore {
    /// One op alone: a batch of one.
    fn ask(&mut self, op: StoreOp, now: u64) -> Result<StoreAnswer, StoreError> {
        self.answer_all(std::slice::from_ref(&op), now)
            .pop()
            .unwrap_or_else(|| Err(StoreError::Database("lease database: no answer".into())))
    }

    /// Row `row` of `batch4` as the answer to `op`; the lease changes it makes are staged for
    /// the mirror and make the COMMIT synchronous.
    fn answer_of(&mut self, op: &StoreOp, row: &postgres::Row, now: u64) -> StoreAnswer {
        match op {
            StoreOp::Offer { .. } => {
                let ip = match row.get::<_, Option<IpAddr>>(0) {
                    Some(IpAddr::V4(ip)) => Some(ip),
                    _ => None,
                };
                if ip.is_some() {
                    self.last_offer = ip;
                }
                StoreAnswer::Offered(ip)
            }
            StoreOp::Request { client, ip, .. } => {
                let outcome: Option<String> = row.get(1);
                StoreAnswer::Requested(match outcome.as_deref() {
                    Some("ack") => {
                        self.leases_changed = true;
                        let lease = Lease {
                            mac: client.mac,
                            ip: *ip,
                            expires: now.saturating_add(self.net.lease_secs),
                            hostname: row.get(2),
                            client_id: client.id.clone(),
                            agent: Some(self.agent()),
                        };
                        self.pending.push(Record::Lease(lease.clone()));
                        Ok(lease)
                    }
                    Some("reserved") => Err(Nak::Reserved(*ip)),
                    Some("not_its_reservation") => match row.get::<_, Option<IpAddr>>(3) {
                        Some(IpAddr::V4(reserved)) => Err(Nak::NotItsReservation {
                            requested: *ip,
                            reserved,
                        }),
                        _ => Err(Nak::Reserved(*ip)),
                    },
                    Some("out_of_range") => Err(Nak::OutOfRange(*ip)),
                    _ => Err(Nak::Taken(*ip)),
                })
            }
            StoreOp::Release { client, ip } => {
                let held = row.get::<_, Option<bool>>(4).unwrap_or(false);
                if held {
                    self.leases_changed = true;
                    self.pending.push(match client.key() {
                        ClientKey::Mac(mac) => Record::Release { mac, ip: *ip },
                        ClientKey::Id(id) => Record::ReleaseClient { id, ip: *ip },
                    });
                }
                StoreAnswer::Released(held)
            }
            StoreOp::Decline { client, ip } => {
                let honoured = row.get::<_, Option<bool>>(4).unwrap_or(false);
                if honoured {
                    let until = now.saturating_add(DECLINE_QUARANTINE_SECS);
                    self.leases_changed = true;
                    self.pending.push(Record::Decline { ip: *ip, until });
                    tracing::warn!(network = %self.net.name, %ip, mac = %client.mac, until, "address declined, quarantined for every agent");
                }
                StoreAnswer::Declined(honoured)
            }
            StoreOp::OfferNotTaken { .. } => StoreAnswer::OfferDropped,
        }
    }
}

impl LeaseBackend for PgStore {
    fn offer(
        &mut self,
        client: &Client,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Result<Option<Ipv4Addr>, StoreError> {
        let op = StoreOp::Offer {
            client: client.clone(),
            requested,
        };
        match self.ask(op, now)? {
            StoreAnswer::Offered(ip) => Ok(ip),
            other => Err(unexpected(other)),
        }
    }

    fn request(
        &mut self,
        client: &Client,
        ip: Ipv4Addr,
        hostname: Option<&str>,
        now: u64,
    ) -> Result<Result<Lease, Nak>, StoreError> {
        let op = StoreOp::Request {
            client: client.clone(),
            ip,
            hostname: hostname.map(str::to_string),
        };
        match self.ask(op, now)? {
            StoreAnswer::Requested(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    fn release(&mut self, client: &Client, ip: Ipv4Addr) -> Result<bool, StoreError> {
        let op = StoreOp::Release {
            client: client.clone(),
            ip,
        };
        // A release decides nothing by the clock.
        match self.ask(op, 0)? {
            StoreAnswer::Released(held) => Ok(held),
            other => Err(unexpected(other)),
        }
    }

    fn decline(&mut self, client: &Client, ip: Ipv4Addr, now: u64) -> Result<bool, StoreError> {
        let op = StoreOp::Decline {
            client: client.clone(),
            ip,
        };
        match self.ask(op, now)? {
            StoreAnswer::Declined(honoured) => Ok(honoured),
            other => Err(unexpected(other)),
        }
    }

    fn offer_not_taken(
        &mut self,
        client: &Client,
        chosen: Option<Ipv4Addr>,
        now: u64,
    ) -> Result<(), StoreError> {
        let op = StoreOp::OfferNotTaken {
            client: client.clone(),
            chosen,
        };
        self.ask(op, now).map(|_| ())
    }

    /// The batch's ops in one call of `hostagent.batch4` (one round trip, inside the batch's
    /// transaction), but a REQUEST for an address outside the network, which is refused here.
    fn answer_all(&mut self, ops: &[StoreOp], now: u64) -> Vec<Result<StoreAnswer, StoreError>> {
        let mut answers: Vec<Option<Result<StoreAnswer, StoreError>>> =
            ops.iter().map(|_| None).collect();
        let mut asked = Vec::with_capacity(ops.len());
        let mut arrays = BatchArrays::default();
        for (i, op) in ops.iter().enumerate() {
            match op {
                StoreOp::Offer { client, requested } => {
                    arrays.push("offer", client, *requested, None)
                }
                StoreOp::Request { ip, .. } if !is_host_address(self.net.subnet, *ip) => {
                    answers[i] = Some(Ok(StoreAnswer::Requested(Err(Nak::WrongNetwork(*ip)))));
                    continue;
                }
                StoreOp::Request {
                    client,
                    ip,
                    hostname,
                } => arrays.push("request", client, Some(*ip), hostname.as_deref()),
                StoreOp::Release { client, ip } => arrays.push("release", client, Some(*ip), None),
                StoreOp::Decline { client, ip } => arrays.push("decline", client, Some(*ip), None),
                StoreOp::OfferNotTaken { client, chosen } => {
                    arrays.push("forget", client, *chosen, None)
                }
            }
            asked.push(i);
        }
        if !asked.is_empty() {
            let n = self.net.clone();
            let agent = self.agent();
            let after = self.last_offer.map(IpAddr::V4);
            let expires = secs(now.saturating_add(n.lease_secs));
            let until = secs(now.saturating_add(DECLINE_QUARANTINE_SECS));
            let a = &arrays;
            let rows = self.call("answer the batch (batch4)", |c| {
                c.query_typed(
                    "SELECT o_ip, o_outcome, o_hostname, o_reserved, o_done FROM hostagent.batch4(\
                     $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                     $11, $12, $13::text[]::macaddr[], $14, $15, $16)",
                    &[
                        (&n.name, Type::TEXT),
                        (&n.first, Type::INET),
                        (&n.last, Type::INET),
                        (&n.server, Type::INET),
                        (&agent, Type::TEXT),
                        (&secs(now), Type::INT8),
                        (&secs(OFFER_HOLD_SECS), Type::INT8),
                        (&expires, Type::INT8),
                        (&until, Type::INT8),
                        (&after, Type::INET),
                        (&a.op, Type::TEXT_ARRAY),
                        (&a.key, Type::BYTEA_ARRAY),
                        (&a.mac, Type::TEXT_ARRAY),
                        (&a.client_id, Type::BYTEA_ARRAY),
                        (&a.ip, Type::INET_ARRAY),
                        (&a.hostname, Type::TEXT_ARRAY),
                    ],
                )
            });
            match rows {
                Ok(rows) if rows.len() == asked.len() => {
                    for (row, &i) in rows.iter().zip(&asked) {
                        answers[i] = Some(Ok(self.answer_of(&ops[i], row, now)));
                    }
                }
                Ok(rows) => {
                    let e = format!(
                        "lease database: batch4 answered {} of {} operations",
                        rows.len(),
                        asked.len()
                    );
                    self.batch_error = Some(e.clone());
                    for &i in &asked {
                        answers[i] = Some(Err(StoreError::Database(e.clone())));
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    for &i in &asked {
                        answers[i] = Some(Err(StoreError::Database(e.clone())));
                    }
                }
            }
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(StoreError::Database("not asked".into()))))
            .collect()
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let changed = std::mem::take(&mut self.leases_changed);
        let pending = std::mem::take(&mut self.pending);
        if let Some(e) = self.batch_error.take() {
            if let Some(mut conn) = self.conn.take() {
                if !conn.is_closed() {
                    let _ = conn.batch_execute("ROLLBACK");
                }
            }
            return Err(StoreError::Database(e));
        }
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        // Holds need not survive a database crash (the REQUEST decides); leases must.
        let sql = if changed {
            "COMMIT"
        } else {
            "SET LOCAL synchronous_commit TO OFF; COMMIT"
        };
        match conn.batch_execute(sql) {
            Ok(()) => {
                if changed {
                    self.moved.generation.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(m) = self.mirror.get_mut() {
                    for r in &pending {
                        m.index.apply(r);
                    }
                }
                if self.health.succeeded() {
                    tracing::info!(network = %self.net.name, location = %self.db.location(), "lease database reachable again: serving");
                }
                Ok(())
            }
            Err(e) => {
                let closed = conn.is_closed();
                drop(conn);
                let err = self.fail_batch("commit", e, closed);
                self.batch_error = None;
                Err(err)
            }
        }
    }

    fn has_pending(&self) -> bool {
        self.conn.is_some() || self.batch_error.is_some()
    }

    fn offers_wait_for_commit(&self) -> bool {
        true
    }

    fn generation(&self) -> u64 {
        self.moved.generation.load(Ordering::Relaxed)
    }

    fn leases_at(&self, now: u64) -> Result<Vec<Lease>, StoreError> {
        // Read before the table is: a change notified during the read is read again next time.
        let foreign = self.moved.foreign.load(Ordering::Acquire);
        let name = self.net.name.clone();
        let rows = self.read("read the leases", |c| {
            c.query_typed(
                &format!(
                    "SELECT {LEASE_COLUMNS} FROM hostagent.lease4 \
                     WHERE network = $1 AND client IS NOT NULL AND expires > $2 ORDER BY ip"
                ),
                &[(&name, Type::TEXT), (&secs(now), Type::INT8)],
            )
        })?;
        let mut index = LeaseIndex::default();
        for lease in rows.iter().filter_map(lease_of) {
            index.apply(&Record::Lease(lease));
        }
        let leases = index.unexpired(now);
        self.mirror_reads.set(self.mirror_reads.get() + 1);
        *self.mirror.borrow_mut() = Some(Mirror {
            index,
            foreign,
            read_at: Instant::now(),
        });
        Ok(leases)
    }

    fn watched_leases(&self, now: u64) -> Result<Vec<Lease>, StoreError> {
        let foreign = self.moved.foreign.load(Ordering::Acquire);
        if let Some(m) = self.mirror.borrow().as_ref() {
            if m.foreign == foreign && m.read_at.elapsed() < MIRROR_REFRESH {
                return Ok(m.index.unexpired(now));
            }
        }
        self.leases_at(now)
    }

    fn lease_for(&self, client: &Client) -> Result<Option<Lease>, StoreError> {
        let name = self.net.name.clone();
        let key = key_bytes(&client.key());
        let rows = self.read("read a lease", |c| {
            c.query_typed(
                &format!(
                    "SELECT {LEASE_COLUMNS} FROM hostagent.lease4 \
                     WHERE network = $1 AND client = $2 ORDER BY expires DESC LIMIT 1"
                ),
                &[(&name, Type::TEXT), (&key, Type::BYTEA)],
            )
        })?;
        Ok(rows.first().and_then(lease_of))
    }

    fn health(&self) -> Arc<StoreHealth> {
        self.health.clone()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            if !conn.is_closed() {
                let _ = conn.batch_execute("ROLLBACK");
            }
        }
    }
}
