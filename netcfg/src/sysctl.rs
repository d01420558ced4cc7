//! Kernel settings through plain file I/O on /proc/sys (the `sysctl` crate is hard-wired to the
//! real /proc and cannot reach interface names with a dot). Paths come from [`Host::sysctl_path`]:
//! net.* is the real, per-namespace /proc/sys; host-wide keys go under the root prefix.

use crate::error::Error;
use crate::model::{Desired, Host};

/// The key the agent turns on for nat/routed networks.
pub const IP_FORWARD: &str = "net.ipv4.ip_forward";

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

/// The live values the desired state wants: `[sysctl]`, plus ip_forward = 1 when any network
/// forwards (nat/routed), as libvirt does.
pub fn wanted(desired: &Desired) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = desired
        .sysctls
        .iter()
        .map(|(k, v)| (k.clone(), normalize(v)))
        .collect();
    if desired.networks.iter().any(|n| n.mode.forwards())
        && !desired.sysctls.contains_key(IP_FORWARD)
    {
        out.insert(0, (IP_FORWARD.to_string(), "1".to_string()));
    }
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
    fn normalize_ignores_kernel_tabs() {
        assert_eq!(normalize("0\t2147483647\n"), "0 2147483647");
    }
}
