//! The agent's private nftables table (`inet hostagent`), rendered from the desired networks and
//! replaced atomically in one `nft -f -` transaction. Other tables are never touched.
//!
//! We drive the `nft` binary ourselves, always through one runner (`run`, with [`NftError`]), so
//! its error message reaches the user verbatim and "table absent" is never confused with "nft
//! failed". The rules and their meaning (libvirt's) are in [`rules`].
//!
//! Recognising our table: the table comment carries a fingerprint of the rendered rules
//! (`comment "hostagent <fnv64>"`), and observe also reads every chain and rule back
//! (`nft -j list table`) and compares them, expression by expression, with what we render, so a
//! rule deleted, added or edited by hand inside the table is noticed. (nft 1.0.6 prints table and
//! chain comments only in its text listing, not in JSON, so the fingerprint is read from there.)
//! Both listings are of the whole ruleset, read once per observe ([`RulesetListing`]).
//!
//! A second table, `bridge hostagent` ([`bridge`]: the per-port DHCP limit), travels with it:
//! rendered into the same batch, observed, compared (its own fingerprint, rules and set) and
//! deleted together with `inet hostagent`.

pub mod bridge;
pub mod rules;
mod run;

pub use run::NftError;

use serde::Serialize;
use serde_json::{json, Value};

use crate::model::Desired;
use crate::Error;
use rules::Ruleset;

/// Name of the tables the agent owns (`inet hostagent` and `bridge hostagent`).
pub const TABLE: &str = "hostagent";

/// The agent's main table, as users see it in `nft list tables` (and as plans and `down` name it).
pub const FIREWALL_TABLE: &str = "inet hostagent";

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

/// `nft --version`, for `check`.
pub fn version() -> Result<String, Error> {
    Ok(run::run(&["--version"], None, "--version")?
        .trim()
        .to_string())
}

/// `nft list tables`, for `check`: does nft run here with the rights it needs?
pub fn list_tables() -> Result<String, Error> {
    Ok(run::run(&["list", "tables"], None, "list tables")?)
}

/// The host's whole ruleset, `nft -j list ruleset` (for [`crate::coexist`]: foreign tables).
pub(crate) fn list_ruleset() -> Result<String, Error> {
    Ok(run::run(&["-j", "list", "ruleset"], None, "list ruleset")?)
}

/// `nft -j ARGS...` (a listing), through the one runner; `action` names it in errors.
pub(crate) fn list_json(args: &[&str], action: &str) -> Result<String, NftError> {
    let mut argv = vec!["-j"];
    argv.extend_from_slice(args);
    run::run(&argv, None, action)
}

/// Run an `nft -f` script that changes a foreign table (the coexist accepts); `action` names it.
pub(crate) fn run_script(script: &str, action: &str) -> Result<(), NftError> {
    run::run(&["-f", "-"], Some(script), action).map(|_| ())
}

/// Bridge names go inside quoted nft strings, which have no escapes: allow only plain names.
/// `plan` refuses such a name before anything runs (see `plan::conflicts`).
pub fn check_names(desired: &Desired) -> Result<(), Error> {
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
    load(&render(desired))
}

/// Load an `nft -f` script (one of [`render`]'s, or [`restore_script`]'s) as one transaction.
pub fn load(script: &str) -> Result<(), Error> {
    run::run(
        &["-f", "-"],
        Some(script),
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
    run::run(
        &["-f", "-"],
        Some(&script),
        &format!("delete table inet {TABLE}"),
    )?;
    Ok(())
}

/// The agent's tables as they are now, as `nft list table` prints them (the bridge table, then
/// the inet table: the order [`render`] creates them in), None when neither exists. A rollback
/// puts them back with [`restore_script`]. Only nft's "No such file or directory" counts as
/// absent: any other failure is an error, never "nothing to restore".
pub fn saved_tables() -> Result<Option<String>, Error> {
    let mut saved = String::new();
    for family in ["bridge", "inet"] {
        let action = format!("list table {family} {TABLE}");
        match run::run(&["list", "table", family, TABLE], None, &action) {
            Ok(text) => saved.push_str(&text),
            Err(NftError::Absent { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((!saved.is_empty()).then_some(saved))
}

/// The script that puts [`saved_tables`]' text back atomically: both of ours are deleted and the
/// saved text loaded in one transaction, so a table that did not exist before is gone again.
pub fn restore_script(saved: &str) -> String {
    let t = TABLE;
    format!(
        "table bridge {t} {{}}\ndelete table bridge {t}\ntable inet {t} {{}}\ndelete table inet {t}\n{saved}"
    )
}

/// The host's whole ruleset, read once for everything an observe needs from it: our tables and
/// the foreign chains [`crate::coexist`] looks at. Two `nft` runs in all (JSON for the structure,
/// terse text for the table comments, which nft 1.0.6 leaves out of JSON), where reading each of
/// our tables on its own took four and the foreign chains a fifth; the daemon's drift check does
/// this every second.
#[derive(Debug, Clone)]
pub struct RulesetListing {
    /// The objects of the JSON listing, parsed once for every reader.
    pub(crate) items: Vec<Value>,
    text: String,
}

impl RulesetListing {
    pub fn read() -> Result<RulesetListing, Error> {
        let items = listing_items(&list_ruleset()?)?;
        let text = run::run(&["-t", "list", "ruleset"], None, "list ruleset")?;
        Ok(RulesetListing { items, text })
    }

    #[cfg(test)]
    pub(crate) fn from_parts(json: &str, text: &str) -> Result<RulesetListing, Error> {
        Ok(RulesetListing {
            items: listing_items(json)?,
            text: text.into(),
        })
    }
}

/// The objects of an `nft -j list ...` output (its `nftables` array).
pub(crate) fn listing_items(json: &str) -> Result<Vec<Value>, Error> {
    let doc: Value = serde_json::from_str(json).map_err(|e| NftError::Output(e.to_string()))?;
    match doc {
        Value::Object(mut o) => match o.remove("nftables") {
            Some(Value::Array(items)) => Some(items),
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| NftError::Output("no \"nftables\" array".into()).into())
}

/// Read the agent's tables back. Both absent is `present: false`, not an error. A bridge table
/// left without its inet table still counts as present (with no inet content), so a plan sees
/// something to repair or delete.
pub fn observe() -> Result<NftObserved, Error> {
    Ok(observe_in(&RulesetListing::read()?))
}

/// [`observe`] from a listing already read.
pub fn observe_in(listing: &RulesetListing) -> NftObserved {
    let items = &listing.items;
    let bridge = observe_table(items, &listing.text, "bridge");
    let mut observed = match observe_table(items, &listing.text, "inet") {
        Some(inet) => inet,
        None if bridge.is_some() => NftObserved {
            present: true,
            ..NftObserved::default()
        },
        None => return NftObserved::default(),
    };
    observed.bridge = bridge.map(Box::new);
    observed
}

/// One of our tables out of the whole ruleset, None when it does not exist.
fn observe_table(items: &[Value], text: &str, family: &str) -> Option<NftObserved> {
    let ours = |obj: &Value, table_key: &str| {
        obj.get("family").and_then(Value::as_str) == Some(family)
            && obj.get(table_key).and_then(Value::as_str) == Some(TABLE)
    };
    let mut present = false;
    let mut table_items = Vec::new();
    for item in items {
        let Some((kind, obj)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        match kind.as_str() {
            "metainfo" => {}
            "table" => present |= ours(obj, "name"),
            _ if ours(obj, "table") => table_items.push(item),
            _ => {}
        }
    }
    if !present {
        return None;
    }
    let mut observed = parse_items(table_items);
    observed.fingerprint = parse_fingerprint(text, family);
    Some(observed)
}

/// The table comment's fingerprint from nft's text listing of the ruleset: the `comment` line
/// inside `table FAMILY hostagent {`, before its first chain.
fn parse_fingerprint(text: &str, family: &str) -> Option<String> {
    let header = format!("table {family} {TABLE} {{");
    let prefix = format!("comment \"{TABLE} ");
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| *l == header)?;
    for line in lines {
        if line.starts_with("chain ") || line.starts_with("set ") || line == "}" {
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

/// Normalize the `nft -j` objects of one of our tables: drop handles and names of the table,
/// zero rule counters (they count traffic, not configuration), reduce sets to their
/// declarations, sort chains and sets by name and rules by chain (keeping their order inside
/// each chain).
fn parse_items(items: Vec<&Value>) -> NftObserved {
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
    observed
}

/// A rule's expressions with every anonymous `counter` reset to 0 packets, 0 bytes.
pub(crate) fn zero_counters(expr: Value) -> Value {
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
