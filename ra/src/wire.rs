//! Router Solicitation and Router Advertisement as bytes (RFC 4861 §4.1, §4.2, §4.6; RDNSS
//! RFC 8106 §5.1), ICMPv6 header included. The checksum field is left 0: the kernel computes
//! (and on input verifies) the ICMPv6 checksum of a raw `IPPROTO_ICMPV6` socket itself.
//!
//! Written by hand rather than with `pnet_packet`'s ndp module: that crate builds its packet
//! types with a proc-macro framework (pnet_macros) for what are here three fixed layouts, has
//! no RDNSS option type, and hands option bodies back as raw bytes anyway, so the prefix and
//! RDNSS bodies would be packed by hand all the same. Every length here is checked against
//! the buffer before it is read.

use std::net::Ipv6Addr;

use hwaddr::Mac;
use ipnet::Ipv6Net;

pub const ROUTER_SOLICITATION: u8 = 133;
pub const ROUTER_ADVERTISEMENT: u8 = 134;

const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_PREFIX_INFORMATION: u8 = 3;
const OPT_MTU: u8 = 5;
const OPT_RDNSS: u8 = 25;

/// Flag bits of the RA header's flags byte.
const FLAG_MANAGED: u8 = 0x80;
const FLAG_OTHER: u8 = 0x40;
/// Flag bits of a prefix information option.
const PREFIX_ON_LINK: u8 = 0x80;
const PREFIX_AUTONOMOUS: u8 = 0x40;

/// Why a packet is not a valid message of the kind asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{len} bytes is shorter than the {need}-byte fixed part")]
    Short { len: usize, need: usize },
    #[error("ICMPv6 type {0}, not the message asked for")]
    Type(u8),
    #[error("ICMPv6 code {0} (must be 0)")]
    Code(u8),
    #[error("an option at offset {offset} has length 0")]
    ZeroLengthOption { offset: usize },
    #[error("an option at offset {offset} runs past the end of the packet")]
    TruncatedOption { offset: usize },
    #[error("option {kind} at offset {offset} has a malformed body")]
    BadOption { kind: u8, offset: usize },
    #[error("a solicitation from the unspecified address carries a source link-layer address")]
    UnspecifiedWithLladdr,
}

/// One prefix information option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixInfo {
    pub prefix: Ipv6Net,
    pub on_link: bool,
    /// SLAAC may form addresses in it (only meaningful for /64).
    pub autonomous: bool,
    pub valid_lifetime: u32,
    pub preferred_lifetime: u32,
}

/// An RDNSS option: resolvers and how long they may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rdnss {
    pub lifetime: u32,
    pub servers: Vec<Ipv6Addr>,
}

/// A Router Advertisement, as sent or as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    pub cur_hop_limit: u8,
    pub managed: bool,
    pub other: bool,
    /// Seconds; 0: not a default router.
    pub router_lifetime: u16,
    pub reachable_time: u32,
    pub retrans_timer: u32,
    pub source_lladdr: Option<Mac>,
    pub mtu: Option<u32>,
    pub prefixes: Vec<PrefixInfo>,
    pub rdnss: Option<Rdnss>,
}

impl Advertisement {
    /// The message bytes (ICMPv6 header with checksum 0, then options in a fixed order).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 + 8 + 32 * self.prefixes.len() + 40);
        out.extend([ROUTER_ADVERTISEMENT, 0, 0, 0, self.cur_hop_limit]);
        let mut flags = 0;
        if self.managed {
            flags |= FLAG_MANAGED;
        }
        if self.other {
            flags |= FLAG_OTHER;
        }
        out.push(flags);
        out.extend(self.router_lifetime.to_be_bytes());
        out.extend(self.reachable_time.to_be_bytes());
        out.extend(self.retrans_timer.to_be_bytes());
        if let Some(mac) = self.source_lladdr {
            out.extend([OPT_SOURCE_LLADDR, 1]);
            out.extend(mac.0);
        }
        if let Some(mtu) = self.mtu {
            out.extend([OPT_MTU, 1, 0, 0]);
            out.extend(mtu.to_be_bytes());
        }
        for p in &self.prefixes {
            out.extend([OPT_PREFIX_INFORMATION, 4, p.prefix.prefix_len()]);
            let mut f = 0;
            if p.on_link {
                f |= PREFIX_ON_LINK;
            }
            if p.autonomous {
                f |= PREFIX_AUTONOMOUS;
            }
            out.push(f);
            out.extend(p.valid_lifetime.to_be_bytes());
            out.extend(p.preferred_lifetime.to_be_bytes());
            out.extend([0; 4]);
            out.extend(p.prefix.network().octets());
        }
        if let Some(r) = self.rdnss.as_ref().filter(|r| !r.servers.is_empty()) {
            // Length in units of 8 bytes: 1 for the header, 2 per address. Bounded by what
            // fits one byte; the agent advertises one server.
            let n = r.servers.len().min(127);
            out.extend([OPT_RDNSS, (1 + 2 * n) as u8, 0, 0]);
            out.extend(r.lifetime.to_be_bytes());
            for s in &r.servers[..n] {
                out.extend(s.octets());
            }
        }
        out
    }

    /// Decode a Router Advertisement (options the agent does not send are skipped).
    pub fn parse(b: &[u8]) -> Result<Advertisement, WireError> {
        header(b, ROUTER_ADVERTISEMENT, 16)?;
        let mut ra = Advertisement {
            cur_hop_limit: b[4],
            managed: b[5] & FLAG_MANAGED != 0,
            other: b[5] & FLAG_OTHER != 0,
            router_lifetime: u16::from_be_bytes([b[6], b[7]]),
            reachable_time: be32(&b[8..12]),
            retrans_timer: be32(&b[12..16]),
            source_lladdr: None,
            mtu: None,
            prefixes: Vec::new(),
            rdnss: None,
        };
        for opt in options(b, 16) {
            let (kind, offset, body) = opt?;
            let bad = WireError::BadOption { kind, offset };
            match kind {
                OPT_SOURCE_LLADDR => {
                    ra.source_lladdr = Some(Mac::from_slice(body.get(..6).ok_or(bad)?).ok_or(bad)?)
                }
                OPT_MTU if body.len() == 6 => ra.mtu = Some(be32(&body[2..6])),
                OPT_MTU => return Err(bad),
                OPT_PREFIX_INFORMATION if body.len() == 30 => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&body[14..30]);
                    // Bits past the prefix length are reserved: ignored (RFC 4861 §4.6.2).
                    let prefix = Ipv6Net::new(Ipv6Addr::from(octets), body[0])
                        .map_err(|_| bad)?
                        .trunc();
                    ra.prefixes.push(PrefixInfo {
                        prefix,
                        on_link: body[1] & PREFIX_ON_LINK != 0,
                        autonomous: body[1] & PREFIX_AUTONOMOUS != 0,
                        valid_lifetime: be32(&body[2..6]),
                        preferred_lifetime: be32(&body[6..10]),
                    });
                }
                OPT_PREFIX_INFORMATION => return Err(bad),
                OPT_RDNSS if body.len() >= 22 && (body.len() - 6) % 16 == 0 => {
                    let servers = body[6..]
                        .chunks_exact(16)
                        .map(|c| {
                            let mut o = [0u8; 16];
                            o.copy_from_slice(c);
                            Ipv6Addr::from(o)
                        })
                        .collect();
                    ra.rdnss = Some(Rdnss {
                        lifetime: be32(&body[2..6]),
                        servers,
                    });
                }
                OPT_RDNSS => return Err(bad),
                _ => {}
            }
        }
        Ok(ra)
    }
}

/// A Router Solicitation as decoded: all the agent uses of one is whether it is valid and who
/// sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solicitation {
    pub source_lladdr: Option<Mac>,
}

impl Solicitation {
    /// Decode and validate a Router Solicitation from `source` (RFC 4861 §6.1.1, the parts that
    /// are in the message: type, code, length, options; the hop limit of 255 is checked by the
    /// receiver, which has it from the IPv6 header).
    pub fn parse(b: &[u8], source: Ipv6Addr) -> Result<Solicitation, WireError> {
        header(b, ROUTER_SOLICITATION, 8)?;
        let mut rs = Solicitation {
            source_lladdr: None,
        };
        for opt in options(b, 8) {
            let (kind, offset, body) = opt?;
            if kind == OPT_SOURCE_LLADDR {
                let bad = WireError::BadOption { kind, offset };
                rs.source_lladdr = Some(Mac::from_slice(body.get(..6).ok_or(bad)?).ok_or(bad)?);
            }
        }
        if source.is_unspecified() && rs.source_lladdr.is_some() {
            return Err(WireError::UnspecifiedWithLladdr);
        }
        Ok(rs)
    }

    /// A solicitation as a host sends it (for tests and the fuzz target's seeds).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ROUTER_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
        if let Some(mac) = self.source_lladdr {
            out.extend([OPT_SOURCE_LLADDR, 1]);
            out.extend(mac.0);
        }
        out
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn header(b: &[u8], kind: u8, need: usize) -> Result<(), WireError> {
    if b.len() < need {
        return Err(WireError::Short { len: b.len(), need });
    }
    if b[0] != kind {
        return Err(WireError::Type(b[0]));
    }
    if b[1] != 0 {
        return Err(WireError::Code(b[1]));
    }
    Ok(())
}

/// The options after `start`: (type, offset, body after the two header bytes), each length
/// checked; the first malformed one ends the walk with its error.
fn options(b: &[u8], start: usize) -> impl Iterator<Item = Result<(u8, usize, &[u8]), WireError>> {
    let mut at = start;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= b.len() {
            return None;
        }
        let offset = at;
        let (Some(&kind), Some(&units)) = (b.get(at), b.get(at + 1)) else {
            failed = true;
            return Some(Err(WireError::TruncatedOption { offset }));
        };
        if units == 0 {
            failed = true;
            return Some(Err(WireError::ZeroLengthOption { offset }));
        }
        let end = at + usize::from(units) * 8;
        let Some(body) = b.get(at + 2..end) else {
            failed = true;
            return Some(Err(WireError::TruncatedOption { offset }));
        };
        at = end;
        Some(Ok((kind, offset, body)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Advertisement {
        Advertisement {
            cur_hop_limit: 64,
            managed: true,
            other: true,
            router_lifetime: 1800,
            reachable_time: 0,
            retrans_timer: 0,
            source_lladdr: Some(Mac([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc])),
            mtu: Some(1400),
            prefixes: vec![PrefixInfo {
                prefix: "fd00:122::/64".parse().unwrap(),
                on_link: true,
                autonomous: true,
                valid_lifetime: 2_592_000,
                preferred_lifetime: 604_800,
            }],
            rdnss: Some(Rdnss {
                lifetime: 1800,
                servers: vec!["fd00:122::1".parse().unwrap()],
            }),
        }
    }

    #[test]
    fn an_advertisement_encodes_to_the_rfc_layout_byte_for_byte() {
        let b = sample().encode();
        // Header: type, code, checksum (kernel's), hop limit, M|O, lifetime 1800, timers 0.
        assert_eq!(
            &b[..16],
            &[134, 0, 0, 0, 64, 0xc0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        // Source link-layer address: type 1, 1 unit, the MAC.
        assert_eq!(&b[16..24], &[1, 1, 0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);
        // MTU: type 5, 1 unit, reserved, 1400.
        assert_eq!(&b[24..32], &[5, 1, 0, 0, 0, 0, 0x05, 0x78]);
        // Prefix information: type 3, 4 units, /64, L|A, 30 d, 7 d, reserved, the prefix.
        assert_eq!(&b[32..36], &[3, 4, 64, 0xc0]);
        assert_eq!(&b[36..40], &2_592_000u32.to_be_bytes());
        assert_eq!(&b[40..44], &604_800u32.to_be_bytes());
        assert_eq!(&b[44..48], &[0; 4]);
        assert_eq!(&b[48..50], &[0xfd, 0x00]);
        assert_eq!(&b[50..52], &[0x01, 0x22]);
        // RDNSS: type 25, 3 units, reserved, lifetime, one address.
        assert_eq!(&b[64..72], &[25, 3, 0, 0, 0, 0, 0x07, 0x08]);
        assert_eq!(b.len(), 64 + 24);
        assert_eq!(Advertisement::parse(&b).unwrap(), sample());
    }

    #[test]
    fn flags_and_optional_options_round_trip_when_absent() {
        let ra = Advertisement {
            managed: false,
            other: false,
            router_lifetime: 0,
            mtu: None,
            rdnss: None,
            source_lladdr: None,
            prefixes: vec![PrefixInfo {
                prefix: "fd00:1::/56".parse().unwrap(),
                on_link: true,
                autonomous: false,
                ..sample().prefixes[0].clone()
            }],
            ..sample()
        };
        let b = ra.encode();
        assert_eq!(b[5], 0, "neither M nor O");
        assert_eq!(&b[16..20], &[3, 4, 56, 0x80], "on-link only");
        assert_eq!(b.len(), 16 + 32);
        assert_eq!(Advertisement::parse(&b).unwrap(), ra);
    }

    #[test]
    fn a_solicitation_is_validated_as_rfc_4861_says() {
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let with_mac = Solicitation {
            source_lladdr: Some(Mac([2, 0, 0, 0, 0, 1])),
        };
        assert_eq!(
            Solicitation::parse(&with_mac.encode(), src).unwrap(),
            with_mac
        );
        let bare = [133, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            Solicitation::parse(&bare, Ipv6Addr::UNSPECIFIED).unwrap(),
            Solicitation {
                source_lladdr: None
            }
        );
        assert_eq!(
            Solicitation::parse(&with_mac.encode(), Ipv6Addr::UNSPECIFIED),
            Err(WireError::UnspecifiedWithLladdr)
        );
        assert_eq!(
            Solicitation::parse(&bare[..7], src),
            Err(WireError::Short { len: 7, need: 8 })
        );
        assert_eq!(
            Solicitation::parse(&[134, 0, 0, 0, 0, 0, 0, 0], src),
            Err(WireError::Type(134))
        );
        assert_eq!(
            Solicitation::parse(&[133, 1, 0, 0, 0, 0, 0, 0], src),
            Err(WireError::Code(1))
        );
        let mut zero = bare.to_vec();
        zero.extend([1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Solicitation::parse(&zero, src),
            Err(WireError::ZeroLengthOption { offset: 8 })
        );
        let mut long = bare.to_vec();
        long.extend([1, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Solicitation::parse(&long, src),
            Err(WireError::TruncatedOption { offset: 8 })
        );
        // Unknown options are skipped (RFC 4861 §4.6: MUST silently ignore).
        let mut unknown = bare.to_vec();
        unknown.extend([99, 1, 0, 0, 0, 0, 0, 0]);
        assert!(Solicitation::parse(&unknown, src).is_ok());
    }

    #[test]
    fn malformed_advertisement_options_are_errors_not_panics() {
        let good = sample().encode();
        for cut in 0..good.len() {
            let _ = Advertisement::parse(&good[..cut]);
        }
        let mut bad_mtu = good[..16].to_vec();
        bad_mtu.extend([5, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Advertisement::parse(&bad_mtu),
            Err(WireError::BadOption {
                kind: 5,
                offset: 16
            })
        );
        let mut bad_prefix_len = good.clone();
        bad_prefix_len[34] = 129;
        assert_eq!(
            Advertisement::parse(&bad_prefix_len),
            Err(WireError::BadOption {
                kind: 3,
                offset: 32
            })
        );
    }
}
