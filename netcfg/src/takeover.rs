//! Bridging the host's only uplink: a `mode = "bridge"` network whose port carries IPv4
//! addresses takes them over, with the routes through the port (default route included, metric,
//! source, protocol kept), and `down` gives them back.
//!
//! The order keeps an established TCP session over the port alive (an SSH session to the host):
//! 1. the bridge is created with the port's MAC (the upstream's ARP caches, DHCP reservations and
//!    switch port security keep seeing the same address) and set up, still without ports;
//! 2. the port is enslaved. STP must be off for this: with STP on the port would listen and
//!    learn for 2 x forward_delay (at least 4 s) and drop every frame meanwhile, and a host
//!    bridge sending BPDUs out of its uplink can trip BPDU guard on the upstream switch and shut
//!    the host's only port down. With STP off the port forwards at once; frames arriving on it
//!    go to the bridge, and since an address is the host's whatever device carries it, the
//!    session's packets are still delivered, while its replies still leave by the old route;
//! 3. in one quick sequence of netlink calls, without looking at the host in between: the
//!    addresses are added to the bridge (the port keeps them for now, so there is never a moment
//!    without them), each route is replaced by the same route through the bridge (NLM_F_REPLACE
//!    switches it over in one step), and only then are the addresses removed from the port,
//!    which takes the port's own subnet routes with them.
//!
//! Every step has an undo, so a failure puts the port back as it was. The record in owned.json
//! (`takeovers`) says what moved: drift repair puts lost addresses and routes back on the bridge,
//! and `down` moves them back to the port in the reverse order (addresses on the port first,
//! routes switched back, addresses off the bridge, then the bridge goes).
//!
//! A port another network manager runs (NetworkManager, systemd-networkd) is refused: it would
//! put the address back on the port, or take the bridge's away, on its next event. The hint
//! says what to configure there instead. (The agent does not write NetworkManager or networkd
//! files itself: that manager would then own the bridge, and the agent's ownership and drift
//! repair would fight it.) A port whose address has a lease running out (a DHCP client on it)
//! is refused for the same reason.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::hostops::HostOps;
use crate::link::{AddrDetail, Link, Route, PROTO_KERNEL};
use crate::model::{Host, Mode, NetworkSpec};
use crate::owned::Takeover;
use crate::plan::Observed;

/// Who else configures a host port, and how we know.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Manager {
    pub port: String,
    pub name: &'static str,
    /// The file that says so.
    pub evidence: String,
    /// What to configure in that manager instead.
    pub hint: String,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn nm_hint(port: &str) -> String {
    format!(
        "let NetworkManager make the bridge: /etc/NetworkManager/system-connections/br0.nmconnection with \
         `[connection] id=br0 type=bridge interface-name=br0` `[bridge] stp=false` `[ipv4] method=auto` \
         (or your static address), and {port}.nmconnection with `[connection] id={port} type=ethernet \
         interface-name={port} controller=br0 port-type=bridge`, then `nmcli connection reload && nmcli \
         connection up br0`; give guests that bridge (virt-install --network bridge=br0) and remove this \
         network's `interfaces`. Or make {port} unmanaged (`[keyfile] unmanaged-devices=interface-name:{port}` \
         in /etc/NetworkManager/conf.d/) and let hostagent take it over"
    )
}

fn networkd_hint(port: &str) -> String {
    format!(
        "let systemd-networkd make the bridge: /etc/systemd/network/br0.netdev `[NetDev] Name=br0 Kind=bridge` \
         `[Bridge] STP=no`, {port}.network `[Match] Name={port}` `[Network] Bridge=br0`, and br0.network \
         `[Match] Name=br0` with the address or DHCP={port}'s .network had; `networkctl reload`; give guests \
         that bridge and remove this network's `interfaces`. Or stop networkd managing {port} (delete its \
         .network file, or `Unmanaged=yes` in a [Link] section) and let hostagent take it over"
    )
}

/// NetworkManager keyfiles that bind a connection to `port` (`interface-name=PORT`).
fn nm_keyfile(host: &Host, port: &str) -> Option<PathBuf> {
    for dir in [
        "/etc/NetworkManager/system-connections",
        "/run/NetworkManager/system-connections",
    ] {
        let Ok(rd) = std::fs::read_dir(host.path(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let text = read(&e.path()).unwrap_or_default();
            if text
                .lines()
                .any(|l| l.trim() == format!("interface-name={port}"))
            {
                return Some(PathBuf::from(dir).join(e.file_name()));
            }
        }
    }
    None
}

/// Does NetworkManager or systemd-networkd manage `port`? Read from their state files under
/// the root prefix (not `nmcli`/`networkctl`: they ask the daemons over D-Bus, which cannot be
/// pointed at a prefix and does not know network namespaces).
pub fn managed_by(host: &Host, port: &Link) -> Option<Manager> {
    let nm_dev = format!("/run/NetworkManager/devices/{}", port.index);
    if let Some(text) = read(&host.path(&nm_dev)) {
        if text.lines().any(|l| l.trim() == "managed=true") {
            return Some(Manager {
                port: port.name.clone(),
                name: "NetworkManager",
                evidence: format!("{nm_dev} says managed=true"),
                hint: nm_hint(&port.name),
            });
        }
    }
    let nd_link = format!("/run/systemd/netif/links/{}", port.index);
    if let Some(text) = read(&host.path(&nd_link)) {
        let state = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("ADMIN_STATE="))
            .unwrap_or("");
        if matches!(state, "configured" | "configuring") {
            let file = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("NETWORK_FILE="))
                .map(|f| format!(", from {f}"))
                .unwrap_or_default();
            return Some(Manager {
                port: port.name.clone(),
                name: "systemd-networkd",
                evidence: format!("{nd_link} says ADMIN_STATE={state}{file}"),
                hint: networkd_hint(&port.name),
            });
        }
    }
    nm_keyfile(host, &port.name).map(|f| Manager {
        port: port.name.clone(),
        name: "NetworkManager",
        evidence: format!("{} names interface-name={}", f.display(), port.name),
        hint: nm_hint(&port.name),
    })
}

/// The IPv4 addresses on a link, in the kernel's order (primary first).
pub fn addrs_on(observed: &Observed, index: u32) -> Vec<AddrDetail> {
    observed
        .addr_details
        .iter()
        .filter(|a| a.index == index)
        .cloned()
        .collect()
}

/// The routes through a link that an address does not bring along by itself.
pub fn routes_via(observed: &Observed, index: u32) -> Vec<Route> {
    observed
        .routes
        .iter()
        .filter(|r| r.oif == Some(index) && r.protocol != PROTO_KERNEL)
        .cloned()
        .collect()
}

/// The ports of a bridge-mode network that are (or are to be) taken over: recorded as taken
/// over, or carrying IPv4 addresses now.
pub fn ports<'a>(n: &'a NetworkSpec, observed: &'a Observed) -> Vec<(&'a str, Option<&'a Link>)> {
    if n.mode != Mode::Bridge {
        return Vec::new();
    }
    n.interfaces
        .iter()
        .filter_map(|p| {
            let link = observed.link(p);
            let recorded = observed.owned.takeover(&n.name, p).is_some();
            let carries = link.is_some_and(|l| !addrs_on(observed, l.index).is_empty());
            (recorded || carries).then_some((p.as_str(), link))
        })
        .collect()
}

/// The MAC the network's bridge must carry: its first taken-over port's (as recorded, else the
/// port's own), or the configured one.
pub fn bridge_mac(n: &NetworkSpec, observed: &Observed) -> hwaddr::Mac {
    for (p, link) in ports(n, observed) {
        let recorded = observed.owned.takeover(&n.name, p).and_then(|t| t.port_mac);
        if let Some(mac) = recorded.or(link.and_then(|l| l.mac)) {
            return mac;
        }
    }
    n.mac
}

/// Addresses the bridge keeps although the config does not name them: those taken over.
pub fn kept_addresses(n: &NetworkSpec, observed: &Observed) -> Vec<ipnet::Ipv4Net> {
    observed
        .owned
        .takeovers
        .iter()
        .filter(|t| t.network == n.name)
        .flat_map(|t| t.addresses.iter().map(|a| a.net))
        .collect()
}

/// Why this takeover cannot be done safely, if it cannot.
pub fn refusal(n: &NetworkSpec, port: &Link, observed: &Observed) -> Option<String> {
    if n.stp {
        return Some(format!(
            "bridge {} would take over {}'s addresses, which needs stp = false: with STP the port \
             drops all traffic for at least 4 s after joining, and BPDUs sent up the host's uplink \
             can make the upstream switch shut the port down; add stp = false to this network",
            n.bridge, port.name
        ));
    }
    for a in addrs_on(observed, port.index) {
        if !a.permanent {
            return Some(format!(
                "{} on {} is dynamic ({} s left: a DHCP client runs on {}); that client would put \
                 it back on {} or lose it: let the bridge get the lease instead (run the DHCP \
                 client on {}, e.g. `iface {} inet dhcp` with `bridge_ports {}` in \
                 /etc/network/interfaces), or give {} a static address",
                a.net,
                port.name,
                a.valid_secs,
                port.name,
                port.name,
                n.bridge,
                n.bridge,
                port.name,
                port.name
            ));
        }
    }
    for r in routes_via(observed, port.index) {
        if let Some(why) = &r.unmovable {
            return Some(format!(
                "route {} cannot be moved to {}: {why}; move it yourself after the takeover, or \
                 remove it first",
                r.describe(&port.name),
                n.bridge
            ));
        }
    }
    None
}

/// Move what a takeover put on `bridge` (its ifindex; None when the bridge is gone, and with it
/// what it carried) back to the port: the addresses onto the port first, each route switched
/// back, then the addresses off the bridge. Addresses and routes the port has again already
/// are left. Returns what was given back, as a sentence.
pub(crate) async fn give_back<O: HostOps>(
    ops: &mut O,
    t: &Takeover,
    bridge: Option<u32>,
) -> Result<String, Error> {
    let port = ops
        .link_by_name(&t.port)
        .await?
        .ok_or_else(|| Error::Port {
            network: t.network.clone(),
            port: t.port.clone(),
            problem: "is gone: its addresses cannot be given back".into(),
        })?;
    let details = ops.addr_details().await?;
    let routes = ops.routes().await?;
    let on = |index: u32| -> Vec<AddrDetail> {
        details
            .iter()
            .filter(|a| a.index == index)
            .cloned()
            .collect()
    };
    let via = |index: u32| -> Vec<Route> {
        routes
            .iter()
            .filter(|r| r.oif == Some(index) && r.protocol != PROTO_KERNEL)
            .cloned()
            .collect()
    };
    let (addrs, moved) = match bridge {
        // What the bridge carries now (an admin's later addition included), in the recorded
        // form where the record has it.
        Some(b) => {
            let live: Vec<AddrDetail> = on(b)
                .into_iter()
                .map(|a| {
                    t.addresses
                        .iter()
                        .find(|r| r.net == a.net)
                        .cloned()
                        .unwrap_or(a)
                })
                .collect();
            (live, via(b))
        }
        None => (t.addresses.clone(), t.routes.clone()),
    };
    let port_has = on(port.index);
    let port_routes = via(port.index);
    let mut what = Vec::new();
    for a in &addrs {
        if !port_has.iter().any(|x| x.net == a.net) {
            ops.add_addr_detail(port.index, &port.name, a).await?;
        }
        what.push(a.net.to_string());
    }
    for r in &moved {
        if !port_routes.iter().any(|x| x.same_route(r)) {
            ops.replace_route(r, port.index).await?;
        }
        what.push(format!("route {}", r.describe(&port.name)));
    }
    if let Some(b) = bridge {
        for a in addrs.iter().rev() {
            ops.del_addr(b, a.net).await?;
        }
    }
    Ok(format!("{} back on {}", what.join(", "), t.port))
}

#[cfg(test)]
mod tests;
