//! Drift repair while `run` is active: when someone deletes our bridge or its address, flushes
//! the nftables ruleset, turns ip_forward off or changes the bridge MAC, the daemon notices and
//! puts the host back within about a second, through the same plan + apply as `hostagent apply`.
//!
//! Two triggers, both ending in one re-plan:
//! - rtnetlink multicast (link and IPv4 address groups) for what the kernel announces; a burst of
//!   events is debounced so one `ip link del` does not cause a dozen plans;
//! - a periodic re-observe for what it does not announce (nftables, sysctls, files).
//!
//! The plan only ever names the agent's own objects (its table, its bridges, its sysctls), so a
//! foreign table or bridge is never touched. A repaired bridge that had to be recreated has a new
//! ifindex: that network's servers are restarted, since the DHCP sockets are bound to the old one.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use netcfg::{Action, Host};
use tokio::io::unix::AsyncFd;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use super::services;
use crate::config::Model;

/// Test hook and tuning knob: milliseconds between periodic re-observes (default 1000).
pub const INTERVAL_ENV: &str = "HOSTAGENT_DRIFT_INTERVAL_MS";
const DEFAULT_INTERVAL: Duration = Duration::from_millis(1000);
/// Quiet time after a netlink event before re-planning: `ip link del` alone sends several.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// Retry delay after a new error: most are races with the very change being made (an `nft list`
/// while someone's `nft flush ruleset` runs), gone a moment later.
const RETRY: Duration = Duration::from_millis(200);

/// What the watcher needs from the daemon.
pub struct Context {
    /// The --root prefix.
    pub root: PathBuf,
    /// The running config; SIGHUP sends the new one.
    pub model: watch::Receiver<Model>,
    pub services: services::Shared,
    /// Held by whoever changes the host (a repair here, a SIGHUP reload there), so two applies
    /// never interleave.
    pub host_lock: Arc<Mutex<()>>,
}

/// The running watcher; [`DriftWatcher::stop`] waits for a repair in progress to finish, so a
/// stop never leaves an apply half done.
pub struct DriftWatcher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl DriftWatcher {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The periodic interval from [`INTERVAL_ENV`], or the default when unset or not a positive number.
pub fn interval_from_env() -> Duration {
    parse_interval(std::env::var(INTERVAL_ENV).ok().as_deref())
}

fn parse_interval(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_INTERVAL)
}

/// Subscribe to link and address events and start watching. Fails only when the netlink socket
/// cannot be opened (then nothing was started).
pub fn spawn(ctx: Context) -> Result<DriftWatcher> {
    let events = LinkEvents::open().context("subscribing to rtnetlink link/address events")?;
    let (stop, stop_rx) = watch::channel(false);
    let interval = interval_from_env();
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "drift watcher running"
    );
    let task = tokio::spawn(watch_loop(ctx, events, interval, stop_rx));
    Ok(DriftWatcher { stop, task })
}

async fn watch_loop(
    ctx: Context,
    events: LinkEvents,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_error: Option<String> = None;
    let mut next_check = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep_until(next_check) => {}
            r = events.wait() => {
                if let Err(e) = r {
                    tracing::error!("drift: netlink events unreadable, only the periodic check remains: {e}");
                    break;
                }
                // Let the burst finish, then swallow it: one plan covers all of it.
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(DEBOUNCE) => {}
                }
                events.drain();
            }
        }
        let wait = if check_and_repair(&ctx, &mut last_error).await {
            interval
        } else {
            RETRY.min(interval)
        };
        next_check = tokio::time::Instant::now() + wait;
    }
    // Without events, fall back to polling only.
    poll_only(ctx, interval, stop, last_error).await
}

async fn poll_only(
    ctx: Context,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    mut last_error: Option<String>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        check_and_repair(&ctx, &mut last_error).await;
    }
}

/// Re-plan against the running config and apply whatever differs. Errors are logged once per
/// distinct message (a foreign device squatting on our bridge name would otherwise log every
/// second) and retried on the next trigger. False when a new error appeared: worth a quick retry.
async fn check_and_repair(ctx: &Context, last_error: &mut Option<String>) -> bool {
    let _host = ctx.host_lock.lock().await;
    // Read the model under the lock: a reload that just finished has already published its own.
    let model = ctx.model.borrow().clone();
    let started = Instant::now();
    match repair(ctx, &model).await {
        Ok(0) => {
            if last_error.take().is_some() {
                tracing::info!("drift: the host matches the config again");
            }
        }
        Ok(n) => {
            *last_error = None;
            tracing::info!(
                changes = n,
                ms = started.elapsed().as_millis() as u64,
                "drift: repaired"
            );
        }
        Err(e) => {
            let text = format!("{e:#}");
            if last_error.as_deref() != Some(text.as_str()) {
                tracing::error!("drift: cannot repair, will retry: {text}");
                *last_error = Some(text);
                return false;
            }
        }
    }
    true
}

async fn repair(ctx: &Context, model: &Model) -> Result<usize> {
    let host = Host::new(&ctx.root, &model.state_dir);
    let desired = model.desired();
    let plan = netcfg::plan::plan(&host, &desired)
        .await
        .context("reading the host's current state")?;
    if plan.actions.is_empty() {
        return Ok(0);
    }
    for a in &plan.actions {
        tracing::warn!("drift: {a}");
    }
    netcfg::apply(&host, &plan)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for network in recreated_networks(&plan.actions) {
        tracing::info!(network = %network, "drift: bridge recreated, restarting its servers on the new device");
        let errors = ctx
            .services
            .lock()
            .await
            .restart_network(&network, model, &ctx.root)
            .await;
        for e in errors {
            tracing::error!("drift: {e:#}");
        }
    }
    Ok(plan.actions.len())
}

/// Networks whose bridge the plan (re)creates: their device-bound sockets point at a dead ifindex.
fn recreated_networks(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CreateBridge { network, .. } => Some(network.clone()),
            _ => None,
        })
        .collect()
}

/// A NETLINK_ROUTE socket joined to the link, IPv4 and IPv6 address multicast groups. The messages are
/// not parsed: any event means "look again", and the plan says what actually differs.
struct LinkEvents {
    fd: AsyncFd<OwnedFd>,
}

impl LinkEvents {
    fn open() -> std::io::Result<LinkEvents> {
        // SAFETY: plain socket(2); the result is checked before it is wrapped.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid start.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups =
            (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        // SAFETY: addr is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd is moved into the AsyncFd and stays open, unchanged, as long as it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(LinkEvents { fd })
    }

    /// Wait until at least one event is queued (ENOBUFS, i.e. events lost to an overrun, counts
    /// as an event too: something changed).
    async fn wait(&self) -> std::io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            match self.recv_one() {
                Ok(true) => return Ok(()),
                Ok(false) => guard.clear_ready(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Throw away everything queued.
    fn drain(&self) {
        while let Ok(true) = self.recv_one() {}
    }

    /// Read one datagram; false when nothing is queued.
    fn recv_one(&self) -> std::io::Result<bool> {
        let mut buf = [0u8; 16384];
        // SAFETY: recv into a local buffer of the given length.
        let n = unsafe {
            libc::recv(
                self.fd.get_ref().as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(false),
            Some(libc::EINTR) | Some(libc::ENOBUFS) => Ok(true),
            _ => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(network: &str) -> Action {
        Action::CreateBridge {
            network: network.into(),
            name: format!("br-{network}"),
            mac: netcfg::Mac([0x52, 0x54, 0, 0, 0, 1]),
            mtu: None,
            stp: true,
            forward_delay: 0,
        }
    }

    #[test]
    fn only_created_bridges_restart_their_networks() {
        let actions = vec![
            create("a"),
            Action::LinkUp {
                name: "br-b".into(),
            },
            Action::SetBridgeMac {
                name: "br-c".into(),
                from: None,
                to: netcfg::Mac([0x52, 0x54, 0, 0, 0, 2]),
            },
            create("d"),
        ];
        assert_eq!(
            recreated_networks(&actions),
            vec!["a".to_string(), "d".to_string()]
        );
    }

    #[test]
    fn interval_falls_back_to_the_default_on_garbage() {
        assert_eq!(parse_interval(Some("250")), Duration::from_millis(250));
        for bad in ["0", "-5", "soon", ""] {
            assert_eq!(parse_interval(Some(bad)), DEFAULT_INTERVAL, "{bad:?}");
        }
        assert_eq!(parse_interval(None), DEFAULT_INTERVAL);
    }
}
