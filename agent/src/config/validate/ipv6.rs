//! A network's IPv6: `address6`, `nat6`, `[network.ra]` and `[network.dhcp6]`, and the rule
//! between networks (prefixes do not overlap).
//!
//! `[network.dhcp6]` is validated in `validate::dhcp6`; the router advertisement's M and O flags
//! depend on it (addresses to hand out: stateful, M and O; none: stateless, O).

use std::net::Ipv6Addr;
use std::ops::Range;
use std::time::Duration;

use ipnet::Ipv6Net;

use super::super::checks::{self, Bad};
use super::super::model::{Ipv6, Mode, Network};
use super::super::units::parse_duration;
use super::super::wire::{self, S};
use super::network::Marks;
use super::Checker;

/// The example every hint offers.
const EXAMPLE: &str = "fd00:122::1/64";

/// The network's IPv6, None when it has none (or when something is wrong: reported on `c`).
pub(super) fn ipv6(c: &mut Checker, w: &wire::Network, mode: Option<Mode>) -> Option<Ipv6> {
    let Some(a) = &w.address6 else {
        for (span, key) in [
            (w.nat6.as_ref().map(|s| s.span()), "nat6"),
            (w.ra.as_ref().map(|s| s.span()), "[network.ra]"),
            (w.dhcp6.as_ref().map(|s| s.span()), "[network.dhcp6]"),
        ] {
            if let Some(span) = span {
                c.report(
                    span,
                    checks::bad(
                        format!("{key} needs the network to have an address6"),
                        format!("add address6 = \"{EXAMPLE}\" (the host's IPv6 address on the bridge) to this [[network]], or remove {key}"),
                    ),
                );
            }
        }
        return None;
    };
    let before = c.problems.len();
    if mode == Some(Mode::Bridge) {
        c.report(
            a.span(),
            checks::bad(
                "address6 is not for mode = \"bridge\"",
                "a bridge network's guests are on the outer LAN, whose router gives them IPv6; remove address6 (or use mode = \"nat\", \"routed\" or \"isolated\")",
            ),
        );
    }
    let address = c.check(a.span(), address6(a.get_ref()));
    if let Some(m) = w.mtu.as_ref().filter(|m| (68..1280).contains(m.get_ref())) {
        // The kernel turns IPv6 off on a link whose MTU is below the IPv6 minimum.
        c.report(
            m.span(),
            checks::bad(
                format!(
                    "mtu = {} is below 1280, the least IPv6 allows (RFC 8200)",
                    m.get_ref()
                ),
                "raise mtu to 1280 or more, or remove address6",
            ),
        );
    }
    let nat6 = w.nat6.as_ref().is_some_and(|n| *n.get_ref());
    if let (Some(n), Some(m)) = (&w.nat6, mode) {
        if *n.get_ref() && m != Mode::Nat {
            c.report(
                n.span(),
                checks::bad(
                    format!("nat6 is only for mode = \"nat\" (this network is \"{}\")", m.as_str()),
                    "remove nat6: a routed network forwards its prefix untranslated, an isolated one forwards nothing",
                ),
            );
        }
    }
    let ra = ra(c, w.ra.as_ref());
    let dhcp6 = w
        .dhcp6
        .as_ref()
        .and_then(|d| super::dhcp6::dhcp6(c, d.get_ref(), address));
    if c.problems.len() != before {
        return None;
    }
    Some(Ipv6 {
        address: address?,
        nat6,
        ra: ra?,
        dhcp6,
    })
}

/// The host's IPv6 address on a bridge, with prefix: a unicast address that is not link-local,
/// in a prefix of /32 to /126, and not the prefix's subnet-router anycast address.
pub(super) fn address6(text: &str) -> Result<Ipv6Net, Bad> {
    let net: Ipv6Net = match text.parse() {
        Ok(n) => n,
        Err(_) if text.parse::<Ipv6Addr>().is_ok() => {
            return Err(checks::bad(
                format!("address6 \"{text}\" has no prefix length"),
                format!("add the prefix length, e.g. \"{text}/64\" (SLAAC needs /64)"),
            ))
        }
        Err(_) => {
            return Err(checks::bad(
                format!(
                    "\"{}\" is not an IPv6 address with prefix length",
                    text.escape_debug()
                ),
                format!("write the host's IPv6 address on the bridge, e.g. \"{EXAMPLE}\""),
            ))
        }
    };
    let ip = net.addr();
    let refuse = |what: &str| {
        Err(checks::bad(
            format!("address6 {net} is {what}"),
            format!("use a global or unique local (fd00::/8) address, e.g. \"{EXAMPLE}\""),
        ))
    };
    if ip.is_unspecified() || ip.is_loopback() {
        return refuse("not a host address");
    }
    if ip.is_multicast() {
        return refuse("a multicast address");
    }
    if ip.segments()[0] & 0xffc0 == 0xfe80 {
        return refuse("link-local (the kernel gives every interface one of its own)");
    }
    if ip.to_ipv4_mapped().is_some() {
        return refuse("an IPv4-mapped address");
    }
    if !(32..=126).contains(&net.prefix_len()) {
        return Err(checks::bad(
            format!("address6 {net} has prefix length /{}", net.prefix_len()),
            "use a prefix length from /32 to /126; /64 is what SLAAC needs",
        ));
    }
    if ip == net.network() {
        let first = Ipv6Addr::from(u128::from(net.network()) + 1);
        return Err(checks::bad(
            format!("address6 {net} is the prefix's subnet-router anycast address"),
            format!(
                "use a host address inside {}, e.g. \"{first}/{}\"",
                net.trunc(),
                net.prefix_len()
            ),
        ));
    }
    Ok(net)
}

fn duration(c: &mut Checker, key: &str, value: Option<&S<String>>) -> Option<Option<Duration>> {
    let Some(v) = value else {
        return Some(None);
    };
    let d = parse_duration(v.get_ref()).map_err(|why| {
        checks::bad(
            format!("{key} \"{}\": {why}", v.get_ref().escape_debug()),
            "write a duration such as \"200s\" or \"10m\"",
        )
    });
    c.check(v.span(), d).map(Some)
}

/// `[network.ra]`: Some(None) when `enable = false`; None when a value is wrong.
fn ra(c: &mut Checker, w: Option<&S<wire::NetworkRa>>) -> Option<Option<ra::Intervals>> {
    let Some(w) = w else {
        return Some(Some(ra::Intervals::default()));
    };
    let r = w.get_ref();
    let min = duration(c, "min_interval", r.min_interval.as_ref())?;
    let max = duration(c, "max_interval", r.max_interval.as_ref())?;
    let intervals = ra::Intervals::new(min, max).map_err(|e| {
        let hint = match e {
            ra::IntervalError::Max(_) => {
                "write max_interval from \"4s\" to \"1800s\" (default \"600s\")".to_string()
            }
            ra::IntervalError::Min { limit, .. } => format!(
                "write min_interval from \"3s\" to {}s, or leave it out for the default",
                limit.as_secs()
            ),
        };
        checks::bad(e.to_string(), hint)
    });
    let span = r
        .min_interval
        .as_ref()
        .or(r.max_interval.as_ref())
        .map_or(w.span(), |s| s.span());
    let intervals = c.check(span, intervals)?;
    Some((r.enable != Some(false)).then_some(intervals))
}

/// Between networks: IPv6 prefixes must not overlap (the host would not know which bridge a
/// guest's address is behind).
pub(super) fn across(c: &mut Checker, nets: &[Network], marks: &[Marks]) {
    for (i, (n, m)) in nets.iter().zip(marks).enumerate() {
        let (Some(v6), Some(span)) = (&n.ipv6, &m.address6) else {
            continue;
        };
        let a = v6.address.trunc();
        for (j, other) in nets.iter().enumerate().take(i) {
            let Some(b) = other.ipv6.as_ref().map(|o| o.address.trunc()) else {
                continue;
            };
            if a.contains(&b.network()) || b.contains(&a.network()) {
                let line = c.line_of(marks[j].address6.as_ref().unwrap_or(&marks[j].name));
                c.report(
                    span.clone(),
                    checks::bad(
                        format!("prefix {a} overlaps {b} of network \"{}\"", other.name),
                        format!("give each network a separate IPv6 prefix (the other is on line {line})"),
                    ),
                );
            }
        }
    }
}

/// Where `address6` is in the file, for [`across`].
pub(super) fn span(w: &wire::Network) -> Option<Range<usize>> {
    w.address6.as_ref().map(|a| a.span())
}
