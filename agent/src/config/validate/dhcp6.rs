//! `[network.dhcp6]`: the IA_NA range, lease time, rapid commit and static hosts by DUID or
//! MAC, all inside the network's IPv6 prefix.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::ops::Range;

use ipnet::Ipv6Net;
use pxe::config::Host6Id;
use pxe::leases::v6::Duid;

use super::super::checks;
use super::super::model::{Dhcp6, Dhcp6Host, DEFAULT_LEASE_TIME};
use super::super::wire::{self, S};
use super::Checker;

pub(super) fn dhcp6(
    c: &mut Checker,
    d: &wire::NetworkDhcp6,
    address: Option<Ipv6Net>,
) -> Option<Dhcp6> {
    let before = c.problems.len();
    let example = address.map_or("fd00:122::100-fd00:122::1ff".to_string(), |a| {
        let base = u128::from(a.network());
        format!(
            "{}-{}",
            Ipv6Addr::from(base + 0x100),
            Ipv6Addr::from(base + 0x1ff)
        )
    });
    let range = d
        .range
        .as_ref()
        .and_then(|r| range(c, r, address, &example));
    let lease_time = match &d.lease_time {
        Some(l) => c.check(l.span(), checks::lease_time(l.get_ref())),
        None => Some(DEFAULT_LEASE_TIME),
    };
    let hosts = hosts(c, &d.host, address);
    if c.problems.len() != before {
        return None;
    }
    Some(Dhcp6 {
        range,
        lease_time: lease_time?,
        rapid_commit: d.rapid_commit.as_ref().is_some_and(|r| *r.get_ref()),
        hosts,
    })
}

fn range(
    c: &mut Checker,
    r: &S<String>,
    address: Option<Ipv6Net>,
    example: &str,
) -> Option<(Ipv6Addr, Ipv6Addr)> {
    let syntax = || {
        checks::bad(
            format!(
                "\"{}\" is not an IPv6 address range",
                r.get_ref().escape_debug()
            ),
            format!("write FIRST-LAST with two IPv6 addresses, e.g. \"{example}\""),
        )
    };
    let parsed = r
        .get_ref()
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
        .ok_or_else(syntax);
    let (first, last): (Ipv6Addr, Ipv6Addr) = c.check(r.span(), parsed)?;
    let Some(address) = address else {
        return Some((first, last));
    };
    let prefix = address.trunc();
    let placed = if first > last {
        Err(checks::bad(
            format!("range {first}-{last} ends before it starts"),
            format!("write the lower address first, e.g. \"{example}\""),
        ))
    } else if !prefix.contains(&first) || !prefix.contains(&last) {
        Err(checks::bad(
            format!("range {first}-{last} is not inside the prefix {prefix}"),
            format!("use addresses of the network's prefix, e.g. \"{example}\""),
        ))
    } else if (first..=last).contains(&address.addr()) {
        Err(checks::bad(
            format!(
                "range {first}-{last} covers the gateway address {}",
                address.addr()
            ),
            format!("leave the gateway out, e.g. \"{example}\""),
        ))
    } else {
        Ok((first, last))
    };
    c.check(r.span(), placed)
}

/// `[[network.dhcp6.host]]`: one of `duid` or `mac`, an address of the prefix (inside the range
/// or not: a static address is never handed to anyone else), each identity, address and name
/// once.
fn hosts(
    c: &mut Checker,
    hosts: &[S<wire::Dhcp6Host>],
    address: Option<Ipv6Net>,
) -> Vec<Dhcp6Host> {
    let mut out = Vec::new();
    let mut ids: HashMap<String, Range<usize>> = HashMap::new();
    let mut ips: HashMap<String, Range<usize>> = HashMap::new();
    let mut names: HashMap<String, Range<usize>> = HashMap::new();
    let once = |c: &mut Checker,
                seen: &mut HashMap<String, Range<usize>>,
                key: String,
                span: Range<usize>,
                what: &str| {
        if let Some(first) = seen.get(&key) {
            let line = c.line_of(first);
            c.report(
                span,
                checks::bad(
                    format!("{what} is used by two [[network.dhcp6.host]] entries"),
                    format!("keep one entry per {what} (the other is on line {line})"),
                ),
            );
        } else {
            seen.insert(key, span);
        }
    };
    for entry in hosts {
        let h = entry.get_ref();
        let before = c.problems.len();
        let id = match (&h.duid, &h.mac) {
            (Some(d), None) => c
                .check(
                    d.span(),
                    Duid::parse(d.get_ref()).ok_or_else(|| {
                        checks::bad(
                            format!("\"{}\" is not a DUID", d.get_ref().escape_debug()),
                            "write the client's DUID as hex bytes, e.g. \"00:01:00:01:2c:4b:1a:00:52:54:00:12:34:56\" (dhclient keeps it in its lease file as default-duid, dhcpcd in /var/lib/dhcpcd/duid)",
                        )
                    }),
                )
                .map(|duid| {
                    once(c, &mut ids, duid.to_string(), d.span(), "DUID");
                    Host6Id::Duid(duid)
                }),
            (None, Some(m)) => c.check(m.span(), checks::mac(m.get_ref())).map(|mac| {
                once(c, &mut ids, mac.to_string(), m.span(), "MAC");
                Host6Id::Mac(mac)
            }),
            _ => {
                c.report(
                    entry.span(),
                    checks::bad(
                        "a [[network.dhcp6.host]] needs exactly one of duid or mac",
                        "write duid = \"...\" (what the client sends) or mac = \"52:54:00:...\" (matched through its link-local address or its DUID-LL/LLT)",
                    ),
                );
                None
            }
        };
        let ip = c
            .check(
                h.ip.span(),
                h.ip.get_ref().parse::<Ipv6Addr>().map_err(|_| {
                    checks::bad(
                        format!(
                            "\"{}\" is not an IPv6 address",
                            h.ip.get_ref().escape_debug()
                        ),
                        "write one address of the network's prefix, e.g. \"fd00:122::10\"",
                    )
                }),
            )
            .and_then(|ip| {
                let placed = match address {
                    Some(a) if !a.trunc().contains(&ip) => Err(checks::bad(
                        format!("{ip} is not inside the prefix {}", a.trunc()),
                        "use an address of the network's prefix",
                    )),
                    Some(a) if a.addr() == ip || a.network() == ip => Err(checks::bad(
                        format!("{ip} is the gateway or the prefix's anycast address"),
                        "give the host another address of the prefix",
                    )),
                    _ => Ok(ip),
                };
                c.check(h.ip.span(), placed)
            });
        if let Some(ip) = ip {
            once(c, &mut ips, ip.to_string(), h.ip.span(), "address");
        }
        if let Some(n) = &h.name {
            if c.check(n.span(), checks::hostname(n.get_ref())).is_some() {
                once(
                    c,
                    &mut names,
                    n.get_ref().to_ascii_lowercase(),
                    n.span(),
                    "host name",
                );
            }
        }
        if let (true, Some(id), Some(ip)) = (c.problems.len() == before, id, ip) {
            out.push(Dhcp6Host {
                id,
                ip,
                name: h.name.as_ref().map(|n| n.get_ref().clone()),
            });
        }
    }
    out
}
