//! Read-only TFTP server on tokio: RFC 1350 with options (RFC 2347), blksize (2348),
//! timeout/tsize (2349) and windowsize (7440).
//!
//! - The listener is a tokio task; each read runs on its own OS thread with its own blocking UDP
//!   socket (the server TID: listen address, ephemeral port), so a slow client never holds up
//!   another and an ACK wakes the sending code directly (see `transfer`).
//! - Write requests are answered with ERROR 2 (access violation): this server never writes.
//! - Only `octet` mode is served; `netascii` (and `mail`) get ERROR 0. PXE firmware, iPXE,
//!   curl and atftp all use octet; serving netascii as octet would silently hand a text
//!   client the wrong line endings, so it is refused rather than half-served.
//! - At most `limits.max_transfers` transfers at once; past that a request gets ERROR 0
//!   "server busy" (a PXE ROM retries).
//! - Requests, DATA and ERROR replies to garbage are kept small and one-for-one: a spoofed
//!   source gains no amplification beyond one error packet per malformed request.
//! - Shutdown: when the watch turns true (or `run`'s future is dropped) the listener stops and
//!   transfers still in flight are cut without a final ERROR packet; `run` returns once their
//!   threads have ended (within 200 ms).

// Public for the fuzz target (fuzz/fuzz_targets/tftp_request.rs), which parses what the server parses.
pub mod packet;
mod transfer;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{watch, Semaphore};

use crate::config::TftpLimits;
use crate::saferoot::SafeRoot;
use packet::{ERR_ACCESS, ERR_ILLEGAL_OP, ERR_UNDEFINED};

pub use transfer::{negotiate, Negotiated};

/// Retransmission timeout when the client does not negotiate one (RFC 2349 `timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Counters, shared with whoever reports status.
#[derive(Debug, Default)]
pub struct TftpStats {
    /// RRQ and WRQ packets received (well-formed or not).
    pub requests: AtomicU64,
    /// Transfers whose last block was acknowledged.
    pub completed: AtomicU64,
    /// Requests answered with an error before any data: refused paths, writes, non-octet modes,
    /// malformed requests, server busy. Not missing files: see `not_found`.
    pub refused: AtomicU64,
    /// Read requests for a name that is not in the root, answered with ERROR 1 "file not found".
    /// Normal traffic: pxelinux and GRUB look for per-machine config files (`pxelinux.cfg/01-<mac>`,
    /// `grub.cfg-01-<mac>`, ...) before the default one, so these are only counted and logged at
    /// debug level, and no client is limited for them.
    pub not_found: AtomicU64,
    /// Transfers that failed on the server's side: gave up after retries, or I/O errors.
    pub errors: AtomicU64,
    /// File bytes the clients acknowledged (retransmissions are not counted twice).
    pub bytes_sent: AtomicU64,
    /// Transfers the client ended with an ERROR packet (normal after a PXE tsize probe).
    pub client_aborts: AtomicU64,
    /// Of `errors`: transfers abandoned because the client stopped acknowledging.
    pub timeouts: AtomicU64,
    /// Of `refused`: requests turned away because `max_transfers` were running.
    pub busy: AtomicU64,
    /// Windows (or OACKs) sent again because no ACK came within the timeout: lost packets.
    pub retransmits: AtomicU64,
    /// Transfers running now.
    pub active: AtomicUsize,
}

/// A point-in-time copy of [`TftpStats`] for status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TftpStatsSnapshot {
    pub requests: u64,
    pub completed: u64,
    pub refused: u64,
    #[serde(default)]
    pub not_found: u64,
    pub errors: u64,
    pub bytes_sent: u64,
    pub client_aborts: u64,
    pub timeouts: u64,
    pub busy: u64,
    pub retransmits: u64,
    pub active: usize,
}

impl TftpStats {
    pub fn snapshot(&self) -> TftpStatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TftpStatsSnapshot {
            requests: get(&self.requests),
            completed: get(&self.completed),
            refused: get(&self.refused),
            not_found: get(&self.not_found),
            errors: get(&self.errors),
            bytes_sent: get(&self.bytes_sent),
            client_aborts: get(&self.client_aborts),
            timeouts: get(&self.timeouts),
            busy: get(&self.busy),
            retransmits: get(&self.retransmits),
            active: self.active.load(Ordering::Relaxed),
        }
    }
}

pub struct TftpServer {
    socket: UdpSocket,
    local: SocketAddr,
    root: Arc<SafeRoot>,
    limits: TftpLimits,
    stats: Arc<TftpStats>,
    default_timeout: Duration,
}

impl TftpServer {
    /// Binds the listen socket. Fails if the address is not (yet) on this host.
    pub async fn bind(
        addr: SocketAddr,
        root: SafeRoot,
        limits: TftpLimits,
    ) -> std::io::Result<TftpServer> {
        let socket = UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        Ok(TftpServer {
            socket,
            local,
            root: Arc::new(root),
            limits,
            stats: Arc::new(TftpStats::default()),
            default_timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Retransmission timeout for clients that do not ask for one (default 1 s).
    pub fn with_default_timeout(mut self, timeout: Duration) -> TftpServer {
        self.default_timeout = timeout;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> Arc<TftpStats> {
        self.stats.clone()
    }

    /// Serves until `shutdown` turns true (or its sender is dropped).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let cancel = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(transfer::Context {
            root: self.root.clone(),
            limits: self.limits,
            stats: self.stats.clone(),
            default_timeout: self.default_timeout,
            cancel: cancel.clone(),
        });
        // Also when this future is dropped mid-way (its task aborted): no transfer outlives it.
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let permits = Arc::new(Semaphore::new(self.limits.max_transfers));
        let mut transfers: Vec<JoinHandle<()>> = Vec::new();
        // Large enough for any request a client could send in one datagram.
        let mut buf = vec![0u8; 65536];
        tracing::info!(listen = %self.local, root = %self.root.path().display(), "tftp: serving");
        while !*shutdown.borrow() {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, peer)) => {
                        let cpu = incoming_cpu(&self.socket);
                        self.on_datagram(&buf[..n], peer, cpu, &ctx, &permits, &mut transfers).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "tftp: receive error"),
                },
            }
        }
        cancel.store(true, Ordering::Relaxed);
        transfers.retain(|t| !t.is_finished());
        let cut = transfers.len();
        let _ = tokio::task::spawn_blocking(move || {
            for t in transfers {
                let _ = t.join();
            }
        })
        .await;
        tracing::info!(listen = %self.local, cut, "tftp: stopped");
    }

    async fn on_datagram(
        &self,
        pkt: &[u8],
        peer: SocketAddr,
        cpu: Option<usize>,
        ctx: &Arc<transfer::Context>,
        permits: &Arc<Semaphore>,
        transfers: &mut Vec<JoinHandle<()>>,
    ) {
        let req = match packet::parse_request(pkt) {
            Ok(req) => req,
            // Stray ACK/DATA/ERROR on the listen port (late packets of a finished transfer):
            // silently dropped.
            Err(packet::ParseError::NotRequest(_)) | Err(packet::ParseError::Short) => return,
            Err(e) => {
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                self.refuse(
                    peer,
                    "?",
                    ERR_ILLEGAL_OP,
                    "malformed request",
                    &e.to_string(),
                )
                .await;
                return;
            }
        };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let path = String::from_utf8_lossy(&req.filename).into_owned();
        if req.write {
            self.refuse(peer, &path, ERR_ACCESS, "read-only server", "write request")
                .await;
            return;
        }
        if req.mode != "octet" {
            let reason = format!("mode {:?} not supported", req.mode);
            self.refuse(
                peer,
                &path,
                ERR_UNDEFINED,
                "only octet mode is served",
                &reason,
            )
            .await;
            return;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
            self.refuse(
                peer,
                &path,
                ERR_UNDEFINED,
                "server busy",
                "max_transfers reached",
            )
            .await;
            return;
        };
        transfers.retain(|t| !t.is_finished());
        let ctx = ctx.clone();
        let local = self.local;
        // The stack only holds the transfer's locals (its buffers are on the heap).
        let spawned = std::thread::Builder::new()
            .name("tftp-transfer".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                if let Some(cpu) = cpu {
                    start_on(cpu);
                }
                transfer::serve(&ctx, req, peer, local);
                drop(permit);
            });
        match spawned {
            Ok(t) => transfers.push(t),
            Err(e) => {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                let reason = format!("cannot start a transfer thread: {e}");
                self.refuse(peer, &path, ERR_UNDEFINED, "server busy", &reason)
                    .await;
            }
        }
    }

    async fn refuse(&self, peer: SocketAddr, path: &str, code: u16, message: &str, reason: &str) {
        tracing::warn!(client = %peer, path, reason, "tftp: request refused");
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .socket
            .send_to(&packet::error(code, message), peer)
            .await;
    }
}

struct CancelOnDrop(Arc<AtomicBool>);
impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The CPU that processed the last packet received on `socket` (SO_INCOMING_CPU): for a local
/// client, the CPU it runs on; for a NIC, the CPU its receive queue interrupts.
fn incoming_cpu(socket: &UdpSocket) -> Option<usize> {
    let mut cpu: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket and an int-sized out-parameter.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_INCOMING_CPU,
            (&mut cpu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0)
        .then_some(cpu)
        .and_then(|c| usize::try_from(c).ok())
}

/// Moves the calling (new) thread onto `cpu`, then allows it every CPU it was allowed before.
///
/// Why: lock-step TFTP is one round trip per block, so a transfer runs at the speed of two
/// wake-ups per block. A new thread is placed on the idlest CPU, i.e. away from the client that
/// just sent the request; then every block wakes a CPU on the other side, and on a VM an idle vCPU
/// is halted, so each of those wake-ups is an interrupt through the hypervisor (measured: half
/// the lock-step speed on an idle 2-vCPU VM). Starting where the request came in keeps server and
/// client together, and widening the mask right away leaves the load balancer free to move the
/// thread when that CPU gets busy: a placement hint, not a pin.
fn start_on(cpu: usize) {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: all-zero cpu_set_t values are valid; the calls get their true size.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut allowed) != 0
            || cpu >= libc::CPU_SETSIZE as usize
            || !libc::CPU_ISSET(cpu, &allowed)
        {
            return;
        }
        let mut only: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut only);
        if libc::sched_setaffinity(0, size, &only) == 0 {
            libc::sched_setaffinity(0, size, &allowed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<usize> {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: as in start_on.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(libc::sched_getaffinity(0, size, &mut set), 0);
            (0..libc::CPU_SETSIZE as usize)
                .filter(|c| libc::CPU_ISSET(*c, &set))
                .collect()
        }
    }

    #[test]
    fn a_transfer_thread_starts_on_the_requests_cpu_and_stays_free_to_move() {
        for cpu in allowed() {
            let (on, after, before) = std::thread::spawn(move || {
                let before = allowed();
                start_on(cpu);
                // SAFETY: no arguments.
                let on = unsafe { libc::sched_getcpu() };
                (on, allowed(), before)
            })
            .join()
            .expect("thread");
            assert_eq!(on, cpu as i32, "not moved to cpu {cpu}");
            assert_eq!(after, before, "the affinity mask was not restored");
        }
    }
}
