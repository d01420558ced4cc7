//! IPv6 guests for tests: a namespace that configures itself from router advertisements with
//! the kernel's own SLAAC, what it learnt (addresses, default route), and `rdisc6` (Debian's
//! `ndisc6`) as an independent reader of the advertisements.

use std::net::Ipv6Addr;

use testkit::{stdout, wait_for, Netns};

/// A guest namespace whose `eth0` is port `port` of `bridge` in `host`, set to accept router
/// advertisements and autoconfigure (the kernel defaults, written out so a host default cannot
/// change them), then taken down and up so its first solicitation goes out through the bridge.
pub fn slaac_guest(host: &Netns, bridge: &str, port: &str) -> Netns {
    let guest = host.plug(bridge, port);
    for (key, value) in [("accept_ra", "1"), ("autoconf", "1"), ("forwarding", "0")] {
        guest.ok(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.eth0.{key}={value}"),
        ]);
    }
    guest.ok(&["ip", "link", "set", "eth0", "down"]);
    guest.ok(&["ip", "link", "set", "eth0", "up"]);
    guest
}

/// The IPv6 addresses of `dev` with the given scope ("global", "link"), with whether each is
/// still tentative.
pub fn addresses(ns: &Netns, dev: &str, scope: &str) -> Vec<(Ipv6Addr, bool)> {
    let v = ns.ip_json(&["-6", "addr", "show", "dev", dev, "scope", scope]);
    let mut out = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if let Some(ip) = a["local"].as_str().and_then(|s| s.parse().ok()) {
                out.push((ip, a["tentative"].as_bool() == Some(true)));
            }
        }
    }
    out
}

/// Wait (up to `secs`) for a usable (not tentative) global address of `dev` inside `prefix`
/// (given as its first 64 bits, e.g. `fd00:77::`).
pub fn wait_global_address(
    ns: &Netns,
    dev: &str,
    prefix64: Ipv6Addr,
    secs: u64,
) -> Option<Ipv6Addr> {
    let head = |a: &Ipv6Addr| a.segments()[..4].to_vec();
    wait_for(secs, || {
        addresses(ns, dev, "global")
            .into_iter()
            .find(|(a, tentative)| !tentative && head(a) == head(&prefix64))
            .map(|(a, _)| a)
    })
}

/// The link-local address of `dev`, once it is usable.
pub fn wait_link_local(ns: &Netns, dev: &str, secs: u64) -> Option<Ipv6Addr> {
    wait_for(secs, || {
        addresses(ns, dev, "link")
            .into_iter()
            .find(|(_, tentative)| !tentative)
            .map(|(a, _)| a)
    })
}

/// The IPv6 default routes: (gateway, device, protocol) of each.
pub fn default_routes(ns: &Netns) -> Vec<(String, String, String)> {
    let v = ns.ip_json(&["-6", "route", "show", "default"]);
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("gateway"), s("dev"), s("protocol"))
        })
        .collect()
}

/// One router discovery by `rdisc6` on `dev`: its report of the first advertisement (empty
/// when none came within three tries of a second each).
pub fn rdisc6(ns: &Netns, dev: &str) -> String {
    stdout(&ns.run(&["rdisc6", "-1", "-n", "-w", "1000", "-r", "3", dev]))
}

/// The value rdisc6 prints for `field` ("Router lifetime", "Stateful address conf.", ...),
/// the text after the colon up to the first `(` or the end of the line, trimmed.
pub fn rdisc6_field(report: &str, field: &str) -> Option<String> {
    report.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        (name.trim() == field).then(|| {
            value
                .split('(')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
    })
}
