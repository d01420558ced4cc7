//! `[[network.forward]]`: a host port forwarded to a guest (DNAT in the agent's table).
//!
//! Checked once the networks and guests are: the target is `to = "ADDR[:PORT]"` or a guest's
//! reservation (`guest = "NAME"`, optional `guest_port`), inside the network's subnet; the network
//! is nat or routed (an isolated network is not to be reached from outside, and a bridge
//! network's guests sit on the outer network already, reachable without the host translating
//! anything); a host port is forwarded once per protocol and address, and never one the agent
//! itself serves guests on (DHCP, TFTP, DNS, HTTP boot), which the DNAT would take from them.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::Range;

use netcfg::Proto;

use super::super::checks::{self, Bad};
use super::super::model::{Forward, Guest, Mode, Network};
use super::super::wire::{self, S};
use super::Checker;

/// The guests a forward may name: those that passed their checks, and every `[[guest]]` as
/// written (a forward naming one that failed is not reported a second time).
struct Guests<'a> {
    valid: &'a [Guest],
    written: &'a [S<wire::Guest>],
}

impl Guests<'_> {
    fn written_but_invalid(&self, name: &str) -> bool {
        self.written.iter().any(|g| {
            let entry = g.get_ref().name.get_ref();
            name == entry
                || name
                    .strip_prefix(entry.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|n| n.parse::<u32>().is_ok())
        })
    }
}

/// A forward that passed its own checks, with its position for checks across forwards.
struct Placed {
    forward: Forward,
    span: Range<usize>,
    network: usize,
}

pub(super) fn forwards(
    c: &mut Checker,
    wire: &[S<wire::Network>],
    networks: &mut [Network],
    wire_guests: &[S<wire::Guest>],
    guests: &[Guest],
) {
    let known = Guests {
        valid: guests,
        written: wire_guests,
    };
    let mut placed: Vec<Placed> = Vec::new();
    for w in wire {
        let w = w.get_ref();
        // A network that failed its own checks is not in `networks`: check the forwards' own
        // values anyway, so every problem shows at once.
        let network = networks.iter().position(|n| n.name == *w.name.get_ref());
        for f in &w.forward {
            let net = network.map(|i| &networks[i]);
            if let (Some(forward), Some(i)) = (forward(c, f, net, &known), network) {
                placed.push(Placed {
                    forward,
                    span: f.span(),
                    network: i,
                });
            }
        }
    }
    across(c, &placed, networks);
    for p in placed {
        networks[p.network].forwards.push(p.forward);
    }
}

fn port(what: &str, value: &S<i64>) -> Result<u16, Bad> {
    u16::try_from(*value.get_ref())
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            checks::bad(
                format!("{what} = {} is not a port", value.get_ref()),
                "write a port from 1 to 65535",
            )
        })
}

fn proto(text: &str) -> Result<Proto, Bad> {
    match text {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        other => Err(checks::bad(
            format!("proto \"{}\" is not known", other.escape_debug()),
            "write proto = \"tcp\" or proto = \"udp\"",
        )),
    }
}

/// `ADDR` or `ADDR:PORT`; the port defaults to the host port.
fn target(text: &str, host_port: Option<u16>) -> Result<(Ipv4Addr, Option<u16>), Bad> {
    let (addr, port) = match text.split_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let bad_target = || {
        checks::bad(
            format!(
                "to = \"{}\" is not a guest address and port",
                text.escape_debug()
            ),
            "write to = \"192.168.122.10:22\" (or just the address to keep the host port)",
        )
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad_target())?;
    let port = match port {
        None => host_port,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(bad_target)?,
        ),
    };
    Ok((addr, port))
}

fn host_address(text: &str) -> Result<Ipv4Addr, Bad> {
    let a = checks::ipv4(text)?;
    if a.is_loopback() || a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
        return Err(checks::bad(
            format!("host_address {a} cannot be forwarded to a guest"),
            "leave host_address out (every address of the host) or name one of the host's own \
             addresses; the kernel never routes a 127.x source out to a guest",
        ));
    }
    Ok(a)
}

/// One forward's own values, and its place in its network (when that network is valid).
fn forward(
    c: &mut Checker,
    f: &S<wire::Forward>,
    net: Option<&Network>,
    guests: &Guests,
) -> Option<Forward> {
    let before = c.problems.len();
    let w = f.get_ref();
    let proto = c.check(w.proto.span(), proto(w.proto.get_ref()));
    let host_port = c.check(w.host_port.span(), port("host_port", &w.host_port));
    let host_addr = match &w.host_address {
        None => Some(None),
        Some(a) => c.check(a.span(), host_address(a.get_ref())).map(Some),
    };
    let dest = match (&w.to, &w.guest) {
        (Some(_), Some(g)) => {
            c.report(
                g.span(),
                checks::bad(
                    "a forward names either `to` or `guest`, not both",
                    "keep to = \"ADDR:PORT\" or guest = \"NAME\"",
                ),
            );
            None
        }
        (None, None) => {
            c.report(
                f.span(),
                checks::bad(
                    "this forward has no target",
                    "add to = \"192.168.122.10:22\" or guest = \"NAME\" (a [[guest]] on this network)",
                ),
            );
            None
        }
        (Some(to), None) => {
            if let Some(gp) = &w.guest_port {
                c.report(
                    gp.span(),
                    checks::bad(
                        "guest_port goes with guest = \"NAME\"",
                        "write the port into to = \"ADDR:PORT\" instead",
                    ),
                );
            }
            c.check(to.span(), target(to.get_ref(), host_port))
                .map(|(a, p)| (a, p, None, to.span()))
        }
        (None, Some(g)) => {
            let port = match &w.guest_port {
                None => Some(host_port),
                Some(p) => c.check(p.span(), port("guest_port", p)).map(Some),
            };
            let name = g.get_ref();
            let found = guests.valid.iter().find(|x| x.name == *name);
            match (found, net) {
                // That [[guest]] failed its own checks, which are reported where it is.
                (None, _)
                    if guests.valid.iter().all(|x| x.group != *name)
                        && guests.written_but_invalid(name) =>
                {
                    None
                }
                (None, _) => {
                    let hint = match guests.valid.iter().find(|x| x.group == *name) {
                        Some(first) => format!(
                            "\"{name}\" has count > 1: name one instance, e.g. guest = \"{}\"",
                            first.name
                        ),
                        None => "name a [[guest]] of this config (its name, or NAME-N of one with count = N)".into(),
                    };
                    c.report(
                        g.span(),
                        checks::bad(format!("no guest is named \"{name}\""), hint),
                    );
                    None
                }
                (Some(guest), Some(n)) if guest.network != n.name => {
                    c.report(
                        g.span(),
                        checks::bad(
                            format!(
                                "guest \"{name}\" is on network \"{}\", not \"{}\"",
                                guest.network, n.name
                            ),
                            format!(
                                "move this forward to network \"{}\" or name a guest of this one",
                                guest.network
                            ),
                        ),
                    );
                    None
                }
                (Some(guest), _) => port.map(|p| (guest.ip, p, Some(guest.name.clone()), g.span())),
            }
        }
    };
    if let (Some(n), Some((to, _, _, span))) = (net, &dest) {
        check_place(c, n, *to, span.clone(), f.span());
    }
    if c.problems.len() != before {
        return None;
    }
    let (to, to_port, guest, _) = dest?;
    Some(Forward {
        proto: proto?,
        host_address: host_addr?,
        host_port: host_port?,
        to,
        to_port: to_port?,
        guest,
    })
}

/// The network must translate (nat or routed) and the target be one of its guests' addresses.
fn check_place(
    c: &mut Checker,
    n: &Network,
    to: Ipv4Addr,
    to_span: Range<usize>,
    span: Range<usize>,
) {
    if !matches!(n.mode, Mode::Nat | Mode::Routed) {
        let why = if n.mode == Mode::Bridge {
            "its guests are on the outer network already: connect to them directly"
        } else {
            "an isolated network's guests reach only the host and each other, and nothing reaches them from outside"
        };
        c.report(
            span,
            checks::bad(
                format!(
                    "port forwards need mode = \"nat\" or \"routed\"; network \"{}\" is {}",
                    n.name,
                    n.mode.as_str()
                ),
                format!("{why}; set mode = \"nat\" to forward ports, or remove this forward"),
            ),
        );
        return;
    }
    let Some(gw) = n.address else { return };
    let subnet = gw.trunc();
    if to == gw.addr()
        || !subnet.contains(&to)
        || to == subnet.network()
        || to == subnet.broadcast()
    {
        c.report(
            to_span,
            checks::bad(
                format!(
                    "{to} is not a guest address of network \"{}\" ({subnet}, gateway {})",
                    n.name,
                    gw.addr()
                ),
                format!(
                    "forward to a guest inside {subnet}, from {} to {}, other than the gateway",
                    checks::first_host(subnet),
                    checks::last_host(subnet)
                ),
            ),
        );
    }
}

/// The agent's own services on a network's gateway, as (proto, port, what).
fn services(n: &Network) -> Vec<(Proto, u16, &'static str)> {
    let mut out = Vec::new();
    if n.mode == Mode::Bridge || n.address.is_none() {
        return out;
    }
    out.push((Proto::Udp, 53, "DNS"));
    out.push((Proto::Tcp, 53, "DNS"));
    if n.dhcp.is_some() {
        out.push((Proto::Udp, 67, "DHCP"));
    }
    if let Some(p) = &n.pxe {
        out.push((Proto::Udp, 69, "TFTP"));
        if let Some(h) = p.http_port {
            out.push((Proto::Tcp, h, "HTTP boot"));
        }
    }
    out
}

/// Each (proto, port) once per host address (a forward without `host_address` covers them
/// all), and none on a port the agent serves guests on.
fn across(c: &mut Checker, placed: &[Placed], networks: &[Network]) {
    let gateways: HashSet<Ipv4Addr> = networks.iter().filter_map(|n| n.gateway()).collect();
    for (i, p) in placed.iter().enumerate() {
        let f = &p.forward;
        let label = |f: &Forward| {
            format!(
                "{} port {}{}",
                f.proto.as_str(),
                f.host_port,
                f.host_address
                    .map(|a| format!(" on {a}"))
                    .unwrap_or_default()
            )
        };
        let clash = placed[..i].iter().find(|q| {
            let g = &q.forward;
            g.proto == f.proto
                && g.host_port == f.host_port
                && (g.host_address.is_none()
                    || f.host_address.is_none()
                    || g.host_address == f.host_address)
        });
        if let Some(q) = clash {
            let line = c.line_of(&q.span);
            c.report(
                p.span.clone(),
                checks::bad(
                    format!("host {} is already forwarded", label(f)),
                    format!("choose another host_port (the other forward is on line {line})"),
                ),
            );
            continue;
        }
        let on_gateway = f.host_address.is_none_or(|a| gateways.contains(&a));
        if !on_gateway {
            continue;
        }
        for n in networks {
            if let Some((_, _, what)) = services(n)
                .into_iter()
                .find(|(pr, port, _)| *pr == f.proto && *port == f.host_port)
            {
                c.report(
                    p.span.clone(),
                    checks::bad(
                        format!(
                            "host {} is the {what} port hostagent serves network \"{}\" on",
                            label(f),
                            n.name
                        ),
                        "forwarding it would take it from the guests; choose another host_port, \
                         or set host_address to an address of the host outside the guest networks",
                    ),
                );
                break;
            }
        }
    }
}
