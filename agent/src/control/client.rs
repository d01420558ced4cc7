//! The CLI's side of the control socket: ask the running daemon, and `hostagent status` and
//! `hostagent leases`, which print its replies.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{socket_path, ErrorReply, LeasesReply, Reply, Request, StatusReply};

/// Ask the daemon under `root` for `R`; its error reply becomes an error here.
pub async fn ask<R: Reply>(root: &Path) -> Result<R> {
    let path = socket_path(root);
    let mut stream = UnixStream::connect(&path).await.with_context(|| {
        format!(
            "cannot reach the daemon at {}: is `hostagent run` running (as root)?",
            path.display()
        )
    })?;
    let mut request = serde_json::to_string(&Request { cmd: R::COMMAND })?;
    request.push('\n');
    stream.write_all(request.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await?;
    decode(&line)
}

/// A reply line: the daemon's error, or `R`.
pub(super) fn decode<R: Reply>(line: &str) -> Result<R> {
    if let Ok(ErrorReply { error }) = serde_json::from_str(line) {
        anyhow::bail!("daemon: {error}");
    }
    serde_json::from_str(line).context("daemon sent a malformed answer")
}

/// `hostagent status`.
pub async fn status(root: &Path, json: bool) -> Result<ExitCode> {
    let s: StatusReply = ask(root).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "config: {}  uptime: {}s  agent: {}  leases: {}",
        s.config, s.uptime_seconds, s.agent, s.lease_backend
    );
    println!(
        "{:<14} {:<9} {:<15} {:<18}",
        "NETWORK", "MODE", "BRIDGE", "ADDRESS"
    );
    for n in &s.networks {
        let mut address = n.address.map_or("-".to_string(), |a| a.to_string());
        if let Some(a6) = n.address6 {
            address.push_str(&format!(" {a6}"));
        }
        println!(
            "{:<14} {:<9} {:<15} {:<18}",
            n.name, n.mode, n.bridge, address
        );
    }
    let now = pxe::dhcp::pool::unix_now();
    for server in &s.servers {
        println!("{}:", server.network);
        if let Some(d) = &server.dhcp {
            // The store has a line of its own, below.
            let mut fields = serde_json::to_value(d)?;
            if let Some(o) = fields.as_object_mut() {
                o.remove("store");
                o.remove("leases_by_agent");
            }
            print_fields("dhcp", &fields);
            if let Some(store) = &d.store {
                println!("  {}", store_line(store, &d.leases_by_agent, now));
            }
        }
        print_counters("tftp", server.tftp.as_ref())?;
        print_counters("http", server.http.as_ref())?;
        print_counters("ra", server.ra.as_ref())?;
        print_counters("dns", server.dns.as_ref())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `leases postgres postgresql:///… available since 60s, by agent: a=150 b=148`, or what is
/// wrong: the line an operator looks for when no client gets an address.
fn store_line(
    store: &pxe::dhcp::store::StoreStatus,
    by_agent: &std::collections::BTreeMap<String, usize>,
    now: u64,
) -> String {
    let since = now.saturating_sub(store.since);
    let state = if store.available {
        format!("available for {since}s")
    } else {
        format!(
            "UNAVAILABLE for {since}s (no lease is acknowledged): {}",
            store.last_error.as_deref().unwrap_or("unknown error")
        )
    };
    let agents: Vec<String> = by_agent.iter().map(|(a, n)| format!("{a}={n}")).collect();
    let agents = if agents.is_empty() {
        "none".to_string()
    } else {
        agents.join(" ")
    };
    format!(
        "leases {} {} {state}; failures={}; leases by agent: {agents}",
        store.backend, store.location, store.failures
    )
}

/// `  dhcp  acks=3 interface="br-lab" ...`: every field of a server's status, by name.
fn print_counters(kind: &str, status: Option<&impl Serialize>) -> Result<()> {
    let Some(status) = status else {
        return Ok(());
    };
    print_fields(kind, &serde_json::to_value(status)?);
    Ok(())
}

fn print_fields(kind: &str, value: &serde_json::Value) {
    let fields: Vec<String> = value
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("  {kind:<5} {}", fields.join(" "));
}

/// `hostagent leases`.
pub async fn leases(root: &Path, json: bool) -> Result<ExitCode> {
    let reply: LeasesReply = ask(root).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply.leases)?);
        return Ok(ExitCode::SUCCESS);
    }
    // The leases' own clock.
    let now = pxe::dhcp::pool::unix_now();
    println!(
        "{:<12} {:<17} {:<15} {:<20} {:<12} {:<12} CLIENT ID",
        "NETWORK", "MAC", "IP", "HOSTNAME", "EXPIRES IN", "AGENT"
    );
    for net in &reply.leases {
        for l in &net.leases {
            println!(
                "{:<12} {:<17} {:<15} {:<20} {:<12} {:<12} {}",
                net.network,
                l.mac.to_string(),
                l.ip.to_string(),
                l.hostname.as_deref().unwrap_or("-"),
                format!("{}s", l.expires.saturating_sub(now)),
                l.agent.as_deref().unwrap_or("-"),
                l.client_id
                    .as_ref()
                    .map_or_else(|| "-".to_string(), ToString::to_string)
            );
        }
    }
    let v6: Vec<_> = reply
        .leases
        .iter()
        .flat_map(|n| n.leases6.iter().map(move |l| (&n.network, l)))
        .collect();
    if !v6.is_empty() {
        println!();
        println!(
            "{:<12} {:<17} {:<39} {:<20} {:<12} {:<10} DUID",
            "NETWORK", "MAC", "IPv6", "HOSTNAME", "EXPIRES IN", "IAID"
        );
        for (network, l) in v6 {
            println!(
                "{:<12} {:<17} {:<39} {:<20} {:<12} {:<10} {}",
                network,
                l.mac.map_or_else(|| "-".to_string(), |m| m.to_string()),
                l.ip.to_string(),
                l.hostname.as_deref().unwrap_or("-"),
                format!("{}s", l.expires.saturating_sub(now)),
                l.iaid,
                l.duid
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
