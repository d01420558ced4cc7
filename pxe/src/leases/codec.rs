//! On-disk encoding of the lease journal.
//!
//! ```text
//! file    = header record*
//! header  = "HAGLEASE" (8 bytes) version (u32 LE, currently 2)
//! record  = len (u32 LE, payload length) crc (u32 LE, CRC-32/IEEE over len bytes + payload) payload
//! payload = 1 mac[6] ip[4] expires(u64 LE, unix s) hostname_len(u8) hostname(UTF-8)   -- Lease
//!         | 2 mac[6] ip[4]                                                            -- Release
//!         | 3 ip[4] until(u64 LE, unix s)                                             -- Decline
//!         | 4 mac[6] ip[4] expires(u64 LE) hostname_len(u8) hostname id_len(u8) id    -- Lease, with
//!                                                                                        option 61
//!         | 5 id_len(u8) id ip[4]                                                     -- Release by
//!                                                                                        option 61
//! ```
//!
//! Versions: 1 (the first release) has kinds 1–3 only; 2 adds kinds 4 and 5 (client identifiers,
//! RFC 4361) and changes nothing else, so a version-1 journal reads as it is. A lease without a
//! client identifier is still written as kind 1, byte for byte as before. The header says 2 so that
//! an older hostagent refuses the file with a clear "version 2 is not supported" instead of
//! cutting it at the first kind-4 record it cannot read; `LeaseStore::open` rewrites a version-1
//! journal as version 2 (compaction) before appending to it.
//!
//! Every record carries its own length and checksum, so replay can tell a complete record from a
//! torn or corrupted one without trusting anything after it. Binary and fixed-layout because the
//! DHCP server appends one record per ACK at tens of thousands per second.

use std::net::Ipv4Addr;

use super::{ClientId, Lease, Record};
use crate::config::Mac;

pub(crate) const MAGIC: &[u8; 8] = b"HAGLEASE";
pub(crate) const VERSION: u32 = 2;
/// Versions this release reads (see the module docs).
pub(crate) const READABLE_VERSIONS: [u32; 2] = [1, 2];
pub(crate) const HEADER_LEN: usize = 12;
/// No valid payload is longer (a kind-4 lease with a 255-byte hostname and a 255-byte client
/// identifier is 531); a larger length field means corruption, and refusing it keeps a flipped bit
/// from making replay skip megabytes.
const MAX_PAYLOAD: usize = 600;
const FRAME_LEN: usize = 8;

const KIND_LEASE: u8 = 1;
const KIND_RELEASE: u8 = 2;
const KIND_DECLINE: u8 = 3;
const KIND_LEASE_ID: u8 = 4;
const KIND_RELEASE_ID: u8 = 5;

/// One kind of journal: its header and the payloads of its records. The framing (length,
/// checksum), replay, group commit and compaction are the same for every kind (`journal`);
/// DHCPv4 leases are [`V4`], DHCPv6 leases `leases::v6`'s.
pub(crate) trait Format {
    type Record;
    /// The file's first 8 bytes.
    const MAGIC: &'static [u8; 8];
    /// The version written in new headers.
    const VERSION: u32;
    /// The versions this release reads.
    const READABLE_VERSIONS: &'static [u32];
    /// No valid payload is longer: a larger length field is corruption.
    const MAX_PAYLOAD: usize;
    /// Appends the payload (no frame) of `record`.
    fn payload(record: &Self::Record, out: &mut Vec<u8>);
    /// The record of a complete payload; None when it is malformed.
    fn parse(payload: &[u8]) -> Option<Self::Record>;
}

/// The DHCPv4 lease journal (the layout in the module docs).
pub(crate) struct V4;

impl Format for V4 {
    type Record = Record;
    const MAGIC: &'static [u8; 8] = MAGIC;
    const VERSION: u32 = VERSION;
    const READABLE_VERSIONS: &'static [u32] = &READABLE_VERSIONS;
    const MAX_PAYLOAD: usize = MAX_PAYLOAD;
    fn payload(record: &Record, out: &mut Vec<u8>) {
        encode_payload(record, out)
    }
    fn parse(payload: &[u8]) -> Option<Record> {
        decode_payload(payload)
    }
}

pub(crate) fn header_of<F: Format>() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(F::MAGIC);
    h[8..].copy_from_slice(&F::VERSION.to_le_bytes());
    h
}

/// Appends one framed record to `out`.
#[cfg(test)]
pub(crate) fn encode(record: &Record, out: &mut Vec<u8>) {
    encode_as::<V4>(record, out)
}

/// Appends one framed record of kind `F` to `out`.
pub(crate) fn encode_as<F: Format>(record: &F::Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_LEN]);
    F::payload(record, out);
    let len = (out.len() - start - FRAME_LEN) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32(&out[start..start + 4], &out[start + FRAME_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn encode_payload(record: &Record, out: &mut Vec<u8>) {
    match record {
        Record::Lease(lease) => {
            out.push(if lease.client_id.is_some() {
                KIND_LEASE_ID
            } else {
                KIND_LEASE
            });
            out.extend_from_slice(&lease.mac.octets());
            out.extend_from_slice(&lease.ip.octets());
            out.extend_from_slice(&lease.expires.to_le_bytes());
            let name = lease
                .hostname
                .as_deref()
                .map(truncate_hostname)
                .unwrap_or("");
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            if let Some(id) = &lease.client_id {
                push_id(out, id);
            }
        }
        Record::Release { mac, ip } => {
            out.push(KIND_RELEASE);
            out.extend_from_slice(&mac.octets());
            out.extend_from_slice(&ip.octets());
        }
        Record::ReleaseClient { id, ip } => {
            out.push(KIND_RELEASE_ID);
            push_id(out, id);
            out.extend_from_slice(&ip.octets());
        }
        Record::Decline { ip, until } => {
            out.push(KIND_DECLINE);
            out.extend_from_slice(&ip.octets());
            out.extend_from_slice(&until.to_le_bytes());
        }
    }
}

/// A client identifier is 2..=255 bytes by construction (`ClientId::new`).
fn push_id(out: &mut Vec<u8>, id: &ClientId) {
    let bytes = id.as_bytes();
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

/// Longest prefix of `name` that fits the one-byte length field, cut on a char boundary.
pub fn truncate_hostname(name: &str) -> &str {
    let mut end = name.len().min(255);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<R = Record> {
    Record(R, usize),
    /// The buffer ends inside this record (a torn append).
    Incomplete,
    /// Length out of bounds, checksum mismatch or malformed payload.
    Corrupt(&'static str),
}

/// Decodes the record at the start of `buf`.
#[cfg(test)]
pub(crate) fn decode(buf: &[u8]) -> Decoded {
    decode_as::<V4>(buf)
}

/// Decodes the record of kind `F` at the start of `buf`.
pub(crate) fn decode_as<F: Format>(buf: &[u8]) -> Decoded<F::Record> {
    if buf.len() < FRAME_LEN {
        return Decoded::Incomplete;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > F::MAX_PAYLOAD {
        return Decoded::Corrupt("record length out of bounds");
    }
    let Some(payload) = buf.get(FRAME_LEN..FRAME_LEN + len) else {
        return Decoded::Incomplete;
    };
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if crc != crc32(&buf[..4], payload) {
        return Decoded::Corrupt("checksum mismatch");
    }
    match F::parse(payload) {
        Some(record) => Decoded::Record(record, FRAME_LEN + len),
        None => Decoded::Corrupt("malformed record payload"),
    }
}

fn decode_payload(p: &[u8]) -> Option<Record> {
    let (&kind, rest) = p.split_first()?;
    let mut r = Reader(rest);
    let record = match kind {
        KIND_LEASE | KIND_LEASE_ID => {
            let mac = r.mac()?;
            let ip = r.ip()?;
            let expires = r.u64()?;
            let name_len = r.take(1)?[0] as usize;
            let name = std::str::from_utf8(r.take(name_len)?).ok()?;
            let hostname = (!name.is_empty()).then(|| name.to_string());
            let client_id = match kind {
                KIND_LEASE_ID => Some(r.id()?),
                _ => None,
            };
            Record::Lease(Lease {
                mac,
                ip,
                expires,
                hostname,
                client_id,
                agent: None,
            })
        }
        KIND_RELEASE => Record::Release {
            mac: r.mac()?,
            ip: r.ip()?,
        },
        KIND_RELEASE_ID => Record::ReleaseClient {
            id: r.id()?,
            ip: r.ip()?,
        },
        KIND_DECLINE => Record::Decline {
            ip: r.ip()?,
            until: r.u64()?,
        },
        _ => return None,
    };
    // Trailing bytes mean a writer we do not understand: not ours to guess at.
    r.0.is_empty().then_some(record)
}

/// Reads a record payload front to back (`None` once it is short).
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn mac(&mut self) -> Option<Mac> {
        Mac::from_slice(self.take(6)?)
    }
    fn ip(&mut self) -> Option<Ipv4Addr> {
        let b: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn id(&mut self) -> Option<ClientId> {
        let len = self.take(1)?[0] as usize;
        ClientId::new(self.take(len)?)
    }
}

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// CRC-32/IEEE over `a` followed by `b`.
pub(crate) fn crc32(a: &[u8], b: &[u8]) -> u32 {
    let mut c = !0u32;
    for &byte in a.iter().chain(b) {
        c = CRC_TABLE[((c ^ byte as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: Option<&str>) -> Record {
        Record::Lease(Lease {
            mac: Mac([2, 0, 0, 0, 0, 7]),
            ip: Ipv4Addr::new(10, 0, 0, 7),
            expires: 1_700_000_000,
            hostname: name.map(str::to_string),
            agent: None,
            client_id: None,
        })
    }

    fn duid() -> ClientId {
        ClientId::new(&[0xff, 0, 0, 0, 1, 0, 1, 0, 1, 0x2a]).unwrap()
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"1234", b"56789"), 0xCBF4_3926);
    }

    #[test]
    fn every_kind_round_trips() {
        let records = [
            lease(Some("guest-1")),
            lease(None),
            Record::Release {
                mac: Mac([1, 2, 3, 4, 5, 6]),
                ip: Ipv4Addr::new(10, 0, 0, 9),
            },
            Record::Decline {
                ip: Ipv4Addr::new(10, 0, 0, 10),
                until: 42,
            },
            Record::Lease(Lease {
                client_id: Some(duid()),
                ..match lease(Some("guest-2")) {
                    Record::Lease(l) => l,
                    _ => unreachable!(),
                }
            }),
            Record::ReleaseClient {
                id: duid(),
                ip: Ipv4Addr::new(10, 0, 0, 11),
            },
        ];
        for record in records {
            let mut buf = Vec::new();
            encode(&record, &mut buf);
            assert_eq!(decode(&buf), Decoded::Record(record, buf.len()));
        }
    }

    /// The bytes journals on disk hold: a MAC is its six raw bytes, whatever type carries it in
    /// memory. A change here breaks every existing journal.
    #[test]
    fn records_keep_their_on_disk_bytes() {
        let mut buf = Vec::new();
        encode(&lease(Some("g")), &mut buf);
        let payload: &[u8] = &[
            KIND_LEASE, 2, 0, 0, 0, 0, 7, // mac
            10, 0, 0, 7, // ip
            0x00, 0xf1, 0x53, 0x65, 0, 0, 0, 0, // expires 1_700_000_000 LE
            1, b'g', // hostname
        ];
        assert_eq!(&buf[..4], &(payload.len() as u32).to_le_bytes());
        assert_eq!(&buf[4..8], &crc32(&buf[..4], payload).to_le_bytes());
        assert_eq!(&buf[FRAME_LEN..], payload);
        let mut buf = Vec::new();
        encode(
            &Record::Release {
                mac: Mac([1, 2, 3, 4, 5, 6]),
                ip: Ipv4Addr::new(10, 0, 0, 9),
            },
            &mut buf,
        );
        assert_eq!(
            &buf[FRAME_LEN..],
            &[KIND_RELEASE, 1, 2, 3, 4, 5, 6, 10, 0, 0, 9]
        );
    }

    /// Kinds 4 and 5 (version 2): the kind-1 layout with the identifier after the hostname, and
    /// a release by identifier.
    #[test]
    fn client_id_records_have_their_own_kinds() {
        let mut buf = Vec::new();
        let with_id = Record::Lease(Lease {
            mac: Mac([2, 0, 0, 0, 0, 7]),
            ip: Ipv4Addr::new(10, 0, 0, 7),
            expires: 1_700_000_000,
            agent: None,
            hostname: Some("g".into()),
            client_id: Some(ClientId::new(&[0xff, 1, 2]).unwrap()),
        });
        encode(&with_id, &mut buf);
        let payload: &[u8] = &[
            KIND_LEASE_ID,
            2,
            0,
            0,
            0,
            0,
            7,
            10,
            0,
            0,
            7,
            0x00,
            0xf1,
            0x53,
            0x65,
            0,
            0,
            0,
            0,
            1,
            b'g',
            3,
            0xff,
            1,
            2,
        ];
        assert_eq!(&buf[FRAME_LEN..], payload);
        let mut buf = Vec::new();
        encode(
            &Record::ReleaseClient {
                id: ClientId::new(&[0xff, 1, 2]).unwrap(),
                ip: Ipv4Addr::new(10, 0, 0, 9),
            },
            &mut buf,
        );
        assert_eq!(
            &buf[FRAME_LEN..],
            &[KIND_RELEASE_ID, 3, 0xff, 1, 2, 10, 0, 0, 9]
        );
        // An identifier of a length ClientId refuses is a malformed record, not a panic.
        let mut bad = Vec::new();
        encode(
            &Record::ReleaseClient {
                id: ClientId::new(&[0xff, 1]).unwrap(),
                ip: Ipv4Addr::new(10, 0, 0, 9),
            },
            &mut bad,
        );
        bad[FRAME_LEN + 1] = 1; // id_len 1: below the minimum
        let len = (bad.len() - FRAME_LEN) as u32;
        let crc = crc32(&len.to_le_bytes(), &bad[FRAME_LEN..]);
        bad[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode(&bad), Decoded::Corrupt(_)));
    }

    #[test]
    fn long_hostname_is_cut_on_a_char_boundary() {
        let name = "é".repeat(200); // 400 bytes
        let mut buf = Vec::new();
        encode(&lease(Some(&name)), &mut buf);
        let Decoded::Record(Record::Lease(l), _) = decode(&buf) else {
            panic!("not a lease")
        };
        let stored = l.hostname.unwrap_or_default();
        assert_eq!(stored.len(), 254);
        assert!(name.starts_with(&stored));
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode(&lease(Some("x")), &mut buf);
        for i in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                !matches!(decode(&bad), Decoded::Record(..)),
                "flip of bit {i} went unnoticed"
            );
        }
    }
}
