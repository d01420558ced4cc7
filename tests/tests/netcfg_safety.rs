//! What hostagent must never do: adopt or delete a device or table it did not create, or leave a
//! half-applied host behind. Every test runs the real binary in its own network namespace.

use std::collections::BTreeMap;

use hostagent_tests::cli::Cli;
use hostagent_tests::config::{Config, Network};
use hostagent_tests::Scratch;
use serde_json::Value;
use testkit::{stderr, stdout, Netns};

/// What the tests change between two applies: everything about the lab network and the
/// host-wide settings.
struct Lab {
    address: &'static str,
    address6: &'static str,
    mac: &'static str,
    forward_delay: u32,
    mtu: u32,
    zcopytx: bool,
    rp_filter: u32,
}

const LAB: Lab = Lab {
    address: "10.77.0.1/24",
    address6: "fd00:77::1/64",
    mac: "52:54:00:aa:00:01",
    forward_delay: 4,
    mtu: 1400,
    zcopytx: true,
    rp_filter: 2,
};

/// A sysctl, a vhost-net option, the nat network `lab` and, if `with_iso`, the isolated `iso`.
fn config(lab: &Lab, with_iso: bool) -> Config {
    let c = Config::new("/var/lib/hostagent")
        .sysctl("net.ipv4.conf.default.rp_filter", lab.rp_filter)
        .vhost_zcopytx(lab.zcopytx)
        .network(
            Network::nat("lab", "br-lab", lab.address)
                .address6(lab.address6)
                .mac(lab.mac)
                .stp(true)
                .forward_delay(lab.forward_delay)
                .mtu(lab.mtu),
        );
    if !with_iso {
        return c;
    }
    c.network(
        Network::new("iso", "isolated", "br-iso")
            .address("10.78.0.1/24")
            .address6("fd00:78::1/64")
            .mac("52:54:00:aa:00:02"),
    )
}

/// `hostagent ARGS`, with a failure injected after `fail_after` apply steps if given.
fn run(cli: &Cli, cmd: &[&str], fail_after: Option<usize>) -> std::process::Output {
    let mut c = cli.cmd(cmd);
    if let Some(n) = fail_after {
        c.env("HOSTAGENT_FAIL_AFTER_STEPS", n.to_string());
    }
    c.output().expect("spawn hostagent")
}

/// Everything apply may touch, read back independently of hostagent.
#[derive(Debug, PartialEq)]
struct Snapshot {
    links: String,
    addrs: String,
    ip_forward: String,
    ipv6_forwarding: String,
    rp_filter: String,
    ruleset: String,
    files: BTreeMap<String, Vec<u8>>,
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
        ipv6_forwarding: ns.read("/proc/sys/net/ipv6/conf/all/forwarding"),
        rp_filter: ns.read("/proc/sys/net/ipv4/conf/default/rp_filter"),
        ruleset: ns.ok(&["nft", "list", "ruleset"]),
        files: s.files(),
    }
}

fn link(ns: &Netns, dev: &str) -> Value {
    ns.link(dev).unwrap_or_else(|| panic!("no device {dev}"))
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
    let cfg = s.config(config(&LAB, true));
    let cli = Cli::new(&ns, &s, &cfg);
    ns.ok(&["ip", "link", "add", "br-iso", "type", "bridge"]);
    ns.ok(&["ip", "addr", "add", "192.168.50.1/24", "dev", "br-iso"]);
    let before = snapshot(&ns, &s);

    for cmd in [&["plan"][..], &["apply"][..]] {
        let o = run(&cli, cmd, None);
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
    cli.ok(&["down"]);
    assert_eq!(snapshot(&ns, &s), before);
}

#[test]
fn down_leaves_foreign_bridge_and_foreign_nft_table_untouched() {
    let ns = Netns::new("dwn");
    let s = Scratch::new();
    let cfg = s.config(config(&LAB, true));
    let cli = Cli::new(&ns, &s, &cfg);
    ns.ok(&["ip", "link", "add", "br-foreign", "type", "bridge"]);
    ns.ok(&["ip", "link", "set", "br-foreign", "alias", "someone-else"]);
    add_foreign_table(&ns);
    let foreign_link = link(&ns, "br-foreign");
    let foreign_table = ns.ok(&["nft", "list", "table", "inet", "foreign"]);

    cli.ok(&["apply"]);
    assert!(ns.has_link("br-lab") && ns.has_link("br-iso"));
    assert_eq!(
        ns.ok(&["nft", "list", "table", "inet", "foreign"]),
        foreign_table,
        "apply leaves other tables alone"
    );

    let out = cli.ok(&["down"]);
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
    assert!(!ns.has_nft_table("inet", "hostagent"));
}

#[test]
fn down_leaves_a_foreign_bridge_that_took_our_bridges_name() {
    let ns = Netns::new("tkn");
    let s = Scratch::new();
    let cfg = s.config(config(&LAB, true));
    let cli = Cli::new(&ns, &s, &cfg);
    cli.ok(&["apply"]);
    // Someone deletes our bridge and makes their own under the same name.
    ns.ok(&["ip", "link", "del", "br-lab"]);
    ns.ok(&["ip", "link", "add", "br-lab", "type", "bridge"]);
    let theirs = link(&ns, "br-lab");

    let o = run(&cli, &["down"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("left alone"), "{}", stdout(&o));
    assert_eq!(link(&ns, "br-lab"), theirs, "their br-lab survives");
    assert!(!ns.has_link("br-iso"), "our other bridge is removed");

    // Apply now refuses to adopt it.
    let o = run(&cli, &["apply"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not hostagent's"), "{}", stderr(&o));
}

#[test]
fn down_keeps_a_changed_drop_in_and_a_changed_ip_forward() {
    let ns = Netns::new("kep");
    let s = Scratch::new();
    let cfg = s.config(config(&LAB, true));
    let cli = Cli::new(&ns, &s, &cfg);
    cli.ok(&["apply"]);
    let dropin = s.file("etc/sysctl.d/90-hostagent.conf");
    std::fs::write(&dropin, "# mine now\nvm.swappiness = 5\n").expect("write the drop-in");
    ns.ok(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]); // still our value: restored
    cli.ok(&["down"]);
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
    let cli = Cli::new(ns, s, cfg);
    let plan: Value =
        serde_json::from_str(&stdout(&run(&cli, &["plan", "--json"], None))).expect("plan --json");
    let steps = plan["actions"].as_array().expect("actions").len();
    assert!(steps >= 3, "{plan}");
    let before = snapshot(ns, s);
    for n in 0..steps {
        let o = run(&cli, &["apply"], Some(n));
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
    let o = run(&cli, &["apply"], Some(steps));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn rollback_after_any_failed_step_restores_a_fresh_host() {
    let ns = Netns::new("rb1");
    let s = Scratch::new();
    let cfg = s.config(config(&LAB, true));
    add_foreign_table(&ns);
    rollback_at_every_step(&ns, &s, &cfg);
    assert!(ns.has_link("br-lab"));
}

#[test]
fn rollback_after_any_failed_step_restores_a_previously_applied_host() {
    let ns = Netns::new("rb2");
    let s = Scratch::new();
    let cfg = s.config(config(&LAB, true));
    let cli = Cli::new(&ns, &s, &cfg);
    cli.ok(&["apply"]);
    // The new config changes almost everything about the existing networks and drops one.
    let changed = Lab {
        address: "10.99.0.1/24",
        address6: "fd00:99::1/64",
        mac: "52:54:00:aa:00:11",
        forward_delay: 6,
        mtu: 1300,
        zcopytx: false,
        rp_filter: 1,
    };
    let cfg2 = s.config(config(&changed, false));
    rollback_at_every_step(&ns, &s, &cfg2);
    assert!(
        !ns.has_link("br-iso"),
        "the successful apply removed the dropped network's bridge"
    );
    let (code, plan) = Cli::new(&ns, &s, &cfg2).plan();
    assert_eq!(code, Some(0), "{plan}");
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
        Config::new("/var/lib/hostagent").network(
            Network::new("prov", "bridge", "br-prov")
                .interfaces(&["port0"])
                .stp(false)
                .mac("52:54:00:aa:00:21")
                .address("10.90.0.1/24"),
        ),
    );
    rollback_at_every_step(&ns, &s, &cfg);
    assert_eq!(link(&ns, "port0")["master"], "br-prov");
}
