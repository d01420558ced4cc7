//! pxe's own configuration types. The agent builds these from its validated config; pxe never
//! sees TOML. Every value here has already been checked (addresses inside the subnet, range not
//! covering the gateway, unique static hosts, boot paths relative and inside the root).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::Serialize;

/// The one MAC type of the workspace: a DHCP `chaddr`, a reservation, a lease.
pub use hwaddr::Mac;

/// A static reservation: this MAC always gets this address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticHost {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// Hostname handed out in option 12.
    pub name: Option<String>,
    /// Per-host boot file (relative to the boot root), wins over the firmware default.
    pub boot: Option<String>,
    /// Per-host iPXE script (relative to the boot root), wins over the network's script.
    pub script: Option<String>,
}

/// Which file each kind of client is handed. Paths are relative to `root`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootConfig {
    /// Served by TFTP and HTTP, read-only.
    pub root: PathBuf,
    /// For legacy BIOS PXE ROMs (option 93 = 0 or absent).
    pub bios: Option<String>,
    /// For x86-64 UEFI PXE (option 93 = 7 or 9).
    pub uefi: Option<String>,
    /// For arm64 UEFI PXE (option 93 = 11).
    pub arm64: Option<String>,
    /// For clients already running iPXE (option 175 or user class "iPXE"): ends the chainload.
    pub script: Option<String>,
    /// HTTP boot port: enables the HTTP server, UEFI HTTP boot and http:// URLs for iPXE.
    pub http_port: Option<u16>,
    /// PXELINUX options 209–211 (with the 208 magic) for clients handed a boot file.
    pub pxelinux: PxelinuxOptions,
}

/// RFC 5071's PXELINUX options. Sent, whether or not the client asked for them (a PXE ROM's
/// request list never names them; pxelinux reads the ROM's cached reply), in every reply that
/// hands out a boot file (not an iPXE script, not an HTTP boot URL), together with option 208
/// (`f1:00:74:7e`), which older pxelinux builds require before they look at 209–211.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PxelinuxOptions {
    /// 209: the config file to load instead of searching `pxelinux.cfg/` (relative to the path
    /// prefix, or absolute from the TFTP root).
    pub config_file: Option<String>,
    /// 210: prefix for every file pxelinux fetches (instead of the boot file's own directory).
    pub path_prefix: Option<String>,
    /// 211: seconds before pxelinux reboots when it finds no config or cannot boot.
    pub reboot_time: Option<u32>,
}

impl PxelinuxOptions {
    pub fn is_empty(&self) -> bool {
        self.config_file.is_none() && self.path_prefix.is_none() && self.reboot_time.is_none()
    }
}

/// A classless static route (RFC 3442): `destination` is reached through `router`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StaticRoute {
    pub destination: Ipv4Net,
    pub router: Ipv4Addr,
}

/// One network's DHCP service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DhcpConfig {
    /// The config's network name (used in logs, lease file names and status).
    pub network: String,
    /// Device the server binds to (the bridge).
    pub interface: String,
    /// The host's address on that network: server identifier, next-server, default router.
    pub server_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    /// Inclusive dynamic range.
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    pub lease_time: Duration,
    /// Option 3; None on isolated/bridge networks where the host does not route.
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 26.
    pub mtu: Option<u16>,
    /// Option 42 (NTP servers).
    pub ntp: Vec<Ipv4Addr>,
    /// Option 121 (and 249 for clients that ask for it). A client that gets 121 ignores option 3
    /// (RFC 3442 §2), so when `router` is set and no route here is the default one, a default
    /// route through `router` is sent with them.
    pub routes: Vec<StaticRoute>,
    pub hosts: Vec<StaticHost>,
    pub boot: Option<BootConfig>,
    /// Where this network's lease journal lives (a file under state_dir).
    pub lease_file: PathBuf,
}

/// One network's proxyDHCP service (`dhcp::proxy`): boot information for PXE clients on a
/// segment where another server hands out the addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyConfig {
    pub network: String,
    /// Device the server binds to (UDP 67 and 4011).
    pub interface: String,
    /// The host's address on that segment: server identifier and next-server.
    pub server_ip: Ipv4Addr,
    pub boot: BootConfig,
    /// Per-host boot overrides by MAC (`ip` is not used: addresses are the other server's).
    pub hosts: Vec<StaticHost>,
}

/// Where TFTP/HTTP listen and what they serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileServiceConfig {
    pub network: String,
    pub listen: Ipv4Addr,
    /// The IPv6 gateway, where TFTP and HTTP listen too (PXE over IPv6).
    pub listen6: Option<std::net::Ipv6Addr>,
    pub root: PathBuf,
}

/// Bounds on what a TFTP client may negotiate (RFC 2348/7440 options are clamped, not refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TftpLimits {
    pub max_blksize: u16,
    pub max_windowsize: u16,
    pub max_transfers: usize,
    pub retries: u32,
}

impl Default for TftpLimits {
    fn default() -> Self {
        TftpLimits {
            max_blksize: 8192,
            max_windowsize: 64,
            max_transfers: 512,
            retries: 5,
        }
    }
}

/// Who a DHCPv6 static host is: its DUID, or its MAC (as `dhcp6::client` learns it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Host6Id {
    Duid(crate::leases::v6::Duid),
    Mac(Mac),
}

/// A DHCPv6 static host: this client always gets this address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticHost6 {
    pub id: Host6Id,
    pub ip: std::net::Ipv6Addr,
    /// Its name in DNS (AAAA) when the client sends no FQDN of its own.
    pub name: Option<String>,
}

/// One network's DHCPv6 service (RFC 8415).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dhcp6Config {
    pub network: String,
    /// The bridge: UDP 547, joined to ff02::1:2 there.
    pub interface: String,
    /// The host's IPv6 address on the bridge, with the guests' prefix (Confirm checks against
    /// it; boot URLs name it).
    pub server: ipnet::Ipv6Net,
    /// Inclusive IA_NA range; None: stateless (Information-Request only, and Solicits are
    /// answered with NoAddrsAvail).
    pub range: Option<(std::net::Ipv6Addr, std::net::Ipv6Addr)>,
    /// Valid and preferred lifetime of an address; T1 = 0.5 and T2 = 0.8 of it (RFC 8415 §21.4).
    pub lease_time: Duration,
    /// Answer a Solicit carrying Rapid Commit (option 14) with a committed Reply.
    pub rapid_commit: bool,
    /// Option 23.
    pub dns: Vec<std::net::Ipv6Addr>,
    /// Option 24.
    pub domain_search: Vec<String>,
    pub hosts: Vec<StaticHost6>,
    /// PXE over IPv6 (option 59 boot file URL), from the network's `[network.pxe]`.
    pub boot: Option<BootConfig>,
    /// Where this network's v6 lease journal lives.
    pub lease_file: PathBuf,
    /// The host's server DUID file (one DUID for every network, kept across restarts).
    pub duid_file: PathBuf,
}
