//! The agent's ruleset as data, built from the desired networks with libvirt's meanings.
//!
//! Each rule renders two ways: as `nft -f` script text (what we load) and as the JSON expression
//! list `nft -j list table` prints back for it (what observe compares against), so a rule deleted,
//! added or changed by hand inside our table is noticed.
//!
//! What libvirt does and we copy, per network:
//! - input: accept the services the agent serves to guests (DHCP, TFTP, HTTP boot, DNS). Accepts
//!   only, no drop: libvirt leaves the rest of the host's input policy alone. Note that an accept
//!   in our table does not override a drop in another table (every base chain on a hook sees the
//!   packet; any drop wins), so a host firewall that drops input still has to open these itself.
//!   Because nothing here drops, TFTP's data transfer (server replies from an ephemeral port) needs
//!   no conntrack helper.
//! - output: accept DHCP replies to the guests (udp dport 68), as libvirt's OUTPUT rule.
//! - forward, in libvirt's chain order (cross, then in, then out, for all networks): traffic
//!   within one bridge is accepted (all modes but `bridge`); nat accepts replies into the subnet,
//!   routed accepts anything into the subnet; nat and routed accept the subnet's traffic out of
//!   the bridge; everything else forwarded to or from the bridge is rejected (icmp
//!   port-unreachable, libvirt's REJECT default). That also rejects traffic between two of our
//!   networks, as libvirt does.
//! - postrouting (nat only): masquerade the subnet towards anything outside it, except multicast
//!   224.0.0.0/24 and the limited broadcast; tcp/udp get source ports 1024-65535.
//! - mode = bridge: no rules at all (layer 2 only).
//!
//! IPv6 (a network with `address6`), the same meanings: routed and nat forward the prefix both
//! ways untranslated (libvirt treats a nat network's IPv6 as routed); `nat6` instead accepts
//! only replies in and masquerades the prefix in postrouting; isolated forwards nothing (the
//! reject rules are family-agnostic). ICMPv6 is accepted from and to the bridge on the host
//! (neighbour discovery 133-137, the agent's RAs) and ICMPv6 errors (destination unreachable,
//! packet too big, time exceeded, parameter problem) into a forwarding network whatever
//! conntrack says, so path MTU discovery survives a flushed or full conntrack table. DHCPv6
//! (udp 547) is accepted on the bridge when the network configures it.
//!
//! Not here: libvirt also adds a tc `action csum` filter so DHCP replies reach vhost-net guests
//! with full UDP checksums. This kernel has neither act_csum nor cls_u32 ("Failed to load TC action
//! module"), so the agent's DHCP server computes full checksums in software instead.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use serde_json::{json, Value};

pub use crate::model::Proto;
use crate::model::{Desired, Mode, NetworkSpec, PortForward};

/// One match expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Iifname(String),
    Oifname(String),
    /// `ip saddr` or `ip6 saddr`, by the prefix's family.
    Saddr(IpNet),
    Daddr(IpNet),
    DaddrNot(IpNet),
    Dport(Proto, u16),
    /// A destination port range, lo-hi inclusive.
    DportRange(Proto, u16, u16),
    L4proto(Proto),
    /// `ct state established,related`: replies to connections the guests opened.
    CtReplies,
    /// `ct status dnat`: a connection one of our port forwards redirected.
    CtDnat,
    /// `meta nfproto ipv4`: an IPv4 packet (the inet table sees IPv6 too).
    Ipv4,
    /// `fib daddr type local`: addressed to one of the host's own addresses.
    ToHost,
    /// `meta l4proto ipv6-icmp`: any ICMPv6 (neighbour and router discovery included).
    Icmpv6,
    /// `icmpv6 type { ... }`: the ICMPv6 error messages.
    Icmpv6Errors,
}

/// The ICMPv6 error types (RFC 4443 §2.1: 1-4), as nft names them.
const ICMPV6_ERRORS: [&str; 4] = [
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Return,
    /// `reject with icmpx type port-unreachable` (libvirt's REJECT, for IPv4 and IPv6 alike).
    Reject,
    /// Masquerade, optionally with a source port range.
    Masquerade(Option<(u16, u16)>),
    /// `dnat ip to ADDR:PORT`.
    Dnat(Ipv4Addr, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
    /// Says which network and purpose the rule serves; shown by `nft list` and compared by observe.
    pub comment: String,
}

/// A base chain of the agent's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    /// "filter" or "nat".
    pub kind: &'static str,
    pub hook: &'static str,
    /// Priority as written in the script ("filter", "srcnat") and its number as nft lists it.
    pub priority: (&'static str, i64),
    pub rules: Vec<Rule>,
}

/// The whole table's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: Vec<Chain>,
}

/// Keep comment text plain: it is written inside a quoted nft string, which has no escapes.
fn plain(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

fn rule(matches: Vec<Match>, verdict: Verdict, net: &NetworkSpec, purpose: &str) -> Rule {
    Rule {
        matches,
        verdict,
        comment: format!("{}: {purpose}", plain(&net.name)),
    }
}

/// Rules accepting the agent's services from guests on this network's bridge.
fn input_rules(net: &NetworkSpec) -> Vec<Rule> {
    let iif = || Match::Iifname(net.bridge.clone());
    let accept = |proto, port, purpose: &str| {
        rule(
            vec![iif(), Match::Dport(proto, port)],
            Verdict::Accept,
            net,
            purpose,
        )
    };
    let s = &net.services;
    let mut rules = Vec::new();
    if s.dhcp {
        rules.push(accept(Proto::Udp, 67, "dhcp"));
    }
    if s.tftp {
        rules.push(accept(Proto::Udp, 69, "tftp"));
    }
    if let Some(port) = s.http_port {
        rules.push(accept(Proto::Tcp, port, "http boot"));
    }
    if s.dns {
        rules.push(accept(Proto::Udp, 53, "dns"));
        rules.push(accept(Proto::Tcp, 53, "dns"));
    }
    if let Some(v6) = &net.ipv6 {
        if v6.dhcp6 {
            rules.push(accept(Proto::Udp, 547, "dhcpv6"));
        }
        rules.push(rule(
            vec![iif(), Match::Icmpv6],
            Verdict::Accept,
            net,
            "icmpv6",
        ));
    }
    rules
}

fn output_rules(net: &NetworkSpec) -> Vec<Rule> {
    let oif = || Match::Oifname(net.bridge.clone());
    let mut rules = Vec::new();
    if net.services.dhcp {
        let m = vec![oif(), Match::Dport(Proto::Udp, 68)];
        rules.push(rule(m, Verdict::Accept, net, "dhcp replies"));
    }
    if net.ipv6.is_some() {
        // Router advertisements and neighbour discovery from the host to its guests.
        let m = vec![oif(), Match::Icmpv6];
        rules.push(rule(m, Verdict::Accept, net, "icmpv6"));
    }
    rules
}

/// libvirt's FWX: guests on the same bridge talk freely (bridged frames the host routes back).
fn cross_rules(net: &NetworkSpec) -> Vec<Rule> {
    let m = vec![
        Match::Iifname(net.bridge.clone()),
        Match::Oifname(net.bridge.clone()),
    ];
    vec![rule(m, Verdict::Accept, net, "within bridge")]
}

/// libvirt's FWI: what may be forwarded into the bridge, then reject the rest.
fn in_rules(net: &NetworkSpec, forwards: &[&PortForward]) -> Vec<Rule> {
    let oif = || Match::Oifname(net.bridge.clone());
    let mut rules = Vec::new();
    if net.mode == Mode::Nat {
        // A routed network's "routed in" already lets these through.
        for f in forwards {
            rules.push(rule(
                vec![
                    oif(),
                    to_guest(f),
                    Match::Dport(f.proto, f.to_port),
                    Match::CtDnat,
                ],
                Verdict::Accept,
                net,
                &forward_purpose("forward", f),
            ));
        }
    }
    match (net.mode, net.subnet()) {
        (Mode::Nat, Some(subnet)) => rules.push(rule(
            vec![oif(), Match::Daddr(subnet.into()), Match::CtReplies],
            Verdict::Accept,
            net,
            "replies in",
        )),
        (Mode::Routed, Some(subnet)) => rules.push(rule(
            vec![oif(), Match::Daddr(subnet.into())],
            Verdict::Accept,
            net,
            "routed in",
        )),
        _ => {}
    }
    if let (true, Some(v6), Some(prefix)) = (net.mode.forwards(), &net.ipv6, net.prefix6()) {
        rules.push(rule(
            vec![oif(), Match::Icmpv6Errors],
            Verdict::Accept,
            net,
            "icmpv6 errors in",
        ));
        let (mut m, purpose) = (vec![oif(), Match::Daddr(prefix.into())], "routed in");
        if v6.nat6 {
            m.push(Match::CtReplies);
        }
        rules.push(rule(
            m,
            Verdict::Accept,
            net,
            if v6.nat6 { "replies in" } else { purpose },
        ));
    }
    rules.push(rule(vec![oif()], Verdict::Reject, net, "reject in"));
    rules
}

/// libvirt's FWO: what guests may send out of the bridge, then reject the rest.
fn out_rules(net: &NetworkSpec) -> Vec<Rule> {
    let iif = || Match::Iifname(net.bridge.clone());
    let mut rules = Vec::new();
    if net.mode.forwards() {
        let prefixes = net.subnet().map(IpNet::from).into_iter();
        for p in prefixes.chain(net.prefix6().map(IpNet::from)) {
            rules.push(rule(
                vec![iif(), Match::Saddr(p)],
                Verdict::Accept,
                net,
                "guests out",
            ));
        }
    }
    rules.push(rule(vec![iif()], Verdict::Reject, net, "reject out"));
    rules
}

fn to_guest(f: &PortForward) -> Match {
    Match::Daddr(Ipv4Net::from(f.to).into())
}

fn forward_purpose(what: &str, f: &PortForward) -> String {
    format!("{what} {} {}", f.proto.as_str(), f.host_port)
}

/// DNAT of each port forward, for the prerouting hook (from outside and from guests) and the
/// output hook (from the host itself). Without `host_address` every address of the host
/// forwards the port; `meta nfproto ipv4` because the inet table sees IPv6 too (an address
/// match implies it).
fn dnat_rules(net: &NetworkSpec, forwards: &[&PortForward]) -> Vec<Rule> {
    forwards
        .iter()
        .map(|f| {
            let mut m = match f.host_address {
                Some(a) => vec![Match::Daddr(Ipv4Net::from(a).into())],
                None => vec![Match::Ipv4, Match::ToHost],
            };
            m.push(Match::Dport(f.proto, f.host_port));
            rule(
                m,
                Verdict::Dnat(f.to, f.to_port),
                net,
                &forward_purpose("forward", f),
            )
        })
        .collect()
}

/// Hairpin: a guest that reaches another guest of the same network through the host's port
/// gets the gateway as its source, or the answer would go straight back to it from an address
/// it never spoke to.
fn hairpin_rules(net: &NetworkSpec, forwards: &[&PortForward]) -> Vec<Rule> {
    let Some(subnet) = net.subnet() else {
        return Vec::new();
    };
    forwards
        .iter()
        .map(|f| {
            rule(
                vec![
                    Match::Saddr(subnet.into()),
                    to_guest(f),
                    Match::Dport(f.proto, f.to_port),
                    Match::CtDnat,
                ],
                Verdict::Masquerade(None),
                net,
                &forward_purpose("hairpin", f),
            )
        })
        .collect()
}

/// libvirt's masquerade set for a nat network; with `nat6`, the same for its IPv6 prefix
/// (link-local and multicast never reach postrouting's routed path, so no exceptions there).
fn nat_rules(net: &NetworkSpec) -> Vec<Rule> {
    let mut rules = Vec::new();
    if let Some(subnet) = net.subnet() {
        let multicast: Ipv4Net =
            Ipv4Net::new([224, 0, 0, 0].into(), 24).expect("constant prefix is valid");
        let broadcast: Ipv4Net =
            Ipv4Net::new([255, 255, 255, 255].into(), 32).expect("constant prefix is valid");
        for (special, purpose) in [
            (multicast, "no nat multicast"),
            (broadcast, "no nat broadcast"),
        ] {
            rules.push(rule(
                vec![Match::Saddr(subnet.into()), Match::Daddr(special.into())],
                Verdict::Return,
                net,
                purpose,
            ));
        }
        rules.extend(masquerade(net, subnet.into()));
    }
    if let (Some(v6), Some(prefix)) = (&net.ipv6, net.prefix6()) {
        if v6.nat6 {
            rules.extend(masquerade(net, prefix.into()));
        }
    }
    rules
}

/// Masquerade `prefix` towards anything outside it; tcp and udp get source ports 1024-65535.
fn masquerade(net: &NetworkSpec, prefix: IpNet) -> Vec<Rule> {
    let outside = || vec![Match::Saddr(prefix), Match::DaddrNot(prefix)];
    let with = |mut m: Vec<Match>, extra: Match| {
        m.push(extra);
        m
    };
    vec![
        rule(
            with(outside(), Match::L4proto(Proto::Tcp)),
            Verdict::Masquerade(Some((1024, 65535))),
            net,
            "masquerade",
        ),
        rule(
            with(outside(), Match::L4proto(Proto::Udp)),
            Verdict::Masquerade(Some((1024, 65535))),
            net,
            "masquerade",
        ),
        rule(outside(), Verdict::Masquerade(None), net, "masquerade"),
    ]
}

impl Ruleset {
    pub fn build(desired: &Desired) -> Ruleset {
        // mode = bridge is layer 2 only: no rule of any kind mentions its bridge.
        let l3: Vec<&NetworkSpec> = desired
            .networks
            .iter()
            .filter(|n| n.mode != Mode::Bridge)
            .collect();
        let all =
            |f: fn(&NetworkSpec) -> Vec<Rule>| l3.iter().flat_map(|n| f(n)).collect::<Vec<Rule>>();
        // Port forwards of each network (validated: only nat and routed networks have them).
        let fwd = |n: &NetworkSpec| -> Vec<&PortForward> {
            let forwards = n.mode.forwards().then_some(&desired.forwards);
            forwards
                .into_iter()
                .flatten()
                .filter(|f| f.network == n.name)
                .collect()
        };
        let with_forwards = |f: fn(&NetworkSpec, &[&PortForward]) -> Vec<Rule>| {
            l3.iter().flat_map(|n| f(n, &fwd(n))).collect::<Vec<Rule>>()
        };
        let mut forward = all(cross_rules);
        forward.extend(with_forwards(in_rules));
        forward.extend(all(out_rules));
        let mut nat = with_forwards(hairpin_rules);
        nat.extend(
            l3.iter()
                .filter(|n| n.mode == Mode::Nat)
                .flat_map(|n| nat_rules(n)),
        );
        let dnat = with_forwards(dnat_rules);
        let mut chains = Vec::new();
        if !dnat.is_empty() {
            chains.push(Chain {
                name: "prerouting",
                kind: "nat",
                hook: "prerouting",
                priority: ("dstnat", -100),
                rules: dnat.clone(),
            });
            // nft 1.0.6 refuses the `dstnat` keyword on the inet output hook: its number.
            chains.push(Chain {
                name: "output_dnat",
                kind: "nat",
                hook: "output",
                priority: ("-100", -100),
                rules: dnat,
            });
        }
        chains.extend([
            Chain {
                name: "input",
                kind: "filter",
                hook: "input",
                priority: ("filter", 0),
                rules: all(input_rules),
            },
            Chain {
                name: "output",
                kind: "filter",
                hook: "output",
                priority: ("filter", 0),
                rules: all(output_rules),
            },
            Chain {
                name: "forward",
                kind: "filter",
                hook: "forward",
                priority: ("filter", 0),
                rules: forward,
            },
            Chain {
                name: "postrouting",
                kind: "nat",
                hook: "postrouting",
                priority: ("srcnat", 100),
                rules: nat,
            },
        ]);
        Ruleset { chains }
    }

    /// The chains as nft script text (the body of `table inet hostagent { ... }`).
    pub fn body(&self) -> String {
        let mut out = String::new();
        for chain in &self.chains {
            out.push_str(&format!("\tchain {} {{\n", chain.name));
            out.push_str(&format!(
                "\t\ttype {} hook {} priority {}; policy accept;\n",
                chain.kind, chain.hook, chain.priority.0
            ));
            for r in &chain.rules {
                out.push_str(&format!("\t\t{}\n", r.text()));
            }
            out.push_str("\t}\n");
        }
        out
    }
}

fn addr_text(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// How `nft -j` prints an address match's right-hand side: a plain string for a host address.
fn addr_json(net: &IpNet) -> Value {
    if net.prefix_len() == net.max_prefix_len() {
        json!(net.addr().to_string())
    } else {
        json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
    }
}

/// The payload protocol of an address match: `ip` or `ip6`.
fn family(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "ip",
        IpNet::V6(_) => "ip6",
    }
}

fn matcher(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn ip_field(net: &IpNet, field: &str) -> Value {
    json!({"payload": {"protocol": family(net), "field": field}})
}

impl Match {
    fn text(&self) -> String {
        match self {
            Match::Iifname(n) => format!("iifname \"{n}\""),
            Match::Oifname(n) => format!("oifname \"{n}\""),
            Match::Saddr(a) => format!("{} saddr {}", family(a), addr_text(a)),
            Match::Daddr(a) => format!("{} daddr {}", family(a), addr_text(a)),
            Match::DaddrNot(a) => format!("{} daddr != {}", family(a), addr_text(a)),
            Match::Dport(p, port) => format!("{} dport {port}", p.as_str()),
            Match::DportRange(p, lo, hi) => format!("{} dport {lo}-{hi}", p.as_str()),
            Match::L4proto(p) => format!("meta l4proto {}", p.as_str()),
            Match::CtReplies => "ct state established,related".to_string(),
            Match::CtDnat => "ct status dnat".to_string(),
            Match::Ipv4 => "meta nfproto ipv4".to_string(),
            Match::ToHost => "fib daddr type local".to_string(),
            Match::Icmpv6 => "meta l4proto ipv6-icmp".to_string(),
            Match::Icmpv6Errors => format!("icmpv6 type {{ {} }}", ICMPV6_ERRORS.join(", ")),
        }
    }

    fn json(&self) -> Value {
        match self {
            Match::Iifname(n) => matcher("==", json!({"meta": {"key": "iifname"}}), json!(n)),
            Match::Oifname(n) => matcher("==", json!({"meta": {"key": "oifname"}}), json!(n)),
            Match::Saddr(a) => matcher("==", ip_field(a, "saddr"), addr_json(a)),
            Match::Daddr(a) => matcher("==", ip_field(a, "daddr"), addr_json(a)),
            Match::DaddrNot(a) => matcher("!=", ip_field(a, "daddr"), addr_json(a)),
            Match::Dport(p, port) => matcher(
                "==",
                json!({"payload": {"protocol": p.as_str(), "field": "dport"}}),
                json!(port),
            ),
            Match::DportRange(p, lo, hi) => matcher(
                "==",
                json!({"payload": {"protocol": p.as_str(), "field": "dport"}}),
                json!({"range": [lo, hi]}),
            ),
            Match::L4proto(p) => {
                matcher("==", json!({"meta": {"key": "l4proto"}}), json!(p.as_str()))
            }
            Match::CtReplies => matcher(
                "in",
                json!({"ct": {"key": "state"}}),
                json!(["established", "related"]),
            ),
            Match::CtDnat => matcher("in", json!({"ct": {"key": "status"}}), json!("dnat")),
            Match::Ipv4 => matcher("==", json!({"meta": {"key": "nfproto"}}), json!("ipv4")),
            Match::ToHost => matcher(
                "==",
                json!({"fib": {"result": "type", "flags": ["daddr"]}}),
                json!("local"),
            ),
            Match::Icmpv6 => matcher(
                "==",
                json!({"meta": {"key": "l4proto"}}),
                json!("ipv6-icmp"),
            ),
            Match::Icmpv6Errors => matcher(
                "==",
                json!({"payload": {"protocol": "icmpv6", "field": "type"}}),
                json!({"set": ICMPV6_ERRORS}),
            ),
        }
    }
}

impl Verdict {
    fn text(&self) -> String {
        match self {
            Verdict::Accept => "accept".into(),
            Verdict::Return => "return".into(),
            Verdict::Reject => "reject with icmpx type port-unreachable".into(),
            Verdict::Masquerade(None) => "masquerade".into(),
            Verdict::Masquerade(Some((lo, hi))) => format!("masquerade to :{lo}-{hi}"),
            Verdict::Dnat(addr, port) => format!("dnat ip to {addr}:{port}"),
        }
    }

    fn json(&self) -> Value {
        match self {
            Verdict::Accept => json!({"accept": null}),
            Verdict::Return => json!({"return": null}),
            Verdict::Reject => json!({"reject": {"type": "icmpx", "expr": "port-unreachable"}}),
            Verdict::Masquerade(None) => json!({"masquerade": null}),
            Verdict::Masquerade(Some((lo, hi))) => {
                json!({"masquerade": {"port": {"range": [lo, hi]}}})
            }
            Verdict::Dnat(addr, port) => {
                json!({"dnat": {"family": "ip", "addr": addr.to_string(), "port": port}})
            }
        }
    }
}

impl Rule {
    pub fn text(&self) -> String {
        let mut parts: Vec<String> = self.matches.iter().map(Match::text).collect();
        parts.push(self.verdict.text());
        parts.push(format!("comment \"{}\"", self.comment));
        parts.join(" ")
    }

    /// The rule's `expr` array as `nft -j list` prints it.
    pub fn expr_json(&self) -> Value {
        let mut exprs: Vec<Value> = self.matches.iter().map(Match::json).collect();
        exprs.push(self.verdict.json());
        Value::Array(exprs)
    }
}
