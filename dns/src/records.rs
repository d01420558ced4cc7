//! The live set of local names a network answers for, and the handle the agent updates it
//! through. Readers (every query) load one immutable snapshot with a single atomic load
//! (`arc_swap`); writers (lease events, reloads) rebuild the snapshot from the entry list under a
//! mutex and publish it, so a new name resolves and a removed one stops with the next query.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use serde::Serialize;

use crate::error::HostnameError;
use crate::hostname;

/// Where a name came from. The order is the precedence for the reverse (PTR) answer when two
/// names share an address: what the operator wrote beats what a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `[[network.dns.host]]` entries.
    Config,
    /// `[[network.dhcp.host]]` reservations with a name.
    StaticHost,
    /// `[[guest]]` definitions.
    Guest,
    /// A DHCP lease's client host name (option 12).
    Lease,
}

/// One name → address pair as the agent knows it. `name` is a host name relative to the
/// network's domain (`bastion`, `api.k8s`) or qualified with it (`bastion.default`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    pub name: String,
    pub addr: IpAddr,
    pub source: Source,
}

impl HostRecord {
    pub fn new(name: impl Into<String>, addr: IpAddr, source: Source) -> HostRecord {
        HostRecord {
            name: name.into(),
            addr,
            source,
        }
    }
}

/// A record that was not taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub record: HostRecord,
    pub error: HostnameError,
}

/// The addresses one name has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addrs {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// One immutable snapshot of the local names (fully qualified under the domain).
#[derive(Debug, Default)]
pub struct Records {
    names: HashMap<Name, Addrs>,
    /// Names that exist only because something below them does (`k8s.default` for
    /// `api.k8s.default`): NODATA, not NXDOMAIN (RFC 8020).
    nonterminals: HashSet<Name>,
    ptr: HashMap<IpAddr, Name>,
    serial: u64,
}

impl Records {
    /// The addresses of a fully qualified name (case-insensitive).
    pub fn addrs(&self, name: &Name) -> Option<&Addrs> {
        self.names.get(name)
    }

    pub fn is_nonterminal(&self, name: &Name) -> bool {
        self.nonterminals.contains(name)
    }

    /// The name an address points back to.
    pub fn ptr(&self, addr: IpAddr) -> Option<&Name> {
        self.ptr.get(&addr)
    }

    /// Number of distinct names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Bumped on every change; the zone's SOA serial.
    pub fn serial(&self) -> u64 {
        self.serial
    }
}

/// One entry as kept by the writer side, already validated and made relative to the domain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    source: Source,
    name: String,
    addr: IpAddr,
}

/// The handle the agent feeds names through; cheap to clone, shared with the server.
#[derive(Clone)]
pub struct RecordStore {
    inner: Arc<Inner>,
}

struct Inner {
    domain: Name,
    domain_text: String,
    current: ArcSwap<Records>,
    entries: Mutex<BTreeSet<Entry>>,
    rejected: AtomicU64,
    serial: AtomicU64,
}

impl std::fmt::Debug for RecordStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStore")
            .field("domain", &self.inner.domain_text)
            .field("names", &self.inner.current.load().len())
            .finish()
    }
}

impl RecordStore {
    /// An empty store for names under `domain` (a validated, lowercase, fully qualified name:
    /// take it from [`crate::Zone::domain`]).
    pub fn new(domain: &Name) -> RecordStore {
        let domain = domain.to_lowercase();
        let mut domain_text = domain.to_ascii();
        domain_text.pop(); // the trailing dot
        RecordStore {
            inner: Arc::new(Inner {
                domain,
                domain_text,
                current: ArcSwap::from_pointee(Records::default()),
                entries: Mutex::new(BTreeSet::new()),
                rejected: AtomicU64::new(0),
                serial: AtomicU64::new(1),
            }),
        }
    }

    /// An empty store for `domain` as written in a config (`default`, `lab.example.com`).
    pub fn for_domain(domain: &str) -> Result<RecordStore, crate::error::DnsError> {
        Ok(RecordStore::new(&crate::zone::parse_domain(domain)?))
    }

    /// The domain the names live under (lowercase, fully qualified).
    pub fn domain(&self) -> &Name {
        &self.inner.domain
    }

    /// The current snapshot (one atomic load; hold it only for one query).
    pub fn snapshot(&self) -> Arc<Records> {
        self.inner.current.load_full()
    }

    /// Runs `f` on the current snapshot without touching its reference count.
    pub fn with<T>(&self, f: impl FnOnce(&Records) -> T) -> T {
        f(&self.inner.current.load())
    }

    /// How many records were refused (bad host names) since the store was made.
    pub fn rejected(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }

    /// Replaces everything with `records`. Records with bad names are skipped, counted and
    /// returned; the rest are published.
    pub fn set_all(&self, records: impl IntoIterator<Item = HostRecord>) -> Vec<Rejected> {
        let mut entries = self.lock();
        entries.clear();
        let rejected = self.insert_all(&mut entries, records);
        self.publish(&entries);
        rejected
    }

    /// Replaces every record of one source (e.g. all static hosts after a reload), keeping the
    /// others.
    pub fn replace_source(
        &self,
        source: Source,
        records: impl IntoIterator<Item = HostRecord>,
    ) -> Vec<Rejected> {
        let mut entries = self.lock();
        entries.retain(|e| e.source != source);
        let rejected = self.insert_all(
            &mut entries,
            records.into_iter().map(|r| HostRecord { source, ..r }),
        );
        self.publish(&entries);
        rejected
    }

    /// Adds one record (a lease was bound). A name may have several addresses; adding the same
    /// record twice changes nothing.
    pub fn upsert(&self, record: HostRecord) -> Result<(), Rejected> {
        let entry = self.entry(&record).map_err(|error| {
            self.inner.rejected.fetch_add(1, Ordering::Relaxed);
            Rejected { record, error }
        })?;
        let mut entries = self.lock();
        if entries.insert(entry) {
            self.publish(&entries);
        }
        Ok(())
    }

    /// Removes every record of `source` for `addr` (a lease expired or was released). Returns
    /// whether anything was removed.
    pub fn remove_addr(&self, source: Source, addr: IpAddr) -> bool {
        self.remove_where(|e| e.source == source && e.addr == addr)
    }

    /// Removes every record of `source` with this name (relative or qualified).
    pub fn remove_name(&self, source: Source, name: &str) -> bool {
        let Ok(name) = self.relative(name) else {
            return false;
        };
        self.remove_where(|e| e.source == source && e.name == name)
    }

    fn remove_where(&self, doomed: impl Fn(&Entry) -> bool) -> bool {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|e| !doomed(e));
        let changed = entries.len() != before;
        if changed {
            self.publish(&entries);
        }
        changed
    }

    fn lock(&self) -> MutexGuard<'_, BTreeSet<Entry>> {
        // A writer that panicked left a consistent set behind (every change is one insert or
        // retain), so a poisoned lock is still usable.
        self.inner
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn insert_all(
        &self,
        entries: &mut BTreeSet<Entry>,
        records: impl IntoIterator<Item = HostRecord>,
    ) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        for record in records {
            match self.entry(&record) {
                Ok(entry) => {
                    entries.insert(entry);
                }
                Err(error) => rejected.push(Rejected { record, error }),
            }
        }
        self.inner
            .rejected
            .fetch_add(rejected.len() as u64, Ordering::Relaxed);
        rejected
    }

    fn entry(&self, record: &HostRecord) -> Result<Entry, HostnameError> {
        let name = self.relative(&record.name)?;
        Ok(Entry {
            source: record.source,
            name,
            addr: record.addr,
        })
    }

    /// `raw` as this store keeps it: checked (RFC 1123), lowercased, without the domain
    /// (`Bastion.default.` → `bastion`). Two names that land on the same record compare equal.
    pub fn relative_name(&self, raw: &str) -> Result<String, HostnameError> {
        self.relative(raw)
    }

    /// The validated name relative to the domain (`bastion.default` → `bastion`), checked to
    /// still fit in a DNS name once the domain is appended.
    fn relative(&self, raw: &str) -> Result<String, HostnameError> {
        let name = hostname::normalize(raw)?;
        let domain = &self.inner.domain_text;
        if !domain.is_empty() && name == *domain {
            return Err(HostnameError::IsTheDomain { name });
        }
        let relative = match name.strip_suffix(domain.as_str()) {
            Some(head) if !domain.is_empty() && head.ends_with('.') => {
                head.trim_end_matches('.').to_string()
            }
            _ => name,
        };
        self.qualify(&relative)?;
        Ok(relative)
    }

    fn qualify(&self, relative: &str) -> Result<Name, HostnameError> {
        let too_long = || HostnameError::TooLong {
            name: relative.to_string(),
            len: relative.len() + 1 + self.inner.domain_text.len(),
        };
        Name::from_ascii(relative)
            .and_then(|n| n.append_domain(&self.inner.domain))
            .map_err(|_| too_long())
    }

    fn publish(&self, entries: &BTreeSet<Entry>) {
        let mut records = Records {
            serial: self.inner.serial.fetch_add(1, Ordering::Relaxed) + 1,
            ..Records::default()
        };
        for entry in entries {
            let Ok(fqdn) = self.qualify(&entry.name) else {
                continue; // checked when the entry went in
            };
            let addrs = records.names.entry(fqdn.clone()).or_default();
            match entry.addr {
                IpAddr::V4(a) if !addrs.v4.contains(&a) => addrs.v4.push(a),
                IpAddr::V6(a) if !addrs.v6.contains(&a) => addrs.v6.push(a),
                _ => {}
            }
            // BTreeSet order is source order: the first name seen for an address wins.
            records
                .ptr
                .entry(entry.addr)
                .or_insert_with(|| fqdn.clone());
            let mut parent = fqdn.base_name();
            while parent.num_labels() > self.inner.domain.num_labels() {
                records.nonterminals.insert(parent.clone());
                parent = parent.base_name();
            }
        }
        records
            .nonterminals
            .retain(|n| !records.names.contains_key(n));
        self.inner.current.store(Arc::new(records));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> RecordStore {
        RecordStore::new(&Name::from_ascii("default.").unwrap())
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn qualified_and_bare_names_land_on_the_same_fqdn() {
        let s = store();
        let ip: IpAddr = "192.168.122.10".parse().unwrap();
        s.upsert(HostRecord::new("Bastion.default", ip, Source::Lease))
            .unwrap();
        s.upsert(HostRecord::new("bastion", ip, Source::Config))
            .unwrap();
        let r = s.snapshot();
        assert_eq!(r.len(), 1);
        assert_eq!(
            r.addrs(&n("BASTION.default.")).unwrap().v4,
            vec![ip.to_string().parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(r.ptr(ip), Some(&n("bastion.default.")));
    }

    #[test]
    fn garbage_names_are_skipped_and_counted_and_the_rest_published() {
        let s = store();
        let ip: IpAddr = "192.168.122.10".parse().unwrap();
        let rejected = s.set_all([
            HostRecord::new("ok", ip, Source::Lease),
            HostRecord::new("bad name", ip, Source::Lease),
            HostRecord::new("\u{0}\u{ff}", ip, Source::Lease),
            HostRecord::new("default", ip, Source::Lease),
        ]);
        assert_eq!(rejected.len(), 3);
        assert_eq!(s.rejected(), 3);
        assert!(s.snapshot().addrs(&n("ok.default.")).is_some());
        assert!(s.upsert(HostRecord::new("_x", ip, Source::Lease)).is_err());
        assert_eq!(s.rejected(), 4);
    }

    #[test]
    fn ptr_prefers_config_over_leases_and_removal_is_per_source() {
        let s = store();
        let ip: IpAddr = "192.168.122.10".parse().unwrap();
        s.upsert(HostRecord::new("client-said", ip, Source::Lease))
            .unwrap();
        s.upsert(HostRecord::new("operator-said", ip, Source::Config))
            .unwrap();
        assert_eq!(s.snapshot().ptr(ip), Some(&n("operator-said.default.")));
        assert!(s.remove_addr(Source::Config, ip));
        assert_eq!(s.snapshot().ptr(ip), Some(&n("client-said.default.")));
        assert!(!s.remove_addr(Source::Config, ip));
        assert!(s.remove_name(Source::Lease, "client-said.default"));
        assert!(s.snapshot().is_empty());
    }

    #[test]
    fn multi_label_names_make_nonterminals_and_replace_source_keeps_others() {
        let s = store();
        let a: IpAddr = "192.168.122.20".parse().unwrap();
        let b: IpAddr = "fd00::20".parse().unwrap();
        s.upsert(HostRecord::new("api.k8s", a, Source::Config))
            .unwrap();
        s.upsert(HostRecord::new("api.k8s", b, Source::Config))
            .unwrap();
        s.upsert(HostRecord::new("lease", a, Source::Lease))
            .unwrap();
        let r = s.snapshot();
        assert!(r.is_nonterminal(&n("k8s.default.")));
        assert_eq!(r.addrs(&n("api.k8s.default.")).unwrap().v6.len(), 1);
        let serial = r.serial();
        s.replace_source(Source::Config, [HostRecord::new("other", a, Source::Lease)]);
        let r = s.snapshot();
        assert!(r.serial() > serial);
        assert!(r.addrs(&n("api.k8s.default.")).is_none());
        assert!(!r.is_nonterminal(&n("k8s.default.")));
        assert!(r.addrs(&n("other.default.")).is_some());
        assert!(r.addrs(&n("lease.default.")).is_some());
        assert_eq!(r.ptr(a), Some(&n("other.default.")));
    }

    #[test]
    fn a_name_too_long_once_qualified_is_refused() {
        let s = RecordStore::new(&Name::from_ascii(format!("{}.", "d".repeat(60))).unwrap());
        let long = ["a", "b", "c", "e"].map(|c| c.repeat(60)).join(".");
        let err = s
            .upsert(HostRecord::new(
                long,
                "10.0.0.1".parse().unwrap(),
                Source::Lease,
            ))
            .unwrap_err();
        assert!(matches!(err.error, HostnameError::TooLong { .. }));
    }
}
