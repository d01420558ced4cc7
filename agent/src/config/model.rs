//! The validated config: every value here has passed `validate`, so the rest of the agent can use
//! it without re-checking. Conversions to netcfg/pxe types live in `convert`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

pub use netcfg::Mode;

/// Default `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hostagent";
/// Lease time when neither `[network.dhcp]` nor `[dhcp]` sets one (libvirt's default).
pub const DEFAULT_LEASE_TIME: Duration = Duration::from_secs(3600);
/// Shortest lease we hand out: below this, renewals become a load problem.
pub const MIN_LEASE_TIME: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// The file this model was read from (for messages and reloads).
    pub source: PathBuf,
    /// Absolute; prefixed by --root when used.
    pub state_dir: PathBuf,
    /// `[sysctl]`, dotted key → value as written to /proc/sys.
    pub sysctl: BTreeMap<String, String>,
    pub vhost_zcopytx: Option<bool>,
    /// `[dhcp]` defaults, already folded into each network's `Dhcp`; kept for display.
    pub dhcp_defaults: DhcpDefaults,
    pub networks: Vec<Network>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhcpDefaults {
    /// None: the host's resolvers from ROOT/etc/resolv.conf, read when the config is used.
    pub dns: Option<Vec<Ipv4Addr>>,
    pub domain: Option<String>,
    pub lease_time: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub mode: Mode,
    pub bridge: String,
    /// Gateway address with prefix; always set for nat/routed/isolated.
    pub address: Option<Ipv4Net>,
    pub stp: bool,
    /// Seconds.
    pub forward_delay: u32,
    pub mac: [u8; 6],
    pub mtu: Option<u16>,
    /// Host ports to enslave (mode = bridge only).
    pub interfaces: Vec<String>,
    pub dhcp: Option<Dhcp>,
    pub pxe: Option<Pxe>,
}

impl Network {
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.address.map(|a| a.addr())
    }
    pub fn subnet(&self) -> Option<Ipv4Net> {
        self.address.map(|a| a.trunc())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp {
    /// Inclusive dynamic range, inside the subnet, not covering the gateway.
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    pub lease_time: Duration,
    /// None: the host's resolvers (see `DhcpDefaults::dns`).
    pub dns: Option<Vec<Ipv4Addr>>,
    pub domain: Option<String>,
    pub hosts: Vec<StaticHost>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticHost {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub name: Option<String>,
    /// Relative to the network's pxe root.
    pub boot: Option<String>,
    pub script: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pxe {
    /// Absolute; prefixed by --root when used.
    pub root: PathBuf,
    /// File names relative to `root`, without `..`.
    pub bios: Option<String>,
    pub uefi: Option<String>,
    pub arm64: Option<String>,
    pub script: Option<String>,
    pub http_port: Option<u16>,
}
