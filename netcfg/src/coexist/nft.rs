//! Driver for native nftables tables (a hand-written `inet filter`, a distribution's
//! `/etc/nftables.conf`): the accepts are inserted at the top of the blocking chain, with the
//! comment `hostagent`, and removed by handle after looking them up by their expressions.

use super::ruleset::{self, ForeignChain};
use super::{Accept, AcceptRule, Blocker, Ct, Detected, Driver, System, MARK};
use crate::error::Error;
use crate::model::NetworkSpec;
use crate::nft::rules::{Match, Rule, Verdict};
use crate::nft::{self, NftError};

pub struct NftDriver;

/// Chains this driver handles: native tables, not iptables-nft's and not firewalld's (those
/// have their own tools, which would undo or choke on edits made under them).
fn handles(c: &ForeignChain, all: &[ForeignChain]) -> bool {
    c.table != "firewalld" && !c.is_iptables(all)
}

/// An nft identifier the agent may write unquoted into a script.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The accept as the agent's nft rule type (the one place rules become text and JSON).
pub(crate) fn as_rule(r: &AcceptRule) -> Rule {
    let mut matches = Vec::new();
    if let Some(i) = &r.iif {
        matches.push(Match::Iifname(i.clone()));
    }
    if let Some(o) = &r.oif {
        matches.push(Match::Oifname(o.clone()));
    }
    if let Some(s) = r.saddr {
        matches.push(Match::Saddr(s));
    }
    if let Some(d) = r.daddr {
        matches.push(Match::Daddr(d));
    }
    if r.icmpv6 {
        matches.push(Match::Icmpv6);
    }
    match r.dport {
        Some((p, lo, hi)) if lo == hi => matches.push(Match::Dport(p, lo)),
        Some((p, lo, hi)) => matches.push(Match::DportRange(p, lo, hi)),
        None => {}
    }
    match r.ct {
        Ct::Any => {}
        Ct::Replies => matches.push(Match::CtReplies),
        Ct::Dnat => matches.push(Match::CtDnat),
    }
    Rule {
        matches,
        verdict: Verdict::Accept,
        comment: MARK.to_string(),
    }
}

fn failed(e: NftError) -> Error {
    Error::Nft(e)
}

impl Driver for NftDriver {
    fn system(&self) -> System {
        System::Nft
    }

    fn detect(&self, chains: &[ForeignChain]) -> Result<Option<Detected>, Error> {
        let mine: Vec<ForeignChain> = chains
            .iter()
            .filter(|c| handles(c, chains))
            .cloned()
            .collect();
        if mine.is_empty() {
            return Ok(None);
        }
        let blockers = ruleset::blockers(&mine, |_| System::Nft);
        let ours = mine
            .iter()
            .flat_map(|c| {
                c.rules
                    .iter()
                    .filter(|r| r.comment.as_deref() == Some(MARK))
                    .map(move |r| Accept {
                        system: System::Nft,
                        family: c.family.clone(),
                        table: c.table.clone(),
                        chain: c.name.clone(),
                        why: "hostagent's".into(),
                        rule: format!("rule handle {}", r.handle),
                        key: r.expr.to_string(),
                    })
            })
            .collect();
        let problems = blockers
            .iter()
            .filter(|b| !plain(&b.table) || !plain(&b.chain))
            .map(|b| {
                format!(
                    "{b}: its name cannot be written unquoted into an nft script; add the accepts there yourself"
                )
            })
            .collect();
        Ok(Some(Detected {
            blockers,
            ours,
            problems,
        }))
    }

    fn plan(
        &self,
        blocker: &Blocker,
        _chains: &[ForeignChain],
        rules: &[(String, AcceptRule)],
        network: &NetworkSpec,
    ) -> Vec<Accept> {
        if !plain(&blocker.table) || !plain(&blocker.chain) {
            return Vec::new();
        }
        rules
            .iter()
            .map(|(what, r)| {
                let rule = as_rule(r);
                Accept {
                    system: System::Nft,
                    family: blocker.family.clone(),
                    table: blocker.table.clone(),
                    chain: blocker.chain.clone(),
                    why: format!("{}: {what}", network.name),
                    rule: rule.text(),
                    key: rule.expr_json().to_string(),
                }
            })
            .collect()
    }

    fn apply(&self, a: &Accept) -> Result<(), Error> {
        // `insert` puts it first: before any drop the chain holds.
        let script = format!(
            "insert rule {} {} {} {}\n",
            a.family, a.table, a.chain, a.rule
        );
        nft::run_script(
            &script,
            &format!("insert into {} {} {}", a.family, a.table, a.chain),
        )
        .map_err(failed)
    }

    fn remove(&self, a: &Accept) -> Result<(), Error> {
        let action = format!("list chain {} {} {}", a.family, a.table, a.chain);
        let listing =
            match nft::list_json(&["list", "chain", &a.family, &a.table, &a.chain], &action) {
                Ok(l) => l,
                // The chain (or its table) is gone, and our rule with it.
                Err(NftError::Absent { .. }) => return Ok(()),
                Err(e) => return Err(failed(e)),
            };
        let chains = ruleset::parse(&listing)?;
        // The key is the rule's expression list as JSON text: compare as values.
        let want: Option<serde_json::Value> = serde_json::from_str(&a.key).ok();
        let handles: Vec<u64> = chains
            .iter()
            .flat_map(|c| &c.rules)
            .filter(|r| r.comment.as_deref() == Some(MARK) && Some(&r.expr) == want.as_ref())
            .map(|r| r.handle)
            .collect();
        for h in handles {
            let script = format!(
                "delete rule {} {} {} handle {h}\n",
                a.family, a.table, a.chain
            );
            match nft::run_script(
                &script,
                &format!("delete from {} {} {}", a.family, a.table, a.chain),
            ) {
                Ok(()) | Err(NftError::Absent { .. }) => {}
                Err(e) => return Err(failed(e)),
            }
        }
        Ok(())
    }
}
