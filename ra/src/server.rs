//! One advertiser per bridge: a raw ICMPv6 socket bound to the bridge and its link-local
//! address, the [`Scheduler`] driven by the real clock, counters, and a final advertisement
//! with router lifetime 0 on a clean stop.
//!
//! The socket (RFC 4861 §6.1.2, §6.2.6, §4.1): hop limit 255 on every advertisement, sent from
//! the bridge's link-local address (hosts drop advertisements from any other source); joined to
//! ff02::2 (all routers) on the bridge to hear solicitations; an ICMPv6 filter passes only
//! solicitations; each one must have arrived with hop limit 255 (so it was never routed).
//!
//! The link-local address exists only once the bridge has carrier (a port that is up) and has
//! finished duplicate address detection, so the advertiser waits for it rather than failing:
//! a network without guests yet has nobody to advertise to. When the bridge disappears or is
//! made again (a new ifindex), the socket is closed and the wait starts over; opening it again
//! needs only CAP_NET_RAW, which the agent keeps after dropping privileges.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socket2::{Domain, MaybeUninitSlice, MsgHdrMut, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::RaConfig;
use crate::schedule::{Destination, Random, Scheduler};
use crate::wire::{Solicitation, ROUTER_SOLICITATION};

/// ff02::1: all nodes.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// ff02::2: all routers, where solicitations go.
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// How often the advertiser looks for the link-local address while it waits, and checks
/// that the bridge is still the device it opened the socket on.
const LOOK_AGAIN: Duration = Duration::from_millis(200);
const CHECK_LINK: Duration = Duration::from_secs(1);
/// linux/icmpv6.h: ICMPV6_FILTER, a setsockopt on level IPPROTO_ICMPV6.
const ICMPV6_FILTER: libc::c_int = 1;
/// include/net/if_inet6.h: address flags in /proc/net/if_inet6.
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;
/// The scope of a link-local address in /proc/net/if_inet6 (IPV6_ADDR_LINKLOCAL).
const SCOPE_LINK: u32 = 0x20;

/// Counters of one advertiser, shared with the status reader.
#[derive(Debug, Default)]
pub struct RaStats {
    advertising: AtomicBool,
    multicast_sent: AtomicU64,
    unicast_sent: AtomicU64,
    final_sent: AtomicU64,
    solicitations: AtomicU64,
    invalid: AtomicU64,
    send_errors: AtomicU64,
    /// Times the socket was opened (1 after the first start; more after the bridge came back).
    opened: AtomicU64,
}

/// A point-in-time copy of [`RaStats`] for status output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaStatsSnapshot {
    /// The socket is open on the bridge's link-local address (false: waiting for it).
    pub advertising: bool,
    pub multicast_sent: u64,
    pub unicast_sent: u64,
    /// Advertisements with router lifetime 0 sent on stop.
    pub final_sent: u64,
    /// Valid router solicitations received.
    pub solicitations: u64,
    /// Solicitations dropped as invalid (hop limit, length, options).
    pub invalid: u64,
    pub send_errors: u64,
    pub opened: u64,
}

impl RaStats {
    pub fn snapshot(&self) -> RaStatsSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RaStatsSnapshot {
            advertising: self.advertising.load(Ordering::Relaxed),
            multicast_sent: l(&self.multicast_sent),
            unicast_sent: l(&self.unicast_sent),
            final_sent: l(&self.final_sent),
            solicitations: l(&self.solicitations),
            invalid: l(&self.invalid),
            send_errors: l(&self.send_errors),
            opened: l(&self.opened),
        }
    }

    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The running advertiser.
pub struct RaHandle {
    stop: watch::Sender<Option<bool>>,
    task: JoinHandle<()>,
    stats: Arc<RaStats>,
}

impl RaHandle {
    pub fn stats(&self) -> RaStatsSnapshot {
        self.stats.snapshot()
    }

    /// Stop advertising; with `farewell`, first send one advertisement with router lifetime 0
    /// so hosts drop this router at once (RFC 4861 §6.2.5). Without it (a restart with new
    /// settings) the next advertiser simply takes over.
    pub async fn stop(self, farewell: bool) {
        let _ = self.stop.send(Some(farewell));
        let _ = self.task.await;
    }
}

pub struct RaServer;

impl RaServer {
    /// Start advertising `cfg` on its bridge, on the current tokio runtime. Never fails: the
    /// advertiser waits for the bridge and its link-local address.
    pub fn start(cfg: RaConfig) -> RaHandle {
        let stats = Arc::new(RaStats::default());
        let (stop, stop_rx) = watch::channel(None);
        let task = tokio::spawn(run(cfg, stats.clone(), stop_rx));
        RaHandle { stop, task, stats }
    }
}

/// How one open socket's life ended.
enum Ended {
    Stopped,
    /// The bridge went away or changed: wait for it again.
    Lost(String),
}

async fn run(cfg: RaConfig, stats: Arc<RaStats>, mut stop: watch::Receiver<Option<bool>>) {
    let mut waiting_logged = false;
    let mut last_error: Option<String> = None;
    loop {
        let found = link_local(&cfg.interface);
        let Some((ifindex, lladdr)) = found else {
            if !waiting_logged {
                tracing::info!(network = %cfg.network, interface = %cfg.interface,
                    "RA: waiting for the bridge's link-local address (it appears once a port is up)");
                waiting_logged = true;
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(LOOK_AGAIN) => continue,
            }
        };
        let sock = match open(&cfg.interface, ifindex, lladdr) {
            Ok(s) => s,
            Err(e) => {
                let text = format!("opening the ICMPv6 socket on {}: {e}", cfg.interface);
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::error!(network = %cfg.network, "RA: {text}; retrying");
                    last_error = Some(text);
                }
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(CHECK_LINK) => continue,
                }
            }
        };
        last_error = None;
        waiting_logged = false;
        RaStats::bump(&stats.opened);
        stats.advertising.store(true, Ordering::Relaxed);
        tracing::info!(network = %cfg.network, interface = %cfg.interface, source = %lladdr,
            prefix = %cfg.address.trunc(), "RA: advertising");
        let ended = advertise(&cfg, &stats, sock, ifindex, &mut stop).await;
        stats.advertising.store(false, Ordering::Relaxed);
        match ended {
            Ended::Stopped => return,
            Ended::Lost(why) => {
                tracing::warn!(network = %cfg.network, "RA: {why}; waiting for the bridge again")
            }
        }
    }
}

async fn advertise(
    cfg: &RaConfig,
    stats: &RaStats,
    sock: Socket,
    ifindex: u32,
    stop: &mut watch::Receiver<Option<bool>>,
) -> Ended {
    // SAFETY: the socket is moved into the AsyncFd and stays open, unchanged, as long as it.
    let registered =
        unsafe { AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE) };
    let sock = match registered.map_err(|e| e.into_parts().1) {
        Ok(s) => s,
        Err(e) => return Ended::Lost(format!("registering the socket: {e}")),
    };
    let message = cfg.advertisement(false).encode();
    let mut schedule = Scheduler::new(Instant::now(), cfg.intervals, Random);
    let mut check = tokio::time::interval(CHECK_LINK);
    loop {
        let wake = tokio::time::Instant::from_std(schedule.next_wakeup());
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() == Some(true) {
                    let farewell = cfg.advertisement(true).encode();
                    match send(sock.get_ref(), &farewell, ALL_NODES, ifindex) {
                        Ok(()) => RaStats::bump(&stats.final_sent),
                        Err(e) => {
                            RaStats::bump(&stats.send_errors);
                            tracing::warn!(network = %cfg.network, "RA: final advertisement not sent: {e}");
                        }
                    }
                }
                return Ended::Stopped;
            }
            _ = tokio::time::sleep_until(wake) => {
                for d in schedule.due(Instant::now()) {
                    let (to, counter) = match d {
                        Destination::AllNodes => (ALL_NODES, &stats.multicast_sent),
                        Destination::Unicast(a) => (a, &stats.unicast_sent),
                    };
                    match send(sock.get_ref(), &message, to, ifindex) {
                        Ok(()) => RaStats::bump(counter),
                        Err(e) if gone(&e) => return Ended::Lost(format!("sending on {}: {e}", cfg.interface)),
                        Err(e) => {
                            RaStats::bump(&stats.send_errors);
                            tracing::debug!(network = %cfg.network, %to, "RA: send failed: {e}");
                        }
                    }
                }
            }
            _ = check.tick() => {
                match interface_index(&cfg.interface) {
                    Some(i) if i == ifindex => {}
                    Some(i) => return Ended::Lost(format!("{} is a new device now (ifindex {ifindex} → {i})", cfg.interface)),
                    None => return Ended::Lost(format!("{} is gone", cfg.interface)),
                }
            }
            r = sock.readable() => {
                let mut guard = match r {
                    Ok(g) => g,
                    Err(e) => return Ended::Lost(format!("waiting on the socket: {e}")),
                };
                loop {
                    match receive(sock.get_ref()) {
                        Ok(Some(rs)) => match rs {
                            Received::Valid(source) => {
                                RaStats::bump(&stats.solicitations);
                                schedule.solicited(Instant::now(), source);
                            }
                            Received::Invalid(why) => {
                                RaStats::bump(&stats.invalid);
                                tracing::debug!(network = %cfg.network, "RA: solicitation dropped: {why}");
                            }
                        },
                        Ok(None) => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) if gone(&e) => return Ended::Lost(format!("receiving on {}: {e}", cfg.interface)),
                        Err(e) => {
                            tracing::debug!(network = %cfg.network, "RA: receive failed: {e}");
                            guard.clear_ready();
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Errors that mean the device under the socket is gone or down.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENODEV | libc::ENXIO | libc::EADDRNOTAVAIL | libc::ENETDOWN)
    )
}

fn interface_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads the NUL-terminated string and nothing else.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The interface's ifindex and usable link-local address, from this namespace's
/// /proc/net/if_inet6 (None while it has none, or only a tentative one).
fn link_local(interface: &str) -> Option<(u32, Ipv6Addr)> {
    let text = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
    usable_link_local(&text, interface)
}

/// [`link_local`] on the file's text: lines of address, ifindex, prefix length, scope, flags
/// (all hex) and the interface name.
pub(crate) fn usable_link_local(text: &str, interface: &str) -> Option<(u32, Ipv6Addr)> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [addr, index, _, scope, flags, name] = f.as_slice() else {
            return None;
        };
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        if *name != interface
            || hex(scope)? != SCOPE_LINK
            || hex(flags)? & (IFA_F_TENTATIVE | IFA_F_DADFAILED) != 0
        {
            return None;
        }
        let bits = u128::from_str_radix(addr, 16)
            .ok()
            .filter(|_| addr.len() == 32)?;
        Some((hex(index)?, Ipv6Addr::from(bits)))
    })
}

fn open(interface: &str, ifindex: u32, lladdr: Ipv6Addr) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.set_nonblocking(true)?;
    s.bind_device(Some(interface.as_bytes()))?;
    s.bind(&SockAddr::from(SocketAddrV6::new(lladdr, 0, 0, ifindex)))?;
    s.set_multicast_if_v6(ifindex)?;
    s.set_multicast_hops_v6(255)?;
    s.set_unicast_hops_v6(255)?;
    s.set_multicast_loop_v6(false)?;
    s.set_recv_hoplimit_v6(true)?;
    s.join_multicast_v6(&ALL_ROUTERS, ifindex)?;
    only_solicitations(&s)?;
    Ok(s)
}

/// The ICMPv6 filter: block every type but router solicitation (a set bit blocks its type).
fn only_solicitations(s: &Socket) -> io::Result<()> {
    let mut filter = [u32::MAX; 8];
    let t = usize::from(ROUTER_SOLICITATION);
    filter[t >> 5] &= !(1u32 << (t & 31));
    // SAFETY: setsockopt reads exactly size_of_val(&filter) bytes from a live local array; the
    // fd is the open socket `s` owns.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_ICMPV6,
            ICMPV6_FILTER,
            filter.as_ptr() as *const libc::c_void,
            std::mem::size_of_val(&filter) as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn send(s: &Socket, message: &[u8], to: Ipv6Addr, ifindex: u32) -> io::Result<()> {
    s.send_to(
        message,
        &SockAddr::from(SocketAddrV6::new(to, 0, 0, ifindex)),
    )
    .map(|_| ())
}

/// What one received packet is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Valid(Ipv6Addr),
    Invalid(String),
}

/// One queued solicitation, or None when nothing is queued.
fn receive(s: &Socket) -> io::Result<Option<Received>> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
    let mut control = [MaybeUninit::<u8>::uninit(); 64];
    let mut from = SockAddr::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
    let mut bufs = [MaybeUninitSlice::new(&mut buf)];
    let mut msg = MsgHdrMut::new()
        .with_addr(&mut from)
        .with_buffers(&mut bufs)
        .with_control(&mut control);
    let n = match s.recvmsg(&mut msg, 0) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    };
    let control_len = msg.control_len();
    // SAFETY: recvmsg initialized the first `n` bytes of `buf` and `control_len` of `control`
    // (both within their arrays: the kernel never reports more than it was given).
    let (payload, control) = unsafe {
        (
            std::slice::from_raw_parts(buf.as_ptr() as *const u8, n.min(buf.len())),
            std::slice::from_raw_parts(
                control.as_ptr() as *const u8,
                control_len.min(control.len()),
            ),
        )
    };
    let Some(source) = from.as_socket_ipv6().map(|a| *a.ip()) else {
        return Ok(Some(Received::Invalid("not from an IPv6 address".into())));
    };
    Ok(Some(classify(payload, control, source)))
}

/// Is this a valid solicitation (RFC 4861 §6.1.1)? From the payload, the control messages
/// (hop limit) and the source address.
pub fn classify(payload: &[u8], control: &[u8], source: Ipv6Addr) -> Received {
    match hop_limit(control) {
        Some(255) => {}
        Some(h) => return Received::Invalid(format!("hop limit {h}, not 255 (it was routed)")),
        None => return Received::Invalid("no hop limit reported".into()),
    }
    match Solicitation::parse(payload, source) {
        Ok(_) => Received::Valid(source),
        Err(e) => Received::Invalid(e.to_string()),
    }
}

/// The IPV6_HOPLIMIT control message's value, walking the cmsg headers as the kernel lays
/// them out (length, level, type, then data aligned to the machine word).
pub fn hop_limit(control: &[u8]) -> Option<u8> {
    let word = std::mem::size_of::<usize>();
    let align = |n: usize| (n + word - 1) & !(word - 1);
    let header = align(word + 8);
    let mut at = 0;
    while at + header <= control.len() {
        let len = usize::from_ne_bytes(control[at..at + word].try_into().ok()?);
        let level = i32::from_ne_bytes(control[at + word..at + word + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(control[at + word + 4..at + word + 8].try_into().ok()?);
        // A length past the buffer (or past usize) ends the walk: found by the ra_input target.
        if len < header || at.checked_add(len)? > control.len() {
            return None;
        }
        if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_HOPLIMIT && len >= header + 4 {
            let v = i32::from_ne_bytes(control[at + header..at + header + 4].try_into().ok()?);
            return u8::try_from(v).ok();
        }
        at += align(len);
    }
    None
}

/// One control message carrying an `int`, laid out as the kernel writes it (the inverse of
/// [`hop_limit`]'s walk): for tests and the fuzz target, which have no kernel to ask.
pub fn cmsg(level: i32, kind: i32, value: i32) -> Vec<u8> {
    let word = std::mem::size_of::<usize>();
    let align = |n: usize| (n + word - 1) & !(word - 1);
    let header = align(word + 8);
    let mut out = Vec::new();
    out.extend((header + 4).to_ne_bytes());
    out.extend(level.to_ne_bytes());
    out.extend(kind.to_ne_bytes());
    out.resize(header, 0);
    out.extend(value.to_ne_bytes());
    out.resize(align(header + 4), 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const IF_INET6: &str = "\
00000000000000000000000000000001 01 80 10 80       lo
fd001220000000000000000000000001 05 40 00 80   br-lab
fe800000000000005054fffe010203ff 05 40 20 c0   br-lab
fe800000000000005054fffe01020304 06 40 20 80   br-two
";

    #[test]
    fn only_a_finished_link_local_address_of_the_interface_is_used() {
        // br-lab's link-local is tentative (0x40 in c0): not yet.
        assert_eq!(usable_link_local(IF_INET6, "br-lab"), None);
        assert_eq!(
            usable_link_local(IF_INET6, "br-two"),
            Some((6, "fe80::5054:fffe:102:304".parse().unwrap()))
        );
        let done = IF_INET6.replace("20 c0", "20 80");
        assert_eq!(
            usable_link_local(&done, "br-lab"),
            Some((5, "fe80::5054:fffe:102:3ff".parse().unwrap()))
        );
        assert_eq!(usable_link_local(&done, "br-lab0"), None);
        assert_eq!(usable_link_local("garbage\n\n1 2 3", "br-lab"), None);
    }

    #[test]
    fn the_hop_limit_is_read_from_the_control_messages() {
        let hl = cmsg(libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, 255);
        assert_eq!(hop_limit(&hl), Some(255));
        let mut two = cmsg(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, 0);
        two.extend(cmsg(libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, 64));
        assert_eq!(hop_limit(&two), Some(64));
        assert_eq!(hop_limit(&[]), None);
        assert_eq!(hop_limit(&hl[..5]), None);
        let mut lying = hl.clone();
        lying[0] = 200; // a length past the buffer
        assert_eq!(hop_limit(&lying), None);
        let mut huge = hl.clone();
        huge[..std::mem::size_of::<usize>()].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(hop_limit(&huge), None);
    }

    #[test]
    fn a_solicitation_must_arrive_with_hop_limit_255() {
        let rs = Solicitation {
            source_lladdr: None,
        }
        .encode();
        let src: Ipv6Addr = "fe80::2".parse().unwrap();
        let ok = cmsg(libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, 255);
        assert!(matches!(classify(&rs, &ok, src), Received::Valid(a) if a == src));
        let routed = cmsg(libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, 254);
        assert!(matches!(classify(&rs, &routed, src), Received::Invalid(w) if w.contains("254")));
        assert!(matches!(classify(&rs, &[], src), Received::Invalid(_)));
        assert!(matches!(classify(&rs[..4], &ok, src), Received::Invalid(_)));
    }
}
