//! Helpers for tests that run `hostagent run`: start it with its log captured, wait for its
//! control socket, attach guest namespaces to its bridges, run simulated DHCP clients.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::{hostagent_bin, wait_for, Netns, Scratch};

/// A running `hostagent run` inside a namespace; killed on drop (the namespace drop kills it too).
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(ns: &Netns, s: &Scratch, cfg: &str, extra: &[&str]) -> Daemon {
        Self::start_env(ns, s, cfg, extra, &[])
    }

    /// [`Daemon::start`] with extra environment variables for the daemon.
    pub fn start_env(
        ns: &Netns,
        s: &Scratch,
        cfg: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let log = s.root().join(format!("agent-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("log file");
        let bin = hostagent_bin();
        let mut argv = vec![
            bin.to_str().expect("utf-8").to_string(),
            "-c".into(),
            cfg.into(),
        ];
        argv.extend([
            "--root".to_string(),
            s.root_str().to_string(),
            "run".to_string(),
        ]);
        argv.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(|s| s.as_str()).collect();
        let child = ns
            .cmd(&argv)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn run");
        let d = Daemon { child, log };
        let sock = s.root().join("run/hostagent/control.sock");
        // Connect, not just exist: a daemon killed with -9 leaves its socket file behind.
        let up = wait_for(30, || {
            std::os::unix::net::UnixStream::connect(&sock)
                .ok()
                .map(|_| ())
        });
        assert!(
            up.is_some(),
            "hostagent run did not open its control socket in 30 s; log:\n{}",
            d.log_text()
        );
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Wait for exit up to `secs`; returns the exit code (None = still running or signalled).
    pub fn wait_exit(&mut self, secs: u64) -> Option<Option<i32>> {
        let child = &mut self.child;
        wait_for(secs, || child.try_wait().ok().flatten().map(|s| s.code()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A guest namespace with `eth0` plugged into `bridge` of the agent's namespace.
/// `port` is the host-side veth name (unique within the agent's namespace).
pub fn plug_guest(host: &Netns, bridge: &str, port: &str) -> Netns {
    let guest = Netns::new(port);
    host.veth_to(port, &guest, "eth0");
    host.ok(&["ip", "link", "set", port, "master", bridge]);
    // With STP on (the default, as libvirt) a new port listens and learns before it forwards.
    let fwd = wait_for(15, || {
        let out = host.run(&["bridge", "-j", "link", "show", "dev", port]);
        String::from_utf8_lossy(&out.stdout)
            .contains("\"state\":\"forwarding\"")
            .then_some(())
    });
    assert!(
        fwd.is_some(),
        "bridge port {port} never reached the forwarding state"
    );
    guest
}

/// Path of the dhcp-flood test client.
/// One busybox udhcpc exchange on the guest's eth0 (after setting its MAC, if given): the bound
/// address, or udhcpc's output when it got none. Patient (8 tries, 3 s apart): on a loaded 2-core
/// CI machine an answer can take more than a second.
pub fn udhcpc_once(
    guest: &Netns,
    s: &Scratch,
    tag: &str,
    mac: Option<&str>,
) -> Result<String, String> {
    if let Some(mac) = mac {
        guest.ok(&["ip", "link", "set", "eth0", "address", mac]);
    }
    let record = s.file(&format!("udhcpc-{tag}.ip"));
    let script = s.file(&format!("udhcpc-{tag}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip\" > '{}'\nexit 0\n",
            record.display()
        ),
    )
    .expect("script");
    crate::run_ok(Command::new("chmod").arg("+x").arg(&script));
    let out = guest.run(&[
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-t",
        "8",
        "-T",
        "3",
        "-s",
        script.to_str().expect("utf-8"),
    ]);
    if !out.status.success() {
        return Err(format!(
            "udhcpc failed: {}{}",
            crate::stdout(&out),
            crate::stderr(&out)
        ));
    }
    Ok(std::fs::read_to_string(&record)
        .unwrap_or_default()
        .trim()
        .to_string())
}

pub fn dhcp_flood_bin() -> PathBuf {
    hostagent_bin().with_file_name("dhcp-flood")
}

/// `dhcp-flood IFACE COUNT PREFIX WINDOW SECONDS` in `ns`; returns the (mac, ip) pairs it got ACKs for.
pub fn flood(ns: &Netns, count: u32, prefix: u8, window: u32, secs: u32) -> Vec<(String, String)> {
    let bin = dhcp_flood_bin();
    let out = ns
        .cmd(&[
            bin.to_str().expect("utf-8"),
            "eth0",
            &count.to_string(),
            &prefix.to_string(),
            &window.to_string(),
            &secs.to_string(),
        ])
        .output()
        .expect("run dhcp-flood");
    parse_acks(&String::from_utf8_lossy(&out.stdout))
}

pub fn parse_acks(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some("ACK")).then(|| {
                (
                    it.next().unwrap_or("").to_string(),
                    it.next().unwrap_or("").to_string(),
                )
            })
        })
        .collect()
}

/// `hostagent leases --json` as (network, mac, ip) triples.
pub fn leases(ns: &Netns, s: &Scratch, cfg: &str) -> Vec<(String, String, String)> {
    let out = ns.hostagent(&["-c", cfg, "--root", s.root_str(), "leases", "--json"]);
    assert!(
        out.status.success(),
        "leases failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("leases json");
    let mut res = vec![];
    for net in v.as_array().into_iter().flatten() {
        let name = net["network"].as_str().unwrap_or("").to_string();
        for l in net["leases"].as_array().into_iter().flatten() {
            res.push((
                name.clone(),
                mac_text(&l["mac"]),
                l["ip"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    res
}

/// A MAC as JSON text or as a byte array, rendered aa:bb:...
pub fn mac_text(v: &serde_json::Value) -> String {
    if let Some(s) = v.as_str() {
        return s.to_lowercase();
    }
    v.as_array()
        .into_iter()
        .flatten()
        .map(|b| format!("{:02x}", b.as_u64().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(":")
}

/// Run a command and return its stdout (for tests that shell out in the host namespace).
pub fn output(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&cmd.output().expect("spawn").stdout).into_owned()
}
