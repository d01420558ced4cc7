//! Bridging the host's only uplink (`mode = "bridge"`, `interfaces = ["eth0"]`, eth0 carrying
//! the host's addresses and routes), with the real binary in namespaces:
//!
//! ```text
//!  host ns: eth0 10.0.0.5/24 brd +, 10.0.0.6/24 (secondary)      upstream ns: eth0 10.0.0.1/24
//!           default via 10.0.0.1 metric 100 proto static                      lo 198.51.100.1/32 (echo :7)
//!           198.51.100.0/24 via 10.0.0.1 metric 50 src 10.0.0.6
//! ```
//!
//! TCP sessions from the host over eth0 (one on-link, one through the default route, one
//! through the route with a source) keep exchanging data across the takeover, across `down`, and
//! across a rollback at every step; the kernel is read back with `ip -j`, and `down` (and every
//! rollback) leaves eth0's addresses and the routes exactly as they were.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};

use hostagent_tests::cli::Cli;
use hostagent_tests::config::{Config, Network};
use hostagent_tests::daemon::Daemon;
use hostagent_tests::Scratch;
use serde_json::Value;
use testkit::sock::{exchange, tcp_connect, EchoServer};
use testkit::{stderr, stdout, wait_for, Netns};

/// The uplink network: eth0 on bridge br0, STP as given.
fn config(stp: bool) -> Config {
    Config::new("/state").network(
        Network::new("uplink", "bridge", "br0")
            .interfaces(&["eth0"])
            .stp(stp),
    )
}

struct Lab {
    s: Scratch,
    cfg: String,
    host: Netns,
    _upstream: Netns,
    _echo: EchoServer,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let s = Scratch::new();
        let cfg = s.config(config(false));
        let host = Netns::new(&format!("{tag}h"));
        let upstream = Netns::new(&format!("{tag}u"));
        host.veth_to("eth0", &upstream, "eth0");
        for cmd in [
            "ip addr add 10.0.0.5/24 brd + dev eth0",
            "ip addr add 10.0.0.6/24 dev eth0",
            "ip route add default via 10.0.0.1 dev eth0 metric 100 proto static",
            "ip route add 198.51.100.0/24 via 10.0.0.1 dev eth0 metric 50 src 10.0.0.6",
        ] {
            host.ok(&cmd.split(' ').collect::<Vec<_>>());
        }
        upstream.ok(&["ip", "addr", "add", "10.0.0.1/24", "dev", "eth0"]);
        upstream.ok(&["ip", "addr", "add", "198.51.100.1/32", "dev", "lo"]);
        upstream.ok(&["ip", "addr", "add", "203.0.113.7/32", "dev", "lo"]);
        let echo = EchoServer::tcp(
            &upstream,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7),
        );
        Lab {
            s,
            cfg,
            host,
            _upstream: upstream,
            _echo: echo,
        }
    }

    fn agent(&self, args: &[&str], fail_after: Option<usize>) -> std::process::Output {
        let mut cmd = Cli::new(&self.host, &self.s, &self.cfg).cmd(args);
        if let Some(n) = fail_after {
            cmd.env("HOSTAGENT_FAIL_AFTER_STEPS", n.to_string());
        }
        cmd.output().expect("run hostagent")
    }

    fn must(&self, args: &[&str]) -> String {
        Cli::new(&self.host, &self.s, &self.cfg).ok(args)
    }

    /// Sessions over eth0: on-link, through the default route, through the sourced route.
    fn sessions(&self) -> Vec<TcpStream> {
        ["10.0.0.1", "203.0.113.7", "198.51.100.1"]
            .iter()
            .map(|ip| {
                let to = SocketAddr::new(ip.parse().expect("ip"), 7);
                tcp_connect(&self.host, to).unwrap_or_else(|e| panic!("connect {to}: {e}"))
            })
            .collect()
    }
}

fn alive(sessions: &mut [TcpStream], when: &str) {
    for s in sessions.iter_mut() {
        let peer = s.peer_addr().map(|p| p.to_string()).unwrap_or_default();
        let local = s.local_addr().map(|p| p.to_string()).unwrap_or_default();
        let got = exchange(s, when)
            .unwrap_or_else(|e| panic!("{when}: session {local} → {peer} broke: {e}"));
        assert_eq!(got, when, "{local} → {peer}");
    }
}

/// eth0 as `ip -j` shows it: MAC, MTU, flags, master, and its IPv4 addresses (all fields).
fn eth0(ns: &Netns) -> Value {
    let l = ns.ip_json(&["addr", "show", "dev", "eth0"])[0].clone();
    let inet: Vec<Value> = l["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["family"] == "inet")
        .cloned()
        .collect();
    serde_json::json!({
        "mac": l["address"], "mtu": l["mtu"], "flags": l["flags"], "master": l["master"], "inet": inet,
    })
}

/// Every IPv4 route of every table, sorted, as `ip -j` prints them.
fn routes(ns: &Netns) -> Vec<String> {
    let v = ns.ip_json(&["-4", "route", "show", "table", "all"]);
    let mut out: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r.to_string())
        .collect();
    out.sort();
    out
}

fn route_via(ns: &Netns, dst: &str) -> Value {
    ns.ip_json(&["-4", "route", "show", "exact", dst])
        .as_array()
        .and_then(|a| a.first().cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn the_only_uplink_moves_onto_the_bridge_with_its_sessions_alive_and_down_gives_it_back_exactly() {
    let lab = Lab::new("tko");
    let before = (eth0(&lab.host), routes(&lab.host));
    let mac = lab.host.read("/sys/class/net/eth0/address");
    let mut sessions = lab.sessions();
    alive(&mut sessions, "before");

    let o = lab.agent(&["plan"], None);
    let plan = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "{plan}{}", stderr(&o));
    for line in [
        format!("create bridge br0 for network uplink (mac {mac}, mtu default, stp off, forward delay 0 s)"),
        "set link br0 up".into(),
        "add port eth0 to bridge br0 and set it up".into(),
        "move 10.0.0.5/24 from eth0 to br0".into(),
        "move 10.0.0.6/24 from eth0 to br0".into(),
        "move default via 10.0.0.1 dev eth0 proto static metric 100 → dev br0".into(),
        "move 198.51.100.0/24 via 10.0.0.1 dev eth0 proto boot src 10.0.0.6 metric 50 → dev br0".into(),
        "remove 10.0.0.5/24, 10.0.0.6/24 from eth0 (on br0 now; eth0's own subnet routes go with it)".into(),
    ] {
        assert!(plan.contains(&line), "plan lacks {line:?}:\n{plan}");
    }
    let order: Vec<usize> = [
        "set link br0 up",
        "add port eth0",
        "move 10.0.0.5",
        "move default",
        "remove 10.0.0.5",
    ]
    .iter()
    .map(|l| plan.find(l).expect("listed"))
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "bridge up, port, addresses, routes, port cleared:\n{plan}"
    );

    lab.must(&["apply"]);
    alive(&mut sessions, "after takeover");

    // Read back with ip -j: the bridge has the port's MAC and addresses, the routes go through it.
    let br0 = lab.host.ip_json(&["addr", "show", "dev", "br0"])[0].clone();
    assert_eq!(
        br0["address"],
        mac.as_str(),
        "bridge MAC pinned to the port's"
    );
    let inet: Vec<(String, Value)> = br0["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["family"] == "inet")
        .map(|a| {
            (
                format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]),
                a["broadcast"].clone(),
            )
        })
        .collect();
    assert_eq!(
        inet,
        [
            ("10.0.0.5/24".to_string(), Value::from("10.0.0.255")),
            ("10.0.0.6/24".to_string(), Value::Null)
        ],
        "addresses with their broadcast (or none) as they were"
    );
    let e = eth0(&lab.host);
    assert_eq!(e["inet"], Value::Array(vec![]), "eth0 keeps no address");
    assert_eq!(e["master"], "br0");
    let default = route_via(&lab.host, "default");
    assert_eq!(
        (
            default["dev"].as_str(),
            default["gateway"].as_str(),
            default["metric"].as_u64(),
            default["protocol"].as_str()
        ),
        (Some("br0"), Some("10.0.0.1"), Some(100), Some("static")),
        "{default}"
    );
    let sourced = route_via(&lab.host, "198.51.100.0/24");
    assert_eq!(
        (sourced["dev"].as_str(), sourced["prefsrc"].as_str()),
        (Some("br0"), Some("10.0.0.6")),
        "{sourced}"
    );
    assert!(
        !routes(&lab.host)
            .iter()
            .any(|r| r.contains("\"dev\":\"eth0\"")),
        "{:#?}",
        routes(&lab.host)
    );
    let o = lab.agent(&["plan"], None);
    assert_eq!(o.status.code(), Some(0), "converged:\n{}", stdout(&o));

    let out = lab.must(&["down"]);
    assert!(out.contains("removed br0's takeover of eth0 (10.0.0.5/24, 10.0.0.6/24, route default via 10.0.0.1 dev eth0 proto static metric 100"), "{out}");
    alive(&mut sessions, "after down");
    assert!(!lab.host.has_link("br0"));
    assert_eq!(
        (eth0(&lab.host), routes(&lab.host)),
        before,
        "eth0 and the routes exactly as before"
    );
}

#[test]
fn a_failure_at_any_step_of_the_takeover_puts_eth0_back_exactly_with_sessions_alive() {
    let lab = Lab::new("tkr");
    let before = (eth0(&lab.host), routes(&lab.host));
    let mut sessions = lab.sessions();
    let plan: Value =
        serde_json::from_str(&stdout(&lab.agent(&["plan", "--json"], None))).expect("plan --json");
    let steps = plan["actions"].as_array().expect("actions").len();
    assert!(steps >= 8, "{plan}");
    for n in 0..steps {
        let o = lab.agent(&["apply"], Some(n));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "step {n}: {}", stdout(&o));
        assert!(
            err.contains("injected failure") && !err.contains("undo also failed"),
            "step {n}: {err}"
        );
        assert_eq!(
            (eth0(&lab.host), routes(&lab.host)),
            before,
            "after a rollback at step {n} ({})",
            plan["actions"][n]["kind"]
        );
        alive(&mut sessions, &format!("after rollback {n}"));
    }
    assert!(!lab.host.has_link("br0"));
}

#[test]
fn a_port_networkmanager_or_networkd_runs_is_refused_with_what_to_configure_there() {
    let lab = Lab::new("tkm");
    let index = lab.host.read("/sys/class/net/eth0/ifindex");
    let before = (eth0(&lab.host), routes(&lab.host));
    for (file, body, who, hint) in [
        (
            format!("run/NetworkManager/devices/{index}"),
            "[device]\nmanaged=true\n".to_string(),
            "NetworkManager",
            "type=bridge interface-name=br0",
        ),
        (
            format!("run/systemd/netif/links/{index}"),
            "ADMIN_STATE=configured\nOPER_STATE=routable\nNETWORK_FILE=/etc/systemd/network/10-eth0.network\n".to_string(),
            "systemd-networkd",
            "[NetDev] Name=br0 Kind=bridge",
        ),
    ] {
        let path = lab.s.file(&file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, body).expect("state file");
        for cmd in ["plan", "apply"] {
            let o = lab.agent(&[cmd], None);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{cmd}: {}", stdout(&o));
            assert!(err.contains(&format!("eth0 is managed by {who}")) && err.contains("hint: "), "{err}");
            assert!(err.contains(hint), "{err}");
        }
        std::fs::remove_file(&path).expect("rm");
        assert_eq!((eth0(&lab.host), routes(&lab.host)), before, "{who}: nothing changed");
    }
    // STP on would blind the port for seconds: refused, saying what to write.
    lab.s.config(config(true));
    let o = lab.agent(&["apply"], None);
    assert!(stderr(&o).contains("needs stp = false"), "{}", stderr(&o));
    assert_eq!((eth0(&lab.host), routes(&lab.host)), before);
}

#[test]
fn run_puts_a_deleted_takeover_bridge_back_and_a_reload_without_the_network_gives_eth0_back() {
    let lab = Lab::new("tkd");
    let before = (eth0(&lab.host), routes(&lab.host));
    let mut sessions = lab.sessions();
    let mut daemon = Daemon::start(&lab.host, &lab.s, &lab.cfg, &[]);
    alive(&mut sessions, "under run");

    // Someone deletes the bridge: eth0 is released without addresses; run rebuilds it all.
    lab.host.ok(&["ip", "link", "del", "br0"]);
    let repaired = wait_for(10, || {
        let d = route_via(&lab.host, "default");
        (d["dev"] == "br0" && eth0(&lab.host)["master"] == "br0").then_some(())
    });
    assert!(repaired.is_some(), "log:\n{}", daemon.log_text());
    let log = daemon.log_text();
    assert!(
        log.contains("put 10.0.0.5/24 back on br0 (taken over from eth0)"),
        "{log}"
    );
    assert!(
        log.contains("put route default via 10.0.0.1 dev br0 proto static metric 100 back"),
        "{log}"
    );
    alive(&mut sessions, "after the repair");

    // The config no longer has the network: SIGHUP gives eth0 back, then deletes the bridge.
    lab.s.config(Config::new("/state"));
    daemon.signal(libc::SIGHUP);
    let back = wait_for(10, || (!lab.host.has_link("br0")).then_some(()));
    assert!(back.is_some(), "log:\n{}", daemon.log_text());
    assert!(
        daemon
            .log_text()
            .contains("give 10.0.0.5/24, 10.0.0.6/24, route default via 10.0.0.1 dev eth0"),
        "{}",
        daemon.log_text()
    );
    assert_eq!(
        (eth0(&lab.host), routes(&lab.host)),
        before,
        "eth0 and the routes exactly as before"
    );
    alive(&mut sessions, "after the reload");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(10), Some(Some(0)));
}
