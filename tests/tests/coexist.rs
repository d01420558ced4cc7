//! Living with someone else's firewall, with the real binary and the real tools: Docker's
//! iptables-nft rules (`FORWARD` policy DROP, `DOCKER-USER` jumped to first, made with
//! `iptables-nft` as Docker makes them), a hand-written `inet filter` with `policy drop` on input
//! and forward, and a running firewalld (tests/src/firewalld.rs). Each time: with
//! `coexist = "off"` the guest really is cut off (so the blocker is real), `check` and `plan` say
//! which chain and what it does; with `"auto"` the NAT guest gets its DHCP lease and reaches the
//! upstream namespace; drift (our accepts deleted, as a firewall script or a Docker restart does)
//! is repaired by `run`; and `down` leaves the foreign rules exactly as they were
//! (`iptables-nft-save`, `nft -j list ruleset`, firewalld's zones).
//!
//! ```text
//!  guest ns eth0 ── vg0 ∈ br-lab 10.77.0.1/24  host ns  up0 203.0.113.1/24 ── upstream ns 203.0.113.2 (echo :7)
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hostagent_tests::cli::Cli;
use hostagent_tests::config::{Config, Dhcp, Network, Pxe};
use hostagent_tests::daemon::Daemon;
use hostagent_tests::firewalld::Firewalld;
use hostagent_tests::{hostagent_bin, Scratch};
use serde_json::Value;
use testkit::dhcp_client::udhcpc_once;
use testkit::sock::{tcp_echo_once, EchoServer};
use testkit::{stderr, stdout, wait_for, Netns};

const UPSTREAM: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2)), 7);

/// lab: nat with DHCP, TFTP and HTTP boot from ROOT/srv/boot (which holds `boot.ipxe`).
fn config(coexist: &str) -> Config {
    Config::new("/state").coexist(coexist).network(
        Network::nat("lab", "br-lab", "10.77.0.1/24")
            .dhcp(Dhcp::new("10.77.0.100-10.77.0.150"))
            .pxe(Pxe::new("/srv/boot").script("boot.ipxe").http_port(8069)),
    )
}

const BOOT_SCRIPT: &str = "#!ipxe\nboot\n";

/// Fetch boot.ipxe from the gateway over TFTP and HTTP with curl: both must give it.
fn boot_files_served(guest: &Netns) {
    for url in [
        "tftp://10.77.0.1/boot.ipxe",
        "http://10.77.0.1:8069/boot.ipxe",
    ] {
        let out = guest.run(&["curl", "-sS", "--max-time", "10", url]);
        assert_eq!(stdout(&out), BOOT_SCRIPT, "{url}: {}", stderr(&out));
    }
}

struct Lab {
    s: Scratch,
    host: Netns,
    _upstream: Netns,
    off: String,
    auto: String,
    /// Extra environment for every hostagent run (a private firewalld's bus).
    env: Vec<(String, String)>,
    /// The upstream's echo server (UPSTREAM) the guests try to reach.
    _echo: EchoServer,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let s = Scratch::new();
        s.write("srv/boot/boot.ipxe", BOOT_SCRIPT);
        let off = s.config(config("off"));
        let auto_path = s.file("auto.toml");
        std::fs::write(&auto_path, config("auto").to_string()).expect("write config");
        let host = Netns::new(&format!("{tag}h"));
        let upstream = Netns::new(&format!("{tag}u"));
        host.veth_to("up0", &upstream, "eth0");
        host.ok(&["ip", "addr", "add", "203.0.113.1/24", "dev", "up0"]);
        upstream.ok(&["ip", "addr", "add", "203.0.113.2/24", "dev", "eth0"]);
        host.ok(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
        let echo = EchoServer::tcp(
            &upstream,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7),
        );
        Lab {
            s,
            host,
            _upstream: upstream,
            off,
            auto: auto_path.to_str().expect("utf-8").to_string(),
            env: Vec::new(),
            _echo: echo,
        }
    }

    fn agent(&self, cfg: &str, args: &[&str]) -> std::process::Output {
        Cli::new(&self.host, &self.s, cfg)
            .cmd(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run hostagent")
    }

    /// `hostagent run` with `env` (through `env`, which execs it in place).
    fn daemon(&self, cfg: &str) -> Daemon {
        let bin = hostagent_bin();
        let vars: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut argv: Vec<&str> = vec!["env"];
        argv.extend(vars.iter().map(String::as_str));
        argv.extend([
            bin.to_str().expect("utf-8"),
            "-c",
            cfg,
            "--root",
            self.s.root_str(),
            "run",
        ]);
        Daemon::spawn(&self.host, &self.s, &argv)
    }

    fn must(&self, cfg: &str, args: &[&str]) -> String {
        let o = self.agent(cfg, args);
        assert!(
            o.status.success(),
            "hostagent {args:?}:\nstdout: {}\nstderr: {}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// `plan`'s output (it exits 2 when there is something to do, 0 when not).
    fn plan(&self, cfg: &str) -> String {
        let o = self.agent(cfg, &["plan"]);
        assert!(matches!(o.status.code(), Some(0 | 2)), "{}", stderr(&o));
        stdout(&o)
    }

    /// `check` (with coexist = "off") warns with `needle`.
    fn check_says(&self, needle: &str) {
        let check = stdout(&self.agent(&self.off, &["check"]));
        assert!(check.contains(needle), "check lacks {needle:?}:\n{check}");
    }

    /// With `coexist = "off"` and the daemon serving, the foreign firewall really cuts a new
    /// guest off: no DHCP answer, no way out. The guest, for the `auto` half of the test.
    fn cut_off(&self) -> Netns {
        let daemon = self.daemon(&self.off);
        let guest = self.guest();
        assert!(
            dhcp_blocked(&guest),
            "the input drop must keep DHCP from the server"
        );
        assert!(
            tcp_echo_once(&guest, UPSTREAM).is_err(),
            "the forward drop must bite"
        );
        drop(daemon);
        guest
    }

    /// A guest on br-lab with a static address and default route (the DHCP check is separate).
    fn guest(&self) -> Netns {
        let g = self.host.plug("br-lab", "vg0");
        g.ok(&["ip", "addr", "add", "10.77.0.10/24", "dev", "eth0"]);
        g.ok(&["ip", "route", "add", "default", "via", "10.77.0.1"]);
        g
    }
}

/// One short DHCP try: does the agent's server answer at all? (udhcpc_once is patient; a
/// blocked server needs no 24 s to prove.)
fn dhcp_blocked(guest: &Netns) -> bool {
    !guest
        .run(&[
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-n",
            "-q",
            "-t",
            "2",
            "-T",
            "1",
            "-s",
            "/bin/true",
        ])
        .status
        .success()
}

/// `iptables-nft-save` without its dated comment lines and with chain counters zeroed.
fn iptables_save(ns: &Netns) -> String {
    ns.ok(&["iptables-nft-save"])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.find(" [") {
            Some(i) if l.starts_with(':') => format!("{} [0:0]", &l[..i]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn zero_counters(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(c) = o.get_mut("counter") {
                if c.is_object() {
                    *c = serde_json::json!({"packets": 0, "bytes": 0});
                }
            }
            o.values_mut().for_each(zero_counters);
        }
        Value::Array(a) => a.iter_mut().for_each(zero_counters),
        _ => {}
    }
}

/// `nft -j list ruleset` without the agent's own tables and with counters zeroed (they count
/// the test's traffic, not configuration). Handles are kept: a foreign rule deleted and made
/// again would show.
fn foreign_ruleset(ns: &Netns) -> Vec<Value> {
    let mut v: Value =
        serde_json::from_str(&ns.ok(&["nft", "-j", "list", "ruleset"])).expect("nft -j");
    zero_counters(&mut v);
    v["nftables"]
        .as_array()
        .expect("nftables")
        .iter()
        .filter(|i| i.get("metainfo").is_none())
        .filter(|i| {
            let o = i.as_object().and_then(|o| o.values().next());
            let table = o.and_then(|o| o.get("table").or_else(|| o.get("name")));
            table.and_then(Value::as_str) != Some("hostagent")
        })
        .cloned()
        .collect()
}

fn docker_rules(ns: &Netns) {
    for rule in [
        "-N DOCKER",
        "-N DOCKER-USER",
        "-A DOCKER-USER -j RETURN",
        "-P FORWARD DROP",
        "-A FORWARD -j DOCKER-USER",
        "-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A FORWARD -o docker0 -j DOCKER",
        "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
        "-A FORWARD -i docker0 -o docker0 -j ACCEPT",
    ] {
        let mut argv = vec!["iptables-nft"];
        argv.extend(rule.split(' '));
        ns.ok(&argv);
    }
}

#[test]
fn docker_forward_drop_is_reported_answered_in_docker_user_repaired_and_left_as_it_was() {
    let lab = Lab::new("cxd");
    docker_rules(&lab.host);
    let save_before = iptables_save(&lab.host);
    let nft_before = foreign_ruleset(&lab.host);

    // coexist = "off": reported, and the guest really is cut off.
    lab.check_says("guests on br-lab cannot reach the outside: table ip filter chain FORWARD policy drop (Docker, hook forward priority 0)");
    lab.must(&lab.off, &["apply"]);
    let guest = lab.guest();
    assert!(
        tcp_echo_once(&guest, UPSTREAM).is_err(),
        "Docker's DROP must bite"
    );
    let plan = lab.plan(&lab.off);
    assert!(
        plan.contains("note: guests on br-lab cannot reach the outside"),
        "{plan}"
    );

    // "auto", as the daemon: accepts in DOCKER-USER, marked.
    let plan = lab.plan(&lab.auto);
    assert!(
        plan.contains("accept lab: guests out in table ip filter chain DOCKER-USER (Docker): -s 10.77.0.0/24 -i br-lab -m comment --comment hostagent -j ACCEPT"),
        "{plan}"
    );
    let daemon = lab.daemon(&lab.auto);
    let ours = |ns: &Netns| {
        ns.ok(&["iptables-nft-save"])
            .lines()
            .filter(|l| l.contains("--comment hostagent"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let placed = ours(&lab.host);
    assert_eq!(
        placed,
        [
            "-A DOCKER-USER -d 10.77.0.0/24 -o br-lab -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment hostagent -j ACCEPT",
            "-A DOCKER-USER -s 10.77.0.0/24 -i br-lab -m comment --comment hostagent -j ACCEPT",
        ],
        "read back with iptables-nft-save"
    );
    tcp_echo_once(&guest, UPSTREAM).expect("the NAT guest reaches upstream under Docker's rules");
    udhcpc_once(&guest, lab.s.root(), "docker", None).expect("DHCP still works");

    // Someone (a firewall script, a reload) deletes our accepts: the daemon puts them back.
    for line in &placed {
        let delete = line.replacen("-A ", "-D ", 1);
        let mut argv = vec!["iptables-nft"];
        argv.extend(delete.split(' '));
        lab.host.ok(&argv);
    }
    assert!(ours(&lab.host).is_empty());
    let back = wait_for(10, || (ours(&lab.host) == placed).then_some(()));
    assert!(back.is_some(), "not repaired; log:\n{}", daemon.log_text());
    tcp_echo_once(&guest, UPSTREAM).expect("reaches upstream again after the repair");
    drop(daemon);

    let out = lab.must(&lab.auto, &["down"]);
    assert!(
        out.contains("removed accept from table ip filter chain DOCKER-USER (Docker)"),
        "{out}"
    );
    assert_eq!(iptables_save(&lab.host), save_before);
    assert_eq!(foreign_ruleset(&lab.host), nft_before);
}

const INET_FILTER: &str = "table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iifname \"lo\" accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
	}
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
";

#[test]
fn an_inet_filter_with_policy_drop_gets_marked_accepts_for_dhcp_and_forwarding_and_down_restores_it(
) {
    let lab = Lab::new("cxn");
    let file = lab.s.file("filter.nft");
    std::fs::write(&file, INET_FILTER).expect("write");
    lab.host.ok(&["nft", "-f", file.to_str().expect("utf-8")]);
    let text_before = lab.host.ok(&["nft", "list", "ruleset"]);
    let nft_before = foreign_ruleset(&lab.host);

    lab.check_says("guests on br-lab cannot reach hostagent's DHCP, DNS, TFTP and HTTP boot: table inet filter chain input policy drop (nftables, hook input priority 0)");
    let guest = lab.cut_off();

    let daemon = lab.daemon(&lab.auto);
    let marked: Vec<String> = foreign_ruleset(&lab.host)
        .iter()
        .filter_map(|i| i.get("rule"))
        .filter(|r| r["comment"] == "hostagent")
        .map(|r| format!("{} {}", r["chain"].as_str().unwrap_or(""), r["expr"]))
        .collect();
    assert_eq!(
        marked.len(),
        6,
        "dhcp, dns udp+tcp, tftp, http boot, guests out (its chains accept replies themselves, so \
         no replies-in or TFTP transfer accepts): {marked:#?}"
    );

    assert!(
        marked
            .iter()
            .any(|m| m.starts_with("input ") && m.contains("\"right\":67")),
        "{marked:#?}"
    );
    // Inserted first, before the foreign rules.
    let input = lab
        .host
        .ok(&["nft", "list", "chain", "inet", "filter", "input"]);
    let first_rule = input
        .lines()
        .skip_while(|l| !l.contains("type filter hook input"))
        .nth(1)
        .unwrap_or("");
    assert!(first_rule.contains("comment \"hostagent\""), "{input}");

    let ip = udhcpc_once(&guest, lab.s.root(), "inet", None).expect("DHCP through the input drop");
    assert!(ip.starts_with("10.77.0.1"), "{ip}");
    tcp_echo_once(&guest, UPSTREAM)
        .expect("the NAT guest reaches upstream through the forward drop");
    boot_files_served(&guest);
    let again = lab.plan(&lab.auto);
    assert!(again.contains("nothing to change"), "converged: {again}");
    drop(daemon);

    lab.must(&lab.auto, &["down"]);
    assert_eq!(foreign_ruleset(&lab.host), nft_before);
    assert_eq!(
        lab.host.ok(&["nft", "list", "ruleset"]),
        text_before,
        "byte for byte"
    );
}

#[test]
fn a_running_firewalld_gets_the_bridge_into_its_trusted_zone_through_firewall_cmd_and_down_takes_it_out(
) {
    let mut lab = Lab::new("cxf");
    let fw = Firewalld::start(&lab.host, lab.s.root());
    lab.env = vec![("DBUS_SYSTEM_BUS_ADDRESS".into(), fw.bus().into())];
    let zones = |fw: &Firewalld| {
        (
            fw.cmd(&lab.host, &["--list-all-zones"]),
            fw.cmd(&lab.host, &["--permanent", "--list-all-zones"]),
        )
    };
    let before = zones(&fw);
    assert!(before.0.contains("trusted"), "{}", before.0);

    let check = stdout(&lab.agent(&lab.off, &["check"]));
    assert!(
        check.contains("guests on br-lab cannot reach the outside: table inet firewalld chain filter_FORWARD drops everything it does not accept")
            && check.contains("(firewalld, hook forward priority 10)"),
        "{check}"
    );
    let guest = lab.cut_off();

    let plan = lab.plan(&lab.auto);
    assert!(
        plan.contains("put br-lab into firewalld zone trusted (lab: guests and services); because table inet firewalld chain filter_"),
        "{plan}"
    );
    let daemon = lab.daemon(&lab.auto);
    let bound = |fw: &Firewalld| {
        fw.cmd(&lab.host, &["--get-zone-of-interface=br-lab"])
            .trim()
            == "trusted"
    };
    assert!(bound(&fw), "runtime binding; log:\n{}", daemon.log_text());
    assert!(
        fw.cmd(
            &lab.host,
            &["--permanent", "--zone=trusted", "--list-interfaces"]
        )
        .contains("br-lab"),
        "permanent binding"
    );
    let ip = udhcpc_once(&guest, lab.s.root(), "firewalld", None).expect("DHCP through firewalld");
    assert!(ip.starts_with("10.77.0.1"), "{ip}");
    tcp_echo_once(&guest, UPSTREAM).expect("the NAT guest reaches upstream through firewalld");

    // Someone takes the runtime binding away: drift repair puts it back. A reload keeps it
    // (it is permanent too).
    fw.cmd(&lab.host, &["--zone=trusted", "--remove-interface=br-lab"]);
    assert!(!bound(&fw));
    assert!(
        wait_for(20, || bound(&fw).then_some(())).is_some(),
        "log:\n{}",
        daemon.log_text()
    );
    fw.cmd(&lab.host, &["--reload"]);
    assert!(bound(&fw));
    tcp_echo_once(&guest, UPSTREAM).expect("after the reload");
    drop(daemon);

    let out = lab.must(&lab.auto, &["down"]);
    assert!(
        out.contains("removed br-lab from firewalld zone trusted"),
        "{out}"
    );
    assert_eq!(
        zones(&fw),
        before,
        "firewalld's zones as they were, runtime and permanent"
    );
}
