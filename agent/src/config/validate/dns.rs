//! `[network.dns]`: whether the network's DNS server runs, under which domain, where it forwards,
//! and its extra names. Each value is checked here; the extra names are compared with the names
//! of reservations and guests once the guests are known ([`names_across`]).
//!
//! The server runs by default where libvirt's dnsmasq would answer: a nat, routed or isolated
//! network with an address and `[network.dhcp]`. A bridge onto a LAN usually has the LAN's own
//! DNS, so there it runs only with `enable = true`. An isolated network forwards nothing unless
//! it lists `forwarders`: its guests reach only the host, and DNS would be a way out.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use ipnet::Ipv4Net;

use super::super::checks::{self, Bad};
use super::super::model::{
    Dhcp, Dns, DnsHost, Guest, Mode, Network, Upstream, DEFAULT_DNS_RATE_LIMIT,
    DNS_RATE_LIMIT_RANGE,
};
use super::super::wire::{self, S};
use super::Checker;

/// What the `[network.dns]` rules need to know of the network around it.
pub(super) struct Around<'a> {
    pub(super) name: &'a S<String>,
    pub(super) mode: Option<Mode>,
    pub(super) address: Option<Ipv4Net>,
    pub(super) has_address: bool,
    pub(super) dhcp: Option<&'a Dhcp>,
    pub(super) has_dhcp: bool,
}

/// The network's DNS server as it will run, or None when it does not.
pub(super) fn dns(c: &mut Checker, w: Option<&S<wire::NetworkDns>>, net: &Around) -> Option<Dns> {
    let section = w.map(|w| w.get_ref());
    let enable = section.and_then(|d| d.enable.as_ref());
    let by_default = net.mode != Some(Mode::Bridge) && net.has_address && net.has_dhcp;
    let on = enable.map_or(by_default, |e| *e.get_ref());
    if on && !net.has_address {
        let span = enable.map_or(net.name.span(), |e| e.span());
        c.report(
            span,
            checks::bad(
                "the DNS server needs the network to have an address",
                "add address = \"10.0.0.1/24\" (the host's address on the bridge, where the server listens) to this [[network]], or set enable = false",
            ),
        );
    }
    if section.is_none() && !on {
        return None;
    }
    // Values are checked even when the server is off, so every problem shows at once; the
    // domain derived from the network's name matters only when it runs.
    let domain = domain(c, section, net, on);
    let upstream = upstream(c, section, net);
    let rate_limit = match section.and_then(|d| d.rate_limit.as_ref()) {
        None => Some(DEFAULT_DNS_RATE_LIMIT),
        Some(r) => c.check(r.span(), rate_limit(*r.get_ref())),
    };
    let hosts = section.map_or_else(Vec::new, |d| hosts(c, &d.host, domain.as_deref()));
    if let (false, None, Some(w)) = (on, enable, w) {
        if has_settings(w.get_ref()) {
            let why = if net.mode == Some(Mode::Bridge) {
                "a bridge network runs no DNS server unless asked"
            } else {
                "the DNS server runs by default only on networks with [network.dhcp]"
            };
            c.report(
                w.span(),
                checks::bad(
                    format!("[network.dns] has settings but DNS is off on this network: {why}"),
                    "add enable = true to [network.dns] to run the server, or remove the section",
                ),
            );
        }
    }
    if !on {
        return None;
    }
    Some(Dns {
        domain: domain?,
        upstream: upstream?,
        rate_limit: rate_limit?,
        hosts,
    })
}

fn has_settings(d: &wire::NetworkDns) -> bool {
    d.domain.is_some() || d.forwarders.is_some() || d.rate_limit.is_some() || !d.host.is_empty()
}

/// 0 (off) or a rate in `DNS_RATE_LIMIT_RANGE`.
fn rate_limit(rate: i64) -> Result<u32, Bad> {
    u32::try_from(rate)
        .ok()
        .filter(|r| *r == 0 || DNS_RATE_LIMIT_RANGE.contains(r))
        .ok_or_else(|| {
            checks::bad(
                format!("rate_limit = {rate} is out of range"),
                format!(
                    "write queries per second per guest from {} to {} (default {DEFAULT_DNS_RATE_LIMIT}), or 0 to turn the limit off",
                    DNS_RATE_LIMIT_RANGE.start(),
                    DNS_RATE_LIMIT_RANGE.end()
                ),
            )
        })
}

/// `domain`, else `[network.dhcp] domain` (what guests are told in option 15), else the
/// network's name with '_' written as '-' (network names may have '_', DNS labels may not).
fn domain(c: &mut Checker, d: Option<&wire::NetworkDns>, net: &Around, on: bool) -> Option<String> {
    if let Some(domain) = d.and_then(|d| d.domain.as_ref()) {
        return c
            .check(domain.span(), checks::domain(domain.get_ref()))
            .map(|()| domain.get_ref().to_ascii_lowercase());
    }
    if let Some(domain) = net.dhcp.and_then(|d| d.domain.as_ref()) {
        return Some(domain.to_ascii_lowercase());
    }
    let derived = net.name.get_ref().replace('_', "-").to_ascii_lowercase();
    match checks::domain(&derived) {
        Ok(()) => Some(derived),
        Err(_) if !on => None,
        Err(_) => {
            c.report(
                net.name.span(),
                checks::bad(
                    format!(
                        "the DNS domain defaults to the network's name, and \"{}\" is not a DNS domain",
                        net.name.get_ref().escape_debug()
                    ),
                    "write domain = \"lab\" (labels of letters, digits and '-') under [network.dns], or set enable = false there",
                ),
            );
            None
        }
    }
}

fn upstream(c: &mut Checker, d: Option<&wire::NetworkDns>, net: &Around) -> Option<Upstream> {
    let Some(list) = d.and_then(|d| d.forwarders.as_ref()) else {
        return Some(if net.mode == Some(Mode::Isolated) {
            Upstream::LocalOnly
        } else {
            Upstream::HostResolvers
        });
    };
    let before = c.problems.len();
    let mut out = Vec::new();
    for f in list.get_ref() {
        let own = net.address.map(|a| SocketAddr::new(a.addr().into(), 53));
        let result = forwarder(f.get_ref()).and_then(|addr| {
            if Some(addr) == own {
                Err(checks::bad(
                    format!("forwarder {addr} is this network's own DNS server"),
                    "list the resolvers it should ask (e.g. \"192.0.2.53\"), not the gateway: it would ask itself",
                ))
            } else if out.contains(&addr) {
                Err(checks::bad(
                    format!("forwarder {addr} is listed twice"),
                    "remove one of them",
                ))
            } else {
                Ok(addr)
            }
        });
        if let Some(addr) = c.check(f.span(), result) {
            out.push(addr);
        }
    }
    if c.problems.len() != before {
        return None;
    }
    // `forwarders = []`: nothing to forward to, on purpose.
    Some(if out.is_empty() {
        Upstream::LocalOnly
    } else {
        Upstream::Forwarders(out)
    })
}

/// `"192.0.2.53"`, `"192.0.2.53:5353"`, `"2001:db8::53"` or `"[2001:db8::53]:5353"`.
fn forwarder(text: &str) -> Result<SocketAddr, Bad> {
    let hint = "write an IP address, optionally with a port: \"192.0.2.53\", \"192.0.2.53:5353\", \"2001:db8::53\" or \"[2001:db8::53]:5353\"";
    let addr = match text.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, 53),
        Err(_) => text.parse::<SocketAddr>().map_err(|_| {
            checks::bad(
                format!(
                    "forwarder \"{}\" is not an IP address or IP:port",
                    text.escape_debug()
                ),
                hint,
            )
        })?,
    };
    if addr.port() == 0 || addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err(checks::bad(
            format!("forwarder {text} is not a usable DNS server address"),
            hint,
        ));
    }
    Ok(addr)
}

fn hosts(c: &mut Checker, hosts: &[S<wire::DnsHost>], domain: Option<&str>) -> Vec<DnsHost> {
    let mut out = Vec::new();
    let mut seen: HashMap<(String, IpAddr), Range<usize>> = HashMap::new();
    for h in hosts.iter().map(|h| h.get_ref()) {
        let name = c.check(h.name.span(), record_name(h.name.get_ref(), domain));
        let ip = c.check(h.ip.span(), record_ip(h.ip.get_ref()));
        let (Some(name), Some(ip)) = (name, ip) else {
            continue;
        };
        let key = (relative(&name, domain), ip);
        if let Some(first) = seen.get(&key) {
            let line = c.line_of(first);
            c.report(
                h.name.span(),
                checks::bad(
                    format!("the record {name} → {ip} is written twice"),
                    format!("remove this [[network.dns.host]] (the other is on line {line})"),
                ),
            );
            continue;
        }
        seen.insert(key, h.name.span());
        out.push(DnsHost { name, ip });
    }
    out
}

/// A host name of one or more RFC 1123 labels (`nas`, `api.k8s`, `nas.lab` under domain `lab`),
/// lowercased, that is not the domain itself.
fn record_name(text: &str, domain: Option<&str>) -> Result<String, Bad> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    if checks::domain(&name).is_err() {
        return Err(checks::bad(
            format!("\"{}\" is not a valid host name", text.escape_debug()),
            "use labels of 1 to 63 letters, digits or '-' (not at either end), joined by dots, e.g. \"nas\" or \"api.k8s\"",
        ));
    }
    if Some(name.as_str()) == domain {
        return Err(checks::bad(
            format!("\"{text}\" is the network's DNS domain, not a host in it"),
            format!("name a host in it, e.g. \"gateway.{name}\""),
        ));
    }
    Ok(name)
}

/// Any IPv4 or IPv6 host address, inside the network or not (a service elsewhere, a load
/// balancer's address): dnsmasq's host records and libvirt's `<dns><host>` take any address.
/// Only addresses inside the network also get their reverse (PTR) answered here.
fn record_ip(text: &str) -> Result<IpAddr, Bad> {
    let hint = "write the host's address, e.g. \"192.168.122.50\" or \"fd00::50\"";
    let ip = text.parse::<IpAddr>().map_err(|_| {
        checks::bad(
            format!("\"{}\" is not an IP address", text.escape_debug()),
            hint,
        )
    })?;
    if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        return Err(checks::bad(format!("{ip} is not a host address"), hint));
    }
    Ok(ip)
}

/// A name as the network's server keeps it: lowercased, without the domain.
fn relative(name: &str, domain: Option<&str>) -> String {
    let name = name.to_ascii_lowercase();
    match domain.and_then(|d| name.strip_suffix(d)) {
        Some(head) if head.ends_with('.') => head.trim_end_matches('.').to_string(),
        _ => name,
    }
}

/// An extra name must not be a reservation's or a guest's name on the same network: the name
/// would get two addresses (handed out in turn) or the same one twice.
pub(super) fn names_across(
    c: &mut Checker,
    wire: &[S<wire::Network>],
    networks: &[Network],
    guests: &[Guest],
) {
    for n in networks {
        let Some(dns) = &n.dns else { continue };
        let Some(w) = wire.iter().find(|w| *w.get_ref().name.get_ref() == n.name) else {
            continue;
        };
        let Some(section) = &w.get_ref().dns else {
            continue;
        };
        let domain = Some(dns.domain.as_str());
        let mut taken: HashMap<String, (IpAddr, String)> = HashMap::new();
        for h in n.dhcp.iter().flat_map(|d| &d.hosts) {
            if let Some(name) = &h.name {
                taken.insert(
                    relative(name, domain),
                    (h.ip.into(), format!("[[network.dhcp.host]] \"{name}\"")),
                );
            }
        }
        for g in guests.iter().filter(|g| g.network == n.name) {
            taken.insert(
                relative(&g.name, domain),
                (g.ip.into(), format!("guest \"{}\"", g.name)),
            );
        }
        for h in &section.get_ref().host {
            let name = h.get_ref().name.get_ref();
            let Some((ip, who)) = taken.get(&relative(name, domain)) else {
                continue;
            };
            c.report(
                h.get_ref().name.span(),
                checks::bad(
                    format!("host name \"{name}\" is already the name of {who} ({ip})"),
                    "remove this [[network.dns.host]], or give it another name: the reservation's name already resolves",
                ),
            );
        }
    }
}
