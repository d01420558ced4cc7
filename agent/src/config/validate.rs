//! Wire → model. Every check runs and every problem is collected, so one run of `check` shows the
//! whole list. Nothing on the host is touched here.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use super::checks::{self, Bad};
use super::error::{line_column, Problem};
use super::model::{Dhcp, DhcpDefaults, Mode, Model, Network, Pxe, StaticHost, DEFAULT_LEASE_TIME, DEFAULT_STATE_DIR};
use super::wire::{self, SysctlValue, S};

/// Collects problems; helpers return `None` for a bad value so checking can go on.
struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(&mut self, span: Range<usize>, bad: Bad) {
        self.problems.push(Problem::new(span, bad.message).hint(bad.hint));
    }

    fn check<T>(&mut self, span: Range<usize>, result: Result<T, Bad>) -> Option<T> {
        result.map_err(|b| self.report(span, b)).ok()
    }

    /// "line N" of a byte offset, for hints that point at an earlier definition.
    fn line_of(&self, span: &Range<usize>) -> usize {
        line_column(self.text, span.start).0
    }
}

pub(crate) fn validate(file: wire::File, text: &str, source: &Path) -> Result<Model, Vec<Problem>> {
    let mut c = Checker { text, problems: Vec::new() };

    let state_dir = match &file.state_dir {
        Some(s) => c.check(s.span(), checks::absolute_dir("state_dir", s.get_ref(), DEFAULT_STATE_DIR)),
        None => Some(PathBuf::from(DEFAULT_STATE_DIR)),
    };
    let sysctl = sysctls(&mut c, file.sysctl.as_ref());
    let dhcp_defaults = file.dhcp.as_ref().map(|d| global_dhcp(&mut c, d.get_ref())).unwrap_or_default();

    let mut networks = Vec::new();
    let mut marks = Vec::new();
    for net in &file.network {
        if let Some((n, m)) = network(&mut c, net.get_ref(), &dhcp_defaults) {
            networks.push(n);
            marks.push(m);
        }
    }
    across_networks(&mut c, &networks, &marks);

    match (c.problems.is_empty(), state_dir) {
        (true, Some(state_dir)) => Ok(Model {
            source: source.to_path_buf(),
            state_dir,
            sysctl,
            vhost_zcopytx: file.vhost_net.and_then(|v| v.experimental_zcopytx),
            dhcp_defaults,
            networks,
        }),
        _ => Err(c.problems),
    }
}

fn sysctls(c: &mut Checker, table: Option<&BTreeMap<S<String>, S<SysctlValue>>>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in table.into_iter().flatten() {
        let key_ok = c.check(key.span(), checks::sysctl_key(key.get_ref())).is_some();
        let text = match value.get_ref() {
            SysctlValue::Integer(i) => Some(i.to_string()),
            SysctlValue::Text(t) => c.check(value.span(), checks::sysctl_text(t)).map(|()| t.clone()),
        };
        if let (true, Some(text)) = (key_ok, text) {
            out.insert(key.get_ref().clone(), text);
        }
    }
    out
}

fn dns_list(c: &mut Checker, list: Option<&Vec<S<String>>>) -> Option<Vec<Ipv4Addr>> {
    list.map(|l| l.iter().filter_map(|s| c.check(s.span(), checks::ipv4(s.get_ref()))).collect())
}

fn global_dhcp(c: &mut Checker, d: &wire::GlobalDhcp) -> DhcpDefaults {
    DhcpDefaults {
        dns: dns_list(c, d.dns.as_ref()),
        domain: d.domain.as_ref().and_then(|s| c.check(s.span(), checks::domain(s.get_ref())).map(|()| s.get_ref().clone())),
        lease_time: d.lease_time.as_ref().and_then(|s| c.check(s.span(), checks::lease_time(s.get_ref()))),
    }
}

/// Positions of a network's values, kept for checks across networks.
struct Marks {
    name: Range<usize>,
    bridge: Range<usize>,
    address: Option<Range<usize>>,
    /// Where the MAC came from: the `mac` value, or the name when derived.
    mac: Range<usize>,
    mac_derived: bool,
    interfaces: Vec<Range<usize>>,
}

fn network(c: &mut Checker, w: &wire::Network, defaults: &DhcpDefaults) -> Option<(Network, Marks)> {
    let before = c.problems.len();
    let name = w.name.get_ref().clone();
    c.check(w.name.span(), checks::network_name(&name));
    let mode = c.check(w.mode.span(), checks::mode(w.mode.get_ref()));
    c.check(w.bridge.span(), checks::interface_name("bridge", w.bridge.get_ref()));

    let address = w.address.as_ref().and_then(|a| c.check(a.span(), checks::gateway_address(a.get_ref())));
    if let (Some(mode), None) = (mode, &w.address) {
        if mode != Mode::Bridge {
            c.report(
                w.mode.span(),
                checks::bad(
                    format!("mode = \"{}\" needs an address", mode.as_str()),
                    "add the host's gateway address on the bridge, e.g. address = \"192.168.122.1/24\" (only mode = \"bridge\" may go without)",
                ),
            );
        }
    }

    let forward_delay = match &w.forward_delay {
        None => Some(0),
        Some(d) => c.check(
            d.span(),
            u32::try_from(*d.get_ref()).ok().filter(|v| *v <= 30).ok_or_else(|| {
                checks::bad(format!("forward_delay = {} is out of range", d.get_ref()), "write whole seconds from 0 to 30 (libvirt uses 0)")
            }),
        ),
    };
    let mtu = match &w.mtu {
        None => Some(None),
        Some(m) => c
            .check(
                m.span(),
                u16::try_from(*m.get_ref()).ok().filter(|v| *v >= 68).ok_or_else(|| {
                    checks::bad(format!("mtu = {} is out of range", m.get_ref()), "write a value from 68 to 65535, e.g. 1500 (or leave mtu out)")
                }),
            )
            .map(Some),
    };
    let mac = match &w.mac {
        None => Some(netcfg::derived_mac(&name)),
        Some(m) => c.check(m.span(), checks::mac(m.get_ref())),
    };

    let mut interfaces = Vec::new();
    let mut interface_spans = Vec::new();
    if let Some(list) = &w.interfaces {
        if mode.is_some_and(|m| m != Mode::Bridge) {
            c.report(
                list.span(),
                checks::bad(
                    "interfaces is only allowed with mode = \"bridge\"",
                    "remove interfaces, or set mode = \"bridge\" to put host ports on this bridge",
                ),
            );
        }
        let mut seen: HashMap<&str, Range<usize>> = HashMap::new();
        for i in list.get_ref() {
            let n = i.get_ref().as_str();
            if c.check(i.span(), checks::interface_name("interface", n)).is_none() {
                continue;
            }
            if n == w.bridge.get_ref() {
                c.report(i.span(), checks::bad(format!("interface \"{n}\" is this network's bridge"), "list host ports (e.g. \"eth1\"), not the bridge itself"));
            } else if let Some(first) = seen.get(n) {
                let line = c.line_of(first);
                c.report(i.span(), checks::bad(format!("interface \"{n}\" is listed twice"), format!("remove this entry (already listed on line {line})")));
            } else {
                seen.insert(n, i.span());
                interfaces.push(n.to_string());
                interface_spans.push(i.span());
            }
        }
    }

    let subnet_info = address.map(|a| (a, a.trunc()));
    let dhcp = match &w.dhcp {
        None => None,
        Some(d) => match subnet_info {
            Some((gw, _)) => dhcp(c, d.get_ref(), gw, defaults),
            None => {
                if w.address.is_none() {
                    c.report(d.span(), needs_address("[network.dhcp]"));
                }
                None
            }
        },
    };
    let pxe = match &w.pxe {
        None => None,
        Some(p) => {
            if w.address.is_none() {
                c.report(p.span(), needs_address("[network.pxe]"));
            }
            pxe(c, p.get_ref())
        }
    };
    if w.pxe.is_none() {
        // Per-host boot overrides name files under the pxe root; without one they mean nothing.
        for h in w.dhcp.iter().flat_map(|d| &d.get_ref().host) {
            for f in [&h.get_ref().boot, &h.get_ref().script].into_iter().flatten() {
                c.report(
                    f.span(),
                    checks::bad("a per-host boot file needs a [network.pxe] section on this network", "add [network.pxe] with root = \"/var/lib/hostagent/boot\", or remove this key"),
                );
            }
        }
    }

    if c.problems.len() != before {
        return None;
    }
    let marks = Marks {
        name: w.name.span(),
        bridge: w.bridge.span(),
        address: w.address.as_ref().map(|a| a.span()),
        mac: w.mac.as_ref().map_or(w.name.span(), |m| m.span()),
        mac_derived: w.mac.is_none(),
        interfaces: interface_spans,
    };
    let net = Network {
        name,
        mode: mode?,
        bridge: w.bridge.get_ref().clone(),
        address,
        stp: w.stp.unwrap_or(true),
        forward_delay: forward_delay?,
        mac: mac?,
        mtu: mtu?,
        interfaces,
        dhcp,
        pxe,
    };
    Some((net, marks))
}

fn needs_address(section: &str) -> Bad {
    checks::bad(
        format!("{section} needs the network to have an address"),
        "add address = \"10.0.0.1/24\" (the host's address on the bridge) to this [[network]], or remove the section",
    )
}

fn in_subnet(subnet: Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast()
}

fn dhcp(c: &mut Checker, d: &wire::NetworkDhcp, gw: Ipv4Net, defaults: &DhcpDefaults) -> Option<Dhcp> {
    let before = c.problems.len();
    let subnet = gw.trunc();
    let gateway = gw.addr();
    let usable = format!("{}-{}", checks::first_host(subnet), checks::last_host(subnet));
    let range = c.check(d.range.span(), checks::range_syntax(d.range.get_ref())).and_then(|(a, b)| {
        let result = if a > b {
            Err(checks::bad(format!("range {a}-{b} is reversed"), format!("write the lower address first: \"{b}-{a}\"")))
        } else if !in_subnet(subnet, a) || !in_subnet(subnet, b) {
            Err(checks::bad(
                format!("range {a}-{b} is not inside the network's subnet {subnet}"),
                format!("use addresses from {usable}, e.g. \"{}\"", suggest_range(gw)),
            ))
        } else if a <= gateway && gateway <= b {
            Err(checks::bad(
                format!("range {a}-{b} covers the gateway address {gateway}"),
                format!("leave the gateway out, e.g. \"{}\"", suggest_range(gw)),
            ))
        } else {
            Ok((a, b))
        };
        c.check(d.range.span(), result)
    });
    let lease_time = match &d.lease_time {
        Some(l) => c.check(l.span(), checks::lease_time(l.get_ref())),
        None => Some(defaults.lease_time.unwrap_or(DEFAULT_LEASE_TIME)),
    };
    let dns = dns_list(c, d.dns.as_ref()).or_else(|| defaults.dns.clone());
    let domain = match &d.domain {
        Some(s) => c.check(s.span(), checks::domain(s.get_ref())).map(|()| s.get_ref().clone()),
        None => defaults.domain.clone(),
    };
    let hosts = static_hosts(c, &d.host, gw);
    if c.problems.len() != before {
        return None;
    }
    let (range_start, range_end) = range?;
    Some(Dhcp { range_start, range_end, lease_time: lease_time?, dns, domain, hosts })
}

/// The largest range that fits the subnet without the gateway: everything above it, or below it
/// when the gateway sits at the top.
fn suggest_range(gw: Ipv4Net) -> String {
    let (first, last, g) = (u32::from(checks::first_host(gw.trunc())), u32::from(checks::last_host(gw.trunc())), u32::from(gw.addr()));
    let (a, b) = if last - g >= g - first { (g + 1, last) } else { (first, g - 1) };
    format!("{}-{}", Ipv4Addr::from(a), Ipv4Addr::from(b))
}

fn static_hosts(c: &mut Checker, hosts: &[S<wire::StaticHost>], gw: Ipv4Net) -> Vec<StaticHost> {
    let subnet = gw.trunc();
    let mut out = Vec::new();
    let mut macs: HashMap<[u8; 6], Range<usize>> = HashMap::new();
    let mut ips: HashMap<Ipv4Addr, Range<usize>> = HashMap::new();
    let mut names: HashMap<String, Range<usize>> = HashMap::new();
    for h in hosts.iter().map(|h| h.get_ref()) {
        let before = c.problems.len();
        let mac = c.check(h.mac.span(), checks::mac(h.mac.get_ref()));
        if let Some(m) = mac {
            if let Some(first) = macs.get(&m) {
                let line = c.line_of(first);
                c.report(h.mac.span(), checks::bad(format!("MAC {} has two reservations", h.mac.get_ref()), format!("keep one [[network.dhcp.host]] per MAC (the other is on line {line})")));
            } else {
                macs.insert(m, h.mac.span());
            }
        }
        let ip = c.check(h.ip.span(), checks::ipv4(h.ip.get_ref())).and_then(|ip| {
            let result = if ip == gw.addr() {
                Err(checks::bad(format!("{ip} is the network's gateway address"), "reserve a different address; the gateway belongs to the host"))
            } else if !in_subnet(subnet, ip) {
                Err(checks::bad(
                    format!("{ip} is not a host address inside the network's subnet {subnet}"),
                    format!("use an address from {}-{}", checks::first_host(subnet), checks::last_host(subnet)),
                ))
            } else if let Some(first) = ips.get(&ip) {
                Err(checks::bad(format!("{ip} is reserved twice"), format!("give each host its own address (the other is on line {})", c.line_of(first))))
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
                    c.report(n.span(), checks::bad(format!("host name \"{}\" is used twice", n.get_ref()), format!("give each host its own name (the other is on line {line})")));
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

fn pxe(c: &mut Checker, p: &wire::Pxe) -> Option<Pxe> {
    let before = c.problems.len();
    let root = c.check(p.root.span(), checks::absolute_dir("root", p.root.get_ref(), "/var/lib/hostagent/boot"));
    let mut file = |key: &str, f: &Option<S<String>>| -> Option<String> {
        let f = f.as_ref()?;
        c.check(f.span(), checks::boot_file(key, f.get_ref())).map(|()| f.get_ref().clone())
    };
    let bios = file("bios", &p.bios);
    let uefi = file("uefi", &p.uefi);
    let arm64 = file("arm64", &p.arm64);
    let script = file("script", &p.script);
    let http_port = p.http_port.as_ref().and_then(|port| {
        let result = u16::try_from(*port.get_ref()).ok().filter(|v| *v != 0).ok_or_else(|| {
            checks::bad(format!("http_port = {} is not a usable TCP port", port.get_ref()), "write a port from 1 to 65535, e.g. 8069, or leave http_port out to serve TFTP only")
        });
        c.check(port.span(), result)
    });
    if c.problems.len() != before {
        return None;
    }
    Some(Pxe { root: root?, bios, uefi, arm64, script, http_port })
}

fn across_networks(c: &mut Checker, nets: &[Network], marks: &[Marks]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut bridges: HashMap<&str, usize> = HashMap::new();
    let mut macs: HashMap<[u8; 6], usize> = HashMap::new();
    let mut ports: HashMap<&str, Range<usize>> = HashMap::new();
    for (i, (n, m)) in nets.iter().zip(marks).enumerate() {
        if let Some(&j) = names.get(n.name.as_str()) {
            let line = c.line_of(&marks[j].name);
            c.report(m.name.clone(), checks::bad(format!("network name \"{}\" is used twice", n.name), format!("give each [[network]] its own name (the other is on line {line})")));
        } else {
            names.insert(&n.name, i);
        }
        if let Some(&j) = bridges.get(n.bridge.as_str()) {
            let line = c.line_of(&marks[j].bridge);
            c.report(m.bridge.clone(), checks::bad(format!("bridge \"{}\" is used by two networks", n.bridge), format!("give each network its own bridge (the other is on line {line})")));
        } else {
            bridges.insert(&n.bridge, i);
        }
        if let Some(&j) = macs.get(&n.mac) {
            let line = c.line_of(&marks[j].mac);
            let what = if m.mac_derived { "the MAC derived from this network's name" } else { "this MAC" };
            c.report(
                m.mac.clone(),
                checks::bad(
                    format!("{what} ({}) is also the bridge MAC of network \"{}\"", netcfg::format_mac(&n.mac), nets[j].name),
                    format!("set mac = \"52:54:00:..\" explicitly on one of them (the other is on line {line})"),
                ),
            );
        } else {
            macs.insert(n.mac, i);
        }
        for (j, other) in nets.iter().enumerate().take(i) {
            if let (Some(a), Some(b), Some(span)) = (n.subnet(), other.subnet(), &m.address) {
                if a.contains(&b.network()) || b.contains(&a.network()) {
                    let line = c.line_of(marks[j].address.as_ref().unwrap_or(&marks[j].name));
                    c.report(
                        span.clone(),
                        checks::bad(
                            format!("subnet {a} overlaps {b} of network \"{}\"", other.name),
                            format!("give each network a separate subnet (the other is on line {line})"),
                        ),
                    );
                }
            }
        }
        for (port, span) in n.interfaces.iter().zip(&m.interfaces) {
            if let Some(first) = ports.get(port.as_str()) {
                let line = c.line_of(first);
                c.report(span.clone(), checks::bad(format!("interface \"{port}\" is listed in two networks"), format!("a host port can join only one bridge (it is also listed on line {line})")));
            } else if let Some(j) = nets.iter().position(|o| o.bridge == *port) {
                // Own bridge was refused per network already, so this is another network's.
                let line = c.line_of(&marks[j].bridge);
                c.report(span.clone(), checks::bad(format!("interface \"{port}\" is the bridge of network \"{}\"", nets[j].name), format!("list host ports only, not another network's bridge (line {line})")));
            } else {
                ports.insert(port, span.clone());
            }
        }
    }
}

