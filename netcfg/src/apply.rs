//! Perform a plan with an undo for every step; on the first failure undo everything in reverse so
//! the host ends as it started. [`teardown`] removes exactly what the agent recorded as its own.

use std::fmt;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::error::Error;
use crate::files;
use crate::link::{owner_alias, Netlink};
use crate::model::{format_mac, Desired, Host};
use crate::owned::{Owned, OwnedBridge, SysctlChange};
use crate::plan::{self, fw, Action, BridgeSnapshot, SysctlRecord};
use crate::sysctl;

/// Test hook: fail before step N+1.
pub const FAIL_AFTER_ENV: &str = "HOSTAGENT_FAIL_AFTER_STEPS";

#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    /// Display of every step performed.
    pub steps: Vec<String>,
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub struct ApplyError {
    /// Display of the action that failed ("read back" when the final check failed).
    pub step: String,
    pub cause: Error,
    /// Undo steps that failed in turn: the host may differ from where it started by these.
    pub undo_errors: Vec<String>,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "apply failed at step \"{}\": {}", self.step, self.cause)?;
        if self.undo_errors.is_empty() {
            write!(f, "; every earlier step was undone, the host is as it was")
        } else {
            write!(
                f,
                "; undo also failed ({} error(s)): {}",
                self.undo_errors.len(),
                self.undo_errors.join("; ")
            )
        }
    }
}

/// How to reverse one performed step.
enum Undo {
    DeleteLink {
        name: String,
        index: u32,
    },
    SetMac {
        index: u32,
        mac: [u8; 6],
    },
    SetMtu {
        index: u32,
        mtu: u32,
    },
    SetStp {
        index: u32,
        stp: bool,
        delay: u32,
    },
    Release {
        index: u32,
    },
    SetUp {
        index: u32,
        up: bool,
    },
    DelAddr {
        index: u32,
        net: Ipv4Net,
    },
    AddAddr {
        index: u32,
        net: Ipv4Net,
    },
    SetAlias {
        index: u32,
        alias: String,
    },
    Sysctl {
        key: String,
        value: String,
    },
    RestoreFile {
        path: std::path::PathBuf,
        content: Option<String>,
    },
    Firewall {
        saved: Option<String>,
    },
    Recreate {
        name: String,
        snapshot: BridgeSnapshot,
    },
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    v.try_into().ok()
}

struct Executor<'a> {
    host: &'a Host,
    desired: &'a Desired,
    nl: Netlink,
    owned: Owned,
    undo: Vec<Undo>,
    /// Bridges an undo recreated, with their new ifindex.
    recreated: Vec<(String, u32)>,
}

impl Executor<'_> {
    async fn index_of(&self, name: &str) -> Result<u32, Error> {
        self.nl
            .link_by_name(name)
            .await?
            .map(|l| l.index)
            .ok_or_else(|| Error::Netlink(format!("link {name} does not exist")))
    }

    /// Record a bridge of ours (name, ifindex, current MAC) in owned.json right away, so a crash
    /// later still leaves `down` able to find it.
    async fn record_bridge(&mut self, network: &str, name: &str) -> Result<(), Error> {
        let link = self
            .nl
            .link_by_name(name)
            .await?
            .ok_or_else(|| Error::Netlink(format!("link {name} does not exist")))?;
        self.owned.record_bridge(OwnedBridge {
            network: network.to_string(),
            name: name.to_string(),
            ifindex: link.index,
            mac: link.mac.as_ref().map(format_mac).unwrap_or_default(),
        });
        self.owned.save(self.host)
    }

    fn network_of(&self, bridge: &str) -> Option<String> {
        self.desired
            .networks
            .iter()
            .find(|n| n.bridge == bridge)
            .map(|n| n.name.clone())
    }

    async fn perform(&mut self, action: &Action) -> Result<(), Error> {
        match action {
            Action::CreateBridge {
                network,
                name,
                mac,
                mtu,
                stp,
                forward_delay,
            } => {
                let mac = parse_mac(mac).ok_or_else(|| Error::Netlink(format!("bad MAC {mac}")))?;
                let index = self
                    .nl
                    .create_bridge(name, mac, *mtu, *stp, *forward_delay, &owner_alias(network))
                    .await?;
                self.undo.push(Undo::DeleteLink {
                    name: name.clone(),
                    index,
                });
                self.record_bridge(network, name).await?;
            }
            Action::MarkOwned { network, name } => {
                let link = self
                    .nl
                    .link_by_name(name)
                    .await?
                    .ok_or_else(|| Error::Netlink(format!("link {name} does not exist")))?;
                self.nl.set_alias(link.index, &owner_alias(network)).await?;
                self.undo.push(Undo::SetAlias {
                    index: link.index,
                    alias: link.alias.unwrap_or_default(),
                });
                self.record_bridge(network, name).await?;
            }
            Action::SetBridgeMac { name, from, to } => {
                let index = self.index_of(name).await?;
                let to = parse_mac(to).ok_or_else(|| Error::Netlink(format!("bad MAC {to}")))?;
                self.nl.set_mac(index, to).await?;
                if let Some(old) = from.as_deref().and_then(parse_mac) {
                    self.undo.push(Undo::SetMac { index, mac: old });
                }
                if let Some(network) = self.network_of(name) {
                    self.record_bridge(&network, name).await?;
                }
            }
            Action::SetMtu { name, from, to } => {
                let index = self.index_of(name).await?;
                self.nl.set_mtu(index, *to).await?;
                self.undo.push(Undo::SetMtu { index, mtu: *from });
            }
            Action::SetStp {
                name,
                from_stp,
                from_delay,
                stp,
                forward_delay,
            } => {
                let index = self.index_of(name).await?;
                self.nl.set_stp(index, *stp, *forward_delay).await?;
                self.undo.push(Undo::SetStp {
                    index,
                    stp: *from_stp,
                    delay: *from_delay,
                });
            }
            Action::EnslavePort { bridge, port } => {
                let br = self.index_of(bridge).await?;
                let p = self
                    .nl
                    .link_by_name(port)
                    .await?
                    .ok_or_else(|| Error::Port {
                        network: self.network_of(bridge).unwrap_or_default(),
                        port: port.clone(),
                        problem: "does not exist".into(),
                    })?;
                self.nl.set_controller(p.index, br).await?;
                self.undo.push(Undo::Release { index: p.index });
                if !p.up {
                    self.nl.set_up(p.index, true).await?;
                    self.undo.push(Undo::SetUp {
                        index: p.index,
                        up: false,
                    });
                }
            }
            Action::AddAddress { bridge, address } => {
                let index = self.index_of(bridge).await?;
                self.nl.add_addr(index, *address).await?;
                self.undo.push(Undo::DelAddr {
                    index,
                    net: *address,
                });
            }
            Action::RemoveAddress { bridge, address } => {
                let index = self.index_of(bridge).await?;
                self.nl.del_addr(index, *address).await?;
                self.undo.push(Undo::AddAddr {
                    index,
                    net: *address,
                });
            }
            Action::LinkUp { name } => {
                let index = self.index_of(name).await?;
                self.nl.set_up(index, true).await?;
                self.undo.push(Undo::SetUp { index, up: false });
            }
            Action::SetSysctl {
                key,
                from,
                to,
                record,
            } => {
                // Read before write: the undo restores what is there now, not what the plan saw.
                let before = sysctl::read(self.host, key)?.or_else(|| from.clone());
                sysctl::write(self.host, key, to)?;
                if let Some(b) = &before {
                    self.undo.push(Undo::Sysctl {
                        key: key.clone(),
                        value: b.clone(),
                    });
                }
                match record {
                    SysctlRecord::Config => {}
                    SysctlRecord::RememberPrevious => {
                        self.owned.record_sysctl(SysctlChange {
                            key: key.clone(),
                            previous: before.unwrap_or_default(),
                            set: to.clone(),
                        });
                        self.owned.save(self.host)?;
                    }
                    SysctlRecord::RestorePrevious => {
                        self.owned.sysctls.retain(|c| c.key != *key);
                        self.owned.save(self.host)?;
                    }
                }
            }
            Action::WriteFile { path, content, .. } => {
                let p = self.host.path(path);
                let before = files::read_opt(&p)?;
                files::write_atomic(&p, content.as_bytes())?;
                self.undo.push(Undo::RestoreFile {
                    path: p,
                    content: before,
                });
            }
            Action::RemoveFile { path } => {
                let p = self.host.path(path);
                let before = files::read_opt(&p)?;
                files::remove_opt(&p)?;
                self.undo.push(Undo::RestoreFile {
                    path: p,
                    content: before,
                });
            }
            Action::ReplaceFirewall { .. } => {
                let saved = fw::list_table()?;
                fw::replace(self.desired)?;
                self.undo.push(Undo::Firewall { saved });
            }
            Action::DeleteFirewall { .. } => {
                let saved = fw::list_table()?;
                fw::delete()?;
                self.undo.push(Undo::Firewall { saved });
            }
            Action::DeleteOwnedBridge { name, snapshot, .. } => {
                let index = self.index_of(name).await?;
                self.nl.delete_link(index).await?;
                self.undo.push(Undo::Recreate {
                    name: name.clone(),
                    snapshot: snapshot.clone(),
                });
                self.owned.forget_bridge(name);
                self.owned.save(self.host)?;
            }
            Action::ForgetBridge { name, .. } => {
                self.owned.forget_bridge(name);
                self.owned.save(self.host)?;
            }
        }
        Ok(())
    }

    async fn run_undo(&mut self, u: Undo) -> Result<(), Error> {
        match u {
            Undo::DeleteLink { name, index } => {
                // Only delete the very device this apply created.
                match self.nl.link_by_name(&name).await? {
                    Some(l) if l.index == index => self.nl.delete_link(index).await,
                    _ => Ok(()),
                }
            }
            Undo::SetMac { index, mac } => self.nl.set_mac(index, mac).await,
            Undo::SetMtu { index, mtu } => self.nl.set_mtu(index, mtu).await,
            Undo::SetStp { index, stp, delay } => self.nl.set_stp(index, stp, delay).await,
            Undo::Release { index } => self.nl.set_controller(index, 0).await,
            Undo::SetUp { index, up } => self.nl.set_up(index, up).await,
            Undo::DelAddr { index, net } => self.nl.del_addr(index, net).await,
            Undo::AddAddr { index, net } => self.nl.add_addr(index, net).await,
            Undo::SetAlias { index, alias } => self.nl.set_alias(index, &alias).await,
            Undo::Sysctl { key, value } => sysctl::write(self.host, &key, &value),
            Undo::RestoreFile { path, content } => match content {
                Some(c) => files::write_atomic(&path, c.as_bytes()),
                None => files::remove_opt(&path),
            },
            Undo::Firewall { saved } => match saved {
                Some(text) => fw::restore(&text),
                None => fw::delete(),
            },
            Undo::Recreate { name, snapshot } => {
                let mac = snapshot
                    .mac
                    .as_deref()
                    .and_then(parse_mac)
                    .unwrap_or([0x52, 0x54, 0, 0, 0, 0]);
                let alias = snapshot.alias.clone().unwrap_or_default();
                let index = self
                    .nl
                    .create_bridge(
                        &name,
                        mac,
                        Some(snapshot.mtu),
                        snapshot.stp,
                        snapshot.forward_delay,
                        &alias,
                    )
                    .await?;
                for a in &snapshot.addresses {
                    self.nl.add_addr(index, *a).await?;
                }
                if snapshot.up {
                    self.nl.set_up(index, true).await?;
                }
                self.recreated.push((name, index));
                Ok(())
            }
        }
    }

    /// Undo everything in reverse; collect every failure instead of stopping at the first.
    async fn rollback(&mut self, owned_before: Option<String>) -> Vec<String> {
        let mut errors = Vec::new();
        while let Some(u) = self.undo.pop() {
            if let Err(e) = self.run_undo(u).await {
                errors.push(e.to_string());
            }
        }
        let path = Owned::path(self.host);
        let restored = match owned_before {
            Some(text) => files::write_atomic(&path, text.as_bytes()),
            None => files::remove_opt(&path),
        };
        if let Err(e) = restored {
            errors.push(e.to_string());
        }
        // A recreated bridge has a new ifindex: point its restored record at it.
        if !self.recreated.is_empty() {
            let fixed = Owned::load(self.host).and_then(|mut o| {
                for (name, index) in &self.recreated {
                    if let Some(b) = o.bridges.iter_mut().find(|b| b.name == *name) {
                        b.ifindex = *index;
                    }
                }
                o.save(self.host)
            });
            if let Err(e) = fixed {
                errors.push(e.to_string());
            }
        }
        errors
    }
}

fn fail_after_steps() -> Option<usize> {
    std::env::var(FAIL_AFTER_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// Perform `plan` in order. On failure (or a read-back that still differs) undo everything this
/// apply did and return which step failed and why.
pub async fn apply(
    host: &Host,
    desired: &Desired,
    plan: &plan::Plan,
) -> Result<ApplyReport, ApplyError> {
    let fail_at = fail_after_steps();
    let early = |step: &str, cause: Error| ApplyError {
        step: step.to_string(),
        cause,
        undo_errors: vec![],
    };
    // Re-check conflicts against the host as it is now, not as it was when the plan was made.
    let observed = plan::observe(host, desired)
        .await
        .map_err(|e| early("read the host", e))?;
    plan::conflicts(desired, &observed).map_err(|e| early("check for conflicts", e))?;
    let owned_before =
        files::read_opt(&Owned::path(host)).map_err(|e| early("read owned.json", e))?;
    let nl = Netlink::connect().map_err(|e| early("connect to netlink", e))?;
    let mut ex = Executor {
        host,
        desired,
        nl,
        owned: observed.owned.clone(),
        undo: Vec::new(),
        recreated: Vec::new(),
    };
    let mut report = ApplyReport {
        steps: Vec::new(),
        notes: plan.notes.clone(),
    };

    for (i, action) in plan.actions.iter().enumerate() {
        let result = if fail_at == Some(i) {
            Err(Error::Injected(i))
        } else {
            ex.perform(action).await
        };
        if let Err(cause) = result {
            let undo_errors = ex.rollback(owned_before).await;
            return Err(ApplyError {
                step: action.to_string(),
                cause,
                undo_errors,
            });
        }
        tracing::info!(step = %action, "done");
        report.steps.push(action.to_string());
    }

    // Read back: the host must now match exactly.
    let after = match plan::observe(host, desired).await {
        Ok(o) => plan::diff(desired, &o),
        Err(cause) => {
            let undo_errors = ex.rollback(owned_before).await;
            return Err(ApplyError {
                step: "read back".into(),
                cause,
                undo_errors,
            });
        }
    };
    if !after.actions.is_empty() {
        let left: Vec<String> = after.actions.iter().map(|a| a.to_string()).collect();
        let undo_errors = ex.rollback(owned_before).await;
        return Err(ApplyError {
            step: "read back".into(),
            cause: Error::ReadBack(left),
            undo_errors,
        });
    }
    for n in &report.notes {
        tracing::warn!("{n}");
    }
    Ok(report)
}

/// What `down` did and what it deliberately left alone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TeardownReport {
    pub removed: Vec<String>,
    pub left_alone: Vec<String>,
}

impl fmt::Display for TeardownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.removed.is_empty() && self.left_alone.is_empty() {
            return write!(f, "nothing to remove: hostagent owns nothing on this host");
        }
        for r in &self.removed {
            writeln!(f, "removed {r}")?;
        }
        for l in &self.left_alone {
            writeln!(f, "left alone: {l}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("down finished with {} error(s): {}", errors.len(), errors.join("; "))]
pub struct TeardownError {
    pub errors: Vec<String>,
    pub report: TeardownReport,
}

/// Remove what owned.json records (only while it still carries our mark with the same ifindex and
/// MAC), the agent's nft table, its drop-in files (only with our header), and restore sysctls it
/// changed (only if they still hold its value). Every error is collected; the rest still runs.
pub async fn teardown(host: &Host) -> Result<TeardownReport, TeardownError> {
    let mut report = TeardownReport::default();
    let mut errors = Vec::new();
    let mut owned = match Owned::load(host) {
        Ok(o) => o,
        Err(e) => {
            errors.push(e.to_string());
            Owned::default()
        }
    };

    match Netlink::connect() {
        Err(e) => errors.push(e.to_string()),
        Ok(nl) => {
            let links = match nl.links().await {
                Ok(l) => l,
                Err(e) => {
                    errors.push(e.to_string());
                    Vec::new()
                }
            };
            let mut kept = Vec::new();
            for rec in std::mem::take(&mut owned.bridges) {
                match links.iter().find(|l| l.name == rec.name) {
                    None => report.left_alone.push(format!("bridge {} (already gone)", rec.name)),
                    Some(l)
                        if l.index == rec.ifindex
                            && l.has_owner_mark()
                            && l.mac.as_ref().map(format_mac).as_deref() == Some(rec.mac.as_str()) =>
                    {
                        match nl.delete_link(l.index).await {
                            Ok(()) => report.removed.push(format!("bridge {} (network {})", rec.name, rec.network)),
                            Err(e) => {
                                errors.push(e.to_string());
                                kept.push(rec);
                            }
                        }
                    }
                    Some(_) => report.left_alone.push(format!(
                        "{}: a device of that name exists but is not the bridge hostagent created (ifindex, MAC or alias differ)",
                        rec.name
                    )),
                }
            }
            owned.bridges = kept;
        }
    }

    match fw::list_table() {
        Ok(Some(_)) => match fw::delete() {
            Ok(()) => report
                .removed
                .push(format!("nftables table {}", plan::FIREWALL_TABLE)),
            Err(e) => errors.push(e.to_string()),
        },
        Ok(None) => {}
        Err(e) => errors.push(e.to_string()),
    }

    for path in [files::SYSCTL_DROPIN, files::VHOST_CONF] {
        let p = host.path(path);
        match files::read_opt(&p) {
            Ok(Some(c)) if files::is_ours(&c) => match files::remove_opt(&p) {
                Ok(()) => report.removed.push(path.to_string()),
                Err(e) => errors.push(e.to_string()),
            },
            Ok(Some(_)) => report
                .left_alone
                .push(format!("{path} (no longer hostagent's header)")),
            Ok(None) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }

    let mut kept = Vec::new();
    for c in std::mem::take(&mut owned.sysctls) {
        match sysctl::read(host, &c.key) {
            Ok(Some(v)) if v == c.set && v != c.previous => {
                match sysctl::write(host, &c.key, &c.previous) {
                    Ok(()) => report.removed.push(format!(
                        "{} = {} (restored the previous value {})",
                        c.key, c.set, c.previous
                    )),
                    Err(e) => {
                        errors.push(e.to_string());
                        kept.push(c);
                    }
                }
            }
            Ok(Some(v)) if v == c.previous => {}
            Ok(v) => report.left_alone.push(format!(
                "{} is {} now, not the {} hostagent set: not restored",
                c.key,
                v.as_deref().unwrap_or("(absent)"),
                c.set
            )),
            Err(e) => {
                errors.push(e.to_string());
                kept.push(c);
            }
        }
    }
    owned.sysctls = kept;

    // Keep records of what could not be removed, so a later `down` can try again.
    let path = Owned::path(host);
    let saved = if owned.is_empty() {
        files::remove_opt(&path)
    } else {
        owned.save(host)
    };
    if let Err(e) = saved {
        errors.push(e.to_string());
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(TeardownError { errors, report })
    }
}
