//! proxyDHCP (PXE 2.1 §2.2.5): boot information for PXE clients on a segment where another DHCP
//! server (a site's, a home router, dnsmasq) hands out the addresses. It never offers an
//! address (`yiaddr` is 0) and never touches a lease store: there is none here.
//!
//! Two ports, one rule each:
//! - **67**: a DISCOVER from a PXE client (option 60 `PXEClient`, which iPXE sends too, or
//!   `HTTPClient`) gets a proxy OFFER: option 54, 60 `PXEClient`, 97, the boot file in `file` and
//!   67, `siaddr`, and **no option 43**. A REQUEST naming us in option 54 gets an ACK. Everything
//!   else on 67 (REQUESTs to the real server, OS clients) is left alone and counted as
//!   `ignored`.
//! - **4011**: the PXE boot-server request the client sends next, unicast, from the address the
//!   other server gave it, gets an ACK with the same boot information (with option 43 for
//!   firmware), unicast back to where it came from.
//!
//! Why no option 43 in the OFFER: EDK2 (OVMF) classes a `PXEClient` proxy offer without 43 as
//! "BINL" and asks on 4011 for the file; with 43 it is a "PXE10" offer, and the EDK2 of Debian 12's
//! vintage only keeps a PXE10 proxy offer after it already has one (`PxeBcCacheDhcp4Offer`), so it
//! drops the first and boots nothing. iPXE asks on 4011 after any proxy offer (its
//! `dhcp_state_proxy`) and only counts an offer as proxy with `PXEClient` in option 60. BIOS PXE
//! ROMs follow the offer without 43 to the boot server on 4011 as the PXE spec says. So every
//! client takes the same path: OFFER on 67, then REQUEST/ACK on 4011.
//!
//! The boot file follows the same chain rule as a full server (`policy`).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{ProxyConfig, StaticHost};
use crate::dhcp::classify::{classify, ClientKind};
use crate::dhcp::ipxe_build::IpxeBuilds;
use crate::dhcp::policy::boot_reply;
use crate::dhcp::server::delivery::Destination;
use crate::dhcp::server::handler::{log_no_boot, LeaseEvent, Outgoing};
use crate::dhcp::server::ratelimit::{MacLimiter, RateLimit};
use crate::dhcp::server::DhcpStats;
use crate::dhcp::wire::{opt, ClientMessage, MessageType, ReplyMessage};

/// The PXE boot server port (PXE 2.1: "port 4011").
pub const BOOT_SERVER_PORT: u16 = 4011;

/// Which socket a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// UDP 67, mostly broadcast.
    Dhcp,
    /// UDP 4011 from `from` (the client's address and port).
    BootServer { from: SocketAddrV4 },
}

/// Answers PXE clients for one network; socket-free.
pub struct ProxyHandler {
    cfg: ProxyConfig,
    files: IpxeBuilds,
    stats: Arc<DhcpStats>,
    limiter: MacLimiter,
}

impl ProxyHandler {
    pub fn new(cfg: ProxyConfig, stats: Arc<DhcpStats>) -> ProxyHandler {
        ProxyHandler {
            files: IpxeBuilds::new(cfg.boot.root.clone()),
            cfg,
            stats,
            limiter: MacLimiter::new(RateLimit::default()),
        }
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &DhcpStats {
        &self.stats
    }

    /// Decode and answer one packet (counted like the full server's).
    pub fn handle_packet(&mut self, bytes: &[u8], via: Via) -> Option<Outgoing> {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let msg = match crate::dhcp::wire::decode(bytes) {
            Ok(msg) => msg,
            Err(reason) => {
                self.stats.count_drop(reason);
                return None;
            }
        };
        if !self.limiter.allow(msg.chaddr, Instant::now()) {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.handle(&msg, via)
    }

    /// The rule of the module docs.
    pub fn handle(&mut self, msg: &ClientMessage, via: Via) -> Option<Outgoing> {
        let ours = msg.server_id == Some(self.cfg.server_ip);
        let wanted = match (via, msg.msg_type) {
            (Via::Dhcp, MessageType::Discover) => Some(MessageType::Offer),
            (Via::Dhcp, MessageType::Request) if ours => Some(MessageType::Ack),
            (Via::BootServer { .. }, MessageType::Request | MessageType::Inform) => {
                Some(MessageType::Ack)
            }
            _ => None,
        };
        let (Some(msg_type), true) = (wanted, is_pxe_client(msg)) else {
            self.stats.ignored.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let kind = classify(msg);
        let cfg = &self.cfg;
        let host = cfg.hosts.iter().find(|h| h.mac == msg.chaddr);
        let mut boot = match boot_reply(
            &kind,
            Some(&cfg.boot),
            host,
            cfg.server_ip,
            msg.client_uuid.as_deref(),
            &self.files,
        ) {
            Ok(b) => b,
            Err(why) => {
                log_no_boot(&cfg.network, msg, kind, &why);
                self.stats.ignored.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        // A proxy reply is recognised by `PXEClient` (iPXE needs it even for its script).
        if !matches!(kind, ClientKind::UefiHttp { .. }) {
            boot.vendor_class = Some("PXEClient");
        }
        if msg_type == MessageType::Offer {
            boot.vendor_options = None;
        }
        let mut options = vec![(opt::SERVER_ID, cfg.server_ip.octets().to_vec())];
        options.extend(boot.options());
        let reply = ReplyMessage {
            msg_type,
            xid: msg.xid,
            broadcast: msg.broadcast,
            ciaddr: msg.ciaddr,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: boot.siaddr,
            giaddr: msg.giaddr,
            chaddr: msg.chaddr,
            sname: Vec::new(),
            file: boot.file.as_bytes().to_vec(),
            options,
            relay_info: msg.relay_info.clone(),
        };
        let dest = match via {
            Via::BootServer { from } => Destination::BootServer {
                ip: *from.ip(),
                mac: msg.chaddr,
                port: from.port(),
            },
            Via::Dhcp => Destination::for_reply(msg, &reply),
        };
        let counter = match msg_type {
            MessageType::Offer => &self.stats.offers,
            _ => &self.stats.acks,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let what = match via {
            Via::Dhcp => "proxy offer",
            Via::BootServer { .. } => "proxy ack",
        };
        Some(Outgoing {
            dest,
            max_message_size: msg.max_message_size.unwrap_or(0),
            reply,
            needs_flush: false,
            event: Some(LeaseEvent {
                what,
                mac: msg.chaddr,
                client_id: msg.client_id.clone(),
                ip: msg.ciaddr,
                hostname: host_name(host).or_else(|| msg.hostname.clone()),
                kind,
                boot: Some(boot.file),
                detail: None,
            }),
        })
    }
}

fn host_name(host: Option<&StaticHost>) -> Option<String> {
    host.and_then(|h| h.name.clone())
}

/// Option 60 starts with `PXEClient` (firmware and iPXE) or `HTTPClient` (UEFI HTTP boot).
fn is_pxe_client(msg: &ClientMessage) -> bool {
    msg.vendor_class
        .as_deref()
        .is_some_and(|v| v.starts_with(b"PXEClient") || v.starts_with(b"HTTPClient"))
}
