//! Which IPv6 address a client's IA_NA gets, over the durable v6 lease store.
//!
//! First that applies: the client's static host (by DUID, else by MAC); its current binding
//! (same DUID and IAID), expired or not, while nobody else took the address; the address it
//! asked for (an IA Address in its IA_NA), if free; else a free address found by probing from
//! a point the DUID and IAID hash to. The hash spreads clients over a range of any size (a /64
//! range has 2^64 addresses: no scan from its start) and gives a client that lost its lease the
//! same address again while it is free. At most [`MAX_PROBES`] addresses are looked at, so a
//! nearly full huge range answers NoAddrsAvail rather than searching for long.
//!
//! Static hosts' addresses are never handed to anyone else, and neither is an address
//! declined (quarantined) until its quarantine ends.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::Ipv6Addr;
use std::time::Duration;

use crate::config::{Dhcp6Config, Host6Id, Mac, StaticHost6};
use crate::leases::v6::{Duid, Lease6, Lease6Store, Record6};
use crate::leases::{LeaseError, LoadReport};

/// Most addresses looked at for one allocation.
pub const MAX_PROBES: u128 = 65_536;
/// How long a declined address stays out of use (RFC 8415 leaves it to the server; the
/// v4 server's quarantine is the same).
pub const DECLINE_QUARANTINE: Duration = Duration::from_secs(600);

pub struct Pool6 {
    store: Lease6Store,
    range: Option<(u128, u128)>,
    lease_time: Duration,
    by_duid: HashMap<Duid, StaticHost6>,
    by_mac: HashMap<Mac, StaticHost6>,
    reserved: HashSet<Ipv6Addr>,
}

impl Pool6 {
    pub fn open(cfg: &Dhcp6Config) -> Result<(Pool6, LoadReport), LeaseError> {
        let (store, report) = Lease6Store::open(&cfg.lease_file)?;
        let mut by_duid = HashMap::new();
        let mut by_mac = HashMap::new();
        for h in &cfg.hosts {
            match &h.id {
                Host6Id::Duid(d) => {
                    by_duid.insert(d.clone(), h.clone());
                }
                Host6Id::Mac(m) => {
                    by_mac.insert(*m, h.clone());
                }
            }
        }
        Ok((
            Pool6 {
                store,
                range: cfg.range.map(|(a, b)| (u128::from(a), u128::from(b))),
                lease_time: cfg.lease_time,
                reserved: cfg.hosts.iter().map(|h| h.ip).collect(),
                by_duid,
                by_mac,
            },
            report,
        ))
    }

    pub fn store(&self) -> &Lease6Store {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut Lease6Store {
        &mut self.store
    }

    pub fn lease_time(&self) -> Duration {
        self.lease_time
    }

    /// Whether the server hands out addresses at all (a range or a static host).
    pub fn is_stateful(&self) -> bool {
        self.range.is_some() || !self.reserved.is_empty()
    }

    /// The client's static host, by DUID first, then by MAC.
    pub fn static_host(&self, duid: &Duid, mac: Option<Mac>) -> Option<&StaticHost6> {
        self.by_duid
            .get(duid)
            .or_else(|| mac.and_then(|m| self.by_mac.get(&m)))
    }

    fn in_range(&self, ip: Ipv6Addr) -> bool {
        self.range
            .is_some_and(|(a, b)| (a..=b).contains(&u128::from(ip)))
    }

    /// Whether `ip` may be bound to `duid`/`iaid` now (a dynamic address: static hosts are
    /// decided before).
    fn free_for(&self, ip: Ipv6Addr, duid: &Duid, iaid: u32, now: u64) -> bool {
        if !self.in_range(ip) || self.reserved.contains(&ip) {
            return false;
        }
        if self
            .store
            .index()
            .quarantined_until(ip)
            .is_some_and(|until| until > now)
        {
            return false;
        }
        match self.store.index().by_ip(ip) {
            Some(l) => (&l.duid == duid && l.iaid == iaid) || l.expires <= now,
            None => true,
        }
    }

    /// The address for this IA_NA (module docs); None when none is left.
    pub fn pick(
        &self,
        duid: &Duid,
        iaid: u32,
        mac: Option<Mac>,
        hint: Option<Ipv6Addr>,
        now: u64,
    ) -> Option<Ipv6Addr> {
        if let Some(h) = self.static_host(duid, mac) {
            return Some(h.ip);
        }
        if let Some(l) = self.store.index().by_binding(duid, iaid) {
            if self.free_for(l.ip, duid, iaid, now) {
                return Some(l.ip);
            }
        }
        if let Some(ip) = hint.filter(|ip| self.free_for(*ip, duid, iaid, now)) {
            return Some(ip);
        }
        let (first, last) = self.range?;
        let size = last - first + 1;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (duid, iaid).hash(&mut h);
        let start = u128::from(h.finish()) % size;
        (0..size.min(MAX_PROBES))
            .map(|i| Ipv6Addr::from(first + (start + i) % size))
            .find(|ip| self.free_for(*ip, duid, iaid, now))
    }

    /// Whether `ip` is one this client may hold (its static address, or a free one in the
    /// range): what a Renew, Rebind or Request for a named address is checked against.
    pub fn may_hold(
        &self,
        ip: Ipv6Addr,
        duid: &Duid,
        iaid: u32,
        mac: Option<Mac>,
        now: u64,
    ) -> bool {
        match self.static_host(duid, mac) {
            Some(h) => h.ip == ip,
            None => self.free_for(ip, duid, iaid, now),
        }
    }

    /// Binds (or extends) `ip` for the client, staged for the next flush. Returns the lease.
    pub fn bind(
        &mut self,
        duid: &Duid,
        iaid: u32,
        ip: Ipv6Addr,
        mac: Option<Mac>,
        hostname: Option<String>,
        now: u64,
    ) -> Lease6 {
        let hostname = hostname
            .or_else(|| self.static_host(duid, mac).and_then(|h| h.name.clone()))
            .or_else(|| {
                // A renewal without option 39 keeps the name it had.
                self.store
                    .index()
                    .by_binding(duid, iaid)
                    .filter(|l| l.ip == ip)
                    .and_then(|l| l.hostname.clone())
            });
        let lease = Lease6 {
            duid: duid.clone(),
            iaid,
            ip,
            expires: now + self.lease_time.as_secs(),
            hostname,
            mac,
        };
        self.store.stage(Record6::Lease(lease.clone()));
        lease
    }

    /// The client gives `ip` back; false when it did not hold it.
    pub fn release(&mut self, duid: &Duid, iaid: u32, ip: Ipv6Addr) -> bool {
        let held = self
            .store
            .index()
            .by_binding(duid, iaid)
            .is_some_and(|l| l.ip == ip);
        if held {
            self.store.stage(Record6::Release {
                duid: duid.clone(),
                iaid,
                ip,
            });
        }
        held
    }

    /// The client found `ip` in use: quarantined, whoever held it. Only addresses of this
    /// server's range are taken note of (a client cannot block a static host's address).
    pub fn decline(&mut self, duid: &Duid, iaid: u32, ip: Ipv6Addr, now: u64) -> bool {
        let held = self
            .store
            .index()
            .by_binding(duid, iaid)
            .is_some_and(|l| l.ip == ip);
        if !held || self.reserved.contains(&ip) {
            return false;
        }
        self.store.stage(Record6::Decline {
            ip,
            until: now + DECLINE_QUARANTINE.as_secs(),
        });
        true
    }

    /// Unexpired leases at `now`, sorted by address.
    pub fn leases_at(&self, now: u64) -> Vec<Lease6> {
        self.store.index().unexpired(now)
    }
}
