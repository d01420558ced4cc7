//! The agent's private nftables table (`inet hostagent`), rendered from the desired networks and
//! replaced atomically in one `nft -f -` transaction. Other tables are never touched.
//!
//! We drive the `nft` binary ourselves so its error message reaches the user verbatim. The rules
//! and their meaning (libvirt's) are in [`rules`].
//!
//! Recognising our table: the table comment carries a fingerprint of the rendered rules
//! (`comment "hostagent <fnv64>"`), and observe also reads every chain and rule back
//! (`nft -j list table`) and compares them, expression by expression, with what we render, so a
//! rule deleted, added or edited by hand inside the table is noticed. (nft 1.0.6 prints table and
//! chain comments only in its text listing, not in JSON, so the fingerprint is read from there.)
//!
//! A second table, `bridge hostagent` ([`bridge`]: the per-port DHCP limit), travels with it:
//! rendered into the same batch, observed, compared (its own fingerprint, rules and set) and
//! deleted together with `inet hostagent`.

pub mod bridge;
pub mod rules;

use std::io::Write;
use std::process::{Command, Stdio};

use serde::Serialize;
use serde_json::{json, Value};

use crate::model::Desired;
use crate::Error;
use rules::Ruleset;

/// Name of the tables the agent owns (`inet hostagent` and `bridge hostagent`).
pub const TABLE: &str = "hostagent";

/// FNV-1a 64: stable across releases and platforms, unlike std's hasher.
fn fnv64(text: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Fingerprint of the rules we would load for `desired` (what the table comment carries).
pub fn fingerprint(desired: &Desired) -> String {
    format!("{:016x}", fnv64(&Ruleset::build(desired).body()))
}

/// Full ruleset text for the agent's table (an `nft -f` script that replaces the table atomically).
///
/// `add` + `delete` + the new table in one batch: the add makes the delete succeed when the table
/// is absent (nft 1.0.6 has no `destroy`), and nft commits the batch as one transaction, so there is
/// never a moment without rules, and a bad rule leaves the old table in place.
///
/// The bridge table comes first: a rollback that puts back only a saved `inet` table (delete +
/// add) then leaves the tables listed in the same order as before.
pub fn render(desired: &Desired) -> String {
    let mut out = table_script("bridge", &bridge::body(desired));
    out.push_str(&table_script("inet", &Ruleset::build(desired).body()));
    out
}

/// add + delete + define one table, its comment carrying the fingerprint of `body`.
fn table_script(family: &str, body: &str) -> String {
    let fp = format!("{:016x}", fnv64(body));
    format!(
        "add table {family} {TABLE}\ndelete table {family} {TABLE}\ntable {family} {TABLE} {{\n\tcomment \"{TABLE} {fp}\"\n{body}}}\n"
    )
}

/// A chain of our table as nft lists it (handles dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedChain {
    pub name: String,
    /// Base chain type ("filter", "nat"); None for a regular chain.
    pub kind: Option<String>,
    pub hook: Option<String>,
    pub prio: Option<i64>,
    pub policy: Option<String>,
}

/// A rule of our table as nft lists it (handle dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedRule {
    pub chain: String,
    pub comment: Option<String>,
    /// The rule's expressions, as `nft -j` prints them.
    pub expr: Value,
}

/// What the host has of the agent's table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NftObserved {
    pub present: bool,
    /// Fingerprint from the table comment `hostagent <fingerprint>`, when there is one.
    pub fingerprint: Option<String>,
    /// Chains sorted by name.
    pub chains: Vec<ObservedChain>,
    /// Rules grouped by chain name (sorted), in their order within each chain.
    pub rules: Vec<ObservedRule>,
    /// Sets in the table, reduced to their declarations (see [`bridge::set_signature`]).
    pub sets: Vec<Value>,
    /// Other objects found in the table (maps, named counters, ...), as "kind name".
    pub others: Vec<String>,
    /// The `bridge hostagent` table read the same way; None when it is absent. (Only set on the
    /// `inet` side: the bridge table's own `bridge` is None.)
    pub bridge: Option<Box<NftObserved>>,
}

impl NftObserved {
    /// Why the live table differs from `desired`, one line per difference (empty when it matches).
    pub fn differences(&self, desired: &Desired) -> Vec<String> {
        let expected = expected(desired);
        if !self.present {
            return vec![format!("table inet {TABLE} is missing")];
        }
        let mut out = self.table_differences(&expected);
        match (&self.bridge, &expected.bridge) {
            (None, _) => out.push(format!("table bridge {TABLE} is missing")),
            (Some(have), Some(want)) => out.extend(
                have.table_differences(want)
                    .into_iter()
                    .map(|d| format!("table bridge {TABLE}: {d}")),
            ),
            (Some(_), None) => out.push(format!("table bridge {TABLE} is not expected")),
        }
        out
    }

    /// Differences of one table's content (fingerprint, chains, rules, sets, other objects).
    fn table_differences(&self, expected: &NftObserved) -> Vec<String> {
        let mut out = Vec::new();
        if self.fingerprint != expected.fingerprint {
            out.push(format!(
                "table fingerprint is {} (want {})",
                self.fingerprint.as_deref().unwrap_or("absent"),
                expected.fingerprint.as_deref().unwrap_or("absent")
            ));
        }
        if self.chains != expected.chains {
            out.push("chains differ".into());
        }
        for chain in &expected.chains {
            let have: Vec<&ObservedRule> = self
                .rules
                .iter()
                .filter(|r| r.chain == chain.name)
                .collect();
            let want: Vec<&ObservedRule> = expected
                .rules
                .iter()
                .filter(|r| r.chain == chain.name)
                .collect();
            if have != want {
                out.push(format!(
                    "chain {}: {} rule(s), want {} (or rules changed)",
                    chain.name,
                    have.len(),
                    want.len()
                ));
            }
        }
        if self.sets != expected.sets {
            out.push(format!(
                "sets differ: {} (want {})",
                Value::Array(self.sets.clone()),
                Value::Array(expected.sets.clone())
            ));
        }
        if !self.others.is_empty() {
            out.push(format!("unexpected objects: {}", self.others.join(", ")));
        }
        out
    }
}

/// What observe should see after `replace(desired)`.
pub fn expected(desired: &Desired) -> NftObserved {
    let ruleset = Ruleset::build(desired);
    let mut chains: Vec<ObservedChain> = ruleset
        .chains
        .iter()
        .map(|c| ObservedChain {
            name: c.name.to_string(),
            kind: Some(c.kind.to_string()),
            hook: Some(c.hook.to_string()),
            prio: Some(c.priority.1),
            policy: Some("accept".into()),
        })
        .collect();
    chains.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rules: Vec<ObservedRule> = ruleset
        .chains
        .iter()
        .flat_map(|c| {
            c.rules.iter().map(|r| ObservedRule {
                chain: c.name.to_string(),
                comment: Some(r.comment.clone()),
                expr: r.expr_json(),
            })
        })
        .collect();
    rules.sort_by(|a, b| a.chain.cmp(&b.chain));
    NftObserved {
        present: true,
        fingerprint: Some(format!("{:016x}", fnv64(&ruleset.body()))),
        chains,
        rules,
        sets: Vec::new(),
        others: Vec::new(),
        bridge: Some(Box::new(expected_bridge(desired))),
    }
}

/// What observe should see of `bridge hostagent` after `replace(desired)`.
pub fn expected_bridge(desired: &Desired) -> NftObserved {
    let limit = bridge::port_limit(desired);
    let rules = limit
        .map(|l| ObservedRule {
            chain: "input".into(),
            comment: Some(bridge::PORT_RULE_COMMENT.into()),
            expr: bridge::rule_json(l),
        })
        .into_iter()
        .collect();
    NftObserved {
        present: true,
        fingerprint: Some(format!("{:016x}", fnv64(&bridge::body(desired)))),
        chains: vec![ObservedChain {
            name: "input".into(),
            kind: Some("filter".into()),
            hook: Some("input".into()),
            // The bridge family's `filter` priority.
            prio: Some(-200),
            policy: Some("accept".into()),
        }],
        rules,
        sets: if limit.is_some() {
            vec![bridge::set_json()]
        } else {
            Vec::new()
        },
        others: Vec::new(),
        bridge: None,
    }
}

/// Does the live table hold exactly the rules we render for `desired`?
pub fn matches(observed: &NftObserved, desired: &Desired) -> bool {
    observed.differences(desired).is_empty()
}

/// Output of a successful nft run.
#[derive(Debug)]
struct NftRun {
    stdout: String,
}

/// Run `nft args...`, feeding `stdin` when given. A non-zero exit becomes [`Error::NftCommand`]
/// with nft's stderr verbatim. LC_ALL=C so messages we inspect (ENOENT) are not translated.
fn run_nft(args: &[&str], stdin: Option<&str>, action: &str) -> Result<NftRun, Error> {
    let mut cmd = Command::new("nft");
    cmd.args(args)
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NftMissing,
        _ => Error::io("nft", e),
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error means nft exited early; its exit status and stderr say why.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| Error::io("nft", e))?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        if stderr.is_empty() {
            stderr = format!("(no message; {})", out.status);
        }
        return Err(Error::NftCommand {
            action: action.to_string(),
            stderr,
        });
    }
    Ok(NftRun {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// `nft --version`, for `check`.
pub fn nft_available() -> Result<String, Error> {
    Ok(run_nft(&["--version"], None, "--version")?
        .stdout
        .trim()
        .to_string())
}

/// Bridge names go inside quoted nft strings, which have no escapes: allow only plain names.
fn check_names(desired: &Desired) -> Result<(), Error> {
    for net in &desired.networks {
        let b = &net.bridge;
        let plain = b
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if b.is_empty() || b.len() > 15 || !plain {
            return Err(Error::NftName(b.clone()));
        }
    }
    Ok(())
}

/// Replace the agent's tables (inet and bridge) with the rules for `desired`, in one atomic
/// batch. On failure the previous tables (if any) are untouched and the error carries nft's
/// stderr verbatim.
pub fn replace(desired: &Desired) -> Result<(), Error> {
    check_names(desired)?;
    run_nft(
        &["-f", "-"],
        Some(&render(desired)),
        &format!("replace table inet {TABLE}"),
    )?;
    Ok(())
}

/// Delete the agent's tables (only ours, both families); a no-op when they are absent.
pub fn delete() -> Result<(), Error> {
    // add + delete in one batch: succeeds whether or not the table exists (no `destroy` in 1.0.6).
    let script = format!(
        "add table inet {TABLE}\ndelete table inet {TABLE}\nadd table bridge {TABLE}\ndelete table bridge {TABLE}\n"
    );
    run_nft(
        &["-f", "-"],
        Some(&script),
        &format!("delete table inet {TABLE}"),
    )?;
    Ok(())
}

/// Read the agent's tables back. Both absent is `present: false`, not an error. A bridge table
/// left without its inet table still counts as present (with no inet content), so a plan sees
/// something to repair or delete.
pub fn observe() -> Result<NftObserved, Error> {
    let bridge = observe_table("bridge")?;
    let mut observed = match observe_table("inet")? {
        Some(inet) => inet,
        None if bridge.is_some() => NftObserved {
            present: true,
            ..NftObserved::default()
        },
        None => return Ok(NftObserved::default()),
    };
    observed.bridge = bridge.map(Box::new);
    Ok(observed)
}

/// One of our tables, None when it does not exist.
fn observe_table(family: &str) -> Result<Option<NftObserved>, Error> {
    let action = format!("list table {family} {TABLE}");
    let json = match run_nft(&["-j", "list", "table", family, TABLE], None, &action) {
        Ok(out) => out.stdout,
        Err(Error::NftCommand { stderr, .. }) if stderr.contains("No such file or directory") => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut observed = parse_listing(&json)?;
    let text = run_nft(&["list", "table", family, TABLE], None, &action)?.stdout;
    observed.fingerprint = parse_fingerprint(&text);
    Ok(Some(observed))
}

/// The table comment's fingerprint from nft's text listing: the `comment` line that comes before
/// the first chain.
fn parse_fingerprint(text: &str) -> Option<String> {
    let prefix = format!("comment \"{TABLE} ");
    for line in text.lines().map(str::trim) {
        if line.starts_with("chain ") {
            return None;
        }
        if let Some(rest) = line.strip_prefix(&prefix) {
            return rest.strip_suffix('"').map(str::to_string);
        }
    }
    None
}

fn str_field(obj: &Value, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Normalize `nft -j list table <family> hostagent` output: drop handles and names of the table,
/// zero rule counters (they count traffic, not configuration), reduce sets to their
/// declarations, sort chains and sets by name and rules by chain (keeping their order inside
/// each chain).
fn parse_listing(json: &str) -> Result<NftObserved, Error> {
    let doc: Value = serde_json::from_str(json).map_err(|e| Error::NftOutput(e.to_string()))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::NftOutput("no \"nftables\" array".into()))?;
    let mut observed = NftObserved {
        present: true,
        ..NftObserved::default()
    };
    for item in items {
        let Some((kind, obj)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        match kind.as_str() {
            "metainfo" | "table" => {}
            "chain" => observed.chains.push(ObservedChain {
                name: str_field(obj, "name").unwrap_or_default(),
                kind: str_field(obj, "type"),
                hook: str_field(obj, "hook"),
                prio: obj.get("prio").and_then(Value::as_i64),
                policy: str_field(obj, "policy"),
            }),
            "rule" => observed.rules.push(ObservedRule {
                chain: str_field(obj, "chain").unwrap_or_default(),
                comment: str_field(obj, "comment"),
                expr: zero_counters(obj.get("expr").cloned().unwrap_or(Value::Null)),
            }),
            "set" => observed.sets.push(bridge::set_signature(obj)),
            other => observed.others.push(format!(
                "{other} {}",
                str_field(obj, "name").unwrap_or_default()
            )),
        }
    }
    observed.chains.sort_by(|a, b| a.name.cmp(&b.name));
    observed.rules.sort_by(|a, b| a.chain.cmp(&b.chain));
    observed
        .sets
        .sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(observed)
}

/// A rule's expressions with every anonymous `counter` reset to 0 packets, 0 bytes.
fn zero_counters(expr: Value) -> Value {
    match expr {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| match item {
                    Value::Object(mut o) if o.get("counter").is_some_and(Value::is_object) => {
                        o.insert("counter".into(), json!({"packets": 0, "bytes": 0}));
                        Value::Object(o)
                    }
                    other => other,
                })
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests;
