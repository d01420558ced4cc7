//! Address allocation for one network over the durable lease store.
//!
//! A client is a [`Client`] (its `chaddr` and option 61, if any; a bare `Mac` converts): leases
//! are held by its [`ClientKey`] (the client identifier when present, else the MAC; see
//! `leases::client`), reservations match its MAC.
//!
//! API CONTRACT (the DHCP server is written against exactly this):
//! - `Pool::open(PoolConfig) -> Result<Pool, LeaseError>`: replays the journal.
//! - `offer(client, requested, now) -> Option<Ipv4Addr>`: address to offer (static reservation
//!   first, then the client's current/previous lease, then the requested address if free, then
//!   the lowest never-used address, then the address whose other-client lease expired longest
//!   ago). Held in memory for `OFFER_HOLD_SECS` so two DISCOVERs never get the same offer.
//!   None = exhausted.
//! - `request(client, ip, hostname, now) -> Result<Lease, Nak>`: staged lease (index updated at
//!   once, record appended to the pending batch; durable only after `flush`).
//! - `release(client, ip)`, `decline(client, ip, now)` (quarantined), `renew` is `request`.
//! - `flush() -> Result<(), LeaseError>`: write pending records + fdatasync (one per batch). Send
//!   the batch's ACKs only after it returned Ok.
//! - `leases() -> Vec<Lease>`, `lease_for(client)`, `stats(now)`.
//!
//! `now` is always unix seconds (`unix_now()`), passed in so tests control time.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::Mac;
use crate::dhcp::store::StoreHealth;
use crate::leases::{LeaseStore, LoadReport, Record};

pub use crate::leases::{Client, ClientId, ClientKey, Lease, LeaseError};

/// How long an offered address stays promised to the client it was offered to.
pub const OFFER_HOLD_SECS: u64 = 30;
/// How long nobody gets an address after a client declined it (found it in use).
pub const DECLINE_QUARANTINE_SECS: u64 = 600;

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub network: String,
    pub server_ip: Ipv4Addr,
    pub subnet: ipnet::Ipv4Net,
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    pub lease_time: Duration,
    /// (mac, ip) static reservations; these addresses are never given to anyone else.
    pub reservations: Vec<(Mac, Ipv4Addr)>,
    pub journal: PathBuf,
}

/// Why a REQUEST is refused (answered with DHCPNAK).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Nak {
    #[error("{0} is not in this network")]
    WrongNetwork(Ipv4Addr),
    #[error("{0} is leased to another client")]
    Taken(Ipv4Addr),
    #[error("{0} is reserved for another client")]
    Reserved(Ipv4Addr),
    #[error("{0} is outside the dynamic range")]
    OutOfRange(Ipv4Addr),
    /// The client has a static reservation and asked for something else; the NAK makes it start
    /// over and be offered its reservation.
    #[error("client is reserved {reserved}, not {requested}")]
    NotItsReservation {
        requested: Ipv4Addr,
        reserved: Ipv4Addr,
    },
}

/// Occupancy of the dynamic range (for status output).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Addresses in the dynamic range minus reservations and the server's own.
    pub dynamic: u64,
    /// Unexpired leases (including reservations).
    pub active: usize,
    /// Expired leases still remembered (their address goes back to the same client first).
    pub expired: usize,
    pub quarantined: usize,
    /// Offers held for clients that have not requested yet.
    pub offered: usize,
    /// Dynamic addresses a new client could get now (never used, released or expired).
    pub free: u64,
}

/// Whether `ip` is a host address of `subnet` (inside it, neither its network nor its broadcast
/// address): what a client may be leased, whatever else holds.
pub fn is_host_address(subnet: ipnet::Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast()
}

/// Current time in unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
struct Hold {
    client: ClientKey,
    until: u64,
}

/// Addresses with no lease, quarantine, hold or reservation, lowest first, without keeping a set
/// the size of the range: everything at or above `cursor` is unexamined, and an address below it
/// that becomes free again goes into `returned`. Entries are checked when taken (lazy removal), so
/// marking an address free that is taken again meanwhile is harmless.
#[derive(Debug, Default)]
struct FreeList {
    cursor: u64,
    end: u64,
    returned: BTreeSet<u32>,
}

impl FreeList {
    fn new(start: u32, end: u32) -> FreeList {
        FreeList {
            cursor: start as u64,
            end: end as u64,
            returned: BTreeSet::new(),
        }
    }

    fn mark_free(&mut self, ip: u32) {
        if (ip as u64) < self.cursor {
            self.returned.insert(ip);
        }
    }

    fn take_lowest(&mut self, is_free: impl Fn(u32) -> bool) -> Option<u32> {
        while let Some(ip) = self.returned.pop_first() {
            if is_free(ip) {
                return Some(ip);
            }
        }
        while self.cursor <= self.end {
            let ip = self.cursor as u32;
            self.cursor += 1;
            if is_free(ip) {
                return Some(ip);
            }
        }
        None
    }
}

pub struct Pool {
    cfg: PoolConfig,
    /// Dynamic range, inclusive, as integers.
    start: u32,
    end: u32,
    store: LeaseStore,
    load_report: LoadReport,
    reserved_by_mac: HashMap<Mac, Ipv4Addr>,
    reserved_by_ip: HashMap<Ipv4Addr, Mac>,
    free: FreeList,
    /// (expires, ip) of every lease on a dynamic address: once expired, these are handed to other
    /// clients oldest first, and only when no never-used address is left.
    by_expiry: BTreeSet<(u64, u32)>,
    holds: HashMap<Ipv4Addr, Hold>,
    hold_by_client: HashMap<ClientKey, Ipv4Addr>,
    /// Holds in the order they end (all last the same time, so a queue suffices).
    hold_queue: VecDeque<(u64, Ipv4Addr)>,
    /// (until, ip) of quarantines, to lift them when they end.
    quarantine_queue: BTreeSet<(u64, u32)>,
    /// Moves on with every staged record: whoever follows the leases knows when to look again.
    generation: u64,
    /// The journal's state for status output (see `dhcp::store`).
    health: Arc<StoreHealth>,
}

impl Pool {
    pub fn open(cfg: PoolConfig) -> Result<Pool, LeaseError> {
        let (store, load_report) = LeaseStore::open(&cfg.journal)?;
        if load_report.dropped_bytes > 0 {
            tracing::warn!(network = %cfg.network, report = ?load_report, "lease journal repaired on load");
        } else if load_report.compacted {
            tracing::info!(network = %cfg.network, report = ?load_report, "lease journal compacted on load");
        }
        let start = u32::from(cfg.range_start);
        let end = u32::from(cfg.range_end);
        let mut pool = Pool {
            start,
            end,
            store,
            load_report,
            reserved_by_mac: cfg.reservations.iter().copied().collect(),
            reserved_by_ip: cfg
                .reservations
                .iter()
                .map(|(mac, ip)| (*ip, *mac))
                .collect(),
            free: FreeList::new(start, end),
            by_expiry: BTreeSet::new(),
            holds: HashMap::new(),
            hold_by_client: HashMap::new(),
            hold_queue: VecDeque::new(),
            quarantine_queue: BTreeSet::new(),
            generation: 0,
            health: StoreHealth::new("journal", cfg.journal.display().to_string()),
            cfg,
        };
        let dynamic: Vec<(u64, u32)> = pool
            .store
            .index()
            .leases()
            .filter(|l| pool.is_dynamic(l.ip))
            .map(|l| (l.expires, u32::from(l.ip)))
            .collect();
        pool.by_expiry.extend(dynamic);
        let quarantined: Vec<(u64, u32)> = pool
            .store
            .index()
            .quarantined()
            .map(|(ip, until)| (until, u32::from(ip)))
            .collect();
        pool.quarantine_queue.extend(quarantined);
        Ok(pool)
    }

    pub fn network(&self) -> &str {
        &self.cfg.network
    }

    /// The journal's state (written by `LeaseBackend::commit`), for status output.
    pub fn health(&self) -> Arc<StoreHealth> {
        self.health.clone()
    }

    /// What replaying the journal found (records, bytes cut off).
    pub fn load_report(&self) -> &LoadReport {
        &self.load_report
    }

    /// The address to offer `client`, held for it for `OFFER_HOLD_SECS`; None when nothing is
    /// free.
    pub fn offer(
        &mut self,
        client: impl Into<Client>,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Option<Ipv4Addr> {
        let client = client.into();
        self.expire(now);
        if let Some(ip) = self.reserved_by_mac.get(&client.mac) {
            return Some(*ip);
        }
        let key = client.key();
        let previous = self.store.index().by_client(&key).map(|l| l.ip);
        let held = self.hold_by_client.get(&key).copied();
        let preferred = [previous, held, requested];
        if let Some(ip) = preferred
            .into_iter()
            .flatten()
            .find(|ip| self.available_to(&key, *ip, now))
        {
            self.hold(key, ip, now);
            return Some(ip);
        }
        let mut free = std::mem::take(&mut self.free);
        let fresh = free.take_lowest(|ip| self.unused(Ipv4Addr::from(ip)));
        self.free = free;
        let ip = match fresh {
            Some(ip) => Ipv4Addr::from(ip),
            None => self.oldest_expired(now)?,
        };
        self.hold(key, ip, now);
        Some(ip)
    }

    /// Grants (or renews) `ip` to `client` and stages the lease; durable after `flush`.
    pub fn request(
        &mut self,
        client: impl Into<Client>,
        ip: Ipv4Addr,
        hostname: Option<&str>,
        now: u64,
    ) -> Result<Lease, Nak> {
        let client = client.into();
        let (mac, key) = (client.mac, client.key());
        self.expire(now);
        if !is_host_address(self.cfg.subnet, ip) {
            return Err(Nak::WrongNetwork(ip));
        }
        match (self.reserved_by_ip.get(&ip), self.reserved_by_mac.get(&mac)) {
            (Some(owner), _) if *owner != mac => return Err(Nak::Reserved(ip)),
            (Some(_), _) => {} // its own reservation, wherever it lies
            (None, Some(reserved)) => {
                return Err(Nak::NotItsReservation {
                    requested: ip,
                    reserved: *reserved,
                })
            }
            (None, None) => {
                if ip == self.cfg.server_ip {
                    return Err(Nak::Taken(ip));
                }
                if !self.in_range(ip) {
                    return Err(Nak::OutOfRange(ip));
                }
                if !self.available_to(&key, ip, now) {
                    return Err(Nak::Taken(ip));
                }
            }
        }
        let previous = self.store.index().by_client(&key);
        let hostname = match hostname {
            Some(h) if !h.is_empty() => Some(crate::leases::truncate_hostname(h).to_string()),
            _ => previous
                .filter(|p| p.ip == ip)
                .and_then(|p| p.hostname.clone()),
        };
        let expires = now.saturating_add(self.cfg.lease_time.as_secs());
        let lease = Lease {
            mac,
            ip,
            expires,
            hostname,
            client_id: client.id,
            agent: None,
        };
        self.drop_hold_of(&key);
        self.stage(Record::Lease(lease.clone()));
        Ok(lease)
    }

    /// The client gave `ip` back. Returns whether it held it (anything else is ignored).
    pub fn release(&mut self, client: impl Into<Client>, ip: Ipv4Addr) -> bool {
        let key = client.into().key();
        self.drop_hold_of(&key);
        if self
            .store
            .index()
            .by_client(&key)
            .is_none_or(|l| l.ip != ip)
        {
            return false;
        }
        let record = match key {
            ClientKey::Mac(mac) => Record::Release { mac, ip },
            ClientKey::Id(id) => Record::ReleaseClient { id, ip },
        };
        self.stage(record);
        true
    }

    /// The client found `ip` in use: quarantine it and forget the client's lease on it. Only
    /// honoured from the client the address was offered or leased to, so nobody can quarantine
    /// addresses at will. Returns whether it was honoured.
    pub fn decline(&mut self, client: impl Into<Client>, ip: Ipv4Addr, now: u64) -> bool {
        let client = client.into();
        let (mac, key) = (client.mac, client.key());
        self.expire(now);
        let leased = self.store.index().by_ip(ip).is_some_and(|l| l.key() == key);
        let offered = self.holds.get(&ip).is_some_and(|h| h.client == key);
        if !(leased || offered) {
            return false;
        }
        self.drop_hold_of(&key);
        if self.reserved_by_ip.contains_key(&ip) {
            // Quarantining a reservation would not stop it being offered to its owner again.
            tracing::warn!(network = %self.cfg.network, %ip, %mac, "reserved address declined: something else uses it");
            return false;
        }
        let until = now.saturating_add(DECLINE_QUARANTINE_SECS);
        tracing::warn!(network = %self.cfg.network, %ip, %mac, until, "address declined, quarantined");
        self.stage(Record::Decline { ip, until });
        true
    }

    /// Makes everything staged durable (one write + one fdatasync), then compacts the journal if
    /// it has grown mostly dead. On Err, send none of this batch's ACKs.
    pub fn flush(&mut self) -> Result<(), LeaseError> {
        self.store.flush()?;
        if self.store.compaction_due() {
            // The batch is already durable; a failed compaction leaves the old journal in place.
            if let Err(e) = self.store.compact() {
                tracing::warn!(network = %self.cfg.network, error = %e, "lease journal compaction failed");
            }
        }
        Ok(())
    }

    /// Rewrites the journal to its live set now (flushing first).
    pub fn compact(&mut self) -> Result<(), LeaseError> {
        self.store.compact()
    }

    /// Journal size below which compaction never runs (default 1 MiB).
    pub fn set_compaction_min_bytes(&mut self, bytes: u64) {
        self.store.set_compaction_min_bytes(bytes);
    }

    /// Journal size in bytes (including the unflushed batch).
    pub fn journal_len(&self) -> u64 {
        self.store.journal_len()
    }

    /// Changes whenever a lease is bound, renewed, released or declined (not when one merely
    /// expires: compare expiry times for that).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether records are staged but not yet flushed.
    pub fn has_pending(&self) -> bool {
        self.store.has_pending()
    }

    /// Unexpired leases by the system clock.
    pub fn leases(&self) -> Vec<Lease> {
        self.leases_at(unix_now())
    }

    /// Leases unexpired at `now`, sorted by address.
    pub fn leases_at(&self, now: u64) -> Vec<Lease> {
        self.store.index().unexpired(now)
    }

    /// The client's lease, expired or not.
    pub fn lease_for(&self, client: impl Into<Client>) -> Option<Lease> {
        self.store.index().by_client(&client.into().key()).cloned()
    }

    pub fn stats(&self, now: u64) -> PoolStats {
        let index = self.store.index();
        let mut stats = PoolStats::default();
        let mut occupied = std::collections::HashSet::new();
        for l in index.leases() {
            if l.expires > now {
                stats.active += 1;
                occupied.insert(l.ip);
            } else {
                stats.expired += 1;
            }
        }
        for (ip, until) in index.quarantined() {
            if until > now {
                stats.quarantined += 1;
                occupied.insert(ip);
            }
        }
        for (ip, hold) in &self.holds {
            if hold.until > now {
                stats.offered += 1;
                occupied.insert(*ip);
            }
        }
        let range = if self.end >= self.start {
            (self.end - self.start) as u64 + 1
        } else {
            0
        };
        let excluded = self
            .reserved_by_ip
            .keys()
            .copied()
            .chain(std::iter::once(self.cfg.server_ip))
            .filter(|ip| self.in_range(*ip))
            .collect::<std::collections::HashSet<_>>()
            .len() as u64;
        stats.dynamic = range - excluded;
        let busy = occupied.iter().filter(|ip| self.is_dynamic(**ip)).count() as u64;
        stats.free = stats.dynamic.saturating_sub(busy);
        stats
    }

    fn in_range(&self, ip: Ipv4Addr) -> bool {
        (self.start..=self.end).contains(&u32::from(ip))
    }

    /// In the range and neither reserved nor the server's own address.
    fn is_dynamic(&self, ip: Ipv4Addr) -> bool {
        self.in_range(ip) && ip != self.cfg.server_ip && !self.reserved_by_ip.contains_key(&ip)
    }

    /// A dynamic address with no lease at all, no quarantine and no hold.
    fn unused(&self, ip: Ipv4Addr) -> bool {
        self.is_dynamic(ip)
            && self.store.index().by_ip(ip).is_none()
            && self.store.index().quarantined_until(ip).is_none()
            && !self.holds.contains_key(&ip)
    }

    /// Whether `client` may have the dynamic address `ip` now.
    fn available_to(&self, client: &ClientKey, ip: Ipv4Addr, now: u64) -> bool {
        let index = self.store.index();
        self.is_dynamic(ip)
            && index.quarantined_until(ip).is_none_or(|until| until <= now)
            && self
                .holds
                .get(&ip)
                .is_none_or(|h| h.client == *client || h.until <= now)
            && index
                .by_ip(ip)
                .is_none_or(|l| l.expires <= now || l.key() == *client)
    }

    /// The address whose lease (of another client) expired longest ago and is not held.
    fn oldest_expired(&self, now: u64) -> Option<Ipv4Addr> {
        self.by_expiry
            .iter()
            .take_while(|(expires, _)| *expires <= now)
            .map(|(_, ip)| Ipv4Addr::from(*ip))
            .find(|ip| !self.holds.contains_key(ip))
    }

    fn hold(&mut self, client: ClientKey, ip: Ipv4Addr, now: u64) {
        if self.hold_by_client.get(&client) != Some(&ip) {
            self.drop_hold_of(&client);
        }
        let until = now.saturating_add(OFFER_HOLD_SECS);
        self.holds.insert(
            ip,
            Hold {
                client: client.clone(),
                until,
            },
        );
        self.hold_by_client.insert(client, ip);
        self.hold_queue.push_back((until, ip));
    }

    fn drop_hold_of(&mut self, client: &ClientKey) {
        if let Some(ip) = self.hold_by_client.remove(client) {
            if self.holds.get(&ip).is_some_and(|h| h.client == *client) {
                self.holds.remove(&ip);
                self.free.mark_free(u32::from(ip));
            }
        }
    }

    /// Ends holds and quarantines whose time is up, returning their addresses to the free list.
    fn expire(&mut self, now: u64) {
        while let Some(&(until, ip)) = self.hold_queue.front() {
            if until > now {
                break;
            }
            self.hold_queue.pop_front();
            if self.holds.get(&ip).is_some_and(|h| h.until == until) {
                if let Some(hold) = self.holds.remove(&ip) {
                    if self.hold_by_client.get(&hold.client) == Some(&ip) {
                        self.hold_by_client.remove(&hold.client);
                    }
                    self.free.mark_free(u32::from(ip));
                }
            }
        }
        while let Some(&(until, ip)) = self.quarantine_queue.first() {
            if until > now {
                break;
            }
            self.quarantine_queue.pop_first();
            let ip = Ipv4Addr::from(ip);
            if self.store.index().quarantined_until(ip) == Some(until) {
                self.store.index_mut().lift_quarantine(ip);
                self.free.mark_free(u32::from(ip));
            }
        }
    }

    /// Stages `record`, keeping the allocator's structures in step with the index.
    fn stage(&mut self, record: Record) {
        let (ip, client) = match &record {
            Record::Lease(l) => (l.ip, Some(l.key())),
            Record::Release { mac, ip } => (*ip, Some(ClientKey::Mac(*mac))),
            Record::ReleaseClient { id, ip } => (*ip, Some(ClientKey::Id(id.clone()))),
            Record::Decline { ip, .. } => (*ip, None),
        };
        let mut touched = vec![ip];
        if let Some(old) = client.and_then(|k| self.store.index().by_client(&k)) {
            touched.push(old.ip);
        }
        for ip in &touched {
            if let Some(l) = self.store.index().by_ip(*ip) {
                self.by_expiry.remove(&(l.expires, u32::from(*ip)));
            }
        }
        self.store.stage(record);
        self.generation += 1;
        for ip in touched {
            let index = self.store.index();
            if let Some(l) = index.by_ip(ip) {
                if self.is_dynamic(ip) {
                    self.by_expiry.insert((l.expires, u32::from(ip)));
                }
            } else if let Some(until) = index.quarantined_until(ip) {
                self.quarantine_queue.insert((until, u32::from(ip)));
            } else {
                self.free.mark_free(u32::from(ip));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FreeList;

    #[test]
    fn free_list_gives_lowest_first_and_takes_back_returned_addresses() {
        let mut free = FreeList::new(10, 20);
        let busy = [11u32, 12];
        let take = |f: &mut FreeList| f.take_lowest(|ip| !busy.contains(&ip));
        assert_eq!(take(&mut free), Some(10));
        assert_eq!(take(&mut free), Some(13), "busy addresses skipped");
        free.mark_free(10);
        free.mark_free(12); // marked free but still busy: dropped when met
        assert_eq!(
            take(&mut free),
            Some(10),
            "a returned address below the cursor comes first"
        );
        assert_eq!(take(&mut free), Some(14));
        free.mark_free(30); // above the cursor: found by the scan anyway, not stored twice
        assert!(free.returned.is_empty());
    }

    #[test]
    fn free_list_at_the_top_of_the_address_space_ends_cleanly() {
        let mut free = FreeList::new(u32::MAX - 1, u32::MAX);
        assert_eq!(free.take_lowest(|_| true), Some(u32::MAX - 1));
        assert_eq!(free.take_lowest(|_| true), Some(u32::MAX));
        assert_eq!(free.take_lowest(|_| true), None);
    }
}
