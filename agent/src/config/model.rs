//! The validated config: every value here has passed `validate`, so the rest of the agent can use
//! it without re-checking. Conversions to netcfg/pxe types live in `convert`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hwaddr::Mac;
use ipnet::{Ipv4Net, Ipv6Net};

pub use netcfg::Mode;

/// Default `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hostagent";
/// Lease time when neither `[network.dhcp]` nor `[dhcp]` sets one (libvirt's default).
pub const DEFAULT_LEASE_TIME: Duration = Duration::from_secs(3600);
/// Shortest lease we hand out: below this, renewals become a load problem.
pub const MIN_LEASE_TIME: Duration = Duration::from_secs(60);
/// `[dhcp] port_rate_limit` when left out: DHCP packets per second one bridge port may send to
/// the host (burst twice that).
pub const DEFAULT_PORT_RATE_LIMIT: u32 = netcfg::PortLimit::DEFAULT_RATE_PER_SEC;
/// The accepted `port_rate_limit` values besides 0 (off): below 10/s a port with a few booting
/// machines already loses DISCOVERs; above 100,000/s the limit no longer protects anything.
pub const PORT_RATE_LIMIT_RANGE: std::ops::RangeInclusive<u32> = 10..=100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// The file this model was read from (for messages and reloads).
    pub source: PathBuf,
    /// The text it was validated from: the daemon hands it to its guest helper process, which
    /// validates it again and so works on exactly this model.
    pub text: std::sync::Arc<str>,
    /// Absolute; prefixed by --root when used.
    pub state_dir: PathBuf,
    /// `[sysctl]`, dotted key → value as written to /proc/sys.
    pub sysctl: BTreeMap<String, String>,
    pub vhost_zcopytx: Option<bool>,
    /// `[dhcp]` defaults, already folded into each network's `Dhcp`; kept for display.
    pub dhcp_defaults: DhcpDefaults,
    /// `[dhcp] port_rate_limit`: DHCP packets per second one bridge port may send to the host;
    /// 0 = no per-port limit.
    pub dhcp_port_rate_limit: u32,
    pub networks: Vec<Network>,
    /// `[libvirt]`, defaults filled in.
    pub libvirt: Libvirt,
    /// Every guest instance (a `[[guest]]` with `count = N` gives N entries), in config order.
    pub guests: Vec<Guest>,
    /// `[firewall] coexist`: add accepts to foreign firewalls that would drop guest traffic.
    pub coexist: netcfg::coexist::Coexist,
    /// `[leases]`: where leases are kept, and this agent's name on them.
    pub leases: Leases,
}

/// `[leases]`, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leases {
    /// `agent`, or the host name: which agent granted a lease, in `leases` and the database.
    pub agent: String,
    pub backend: LeaseBackend,
}

/// Where the DHCP servers keep their leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseBackend {
    /// One journal per network under `state_dir/leases/` (the default).
    Journal,
    /// One PostgreSQL database several agents share.
    Postgres {
        url: String,
        pool_size: u32,
        connect_timeout: Duration,
        timeout: Duration,
    },
}

impl LeaseBackend {
    pub fn name(&self) -> &'static str {
        match self {
            LeaseBackend::Journal => "journal",
            LeaseBackend::Postgres { .. } => "postgres",
        }
    }
}

/// Default `[libvirt] uri`.
pub const DEFAULT_LIBVIRT_URI: &str = "qemu:///system";
/// Default `[libvirt] pool`: libvirt's own default pool (created in /var/lib/libvirt/images by
/// the agent when missing, as virt-install does).
pub const DEFAULT_LIBVIRT_POOL: &str = "default";
/// Default warning thresholds for `check`: vCPUs per host CPU, guest memory per host memory.
pub(super) const DEFAULT_CPU_OVERCOMMIT_PERCENT: u32 = 400;
pub(super) const DEFAULT_MEMORY_OVERCOMMIT_PERCENT: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Libvirt {
    pub uri: String,
    pub virt_type: VirtType,
    /// The storage pool guests' disks are volumes of (`default` unless `[libvirt] pool`).
    pub pool: String,
    /// Ratios in percent (4.0 → 400) so the model stays `Eq`.
    pub cpu_overcommit_percent: u32,
    pub memory_overcommit_percent: u32,
    /// `[[libvirt.host]]`: other libvirt daemons, by name (unique names and URIs).
    pub hosts: Vec<LibvirtHost>,
}

/// A libvirt daemon besides `[libvirt] uri`, for `[[guest]] host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtHost {
    pub name: String,
    pub uri: String,
}

/// What `guests` and logs call the `[libvirt] uri` connection; no `[[libvirt.host]]` may take it.
pub const LOCAL_HOST: &str = "local";

impl Libvirt {
    /// The URI of `host` (a `[[libvirt.host]]` name; None: `[libvirt] uri`). Validation made
    /// every guest's host a known one.
    pub fn uri_of(&self, host: Option<&str>) -> Option<&str> {
        match host {
            None => Some(&self.uri),
            Some(name) => self
                .hosts
                .iter()
                .find(|h| h.name == name)
                .map(|h| h.uri.as_str()),
        }
    }
}

impl Default for Libvirt {
    fn default() -> Self {
        Libvirt {
            uri: DEFAULT_LIBVIRT_URI.to_string(),
            virt_type: VirtType::Kvm,
            pool: DEFAULT_LIBVIRT_POOL.to_string(),
            cpu_overcommit_percent: DEFAULT_CPU_OVERCOMMIT_PERCENT,
            memory_overcommit_percent: DEFAULT_MEMORY_OVERCOMMIT_PERCENT,
            hosts: Vec::new(),
        }
    }
}

/// libvirt's `<domain type=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtType {
    Kvm,
    /// TCG emulation: slow, but works without /dev/kvm.
    Qemu,
}

impl VirtType {
    pub fn as_str(&self) -> &'static str {
        match self {
            VirtType::Kvm => "kvm",
            VirtType::Qemu => "qemu",
        }
    }
}

/// A guest's MAC, derived from its name: stable across runs and hosts, in QEMU's 52:54:00 block,
/// and never equal to a bridge MAC derived from a network of the same name. Only 24 bits of a
/// hash: two names can meet, which validation reports (`mac = ` on one guest settles it).
pub fn guest_mac(name: &str) -> Mac {
    Mac::derived(&format!("guest:{name}"))
}

/// Who has which MAC among `networks`: each bridge and each `[[network.dhcp.host]]`, described
/// for messages (`the bridge of network "lab"`). Guests must not meet any of them.
pub(super) fn network_macs(networks: &[Network]) -> Vec<(Mac, String)> {
    let mut out = Vec::new();
    for n in networks {
        out.push((n.mac, format!("the bridge of network \"{}\"", n.name)));
        for h in n.dhcp.iter().flat_map(|d| &d.hosts) {
            let who = match &h.name {
                Some(name) => format!("[[network.dhcp.host]] \"{name}\" on network \"{}\"", n.name),
                None => format!("a [[network.dhcp.host]] on network \"{}\"", n.name),
            };
            out.push((h.mac, who));
        }
    }
    out
}

impl Model {
    /// Every MAC the config gives out: [`network_macs`] and each guest's (`guest "web"`).
    pub fn macs(&self) -> Vec<(Mac, String)> {
        let mut out = network_macs(&self.networks);
        out.extend(
            self.guests
                .iter()
                .map(|g| (g.mac, format!("guest \"{}\"", g.name))),
        );
        out
    }
}

/// One guest instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// The domain name and DHCP host name (`node-2` for the second of `name = "node"`, `count = 3`).
    pub name: String,
    /// The `[[guest]]` entry's name.
    pub group: String,
    pub network: String,
    /// The network's bridge the NIC plugs into.
    pub bridge: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk: Option<GuestDisk>,
    pub boot: BootDevice,
    pub firmware: GuestFirmware,
    /// false: `<driver name='qemu'/>` on the NIC (userspace virtio instead of vhost-net).
    pub vhost: bool,
    /// The `[[guest]]`'s `mac`, else derived from `name` ([`guest_mac`]).
    pub mac: Mac,
    /// The DHCP reservation.
    pub ip: std::net::Ipv4Addr,
    /// Template relative to the network's pxe root; rendered per guest (see `guests::script`).
    pub script: Option<String>,
    pub autostart: bool,
    /// The `[[libvirt.host]]` it is defined on; None: `[libvirt] uri`.
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestDisk {
    /// Default: the volume `<name>.<format>` in `[libvirt] pool`.
    pub source: DiskSource,
    /// Size of a new image; None for an existing image or an overlay of `backing`'s size.
    pub size_bytes: Option<u64>,
    pub format: DiskFormat,
    pub bus: DiskBus,
    /// A new qcow2 image is created as an overlay of this one.
    pub backing: Option<DiskSource>,
}

/// Where a disk image is: a volume of the guests' storage pool (made by libvirtd through its
/// storage API), or a file the user named by its absolute path (kept where it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// A volume name (a file name, no `/`) in `[libvirt] pool`.
    Volume(String),
    /// Absolute; prefixed by --root when used.
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(&self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    Virtio,
    Sata,
    Ide,
    Scsi,
}

impl DiskBus {
    pub fn as_str(&self) -> &'static str {
        match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Sata => "sata",
            DiskBus::Ide => "ide",
            DiskBus::Scsi => "scsi",
        }
    }
    /// Target device prefix libvirt expects for the bus.
    pub fn dev_prefix(&self) -> &'static str {
        match self {
            DiskBus::Virtio => "vd",
            DiskBus::Ide => "hd",
            DiskBus::Sata | DiskBus::Scsi => "sd",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    /// PXE first (then disk, so an installed guest still boots when the boot server says nothing).
    Network,
    Disk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestFirmware {
    Bios,
    Uefi,
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
    pub mac: Mac,
    pub mtu: Option<u16>,
    /// Host ports to enslave (mode = bridge only).
    pub interfaces: Vec<String>,
    pub dhcp: Option<Dhcp>,
    pub pxe: Option<Pxe>,
    /// The network's DNS server; None when it does not run.
    pub dns: Option<Dns>,
    /// `[[network.forward]]` (nat and routed networks only).
    pub forwards: Vec<Forward>,
    /// `address6` and what goes with it (nat, routed and isolated networks only).
    pub ipv6: Option<Ipv6>,
}

/// A network's IPv6: the bridge's address, router advertisements, DHCPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6 {
    /// Gateway address with the guests' prefix length.
    pub address: Ipv6Net,
    /// nat only: masquerade the prefix (default: forwarded untranslated, as libvirt does).
    pub nat6: bool,
    /// `[network.ra]` interval bounds; None when `enable = false`.
    pub ra: Option<ra::Intervals>,
    /// `[network.dhcp6]`, when configured.
    pub dhcp6: Option<Dhcp6>,
}

/// `[network.dhcp6]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp6 {
    /// Inclusive range inside the prefix, not covering the gateway; None: stateless
    /// (information only, plus the static hosts).
    pub range: Option<(std::net::Ipv6Addr, std::net::Ipv6Addr)>,
    /// Valid and preferred lifetime of an address.
    pub lease_time: Duration,
    pub rapid_commit: bool,
    pub hosts: Vec<Dhcp6Host>,
}

/// `[[network.dhcp6.host]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp6Host {
    pub id: pxe::config::Host6Id,
    /// Inside the prefix, not the gateway.
    pub ip: std::net::Ipv6Addr,
    pub name: Option<String>,
}

impl Dhcp6 {
    /// Which DHCPv6 this is, for the RA's M and O flags.
    pub fn mode(&self) -> ra::Dhcp6Mode {
        if self.range.is_some() || !self.hosts.is_empty() {
            ra::Dhcp6Mode::Stateful
        } else {
            ra::Dhcp6Mode::Stateless
        }
    }
}

/// A host port forwarded to a guest of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub proto: netcfg::Proto,
    /// None: every address of the host.
    pub host_address: Option<Ipv4Addr>,
    pub host_port: u16,
    /// Inside the network's subnet (a guest's reservation when `guest` is set).
    pub to: Ipv4Addr,
    pub to_port: u16,
    /// The guest the target address came from.
    pub guest: Option<String>,
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
    /// Option 42.
    pub ntp: Vec<Ipv4Addr>,
    /// Option 121 (see `pxe::config::DhcpConfig::routes`).
    pub routes: Vec<Route>,
    pub hosts: Vec<StaticHost>,
}

/// A classless static route: `to` (no host bits) through `via` (a host of the subnet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub to: Ipv4Net,
    pub via: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticHost {
    pub mac: Mac,
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
    /// proxyDHCP (no `[network.dhcp]` then): answer PXE clients with boot information only.
    pub proxy: bool,
    /// PXELINUX options 209–211.
    pub pxelinux_config: Option<String>,
    pub pxelinux_path_prefix: Option<String>,
    pub pxelinux_reboot: Option<Duration>,
}

/// `[network.dns]` of a network whose DNS server runs (on its gateway, port 53).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// Local names are answered under it (`bastion.default`) and bare (`bastion`).
    pub domain: String,
    pub upstream: Upstream,
    /// Queries per second one source address may send (bursts of twice that); 0 = no limit.
    pub rate_limit: u32,
    /// `[[network.dns.host]]`, in config order.
    pub hosts: Vec<DnsHost>,
}

/// `[network.dns] rate_limit` when left out: the dns crate's default, far above what a guest's
/// resolver sends.
pub(crate) const DEFAULT_DNS_RATE_LIMIT: u32 = 200;
/// The accepted `rate_limit` values besides 0 (off).
pub(crate) const DNS_RATE_LIMIT_RANGE: std::ops::RangeInclusive<u32> = 10..=1_000_000;

/// Where a network's DNS server sends the names that are not its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The host's resolvers: ROOT/etc/resolv.conf, or systemd-resolved's upstream list when it
    /// names only loopback stubs; read when the server starts (and on every reload).
    HostResolvers,
    /// `forwarders = [...]`, tried in order.
    Forwarders(Vec<SocketAddr>),
    /// Only the local names: an isolated network without `forwarders` is not a way out.
    LocalOnly,
}

/// One `[[network.dns.host]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsHost {
    /// A host name (`nas`) or several labels (`api.k8s`), relative to the domain or qualified
    /// with it.
    pub name: String,
    pub ip: IpAddr,
}
