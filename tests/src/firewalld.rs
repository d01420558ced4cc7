//! A firewalld of a test's own: Debian's `firewalld` running inside a test namespace, on a
//! private D-Bus system bus (a `dbus-daemon` with an allow-all policy on a socket in the test's
//! scratch dir), with its configuration directory bind-mounted from a copy in a mount namespace
//! of its own, so `--permanent` changes never reach the machine's /etc/firewalld and its log
//! goes to the scratch dir. Clients reach it with `DBUS_SYSTEM_BUS_ADDRESS` = [`Firewalld::bus`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use testkit::{run_ok, wait_for, Netns};

pub struct Firewalld {
    /// firewalld itself (`ip netns exec`, `unshare` and `sh` each exec into the next).
    daemon: Child,
    dbus: Child,
    bus: String,
    dir: PathBuf,
}

const BUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=SOCKET</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#;

impl Firewalld {
    /// Start the bus and firewalld in `ns`; returns once `firewall-cmd --state` says running.
    pub fn start(ns: &Netns, dir: &Path) -> Firewalld {
        assert!(
            Path::new("/usr/sbin/firewalld").exists(),
            "firewalld is not installed: apt-get install --no-install-recommends firewalld"
        );
        let dir = dir.join("firewalld");
        std::fs::create_dir_all(&dir).expect("firewalld dir");
        let socket = dir.join("bus");
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            BUS_CONF.replace("SOCKET", socket.to_str().expect("utf-8")),
        )
        .expect("bus config");
        let dbus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .arg("--nofork")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dbus-daemon");
        let bus = format!("unix:path={}", socket.display());
        let etc = dir.join("etc");
        run_ok(Command::new("cp").args(["-a", "/etc/firewalld"]).arg(&etc));
        let script = format!(
            "mount --bind {etc} /etc/firewalld && exec firewalld --nofork --nopid --log-target file --log-file {log}",
            etc = etc.display(),
            log = dir.join("firewalld.log").display()
        );
        let daemon = ns
            .cmd(&["unshare", "-m", "sh", "-c", &script])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn firewalld");
        let fw = Firewalld {
            daemon,
            dbus,
            bus,
            dir,
        };
        let up = wait_for(30, || {
            (fw.cmd(ns, &["--state"]).trim() == "running").then_some(())
        });
        assert!(
            up.is_some(),
            "firewalld did not start; log:\n{}",
            std::fs::read_to_string(fw.dir.join("firewalld.log")).unwrap_or_default()
        );
        fw
    }

    /// The bus address for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub fn bus(&self) -> &str {
        &self.bus
    }

    /// `firewall-cmd ARGS` in `ns` on this firewalld's bus: its stdout (empty when it failed).
    pub fn cmd(&self, ns: &Netns, args: &[&str]) -> String {
        let mut argv = vec!["firewall-cmd"];
        argv.extend_from_slice(args);
        let out = ns
            .cmd(&argv)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus)
            .output()
            .expect("run firewall-cmd");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Firewalld {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = self.dbus.kill();
        let _ = self.dbus.wait();
    }
}
