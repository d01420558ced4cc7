//! Coexistence without root: blockers found in listings as nft prints them, the accepts each
//! network needs written for each driver, the notes, and the executor's and teardown's handling
//! of accepts against the recording fake. (tests/tests/coexist.rs runs the real thing.)

use hwaddr::Mac;

use super::ruleset::{blockers, parse, Drop};
use super::*;
use crate::apply::apply_with;
use crate::hostops::fake::FakeHost;
use crate::model::{PortForward, Services};
use crate::plan::{plan_with, Action};
use crate::teardown::teardown_with;

/// Docker's iptables-nft table (counters counting), an `inet filter` with an input policy drop,
/// a forward chain ending in an unconditional reject and a prerouting drop, an ip6 table, and
/// the agent's own table (never a blocker, whatever it holds).
const RULESET: &str = r#"{"nftables": [
 {"metainfo": {"version": "1.0.6"}},
 {"table": {"family": "ip", "name": "filter", "handle": 1}},
 {"chain": {"family": "ip", "table": "filter", "name": "DOCKER-USER", "handle": 1}},
 {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 4, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
 {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 11, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
 {"rule": {"family": "ip", "table": "filter", "chain": "DOCKER-USER", "handle": 2, "expr": [{"counter": {"packets": 5, "bytes": 900}}, {"return": null}]}},
 {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 5, "expr": [{"counter": {"packets": 5, "bytes": 900}}, {"jump": {"target": "DOCKER-USER"}}]}},
 {"table": {"family": "inet", "name": "filter", "handle": 2}},
 {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
 {"chain": {"family": "inet", "table": "filter", "name": "forward", "handle": 2, "type": "filter", "hook": "forward", "prio": 10, "policy": "accept"}},
 {"chain": {"family": "inet", "table": "filter", "name": "pre", "handle": 3, "type": "filter", "hook": "prerouting", "prio": -300, "policy": "drop"}},
 {"rule": {"family": "inet", "table": "filter", "chain": "forward", "handle": 7, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}},
 {"rule": {"family": "inet", "table": "filter", "chain": "forward", "handle": 8, "expr": [{"counter": {"packets": 1, "bytes": 2}}, {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]}},
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 9, "comment": "hostagent", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "br-old"}}, {"accept": null}]}},
 {"table": {"family": "ip6", "name": "f6", "handle": 3}},
 {"chain": {"family": "ip6", "table": "f6", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
 {"table": {"family": "inet", "name": "hostagent", "handle": 4}},
 {"chain": {"family": "inet", "table": "hostagent", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}}
]}"#;

fn chains() -> Vec<ruleset::ForeignChain> {
    parse(RULESET).expect("fixture parses")
}

fn host() -> Host {
    Host::new("/r", "/var/lib/hostagent")
}

fn lab() -> NetworkSpec {
    NetworkSpec {
        address: Some("10.77.0.1/24".parse().unwrap()),
        mac: Mac([0x52, 0x54, 0, 0, 0, 1]),
        services: Services {
            dhcp: true,
            tftp: true,
            http_port: Some(8069),
            dns: true,
        },
        ..NetworkSpec::test("lab", Mode::Nat, "br-lab")
    }
}

fn desired() -> Desired {
    Desired {
        networks: vec![lab()],
        forwards: vec![PortForward {
            network: "lab".into(),
            proto: Proto::Tcp,
            host_address: None,
            host_port: 8022,
            to: "10.77.0.10".parse().unwrap(),
            to_port: 22,
        }],
        ..Desired::default()
    }
}

/// What the iptables and nft drivers detect in the fixture (the iptables driver's reading of
/// `iptables-nft-save` left out: no binary runs here).
fn found() -> Found {
    let all = chains();
    let ipt: Vec<_> = all
        .iter()
        .filter(|c| c.is_iptables(&all))
        .cloned()
        .collect();
    let mut blockers = blockers(&ipt, |_| System::Docker);
    let nft = nft::NftDriver.detect(&all).unwrap().expect("native tables");
    blockers.extend(nft.blockers);
    Found {
        blockers,
        ours: nft.ours,
        chains: all,
        ..Found::default()
    }
}

#[test]
fn blockers_are_policy_drops_and_unconditional_rejects_outside_our_table_in_ip_ip6_and_inet() {
    let f = found();
    let shown: Vec<String> = f.blockers.iter().map(|b| b.to_string()).collect();
    assert_eq!(
        shown,
        [
            "table ip filter chain FORWARD policy drop (Docker, hook forward priority 0)",
            "table inet filter chain input policy drop (nftables, hook input priority 0)",
            "table inet filter chain forward drops everything it does not accept (rule handle 8) (nftables, hook forward priority 10)",
            "table inet filter chain pre policy drop (nftables, hook prerouting priority -300)",
            "table ip6 f6 chain forward policy drop (nftables, hook forward priority 0)",
        ]
    );
    assert_eq!(f.blockers[2].drop, Drop::Rule { handle: 8 });
    assert!(!f.blockers[3].fixable(), "prerouting is reported only");
    // Our marked rule in their input chain is found as ours.
    assert_eq!(f.ours.len(), 1);
    assert_eq!(
        (f.ours[0].table.as_str(), f.ours[0].chain.as_str()),
        ("filter", "input")
    );
    // A conditional drop is not a blocker.
    let c = &chains()[0];
    assert!(c.unconditional_drop().is_none());
}

#[test]
fn docker_gets_its_forward_accepts_in_docker_user_as_iptables_save_prints_them() {
    let wanted = accepts(&host(), &desired(), &found());
    let docker: Vec<(&str, &str)> = wanted
        .iter()
        .filter(|(a, _)| a.system == System::Docker)
        .map(|(a, _)| (a.chain.as_str(), a.rule.as_str()))
        .collect();
    assert_eq!(
        docker,
        [
            ("DOCKER-USER", "-s 10.77.0.0/24 -i br-lab -m comment --comment hostagent -j ACCEPT"),
            (
                "DOCKER-USER",
                "-d 10.77.0.0/24 -o br-lab -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment hostagent -j ACCEPT"
            ),
            (
                "DOCKER-USER",
                "-d 10.77.0.10/32 -o br-lab -p tcp -m tcp --dport 22 -m conntrack --ctstate DNAT -m comment --comment hostagent -j ACCEPT"
            ),
            ("DOCKER-USER", "-i br-lab -o br-lab -m comment --comment hostagent -j ACCEPT"),
        ]
    );
    let because = &wanted[0].1;
    assert!(
        because.contains("chain FORWARD policy drop (Docker"),
        "{because}"
    );
    // Without Docker's jump to DOCKER-USER, the accepts go to the top of FORWARD itself.
    let mut f = found();
    for c in f.chains.iter_mut().filter(|c| c.name == "FORWARD") {
        c.rules.clear();
    }
    let wanted = accepts(&host(), &desired(), &f);
    assert!(wanted
        .iter()
        .filter(|(a, _)| a.system == System::Docker)
        .all(|(a, _)| a.chain == "FORWARD"));
}

#[test]
fn a_native_input_drop_gets_exactly_the_services_served_and_tftp_transfers() {
    let wanted = accepts(&host(), &desired(), &found());
    let input: Vec<&str> = wanted
        .iter()
        .filter(|(a, _)| a.system == System::Nft && a.chain == "input")
        .map(|(a, _)| a.rule.as_str())
        .collect();
    assert_eq!(
        input,
        [
            "iifname \"br-lab\" udp dport 67 accept comment \"hostagent\"",
            "iifname \"br-lab\" udp dport 53 accept comment \"hostagent\"",
            "iifname \"br-lab\" tcp dport 53 accept comment \"hostagent\"",
            "iifname \"br-lab\" udp dport 69 accept comment \"hostagent\"",
            "iifname \"br-lab\" ip daddr 10.77.0.1 udp dport 32768-60999 ct state established,related accept comment \"hostagent\"",
            "iifname \"br-lab\" tcp dport 8069 accept comment \"hostagent\"",
        ]
    );
    // The rule-drop forward chain gets the forward accepts; prerouting gets none.
    assert!(wanted.iter().any(|(a, _)| a.chain == "forward"
        && a.rule
            .starts_with("iifname \"br-lab\" ip saddr 10.77.0.0/24 accept")));
    assert!(!wanted.iter().any(|(a, _)| a.chain == "pre"));
    // That forward chain accepts every reply itself (rule 7): no "replies in" of ours there,
    // while Docker's FORWARD (whose conntrack match is iptables' own) gets one.
    assert!(chains()
        .iter()
        .any(|c| c.name == "forward" && c.accepts_established()));
    assert!(!wanted
        .iter()
        .any(|(a, _)| a.chain == "forward" && a.why == "lab: replies in"));
    assert!(wanted
        .iter()
        .any(|(a, _)| a.chain == "DOCKER-USER" && a.why == "lab: replies in"));
    // An input chain accepting replies gets no accept for the TFTP transfer ports either.
    let mut f = found();
    for c in f
        .chains
        .iter_mut()
        .filter(|c| c.name == "input" && c.table == "filter")
    {
        c.rules.push(ruleset::ForeignRule {
            handle: 99,
            comment: None,
            expr: serde_json::json!([
                {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
                {"accept": null}
            ]),
        });
    }
    let wanted = accepts(&host(), &desired(), &f);
    assert!(!wanted.iter().any(|(a, _)| a.why == "lab: tftp transfers"));
    // An isolated network without services needs nothing anywhere.
    let mut d = desired();
    d.networks[0].mode = Mode::Isolated;
    d.networks[0].services = Services::default();
    d.forwards.clear();
    assert!(accepts(&host(), &d, &found()).is_empty());
}

#[test]
fn coexist_off_adds_nothing_and_says_what_each_blocker_does_to_which_bridge() {
    let mut d = desired();
    d.coexist = Coexist::Off;
    assert!(accepts(&host(), &d, &found()).is_empty());
    let notes = notes(&d, &found());
    assert!(
        notes.contains(&"guests on br-lab cannot reach the outside: table ip filter chain FORWARD policy drop (Docker, hook forward priority 0); set [firewall] coexist = \"auto\" for hostagent to add marked accepts, or accept the bridges' traffic there yourself".to_string()),
        "{notes:#?}"
    );
    assert!(notes.iter().any(|n| n.starts_with(
        "guests on br-lab cannot reach hostagent's DHCP, DNS, TFTP and HTTP boot: table inet filter chain input policy drop"
    )));
    // With auto only the prerouting drop is left to say.
    let notes = super::notes(&desired(), &found());
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(notes[0].contains("chain pre policy drop") && notes[0].contains("yourself"));
}

#[test]
fn iptables_save_lines_with_our_comment_are_ours() {
    let save = "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -j DOCKER-USER\n\
                -A DOCKER-USER -i br-lab -m comment --comment hostagent -j ACCEPT\n\
                -A DOCKER-USER -i x -m comment --comment hostagent-not -j ACCEPT\n\
                -A DOCKER-USER -j RETURN\nCOMMIT\n";
    assert_eq!(
        iptables::marked(save),
        [(
            "DOCKER-USER".to_string(),
            "-i br-lab -m comment --comment hostagent -j ACCEPT".to_string()
        )]
    );
}

/// A fake host whose firewalls want the accepts of `found()` for `desired()`, with one stale
/// marked accept (for a network that is gone) already in place.
fn fake_with_firewalls() -> FakeHost {
    let mut f = FakeHost::new();
    f.state
        .sysctls
        .insert("net.ipv4.ip_forward".into(), "0".into());
    let mut fw = found();
    fw.wanted = accepts(&host(), &desired(), &fw);
    f.state.accepts = fw.ours.clone();
    fw.ours.clear();
    f.state.firewalls = fw;
    f
}

#[tokio::test]
async fn apply_adds_the_missing_accepts_removes_stale_ones_and_a_failure_takes_them_out_again() {
    let mut f = fake_with_firewalls();
    let plan = plan_with(&mut f, &host(), &desired()).await.unwrap();
    let adds = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::AddFirewallAccept { .. }))
        .count();
    let removes: Vec<String> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::RemoveFirewallAccept { .. }))
        .map(|a| a.to_string())
        .collect();
    assert_eq!(adds, f.state.firewalls.wanted.len());
    assert_eq!(
        removes,
        ["remove hostagent's accept from table inet filter chain input (nftables), no longer needed: rule handle 9"]
    );
    let add = plan
        .actions
        .iter()
        .find(|a| matches!(a, Action::AddFirewallAccept { .. }))
        .unwrap()
        .to_string();
    assert!(
        add.starts_with(
            "accept lab: guests out in table ip filter chain DOCKER-USER (Docker): -s 10.77.0.0/24"
        ) && add.ends_with(
            "because table ip filter chain FORWARD policy drop (Docker, hook forward priority 0)"
        ),
        "{add}"
    );

    // Fail the last firewall step: everything this apply added is removed, the stale one back.
    let before = f.state.accepts.clone();
    let last = plan
        .actions
        .iter()
        .rposition(|a| {
            matches!(
                a,
                Action::AddFirewallAccept { .. } | Action::RemoveFirewallAccept { .. }
            )
        })
        .unwrap();
    f.log.clear();
    let err = apply_with(&mut f, &host(), &plan, Some(last))
        .await
        .unwrap_err();
    assert!(err.undo_errors.is_empty(), "{err}");
    assert_eq!(f.state.accepts, before);
    let adds_logged = f
        .log
        .iter()
        .filter(|l| l.starts_with("firewall_add"))
        .count();
    let removes_logged = f
        .log
        .iter()
        .filter(|l| l.starts_with("firewall_remove"))
        .count();
    assert_eq!(adds_logged, removes_logged, "{:#?}", f.log);

    // Performed, the host converges and the next plan is empty.
    apply_with(&mut f, &host(), &plan, None).await.unwrap();
    assert_eq!(f.state.accepts.len(), adds);
    let again = plan_with(&mut f, &host(), &desired()).await.unwrap();
    assert!(again.actions.is_empty(), "{:#?}", again.actions);

    // down takes every marked accept out.
    let report = teardown_with(&mut f, &host()).await.unwrap();
    assert!(f.state.accepts.is_empty());
    assert!(report.removed.iter().any(|r| r
        .starts_with("accept from table ip filter chain DOCKER-USER (Docker): -s 10.77.0.0/24")));
}

#[tokio::test]
async fn a_firewalld_binding_is_recorded_in_owned_json_and_forgotten_by_down() {
    let mut f = FakeHost::new();
    f.state
        .sysctls
        .insert("net.ipv4.ip_forward".into(), "1".into());
    let binding = Accept {
        system: System::Firewalld,
        family: String::new(),
        table: String::new(),
        chain: "trusted".into(),
        why: "lab: guests and services".into(),
        rule: "br-lab".into(),
        key: "br-lab".into(),
    };
    f.state.firewalls.wanted = vec![(
        binding.clone(),
        "table inet firewalld chain filter_FORWARD …".into(),
    )];
    let plan = plan_with(&mut f, &host(), &desired()).await.unwrap();
    let shown: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
    assert!(shown.contains(&"put br-lab into firewalld zone trusted (lab: guests and services); because table inet firewalld chain filter_FORWARD …".to_string()), "{shown:#?}");
    apply_with(&mut f, &host(), &plan, None).await.unwrap();
    assert_eq!(f.owned(&host()).unwrap().firewalld, ["br-lab"]);
    teardown_with(&mut f, &host()).await.unwrap();
    assert!(f.state.accepts.is_empty());
    assert!(f.owned(&host()).is_none(), "nothing left recorded");
}

/// `lab()` with IPv6 on its bridge (nat6 as given, DHCPv6 configured).
fn lab6(nat6: bool) -> Desired {
    let mut n = lab();
    n.ipv6 = Some(crate::model::Ipv6Spec {
        address: "fd00:77::1/64".parse().unwrap(),
        nat6,
        dhcp6: true,
    });
    Desired {
        networks: vec![n],
        ..Desired::default()
    }
}

#[test]
fn ipv6_networks_get_their_accepts_in_inet_and_ip6_chains_and_ip_chains_only_ipv4_ones() {
    let wanted = accepts(&host(), &lab6(false), &found());
    let rules = |family: &str, chain: &str| -> Vec<String> {
        wanted
            .iter()
            .filter(|(a, _)| a.family == family && a.chain == chain)
            .map(|(a, _)| a.rule.clone())
            .collect()
    };
    // The inet input drop: ND and RA with the host, and DHCPv6, besides the IPv4 services.
    let input = rules("inet", "input");
    for want in [
        "iifname \"br-lab\" meta l4proto ipv6-icmp accept comment \"hostagent\"",
        "iifname \"br-lab\" udp dport 547 accept comment \"hostagent\"",
        "iifname \"br-lab\" udp dport 67 accept comment \"hostagent\"",
    ] {
        assert!(input.contains(&want.to_string()), "{want}: {input:#?}");
    }
    // The ip6 forward drop: the prefix routed both ways, nothing of IPv4.
    let f6 = rules("ip6", "forward");
    assert_eq!(
        f6,
        [
            "iifname \"br-lab\" ip6 saddr fd00:77::/64 accept comment \"hostagent\"",
            "oifname \"br-lab\" ip6 daddr fd00:77::/64 accept comment \"hostagent\"",
        ],
        "{wanted:#?}"
    );
    // Docker's ip FORWARD gets no IPv6 rule.
    assert!(wanted
        .iter()
        .filter(|(a, _)| a.family == "ip")
        .all(|(a, _)| !a.rule.contains("fd00") && !a.rule.contains("ipv6-icmp")));
    // nat6: only replies come in (the inet forward chain accepts replies itself, so none there).
    let wanted = accepts(&host(), &lab6(true), &found());
    assert!(wanted.iter().any(|(a, _)| a.family == "ip6"
        && a.rule
            == "oifname \"br-lab\" ip6 daddr fd00:77::/64 ct state established,related accept comment \"hostagent\""));
}

#[test]
fn an_ip6_blocker_cuts_off_only_networks_with_ipv6() {
    let f = found();
    let b6 = f
        .blockers
        .iter()
        .find(|b| b.family == "ip6")
        .expect("ip6 blocker");
    assert!(consequences(b6, &desired(), &f.host).is_empty());
    assert_eq!(consequences(b6, &lab6(false), &f.host).len(), 1);
}

#[test]
fn ip6tables_rules_are_written_for_ip6tables_nft() {
    let r = AcceptRule {
        iif: Some("br-lab".into()),
        oif: None,
        saddr: Some("fd00:77::/64".parse().unwrap()),
        daddr: None,
        icmpv6: false,
        dport: None,
        ct: Ct::Any,
    };
    assert_eq!(
        iptables::args(&r),
        "-s fd00:77::/64 -i br-lab -m comment --comment hostagent -j ACCEPT"
    );
    let nd = AcceptRule {
        saddr: None,
        icmpv6: true,
        ..r
    };
    assert_eq!(
        iptables::args(&nd),
        "-i br-lab -p ipv6-icmp -m comment --comment hostagent -j ACCEPT"
    );
    assert!(nd.fits("ip6") && nd.fits("inet") && !nd.fits("ip"));
}
