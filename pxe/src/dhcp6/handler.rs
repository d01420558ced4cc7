//! One DHCPv6 message in, at most one reply out (RFC 8415 §18.3), without a socket.
//!
//! - Solicit → Advertise (Preference 255, so the client need not wait for other servers), or,
//!   when the client sends Rapid Commit and the network allows it, a committed Reply.
//! - Request, Renew, Rebind → Reply with the IA_NA's address and lifetimes (T1 = 0.5, T2 = 0.8
//!   of the lease time). A Renew/Rebind for an address the server does not know is bound again
//!   when the client may hold it (it was ours before a lost journal, or is free); otherwise a
//!   Renew gets NoBinding and a Rebind the address back with lifetimes 0 (§18.3.4, §18.3.5).
//! - Release, Decline → Reply with Success; the address is freed or quarantined.
//! - Confirm → Success when every address is on the network's prefix, NotOnLink otherwise.
//! - Information-Request → Reply with DNS servers (23) and the domain search list (24) only.
//!
//! Every Reply that commits, extends, frees or quarantines an address has `needs_flush`: the
//! server sends it only after the batch's records are on disk. Advertise and Confirm promise
//! nothing and go out whatever the flush did.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dhcproto::v6::{
    DhcpOption, IAAddr, Message, MessageType, OptionCode, Status, StatusCode, UnknownOption, IANA,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::boot::{self, PXE_ENTERPRISE};
use super::client::{self, CLIENT_FQDN, CLIENT_LINKLAYER_ADDR};
use super::guard::{self, Drop6};
use super::pool::Pool6;
use super::stats::Dhcp6Stats;
use crate::config::{Dhcp6Config, Mac};
use crate::dhcp::ipxe_build::IpxeBuilds;
use crate::leases::v6::{Duid, Lease6};

/// The client port replies go to when a client sent from another (RFC 8415 §7.2).
pub const CLIENT_PORT: u16 = 546;

/// A reply ready to send.
#[derive(Debug, Clone)]
pub struct Reply6 {
    pub bytes: Vec<u8>,
    pub dest: SocketAddrV6,
    /// Sent only after the batch's flush succeeded.
    pub needs_flush: bool,
    /// Logged once the reply left.
    pub event: Option<Event6>,
}

/// What a sent reply did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event6 {
    Bound {
        lease: Lease6,
        renewed: bool,
    },
    Released {
        duid: Duid,
        ip: Ipv6Addr,
    },
    Declined {
        duid: Duid,
        ip: Ipv6Addr,
    },
    Boot {
        duid: Duid,
        kind: &'static str,
        url: String,
    },
}

impl Event6 {
    pub fn log(&self, network: &str) {
        match self {
            Event6::Bound { lease, renewed } => tracing::info!(
                network, duid = %lease.duid, iaid = lease.iaid, ip = %lease.ip,
                mac = ?lease.mac.map(|m| m.to_string()), hostname = ?lease.hostname,
                "DHCPv6 {}", if *renewed { "renewed" } else { "bound" }
            ),
            Event6::Released { duid, ip } => {
                tracing::info!(network, %duid, %ip, "DHCPv6 released")
            }
            Event6::Declined { duid, ip } => {
                tracing::warn!(network, %duid, %ip, "DHCPv6 declined: address in use, quarantined")
            }
            Event6::Boot { duid, kind, url } => {
                tracing::info!(network, %duid, kind, url, "DHCPv6 boot file URL")
            }
        }
    }
}

pub struct Handler6 {
    cfg: Dhcp6Config,
    pool: Pool6,
    server_duid: Duid,
    stats: Arc<Dhcp6Stats>,
    files: Option<IpxeBuilds>,
}

/// What the client said, decoded once.
struct Ask<'a> {
    msg: &'a Message,
    duid: Option<Duid>,
    mac: Option<Mac>,
    fqdn: Option<String>,
}

impl Handler6 {
    pub fn new(cfg: Dhcp6Config, pool: Pool6, server_duid: Duid, stats: Arc<Dhcp6Stats>) -> Self {
        let files = cfg.boot.as_ref().map(|b| IpxeBuilds::new(b.root.clone()));
        Handler6 {
            cfg,
            pool,
            server_duid,
            stats,
            files,
        }
    }

    pub fn config(&self) -> &Dhcp6Config {
        &self.cfg
    }

    pub fn pool(&self) -> &Pool6 {
        &self.pool
    }

    pub fn pool_mut(&mut self) -> &mut Pool6 {
        &mut self.pool
    }

    pub fn stats(&self) -> &Dhcp6Stats {
        &self.stats
    }

    pub fn server_duid(&self) -> &Duid {
        &self.server_duid
    }

    /// Answers one packet from `from` (the client's link-local address and port).
    pub fn handle_packet(&mut self, packet: &[u8], from: SocketAddrV6, now: u64) -> Option<Reply6> {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        match self.answer(packet, *from.ip(), now) {
            Ok(Some((msg, needs_flush, event))) => {
                let mut bytes = Vec::new();
                if let Err(e) = msg.encode(&mut Encoder::new(&mut bytes)) {
                    tracing::warn!(network = %self.cfg.network, error = %e, "DHCPv6 reply could not be encoded");
                    return None;
                }
                let port = if from.port() == 0 {
                    CLIENT_PORT
                } else {
                    from.port()
                };
                Some(Reply6 {
                    bytes,
                    dest: SocketAddrV6::new(*from.ip(), port, 0, from.scope_id()),
                    needs_flush,
                    event,
                })
            }
            Ok(None) => None,
            Err(reason) => {
                self.stats.count_drop(reason);
                tracing::debug!(network = %self.cfg.network, from = %from, reason = reason.as_str(), "DHCPv6 packet dropped");
                None
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn answer(
        &mut self,
        packet: &[u8],
        from: Ipv6Addr,
        now: u64,
    ) -> Result<Option<(Message, bool, Option<Event6>)>, Drop6> {
        guard::check(packet)?;
        let msg = Message::decode(&mut Decoder::new(packet)).map_err(|_| Drop6::Undecodable)?;
        let opts = msg.opts();
        let duid = match opts.get(OptionCode::ClientId) {
            Some(DhcpOption::ClientId(id)) => Some(Duid::new(id).ok_or(Drop6::MissingOrWrongIds)?),
            _ => None,
        };
        let server_id = match opts.get(OptionCode::ServerId) {
            Some(DhcpOption::ServerId(id)) => Some(id.as_slice()),
            _ => None,
        };
        let ours = server_id.map(|id| id == self.server_duid.as_bytes());
        // RFC 8415 §16: which identifiers each message must and must not carry.
        let kind = msg.msg_type();
        match kind {
            MessageType::Solicit | MessageType::Rebind | MessageType::Confirm => {
                if duid.is_none() || server_id.is_some() {
                    return Err(Drop6::MissingOrWrongIds);
                }
            }
            MessageType::Request
            | MessageType::Renew
            | MessageType::Release
            | MessageType::Decline => match (&duid, ours) {
                (None, _) | (_, None) => return Err(Drop6::MissingOrWrongIds),
                (_, Some(false)) => return Err(Drop6::NotForUs),
                _ => {}
            },
            MessageType::InformationRequest => {
                if ours == Some(false) {
                    return Err(Drop6::NotForUs);
                }
            }
            _ => return Err(Drop6::NotClientMessage),
        }
        let option79 = raw_option(&msg, CLIENT_LINKLAYER_ADDR);
        let ask = Ask {
            msg: &msg,
            mac: client::client_mac(option79, from, duid.as_ref()),
            fqdn: raw_option(&msg, CLIENT_FQDN).and_then(client::fqdn_name),
            duid,
        };
        let out = match kind {
            MessageType::Solicit => self.solicit(&ask, now),
            MessageType::Request => Some(self.assign(&ask, now, MessageType::Reply)),
            MessageType::Renew | MessageType::Rebind => Some(self.extend(&ask, now)),
            MessageType::Release => Some(self.release(&ask, now, false)),
            MessageType::Decline => Some(self.release(&ask, now, true)),
            MessageType::Confirm => self.confirm(&ask),
            _ => Some(self.information(&ask)),
        };
        Ok(out)
    }

    /// The reply's frame: type, the client's transaction id, our DUID, the client's DUID.
    fn reply(&self, ask: &Ask, kind: MessageType) -> Message {
        let mut m = Message::new_with_id(kind, ask.msg.xid());
        m.opts_mut()
            .insert(DhcpOption::ServerId(self.server_duid.as_bytes().to_vec()));
        if let Some(d) = &ask.duid {
            m.opts_mut()
                .insert(DhcpOption::ClientId(d.as_bytes().to_vec()));
        }
        m
    }

    /// DNS, domain search list and, for boot clients, the boot file URL.
    fn add_config(&self, ask: &Ask, m: &mut Message) -> Option<Event6> {
        if !self.cfg.dns.is_empty() {
            m.opts_mut()
                .insert(DhcpOption::DomainNameServers(self.cfg.dns.clone()));
        }
        let names: Vec<_> = self
            .cfg
            .domain_search
            .iter()
            .filter_map(|d| dhcproto::Name::from_utf8(format!("{d}.")).ok())
            .collect();
        if !names.is_empty() {
            m.opts_mut().insert(DhcpOption::DomainSearchList(names));
        }
        let kind = boot::classify(ask.msg.opts());
        let files = self.files.as_ref()?;
        match boot::boot_url(&kind, self.cfg.boot.as_ref(), self.cfg.server.addr(), files) {
            Ok(b) => {
                m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
                    OptionCode::OptBootfileUrl,
                    b.url.clone().into_bytes(),
                )));
                if let Some(vc) = b.vendor_class {
                    // Raw: dhcproto 0.15 writes a Vendor Class's length as its number of
                    // entries, not its bytes, and the client would read past it.
                    let mut raw = PXE_ENTERPRISE.to_be_bytes().to_vec();
                    raw.extend_from_slice(&(vc.len() as u16).to_be_bytes());
                    raw.extend_from_slice(vc.as_bytes());
                    m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
                        OptionCode::VendorClass,
                        raw,
                    )));
                }
                self.stats.boot_urls.fetch_add(1, Ordering::Relaxed);
                Some(Event6::Boot {
                    duid: ask.duid.clone()?,
                    kind: kind.as_str(),
                    url: b.url,
                })
            }
            Err(why) => {
                if kind.as_str() != "plain" {
                    tracing::info!(network = %self.cfg.network, kind = kind.as_str(), "DHCPv6: no boot file URL: {why}");
                }
                None
            }
        }
    }

    fn solicit(&mut self, ask: &Ask, now: u64) -> Option<(Message, bool, Option<Event6>)> {
        let rapid = self.cfg.rapid_commit
            && ask.msg.opts().get(OptionCode::RapidCommit).is_some()
            && self.pool.is_stateful();
        if rapid {
            let (mut m, flush, ev) = self.assign(ask, now, MessageType::Reply);
            m.opts_mut().insert(DhcpOption::RapidCommit);
            self.stats.rapid_commits.fetch_add(1, Ordering::Relaxed);
            return Some((m, flush, ev));
        }
        let (m, _, ev) = self.assign(ask, now, MessageType::Advertise);
        Some((m, false, ev))
    }

    fn lifetimes(&self) -> (u32, u32, u32) {
        let secs = self
            .pool
            .lease_time()
            .as_secs()
            .min(u64::from(u32::MAX - 1)) as u32;
        (secs, secs / 2, (secs as u64 * 4 / 5) as u32)
    }

    fn ia_with(&self, id: u32, ip: Ipv6Addr, lifetime: u32) -> DhcpOption {
        let (_, t1, t2) = self.lifetimes();
        let (t1, t2) = if lifetime == 0 { (0, 0) } else { (t1, t2) };
        let mut ia = IANA {
            id,
            t1,
            t2,
            opts: Default::default(),
        };
        ia.opts.insert(DhcpOption::IAAddr(IAAddr {
            addr: ip,
            preferred_life: lifetime,
            valid_life: lifetime,
            opts: Default::default(),
        }));
        DhcpOption::IANA(ia)
    }

    fn ia_status(id: u32, status: Status, msg: &str) -> DhcpOption {
        let mut ia = IANA {
            id,
            t1: 0,
            t2: 0,
            opts: Default::default(),
        };
        ia.opts.insert(status_code(status, msg));
        DhcpOption::IANA(ia)
    }

    /// Solicit (Advertise or rapid commit) and Request: an address for every IA_NA.
    fn assign(
        &mut self,
        ask: &Ask,
        now: u64,
        kind: MessageType,
    ) -> (Message, bool, Option<Event6>) {
        let commit = kind == MessageType::Reply;
        let mut m = self.reply(ask, kind);
        let Some(duid) = ask.duid.clone() else {
            return (m, false, None);
        };
        let boot_event = self.add_config(ask, &mut m);
        let ias = ia_nas(ask.msg);
        let (lifetime, _, _) = self.lifetimes();
        let mut event = None;
        let mut any = false;
        for (iaid, hint) in &ias {
            let Some(ip) = self.pool.pick(&duid, *iaid, ask.mac, *hint, now) else {
                self.stats.exhausted.fetch_add(1, Ordering::Relaxed);
                m.opts_mut().insert(Self::ia_status(
                    *iaid,
                    Status::NoAddrsAvail,
                    "no addresses available",
                ));
                continue;
            };
            any = true;
            if commit {
                let renewed = self
                    .pool
                    .store()
                    .index()
                    .by_binding(&duid, *iaid)
                    .is_some_and(|l| l.ip == ip && l.expires > now);
                let lease = self
                    .pool
                    .bind(&duid, *iaid, ip, ask.mac, ask.fqdn.clone(), now);
                if let Some(name) = &lease.hostname {
                    set_fqdn(&mut m, name);
                }
                event.get_or_insert(Event6::Bound { lease, renewed });
            }
            m.opts_mut().insert(self.ia_with(*iaid, ip, lifetime));
        }
        if ias.is_empty() || !any {
            m.opts_mut()
                .insert(status_code(Status::NoAddrsAvail, "no addresses available"));
        }
        if kind == MessageType::Advertise {
            m.opts_mut().insert(DhcpOption::Preference(255));
            self.stats.advertises.fetch_add(1, Ordering::Relaxed);
        } else if any {
            self.stats.replies.fetch_add(1, Ordering::Relaxed);
        }
        (m, commit && any, event.or(boot_event))
    }

    /// Renew and Rebind.
    fn extend(&mut self, ask: &Ask, now: u64) -> (Message, bool, Option<Event6>) {
        let rebind = ask.msg.msg_type() == MessageType::Rebind;
        let mut m = self.reply(ask, MessageType::Reply);
        let Some(duid) = ask.duid.clone() else {
            return (m, false, None);
        };
        self.add_config(ask, &mut m);
        let (lifetime, _, _) = self.lifetimes();
        let mut event = None;
        let mut flush = false;
        for (iaid, listed) in ia_nas_all(ask.msg) {
            let held = self
                .pool
                .store()
                .index()
                .by_binding(&duid, iaid)
                .map(|l| l.ip);
            let want = listed
                .iter()
                .copied()
                .find(|ip| self.pool.may_hold(*ip, &duid, iaid, ask.mac, now))
                .or_else(|| held.filter(|ip| self.pool.may_hold(*ip, &duid, iaid, ask.mac, now)))
                .or_else(|| {
                    // A static host's address follows the host even when the client asks for
                    // another.
                    self.pool.static_host(&duid, ask.mac).map(|h| h.ip)
                });
            match want {
                Some(ip) => {
                    let lease = self
                        .pool
                        .bind(&duid, iaid, ip, ask.mac, ask.fqdn.clone(), now);
                    if let Some(name) = &lease.hostname {
                        set_fqdn(&mut m, name);
                    }
                    flush = true;
                    event.get_or_insert(Event6::Bound {
                        lease,
                        renewed: true,
                    });
                    let mut ia = self.ia_with(iaid, ip, lifetime);
                    // Addresses the client listed that it may no longer use: lifetimes 0.
                    if let DhcpOption::IANA(ia) = &mut ia {
                        for old in listed.iter().filter(|a| **a != ip) {
                            ia.opts.insert(DhcpOption::IAAddr(IAAddr {
                                addr: *old,
                                preferred_life: 0,
                                valid_life: 0,
                                opts: Default::default(),
                            }));
                        }
                    }
                    m.opts_mut().insert(ia);
                }
                None if rebind && !listed.is_empty() => {
                    for old in &listed {
                        m.opts_mut().insert(self.ia_with(iaid, *old, 0));
                    }
                }
                None => m.opts_mut().insert(Self::ia_status(
                    iaid,
                    Status::NoBinding,
                    "no binding for this IA",
                )),
            }
        }
        if flush {
            self.stats.replies.fetch_add(1, Ordering::Relaxed);
        }
        (m, flush, event)
    }

    /// Release and Decline.
    fn release(&mut self, ask: &Ask, now: u64, decline: bool) -> (Message, bool, Option<Event6>) {
        let mut m = self.reply(ask, MessageType::Reply);
        let Some(duid) = ask.duid.clone() else {
            return (m, false, None);
        };
        let mut event = None;
        let mut changed = false;
        for (iaid, listed) in ia_nas_all(ask.msg) {
            for ip in listed {
                let done = if decline {
                    self.pool.decline(&duid, iaid, ip, now)
                } else {
                    self.pool.release(&duid, iaid, ip)
                };
                if done {
                    changed = true;
                    let duid = duid.clone();
                    event.get_or_insert(if decline {
                        Event6::Declined { duid, ip }
                    } else {
                        Event6::Released { duid, ip }
                    });
                }
            }
        }
        let counter = if decline {
            &self.stats.declines
        } else {
            &self.stats.releases
        };
        counter.fetch_add(1, Ordering::Relaxed);
        m.opts_mut().insert(status_code(Status::Success, "done"));
        (m, changed, event)
    }

    fn confirm(&self, ask: &Ask) -> Option<(Message, bool, Option<Event6>)> {
        let listed: Vec<Ipv6Addr> = ia_nas_all(ask.msg)
            .into_iter()
            .flat_map(|(_, a)| a)
            .collect();
        // RFC 8415 §18.3.3: no addresses, no reply.
        if listed.is_empty() {
            return None;
        }
        let prefix = self.cfg.server.trunc();
        let on_link = listed.iter().all(|a| prefix.contains(a));
        let mut m = self.reply(ask, MessageType::Reply);
        m.opts_mut().insert(if on_link {
            status_code(Status::Success, "all addresses on link")
        } else {
            status_code(Status::NotOnLink, "not on this link")
        });
        self.stats.confirms.fetch_add(1, Ordering::Relaxed);
        Some((m, false, None))
    }

    fn information(&self, ask: &Ask) -> (Message, bool, Option<Event6>) {
        let mut m = self.reply(ask, MessageType::Reply);
        let event = self.add_config(ask, &mut m);
        self.stats.information.fetch_add(1, Ordering::Relaxed);
        (m, false, event)
    }
}

fn status_code(status: Status, msg: &str) -> DhcpOption {
    DhcpOption::StatusCode(StatusCode {
        status,
        msg: msg.to_string(),
    })
}

fn set_fqdn(m: &mut Message, name: &str) {
    let code = OptionCode::from(CLIENT_FQDN);
    if m.opts().get(code).is_none() {
        m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
            code,
            client::fqdn_reply(name),
        )));
    }
}

/// The raw value of an option dhcproto does not model.
fn raw_option(msg: &Message, code: u16) -> Option<&[u8]> {
    match msg.opts().get(OptionCode::from(code)) {
        Some(DhcpOption::Unknown(u)) => Some(u.data()),
        _ => None,
    }
}

/// Every IA_NA: its IAID and the first address the client named in it.
fn ia_nas(msg: &Message) -> Vec<(u32, Option<Ipv6Addr>)> {
    ia_nas_all(msg)
        .into_iter()
        .map(|(id, a)| (id, a.first().copied()))
        .collect()
}

/// Every IA_NA: its IAID and every address the client named in it.
fn ia_nas_all(msg: &Message) -> Vec<(u32, Vec<Ipv6Addr>)> {
    let Some(all) = msg.opts().get_all(OptionCode::IANA) else {
        return Vec::new();
    };
    all.iter()
        .filter_map(|o| match o {
            DhcpOption::IANA(ia) => Some((
                ia.id,
                ia.opts
                    .get_all(OptionCode::IAAddr)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|a| match a {
                        DhcpOption::IAAddr(a) => Some(a.addr),
                        _ => None,
                    })
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}
