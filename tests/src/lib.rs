//! Shared harness for the integration tests: network namespaces that are always deleted, the
//! hostagent binary, and small helpers to read kernel state back independently (`ip -j`, `nft -j`).

pub mod qemu;

pub mod daemon;

pub mod dns;

pub mod libvirt;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Path of the hostagent binary built by this workspace.
pub fn hostagent_bin() -> PathBuf {
    if let Ok(p) = std::env::var("HOSTAGENT_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/hostagent");
    assert!(
        bin.exists(),
        "{} missing: build it first (cargo build -p hostagent)",
        bin.display()
    );
    bin
}

/// A network namespace made by a test; deleted (with every process in it) on drop, also when the
/// test panics.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // Short names: they appear in veth peer names and in `ip netns list`.
        let name = format!("ha{}-{}-{}", std::process::id() % 100000, n, tag);
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A Command that runs `argv` inside this namespace.
    pub fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(argv);
        c
    }

    pub fn run(&self, argv: &[&str]) -> Output {
        self.cmd(argv).output().expect("spawn ip netns exec")
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, argv: &[&str]) -> String {
        run_ok(&mut self.cmd(argv))
    }

    pub fn sh(&self, script: &str) -> Output {
        self.run(&["sh", "-c", script])
    }

    /// `ip -j ...` inside the namespace, parsed.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut argv = vec!["ip", "-j", "-d"];
        argv.extend_from_slice(args);
        let out = self.ok(&argv);
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).expect("ip -j output")
    }

    /// Does a link of this name exist in the namespace?
    pub fn has_link(&self, name: &str) -> bool {
        self.run(&["ip", "link", "show", "dev", name])
            .status
            .success()
    }

    /// Read a file in this namespace's view (e.g. /proc/sys/net/...).
    pub fn read(&self, path: &str) -> String {
        self.ok(&["cat", path]).trim().to_string()
    }

    /// Create a veth pair with one end here and the other in `peer` (both up).
    pub fn veth_to(&self, here: &str, peer: &Netns, there: &str) {
        self.ok(&[
            "ip", "link", "add", here, "type", "veth", "peer", "name", there, "netns", &peer.name,
        ]);
        self.ok(&["ip", "link", "set", here, "up"]);
        peer.ok(&["ip", "link", "set", there, "up"]);
    }

    /// Run hostagent inside this namespace.
    pub fn hostagent(&self, args: &[&str]) -> Output {
        let bin = hostagent_bin();
        let mut argv = vec![bin.to_str().expect("utf-8 path")];
        argv.extend_from_slice(args);
        self.run(&argv)
    }

    /// Start hostagent in the background inside this namespace (killed when the namespace drops).
    pub fn spawn_hostagent(&self, args: &[&str]) -> std::process::Child {
        let bin = hostagent_bin();
        let mut argv = vec![bin.to_str().expect("utf-8 path")];
        argv.extend_from_slice(args);
        self.cmd(&argv)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn hostagent")
    }

    /// PIDs of the processes in this namespace.
    pub fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            Err(_) => vec![],
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: plain kill(2) on a pid we just listed.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Run a command, panic with its stderr when it fails, return stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch --root for one test, with the config written into it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("hostagent-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    pub fn root_str(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 tempdir")
    }
    /// Write `config.toml` (outside the root's /etc so tests can also check the root is untouched).
    pub fn config(&self, text: &str) -> String {
        let p = self.dir.path().join("config.toml");
        std::fs::write(&p, text).expect("write config");
        p.to_str().expect("utf-8").to_string()
    }
    pub fn file(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Poll `f` until it returns Some or `secs` pass.
pub fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
