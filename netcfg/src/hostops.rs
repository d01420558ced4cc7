//! The host operations `apply` and `down` perform, one method each, behind one small trait.
//!
//! [`KernelHost`] is the only real implementation (rtnetlink, /proc/sys, files under the root
//! prefix, the `nft` runner), and the root tests drive it in network namespaces. The trait exists
//! so the executor's rollback logic can be checked step by step against a recording fake
//! (`hostops::fake`, tests only): which undo runs after which failure, in what order, and what
//! happens when undo steps fail too, cases a kernel will not fail on cue.

use std::path::Path;

use hwaddr::Mac;
use ipnet::{Ipv4Net, Ipv6Net};

use crate::coexist;
use crate::error::Error;
use crate::files;
use crate::link::{AddrDetail, Link, Netlink, Route};
use crate::model::{Desired, Host};
use crate::nft;
use crate::plan::{self, Observed};
use crate::sysctl;

#[cfg(test)]
pub(crate) mod fake;

/// Every host read and change the executor and teardown make. Paths are already under the root
/// prefix; sysctl keys are dotted (the implementation maps them, see [`Host::sysctl_path`]).
pub(crate) trait HostOps {
    /// The whole observation `diff` needs (see [`plan::observe`]).
    async fn observe(&mut self, host: &Host, desired: &Desired) -> Result<Observed, Error>;
    async fn links(&mut self) -> Result<Vec<Link>, Error>;
    /// A new bridge, down, without alias; returns its ifindex.
    async fn create_bridge(
        &mut self,
        name: &str,
        mac: Option<Mac>,
        mtu: Option<u32>,
        stp: bool,
        forward_delay: u32,
    ) -> Result<u32, Error>;
    async fn set_alias(&mut self, index: u32, alias: &str) -> Result<(), Error>;
    async fn set_mac(&mut self, index: u32, mac: Mac) -> Result<(), Error>;
    async fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), Error>;
    async fn set_stp(&mut self, index: u32, stp: bool, forward_delay: u32) -> Result<(), Error>;
    /// Enslave `index` to `controller`; 0 releases it.
    async fn set_controller(&mut self, index: u32, controller: u32) -> Result<(), Error>;
    async fn set_up(&mut self, index: u32, up: bool) -> Result<(), Error>;
    async fn delete_link(&mut self, index: u32) -> Result<(), Error>;
    async fn add_addr(&mut self, index: u32, net: Ipv4Net) -> Result<(), Error>;
    async fn del_addr(&mut self, index: u32, net: Ipv4Net) -> Result<(), Error>;
    /// Add an IPv6 address, usable at once (`nodad`, see [`Netlink::add_addr6`]).
    async fn add_addr6(&mut self, index: u32, net: Ipv6Net) -> Result<(), Error>;
    async fn del_addr6(&mut self, index: u32, net: Ipv6Net) -> Result<(), Error>;
    /// Every IPv4 address with its details (see [`crate::link::AddrDetail`]).
    async fn addr_details(&mut self) -> Result<Vec<AddrDetail>, Error>;
    /// IPv4 routes outside the local table.
    async fn routes(&mut self) -> Result<Vec<Route>, Error>;
    /// Add an address with its details; `dev` is `index`'s name (for the label).
    async fn add_addr_detail(&mut self, index: u32, dev: &str, a: &AddrDetail)
        -> Result<(), Error>;
    /// Add `route` out of `oif`, or switch the same route over to `oif`.
    async fn replace_route(&mut self, route: &Route, oif: u32) -> Result<(), Error>;
    async fn del_route(&mut self, route: &Route, oif: u32) -> Result<(), Error>;
    fn read_sysctl(&mut self, key: &str) -> Result<Option<String>, Error>;
    fn write_sysctl(&mut self, key: &str, value: &str) -> Result<(), Error>;
    fn read_file(&mut self, path: &Path) -> Result<Option<String>, Error>;
    fn write_file(&mut self, path: &Path, content: &str) -> Result<(), Error>;
    fn remove_file(&mut self, path: &Path) -> Result<(), Error>;
    /// The agent's nft tables as listed now, None when absent (see [`nft::saved_tables`]).
    fn nft_saved(&mut self) -> Result<Option<String>, Error>;
    /// Load an `nft -f` script in one transaction.
    fn nft_load(&mut self, script: &str) -> Result<(), Error>;
    /// Delete the agent's nft tables (a no-op when absent).
    fn nft_delete(&mut self) -> Result<(), Error>;
    /// Foreign firewalls and the agent's marked accepts in them (see [`coexist::observe`]).
    fn firewall_found(&mut self) -> Result<coexist::Found, Error>;
    /// Add one marked accept to a foreign firewall, through its driver.
    fn firewall_add(&mut self, accept: &coexist::Accept) -> Result<(), Error>;
    /// Remove one marked accept (already gone is fine).
    fn firewall_remove(&mut self, accept: &coexist::Accept) -> Result<(), Error>;

    async fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, Error> {
        Ok(self.links().await?.into_iter().find(|l| l.name == name))
    }
}

/// The real host: the caller's network namespace, files and sysctls under `host`'s root.
pub(crate) struct KernelHost {
    host: Host,
    /// The netlink connection, or why it could not be opened: `down` still removes files,
    /// sysctls and the nft table without it, and reports the netlink error with the rest.
    nl: Result<Netlink, String>,
}

impl KernelHost {
    pub(crate) fn connect(host: &Host) -> KernelHost {
        KernelHost {
            host: host.clone(),
            nl: Netlink::connect().map_err(|e| e.to_string()),
        }
    }

    fn nl(&self) -> Result<&Netlink, Error> {
        self.nl.as_ref().map_err(|e| Error::Netlink(e.clone()))
    }
}

impl HostOps for KernelHost {
    async fn observe(&mut self, host: &Host, desired: &Desired) -> Result<Observed, Error> {
        plan::observe_with(self.nl()?, host, desired).await
    }
    async fn links(&mut self) -> Result<Vec<Link>, Error> {
        self.nl()?.links().await
    }
    async fn create_bridge(
        &mut self,
        name: &str,
        mac: Option<Mac>,
        mtu: Option<u32>,
        stp: bool,
        forward_delay: u32,
    ) -> Result<u32, Error> {
        self.nl()?
            .create_bridge(name, mac, mtu, stp, forward_delay)
            .await
    }
    async fn set_alias(&mut self, index: u32, alias: &str) -> Result<(), Error> {
        self.nl()?.set_alias(index, alias).await
    }
    async fn set_mac(&mut self, index: u32, mac: Mac) -> Result<(), Error> {
        self.nl()?.set_mac(index, mac).await
    }
    async fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), Error> {
        self.nl()?.set_mtu(index, mtu).await
    }
    async fn set_stp(&mut self, index: u32, stp: bool, forward_delay: u32) -> Result<(), Error> {
        self.nl()?.set_stp(index, stp, forward_delay).await
    }
    async fn set_controller(&mut self, index: u32, controller: u32) -> Result<(), Error> {
        self.nl()?.set_controller(index, controller).await
    }
    async fn set_up(&mut self, index: u32, up: bool) -> Result<(), Error> {
        self.nl()?.set_up(index, up).await
    }
    async fn delete_link(&mut self, index: u32) -> Result<(), Error> {
        self.nl()?.delete_link(index).await
    }
    async fn add_addr(&mut self, index: u32, net: Ipv4Net) -> Result<(), Error> {
        self.nl()?.add_addr(index, net).await
    }
    async fn del_addr(&mut self, index: u32, net: Ipv4Net) -> Result<(), Error> {
        self.nl()?.del_addr(index, net).await
    }
    async fn add_addr6(&mut self, index: u32, net: Ipv6Net) -> Result<(), Error> {
        self.nl()?.add_addr6(index, net).await
    }
    async fn del_addr6(&mut self, index: u32, net: Ipv6Net) -> Result<(), Error> {
        self.nl()?.del_addr6(index, net).await
    }
    async fn addr_details(&mut self) -> Result<Vec<AddrDetail>, Error> {
        self.nl()?.addr_details().await
    }
    async fn routes(&mut self) -> Result<Vec<Route>, Error> {
        self.nl()?.routes().await
    }
    async fn add_addr_detail(
        &mut self,
        index: u32,
        dev: &str,
        a: &AddrDetail,
    ) -> Result<(), Error> {
        self.nl()?.add_addr_detail(index, dev, a).await
    }
    async fn replace_route(&mut self, route: &Route, oif: u32) -> Result<(), Error> {
        self.nl()?.replace_route(route, oif).await
    }
    async fn del_route(&mut self, route: &Route, oif: u32) -> Result<(), Error> {
        self.nl()?.del_route(route, oif).await
    }
    fn read_sysctl(&mut self, key: &str) -> Result<Option<String>, Error> {
        sysctl::read(&self.host, key)
    }
    fn write_sysctl(&mut self, key: &str, value: &str) -> Result<(), Error> {
        sysctl::write(&self.host, key, value)
    }
    fn read_file(&mut self, path: &Path) -> Result<Option<String>, Error> {
        files::read_opt(path)
    }
    fn write_file(&mut self, path: &Path, content: &str) -> Result<(), Error> {
        files::write_atomic(path, content.as_bytes())
    }
    fn remove_file(&mut self, path: &Path) -> Result<(), Error> {
        files::remove_opt(path)
    }
    fn nft_saved(&mut self) -> Result<Option<String>, Error> {
        nft::saved_tables()
    }
    fn nft_load(&mut self, script: &str) -> Result<(), Error> {
        nft::load(script)
    }
    fn nft_delete(&mut self) -> Result<(), Error> {
        nft::delete()
    }
    fn firewall_found(&mut self) -> Result<coexist::Found, Error> {
        coexist::observe(&self.host)
    }
    fn firewall_add(&mut self, accept: &coexist::Accept) -> Result<(), Error> {
        coexist::apply(&self.host, accept)
    }
    fn firewall_remove(&mut self, accept: &coexist::Accept) -> Result<(), Error> {
        coexist::remove(&self.host, accept)
    }
}
