//! [network.dhcp]: the range and static reservations, placed inside the network's subnet.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;

use hwaddr::Mac;
use ipnet::Ipv4Net;

use super::super::checks::{self, Bad};
use super::super::model::{Dhcp, DhcpDefaults, Route, StaticHost, DEFAULT_LEASE_TIME};
use super::super::wire::{self, S};
use super::Checker;

fn in_subnet(subnet: Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast()
}

pub(super) fn dhcp(
    c: &mut Checker,
    d: &wire::NetworkDhcp,
    gw: Option<Ipv4Net>,
    defaults: &DhcpDefaults,
) -> Option<Dhcp> {
    let before = c.problems.len();
    let range = c
        .check(d.range.span(), checks::range_syntax(d.range.get_ref()))
        .and_then(|(a, b)| {
            let result = if a > b {
                Err(checks::bad(
                    format!("range {a}-{b} is reversed"),
                    format!("write the lower address first: \"{b}-{a}\""),
                ))
            } else if let Some(gw) = gw {
                range_placement(gw, a, b)
            } else {
                Ok((a, b))
            };
            c.check(d.range.span(), result)
        });
    let lease_time = match &d.lease_time {
        Some(l) => c.check(l.span(), checks::lease_time(l.get_ref())),
        None => Some(defaults.lease_time.unwrap_or(DEFAULT_LEASE_TIME)),
    };
    let dns = super::dns_list(c, d.dns.as_ref()).or_else(|| defaults.dns.clone());
    let domain = match &d.domain {
        Some(s) => c
            .check(s.span(), checks::domain(s.get_ref()))
            .map(|()| s.get_ref().clone()),
        None => defaults.domain.clone(),
    };
    let ntp = super::dns_list(c, d.ntp.as_ref()).unwrap_or_default();
    let routes = routes(c, d.routes.as_deref().unwrap_or_default(), gw);
    let hosts = static_hosts(c, &d.host, gw);
    if c.problems.len() != before {
        return None;
    }
    let (range_start, range_end) = range?;
    Some(Dhcp {
        range_start,
        range_end,
        lease_time: lease_time?,
        dns,
        domain,
        ntp,
        routes,
        hosts,
    })
}

/// `routes = [{ to = "10.20.0.0/16", via = "10.77.0.254" }]`: destinations without host bits,
/// each at most once, through a host address of the network's subnet.
fn routes(c: &mut Checker, routes: &[S<wire::Route>], gw: Option<Ipv4Net>) -> Vec<Route> {
    let mut out: Vec<Route> = Vec::new();
    let mut seen: HashMap<Ipv4Net, Range<usize>> = HashMap::new();
    for r in routes.iter().map(|r| r.get_ref()) {
        let to = c.check(r.to.span(), route_destination(r.to.get_ref()));
        let via = c
            .check(r.via.span(), checks::ipv4(r.via.get_ref()))
            .and_then(|via| {
                let placed = match gw {
                    Some(gw) if !in_subnet(gw.trunc(), via) => Err(checks::bad(
                        format!(
                            "route via {via}: the router must be on the network's subnet {}",
                            gw.trunc()
                        ),
                        format!(
                            "write a router address from {}-{} (clients reach it directly)",
                            checks::first_host(gw.trunc()),
                            checks::last_host(gw.trunc())
                        ),
                    )),
                    _ => Ok(via),
                };
                c.check(r.via.span(), placed)
            });
        if let Some(to) = to {
            if let Some(first) = seen.get(&to) {
                let line = c.line_of(first);
                c.report(
                    r.to.span(),
                    checks::bad(
                        format!("route to {to} is listed twice"),
                        format!("keep one route per destination (the other is on line {line})"),
                    ),
                );
                continue;
            }
            seen.insert(to, r.to.span());
        }
        if let (Some(to), Some(via)) = (to, via) {
            out.push(Route { to, via });
        }
    }
    out
}

fn route_destination(text: &str) -> Result<Ipv4Net, Bad> {
    let hint = "write a destination network with its prefix, e.g. to = \"10.20.0.0/16\" (or \"0.0.0.0/0\" for the default route)";
    let net: Ipv4Net = text.parse().map_err(|_| {
        checks::bad(
            format!(
                "route to \"{}\" is not a network with a prefix",
                text.escape_debug()
            ),
            hint,
        )
    })?;
    if net != net.trunc() {
        return Err(checks::bad(
            format!("route to {net} has host bits set"),
            format!("write the network address: to = \"{}\"", net.trunc()),
        ));
    }
    Ok(net)
}

/// A reserved address must be a host address of the subnet other than the gateway.
fn host_placement(gw: Ipv4Net, ip: Ipv4Addr) -> Result<(), Bad> {
    let subnet = gw.trunc();
    if ip == gw.addr() {
        Err(checks::bad(
            format!("{ip} is the network's gateway address"),
            "reserve a different address; the gateway belongs to the host",
        ))
    } else if !in_subnet(subnet, ip) {
        Err(checks::bad(
            format!("{ip} is not a host address inside the network's subnet {subnet}"),
            format!(
                "use an address from {}-{}",
                checks::first_host(subnet),
                checks::last_host(subnet)
            ),
        ))
    } else {
        Ok(())
    }
}

/// A syntactically good, ordered range must sit inside the subnet and leave the gateway out.
fn range_placement(gw: Ipv4Net, a: Ipv4Addr, b: Ipv4Addr) -> Result<(Ipv4Addr, Ipv4Addr), Bad> {
    let (subnet, gateway) = (gw.trunc(), gw.addr());
    if !in_subnet(subnet, a) || !in_subnet(subnet, b) {
        Err(checks::bad(
            format!("range {a}-{b} is not inside the network's subnet {subnet}"),
            format!(
                "use addresses from {}-{}, e.g. \"{}\"",
                checks::first_host(subnet),
                checks::last_host(subnet),
                suggest_range(gw)
            ),
        ))
    } else if a <= gateway && gateway <= b {
        Err(checks::bad(
            format!("range {a}-{b} covers the gateway address {gateway}"),
            format!("leave the gateway out, e.g. \"{}\"", suggest_range(gw)),
        ))
    } else {
        Ok((a, b))
    }
}

/// The largest range that fits the subnet without the gateway: everything above it, or below it
/// when the gateway sits at the top.
fn suggest_range(gw: Ipv4Net) -> String {
    let (first, last, g) = (
        u32::from(checks::first_host(gw.trunc())),
        u32::from(checks::last_host(gw.trunc())),
        u32::from(gw.addr()),
    );
    let (a, b) = if last - g >= g - first {
        (g + 1, last)
    } else {
        (first, g - 1)
    };
    format!("{}-{}", Ipv4Addr::from(a), Ipv4Addr::from(b))
}

fn static_hosts(
    c: &mut Checker,
    hosts: &[S<wire::StaticHost>],
    gw: Option<Ipv4Net>,
) -> Vec<StaticHost> {
    let mut out = Vec::new();
    let mut macs: HashMap<Mac, Range<usize>> = HashMap::new();
    let mut ips: HashMap<Ipv4Addr, Range<usize>> = HashMap::new();
    let mut names: HashMap<String, Range<usize>> = HashMap::new();
    for h in hosts.iter().map(|h| h.get_ref()) {
        let before = c.problems.len();
        let mac = c.check(h.mac.span(), checks::mac(h.mac.get_ref()));
        if let Some(m) = mac {
            if let Some(first) = macs.get(&m) {
                let line = c.line_of(first);
                c.report(
                    h.mac.span(),
                    checks::bad(
                        format!("MAC {} has two reservations", h.mac.get_ref()),
                        format!(
                            "keep one [[network.dhcp.host]] per MAC (the other is on line {line})"
                        ),
                    ),
                );
            } else {
                macs.insert(m, h.mac.span());
            }
        }
        let ip = c
            .check(h.ip.span(), checks::ipv4(h.ip.get_ref()))
            .and_then(|ip| {
                let placed = gw.map_or(Ok(()), |gw| host_placement(gw, ip));
                let result = if let Err(bad) = placed {
                    Err(bad)
                } else if let Some(first) = ips.get(&ip) {
                    Err(checks::bad(
                        format!("{ip} is reserved twice"),
                        format!(
                            "give each host its own address (the other is on line {})",
                            c.line_of(first)
                        ),
                    ))
                } else {
                    Ok(ip)
                };
                c.check(h.ip.span(), result)
            });
        if let Some(ip) = ip {
            ips.insert(ip, h.ip.span());
        }
        if let Some(n) = &h.name {
            if c.check(n.span(), checks::hostname(n.get_ref())).is_some() {
                let key = n.get_ref().to_ascii_lowercase();
                if let Some(first) = names.get(&key) {
                    let line = c.line_of(first);
                    c.report(
                        n.span(),
                        checks::bad(
                            format!("host name \"{}\" is used twice", n.get_ref()),
                            format!("give each host its own name (the other is on line {line})"),
                        ),
                    );
                } else {
                    names.insert(key, n.span());
                }
            }
        }
        for (key, f) in [("boot", &h.boot), ("script", &h.script)] {
            if let Some(f) = f {
                c.check(f.span(), checks::boot_file(key, f.get_ref()));
            }
        }
        if let (true, Some(mac), Some(ip)) = (c.problems.len() == before, mac, ip) {
            out.push(StaticHost {
                mac,
                ip,
                name: h.name.as_ref().map(|n| n.get_ref().clone()),
                boot: h.boot.as_ref().map(|b| b.get_ref().clone()),
                script: h.script.as_ref().map(|s| s.get_ref().clone()),
            });
        }
    }
    out
}
