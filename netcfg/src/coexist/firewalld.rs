//! Driver for a running firewalld. firewalld owns its table (`inet firewalld`) and rewrites it
//! on every `firewall-cmd --reload`, so the agent never edits it: it asks firewalld, through
//! `firewall-cmd`, to put each of its bridges into the `trusted` zone, at runtime and
//! permanently (a reload keeps it). That is what firewalld documents for interfaces whose
//! traffic it should let through, and the zone is firewalld's unit of policy: a per-port
//! policy would have to be a new zone or policy object, which needs a reload to exist, and a
//! reload drops every runtime change other programs made.
//!
//! A zone binding carries no mark, so the bindings the agent made are recorded in owned.json
//! (`firewalld`) and only those are ever removed; a bridge the admin already put into a zone is
//! left as it is.
//!
//! Running is decided by firewalld's pid file under the root prefix (with a live process of
//! that name) or by `firewall-cmd --state`.

use std::path::PathBuf;
use std::process::Command;

use super::ruleset::{self, ForeignChain};
use super::{Accept, AcceptRule, Blocker, Detected, Driver, System};
use crate::error::Error;
use crate::model::{Host, NetworkSpec};
use crate::owned::Owned;

pub const FIREWALL_CMD: &str = "firewall-cmd";
/// The zone the agent's bridges join.
pub const ZONE: &str = "trusted";

pub struct FirewalldDriver {
    host: Host,
}

impl FirewalldDriver {
    pub fn new(host: &Host) -> FirewalldDriver {
        FirewalldDriver { host: host.clone() }
    }

    /// firewalld's pid file names a live firewalld, or firewall-cmd says it runs (asked only
    /// when there is a system bus to ask on: firewall-cmd is a Python program, and `plan` and
    /// drift repair should not start it every second on hosts without firewalld).
    fn running(&self) -> bool {
        let pid_alive = ["/run/firewalld.pid", "/var/run/firewalld.pid"]
            .iter()
            .filter_map(|p| std::fs::read_to_string(self.host.path(p)).ok())
            .filter_map(|t| t.trim().parse::<u32>().ok())
            .any(|pid| {
                std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/cmdline")))
                    .is_ok_and(|c| c.contains("firewalld"))
            });
        pid_alive
            || (system_bus().exists() && run(&["--state"]).is_ok_and(|s| s.trim() == "running"))
    }

    fn recorded(&self) -> Vec<String> {
        Owned::load(&self.host)
            .map(|o| o.firewalld)
            .unwrap_or_default()
    }
}

/// The system bus socket firewall-cmd talks to: `DBUS_SYSTEM_BUS_ADDRESS` (a `unix:path=`
/// address) or D-Bus's default. The real one, never under the root prefix: it is a socket.
fn system_bus() -> PathBuf {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .ok()
        .and_then(|a| {
            a.split(';')
                .find_map(|one| one.strip_prefix("unix:path="))
                .map(|p| PathBuf::from(p.split(',').next().unwrap_or(p)))
        })
        .unwrap_or_else(|| PathBuf::from("/run/dbus/system_bus_socket"))
}

fn run(args: &[&str]) -> Result<String, Error> {
    let out = Command::new(FIREWALL_CMD)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| Error::Coexist(format!("running {FIREWALL_CMD}: {e}")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Error::Coexist(format!(
        "{FIREWALL_CMD} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim_end(),
        String::from_utf8_lossy(&out.stdout).trim_end()
    )))
}

fn accept(interface: &str, why: String) -> Accept {
    Accept {
        system: System::Firewalld,
        family: String::new(),
        table: String::new(),
        chain: ZONE.into(),
        why,
        rule: interface.to_string(),
        key: interface.to_string(),
    }
}

impl Driver for FirewalldDriver {
    fn system(&self) -> System {
        System::Firewalld
    }

    fn detect(&self, chains: &[ForeignChain]) -> Result<Option<Detected>, Error> {
        let tables: Vec<ForeignChain> = chains
            .iter()
            .filter(|c| c.table == "firewalld")
            .cloned()
            .collect();
        let running = self.running();
        if tables.is_empty() && !running {
            return Ok(None);
        }
        let mut det = Detected {
            blockers: ruleset::blockers(&tables, |_| System::Firewalld),
            ..Detected::default()
        };
        if !running {
            det.problems.push(
                "firewalld's table is loaded but firewalld does not answer: start firewalld \
                 (hostagent then adds its bridges to the trusted zone) or remove the table"
                    .into(),
            );
            return Ok(Some(det));
        }
        match run(&["--zone", ZONE, "--list-interfaces"]) {
            Ok(list) => {
                let live: Vec<&str> = list.split_whitespace().collect();
                for i in self.recorded() {
                    if live.contains(&i.as_str()) {
                        det.ours.push(accept(&i, "hostagent's".into()));
                    }
                }
            }
            Err(e) => det.problems.push(e.to_string()),
        }
        Ok(Some(det))
    }

    fn plan(
        &self,
        _blocker: &Blocker,
        _chains: &[ForeignChain],
        _rules: &[(String, AcceptRule)],
        network: &NetworkSpec,
    ) -> Vec<Accept> {
        // A bridge the admin bound to a zone of their choosing stays there.
        let zone = run(&["--get-zone-of-interface", &network.bridge]);
        let ours = self.recorded().contains(&network.bridge);
        match zone {
            Ok(z) if !ours && z.trim() != ZONE => Vec::new(),
            _ => vec![accept(
                &network.bridge,
                format!("{}: guests and services", network.name),
            )],
        }
    }

    fn apply(&self, a: &Accept) -> Result<(), Error> {
        let iface = format!("--add-interface={}", a.rule);
        let zone = format!("--zone={}", a.chain);
        run(&[&zone, &iface])?;
        run(&["--permanent", &zone, &iface]).map(|_| ())
    }

    fn remove(&self, a: &Accept) -> Result<(), Error> {
        let iface = format!("--remove-interface={}", a.rule);
        let zone = format!("--zone={}", a.chain);
        for args in [
            vec![zone.as_str(), &iface],
            vec!["--permanent", &zone, &iface],
        ] {
            match run(&args) {
                Ok(_) => {}
                Err(Error::Coexist(m))
                    if m.contains("UNKNOWN_INTERFACE") || m.contains("NOT_ENABLED") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
