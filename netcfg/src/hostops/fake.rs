//! A recording fake of [`HostOps`] for the executor's and teardown's unit tests: a small model of
//! links, addresses, sysctls, files and the nft tables, a log of every change in order, and
//! failures on cue.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hwaddr::Mac;
use ipnet::{Ipv4Net, Ipv6Net};

use super::HostOps;
use crate::coexist;
use crate::error::Error;
use crate::files;
use crate::link::{effective_forward_delay, Addr, Addr6, AddrDetail, BridgeInfo, Link, Route};
use crate::model::{Desired, Host};
use crate::nft;
use crate::owned::Owned;
use crate::plan::{FirewallState, Observed, ObservedFile};
use crate::sysctl;

#[derive(Debug, Clone, Default)]
pub(crate) struct FakeHost {
    pub state: FakeState,
    /// The ifindex the next created bridge gets.
    pub next_index: u32,
    /// Every change made, in order, one line each ("set_mtu 20 1500"); a change that failed on
    /// cue is logged as "FAILED <line>".
    pub log: Vec<String>,
    /// Lines that fail: a change whose log line is one of these, or a read named here
    /// ("observe", "links", "nft_saved", "read_file <path>"), returns an error.
    pub fail: Vec<String>,
    /// How many times `observe` ran.
    pub observations: usize,
}

/// What the fake host holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FakeState {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub addrs6: Vec<Addr6>,
    pub sysctls: BTreeMap<String, String>,
    pub files: BTreeMap<PathBuf, String>,
    /// The script that made our nft tables (what `nft_saved` lists), None when absent.
    pub nft: Option<String>,
    /// Address details by (index, net), where an address has more than its net.
    pub details: Vec<AddrDetail>,
    pub routes: Vec<Route>,
    /// The agent's marked accepts in foreign firewalls.
    pub accepts: Vec<coexist::Accept>,
    /// Blockers and wanted accepts the fake's observe reports (what a real ruleset would show).
    pub firewalls: coexist::Found,
}

impl FakeHost {
    pub(crate) fn new() -> FakeHost {
        FakeHost {
            next_index: 20,
            ..FakeHost::default()
        }
    }

    /// The state, links and addresses sorted by ifindex, for a test to compare before and after.
    pub(crate) fn snapshot(&self) -> FakeState {
        let mut state = self.state.clone();
        state.addrs.sort_by_key(|a| (a.index, a.net));
        state.links.sort_by_key(|l| l.index);
        state
    }

    /// owned.json as the fake holds it for `host`, None when there is none.
    pub(crate) fn owned(&self, host: &Host) -> Option<Owned> {
        let path = Owned::path(host);
        let text = self.state.files.get(&path)?;
        Some(Owned::parse(&path, Some(text)).expect("the fake's owned.json parses"))
    }

    /// Every address with its details (plain ones: permanent, no broadcast or label).
    fn details(&self) -> Vec<AddrDetail> {
        self.state
            .addrs
            .iter()
            .map(|a| {
                self.state
                    .details
                    .iter()
                    .find(|d| d.index == a.index && d.net == a.net)
                    .cloned()
                    .unwrap_or(AddrDetail::plain(a.index, a.net))
            })
            .collect()
    }

    /// Log `line` and fail if it is cued.
    fn change(&mut self, line: String) -> Result<(), Error> {
        if self.fail.contains(&line) {
            self.log.push(format!("FAILED {line}"));
            return Err(Error::Netlink(format!("fake: {line} failed")));
        }
        self.log.push(line);
        Ok(())
    }

    fn read(&self, what: &str) -> Result<(), Error> {
        if self.fail.iter().any(|f| f == what) {
            return Err(Error::Netlink(format!("fake: {what} failed")));
        }
        Ok(())
    }

    fn link_mut(&mut self, index: u32) -> Result<&mut Link, Error> {
        self.state
            .links
            .iter_mut()
            .find(|l| l.index == index)
            .ok_or_else(|| Error::Netlink(format!("fake: no link {index}")))
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

impl HostOps for FakeHost {
    async fn observe(&mut self, host: &Host, desired: &Desired) -> Result<Observed, Error> {
        self.read("observe")?;
        self.observations += 1;
        let owned_path = Owned::path(host);
        let owned = Owned::parse(
            &owned_path,
            self.state.files.get(&owned_path).map(String::as_str),
        )?;
        let mut sysctls = BTreeMap::new();
        let keys = sysctl::wanted(desired).into_iter().map(|(k, _)| k);
        for k in keys.chain(owned.sysctls.iter().map(|c| c.key.clone())) {
            let v = self.state.sysctls.get(&k).cloned();
            sysctls.insert(k, v);
        }
        let files = files::desired_files(desired)
            .into_iter()
            .map(|(path, _)| ObservedFile {
                content: self.state.files.get(&host.path(&path)).cloned(),
                path,
            })
            .collect();
        let firewall = FirewallState {
            exists: self.state.nft.is_some(),
            matches: self.state.nft.as_deref() == Some(nft::render(desired).as_str()),
        };
        Ok(Observed {
            links: self.state.links.clone(),
            addrs: self.state.addrs.clone(),
            addrs6: self.state.addrs6.clone(),
            sysctls,
            files,
            firewall,
            owned,
            owned_path,
            vhost_live: None,
            firewalls: coexist::Found {
                ours: self.state.accepts.clone(),
                ..self.state.firewalls.clone()
            },
            addr_details: self.details(),
            routes: self.state.routes.clone(),
            managers: Vec::new(),
            ra_uplinks: Vec::new(),
        })
    }

    async fn links(&mut self) -> Result<Vec<Link>, Error> {
        self.read("links")?;
        Ok(self.state.links.clone())
    }

    async fn create_bridge(
        &mut self,
        name: &str,
        mac: Option<Mac>,
        mtu: Option<u32>,
        stp: bool,
        forward_delay: u32,
    ) -> Result<u32, Error> {
        let mac_text = mac.map_or_else(|| "(kernel's)".to_string(), |m| m.to_string());
        self.change(format!(
            "create_bridge {name} mac {mac_text} mtu {} stp {} delay {forward_delay}",
            mtu.map_or_else(|| "default".to_string(), |m| m.to_string()),
            on_off(stp)
        ))?;
        if self.state.links.iter().any(|l| l.name == name) {
            return Err(Error::Netlink(format!("fake: {name} exists")));
        }
        let index = self.next_index;
        self.next_index += 1;
        self.state.links.push(Link {
            index,
            name: name.to_string(),
            mac: Some(mac.unwrap_or(Mac([2, 0, 0, 0, 0, index as u8]))),
            mtu: mtu.unwrap_or(1500),
            up: false,
            alias: None,
            kind: Some("bridge".into()),
            controller: None,
            bridge: Some(BridgeInfo {
                stp,
                forward_delay: effective_forward_delay(stp, forward_delay),
            }),
        });
        Ok(index)
    }

    async fn set_alias(&mut self, index: u32, alias: &str) -> Result<(), Error> {
        self.change(format!("set_alias {index} {alias}"))?;
        self.link_mut(index)?.alias = (!alias.is_empty()).then(|| alias.to_string());
        Ok(())
    }

    async fn set_mac(&mut self, index: u32, mac: Mac) -> Result<(), Error> {
        self.change(format!("set_mac {index} {mac}"))?;
        self.link_mut(index)?.mac = Some(mac);
        Ok(())
    }

    async fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), Error> {
        self.change(format!("set_mtu {index} {mtu}"))?;
        self.link_mut(index)?.mtu = mtu;
        Ok(())
    }

    async fn set_stp(&mut self, index: u32, stp: bool, forward_delay: u32) -> Result<(), Error> {
        self.change(format!("set_stp {index} {} {forward_delay}", on_off(stp)))?;
        self.link_mut(index)?.bridge = Some(BridgeInfo {
            stp,
            forward_delay: effective_forward_delay(stp, forward_delay),
        });
        Ok(())
    }

    async fn set_controller(&mut self, index: u32, controller: u32) -> Result<(), Error> {
        self.change(format!("set_controller {index} {controller}"))?;
        self.link_mut(index)?.controller = (controller != 0).then_some(controller);
        Ok(())
    }

    async fn set_up(&mut self, index: u32, up: bool) -> Result<(), Error> {
        self.change(format!("set_up {index} {}", if up { "up" } else { "down" }))?;
        self.link_mut(index)?.up = up;
        Ok(())
    }

    async fn delete_link(&mut self, index: u32) -> Result<(), Error> {
        self.change(format!("delete_link {index}"))?;
        if let Some(l) = self.state.links.iter().find(|l| l.index == index) {
            let own = format!("net.ipv6.conf.{}.", l.name);
            self.state.sysctls.retain(|k, _| !k.starts_with(&own));
        }
        self.state.links.retain(|l| l.index != index);
        self.state.addrs.retain(|a| a.index != index);
        self.state.addrs6.retain(|a| a.index != index);
        self.state.details.retain(|a| a.index != index);
        self.state.routes.retain(|r| r.oif != Some(index));
        for l in self
            .state
            .links
            .iter_mut()
            .filter(|l| l.controller == Some(index))
        {
            l.controller = None;
        }
        Ok(())
    }

    async fn add_addr(&mut self, index: u32, net: Ipv4Net) -> Result<(), Error> {
        self.change(format!("add_addr {index} {net}"))?;
        self.state.addrs.push(Addr { index, net });
        Ok(())
    }

    async fn del_addr(&mut self, index: u32, net: Ipv4Net) -> Result<(), Error> {
        self.change(format!("del_addr {index} {net}"))?;
        self.state
            .addrs
            .retain(|a| !(a.index == index && a.net == net));
        self.state
            .details
            .retain(|a| !(a.index == index && a.net == net));

        Ok(())
    }

    async fn add_addr6(&mut self, index: u32, net: Ipv6Net) -> Result<(), Error> {
        self.change(format!("add_addr6 {index} {net}"))?;
        self.state.addrs6.push(Addr6 {
            index,
            net,
            link_local: false,
        });
        Ok(())
    }

    async fn del_addr6(&mut self, index: u32, net: Ipv6Net) -> Result<(), Error> {
        self.change(format!("del_addr6 {index} {net}"))?;
        self.state
            .addrs6
            .retain(|a| !(a.index == index && a.net == net));
        Ok(())
    }

    async fn addr_details(&mut self) -> Result<Vec<AddrDetail>, Error> {
        self.read("addr_details")?;
        Ok(self.details())
    }

    async fn routes(&mut self) -> Result<Vec<Route>, Error> {
        self.read("routes")?;
        Ok(self.state.routes.clone())
    }

    async fn add_addr_detail(
        &mut self,
        index: u32,
        dev: &str,
        a: &AddrDetail,
    ) -> Result<(), Error> {
        self.change(format!("add_addr {index} {}", a.net))?;
        let _ = dev;
        self.state.addrs.push(Addr { index, net: a.net });
        self.state
            .details
            .retain(|d| !(d.index == index && d.net == a.net));
        let detail = AddrDetail { index, ..a.clone() };
        // Plain addresses are kept as plain `addrs` only, as a test sets them up.
        if detail != AddrDetail::plain(index, a.net) {
            self.state.details.push(detail);
        }
        Ok(())
    }

    async fn replace_route(&mut self, route: &Route, oif: u32) -> Result<(), Error> {
        self.change(format!("replace_route {} {oif}", route.describe("-")))?;
        self.state.routes.retain(|r| !r.same_route(route));
        self.state.routes.push(Route {
            oif: Some(oif),
            ..route.clone()
        });
        Ok(())
    }

    async fn del_route(&mut self, route: &Route, oif: u32) -> Result<(), Error> {
        self.change(format!("del_route {} {oif}", route.describe("-")))?;
        self.state
            .routes
            .retain(|r| !(r.same_route(route) && r.oif == Some(oif)));
        Ok(())
    }

    fn read_sysctl(&mut self, key: &str) -> Result<Option<String>, Error> {
        self.read(&format!("read_sysctl {key}"))?;
        Ok(self.state.sysctls.get(key).cloned())
    }

    fn write_sysctl(&mut self, key: &str, value: &str) -> Result<(), Error> {
        self.change(format!("write_sysctl {key} {value}"))?;
        self.state
            .sysctls
            .insert(key.to_string(), value.to_string());
        Ok(())
    }

    fn read_file(&mut self, path: &Path) -> Result<Option<String>, Error> {
        self.read(&format!("read_file {}", path.display()))?;
        Ok(self.state.files.get(path).cloned())
    }

    fn write_file(&mut self, path: &Path, content: &str) -> Result<(), Error> {
        self.change(format!("write_file {}", path.display()))?;
        self.state
            .files
            .insert(path.to_path_buf(), content.to_string());
        Ok(())
    }

    fn remove_file(&mut self, path: &Path) -> Result<(), Error> {
        self.change(format!("remove_file {}", path.display()))?;
        self.state.files.remove(path);
        Ok(())
    }

    fn nft_saved(&mut self) -> Result<Option<String>, Error> {
        self.read("nft_saved")?;
        Ok(self.state.nft.clone())
    }

    fn nft_load(&mut self, script: &str) -> Result<(), Error> {
        // A restore script carries the saved listing after its fixed preamble.
        match script.strip_prefix(&nft::restore_script("")) {
            Some(saved) => {
                self.change(format!("nft_load restore {saved}"))?;
                self.state.nft = Some(saved.to_string());
            }
            None => {
                self.change("nft_load".into())?;
                self.state.nft = Some(script.to_string());
            }
        }
        Ok(())
    }

    fn nft_delete(&mut self) -> Result<(), Error> {
        self.change("nft_delete".into())?;
        self.state.nft = None;
        Ok(())
    }

    fn firewall_found(&mut self) -> Result<coexist::Found, Error> {
        self.read("firewall_found")?;
        Ok(coexist::Found {
            ours: self.state.accepts.clone(),
            ..self.state.firewalls.clone()
        })
    }

    fn firewall_add(&mut self, a: &coexist::Accept) -> Result<(), Error> {
        self.change(format!("firewall_add {} {} {}", a.table, a.chain, a.key))?;
        if !self.state.accepts.iter().any(|o| o.same_place_and_rule(a)) {
            self.state.accepts.push(a.clone());
        }
        Ok(())
    }

    fn firewall_remove(&mut self, a: &coexist::Accept) -> Result<(), Error> {
        self.change(format!("firewall_remove {} {} {}", a.table, a.chain, a.key))?;
        self.state.accepts.retain(|o| !o.same_place_and_rule(a));
        Ok(())
    }
}
