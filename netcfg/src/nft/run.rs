//! The one way netcfg runs the `nft` binary: every invocation (observe, replace, delete, the
//! rollback's save and restore, `check`) goes through [`run`].
//!
//! `LC_ALL=C` because the one message we interpret, the kernel's ENOENT ("No such file or
//! directory"), would otherwise be translated; stderr is captured and handed to the user verbatim.
//! Telling "the table does not exist" apart from "nft failed" matters: a rollback that took a
//! failed listing for an absent table would delete the table instead of restoring it, and `down`
//! would report nothing to remove while the table stays.

use std::io::Write;
use std::process::{Command, Stdio};

/// Why an `nft` run did not give us what we asked for.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// No `nft` binary on PATH.
    #[error("the `nft` command was not found on PATH; install the `nftables` package")]
    Missing,
    /// nft could not be started, fed or waited for.
    #[error("running nft ({action}): {source}")]
    Io {
        action: String,
        source: std::io::Error,
    },
    /// nft ran and said the object it was asked about does not exist (the kernel's ENOENT).
    /// Only this one means "absent"; everything else is [`NftError::Failed`].
    #[error("nft {action} failed:\n{stderr}")]
    Absent { action: String, stderr: String },
    /// nft ran and failed; `stderr` is its own message, verbatim.
    #[error("nft {action} failed:\n{stderr}")]
    Failed { action: String, stderr: String },
    /// `nft -j` printed something we cannot read.
    #[error("cannot read `nft -j` output: {0}")]
    Output(String),
}

/// Does nft's stderr say the object does not exist? nft prints the kernel's error on its
/// `Error:` lines ("Error: No such file or directory", "Error: Could not process rule: No such
/// file or directory"); the echoed command below them is not looked at.
fn says_absent(stderr: &str) -> bool {
    stderr
        .lines()
        .any(|l| l.starts_with("Error:") && l.contains("No such file or directory"))
}

/// Run `nft args...`, feeding `stdin` when given; `action` names the run in errors. Returns
/// nft's stdout.
pub(crate) fn run(args: &[&str], stdin: Option<&str>, action: &str) -> Result<String, NftError> {
    let io = |source| NftError::Io {
        action: action.to_string(),
        source,
    };
    let mut child = Command::new("nft")
        .args(args)
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NftError::Missing,
            _ => io(e),
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error means nft exited early; its exit status and stderr say why.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(io)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    if stderr.is_empty() {
        stderr = format!("(no message; {})", out.status);
    }
    let action = action.to_string();
    Err(if says_absent(&stderr) {
        NftError::Absent { action, stderr }
    } else {
        NftError::Failed { action, stderr }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_enoent_on_an_error_line_means_absent() {
        // nft 1.0.6, `list table inet nope` in a namespace without that table.
        assert!(says_absent(
            "Error: No such file or directory\nlist table inet nope\n                ^^^^"
        ));
        assert!(says_absent(
            "Error: Could not process rule: No such file or directory\ndelete table inet x"
        ));
        // Without CAP_NET_ADMIN (what `nft list` prints for an unprivileged caller).
        assert!(!says_absent(
            "Operation not permitted (you must be root)\nnetlink: Error: cache initialization failed: Operation not permitted"
        ));
        assert!(!says_absent("Error: syntax error, unexpected junk"));
        // The echoed command is not the error.
        assert!(!says_absent(
            "Error: syntax error\nadd rule inet t c comment \"No such file or directory\""
        ));
    }
}
