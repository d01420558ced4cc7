//! What hostagent must never do: adopt or delete a device or table it did not create, or leave a
//! half-applied host behind. Every test runs the real binary in its own network namespace.

use std::collections::BTreeMap;
use std::path::Path;

use hostagent_tests::{hostagent_bin, stderr, stdout, Netns, Scratch};
use serde_json::Value;

const CONFIG: &str = r#"state_dir = "/var/lib/hostagent"

[sysctl]
"net.ipv4.conf.default.rp_filter" = 2

[vhost_net]
experimental_zcopytx = true

[[network]]
name = "lab"
mode = "nat"
bridge = "br-lab"
address = "10.77.0.1/24"
mac = "52:54:00:aa:00:01"
stp = true
forward_delay = 4
mtu = 1400

[[network]]
name = "iso"
mode = "isolated"
bridge = "br-iso"
address = "10.78.0.1/24"
mac = "52:54:00:aa:00:02"
"#;

fn run(
    ns: &Netns,
    s: &Scratch,
    cfg: &str,
    cmd: &[&str],
    fail_after: Option<usize>,
) -> std::process::Output {
    let bin = hostagent_bin();
    let mut argv = vec![bin.to_str().unwrap(), "-c", cfg, "--root", s.root_str()];
    argv.extend_from_slice(cmd);
    let mut c = ns.cmd(&argv);
    if let Some(n) = fail_after {
        c.env("HOSTAGENT_FAIL_AFTER_STEPS", n.to_string());
    }
    c.output().expect("spawn hostagent")
}

fn must(ns: &Netns, s: &Scratch, cfg: &str, cmd: &[&str]) -> String {
    let o = run(ns, s, cfg, cmd, None);
    assert!(
        o.status.success(),
        "hostagent {cmd:?} failed:\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Every regular file under `dir` (relative path → content), except the test's config.
fn files_under(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                if rel != "config.toml" {
                    out.insert(rel, std::fs::read_to_string(&p).unwrap_or_default());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Everything apply may touch, read back independently of hostagent.
#[derive(Debug, PartialEq)]
struct Snapshot {
    links: String,
    addrs: String,
    ip_forward: String,
    rp_filter: String,
    ruleset: String,
    files: BTreeMap<String, String>,
}

/// `ip -j` output without the carrier state and qdisc: the kernel settles a new bridge's carrier
/// on its own (UNKNOWN → NO-CARRIER/DOWN a moment after it goes up), and a device that was up once
/// keeps its default qdisc (noop → noqueue) after it goes down again; apply sets neither.
fn ip_dump(ns: &Netns, what: &str) -> String {
    let mut v: Value = serde_json::from_str(&ns.ok(&["ip", "-j", what])).expect("ip -j");
    for l in v.as_array_mut().expect("array") {
        let o = l.as_object_mut().expect("object");
        o.remove("operstate");
        o.remove("qdisc");
        if let Some(flags) = o.get_mut("flags").and_then(Value::as_array_mut) {
            flags.retain(|f| f != "NO-CARRIER" && f != "LOWER_UP");
        }
    }
    serde_json::to_string_pretty(&v).unwrap()
}

fn snapshot(ns: &Netns, s: &Scratch) -> Snapshot {
    Snapshot {
        links: ip_dump(ns, "link"),
        addrs: ip_dump(ns, "addr"),
        ip_forward: ns.read("/proc/sys/net/ipv4/ip_forward"),
        rp_filter: ns.read("/proc/sys/net/ipv4/conf/default/rp_filter"),
        ruleset: ns.ok(&["nft", "list", "ruleset"]),
        files: files_under(s.root()),
    }
}

fn link(ns: &Netns, dev: &str) -> Value {
    ns.ip_json(&["link", "show", "dev", dev])[0].clone()
}

fn add_foreign_table(ns: &Netns) {
    ns.ok(&["nft", "add", "table", "inet", "foreign"]);
    ns.ok(&[
        "nft",
        "add",
        "chain",
        "inet",
        "foreign",
        "input",
        "{ type filter hook input priority 0; policy accept; }",
    ]);
    ns.ok(&[
        "nft", "add", "rule", "inet", "foreign", "input", "tcp", "dport", "22", "accept",
    ]);
}

#[test]
fn foreign_bridge_with_a_configured_name_fails_plan_and_apply_and_changes_nothing() {
    let ns = Netns::new("fgn");
    let s = Scratch::new();
    let cfg = s.config(CONFIG);
    ns.ok(&["ip", "link", "add", "br-iso", "type", "bridge"]);
    ns.ok(&["ip", "addr", "add", "192.168.50.1/24", "dev", "br-iso"]);
    let before = snapshot(&ns, &s);

    for cmd in [&["plan"][..], &["apply"][..]] {
        let o = run(&ns, &s, &cfg, cmd, None);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{cmd:?} must fail: {}",
            stdout(&o)
        );
        let err = stderr(&o);
        assert!(
            err.contains("br-iso") && err.contains("not hostagent's"),
            "{err}"
        );
        assert!(
            err.contains("rename the network's bridge")
                && err.contains("remove the foreign device"),
            "{err}"
        );
    }
    assert_eq!(
        snapshot(&ns, &s),
        before,
        "nothing changed: not br-lab, not sysctl, not files"
    );
    assert!(!ns.has_link("br-lab"));

    // down with nothing recorded leaves the foreign bridge alone as well.
    must(&ns, &s, &cfg, &["down"]);
    assert_eq!(snapshot(&ns, &s), before);
}

#[test]
fn down_leaves_foreign_bridge_and_foreign_nft_table_untouched() {
    let ns = Netns::new("dwn");
    let s = Scratch::new();
    let cfg = s.config(CONFIG);
    ns.ok(&["ip", "link", "add", "br-foreign", "type", "bridge"]);
    ns.ok(&["ip", "link", "set", "br-foreign", "alias", "someone-else"]);
    add_foreign_table(&ns);
    let foreign_link = link(&ns, "br-foreign");
    let foreign_table = ns.ok(&["nft", "list", "table", "inet", "foreign"]);

    must(&ns, &s, &cfg, &["apply"]);
    assert!(ns.has_link("br-lab") && ns.has_link("br-iso"));
    assert_eq!(
        ns.ok(&["nft", "list", "table", "inet", "foreign"]),
        foreign_table,
        "apply leaves other tables alone"
    );

    let out = must(&ns, &s, &cfg, &["down"]);
    assert!(out.contains("br-lab") && out.contains("br-iso"), "{out}");
    assert!(!ns.has_link("br-lab") && !ns.has_link("br-iso"));
    assert_eq!(
        link(&ns, "br-foreign"),
        foreign_link,
        "foreign bridge untouched"
    );
    assert_eq!(
        ns.ok(&["nft", "list", "table", "inet", "foreign"]),
        foreign_table,
        "foreign table untouched"
    );
    assert!(!ns
        .run(&["nft", "list", "table", "inet", "hostagent"])
        .status
        .success());
}

#[test]
fn down_leaves_a_foreign_bridge_that_took_our_bridges_name() {
    let ns = Netns::new("tkn");
    let s = Scratch::new();
    let cfg = s.config(CONFIG);
    must(&ns, &s, &cfg, &["apply"]);
    // Someone deletes our bridge and makes their own under the same name.
    ns.ok(&["ip", "link", "del", "br-lab"]);
    ns.ok(&["ip", "link", "add", "br-lab", "type", "bridge"]);
    let theirs = link(&ns, "br-lab");

    let o = run(&ns, &s, &cfg, &["down"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("left alone"), "{}", stdout(&o));
    assert_eq!(link(&ns, "br-lab"), theirs, "their br-lab survives");
    assert!(!ns.has_link("br-iso"), "our other bridge is removed");

    // Apply now refuses to adopt it.
    let o = run(&ns, &s, &cfg, &["apply"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not hostagent's"), "{}", stderr(&o));
}

#[test]
fn down_keeps_a_changed_drop_in_and_a_changed_ip_forward() {
    let ns = Netns::new("kep");
    let s = Scratch::new();
    let cfg = s.config(CONFIG);
    must(&ns, &s, &cfg, &["apply"]);
    let dropin = s.file("etc/sysctl.d/90-hostagent.conf");
    std::fs::write(&dropin, "# mine now\nvm.swappiness = 5\n").unwrap();
    ns.ok(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]); // still our value: restored
    must(&ns, &s, &cfg, &["down"]);
    assert_eq!(
        std::fs::read_to_string(&dropin).unwrap(),
        "# mine now\nvm.swappiness = 5\n"
    );
    assert!(
        !s.file("etc/modprobe.d/vhost-net.conf").exists(),
        "our unchanged file is removed"
    );
    assert_eq!(ns.read("/proc/sys/net/ipv4/ip_forward"), "0");
}

/// Inject a failure before every step in turn: the host must end exactly as it started.
fn rollback_at_every_step(ns: &Netns, s: &Scratch, cfg: &str) {
    let plan: Value = serde_json::from_str(&stdout(&run(ns, s, cfg, &["plan", "--json"], None)))
        .expect("plan --json");
    let steps = plan["actions"].as_array().expect("actions").len();
    assert!(steps >= 3, "{plan}");
    let before = snapshot(ns, s);
    for n in 0..steps {
        let o = run(ns, s, cfg, &["apply"], Some(n));
        assert_eq!(
            o.status.code(),
            Some(1),
            "apply with failure after {n} steps must fail: {}",
            stdout(&o)
        );
        let err = stderr(&o);
        let failing = plan["actions"][n]["kind"].as_str().unwrap();
        assert!(
            err.contains("injected failure"),
            "step {n} ({failing}): {err}"
        );
        assert!(!err.contains("undo also failed"), "step {n}: {err}");
        assert_eq!(
            snapshot(ns, s),
            before,
            "host changed after a rollback at step {n} ({failing})"
        );
    }
    // A number past the last step does nothing special: apply succeeds.
    let o = run(ns, s, cfg, &["apply"], Some(steps));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn rollback_after_any_failed_step_restores_a_fresh_host() {
    let ns = Netns::new("rb1");
    let s = Scratch::new();
    let cfg = s.config(CONFIG);
    add_foreign_table(&ns);
    rollback_at_every_step(&ns, &s, &cfg);
    assert!(ns.has_link("br-lab"));
}

#[test]
fn rollback_after_any_failed_step_restores_a_previously_applied_host() {
    let ns = Netns::new("rb2");
    let s = Scratch::new();
    let cfg = s.config(CONFIG);
    must(&ns, &s, &cfg, &["apply"]);
    // The new config changes almost everything about the existing networks and drops one.
    let changed = CONFIG
        .replace("10.77.0.1/24", "10.99.0.1/24")
        .replace("mtu = 1400", "mtu = 1300")
        .replace("forward_delay = 4", "forward_delay = 6")
        .replace("52:54:00:aa:00:01", "52:54:00:aa:00:11")
        .replace(
            "experimental_zcopytx = true",
            "experimental_zcopytx = false",
        )
        .replace("rp_filter\" = 2", "rp_filter\" = 1");
    let changed = &changed[..changed.find("[[network]]\nname = \"iso\"").unwrap()];
    let cfg2 = s.config(changed);
    rollback_at_every_step(&ns, &s, &cfg2);
    assert!(
        !ns.has_link("br-iso"),
        "the successful apply removed the dropped network's bridge"
    );
    let o = run(&ns, &s, &cfg2, &["plan"], None);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn rollback_in_bridge_mode_releases_the_port_and_restores_its_state() {
    let ns = Netns::new("rb3");
    let s = Scratch::new();
    // The port starts down and unenslaved: apply enslaves it and sets it up, rollback undoes both.
    ns.ok(&[
        "ip", "link", "add", "port0", "type", "veth", "peer", "name", "port0b",
    ]);
    let cfg = s.config(
        r#"state_dir = "/var/lib/hostagent"

[[network]]
name = "prov"
mode = "bridge"
bridge = "br-prov"
interfaces = ["port0"]
stp = false
mac = "52:54:00:aa:00:21"
address = "10.90.0.1/24"
"#,
    );
    rollback_at_every_step(&ns, &s, &cfg);
    assert_eq!(link(&ns, "port0")["master"], "br-prov");
}
