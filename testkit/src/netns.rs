//! Network namespaces a test makes for itself: created with `ip netns add`, used through
//! `ip netns exec` (commands) or `setns(2)` on a thread of the test (sockets), and deleted with
//! every process in them when the [`Netns`] drops, also when the test panics. Tests never touch
//! the host's own namespace.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use crate::process::run_ok;
use crate::wait::wait_for;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// How long a new bridge port may take to forward: with STP on (libvirt's default, and the
/// agent's) the kernel keeps it listening, then learning, for at least 2 s each.
const FORWARDING_SECS: u64 = 15;

/// A network namespace made by a test; deleted (with every process in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace with `lo` up. `tag` makes the name readable in `ip netns list`; the
    /// process id and a counter make it unique across parallel tests and test binaries.
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
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

    /// `ip -j -d ...` inside the namespace, parsed.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut argv = vec!["ip", "-j", "-d"];
        argv.extend_from_slice(args);
        let out = self.ok(&argv);
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).expect("ip -j output")
    }

    /// `nft -j ARGS...` inside the namespace: the objects of its `nftables` array.
    pub fn nft_json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut argv = vec!["nft", "-j"];
        argv.extend_from_slice(args);
        let v: serde_json::Value = serde_json::from_str(&self.ok(&argv)).expect("nft -j output");
        v["nftables"].as_array().cloned().unwrap_or_default()
    }

    /// One device as `ip -j -d addr show` reports it (link details and `addr_info`), or None
    /// when there is no device of that name.
    pub fn link(&self, dev: &str) -> Option<serde_json::Value> {
        let out = self.run(&["ip", "-j", "-d", "addr", "show", "dev", dev]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        v.as_array()?.first().cloned()
    }

    /// The MAC of a device, as the kernel prints it (aa:bb:cc:dd:ee:ff).
    pub fn mac(&self, dev: &str) -> String {
        self.read(&format!("/sys/class/net/{dev}/address"))
    }

    /// Does a link of this name exist in the namespace?
    pub fn has_link(&self, name: &str) -> bool {
        self.run(&["ip", "link", "show", "dev", name])
            .status
            .success()
    }

    /// Does nftables have this table in the namespace?
    pub fn has_nft_table(&self, family: &str, name: &str) -> bool {
        self.run(&["nft", "list", "table", family, name])
            .status
            .success()
    }

    /// Read a file in this namespace's view (e.g. /proc/sys/net/...), trimmed.
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

    /// A guest namespace whose `eth0` is plugged into `bridge` here as port `port` (unique in
    /// this namespace); returns once the port forwards.
    pub fn plug(&self, bridge: &str, port: &str) -> Netns {
        let guest = Netns::new(port);
        self.veth_to(port, &guest, "eth0");
        self.ok(&["ip", "link", "set", port, "master", bridge]);
        self.wait_forwarding(port);
        guest
    }

    /// Wait until bridge port `port` is in the forwarding state (never a bare sleep: with STP
    /// on a new port listens and learns first).
    pub fn wait_forwarding(&self, port: &str) {
        let fwd = wait_for(FORWARDING_SECS, || {
            let out = self.run(&["bridge", "-j", "link", "show", "dev", port]);
            String::from_utf8_lossy(&out.stdout)
                .contains("\"state\":\"forwarding\"")
                .then_some(())
        });
        assert!(
            fwd.is_some(),
            "bridge port {port} never reached the forwarding state"
        );
    }

    /// Run `f` on a new thread that lives in this namespace (setns affects only that thread):
    /// the sockets it opens and the threads it starts belong to the namespace. A panic in `f`
    /// is the caller's panic.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn_in(f)
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// Like [`Netns::enter`], without waiting: for a peer that must run while the test does
    /// something else (a listener, a receiver).
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let ns = open_ns(&self.path());
        std::thread::spawn(move || {
            setns(&ns);
            f()
        })
    }

    /// Move the CALLING thread into this namespace until the returned guard drops (then it goes
    /// back to the namespace it was in): for async tests whose runtime runs on the test thread.
    /// Processes it spawns meanwhile start in the namespace.
    pub fn enter_here(&self) -> Entered {
        let home = open_ns("/proc/thread-self/ns/net");
        setns(&open_ns(&self.path()));
        Entered { home }
    }

    /// Run `f` on a scoped thread inside the namespace whose CHILD processes lack the
    /// capability `cap` (e.g. 12, CAP_NET_ADMIN): the thread drops it from its bounding set,
    /// which exec'd programs inherit, while the thread itself keeps it. So a program it starts
    /// (`nft`) really fails with "Operation not permitted", as it does for an unprivileged
    /// caller, while netlink from the thread still works.
    pub fn enter_with_children_lacking<T: Send>(
        &self,
        cap: u32,
        f: impl FnOnce() -> T + Send,
    ) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&open_ns(&path));
                // SAFETY: prctl(2) with integer arguments; it changes only this thread's
                // bounding set, and this thread ends when `f` returns.
                let rc = unsafe {
                    libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0)
                };
                assert_eq!(
                    rc,
                    0,
                    "PR_CAPBSET_DROP: {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Run `argv` in the namespace with `stdin` on its standard input.
    pub fn run_with_stdin(&self, argv: &[&str], stdin: &str) -> Output {
        let mut child = self
            .cmd(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        if let Some(mut pipe) = child.stdin.take() {
            let _ = pipe.write_all(stdin.as_bytes());
        }
        child.wait_with_output().expect("wait for the child")
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
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

/// The calling thread's stay in a namespace ([`Netns::enter_here`]); dropping it goes back.
pub struct Entered {
    home: OwnedFd,
}

impl Drop for Entered {
    fn drop(&mut self) {
        // SAFETY: setns(2) back to the namespace fd this thread came from, which we own.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

fn open_ns(path: &str) -> OwnedFd {
    File::open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"))
        .into()
}

/// Move the calling thread into the namespace behind `ns`.
fn setns(ns: &OwnedFd) {
    // SAFETY: setns(2) on a namespace fd we own; it moves only the calling thread.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

impl Drop for Netns {
    fn drop(&mut self) {
        // A test whose main thread entered the namespace (enter_here) is listed too: never
        // kill the test itself.
        let me = std::process::id() as i32;
        for pid in self.pids().into_iter().filter(|p| *p != me) {
            // SAFETY: plain kill(2) on a pid we just listed.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
