//! The CLI's guest commands: `hostagent guests` and `hostagent guest clone|virtio|vhost`.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::Cli;
use crate::config::Model;
use crate::control::client;
use crate::control::protocol::GuestsReply;
use crate::guests::conn::{self, with_conn};
use crate::guests::ops::{self, CloneRequest};
use crate::guests::{self, GuestRow};
use crate::hostcmd;

/// Ask the daemon (it knows the leases); without one, read libvirt and the console logs here.
pub async fn list(cli: &Cli, json: bool) -> Result<ExitCode> {
    let (rows, daemon_seen): (Vec<GuestRow>, bool) = match client::ask(&cli.root).await {
        Ok(GuestsReply { guests }) => (guests, true),
        Err(e) => {
            tracing::debug!("no daemon for `guests`: {e:#}");
            let model = hostcmd::load(cli)?;
            (guests::rows(&model, &cli.root, None).await?, false)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        guests::print_rows(&rows, daemon_seen);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn clone(cli: &Cli, source: &str, new: &str, count: u32, full: bool) -> Result<ExitCode> {
    let model = hostcmd::load(cli)?;
    if count == 0 {
        anyhow::bail!("--count must be at least 1");
    }
    let (m, root) = (model.clone(), cli.root.clone());
    let (source, new) = (source.to_string(), new.to_string());
    print_lines(&model, "guest clone", move |c| {
        ops::clone_blocking(
            c,
            &m,
            &root,
            &CloneRequest {
                source: &source,
                new: &new,
                count,
                full,
            },
        )
    })
    .await?;
    println!("note: a running `hostagent run` serves the new reservations after SIGHUP (systemctl reload hostagent)");
    Ok(ExitCode::SUCCESS)
}

pub async fn virtio(cli: &Cli, name: &str, next_boot: bool) -> Result<ExitCode> {
    let model = hostcmd::load(cli)?;
    let name = name.to_string();
    print_lines(&model, "guest virtio", move |c| {
        ops::virtio_blocking(c, &name, next_boot)
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn vhost(cli: &Cli, name: &str, on: bool, next_boot: bool) -> Result<ExitCode> {
    let model = hostcmd::load(cli)?;
    let name = name.to_string();
    print_lines(&model, "guest vhost", move |c| {
        ops::vhost_blocking(c, &name, on, next_boot)
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Run the operation `what` on the config's libvirt connection (on the blocking pool) and print
/// the lines it reports.
async fn print_lines(
    model: &Model,
    what: &'static str,
    op: impl FnOnce(&conn::Conn) -> Result<Vec<String>> + Send + 'static,
) -> Result<()> {
    let lines = with_conn(&model.libvirt.uri, move |c| {
        op(c).map_err(|e| conn::LibvirtError::Call {
            what: what.into(),
            message: format!("{e:#}"),
        })
    })
    .await?;
    for l in &lines {
        println!("{l}");
    }
    Ok(())
}
