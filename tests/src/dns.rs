//! The upstream resolver of the DNS tests: a real dnsmasq (`testkit::dns::Dnsmasq`) in an
//! "upstream" namespace of its own, linked to the agent's namespace by a veth, as a host's
//! resolver sits somewhere beyond its uplink.

use std::net::{IpAddr, SocketAddr};

use testkit::dns::Dnsmasq;
use testkit::Netns;

/// dnsmasq on `addr` (`10.92.1.2/24`) in its own namespace, whose veth peer in `host` is
/// `vupstream` with `host_side` (`10.92.1.1/24`); it answers what `extra` says
/// (`--address=/upstream.test/10.9.9.9`). Both go on drop.
pub struct Upstream {
    pub dnsmasq: Dnsmasq,
    _ns: Netns,
}

impl Upstream {
    pub fn start(host: &Netns, host_side: &str, addr: &str, extra: &[&str]) -> Upstream {
        let ns = Netns::new("up");
        host.veth_to("vupstream", &ns, "eth0");
        host.ok(&["ip", "addr", "add", host_side, "dev", "vupstream"]);
        ns.ok(&["ip", "addr", "add", addr, "dev", "eth0"]);
        let ip: IpAddr = addr
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{addr} is not ADDRESS/PREFIX"));
        let dnsmasq = Dnsmasq::start(Some(&ns), SocketAddr::new(ip, 53), extra);
        Upstream { dnsmasq, _ns: ns }
    }
}
