//! render() unit tests (no root), then root tests that load the rules into the real kernel inside
//! a fresh network namespace.

use std::collections::BTreeMap;

use super::*;
use crate::model::{Ipv6Spec, Mode, NetworkSpec, PortForward, PortLimit, Proto, Services};

fn net(name: &str, mode: Mode, bridge: &str, address: Option<&str>) -> NetworkSpec {
    NetworkSpec {
        address: address.map(|a| a.parse().expect("test address")),
        services: Services {
            dhcp: true,
            tftp: true,
            http_port: Some(8069),
            dns: true,
        },
        ..NetworkSpec::test(name, mode, bridge)
    }
}

fn desired(networks: Vec<NetworkSpec>) -> Desired {
    Desired {
        networks,
        sysctls: BTreeMap::new(),
        vhost_zcopytx: None,
        dhcp_port_limit: Some(PortLimit::default()),
        forwards: Vec::new(),
        coexist: Default::default(),
    }
}

/// `one(mode)` with the per-port DHCP limit set to `limit` (None: off).
fn one_limited(mode: Mode, limit: Option<PortLimit>) -> Desired {
    Desired {
        dhcp_port_limit: limit,
        ..one(mode)
    }
}

fn one(mode: Mode) -> Desired {
    let address = if mode == Mode::Bridge {
        None
    } else {
        Some("10.77.0.1/24")
    };
    desired(vec![net("lab", mode, "br-lab", address)])
}

/// `one(mode)` with IPv6 `fd00:77::1/64` on the bridge.
fn one6(mode: Mode, nat6: bool, dhcp6: bool) -> Desired {
    let mut d = one(mode);
    d.networks[0].ipv6 = Some(Ipv6Spec {
        address: "fd00:77::1/64".parse().expect("test address"),
        nat6,
        dhcp6,
    });
    d
}

/// The rule lines of one chain of the first table in `script` that starts with
/// `table inet hostagent` (or of `script` itself when it has none), comments stripped.
fn chain_rules(script: &str, chain: &str) -> Vec<String> {
    let script = script
        .find("table inet hostagent {")
        .map_or(script, |i| &script[i..]);
    let mut lines = script
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != format!("chain {chain} {{"));
    lines.next();
    lines
        .skip(1) // the `type ... hook ...` line
        .take_while(|l| *l != "}")
        .map(|l| l.split(" comment ").next().unwrap_or(l).to_string())
        .collect()
}

#[test]
fn nat_accepts_guests_out_and_replies_in_and_masquerades_like_libvirt() {
    let s = render(&one(Mode::Nat));
    assert_eq!(
        chain_rules(&s, "forward"),
        [
            "iifname \"br-lab\" oifname \"br-lab\" accept",
            "oifname \"br-lab\" ip daddr 10.77.0.0/24 ct state established,related accept",
            "oifname \"br-lab\" reject with icmpx type port-unreachable",
            "iifname \"br-lab\" ip saddr 10.77.0.0/24 accept",
            "iifname \"br-lab\" reject with icmpx type port-unreachable",
        ]
    );
    assert_eq!(
        chain_rules(&s, "postrouting"),
        [
            "ip saddr 10.77.0.0/24 ip daddr 224.0.0.0/24 return",
            "ip saddr 10.77.0.0/24 ip daddr 255.255.255.255 return",
            "ip saddr 10.77.0.0/24 ip daddr != 10.77.0.0/24 meta l4proto tcp masquerade to :1024-65535",
            "ip saddr 10.77.0.0/24 ip daddr != 10.77.0.0/24 meta l4proto udp masquerade to :1024-65535",
            "ip saddr 10.77.0.0/24 ip daddr != 10.77.0.0/24 masquerade",
        ]
    );
}

#[test]
fn ipv6_is_routed_untranslated_on_nat_and_routed_networks_with_icmpv6_errors_always_in() {
    for mode in [Mode::Nat, Mode::Routed] {
        let s = render(&one6(mode, false, false));
        let fwd = chain_rules(&s, "forward");
        let reject_in = fwd
            .iter()
            .position(|r| r == "oifname \"br-lab\" reject with icmpx type port-unreachable")
            .expect("reject in");
        for want in [
            "oifname \"br-lab\" icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept",
            "oifname \"br-lab\" ip6 daddr fd00:77::/64 accept",
        ] {
            let at = fwd.iter().position(|r| r == want);
            assert!(at.is_some_and(|i| i < reject_in), "{mode:?}: {want} before the reject: {fwd:?}");
        }
        assert!(
            fwd.contains(&"iifname \"br-lab\" ip6 saddr fd00:77::/64 accept".to_string()),
            "{fwd:?}"
        );
        assert!(
            !chain_rules(&s, "postrouting")
                .iter()
                .any(|r| r.contains("ip6")),
            "{s}"
        );
        // Neighbour and router discovery with the host, both ways.
        assert!(chain_rules(&s, "input")
            .contains(&"iifname \"br-lab\" meta l4proto ipv6-icmp accept".to_string()));
        assert!(chain_rules(&s, "output")
            .contains(&"oifname \"br-lab\" meta l4proto ipv6-icmp accept".to_string()));
        assert!(!s.contains("dport 547"), "no DHCPv6 configured");
    }
}

#[test]
fn nat6_accepts_only_replies_in_and_masquerades_the_prefix() {
    let s = render(&one6(Mode::Nat, true, true));
    let fwd = chain_rules(&s, "forward");
    assert!(
        fwd.contains(
            &"oifname \"br-lab\" ip6 daddr fd00:77::/64 ct state established,related accept"
                .to_string()
        ),
        "{fwd:?}"
    );
    assert!(
        !fwd.contains(&"oifname \"br-lab\" ip6 daddr fd00:77::/64 accept".to_string()),
        "{fwd:?}"
    );
    let post = chain_rules(&s, "postrouting");
    for want in [
        "ip6 saddr fd00:77::/64 ip6 daddr != fd00:77::/64 meta l4proto tcp masquerade to :1024-65535",
        "ip6 saddr fd00:77::/64 ip6 daddr != fd00:77::/64 meta l4proto udp masquerade to :1024-65535",
        "ip6 saddr fd00:77::/64 ip6 daddr != fd00:77::/64 masquerade",
    ] {
        assert!(post.contains(&want.to_string()), "{want}: {post:?}");
    }
    assert!(
        chain_rules(&s, "input").contains(&"iifname \"br-lab\" udp dport 547 accept".to_string())
    );
}

#[test]
fn an_isolated_network_forwards_no_ipv6_either() {
    let s = render(&one6(Mode::Isolated, false, false));
    let fwd = chain_rules(&s, "forward");
    assert!(
        !fwd.iter()
            .any(|r| r.contains("ip6") || r.contains("icmpv6")),
        "{fwd:?}"
    );
    assert!(fwd.contains(&"oifname \"br-lab\" reject with icmpx type port-unreachable".to_string()));
    // The host still talks ND and RA with its guests.
    assert!(chain_rules(&s, "output")
        .iter()
        .any(|r| r.contains("ipv6-icmp")));
}

#[test]
fn routed_accepts_new_traffic_into_the_subnet_and_never_masquerades() {
    let s = render(&one(Mode::Routed));
    let fwd = chain_rules(&s, "forward");
    assert!(
        fwd.contains(&"oifname \"br-lab\" ip daddr 10.77.0.0/24 accept".to_string()),
        "{fwd:?}"
    );
    assert!(
        fwd.contains(&"iifname \"br-lab\" ip saddr 10.77.0.0/24 accept".to_string()),
        "{fwd:?}"
    );
    assert!(
        !s.contains("ct state"),
        "routed needs no conntrack match:\n{s}"
    );
    assert!(chain_rules(&s, "postrouting").is_empty());
    assert!(!s.contains("masquerade"));
}

#[test]
fn isolated_forwards_only_within_its_bridge() {
    let s = render(&one(Mode::Isolated));
    assert_eq!(
        chain_rules(&s, "forward"),
        [
            "iifname \"br-lab\" oifname \"br-lab\" accept",
            "oifname \"br-lab\" reject with icmpx type port-unreachable",
            "iifname \"br-lab\" reject with icmpx type port-unreachable",
        ]
    );
    assert!(chain_rules(&s, "postrouting").is_empty());
    // The host's own services stay reachable from isolated guests.
    assert!(
        chain_rules(&s, "input").contains(&"iifname \"br-lab\" udp dport 67 accept".to_string())
    );
}

#[test]
fn bridge_mode_gets_no_rules_at_all() {
    let s = render(&one(Mode::Bridge));
    assert!(
        !s.contains("br-lab"),
        "bridge mode must not appear in any rule:\n{s}"
    );
    for chain in ["input", "output", "forward", "postrouting"] {
        assert!(chain_rules(&s, chain).is_empty(), "{chain} has rules:\n{s}");
    }
}

#[test]
fn input_opens_exactly_the_services_served() {
    let all = render(&one(Mode::Nat));
    assert_eq!(
        chain_rules(&all, "input"),
        [
            "iifname \"br-lab\" udp dport 67 accept",
            "iifname \"br-lab\" udp dport 69 accept",
            "iifname \"br-lab\" tcp dport 8069 accept",
            "iifname \"br-lab\" udp dport 53 accept",
            "iifname \"br-lab\" tcp dport 53 accept",
        ]
    );
    assert_eq!(
        chain_rules(&all, "output"),
        ["oifname \"br-lab\" udp dport 68 accept"]
    );

    let mut d = one(Mode::Nat);
    d.networks[0].services = Services {
        dhcp: false,
        tftp: false,
        http_port: Some(8080),
        dns: false,
    };
    let s = render(&d);
    assert_eq!(
        chain_rules(&s, "input"),
        ["iifname \"br-lab\" tcp dport 8080 accept"]
    );
    assert!(
        chain_rules(&s, "output").is_empty(),
        "no dhcp, no dhcp-reply rule:\n{s}"
    );

    d.networks[0].services = Services::default();
    assert!(chain_rules(&render(&d), "input").is_empty());
}

#[test]
fn several_networks_each_get_their_rules_in_libvirt_chain_order() {
    let d = desired(vec![
        net("a", Mode::Nat, "br-a", Some("10.1.0.1/24")),
        net("b", Mode::Routed, "br-b", Some("10.2.0.1/24")),
        net("c", Mode::Isolated, "br-c", Some("10.3.0.1/24")),
        net("d", Mode::Bridge, "br-d", None),
    ]);
    let s = render(&d);
    let fwd = chain_rules(&s, "forward");
    // cross (all networks), then in (all), then out (all): as libvirt's FWX, FWI, FWO chains.
    assert_eq!(
        fwd,
        [
            "iifname \"br-a\" oifname \"br-a\" accept",
            "iifname \"br-b\" oifname \"br-b\" accept",
            "iifname \"br-c\" oifname \"br-c\" accept",
            "oifname \"br-a\" ip daddr 10.1.0.0/24 ct state established,related accept",
            "oifname \"br-a\" reject with icmpx type port-unreachable",
            "oifname \"br-b\" ip daddr 10.2.0.0/24 accept",
            "oifname \"br-b\" reject with icmpx type port-unreachable",
            "oifname \"br-c\" reject with icmpx type port-unreachable",
            "iifname \"br-a\" ip saddr 10.1.0.0/24 accept",
            "iifname \"br-a\" reject with icmpx type port-unreachable",
            "iifname \"br-b\" ip saddr 10.2.0.0/24 accept",
            "iifname \"br-b\" reject with icmpx type port-unreachable",
            "iifname \"br-c\" reject with icmpx type port-unreachable",
        ]
    );
    let nat = chain_rules(&s, "postrouting");
    assert_eq!(nat.len(), 5);
    assert!(
        nat.iter().all(|r| r.starts_with("ip saddr 10.1.0.0/24 ")),
        "only the nat network: {nat:?}"
    );
    for br in ["br-a", "br-b", "br-c"] {
        assert_eq!(
            chain_rules(&s, "input")
                .iter()
                .filter(|r| r.contains(br))
                .count(),
            5,
            "{br}"
        );
    }
    assert!(!s.contains("br-d"));
}

#[test]
fn rules_carry_the_network_name_as_comment() {
    let s = render(&one(Mode::Nat));
    assert!(
        s.contains("iifname \"br-lab\" udp dport 67 accept comment \"lab: dhcp\""),
        "{s}"
    );
}

#[test]
fn fingerprint_is_in_the_table_comment_and_follows_the_desired_state() {
    let base = one(Mode::Nat);
    let fp = fingerprint(&base);
    assert_eq!(fp.len(), 16);
    assert!(render(&base).contains(&format!("comment \"hostagent {fp}\"")));
    assert_eq!(
        fp,
        fingerprint(&base.clone()),
        "same state, same fingerprint"
    );

    let mut changes = Vec::new();
    let mut d = base.clone();
    d.networks[0].mode = Mode::Routed;
    changes.push(d);
    let mut d = base.clone();
    d.networks[0].address = Some("10.78.0.1/24".parse().expect("addr"));
    changes.push(d);
    let mut d = base.clone();
    d.networks[0].services.http_port = Some(8070);
    changes.push(d);
    let mut d = base.clone();
    d.networks[0].bridge = "br-other".into();
    changes.push(d);
    let mut d = base.clone();
    d.networks
        .push(net("more", Mode::Isolated, "br-more", Some("10.9.0.1/24")));
    changes.push(d);
    for d in changes {
        assert_ne!(fingerprint(&d), fp, "{:?}", d.networks);
    }
}

#[test]
fn script_replaces_only_our_table_in_one_batch() {
    let s = render(&one(Mode::Nat));
    assert!(s.contains(
        "add table inet hostagent\ndelete table inet hostagent\ntable inet hostagent {\n"
    ));
    assert!(s.starts_with("add table bridge hostagent\n"));
    // No flush/delete of anything but our two tables, and the bridge table in the same batch.
    assert!(!s.contains("flush"));
    assert_eq!(s.matches("delete").count(), 2);
    assert_eq!(s.matches("table ").count(), 6);
    assert!(s.contains(
        "add table bridge hostagent\ndelete table bridge hostagent\ntable bridge hostagent {\n"
    ));
}

/// The bridge table's text from a rendered script (it ends where the inet table's batch starts).
fn bridge_table(script: &str) -> &str {
    let start = script
        .find("table bridge hostagent {")
        .expect("bridge table rendered");
    let end = script.find("add table inet").expect("inet table rendered");
    &script[start..end]
}

/// Like `chain_rules`, inside the bridge table.
fn bridge_chain_rules(script: &str, chain: &str) -> Vec<String> {
    let b = bridge_table(script);
    let mut lines = b
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != format!("chain {chain} {{"));
    lines.next();
    lines
        .skip(1)
        .take_while(|l| *l != "}")
        .map(|l| l.split(" comment ").next().unwrap_or(l).to_string())
        .collect()
}

#[test]
fn dhcp_networks_get_a_per_port_limit_in_the_bridge_table() {
    for mode in [Mode::Nat, Mode::Routed, Mode::Isolated] {
        let s = render(&one(mode));
        let b = bridge_table(&s);
        assert_eq!(
            bridge_chain_rules(&s, "input"),
            ["udp dport 67 update @dhcp_ports { iifname limit rate over 100/second burst 200 packets } counter drop"],
            "{mode:?}:\n{b}"
        );
        assert!(b.contains("set dhcp_ports {\n\t\ttype ifname\n\t\tsize 4096\n\t\tflags dynamic,timeout\n\t\ttimeout 60s\n"), "{b}");
        let fp = format!("{:016x}", fnv64(&bridge::body(&one(mode))));
        assert!(b.contains(&format!("comment \"hostagent {fp}\"")), "{b}");
    }
    // No DHCP, or layer-2 only: the table is there (it travels with the inet one) but empty.
    let mut no_dhcp = one(Mode::Nat);
    no_dhcp.networks[0].services.dhcp = false;
    for d in [no_dhcp, one(Mode::Bridge), Desired::default()] {
        let s = render(&d);
        let b = bridge_table(&s);
        assert!(bridge_chain_rules(&s, "input").is_empty(), "{b}");
        assert!(!b.contains("set "), "{b}");
    }
}

#[test]
fn the_per_port_limit_renders_the_configured_rate_and_burst() {
    let d = one_limited(Mode::Nat, Some(PortLimit::per_second(500)));
    assert_eq!(
        bridge::port_limit(&d),
        Some(PortLimit {
            rate_per_sec: 500,
            burst: 1000
        })
    );
    let s = render(&d);
    let b = bridge_table(&s);
    assert_eq!(
        bridge_chain_rules(&s, "input"),
        ["udp dport 67 update @dhcp_ports { iifname limit rate over 500/second burst 1000 packets } counter drop"],
        "{b}"
    );
    assert!(b.contains("set dhcp_ports {"), "{b}");
    // What observe must read back carries the same values.
    let e = expected_bridge(&d);
    assert_eq!(e.rules.len(), 1);
    assert_eq!(
        e.rules[0].expr[1]["set"]["stmt"][0]["limit"],
        serde_json::json!({"rate": 500, "burst": 1000, "per": "second", "inv": true})
    );
    // The default is 100/s, burst 200.
    assert_eq!(PortLimit::default(), PortLimit::per_second(100));
    assert_eq!(
        Desired::default().dhcp_port_limit,
        Some(PortLimit {
            rate_per_sec: 100,
            burst: 200
        })
    );
}

#[test]
fn a_port_limit_of_none_renders_no_rule_and_no_set() {
    for mode in [Mode::Nat, Mode::Routed, Mode::Isolated] {
        let d = one_limited(mode, None);
        assert!(!bridge::limits_dhcp(&d), "{mode:?}");
        let s = render(&d);
        let b = bridge_table(&s);
        // The table and its empty input chain are still there.
        assert!(b.contains("chain input {"), "{b}");
        assert!(bridge_chain_rules(&s, "input").is_empty(), "{b}");
        assert!(!b.contains("set ") && !b.contains("limit"), "{b}");
        let e = expected_bridge(&d);
        assert!(e.rules.is_empty() && e.sets.is_empty(), "{e:?}");
        assert_eq!(e.chains.len(), 1);
        // Same as a host where no network serves DHCP.
        let mut no_dhcp = one(mode);
        no_dhcp.networks[0].services.dhcp = false;
        assert_eq!(bridge::body(&d), bridge::body(&no_dhcp));
    }
}

#[test]
fn a_changed_port_limit_is_a_difference_and_an_unchanged_one_is_not() {
    let at = |limit: Option<PortLimit>| one_limited(Mode::Nat, limit);
    let cases = [
        Some(PortLimit::default()),
        Some(PortLimit::per_second(500)),
        Some(PortLimit::per_second(10)),
        None,
    ];
    for was in cases {
        // What observe reads after `replace(at(was))`.
        let seen = expected(&at(was));
        assert_eq!(seen.differences(&at(was)), Vec::<String>::new(), "{was:?}");
        for now in cases.into_iter().filter(|c| *c != was) {
            let diffs = seen.differences(&at(now));
            assert!(
                !diffs.is_empty()
                    && diffs
                        .iter()
                        .all(|d| d.starts_with("table bridge hostagent: ")),
                "{was:?} → {now:?}: {diffs:?}"
            );
        }
    }
    // Only the rule's limit edited (the fingerprint kept, as a hand edit would): still noticed.
    let d = at(Some(PortLimit::default()));
    let mut seen = expected(&d);
    if let Some(b) = seen.bridge.as_mut() {
        b.rules[0].expr = bridge::rule_json(PortLimit::per_second(101));
    }
    assert!(
        seen.differences(&d)
            .iter()
            .any(|l| l.contains("chain input")),
        "{:?}",
        seen.differences(&d)
    );
}

#[test]
fn a_missing_or_different_bridge_table_is_a_difference() {
    let d = one(Mode::Nat);
    let e = expected(&d);
    let mut missing = e.clone();
    missing.bridge = None;
    assert_eq!(
        missing.differences(&d),
        ["table bridge hostagent is missing"]
    );
    let mut no_rule = e.clone();
    if let Some(b) = no_rule.bridge.as_mut() {
        b.rules.clear();
    }
    assert!(!matches(&no_rule, &d));
    let mut no_set = e.clone();
    if let Some(b) = no_set.bridge.as_mut() {
        b.sets.clear();
    }
    assert!(!matches(&no_set, &d));
    // Counters count traffic: a listing with packets counted still matches once normalized.
    // The whole ruleset: a foreign table's objects (same chain name, same family) are not ours.
    let listing = serde_json::json!({"nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "bridge", "name": "filter", "handle": 1}},
        {"chain": {"family": "bridge", "table": "filter", "name": "input", "handle": 1,
                   "type": "filter", "hook": "input", "prio": -200, "policy": "drop"}},
        {"rule": {"family": "bridge", "table": "filter", "chain": "input", "handle": 2,
                  "expr": [{"accept": null}]}},
        {"table": {"family": "bridge", "name": "hostagent", "handle": 9}},
        {"set": {"family": "bridge", "name": "dhcp_ports", "table": "hostagent", "type": "ifname",
                 "handle": 2, "size": 4096, "flags": ["timeout"], "timeout": 60,
                 "elem": [{"elem": {"val": "vg0", "timeout": 60, "expires": 59}}]}},
        {"chain": {"family": "bridge", "table": "hostagent", "name": "input", "handle": 1,
                   "type": "filter", "hook": "input", "prio": -200, "policy": "accept"}},
        {"rule": {"family": "bridge", "table": "hostagent", "chain": "input", "handle": 3,
                  "comment": "dhcp per-port limit",
                  "expr": bridge::rule_json(PortLimit::default()).as_array().unwrap().iter().map(|x| {
                      if x.get("counter").is_some() {
                          serde_json::json!({"counter": {"packets": 12345, "bytes": 999}})
                      } else { x.clone() }
                  }).collect::<Vec<_>>()}}
    ]});
    let fp = e
        .bridge
        .as_ref()
        .and_then(|b| b.fingerprint.clone())
        .expect("fp");
    let text = format!(
        "table bridge filter {{\n\tchain input {{\n\t}}\n}}\ntable bridge hostagent {{\n\tcomment \"hostagent {fp}\"\n\tchain input {{\n\t}}\n}}\n"
    );
    let listing = RulesetListing::from_parts(&listing.to_string(), &text).expect("parse");
    let seen = observe_in(&listing);
    assert!(seen.present, "a bridge table alone still counts as present");
    let mut whole = e.clone();
    whole.bridge = seen.bridge;
    assert_eq!(whole.differences(&d), Vec::<String>::new());
}

#[test]
fn unquotable_bridge_names_are_refused_before_nft_runs() {
    let mut d = one(Mode::Nat);
    d.networks[0].bridge = "br\"x".into();
    assert!(matches!(check_names(&d), Err(Error::NftName(_))));
    d.networks[0].bridge = "br-lab.10".into();
    assert!(check_names(&d).is_ok());
}

#[test]
fn fingerprint_is_read_from_the_table_comment_only() {
    let text = "table inet hostagent {\n\tcomment \"hostagent 00ff\"\n\tchain input {\n";
    assert_eq!(parse_fingerprint(text, "inet").as_deref(), Some("00ff"));
    let chain_comment = "table inet hostagent {\n\tchain input {\n\t\tcomment \"hostagent 11\"\n";
    assert_eq!(parse_fingerprint(chain_comment, "inet"), None);
    // In the whole ruleset: each family's own table, never another table's comment.
    let ruleset = "table inet filter {\n\tcomment \"hostagent 22\"\n}\ntable bridge hostagent {\n\tcomment \"hostagent 33\"\n}\ntable inet hostagent {\n\tchain input {\n\t}\n}\n";
    assert_eq!(parse_fingerprint(ruleset, "bridge").as_deref(), Some("33"));
    assert_eq!(parse_fingerprint(ruleset, "inet"), None);
}

#[test]
fn expected_state_differs_only_from_a_different_listing() {
    let d = one(Mode::Nat);
    let e = expected(&d);
    assert!(matches(&e, &d));
    let mut fewer = e.clone();
    fewer.rules.remove(3);
    assert!(!matches(&fewer, &d));
    let mut other_fp = e.clone();
    other_fp.fingerprint = Some("0".into());
    assert!(!matches(&other_fp, &d));
    assert!(!matches(&NftObserved::default(), &d));
}

fn forward(network: &str, proto: Proto, host: Option<&str>, port: u16, to: &str) -> PortForward {
    let (addr, to_port) = to.split_once(':').expect("ADDR:PORT");
    PortForward {
        network: network.into(),
        proto,
        host_address: host.map(|h| h.parse().expect("test address")),
        host_port: port,
        to: addr.parse().expect("test address"),
        to_port: to_port.parse().expect("test port"),
    }
}

/// One nat network with two forwards: any host address tcp 8022 → guest :22, and only
/// 203.0.113.1 udp 5353 → guest :53.
fn nat_with_forwards() -> Desired {
    let mut d = one(Mode::Nat);
    d.forwards = vec![
        forward("lab", Proto::Tcp, None, 8022, "10.77.0.10:22"),
        forward(
            "lab",
            Proto::Udp,
            Some("203.0.113.1"),
            5353,
            "10.77.0.11:53",
        ),
    ];
    d
}

#[test]
fn port_forwards_are_dnat_from_outside_and_from_the_host_accepted_in_and_masqueraded_for_hairpin() {
    let s = render(&nat_with_forwards());
    let dnat = [
        "meta nfproto ipv4 fib daddr type local tcp dport 8022 dnat ip to 10.77.0.10:22",
        "ip daddr 203.0.113.1 udp dport 5353 dnat ip to 10.77.0.11:53",
    ];
    assert_eq!(chain_rules(&s, "prerouting"), dnat);
    assert_eq!(chain_rules(&s, "output_dnat"), dnat);
    assert!(
        s.contains("type nat hook prerouting priority dstnat;"),
        "{s}"
    );
    assert!(s.contains("type nat hook output priority -100;"), "{s}");
    assert_eq!(
        chain_rules(&s, "forward")[1..4],
        [
            "oifname \"br-lab\" ip daddr 10.77.0.10 tcp dport 22 ct status dnat accept",
            "oifname \"br-lab\" ip daddr 10.77.0.11 udp dport 53 ct status dnat accept",
            "oifname \"br-lab\" ip daddr 10.77.0.0/24 ct state established,related accept",
        ]
    );
    assert_eq!(
        chain_rules(&s, "postrouting")[..2],
        [
            "ip saddr 10.77.0.0/24 ip daddr 10.77.0.10 tcp dport 22 ct status dnat masquerade",
            "ip saddr 10.77.0.0/24 ip daddr 10.77.0.11 udp dport 53 ct status dnat masquerade",
        ]
    );
    assert!(s.contains("comment \"lab: forward tcp 8022\""), "{s}");
    assert!(s.contains("comment \"lab: hairpin udp 5353\""), "{s}");
    // No forwards, no nat chains for them; a different forward is a different fingerprint.
    assert!(!render(&one(Mode::Nat)).contains("prerouting"));
    let mut other = nat_with_forwards();
    other.forwards[0].to_port = 2222;
    assert_ne!(fingerprint(&other), fingerprint(&nat_with_forwards()));
}

#[test]
fn a_routed_network_forwards_without_an_extra_accept_and_other_networks_forwards_stay_off_it() {
    let mut d = desired(vec![
        net("lab", Mode::Routed, "br-lab", Some("10.77.0.1/24")),
        net("iso", Mode::Isolated, "br-iso", Some("10.78.0.1/24")),
    ]);
    d.forwards = vec![forward("lab", Proto::Tcp, None, 8022, "10.77.0.10:22")];
    let s = render(&d);
    assert_eq!(chain_rules(&s, "prerouting").len(), 1);
    assert!(!chain_rules(&s, "forward")
        .iter()
        .any(|r| r.contains("ct status dnat")));
    assert_eq!(
        chain_rules(&s, "postrouting"),
        ["ip saddr 10.77.0.0/24 ip daddr 10.77.0.10 tcp dport 22 ct status dnat masquerade"]
    );
    assert!(!s.contains("br-iso\" ip daddr 10.77"), "{s}");
}

/// Root tests: a fresh network namespace per test. The test's thread enters it (setns affects
/// only the calling thread, and the `nft` processes it spawns inherit it), then leaves it again.
mod root {
    use super::*;
    use testkit::Netns;

    fn all_modes() -> Vec<(&'static str, Desired)> {
        let mixed = desired(vec![
            net("a", Mode::Nat, "br-a", Some("10.1.0.1/24")),
            net("b", Mode::Routed, "br-b", Some("10.2.0.1/24")),
            net("c", Mode::Isolated, "br-c", Some("10.3.0.1/24")),
            net("d", Mode::Bridge, "br-d", None),
        ]);
        vec![
            ("nat", one(Mode::Nat)),
            ("routed", one(Mode::Routed)),
            ("isolated", one(Mode::Isolated)),
            ("bridge", one(Mode::Bridge)),
            ("mixed", mixed),
            ("empty", Desired::default()),
            ("nat-port-limit-off", one_limited(Mode::Nat, None)),
            (
                "nat-port-limit-10",
                one_limited(Mode::Nat, Some(PortLimit::per_second(10))),
            ),
            (
                "nat-port-limit-100000",
                one_limited(Mode::Nat, Some(PortLimit::per_second(100_000))),
            ),
            ("nat-forwards", nat_with_forwards()),
            ("nat-ipv6", one6(Mode::Nat, false, false)),
            ("nat6", one6(Mode::Nat, true, true)),
            ("routed-ipv6", one6(Mode::Routed, false, true)),
            ("isolated-ipv6", one6(Mode::Isolated, false, false)),
        ]
    }

    #[test]
    fn rendered_rules_pass_nft_check_mode_for_every_mode() {
        let ns = Netns::new("nftc");
        for (mode, d) in all_modes() {
            let out = ns.run_with_stdin(&["nft", "-c", "-f", "-"], &render(&d));
            assert!(
                out.status.success(),
                "{mode}: nft -c rejected:\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                render(&d)
            );
        }
        // Check mode really checks: a broken rule is refused.
        let bad = render(&one(Mode::Nat)).replace("masquerade to", "masquerade too");
        assert!(!ns
            .run_with_stdin(&["nft", "-c", "-f", "-"], &bad)
            .status
            .success());
    }

    #[test]
    fn replaced_table_reads_back_as_matching_for_every_mode() {
        let ns = Netns::new("nftr");
        let _in = ns.enter_here();
        for (mode, d) in all_modes() {
            replace(&d).unwrap_or_else(|e| panic!("{mode}: {e}"));
            let seen = observe().expect("observe");
            assert!(seen.present);
            assert_eq!(seen.fingerprint, Some(fingerprint(&d)), "{mode}");
            assert_eq!(
                seen.differences(&d),
                Vec::<String>::new(),
                "{mode}: {seen:#?}"
            );
            // And the same listing does not match a different desired state.
            let other = if mode == "nat" {
                one(Mode::Routed)
            } else {
                one(Mode::Nat)
            };
            assert!(!matches(&seen, &other), "{mode}");
        }
    }

    #[test]
    fn hand_edits_inside_our_table_are_noticed() {
        let ns = Netns::new("nftt");
        let _in = ns.enter_here();
        let d = one(Mode::Nat);
        let nft = |script: &str| run::run(&["-f", "-"], Some(script), "test").expect("nft");

        replace(&d).expect("replace");
        assert!(matches(&observe().expect("observe"), &d));

        // A rule added by hand.
        nft("add rule inet hostagent forward iifname \"eth9\" accept\n");
        let seen = observe().expect("observe");
        assert!(!matches(&seen, &d));
        assert!(
            seen.differences(&d)
                .iter()
                .any(|l| l.contains("chain forward")),
            "{:?}",
            seen.differences(&d)
        );

        // A rule deleted by hand (by handle, as an admin would).
        replace(&d).expect("replace");
        let listing = run::run(
            &["-a", "list", "chain", "inet", "hostagent", "postrouting"],
            None,
            "list",
        )
        .expect("list");
        let handle = listing
            .lines()
            .find(|l| l.contains("masquerade") && !l.contains("l4proto"))
            .and_then(|l| l.rsplit("# handle ").next())
            .map(|h| h.trim().to_string())
            .expect("handle of the plain masquerade rule");
        nft(&format!(
            "delete rule inet hostagent postrouting handle {handle}\n"
        ));
        assert!(!matches(&observe().expect("observe"), &d));

        // A rule changed in place, keeping its comment.
        replace(&d).expect("replace");
        let listing = run::run(
            &["-a", "list", "chain", "inet", "hostagent", "input"],
            None,
            "list",
        )
        .expect("list");
        let handle = listing
            .lines()
            .find(|l| l.contains("dport 67"))
            .and_then(|l| l.rsplit("# handle ").next())
            .map(|h| h.trim().to_string())
            .expect("handle of the dhcp rule");
        nft(&format!(
            "replace rule inet hostagent input handle {handle} iifname \"br-lab\" udp dport 6700 accept comment \"lab: dhcp\"\n"
        ));
        assert!(!matches(&observe().expect("observe"), &d));

        // A set added to our table.
        replace(&d).expect("replace");
        nft("add set inet hostagent extra { type ipv4_addr; }\n");
        let seen = observe().expect("observe");
        assert_eq!(
            seen.sets,
            [serde_json::json!({"name": "extra", "type": "ipv4_addr"})]
        );
        assert!(!matches(&seen, &d));

        // The bridge table: deleted, or a rule added to it, by hand.
        replace(&d).expect("replace");
        nft("delete table bridge hostagent\n");
        let seen = observe().expect("observe");
        assert_eq!(seen.differences(&d), ["table bridge hostagent is missing"]);
        replace(&d).expect("replace");
        nft("add rule bridge hostagent input udp dport 68 accept\n");
        let seen = observe().expect("observe");
        assert!(
            seen.differences(&d)
                .iter()
                .any(|l| l.starts_with("table bridge hostagent: chain input")),
            "{:?}",
            seen.differences(&d)
        );
        // Only the bridge table left (inet deleted by hand): present, not matching.
        replace(&d).expect("replace");
        nft("delete table inet hostagent\n");
        let seen = observe().expect("observe");
        assert!(seen.present && !matches(&seen, &d));

        replace(&d).expect("replace");
        assert!(
            matches(&observe().expect("observe"), &d),
            "replace repairs the table"
        );
    }

    #[test]
    fn other_tables_survive_replace_and_delete_and_delete_is_idempotent() {
        let ns = Netns::new("nftd");
        let _in = ns.enter_here();
        assert!(!observe().expect("observe absent").present);
        delete().expect("delete when absent is a no-op");

        let foreign = "table inet foreign {\n chain input { type filter hook input priority 0; policy accept; tcp dport 22 accept; }\n}\n";
        run::run(&["-f", "-"], Some(foreign), "test").expect("foreign table");
        let d = one(Mode::Nat);
        replace(&d).expect("replace");
        replace(&d).expect("replace again");
        delete().expect("delete");
        assert!(!observe().expect("observe").present);
        delete().expect("second delete");
        let tables = run::run(&["list", "tables"], None, "list").expect("list");
        assert_eq!(tables.trim(), "table inet foreign");
        let rules = run::run(&["list", "table", "inet", "foreign"], None, "list").expect("list");
        assert!(rules.contains("tcp dport 22 accept"), "{rules}");
    }

    #[test]
    fn failed_replace_keeps_the_old_table_and_reports_nft_stderr_verbatim() {
        let ns = Netns::new("nftf");
        let _in = ns.enter_here();
        let d = one(Mode::Nat);
        replace(&d).expect("replace");
        // A script that fails on its last statement: nft must refuse the whole batch.
        let bad = format!(
            "{}add rule inet hostagent forward bogus accept\n",
            render(&one(Mode::Routed))
        );
        let err = run::run(&["-f", "-"], Some(&bad), "replace table inet hostagent")
            .expect_err("bad rule");
        match &err {
            NftError::Failed { stderr, .. } => {
                assert!(
                    stderr.contains("Error:") && stderr.contains("bogus"),
                    "{stderr}"
                )
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(
            err.to_string().contains("bogus"),
            "Display carries nft's message: {err}"
        );
        assert!(
            matches(&observe().expect("observe"), &d),
            "old table intact after a failed batch"
        );
    }

    #[test]
    fn nft_version_is_reported() {
        let v = version().expect("nft --version");
        assert!(v.starts_with("nftables v"), "{v}");
    }
}
