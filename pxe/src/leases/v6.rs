//! Durable DHCPv6 leases: a journal file of their own beside the DHCPv4 one, with the same
//! framing, replay, group commit and compaction (`journal`, [`super::codec::Format`]), and the
//! same promise: the server stages a record, flushes the batch (one fdatasync) and only then
//! sends the batch's Replies.
//!
//! ```text
//! file    = header record*
//! header  = "HAGLEAS6" (8 bytes) version (u32 LE, 1)
//! record  = len (u32 LE) crc (u32 LE, CRC-32/IEEE over len bytes + payload) payload
//! payload = 1 duid_len(u8) duid iaid(u32 LE) ip[16] expires(u64 LE) has_mac(u8) mac[6]?
//!             hostname_len(u8) hostname(UTF-8)                                -- Lease
//!         | 2 duid_len(u8) duid iaid(u32 LE) ip[16]                           -- Release
//!         | 3 ip[16] until(u64 LE)                                            -- Decline
//! ```
//!
//! A client is its DUID and IAID (RFC 8415 §12: one binding per IA_NA); a lease also keeps the
//! MAC the server learnt for the client (see `dhcp6::client`) and its FQDN (option 39).

use std::fmt;
use std::net::Ipv6Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::client::write_hex;
use super::codec::{Format, Reader};
use super::holdings::{Held, Holdings};
use super::journal::Journal;
use super::{truncate_hostname, LeaseError, LoadReport, COMPACT_MIN_BYTES, COMPACT_RATIO};
use crate::config::Mac;

/// A DHCP Unique Identifier (RFC 8415 §11): 2 bytes of type and at most 128 bytes of value.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duid(Vec<u8>);

impl Duid {
    /// RFC 8415 §11.1: a DUID is at most 128 octets, not counting the type code.
    pub const MAX_LEN: usize = 130;

    /// None unless `bytes` is 3..=130 bytes (a type and at least one byte of value).
    pub fn new(bytes: &[u8]) -> Option<Duid> {
        (3..=Self::MAX_LEN)
            .contains(&bytes.len())
            .then(|| Duid(bytes.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The DUID type (1 LLT, 2 EN, 3 LL, 4 UUID).
    pub fn kind(&self) -> u16 {
        u16::from_be_bytes([self.0[0], self.0[1]])
    }

    /// The Ethernet address inside a DUID-LLT or DUID-LL (hardware type 1), if it is one.
    pub fn ethernet(&self) -> Option<Mac> {
        let b = &self.0;
        let htype = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
        if htype != 1 {
            return None;
        }
        match (self.kind(), b.len()) {
            (1, 14) => Mac::from_slice(&b[8..14]),
            (3, 10) => Mac::from_slice(&b[4..10]),
            _ => None,
        }
    }

    /// Parses `aa:bb:...` (colons optional), as the config and `hostagent leases` write it.
    pub fn parse(text: &str) -> Option<Duid> {
        let hex: String = text.chars().filter(|c| *c != ':' && *c != '-').collect();
        if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
            .collect();
        Duid::new(&bytes?)
    }
}

impl fmt::Display for Duid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for Duid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duid({self})")
    }
}

impl Serialize for Duid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duid::parse(&text).ok_or_else(|| serde::de::Error::custom("not a DUID"))
    }
}

/// Who holds a DHCPv6 lease: the client's DUID and the IA_NA's IAID.
pub type Binding = (Duid, u32);

/// One IA_NA address lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease6 {
    pub duid: Duid,
    pub iaid: u32,
    pub ip: Ipv6Addr,
    /// Unix seconds: the end of the valid lifetime.
    pub expires: u64,
    /// The client's FQDN (option 39) as it sent it, or the static host's name.
    pub hostname: Option<String>,
    /// The client's MAC when the server could tell it (see `dhcp6::client`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
}

impl Lease6 {
    pub fn binding(&self) -> Binding {
        (self.duid.clone(), self.iaid)
    }
}

/// One v6 journal entry; later records override earlier ones on replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record6 {
    /// Granted or renewed; any other holder of `ip` loses it.
    Lease(Lease6),
    /// The client gave the address back (Release).
    Release { duid: Duid, iaid: u32, ip: Ipv6Addr },
    /// A client found the address in use (Decline): nobody gets it before `until`.
    Decline { ip: Ipv6Addr, until: u64 },
}

/// The v6 journal's layout (module docs).
pub(crate) struct V6;

const KIND_LEASE: u8 = 1;
const KIND_RELEASE: u8 = 2;
const KIND_DECLINE: u8 = 3;

impl Format for V6 {
    type Record = Record6;
    const MAGIC: &'static [u8; 8] = b"HAGLEAS6";
    const VERSION: u32 = 1;
    const READABLE_VERSIONS: &'static [u32] = &[1];
    /// The longest lease is 1 + 131 + 4 + 16 + 8 + 7 + 256 = 423 bytes.
    const MAX_PAYLOAD: usize = 512;

    fn payload(record: &Record6, out: &mut Vec<u8>) {
        let push_binding = |out: &mut Vec<u8>, duid: &Duid, iaid: u32, ip: &Ipv6Addr| {
            out.push(duid.0.len() as u8);
            out.extend_from_slice(&duid.0);
            out.extend_from_slice(&iaid.to_le_bytes());
            out.extend_from_slice(&ip.octets());
        };
        match record {
            Record6::Lease(l) => {
                out.push(KIND_LEASE);
                push_binding(out, &l.duid, l.iaid, &l.ip);
                out.extend_from_slice(&l.expires.to_le_bytes());
                match l.mac {
                    Some(mac) => {
                        out.push(1);
                        out.extend_from_slice(&mac.octets());
                    }
                    None => out.push(0),
                }
                let name = l.hostname.as_deref().map(truncate_hostname).unwrap_or("");
                out.push(name.len() as u8);
                out.extend_from_slice(name.as_bytes());
            }
            Record6::Release { duid, iaid, ip } => {
                out.push(KIND_RELEASE);
                push_binding(out, duid, *iaid, ip);
            }
            Record6::Decline { ip, until } => {
                out.push(KIND_DECLINE);
                out.extend_from_slice(&ip.octets());
                out.extend_from_slice(&until.to_le_bytes());
            }
        }
    }

    fn parse(p: &[u8]) -> Option<Record6> {
        let (&kind, rest) = p.split_first()?;
        let mut r = Reader(rest);
        let record = match kind {
            KIND_LEASE => {
                let (duid, iaid, ip) = read_binding(&mut r)?;
                let expires = r.u64()?;
                let mac = match r.take(1)?[0] {
                    0 => None,
                    1 => Some(Mac::from_slice(r.take(6)?)?),
                    _ => return None,
                };
                let len = r.take(1)?[0] as usize;
                let name = std::str::from_utf8(r.take(len)?).ok()?;
                Record6::Lease(Lease6 {
                    duid,
                    iaid,
                    ip,
                    expires,
                    hostname: (!name.is_empty()).then(|| name.to_string()),
                    mac,
                })
            }
            KIND_RELEASE => {
                let (duid, iaid, ip) = read_binding(&mut r)?;
                Record6::Release { duid, iaid, ip }
            }
            KIND_DECLINE => Record6::Decline {
                ip: read_ip(&mut r)?,
                until: r.u64()?,
            },
            _ => return None,
        };
        r.0.is_empty().then_some(record)
    }
}

fn read_ip(r: &mut Reader) -> Option<Ipv6Addr> {
    let b: [u8; 16] = r.take(16)?.try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

fn read_binding(r: &mut Reader) -> Option<(Duid, u32, Ipv6Addr)> {
    let len = r.take(1)?[0] as usize;
    let duid = Duid::new(r.take(len)?)?;
    let iaid = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
    Some((duid, iaid, read_ip(r)?))
}

/// The replayed v6 state: who holds what, and which addresses are quarantined (the v4 rule,
/// `holdings`, keyed by DUID and IAID).
#[derive(Debug, Default, Clone)]
pub struct Lease6Index {
    holdings: Holdings<Lease6>,
}

impl Held for Lease6 {
    type Key = Binding;
    type Addr = Ipv6Addr;
    fn holder(&self) -> Binding {
        self.binding()
    }
    fn addr(&self) -> Ipv6Addr {
        self.ip
    }
    fn expires(&self) -> u64 {
        self.expires
    }
}

impl Lease6Index {
    pub fn apply(&mut self, record: &Record6) {
        match record {
            Record6::Lease(lease) => self.holdings.grant(lease),
            Record6::Release { duid, iaid, ip } => {
                self.holdings.release(&(duid.clone(), *iaid), *ip)
            }
            Record6::Decline { ip, until } => self.holdings.decline(*ip, *until),
        }
    }

    /// The lease of this DUID and IAID, expired or not.
    pub fn by_binding(&self, duid: &Duid, iaid: u32) -> Option<&Lease6> {
        self.holdings.by_holder(&(duid.clone(), iaid))
    }

    pub fn by_ip(&self, ip: Ipv6Addr) -> Option<&Lease6> {
        self.holdings.by_addr(ip)
    }

    pub fn quarantined_until(&self, ip: Ipv6Addr) -> Option<u64> {
        self.holdings.quarantined_until(ip)
    }

    /// Leases unexpired at `now`, sorted by address.
    pub fn unexpired(&self, now: u64) -> Vec<Lease6> {
        self.holdings.unexpired(now)
    }

    /// Every lease known, expired or not.
    pub fn leases(&self) -> impl Iterator<Item = &Lease6> {
        self.holdings.leases()
    }

    fn live_records(&self) -> impl Iterator<Item = Record6> + '_ {
        self.leases().map(|l| Record6::Lease(l.clone())).chain(
            self.holdings
                .quarantined()
                .map(|(ip, until)| Record6::Decline { ip, until }),
        )
    }

    fn live_count(&self) -> usize {
        self.holdings.live_count()
    }
}

/// Upper estimate of one encoded v6 lease record, for the compaction ratio.
const RECORD_ESTIMATE: u64 = 80;

/// The v6 journal plus its index (as [`super::LeaseStore`] for v4).
pub struct Lease6Store {
    journal: Journal<V6>,
    index: Lease6Index,
    /// Moves on with every staged record: the lease feed publishes when it changed.
    generation: u64,
    compact_min_bytes: u64,
}

impl Lease6Store {
    /// Opens or creates the journal at `path`, replays it, and compacts it when most of it is
    /// dead records.
    pub fn open(path: &Path) -> Result<(Lease6Store, LoadReport), LeaseError> {
        let (journal, records, mut report) = Journal::<V6>::open(path)?;
        let mut index = Lease6Index::default();
        for record in &records {
            index.apply(record);
        }
        let mut store = Lease6Store {
            journal,
            index,
            generation: 0,
            compact_min_bytes: COMPACT_MIN_BYTES,
        };
        if store.compaction_due() {
            match store.compact() {
                Ok(()) => report.compacted = true,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "DHCPv6 lease journal compaction on open failed")
                }
            }
        }
        Ok((store, report))
    }

    pub fn index(&self) -> &Lease6Index {
        &self.index
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Applies `record` to the index now and queues it for the next `flush`.
    pub fn stage(&mut self, record: Record6) {
        self.index.apply(&record);
        self.journal.stage(&record);
        self.generation += 1;
    }

    pub fn has_pending(&self) -> bool {
        self.journal.has_pending()
    }

    /// Makes every staged record durable (one write + one fdatasync). On Err nothing of the
    /// batch may be acknowledged; the index keeps the failed batch's leases reserved.
    pub fn flush(&mut self) -> Result<(), LeaseError> {
        self.journal.flush()
    }

    pub fn compaction_due(&self) -> bool {
        let live = self.index.live_count() as u64 * RECORD_ESTIMATE;
        let len = self.journal.len();
        len > self.compact_min_bytes && len > COMPACT_RATIO * live
    }

    /// Below this journal size compaction is never due (default 1 MiB).
    pub fn set_compaction_min_bytes(&mut self, bytes: u64) {
        self.compact_min_bytes = bytes;
    }

    /// Rewrites the journal to the live set (flushing first).
    pub fn compact(&mut self) -> Result<(), LeaseError> {
        self.journal.flush()?;
        self.journal.compact(self.index.live_records())
    }
}

/// Replays a v6 journal's bytes without a file (for the fuzz target): the records of the valid
/// prefix, as `Lease6Store::open` would apply them.
pub fn replay_bytes(bytes: &[u8]) -> Vec<Record6> {
    use super::codec::{decode_as, Decoded, HEADER_LEN};
    let mut out = Vec::new();
    if bytes.len() < HEADER_LEN || &bytes[..8] != V6::MAGIC {
        return out;
    }
    let mut pos = HEADER_LEN;
    while let Decoded::Record(r, used) = decode_as::<V6>(&bytes[pos..]) {
        out.push(r);
        pos += used;
    }
    out
}

/// Encodes `records` as a complete v6 journal (for tests and the fuzz target's seeds).
pub fn journal_bytes(records: &[Record6]) -> Vec<u8> {
    let mut out = super::codec::header_of::<V6>().to_vec();
    for r in records {
        super::codec::encode_as::<V6>(r, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duid(last: u8) -> Duid {
        Duid::new(&[0, 3, 0, 1, 0x52, 0x54, 0, 0, 0, last]).unwrap()
    }

    fn lease(last: u8, ip: u16, name: Option<&str>) -> Record6 {
        Record6::Lease(Lease6 {
            duid: duid(last),
            iaid: 1,
            ip: Ipv6Addr::new(0xfd00, 0x122, 0, 0, 0, 0, 0, ip),
            expires: 1_700_000_000,
            hostname: name.map(String::from),
            mac: duid(last).ethernet(),
        })
    }

    #[test]
    fn every_kind_round_trips_through_a_journal() {
        let records = vec![
            lease(1, 0x100, Some("web")),
            lease(2, 0x101, None),
            Record6::Release {
                duid: duid(2),
                iaid: 1,
                ip: Ipv6Addr::new(0xfd00, 0x122, 0, 0, 0, 0, 0, 0x101),
            },
            Record6::Decline {
                ip: Ipv6Addr::new(0xfd00, 0x122, 0, 0, 0, 0, 0, 0x102),
                until: 99,
            },
        ];
        let bytes = journal_bytes(&records);
        assert_eq!(replay_bytes(&bytes), records);
        // Cut anywhere: the complete prefix, never a panic.
        for cut in 0..bytes.len() {
            let got = replay_bytes(&bytes[..cut]);
            assert!(records.starts_with(&got));
        }
    }

    #[test]
    fn duids_parse_and_name_their_ethernet_address() {
        let llt = Duid::parse("00:01:00:01:2c:4b:1a:00:52:54:00:12:34:56").unwrap();
        assert_eq!(llt.ethernet(), Some(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])));
        let ll = Duid::parse("0003000152540012345a").unwrap();
        assert_eq!(ll.ethernet(), Some(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x5a])));
        let uuid = Duid::parse("00:04:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10").unwrap();
        assert_eq!(uuid.ethernet(), None);
        assert_eq!(llt.to_string(), "00:01:00:01:2c:4b:1a:00:52:54:00:12:34:56");
        assert!(Duid::parse("00:01").is_none());
        assert!(Duid::parse("zz:01:02").is_none());
        assert!(Duid::parse(&"00".repeat(131)).is_none());
    }

    #[test]
    fn the_index_moves_releases_and_quarantines() {
        let mut index = Lease6Index::default();
        index.apply(&lease(1, 0x100, None));
        index.apply(&lease(2, 0x100, None));
        assert!(index.by_binding(&duid(1), 1).is_none());
        let ip = Ipv6Addr::new(0xfd00, 0x122, 0, 0, 0, 0, 0, 0x100);
        assert_eq!(index.by_ip(ip).map(|l| l.duid.clone()), Some(duid(2)));
        index.apply(&Record6::Release {
            duid: duid(1),
            iaid: 1,
            ip,
        });
        assert!(index.by_ip(ip).is_some(), "a stranger's release is ignored");
        index.apply(&Record6::Decline { ip, until: 5 });
        assert!(index.by_ip(ip).is_none());
        assert_eq!(index.quarantined_until(ip), Some(5));
    }
}
