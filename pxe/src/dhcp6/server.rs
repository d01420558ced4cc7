//! The DHCPv6 server of one network: one thread, a UDP socket on `[::]:547` bound to the
//! bridge and joined to All_DHCP_Relay_Agents_and_Servers (ff02::1:2) there, and group commit
//! as in the DHCPv4 server: receive a batch, answer each packet, flush the v6 journal once (one
//! fdatasync), and only then send the Replies that bind, extend, free or quarantine an address.
//! If the flush fails none of those leave (clients retransmit); Advertise and Confirm replies
//! promise nothing and are sent whatever the flush did.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::handler::{Handler6, Reply6};
use super::pool::Pool6;
use super::server_duid;
use super::stats::Dhcp6Stats;
use crate::config::Dhcp6Config;
use crate::dhcp::pool::unix_now;
use crate::dhcp::server::lease_view::LeaseView;
use crate::dhcp::server::{
    deep_recv_queue, BoundSet, LeaseFeed, LeaseSource, LeaseWatch, MAX_BATCH,
};
use crate::dhcp::store::StoreError;
use crate::leases::v6::Lease6;
use crate::leases::LeaseError;
use crate::server_thread::ServerThread;

/// The DHCPv6 server port.
pub const SERVER_PORT: u16 = 547;
/// All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1).
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
const RECV_TIMEOUT: Duration = Duration::from_millis(200);
/// A DHCPv6 message fits a 1280-byte minimum MTU link with room to spare; a bigger one is
/// nothing a client sends.
const RECV_BUF: usize = 4096;

/// The DHCPv6 server's lease sets, as [`Dhcp6Handle::leases_watch`] gives them.
pub type BoundLeases6 = BoundSet<Lease6>;

#[derive(Debug, thiserror::Error)]
pub enum Dhcp6Error {
    #[error("network {network}: DHCPv6 socket on {interface} (UDP 547, ff02::1:2): {source}")]
    Socket {
        network: String,
        interface: String,
        source: io::Error,
    },
    #[error("network {network}: DHCPv6 server DUID {}: {source}", path.display())]
    Duid {
        network: String,
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("network {network}: DHCPv6 lease store: {source}")]
    Leases { network: String, source: LeaseError },
    #[error("network {network}: cannot start the DHCPv6 thread: {source}")]
    Thread { network: String, source: io::Error },
}

impl LeaseSource for Pool6 {
    type Lease = Lease6;
    fn generation(&self) -> u64 {
        self.store().generation()
    }
    fn leases_at(&self, now: u64) -> Result<Vec<Lease6>, StoreError> {
        Ok(Pool6::leases_at(self, now))
    }
    fn expires(lease: &Lease6) -> u64 {
        lease.expires
    }
}

/// Answers a batch with one flush: the replies that may be sent now. Socket-free (tests and
/// the fuzz target use it).
pub fn answer_batch(
    handler: &mut Handler6,
    packets: &[(&[u8], SocketAddrV6)],
    now: u64,
) -> Vec<Reply6> {
    let mut out: Vec<Reply6> = packets
        .iter()
        .filter_map(|(p, from)| handler.handle_packet(p, *from, now))
        .collect();
    if !handler.pool().store().has_pending() {
        return out;
    }
    if let Err(e) = handler.pool_mut().store_mut().flush() {
        let withheld = out.iter().filter(|o| o.needs_flush).count() as u64;
        let stats = handler.stats();
        stats.flush_errors.fetch_add(1, Ordering::Relaxed);
        stats
            .replies_withheld
            .fetch_add(withheld, Ordering::Relaxed);
        tracing::error!(
            network = %handler.config().network,
            error = %e,
            replies_withheld = withheld,
            "DHCPv6 lease journal flush failed: this batch's Replies are NOT sent (clients will retry)"
        );
        out.retain(|o| !o.needs_flush);
    }
    if handler.pool().store().compaction_due() {
        if let Err(e) = handler.pool_mut().store_mut().compact() {
            tracing::warn!(network = %handler.config().network, error = %e, "DHCPv6 lease journal compaction failed");
        }
    }
    out
}

pub struct Dhcp6Server;

impl Dhcp6Server {
    /// Reads (or makes) the server DUID, opens the v6 lease journal and the socket, and starts
    /// the network's DHCPv6 thread.
    pub fn start(cfg: Dhcp6Config) -> Result<Dhcp6Handle, Dhcp6Error> {
        let network = cfg.network.clone();
        let duid =
            server_duid::load_or_create(&cfg.duid_file).map_err(|source| Dhcp6Error::Duid {
                network: network.clone(),
                path: cfg.duid_file.clone(),
                source,
            })?;
        let socket = bind_socket(&cfg.interface).map_err(|source| Dhcp6Error::Socket {
            network: network.clone(),
            interface: cfg.interface.clone(),
            source,
        })?;
        let (pool, report) = Pool6::open(&cfg).map_err(|source| Dhcp6Error::Leases {
            network: network.clone(),
            source,
        })?;
        tracing::info!(network = %network, records = report.records, dropped_bytes = report.dropped_bytes, "DHCPv6 lease journal loaded");
        let stats = Arc::new(Dhcp6Stats::default());
        let leases = Arc::new(LeaseView::new(pool.leases_at(unix_now())));
        let feed = LeaseFeed::new(&pool, unix_now());
        // Not a receiver: one held here would count as a follower, and every busy 100 ms would
        // copy and sort the whole table for nobody.
        let watch = feed.watch();
        let handler = Handler6::new(cfg, pool, duid, stats.clone());
        let thread = {
            let leases = leases.clone();
            ServerThread::spawn("dhcp6", &network, move |stop| {
                serve(handler, socket, leases, feed, stop)
            })
            .map_err(|source| Dhcp6Error::Thread {
                network: network.clone(),
                source,
            })?
        };
        tracing::info!(network = %network, "DHCPv6 server started");
        Ok(Dhcp6Handle {
            network,
            stats,
            leases,
            watch,
            thread,
        })
    }
}

fn bind_socket(interface: &str) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let name = std::ffi::CString::new(interface)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    // Several networks each bind [::]:547; the device binding keeps their traffic apart.
    s.bind_device(Some(interface.as_bytes()))?;
    deep_recv_queue(&s);
    s.join_multicast_v6(&ALL_SERVERS, ifindex)?;
    s.set_multicast_loop_v6(false)?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, SERVER_PORT)).into())?;
    s.set_read_timeout(Some(RECV_TIMEOUT))?;
    Ok(s.into())
}

/// Handle to a running DHCPv6 server.
pub struct Dhcp6Handle {
    network: String,
    stats: Arc<Dhcp6Stats>,
    leases: Arc<LeaseView<Lease6>>,
    watch: LeaseWatch<Lease6>,
    thread: ServerThread,
}

impl Dhcp6Handle {
    pub fn network(&self) -> &str {
        &self.network
    }

    pub fn stats(&self) -> Arc<Dhcp6Stats> {
        self.stats.clone()
    }

    /// Unexpired leases, fetched from the server thread between batches (durable ones only:
    /// published after the flush).
    pub fn leases(&self) -> Vec<Lease6> {
        let now = unix_now();
        let mut all = self.leases.read(RECV_TIMEOUT * 5);
        all.retain(|l| l.expires > now);
        all
    }

    /// Follow the bound leases live (for DNS), as `DhcpHandle::leases_watch` for v4.
    pub fn leases_watch(&self) -> watch::Receiver<Arc<BoundLeases6>> {
        self.watch.subscribe()
    }

    /// Stop the thread (within ~200 ms) and wait for it (dropping the handle does the same).
    pub fn stop(mut self) {
        self.thread.stop();
    }
}

fn serve(
    mut handler: Handler6,
    socket: UdpSocket,
    leases: Arc<LeaseView<Lease6>>,
    mut feed: LeaseFeed<Pool6>,
    stop: Arc<AtomicBool>,
) {
    let network = handler.config().network.clone();
    let mut buf = vec![0u8; RECV_BUF];
    let mut batch: Vec<(Vec<u8>, SocketAddrV6)> = Vec::with_capacity(MAX_BATCH);
    while !stop.load(Ordering::Relaxed) {
        batch.clear();
        match socket.recv_from(&mut buf) {
            Ok((n, SocketAddr::V6(from))) => batch.push((buf[..n].to_vec(), from)),
            Ok(_) => continue,
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
                tracing::error!(network = %network, error = %e, "DHCPv6 receive failed");
                std::thread::sleep(RECV_TIMEOUT);
                continue;
            }
        }
        drain(&socket, &mut buf, &mut batch);
        let packets: Vec<(&[u8], SocketAddrV6)> =
            batch.iter().map(|(p, a)| (p.as_slice(), *a)).collect();
        for reply in answer_batch(&mut handler, &packets, unix_now()) {
            match socket.send_to(&reply.bytes, reply.dest) {
                Ok(_) => {
                    if let Some(ev) = &reply.event {
                        ev.log(&network);
                    }
                }
                Err(e) => {
                    handler.stats().send_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(network = %network, dest = %reply.dest, error = %e, "DHCPv6 reply not sent");
                }
            }
        }
        // After the flush, so the view shows only durable leases.
        leases.publish_if_requested(handler.pool(), unix_now());
        feed.update(handler.pool(), unix_now());
    }
    if handler.pool().store().has_pending() {
        if let Err(e) = handler.pool_mut().store_mut().flush() {
            tracing::error!(network = %network, error = %e, "final DHCPv6 lease journal flush failed");
        }
    }
    leases.close(handler.pool(), unix_now());
    feed.update(handler.pool(), unix_now());
    tracing::info!(network = %network, "DHCPv6 server stopped");
}

/// Takes what is already queued, without blocking, up to MAX_BATCH packets.
fn drain(socket: &UdpSocket, buf: &mut [u8], batch: &mut Vec<(Vec<u8>, SocketAddrV6)>) {
    if socket.set_nonblocking(true).is_err() {
        return;
    }
    while batch.len() < MAX_BATCH {
        match socket.recv_from(buf) {
            Ok((n, SocketAddr::V6(from))) => batch.push((buf[..n].to_vec(), from)),
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    let _ = socket.set_nonblocking(false);
}
