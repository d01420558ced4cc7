//! Host checks in the spirit of `virt-host-validate`: can this machine run KVM guests on the
//! networks the agent makes? Device nodes are always the real ones; /sys/module, /proc/cpuinfo
//! and the modprobe.d file go through the root prefix so tests can fake a module tree.

use std::path::Path;

use serde::Serialize;

use crate::error::Error;
use crate::files;
use crate::model::Host;
use crate::nft::{self, NftError};
use crate::sysctl;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do about a Warn/Fail (empty on Pass).
    pub hint: String,
}

fn result(
    name: &str,
    status: Status,
    detail: impl Into<String>,
    hint: impl Into<String>,
) -> CheckResult {
    CheckResult {
        name: name.to_string(),
        status,
        detail: detail.into(),
        hint: hint.into(),
    }
}

fn pass(name: &str, detail: impl Into<String>) -> CheckResult {
    result(name, Status::Pass, detail, "")
}

/// Where a kernel module stands.
#[derive(Debug, PartialEq, Eq)]
enum ModuleState {
    Loaded,
    BuiltIn,
    Absent,
}

fn module_state(host: &Host, name: &str) -> ModuleState {
    if host.path(format!("/sys/module/{name}")).exists() {
        return ModuleState::Loaded;
    }
    let release = uname_release();
    let builtin = host.path(format!("/lib/modules/{release}/modules.builtin"));
    if let Ok(list) = std::fs::read_to_string(builtin) {
        let file = format!("/{name}.ko");
        if list
            .lines()
            .any(|l| l.ends_with(&file) || l.ends_with(&format!("/{}.ko", name.replace('_', "-"))))
        {
            return ModuleState::BuiltIn;
        }
    }
    ModuleState::Absent
}

fn uname_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn check_module(host: &Host, name: &str, label: &str, missing: Status) -> CheckResult {
    match module_state(host, name) {
        ModuleState::Loaded => pass(label, format!("module {name} is loaded")),
        ModuleState::BuiltIn => pass(label, format!("{name} is built into the kernel")),
        ModuleState::Absent => result(
            label,
            missing,
            format!("module {name} is not loaded and not built in"),
            format!("modprobe {name} (and add it to /etc/modules-load.d/)"),
        ),
    }
}

fn cpu_flags(host: &Host) -> (bool, bool) {
    let text = std::fs::read_to_string(host.path("/proc/cpuinfo"))
        .or_else(|_| std::fs::read_to_string("/proc/cpuinfo"))
        .unwrap_or_default();
    let flags = text.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    (has("vmx"), has("svm"))
}

fn device_rw(path: &str) -> Result<(), std::io::Error> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(|_| ())
}

fn check_device(path: &str, label: &str, missing: Status, hint: &str) -> CheckResult {
    match device_rw(path) {
        Ok(()) => pass(label, format!("{path} opens read-write")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            result(label, missing, format!("{path} does not exist"), hint)
        }
        Err(e) => result(label, missing, format!("{path}: {e}"), hint),
    }
}

fn check_nested(host: &Host, vendor_module: Option<&str>) -> CheckResult {
    let label = "nested virtualization";
    let Some(m) = vendor_module else {
        return result(
            label,
            Status::Warn,
            "no kvm_intel/kvm_amd module to ask",
            "",
        );
    };
    match std::fs::read_to_string(host.path(format!("/sys/module/{m}/parameters/nested"))) {
        Ok(v) if matches!(v.trim(), "Y" | "1") => pass(label, format!("{m} nested=Y")),
        Ok(v) => result(
            label,
            Status::Warn,
            format!("{m} nested={}", v.trim()),
            format!("options {m} nested=1 in /etc/modprobe.d/ to run hypervisors inside guests"),
        ),
        Err(_) => result(
            label,
            Status::Warn,
            format!("{m} reports no nested parameter"),
            "",
        ),
    }
}

fn check_nft() -> CheckResult {
    let label = "nftables";
    match nft::list_tables() {
        Ok(_) => pass(label, "nft runs and lists tables"),
        Err(Error::Nft(e @ NftError::Missing)) => result(
            label,
            Status::Fail,
            e.to_string(),
            "apt-get install nftables",
        ),
        Err(Error::Nft(NftError::Failed { stderr, .. } | NftError::Absent { stderr, .. })) => {
            result(
                label,
                Status::Fail,
                format!("nft list tables failed: {}", stderr.trim()),
                "run as root; the kernel needs nf_tables",
            )
        }
        Err(e) => result(label, Status::Fail, format!("cannot run nft: {e}"), ""),
    }
}

fn check_ip_forward(host: &Host) -> CheckResult {
    let label = "ip forwarding";
    match sysctl::read(host, sysctl::IP_FORWARD) {
        Ok(Some(v)) if v == "1" => pass(label, "net.ipv4.ip_forward = 1"),
        Ok(Some(v)) => result(
            label,
            Status::Warn,
            format!("net.ipv4.ip_forward = {v}"),
            "hostagent apply turns it on when a network is nat or routed",
        ),
        Ok(None) => result(
            label,
            Status::Fail,
            "net.ipv4.ip_forward missing",
            "kernel without IPv4?",
        ),
        Err(e) => result(label, Status::Fail, e.to_string(), ""),
    }
}

/// The live vhost_net option against the modprobe.d file, when both are known.
fn check_vhost_option(host: &Host) -> Option<CheckResult> {
    let label = "vhost_net zerocopy";
    let content = std::fs::read_to_string(host.path(files::VHOST_CONF)).ok()?;
    let wanted = files::configured_vhost_zcopytx(&content)?;
    match files::live_vhost_zcopytx(host) {
        None => Some(pass(
            label,
            format!(
                "{} sets {}; applies when vhost_net loads",
                files::VHOST_CONF,
                u8::from(wanted)
            ),
        )),
        Some(live) if live == wanted => Some(pass(
            label,
            format!("experimental_zcopytx={}", u8::from(live)),
        )),
        Some(_) => files::vhost_reload_note(host, wanted).map(|note| {
            result(
                label,
                Status::Warn,
                note,
                "modprobe -r vhost_net && modprobe vhost_net (stop guests first)",
            )
        }),
    }
}

/// Run every check; none of them changes the host.
pub fn check(host: &Host) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let (vmx, svm) = cpu_flags(host);
    out.push(if vmx || svm {
        pass(
            "hardware virtualization",
            if vmx {
                "CPU has vmx (Intel VT-x)"
            } else {
                "CPU has svm (AMD-V)"
            },
        )
    } else {
        result(
            "hardware virtualization",
            Status::Warn,
            "CPU shows neither vmx nor svm",
            "enable VT-x/AMD-V in the firmware; guests fall back to slow TCG emulation",
        )
    });
    out.push(check_device(
        "/dev/kvm",
        "/dev/kvm",
        Status::Fail,
        "modprobe kvm_intel (or kvm_amd); check the firmware settings",
    ));
    out.push(check_module(host, "kvm", "kvm module", Status::Warn));
    let vendor = if vmx {
        Some("kvm_intel")
    } else if svm {
        Some("kvm_amd")
    } else {
        None
    };
    if let Some(v) = vendor {
        out.push(check_module(host, v, &format!("{v} module"), Status::Warn));
    }
    out.push(check_nested(host, vendor));
    out.push(check_device(
        "/dev/net/tun",
        "/dev/net/tun",
        Status::Fail,
        "modprobe tun",
    ));
    out.push(check_module(
        host,
        "vhost_net",
        "vhost_net module",
        Status::Warn,
    ));
    out.push(check_device(
        "/dev/vhost-net",
        "/dev/vhost-net",
        Status::Warn,
        "modprobe vhost_net (guests fall back to slower userspace virtio-net without it)",
    ));
    if let Some(r) = check_vhost_option(host) {
        out.push(r);
    }
    out.push(match module_state(host, "bridge") {
        ModuleState::Absent if !Path::new("/sys/class/net").exists() => result(
            "bridge support",
            Status::Fail,
            "no bridge module and no /sys/class/net",
            "modprobe bridge",
        ),
        ModuleState::Absent => result(
            "bridge support",
            Status::Warn,
            "bridge module not seen (it may load on first use)",
            "modprobe bridge",
        ),
        _ => pass("bridge support", "bridge module present"),
    });
    out.push(check_nft());
    out.push(check_ip_forward(host));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_module_tree_is_seen_and_mismatched_vhost_option_warns() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path(), "/var/lib/hostagent");
        let by_name = |rs: &[CheckResult], n: &str| rs.iter().find(|r| r.name == n).cloned();
        let before = check(&host);
        assert_eq!(
            by_name(&before, "vhost_net module").unwrap().status,
            Status::Warn
        );
        assert!(by_name(&before, "vhost_net zerocopy").is_none());

        let param = host.path(files::VHOST_PARAM);
        std::fs::create_dir_all(param.parent().unwrap()).unwrap();
        std::fs::write(&param, "N\n").unwrap();
        files::write_atomic(
            &host.path(files::VHOST_CONF),
            files::render_vhost_conf(Some(true)).unwrap().as_bytes(),
        )
        .unwrap();
        let after = check(&host);
        assert_eq!(
            by_name(&after, "vhost_net module").unwrap().status,
            Status::Pass
        );
        let z = by_name(&after, "vhost_net zerocopy").unwrap();
        assert_eq!(z.status, Status::Warn);
        assert!(z.detail.contains("reload"), "{z:?}");
    }
}
