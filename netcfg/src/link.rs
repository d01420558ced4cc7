//! Links and IPv4 addresses through rtnetlink: the dumps `observe` reads and the few changes
//! `apply` makes. Every call works on the caller's network namespace.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use hwaddr::Mac;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    BridgeStpState, InfoBridge, InfoData, InfoKind, LinkAttribute, LinkFlags,
    LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec};
use serde::Serialize;

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

    pub async fn addrs(&self) -> Result<Vec<Addr>, Error> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl("dumping addresses", e))?;
        Ok(msgs.iter().filter_map(parse_addr).collect())
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
