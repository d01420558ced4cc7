//! Port forwarding (`[[network.forward]]`) with the real binary: DNAT in the agent's table from
//! outside, from the host itself and from another guest of the same bridge (hairpin), read back
//! with `nft -j`, and repaired by `run` when someone deletes the rule. (`guest = "NAME"` targets
//! resolve to the same address in the config, see agent/src/config/tests/forward.rs; a [[guest]]
//! here would need libvirt.)
//!
//! ```text
//!  guest A ns   10.77.0.10 ─┐
//!  guest B ns   10.77.0.11 ─┴─ br-lab 10.77.0.1/24   host ns   up0 203.0.113.1/24 ── upstream ns 203.0.113.2
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hostagent_tests::cli::Cli;
use hostagent_tests::config::{Config, Dhcp, Forward, Network};
use hostagent_tests::daemon::Daemon;
use hostagent_tests::Scratch;
use testkit::sock::{tcp_echo_once, udp_echo_once, EchoServer};
use testkit::{stderr, stdout, wait_for, Netns};

const UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const GUEST_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);

fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// lab (nat, DHCP) forwarding tcp 8022 from every host address to guest A's 22, and udp 5353
/// on the uplink address only to its 53.
fn config() -> Config {
    Config::new("/state").network(
        Network::nat("lab", "br-lab", "10.77.0.1/24")
            .dhcp(Dhcp::new("10.77.0.100-10.77.0.200"))
            .forward(Forward::new("tcp", 8022, "10.77.0.10:22"))
            .forward(Forward::new("udp", 5353, "10.77.0.10:53").host_address("203.0.113.1")),
    )
}

fn guest(host: &Netns, port: &str, ip: &str) -> Netns {
    let g = host.plug("br-lab", port);
    g.ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    g.ok(&["ip", "route", "add", "default", "via", "10.77.0.1"]);
    g
}

/// The DNAT rules of the agent's table, read back with `nft -j` (not through the agent).
fn dnat_rules(host: &Netns) -> Vec<serde_json::Value> {
    let out = host.ok(&["nft", "-j", "list", "table", "inet", "hostagent"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("nft -j");
    v["nftables"]
        .as_array()
        .expect("nftables")
        .iter()
        .filter_map(|i| i.get("rule"))
        .filter(|r| r["chain"] == "prerouting")
        .cloned()
        .collect()
}

#[test]
fn a_host_port_reaches_the_guest_from_outside_from_the_host_and_from_another_guest() {
    let s = Scratch::new();
    let cfg = s.config(config());
    let host = Netns::new("pfh");
    let upstream = Netns::new("pfu");
    host.veth_to("up0", &upstream, "eth0");
    host.ok(&["ip", "addr", "add", "203.0.113.1/24", "dev", "up0"]);
    upstream.ok(&["ip", "addr", "add", "203.0.113.2/24", "dev", "eth0"]);

    let plan = Cli::new(&host, &s, &cfg).run(&["plan"]);
    let shown = format!("{}{}", stdout(&plan), stderr(&plan));
    assert!(
        shown.contains(
            "replace nftables table inet hostagent (1 network; forward tcp *:8022 → 10.77.0.10:22, \
             udp 203.0.113.1:5353 → 10.77.0.10:53)"
        ),
        "{shown}"
    );
    let daemon = Daemon::start(&host, &s, &cfg, &[]);
    let a = guest(&host, "vga", "10.77.0.10");
    let b = guest(&host, "vgb", "10.77.0.11");
    let ssh = EchoServer::tcp(&a, at(Ipv4Addr::UNSPECIFIED, 22));
    let dns = EchoServer::udp(&a, at(Ipv4Addr::UNSPECIFIED, 53));

    // Read back independently: two DNAT rules in prerouting, to the guest.
    let rules = dnat_rules(&host);
    let dnat: Vec<String> = rules
        .iter()
        .filter_map(|r| r["expr"].as_array()?.last().map(|v| v["dnat"].to_string()))
        .collect();
    assert_eq!(
        dnat,
        [
            r#"{"addr":"10.77.0.10","family":"ip","port":22}"#,
            r#"{"addr":"10.77.0.10","family":"ip","port":53}"#
        ],
        "{rules:?}"
    );

    // From outside: the guest sees the real client.
    tcp_echo_once(&upstream, at(UPLINK, 8022)).expect("upstream → host:8022 → guest:22");
    assert_eq!(
        ssh.peers().last().map(|p| p.ip()),
        Some(IpAddr::V4(UPSTREAM))
    );
    udp_echo_once(&upstream, at(UPLINK, 5353)).expect("upstream → host:5353/udp → guest:53");
    assert_eq!(
        dns.peers().last().map(|p| p.ip()),
        Some(IpAddr::V4(UPSTREAM))
    );
    // The host address of the UDP forward is the only one that forwards it.
    assert!(udp_echo_once(&b, at(GATEWAY, 5353)).is_err());

    // From the host itself (output hook), to its own uplink address.
    tcp_echo_once(&host, at(UPLINK, 8022)).expect("host → its own :8022 → guest:22");
    assert_eq!(ssh.peers().last().map(|p| p.ip()), Some(IpAddr::V4(UPLINK)));

    // Hairpin: guest B through the host's port, to A on the same bridge; A sees the gateway,
    // so its answer goes back through the host and is un-NATed on the way.
    for to in [at(UPLINK, 8022), at(GATEWAY, 8022)] {
        tcp_echo_once(&b, to).unwrap_or_else(|e| panic!("hairpin via {to}: {e}"));
        assert_eq!(
            ssh.peers().last().map(|p| p.ip()),
            Some(IpAddr::V4(GATEWAY))
        );
    }
    // Nothing else is forwarded.
    assert!(tcp_echo_once(&upstream, at(UPLINK, 8023)).is_err());

    // Drift: someone deletes the DNAT rule; `run` puts the table back.
    let handle = rules[0]["handle"].to_string();
    host.ok(&[
        "nft",
        "delete",
        "rule",
        "inet",
        "hostagent",
        "prerouting",
        "handle",
        &handle,
    ]);
    assert_eq!(dnat_rules(&host).len(), 1);
    let repaired = wait_for(10, || (dnat_rules(&host).len() == 2).then_some(()));
    assert!(repaired.is_some(), "log:\n{}", daemon.log_text());
    tcp_echo_once(&upstream, at(UPLINK, 8022)).expect("forward works again after the repair");
    assert_eq!(
        ssh.peers()
            .iter()
            .filter(|p| p.ip() != IpAddr::V4(GUEST_A))
            .count(),
        5,
        "{:?}",
        ssh.peers()
    );
}
