//! The socket-free core of the server: one client message in, at most one reply out, over the
//! lease store. Durability is the caller's business: a reply with `needs_flush` may only be sent
//! after `LeaseBackend::commit` returned Ok for the batch it belongs to.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::config::{DhcpConfig, Mac, StaticHost, StaticRoute};
use crate::dhcp::classify::{classify, ClientKind};
use crate::dhcp::ipxe_build::IpxeBuilds;
use crate::dhcp::policy::{boot_reply, BootReply, NoBoot};
use crate::dhcp::pool::{Lease, Nak};
use crate::dhcp::store::{answer_one, LeaseBackend, StoreAnswer, StoreError, StoreOp};
use crate::dhcp::wire::{opt, ClientMessage, DropReason, MessageType, ReplyMessage};
use crate::leases::ClientId;

use super::delivery::Destination;
use super::ratelimit::{MacLimiter, RateLimit};
use super::DhcpStats;

/// One reply, where it goes, and whether it waits for the batch's fsync.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub reply: ReplyMessage,
    pub dest: Destination,
    /// Client's option 57 (the encoder clamps it to ≥ 576).
    pub max_message_size: u16,
    /// An ACK for a lease (or, from a store shared by several servers, an OFFER): send only
    /// after the batch was committed.
    pub needs_flush: bool,
    /// Log line to print once the reply is actually sent.
    pub event: Option<LeaseEvent>,
}

/// What to log for a lease event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseEvent {
    pub what: &'static str,
    pub mac: Mac,
    /// Option 61, when the client sent a usable one.
    pub client_id: Option<ClientId>,
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
    pub kind: ClientKind,
    pub boot: Option<String>,
    pub detail: Option<String>,
}

impl LeaseEvent {
    pub fn log(&self, network: &str) {
        tracing::info!(
            network,
            event = self.what,
            mac = %self.mac,
            client_id = %self.client_id.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".into()),
            ip = %self.ip,
            hostname = self.hostname.as_deref().unwrap_or("-"),
            kind = %self.kind,
            boot = self.boot.as_deref().unwrap_or("-"),
            detail = self.detail.as_deref().unwrap_or(""),
            "dhcp {}", self.what
        );
    }
}

/// How often the "pool exhausted" warning may repeat.
const EXHAUSTED_WARN_EVERY: Duration = Duration::from_secs(10);
/// How often the "rate limited" warning may repeat.
const RATE_LIMITED_WARN_EVERY: Duration = Duration::from_secs(10);
/// How often the "lease store failed" warning may repeat.
const STORE_WARN_EVERY: Duration = Duration::from_secs(10);

/// A message planned: answered already (or dropped), or waiting for the store's answer to `op`.
enum Step {
    /// Boxed: only an INFORM's ACK is answered without the store.
    Answered(Option<Box<Outgoing>>),
    Ask(StoreOp),
}

/// Answers client messages for one network.
pub struct Handler {
    cfg: DhcpConfig,
    pool: Box<dyn LeaseBackend>,
    /// Which configured boot files are iPXE builds (read from the boot root, cached).
    files: IpxeBuilds,
    stats: std::sync::Arc<DhcpStats>,
    last_exhausted_warning: Option<Instant>,
    exhausted_suppressed: u64,
    limiter: MacLimiter,
    last_rate_warning: Option<Instant>,
    rate_suppressed: u64,
    last_store_warning: Option<Instant>,
    store_suppressed: u64,
}

impl Handler {
    /// A handler allocating through `pool`: the journal's [`crate::dhcp::pool::Pool`], or any
    /// other [`LeaseBackend`].
    pub fn new(
        cfg: DhcpConfig,
        pool: impl LeaseBackend + 'static,
        stats: std::sync::Arc<DhcpStats>,
    ) -> Handler {
        Handler::with_store(cfg, Box::new(pool), stats)
    }

    pub fn with_store(
        cfg: DhcpConfig,
        pool: Box<dyn LeaseBackend>,
        stats: std::sync::Arc<DhcpStats>,
    ) -> Handler {
        let root = cfg
            .boot
            .as_ref()
            .map(|b| b.root.clone())
            .unwrap_or_default();
        Handler {
            files: IpxeBuilds::new(root),
            cfg,
            pool,
            stats,
            last_exhausted_warning: None,
            exhausted_suppressed: 0,
            limiter: MacLimiter::new(RateLimit::default()),
            last_rate_warning: None,
            rate_suppressed: 0,
            last_store_warning: None,
            store_suppressed: 0,
        }
    }

    /// Replace the per-MAC rate limit (the default is `RateLimit::default()`); forgets all buckets.
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Handler {
        self.limiter = MacLimiter::new(limit);
        self
    }

    /// How many client MACs the rate limiter tracks right now.
    pub fn rate_tracked(&self) -> usize {
        self.limiter.tracked()
    }

    pub fn pool(&self) -> &(dyn LeaseBackend + 'static) {
        self.pool.as_ref()
    }

    pub fn pool_mut(&mut self) -> &mut dyn LeaseBackend {
        self.pool.as_mut()
    }

    pub fn stats(&self) -> &DhcpStats {
        &self.stats
    }

    pub fn config(&self) -> &DhcpConfig {
        &self.cfg
    }

    /// Decode and answer one packet. Malformed packets are counted and dropped.
    pub fn handle_packet(&mut self, bytes: &[u8], now: u64) -> Option<Outgoing> {
        self.handle_packet_at(bytes, now, Instant::now())
    }

    /// `handle_packet` with the rate limiter's clock given (`clock`), for tests.
    pub fn handle_packet_at(&mut self, bytes: &[u8], now: u64, clock: Instant) -> Option<Outgoing> {
        let msg = self.admit(bytes, clock)?;
        self.handle(&msg, now)
    }

    /// Decode and answer a batch of packets, asking the store every question of the batch at
    /// once (`LeaseBackend::answer_all`); the replies in arrival order. The caller commits.
    pub fn handle_batch(&mut self, packets: &[&[u8]], now: u64) -> Vec<Outgoing> {
        let clock = Instant::now();
        let msgs: Vec<ClientMessage> = packets
            .iter()
            .filter_map(|p| self.admit(p, clock))
            .collect();
        // Each message answered already (Err) or asked as the op at its index (Ok).
        let mut ops = Vec::new();
        let steps: Vec<Result<usize, Option<Box<Outgoing>>>> = msgs
            .iter()
            .map(|msg| match self.plan(msg) {
                Step::Ask(op) => {
                    ops.push(op);
                    Ok(ops.len() - 1)
                }
                Step::Answered(reply) => Err(reply),
            })
            .collect();
        let mut answers = self.pool.answer_all(&ops, now).into_iter();
        let mut out = Vec::with_capacity(msgs.len());
        for (msg, step) in msgs.iter().zip(steps) {
            let reply = match step {
                Err(reply) => reply.map(|r| *r),
                Ok(i) => {
                    let answer = answers.next().unwrap_or_else(|| {
                        Err(StoreError::Database(
                            "the store answered fewer questions than it was asked".into(),
                        ))
                    });
                    self.finish(msg, &ops[i], answer)
                }
            };
            out.extend(reply);
        }
        out
    }

    /// The packet decoded, if it is one and its MAC is within its rate; counted either way.
    fn admit(&mut self, bytes: &[u8], clock: Instant) -> Option<ClientMessage> {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        match crate::dhcp::wire::decode(bytes) {
            Ok(msg) if !self.limiter.allow(msg.chaddr, clock) => {
                self.rate_limited(&msg);
                None
            }
            Ok(msg) => Some(msg),
            Err(reason) => {
                self.stats.count_drop(reason);
                tracing::debug!(network = %self.cfg.network, reason = reason.as_str(), "dropped DHCP packet");
                None
            }
        }
    }

    /// Answer one decoded client message (RFC 2131 §4.3).
    pub fn handle(&mut self, msg: &ClientMessage, now: u64) -> Option<Outgoing> {
        match self.plan(msg) {
            Step::Answered(reply) => reply.map(|r| *r),
            Step::Ask(op) => {
                let answer = answer_one(self.pool.as_mut(), &op, now);
                self.finish(msg, &op, answer)
            }
        }
    }

    /// What a message needs from the store, or its answer when it needs nothing (RFC 2131
    /// §4.3: which messages are answered, and from which fields).
    fn plan(&mut self, msg: &ClientMessage) -> Step {
        let client = msg.client();
        let op = match msg.msg_type {
            MessageType::Discover => StoreOp::Offer {
                client,
                requested: msg.requested_ip,
            },
            MessageType::Request => {
                if !self.is_ours(msg.server_id) {
                    // The client chose another server's offer (RFC 2131 §4.3.2): what we hold
                    // for it may go.
                    tracing::debug!(network = %self.cfg.network, mac = %msg.chaddr, "client chose another server");
                    StoreOp::OfferNotTaken {
                        client,
                        chosen: msg.requested_ip,
                    }
                } else {
                    // SELECTING (server id + requested ip), INIT-REBOOT (requested ip, no
                    // server id, no ciaddr), RENEWING/REBINDING (ciaddr, no requested ip).
                    let ip = match (msg.server_id, msg.requested_ip, msg.ciaddr) {
                        (Some(_), Some(ip), _) => ip,
                        (None, Some(ip), Ipv4Addr::UNSPECIFIED) => ip,
                        (None, _, ciaddr) if !ciaddr.is_unspecified() => ciaddr,
                        _ => {
                            self.stats.count_drop(DropReason::BadRequestState);
                            return Step::Answered(None);
                        }
                    };
                    StoreOp::Request {
                        client,
                        ip,
                        hostname: self.hostname(msg),
                    }
                }
            }
            MessageType::Release => {
                if !self.is_ours(msg.server_id) || msg.ciaddr.is_unspecified() {
                    return Step::Answered(None);
                }
                self.stats.releases.fetch_add(1, Ordering::Relaxed);
                StoreOp::Release {
                    client,
                    ip: msg.ciaddr,
                }
            }
            MessageType::Decline => {
                let Some(ip) = msg.requested_ip else {
                    return Step::Answered(None);
                };
                if !self.is_ours(msg.server_id) {
                    return Step::Answered(None);
                }
                self.stats.declines.fetch_add(1, Ordering::Relaxed);
                StoreOp::Decline { client, ip }
            }
            MessageType::Inform => return Step::Answered(self.inform(msg).map(Box::new)),
            // decode() refuses server message types already.
            MessageType::Offer | MessageType::Ack | MessageType::Nak => {
                return Step::Answered(None)
            }
        };
        Step::Ask(op)
    }

    /// The reply to `msg` from the store's answer to its `op`.
    fn finish(
        &mut self,
        msg: &ClientMessage,
        op: &StoreOp,
        answer: Result<StoreAnswer, StoreError>,
    ) -> Option<Outgoing> {
        if let StoreOp::OfferNotTaken { .. } = op {
            // A store that cannot say so now lets the hold lapse on its own.
            if let Err(e) = answer {
                tracing::debug!(network = %self.cfg.network, error = %e, "could not drop the offer hold");
            }
            return None;
        }
        match (op, self.stored(msg, answer)?) {
            (_, StoreAnswer::Offered(offered)) => self.offered(msg, offered),
            (StoreOp::Request { ip, hostname, .. }, StoreAnswer::Requested(granted)) => {
                self.requested(msg, *ip, hostname.clone(), granted)
            }
            (StoreOp::Release { ip, .. }, StoreAnswer::Released(held)) => {
                let detail = (!held).then(|| "not this client's lease: ignored".to_string());
                self.event("release", msg, *ip, detail)
                    .log(&self.cfg.network);
                None
            }
            (StoreOp::Decline { ip, .. }, StoreAnswer::Declined(honoured)) => {
                let detail = if honoured {
                    "address in use: quarantined"
                } else {
                    "not offered or leased to this client: ignored"
                };
                self.event("decline", msg, *ip, Some(detail.into()))
                    .log(&self.cfg.network);
                None
            }
            (op, answer) => {
                let e = StoreError::Database(format!("the store answered {answer:?} to {op:?}"));
                self.store_failed(msg, &e);
                None
            }
        }
    }

    fn static_host(&self, mac: &Mac) -> Option<&StaticHost> {
        self.cfg.hosts.iter().find(|h| &h.mac == mac)
    }

    fn is_ours(&self, server_id: Option<Ipv4Addr>) -> bool {
        server_id.is_none_or(|id| id == self.cfg.server_ip)
    }

    /// The host name a lease gets: the reservation's, else the client's option 12.
    fn hostname(&self, msg: &ClientMessage) -> Option<String> {
        self.static_host(&msg.chaddr)
            .and_then(|h| h.name.clone())
            .or_else(|| msg.hostname.clone())
    }

    fn offered(&mut self, msg: &ClientMessage, offered: Option<Ipv4Addr>) -> Option<Outgoing> {
        let Some(ip) = offered else {
            self.exhausted(msg);
            return None;
        };
        self.stats.offers.fetch_add(1, Ordering::Relaxed);
        let kind = classify(msg);
        let (reply, _) = self.lease_reply(MessageType::Offer, msg, ip, kind);
        let wait = self.pool.offers_wait_for_commit();
        Some(self.outgoing(msg, reply, wait, None))
    }

    /// The store's answer, or None (and the client left unanswered) when it failed.
    fn stored<T>(&mut self, msg: &ClientMessage, result: Result<T, StoreError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.store_failed(msg, &e);
                None
            }
        }
    }

    /// A message the store could not handle: counted, and logged at most every
    /// STORE_WARN_EVERY (the store logs its own outages as they start and end).
    fn store_failed(&mut self, msg: &ClientMessage, e: &StoreError) {
        self.stats.store_failures.fetch_add(1, Ordering::Relaxed);
        let due = self
            .last_store_warning
            .is_none_or(|t| t.elapsed() >= STORE_WARN_EVERY);
        if due {
            tracing::warn!(
                network = %self.cfg.network,
                mac = %msg.chaddr,
                suppressed = self.store_suppressed,
                error = %e,
                "lease store failed: client left unanswered (no lease is acknowledged that was not stored)"
            );
            self.last_store_warning = Some(Instant::now());
            self.store_suppressed = 0;
        } else {
            self.store_suppressed += 1;
        }
    }

    fn exhausted(&mut self, msg: &ClientMessage) {
        self.stats.exhausted.fetch_add(1, Ordering::Relaxed);
        let due = self
            .last_exhausted_warning
            .is_none_or(|t| t.elapsed() >= EXHAUSTED_WARN_EVERY);
        if due {
            tracing::warn!(
                network = %self.cfg.network,
                mac = %msg.chaddr,
                suppressed = self.exhausted_suppressed,
                "DHCP pool exhausted: no address to offer (range {}-{})",
                self.cfg.range_start,
                self.cfg.range_end
            );
            self.last_exhausted_warning = Some(Instant::now());
            self.exhausted_suppressed = 0;
        } else {
            self.exhausted_suppressed += 1;
        }
    }

    /// A packet over its MAC's rate: counted, and logged at most every RATE_LIMITED_WARN_EVERY.
    fn rate_limited(&mut self, msg: &ClientMessage) {
        self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        let due = self
            .last_rate_warning
            .is_none_or(|t| t.elapsed() >= RATE_LIMITED_WARN_EVERY);
        if due {
            let limit = self.limiter.limit();
            tracing::warn!(
                network = %self.cfg.network,
                mac = %msg.chaddr,
                suppressed = self.rate_suppressed,
                "DHCP client over its rate limit ({} packets burst, {}/s): packets dropped",
                limit.burst,
                limit.per_second
            );
            self.last_rate_warning = Some(Instant::now());
            self.rate_suppressed = 0;
        } else {
            self.rate_suppressed += 1;
        }
    }

    fn requested(
        &mut self,
        msg: &ClientMessage,
        ip: Ipv4Addr,
        hostname: Option<String>,
        granted: Result<Lease, Nak>,
    ) -> Option<Outgoing> {
        let kind = classify(msg);
        match granted {
            Ok(lease) => {
                self.stats.acks.fetch_add(1, Ordering::Relaxed);
                let (reply, boot) = self.lease_reply(MessageType::Ack, msg, lease.ip, kind);
                let event = LeaseEvent {
                    what: "ack",
                    mac: msg.chaddr,
                    client_id: msg.client_id.clone(),
                    ip: lease.ip,
                    hostname: lease.hostname.clone().or(hostname),
                    kind,
                    boot: boot.map(|b| b.file),
                    detail: None,
                };
                Some(self.outgoing(msg, reply, true, Some(event)))
            }
            Err(nak) => {
                self.stats.naks.fetch_add(1, Ordering::Relaxed);
                let event = LeaseEvent {
                    what: "nak",
                    mac: msg.chaddr,
                    client_id: msg.client_id.clone(),
                    ip,
                    hostname,
                    kind,
                    boot: None,
                    detail: Some(nak.to_string()),
                };
                Some(self.nak(msg, &nak, event))
            }
        }
    }

    /// DHCPINFORM: configuration only, no lease, no yiaddr (RFC 2131 §4.3.5).
    fn inform(&mut self, msg: &ClientMessage) -> Option<Outgoing> {
        if msg.ciaddr.is_unspecified() {
            self.stats.count_drop(DropReason::BadRequestState);
            return None;
        }
        self.stats.informs.fetch_add(1, Ordering::Relaxed);
        let kind = classify(msg);
        let (mut reply, _) = self.lease_reply(MessageType::Ack, msg, Ipv4Addr::UNSPECIFIED, kind);
        reply
            .options
            .retain(|(c, _)| ![opt::LEASE_TIME, opt::RENEWAL_T1, opt::REBINDING_T2].contains(c));
        Some(self.outgoing(msg, reply, false, None))
    }

    fn event(
        &self,
        what: &'static str,
        msg: &ClientMessage,
        ip: Ipv4Addr,
        detail: Option<String>,
    ) -> LeaseEvent {
        LeaseEvent {
            what,
            mac: msg.chaddr,
            client_id: msg.client_id.clone(),
            ip,
            hostname: self.hostname(msg),
            kind: classify(msg),
            boot: None,
            detail,
        }
    }

    /// An OFFER or ACK for `yiaddr`, with network and boot options in the client's preferred order.
    fn lease_reply(
        &self,
        msg_type: MessageType,
        msg: &ClientMessage,
        yiaddr: Ipv4Addr,
        kind: ClientKind,
    ) -> (ReplyMessage, Option<BootReply>) {
        let cfg = &self.cfg;
        let host = self.static_host(&msg.chaddr);
        let boot = match boot_reply(
            &kind,
            cfg.boot.as_ref(),
            host,
            cfg.server_ip,
            msg.client_uuid.as_deref(),
            &self.files,
        ) {
            Ok(b) => Some(b),
            Err(why) => {
                log_no_boot(&cfg.network, msg, kind, &why);
                None
            }
        };
        let lease = cfg.lease_time.as_secs().min(u32::MAX as u64) as u32;

        // Options the client cannot do without come first: the encoder drops what does not fit.
        let mut required: Vec<(u8, Vec<u8>)> =
            vec![(opt::SERVER_ID, cfg.server_ip.octets().to_vec())];
        required.push((opt::LEASE_TIME, lease.to_be_bytes().to_vec()));
        required.push((opt::RENEWAL_T1, (lease / 2).to_be_bytes().to_vec()));
        required.push((
            opt::REBINDING_T2,
            ((lease as u64 * 7 / 8) as u32).to_be_bytes().to_vec(),
        ));
        required.push((opt::SUBNET_MASK, cfg.subnet.netmask().octets().to_vec()));
        if let Some(router) = cfg.router {
            required.push((opt::ROUTER, router.octets().to_vec()));
        }
        if let Some(routes) = classless_routes(&cfg.routes, cfg.router) {
            // RFC 3442 §2: a client that takes 121 ignores option 3, so the routes (with the
            // default one) matter as much as the router. 249 only for the clients asking for it
            // (Windows before Vista).
            if msg.param_request_list.contains(&opt::MS_CLASSLESS_ROUTES) {
                required.push((opt::MS_CLASSLESS_ROUTES, routes.clone()));
            }
            required.push((opt::CLASSLESS_ROUTES, routes));
        }

        let mut extra: Vec<(u8, Vec<u8>)> = vec![(
            opt::BROADCAST_ADDR,
            cfg.subnet.broadcast().octets().to_vec(),
        )];
        if !cfg.dns.is_empty() {
            extra.push((opt::DNS, cfg.dns.iter().flat_map(|a| a.octets()).collect()));
        }
        if let Some(domain) = &cfg.domain {
            extra.push((opt::DOMAIN_NAME, domain.as_bytes().to_vec()));
        }
        if let Some(name) = host.and_then(|h| h.name.as_ref()) {
            extra.push((opt::HOSTNAME, name.as_bytes().to_vec()));
        }
        if let Some(mtu) = cfg.mtu {
            extra.push((opt::MTU, mtu.to_be_bytes().to_vec()));
        }
        if !cfg.ntp.is_empty() {
            extra.push((
                opt::NTP_SERVERS,
                cfg.ntp.iter().flat_map(|a| a.octets()).collect(),
            ));
        }
        if let Some(b) = &boot {
            // Boot options matter more to firmware than DNS: put them right after the basics.
            required.extend(b.options());
        }
        // Honour the parameter request list's order among the optional ones.
        let prl = &msg.param_request_list;
        extra.sort_by_key(|(code, _)| prl.iter().position(|c| c == code).unwrap_or(usize::MAX));
        required.extend(extra);

        let file = boot
            .as_ref()
            .map(|b| b.file.as_bytes().to_vec())
            .unwrap_or_default();
        let reply = ReplyMessage {
            msg_type,
            xid: msg.xid,
            broadcast: msg.broadcast,
            ciaddr: msg.ciaddr,
            yiaddr,
            siaddr: boot.as_ref().map_or(Ipv4Addr::UNSPECIFIED, |b| b.siaddr),
            giaddr: msg.giaddr,
            chaddr: msg.chaddr,
            sname: Vec::new(),
            file,
            options: required,
            relay_info: msg.relay_info.clone(),
        };
        (reply, boot)
    }

    fn nak(&self, msg: &ClientMessage, nak: &Nak, event: LeaseEvent) -> Outgoing {
        let reply = ReplyMessage {
            msg_type: MessageType::Nak,
            xid: msg.xid,
            // RFC 2131 §4.3.2: a NAK through a relay asks the relay to broadcast it.
            broadcast: !msg.giaddr.is_unspecified(),
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: msg.giaddr,
            chaddr: msg.chaddr,
            sname: Vec::new(),
            file: Vec::new(),
            options: vec![
                (opt::SERVER_ID, self.cfg.server_ip.octets().to_vec()),
                (opt::MESSAGE, nak.to_string().into_bytes()),
            ],
            relay_info: msg.relay_info.clone(),
        };
        Outgoing {
            dest: Destination::for_reply(msg, &reply),
            max_message_size: msg.max_message_size.unwrap_or(0),
            reply,
            needs_flush: false,
            event: Some(event),
        }
    }

    fn outgoing(
        &self,
        msg: &ClientMessage,
        reply: ReplyMessage,
        needs_flush: bool,
        event: Option<LeaseEvent>,
    ) -> Outgoing {
        Outgoing {
            dest: Destination::for_reply(msg, &reply),
            max_message_size: msg.max_message_size.unwrap_or(0),
            reply,
            needs_flush,
            event,
        }
    }
}

/// Why a boot client got no file: a loop avoided is worth an info line (the admin has to act); a
/// kind nothing is configured for is normal and only a debug line.
pub(crate) fn log_no_boot(network: &str, msg: &ClientMessage, kind: ClientKind, why: &NoBoot) {
    match why {
        NoBoot::NotABootClient => {}
        NoBoot::WouldLoop { .. } => {
            tracing::info!(network, mac = %msg.chaddr, kind = %kind, "no boot file: {why}")
        }
        _ => tracing::debug!(network, mac = %msg.chaddr, kind = %kind, "address only: {why}"),
    }
}

/// Option 121's value (RFC 3442 §3): per route the prefix length, the significant octets of the
/// destination, then the router. With a `router` and no default route among `routes`, a default
/// route through `router` is added (a client taking 121 ignores option 3). None without routes.
pub fn classless_routes(routes: &[StaticRoute], router: Option<Ipv4Addr>) -> Option<Vec<u8>> {
    if routes.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut push = |dest: ipnet::Ipv4Net, via: Ipv4Addr| {
        let len = dest.prefix_len();
        out.push(len);
        out.extend_from_slice(&dest.network().octets()[..usize::from(len).div_ceil(8)]);
        out.extend_from_slice(&via.octets());
    };
    for r in routes {
        push(r.destination.trunc(), r.router);
    }
    if let Some(gw) = router {
        if !routes.iter().any(|r| r.destination.prefix_len() == 0) {
            push(ipnet::Ipv4Net::default(), gw);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dest: &str, via: [u8; 4]) -> StaticRoute {
        StaticRoute {
            destination: dest.parse().unwrap(),
            router: Ipv4Addr::from(via),
        }
    }

    /// RFC 3442 §3's own examples, and the default route added for option 3's sake.
    #[test]
    fn classless_routes_encode_as_rfc_3442_shows() {
        assert_eq!(
            classless_routes(&[], Some(Ipv4Addr::new(10, 0, 0, 1))),
            None
        );
        let v = classless_routes(
            &[
                route("10.17.0.0/16", [10, 0, 0, 9]),
                route("10.27.129.0/24", [10, 0, 0, 9]),
                route("10.229.0.128/25", [10, 0, 0, 9]),
                route("10.198.122.47/32", [10, 0, 0, 9]),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            v,
            [
                16, 10, 17, 10, 0, 0, 9, //
                24, 10, 27, 129, 10, 0, 0, 9, //
                25, 10, 229, 0, 128, 10, 0, 0, 9, //
                32, 10, 198, 122, 47, 10, 0, 0, 9,
            ]
        );
        let with_default = classless_routes(
            &[route("10.9.0.0/16", [10, 0, 0, 9])],
            Some([10, 0, 0, 1].into()),
        )
        .unwrap();
        assert_eq!(with_default, [16, 10, 9, 10, 0, 0, 9, 0, 10, 0, 0, 1]);
        let own_default = classless_routes(
            &[route("0.0.0.0/0", [10, 0, 0, 254])],
            Some([10, 0, 0, 1].into()),
        )
        .unwrap();
        assert_eq!(
            own_default,
            [0, 10, 0, 0, 254],
            "the admin's default route wins"
        );
        // Host bits in a destination are not sent.
        let sloppy = classless_routes(&[route("10.9.3.4/16", [10, 0, 0, 9])], None).unwrap();
        assert_eq!(sloppy, [16, 10, 9, 10, 0, 0, 9]);
    }
}
