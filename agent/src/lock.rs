//! One hostagent changes the host at a time: `apply`, `down` and `run` take an exclusive
//! `flock(2)` on the runtime directory `ROOT/run/hostagent` before they plan, and a second one
//! fails at once, naming the holder, instead of interleaving its steps with the first one's (two
//! applies racing on owned.json, or a `down` removing a bridge a running daemon is repairing).
//!
//! `flock` because the kernel releases it when the holder's descriptor closes, also when the
//! holder is killed with SIGKILL: a lock left behind by a dead process never blocks anyone, and
//! there is no stale-pid logic to get wrong. The directory itself is locked (flock works on a
//! directory's descriptor), so taking the lock writes no file: a failed or refused command
//! leaves every file under the root as it was. Who holds it is read from `/proc/locks`, the
//! kernel's own list, never from a file a dead holder could have left.
//!
//! `run` holds the lock for its whole life; its own drift repairs and SIGHUP reloads happen
//! inside the process that holds it and need no second lock (they are kept apart from each
//! other by the daemon's in-process host lock).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// What is locked, under the --root prefix: the runtime directory (systemd's
/// `RuntimeDirectory=hostagent`, where the control socket lives too), so the lock is host-wide
/// whatever `state_dir` a config names.
pub fn lock_path(root: &Path) -> PathBuf {
    root.join("run/hostagent")
}

/// The held lock; dropping it (or the process ending in any way) releases it.
#[derive(Debug)]
pub struct HostLock {
    _dir: File,
    path: PathBuf,
}

impl HostLock {
    /// Take the lock for `command` ("apply", "down", "run") or fail with a message naming the
    /// process that holds it.
    pub fn acquire(root: &Path, command: &str) -> Result<HostLock> {
        let path = lock_path(root);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let dir = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own.
        let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                anyhow::bail!("{}", held_message(&dir, &path));
            }
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
        tracing::debug!(lock = %path.display(), command, "host lock taken");
        Ok(HostLock { _dir: dir, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid holding a FLOCK on the inode `ino`, from `/proc/locks` lines such as
/// `1: FLOCK  ADVISORY  WRITE 3499 fd:01:1234567 0 EOF`.
fn holder_pid(locks: &str, ino: u64) -> Option<u32> {
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (kind, pid, dev_ino) = (f.get(1)?, f.get(4)?, f.get(5)?);
        let this_ino = dev_ino.rsplit(':').next()?.parse::<u64>().ok()?;
        (*kind == "FLOCK" && this_ino == ino).then(|| pid.parse().ok())?
    })
}

/// The hostagent subcommand a process runs, from its command line.
fn command_of(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    args.iter()
        .find(|a| matches!(a.as_str(), "apply" | "down" | "run"))
        .cloned()
}

/// "another hostagent (pid N, `hostagent run`) holds ..."
fn held_message(dir: &File, path: &Path) -> String {
    let pid = dir.metadata().ok().and_then(|m| {
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        holder_pid(&locks, m.ino())
    });
    let holder = match pid {
        Some(pid) => match command_of(pid) {
            Some(cmd) => format!("pid {pid}, `hostagent {cmd}`"),
            None => format!("pid {pid}"),
        },
        None => "pid unknown".to_string(),
    };
    format!(
        "another hostagent ({holder}) holds the lock on {}: wait for it to finish, or stop it \
         (a running daemon: `systemctl stop hostagent`) and try again",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_naming_the_holder_and_a_dropped_one_is_free_again() {
        let dir = tempfile::tempdir().unwrap();
        let first = HostLock::acquire(dir.path(), "run").unwrap();
        // flock locks belong to the open file description: a second open in this very process
        // conflicts like another process would.
        let err = HostLock::acquire(dir.path(), "apply")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id()))
                && err.contains("holds the lock on")
                && err.contains("wait for it"),
            "{err}"
        );
        drop(first);
        let again = HostLock::acquire(dir.path(), "down").unwrap();
        assert!(again.path().is_dir());
        assert_eq!(
            std::fs::read_dir(again.path()).unwrap().count(),
            0,
            "taking the lock writes no file"
        );
    }

    #[test]
    fn the_holder_is_read_from_proc_locks_by_inode() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 fd:01:42 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 3499 00:1f:1234567 0 EOF\n";
        assert_eq!(holder_pid(locks, 1234567), Some(3499));
        assert_eq!(holder_pid(locks, 42), None, "a POSIX lock is not ours");
        assert_eq!(holder_pid("garbage\n", 1), None);
    }
}
