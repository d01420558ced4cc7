//! Durable DHCP leases: an append-only, checksummed journal under state_dir with an in-memory
//! index.
//!
//! - `stage` updates the index at once (so the allocator sees the lease immediately and never
//!   hands the address to anyone else) and appends the encoded record to a pending batch.
//! - `flush` writes the batch with one write and one fdatasync: the DHCP server flushes once per
//!   batch of packets and sends that batch's ACKs only after `flush` returned Ok (group commit).
//! - If `flush` fails (disk full, I/O error) the file is cut back to its last durable length and
//!   the batch is dropped. The index keeps the failed batch's leases: an address that was
//!   promised in memory stays reserved for that client until it expires, which is the safe
//!   direction (never given to two clients); the client gets no ACK and retries.
//! - Replay reads records until the first torn or corrupt one and truncates the file there.
//! - Compaction writes the live set to `<journal>.tmp`, fsyncs, renames over the journal and
//!   fsyncs the directory; until the rename the old journal is complete.

mod client;
mod codec;
mod holdings;
mod journal;
pub mod v6;

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Mac;
pub use client::{Client, ClientId, ClientKey, MAX_CLIENT_ID};
pub use codec::truncate_hostname;
use holdings::{Held, Holdings};
use journal::Journal;

/// A client's lease (also what `dhcp::pool` hands out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The client's hardware address when it last asked (`chaddr`).
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// Unix seconds.
    pub expires: u64,
    /// Option 12 as the client sent it (or the reservation's name).
    pub hostname: Option<String>,
    /// Option 61 as the client sent it, when it sent a usable one (see [`ClientKey`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<ClientId>,
    /// The agent that granted or last renewed it, where a store shared by several agents says
    /// (`[leases] agent`); None in the journal, whose leases are all its own agent's. Not part of
    /// the journal's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl Lease {
    /// Who holds this lease.
    pub fn key(&self) -> ClientKey {
        ClientKey::of(self.mac, self.client_id.as_ref())
    }
}

/// One journal entry. Later records override earlier ones on replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Granted or renewed: `mac` holds `ip` until `expires`; any other holder of `ip` loses it.
    Lease(Lease),
    /// The client known by `mac` (no client identifier, or an Ethernet one) gave the address
    /// back.
    Release { mac: Mac, ip: Ipv4Addr },
    /// The client known by its identifier `id` gave the address back.
    ReleaseClient { id: ClientId, ip: Ipv4Addr },
    /// A client found the address in use (DHCPDECLINE): nobody gets it before `until`.
    Decline { ip: Ipv4Addr, until: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease journal {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "lease journal {path}: disk full (ENOSPC): the lease could not be made durable, so it is \
         not acknowledged; free space on the filesystem holding {}",
        path.parent().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    DiskFull { path: PathBuf },
    #[error("lease journal {path}: not a hostagent lease journal (bad header); move the file away or set another state_dir")]
    NotAJournal { path: PathBuf },
    #[error("lease journal {path}: format version {found} is not supported (this hostagent reads version {supported})")]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

impl LeaseError {
    pub(crate) fn io(path: &Path, source: io::Error) -> LeaseError {
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => LeaseError::DiskFull {
                path: path.to_path_buf(),
            },
            _ => LeaseError::Io {
                path: path.to_path_buf(),
                source,
            },
        }
    }

    /// True when the failure is lack of space (worth a distinct alert).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, LeaseError::DiskFull { .. })
    }
}

/// What replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    /// Valid records replayed.
    pub records: usize,
    /// Bytes cut off the end (a torn append after a crash, or everything from a corrupt record on).
    pub dropped_bytes: u64,
    /// Set when the cut was caused by a corrupt record rather than a torn tail; the dropped bytes
    /// are saved next to the journal as `<journal>.dropped`.
    pub corruption: Option<String>,
    /// Whether open rewrote the journal to its live set.
    pub compacted: bool,
    /// The format version the file had when opened (see `codec`); an older one is rewritten in
    /// the current format on open.
    pub version: u32,
}

/// The replayed state: who holds what, and which addresses are quarantined.
#[derive(Debug, Default, Clone)]
pub struct LeaseIndex {
    holdings: Holdings<Lease>,
}

impl Held for Lease {
    type Key = ClientKey;
    type Addr = Ipv4Addr;
    fn holder(&self) -> ClientKey {
        self.key()
    }
    fn addr(&self) -> Ipv4Addr {
        self.ip
    }
    fn expires(&self) -> u64 {
        self.expires
    }
}

impl LeaseIndex {
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Lease(lease) => self.holdings.grant(lease),
            Record::Release { mac, ip } => self.holdings.release(&ClientKey::Mac(*mac), *ip),
            Record::ReleaseClient { id, ip } => {
                self.holdings.release(&ClientKey::Id(id.clone()), *ip)
            }
            Record::Decline { ip, until } => self.holdings.decline(*ip, *until),
        }
    }

    /// The lease of the client known by `key`, expired or not.
    pub fn by_client(&self, key: &ClientKey) -> Option<&Lease> {
        self.holdings.by_holder(key)
    }

    /// The lease of the client known by `mac` alone (no identifier, or an Ethernet one).
    pub fn by_mac(&self, mac: &Mac) -> Option<&Lease> {
        self.holdings.by_holder(&ClientKey::Mac(*mac))
    }

    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.holdings.by_addr(ip)
    }

    /// Until when `ip` is quarantined (may be in the past until someone lifts it).
    pub fn quarantined_until(&self, ip: Ipv4Addr) -> Option<u64> {
        self.holdings.quarantined_until(ip)
    }

    /// Forgets an expired quarantine (in memory only; compaction then leaves it out).
    pub fn lift_quarantine(&mut self, ip: Ipv4Addr) {
        self.holdings.lift_quarantine(ip);
    }

    /// Leases unexpired at `now`, sorted by address.
    pub fn unexpired(&self, now: u64) -> Vec<Lease> {
        self.holdings.unexpired(now)
    }

    /// Every lease known, expired or not (one per client).
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.holdings.leases()
    }

    pub fn quarantined(&self) -> impl Iterator<Item = (Ipv4Addr, u64)> + '_ {
        self.holdings.quarantined()
    }

    /// The records that rebuild this index.
    fn live_records(&self) -> impl Iterator<Item = Record> + '_ {
        self.leases().map(|l| Record::Lease(l.clone())).chain(
            self.quarantined()
                .map(|(ip, until)| Record::Decline { ip, until }),
        )
    }

    fn live_count(&self) -> usize {
        self.holdings.live_count()
    }
}

/// Compact when the journal holds this many times more bytes than its live set…
const COMPACT_RATIO: u64 = 4;
/// …and is at least this big (small journals are not worth rewriting).
const COMPACT_MIN_BYTES: u64 = 1 << 20;
/// Upper estimate of one encoded lease record, for the ratio.
const RECORD_ESTIMATE: u64 = 48;

/// The journal plus its index.
pub struct LeaseStore {
    journal: Journal,
    index: LeaseIndex,
    compact_min_bytes: u64,
}

impl LeaseStore {
    /// Opens or creates the journal at `path` (parent directory created 0700, file 0600), replays
    /// it and compacts it when most of it is dead records.
    pub fn open(path: &Path) -> Result<(LeaseStore, LoadReport), LeaseError> {
        let (journal, records, mut report) = Journal::open(path)?;
        let mut index = LeaseIndex::default();
        for record in &records {
            index.apply(record);
        }
        let mut store = LeaseStore {
            journal,
            index,
            compact_min_bytes: COMPACT_MIN_BYTES,
        };
        let old_format = report.version < codec::VERSION;
        if store.compaction_due() || old_format {
            // A full disk must not keep the service from starting. An old-format journal that
            // could not be rewritten stays readable by this release; only an older hostagent
            // would then stop at the first record it does not know.
            match store.compact() {
                Ok(()) => report.compacted = true,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, old_format, "lease journal compaction on open failed")
                }
            }
        }
        Ok((store, report))
    }

    pub fn index(&self) -> &LeaseIndex {
        &self.index
    }

    pub fn index_mut(&mut self) -> &mut LeaseIndex {
        &mut self.index
    }

    /// Applies `record` to the index now and queues it for the next `flush`.
    pub fn stage(&mut self, record: Record) {
        self.index.apply(&record);
        self.journal.stage(&record);
    }

    pub fn has_pending(&self) -> bool {
        self.journal.has_pending()
    }

    /// Makes every staged record durable (one write + one fdatasync). On Err nothing of the batch
    /// may be acknowledged; see the module docs for what the index keeps.
    pub fn flush(&mut self) -> Result<(), LeaseError> {
        self.journal.flush()
    }

    /// Journal size in bytes, including the pending batch.
    pub fn journal_len(&self) -> u64 {
        self.journal.len()
    }

    pub fn compaction_due(&self) -> bool {
        let live = self.index.live_count() as u64 * RECORD_ESTIMATE;
        let len = self.journal.len();
        len > self.compact_min_bytes && len > COMPACT_RATIO * live
    }

    /// Below this journal size compaction is never due (default 1 MiB). Tests lower it to make
    /// compactions frequent.
    pub fn set_compaction_min_bytes(&mut self, bytes: u64) {
        self.compact_min_bytes = bytes;
    }

    /// Rewrites the journal to the live set. Flushes first; fails (leaving the old journal in
    /// place) if that flush or the rewrite fails.
    pub fn compact(&mut self) -> Result<(), LeaseError> {
        self.journal.flush()?;
        self.journal.compact(self.index.live_records())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(mac: u8, ip: u8, expires: u64) -> Record {
        Record::Lease(Lease {
            mac: Mac([2, 0, 0, 0, 0, mac]),
            ip: Ipv4Addr::new(10, 0, 0, ip),
            expires,
            hostname: None,
            client_id: None,
            agent: None,
        })
    }

    #[test]
    fn later_lease_on_an_address_evicts_the_earlier_holder() {
        let mut index = LeaseIndex::default();
        index.apply(&lease(1, 10, 100));
        index.apply(&lease(2, 10, 200));
        assert!(index.by_mac(&Mac([2, 0, 0, 0, 0, 1])).is_none());
        assert_eq!(
            index
                .by_ip(Ipv4Addr::new(10, 0, 0, 10))
                .map(|l| l.mac.octets()[5]),
            Some(2)
        );
    }

    #[test]
    fn moving_a_client_frees_its_old_address() {
        let mut index = LeaseIndex::default();
        index.apply(&lease(1, 10, 100));
        index.apply(&lease(1, 11, 100));
        assert!(index.by_ip(Ipv4Addr::new(10, 0, 0, 10)).is_none());
        assert_eq!(index.leases().count(), 1);
    }

    #[test]
    fn release_of_someone_elses_address_is_ignored() {
        let mut index = LeaseIndex::default();
        index.apply(&lease(1, 10, 100));
        index.apply(&Record::Release {
            mac: Mac([2, 0, 0, 0, 0, 9]),
            ip: Ipv4Addr::new(10, 0, 0, 10),
        });
        assert!(index.by_ip(Ipv4Addr::new(10, 0, 0, 10)).is_some());
        index.apply(&Record::Release {
            mac: Mac([2, 0, 0, 0, 0, 1]),
            ip: Ipv4Addr::new(10, 0, 0, 10),
        });
        assert!(index.by_ip(Ipv4Addr::new(10, 0, 0, 10)).is_none());
    }

    #[test]
    fn decline_drops_the_lease_and_quarantines() {
        let mut index = LeaseIndex::default();
        index.apply(&lease(1, 10, 100));
        index.apply(&Record::Decline {
            ip: Ipv4Addr::new(10, 0, 0, 10),
            until: 500,
        });
        assert!(index.by_mac(&Mac([2, 0, 0, 0, 0, 1])).is_none());
        assert_eq!(
            index.quarantined_until(Ipv4Addr::new(10, 0, 0, 10)),
            Some(500)
        );
    }
}
