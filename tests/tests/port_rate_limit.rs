//! `[dhcp] port_rate_limit` against the real `hostagent apply/plan` in a fresh network namespace:
//! 0 leaves `bridge hostagent` without the per-port rule and set, a rate shows up in the kernel as
//! that rate with twice the burst, a change is planned and applied, and an unchanged config is a
//! no-op. Read back with `nft -j list table bridge hostagent` inside the namespace.

use hostagent_tests::cli::Cli;
use hostagent_tests::config::{Config, Dhcp, Network};
use hostagent_tests::Scratch;
use serde_json::Value;
use testkit::Netns;

/// The rule comment netcfg::nft::bridge::PORT_RULE_COMMENT.
const RULE_COMMENT: &str = "dhcp per-port limit";

/// A nat network serving DHCP (what gets the per-port limit), with `[dhcp] port_rate_limit`
/// set to `rate` (left out for None).
fn config(rate: Option<i64>) -> Config {
    let c = Config::new("/var/lib/hostagent").network(
        Network::nat("lab", "br-prl", "10.64.0.1/24").dhcp(Dhcp::new("10.64.0.100-10.64.0.199")),
    );
    match rate {
        Some(r) => c.port_rate_limit(r),
        None => c,
    }
}

/// The objects of `nft -j list table bridge hostagent` in the namespace.
fn bridge_table(ns: &Netns) -> Vec<Value> {
    ns.nft_json(&["list", "table", "bridge", "hostagent"])
}

fn objects<'a>(table: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    table.iter().filter_map(move |o| o.get(kind))
}

/// The `limit` statements of every rule in the table (any comment), as nft reads them back.
fn limits(table: &[Value]) -> Vec<Value> {
    objects(table, "rule")
        .flat_map(|r| r["expr"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.get("set").map(|s| s["stmt"].clone()))
        .flat_map(|stmt| stmt.as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.get("limit").cloned())
        .collect()
}

/// The table's handle: a new one means apply replaced the table.
fn table_handle(table: &[Value]) -> Value {
    objects(table, "table")
        .next()
        .map(|t| t["handle"].clone())
        .expect("table object in the listing")
}

/// The per-port rule is there with `rate`/s and burst 2 × `rate`, with its set.
fn assert_limit(ns: &Netns, rate: u64) -> Vec<Value> {
    let t = bridge_table(ns);
    let rules: Vec<&Value> = objects(&t, "rule").collect();
    assert_eq!(rules.len(), 1, "one rule expected: {t:?}");
    assert_eq!(rules[0]["comment"], RULE_COMMENT, "{t:?}");
    assert_eq!(rules[0]["chain"], "input", "{t:?}");
    assert_eq!(
        limits(&t),
        [serde_json::json!({"rate": rate, "burst": 2 * rate, "per": "second", "inv": true})],
        "{t:?}"
    );
    let sets: Vec<&Value> = objects(&t, "set").collect();
    assert!(
        sets.len() == 1 && sets[0]["name"] == "dhcp_ports",
        "the per-port set: {t:?}"
    );
    t
}

/// The table and its input chain exist, without any rule, limit or set.
fn assert_no_limit(ns: &Netns) {
    let t = bridge_table(ns);
    let chains: Vec<&Value> = objects(&t, "chain").collect();
    assert!(
        chains.len() == 1 && chains[0]["name"] == "input" && chains[0]["hook"] == "input",
        "the empty input chain stays: {t:?}"
    );
    assert_eq!(objects(&t, "rule").count(), 0, "no rule: {t:?}");
    assert_eq!(objects(&t, "set").count(), 0, "no set: {t:?}");
    assert!(limits(&t).is_empty(), "{t:?}");
}

/// Nothing to do: `plan` exits 0, and another `apply` leaves the table as it is (same handle).
fn assert_noop(ns: &Netns, cli: &Cli) {
    let (code, out) = cli.plan();
    assert_eq!(code, Some(0), "plan after apply is not empty:\n{out}");
    let before = table_handle(&bridge_table(ns));
    cli.ok(&["apply"]);
    assert_eq!(
        table_handle(&bridge_table(ns)),
        before,
        "a second apply replaced the table"
    );
}

#[test]
fn port_rate_limit_0_removes_the_rule_a_rate_reads_back_with_twice_the_burst_and_reapply_is_a_noop()
{
    let ns = Netns::new("prl");
    let s = Scratch::new();

    // 0: the bridge table and its chain, nothing in it.
    let cfg = s.config(config(Some(0)));
    let cli = Cli::new(&ns, &s, &cfg);
    cli.ok(&["apply"]);
    assert_no_limit(&ns);
    assert_noop(&ns, &cli);
    assert_no_limit(&ns);

    // 500: the change is planned, applied, and read back as 500/s burst 1000.
    s.config(config(Some(500)));
    let (code, out) = cli.plan();
    assert_eq!(code, Some(2), "a changed rate must be a change:\n{out}");
    assert!(
        out.contains("replace nftables table inet hostagent"),
        "{out}"
    );
    cli.ok(&["apply"]);
    assert_limit(&ns, 500);
    assert_noop(&ns, &cli);
    assert_limit(&ns, 500);

    // Key left out: the default, 100/s burst 200 (what tests/tests/ratelimit.rs relies on).
    s.config(config(None));
    assert_eq!(cli.plan().0, Some(2));
    cli.ok(&["apply"]);
    assert_limit(&ns, 100);
    assert_noop(&ns, &cli);

    // Back to 0: the rule and set go again.
    s.config(config(Some(0)));
    assert_eq!(cli.plan().0, Some(2));
    cli.ok(&["apply"]);
    assert_no_limit(&ns);
    assert_noop(&ns, &cli);
}
