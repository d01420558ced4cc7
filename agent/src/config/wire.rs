//! The config file as written: serde types that mirror the TOML exactly, with positions kept
//! (`Spanned`) for every value a later check may complain about. Values whose syntax we check
//! ourselves (modes, addresses, MACs, durations) stay strings here, so that one bad value does not
//! stop the parse and every problem in the file can be reported together. Nothing here is trusted;
//! `validate` turns it into the model.
//!
//! `[libvirt]` and `[[guest]]` describe the guests the agent defines in libvirt.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

pub(super) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub state_dir: Option<S<String>>,
    pub sysctl: Option<BTreeMap<S<String>, S<SysctlValue>>>,
    pub vhost_net: Option<VhostNet>,
    pub dhcp: Option<S<GlobalDhcp>>,
    #[serde(default)]
    pub network: Vec<S<Network>>,
    pub libvirt: Option<S<Libvirt>>,
    #[serde(default)]
    pub guest: Vec<S<Guest>>,
    pub firewall: Option<S<Firewall>>,
    pub leases: Option<S<Leases>>,
}

/// `[leases]`: where the DHCP servers keep their leases, and this agent's name there.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Leases {
    /// "journal" (default) or "postgres".
    pub backend: Option<S<String>>,
    /// postgres: `postgres://…` / `postgresql://…`.
    pub url: Option<S<String>>,
    /// This agent's name on every lease it grants (default: the host name).
    pub agent: Option<S<String>>,
    /// postgres: connections in the pool.
    pub pool_size: Option<S<i64>>,
    /// postgres: how long to wait for a connection, a duration.
    pub connect_timeout: Option<S<String>>,
    /// postgres: how long one statement may take, a duration.
    pub timeout: Option<S<String>>,
}

/// `[firewall]`: how the agent lives with other firewalls on the host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Firewall {
    /// "auto" (default) or "off".
    pub coexist: Option<S<String>>,
}

/// `[libvirt]`: where guests are defined and how much overcommit `check` tolerates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Libvirt {
    pub uri: Option<S<String>>,
    /// "kvm" or "qemu" (TCG), as virt-install's --virt-type.
    pub virt_type: Option<S<String>>,
    /// The storage pool guests' disks are volumes of.
    pub pool: Option<S<String>>,
    /// Warn when defined guests' vCPUs exceed this many per host CPU.
    pub cpu_overcommit: Option<S<f64>>,
    /// Warn when defined guests' memory exceeds this multiple of host memory.
    pub memory_overcommit: Option<S<f64>>,
    /// `[[libvirt.host]]`: other libvirt daemons (KVM hosts) guests may be placed on.
    #[serde(default)]
    pub host: Vec<S<LibvirtHost>>,
}

/// `[[libvirt.host]]`: a libvirt daemon reached by its URI (`qemu+ssh://root@kvm2/system`,
/// `qemu+tcp://…`), named for `[[guest]] host`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LibvirtHost {
    pub name: S<String>,
    pub uri: S<String>,
}

/// `[[guest]]`: one guest, or `count` guests named NAME-1 … NAME-N.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Guest {
    pub name: S<String>,
    pub count: Option<S<i64>>,
    pub network: S<String>,
    pub vcpus: Option<S<i64>>,
    pub memory: Option<S<String>>,
    pub disk: Option<S<GuestDisk>>,
    pub boot: Option<S<String>>,
    pub firmware: Option<S<String>>,
    pub vhost: Option<bool>,
    /// Instead of the MAC derived from the name: to settle a collision, or to keep a MAC.
    pub mac: Option<S<PerGuest>>,
    pub ip: Option<S<PerGuest>>,
    pub script: Option<S<String>>,
    pub autostart: Option<bool>,
    /// A `[[libvirt.host]]` name; without it the guest is defined through `[libvirt] uri`.
    pub host: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GuestDisk {
    pub size: Option<S<String>>,
    pub format: Option<S<String>>,
    pub bus: Option<S<String>>,
    pub path: Option<S<String>>,
    pub backing: Option<S<String>>,
}

/// A per-instance value of a `[[guest]]`: `"auto"`, one value (`ip = "10.0.0.5"`) or a list with
/// one entry per guest of the `count` (`ip = ["10.0.0.5", "auto"]`).
#[derive(Debug)]
pub(super) enum PerGuest {
    One(String),
    List(Vec<S<String>>),
}

impl<'de> Deserialize<'de> for PerGuest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PerGuest;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\", a value, or a list with one value per guest")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PerGuest, E> {
                Ok(PerGuest::One(v.to_owned()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<PerGuest, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<S<String>>()? {
                    out.push(s);
                }
                Ok(PerGuest::List(out))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VhostNet {
    pub experimental_zcopytx: Option<bool>,
}

/// `[dhcp]`: defaults for every network's `[network.dhcp]`, and the host-wide per-port limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GlobalDhcp {
    pub dns: Option<Vec<S<String>>>,
    pub domain: Option<S<String>>,
    pub lease_time: Option<S<String>>,
    /// DHCP packets per second one bridge port may send to the host; 0 = no limit.
    pub port_rate_limit: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Network {
    pub name: S<String>,
    pub mode: S<String>,
    pub bridge: S<String>,
    pub address: Option<S<String>>,
    pub stp: Option<bool>,
    pub forward_delay: Option<S<i64>>,
    pub mac: Option<S<String>>,
    pub mtu: Option<S<i64>>,
    pub interfaces: Option<S<Vec<S<String>>>>,
    pub dhcp: Option<S<NetworkDhcp>>,
    pub pxe: Option<S<Pxe>>,
    /// IPv6 (validated in `validate::ipv6`): the gateway address with prefix on the bridge.
    pub address6: Option<S<String>>,
    /// nat mode: masquerade the IPv6 prefix too.
    pub nat6: Option<S<bool>>,
    /// `[network.ra]`: router advertisements on the bridge.
    pub ra: Option<S<NetworkRa>>,
    /// `[network.dhcp6]`: its presence (and `range`) decides the RA's M/O flags.
    pub dhcp6: Option<S<NetworkDhcp6>>,
    pub dns: Option<S<NetworkDns>>,
    /// `[[network.forward]]`: host ports forwarded to guests (validated in `validate::forward`).
    #[serde(default)]
    pub forward: Vec<S<Forward>>,
}

/// `[[network.forward]]`: `proto`, `host_port`, optional `host_address`, and the target: either
/// `to = "ADDR:PORT"` or `guest = "NAME"` (that guest's reservation) with optional `guest_port`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Forward {
    pub proto: S<String>,
    pub host_port: S<i64>,
    pub host_address: Option<S<String>>,
    pub to: Option<S<String>>,
    pub guest: Option<S<String>>,
    pub guest_port: Option<S<i64>>,
}

/// `[network.ra]`: `enable` (default true) and the unsolicited interval bounds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NetworkRa {
    pub enable: Option<bool>,
    pub min_interval: Option<S<String>>,
    pub max_interval: Option<S<String>>,
}

/// `[network.dhcp6]`: stateful with `range` (the RA sets M and O), stateless without (O).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NetworkDhcp6 {
    pub range: Option<S<String>>,
    pub lease_time: Option<S<String>>,
    /// Answer a Solicit with Rapid Commit (option 14) by a committed Reply.
    pub rapid_commit: Option<S<bool>>,
    #[serde(default)]
    pub host: Vec<S<Dhcp6Host>>,
}

/// `[[network.dhcp6.host]]`: `duid` or `mac`, the address, an optional name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Dhcp6Host {
    pub duid: Option<S<String>>,
    pub mac: Option<S<String>>,
    pub ip: S<String>,
    pub name: Option<S<String>>,
}

/// `[network.dns]`: the network's DNS server on its gateway.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NetworkDns {
    pub enable: Option<S<bool>>,
    pub domain: Option<S<String>>,
    /// `"IP"` or `"IP:PORT"` (`"[IPv6]:PORT"`): where names outside the domain go instead of the
    /// host's resolvers.
    pub forwarders: Option<S<Vec<S<String>>>>,
    /// Queries per second one guest address may send; 0 = no limit.
    pub rate_limit: Option<S<i64>>,
    #[serde(default)]
    pub host: Vec<S<DnsHost>>,
}

/// `[[network.dns.host]]`: one extra name → address record.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DnsHost {
    pub name: S<String>,
    pub ip: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NetworkDhcp {
    pub range: S<String>,
    pub lease_time: Option<S<String>>,
    pub dns: Option<Vec<S<String>>>,
    pub domain: Option<S<String>>,
    /// Option 42.
    pub ntp: Option<Vec<S<String>>>,
    /// Option 121: `routes = [{ to = "10.20.0.0/16", via = "10.77.0.254" }]`.
    pub routes: Option<Vec<S<Route>>>,
    #[serde(default)]
    pub host: Vec<S<StaticHost>>,
}

/// One classless static route handed to DHCP clients.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Route {
    pub to: S<String>,
    pub via: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StaticHost {
    pub mac: S<String>,
    pub ip: S<String>,
    pub name: Option<S<String>>,
    pub boot: Option<S<String>>,
    pub script: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Pxe {
    pub root: S<String>,
    pub bios: Option<S<String>>,
    pub uefi: Option<S<String>>,
    pub arm64: Option<S<String>>,
    pub script: Option<S<String>>,
    pub http_port: Option<S<i64>>,
    /// proxyDHCP: boot information only, another server hands out the addresses.
    pub proxy: Option<S<bool>>,
    /// PXELINUX option 209 (config file).
    pub pxelinux_config: Option<S<String>>,
    /// PXELINUX option 210 (path prefix).
    pub pxelinux_path_prefix: Option<S<String>>,
    /// PXELINUX option 211 (reboot time), a duration.
    pub pxelinux_reboot: Option<S<String>>,
}

/// A sysctl value: TOML integer or string (booleans are not accepted: the kernel wants 0/1).
/// An unquoted dotted key (`vm.max_map_count = 1`) is a nested table in TOML; `Table` keeps it so
/// validation can join the parts back into the dotted name.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SysctlValue {
    Integer(i64),
    Text(String),
    Table(BTreeMap<S<String>, S<SysctlValue>>),
}

impl<'de> Deserialize<'de> for SysctlValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SysctlValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SysctlValue, E> {
                Ok(SysctlValue::Integer(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SysctlValue, E> {
                i64::try_from(v)
                    .map(SysctlValue::Integer)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SysctlValue, E> {
                Ok(SysctlValue::Text(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<SysctlValue, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<S<String>, S<SysctlValue>>()? {
                    out.insert(k, v);
                }
                Ok(SysctlValue::Table(out))
            }
        }
        deserializer.deserialize_any(V)
    }
}
