//! `down`: remove exactly what the agent recorded as its own and what still carries its marks.
//! Every error is collected and the rest still runs, so one stuck object never keeps the others.

use std::fmt;

use serde::Serialize;

use crate::coexist;
use crate::files;
use crate::hostops::{HostOps, KernelHost};
use crate::model::Host;
use crate::nft::FIREWALL_TABLE;
use crate::owned::{owner_alias, ownership, Owned, Ownership};
use crate::takeover;

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

/// Remove the bridges owned.json records (only those that are still [`Ownership::Ours`]), the
/// agent's nft tables, its drop-in files (only with our header), and restore sysctls it changed
/// (only if they still hold its value). Records of what could not be removed are kept, so a
/// later `down` tries again.
pub async fn teardown(host: &Host) -> Result<TeardownReport, TeardownError> {
    teardown_with(&mut KernelHost::connect(host), host).await
}

/// [`teardown`] on the given host operations.
pub(crate) async fn teardown_with<O: HostOps>(
    ops: &mut O,
    host: &Host,
) -> Result<TeardownReport, TeardownError> {
    let mut report = TeardownReport::default();
    let mut errors = Vec::new();
    let path = Owned::path(host);
    let (mut owned, records_read) = match ops
        .read_file(&path)
        .and_then(|text| Owned::parse(&path, text.as_deref()))
    {
        Ok(o) => (o, true),
        Err(e) => {
            errors.push(e.to_string());
            (Owned::default(), false)
        }
    };

    let mut taken = std::mem::take(&mut owned.takeovers);
    match ops.links().await {
        // Without the links nothing can be told apart: keep every record for the next try.
        Err(e) => errors.push(e.to_string()),
        Ok(links) => {
            let mut kept = Vec::new();
            for rec in std::mem::take(&mut owned.bridges) {
                let Some(l) = links.iter().find(|l| l.name == rec.name) else {
                    report
                        .left_alone
                        .push(format!("bridge {} (already gone)", rec.name));
                    continue;
                };
                match ownership(l, &rec.network, Some(&rec)) {
                    Ownership::Ours => {
                        // A taken-over port gets its addresses and routes back first.
                        let mut given = true;
                        for t in taken.iter().filter(|t| t.bridge == rec.name) {
                            match takeover::give_back(ops, t, Some(l.index)).await {
                                Ok(what) => report
                                    .removed
                                    .push(format!("{}'s takeover of {} ({what})", rec.name, t.port)),
                                Err(e) => {
                                    errors.push(e.to_string());
                                    given = false;
                                }
                            }
                        }
                        if !given {
                            kept.push(rec);
                            continue;
                        }
                        taken.retain(|t| t.bridge != rec.name);
                        match ops.delete_link(l.index).await {
                        Ok(()) => report
                            .removed
                            .push(format!("bridge {} (network {})", rec.name, rec.network)),
                        Err(e) => {
                            errors.push(e.to_string());
                            kept.push(rec);
                        }
                    }
                    }
                    Ownership::NeedsMark(_) => report.left_alone.push(format!(
                        "{}: hostagent made it, but its alias is no longer {}: someone took it over",
                        rec.name,
                        owner_alias(&rec.network)
                    )),
                    Ownership::Foreign(why) => report.left_alone.push(format!(
                        "{}: a device of that name exists but is not the bridge hostagent created ({why})",
                        rec.name
                    )),
                }
            }
            owned.bridges = kept;
            // Takeovers whose bridge is gone (deleted behind the agent's back, its addresses
            // with it): put what the record says back on the port.
            for t in std::mem::take(&mut taken) {
                let bridge_left = links.iter().any(|l| l.name == t.bridge)
                    && owned.bridges.iter().any(|b| b.name == t.bridge);
                if bridge_left {
                    taken.push(t);
                    continue;
                }
                if links.iter().any(|l| l.name == t.bridge) {
                    report.left_alone.push(format!(
                        "{}: its addresses were moved to {}, which is no longer hostagent's; move them back yourself",
                        t.port, t.bridge
                    ));
                    continue;
                }
                match takeover::give_back(ops, &t, None).await {
                    Ok(what) => report.removed.push(format!(
                        "the record of {}'s takeover of {}, whose bridge is gone ({what})",
                        t.bridge, t.port
                    )),
                    Err(e) => {
                        errors.push(e.to_string());
                        taken.push(t);
                    }
                }
            }
        }
    }
    owned.takeovers = taken;

    match ops.nft_saved() {
        Ok(Some(_)) => match ops.nft_delete() {
            Ok(()) => report
                .removed
                .push(format!("nftables table {FIREWALL_TABLE}")),
            Err(e) => errors.push(e.to_string()),
        },
        Ok(None) => {}
        Err(e) => errors.push(e.to_string()),
    }

    // Every marked accept in foreign firewalls goes; their own rules stay exactly as they are.
    match ops.firewall_found() {
        Ok(found) => {
            // Records of bindings no longer live are dropped; those that fail to go are kept.
            owned.firewalld.clear();
            for a in &found.ours {
                match ops.firewall_remove(a) {
                    Ok(()) => report.removed.push(match a.system {
                        coexist::System::Firewalld => format!("{} from {}", a.rule, a.place()),
                        _ => format!("accept from {}: {}", a.place(), a.rule),
                    }),
                    Err(e) => {
                        errors.push(e.to_string());
                        owned.record_accept(a);
                    }
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }

    for dropin in [files::SYSCTL_DROPIN, files::VHOST_CONF] {
        let p = host.path(dropin);
        match ops.read_file(&p) {
            Ok(Some(c)) if files::is_ours(&c) => match ops.remove_file(&p) {
                Ok(()) => report.removed.push(dropin.to_string()),
                Err(e) => errors.push(e.to_string()),
            },
            Ok(Some(_)) => report
                .left_alone
                .push(format!("{dropin} (no longer hostagent's header)")),
            Ok(None) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }

    let mut kept = Vec::new();
    for c in std::mem::take(&mut owned.sysctls) {
        match ops.read_sysctl(&c.key) {
            Ok(Some(v)) if v == c.set && v != c.previous => {
                match ops.write_sysctl(&c.key, &c.previous) {
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
            // An interface's own setting went with the interface (the agent's bridge, removed
            // above): nothing is left to restore.
            Ok(None) if crate::sysctl::split_interface_key(&c.key).is_some() => {}
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

    // An unreadable owned.json is left as it is for the admin (its error says what to do).
    let saved = if !records_read {
        Ok(())
    } else if owned.is_empty() {
        ops.remove_file(&path)
    } else {
        ops.write_file(&path, &owned.to_json())
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

#[cfg(test)]
mod tests;
