//! The host's whole ruleset as `nft -j list ruleset` prints it, minus the agent's own tables:
//! every chain with its rules, and which base chains would drop the agent's traffic.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::nft::TABLE;

/// Table names iptables-nft makes (as iptables' own tables), with its upper-case built-in chains.
const IPTABLES_TABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];
const IPTABLES_CHAINS: [&str; 5] = ["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"];

/// A netfilter hook a foreign base chain sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    fn parse(s: &str) -> Option<Hook> {
        Some(match s {
            "prerouting" => Hook::Prerouting,
            "input" => Hook::Input,
            "forward" => Hook::Forward,
            "output" => Hook::Output,
            "postrouting" => Hook::Postrouting,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }

    /// What a drop on this hook does to the guests of `bridge`.
    pub fn consequence(self, bridge: &str) -> String {
        match self {
            Hook::Forward => format!("guests on {bridge} cannot reach the outside"),
            Hook::Input => {
                format!("guests on {bridge} cannot reach hostagent's DHCP, DNS, TFTP and HTTP boot")
            }
            Hook::Output => format!("hostagent's answers to guests on {bridge} are dropped"),
            Hook::Prerouting | Hook::Postrouting => {
                format!("traffic of guests on {bridge} may be dropped")
            }
        }
    }
}

/// Whose a foreign table is: decides which driver writes the accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// iptables-nft's table with Docker's chains (`DOCKER-USER`).
    Docker,
    /// Another iptables-nft table (ufw, a hand-written iptables script).
    Iptables,
    /// firewalld's own table.
    Firewalld,
    /// A native nftables table.
    Nft,
}

impl System {
    pub fn as_str(self) -> &'static str {
        match self {
            System::Docker => "Docker",
            System::Iptables => "iptables",
            System::Firewalld => "firewalld",
            System::Nft => "nftables",
        }
    }
}

/// One rule of a foreign chain (counters zeroed: they count traffic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignRule {
    pub handle: u64,
    pub comment: Option<String>,
    pub expr: Value,
}

/// One chain of a foreign table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignChain {
    pub family: String,
    pub table: String,
    pub name: String,
    pub hook: Option<Hook>,
    pub prio: Option<i64>,
    pub policy: Option<String>,
    pub rules: Vec<ForeignRule>,
}

impl ForeignChain {
    /// A chain iptables-nft made (its table and built-in chain names), which nft must not edit
    /// under it (its rules carry xtables expressions only iptables understands).
    pub fn is_iptables(&self, all: &[ForeignChain]) -> bool {
        matches!(self.family.as_str(), "ip" | "ip6")
            && IPTABLES_TABLES.contains(&self.table.as_str())
            && all
                .iter()
                .filter(|c| c.family == self.family && c.table == self.table && c.hook.is_some())
                .all(|c| IPTABLES_CHAINS.contains(&c.name.as_str()))
    }

    /// The first rule that drops or rejects whatever it sees (no match before the verdict).
    pub fn unconditional_drop(&self) -> Option<&ForeignRule> {
        self.rules.iter().find(|r| drops_everything(&r.expr))
    }

    /// Does it accept every reply (`ct state established,related accept` with no other match)?
    /// Then replies to the guests' and the agent's own connections need no accept of ours.
    /// (iptables' `-m conntrack` is an opaque xtables match in nft's listing: not recognised.)
    pub fn accepts_established(&self) -> bool {
        self.rules.iter().any(|r| {
            let Some(items) = r.expr.as_array() else {
                return false;
            };
            let mut ct = false;
            for e in items {
                if let Some(m) = e.get("match") {
                    let state = m["left"]["ct"]["key"] == "state";
                    let right = &m["right"];
                    let established = right == "established"
                        || right
                            .as_array()
                            .is_some_and(|a| a.iter().any(|v| v == "established"));
                    if !(state && established) {
                        return false;
                    }
                    ct = true;
                } else if e.get("accept").is_some() {
                    return ct;
                } else if e.get("counter").is_none() {
                    return false;
                }
            }
            false
        })
    }

    /// Does one of its rules jump (or go) to `target`?
    pub fn jumps_to(&self, target: &str) -> bool {
        self.rules.iter().any(|r| {
            r.expr.as_array().into_iter().flatten().any(|e| {
                ["jump", "goto"]
                    .iter()
                    .any(|k| e.get(k).and_then(|j| j.get("target")) == Some(&Value::from(target)))
            })
        })
    }
}

/// A rule with only counters/logging before a drop or reject verdict.
fn drops_everything(expr: &Value) -> bool {
    let Some(items) = expr.as_array() else {
        return false;
    };
    let mut passive = true;
    for e in items {
        let Some((k, v)) = e.as_object().and_then(|o| o.iter().next()) else {
            return false;
        };
        match k.as_str() {
            "counter" | "log" => {}
            "drop" | "reject" => return passive,
            "xt" if v["type"] == "target"
                && matches!(v["name"].as_str(), Some("REJECT" | "DROP")) =>
            {
                return passive
            }
            _ => passive = false,
        }
    }
    false
}

/// How a blocker drops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Drop {
    Policy,
    /// An unconditional drop/reject rule (its handle).
    Rule {
        handle: u64,
    },
}

/// A foreign base chain that drops what it does not accept itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    pub system: System,
    pub family: String,
    pub table: String,
    pub chain: String,
    pub hook: Hook,
    pub prio: i64,
    pub drop: Drop,
}

impl Blocker {
    /// A drop the agent answers with accepts (input, forward, output). prerouting/postrouting
    /// drops are reported only: an accept there would have to know the whole chain's logic.
    pub fn fixable(&self) -> bool {
        matches!(self.hook, Hook::Input | Hook::Forward | Hook::Output)
    }
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match &self.drop {
            Drop::Policy => "policy drop".to_string(),
            Drop::Rule { handle } => {
                format!("drops everything it does not accept (rule handle {handle})")
            }
        };
        write!(
            f,
            "table {} {} chain {} {how} ({}, hook {} priority {})",
            self.family,
            self.table,
            self.chain,
            self.system.as_str(),
            self.hook.as_str(),
            self.prio
        )
    }
}

fn text(obj: &Value, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Every chain of every table except the agent's own, rules in listed order.
pub fn parse(json: &str) -> Result<Vec<ForeignChain>, Error> {
    Ok(parse_items(&crate::nft::listing_items(json)?))
}

/// [`parse`] over the objects of a listing already read.
pub(crate) fn parse_items(items: &[Value]) -> Vec<ForeignChain> {
    let mut chains: Vec<ForeignChain> = Vec::new();
    let ours = |o: &Value| text(o, "table").as_deref() == Some(TABLE);
    for item in items {
        let Some((kind, obj)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        if ours(obj) {
            continue;
        }
        match kind.as_str() {
            "chain" => chains.push(ForeignChain {
                family: text(obj, "family").unwrap_or_default(),
                table: text(obj, "table").unwrap_or_default(),
                name: text(obj, "name").unwrap_or_default(),
                hook: text(obj, "hook").as_deref().and_then(Hook::parse),
                prio: obj.get("prio").and_then(Value::as_i64),
                policy: text(obj, "policy"),
                rules: Vec::new(),
            }),
            "rule" => {
                let (family, table, chain) = (
                    text(obj, "family").unwrap_or_default(),
                    text(obj, "table").unwrap_or_default(),
                    text(obj, "chain").unwrap_or_default(),
                );
                let rule = ForeignRule {
                    handle: obj.get("handle").and_then(Value::as_u64).unwrap_or(0),
                    comment: text(obj, "comment"),
                    expr: crate::nft::zero_counters(
                        obj.get("expr").cloned().unwrap_or(Value::Null),
                    ),
                };
                if let Some(c) = chains
                    .iter_mut()
                    .find(|c| c.family == family && c.table == table && c.name == chain)
                {
                    c.rules.push(rule);
                }
            }
            _ => {}
        }
    }
    chains
}

/// The base chains among `chains` that drop, in the families the agent's traffic meets (ip,
/// ip6, inet).
pub fn blockers(
    chains: &[ForeignChain],
    system_of: impl Fn(&ForeignChain) -> System,
) -> Vec<Blocker> {
    let mut out = Vec::new();
    for c in chains {
        let (Some(hook), true) = (c.hook, matches!(c.family.as_str(), "ip" | "ip6" | "inet"))
        else {
            continue;
        };
        let drop = if c.policy.as_deref() == Some("drop") {
            Drop::Policy
        } else if let Some(r) = c.unconditional_drop() {
            Drop::Rule { handle: r.handle }
        } else {
            continue;
        };
        out.push(Blocker {
            system: system_of(c),
            family: c.family.clone(),
            table: c.table.clone(),
            chain: c.name.clone(),
            hook,
            prio: c.prio.unwrap_or(0),
            drop,
        });
    }
    out
}
