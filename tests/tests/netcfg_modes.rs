//! `hostagent apply/plan/down` in a fresh network namespace for every network mode, read back
//! independently with `ip -j`, /proc/sys, `nft` and the files under the test's --root.

use std::time::Duration;

use hostagent_tests::cli::Cli;
use hostagent_tests::config::{Config, Network};
use hostagent_tests::Scratch;
use serde_json::Value;
use testkit::{stderr, stdout, Netns};

const MAC: &str = "52:54:00:aa:00:01";

const STATE_DIR: &str = "/var/lib/hostagent";

/// A network with its address and the pinned MAC.
fn one_network(name: &str, mode: &str, bridge: &str, address: &str) -> Network {
    Network::new(name, mode, bridge).address(address).mac(MAC)
}

/// `plan` must say "nothing to do" (exit 0) after an apply.
fn assert_converged(cli: &Cli) {
    let (code, out) = cli.plan();
    assert_eq!(code, Some(0), "second plan is not empty:\n{out}");
}

fn link(ns: &Netns, dev: &str) -> Value {
    ns.link(dev).unwrap_or_else(|| panic!("no device {dev}"))
}

fn inet_addrs(ns: &Netns, dev: &str) -> Vec<String> {
    let v = ns.ip_json(&["-4", "addr", "show", "dev", dev]);
    v[0]["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| format!("{}/{}", x["local"].as_str().unwrap(), x["prefixlen"]))
                .collect()
        })
        .unwrap_or_default()
}

fn ip_forward(ns: &Netns) -> String {
    ns.read("/proc/sys/net/ipv4/ip_forward")
}

fn owned_json(s: &Scratch) -> Option<Value> {
    let p = s.file("var/lib/hostagent/owned.json");
    std::fs::read_to_string(p)
        .ok()
        .map(|t| serde_json::from_str(&t).expect("owned.json is JSON"))
}

/// The common checks for a bridge the agent made.
fn assert_our_bridge(ns: &Netns, s: &Scratch, net: &str, br: &str) -> Value {
    let l = link(ns, br);
    assert_eq!(l["linkinfo"]["info_kind"], "bridge", "{l}");
    assert_eq!(l["address"], MAC, "pinned MAC");
    assert_eq!(l["ifalias"], format!("hostagent:{net}"), "owner mark: {l}");
    assert!(
        l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "bridge is up: {l}"
    );
    let owned = owned_json(s).expect("owned.json written");
    let rec = owned["bridges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == br)
        .expect("bridge recorded")
        .clone();
    assert_eq!(rec["ifindex"], l["ifindex"]);
    assert_eq!(rec["mac"], MAC);
    assert_eq!(rec["network"], net);
    l
}

fn forwarding_mode_round_trip(mode: &str) {
    let ns = Netns::new(&mode[..3]);
    let s = Scratch::new();
    assert_eq!(
        ip_forward(&ns),
        "0",
        "a new namespace starts without forwarding"
    );
    let cfg = s.config(
        Config::new(STATE_DIR)
            .network(one_network("lab", mode, "br-lab", "10.77.0.1/24").mtu(1400)),
    );
    let cli = Cli::new(&ns, &s, &cfg);
    let (code, plan) = cli.plan();
    assert_eq!(code, Some(2), "{plan}");
    assert!(plan.contains("create bridge br-lab"), "{plan}");

    cli.ok(&["apply"]);
    let l = assert_our_bridge(&ns, &s, "lab", "br-lab");
    assert_eq!(l["mtu"], 1400);
    assert_eq!(inet_addrs(&ns, "br-lab"), vec!["10.77.0.1/24"]);
    assert_eq!(ip_forward(&ns), "1", "{mode} turns forwarding on");
    assert!(ns.has_nft_table("inet", "hostagent"));
    let owned = owned_json(&s).unwrap();
    assert_eq!(owned["sysctls"][0]["key"], "net.ipv4.ip_forward");
    assert_eq!(owned["sysctls"][0]["previous"], "0");
    assert_converged(&cli);

    let down = cli.ok(&["down"]);
    assert!(down.contains("br-lab"), "{down}");
    assert!(!ns.has_link("br-lab"));
    assert_eq!(
        ip_forward(&ns),
        "0",
        "down restores the forwarding we turned on"
    );
    assert!(!ns.has_nft_table("inet", "hostagent"));
    assert!(owned_json(&s).is_none(), "owned.json cleared");
}

#[test]
fn nat_mode_creates_marked_bridge_forwarding_and_table_and_down_removes_them() {
    forwarding_mode_round_trip("nat");
}

#[test]
fn routed_mode_creates_marked_bridge_forwarding_and_table_and_down_removes_them() {
    forwarding_mode_round_trip("routed");
}

#[test]
fn isolated_mode_leaves_ip_forward_off() {
    let ns = Netns::new("iso");
    let s = Scratch::new();
    let cfg = s.config(Config::new(STATE_DIR).network(one_network(
        "iso",
        "isolated",
        "br-iso",
        "10.78.0.1/24",
    )));
    let cli = Cli::new(&ns, &s, &cfg);
    cli.ok(&["apply"]);
    assert_our_bridge(&ns, &s, "iso", "br-iso");
    assert_eq!(inet_addrs(&ns, "br-iso"), vec!["10.78.0.1/24"]);
    assert_eq!(ip_forward(&ns), "0");
    assert!(ns.has_nft_table("inet", "hostagent"));
    assert_converged(&cli);
}

#[test]
fn bridge_mode_enslaves_a_veth_port_and_keeps_the_pinned_mac() {
    let ns = Netns::new("brm");
    let s = Scratch::new();
    ns.ok(&[
        "ip", "link", "add", "port0", "type", "veth", "peer", "name", "port0b",
    ]);
    let port_mac = link(&ns, "port0")["address"].as_str().unwrap().to_string();
    assert_ne!(port_mac, MAC);
    let cfg = s.config(
        Config::new(STATE_DIR).network(
            Network::new("prov", "bridge", "br-prov")
                .interfaces(&["port0"])
                .stp(false)
                .mac(MAC),
        ),
    );
    let cli = Cli::new(&ns, &s, &cfg);
    cli.ok(&["apply"]);
    let br = assert_our_bridge(&ns, &s, "prov", "br-prov");
    let port = link(&ns, "port0");
    assert_eq!(port["master"], "br-prov", "{port}");
    assert!(
        port["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "port set up: {port}"
    );
    assert_eq!(br["address"], MAC, "bridge did not take its port's MAC");
    assert!(
        inet_addrs(&ns, "br-prov").is_empty(),
        "address is optional in bridge mode"
    );
    assert_eq!(ip_forward(&ns), "0");
    assert_converged(&cli);

    cli.ok(&["down"]);
    assert!(!ns.has_link("br-prov"));
    assert!(
        ns.has_link("port0"),
        "the host port itself is never deleted"
    );
    assert!(link(&ns, "port0").get("master").is_none());
}

#[test]
fn stp_on_with_delay_0_and_4_and_stp_off() {
    let ns = Netns::new("stp");
    let s = Scratch::new();
    let bridge = |name: &str, net: &str, mac: &str, stp: bool, delay: u32| {
        Network::new(name, "isolated", &format!("br-{name}"))
            .address(net)
            .mac(mac)
            .stp(stp)
            .forward_delay(delay)
    };
    let cfg = s.config(
        Config::new(STATE_DIR)
            .network(bridge("a", "10.81.0.1/24", MAC, true, 0))
            .network(bridge("b", "10.82.0.1/24", "52:54:00:aa:00:02", true, 4))
            .network(bridge("c", "10.83.0.1/24", "52:54:00:aa:00:03", false, 0)),
    );
    let cli = Cli::new(&ns, &s, &cfg);
    cli.ok(&["apply"]);
    let info = |br: &str| link(&ns, br)["linkinfo"]["info_data"].clone();
    // With kernel STP on the kernel keeps at least 2 s (200 centiseconds) of forward delay.
    assert_eq!(info("br-a")["stp_state"], 1);
    assert_eq!(info("br-a")["forward_delay"], 200);
    assert_eq!(info("br-b")["stp_state"], 1);
    assert_eq!(info("br-b")["forward_delay"], 400);
    assert_eq!(info("br-c")["stp_state"], 0);
    assert_eq!(info("br-c")["forward_delay"], 0);
    assert_converged(&cli);

    // Drift by hand is put back by the next apply (STP off → on needs delay before STP).
    ns.ok(&[
        "ip",
        "link",
        "set",
        "br-b",
        "type",
        "bridge",
        "stp_state",
        "0",
    ]);
    ns.ok(&[
        "ip",
        "link",
        "set",
        "br-b",
        "type",
        "bridge",
        "forward_delay",
        "0",
    ]);
    ns.ok(&[
        "ip",
        "link",
        "set",
        "br-c",
        "type",
        "bridge",
        "forward_delay",
        "500",
        "stp_state",
        "1",
    ]);
    assert_eq!(cli.plan().0, Some(2));
    cli.ok(&["apply"]);
    assert_eq!(info("br-b")["forward_delay"], 400);
    assert_eq!(info("br-b")["stp_state"], 1);
    assert_eq!(info("br-c")["stp_state"], 0);
    assert_eq!(info("br-c")["forward_delay"], 0);
    assert_converged(&cli);
}

#[test]
fn drift_on_our_bridge_is_repaired_and_stray_addresses_removed() {
    let ns = Netns::new("dri");
    let s = Scratch::new();
    let cfg = s.config(Config::new(STATE_DIR).network(one_network(
        "lab",
        "nat",
        "br-lab",
        "10.77.0.1/24",
    )));
    let cli = Cli::new(&ns, &s, &cfg);
    cli.ok(&["apply"]);
    let index = link(&ns, "br-lab")["ifindex"].clone();
    ns.ok(&["ip", "addr", "add", "192.168.99.1/24", "dev", "br-lab"]);
    ns.ok(&["ip", "link", "set", "br-lab", "down"]);
    ns.ok(&[
        "ip",
        "link",
        "set",
        "br-lab",
        "address",
        "02:00:00:00:00:09",
    ]);
    cli.ok(&["apply"]);
    let l = assert_our_bridge(&ns, &s, "lab", "br-lab");
    assert_eq!(l["ifindex"], index, "repaired in place, not recreated");
    assert_eq!(inet_addrs(&ns, "br-lab"), vec!["10.77.0.1/24"]);
    assert_converged(&cli);
}

#[test]
fn sysctl_table_is_applied_live_and_dropin_written_only_when_different() {
    let ns = Netns::new("sys");
    let s = Scratch::new();
    // vm.* is host-wide, so it lives under --root: give it a fake /proc file.
    let fake = s.write("proc/sys/vm/max_map_count", "65530\n");
    let cfg = s.config(
        Config::new(STATE_DIR)
            .sysctl("vm.max_map_count", 262144)
            .sysctl("net.ipv4.conf.default.rp_filter", 2)
            .network(one_network("lab", "isolated", "br-lab", "10.77.0.1/24")),
    );
    let cli = Cli::new(&ns, &s, &cfg);
    cli.ok(&["apply"]);
    assert_eq!(std::fs::read_to_string(&fake).unwrap().trim(), "262144");
    assert_eq!(ns.read("/proc/sys/net/ipv4/conf/default/rp_filter"), "2");
    let dropin = s.file("etc/sysctl.d/90-hostagent.conf");
    let text = std::fs::read_to_string(&dropin).unwrap();
    assert!(text.starts_with("# Managed by hostagent"), "{text}");
    assert!(text.contains("vm.max_map_count = 262144\n"), "{text}");
    assert!(
        text.contains("net.ipv4.conf.default.rp_filter = 2\n"),
        "{text}"
    );
    let mtime = std::fs::metadata(&dropin).unwrap().modified().unwrap();

    std::thread::sleep(Duration::from_millis(50));
    let second = cli.ok(&["apply"]);
    assert!(second.contains("nothing to change"), "{second}");
    assert_eq!(
        std::fs::metadata(&dropin).unwrap().modified().unwrap(),
        mtime,
        "unchanged file not rewritten"
    );

    // A live value changed by hand is put back, the file (already right) is left alone.
    ns.ok(&[
        "sh",
        "-c",
        "echo 0 > /proc/sys/net/ipv4/conf/default/rp_filter",
    ]);
    cli.ok(&["apply"]);
    assert_eq!(ns.read("/proc/sys/net/ipv4/conf/default/rp_filter"), "2");
    assert_eq!(
        std::fs::metadata(&dropin).unwrap().modified().unwrap(),
        mtime
    );

    cli.ok(&["down"]);
    assert!(!dropin.exists(), "down removes our drop-in");
}

#[test]
fn vhost_net_conf_is_written_and_reload_need_reported() {
    let ns = Netns::new("vho");
    let s = Scratch::new();
    let param = s.write(
        "sys/module/vhost_net/parameters/experimental_zcopytx",
        "N\n",
    );
    let cfg = s.config(
        Config::new(STATE_DIR)
            .vhost_zcopytx(true)
            .network(one_network("lab", "isolated", "br-lab", "10.77.0.1/24")),
    );
    let cli = Cli::new(&ns, &s, &cfg);

    let plan: Value = serde_json::from_str(&must_any(&cli, &["plan", "--json"])).unwrap();
    assert!(plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["kind"] == "write_file" && a["path"] == "/etc/modprobe.d/vhost-net.conf"));
    let notes = plan["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n.as_str().unwrap().contains("reload")),
        "{plan}"
    );

    cli.ok(&["apply"]);
    let conf = std::fs::read_to_string(s.file("etc/modprobe.d/vhost-net.conf")).unwrap();
    assert!(conf.starts_with("# Managed by hostagent"), "{conf}");
    assert!(
        conf.contains("options vhost_net experimental_zcopytx=1\n"),
        "{conf}"
    );
    assert_eq!(
        std::fs::read_to_string(&param).unwrap(),
        "N\n",
        "the module is never reloaded by us"
    );

    let check: Value = serde_json::from_str(&must_any(&cli, &["check", "--json"])).unwrap();
    let z = check
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "vhost_net zerocopy")
        .expect("zerocopy check")
        .clone();
    assert_eq!(z["status"], "warn", "{z}");
    assert!(z["detail"].as_str().unwrap().contains("reload"), "{z}");

    // Once the loaded module agrees there is nothing to report.
    std::fs::write(&param, "Y\n").unwrap();
    let plan: Value = serde_json::from_str(&must_any(&cli, &["plan", "--json"])).unwrap();
    assert!(plan["actions"].as_array().unwrap().is_empty(), "{plan}");
    assert!(plan["notes"].as_array().unwrap().is_empty(), "{plan}");
}

/// Run and return stdout whatever the exit code (plan exits 2 with changes, check 1 on a FAIL).
fn must_any(cli: &Cli, cmd: &[&str]) -> String {
    let o = cli.run(cmd);
    assert!(
        matches!(o.status.code(), Some(0..=2)),
        "hostagent {cmd:?}: {}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}
