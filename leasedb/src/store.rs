//! One network's leases in the shared database: [`PgStore`] is the `LeaseBackend` the DHCP
//! server of that network allocates through.
//!
//! A batch is one transaction: the first operation of a batch takes a connection from the pool
//! and sends BEGIN, each client message is one call of a schema function (`offer4`,
//! `request4`, …; one round trip each), and `commit` sends COMMIT and gives the connection
//! back. Any failure inside a batch fails the whole batch: the transaction is rolled back, its
//! clients get nothing (no ACK and no OFFER whose hold was not stored), and they retry.
//!
//! While the database is unreachable, a new attempt is made at most every [`RETRY_EVERY`];
//! batches in between fail at once instead of each waiting the connect timeout. The outage is
//! logged when it starts and when it ends, and [`StoreHealth`] (`hostagent status`) says so.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::types::Type;
use pxe::config::{DhcpConfig, Mac};
use pxe::dhcp::pool::{
    is_host_address, Client, ClientId, ClientKey, Lease, Nak, DECLINE_QUARANTINE_SECS,
    OFFER_HOLD_SECS,
};
use pxe::dhcp::store::{LeaseBackend, StoreError, StoreHealth};

use crate::database::{Conn, Database, DbError};
use crate::listen::Listener;

/// Longest a network's preparation (its range's rows, its reservations) may take.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often an unreachable database is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

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
    /// This agent's committed lease changes plus every NOTIFY for the network.
    generation: Arc<AtomicU64>,
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
        let generation = Arc::new(AtomicU64::new(0));
        let listener = Listener::start(db.clone(), net.name.clone(), generation.clone());
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
            generation,
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

impl LeaseBackend for PgStore {
    fn offer(
        &mut self,
        client: &Client,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Result<Option<Ipv4Addr>, StoreError> {
        let key = key_bytes(&client.key());
        let mac = client.mac.to_string();
        let requested = requested.map(IpAddr::V4);
        let (n, agent) = (self.net.clone(), self.agent());
        let after = self.last_offer.map(IpAddr::V4);
        let ip: Option<IpAddr> = self.call("offer an address (offer4)", |c| {
            Ok(c.query_typed_one(
                "SELECT hostagent.offer4($1, $2, $3::macaddr, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    (&n.name, Type::TEXT),
                    (&key, Type::BYTEA),
                    (&mac, Type::TEXT),
                    (&requested, Type::INET),
                    (&secs(now), Type::INT8),
                    (&n.first, Type::INET),
                    (&n.last, Type::INET),
                    (&n.server, Type::INET),
                    (&secs(OFFER_HOLD_SECS), Type::INT8),
                    (&agent, Type::TEXT),
                    (&after, Type::INET),
                ],
            )?
            .get(0))
        })?;
        let ip = match ip {
            Some(IpAddr::V4(ip)) => Some(ip),
            _ => None,
        };
        if ip.is_some() {
            self.last_offer = ip;
        }
        Ok(ip)
    }

    fn request(
        &mut self,
        client: &Client,
        ip: Ipv4Addr,
        hostname: Option<&str>,
        now: u64,
    ) -> Result<Result<Lease, Nak>, StoreError> {
        if !is_host_address(self.net.subnet, ip) {
            return Ok(Err(Nak::WrongNetwork(ip)));
        }
        let key = key_bytes(&client.key());
        let mac = client.mac.to_string();
        let id: Option<Vec<u8>> = client.id.as_ref().map(|i| i.as_bytes().to_vec());
        let hostname = hostname.map(|h| pxe::leases::truncate_hostname(h).to_string());
        let expires = now.saturating_add(self.net.lease_secs);
        let (n, agent) = (self.net.clone(), self.agent());
        let addr = IpAddr::V4(ip);
        let row = self.call("grant a lease (request4)", |c| {
            c.query_typed_one(
                "SELECT o_outcome, o_hostname, o_reserved FROM hostagent.request4(\
                 $1, $2, $3::macaddr, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    (&n.name, Type::TEXT),
                    (&key, Type::BYTEA),
                    (&mac, Type::TEXT),
                    (&id, Type::BYTEA),
                    (&addr, Type::INET),
                    (&hostname, Type::TEXT),
                    (&secs(now), Type::INT8),
                    (&secs(expires), Type::INT8),
                    (&n.first, Type::INET),
                    (&n.last, Type::INET),
                    (&n.server, Type::INET),
                    (&agent, Type::TEXT),
                ],
            )
        })?;
        let outcome: String = row.get(0);
        Ok(match outcome.as_str() {
            "ack" => {
                self.leases_changed = true;
                Ok(Lease {
                    mac: client.mac,
                    ip,
                    expires,
                    hostname: row.get(1),
                    client_id: client.id.clone(),
                    agent: Some(agent),
                })
            }
            "reserved" => Err(Nak::Reserved(ip)),
            "not_its_reservation" => match row.get::<_, Option<IpAddr>>(2) {
                Some(IpAddr::V4(reserved)) => Err(Nak::NotItsReservation {
                    requested: ip,
                    reserved,
                }),
                _ => Err(Nak::Reserved(ip)),
            },
            "out_of_range" => Err(Nak::OutOfRange(ip)),
            _ => Err(Nak::Taken(ip)),
        })
    }

    fn release(&mut self, client: &Client, ip: Ipv4Addr) -> Result<bool, StoreError> {
        let key = key_bytes(&client.key());
        let (name, agent, addr) = (self.net.name.clone(), self.agent(), IpAddr::V4(ip));
        let held: bool = self.call("release a lease (release4)", |c| {
            Ok(c.query_typed_one(
                "SELECT hostagent.release4($1, $2, $3, $4)",
                &[
                    (&name, Type::TEXT),
                    (&key, Type::BYTEA),
                    (&addr, Type::INET),
                    (&agent, Type::TEXT),
                ],
            )?
            .get(0))
        })?;
        self.leases_changed |= held;
        Ok(held)
    }

    fn decline(&mut self, client: &Client, ip: Ipv4Addr, now: u64) -> Result<bool, StoreError> {
        let key = key_bytes(&client.key());
        let (name, agent, addr) = (self.net.name.clone(), self.agent(), IpAddr::V4(ip));
        let until = now.saturating_add(DECLINE_QUARANTINE_SECS);
        let honoured: bool = self.call("quarantine an address (decline4)", |c| {
            Ok(c.query_typed_one(
                "SELECT hostagent.decline4($1, $2, $3, $4, $5, $6)",
                &[
                    (&name, Type::TEXT),
                    (&key, Type::BYTEA),
                    (&addr, Type::INET),
                    (&secs(now), Type::INT8),
                    (&secs(until), Type::INT8),
                    (&agent, Type::TEXT),
                ],
            )?
            .get(0))
        })?;
        if honoured {
            self.leases_changed = true;
            tracing::warn!(network = %self.net.name, %ip, mac = %client.mac, until, "address declined, quarantined for every agent");
        }
        Ok(honoured)
    }

    fn offer_not_taken(
        &mut self,
        client: &Client,
        chosen: Option<Ipv4Addr>,
        _now: u64,
    ) -> Result<(), StoreError> {
        let key = key_bytes(&client.key());
        let name = self.net.name.clone();
        let keep = chosen.map(IpAddr::V4);
        self.call("drop an offer hold (forget_holds4)", |c| {
            c.query_typed(
                "SELECT hostagent.forget_holds4($1, $2, $3)",
                &[
                    (&name, Type::TEXT),
                    (&key, Type::BYTEA),
                    (&keep, Type::INET),
                ],
            )
            .map(|_| ())
        })
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let changed = std::mem::take(&mut self.leases_changed);
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
                    self.generation.fetch_add(1, Ordering::Relaxed);
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
        self.generation.load(Ordering::Relaxed)
    }

    fn leases_at(&self, now: u64) -> Result<Vec<Lease>, StoreError> {
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
        Ok(rows.iter().filter_map(lease_of).collect())
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
