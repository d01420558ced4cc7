//! Links and IPv4/IPv6 addresses through rtnetlink: the dumps `observe` reads and the few changes
//! `apply` makes. Every call works on the caller's network namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use hwaddr::Mac;
use ipnet::{Ipv4Net, Ipv6Net};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    BridgeStpState, InfoBridge, InfoData, InfoKind, LinkAttribute, LinkFlags,
    LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteMetric, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Kernel bridge timers are in clock_t (USER_HZ = 100 on Linux).
const CS_PER_SECOND: u32 = 100;

/// The forward delay the kernel keeps, in seconds: with kernel STP on it clamps the delay to
/// 2..=30 s (br_stp_start), so "STP on, delay 0" reads back as 2 s.
pub fn effective_forward_delay(stp: bool, delay: u32) -> u32 {
    if stp {
        delay.clamp(2, 30)
    } else {
        delay
    }
}

/// Bridge-specific state of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BridgeInfo {
    pub stp: bool,
    /// Seconds (rounded down from the kernel's centiseconds).
    pub forward_delay: u32,
}

/// One link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub up: bool,
    pub alias: Option<String>,
    /// `IFLA_INFO_KIND` ("bridge", "veth", ...); None for physical devices and loopback.
    pub kind: Option<String>,
    /// Index of the bridge (or bond) this link is enslaved to.
    pub controller: Option<u32>,
    pub bridge: Option<BridgeInfo>,
}

/// One IPv4 address on a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Addr {
    pub index: u32,
    pub net: Ipv4Net,
}

/// One IPv6 address on a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Addr6 {
    pub index: u32,
    pub net: Ipv6Net,
    /// The kernel's own link-local address (fe80::/10): never the agent's to add or remove.
    pub link_local: bool,
}

/// An IPv4 address as the kernel holds it, with what moving it elsewhere must keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrDetail {
    #[serde(skip)]
    pub index: u32,
    pub net: Ipv4Net,
    /// The broadcast address, when the address has one (`ip addr add ... brd +`).
    pub broadcast: Option<Ipv4Addr>,
    /// The label's part after the device name (`eth0:1` → `:1`), when it has one.
    pub label_suffix: Option<String>,
    /// `noprefixroute`: no subnet route comes with it.
    pub noprefixroute: bool,
    /// Valid forever (not from a DHCP client with a lease running out). Not recorded: only
    /// permanent addresses are ever taken over.
    #[serde(skip, default = "permanent")]
    pub permanent: bool,
    /// Seconds of validity left when not permanent.
    #[serde(skip, default = "forever")]
    pub valid_secs: u32,
}

fn permanent() -> bool {
    true
}

fn forever() -> u32 {
    u32::MAX
}

impl AddrDetail {
    /// A plain address: no broadcast, label or flags, valid forever.
    pub fn plain(index: u32, net: Ipv4Net) -> AddrDetail {
        AddrDetail {
            index,
            net,
            broadcast: None,
            label_suffix: None,
            noprefixroute: false,
            permanent: true,
            valid_secs: u32::MAX,
        }
    }
}

/// An IPv4 route as the kernel holds it (main and other tables; never the `local` table, whose
/// routes follow the addresses), with what moving it to another device must keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub table: u32,
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// The device (ifindex) it goes out of; replaced by the target's when moved.
    #[serde(skip)]
    pub oif: Option<u32>,
    pub metric: Option<u32>,
    pub protocol: u8,
    pub scope: u8,
    pub kind: u8,
    pub prefsrc: Option<Ipv4Addr>,
    pub onlink: bool,
    pub tos: u8,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    /// Why the route cannot be moved (several next hops, a nexthop object, encapsulation,
    /// metrics other than mtu/advmss); None for an ordinary route.
    #[serde(skip)]
    pub unmovable: Option<String>,
}

/// RTPROT_KERNEL: a route the kernel made for an address; it follows the address.
pub const PROTO_KERNEL: u8 = 2;
const TABLE_MAIN: u32 = 254;
const TABLE_LOCAL: u32 = 255;

fn proto_name(p: u8) -> String {
    match p {
        0 => "unspec".into(),
        1 => "redirect".into(),
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        16 => "dhcp".into(),
        n => n.to_string(),
    }
}

impl Route {
    /// The route as `ip route` would show it, on device `dev`.
    pub fn describe(&self, dev: &str) -> String {
        let mut s = if self.dst.prefix_len() == 0 {
            "default".to_string()
        } else {
            self.dst.to_string()
        };
        if let Some(g) = self.gateway {
            s.push_str(&format!(" via {g}"));
        }
        s.push_str(&format!(" dev {dev}"));
        if self.table != TABLE_MAIN {
            s.push_str(&format!(" table {}", self.table));
        }
        s.push_str(&format!(" proto {}", proto_name(self.protocol)));
        if self.scope == 253 {
            s.push_str(" scope link");
        }
        if let Some(src) = self.prefsrc {
            s.push_str(&format!(" src {src}"));
        }
        if let Some(m) = self.metric {
            s.push_str(&format!(" metric {m}"));
        }
        if self.onlink {
            s.push_str(" onlink");
        }
        if let Some(m) = self.mtu {
            s.push_str(&format!(" mtu {m}"));
        }
        if let Some(m) = self.advmss {
            s.push_str(&format!(" advmss {m}"));
        }
        s
    }

    /// The same route (destination, table, metric, gateway and the rest), whatever device.
    pub fn same_route(&self, other: &Route) -> bool {
        Route {
            oif: None,
            ..self.clone()
        } == Route {
            oif: None,
            ..other.clone()
        }
    }
}

fn nl(what: &str, e: rtnetlink::Error) -> Error {
    Error::Netlink(format!("{what}: {e}"))
}

/// A netlink connection (its reader task runs on the current tokio runtime).
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    pub fn connect() -> Result<Netlink, Error> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::Netlink(format!("opening a netlink socket: {e}")))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn links(&self) -> Result<Vec<Link>, Error> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl("dumping links", e))?;
        Ok(msgs.iter().map(parse_link).collect())
    }

    async fn addr_messages(&self) -> Result<Vec<AddressMessage>, Error> {
        self.handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl("dumping addresses", e))
    }

    pub async fn addrs(&self) -> Result<Vec<Addr>, Error> {
        let msgs = self.addr_messages().await?;
        Ok(msgs.iter().filter_map(parse_addr).collect())
    }

    /// Every IPv6 address.
    pub async fn addrs6(&self) -> Result<Vec<Addr6>, Error> {
        let msgs = self.addr_messages().await?;
        Ok(msgs.iter().filter_map(parse_addr6).collect())
    }

    /// Every IPv4 address with its details (see [`AddrDetail`]).
    pub async fn addr_details(&self) -> Result<Vec<AddrDetail>, Error> {
        let msgs = self.addr_messages().await?;
        let links = self.links().await?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                let name = links
                    .iter()
                    .find(|l| l.index == m.header.index)
                    .map(|l| l.name.as_str());
                parse_addr_detail(m, name.unwrap_or(""))
            })
            .collect())
    }

    /// The devices an IPv6 default route learnt from router advertisements goes out of (the
    /// host configures itself by SLAAC there).
    pub async fn ra_default_route_devices(&self) -> Result<Vec<u32>, Error> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl("dumping IPv6 routes", e))?;
        Ok(msgs
            .iter()
            .filter(|m| {
                m.header.address_family == AddressFamily::Inet6
                    && m.header.destination_prefix_length == 0
                    && m.header.protocol == RouteProtocol::Ra
            })
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                })
            })
            .collect())
    }

    /// Every IPv4 route outside the `local` table.
    pub async fn routes(&self) -> Result<Vec<Route>, Error> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl("dumping routes", e))?;
        Ok(msgs
            .iter()
            .filter_map(parse_route)
            .filter(|r| r.table != TABLE_LOCAL)
            .collect())
    }

    /// Add or replace `route` going out of `oif` (NLM_F_REPLACE: the route with the same
    /// destination, table, tos and metric is switched over in one step).
    pub async fn replace_route(&self, route: &Route, oif: u32) -> Result<(), Error> {
        self.handle
            .route()
            .add(route_message(route, oif))
            .replace()
            .execute()
            .await
            .map_err(|e| {
                nl(
                    &format!("setting route {}", route.describe(&oif.to_string())),
                    e,
                )
            })
    }

    pub async fn del_route(&self, route: &Route, oif: u32) -> Result<(), Error> {
        self.handle
            .route()
            .del(route_message(route, oif))
            .execute()
            .await
            .map_err(|e| {
                nl(
                    &format!("removing route {}", route.describe(&oif.to_string())),
                    e,
                )
            })
    }

    /// Add an address with the details it had elsewhere (broadcast, label, noprefixroute);
    /// `dev` is the name the label is made from.
    pub async fn add_addr_detail(
        &self,
        index: u32,
        dev: &str,
        a: &AddrDetail,
    ) -> Result<(), Error> {
        let mut req =
            self.handle
                .address()
                .add(index, IpAddr::V4(a.net.addr()), a.net.prefix_len());
        let msg = req.message_mut();
        // The builder guesses a broadcast address; keep exactly the one the address had.
        msg.attributes
            .retain(|x| !matches!(x, AddressAttribute::Broadcast(_)));
        if let Some(b) = a.broadcast {
            msg.attributes.push(AddressAttribute::Broadcast(b));
        }
        if let Some(suffix) = &a.label_suffix {
            msg.attributes
                .push(AddressAttribute::Label(format!("{dev}{suffix}")));
        }
        if a.noprefixroute {
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
        }
        req.execute()
            .await
            .map_err(|e| nl(&format!("adding {} to link {index}", a.net), e))
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, Error> {
        Ok(self.links().await?.into_iter().find(|l| l.name == name))
    }

    /// Create a bridge, down; returns its index. The forward delay is sent in the same message as
    /// the STP state: the kernel applies IFLA_BR_FORWARD_DELAY before IFLA_BR_STP_STATE, which is
    /// libvirt's "delay first" order. Without `mac` the kernel picks one (and a bridge then takes
    /// its first port's). The owner alias is set by the caller afterwards: not every kernel
    /// accepts IFLA_IFALIAS in the RTM_NEWLINK of a new device.
    pub async fn create_bridge(
        &self,
        name: &str,
        mac: Option<Mac>,
        mtu: Option<u32>,
        stp: bool,
        delay: u32,
    ) -> Result<u32, Error> {
        let mut b = LinkBridge::new(name)
            .down()
            .forward_delay(delay * CS_PER_SECOND)
            .stp_state(if stp {
                BridgeStpState::KernelStp
            } else {
                BridgeStpState::Disabled
            });
        if let Some(mac) = mac {
            b = b.address(mac.octets().to_vec());
        }
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(|e| nl(&format!("creating bridge {name}"), e))?;
        let link = self.link_by_name(name).await?.ok_or_else(|| {
            Error::Netlink(format!("bridge {name} vanished right after it was created"))
        })?;
        Ok(link.index)
    }

    /// Send one RTM_SETLINK; `what` names the change in the error.
    async fn set_link(&self, msg: LinkMessage, what: String) -> Result<(), Error> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| nl(&what, e))
    }

    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<(), Error> {
        let msg = LinkUnspec::new_with_index(index).alias(alias).build();
        self.set_link(msg, format!("setting alias of link {index}"))
            .await
    }

    pub async fn set_mac(&self, index: u32, mac: Mac) -> Result<(), Error> {
        let msg = LinkUnspec::new_with_index(index)
            .address(mac.octets().to_vec())
            .build();
        self.set_link(msg, format!("setting MAC of link {index}"))
            .await
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), Error> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.set_link(msg, format!("setting MTU of link {index}"))
            .await
    }

    /// Set STP and forward delay. Turning STP on: delay first, then STP (the kernel refuses a delay
    /// below 2 s while STP runs). Turning it off: STP first, then the delay.
    pub async fn set_stp(&self, index: u32, stp: bool, delay: u32) -> Result<(), Error> {
        let delay_msg = bridge_change(index)
            .forward_delay(delay * CS_PER_SECOND)
            .build();
        let stp_msg = bridge_change(index)
            .stp_state(if stp {
                BridgeStpState::KernelStp
            } else {
                BridgeStpState::Disabled
            })
            .build();
        let order = if stp {
            [delay_msg, stp_msg]
        } else {
            [stp_msg, delay_msg]
        };
        for m in order {
            self.handle
                .link()
                .change(m)
                .execute()
                .await
                .map_err(|e| nl(&format!("setting STP of bridge {index}"), e))?;
        }
        Ok(())
    }

    /// Enslave `index` to `controller` (0 = release).
    pub async fn set_controller(&self, index: u32, controller: u32) -> Result<(), Error> {
        let msg = LinkUnspec::new_with_index(index)
            .controller(controller)
            .build();
        self.set_link(msg, format!("setting master of link {index}"))
            .await
    }

    pub async fn set_up(&self, index: u32, up: bool) -> Result<(), Error> {
        let b = LinkUnspec::new_with_index(index);
        let msg = if up { b.up() } else { b.down() }.build();
        self.set_link(msg, format!("setting link {index} up/down"))
            .await
    }

    pub async fn delete_link(&self, index: u32) -> Result<(), Error> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| nl(&format!("deleting link {index}"), e))
    }

    pub async fn add_addr(&self, index: u32, net: Ipv4Net) -> Result<(), Error> {
        self.handle
            .address()
            .add(index, IpAddr::V4(net.addr()), net.prefix_len())
            .execute()
            .await
            .map_err(|e| nl(&format!("adding {net} to link {index}"), e))
    }

    pub async fn del_addr(&self, index: u32, net: Ipv4Net) -> Result<(), Error> {
        let msg = rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(net.addr(), net.prefix_len())
            .build();
        self.handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(|e| nl(&format!("removing {net} from link {index}"), e))
    }

    /// Add an IPv6 address with `nodad`: a bridge without ports has no carrier, and the kernel
    /// keeps an address that waits for duplicate address detection "tentative" (unusable: no
    /// bind, never a source) until carrier comes, then ~1 s more. The prefix is the agent's
    /// own network and the address its gateway, so there is nobody to detect.
    pub async fn add_addr6(&self, index: u32, net: Ipv6Net) -> Result<(), Error> {
        let mut req = self
            .handle
            .address()
            .add(index, IpAddr::V6(net.addr()), net.prefix_len());
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        req.execute()
            .await
            .map_err(|e| nl(&format!("adding {net} to link {index}"), e))
    }

    /// Remove an IPv6 address; one already gone is no error. (The kernel drops a link's IPv6
    /// addresses when it goes down, so an undo that set the bridge down first finds none.)
    pub async fn del_addr6(&self, index: u32, net: Ipv6Net) -> Result<(), Error> {
        let msg = rtnetlink::AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(net.addr(), net.prefix_len())
            .build();
        match self.handle.address().del(msg).execute().await {
            Err(rtnetlink::Error::NetlinkError(m))
                if m.code.map(|c| c.get()) == Some(-libc::EADDRNOTAVAIL) =>
            {
                Ok(())
            }
            r => r.map_err(|e| nl(&format!("removing {net} from link {index}"), e)),
        }
    }
}

fn bridge_change(index: u32) -> LinkMessageBuilder<LinkBridge> {
    LinkMessageBuilder::<LinkBridge>::new_with_info_kind(InfoKind::Bridge).index(index)
}

fn parse_link(m: &LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
        alias: None,
        kind: None,
        controller: None,
        bridge: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(b) if b.len() == 6 => link.mac = Mac::from_slice(b),
            LinkAttribute::Mtu(v) => link.mtu = *v,
            LinkAttribute::IfAlias(s) if !s.is_empty() => link.alias = Some(s.clone()),
            LinkAttribute::Controller(c) if *c != 0 => link.controller = Some(*c),
            LinkAttribute::LinkInfo(infos) => parse_info(infos, &mut link),
            _ => {}
        }
    }
    link
}

fn parse_info(infos: &[NlLinkInfo], link: &mut Link) {
    for i in infos {
        match i {
            NlLinkInfo::Kind(k) => link.kind = Some(k.to_string()),
            NlLinkInfo::Data(InfoData::Bridge(opts)) => {
                let mut bi = BridgeInfo {
                    stp: false,
                    forward_delay: 0,
                };
                for o in opts {
                    match o {
                        InfoBridge::StpState(s) => bi.stp = *s != BridgeStpState::Disabled,
                        InfoBridge::ForwardDelay(d) => bi.forward_delay = d / CS_PER_SECOND,
                        _ => {}
                    }
                }
                link.bridge = Some(bi);
            }
            _ => {}
        }
    }
}

fn parse_addr_detail(m: &AddressMessage, dev: &str) -> Option<AddrDetail> {
    let addr = parse_addr(m)?;
    let mut d = AddrDetail::plain(addr.index, addr.net);
    for a in &m.attributes {
        match a {
            AddressAttribute::Broadcast(b) => d.broadcast = Some(*b),
            AddressAttribute::Label(l) if l != dev => {
                d.label_suffix = l.strip_prefix(dev).map(str::to_string)
            }
            AddressAttribute::Flags(f) => {
                d.noprefixroute = f.contains(AddressFlags::Noprefixroute);
                d.permanent = f.contains(AddressFlags::Permanent);
            }
            AddressAttribute::CacheInfo(c) => d.valid_secs = c.ifa_valid,
            _ => {}
        }
    }
    // Addresses without IFA_FLAGS (old kernels) count by their lifetime.
    d.permanent = d.permanent || d.valid_secs == u32::MAX;
    Some(d)
}

fn route_message(r: &Route, oif: u32) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst.addr(), r.dst.prefix_len())
        .output_interface(oif)
        .table_id(r.table)
        .protocol(RouteProtocol::from(r.protocol))
        .scope(RouteScope::from(r.scope))
        .kind(RouteType::from(r.kind))
        .tos(r.tos);
    if let Some(g) = r.gateway {
        b = b.gateway(g);
    }
    if let Some(m) = r.metric {
        b = b.priority(m);
    }
    if let Some(src) = r.prefsrc {
        b = b.pref_source(src);
    }
    if r.onlink {
        b = b.onlink();
    }
    let mut msg = b.build();
    let mut metrics = Vec::new();
    if let Some(m) = r.mtu {
        metrics.push(RouteMetric::Mtu(m));
    }
    if let Some(m) = r.advmss {
        metrics.push(RouteMetric::Advmss(m));
    }
    if !metrics.is_empty() {
        msg.attributes.push(RouteAttribute::Metrics(metrics));
    }
    msg
}

fn parse_route(m: &RouteMessage) -> Option<Route> {
    if m.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut r = Route {
        table: u32::from(m.header.table),
        dst: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, m.header.destination_prefix_length).ok()?,
        gateway: None,
        oif: None,
        metric: None,
        protocol: u8::from(m.header.protocol),
        scope: u8::from(m.header.scope),
        kind: u8::from(m.header.kind),
        prefsrc: None,
        onlink: m.header.flags.contains(RouteFlags::Onlink),
        tos: m.header.tos,
        mtu: None,
        advmss: None,
        unmovable: None,
    };
    let v4 = |a: &RouteAddress| match a {
        RouteAddress::Inet(v) => Some(*v),
        _ => None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                r.dst = Ipv4Net::new(v4(d)?, m.header.destination_prefix_length).ok()?
            }
            RouteAttribute::Gateway(g) => r.gateway = v4(g),
            RouteAttribute::PrefSource(p) => r.prefsrc = v4(p),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Priority(p) => r.metric = Some(*p),
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::MultiPath(_) => r.unmovable = Some("it has several next hops".into()),
            RouteAttribute::NhId(_) => r.unmovable = Some("it uses a nexthop object".into()),
            RouteAttribute::Encap(_) | RouteAttribute::EncapType(_) => {
                r.unmovable = Some("it is encapsulated".into())
            }
            RouteAttribute::Metrics(ms) => {
                for metric in ms {
                    match metric {
                        RouteMetric::Mtu(v) => r.mtu = Some(*v),
                        RouteMetric::Advmss(v) => r.advmss = Some(*v),
                        other => {
                            r.unmovable = Some(format!("it carries the route metric {other:?}"))
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Some(r)
}

fn parse_addr(m: &AddressMessage) -> Option<Addr> {
    if m.header.family != AddressFamily::Inet {
        return None;
    }
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on point-to-point links).
    let mut local = None;
    let mut address = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(IpAddr::V4(v)) => local = Some(*v),
            AddressAttribute::Address(IpAddr::V4(v)) => address = Some(*v),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    let net = Ipv4Net::new(ip, m.header.prefix_len).ok()?;
    Some(Addr {
        index: m.header.index,
        net,
    })
}

fn parse_addr6(m: &AddressMessage) -> Option<Addr6> {
    if m.header.family != AddressFamily::Inet6 {
        return None;
    }
    let ip = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(IpAddr::V6(v)) => Some(*v),
        _ => None,
    })?;
    let net = Ipv6Net::new(ip, m.header.prefix_len).ok()?;
    Some(Addr6 {
        index: m.header.index,
        net,
        link_local: (ip.segments()[0] & 0xffc0) == 0xfe80,
    })
}
