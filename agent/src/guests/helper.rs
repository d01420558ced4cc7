//! The daemon's libvirt calls, made in a child process: `hostagent guest-helper`, the daemon's
//! own executable (`/proc/self/exe`, so always the same build), one process per operation.
//!
//! Why a process and not libvirt in the daemon: loading libvirt maps it and its dependency tree
//! (glib, gio, gnutls, libxml2, libcurl, …: ~10 MiB resident, more than the daemon itself) and it
//! can never leave again: libvirt.so.0, glib and gio are linked `-z nodelete`, so `dlclose` is a
//! no-op (measured: RSS and /proc/self/maps unchanged after it). A helper that exits takes all of
//! it along; the daemon stays small however many guests it manages, and a libvirt crash or hang
//! cannot take the DHCP/TFTP/HTTP servers with it (the helper is killed after a timeout).
//!
//! The protocol: one JSON [`Call`] on the child's stdin, one JSON [`Reply`] on its stdout; its
//! stderr is the daemon's (log lines go to the same journal). The call carries the config *text*
//! the daemon validated, which the helper validates again with the same code: it works on exactly
//! the daemon's model, never on a file that changed since.
//!
//! Privileges: a helper started after the daemon's capability drop inherits the dropped set
//! (uid 0, CAP_NET_*, no_new_privs). That is enough: libvirtd answers uid 0 on its socket without
//! polkit, the volumes, domains and console logs are created by libvirtd, and the helper itself
//! only writes root-owned files in the state directory (rendered boot scripts, console log
//! directory), where owner permissions apply without CAP_DAC_OVERRIDE.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{GuestRow, LeaseView};
use crate::config::Model;

/// The subcommand the daemon starts (hidden from `--help`).
pub const SUBCOMMAND: &str = "guest-helper";

/// Defining and starting a fleet can take a while (libvirtd probes QEMU on its first start).
const APPLY_TIMEOUT: Duration = Duration::from_secs(300);
const ROWS_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// `guests::apply`: define and start the missing guests.
    Apply,
    /// `guests::rows` with the daemon's leases.
    Rows { leases: Vec<LeaseView> },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Call {
    /// The config file's path (for messages) and the text the daemon validated.
    pub config: PathBuf,
    pub text: String,
    /// The daemon's --root.
    pub root: PathBuf,
    pub request: Request,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Applied(Vec<String>),
    Rows(Vec<GuestRow>),
    Failed(String),
}

/// Daemon side: run `request` in a fresh helper and wait for its reply.
async fn call(model: &Model, root: &Path, request: Request, timeout: Duration) -> Result<Reply> {
    let call = Call {
        config: model.source.clone(),
        text: model.text.to_string(),
        root: root.to_path_buf(),
        request,
    };
    let input = serde_json::to_vec(&call)?;
    let mut child = tokio::process::Command::new("/proc/self/exe")
        .arg(SUBCOMMAND)
        .args(verbosity())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the guest helper (hostagent guest-helper)")?;
    let mut stdin = child.stdin.take().context("guest helper stdin")?;
    let mut stdout = child.stdout.take().context("guest helper stdout")?;
    let exchange = async {
        stdin.write_all(&input).await?;
        drop(stdin);
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).await?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out))
    };
    let (status, out) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the guest helper did not answer in {} s (is libvirtd hanging?): killed",
                timeout.as_secs()
            )
        })?
        .context("talking to the guest helper")?;
    if out.is_empty() {
        bail!("the guest helper exited ({status}) without a reply: see its log lines above");
    }
    serde_json::from_slice(&out).with_context(|| format!("the guest helper's reply ({status})"))
}

/// The daemon's own `-v` level, passed on (RUST_LOG is inherited anyway).
fn verbosity() -> Vec<&'static str> {
    match tracing::level_filters::LevelFilter::current() {
        tracing::level_filters::LevelFilter::TRACE => vec!["-vv"],
        tracing::level_filters::LevelFilter::DEBUG => vec!["-v"],
        _ => Vec::new(),
    }
}

/// [`super::apply`] in a helper; nothing is started when the config has no guests.
pub async fn apply(model: &Model, root: &Path) -> Result<Vec<String>> {
    if model.guests.is_empty() {
        return Ok(Vec::new());
    }
    match call(model, root, Request::Apply, APPLY_TIMEOUT).await? {
        Reply::Applied(done) => Ok(done),
        Reply::Failed(e) => Err(anyhow::anyhow!(e)),
        Reply::Rows(_) => bail!("the guest helper answered another request"),
    }
}

/// [`super::rows`] in a helper; without guests or clones no helper is started.
pub async fn rows(model: &Model, root: &Path, leases: Vec<LeaseView>) -> Result<Vec<GuestRow>> {
    if !super::rows_need_libvirt(model, root) {
        return Ok(super::rows(model, root, Some(leases)).await?);
    }
    match call(model, root, Request::Rows { leases }, ROWS_TIMEOUT).await? {
        Reply::Rows(rows) => Ok(rows),
        Reply::Failed(e) => Err(anyhow::anyhow!(e)),
        Reply::Applied(_) => bail!("the guest helper answered another request"),
    }
}

/// Helper side (`hostagent guest-helper`): one call from stdin, its reply on stdout.
pub async fn serve() -> Result<std::process::ExitCode> {
    let mut input = Vec::new();
    tokio::io::stdin()
        .read_to_end(&mut input)
        .await
        .context("reading the call")?;
    let call: Call = serde_json::from_slice(&input).context(
        "guest-helper is started by `hostagent run` and reads its call on stdin; it is not a command for people",
    )?;
    let reply = match crate::config::parse(&call.text, &call.config) {
        Err(e) => Reply::Failed(format!("the daemon's config no longer validates: {e}")),
        Ok(model) => match call.request {
            Request::Apply => match super::apply(&model, &call.root).await {
                Ok(done) => Reply::Applied(done),
                Err(e) => Reply::Failed(format!("{e:#}")),
            },
            Request::Rows { leases } => match super::rows(&model, &call.root, Some(leases)).await {
                Ok(rows) => Reply::Rows(rows),
                Err(e) => Reply::Failed(e.to_string()),
            },
        },
    };
    let mut out = tokio::io::stdout();
    out.write_all(&serde_json::to_vec(&reply)?).await?;
    out.flush().await?;
    Ok(std::process::ExitCode::SUCCESS)
}
