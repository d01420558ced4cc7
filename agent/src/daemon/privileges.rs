//! Least privilege for `hostagent run`: once the host is applied and every socket is open, the
//! daemon keeps only what drift repair, a SIGHUP reload and a server restart still need:
//!
//! - CAP_NET_ADMIN: netlink changes, nftables (the `nft` child inherits it, see below);
//! - CAP_NET_RAW: the AF_PACKET socket a restarted DHCP server opens, and the raw ICMPv6 socket a
//!   router advertiser opens whenever its bridge (re)gains its link-local address;
//! - CAP_NET_BIND_SERVICE: rebinding ports 67, 69 (and a low HTTP port) after a bridge is recreated.
//!
//! Everything else leaves the effective, permitted, inheritable, ambient and bounding sets, and
//! no_new_privs is set. Files stay writable without CAP_DAC_OVERRIDE because uid 0 owns them
//! (/proc/sys, the state dir, /etc/sysctl.d): plain owner permissions apply. `nft` runs as a child:
//! exec as uid 0 gives it permitted = bounding set, which still holds CAP_NET_ADMIN, and
//! no_new_privs caps it at our permitted set, which holds it too.
//!
//! Capabilities and no_new_privs are per *thread* in Linux, and the runtime already has worker
//! threads when we get here. So, like libcap's psx, every thread is asked by a signal to drop its
//! own, and the result is verified in /proc/self/task/*/status for each of them.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The capabilities the daemon keeps, by number (linux/capability.h) and name.
pub const KEPT: [(u32, &str); 3] = [
    (10, "cap_net_bind_service"),
    (12, "cap_net_admin"),
    (13, "cap_net_raw"),
];

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        source: std::io::Error,
    },
    #[error("installing the privilege-drop signal handler: {0}")]
    Handler(std::io::Error),
    #[error("signal {0} is already in use: cannot ask the other threads to drop privileges")]
    SignalBusy(i32),
    #[error("dropping privileges on this thread failed: {0}")]
    Drop(std::io::Error),
    #[error("thread(s) {0} still hold more than the kept capabilities after 3 s")]
    Threads(String),
}

/// What [`drop_privileges`] achieved, for the log line.
#[derive(Debug, Clone)]
pub struct Dropped {
    pub kept: Vec<&'static str>,
    /// Threads verified in /proc/self/task.
    pub threads: usize,
}

/// The capability bits of [`KEPT`].
pub fn kept_mask() -> u64 {
    KEPT.iter().fold(0, |m, (n, _)| m | (1u64 << n))
}

/// The keep-mask and highest capability number, read by the signal handler.
static KEEP: AtomicU64 = AtomicU64::new(0);
static LAST_CAP: AtomicU32 = AtomicU32::new(0);
/// One drop at a time (the statics above are shared).
static LOCK: Mutex<()> = Mutex::new(());

/// Drop to [`KEPT`] on every thread of the process and verify it. Idempotent.
pub fn drop_privileges() -> Result<Dropped, PrivilegeError> {
    let _one = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    KEEP.store(kept_mask(), Ordering::SeqCst);
    LAST_CAP.store(last_cap()?, Ordering::SeqCst);
    let sig = drop_signal();
    install_handler(sig)?;
    drop_this_thread(kept_mask(), last_cap()?).map_err(PrivilegeError::Drop)?;

    // SAFETY: getpid/gettid cannot fail.
    let (pid, me) = unsafe { (libc::getpid(), libc::syscall(libc::SYS_gettid) as i32) };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut asked: Vec<(i32, Instant)> = Vec::new();
    loop {
        // New threads inherit from their creator: a rescan catches one made by a thread that had
        // not dropped yet; once a scan finds every thread verified, no such creator is left.
        let mut pending = Vec::new();
        let mut verified = 0;
        for tid in task_ids()? {
            match thread_state(tid) {
                Some(st) if st.is_dropped(kept_mask()) => verified += 1,
                Some(_) => pending.push(tid),
                None => {} // exited meanwhile
            }
        }
        if pending.is_empty() {
            return Ok(Dropped {
                kept: KEPT.iter().map(|(_, n)| *n).collect(),
                threads: verified,
            });
        }
        if Instant::now() > deadline {
            let list: Vec<String> = pending.iter().map(|t| t.to_string()).collect();
            return Err(PrivilegeError::Threads(list.join(", ")));
        }
        for tid in pending {
            if tid == me {
                continue;
            }
            // Ask again if a previous signal seems lost (e.g. the thread was mid-exit).
            let recent = asked
                .iter()
                .any(|(t, at)| *t == tid && at.elapsed() < Duration::from_millis(200));
            if !recent {
                // SAFETY: tgkill to a thread of our own process; a vanished tid gives ESRCH.
                unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) };
                asked.retain(|(t, _)| *t != tid);
                asked.push((tid, Instant::now()));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The real-time signal used to reach the other threads (glibc keeps the first two for itself;
/// SIGRTMIN() already skips those).
fn drop_signal() -> i32 {
    libc::SIGRTMIN() + 5
}

extern "C" fn on_drop_signal(_sig: libc::c_int) {
    // Only raw syscalls here: async-signal-safe. errno is restored for the interrupted code.
    // SAFETY: __errno_location is thread-local and always valid.
    let saved = unsafe { *libc::__errno_location() };
    let _ = drop_this_thread(KEEP.load(Ordering::SeqCst), LAST_CAP.load(Ordering::SeqCst));
    // SAFETY: the same thread-local errno slot, written back before the handler returns.
    unsafe { *libc::__errno_location() = saved };
}

fn install_handler(sig: i32) -> Result<(), PrivilegeError> {
    // SAFETY: sigaction with a zeroed struct and a plain handler; the old action is read back
    // first so a signal someone else uses is never taken over.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
            return Err(PrivilegeError::Handler(std::io::Error::last_os_error()));
        }
        let ours = on_drop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != ours {
            return Err(PrivilegeError::SignalBusy(sig));
        }
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = ours;
        // SA_RESTART: the interrupted syscalls of other threads resume instead of failing EINTR.
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        // The handler stays installed: a late duplicate signal must not hit the default action
        // (which for a real-time signal is to terminate).
        if libc::sigaction(sig, &act, std::ptr::null_mut()) != 0 {
            return Err(PrivilegeError::Handler(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Drop on the calling thread only. Order matters: the bounding set first (PR_CAPBSET_DROP needs
/// CAP_SETPCAP, which the capset below removes), then ambient, then the thread's own sets.
fn drop_this_thread(keep: u64, last_cap: u32) -> Result<(), std::io::Error> {
    // SAFETY: prctl/capget/capset are raw syscalls on the calling thread with valid arguments.
    unsafe {
        if libc::syscall(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(errno());
        }
        for cap in 0..=last_cap {
            if keep & (1u64 << cap) != 0 {
                continue;
            }
            // Already out of the bounding set (e.g. under systemd's CapabilityBoundingSet, which
            // also removes CAP_SETPCAP): nothing to drop, and dropping would need CAP_SETPCAP.
            if libc::syscall(libc::SYS_prctl, libc::PR_CAPBSET_READ, cap, 0, 0, 0) == 0 {
                continue;
            }
            if libc::syscall(libc::SYS_prctl, libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                return Err(errno());
            }
        }
        // EINVAL only on kernels without ambient capabilities (< 4.3): nothing to clear there.
        if libc::syscall(
            libc::SYS_prctl,
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) != 0
            && *libc::__errno_location() != libc::EINVAL
        {
            return Err(errno());
        }
        let mut hdr = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        if libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        ) != 0
        {
            return Err(errno());
        }
        let permitted = u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32);
        // Keeping only what we have: capset refuses to raise permitted.
        let new = permitted & keep;
        let lo = new as u32;
        let hi = (new >> 32) as u32;
        let set = [
            CapData {
                effective: lo,
                permitted: lo,
                inheritable: 0,
            },
            CapData {
                effective: hi,
                permitted: hi,
                inheritable: 0,
            },
        ];
        let mut hdr = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        if libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, set.as_ptr()) != 0 {
            return Err(errno());
        }
    }
    Ok(())
}

fn last_cap() -> Result<u32, PrivilegeError> {
    let path = "/proc/sys/kernel/cap_last_cap";
    let text = std::fs::read_to_string(path).map_err(|source| PrivilegeError::Read {
        what: path.into(),
        source,
    })?;
    // The kernel cannot report more than our 64-bit masks hold; clamp rather than overflow.
    Ok(text.trim().parse::<u32>().unwrap_or(40).min(63))
}

fn task_ids() -> Result<BTreeSet<i32>, PrivilegeError> {
    let dir = "/proc/self/task";
    let entries = std::fs::read_dir(dir).map_err(|source| PrivilegeError::Read {
        what: dir.into(),
        source,
    })?;
    Ok(entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect())
}

/// One thread's credentials as the kernel reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadCaps {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
    pub no_new_privs: bool,
}

impl ThreadCaps {
    /// Parse the Cap*/NoNewPrivs lines of a /proc/.../status file.
    pub fn parse(status: &str) -> ThreadCaps {
        let mut c = ThreadCaps::default();
        for line in status.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let hex = || u64::from_str_radix(value, 16).unwrap_or(u64::MAX);
            match key {
                "CapInh" => c.inheritable = hex(),
                "CapPrm" => c.permitted = hex(),
                "CapEff" => c.effective = hex(),
                "CapBnd" => c.bounding = hex(),
                "CapAmb" => c.ambient = hex(),
                "NoNewPrivs" => c.no_new_privs = value == "1",
                _ => {}
            }
        }
        c
    }

    pub fn is_dropped(&self, keep: u64) -> bool {
        self.no_new_privs
            && self.inheritable == 0
            && self.ambient == 0
            && self.permitted & !keep == 0
            && self.effective & !keep == 0
            && self.bounding & !keep == 0
    }
}

fn thread_state(tid: i32) -> Option<ThreadCaps> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
        .ok()
        .map(|s| ThreadCaps::parse(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_STATUS: &str = "Name:\thostagent\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
        CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\n";
    const DROPPED_STATUS: &str = "CapInh:\t0000000000000000\nCapPrm:\t0000000000003400\n\
        CapEff:\t0000000000003400\nCapBnd:\t0000000000003400\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";

    #[test]
    fn kept_mask_is_net_admin_raw_and_bind_service() {
        // The value `setpriv`/capsh print for exactly these three.
        assert_eq!(kept_mask(), 0x3400);
    }

    #[test]
    fn full_root_is_not_dropped_and_the_kept_set_is() {
        assert!(!ThreadCaps::parse(ROOT_STATUS).is_dropped(kept_mask()));
        let d = ThreadCaps::parse(DROPPED_STATUS);
        assert!(d.is_dropped(kept_mask()), "{d:?}");
        // Without no_new_privs it does not count.
        let no_nnp = DROPPED_STATUS.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0");
        assert!(!ThreadCaps::parse(&no_nnp).is_dropped(kept_mask()));
        // One extra bounding capability (CAP_SYS_ADMIN, 21) does not count either.
        let extra =
            DROPPED_STATUS.replace("CapBnd:\t0000000000003400", "CapBnd:\t0000000000203400");
        assert!(!ThreadCaps::parse(&extra).is_dropped(kept_mask()));
    }

    #[test]
    fn unreadable_values_count_as_everything() {
        let junk = DROPPED_STATUS.replace("CapEff:\t0000000000003400", "CapEff:\tzz");
        assert!(!ThreadCaps::parse(&junk).is_dropped(kept_mask()));
    }
}
