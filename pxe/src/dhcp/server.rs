//! The DHCPv4 server of one network: one dedicated thread, a UDP socket bound to the bridge, and
//! group commit.
//!
//! Loop: wait up to 200 ms for a packet (so `stop` is noticed), drain whatever else is already
//! queued (up to `MAX_BATCH`), answer each, `commit` the lease store ONCE for the batch (one
//! fdatasync of the journal, or one COMMIT of the database: `dhcp::store`), and only then send
//! the batch's ACKs. If the commit fails no ACK of that batch leaves: clients retry, and a lease
//! we could not make durable is never promised. NAKs promise nothing and are sent whatever the
//! commit did; so are OFFERs, unless the store says they wait for it too (a shared database,
//! where the hold behind an offer exists for the other servers only once committed).

pub mod delivery;
pub mod handler;
pub mod lease_feed;
pub(crate) mod lease_view;
pub mod ratelimit;

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{DhcpConfig, ProxyConfig};
use crate::dhcp::pool::{unix_now, Lease, LeaseError, Pool, PoolConfig};
use crate::dhcp::proxy::{ProxyHandler, Via, BOOT_SERVER_PORT};
use crate::dhcp::store::{LeaseBackend, StoreHealth, StoreStatus};
use crate::dhcp::wire::{self, DropReason};
use crate::server_thread::ServerThread;

use delivery::{LinkSender, Sender, SERVER_PORT};
use handler::{Handler, Outgoing};
pub use lease_feed::{BoundLeases, BoundSet, LeaseFeed, LeaseSource, LeaseWatch};
use lease_view::LeaseView;

/// Most packets answered per group commit.
pub const MAX_BATCH: usize = 256;
/// How long one blocking receive waits before checking the stop flag.
const RECV_TIMEOUT: Duration = Duration::from_millis(200);
/// Receive queue asked for the DHCP socket: thousands of requests queued while a batch syncs.
/// A limit, not an allocation: the kernel charges only what is queued.
pub const RECV_QUEUE_BYTES: usize = 8 << 20;
/// Big enough for any DHCP message we accept (clients rarely exceed 576; jumbo-safe).
const RECV_BUF: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("network {network}: DHCP socket on {interface}:{port}: {source}")]
    Socket {
        network: String,
        interface: String,
        port: u16,
        source: io::Error,
    },
    #[error("network {network}: packet socket on {interface}: {source}")]
    LinkSocket {
        network: String,
        interface: String,
        source: io::Error,
    },
    #[error("network {network}: lease store: {source}")]
    Leases { network: String, source: LeaseError },
    #[error("network {network}: cannot start the DHCP thread: {source}")]
    Thread { network: String, source: io::Error },
}

/// Counters, readable while the server runs.
#[derive(Debug, Default)]
pub struct DhcpStats {
    pub received: AtomicU64,
    pub offers: AtomicU64,
    pub acks: AtomicU64,
    pub naks: AtomicU64,
    pub releases: AtomicU64,
    pub declines: AtomicU64,
    pub informs: AtomicU64,
    /// Well-formed packets left unanswered by design: a proxyDHCP server's non-PXE clients and
    /// REQUESTs meant for the other server.
    pub ignored: AtomicU64,
    /// Indexed by `DropReason::index()`.
    pub dropped: [AtomicU64; DropReason::ALL.len()],
    pub exhausted: AtomicU64,
    /// Packets dropped because their client MAC was over its rate limit (see `ratelimit`).
    pub rate_limited: AtomicU64,
    pub flush_errors: AtomicU64,
    /// ACKs (and waiting OFFERs) not sent because their batch's commit failed.
    pub acks_withheld: AtomicU64,
    pub send_errors: AtomicU64,
    /// Messages left unanswered because the lease store failed them (see `dhcp::store`).
    pub store_failures: AtomicU64,
}

/// A point-in-time copy of [`DhcpStats`] for status output (and the agent's control socket, which
/// sends it as JSON and reads it back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpStatsSnapshot {
    pub received: u64,
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    pub releases: u64,
    pub declines: u64,
    pub informs: u64,
    #[serde(default)]
    pub ignored: u64,
    /// By `DropReason::as_str`; reasons that never happened are left out.
    pub dropped_malformed: BTreeMap<String, u64>,
    pub exhausted: u64,
    pub rate_limited: u64,
    pub flush_errors: u64,
    pub acks_withheld: u64,
    pub send_errors: u64,
    #[serde(default)]
    pub store_failures: u64,
}

impl DhcpStats {
    pub fn count_drop(&self, reason: DropReason) {
        self.dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> DhcpStatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DhcpStatsSnapshot {
            received: l(&self.received),
            offers: l(&self.offers),
            acks: l(&self.acks),
            naks: l(&self.naks),
            releases: l(&self.releases),
            declines: l(&self.declines),
            informs: l(&self.informs),
            ignored: l(&self.ignored),
            dropped_malformed: DropReason::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), self.dropped(*r)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            exhausted: l(&self.exhausted),
            rate_limited: l(&self.rate_limited),
            flush_errors: l(&self.flush_errors),
            acks_withheld: l(&self.acks_withheld),
            send_errors: l(&self.send_errors),
            store_failures: l(&self.store_failures),
        }
    }
}

/// Answer a batch of packets with one commit: returns the replies that may be sent now (NAKs,
/// INFORM ACKs always; lease ACKs, and OFFERs that wait for the commit, only if the commit
/// succeeded). Socket-free, for tests too.
pub fn answer_batch(handler: &mut Handler, packets: &[&[u8]], now: u64) -> Vec<Outgoing> {
    let mut out = handler.handle_batch(packets, now);
    if !handler.pool().has_pending() {
        return out;
    }
    if let Err(e) = handler.pool_mut().commit() {
        let withheld = out.iter().filter(|o| o.needs_flush).count() as u64;
        let stats = handler.stats();
        stats.flush_errors.fetch_add(1, Ordering::Relaxed);
        stats.acks_withheld.fetch_add(withheld, Ordering::Relaxed);
        tracing::error!(
            network = %handler.config().network,
            error = %e,
            acks_withheld = withheld,
            "lease store commit failed: this batch's ACKs are NOT sent (clients will retry)"
        );
        out.retain(|o| !o.needs_flush);
    }
    out
}

pub struct DhcpServer;

impl DhcpServer {
    /// Open the lease journal and the sockets (in the caller's network namespace) and start the
    /// network's DHCP thread.
    pub fn start(cfg: DhcpConfig) -> Result<DhcpHandle, DhcpError> {
        let pool = Pool::open(pool_config(&cfg)).map_err(|source| DhcpError::Leases {
            network: cfg.network.clone(),
            source,
        })?;
        DhcpServer::start_with_store(cfg, Box::new(pool))
    }

    /// Open the sockets and start the network's DHCP thread over `store` (the journal's
    /// [`Pool`], or a database other servers share: see `dhcp::store`).
    pub fn start_with_store(
        cfg: DhcpConfig,
        store: Box<dyn LeaseBackend>,
    ) -> Result<DhcpHandle, DhcpError> {
        let network = cfg.network.clone();
        let socket =
            bind_socket(&cfg.interface, SERVER_PORT).map_err(|source| DhcpError::Socket {
                network: network.clone(),
                interface: cfg.interface.clone(),
                port: SERVER_PORT,
                source,
            })?;
        let link = LinkSender::open(&cfg.interface).map_err(|source| DhcpError::LinkSocket {
            network: network.clone(),
            interface: cfg.interface.clone(),
            source,
        })?;
        let stats = Arc::new(DhcpStats::default());
        let health = Some(store.health());
        let leases = Arc::new(LeaseView::new(store.leases().unwrap_or_default()));
        let feed = LeaseFeed::new(store.as_ref(), unix_now());
        let watch = feed.watch();
        let sender = Sender {
            udp: socket,
            link,
            server_ip: cfg.server_ip,
        };
        let handler = Handler::with_store(cfg, store, stats.clone());
        let thread = {
            let leases = leases.clone();
            spawn_thread(&network, "dhcp", move |stop| {
                serve(handler, sender, leases, feed, stop)
            })?
        };
        tracing::info!(network = %network, "DHCP server started");
        Ok(DhcpHandle {
            network,
            stats,
            health,
            leases,
            watch,
            thread,
        })
    }

    /// Start a proxyDHCP server (`dhcp::proxy`) on the network's interface, UDP 67 and 4011. It
    /// has no leases: `leases()` is empty and `leases_watch()` never changes.
    pub fn start_proxy(cfg: ProxyConfig) -> Result<DhcpHandle, DhcpError> {
        let network = cfg.network.clone();
        let socket_err = |port| {
            let (network, interface) = (network.clone(), cfg.interface.clone());
            move |source| DhcpError::Socket {
                network,
                interface,
                port,
                source,
            }
        };
        let dhcp = bind_socket(&cfg.interface, SERVER_PORT).map_err(socket_err(SERVER_PORT))?;
        let boot =
            bind_socket(&cfg.interface, BOOT_SERVER_PORT).map_err(socket_err(BOOT_SERVER_PORT))?;
        let link = LinkSender::open(&cfg.interface).map_err(|source| DhcpError::LinkSocket {
            network: network.clone(),
            interface: cfg.interface.clone(),
            source,
        })?;
        let stats = Arc::new(DhcpStats::default());
        let leases = Arc::new(LeaseView::empty());
        let watch = LeaseWatch::fixed(BoundLeases::default());
        let sender = Sender {
            udp: dhcp,
            link,
            server_ip: cfg.server_ip,
        };
        let handler = ProxyHandler::new(cfg, stats.clone());
        let thread = spawn_thread(&network, "proxydhcp", move |stop| {
            serve_proxy(handler, sender, boot, stop)
        })?;
        tracing::info!(network = %network, "proxyDHCP server started (UDP 67 and 4011)");
        Ok(DhcpHandle {
            network,
            stats,
            health: None,
            leases,
            watch,
            thread,
        })
    }
}

/// The server's thread, named `<kind>-<network>`.
fn spawn_thread(
    network: &str,
    kind: &str,
    serve: impl FnOnce(Arc<AtomicBool>) + Send + 'static,
) -> Result<ServerThread, DhcpError> {
    ServerThread::spawn(kind, network, serve).map_err(|source| DhcpError::Thread {
        network: network.to_string(),
        source,
    })
}

pub fn pool_config(cfg: &DhcpConfig) -> PoolConfig {
    PoolConfig {
        network: cfg.network.clone(),
        server_ip: cfg.server_ip,
        subnet: cfg.subnet,
        range_start: cfg.range_start,
        range_end: cfg.range_end,
        lease_time: cfg.lease_time,
        reservations: cfg.hosts.iter().map(|h| (h.mac, h.ip)).collect(),
        journal: cfg.lease_file.clone(),
    }
}

fn bind_socket(interface: &str, port: u16) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    // Several networks each bind 0.0.0.0:67; the device binding keeps their traffic apart.
    s.bind_device(Some(interface.as_bytes()))?;
    deep_recv_queue(&s);
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
    s.set_read_timeout(Some(RECV_TIMEOUT))?;
    Ok(s.into())
}

/// Room for a burst while the server fsyncs: a [`RECV_QUEUE_BYTES`] receive queue. SO_RCVBUF is
/// capped at net.core.rmem_max (208 KiB unless the admin raised it: a few hundred queued
/// requests); SO_RCVBUFFORCE, which the agent's CAP_NET_ADMIN allows, is not. Best effort:
/// without the capability the capped size stays. The DHCPv6 server's socket gets the same.
pub(crate) fn deep_recv_queue(s: &socket2::Socket) {
    let _ = s.set_recv_buffer_size(RECV_QUEUE_BYTES);
    let bytes = RECV_QUEUE_BYTES as libc::c_int;
    // SAFETY: a valid socket and a c_int option value of the stated size.
    let _ = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Handle to a running server.
pub struct DhcpHandle {
    network: String,
    stats: Arc<DhcpStats>,
    /// The lease store's state (None for a proxyDHCP server, which has none).
    health: Option<Arc<StoreHealth>>,
    leases: Arc<LeaseView<Lease>>,
    watch: LeaseWatch,
    thread: ServerThread,
}

impl DhcpHandle {
    pub fn network(&self) -> &str {
        &self.network
    }

    pub fn stats(&self) -> Arc<DhcpStats> {
        self.stats.clone()
    }

    /// Where the leases are kept and whether that works now (None for a proxyDHCP server).
    pub fn store_status(&self) -> Option<StoreStatus> {
        self.health.as_ref().map(|h| h.snapshot())
    }

    /// Unexpired leases, fetched from the server thread between batches (durable ones only:
    /// published after the flush).
    pub fn leases(&self) -> Vec<Lease> {
        let now = unix_now();
        let mut all = self.leases.read(RECV_TIMEOUT * 5);
        all.retain(|l| l.expires > now);
        all
    }

    /// Follow the bound leases live (for DNS): the last published set now (the current one
    /// within one receive timeout, if leases changed while nobody followed), and a new one within about
    /// [`lease_feed::PUBLISH_EVERY`] + one receive timeout after a lease is bound, renewed,
    /// released or declined, or expires. See [`LeaseFeed`] for what a set holds.
    pub fn leases_watch(&self) -> tokio::sync::watch::Receiver<Arc<BoundLeases>> {
        self.watch.subscribe()
    }

    /// Stop the thread (within ~200 ms) and wait for it (dropping the handle does the same).
    pub fn stop(mut self) {
        self.thread.stop();
    }
}

fn serve(
    mut handler: Handler,
    sender: Sender,
    leases: Arc<LeaseView<Lease>>,
    mut feed: LeaseFeed<dyn LeaseBackend>,
    stop: Arc<AtomicBool>,
) {
    let network = handler.config().network.clone();
    let mut bufs: Vec<Vec<u8>> = Vec::with_capacity(MAX_BATCH);
    let mut first = vec![0u8; RECV_BUF];
    while !stop.load(Ordering::Relaxed) {
        bufs.clear();
        match sender.udp.recv_from(&mut first) {
            Ok((n, _)) => bufs.push(first[..n].to_vec()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                leases.publish_if_requested(handler.pool(), unix_now());
                feed.update(handler.pool(), unix_now());
                continue;
            }
            Err(e) => {
                tracing::error!(network = %network, error = %e, "DHCP receive failed");
                std::thread::sleep(RECV_TIMEOUT);
                continue;
            }
        }
        drain(&sender.udp, &mut bufs);
        let packets: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        let out = answer_batch(&mut handler, &packets, unix_now());
        for o in &out {
            send_one(&sender, handler.stats(), &network, o);
        }
        // Publish the view for `leases()` after the flush, so it shows only durable leases
        // (plus, after a failed flush, the ones the pool keeps reserved).
        leases.publish_if_requested(handler.pool(), unix_now());
        feed.update(handler.pool(), unix_now());
    }
    if handler.pool().has_pending() {
        if let Err(e) = handler.pool_mut().commit() {
            tracing::error!(network = %network, error = %e, "final lease store commit failed");
        }
    }
    leases.close(handler.pool(), unix_now());
    feed.update(handler.pool(), unix_now());
    tracing::info!(network = %network, "DHCP server stopped");
}

/// Send one reply, log its event once it left.
fn send_one(sender: &Sender, stats: &DhcpStats, network: &str, o: &Outgoing) {
    let bytes = wire::encode(&o.reply, o.max_message_size);
    match sender.send(&bytes, o.dest) {
        Ok(()) => {
            if let Some(ev) = &o.event {
                ev.log(network);
            }
        }
        Err(e) => {
            stats.send_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(network = %network, dest = ?o.dest, error = %e, "DHCP reply not sent");
        }
    }
}

/// The proxyDHCP loop: wait on both sockets, answer each packet as it comes (nothing to batch:
/// no lease is written).
fn serve_proxy(mut handler: ProxyHandler, sender: Sender, boot: UdpSocket, stop: Arc<AtomicBool>) {
    let network = handler.config().network.clone();
    let mut buf = vec![0u8; RECV_BUF];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [
            libc::pollfd {
                fd: sender.udp.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: boot.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, RECV_TIMEOUT.as_millis() as libc::c_int) };
        if n <= 0 {
            continue; // timeout, EINTR: look at the stop flag again
        }
        for (i, pfd) in fds.iter().enumerate() {
            if pfd.revents & libc::POLLIN == 0 {
                continue;
            }
            let socket = if i == 0 { &sender.udp } else { &boot };
            let (len, from) = match socket.recv_from(&mut buf) {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(network = %network, error = %e, "proxyDHCP receive failed");
                    continue;
                }
            };
            let via = match (i, from) {
                (0, _) => Via::Dhcp,
                (_, std::net::SocketAddr::V4(from)) => Via::BootServer { from },
                _ => continue,
            };
            if let Some(o) = handler.handle_packet(&buf[..len], via) {
                send_one(&sender, handler.stats(), &network, &o);
            }
        }
    }
    tracing::info!(network = %network, "proxyDHCP server stopped");
}

/// Take everything already queued, without blocking, up to MAX_BATCH packets.
fn drain(socket: &UdpSocket, bufs: &mut Vec<Vec<u8>>) {
    let mut buf = [0u8; RECV_BUF];
    while bufs.len() < MAX_BATCH {
        // SAFETY: buf is valid for RECV_BUF bytes for the duration of the call.
        let n = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            break; // EAGAIN: queue empty (or an error the blocking receive will report)
        }
        bufs.push(buf[..n as usize].to_vec());
    }
}
