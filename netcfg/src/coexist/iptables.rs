//! Driver for iptables-nft's tables: Docker's (`FORWARD` policy DROP, jumping first to
//! `DOCKER-USER`), ufw's, an iptables script's. Their rules carry xtables expressions that only
//! iptables understands, so the accepts go in through `iptables-nft` itself, marked with
//! `-m comment --comment hostagent`, and are found again in `iptables-nft-save`.
//!
//! Where: for Docker's forward chain, `DOCKER-USER`, the chain Docker documents for rules of
//! one's own and jumps to before its own; otherwise the top of the blocking chain.

use std::process::Command;

use super::ruleset::{self, ForeignChain};
use super::{Accept, AcceptRule, Blocker, Ct, Detected, Driver, Hook, System, MARK};
use crate::error::Error;
use crate::model::NetworkSpec;

pub const IPTABLES: &str = "iptables-nft";
pub const IPTABLES_SAVE: &str = "iptables-nft-save";
/// The same tools for iptables-nft's IPv6 tables (`ip6 filter`: Docker with IPv6, ufw).
pub const IP6TABLES: &str = "ip6tables-nft";
pub const IP6TABLES_SAVE: &str = "ip6tables-nft-save";

/// The tool and its save tool for an nft family iptables-nft makes tables in.
fn tools(family: &str) -> (&'static str, &'static str) {
    if family == "ip6" {
        (IP6TABLES, IP6TABLES_SAVE)
    } else {
        (IPTABLES, IPTABLES_SAVE)
    }
}
/// Docker's chain for the administrator's own forward rules.
pub const DOCKER_USER: &str = "DOCKER-USER";

pub struct IptablesDriver;

/// Run an iptables-nft tool; its stdout, or its stderr verbatim in the error.
fn run(tool: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Coexist(format!(
                "`{tool}` was not found on PATH: install the `iptables` package (the tables are iptables-nft's)"
            )),
            _ => Error::Coexist(format!("running {tool}: {e}")),
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Error::Coexist(format!(
        "{tool} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )))
}

/// The accept as iptables arguments, in the order `iptables-save` prints them back (so the
/// same text is both what is written and what is found).
pub(crate) fn args(r: &AcceptRule) -> String {
    let mut a: Vec<String> = Vec::new();
    if let Some(s) = r.saddr {
        a.push(format!("-s {s}"));
    }
    if let Some(d) = r.daddr {
        a.push(format!("-d {d}"));
    }
    if let Some(i) = &r.iif {
        a.push(format!("-i {i}"));
    }
    if let Some(o) = &r.oif {
        a.push(format!("-o {o}"));
    }
    if r.icmpv6 {
        a.push("-p ipv6-icmp".into());
    }
    if let Some((p, lo, hi)) = r.dport {
        let p = p.as_str();
        let port = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}:{hi}")
        };
        a.push(format!("-p {p} -m {p} --dport {port}"));
    }
    match r.ct {
        Ct::Any => {}
        Ct::Replies => a.push("-m conntrack --ctstate RELATED,ESTABLISHED".into()),
        Ct::Dnat => a.push("-m conntrack --ctstate DNAT".into()),
    }
    a.push(format!("-m comment --comment {MARK} -j ACCEPT"));
    a.join(" ")
}

fn system_of(c: &ForeignChain, all: &[ForeignChain]) -> System {
    let docker = all
        .iter()
        .any(|x| x.family == c.family && x.table == c.table && x.name == DOCKER_USER);
    if docker {
        System::Docker
    } else {
        System::Iptables
    }
}

/// Our marked rules in `iptables-nft-save -t TABLE` output: (chain, arguments).
pub(crate) fn marked(save: &str) -> Vec<(String, String)> {
    let mark = format!("--comment {MARK} ");
    save.lines()
        .filter_map(|l| l.strip_prefix("-A "))
        .filter(|l| l.contains(&mark))
        .filter_map(|l| l.split_once(' '))
        .map(|(chain, args)| (chain.to_string(), args.to_string()))
        .collect()
}

impl Driver for IptablesDriver {
    fn system(&self) -> System {
        System::Iptables
    }

    fn detect(&self, chains: &[ForeignChain]) -> Result<Option<Detected>, Error> {
        let mine: Vec<ForeignChain> = chains
            .iter()
            .filter(|c| c.is_iptables(chains))
            .cloned()
            .collect();
        if mine.is_empty() {
            return Ok(None);
        }
        let blockers = ruleset::blockers(&mine, |c| system_of(c, chains));
        let mut det = Detected {
            blockers,
            ..Detected::default()
        };
        // Only `filter` ever gets our rules, in each family that has one.
        for family in ["ip", "ip6"] {
            let Some(filter) = mine
                .iter()
                .find(|c| c.family == family && c.table == "filter")
            else {
                continue;
            };
            let system = system_of(filter, chains);
            let blocked = det.blockers.iter().any(|b| b.family == family);
            match run(tools(family).1, &["-t", "filter"]) {
                Ok(save) => {
                    for (chain, args) in marked(&save) {
                        det.ours.push(Accept {
                            system,
                            family: family.into(),
                            table: "filter".into(),
                            chain,
                            why: "hostagent's".into(),
                            rule: args.clone(),
                            key: args,
                        });
                    }
                }
                Err(e) if !blocked => {
                    tracing::debug!("iptables tables without blockers, not read: {e}")
                }
                Err(e) => det.problems.push(e.to_string()),
            }
        }
        Ok(Some(det))
    }

    fn plan(
        &self,
        blocker: &Blocker,
        chains: &[ForeignChain],
        rules: &[(String, AcceptRule)],
        network: &NetworkSpec,
    ) -> Vec<Accept> {
        if blocker.table != "filter" {
            return Vec::new();
        }
        let docker_user = blocker.hook == Hook::Forward
            && chains.iter().any(|c| {
                c.family == blocker.family
                    && c.table == blocker.table
                    && c.name == blocker.chain
                    && c.jumps_to(DOCKER_USER)
            });
        let chain = if docker_user {
            DOCKER_USER.to_string()
        } else {
            blocker.chain.clone()
        };
        rules
            .iter()
            .map(|(what, r)| {
                let a = args(r);
                Accept {
                    system: blocker.system,
                    family: blocker.family.clone(),
                    table: blocker.table.clone(),
                    chain: chain.clone(),
                    why: format!("{}: {what}", network.name),
                    rule: a.clone(),
                    key: a,
                }
            })
            .collect()
    }

    fn apply(&self, a: &Accept) -> Result<(), Error> {
        let mut argv = vec!["-t", &a.table, "-I", &a.chain, "1"];
        argv.extend(a.rule.split(' '));
        run(tools(&a.family).0, &argv).map(|_| ())
    }

    fn remove(&self, a: &Accept) -> Result<(), Error> {
        let mut argv = vec!["-t", &a.table, "-D", &a.chain];
        argv.extend(a.rule.split(' '));
        match run(tools(&a.family).0, &argv) {
            Ok(_) => Ok(()),
            // Already gone (a Docker restart, or someone else removed it).
            Err(Error::Coexist(msg))
                if msg.contains("does a matching rule exist") || msg.contains("No chain") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
