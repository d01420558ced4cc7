//! `[dhcp] port_rate_limit` against the real `hostagent apply/plan` in a fresh network namespace:
//! 0 leaves `bridge hostagent` without the per-port rule and set, a rate shows up in the kernel as
//! that rate with twice the burst, a change is planned and applied, and an unchanged config is a
//! no-op. Read back with `nft -j list table bridge hostagent` inside the namespace.

use hostagent_tests::{stderr, stdout, Netns, Scratch};
use serde_json::Value;

/// The rule comment netcfg::nft::bridge::PORT_RULE_COMMENT.
const RULE_COMMENT: &str = "dhcp per-port limit";

/// A nat network serving DHCP (what gets the per-port limit), with `dhcp` as the `[dhcp]` body.
fn config(dhcp: &str) -> String {
    format!(
        "state_dir = \"/var/lib/hostagent\"\n\
         [dhcp]\n{dhcp}\n\
         [[network]]\nname = \"lab\"\nmode = \"nat\"\nbridge = \"br-prl\"\naddress = \"10.64.0.1/24\"\n\
         [network.dhcp]\nrange = \"10.64.0.100-10.64.0.199\"\n"
    )
}

fn hostagent(ns: &Netns, s: &Scratch, cfg: &str, cmd: &str) -> std::process::Output {
    ns.hostagent(&["-c", cfg, "--root", s.root_str(), cmd])
}

fn apply(ns: &Netns, s: &Scratch, cfg: &str) -> String {
    let o = hostagent(ns, s, cfg, "apply");
    assert!(
        o.status.success(),
        "apply failed:\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// `plan`'s exit code (0: nothing to do, 2: changes) and its stdout.
fn plan(ns: &Netns, s: &Scratch, cfg: &str) -> (Option<i32>, String) {
    let o = hostagent(ns, s, cfg, "plan");
    (o.status.code(), format!("{}{}", stdout(&o), stderr(&o)))
}

/// The objects of `nft -j list table bridge hostagent` in the namespace.
fn bridge_table(ns: &Netns) -> Vec<Value> {
    let v: Value =
        serde_json::from_str(&ns.ok(&["nft", "-j", "list", "table", "bridge", "hostagent"]))
            .expect("nft json");
    v["nftables"].as_array().cloned().unwrap_or_default()
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
fn assert_noop(ns: &Netns, s: &Scratch, cfg: &str) {
    let (code, out) = plan(ns, s, cfg);
    assert_eq!(code, Some(0), "plan after apply is not empty:\n{out}");
    let before = table_handle(&bridge_table(ns));
    apply(ns, s, cfg);
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
    let cfg = s.config(&config("port_rate_limit = 0"));
    apply(&ns, &s, &cfg);
    assert_no_limit(&ns);
    assert_noop(&ns, &s, &cfg);
    assert_no_limit(&ns);

    // 500: the change is planned, applied, and read back as 500/s burst 1000.
    let cfg = s.config(&config("port_rate_limit = 500"));
    let (code, out) = plan(&ns, &s, &cfg);
    assert_eq!(code, Some(2), "a changed rate must be a change:\n{out}");
    assert!(
        out.contains("replace nftables table inet hostagent"),
        "{out}"
    );
    apply(&ns, &s, &cfg);
    assert_limit(&ns, 500);
    assert_noop(&ns, &s, &cfg);
    assert_limit(&ns, 500);

    // Key left out: the default, 100/s burst 200 (what tests/tests/ratelimit.rs relies on).
    let cfg = s.config(&config(""));
    assert_eq!(plan(&ns, &s, &cfg).0, Some(2));
    apply(&ns, &s, &cfg);
    assert_limit(&ns, 100);
    assert_noop(&ns, &s, &cfg);

    // Back to 0: the rule and set go again.
    let cfg = s.config(&config("port_rate_limit = 0"));
    assert_eq!(plan(&ns, &s, &cfg).0, Some(2));
    apply(&ns, &s, &cfg);
    assert_no_limit(&ns);
    assert_noop(&ns, &s, &cfg);
}
