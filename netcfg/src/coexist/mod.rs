//! Living with someone else's firewall.
//!
//! Every base chain on a netfilter hook sees each packet, whatever table it is in, and a drop in
//! any of them is final: an accept in the agent's own table cannot undo Docker's `FORWARD`
//! policy DROP, firewalld's final reject or a hand-written `inet filter` with `policy drop`.
//! (Priority decides only the order the chains run in, never whether a later accept can undo
//! an earlier drop, so a blocker is reported whatever its priority; the report shows it.)
//!
//! [`observe`] reads the whole ruleset once (`nft -j list ruleset`, which shows iptables-nft's
//! tables too) and finds the foreign base chains on the `input`, `forward` and `output` hooks
//! that drop by policy or by an unconditional drop/reject rule ([`ruleset`]); `prerouting` and
//! `postrouting` blockers are reported but never changed (see [`Blocker::fixable`]). Each
//! foreign system then has one small driver ([`Driver`]: detect, plan, apply, remove), like
//! netavark's firewall drivers:
//! - [`nft::NftDriver`]: a native nftables table: marked accepts (comment `hostagent`) are
//!   inserted at the top of its blocking chain;
//! - [`iptables::IptablesDriver`]: an iptables-nft table (Docker's `ip filter`): accepts go in
//!   through `iptables-nft` itself, into `DOCKER-USER` when Docker made it (the place Docker
//!   documents for rules of one's own), else at the top of the blocking chain, marked with
//!   `-m comment --comment hostagent`;
//! - [`firewalld::FirewalldDriver`]: a running firewalld: the agent's bridges go into its
//!   `trusted` zone through `firewall-cmd` (runtime and permanent), recorded in owned.json since
//!   a zone binding carries no mark.
//!
//! With `[firewall] coexist = "auto"` the plan adds exactly the accepts the configured networks
//! need ([`accepts`]: per hook, per network, what its guests and services use) where a blocker
//! sits, and removes marked ones no longer needed; drift repair re-plans, so an accept wiped by
//! `firewall-cmd --reload` or a Docker restart comes back; `down` removes every marked rule and
//! leaves the foreign rules as they were. With `"off"` blockers are only reported.

pub mod firewalld;
pub mod iptables;
pub mod nft;
pub mod ruleset;

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use serde::Serialize;

use crate::error::Error;
use crate::model::{Desired, Host, Mode, NetworkSpec, Proto};
pub use ruleset::{Blocker, Hook, System};

/// The mark on every rule the agent adds to a foreign firewall (the nft rule comment, the
/// iptables `--comment`).
pub const MARK: &str = "hostagent";

/// `[firewall] coexist`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Coexist {
    /// Add the accepts the agent's networks need in foreign firewalls that would drop them.
    #[default]
    Auto,
    /// Only report such firewalls.
    Off,
}

/// What one accept lets through, independent of the firewall it is written into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcceptRule {
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub saddr: Option<IpNet>,
    pub daddr: Option<IpNet>,
    /// Any ICMPv6 (neighbour and router discovery with the host).
    pub icmpv6: bool,
    /// Protocol and destination port range (one port: lo == hi).
    pub dport: Option<(Proto, u16, u16)>,
    pub ct: Ct,
}

impl AcceptRule {
    /// Whether the rule means anything in a chain of nft family `family`: an `ip` chain sees
    /// only IPv4, an `ip6` chain only IPv6, an `inet` chain both.
    pub fn fits(&self, family: &str) -> bool {
        let v6 = self.icmpv6
            || [self.saddr, self.daddr]
                .iter()
                .flatten()
                .any(|a| matches!(a, IpNet::V6(_)));
        let v4 = [self.saddr, self.daddr]
            .iter()
            .flatten()
            .any(|a| matches!(a, IpNet::V4(_)));
        match family {
            "ip" => !v6,
            "ip6" => !v4,
            _ => true,
        }
    }
}

/// A conntrack condition of an accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ct {
    Any,
    /// Replies to connections the guests opened.
    Replies,
    /// Connections a port forward redirected.
    Dnat,
}

/// One marked accept in a foreign firewall: where, what, and the form its driver writes and
/// reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accept {
    pub system: System,
    /// nft family and table ("ip filter"; firewalld: its zone's name in `chain`).
    pub family: String,
    pub table: String,
    pub chain: String,
    /// The network and what for ("lab: guests out").
    pub why: String,
    /// What the driver writes (nft rule text, iptables arguments, a firewalld interface).
    pub rule: String,
    /// How the driver's own listing shows this rule: compared with what is found, so a rule
    /// edited by hand is replaced.
    pub key: String,
}

impl Accept {
    /// Where it is, as a user finds it: "table ip filter chain DOCKER-USER (Docker)" or
    /// "firewalld zone trusted".
    pub fn place(&self) -> String {
        match self.system {
            System::Firewalld => format!("firewalld zone {}", self.chain),
            _ => format!(
                "table {} {} chain {} ({})",
                self.family,
                self.table,
                self.chain,
                self.system.as_str()
            ),
        }
    }
}

impl fmt::Display for Accept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.system {
            System::Firewalld => {
                write!(f, "put {} into {} ({})", self.rule, self.place(), self.why)
            }
            _ => write!(f, "accept {} in {}: {}", self.why, self.place(), self.rule),
        }
    }
}

/// What [`observe`] found: the blockers, and the agent's marked accepts already in place; with
/// [`observe_for`] also the accepts a desired state needs there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Found {
    pub blockers: Vec<Blocker>,
    pub ours: Vec<Accept>,
    /// The accepts the desired state needs (see [`accepts`]), each with the blocker it answers.
    pub wanted: Vec<(Accept, String)>,
    /// Facts about the host the accepts depend on.
    pub host: HostFacts,
    /// Problems a driver met while looking (e.g. `iptables-nft` missing for an iptables table).
    pub problems: Vec<String>,
    /// Every foreign chain, as read (drivers plan against it: e.g. is there a `DOCKER-USER`).
    #[serde(skip)]
    pub chains: Vec<ruleset::ForeignChain>,
}

/// Host facts that decide which accepts a network needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    /// `net.ipv4.ip_local_port_range`: TFTP answers each transfer from a port in it.
    pub ephemeral_ports: (u16, u16),
    /// br_netfilter passes bridged frames through the ip hooks
    /// (`net.bridge.bridge-nf-call-iptables = 1`, as Docker sets it).
    pub bridge_nf: bool,
}

impl Default for HostFacts {
    fn default() -> Self {
        HostFacts {
            ephemeral_ports: (32768, 60999),
            bridge_nf: false,
        }
    }
}

/// One foreign firewall system: what it blocks, which marked accepts it holds, how to add and
/// remove one.
pub trait Driver {
    fn system(&self) -> System;
    /// Blockers of this system in `chains` (the whole ruleset), and the agent's marked rules in
    /// it. `Ok(None)` when the system is not present on this host.
    fn detect(&self, chains: &[ruleset::ForeignChain]) -> Result<Option<Detected>, Error>;
    /// The accepts `rules` need, written for `blocker` (in its chain, or where this system
    /// wants them).
    fn plan(
        &self,
        blocker: &Blocker,
        chains: &[ruleset::ForeignChain],
        rules: &[(String, AcceptRule)],
        network: &NetworkSpec,
    ) -> Vec<Accept>;
    fn apply(&self, accept: &Accept) -> Result<(), Error>;
    fn remove(&self, accept: &Accept) -> Result<(), Error>;
}

/// What one driver found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detected {
    pub blockers: Vec<Blocker>,
    pub ours: Vec<Accept>,
    pub problems: Vec<String>,
}

/// The drivers, in the order their findings are reported.
pub fn drivers(host: &Host) -> Vec<Box<dyn Driver>> {
    vec![
        Box::new(firewalld::FirewalldDriver::new(host)),
        Box::new(iptables::IptablesDriver),
        Box::new(nft::NftDriver),
    ]
}

fn driver_for(host: &Host, system: System) -> Box<dyn Driver> {
    match system {
        System::Firewalld => Box::new(firewalld::FirewalldDriver::new(host)),
        System::Docker | System::Iptables => Box::new(iptables::IptablesDriver),
        System::Nft => Box::new(nft::NftDriver),
    }
}

/// Read the ruleset once and ask every driver.
pub fn observe(host: &Host) -> Result<Found, Error> {
    observe_items(
        host,
        &crate::nft::listing_items(&crate::nft::list_ruleset()?)?,
    )
}

/// [`observe`] from the objects of `nft -j list ruleset` already read.
fn observe_items(host: &Host, items: &[serde_json::Value]) -> Result<Found, Error> {
    let chains = ruleset::parse_items(items);
    let mut found = Found {
        host: host_facts(host),
        chains,
        ..Found::default()
    };
    for d in drivers(host) {
        if let Some(det) = d.detect(&found.chains)? {
            found.blockers.extend(det.blockers);
            found.ours.extend(det.ours);
            found.problems.extend(det.problems);
        }
    }
    Ok(found)
}

/// [`observe`], plus the accepts `desired` needs where the blockers are.
pub fn observe_for(host: &Host, desired: &Desired) -> Result<Found, Error> {
    let mut found = observe(host)?;
    found.wanted = accepts(host, desired, &found);
    Ok(found)
}

/// [`observe_for`] from a ruleset listing already read (a plan's, which reads our own tables
/// from the same listing).
pub fn observe_for_in(
    host: &Host,
    desired: &Desired,
    listing: &crate::nft::RulesetListing,
) -> Result<Found, Error> {
    let mut found = observe_items(host, &listing.items)?;
    found.wanted = accepts(host, desired, &found);
    Ok(found)
}

fn host_facts(host: &Host) -> HostFacts {
    let mut facts = HostFacts::default();
    if let Ok(Some(range)) = crate::sysctl::read(host, "net.ipv4.ip_local_port_range") {
        let mut parts = range.split_whitespace().filter_map(|p| p.parse().ok());
        if let (Some(lo), Some(hi)) = (parts.next(), parts.next()) {
            facts.ephemeral_ports = (lo, hi);
        }
    }
    facts.bridge_nf = matches!(
        crate::sysctl::read(host, "net.bridge.bridge-nf-call-iptables"),
        Ok(Some(v)) if v == "1"
    );
    facts
}

/// Add one accept through its driver.
pub fn apply(host: &Host, accept: &Accept) -> Result<(), Error> {
    driver_for(host, accept.system).apply(accept)
}

/// Remove one accept through its driver.
pub fn remove(host: &Host, accept: &Accept) -> Result<(), Error> {
    driver_for(host, accept.system).remove(accept)
}

fn host_net(a: Ipv4Addr) -> IpNet {
    Ipv4Net::from(a).into()
}

/// What `network` needs on `hook`, with a purpose for each rule ("guests out"). The same list
/// the agent's own table accepts, for the hooks a foreign chain can block.
pub fn needs(
    network: &NetworkSpec,
    hook: Hook,
    desired: &Desired,
    facts: &HostFacts,
) -> Vec<(String, AcceptRule)> {
    let br = || Some(network.bridge.clone());
    let none = AcceptRule {
        iif: None,
        oif: None,
        saddr: None,
        daddr: None,
        icmpv6: false,
        dport: None,
        ct: Ct::Any,
    };
    let mut out = Vec::new();
    let mut push = |what: &str, r: AcceptRule| out.push((what.to_string(), r));
    let forwards: Vec<_> = desired
        .forwards
        .iter()
        .filter(|f| f.network == network.name && network.mode.forwards())
        .collect();
    if network.mode == Mode::Bridge {
        // Layer 2 only: bridged frames meet the ip hooks only through br_netfilter.
        if hook == Hook::Forward && facts.bridge_nf {
            push(
                "bridged frames",
                AcceptRule {
                    iif: br(),
                    oif: br(),
                    ..none.clone()
                },
            );
        }
        return out;
    }
    let (Some(subnet), Some(gw)) = (network.subnet(), network.gateway()) else {
        return out;
    };
    let prefix6 = network.prefix6().map(IpNet::from);
    match hook {
        Hook::Forward => {
            if network.mode.forwards() {
                push(
                    "guests out",
                    AcceptRule {
                        iif: br(),
                        saddr: Some(subnet.into()),
                        ..none.clone()
                    },
                );
                push(
                    if network.mode == Mode::Nat {
                        "replies in"
                    } else {
                        "routed in"
                    },
                    AcceptRule {
                        oif: br(),
                        daddr: Some(subnet.into()),
                        ct: if network.mode == Mode::Nat {
                            Ct::Replies
                        } else {
                            Ct::Any
                        },
                        ..none.clone()
                    },
                );
            }
            // IPv6 as the agent's own table forwards it: routed both ways, or replies only
            // in with nat6.
            if let (true, Some(prefix), Some(v6)) =
                (network.mode.forwards(), prefix6, network.ipv6.as_ref())
            {
                push(
                    "guests out (ipv6)",
                    AcceptRule {
                        iif: br(),
                        saddr: Some(prefix),
                        ..none.clone()
                    },
                );
                push(
                    if v6.nat6 {
                        "replies in (ipv6)"
                    } else {
                        "routed in (ipv6)"
                    },
                    AcceptRule {
                        oif: br(),
                        daddr: Some(prefix),
                        ct: if v6.nat6 { Ct::Replies } else { Ct::Any },
                        ..none.clone()
                    },
                );
            }
            for f in &forwards {
                if network.mode == Mode::Nat {
                    push(
                        &format!("forward {} {}", f.proto.as_str(), f.host_port),
                        AcceptRule {
                            oif: br(),
                            daddr: Some(host_net(f.to)),
                            dport: Some((f.proto, f.to_port, f.to_port)),
                            ct: Ct::Dnat,
                            ..none.clone()
                        },
                    );
                }
            }
            if !forwards.is_empty() {
                push(
                    "hairpin",
                    AcceptRule {
                        iif: br(),
                        oif: br(),
                        ..none.clone()
                    },
                );
            }
        }
        Hook::Input => {
            let s = &network.services;
            let mut service =
                |what: &str, proto: Proto, (lo, hi): (u16, u16), to_gw: bool, ct: Ct| {
                    push(
                        what,
                        AcceptRule {
                            iif: br(),
                            daddr: to_gw.then(|| host_net(gw)),
                            dport: Some((proto, lo, hi)),
                            ct,
                            ..none.clone()
                        },
                    )
                };
            let one = |p: u16| (p, p);
            if s.dhcp {
                service("dhcp", Proto::Udp, one(67), false, Ct::Any);
            }
            if s.dns {
                service("dns", Proto::Udp, one(53), false, Ct::Any);
                service("dns", Proto::Tcp, one(53), false, Ct::Any);
            }
            if s.tftp {
                service("tftp", Proto::Udp, one(69), false, Ct::Any);
                // Each transfer answers from a new ephemeral port; the guest's ACKs to it are
                // replies (the transfer's first packet left the host), so a chain that accepts
                // replies needs nothing more (see `accepts`).
                let ports = facts.ephemeral_ports;
                service("tftp transfers", Proto::Udp, ports, true, Ct::Replies);
            }
            if let Some(p) = s.http_port {
                service("http boot", Proto::Tcp, one(p), false, Ct::Any);
            }
            if let Some(v6) = &network.ipv6 {
                if v6.dhcp6 {
                    service("dhcpv6", Proto::Udp, one(547), false, Ct::Any);
                }
                // Neighbour and router discovery: without it guests cannot even find the
                // gateway's MAC.
                push(
                    "icmpv6",
                    AcceptRule {
                        iif: br(),
                        icmpv6: true,
                        ..none.clone()
                    },
                );
            }
        }
        Hook::Output => {
            let s = &network.services;
            let ipv6 = network.ipv6.is_some();
            if s.dhcp || s.tftp || s.dns || s.http_port.is_some() || ipv6 {
                push(
                    "to guests",
                    AcceptRule {
                        oif: br(),
                        ..none.clone()
                    },
                );
            }
        }
        Hook::Prerouting | Hook::Postrouting => {}
    }
    out
}

/// The networks a blocker cuts off, and how, as one sentence per network: "guests on virbr0
/// cannot reach the outside: table ip filter chain FORWARD policy drop (Docker)".
pub fn consequences(blocker: &Blocker, desired: &Desired, facts: &HostFacts) -> Vec<String> {
    desired
        .networks
        .iter()
        .filter(|n| {
            meets(n, &blocker.family)
                && needs(n, blocker.hook, desired, facts)
                    .iter()
                    .any(|(_, r)| r.fits(&blocker.family))
                || (!blocker.fixable() && n.mode != Mode::Bridge)
        })
        .map(|n| format!("{}: {blocker}", blocker.hook.consequence(&n.bridge)))
        .collect()
}

/// Whether a chain of nft family `family` sees any of `network`'s traffic: an `ip6` chain
/// only that of a network with IPv6.
fn meets(network: &NetworkSpec, family: &str) -> bool {
    family != "ip6" || network.ipv6.is_some()
}

/// What `plan` and `apply` tell the user about foreign firewalls that the accepts do not
/// answer: blockers reported only (coexist = "off", or prerouting/postrouting), and problems
/// a driver met.
pub fn notes(desired: &Desired, found: &Found) -> Vec<String> {
    let mut out = Vec::new();
    for b in &found.blockers {
        let answered = desired.coexist == Coexist::Auto && b.fixable();
        if answered {
            continue;
        }
        let hint = if b.fixable() {
            "set [firewall] coexist = \"auto\" for hostagent to add marked accepts, or accept the bridges' traffic there yourself"
        } else {
            "hostagent adds accepts only on the input, forward and output hooks: accept the bridges' traffic in that chain yourself"
        };
        for c in consequences(b, desired, &found.host) {
            out.push(format!("{c}; {hint}"));
        }
    }
    out.extend(found.problems.iter().cloned());
    out
}

/// The accepts `desired` needs in the firewalls `found` describes, each with the blocker it
/// answers, deduplicated, in report order (none with `coexist = "off"`).
pub fn accepts(host: &Host, desired: &Desired, found: &Found) -> Vec<(Accept, String)> {
    let mut out: Vec<(Accept, String)> = Vec::new();
    if desired.coexist == Coexist::Off {
        return out;
    }
    for b in found.blockers.iter().filter(|b| b.fixable()) {
        let driver = driver_for(host, b.system);
        // Where the blocking chain accepts replies itself, the accepts for replies are not needed.
        let replies_pass = found.chains.iter().any(|c| {
            c.family == b.family
                && c.table == b.table
                && c.name == b.chain
                && c.accepts_established()
        });
        for n in desired.networks.iter().filter(|n| meets(n, &b.family)) {
            let mut rules = needs(n, b.hook, desired, &found.host);
            rules.retain(|(_, r)| !(replies_pass && r.ct == Ct::Replies) && r.fits(&b.family));
            if rules.is_empty() {
                continue;
            }
            for a in driver.plan(b, &found.chains, &rules, n) {
                if !out.iter().any(|(o, _)| o.same_place_and_rule(&a)) {
                    out.push((a, b.to_string()));
                }
            }
        }
    }
    out
}

impl Accept {
    /// The same rule in the same place (what `why` says does not matter).
    pub fn same_place_and_rule(&self, other: &Accept) -> bool {
        self.system == other.system
            && self.family == other.family
            && self.table == other.table
            && self.chain == other.chain
            && self.key == other.key
    }
}

/// `check`'s lines about foreign firewalls: one WARN per blocker (with what it does to the
/// configured networks, when there is a config), PASS when there is none.
pub fn check(host: &Host, desired: Option<&Desired>) -> Vec<crate::check::CheckResult> {
    use crate::check::{CheckResult, Status};
    let label = "foreign firewall";
    let result = |status, detail: String, hint: String| CheckResult {
        name: label.to_string(),
        status,
        detail,
        hint,
    };
    let found = match desired {
        Some(d) => observe_for(host, d),
        None => observe(host),
    };
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            return vec![result(
                Status::Warn,
                format!("cannot read the ruleset: {e}"),
                "run as root with nftables installed".into(),
            )]
        }
    };
    let mut out = Vec::new();
    for b in &found.blockers {
        let (detail, hint) = match desired {
            None => (
                format!("{b}: {} of guests", b.hook.as_str()),
                "with a config, `hostagent check -c FILE` says which networks it cuts off".into(),
            ),
            Some(d) => {
                let hit = consequences(b, d, &found.host);
                if hit.is_empty() {
                    continue;
                }
                let hint = if d.coexist == Coexist::Auto && b.fixable() {
                    "coexist = \"auto\": `hostagent apply` adds marked accepts for the bridges there".to_string()
                } else if b.fixable() {
                    "set [firewall] coexist = \"auto\", or accept the bridges' traffic in that chain yourself".to_string()
                } else {
                    "accept the bridges' traffic in that chain yourself (hostagent changes only input, forward and output chains)".to_string()
                };
                (hit.join("; "), hint)
            }
        };
        out.push(result(Status::Warn, detail, hint));
    }
    for p in &found.problems {
        out.push(result(Status::Warn, p.clone(), String::new()));
    }
    if out.is_empty() {
        out.push(result(
            Status::Pass,
            "no other table's base chain drops the agent's traffic".into(),
            String::new(),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
