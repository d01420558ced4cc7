//! Desired vs actual: [`observe`] reads the host, [`diff`] lists the concrete [`Action`]s that
//! make it match, [`plan`] does both after refusing conflicts (a foreign device with our bridge's
//! name, a missing port, an unknown sysctl). An empty plan means there is nothing to do.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::error::Error;
use crate::files;
use crate::link::{effective_forward_delay, owner_alias, Addr, Link, Netlink};
use crate::model::{format_mac, Desired, Host, NetworkSpec};
use crate::owned::Owned;
use crate::sysctl::{self, IP_FORWARD};

/// The agent's nftables table, as users see it in `nft list tables`.
pub const FIREWALL_TABLE: &str = "inet hostagent";

/// What the agent's firewall table looks like now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FirewallState {
    pub exists: bool,
    /// The table exists and is exactly what the desired state renders.
    pub matches: bool,
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
    /// Current value of every sysctl the desired state or the records mention (None = no such key).
    pub sysctls: BTreeMap<String, Option<String>>,
    pub files: Vec<ObservedFile>,
    pub firewall: FirewallState,
    pub owned: Owned,
    /// Where `owned` lives (for error messages).
    pub owned_path: PathBuf,
    /// Live vhost_net experimental_zcopytx, when the module is loaded.
    pub vhost_live: Option<bool>,
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
    fn file(&self, path: &std::path::Path) -> Option<&str> {
        self.files.iter().find(|f| f.path == path).and_then(|f| f.content.as_deref())
    }

    /// Is this existing link the agent's bridge: alias mark, or recorded with this very ifindex?
    pub fn is_ours(&self, link: &Link) -> bool {
        link.has_owner_mark() || self.owned.bridge(&link.name).is_some_and(|b| b.ifindex == link.index)
    }
}

/// How a sysctl change relates to the agent's record of what it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SysctlRecord {
    /// A `[sysctl]` value: applied and persisted, not restored by `down`.
    Config,
    /// ip_forward for forwarding networks: remember the previous value so `down` can restore it.
    RememberPrevious,
    /// No forwarding network is left: put back the value the agent found, forget the record.
    RestorePrevious,
}

/// A bridge as it was before the agent deletes it (so a failed apply can recreate it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BridgeSnapshot {
    pub mac: Option<String>,
    pub mtu: u32,
    pub stp: bool,
    pub forward_delay: u32,
    pub alias: Option<String>,
    pub addresses: Vec<Ipv4Net>,
    pub up: bool,
}

/// One concrete step of a plan. Display is a sentence a user can act on; JSON carries a "kind".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    CreateBridge { network: String, name: String, mac: String, mtu: Option<u32>, stp: bool, forward_delay: u32 },
    /// Put the owner mark (alias + owned.json record) on a bridge that is ours but not fully marked.
    MarkOwned { network: String, name: String },
    SetBridgeMac { name: String, from: Option<String>, to: String },
    SetMtu { name: String, from: u32, to: u32 },
    SetStp { name: String, from_stp: bool, from_delay: u32, stp: bool, forward_delay: u32 },
    EnslavePort { bridge: String, port: String },
    AddAddress { bridge: String, address: Ipv4Net },
    RemoveAddress { bridge: String, address: Ipv4Net },
    LinkUp { name: String },
    SetSysctl { key: String, from: Option<String>, to: String, record: SysctlRecord },
    WriteFile {
        path: PathBuf,
        summary: String,
        #[serde(skip)]
        content: String,
    },
    RemoveFile { path: PathBuf },
    ReplaceFirewall { table: String, networks: usize },
    DeleteFirewall { table: String },
    DeleteOwnedBridge { network: String, name: String, snapshot: BridgeSnapshot },
    /// owned.json names a bridge that is gone or is no longer the one the agent made.
    ForgetBridge { name: String, reason: String },
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
            Action::CreateBridge { network, name, mac, mtu, stp, forward_delay } => {
                let mtu = mtu.map(|m| m.to_string()).unwrap_or_else(|| "default".into());
                write!(
                    f,
                    "create bridge {name} for network {network} (mac {mac}, mtu {mtu}, stp {}, {})",
                    on_off(*stp),
                    delay_text(*stp, *forward_delay)
                )
            }
            Action::MarkOwned { network, name } => {
                write!(f, "mark bridge {name} as hostagent's (alias {}, record in owned.json)", owner_alias(network))
            }
            Action::SetBridgeMac { name, from, to } => {
                write!(f, "set MAC of {name} {} → {to}", from.as_deref().unwrap_or("(none)"))
            }
            Action::SetMtu { name, from, to } => write!(f, "set MTU of {name} {from} → {to}"),
            Action::SetStp { name, from_stp, from_delay, stp, forward_delay } => write!(
                f,
                "set STP of {name} {} → {}, forward delay {from_delay} s → {}",
                on_off(*from_stp),
                on_off(*stp),
                delay_text(*stp, *forward_delay).trim_start_matches("forward delay ")
            ),
            Action::EnslavePort { bridge, port } => write!(f, "add port {port} to bridge {bridge} and set it up"),
            Action::AddAddress { bridge, address } => write!(f, "add address {address} to {bridge}"),
            Action::RemoveAddress { bridge, address } => {
                write!(f, "remove address {address} from {bridge} (not in the config)")
            }
            Action::LinkUp { name } => write!(f, "set link {name} up"),
            Action::SetSysctl { key, from, to, record } => {
                let from = from.as_deref().unwrap_or("(absent)");
                let why = match record {
                    SysctlRecord::Config => "",
                    SysctlRecord::RememberPrevious => " (for forwarding networks; `down` restores it)",
                    SysctlRecord::RestorePrevious => " (restore the value found before hostagent)",
                };
                write!(f, "set {key} {from} → {to}{why}")
            }
            Action::WriteFile { path, summary, .. } => write!(f, "write {} ({summary})", path.display()),
            Action::RemoveFile { path } => write!(f, "remove {} (hostagent's, no longer configured)", path.display()),
            Action::ReplaceFirewall { table, networks } => write!(
                f,
                "replace nftables table {table} ({networks} network{})",
                if *networks == 1 { "" } else { "s" }
            ),
            Action::DeleteFirewall { table } => write!(f, "delete nftables table {table} (no network configured)"),
            Action::DeleteOwnedBridge { network, name, .. } => {
                write!(f, "delete bridge {name} (hostagent's, for network {network}, no longer configured)")
            }
            Action::ForgetBridge { name, reason } => write!(f, "forget the record of bridge {name} ({reason})"),
        }
    }
}

/// What apply would do, in order, plus facts the user should know that no action fixes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// E.g. "vhost_net must be reloaded": the agent never does that itself.
    pub notes: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// Firewall access, in one place until crate::nft provides observe/matches/replace/delete.
pub(crate) mod fw {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    // TEMP until nft.rs lands: crate::nft::observe/matches/replace/delete replace this module.
    pub fn observe(desired: &Desired) -> Result<FirewallState, Error> {
        match list_table()? {
            None => Ok(FirewallState { exists: false, matches: false }),
            Some(_) => {
                // TEMP: without crate::nft::matches we cannot compare rules; a table that exists
                // is taken as current only when the renderer has nothing to say.
                let matches = crate::nft::render(desired).trim().is_empty();
                Ok(FirewallState { exists: true, matches })
            }
        }
    }

    // TEMP until nft.rs lands.
    pub fn replace(desired: &Desired) -> Result<(), Error> {
        let body = crate::nft::render(desired);
        let script = if body.trim().is_empty() {
            format!("table {FIREWALL_TABLE} {{}}\ndelete table {FIREWALL_TABLE}\ntable {FIREWALL_TABLE} {{}}\n")
        } else {
            body
        };
        nft_script(&script)
    }

    // TEMP until nft.rs lands.
    pub fn delete() -> Result<(), Error> {
        nft_script(&format!("table {FIREWALL_TABLE} {{}}\ndelete table {FIREWALL_TABLE}\n"))
    }

    /// The table's current text (`nft list table`), None when it does not exist. Used to put the
    /// previous table back when an apply rolls back.
    pub fn list_table() -> Result<Option<String>, Error> {
        let out = Command::new("nft")
            .args(["list", "table", "inet", crate::nft::TABLE])
            .output()
            .map_err(|e| Error::Nft(format!("running nft: {e}")))?;
        if out.status.success() {
            Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
        } else {
            Ok(None)
        }
    }

    /// Put a saved table text back atomically (delete + add in one transaction).
    pub fn restore(saved: &str) -> Result<(), Error> {
        nft_script(&format!("table {FIREWALL_TABLE} {{}}\ndelete table {FIREWALL_TABLE}\n{saved}"))
    }

    fn nft_script(script: &str) -> Result<(), Error> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Nft(format!("running nft: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).map_err(|e| Error::Nft(format!("writing to nft: {e}")))?;
        }
        let out = child.wait_with_output().map_err(|e| Error::Nft(format!("waiting for nft: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Nft(String::from_utf8_lossy(&out.stderr).trim().to_string()))
        }
    }
}

/// Read everything `diff` needs.
pub async fn observe(host: &Host, desired: &Desired) -> Result<Observed, Error> {
    let nl = Netlink::connect()?;
    let links = nl.links().await?;
    let addrs = nl.addrs().await?;
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
    let firewall = fw::observe(desired)?;
    Ok(Observed {
        links,
        addrs,
        sysctls,
        files: observed_files,
        firewall,
        owned,
        owned_path: Owned::path(host),
        vhost_live: files::live_vhost_zcopytx(host),
    })
}

/// Refuse what apply must never do: adopt or replace a device that is not ours, enslave a port
/// that is missing or taken, write a sysctl that does not exist.
pub fn conflicts(desired: &Desired, observed: &Observed) -> Result<(), Error> {
    for n in &desired.networks {
        if let Some(l) = observed.link(&n.bridge) {
            if !observed.is_ours(l) {
                return Err(Error::ForeignBridge {
                    network: n.name.clone(),
                    bridge: n.bridge.clone(),
                    state: observed.owned_path.clone(),
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
                return Err(Error::Port { network: n.name.clone(), port: p.clone(), problem: "does not exist".into() });
            };
            if let Some(c) = port.controller {
                if Some(c) != bridge_index {
                    let master = observed.link_by_index(c).map(|l| l.name.clone()).unwrap_or_else(|| c.to_string());
                    return Err(Error::Port {
                        network: n.name.clone(),
                        port: p.clone(),
                        problem: format!("is already a port of {master}; release it first (`ip link set {p} nomaster`)"),
                    });
                }
            }
        }
    }
    for (k, _) in sysctl::wanted(desired) {
        if observed.sysctls.get(&k).is_some_and(|v| v.is_none()) {
            return Err(Error::NoSuchSysctl { key: k.clone(), path: PathBuf::from(format!("/proc/sys/{}", k.replace('.', "/"))) });
        }
    }
    Ok(())
}

/// The actions that take `observed` to `desired`, in the order apply performs them.
pub fn diff(desired: &Desired, observed: &Observed) -> Plan {
    let mut actions = Vec::new();
    for n in &desired.networks {
        diff_network(n, observed, &mut actions);
    }
    diff_stale_bridges(desired, observed, &mut actions);
    diff_sysctls(desired, observed, &mut actions);
    diff_files(desired, observed, &mut actions);
    diff_firewall(desired, observed, &mut actions);
    let mut notes = Vec::new();
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
    Plan { actions, notes }
}

fn diff_network(n: &NetworkSpec, observed: &Observed, actions: &mut Vec<Action>) {
    let mac = format_mac(&n.mac);
    let Some(l) = observed.link(&n.bridge) else {
        actions.push(Action::CreateBridge {
            network: n.name.clone(),
            name: n.bridge.clone(),
            mac,
            mtu: n.mtu,
            stp: n.stp,
            forward_delay: n.forward_delay,
        });
        for p in &n.interfaces {
            actions.push(Action::EnslavePort { bridge: n.bridge.clone(), port: p.clone() });
        }
        if let Some(a) = n.address {
            actions.push(Action::AddAddress { bridge: n.bridge.clone(), address: a });
        }
        actions.push(Action::LinkUp { name: n.bridge.clone() });
        return;
    };
    // conflicts() has refused foreign devices; anything here is ours.
    let recorded = observed.owned.bridge(&n.bridge).is_some_and(|b| b.ifindex == l.index);
    if l.alias.as_deref() != Some(owner_alias(&n.name).as_str()) || !recorded {
        actions.push(Action::MarkOwned { network: n.name.clone(), name: n.bridge.clone() });
    }
    if l.mac != Some(n.mac) {
        actions.push(Action::SetBridgeMac { name: n.bridge.clone(), from: l.mac.as_ref().map(format_mac), to: mac });
    }
    if let Some(m) = n.mtu {
        if l.mtu != m {
            actions.push(Action::SetMtu { name: n.bridge.clone(), from: l.mtu, to: m });
        }
    }
    let (from_stp, from_delay) = l.bridge.as_ref().map(|b| (b.stp, b.forward_delay)).unwrap_or((false, 0));
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
            _ => actions.push(Action::EnslavePort { bridge: n.bridge.clone(), port: p.clone() }),
        }
    }
    let have: Vec<Ipv4Net> = observed.addrs_of(l.index).map(|a| a.net).collect();
    if let Some(a) = n.address {
        if !have.contains(&a) {
            actions.push(Action::AddAddress { bridge: n.bridge.clone(), address: a });
        }
    }
    for a in have {
        if Some(a) != n.address {
            actions.push(Action::RemoveAddress { bridge: n.bridge.clone(), address: a });
        }
    }
    if !l.up {
        actions.push(Action::LinkUp { name: n.bridge.clone() });
    }
}

fn diff_stale_bridges(desired: &Desired, observed: &Observed, actions: &mut Vec<Action>) {
    for rec in &observed.owned.bridges {
        if desired.networks.iter().any(|n| n.bridge == rec.name) {
            continue;
        }
        match observed.link(&rec.name) {
            Some(l) if l.index == rec.ifindex && l.has_owner_mark() => {
                let b = l.bridge.clone().unwrap_or(crate::link::BridgeInfo { stp: false, forward_delay: 0 });
                actions.push(Action::DeleteOwnedBridge {
                    network: rec.network.clone(),
                    name: rec.name.clone(),
                    snapshot: BridgeSnapshot {
                        mac: l.mac.as_ref().map(format_mac),
                        mtu: l.mtu,
                        stp: b.stp,
                        forward_delay: b.forward_delay,
                        alias: l.alias.clone(),
                        addresses: observed.addrs_of(l.index).map(|a| a.net).collect(),
                        up: l.up,
                    },
                });
            }
            Some(_) => actions.push(Action::ForgetBridge {
                name: rec.name.clone(),
                reason: "a device of that name exists but is not the one hostagent created; left alone".into(),
            }),
            None => actions.push(Action::ForgetBridge { name: rec.name.clone(), reason: "it no longer exists".into() }),
        }
    }
}

fn diff_sysctls(desired: &Desired, observed: &Observed, actions: &mut Vec<Action>) {
    let forwarding = desired.networks.iter().any(|n| n.mode.forwards());
    for (key, to) in sysctl::wanted(desired) {
        let from = observed.sysctls.get(&key).cloned().flatten();
        if from.as_deref() == Some(to.as_str()) {
            continue;
        }
        let record = if key == IP_FORWARD && forwarding && !desired.sysctls.contains_key(IP_FORWARD) {
            SysctlRecord::RememberPrevious
        } else {
            SysctlRecord::Config
        };
        actions.push(Action::SetSysctl { key, from, to, record });
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
                    format!("options vhost_net experimental_zcopytx={}", u8::from(desired.vhost_zcopytx == Some(true)))
                };
                if have.is_some_and(|c| !files::is_ours(c)) {
                    summary.push_str("; replaces a file hostagent did not write");
                }
                actions.push(Action::WriteFile { path, summary, content });
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
        actions.push(Action::ReplaceFirewall { table, networks: desired.networks.len() });
    }
}

/// Observe, refuse conflicts, diff.
pub async fn plan(host: &Host, desired: &Desired) -> Result<Plan, Error> {
    let observed = observe(host, desired).await?;
    conflicts(desired, &observed)?;
    Ok(diff(desired, &observed))
}
