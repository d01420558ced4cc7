//! Can the user libvirt runs QEMU as open /dev/kvm?
//!
//! libvirt's own answer (`domcapabilities --virttype kvm`) is not enough: libvirtd 9.0 probes
//! QEMU's capabilities with CAP_DAC_OVERRIDE, so the probe finds KVM even where the guests'
//! QEMU, running as `libvirt-qemu` without that capability, cannot open /dev/kvm. That is a host
//! without udev's rule for it (`50-udev-default.rules`: group kvm, mode 0660), where /dev/kvm
//! stays root:root 0600. There, measured with libvirt 9.0: a KVM guest fails to start ("Could
//! not access KVM kernel module: Permission denied"), and libvirtd, whose cache check asks as
//! `libvirt-qemu`, finds its x86_64 capabilities stale on every lookup and probes QEMU again
//! (`virsh version` 4 s, `virsh define` 32 s).
//!
//! The answer is the kernel's DAC rule for the device's owner, group and mode, with the groups
//! libvirt gives QEMU (the user's, by `getgrouplist`, plus the label's group). POSIX ACLs are
//! not read: udev's `uaccess` ACL on /dev/kvm is for the logged-in desktop user, never libvirt's.

use std::ffi::{CStr, CString};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The device KVM guests need.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// Who libvirt runs KVM guests' QEMU as: the DAC driver's base label for `kvm` guests
/// (`<baselabel type='kvm'>+64055:+64055</baselabel>`) in the host capabilities XML. None
/// without the DAC driver (then libvirt does not switch users).
pub fn qemu_ids(capabilities: &str) -> Option<(u32, u32)> {
    let doc = roxmltree::Document::parse(capabilities).ok()?;
    let dac = doc.descendants().find(|n| {
        n.has_tag_name("secmodel")
            && n.children()
                .any(|c| c.has_tag_name("model") && c.text() == Some("dac"))
    })?;
    let label = dac
        .children()
        .find(|c| c.has_tag_name("baselabel") && c.attribute("type") == Some("kvm"))?
        .text()?;
    let (uid, gid) = label.trim().split_once(':')?;
    let id = |s: &str| s.trim_start_matches('+').parse().ok();
    Some((id(uid)?, id(gid)?))
}

/// The QEMU user with the groups its process gets.
#[derive(Debug, Clone, PartialEq)]
pub struct QemuUser {
    pub uid: u32,
    /// From the user database; None for a uid it does not know.
    pub name: Option<String>,
    pub groups: Vec<u32>,
}

impl QemuUser {
    /// `uid` with the label's group `gid` and the user's groups, as libvirt sets them
    /// (virGetGroupList: getgrouplist on the user's name and primary group, then `gid`).
    pub fn lookup(uid: u32, gid: u32) -> QemuUser {
        let user = user_entry(uid);
        let name = user.as_ref().map(|(n, _)| n.clone());
        let mut groups = user
            .map(|(n, primary)| group_list(&n, primary))
            .unwrap_or_default();
        if !groups.contains(&gid) {
            groups.push(gid);
        }
        QemuUser { uid, name, groups }
    }

    fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("uid {} ({n})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

/// May `uid` with `groups` open a file of `owner`, `group` and `mode` for reading and writing?
/// The kernel's rule: the owner's bits for the owner, else the group's for a member, else the
/// others' (no capability override: libvirt drops QEMU's capabilities).
pub fn may_read_write(mode: u32, owner: u32, group: u32, uid: u32, groups: &[u32]) -> bool {
    let bits = if uid == owner {
        mode >> 6
    } else if groups.contains(&group) {
        mode >> 3
    } else {
        mode
    };
    bits & 0o6 == 0o6
}

/// Why `user` cannot open `device` read-write, or None when it can. A device that is not there
/// is None too: `check`'s own /dev/kvm line reports that.
pub fn blocked(device: &Path, user: &QemuUser) -> Option<String> {
    let meta = std::fs::metadata(device).ok()?;
    let mode = meta.mode() & 0o7777;
    if may_read_write(mode, meta.uid(), meta.gid(), user.uid, &user.groups) {
        return None;
    }
    let owner = user_name(meta.uid()).unwrap_or_else(|| meta.uid().to_string());
    let group = group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string());
    Some(format!(
        "QEMU runs as {}, which cannot open {} ({owner}:{group}, mode {mode:04o})",
        user.label(),
        device.display()
    ))
}

/// Size for the getpw*_r/getgr*_r string buffer; entries longer than this are treated as
/// unknown (the names only label a message).
const ENTRY_BUF: usize = 16 * 1024;

fn user_name(uid: u32) -> Option<String> {
    user_entry(uid).map(|(name, _)| name)
}

/// The user's name and primary group.
fn user_entry(uid: u32) -> Option<(String, u32)> {
    let mut pw: libc::passwd = zeroed_record();
    let mut buf = vec![0 as libc::c_char; ENTRY_BUF];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: valid out-pointers and a buffer of the length passed.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points into `buf`, NUL-terminated.
    let name = unsafe { CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned();
    Some((name, pw.pw_gid))
}

fn group_name(gid: u32) -> Option<String> {
    let mut gr: libc::group = zeroed_record();
    let mut buf = vec![0 as libc::c_char; ENTRY_BUF];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: valid out-pointers and a buffer of the length passed.
    let rc = unsafe { libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || gr.gr_name.is_null() {
        return None;
    }
    // SAFETY: on success gr_name points into `buf`, NUL-terminated.
    Some(
        unsafe { CStr::from_ptr(gr.gr_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// The groups of user `name` with its primary group `gid` (getgrouplist); empty if the lookup
/// fails.
fn group_list(name: &str, gid: u32) -> Vec<u32> {
    let Ok(name) = CString::new(name) else {
        return Vec::new();
    };
    let mut n: libc::c_int = 32;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let asked = n;
        // SAFETY: a NUL-terminated name and an array of `n` entries; getgrouplist stores at most
        // `n` and sets `n` to the number it has.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            return groups;
        }
        if n <= asked {
            return Vec::new();
        }
    }
}

/// A zeroed libc passwd/group record, as an out-parameter.
fn zeroed_record<T: Copy>() -> T {
    // SAFETY: only used for libc's passwd and group structs (integers and raw pointers), for
    // which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: &str = "<capabilities><host>
      <secmodel><model>none</model><doi>0</doi></secmodel>
      <secmodel><model>dac</model><doi>0</doi>
        <baselabel type='kvm'>+64055:+64056</baselabel>
        <baselabel type='qemu'>+64055:+64055</baselabel>
      </secmodel></host></capabilities>";

    #[test]
    fn the_dac_label_of_kvm_guests_names_the_qemu_user() {
        assert_eq!(qemu_ids(CAPS), Some((64055, 64056)));
        let no_dac =
            "<capabilities><host><secmodel><model>none</model></secmodel></host></capabilities>";
        assert_eq!(qemu_ids(no_dac), None);
        assert_eq!(qemu_ids("not xml"), None);
    }

    #[test]
    fn the_kernel_rule_for_owner_group_and_others() {
        let (root, kvm, qemu) = (0, 64056, 64055);
        // Debian's udev: root:kvm 0660, QEMU's user in group kvm.
        assert!(may_read_write(0o660, root, kvm, qemu, &[qemu, kvm]));
        // No udev: root:root 0600.
        assert!(!may_read_write(0o600, root, root, qemu, &[qemu, kvm]));
        // Group kvm, but the user not in it.
        assert!(!may_read_write(0o660, root, kvm, qemu, &[qemu]));
        // systemd's other default: 0666.
        assert!(may_read_write(0o666, root, root, qemu, &[qemu]));
        // The owner's bits apply to the owner even when the group's would allow more.
        assert!(!may_read_write(0o460, qemu, kvm, qemu, &[kvm]));
        // Root is bound by the bits too (libvirt drops QEMU's capabilities).
        assert!(!may_read_write(0o066, root, root, root, &[root]));
    }

    #[test]
    fn a_known_user_gets_its_groups_and_the_label_group() {
        let u = QemuUser::lookup(0, 0);
        assert_eq!(u.name.as_deref(), Some("root"));
        assert!(u.groups.contains(&0), "{u:?}");
        let unknown = QemuUser::lookup(4_000_000_000, 4_000_000_001);
        assert_eq!(unknown.name, None);
        assert_eq!(unknown.groups, vec![4_000_000_001]);
    }
}
