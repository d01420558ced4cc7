//! Root tests' network namespaces: a fresh one per test, entered by the test's thread (setns
//! affects only the calling thread, and the `nft` processes it spawns inherit it), left and
//! deleted on drop, also when the test fails.
//!
//! (The workspace's integration tests have their own kit in `tests/src`; netcfg's unit tests
//! cannot depend on that crate, which builds the agent.)

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};

pub(crate) struct TestNs {
    name: String,
    home: Option<OwnedFd>,
}

fn open(path: &str) -> OwnedFd {
    std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"))
        .into()
}

/// Move the calling thread into the network namespace at `path`; returns the one it was in.
fn setns(path: &str) -> OwnedFd {
    let home = open("/proc/thread-self/ns/net");
    let target = open(path);
    // SAFETY: setns(2) on an fd we own; affects only this thread.
    let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
    home
}

impl TestNs {
    pub(crate) fn new(tag: &str) -> TestNs {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("nc{}-{n}-{tag}", std::process::id() % 100000);
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("spawn ip");
        assert!(st.success(), "ip netns add {name} (these tests need root)");
        TestNs { name, home: None }
    }

    /// Run a command inside the namespace (from outside, via `ip netns exec`).
    pub(crate) fn exec(&self, argv: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(argv);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn ip netns exec");
        if let Some(mut pipe) = child.stdin.take() {
            use std::io::Write;
            let _ = pipe.write_all(stdin.unwrap_or("").as_bytes());
        }
        child.wait_with_output().expect("wait")
    }

    /// [`TestNs::exec`] that must succeed; its stdout.
    pub(crate) fn ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv, None);
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Move this thread into the namespace until drop.
    pub(crate) fn enter(&mut self) {
        self.home = Some(setns(&self.path()));
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Run `f` on a thread of its own inside the namespace whose children (the `nft` processes
    /// netcfg spawns) lack CAP_NET_ADMIN: the thread drops it from its capability bounding set,
    /// which exec'd programs inherit, while the thread itself keeps it (netlink still works). So
    /// `nft` really fails, with "Operation not permitted", as it does for an unprivileged
    /// caller. The thread ends with `f`; the test's own thread keeps every capability.
    pub(crate) fn without_nft_rights<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        const CAP_NET_ADMIN: libc::c_ulong = 12;
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&path);
                // SAFETY: prctl(2) with integer arguments; affects only this thread's bounding
                // set, and this thread ends when `f` returns.
                let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, CAP_NET_ADMIN, 0, 0, 0) };
                assert_eq!(
                    rc,
                    0,
                    "PR_CAPBSET_DROP: {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .expect("the thread without nft rights panicked")
        })
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            // SAFETY: back to the namespace this thread started in.
            unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) };
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
