//! `hostagent apply/plan/down` in a fresh network namespace for every network mode, read back
//! independently with `ip -j`, /proc/sys, `nft` and the files under the test's --root.

use std::time::Duration;

use hostagent_tests::{stderr, stdout, Netns, Scratch};
use serde_json::Value;

const MAC: &str = "52:54:00:aa:00:01";

/// One `[[network]]` block.
fn network(name: &str, mode: &str, bridge: &str, extra: &str) -> String {
    format!("[[network]]\nname = \"{name}\"\nmode = \"{mode}\"\nbridge = \"{bridge}\"\n{extra}\n")
}

fn config(body: &str) -> String {
    format!("state_dir = \"/var/lib/hostagent\"\n\n{body}")
}

fn run(ns: &Netns, s: &Scratch, cfg: &str, cmd: &[&str]) -> std::process::Output {
    let mut argv = vec!["-c", cfg, "--root", s.root_str()];
    argv.extend_from_slice(cmd);
    ns.hostagent(&argv)
}

fn must(ns: &Netns, s: &Scratch, cfg: &str, cmd: &[&str]) -> String {
    let o = run(ns, s, cfg, cmd);
    assert!(
        o.status.success(),
        "hostagent {cmd:?} failed:\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// `plan` must say "nothing to do" (exit 0) after an apply.
fn assert_converged(ns: &Netns, s: &Scratch, cfg: &str) {
    let o = run(ns, s, cfg, &["plan"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "second plan is not empty:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
}

fn link(ns: &Netns, dev: &str) -> Value {
    ns.ip_json(&["link", "show", "dev", dev])[0].clone()
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

fn has_table(ns: &Netns, family: &str, table: &str) -> bool {
    ns.run(&["nft", "list", "table", family, table])
        .status
        .success()
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
    let cfg = s.config(&config(&network(
        "lab",
        mode,
        "br-lab",
        &format!("address = \"10.77.0.1/24\"\nmac = \"{MAC}\"\nmtu = 1400"),
    )));
    let plan = run(&ns, &s, &cfg, &["plan"]);
    assert_eq!(plan.status.code(), Some(2), "{}", stderr(&plan));
    assert!(
        stdout(&plan).contains("create bridge br-lab"),
        "{}",
        stdout(&plan)
    );

    must(&ns, &s, &cfg, &["apply"]);
    let l = assert_our_bridge(&ns, &s, "lab", "br-lab");
    assert_eq!(l["mtu"], 1400);
    assert_eq!(inet_addrs(&ns, "br-lab"), vec!["10.77.0.1/24"]);
    assert_eq!(ip_forward(&ns), "1", "{mode} turns forwarding on");
    assert!(has_table(&ns, "inet", "hostagent"));
    let owned = owned_json(&s).unwrap();
    assert_eq!(owned["sysctls"][0]["key"], "net.ipv4.ip_forward");
    assert_eq!(owned["sysctls"][0]["previous"], "0");
    assert_converged(&ns, &s, &cfg);

    let down = must(&ns, &s, &cfg, &["down"]);
    assert!(down.contains("br-lab"), "{down}");
    assert!(!ns.has_link("br-lab"));
    assert_eq!(
        ip_forward(&ns),
        "0",
        "down restores the forwarding we turned on"
    );
    assert!(!has_table(&ns, "inet", "hostagent"));
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
    let cfg = s.config(&config(&network(
        "iso",
        "isolated",
        "br-iso",
        &format!("address = \"10.78.0.1/24\"\nmac = \"{MAC}\""),
    )));
    must(&ns, &s, &cfg, &["apply"]);
    assert_our_bridge(&ns, &s, "iso", "br-iso");
    assert_eq!(inet_addrs(&ns, "br-iso"), vec!["10.78.0.1/24"]);
    assert_eq!(ip_forward(&ns), "0");
    assert!(has_table(&ns, "inet", "hostagent"));
    assert_converged(&ns, &s, &cfg);
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
    let cfg = s.config(&config(&network(
        "prov",
        "bridge",
        "br-prov",
        &format!("interfaces = [\"port0\"]\nstp = false\nmac = \"{MAC}\""),
    )));
    must(&ns, &s, &cfg, &["apply"]);
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
    assert_converged(&ns, &s, &cfg);

    must(&ns, &s, &cfg, &["down"]);
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
    let body = [
        network("a", "isolated", "br-a", &format!("address = \"10.81.0.1/24\"\nmac = \"{MAC}\"\nstp = true\nforward_delay = 0")),
        network("b", "isolated", "br-b", "address = \"10.82.0.1/24\"\nmac = \"52:54:00:aa:00:02\"\nstp = true\nforward_delay = 4"),
        network("c", "isolated", "br-c", "address = \"10.83.0.1/24\"\nmac = \"52:54:00:aa:00:03\"\nstp = false\nforward_delay = 0"),
    ]
    .join("\n");
    let cfg = s.config(&config(&body));
    must(&ns, &s, &cfg, &["apply"]);
    let info = |br: &str| link(&ns, br)["linkinfo"]["info_data"].clone();
    // With kernel STP on the kernel keeps at least 2 s (200 centiseconds) of forward delay.
    assert_eq!(info("br-a")["stp_state"], 1);
    assert_eq!(info("br-a")["forward_delay"], 200);
    assert_eq!(info("br-b")["stp_state"], 1);
    assert_eq!(info("br-b")["forward_delay"], 400);
    assert_eq!(info("br-c")["stp_state"], 0);
    assert_eq!(info("br-c")["forward_delay"], 0);
    assert_converged(&ns, &s, &cfg);

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
    let plan = run(&ns, &s, &cfg, &["plan"]);
    assert_eq!(plan.status.code(), Some(2));
    must(&ns, &s, &cfg, &["apply"]);
    assert_eq!(info("br-b")["forward_delay"], 400);
    assert_eq!(info("br-b")["stp_state"], 1);
    assert_eq!(info("br-c")["stp_state"], 0);
    assert_eq!(info("br-c")["forward_delay"], 0);
    assert_converged(&ns, &s, &cfg);
}

#[test]
fn drift_on_our_bridge_is_repaired_and_stray_addresses_removed() {
    let ns = Netns::new("dri");
    let s = Scratch::new();
    let cfg = s.config(&config(&network(
        "lab",
        "nat",
        "br-lab",
        &format!("address = \"10.77.0.1/24\"\nmac = \"{MAC}\""),
    )));
    must(&ns, &s, &cfg, &["apply"]);
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
    must(&ns, &s, &cfg, &["apply"]);
    let l = assert_our_bridge(&ns, &s, "lab", "br-lab");
    assert_eq!(l["ifindex"], index, "repaired in place, not recreated");
    assert_eq!(inet_addrs(&ns, "br-lab"), vec!["10.77.0.1/24"]);
    assert_converged(&ns, &s, &cfg);
}

#[test]
fn sysctl_table_is_applied_live_and_dropin_written_only_when_different() {
    let ns = Netns::new("sys");
    let s = Scratch::new();
    // vm.* is host-wide, so it lives under --root: give it a fake /proc file.
    let fake = s.file("proc/sys/vm/max_map_count");
    std::fs::create_dir_all(fake.parent().unwrap()).unwrap();
    std::fs::write(&fake, "65530\n").unwrap();
    let body = format!(
        "[sysctl]\n\"vm.max_map_count\" = 262144\n\"net.ipv4.conf.default.rp_filter\" = 2\n\n{}",
        network(
            "lab",
            "isolated",
            "br-lab",
            &format!("address = \"10.77.0.1/24\"\nmac = \"{MAC}\"")
        )
    );
    let cfg = s.config(&config(&body));
    must(&ns, &s, &cfg, &["apply"]);
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
    let second = must(&ns, &s, &cfg, &["apply"]);
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
    must(&ns, &s, &cfg, &["apply"]);
    assert_eq!(ns.read("/proc/sys/net/ipv4/conf/default/rp_filter"), "2");
    assert_eq!(
        std::fs::metadata(&dropin).unwrap().modified().unwrap(),
        mtime
    );

    must(&ns, &s, &cfg, &["down"]);
    assert!(!dropin.exists(), "down removes our drop-in");
}

#[test]
fn vhost_net_conf_is_written_and_reload_need_reported() {
    let ns = Netns::new("vho");
    let s = Scratch::new();
    let param = s.file("sys/module/vhost_net/parameters/experimental_zcopytx");
    std::fs::create_dir_all(param.parent().unwrap()).unwrap();
    std::fs::write(&param, "N\n").unwrap();
    let body = format!(
        "[vhost_net]\nexperimental_zcopytx = true\n\n{}",
        network(
            "lab",
            "isolated",
            "br-lab",
            &format!("address = \"10.77.0.1/24\"\nmac = \"{MAC}\"")
        )
    );
    let cfg = s.config(&config(&body));

    let plan: Value = serde_json::from_str(&must_any(&ns, &s, &cfg, &["plan", "--json"])).unwrap();
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

    must(&ns, &s, &cfg, &["apply"]);
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

    let check: Value =
        serde_json::from_str(&must_any(&ns, &s, &cfg, &["check", "--json"])).unwrap();
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
    let plan: Value = serde_json::from_str(&must_any(&ns, &s, &cfg, &["plan", "--json"])).unwrap();
    assert!(plan["actions"].as_array().unwrap().is_empty(), "{plan}");
    assert!(plan["notes"].as_array().unwrap().is_empty(), "{plan}");
}

/// Run and return stdout whatever the exit code (plan exits 2 with changes, check 1 on a FAIL).
fn must_any(ns: &Netns, s: &Scratch, cfg: &str, cmd: &[&str]) -> String {
    let o = run(ns, s, cfg, cmd);
    assert!(
        matches!(o.status.code(), Some(0..=2)),
        "hostagent {cmd:?}: {}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}
