//! Desired vs actual: [`observe`] reads the host, [`diff`] lists the concrete [`Action`]s that
//! make it match, [`plan`] does both after refusing conflicts (a foreign device with our bridge's
//! name, a missing port, an unknown sysctl). An empty plan means there is nothing to do.
//!
//! A plan carries everything `apply` needs to perform it (the rendered nft script included) and
//! the desired state it was made for, which `apply`'s read-back compares the host with: `apply`
//! never observes before it acts, only once after.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use hwaddr::Mac;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;

use crate::coexist;
use crate::error::Error;
use crate::files;
use crate::hostops::{HostOps, KernelHost};
use crate::link::{
    effective_forward_delay, Addr, Addr6, AddrDetail, BridgeInfo, Link, Netlink, Route,
};
use crate::model::{Desired, Host, NetworkSpec};
use crate::nft::{self, FIREWALL_TABLE};
use crate::owned::{owner_alias, ownership, Owned, Ownership};
use crate::sysctl::{self, IPV6_FORWARD};
use crate::takeover;

/// What the agent's firewall table looks like now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FirewallState {
    pub exists: bool,
    /// The table exists and is exactly what the desired state renders.
    pub matches: bool,
}

impl FirewallState {
    /// The tables as read back, against what `desired` renders.
    pub fn of(observed: &nft::NftObserved, desired: &Desired) -> FirewallState {
        FirewallState {
            exists: observed.present,
            matches: observed.present && nft::matches(observed, desired),
        }
    }
}

/// One file the agent manages, as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedFile {
    /// Absolute path as the user knows it (`/etc/...`); apply maps it under the root prefix.
    pub path: PathBuf,
    pub content: Option<String>,
}

/// The host as observed: only what the desired state or the agent's records talk about, plus all
/// links (needed to spot collisions and ports).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observed {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub addrs6: Vec<Addr6>,
    /// Current value of every sysctl the desired state or the records mention (None = no such key).
    pub sysctls: BTreeMap<String, Option<String>>,
    pub files: Vec<ObservedFile>,
    pub firewall: FirewallState,
    pub owned: Owned,
    /// Where `owned` lives (for error messages).
    pub owned_path: PathBuf,
    /// Live vhost_net experimental_zcopytx, when the module is loaded.
    pub vhost_live: Option<bool>,
    /// Foreign firewalls that would drop the networks' traffic, the agent's accepts in them,
    /// and the accepts the desired state needs there.
    pub firewalls: coexist::Found,
    /// Every IPv4 address with the details a takeover moves (see [`crate::takeover`]).
    pub addr_details: Vec<AddrDetail>,
    /// IPv4 routes outside the local table.
    pub routes: Vec<Route>,
    /// Bridge-mode ports another network manager runs.
    pub managers: Vec<takeover::Manager>,
    /// When the desired state turns IPv6 forwarding on: each device with an IPv6 default route
    /// from router advertisements, and its `accept_ra` (see [`ipv6_forwarding_notes`]).
    pub ra_uplinks: Vec<(String, Option<String>)>,
}

impl Observed {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
    fn link_by_index(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }
    fn addrs_of(&self, index: u32) -> impl Iterator<Item = &Addr> {
        self.addrs.iter().filter(move |a| a.index == index)
    }
    /// The IPv6 addresses of a link that are someone's configuration, not the kernel's own
    /// link-local one.
    fn addrs6_of(&self, index: u32) -> impl Iterator<Item = &Addr6> {
        self.addrs6
            .iter()
            .filter(move |a| a.index == index && !a.link_local)
    }
    fn file(&self, path: &std::path::Path) -> Option<&str> {
        self.files
            .iter()
            .find(|f| f.path == path)
            .and_then(|f| f.content.as_deref())
    }

    /// Whose the live bridge `link` is, for `network` (the one rule: [`ownership`]).
    pub fn ownership(&self, link: &Link, network: &str) -> Ownership {
        ownership(link, network, self.owned.bridge(&link.name))
    }
}

/// How a sysctl change relates to the agent's record of what it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SysctlRecord {
    /// A `[sysctl]` value: applied and persisted; the value found first is recorded so `down`
    /// (or an apply whose config no longer names the key) puts it back.
    Config,
    /// A value the networks need (ip_forward and IPv6 forwarding for forwarding networks, an
    /// IPv6 bridge's own settings): remember the previous value so `down` can restore it.
    RememberPrevious,
    /// No forwarding network is left: put back the value the agent found, forget the record.
    RestorePrevious,
}

/// A bridge as it was before the agent deletes it (so a failed apply can recreate it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BridgeSnapshot {
    /// None only for a link the kernel reported without an address: recreated, it gets the
    /// kernel's choice, never a made-up one.
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub stp: bool,
    pub forward_delay: u32,
    pub alias: Option<String>,
    pub addresses: Vec<Ipv4Net>,
    pub addresses6: Vec<Ipv6Net>,
    pub up: bool,
}

/// The port a takeover step is about: its network, the port and the bridge taking it over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TakenPort {
    pub network: String,
    pub port: String,
    pub bridge: String,
}

/// One concrete step of a plan. Display is a sentence a user can act on; JSON carries a "kind".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    CreateBridge {
        network: String,
        name: String,
        mac: Mac,
        mtu: Option<u32>,
        stp: bool,
        forward_delay: u32,
    },
    /// Put the owner mark (alias + owned.json record) on a bridge that is ours but not fully marked.
    MarkOwned {
        network: String,
        name: String,
        /// The device the plan found (apply refuses if the name now belongs to another).
        ifindex: u32,
    },
    SetBridgeMac {
        name: String,
        from: Option<Mac>,
        to: Mac,
    },
    SetMtu {
        name: String,
        from: u32,
        to: u32,
    },
    SetStp {
        name: String,
        from_stp: bool,
        from_delay: u32,
        stp: bool,
        forward_delay: u32,
    },
    EnslavePort {
        network: String,
        bridge: String,
        port: String,
    },
    AddAddress {
        bridge: String,
        address: Ipv4Net,
    },
    RemoveAddress {
        bridge: String,
        address: Ipv4Net,
    },
    AddAddress6 {
        bridge: String,
        address: Ipv6Net,
    },
    RemoveAddress6 {
        bridge: String,
        address: Ipv6Net,
    },
    LinkUp {
        name: String,
    },
    SetSysctl {
        key: String,
        from: Option<String>,
        to: String,
        record: SysctlRecord,
    },
    WriteFile {
        path: PathBuf,
        summary: String,
        #[serde(skip)]
        content: String,
    },
    RemoveFile {
        path: PathBuf,
    },
    ReplaceFirewall {
        table: String,
        networks: usize,
        /// The port forwards the table carries (shown, so `plan` says what is forwarded).
        forwards: Vec<crate::model::PortForward>,
        /// The `nft -f` script that replaces our tables (rendered when the plan is made).
        #[serde(skip)]
        script: String,
    },
    DeleteFirewall {
        table: String,
    },
    DeleteOwnedBridge {
        network: String,
        name: String,
        /// The device the plan found ours (apply deletes only that one).
        ifindex: u32,
        snapshot: BridgeSnapshot,
    },
    /// owned.json names a bridge that is gone or is no longer the one the agent made.
    ForgetBridge {
        name: String,
        reason: String,
    },
    /// Bridge takeover: add one of the port's addresses to the bridge (the port loses it in
    /// `ClearPort`, after the routes moved).
    MoveAddress {
        #[serde(flatten)]
        at: TakenPort,
        address: AddrDetail,
    },
    /// Bridge takeover: switch one route through the port over to the bridge.
    MoveRoute {
        #[serde(flatten)]
        at: TakenPort,
        route: Route,
    },
    /// Bridge takeover: remove the moved addresses from the port (its subnet routes go too).
    ClearPort {
        #[serde(flatten)]
        at: TakenPort,
        addresses: Vec<AddrDetail>,
    },
    /// A taken-over address or route the bridge lost (drift): put it back on the bridge.
    RestoreAddress {
        #[serde(flatten)]
        at: TakenPort,
        address: AddrDetail,
    },
    RestoreRoute {
        #[serde(flatten)]
        at: TakenPort,
        route: Route,
    },
    /// A taken-over port whose network is no longer configured gets its addresses and routes
    /// back before the bridge is deleted.
    GiveBack {
        #[serde(flatten)]
        at: TakenPort,
        addresses: Vec<AddrDetail>,
        routes: Vec<Route>,
    },
    /// Add a marked accept to a foreign firewall that would drop the networks' traffic.
    AddFirewallAccept {
        accept: coexist::Accept,
        /// The blocker it answers, as a sentence.
        because: String,
    },
    /// Remove a marked accept that no configured network needs any more.
    RemoveFirewallAccept {
        accept: coexist::Accept,
    },
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn delay_text(stp: bool, delay: u32) -> String {
    let eff = effective_forward_delay(stp, delay);
    if eff == delay {
        format!("forward delay {delay} s")
    } else {
        format!("forward delay {delay} s (the kernel keeps {eff} s while STP is on)")
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateBridge {
                network,
                name,
                mac,
                mtu,
                stp,
                forward_delay,
            } => {
                let mtu = mtu
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "default".into());
                write!(
                    f,
                    "create bridge {name} for network {network} (mac {mac}, mtu {mtu}, stp {}, {})",
                    on_off(*stp),
                    delay_text(*stp, *forward_delay)
                )
            }
            Action::MarkOwned { network, name, .. } => {
                write!(
                    f,
                    "mark bridge {name} as hostagent's (alias {}, record in owned.json)",
                    owner_alias(network)
                )
            }
            Action::SetBridgeMac { name, from, to } => {
                let from = from.map_or_else(|| "(none)".to_string(), |m| m.to_string());
                write!(f, "set MAC of {name} {from} → {to}")
            }
            Action::SetMtu { name, from, to } => write!(f, "set MTU of {name} {from} → {to}"),
            Action::SetStp {
                name,
                from_stp,
                from_delay,
                stp,
                forward_delay,
            } => write!(
                f,
                "set STP of {name} {} → {}, forward delay {from_delay} s → {}",
                on_off(*from_stp),
                on_off(*stp),
                delay_text(*stp, *forward_delay).trim_start_matches("forward delay ")
            ),
            Action::EnslavePort { bridge, port, .. } => {
                write!(f, "add port {port} to bridge {bridge} and set it up")
            }
            Action::AddAddress { bridge, address } => {
                write!(f, "add address {address} to {bridge}")
            }
            Action::RemoveAddress { bridge, address } => {
                write!(
                    f,
                    "remove address {address} from {bridge} (not in the config)"
                )
            }
            Action::AddAddress6 { bridge, address } => {
                write!(f, "add address {address} to {bridge} (nodad)")
            }
            Action::RemoveAddress6 { bridge, address } => {
                write!(
                    f,
                    "remove address {address} from {bridge} (not in the config)"
                )
            }
            Action::LinkUp { name } => write!(f, "set link {name} up"),
            Action::SetSysctl {
                key,
                from,
                to,
                record,
            } => {
                let from = from.as_deref().unwrap_or("(absent)");
                let why = match record {
                    SysctlRecord::Config => " (`down` restores it)",
                    SysctlRecord::RememberPrevious
                        if sysctl::split_interface_key(key).is_some() && key != IPV6_FORWARD =>
                    {
                        " (IPv6 router on this bridge; `down` restores it)"
                    }
                    SysctlRecord::RememberPrevious => {
                        " (for forwarding networks; `down` restores it)"
                    }
                    SysctlRecord::RestorePrevious => " (restore the value found before hostagent)",
                };
                write!(f, "set {key} {from} → {to}{why}")
            }
            Action::WriteFile { path, summary, .. } => {
                write!(f, "write {} ({summary})", path.display())
            }
            Action::RemoveFile { path } => write!(
                f,
                "remove {} (hostagent's, no longer configured)",
                path.display()
            ),
            Action::ReplaceFirewall {
                table,
                networks,
                forwards,
                ..
            } => {
                write!(
                    f,
                    "replace nftables table {table} ({networks} network{}",
                    if *networks == 1 { "" } else { "s" }
                )?;
                if !forwards.is_empty() {
                    let list: Vec<String> = forwards.iter().map(|p| p.to_string()).collect();
                    write!(f, "; forward {}", list.join(", "))?;
                }
                write!(f, ")")
            }
            Action::DeleteFirewall { table } => {
                write!(f, "delete nftables table {table} (no network configured)")
            }
            Action::DeleteOwnedBridge { network, name, .. } => {
                write!(f, "delete bridge {name} (hostagent's, for network {network}, no longer configured)")
            }
            Action::ForgetBridge { name, reason } => {
                write!(f, "forget the record of bridge {name} ({reason})")
            }
            Action::MoveAddress { at, address } => {
                write!(f, "move {} from {} to {}", address.net, at.port, at.bridge)
            }
            Action::MoveRoute { at, route } => {
                write!(f, "move {} → dev {}", route.describe(&at.port), at.bridge)
            }
            Action::ClearPort { at, addresses } => {
                let list: Vec<String> = addresses.iter().map(|a| a.net.to_string()).collect();
                write!(
                    f,
                    "remove {} from {port} (on {} now; {port}'s own subnet routes go with it)",
                    list.join(", "),
                    at.bridge,
                    port = at.port
                )
            }
            Action::RestoreAddress { at, address } => write!(
                f,
                "put {} back on {} (taken over from {})",
                address.net, at.bridge, at.port
            ),
            Action::RestoreRoute { at, route } => {
                write!(f, "put route {} back", route.describe(&at.bridge))
            }
            Action::GiveBack {
                at,
                addresses,
                routes,
            } => {
                let mut what: Vec<String> = addresses.iter().map(|a| a.net.to_string()).collect();
                what.extend(
                    routes
                        .iter()
                        .map(|r| format!("route {}", r.describe(&at.port))),
                );
                write!(
                    f,
                    "give {} back from {} to {}",
                    what.join(", "),
                    at.bridge,
                    at.port
                )
            }
            Action::AddFirewallAccept { accept, because } => {
                write!(f, "{accept}; because {because}")
            }
            Action::RemoveFirewallAccept { accept } => match accept.system {
                coexist::System::Firewalld => write!(
                    f,
                    "take {} out of {} (hostagent put it there; no longer needed)",
                    accept.rule,
                    accept.place()
                ),
                _ => write!(
                    f,
                    "remove hostagent's accept from {}, no longer needed: {}",
                    accept.place(),
                    accept.rule
                ),
            },
        }
    }
}

/// What apply would do, in order, plus facts the user should know that no action fixes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// E.g. "vhost_net must be reloaded": the agent never does that itself.
    pub notes: Vec<String>,
    /// The desired state the plan was made for: apply's read-back checks the host against it.
    #[serde(skip)]
    pub(crate) desired: Desired,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// The desired state this plan takes the host to.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }
}

/// Read everything `diff` needs.
pub async fn observe(host: &Host, desired: &Desired) -> Result<Observed, Error> {
    observe_with(&Netlink::connect()?, host, desired).await
}

/// [`observe`] on an open netlink connection.
pub(crate) async fn observe_with(
    nl: &Netlink,
    host: &Host,
    desired: &Desired,
) -> Result<Observed, Error> {
    let links = nl.links().await?;
    let addrs = nl.addrs().await?;
    let addrs6 = nl.addrs6().await?;
    let owned = Owned::load(host)?;
    let mut sysctls = BTreeMap::new();
    for (k, _) in sysctl::wanted(desired) {
        sysctls.insert(k.clone(), sysctl::read(host, &k)?);
    }
    for c in &owned.sysctls {
        sysctls.insert(c.key.clone(), sysctl::read(host, &c.key)?);
    }
    let mut observed_files = Vec::new();
    for (path, _) in files::desired_files(desired) {
        let content = files::read_opt(&host.path(&path))?;
        observed_files.push(ObservedFile { path, content });
    }
    // One read of the ruleset serves our tables and the foreign chains alike.
    let listing = nft::RulesetListing::read()?;
    let firewall = FirewallState::of(&nft::observe_in(&listing), desired);
    let firewalls = coexist::observe_for_in(host, desired, &listing)?;
    let addr_details = nl.addr_details().await?;
    let routes = nl.routes().await?;
    let mut ra_uplinks = Vec::new();
    if sysctl::for_networks(desired)
        .iter()
        .any(|(k, _)| k == IPV6_FORWARD)
    {
        for index in nl.ra_default_route_devices().await? {
            if let Some(l) = links.iter().find(|l| l.index == index) {
                let key = format!("net.ipv6.conf.{}.accept_ra", l.name);
                ra_uplinks.push((l.name.clone(), sysctl::read(host, &key)?));
            }
        }
    }
    let managers = desired
        .networks
        .iter()
        .filter(|n| n.mode == crate::model::Mode::Bridge)
        .flat_map(|n| &n.interfaces)
        .filter_map(|p| links.iter().find(|l| l.name == *p))
        .filter_map(|l| takeover::managed_by(host, l))
        .collect();
    Ok(Observed {
        links,
        addrs,
        addrs6,
        sysctls,
        files: observed_files,
        firewall,
        owned,
        owned_path: Owned::path(host),
        vhost_live: files::live_vhost_zcopytx(host),
        firewalls,
        addr_details,
        routes,
        managers,
        ra_uplinks,
    })
}

/// IPv6 forwarding makes the kernel ignore router advertisements on every interface whose
/// `accept_ra` is 1 (only 2 accepts them on a router): a host that configures its own uplink by
/// SLAAC would lose that uplink's default route when it expires. libvirt refuses to start such a
/// network; the plan says what to set (a `[sysctl]` entry that gives the uplink 2 silences it).
fn ipv6_forwarding_notes(desired: &Desired, observed: &Observed) -> Vec<String> {
    observed
        .ra_uplinks
        .iter()
        .filter(|(dev, accept_ra)| {
            let key = format!("net.ipv6.conf.{dev}.accept_ra");
            accept_ra.as_deref() == Some("1") && desired.sysctls.get(&key).map(String::as_str) != Some("2")
        })
        .map(|(dev, _)| {
            format!(
                "{dev} has an IPv6 default route from router advertisements and accept_ra = 1: with IPv6 forwarding on (for the networks with address6) the kernel stops accepting them and the route expires; add \"net.ipv6.conf.{dev}.accept_ra\" = 2 to [sysctl]"
            )
        })
        .collect()
}

/// Refuse what apply must never do: adopt or replace a device that is not ours, enslave a port
/// that is missing or taken, write a sysctl that does not exist, put a bridge name into an nft
/// rule that cannot hold it.
pub fn conflicts(desired: &Desired, observed: &Observed) -> Result<(), Error> {
    nft::check_names(desired)?;
    for n in &desired.networks {
        if let Some(l) = observed.link(&n.bridge) {
            if let Ownership::Foreign(why) = observed.ownership(l, &n.name) {
                return Err(Error::ForeignBridge {
                    network: n.name.clone(),
                    bridge: n.bridge.clone(),
                    why: format!("{why}; state file {}", observed.owned_path.display()),
                });
            }
            if l.kind.as_deref() != Some("bridge") {
                return Err(Error::NotABridge {
                    network: n.name.clone(),
                    bridge: n.bridge.clone(),
                    kind: l.kind.clone().unwrap_or_else(|| "non-virtual".into()),
                });
            }
        }
        let bridge_index = observed.link(&n.bridge).map(|l| l.index);
        for p in &n.interfaces {
            let Some(port) = observed.link(p) else {
                return Err(Error::Port {
                    network: n.name.clone(),
                    port: p.clone(),
                    problem: "does not exist".into(),
                });
            };
            if let Some(c) = port.controller {
                if Some(c) != bridge_index {
                    let master = observed
                        .link_by_index(c)
                        .map(|l| l.name.clone())
                        .unwrap_or_else(|| c.to_string());
                    return Err(Error::Port {
                        network: n.name.clone(),
                        port: p.clone(),
                        problem: format!("is already a port of {master}; release it first (`ip link set {p} nomaster`)"),
                    });
                }
            }
        }
    }
    for n in &desired.networks {
        for (p, link) in takeover::ports(n, observed) {
            if let Some(m) = observed.managers.iter().find(|m| m.port == p) {
                return Err(Error::Managed {
                    network: n.name.clone(),
                    port: p.to_string(),
                    manager: m.name.to_string(),
                    evidence: m.evidence.clone(),
                    hint: m.hint.clone(),
                });
            }
            if let Some(why) = link.and_then(|l| takeover::refusal(n, l, observed)) {
                return Err(Error::Takeover {
                    network: n.name.clone(),
                    why,
                });
            }
        }
    }
    for (k, _) in sysctl::wanted(desired) {
        // A bridge's own keys appear when the plan creates it.
        let created = sysctl::split_interface_key(&k).is_some_and(|(_, i, _)| {
            observed.link(i).is_none() && desired.networks.iter().any(|n| n.bridge == i)
        });
        if !created && observed.sysctls.get(&k).is_some_and(|v| v.is_none()) {
            return Err(Error::NoSuchSysctl {
                key: k.clone(),
                path: Host::new("/", "/").sysctl_path(&k),
            });
        }
    }
    Ok(())
}

/// The actions that take `observed` to `desired`, in the order apply performs them.
pub fn diff(desired: &Desired, observed: &Observed) -> Plan {
    let mut actions = Vec::new();
    for n in &desired.networks {
        diff_network(desired, n, observed, &mut actions);
    }
    diff_sysctls(desired, observed, &mut actions);
    diff_files(desired, observed, &mut actions);
    diff_firewall(desired, observed, &mut actions);
    diff_coexist(observed, &mut actions);
    // Deleting comes last: it is the one step whose undo (recreating the bridge) cannot give the
    // device back its old ifindex, so as little as possible may fail after it.
    diff_stale_bridges(desired, observed, &mut actions);
    let mut notes = coexist::notes(desired, &observed.firewalls);
    notes.extend(ipv6_forwarding_notes(desired, observed));
    if let (Some(want), Some(live)) = (desired.vhost_zcopytx, observed.vhost_live) {
        if want != live {
            notes.push(format!(
                "vhost_net is loaded with experimental_zcopytx={} but the config wants {}: reload the module \
                 (`modprobe -r vhost_net && modprobe vhost_net`, with no guest running) for it to take effect",
                u8::from(live),
                u8::from(want)
            ));
        }
    }
    Plan {
        actions,
        notes,
        desired: desired.clone(),
    }
}

fn diff_network(
    desired: &Desired,
    n: &NetworkSpec,
    observed: &Observed,
    actions: &mut Vec<Action>,
) {
    let mac = takeover::bridge_mac(n, observed);
    let taking_over = !takeover::ports(n, observed).is_empty();
    let Some(l) = observed.link(&n.bridge) else {
        actions.push(Action::CreateBridge {
            network: n.name.clone(),
            name: n.bridge.clone(),
            mac,
            mtu: n.mtu,
            stp: n.stp,
            forward_delay: n.forward_delay,
        });
        if taking_over {
            // Up before the port joins: the port's traffic goes on through the bridge at once.
            actions.push(Action::LinkUp {
                name: n.bridge.clone(),
            });
        }
        for p in &n.interfaces {
            actions.push(Action::EnslavePort {
                network: n.name.clone(),
                bridge: n.bridge.clone(),
                port: p.clone(),
            });
        }
        if let Some(a) = n.address {
            actions.push(Action::AddAddress {
                bridge: n.bridge.clone(),
                address: a,
            });
        }
        diff_bridge_sysctls(desired, n, observed, actions);
        if let Some(v6) = &n.ipv6 {
            actions.push(Action::AddAddress6 {
                bridge: n.bridge.clone(),
                address: v6.address,
            });
        }
        diff_takeover(n, observed, None, actions);
        if !taking_over {
            actions.push(Action::LinkUp {
                name: n.bridge.clone(),
            });
        }
        return;
    };
    match observed.ownership(l, &n.name) {
        Ownership::Ours => {}
        Ownership::NeedsMark(_) => actions.push(Action::MarkOwned {
            network: n.name.clone(),
            name: n.bridge.clone(),
            ifindex: l.index,
        }),
        // conflicts() refuses it; a plan never touches a device that is not ours.
        Ownership::Foreign(_) => return,
    }
    if l.mac != Some(mac) {
        actions.push(Action::SetBridgeMac {
            name: n.bridge.clone(),
            from: l.mac,
            to: mac,
        });
    }
    if let Some(m) = n.mtu {
        if l.mtu != m {
            actions.push(Action::SetMtu {
                name: n.bridge.clone(),
                from: l.mtu,
                to: m,
            });
        }
    }
    let (from_stp, from_delay) = l
        .bridge
        .as_ref()
        .map(|b| (b.stp, b.forward_delay))
        .unwrap_or((false, 0));
    if from_stp != n.stp || from_delay != effective_forward_delay(n.stp, n.forward_delay) {
        actions.push(Action::SetStp {
            name: n.bridge.clone(),
            from_stp,
            from_delay,
            stp: n.stp,
            forward_delay: n.forward_delay,
        });
    }
    for p in &n.interfaces {
        match observed.link(p) {
            Some(port) if port.controller == Some(l.index) => {
                if !port.up {
                    actions.push(Action::LinkUp { name: p.clone() });
                }
            }
            _ => actions.push(Action::EnslavePort {
                network: n.name.clone(),
                bridge: n.bridge.clone(),
                port: p.clone(),
            }),
        }
    }
    let have: Vec<Ipv4Net> = observed.addrs_of(l.index).map(|a| a.net).collect();
    if let Some(a) = n.address {
        if !have.contains(&a) {
            actions.push(Action::AddAddress {
                bridge: n.bridge.clone(),
                address: a,
            });
        }
    }
    let kept = takeover::kept_addresses(n, observed);
    for a in have {
        if Some(a) != n.address && !kept.contains(&a) {
            actions.push(Action::RemoveAddress {
                bridge: n.bridge.clone(),
                address: a,
            });
        }
    }
    diff_bridge_sysctls(desired, n, observed, actions);
    // A bridge-mode bridge is the host's own port on the outer LAN: its IPv6 addresses (SLAAC
    // from the LAN's router) are not the agent's to manage.
    if n.mode != crate::model::Mode::Bridge {
        let have6: Vec<Ipv6Net> = observed.addrs6_of(l.index).map(|a| a.net).collect();
        let want6 = n.ipv6.as_ref().map(|v| v.address);
        if let Some(a) = want6.filter(|a| !have6.contains(a)) {
            actions.push(Action::AddAddress6 {
                bridge: n.bridge.clone(),
                address: a,
            });
        }
        for a in have6.into_iter().filter(|a| Some(*a) != want6) {
            actions.push(Action::RemoveAddress6 {
                bridge: n.bridge.clone(),
                address: a,
            });
        }
    }
    if !l.up {
        actions.push(Action::LinkUp {
            name: n.bridge.clone(),
        });
    }
    diff_takeover(n, observed, Some(l), actions);
}

/// The bridge's own settings ([`sysctl::bridge_wanted`]), before its IPv6 address goes on (a
/// bridge with IPv6 disabled refuses one) and before it comes up (no RA may configure it).
fn diff_bridge_sysctls(
    desired: &Desired,
    n: &NetworkSpec,
    observed: &Observed,
    actions: &mut Vec<Action>,
) {
    let exists = observed.link(&n.bridge).is_some();
    for (key, to) in sysctl::bridge_wanted(desired, n) {
        let from = observed
            .sysctls
            .get(&key)
            .cloned()
            .flatten()
            .filter(|_| exists);
        if from.as_deref() != Some(to.as_str()) {
            actions.push(Action::SetSysctl {
                key,
                from,
                to,
                record: SysctlRecord::RememberPrevious,
            });
        }
    }
}

/// For each taken-over port: its addresses and routes moved to the bridge (then the port
/// cleared), and what the record says the bridge should have but lost put back.
fn diff_takeover(
    n: &NetworkSpec,
    observed: &Observed,
    bridge: Option<&Link>,
    actions: &mut Vec<Action>,
) {
    let on_bridge = bridge.map(|b| {
        (
            takeover::addrs_on(observed, b.index),
            takeover::routes_via(observed, b.index),
        )
    });
    let (br_addrs, br_routes) = on_bridge.unwrap_or_default();
    for (p, link) in takeover::ports(n, observed) {
        let (port_addrs, port_routes) = match link {
            Some(l) => (
                takeover::addrs_on(observed, l.index),
                takeover::routes_via(observed, l.index),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let at = TakenPort {
            network: n.name.clone(),
            port: p.to_string(),
            bridge: n.bridge.clone(),
        };
        let rec = observed.owned.takeover(&n.name, p);
        let recorded_addrs = rec.map(|t| t.addresses.as_slice()).unwrap_or_default();
        let recorded_routes = rec.map(|t| t.routes.as_slice()).unwrap_or_default();
        for a in &port_addrs {
            actions.push(Action::MoveAddress {
                at: at.clone(),
                address: a.clone(),
            });
        }
        let has_addr = |list: &[AddrDetail], a: &AddrDetail| list.iter().any(|x| x.net == a.net);
        for a in recorded_addrs {
            if !has_addr(&br_addrs, a) && !has_addr(&port_addrs, a) {
                actions.push(Action::RestoreAddress {
                    at: at.clone(),
                    address: a.clone(),
                });
            }
        }
        for r in &port_routes {
            actions.push(Action::MoveRoute {
                at: at.clone(),
                route: r.clone(),
            });
        }
        let has_route = |list: &[Route], r: &Route| list.iter().any(|x| x.same_route(r));
        for r in recorded_routes {
            if !has_route(&br_routes, r) && !has_route(&port_routes, r) {
                actions.push(Action::RestoreRoute {
                    at: at.clone(),
                    route: r.clone(),
                });
            }
        }
        if !port_addrs.is_empty() {
            actions.push(Action::ClearPort {
                at,
                addresses: port_addrs,
            });
        }
    }
}

fn diff_stale_bridges(desired: &Desired, observed: &Observed, actions: &mut Vec<Action>) {
    for rec in &observed.owned.bridges {
        if desired.networks.iter().any(|n| n.bridge == rec.name) {
            continue;
        }
        let Some(l) = observed.link(&rec.name) else {
            actions.push(Action::ForgetBridge {
                name: rec.name.clone(),
                reason: "it no longer exists".into(),
            });
            continue;
        };
        match ownership(l, &rec.network, Some(rec)) {
            Ownership::Ours => {
                for t in observed
                    .owned
                    .takeovers
                    .iter()
                    .filter(|t| t.bridge == rec.name)
                {
                    actions.push(Action::GiveBack {
                        at: TakenPort {
                            network: t.network.clone(),
                            port: t.port.clone(),
                            bridge: t.bridge.clone(),
                        },
                        addresses: takeover::addrs_on(observed, l.index),
                        routes: takeover::routes_via(observed, l.index),
                    });
                }
                let b = l.bridge.clone().unwrap_or(BridgeInfo {
                    stp: false,
                    forward_delay: 0,
                });
                actions.push(Action::DeleteOwnedBridge {
                    network: rec.network.clone(),
                    name: rec.name.clone(),
                    ifindex: l.index,
                    snapshot: BridgeSnapshot {
                        mac: l.mac,
                        mtu: l.mtu,
                        stp: b.stp,
                        forward_delay: b.forward_delay,
                        alias: l.alias.clone(),
                        addresses: observed.addrs_of(l.index).map(|a| a.net).collect(),
                        addresses6: observed.addrs6_of(l.index).map(|a| a.net).collect(),
                        up: l.up,
                    },
                });
            }
            Ownership::NeedsMark(_) => actions.push(Action::ForgetBridge {
                name: rec.name.clone(),
                reason: format!(
                    "its alias is no longer {}: someone took it over; left alone",
                    owner_alias(&rec.network)
                ),
            }),
            Ownership::Foreign(_) => actions.push(Action::ForgetBridge {
                name: rec.name.clone(),
                reason:
                    "a device of that name exists but is not the one hostagent created; left alone"
                        .into(),
            }),
        }
    }
}

fn diff_sysctls(desired: &Desired, observed: &Observed, actions: &mut Vec<Action>) {
    let for_networks = sysctl::for_networks(desired);
    for (key, to) in sysctl::wanted(desired) {
        // A bridge's own keys are set with the bridge (see diff_bridge_sysctls).
        let bridge_key = desired.networks.iter().any(|n| {
            sysctl::bridge_wanted(desired, n)
                .iter()
                .any(|(k, _)| *k == key)
        });
        let from = observed.sysctls.get(&key).cloned().flatten();
        if bridge_key || from.as_deref() == Some(to.as_str()) {
            continue;
        }
        let record = if for_networks.iter().any(|(k, _)| *k == key) {
            SysctlRecord::RememberPrevious
        } else {
            SysctlRecord::Config
        };
        actions.push(Action::SetSysctl {
            key,
            from,
            to,
            record,
        });
    }
    // A value the agent changed that nothing asks for any more: put it back if it is still ours.
    for c in &observed.owned.sysctls {
        let still_wanted = sysctl::wanted(desired).iter().any(|(k, _)| *k == c.key);
        if still_wanted {
            continue;
        }
        let live = observed.sysctls.get(&c.key).cloned().flatten();
        if live.as_deref() == Some(c.set.as_str()) && c.previous != c.set {
            actions.push(Action::SetSysctl {
                key: c.key.clone(),
                from: live,
                to: c.previous.clone(),
                record: SysctlRecord::RestorePrevious,
            });
        }
    }
}

fn diff_files(desired: &Desired, observed: &Observed, actions: &mut Vec<Action>) {
    for (path, want) in files::desired_files(desired) {
        let have = observed.file(&path);
        match want {
            Some(content) if have != Some(content.as_str()) => {
                let mut summary = if path == std::path::Path::new(files::SYSCTL_DROPIN) {
                    let n = desired.sysctls.len();
                    format!("{n} key{}", if n == 1 { "" } else { "s" })
                } else {
                    format!(
                        "options vhost_net experimental_zcopytx={}",
                        u8::from(desired.vhost_zcopytx == Some(true))
                    )
                };
                if have.is_some_and(|c| !files::is_ours(c)) {
                    summary.push_str("; replaces a file hostagent did not write");
                }
                actions.push(Action::WriteFile {
                    path,
                    summary,
                    content,
                });
            }
            None if have.is_some_and(files::is_ours) => actions.push(Action::RemoveFile { path }),
            _ => {}
        }
    }
}

fn diff_firewall(desired: &Desired, observed: &Observed, actions: &mut Vec<Action>) {
    let table = FIREWALL_TABLE.to_string();
    if desired.networks.is_empty() {
        if observed.firewall.exists {
            actions.push(Action::DeleteFirewall { table });
        }
    } else if !observed.firewall.matches {
        actions.push(Action::ReplaceFirewall {
            table,
            networks: desired.networks.len(),
            forwards: desired.forwards.clone(),
            script: nft::render(desired),
        });
    }
}

/// The accepts foreign firewalls need and lack, then the marked ones nothing needs any more.
fn diff_coexist(observed: &Observed, actions: &mut Vec<Action>) {
    let found = &observed.firewalls;
    for (a, because) in &found.wanted {
        if !found.ours.iter().any(|o| o.same_place_and_rule(a)) {
            actions.push(Action::AddFirewallAccept {
                accept: a.clone(),
                because: because.clone(),
            });
        }
    }
    for o in &found.ours {
        if !found.wanted.iter().any(|(a, _)| a.same_place_and_rule(o)) {
            actions.push(Action::RemoveFirewallAccept { accept: o.clone() });
        }
    }
}

/// Observe (once), refuse conflicts, diff: the plan `apply` performs.
pub async fn plan(host: &Host, desired: &Desired) -> Result<Plan, Error> {
    plan_with(&mut KernelHost::connect(host), host, desired).await
}

/// [`plan`] on the given host operations.
pub(crate) async fn plan_with<O: HostOps>(
    ops: &mut O,
    host: &Host,
    desired: &Desired,
) -> Result<Plan, Error> {
    let observed = ops.observe(host, desired).await?;
    conflicts(desired, &observed)?;
    Ok(diff(desired, &observed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mode, PortLimit};
    use crate::owned::{OwnedBridge, SysctlChange};
    use crate::sysctl::{IPV6_FORWARD, IP_FORWARD};

    fn net(name: &str, bridge: &str, mode: Mode) -> NetworkSpec {
        NetworkSpec {
            address: Some("10.77.0.1/24".parse().unwrap()),
            stp: true,
            mac: Mac([0x52, 0x54, 0, 1, 2, 3]),
            mtu: Some(1500),
            ..NetworkSpec::test(name, mode, bridge)
        }
    }

    fn bridge_link(index: u32, name: &str, alias: Option<&str>) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some(Mac([0x52, 0x54, 0, 1, 2, 3])),
            mtu: 1500,
            up: true,
            alias: alias.map(String::from),
            kind: Some("bridge".into()),
            controller: None,
            bridge: Some(BridgeInfo {
                stp: true,
                forward_delay: 2,
            }),
        }
    }

    /// The observed state a successful apply of `desired` leaves behind.
    fn converged(desired: &Desired) -> Observed {
        let mut o = Observed::default();
        for (i, n) in desired.networks.iter().enumerate() {
            let idx = 10 + i as u32;
            o.links
                .push(bridge_link(idx, &n.bridge, Some(&owner_alias(&n.name))));
            o.addrs.push(Addr {
                index: idx,
                net: n.address.unwrap(),
            });
            if let Some(v6) = &n.ipv6 {
                o.addrs6.push(Addr6 {
                    index: idx,
                    net: v6.address,
                    link_local: false,
                });
            }
            o.owned.bridges.push(OwnedBridge {
                network: n.name.clone(),
                name: n.bridge.clone(),
                ifindex: idx,
                mac: Some(n.mac),
            });
        }
        for (k, v) in sysctl::wanted(desired) {
            o.sysctls.insert(k, Some(v));
        }
        for (path, content) in files::desired_files(desired) {
            o.files.push(ObservedFile { path, content });
        }
        o.firewall = FirewallState {
            exists: true,
            matches: true,
        };
        o
    }

    fn desired_one(mode: Mode) -> Desired {
        Desired {
            networks: vec![net("lab", "br-lab", mode)],
            ..Default::default()
        }
    }

    #[test]
    fn empty_host_gets_bridge_address_up_forwarding_and_firewall_in_order() {
        let d = desired_one(Mode::Nat);
        let mut o = Observed::default();
        o.sysctls.insert(IP_FORWARD.into(), Some("0".into()));
        let plan = diff(&d, &o);
        let kinds: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            kinds,
            vec![
                "create bridge br-lab for network lab (mac 52:54:00:01:02:03, mtu 1500, stp on, forward delay 0 s (the kernel keeps 2 s while STP is on))",
                "add address 10.77.0.1/24 to br-lab",
                "set link br-lab up",
                "set net.ipv4.ip_forward 0 → 1 (for forwarding networks; `down` restores it)",
                "replace nftables table inet hostagent (1 network)",
            ]
        );
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["actions"][0]["kind"], "create_bridge");
        assert_eq!(json["actions"][3]["record"], "remember_previous");
    }

    fn desired_v6(mode: Mode) -> Desired {
        let mut d = desired_one(mode);
        d.networks[0].ipv6 = Some(crate::model::Ipv6Spec {
            address: "fd00:77::1/64".parse().unwrap(),
            nat6: false,
            dhcp6: false,
        });
        d
    }

    #[test]
    fn an_ipv6_bridge_gets_its_settings_before_its_address_and_forwarding_is_remembered() {
        let d = desired_v6(Mode::Nat);
        let mut o = Observed::default();
        o.sysctls.insert(IP_FORWARD.into(), Some("0".into()));
        o.sysctls.insert(IPV6_FORWARD.into(), Some("0".into()));
        let plan = diff(&d, &o);
        let steps: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            steps[1..7],
            [
                "add address 10.77.0.1/24 to br-lab",
                "set net.ipv6.conf.br-lab.disable_ipv6 (absent) → 0 (IPv6 router on this bridge; `down` restores it)",
                "set net.ipv6.conf.br-lab.accept_ra (absent) → 0 (IPv6 router on this bridge; `down` restores it)",
                "add address fd00:77::1/64 to br-lab (nodad)",
                "set link br-lab up",
                "set net.ipv4.ip_forward 0 → 1 (for forwarding networks; `down` restores it)",
            ],
            "{steps:#?}"
        );
        assert_eq!(
            steps[7],
            "set net.ipv6.conf.all.forwarding 0 → 1 (for forwarding networks; `down` restores it)"
        );
        assert!(plan.actions.iter().all(|a| !matches!(
            a,
            Action::SetSysctl {
                record: SysctlRecord::Config,
                ..
            }
        )));
        // A bridge the plan creates has no keys yet: that is no conflict.
        assert!(conflicts(&d, &o).is_ok());
        // Converged: nothing to do.
        assert!(diff(&d, &converged(&d)).is_empty());
    }

    #[test]
    fn an_uplink_configured_by_router_advertisements_gets_a_note_unless_it_accepts_them_as_a_router(
    ) {
        let mut d = desired_v6(Mode::Nat);
        let mut o = converged(&d);
        o.ra_uplinks = vec![
            ("eth0".into(), Some("1".into())),
            ("eth1".into(), Some("2".into())),
        ];
        let notes = diff(&d, &o).notes;
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("eth0 has an IPv6 default route from router advertisements")
                && notes[0].contains("\"net.ipv6.conf.eth0.accept_ra\" = 2"),
            "{notes:?}"
        );
        d.sysctls
            .insert("net.ipv6.conf.eth0.accept_ra".into(), "2".into());
        assert!(diff(&d, &converged(&d)).notes.is_empty());
    }

    #[test]
    fn isolated_ipv6_sets_the_bridge_but_not_forwarding_and_bridge_mode_gets_nothing() {
        let d = desired_v6(Mode::Isolated);
        let keys: Vec<String> = sysctl::wanted(&d).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "net.ipv6.conf.br-lab.disable_ipv6",
                "net.ipv6.conf.br-lab.accept_ra"
            ]
        );
        let mut b = desired_v6(Mode::Bridge);
        b.networks[0].address = None;
        assert!(sysctl::wanted(&b).is_empty());
        // [sysctl] wins over the network's own value for a key both name.
        let mut mine = desired_v6(Mode::Isolated);
        mine.sysctls
            .insert("net.ipv6.conf.br-lab.accept_ra".into(), "2".into());
        assert_eq!(
            sysctl::wanted(&mine),
            [
                (
                    "net.ipv6.conf.br-lab.disable_ipv6".to_string(),
                    "0".to_string()
                ),
                (
                    "net.ipv6.conf.br-lab.accept_ra".to_string(),
                    "2".to_string()
                ),
            ]
        );
        let mut o = converged(&mine);
        o.sysctls
            .insert("net.ipv6.conf.br-lab.accept_ra".into(), Some("2".into()));
        assert!(diff(&mine, &o).is_empty(), "no tug of war");
    }

    #[test]
    fn a_lost_address6_comes_back_strays_go_and_the_kernels_link_local_stays() {
        let d = desired_v6(Mode::Routed);
        let mut o = converged(&d);
        o.addrs6.clear();
        o.addrs6.push(Addr6 {
            index: 10,
            net: "fe80::5054:ff:fe01:203/64".parse().unwrap(),
            link_local: true,
        });
        o.addrs6.push(Addr6 {
            index: 10,
            net: "2001:db8::5/64".parse().unwrap(),
            link_local: false,
        });
        o.sysctls
            .insert("net.ipv6.conf.br-lab.accept_ra".into(), Some("1".into()));
        assert_eq!(
            diff(&d, &o).actions,
            [
                Action::SetSysctl {
                    key: "net.ipv6.conf.br-lab.accept_ra".into(),
                    from: Some("1".into()),
                    to: "0".into(),
                    record: SysctlRecord::RememberPrevious,
                },
                Action::AddAddress6 {
                    bridge: "br-lab".into(),
                    address: "fd00:77::1/64".parse().unwrap(),
                },
                Action::RemoveAddress6 {
                    bridge: "br-lab".into(),
                    address: "2001:db8::5/64".parse().unwrap(),
                },
            ]
        );
        // A bridge-mode bridge's IPv6 (SLAAC from the outer LAN) is not the agent's.
        let mut b = desired_one(Mode::Bridge);
        b.networks[0].address = None;
        let mut ob = converged(&desired_one(Mode::Bridge));
        ob.addrs.clear();
        ob.addrs6 = o.addrs6.clone();
        assert!(!diff(&b, &ob)
            .actions
            .iter()
            .any(|a| matches!(a, Action::RemoveAddress6 { .. })));
    }

    #[test]
    fn converged_host_has_empty_plan() {
        let mut d = desired_one(Mode::Routed);
        d.sysctls.insert("vm.max_map_count".into(), "262144".into());
        d.vhost_zcopytx = Some(true);
        assert_eq!(diff(&d, &converged(&d)).actions, []);
        assert_eq!(diff(&d, &converged(&d)).notes, Vec::<String>::new());
    }

    #[test]
    fn a_changed_dhcp_port_limit_replaces_the_firewall_and_an_unchanged_one_does_not() {
        let mut applied = desired_one(Mode::Nat);
        applied.networks[0].services.dhcp = true;
        // The tables as observe reads them after applying `applied` (default 100/s).
        let live = crate::nft::expected(&applied);
        for limit in [Some(PortLimit::per_second(500)), None] {
            let wanted = Desired {
                dhcp_port_limit: limit,
                ..applied.clone()
            };
            let mut o = converged(&wanted);
            o.firewall = FirewallState::of(&live, &wanted);
            assert_eq!(
                diff(&wanted, &o).actions,
                [Action::ReplaceFirewall {
                    table: FIREWALL_TABLE.into(),
                    networks: 1,
                    forwards: vec![],
                    script: nft::render(&wanted),
                }],
                "{limit:?}"
            );
        }
        let mut o = converged(&applied);
        o.firewall = FirewallState::of(&live, &applied);
        assert!(diff(&applied, &o).is_empty());
    }

    #[test]
    fn isolated_network_does_not_touch_ip_forward() {
        let d = desired_one(Mode::Isolated);
        let mut o = Observed::default();
        o.sysctls.insert(IP_FORWARD.into(), Some("0".into()));
        assert!(!diff(&d, &o)
            .actions
            .iter()
            .any(|a| matches!(a, Action::SetSysctl { .. })));
    }

    #[test]
    fn drift_on_our_bridge_is_corrected_and_stray_addresses_removed() {
        let d = desired_one(Mode::Nat);
        let mut o = converged(&d);
        o.links[0].mac = Some(Mac([2, 0, 0, 0, 0, 1]));
        o.links[0].mtu = 9000;
        o.links[0].bridge = Some(BridgeInfo {
            stp: false,
            forward_delay: 15,
        });
        o.links[0].up = false;
        o.addrs.push(Addr {
            index: 10,
            net: "192.168.5.1/24".parse().unwrap(),
        });
        let plan = diff(&d, &o);
        let a = &plan.actions;
        assert!(a.contains(&Action::SetBridgeMac {
            name: "br-lab".into(),
            from: Some(Mac([2, 0, 0, 0, 0, 1])),
            to: Mac([0x52, 0x54, 0, 1, 2, 3])
        }));
        assert!(a.contains(&Action::SetMtu {
            name: "br-lab".into(),
            from: 9000,
            to: 1500
        }));
        assert!(a.contains(&Action::SetStp {
            name: "br-lab".into(),
            from_stp: false,
            from_delay: 15,
            stp: true,
            forward_delay: 0
        }));
        assert!(a.contains(&Action::RemoveAddress {
            bridge: "br-lab".into(),
            address: "192.168.5.1/24".parse().unwrap()
        }));
        assert!(a.contains(&Action::LinkUp {
            name: "br-lab".into()
        }));
        assert_eq!(a.len(), 5, "{a:?}");
    }

    #[test]
    fn stp_off_keeps_delay_literally() {
        let mut d = desired_one(Mode::Nat);
        d.networks[0].stp = false;
        let mut o = converged(&d);
        o.links[0].bridge = Some(BridgeInfo {
            stp: false,
            forward_delay: 0,
        });
        assert!(diff(&d, &o).actions.is_empty());
        o.links[0].bridge = Some(BridgeInfo {
            stp: false,
            forward_delay: 2,
        });
        assert_eq!(diff(&d, &o).actions.len(), 1);
    }

    #[test]
    fn foreign_bridge_with_our_name_is_a_conflict_never_an_action() {
        let d = desired_one(Mode::Nat);
        let mut o = Observed::default();
        o.links.push(bridge_link(4, "br-lab", None));
        let err = conflicts(&d, &o).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::ForeignBridge { .. }));
        assert!(
            msg.contains("rename the network's bridge")
                && msg.contains("remove the foreign device"),
            "{msg}"
        );
        let acts = diff(&d, &o).actions;
        assert!(
            !acts.iter().any(|a| a.to_string().contains("br-lab")),
            "diff never acts on it either: {acts:?}"
        );
        // Recorded with the same ifindex counts as ours even without the alias mark.
        o.owned.bridges.push(OwnedBridge {
            network: "lab".into(),
            name: "br-lab".into(),
            ifindex: 4,
            mac: None,
        });
        assert!(conflicts(&d, &o).is_ok());
        assert!(diff(&d, &o).actions.contains(&Action::MarkOwned {
            network: "lab".into(),
            name: "br-lab".into(),
            ifindex: 4,
        }));
        // A record for another ifindex does not make a new device ours, even with our alias.
        o.owned.bridges[0].ifindex = 99;
        o.links[0].alias = Some("hostagent:lab".into());
        let err = conflicts(&d, &o).unwrap_err();
        assert!(err.to_string().contains("records ifindex 99"), "{err}");
        // Another network's alias on an unrecorded device is not ours.
        o.owned.bridges.clear();
        o.links[0].alias = Some("hostagent:other".into());
        assert!(matches!(
            conflicts(&d, &o),
            Err(Error::ForeignBridge { .. })
        ));
        // This network's alias on an unrecorded device is: the record is made again.
        o.links[0].alias = Some("hostagent:lab".into());
        assert!(conflicts(&d, &o).is_ok());
        assert_eq!(
            diff(&d, &o).actions[0],
            Action::MarkOwned {
                network: "lab".into(),
                name: "br-lab".into(),
                ifindex: 4,
            }
        );
    }

    #[test]
    fn bridge_mode_enslaves_ports_and_rejects_taken_or_missing_ones() {
        let mut d = desired_one(Mode::Bridge);
        d.networks[0].address = None;
        d.networks[0].interfaces = vec!["eth1".into()];
        let mut o = Observed::default();
        assert!(matches!(conflicts(&d, &o), Err(Error::Port { .. })));
        let mut eth1 = bridge_link(3, "eth1", None);
        eth1.kind = Some("veth".into());
        eth1.bridge = None;
        eth1.controller = Some(7);
        o.links.push(eth1);
        o.links.push(bridge_link(7, "other-br", None));
        assert!(conflicts(&d, &o)
            .unwrap_err()
            .to_string()
            .contains("already a port of other-br"));
        o.links[0].controller = None;
        conflicts(&d, &o).unwrap();
        let plan = diff(&d, &o);
        assert!(plan.actions.contains(&Action::EnslavePort {
            network: "lab".into(),
            bridge: "br-lab".into(),
            port: "eth1".into()
        }));
        assert!(!plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::AddAddress { .. } | Action::SetSysctl { .. })));
    }

    #[test]
    fn owned_bridge_no_longer_configured_is_deleted_only_if_still_ours() {
        let d = Desired::default();
        let mut o = Observed::default();
        o.owned.bridges.push(OwnedBridge {
            network: "old".into(),
            name: "br-old".into(),
            ifindex: 5,
            mac: None,
        });
        o.links
            .push(bridge_link(5, "br-old", Some("hostagent:old")));
        assert!(
            matches!(&diff(&d, &o).actions[0], Action::DeleteOwnedBridge { name, .. } if name == "br-old")
        );
        o.links[0].index = 6; // someone else's device took the name
        assert!(matches!(
            &diff(&d, &o).actions[0],
            Action::ForgetBridge { .. }
        ));
    }

    #[test]
    fn ip_forward_is_restored_when_no_network_forwards_and_still_ours() {
        let d = desired_one(Mode::Isolated);
        let mut o = converged(&d);
        o.owned.sysctls.push(SysctlChange {
            key: IP_FORWARD.into(),
            previous: "0".into(),
            set: "1".into(),
        });
        o.sysctls.insert(IP_FORWARD.into(), Some("1".into()));
        assert_eq!(
            diff(&d, &o).actions,
            vec![Action::SetSysctl {
                key: IP_FORWARD.into(),
                from: Some("1".into()),
                to: "0".into(),
                record: SysctlRecord::RestorePrevious
            }]
        );
        o.sysctls.insert(IP_FORWARD.into(), Some("0".into()));
        assert!(
            diff(&d, &o).actions.is_empty(),
            "someone else changed it: leave it"
        );
    }

    #[test]
    fn files_written_only_when_different_and_removed_only_if_ours() {
        let mut d = desired_one(Mode::Nat);
        d.sysctls.insert("vm.swappiness".into(), "10".into());
        let mut o = converged(&d);
        assert!(diff(&d, &o).actions.is_empty());
        o.files[0].content = Some("vm.swappiness = 60\n".into());
        let a = diff(&d, &o).actions;
        assert!(
            matches!(&a[0], Action::WriteFile { summary, .. } if summary.contains("did not write")),
            "{a:?}"
        );
        d.sysctls.clear();
        assert!(
            diff(&d, &o).actions.is_empty(),
            "a foreign file is never removed"
        );
        o.files[0].content =
            files::render_sysctl_dropin(&[("vm.swappiness".to_string(), "10".to_string())].into());
        assert_eq!(
            diff(&d, &o).actions,
            vec![Action::RemoveFile {
                path: files::SYSCTL_DROPIN.into()
            }]
        );
    }

    #[test]
    fn vhost_reload_note_when_loaded_value_differs() {
        let mut d = desired_one(Mode::Nat);
        d.vhost_zcopytx = Some(true);
        let mut o = converged(&d);
        o.vhost_live = Some(false);
        let p = diff(&d, &o);
        assert!(p.actions.is_empty());
        assert_eq!(p.notes.len(), 1);
        assert!(p.notes[0].contains("reload"));
        o.vhost_live = Some(true);
        assert!(diff(&d, &o).notes.is_empty());
    }
}
