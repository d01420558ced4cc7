//! A private libvirt daemon (libvirtd + virtlogd) inside a test's network namespace, so guests'
//! taps land on the bridges the agent made there.
//!
//! Nothing of the host's libvirt setup is used or changed: the daemons run in a mount namespace
//! of their own (`ip netns exec` makes one) where private directories are bind-mounted over
//! /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt, and
//! private copies over /etc/passwd and /etc/group that add the `libvirt-qemu` user libvirt's QEMU
//! driver looks up at start (it does so before reading qemu.conf's `user = "root"`). The client
//! reaches the daemon through `qemu:///system?socket=<dir>/sock/libvirt-sock`.
//! The mount points themselves are created on the host if missing (empty directories the
//! libvirt-daemon package would own).

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
    child: std::process::Child,
}

impl Libvirtd {
    /// Start virtlogd and libvirtd in `ns`; waits until the daemon answers.
    pub fn start(ns: &Netns) -> Libvirtd {
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
        // Guests run as root without a security driver: no labels or chowns on the test's files.
        std::fs::write(
            d.join("etc/qemu.conf"),
            "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nremember_owner = 0\nsecurity_driver = \"none\"\n",
        )
        .expect("qemu.conf");
        let conf = d.join("libvirtd.conf");
        std::fs::write(
            &conf,
            format!(
                "unix_sock_dir = \"{}\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n",
                d.join("sock").display()
            ),
        )
        .expect("libvirtd.conf");
        let mut passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
        if !passwd.lines().any(|l| l.starts_with("libvirt-qemu:")) {
            passwd.push_str(
                "libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin\n",
            );
        }
        let mut group = std::fs::read_to_string("/etc/group").expect("read /etc/group");
        for g in ["libvirt-qemu:x:64055:", "kvm:x:64056:"] {
            let name = g.split(':').next().unwrap_or("");
            if !group.lines().any(|l| l.starts_with(&format!("{name}:"))) {
                group.push_str(g);
                group.push('\n');
            }
        }
        std::fs::write(d.join("passwd"), passwd).expect("passwd copy");
        std::fs::write(d.join("group"), group).expect("group copy");

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
        // Own pid files: the default ones in /run would make parallel tests' daemons refuse.
        script.push_str(&format!(
            "virtlogd -p '{}' &\n",
            d.join("virtlogd.pid").display()
        ));
        script.push_str(&format!(
            "exec libvirtd -p '{}' -f '{}'\n",
            d.join("libvirtd.pid").display(),
            conf.display()
        ));
        let log = std::fs::File::create(d.join("daemon.log")).expect("daemon log");
        let child = ns
            .cmd(&["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn libvirtd");
        let uri = format!(
            "qemu:///system?socket={}",
            d.join("sock/libvirt-sock").display()
        );
        let lv = Libvirtd { dir, uri, child };
        let up = wait_for(30, || lv.virsh(&["version"]).status.success().then_some(()));
        assert!(
            up.is_some(),
            "libvirtd did not answer in 30 s; its log:\n{}",
            lv.log()
        );
        lv
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
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
    }
}
