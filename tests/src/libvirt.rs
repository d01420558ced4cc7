//! A private libvirt daemon (libvirtd + virtlogd) inside a test's network namespace, so guests'
//! taps land on the bridges the agent made there.
//!
//! It runs with libvirt's stock security, as Debian installs it: no qemu.conf (this machine has
//! none; Debian's shipped one is all comments), so QEMU runs as `libvirt-qemu` with DAC
//! relabelling, and whatever MAC driver the kernel offers (AppArmor on Debian/Ubuntu) is used.
//!
//! Nothing of the host's libvirt setup is used or changed. The daemons run in a mount namespace
//! of their own (`ip netns exec` makes one) where private directories are bind-mounted over
//! /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt: the
//! `default` storage pool the agent creates at /var/lib/libvirt/images is a directory of this
//! daemon's temp dir, never the machine's own. Private copies over /etc/passwd and /etc/group add
//! the `libvirt-qemu` user and group as Debian's libvirt-daemon-system package creates them
//! (uid/gid 64055, primary group kvm), when the host has none. /dev/kvm is a private node with
//! the owner and mode Debian's udev gives it (root:kvm, 0660), whatever the host's is (this
//! machine has no udev: root-only), or root-only on purpose ([`Libvirtd::start_without_udev`]).
//! On a host with AppArmor, a private
//! copy of /etc/apparmor.d/libvirt takes the per-guest profiles virt-aa-helper writes. The client
//! reaches the daemon through `qemu:///system?socket=<dir>/sock/libvirt-sock`. The mount points
//! themselves are created on the host if missing (empty directories the libvirt-daemon package
//! would own).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use testkit::{wait_for, Netns};

/// Directories the daemons write to, each replaced by a private one.
const PRIVATE_DIRS: [(&str, &str); 5] = [
    ("etc", "/etc/libvirt"),
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("log", "/var/log/libvirt"),
    ("cache", "/var/cache/libvirt"),
];

pub struct Libvirtd {
    pub dir: tempfile::TempDir,
    /// URI for hostagent's `[libvirt] uri` and for virsh -c.
    pub uri: String,
    /// `qemu+tcp://ADDR/system` when started by [`Libvirtd::start_listening`]: how a client in
    /// another namespace reaches it, as a remote KVM host.
    pub tcp_uri: Option<String>,
    child: std::process::Child,
}

/// The /dev/kvm a private daemon sees (where the host has one).
#[derive(Debug, Clone, Copy, PartialEq)]
enum KvmDevice {
    /// As Debian's udev makes it (50-udev-default.rules): root:kvm, mode 0660.
    Udev,
    /// As a host without udev leaves it (this machine): root:root, mode 0600.
    RootOnly,
}

impl Libvirtd {
    /// Start virtlogd and libvirtd in `ns`; waits until the daemon answers.
    pub fn start(ns: &Netns) -> Libvirtd {
        Libvirtd::start_in(&ns.name)
    }

    /// [`Libvirtd::start`] in the network namespace named `netns`, which someone else owns (the
    /// benchmark harness's).
    pub fn start_in(netns: &str) -> Libvirtd {
        Libvirtd::start_with(netns, None, KvmDevice::Udev)
    }

    /// [`Libvirtd::start`] on a host whose /dev/kvm is root-only, as it is without udev: libvirt
    /// then re-probes QEMU on nearly every call (seconds each) and KVM guests cannot start.
    pub fn start_without_udev(ns: &Netns) -> Libvirtd {
        Libvirtd::start_with(&ns.name, None, KvmDevice::RootOnly)
    }

    /// [`Libvirtd::start`], also listening on TCP port 16509 at `addr` (an address of `ns`),
    /// without authentication (`auth_tcp = "none"`: a test deviation, a real remote host is
    /// reached over SSH or TLS); `tcp_uri` is then set.
    pub fn start_listening(ns: &Netns, addr: std::net::Ipv4Addr) -> Libvirtd {
        Libvirtd::start_with(&ns.name, Some(addr), KvmDevice::Udev)
    }

    fn start_with(netns: &str, listen: Option<std::net::Ipv4Addr>, kvm: KvmDevice) -> Libvirtd {
        for bin in ["/usr/sbin/libvirtd", "/usr/sbin/virtlogd", "/usr/bin/virsh"] {
            assert!(
                Path::new(bin).exists(),
                "{bin} missing: apt-get install --no-install-recommends libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("hostagent-libvirt-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        for (sub, target) in PRIVATE_DIRS {
            std::fs::create_dir_all(d.join(sub)).expect("private dir");
            std::fs::create_dir_all(target).unwrap_or_else(|e| panic!("mount point {target}: {e}"));
        }
        std::fs::create_dir_all(d.join("sock")).expect("sock dir");
        std::fs::create_dir_all(d.join("dev")).expect("dev dir");
        seed_capabilities(&d.join(CAPABILITIES));
        // The modes Debian gives these directories: QEMU, running as libvirt-qemu, must get
        // through /var/lib/libvirt to its per-domain directory and the images pool.
        for (sub, mode) in [
            ("etc", 0o755),
            ("run", 0o755),
            ("lib", 0o755),
            ("cache", 0o711),
        ] {
            std::fs::set_permissions(d.join(sub), std::fs::Permissions::from_mode(mode))
                .expect("chmod private dir");
        }
        let conf = d.join("libvirtd.conf");
        let mut text = format!(
            "unix_sock_dir = \"{}\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n",
            d.join("sock").display()
        );
        if let Some(addr) = listen {
            text.push_str(&format!(
                "listen_tls = 0\nlisten_tcp = 1\nlisten_addr = \"{addr}\"\ntcp_port = \"16509\"\nauth_tcp = \"none\"\n"
            ));
        }
        std::fs::write(&conf, text).expect("libvirtd.conf");
        let (passwd, group) = accounts();
        std::fs::write(d.join("passwd"), passwd).expect("passwd copy");
        std::fs::write(d.join("group"), group).expect("group copy");
        let apparmor = apparmor_enabled() && Path::new(APPARMOR_LIBVIRT).is_dir();
        if apparmor {
            let copy = Command::new("cp")
                .args(["-a", APPARMOR_LIBVIRT])
                .arg(d.join("apparmor"))
                .status()
                .expect("cp");
            assert!(copy.success(), "copying {APPARMOR_LIBVIRT}");
        }

        let mut script = String::from("set -e\n");
        for (sub, target) in PRIVATE_DIRS {
            script.push_str(&format!(
                "mount --bind '{}' '{target}'\n",
                d.join(sub).display()
            ));
        }
        script.push_str(&format!(
            "mount --bind '{}' /etc/passwd\n",
            d.join("passwd").display()
        ));
        script.push_str(&format!(
            "mount --bind '{}' /etc/group\n",
            d.join("group").display()
        ));
        if apparmor {
            script.push_str(&format!(
                "mount --bind '{}' {APPARMOR_LIBVIRT}\n",
                d.join("apparmor").display()
            ));
        }
        if let Some((major, minor)) = kvm_device() {
            // Udev: /dev/kvm as Debian's udev makes it, so QEMU as libvirt-qemu (primary group
            // kvm) may open it. This machine has no udev and leaves it root-only (0600), and
            // libvirt then re-probes QEMU on every call: its probe may open /dev/kvm (libvirt
            // gives the probe CAP_DAC_OVERRIDE) and finds KVM, its cache check asks whether
            // libvirt-qemu may (no), and drops the x86_64 capabilities as stale, seconds per
            // call. The node is made on a small tmpfs of this mount namespace, so the temp
            // dir's mount options do not matter.
            let (mode, group) = match kvm {
                KvmDevice::Udev => ("0660", "kvm"),
                KvmDevice::RootOnly => ("0600", "root"),
            };
            let dev = d.join("dev");
            script.push_str(&format!(
                "mount -t tmpfs -o mode=0755,size=16k hostagent-dev '{dev}'\n\
                 mknod -m {mode} '{dev}/kvm' c {major} {minor}\n\
                 chgrp {group} '{dev}/kvm'\n\
                 mount --bind '{dev}/kvm' /dev/kvm\n",
                dev = dev.display()
            ));
        }
        // Own pid files: the default ones in /run would make parallel tests' daemons refuse.
        script.push_str(&format!(
            "virtlogd -p '{}' &\n",
            d.join("virtlogd.pid").display()
        ));
        script.push_str(&format!(
            "exec libvirtd {}-p '{}' -f '{}'\n",
            if listen.is_some() { "--listen " } else { "" },
            d.join("libvirtd.pid").display(),
            conf.display()
        ));
        let log = std::fs::File::create(d.join("daemon.log")).expect("daemon log");
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn libvirtd");
        let uri = format!(
            "qemu:///system?socket={}",
            d.join("sock/libvirt-sock").display()
        );
        let tcp_uri = listen.map(|a| format!("qemu+tcp://{a}/system"));
        let lv = Libvirtd {
            dir,
            uri,
            tcp_uri,
            child,
        };
        let up = wait_for(30, || lv.virsh(&["version"]).status.success().then_some(()));
        assert!(
            up.is_some(),
            "libvirtd did not answer in 30 s; its log:\n{}",
            lv.log()
        );
        // It answers once its QEMU driver has the capabilities of every QEMU binary.
        keep_capabilities(&lv.dir.path().join(CAPABILITIES));
        lv
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `argv` in the daemon's network and mount namespaces: it sees the daemon's files (its
    /// accounts, /dev/kvm, /var/lib/libvirt) as a program on the daemon's host does.
    pub fn beside(&self, argv: &[String]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--target={}", self.child.id()))
            .args(["--mount", "--net", "--"])
            .args(argv);
        c
    }

    /// `virsh -c URI ARGS` (from the host namespace: the socket is a file).
    pub fn virsh(&self, args: &[&str]) -> std::process::Output {
        Command::new("virsh")
            .arg("-c")
            .arg(&self.uri)
            .args(args)
            .output()
            .expect("spawn virsh")
    }

    /// virsh, panicking with its stderr on failure; returns stdout.
    pub fn virsh_ok(&self, args: &[&str]) -> String {
        let o = self.virsh(args);
        assert!(
            o.status.success(),
            "virsh {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Define a domain from XML text.
    pub fn define(&self, xml: &str) {
        let f = self.dir.path().join("define.xml");
        std::fs::write(&f, xml).expect("write xml");
        self.virsh_ok(&["define", f.to_str().expect("utf-8")]);
    }

    /// The persistent definition, as libvirt stores it.
    pub fn inactive_xml(&self, name: &str) -> String {
        self.virsh_ok(&["dumpxml", "--inactive", name])
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A running directory pool `name` at `dir` (as the daemon sees it), as an administrator
    /// makes one with virsh.
    pub fn define_pool(&self, name: &str, dir: &str) {
        self.virsh_ok(&["pool-define-as", name, "dir", "--target", dir]);
        self.virsh_ok(&["pool-build", name]);
        self.virsh_ok(&["pool-start", name]);
    }

    /// Where a path as this daemon sees it (e.g. a volume in /var/lib/libvirt/images) is on the
    /// host: its private directories are this helper's temp dir.
    pub fn host_path(&self, daemon_path: &str) -> PathBuf {
        for (sub, target) in PRIVATE_DIRS {
            if let Some(rest) = daemon_path.strip_prefix(target) {
                return self.dir.path().join(sub).join(rest.trim_start_matches('/'));
            }
        }
        PathBuf::from(daemon_path)
    }

    /// The uid and gid QEMU runs as under libvirt's defaults (the `libvirt-qemu` user).
    pub fn qemu_ids(&self) -> (u32, u32) {
        let (passwd, group) = accounts();
        let field = |text: &str, name: &str| -> u32 {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}:")))
                .and_then(|l| l.split(':').nth(2))
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in the private accounts"))
        };
        (
            field(&passwd, "libvirt-qemu"),
            field(&group, "libvirt-qemu"),
        )
    }

    /// The security models libvirt's QEMU driver runs guests under (`virsh capabilities`),
    /// e.g. `["none"]`, `["dac"]` or `["apparmor", "dac"]`.
    pub fn security_models(&self) -> Vec<String> {
        let caps = self.virsh_ok(&["capabilities"]);
        caps.match_indices("<model>")
            .filter_map(|(i, _)| {
                let rest = &caps[i + "<model>".len()..];
                rest.find("</model>").map(|e| rest[..e].to_string())
            })
            .collect()
    }
}

/// libvirtd's QEMU capabilities cache (/var/cache/libvirt/qemu/capabilities), in the private
/// directories.
const CAPABILITIES: &str = "cache/qemu/capabilities";

/// Where the daemons' probed QEMU capabilities are kept between daemons and runs.
fn capabilities_store() -> PathBuf {
    crate::target_dir().join("libvirt-qemu-capabilities")
}

/// Give a new daemon the capabilities an earlier one probed, as a host's libvirtd finds its
/// /var/cache/libvirt after a restart: it loads each file only if it is still valid (same QEMU
/// and libvirt binaries, same KVM access) and probes QEMU itself otherwise. Without them each
/// daemon spends ~11 s probing four QEMU binaries before it answers.
fn seed_capabilities(cache: &Path) {
    let Ok(files) = std::fs::read_dir(capabilities_store()) else {
        return;
    };
    std::fs::create_dir_all(cache).expect("capabilities cache dir");
    for f in files.flatten() {
        if f.path().extension().is_some_and(|e| e == "xml") {
            // A file another test is replacing right now is renamed in whole, never half.
            let _ = std::fs::copy(f.path(), cache.join(f.file_name()));
        }
    }
}

/// Keep a daemon's capabilities for the next one (each file replaced whole, by rename: daemons
/// start side by side).
fn keep_capabilities(cache: &Path) {
    let store = capabilities_store();
    let Ok(files) = std::fs::read_dir(cache) else {
        return;
    };
    if std::fs::create_dir_all(&store).is_err() {
        return;
    }
    for f in files.flatten() {
        let name = f.file_name();
        let tmp = store.join(format!(
            ".{}.{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        if std::fs::copy(f.path(), &tmp).is_ok()
            && std::fs::rename(&tmp, store.join(&name)).is_err()
        {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// The device numbers of the host's /dev/kvm, if it has one.
pub fn kvm_device() -> Option<(u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata("/dev/kvm").ok()?;
    meta.file_type()
        .is_char_device()
        .then(|| (libc::major(meta.rdev()), libc::minor(meta.rdev())))
}

/// Per-guest AppArmor profiles go here (virt-aa-helper).
const APPARMOR_LIBVIRT: &str = "/etc/apparmor.d/libvirt";

/// Is AppArmor the kernel's active security module (what makes libvirt confine guests)?
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y")
}

/// The host's /etc/passwd and /etc/group, with the `libvirt-qemu` user and group added as
/// Debian's libvirt-daemon-system postinst creates them when the host has none.
fn accounts() -> (String, String) {
    let mut passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let mut group = std::fs::read_to_string("/etc/group").expect("read /etc/group");
    let has = |text: &str, name: &str| text.lines().any(|l| l.starts_with(&format!("{name}:")));
    if !has(&group, "kvm") {
        group.push_str("kvm:x:64056:\n");
    }
    let kvm = group
        .lines()
        .find(|l| l.starts_with("kvm:"))
        .and_then(|l| l.split(':').nth(2))
        .unwrap_or("64056")
        .to_string();
    if !has(&passwd, "libvirt-qemu") {
        passwd.push_str(&format!(
            "libvirt-qemu:x:64055:{kvm}:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin\n"
        ));
    }
    if !has(&group, "libvirt-qemu") {
        group.push_str("libvirt-qemu:x:64055:libvirt-qemu\n");
    }
    (passwd, group)
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        // Running guests first, so QEMU does not outlive its daemon; the namespace drop kills
        // whatever is left.
        if let Ok(o) = Command::new("virsh")
            .arg("-c")
            .arg(&self.uri)
            .args(["list", "--name"])
            .output()
        {
            for name in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("virsh")
                    .arg("-c")
                    .arg(&self.uri)
                    .args(["destroy", name])
                    .output();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // virtlogd runs beside it (started in the background by the same shell): without this it
        // would live until its namespace is deleted.
        if let Some(pid) = std::fs::read_to_string(self.dir.path().join("virtlogd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) on the virtlogd this helper started (its own pid file).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// The real uid and gid of the QEMU process running domain `name` in `ns`, if one runs.
pub fn qemu_credentials(ns: &Netns, name: &str) -> Option<(u32, u32)> {
    let needle = format!("guest={name},");
    ns.pids().into_iter().find_map(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains("qemu-system") || !cmdline.contains(&needle) {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let first = |key: &str| -> Option<u32> {
            status
                .lines()
                .find(|l| l.starts_with(key))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        Some((first("Uid:")?, first("Gid:")?))
    })
}
