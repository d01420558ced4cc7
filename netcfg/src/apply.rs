//! Perform a plan with an undo for every step; on the first failure undo everything in reverse so
//! the host ends as it started.
//!
//! The plan carries all it needs (see [`mod@crate::plan`]): apply does not observe the host before it
//! acts, it performs the plan's steps and then observes once to read back.

use std::fmt;
use std::path::PathBuf;

use hwaddr::Mac;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;

use crate::coexist;
use crate::error::Error;
use crate::hostops::{HostOps, KernelHost};
use crate::link::{AddrDetail, Link, Route};
use crate::model::Host;
use crate::nft;
use crate::owned::{owner_alias, Owned, OwnedBridge, SysctlChange, Takeover};
use crate::plan::{self, Action, BridgeSnapshot, Plan, SysctlRecord, TakenPort};

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
#[derive(Debug)]
enum Undo {
    DeleteLink {
        name: String,
        index: u32,
    },
    SetMac {
        index: u32,
        mac: Mac,
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
    DelAddr6 {
        index: u32,
        net: Ipv6Net,
    },
    AddAddr6 {
        index: u32,
        net: Ipv6Net,
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
        path: PathBuf,
        content: Option<String>,
    },
    Firewall {
        saved: Option<String>,
    },
    Recreate {
        name: String,
        snapshot: BridgeSnapshot,
    },
    /// Put a route back on the device it went out of.
    ReplaceRoute {
        route: Route,
        oif: u32,
    },
    DelRoute {
        route: Route,
        oif: u32,
    },
    /// Put an address back with its details.
    AddAddrDetail {
        index: u32,
        dev: String,
        addr: AddrDetail,
    },
    /// Take out an accept this apply added to a foreign firewall.
    RemoveAccept(coexist::Accept),
    /// Put back a marked accept this apply removed.
    AddAccept(coexist::Accept),
}

struct Executor<'a, O: HostOps> {
    ops: &'a mut O,
    host: &'a Host,
    owned: Owned,
    undo: Vec<Undo>,
    /// Bridges an undo recreated, with their new ifindex.
    recreated: Vec<(String, u32)>,
}

impl<O: HostOps> Executor<'_, O> {
    async fn link(&mut self, name: &str) -> Result<Link, Error> {
        self.ops
            .link_by_name(name)
            .await?
            .ok_or_else(|| Error::Netlink(format!("link {name} does not exist")))
    }

    async fn index_of(&mut self, name: &str) -> Result<u32, Error> {
        Ok(self.link(name).await?.index)
    }

    /// The link named `name`, if it is still the device the plan saw (`ifindex`).
    async fn planned_link(&mut self, name: &str, ifindex: u32) -> Result<Link, Error> {
        let stale = |what: String| Error::Stale {
            name: name.to_string(),
            what,
        };
        match self.ops.link_by_name(name).await? {
            Some(l) if l.index == ifindex => Ok(l),
            Some(l) => Err(stale(format!(
                "the plan saw ifindex {ifindex}, the device now is ifindex {}",
                l.index
            ))),
            None => Err(stale("it no longer exists".into())),
        }
    }

    fn save_owned(&mut self) -> Result<(), Error> {
        let path = Owned::path(self.host);
        self.ops.write_file(&path, &self.owned.to_json())
    }

    /// Record a bridge of ours in owned.json right away, so a crash later still leaves `down`
    /// able to find it.
    fn record_bridge(
        &mut self,
        network: &str,
        name: &str,
        ifindex: u32,
        mac: Option<Mac>,
    ) -> Result<(), Error> {
        self.owned.record_bridge(OwnedBridge {
            network: network.to_string(),
            name: name.to_string(),
            ifindex,
            mac,
        });
        self.save_owned()
    }

    /// The takeover record for `at`, made (with the port's MAC, read before anything moved)
    /// when missing.
    async fn takeover_record(&mut self, at: &TakenPort) -> Result<&mut Takeover, Error> {
        let mac = self.ops.link_by_name(&at.port).await?.and_then(|l| l.mac);
        Ok(self
            .owned
            .takeover_mut(&at.network, &at.bridge, &at.port, mac))
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
                let index = self
                    .ops
                    .create_bridge(name, Some(*mac), *mtu, *stp, *forward_delay)
                    .await?;
                self.undo.push(Undo::DeleteLink {
                    name: name.clone(),
                    index,
                });
                self.ops.set_alias(index, &owner_alias(network)).await?;
                self.record_bridge(network, name, index, Some(*mac))?;
            }
            Action::MarkOwned {
                network,
                name,
                ifindex,
            } => {
                let link = self.planned_link(name, *ifindex).await?;
                self.ops
                    .set_alias(link.index, &owner_alias(network))
                    .await?;
                self.undo.push(Undo::SetAlias {
                    index: link.index,
                    alias: link.alias.unwrap_or_default(),
                });
                self.record_bridge(network, name, link.index, link.mac)?;
            }
            Action::SetBridgeMac { name, from, to } => {
                let index = self.index_of(name).await?;
                self.ops.set_mac(index, *to).await?;
                if let Some(old) = from {
                    self.undo.push(Undo::SetMac { index, mac: *old });
                }
                // Keep the record's MAC current (a MarkOwned earlier in the plan records an
                // unrecorded bridge first).
                if let Some(b) = self.owned.bridges.iter_mut().find(|b| b.name == *name) {
                    b.mac = Some(*to);
                    self.save_owned()?;
                }
            }
            Action::SetMtu { name, from, to } => {
                let index = self.index_of(name).await?;
                self.ops.set_mtu(index, *to).await?;
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
                self.ops.set_stp(index, *stp, *forward_delay).await?;
                self.undo.push(Undo::SetStp {
                    index,
                    stp: *from_stp,
                    delay: *from_delay,
                });
            }
            Action::EnslavePort {
                network,
                bridge,
                port,
            } => {
                let br = self.index_of(bridge).await?;
                let p = self
                    .ops
                    .link_by_name(port)
                    .await?
                    .ok_or_else(|| Error::Port {
                        network: network.clone(),
                        port: port.clone(),
                        problem: "does not exist".into(),
                    })?;
                self.ops.set_controller(p.index, br).await?;
                self.undo.push(Undo::Release { index: p.index });
                if !p.up {
                    self.ops.set_up(p.index, true).await?;
                    self.undo.push(Undo::SetUp {
                        index: p.index,
                        up: false,
                    });
                }
            }
            Action::AddAddress { bridge, address } => {
                let index = self.index_of(bridge).await?;
                self.ops.add_addr(index, *address).await?;
                self.undo.push(Undo::DelAddr {
                    index,
                    net: *address,
                });
            }
            Action::RemoveAddress { bridge, address } => {
                let index = self.index_of(bridge).await?;
                self.ops.del_addr(index, *address).await?;
                self.undo.push(Undo::AddAddr {
                    index,
                    net: *address,
                });
            }
            Action::AddAddress6 { bridge, address } => {
                let index = self.index_of(bridge).await?;
                self.ops.add_addr6(index, *address).await?;
                self.undo.push(Undo::DelAddr6 {
                    index,
                    net: *address,
                });
            }
            Action::RemoveAddress6 { bridge, address } => {
                let index = self.index_of(bridge).await?;
                self.ops.del_addr6(index, *address).await?;
                self.undo.push(Undo::AddAddr6 {
                    index,
                    net: *address,
                });
            }
            Action::LinkUp { name } => {
                let index = self.index_of(name).await?;
                self.ops.set_up(index, true).await?;
                self.undo.push(Undo::SetUp { index, up: false });
            }
            Action::SetSysctl {
                key,
                from,
                to,
                record,
            } => {
                // Read before write: the undo restores what is there now, not what the plan saw.
                let before = self.ops.read_sysctl(key)?.or_else(|| from.clone());
                self.ops.write_sysctl(key, to)?;
                if let Some(b) = &before {
                    self.undo.push(Undo::Sysctl {
                        key: key.clone(),
                        value: b.clone(),
                    });
                }
                match record {
                    SysctlRecord::Config | SysctlRecord::RememberPrevious => {
                        self.owned.record_sysctl(SysctlChange {
                            key: key.clone(),
                            previous: before.unwrap_or_default(),
                            set: to.clone(),
                        });
                        self.save_owned()?;
                    }
                    SysctlRecord::RestorePrevious => {
                        self.owned.sysctls.retain(|c| c.key != *key);
                        self.save_owned()?;
                    }
                }
            }
            Action::WriteFile { path, content, .. } => {
                let p = self.host.path(path);
                let before = self.ops.read_file(&p)?;
                self.ops.write_file(&p, content)?;
                self.undo.push(Undo::RestoreFile {
                    path: p,
                    content: before,
                });
            }
            Action::RemoveFile { path } => {
                let p = self.host.path(path);
                let before = self.ops.read_file(&p)?;
                self.ops.remove_file(&p)?;
                self.undo.push(Undo::RestoreFile {
                    path: p,
                    content: before,
                });
            }
            Action::ReplaceFirewall { script, .. } => {
                let saved = self.ops.nft_saved()?;
                self.ops.nft_load(script)?;
                self.undo.push(Undo::Firewall { saved });
            }
            Action::DeleteFirewall { .. } => {
                let saved = self.ops.nft_saved()?;
                self.ops.nft_delete()?;
                self.undo.push(Undo::Firewall { saved });
            }
            Action::DeleteOwnedBridge {
                name,
                ifindex,
                snapshot,
                ..
            } => {
                let link = self.planned_link(name, *ifindex).await?;
                self.ops.delete_link(link.index).await?;
                self.undo.push(Undo::Recreate {
                    name: name.clone(),
                    snapshot: snapshot.clone(),
                });
                self.owned.forget_bridge(name);
                self.save_owned()?;
            }
            Action::ForgetBridge { name, .. } => {
                self.owned.forget_bridge(name);
                self.save_owned()?;
            }
            Action::MoveAddress { at, address } | Action::RestoreAddress { at, address } => {
                let br = self.index_of(&at.bridge).await?;
                self.ops.add_addr_detail(br, &at.bridge, address).await?;
                self.undo.push(Undo::DelAddr {
                    index: br,
                    net: address.net,
                });
                let t = self.takeover_record(at).await?;
                if !t.addresses.iter().any(|a| a.net == address.net) {
                    t.addresses.push(address.clone());
                }
                self.save_owned()?;
            }
            Action::MoveRoute { at, route } | Action::RestoreRoute { at, route } => {
                let br = self.index_of(&at.bridge).await?;
                // A moved route goes back to the port; a restored one had no other place.
                let undo = match action {
                    Action::MoveRoute { .. } => Undo::ReplaceRoute {
                        route: route.clone(),
                        oif: self.index_of(&at.port).await?,
                    },
                    _ => Undo::DelRoute {
                        route: route.clone(),
                        oif: br,
                    },
                };
                self.ops.replace_route(route, br).await?;
                self.undo.push(undo);
                let t = self.takeover_record(at).await?;
                if !t.routes.iter().any(|r| r.same_route(route)) {
                    t.routes.push(Route {
                        oif: None,
                        ..route.clone()
                    });
                }
                self.save_owned()?;
            }
            Action::ClearPort { at, addresses } => {
                let pt = self.index_of(&at.port).await?;
                // Secondaries first: removing a primary takes its secondaries along.
                for a in addresses.iter().rev() {
                    self.ops.del_addr(pt, a.net).await?;
                    self.undo.push(Undo::AddAddrDetail {
                        index: pt,
                        dev: at.port.clone(),
                        addr: a.clone(),
                    });
                }
            }
            Action::GiveBack {
                at,
                addresses,
                routes,
            } => {
                let br = self.index_of(&at.bridge).await?;
                let pt = self.index_of(&at.port).await?;
                for a in addresses {
                    self.ops.add_addr_detail(pt, &at.port, a).await?;
                    self.undo.push(Undo::DelAddr {
                        index: pt,
                        net: a.net,
                    });
                }
                for r in routes {
                    self.ops.replace_route(r, pt).await?;
                    self.undo.push(Undo::ReplaceRoute {
                        route: r.clone(),
                        oif: br,
                    });
                }
                for a in addresses.iter().rev() {
                    self.ops.del_addr(br, a.net).await?;
                    self.undo.push(Undo::AddAddrDetail {
                        index: br,
                        dev: at.bridge.clone(),
                        addr: a.clone(),
                    });
                }
                self.owned.forget_takeover(&at.network, &at.port);
                self.save_owned()?;
            }
            Action::AddFirewallAccept { accept, .. } => {
                self.ops.firewall_add(accept)?;
                self.undo.push(Undo::RemoveAccept(accept.clone()));
                if self.owned.record_accept(accept) {
                    self.save_owned()?;
                }
            }
            Action::RemoveFirewallAccept { accept } => {
                self.ops.firewall_remove(accept)?;
                self.undo.push(Undo::AddAccept(accept.clone()));
                if self.owned.forget_accept(accept) {
                    self.save_owned()?;
                }
            }
        }
        Ok(())
    }

    async fn run_undo(&mut self, u: Undo) -> Result<(), Error> {
        match u {
            Undo::DeleteLink { name, index } => {
                // Only delete the very device this apply created.
                match self.ops.link_by_name(&name).await? {
                    Some(l) if l.index == index => self.ops.delete_link(index).await,
                    _ => Ok(()),
                }
            }
            Undo::SetMac { index, mac } => self.ops.set_mac(index, mac).await,
            Undo::SetMtu { index, mtu } => self.ops.set_mtu(index, mtu).await,
            Undo::SetStp { index, stp, delay } => self.ops.set_stp(index, stp, delay).await,
            Undo::Release { index } => self.ops.set_controller(index, 0).await,
            Undo::SetUp { index, up } => self.ops.set_up(index, up).await,
            Undo::DelAddr { index, net } => self.ops.del_addr(index, net).await,
            Undo::AddAddr { index, net } => self.ops.add_addr(index, net).await,
            Undo::DelAddr6 { index, net } => self.ops.del_addr6(index, net).await,
            Undo::AddAddr6 { index, net } => self.ops.add_addr6(index, net).await,
            Undo::SetAlias { index, alias } => self.ops.set_alias(index, &alias).await,
            Undo::Sysctl { key, value } => self.ops.write_sysctl(&key, &value),
            Undo::RestoreFile { path, content } => match content {
                Some(c) => self.ops.write_file(&path, &c),
                None => self.ops.remove_file(&path),
            },
            Undo::Firewall { saved } => match saved {
                Some(text) => self.ops.nft_load(&nft::restore_script(&text)),
                None => self.ops.nft_delete(),
            },
            Undo::ReplaceRoute { route, oif } => self.ops.replace_route(&route, oif).await,
            Undo::DelRoute { route, oif } => self.ops.del_route(&route, oif).await,
            Undo::AddAddrDetail { index, dev, addr } => {
                self.ops.add_addr_detail(index, &dev, &addr).await
            }
            Undo::RemoveAccept(a) => self.ops.firewall_remove(&a),
            Undo::AddAccept(a) => self.ops.firewall_add(&a),
            Undo::Recreate { name, snapshot } => {
                let index = self
                    .ops
                    .create_bridge(
                        &name,
                        snapshot.mac,
                        Some(snapshot.mtu),
                        snapshot.stp,
                        snapshot.forward_delay,
                    )
                    .await?;
                // Recorded first: whatever fails below, the record points at the new device.
                self.recreated.push((name, index));
                if let Some(alias) = &snapshot.alias {
                    self.ops.set_alias(index, alias).await?;
                }
                for a in &snapshot.addresses {
                    self.ops.add_addr(index, *a).await?;
                }
                for a in &snapshot.addresses6 {
                    self.ops.add_addr6(index, *a).await?;
                }
                if snapshot.up {
                    self.ops.set_up(index, true).await?;
                }
                Ok(())
            }
        }
    }

    /// Undo everything in reverse; collect every failure instead of stopping at the first. Then
    /// put owned.json back as it was before this apply, pointing the record of a recreated
    /// bridge at its new ifindex.
    async fn rollback(&mut self, owned_before: Option<&str>) -> Vec<String> {
        let mut errors = Vec::new();
        while let Some(u) = self.undo.pop() {
            if let Err(e) = self.run_undo(u).await {
                errors.push(e.to_string());
            }
        }
        let path = Owned::path(self.host);
        let restored = if self.recreated.is_empty() {
            match owned_before {
                Some(text) => self.ops.write_file(&path, text),
                None => self.ops.remove_file(&path),
            }
        } else {
            // owned_before parsed when apply started; a recreated bridge was in it.
            Owned::parse(&path, owned_before).and_then(|mut o| {
                for (name, index) in &self.recreated {
                    if let Some(b) = o.bridges.iter_mut().find(|b| b.name == *name) {
                        b.ifindex = *index;
                    }
                }
                self.ops.write_file(&path, &o.to_json())
            })
        };
        if let Err(e) = restored {
            errors.push(e.to_string());
        }
        errors
    }
}

fn fail_after_steps() -> Option<usize> {
    std::env::var(FAIL_AFTER_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// Perform `plan` (made by [`plan::plan`]) in order, then read the host back once: it must match
/// the plan's desired state. On failure (or a read-back that still differs) undo everything this
/// apply did and return which step failed and why.
pub async fn apply(host: &Host, plan: &Plan) -> Result<ApplyReport, ApplyError> {
    apply_with(
        &mut KernelHost::connect(host),
        host,
        plan,
        fail_after_steps(),
    )
    .await
}

/// [`apply`] on the given host operations; `fail_at` injects a failure before that step.
pub(crate) async fn apply_with<O: HostOps>(
    ops: &mut O,
    host: &Host,
    plan: &Plan,
    fail_at: Option<usize>,
) -> Result<ApplyReport, ApplyError> {
    let early = |step: &str, cause: Error| ApplyError {
        step: step.to_string(),
        cause,
        undo_errors: vec![],
    };
    let owned_path = Owned::path(host);
    let owned_before = ops
        .read_file(&owned_path)
        .map_err(|e| early("read owned.json", e))?;
    let owned = Owned::parse(&owned_path, owned_before.as_deref())
        .map_err(|e| early("read owned.json", e))?;
    let mut ex = Executor {
        ops,
        host,
        owned,
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
            let undo_errors = ex.rollback(owned_before.as_deref()).await;
            return Err(ApplyError {
                step: action.to_string(),
                cause,
                undo_errors,
            });
        }
        tracing::info!(step = %action, "done");
        report.steps.push(action.to_string());
    }

    // Read back, the one observation apply makes: the host must now match exactly.
    let cause = match ex.ops.observe(host, plan.desired()).await {
        Ok(o) => {
            let left = plan::diff(plan.desired(), &o).actions;
            if left.is_empty() {
                for n in &report.notes {
                    tracing::warn!("{n}");
                }
                return Ok(report);
            }
            Error::ReadBack(left.iter().map(|a| a.to_string()).collect())
        }
        Err(e) => e,
    };
    let undo_errors = ex.rollback(owned_before.as_deref()).await;
    Err(ApplyError {
        step: "read back".into(),
        cause,
        undo_errors,
    })
}

#[cfg(test)]
mod tests;
