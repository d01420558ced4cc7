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
//! One helper per libvirt daemon (`[libvirt] uri` and each `[[libvirt.host]]` with guests), run
//! side by side: a remote host that hangs is killed at its timeout and delays no other host.
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
    /// The `[[libvirt.host]]` whose guests this call is about; None: `[libvirt] uri`'s.
    #[serde(default)]
    pub host: Option<String>,
    pub request: Request,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Applied(Vec<String>),
    Rows(Vec<GuestRow>),
    Failed(String),
}

/// Daemon side: run `request` in a fresh helper and wait for its reply.
async fn call(
    model: &Model,
    root: &Path,
    host: Option<&str>,
    request: Request,
    timeout: Duration,
) -> Result<Reply> {
    let call = Call {
        config: model.source.clone(),
        text: model.text.to_string(),
        root: root.to_path_buf(),
        host: host.map(str::to_string),
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
                "the guest helper for host {} did not answer in {} s (is libvirtd hanging?): killed",
                super::host_label(host),
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

/// [`super::apply`]: one helper per host with guests, side by side. Every host is tried; the
/// error names each host that failed.
pub async fn apply(model: &Model, root: &Path) -> Result<Vec<String>> {
    let mut runs = tokio::task::JoinSet::new();
    for (i, host) in super::hosts(model).into_iter().enumerate() {
        if !model.guests.iter().any(|g| g.host == host) {
            continue;
        }
        let (m, r) = (model.clone(), root.to_path_buf());
        runs.spawn(async move {
            let r = apply_on(&m, &r, host.as_deref()).await;
            (i, host, r)
        });
    }
    let mut results = runs.join_all().await;
    results.sort_by_key(|(i, _, _)| *i);
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for (_, host, r) in results {
        match r {
            Ok(d) => done.extend(d),
            Err(e) => failed.push(format!(
                "host {}: {e:#}",
                super::host_label(host.as_deref())
            )),
        }
    }
    // What the other hosts' helpers did is in their own log lines already.
    if failed.is_empty() {
        Ok(done)
    } else {
        bail!("{}", failed.join("; "))
    }
}

async fn apply_on(model: &Model, root: &Path, host: Option<&str>) -> Result<Vec<String>> {
    match call(model, root, host, Request::Apply, APPLY_TIMEOUT).await? {
        Reply::Applied(done) => Ok(done),
        Reply::Failed(e) => Err(anyhow::anyhow!(e)),
        Reply::Rows(_) => bail!("the guest helper answered another request"),
    }
}

/// [`super::rows`]: one helper per host that has something of ours, side by side; a host that
/// fails lists its config guests as `unreachable`, like the in-process listing.
pub async fn rows(model: &Model, root: &Path, leases: Vec<LeaseView>) -> Result<Vec<GuestRow>> {
    let mut runs = tokio::task::JoinSet::new();
    for (i, host) in super::hosts(model).into_iter().enumerate() {
        let (m, r, l) = (model.clone(), root.to_path_buf(), leases.clone());
        runs.spawn(async move {
            let rows = rows_on(&m, &r, l, host.as_deref()).await;
            (i, host, rows)
        });
    }
    let mut results = runs.join_all().await;
    results.sort_by_key(|(i, _, _)| *i);
    let mut out = Vec::new();
    for (_, host, r) in results {
        match r {
            Ok(rows) => out.extend(rows),
            Err(e) if host.is_some() => {
                tracing::warn!(host = super::host_label(host.as_deref()), "guests: {e:#}");
                out.extend(super::unreachable_rows(model, host.as_deref()));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

async fn rows_on(
    model: &Model,
    root: &Path,
    leases: Vec<LeaseView>,
    host: Option<&str>,
) -> Result<Vec<GuestRow>> {
    let share = super::on_host(model, host)?;
    if !super::rows_need_libvirt(&share, root, host) {
        return Ok(super::rows_on(model, root, Some(leases), host).await?);
    }
    match call(model, root, host, Request::Rows { leases }, ROWS_TIMEOUT).await? {
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
    let host = call.host.as_deref();
    let reply = match crate::config::parse(&call.text, &call.config) {
        Err(e) => Reply::Failed(format!("the daemon's config no longer validates: {e}")),
        Ok(model) => match call.request {
            Request::Apply => match super::apply_on(&model, &call.root, host).await {
                Ok(done) => Reply::Applied(done),
                Err(e) => Reply::Failed(format!("{e:#}")),
            },
            Request::Rows { leases } => {
                match super::rows_on(&model, &call.root, Some(leases), host).await {
                    Ok(rows) => Reply::Rows(rows),
                    Err(e) => Reply::Failed(e.to_string()),
                }
            }
        },
    };
    let mut out = tokio::io::stdout();
    out.write_all(&serde_json::to_vec(&reply)?).await?;
    out.flush().await?;
    Ok(std::process::ExitCode::SUCCESS)
}
