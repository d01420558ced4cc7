//! One hostagent changes the host at a time: `apply`, `down` and `run` take an exclusive
//! `flock(2)` on `ROOT/run/hostagent/lock` before they plan, and a second one fails at once,
//! naming the holder, instead of interleaving its steps with the first one's (two applies racing
//! on owned.json, or a `down` removing a bridge a running daemon is repairing).
//!
//! `flock` because the kernel releases it when the holder's descriptor closes, also when the
//! holder is killed with SIGKILL: a lock left behind by a dead process never blocks anyone, and
//! there is no stale-pid logic to get wrong. The file itself is never deleted (unlinking a lock
//! file lets a third process lock a fresh inode while a second still holds the old one); its
//! content, the holder's pid and command, is only for the message.
//!
//! `run` holds the lock for its whole life; its own drift repairs and SIGHUP reloads happen
//! inside the process that holds it and need no second lock (they are kept apart from each
//! other by the daemon's in-process host lock).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the lock lives under the --root prefix: the runtime directory (systemd's
/// `RuntimeDirectory=hostagent`), so it is host-wide whatever `state_dir` a config names.
pub fn lock_path(root: &Path) -> PathBuf {
    root.join("run/hostagent/lock")
}

/// The held lock; dropping it (or the process ending in any way) releases it.
#[derive(Debug)]
pub struct HostLock {
    _file: File,
    path: PathBuf,
}

impl HostLock {
    /// Take the lock for `command` ("apply", "down", "run") or fail with a message naming the
    /// process that holds it.
    pub fn acquire(root: &Path, command: &str) -> Result<HostLock> {
        let path = lock_path(root);
        let dir = path.parent().unwrap_or(root);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                anyhow::bail!("{}", held_message(&mut file, &path));
            }
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
        let note = format!("{} {command}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(note.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
        tracing::debug!(lock = %path.display(), "host lock taken");
        Ok(HostLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// "another hostagent (pid N, `run`) holds ...", from what the holder wrote into the file.
fn held_message(file: &mut File, path: &Path) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let mut words = text.split_whitespace();
    let holder = match (
        words.next().and_then(|p| p.parse::<u32>().ok()),
        words.next(),
    ) {
        (Some(pid), Some(cmd)) => format!("pid {pid}, `hostagent {cmd}`"),
        (Some(pid), None) => format!("pid {pid}"),
        _ => "pid unknown".to_string(),
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
            err.contains(&format!("pid {}, `hostagent run`", std::process::id()))
                && err.contains("holds the lock on")
                && err.contains("wait for it"),
            "{err}"
        );
        drop(first);
        let again = HostLock::acquire(dir.path(), "down").unwrap();
        let text = std::fs::read_to_string(again.path()).unwrap();
        assert_eq!(text, format!("{} down\n", std::process::id()));
    }
}
