//! Kernel settings through plain file I/O on /proc/sys (the `sysctl` crate is hard-wired to the
//! real /proc and cannot reach interface names with a dot). Paths come from [`Host::sysctl_path`]:
//! net.* is the real, per-namespace /proc/sys; host-wide keys go under the root prefix.

use crate::error::Error;
use crate::model::{Desired, Host, Mode, NetworkSpec};

/// The key the agent turns on for nat/routed networks.
pub const IP_FORWARD: &str = "net.ipv4.ip_forward";

/// IPv6 forwarding, turned on for nat/routed networks with an IPv6 address. (`all` also sets
/// every interface's own `forwarding`, which is what the kernel's router behaviour reads.)
pub const IPV6_FORWARD: &str = "net.ipv6.conf.all.forwarding";

/// Prefixes of the per-interface key families, where the part after the prefix up to the last
/// dot is an interface name (which may itself contain dots).
const INTERFACE_KEYS: [&str; 4] = [
    "net.ipv4.conf.",
    "net.ipv6.conf.",
    "net.ipv4.neigh.",
    "net.ipv6.neigh.",
];

/// `net.ipv6.conf.eth0.100.accept_ra` → ("net.ipv6.conf", "eth0.100", "accept_ra"); None for a
/// key that names no interface.
pub fn split_interface_key(key: &str) -> Option<(&str, &str, &str)> {
    let prefix = INTERFACE_KEYS.iter().find(|p| key.starts_with(*p))?;
    let rest = &key[prefix.len()..];
    let (interface, leaf) = rest.rsplit_once('.')?;
    if interface.is_empty() || leaf.is_empty() {
        return None;
    }
    Some((&prefix[..prefix.len() - 1], interface, leaf))
}

/// The per-interface settings a network's bridge gets: with an IPv6 address, IPv6 is on
/// (`disable_ipv6 = 0`, the host may disable it by default) and the bridge does not accept
/// router advertisements (`accept_ra = 0`: the host is the router on that LAN, and a guest's
/// RA must never configure it). Keys of a bridge the plan creates exist only once it does. A
/// key `[sysctl]` names is left to `[sysctl]`.
pub fn bridge_wanted(desired: &Desired, n: &NetworkSpec) -> Vec<(String, String)> {
    if n.ipv6.is_none() || n.mode == Mode::Bridge {
        return Vec::new();
    }
    ["disable_ipv6", "accept_ra"]
        .into_iter()
        .map(|leaf| {
            (
                format!("net.ipv6.conf.{}.{leaf}", n.bridge),
                "0".to_string(),
            )
        })
        .filter(|(k, _)| !desired.sysctls.contains_key(k))
        .collect()
}

/// The keys the agent sets for its networks (not from `[sysctl]`): `down` restores each.
pub fn for_networks(desired: &Desired) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if desired.networks.iter().any(|n| n.mode.forwards()) {
        out.push((IP_FORWARD.to_string(), "1".to_string()));
    }
    if desired
        .networks
        .iter()
        .any(|n| n.mode.forwards() && n.ipv6.is_some())
    {
        out.push((IPV6_FORWARD.to_string(), "1".to_string()));
    }
    out.extend(
        desired
            .networks
            .iter()
            .flat_map(|n| bridge_wanted(desired, n)),
    );
    out.retain(|(k, _)| !desired.sysctls.contains_key(k));
    out
}

/// Values as the kernel prints them differ in whitespace from what users write
/// ("0\t65535" vs "0 65535"): compare word by word.
pub fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Current value of a key, None when the key does not exist.
pub fn read(host: &Host, key: &str) -> Result<Option<String>, Error> {
    let path = host.sysctl_path(key);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(normalize(&s))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Write a key's value. The file must exist: a missing /proc entry is an unknown key, and
/// creating a plain file in its place would hide the mistake.
pub fn write(host: &Host, key: &str, value: &str) -> Result<(), Error> {
    let path = host.sysctl_path(key);
    if !path.exists() {
        return Err(Error::NoSuchSysctl {
            key: key.to_string(),
            path,
        });
    }
    std::fs::write(&path, format!("{value}\n")).map_err(|e| Error::io(path, e))
}

/// The live values the desired state wants: the networks' ([`for_networks`]: ip_forward = 1
/// when any network forwards (nat/routed), as libvirt does, IPv6 forwarding likewise, and each
/// IPv6 bridge's own settings), then `[sysctl]`, which wins where both name a key.
pub fn wanted(desired: &Desired) -> Vec<(String, String)> {
    let mut out = for_networks(desired);
    out.extend(
        desired
            .sysctls
            .iter()
            .map(|(k, v)| (k.clone(), normalize(v))),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_under_root_for_host_wide_keys() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path(), "/var/lib/hostagent");
        assert_eq!(read(&host, "vm.max_map_count").unwrap(), None);
        assert!(matches!(
            write(&host, "vm.max_map_count", "1"),
            Err(Error::NoSuchSysctl { .. })
        ));
        let p = host.sysctl_path("vm.max_map_count");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "65530\n").unwrap();
        assert_eq!(
            read(&host, "vm.max_map_count").unwrap().as_deref(),
            Some("65530")
        );
        write(&host, "vm.max_map_count", "262144").unwrap();
        assert_eq!(
            read(&host, "vm.max_map_count").unwrap().as_deref(),
            Some("262144")
        );
    }

    #[test]
    fn interface_keys_keep_dotted_names_whole() {
        assert_eq!(
            split_interface_key("net.ipv6.conf.eth0.100.accept_ra"),
            Some(("net.ipv6.conf", "eth0.100", "accept_ra"))
        );
        assert_eq!(
            split_interface_key("net.ipv4.conf.all.rp_filter"),
            Some(("net.ipv4.conf", "all", "rp_filter"))
        );
        for other in [
            "net.ipv4.ip_forward",
            "vm.swappiness",
            "net.ipv6.conf.",
            "net.ipv6.conf.x",
        ] {
            assert_eq!(split_interface_key(other), None, "{other}");
        }
    }

    #[test]
    fn normalize_ignores_kernel_tabs() {
        assert_eq!(normalize("0\t2147483647\n"), "0 2147483647");
    }
}
