//! One read transfer: its own UDP socket (the server's TID), option negotiation, and the
//! windowed send loop (RFC 7440; windowsize 1 is plain RFC 1350 lock-step).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::net::UdpSocket;

use super::packet::{self, Reply, Request, ERR_UNDEFINED};
use super::TftpStats;
use crate::config::TftpLimits;
use crate::saferoot::{PathError, SafeRoot};

/// RFC 2348: the largest block that still fits a UDP datagram.
const MAX_BLKSIZE_RFC: u64 = 65464;
/// Block numbers are 16 bits; a window must stay well below the wrap so an ACK number names
/// exactly one block of the window.
const MAX_WINDOW_RFC: u64 = 32768;
/// How much of the file one read asks for: large reads, not one syscall per block.
const READ_BUFFER: usize = 256 * 1024;

/// What a client gets after negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: usize,
    pub windowsize: usize,
    pub timeout: Duration,
    /// Options to acknowledge; `None` when the client asked for none we support (no OACK then).
    pub oack: Option<Vec<(&'static str, String)>>,
}

/// Options are clamped into the limits, never refused; unknown or unparsable options are left
/// out of the OACK (RFC 2347), and a `timeout` outside 1..=255 s is ignored (RFC 2349).
pub fn negotiate(
    req: &Request,
    file_size: u64,
    limits: &TftpLimits,
    default_timeout: Duration,
) -> Negotiated {
    let mut n = Negotiated {
        blksize: 512,
        windowsize: 1,
        timeout: default_timeout,
        oack: None,
    };
    let mut acked: Vec<(&'static str, String)> = Vec::new();
    let number = |name: &str| req.option(name).and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(asked) = number("blksize") {
        let max = u64::from(limits.max_blksize).clamp(8, MAX_BLKSIZE_RFC);
        let size = asked.clamp(8, max);
        n.blksize = size as usize;
        acked.push(("blksize", size.to_string()));
    }
    if let Some(asked) = number("timeout") {
        if (1..=255).contains(&asked) {
            n.timeout = Duration::from_secs(asked);
            acked.push(("timeout", asked.to_string()));
        }
    }
    if number("tsize").is_some() {
        acked.push(("tsize", file_size.to_string()));
    }
    if let Some(asked) = number("windowsize") {
        let max = u64::from(limits.max_windowsize).clamp(1, MAX_WINDOW_RFC);
        let size = asked.clamp(1, max);
        n.windowsize = size as usize;
        acked.push(("windowsize", size.to_string()));
    }
    if !acked.is_empty() {
        n.oack = Some(acked);
    }
    n
}

/// How a transfer ended.
#[derive(Debug)]
pub enum Outcome {
    Completed,
    /// The client sent an ERROR packet (PXE ROMs do this after a tsize probe).
    ClientAbort {
        code: u16,
        message: String,
    },
    /// No acknowledgement after `retries` retransmissions.
    TimedOut,
    Io(std::io::Error),
}

pub struct Context {
    pub root: Arc<SafeRoot>,
    pub limits: TftpLimits,
    pub stats: Arc<TftpStats>,
    pub default_timeout: Duration,
}

/// Runs one RRQ to its end. Never panics on client input; every end is counted and logged.
pub async fn serve(ctx: Arc<Context>, req: Request, peer: SocketAddr, local: SocketAddr) {
    let stats = &ctx.stats;
    stats.active.fetch_add(1, Ordering::Relaxed);
    let _active = ActiveGuard(stats.clone());
    let path_shown = String::from_utf8_lossy(&req.filename).into_owned();

    let socket = match bind_tid(local, peer).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(client = %peer, path = %path_shown, error = %e, "tftp: cannot open a transfer socket");
            stats.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let opened = match std::str::from_utf8(&req.filename) {
        Err(_) => Err(PathError::NotUtf8),
        Ok(name) => {
            let root = ctx.root.clone();
            let name = name.to_owned();
            tokio::task::spawn_blocking(move || root.open(&name))
                .await
                .unwrap_or_else(|e| Err(PathError::Io(std::io::Error::other(e))))
        }
    };
    let (file, meta) = match opened {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(client = %peer, path = %path_shown, reason = %e, "tftp: request refused");
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let _ = socket
                .send(&packet::error(e.tftp_code(), &e.to_string()))
                .await;
            return;
        }
    };

    let neg = negotiate(&req, meta.len(), &ctx.limits, ctx.default_timeout);
    let started = Instant::now();
    let reader = BufReader::with_capacity(READ_BUFFER, tokio::fs::File::from_std(file));
    let mut session = Session {
        socket,
        neg: neg.clone(),
        retries: ctx.limits.retries,
        acked_bytes: 0,
    };
    let outcome = session.run(reader).await;
    let elapsed = started.elapsed();
    let bytes = session.acked_bytes;
    stats.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    match &outcome {
        Outcome::Completed => {
            stats.completed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(client = %peer, path = %path_shown, bytes, blksize = neg.blksize,
                windowsize = neg.windowsize, ms = elapsed.as_millis() as u64, "tftp: transfer completed");
        }
        Outcome::ClientAbort { code, message } => {
            stats.client_aborts.fetch_add(1, Ordering::Relaxed);
            tracing::info!(client = %peer, path = %path_shown, bytes, code, message = %message,
                "tftp: client ended the transfer");
        }
        Outcome::TimedOut => {
            stats.timeouts.fetch_add(1, Ordering::Relaxed);
            stats.errors.fetch_add(1, Ordering::Relaxed);
            let _ = session
                .socket
                .send(&packet::error(ERR_UNDEFINED, "timed out"))
                .await;
            tracing::warn!(client = %peer, path = %path_shown, bytes, retries = ctx.limits.retries,
                "tftp: transfer gave up, client stopped acknowledging");
        }
        Outcome::Io(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            let _ = session
                .socket
                .send(&packet::error(ERR_UNDEFINED, "read error"))
                .await;
            tracing::warn!(client = %peer, path = %path_shown, bytes, error = %e, "tftp: transfer failed");
        }
    }
}

struct ActiveGuard(Arc<TftpStats>);
impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A fresh socket on the listen address with an ephemeral port, connected to the client so the
/// kernel drops datagrams from any other TID.
async fn bind_tid(local: SocketAddr, peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?;
    socket.connect(peer).await?;
    Ok(socket)
}

/// One block in flight: its 64-bit sequence number (wire number = low 16 bits, rolling over
/// to 0 as tftpd-hpa, curl and iPXE expect) and the ready-to-send DATA packet.
struct Block {
    seq: u64,
    packet: Bytes,
    payload: usize,
}

struct Session {
    socket: UdpSocket,
    neg: Negotiated,
    retries: u32,
    acked_bytes: u64,
}

enum Wait {
    Acked(u16),
    Abort(Outcome),
    TimedOut,
}

impl Session {
    async fn run<R: AsyncRead + Unpin>(&mut self, mut reader: R) -> Outcome {
        if let Some(opts) = self.neg.oack.clone() {
            let oack = packet::oack(&opts);
            if let Err(o) = self.send_until_acked(&[oack], |n| n == 0).await {
                return o;
            }
        }
        let mut window: VecDeque<Block> = VecDeque::with_capacity(self.neg.windowsize);
        let mut next_seq: u64 = 1;
        let mut read_all = false;
        loop {
            while window.len() < self.neg.windowsize && !read_all {
                match read_block(&mut reader, self.neg.blksize, next_seq).await {
                    Ok(block) => {
                        read_all = block.payload < self.neg.blksize;
                        window.push_back(block);
                        next_seq += 1;
                    }
                    Err(e) => return Outcome::Io(e),
                }
            }
            if window.is_empty() {
                return Outcome::Completed;
            }
            let packets: Vec<Bytes> = window.iter().map(|b| b.packet.clone()).collect();
            let wire: Vec<u16> = window.iter().map(|b| b.seq as u16).collect();
            // Any ACK naming a block of this window moves it forward: the last block's ACK
            // means the whole window arrived, an earlier one (RFC 7440) means the client saw a
            // gap after it, and we resend from there on the next round. ACKs of blocks before
            // the window are stale duplicates and are ignored (no Sorcerer's Apprentice).
            let acked = match self.send_until_acked(&packets, |n| wire.contains(&n)).await {
                Ok(n) => n,
                Err(o) => return o,
            };
            while let Some(front) = window.pop_front() {
                self.acked_bytes += front.payload as u64;
                if front.seq as u16 == acked {
                    break;
                }
            }
        }
    }

    /// Sends `packets` (one window), then waits for an ACK `accept`s; on timeout resends the
    /// whole set, up to `retries` times. A client ERROR ends at once.
    async fn send_until_acked(
        &self,
        packets: &[Bytes],
        accept: impl Fn(u16) -> bool,
    ) -> Result<u16, Outcome> {
        for _attempt in 0..=self.retries {
            for p in packets {
                if let Err(e) = self.socket.send(p).await {
                    return Err(Outcome::Io(e));
                }
            }
            match self.wait_ack(&accept).await {
                Wait::Acked(n) => return Ok(n),
                Wait::Abort(o) => return Err(o),
                Wait::TimedOut => continue,
            }
        }
        Err(Outcome::TimedOut)
    }

    /// Waits one timeout period (a deadline, so a stream of ignored packets cannot stretch it).
    async fn wait_ack(&self, accept: &impl Fn(u16) -> bool) -> Wait {
        let deadline = tokio::time::Instant::now() + self.neg.timeout;
        let mut buf = [0u8; 1024];
        loop {
            let received = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf)).await;
            match received {
                Err(_) => return Wait::TimedOut,
                // ICMP port unreachable shows up as ECONNREFUSED on a connected socket: the
                // client is gone; retrying would only hit the same wall.
                Ok(Err(e)) => return Wait::Abort(Outcome::Io(e)),
                Ok(Ok(n)) => match packet::parse_reply(&buf[..n]) {
                    Reply::Ack(block) if accept(block) => return Wait::Acked(block),
                    Reply::Ack(_) | Reply::Other => continue,
                    Reply::Error { code, message } => {
                        return Wait::Abort(Outcome::ClientAbort { code, message })
                    }
                },
            }
        }
    }
}

/// Reads up to `blksize` bytes (fewer only at end of file) straight into a DATA packet.
async fn read_block<R: AsyncRead + Unpin>(
    reader: &mut R,
    blksize: usize,
    seq: u64,
) -> std::io::Result<Block> {
    let mut buf = vec![0u8; 4 + blksize];
    buf[..2].copy_from_slice(&packet::OP_DATA.to_be_bytes());
    buf[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    let mut filled = 0;
    while filled < blksize {
        let n = reader.read(&mut buf[4 + filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(4 + filled);
    Ok(Block {
        seq,
        packet: Bytes::from(buf),
        payload: filled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(opts: &[(&str, &str)]) -> Request {
        Request {
            write: false,
            filename: b"f".to_vec(),
            mode: "octet".into(),
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    const LIMITS: TftpLimits = TftpLimits {
        max_blksize: 1024,
        max_windowsize: 8,
        max_transfers: 4,
        retries: 3,
    };

    #[test]
    fn no_options_means_no_oack_and_rfc1350_defaults() {
        let n = negotiate(&req(&[]), 10, &LIMITS, Duration::from_secs(1));
        assert_eq!((n.blksize, n.windowsize, n.oack), (512, 1, None));
        let n = negotiate(&req(&[("foo", "1")]), 10, &LIMITS, Duration::from_secs(1));
        assert_eq!(n.oack, None);
    }

    #[test]
    fn options_are_clamped_into_limits() {
        let r = req(&[("blksize", "1468"), ("windowsize", "100"), ("tsize", "0")]);
        let n = negotiate(&r, 12345, &LIMITS, Duration::from_secs(1));
        assert_eq!((n.blksize, n.windowsize), (1024, 8));
        assert_eq!(
            n.oack,
            Some(vec![
                ("blksize", "1024".into()),
                ("tsize", "12345".into()),
                ("windowsize", "8".into())
            ])
        );
        let n = negotiate(
            &req(&[("blksize", "4"), ("windowsize", "0")]),
            0,
            &LIMITS,
            Duration::from_secs(1),
        );
        assert_eq!((n.blksize, n.windowsize), (8, 1));
    }

    #[test]
    fn bad_timeout_and_garbage_values_are_ignored() {
        let r = req(&[("timeout", "0"), ("blksize", "abc")]);
        let n = negotiate(&r, 0, &LIMITS, Duration::from_secs(2));
        assert_eq!(n.timeout, Duration::from_secs(2));
        assert_eq!(n.oack, None);
        let n = negotiate(
            &req(&[("timeout", "3")]),
            0,
            &LIMITS,
            Duration::from_secs(2),
        );
        assert_eq!(n.timeout, Duration::from_secs(3));
    }

    #[tokio::test]
    async fn blocks_fill_fully_and_the_last_is_short_or_empty() {
        let data = vec![7u8; 1024];
        let mut r = &data[..];
        let b1 = read_block(&mut r, 512, 1).await.expect("read");
        let b2 = read_block(&mut r, 512, 2).await.expect("read");
        let b3 = read_block(&mut r, 512, 65536 + 3).await.expect("read");
        assert_eq!((b1.payload, b2.payload, b3.payload), (512, 512, 0));
        assert_eq!(&b3.packet[..], &[0, 3, 0, 3]);
    }
}
