//! The config file as written: serde types that mirror the TOML exactly, with positions kept
//! (`Spanned`) for every value a later check may complain about. Values whose syntax we check
//! ourselves (modes, addresses, MACs, durations) stay strings here, so that one bad value does not
//! stop the parse and every problem in the file can be reported together. Nothing here is trusted;
//! `validate` turns it into the model.
//!
//! Sections still to come ([libvirt], [[guest]]) become new optional fields of `File`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub state_dir: Option<S<String>>,
    pub sysctl: Option<BTreeMap<S<String>, S<SysctlValue>>>,
    pub vhost_net: Option<VhostNet>,
    pub dhcp: Option<S<GlobalDhcp>>,
    #[serde(default)]
    pub network: Vec<S<Network>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostNet {
    pub experimental_zcopytx: Option<bool>,
}

/// `[dhcp]`: defaults for every network's `[network.dhcp]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalDhcp {
    pub dns: Option<Vec<S<String>>>,
    pub domain: Option<S<String>>,
    pub lease_time: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDhcp {
    pub range: S<String>,
    pub lease_time: Option<S<String>>,
    pub dns: Option<Vec<S<String>>>,
    pub domain: Option<S<String>>,
    #[serde(default)]
    pub host: Vec<S<StaticHost>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticHost {
    pub mac: S<String>,
    pub ip: S<String>,
    pub name: Option<S<String>>,
    pub boot: Option<S<String>>,
    pub script: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pxe {
    pub root: S<String>,
    pub bios: Option<S<String>>,
    pub uefi: Option<S<String>>,
    pub arm64: Option<S<String>>,
    pub script: Option<S<String>>,
    pub http_port: Option<S<i64>>,
}

/// A sysctl value: TOML integer or string (booleans are not accepted: the kernel wants 0/1).
/// An unquoted dotted key (`vm.max_map_count = 1`) is a nested table in TOML; `Table` keeps it so
/// validation can join the parts back into the dotted name.
#[derive(Debug, PartialEq, Eq)]
pub enum SysctlValue {
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
