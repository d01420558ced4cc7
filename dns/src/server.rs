//! The sockets of one network's server: per listen address one UDP socket and one TCP listener.
//! A UDP socket is served by one task that answers local names and cache hits inline (no task,
//! no lock beyond the cache's and the rate table's, one buffer per reply); only cache misses get
//! a task of their own, bounded by `max_forwards_in_flight`. TCP connections are bounded in
//! number and idle time and answer their queries in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::config::{Limits, ServerConfig, RESOLVER_POLL};
use crate::counters::CountersSnapshot;
use crate::error::DnsError;
use crate::forward::Forwarder;
use crate::handler::{Outcome, QueryHandler, Transport};
use crate::records::RecordStore;
use crate::upstreams::{ResolverFiles, UpstreamSource, Upstreams};
use crate::zone::Zone;

/// Largest query taken over UDP; anything longer is cut by the kernel and fails to decode.
const UDP_QUERY_BUFFER: usize = 4096;

/// A running server. Dropping it stops it.
pub struct DnsServer {
    handler: Arc<QueryHandler>,
    forwarder: Arc<Forwarder>,
    local: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds every listen address (UDP and TCP) and starts serving on the current tokio runtime.
    /// `records` must be a store for the zone's domain ([`RecordStore::new`] with
    /// [`Zone::domain`]); the caller keeps a clone to update names while the server runs.
    pub async fn start(config: ServerConfig, records: RecordStore) -> Result<DnsServer, DnsError> {
        let zone = Zone::new(&config.zone)?;
        if records.domain() != zone.domain() {
            return Err(DnsError::DomainMismatch {
                store: records.domain().to_ascii(),
                zone: zone.domain().to_ascii(),
            });
        }
        if config.listen.is_empty() {
            return Err(DnsError::NoListenAddress);
        }
        let device = config.bind_device.as_deref();
        let mut sockets = Vec::new();
        let mut local = Vec::new();
        for &addr in &config.listen {
            let udp: UdpSocket = bind(addr, device, Type::DGRAM)?;
            let bound = udp
                .local_addr()
                .map_err(|e| bind_error("UDP", addr, device, e))?;
            // Port 0 (tests) picks one port for both UDP and TCP.
            let tcp: TcpListener = bind(bound, device, Type::STREAM)?;
            local.push(bound);
            sockets.push((udp, tcp));
        }
        // Followed resolvers are read now, not when the config was made: a server restarted
        // later (its bridge was recreated) starts from what the host has then.
        let mut resolver_files = config.follow_resolvers.as_deref().map(ResolverFiles::new);
        let upstreams = match resolver_files.as_mut().map(ResolverFiles::discover) {
            None => config.upstreams.clone(),
            Some(Ok(found)) => found,
            Some(Err(_)) => Upstreams::none(),
        }
        .without(&local);
        let mut handler = QueryHandler::new(
            zone,
            records,
            config.allowed.clone(),
            &config.limits,
            !upstreams.is_empty(),
        );
        if *upstreams.source() == UpstreamSource::LocalOnly {
            handler = handler.local_only();
        }
        let handler = Arc::new(handler);
        tracing::info!(
            network = %config.network,
            listen = ?local,
            domain = %handler.zone().domain(),
            upstreams = ?upstreams.servers(),
            "DNS server started"
        );
        let forwarder = Arc::new(Forwarder::new(upstreams, config.limits.upstream_timeout));
        let in_flight = Arc::new(Semaphore::new(config.limits.max_forwards_in_flight.max(1)));
        let connections = Arc::new(Semaphore::new(config.limits.max_tcp_connections.max(1)));
        let mut tasks = Vec::new();
        for (udp, tcp) in sockets {
            tasks.push(tokio::spawn(serve_udp(
                Arc::new(udp),
                handler.clone(),
                forwarder.clone(),
                in_flight.clone(),
            )));
            tasks.push(tokio::spawn(serve_tcp(
                tcp,
                handler.clone(),
                forwarder.clone(),
                connections.clone(),
                config.limits.clone(),
            )));
        }
        if let Some(files) = resolver_files {
            tasks.push(tokio::spawn(follow_resolvers(
                files,
                config.network.clone(),
                local.clone(),
                handler.clone(),
                forwarder.clone(),
            )));
        }
        Ok(DnsServer {
            handler,
            forwarder,
            local,
            tasks,
        })
    }

    pub fn counters(&self) -> CountersSnapshot {
        self.handler.counters()
    }

    /// The store this server answers from (the one it was started with).
    pub fn records(&self) -> &RecordStore {
        self.handler.records()
    }

    /// The addresses actually bound (with the port chosen when 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// The upstreams in use (the configured or discovered ones minus this server's own
    /// addresses).
    pub fn upstreams(&self) -> Upstreams {
        Upstreams::clone(&self.forwarder.upstreams())
    }

    pub fn zone(&self) -> &Zone {
        self.handler.zone()
    }

    /// Entries in the forwarding cache.
    pub fn cached(&self) -> usize {
        self.handler.cached()
    }

    /// Stops every task and waits until the sockets are closed.
    pub async fn shutdown(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Discovers the host's resolvers again whenever their files change, and switches the server
/// to them: queries already waiting finish with the old list, the cache is kept (its TTLs bound
/// it, as dnsmasq keeps its cache over a resolv.conf change unless told `clear-on-reload`).
async fn follow_resolvers(
    mut files: ResolverFiles,
    network: String,
    local: Vec<SocketAddr>,
    handler: Arc<QueryHandler>,
    forwarder: Arc<Forwarder>,
) {
    let mut tick = tokio::time::interval(RESOLVER_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(found) = files.changed() else {
            continue;
        };
        let new = match found {
            Ok(u) => u.without(&local),
            Err(e) => {
                tracing::warn!(network = %network, "DNS: the host's resolvers changed and none is left: {e}; names outside the network's domain get SERVFAIL until one is");
                Upstreams::none()
            }
        };
        // The list first, then the flag: a query between the two is forwarded to the new list,
        // or to none (then SERVFAIL), never to a list that is gone.
        let (to, any) = (new.servers().to_vec(), !new.is_empty());
        let old = forwarder.replace(new);
        handler.set_has_upstreams(any);
        if old.servers() != to {
            tracing::info!(network = %network, from = ?old.servers(), to = ?to, "DNS: the host's resolvers changed; forwarding to the new ones");
        }
    }
}

fn bind_error(
    proto: &'static str,
    addr: SocketAddr,
    device: Option<&str>,
    source: std::io::Error,
) -> DnsError {
    DnsError::Bind {
        proto,
        addr,
        device: device.map(|d| format!(" (device {d})")).unwrap_or_default(),
        source,
    }
}

fn bind<T: FromSocket>(addr: SocketAddr, device: Option<&str>, kind: Type) -> Result<T, DnsError> {
    let proto = if kind == Type::DGRAM { "UDP" } else { "TCP" };
    let err = |e| bind_error(proto, addr, device, e);
    let protocol = if kind == Type::DGRAM {
        Protocol::UDP
    } else {
        Protocol::TCP
    };
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol)).map_err(err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(err)?;
    }
    if kind == Type::STREAM {
        socket.set_reuse_address(true).map_err(err)?;
    }
    if let Some(device) = device {
        socket.bind_device(Some(device.as_bytes())).map_err(err)?;
    }
    socket.bind(&addr.into()).map_err(err)?;
    if kind == Type::STREAM {
        socket.listen(128).map_err(err)?;
    }
    socket.set_nonblocking(true).map_err(err)?;
    T::from_socket(socket).map_err(err)
}

trait FromSocket: Sized {
    fn from_socket(s: Socket) -> std::io::Result<Self>;
}

impl FromSocket for UdpSocket {
    fn from_socket(s: Socket) -> std::io::Result<Self> {
        UdpSocket::from_std(s.into())
    }
}

impl FromSocket for TcpListener {
    fn from_socket(s: Socket) -> std::io::Result<Self> {
        TcpListener::from_std(s.into())
    }
}

async fn serve_udp(
    socket: Arc<UdpSocket>,
    handler: Arc<QueryHandler>,
    forwarder: Arc<Forwarder>,
    in_flight: Arc<Semaphore>,
) {
    let mut buf = vec![0u8; UDP_QUERY_BUFFER];
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // E.g. ICMP errors surfacing on the socket; never a reason to stop serving.
                tracing::debug!("DNS UDP receive error: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                continue;
            }
        };
        if src.port() == 0 {
            continue;
        }
        match handler.handle(&buf[..n], src.ip(), Transport::Udp, Instant::now()) {
            Outcome::Reply(out) => {
                let _ = socket.send_to(&out, src).await;
            }
            Outcome::Drop => {}
            Outcome::Forward(job) => match in_flight.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (socket, handler, forwarder) =
                        (socket.clone(), handler.clone(), forwarder.clone());
                    tokio::spawn(async move {
                        let answer = forwarder.ask(&job).await;
                        let out = handler.relay(&job, answer, Instant::now());
                        let _ = socket.send_to(&out, src).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    let out = handler.servfail(&job);
                    let _ = socket.send_to(&out, src).await;
                }
            },
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    handler: Arc<QueryHandler>,
    forwarder: Arc<Forwarder>,
    connections: Arc<Semaphore>,
    limits: Limits,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(got) => got,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::debug!("DNS TCP accept error: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            continue; // dropping the stream closes it
        };
        let (handler, forwarder, idle) =
            (handler.clone(), forwarder.clone(), limits.tcp_idle_timeout);
        tokio::spawn(async move {
            serve_connection(stream, peer, &handler, &forwarder, idle).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: &QueryHandler,
    forwarder: &Forwarder,
    idle: std::time::Duration,
) {
    loop {
        let mut len = [0u8; 2];
        if !matches!(timeout(idle, stream.read_exact(&mut len)).await, Ok(Ok(_))) {
            return;
        }
        let len = usize::from(u16::from_be_bytes(len));
        let mut msg = vec![0u8; len];
        if !matches!(timeout(idle, stream.read_exact(&mut msg)).await, Ok(Ok(_))) {
            return;
        }
        let out = match handler.handle(&msg, peer.ip(), Transport::Tcp, Instant::now()) {
            Outcome::Reply(out) => out,
            // Rate-limited or not a query: the connection ends.
            Outcome::Drop => return,
            Outcome::Forward(job) => {
                let answer = forwarder.ask(&job).await;
                handler.relay(&job, answer, Instant::now())
            }
        };
        let Ok(out_len) = u16::try_from(out.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&out_len.to_be_bytes());
        framed.extend_from_slice(&out);
        if !matches!(timeout(idle, stream.write_all(&framed)).await, Ok(Ok(_))) {
            return;
        }
    }
}
