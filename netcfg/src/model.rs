//! Desired host state, in netcfg's own terms. The agent builds these from its validated config;
//! netcfg never sees TOML.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use hwaddr::Mac;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;

/// How a network forwards guest traffic, with libvirt's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Guests reach the outside through masquerade.
    Nat,
    /// Guests are forwarded to the outside without address translation.
    Routed,
    /// Guests reach only the host and each other.
    Isolated,
    /// Layer 2 onto host ports; the agent adds no forwarding rules.
    Bridge,
}

impl Mode {
    pub fn forwards(self) -> bool {
        matches!(self, Mode::Nat | Mode::Routed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Nat => "nat",
            Mode::Routed => "routed",
            Mode::Isolated => "isolated",
            Mode::Bridge => "bridge",
        }
    }
}

/// Services the agent serves on a network; the firewall opens exactly these to guests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Services {
    pub dhcp: bool,
    pub tftp: bool,
    /// HTTP boot port, when HTTP boot is on.
    pub http_port: Option<u16>,
    /// DNS (53/udp+tcp) is accepted from guests, as libvirt does, so a resolver on the host works.
    pub dns: bool,
}

/// One guest network: a bridge the agent owns, with its address and firewall rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkSpec {
    /// The config's network name (recorded as the owner mark).
    pub name: String,
    pub mode: Mode,
    /// Bridge device name (validated: 1..=15 bytes, no '/', whitespace or ':').
    pub bridge: String,
    /// Gateway address on the bridge, with the subnet prefix. None for a pure L2 bridge.
    pub address: Option<Ipv4Net>,
    pub stp: bool,
    /// Bridge forward delay in seconds (libvirt's default is 0).
    pub forward_delay: u32,
    /// Pinned bridge MAC (a bridge without one takes its first port's MAC and changes later).
    pub mac: Mac,
    pub mtu: Option<u32>,
    /// mode = bridge only: host ports to enslave.
    pub interfaces: Vec<String>,
    pub services: Services,
    /// IPv6 on the bridge (nat, routed and isolated networks only); None: the agent gives the
    /// bridge no IPv6 of its own.
    pub ipv6: Option<Ipv6Spec>,
}

/// A network's IPv6: the gateway address on the bridge and what the firewall does with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ipv6Spec {
    /// The bridge's address with the prefix the guests are on (added with `nodad`, see
    /// [`crate::link::Netlink::add_addr6`]).
    pub address: Ipv6Net,
    /// nat mode only: masquerade the prefix as well (for hosts without a routed prefix).
    /// Without it a nat network forwards IPv6 untranslated, as libvirt does.
    pub nat6: bool,
    /// DHCPv6 (udp 547) is accepted from guests on the bridge.
    pub dhcp6: bool,
}

impl NetworkSpec {
    /// A network for tests: `bridge` with nothing else set (no address, STP off, MAC derived
    /// from the name, no services). Tests change what they need with struct update syntax, so
    /// a new field is given its test default here, once.
    #[cfg(test)]
    pub(crate) fn test(name: &str, mode: Mode, bridge: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            mode,
            bridge: bridge.into(),
            address: None,
            stp: false,
            forward_delay: 0,
            mac: hwaddr::Mac::derived(name),
            mtu: None,
            interfaces: vec![],
            services: Services::default(),
            ipv6: None,
        }
    }

    pub fn subnet(&self) -> Option<Ipv4Net> {
        self.address.map(|a| a.trunc())
    }
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.address.map(|a| a.addr())
    }
    /// The IPv6 prefix the guests are on.
    pub fn prefix6(&self) -> Option<Ipv6Net> {
        self.ipv6.as_ref().map(|v| v.address.trunc())
    }
    /// The bridge's own IPv6 address (the guests' router and DNS server).
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        self.ipv6.as_ref().map(|v| v.address.addr())
    }
}

/// A transport protocol of a port forward (and of the firewall's port matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A port of the host forwarded to a guest on a nat or routed network (DNAT in the agent's
/// table): from outside, from the host itself, and from the network's other guests (hairpin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortForward {
    /// The network the guest is on.
    pub network: String,
    pub proto: Proto,
    /// Only connections to this host address are forwarded; None: any of the host's addresses.
    pub host_address: Option<Ipv4Addr>,
    pub host_port: u16,
    /// The guest's address (inside the network's subnet) and port.
    pub to: Ipv4Addr,
    pub to_port: u16,
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self
            .host_address
            .map_or_else(|| "*".to_string(), |a| a.to_string());
        write!(
            f,
            "{} {host}:{} → {}:{}",
            self.proto.as_str(),
            self.host_port,
            self.to,
            self.to_port
        )
    }
}

/// Everything the agent wants the host to look like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desired {
    pub networks: Vec<NetworkSpec>,
    /// Host-wide kernel settings from `[sysctl]`, key in dotted form ("vm.max_map_count").
    pub sysctls: BTreeMap<String, String>,
    /// `[vhost_net] experimental_zcopytx`, when configured.
    pub vhost_zcopytx: Option<bool>,
    /// How much DHCP one bridge port may send to the host (the `bridge hostagent` table, rendered
    /// by nft::bridge); None: no per-port limit.
    pub dhcp_port_limit: Option<PortLimit>,
    /// `[[network.forward]]` of every network, in config order.
    pub forwards: Vec<PortForward>,
    /// `[firewall] coexist`: whether the agent adds accepts to foreign firewalls that would
    /// drop its networks' traffic (see [`crate::coexist`]).
    pub coexist: crate::coexist::Coexist,
}

/// No networks, no sysctls, and the default per-port DHCP limit (what a config that leaves
/// `[dhcp] port_rate_limit` out asks for).
impl Default for Desired {
    fn default() -> Self {
        Desired {
            networks: Vec::new(),
            sysctls: BTreeMap::new(),
            vhost_zcopytx: None,
            dhcp_port_limit: Some(PortLimit::default()),
            forwards: Vec::new(),
            coexist: crate::coexist::Coexist::Auto,
        }
    }
}

/// A per-port packet rate limit: `rate_per_sec` sustained, `burst` packets back to back.
///
/// The one place the defaults and the burst rule live: nft::bridge renders whatever limit it is
/// given, and the agent's config takes its default rate from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortLimit {
    pub rate_per_sec: u32,
    pub burst: u32,
}

impl PortLimit {
    /// Default sustained DHCP packets per second one bridge port may send to the host: far above
    /// what real clients send (a handful per boot), far below a starvation flood.
    pub const DEFAULT_RATE_PER_SEC: u32 = 100;

    /// `rate` packets per second with a burst of twice that (two seconds' worth), so a port whose
    /// clients all boot at once is not cut off in its first second.
    pub fn per_second(rate: u32) -> PortLimit {
        PortLimit {
            rate_per_sec: rate,
            burst: rate.saturating_mul(2),
        }
    }
}

impl Default for PortLimit {
    fn default() -> Self {
        PortLimit::per_second(PortLimit::DEFAULT_RATE_PER_SEC)
    }
}

/// Where the agent reads and writes on this host.
///
/// Every file outside `/proc/sys/net` and netlink lives under `root` so tests (and image builds)
/// never touch the machine's own files. `/proc/sys/net/*` is per network namespace and always
/// real; other sysctls (vm.*, kernel.*) are host-wide and therefore go under `root` too.
#[derive(Debug, Clone)]
pub struct Host {
    pub root: PathBuf,
    /// State directory as configured (absolute path inside `root`).
    pub state_dir: PathBuf,
}

impl Host {
    pub fn new(root: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Host {
            root: root.into(),
            state_dir: state_dir.into(),
        }
    }

    /// Map an absolute host path under the root prefix.
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        let rel = abs.strip_prefix("/").unwrap_or(abs);
        self.root.join(rel)
    }

    /// The state directory, under the root prefix.
    pub fn state_path(&self) -> PathBuf {
        self.path(&self.state_dir)
    }

    /// Path of a sysctl's /proc file: net.* is always the real (namespaced) /proc/sys; the rest
    /// is host-wide and goes under the root prefix.
    ///
    /// A per-interface key (`net.ipv6.conf.IFNAME.accept_ra`) keeps the interface name whole:
    /// interface names may contain dots (`eth0.100`), which are not separators there.
    pub fn sysctl_path(&self, key: &str) -> PathBuf {
        let rel: PathBuf = match crate::sysctl::split_interface_key(key) {
            Some((head, interface, leaf)) => head
                .split('.')
                .chain([interface])
                .chain(leaf.split('.'))
                .collect(),
            None => key.split('.').collect(),
        };
        let real = Path::new("/proc/sys").join(&rel);
        if key.starts_with("net.") {
            real
        } else {
            self.path(real)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_port_limit_is_100_per_second_with_twice_that_as_burst() {
        assert_eq!(
            PortLimit::default(),
            PortLimit {
                rate_per_sec: 100,
                burst: 200
            }
        );
        assert_eq!(PortLimit::per_second(7).burst, 14);
        assert_eq!(PortLimit::per_second(u32::MAX).burst, u32::MAX);
    }

    #[test]
    fn sysctl_paths_keep_net_real_and_root_the_rest() {
        let h = Host::new("/tmp/r", "/var/lib/hostagent");
        assert_eq!(
            h.sysctl_path("net.ipv4.ip_forward"),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            h.sysctl_path("vm.max_map_count"),
            Path::new("/tmp/r/proc/sys/vm/max_map_count")
        );
        assert_eq!(h.state_path(), Path::new("/tmp/r/var/lib/hostagent"));
        assert_eq!(
            h.sysctl_path("net.ipv6.conf.eth0.100.accept_ra"),
            Path::new("/proc/sys/net/ipv6/conf/eth0.100/accept_ra")
        );
        assert_eq!(
            h.sysctl_path("net.ipv6.conf.all.forwarding"),
            Path::new("/proc/sys/net/ipv6/conf/all/forwarding")
        );
    }
}
