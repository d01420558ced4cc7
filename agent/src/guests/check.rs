//! The libvirt half of `check`: is the daemon there, can its QEMU driver run guests (KVM or only
//! TCG), and how far do the defined guests overcommit the host's CPUs and memory.

use netcfg::check::{CheckResult, Status};

use super::conn::{self, Conn};
use super::kvm_access;
use crate::config::{Guest, Libvirt, VirtType};

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

/// Guest totals against the host, for the overcommit check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    pub guest_vcpus: u64,
    pub guest_memory_kib: u64,
    pub host_cpus: u64,
    pub host_memory_kib: u64,
}

/// PASS below the configured ratio, WARN above it.
pub fn overcommit(load: Load, cpu_percent: u32, memory_percent: u32) -> Vec<CheckResult> {
    let ratio = |a: u64, b: u64| {
        if b == 0 {
            f64::INFINITY
        } else {
            a as f64 / b as f64
        }
    };
    let cpu = ratio(load.guest_vcpus, load.host_cpus);
    let mem = ratio(load.guest_memory_kib, load.host_memory_kib);
    let cpu_max = f64::from(cpu_percent) / 100.0;
    let mem_max = f64::from(memory_percent) / 100.0;
    let cpu_detail = format!(
        "{} guest vCPUs on {} host CPUs ({cpu:.2}x, warn above {cpu_max:.2}x)",
        load.guest_vcpus, load.host_cpus
    );
    let mem_detail = format!(
        "{} MiB of guest memory on {} MiB ({mem:.2}x, warn above {mem_max:.2}x)",
        load.guest_memory_kib / 1024,
        load.host_memory_kib / 1024
    );
    vec![
        if cpu > cpu_max {
            result(
                "libvirt cpu overcommit",
                Status::Warn,
                cpu_detail,
                "fewer or smaller guests, or raise [libvirt] cpu_overcommit if the load was tested",
            )
        } else {
            result("libvirt cpu overcommit", Status::Pass, cpu_detail, "")
        },
        if mem > mem_max {
            result("libvirt memory overcommit", Status::Warn, mem_detail, "guests may be swapped or killed under load: give them less memory, or raise [libvirt] memory_overcommit if that was tested")
        } else {
            result("libvirt memory overcommit", Status::Pass, mem_detail, "")
        },
    ]
}

fn checks_blocking(c: &Conn, libvirt: &Libvirt, guests: &[Guest]) -> Vec<CheckResult> {
    let mut out = vec![result(
        "libvirt daemon",
        Status::Pass,
        format!("{} answers", c.uri),
        "",
    )];
    let caps = |virt: &str| c.domain_capabilities(virt);
    match caps("qemu") {
        Ok(_) => out.push(result(
            "libvirt qemu driver",
            Status::Pass,
            "can run x86_64 guests (TCG at least)",
            "",
        )),
        Err(e) => out.push(result(
            "libvirt qemu driver",
            Status::Fail,
            format!("no usable QEMU: {}", libvirt_message(&e)),
            "install libvirt-daemon-driver-qemu and qemu-system-x86",
        )),
    }
    let kvm = caps("kvm");
    let wants_kvm = libvirt.virt_type == VirtType::Kvm && !guests.is_empty();
    out.push(match (&kvm, wants_kvm) {
        (Ok(_), _) => match qemu_blocked_from_kvm(c) {
            None => result("libvirt kvm", Status::Pass, "KVM acceleration available", ""),
            Some(why) => result(
                "libvirt kvm",
                if wants_kvm { Status::Fail } else { Status::Warn },
                format!("libvirt reports KVM, but {why}: KVM guests fail to start (\"Could not access KVM kernel module: Permission denied\"), and libvirtd probes QEMU again on nearly every call (seconds each, for any guest)"),
                "give /dev/kvm the group kvm and mode 0660, as udev's 50-udev-default.rules does: chgrp kvm /dev/kvm && chmod 0660 /dev/kvm, and keep it so at boot (install udev, or a tmpfiles.d line \"z /dev/kvm 0660 root kvm\")",
            ),
        },
        (Err(e), true) => result(
            "libvirt kvm",
            Status::Fail,
            format!("guests ask for virt_type = \"kvm\" but libvirt cannot use KVM: {}", libvirt_message(e)),
            "enable virtualization in the firmware and load kvm_intel/kvm_amd, or set [libvirt] virt_type = \"qemu\" (TCG, much slower)",
        ),
        (Err(e), false) => result(
            "libvirt kvm",
            Status::Warn,
            format!("only TCG emulation: {}", libvirt_message(e)),
            "enable virtualization in the firmware and load kvm_intel/kvm_amd for full speed",
        ),
    });
    match load(c, guests) {
        Ok(l) => out.extend(overcommit(
            l,
            libvirt.cpu_overcommit_percent,
            libvirt.memory_overcommit_percent,
        )),
        Err(e) => out.push(result(
            "libvirt overcommit",
            Status::Warn,
            format!("cannot read the guests: {e}"),
            "check the libvirt daemon's log",
        )),
    }
    out
}

/// Why the guests' QEMU cannot open /dev/kvm, for a libvirtd on this host (None: it can, or
/// libvirtd is elsewhere, or it does not say whom it runs QEMU as).
fn qemu_blocked_from_kvm(c: &Conn) -> Option<String> {
    if !is_local(&c.uri) {
        return None;
    }
    let (uid, gid) = kvm_access::qemu_ids(&c.capabilities().ok()?)?;
    kvm_access::blocked(
        std::path::Path::new(kvm_access::KVM_DEVICE),
        &kvm_access::QemuUser::lookup(uid, gid),
    )
}

/// A URI without a host part (`qemu:///system`, `qemu+unix:///system?socket=…`): the daemon
/// shares this host's /dev and user database.
fn is_local(uri: &str) -> bool {
    uri.split_once("://")
        .is_some_and(|(_, rest)| rest.starts_with('/'))
}

/// Every defined guest, plus the config's guests not defined yet (they will be).
fn load(c: &Conn, guests: &[Guest]) -> conn::Result<Load> {
    let (cpus, memory_kib) = c.node_info()?;
    let mut l = Load {
        guest_vcpus: 0,
        guest_memory_kib: 0,
        host_cpus: u64::from(cpus),
        host_memory_kib: memory_kib,
    };
    let mut names = Vec::new();
    for d in c.all_domains()? {
        let Ok((info, _)) = conn::inactive_info(&d) else {
            continue;
        };
        l.guest_vcpus += u64::from(info.vcpus);
        l.guest_memory_kib += info.memory_kib;
        names.push(info.name);
    }
    for g in guests.iter().filter(|g| !names.contains(&g.name)) {
        l.guest_vcpus += u64::from(g.vcpus);
        l.guest_memory_kib += g.memory_mib * 1024;
    }
    Ok(l)
}

/// Libvirt checks. Without guests in the config an unreachable daemon is only a warning.
pub async fn checks(libvirt: &Libvirt, guests: &[Guest]) -> Vec<CheckResult> {
    let (l, g) = (libvirt.clone(), guests.to_vec());
    let uri = libvirt.uri.clone();
    let r = tokio::task::spawn_blocking(move || -> Result<Vec<CheckResult>, conn::LibvirtError> {
        let c = Conn::open(&l.uri)?;
        let out = checks_blocking(&c, &l, &g);
        c.close();
        Ok(out)
    })
    .await;
    match r {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => vec![result(
            "libvirt daemon",
            if guests.is_empty() { Status::Warn } else { Status::Fail },
            format!("{e}"),
            format!("install libvirt-daemon-driver-qemu and start libvirtd, or set [libvirt] uri (now {uri})"),
        )],
        Err(e) => vec![result("libvirt daemon", Status::Fail, format!("check task failed: {e}"), "")],
    }
}

/// libvirt's own words, without our "libvirt: <what>:" prefix.
fn libvirt_message(e: &conn::LibvirtError) -> String {
    match e {
        conn::LibvirtError::Call { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_uri_without_a_host_is_this_host() {
        assert!(is_local("qemu:///system"));
        assert!(is_local("qemu:///system?socket=/tmp/x/libvirt-sock"));
        assert!(is_local("qemu+unix:///system"));
        assert!(!is_local("qemu+tcp://10.79.0.2/system"));
        assert!(!is_local("qemu+ssh://root@kvm2/system"));
        assert!(!is_local("test:default"));
    }

    #[test]
    fn overcommit_warns_only_past_the_ratio() {
        let l = Load {
            guest_vcpus: 8,
            guest_memory_kib: 4 << 20,
            host_cpus: 2,
            host_memory_kib: 8 << 20,
        };
        let r = overcommit(l, 400, 100);
        assert_eq!(r[0].status, Status::Pass, "{r:?}");
        assert_eq!(r[1].status, Status::Pass, "{r:?}");
        let r = overcommit(
            Load {
                guest_vcpus: 9,
                guest_memory_kib: 9 << 20,
                ..l
            },
            400,
            100,
        );
        assert_eq!(r[0].status, Status::Warn, "{r:?}");
        assert_eq!(r[1].status, Status::Warn, "{r:?}");
        assert!(r[0].detail.contains("4.50x"), "{}", r[0].detail);
        assert!(!r[0].hint.is_empty());
    }
}
