//! One read transfer: its own UDP socket (the server's TID), option negotiation, and the
//! windowed send loop (RFC 7440; windowsize 1 is plain RFC 1350 lock-step).
//!
//! A transfer runs on its own OS thread with blocking sockets, like tftpd-hpa's process per
//! transfer. Lock-step TFTP is one round trip per block, so its speed is the latency of an ACK
//! reaching the code that sends the next block: a thread blocked in `recv` is woken by the kernel
//! straight into our code, where an async task first goes through the reactor and a worker wake-up
//! (measured: the tokio version was 0.84× tftpd-hpa lock-step and 0.78× with 24 clients). File
//! bytes are read with one `pread` per [`STAGE_BYTES`] of blocks and a whole window leaves in one
//! `sendmmsg`, each DATA packet being a 4-byte header plus a slice of that staging buffer.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::packet::{self, Reply, Request, ERR_UNDEFINED};
use super::TftpStats;
use crate::config::TftpLimits;
use crate::saferoot::{PathError, SafeRoot};

/// RFC 2348: the largest block that still fits a UDP datagram.
const MAX_BLKSIZE_RFC: u64 = 65464;
/// Block numbers are 16 bits; a window must stay well below the wrap so an ACK number names
/// exactly one block of the window.
const MAX_WINDOW_RFC: u64 = 32768;
/// File bytes one `pread` asks for (at least one window): 16 blocks of 1468 bytes. Small
/// enough that 200 transfers at once hold under 5 MiB, large enough that lock-step transfers
/// read the file once per 16 blocks rather than once per block.
const STAGE_BYTES: usize = 24 * 1024;
/// How often a transfer waiting for an ACK looks at the shutdown flag.
const CANCEL_POLL: Duration = Duration::from_millis(200);

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
pub(super) enum Outcome {
    Completed,
    /// The client sent an ERROR packet (PXE ROMs do this after a tsize probe).
    ClientAbort {
        code: u16,
        message: String,
    },
    /// No acknowledgement after `retries` retransmissions.
    TimedOut,
    /// The server is shutting down or restarting this network's TFTP service.
    Cancelled,
    Io(io::Error),
}

pub(super) struct Context {
    pub root: Arc<SafeRoot>,
    pub limits: TftpLimits,
    pub stats: Arc<TftpStats>,
    pub default_timeout: Duration,
    /// Set when the server stops: every transfer ends within [`CANCEL_POLL`].
    pub cancel: Arc<AtomicBool>,
}

/// Runs one RRQ to its end, blocking the calling thread. Never panics on client input; every
/// end is counted and logged.
pub(super) fn serve(ctx: &Context, req: Request, peer: SocketAddr, local: SocketAddr) {
    let stats = &ctx.stats;
    stats.active.fetch_add(1, Ordering::Relaxed);
    let _active = ActiveGuard(stats.clone());
    let path_shown = String::from_utf8_lossy(&req.filename).into_owned();

    let socket = match bind_tid(local, peer) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(client = %peer, path = %path_shown, error = %e, "tftp: cannot open a transfer socket");
            stats.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let opened = match std::str::from_utf8(&req.filename) {
        Err(_) => Err(PathError::NotUtf8),
        Ok(name) => ctx.root.open(name),
    };
    let (file, meta) = match opened {
        Ok(v) => v,
        Err(e) if e.is_not_found() => {
            tracing::debug!(client = %peer, path = %path_shown, "tftp: file not found");
            stats.not_found.fetch_add(1, Ordering::Relaxed);
            let _ = socket.send(&packet::error(e.tftp_code(), &e.to_string()));
            return;
        }
        Err(e) => {
            tracing::warn!(client = %peer, path = %path_shown, reason = %e, "tftp: request refused");
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let _ = socket.send(&packet::error(e.tftp_code(), &e.to_string()));
            return;
        }
    };

    let neg = negotiate(&req, meta.len(), &ctx.limits, ctx.default_timeout);
    let started = Instant::now();
    let mut session = Session {
        socket,
        neg: neg.clone(),
        retries: ctx.limits.retries,
        cancel: &ctx.cancel,
        retransmits: &ctx.stats.retransmits,
        acked_bytes: 0,
    };
    let outcome = session.run(&file);
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
                .send(&packet::error(ERR_UNDEFINED, "timed out"));
            tracing::warn!(client = %peer, path = %path_shown, bytes, retries = ctx.limits.retries,
                "tftp: transfer gave up, client stopped acknowledging");
        }
        Outcome::Cancelled => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::info!(client = %peer, path = %path_shown, bytes, "tftp: transfer cut, server stopping");
        }
        Outcome::Io(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            let _ = session
                .socket
                .send(&packet::error(ERR_UNDEFINED, "read error"));
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
fn bind_tid(local: SocketAddr, peer: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(local.ip(), 0))?;
    socket.connect(peer)?;
    Ok(socket)
}

/// File bytes of consecutive blocks, read with one `pread`: block `first`'s payload starts at
/// offset 0. Block numbers here are 64-bit sequence numbers starting at 1; the wire carries the
/// low 16 bits (rolling over to 0, as tftpd-hpa, curl and iPXE expect).
struct Stage {
    buf: Vec<u8>,
    blksize: usize,
    first: u64,
    /// Valid bytes in `buf`.
    len: usize,
    /// The read stopped short of `buf`'s end: the file ends inside this stage.
    eof: bool,
    loaded: bool,
}

impl Stage {
    fn new(blksize: usize, windowsize: usize) -> Stage {
        let blocks = windowsize.max(STAGE_BYTES.div_ceil(blksize));
        Stage {
            buf: vec![0; blocks * blksize],
            blksize,
            first: 1,
            len: 0,
            eof: false,
            loaded: false,
        }
    }

    fn blocks(&self) -> u64 {
        (self.buf.len() / self.blksize) as u64
    }

    /// Makes sure the blocks `base..base + window` (or up to the file's last block) are here.
    fn cover(&mut self, file: &File, base: u64, window: usize) -> io::Result<()> {
        let inside = self.loaded
            && base >= self.first
            && (self.eof || base + window as u64 <= self.first + self.blocks());
        if inside {
            return Ok(());
        }
        let offset = (base - 1) * self.blksize as u64;
        let mut filled = 0;
        while filled < self.buf.len() {
            match file.read_at(&mut self.buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.first = base;
        self.len = filled;
        self.eof = filled < self.buf.len();
        self.loaded = true;
        Ok(())
    }

    /// The payload of block `seq`, or `None` past the file's last block. A payload shorter
    /// than blksize (possibly empty) is the last block.
    fn payload(&self, seq: u64) -> Option<&[u8]> {
        let start = usize::try_from(seq.checked_sub(self.first)?)
            .ok()?
            .checked_mul(self.blksize)?;
        if start > self.len || (start == self.len && !self.eof) {
            return None;
        }
        let end = (start + self.blksize).min(self.len);
        Some(&self.buf[start..end])
    }
}

struct Session<'a> {
    socket: UdpSocket,
    neg: Negotiated,
    retries: u32,
    cancel: &'a AtomicBool,
    retransmits: &'a AtomicU64,
    acked_bytes: u64,
}

enum Wait {
    Acked(u16),
    Abort(Outcome),
    TimedOut,
}

impl Session<'_> {
    fn run(&mut self, file: &File) -> Outcome {
        if let Err(e) = self
            .socket
            .set_read_timeout(Some(self.neg.timeout.min(CANCEL_POLL)))
        {
            return Outcome::Io(e);
        }
        if let Some(opts) = self.neg.oack.clone() {
            let oack = packet::oack(&opts);
            if let Err(o) = self.send_until_acked(|s| s.send(&oack).map(drop), |n| n == 0) {
                return o;
            }
        }
        let (blksize, windowsize) = (self.neg.blksize, self.neg.windowsize);
        let mut stage = Stage::new(blksize, windowsize);
        let mut sender = WindowSender::default();
        // First block not yet acknowledged.
        let mut base: u64 = 1;
        loop {
            if let Err(e) = stage.cover(file, base, windowsize) {
                return Outcome::Io(e);
            }
            let mut window: Vec<(u16, &[u8])> = Vec::with_capacity(windowsize);
            for seq in base..base + windowsize as u64 {
                let Some(payload) = stage.payload(seq) else {
                    break;
                };
                window.push((seq as u16, payload));
                if payload.len() < blksize {
                    break;
                }
            }
            let Some(&(_, last)) = window.last() else {
                return Outcome::Completed;
            };
            let last_is_final = last.len() < blksize;
            // Any ACK naming a block of this window moves it forward: the last block's ACK
            // means the whole window arrived, an earlier one (RFC 7440) means the client saw a
            // gap after it, and we resend from there on the next round. ACKs of blocks before
            // the window are stale duplicates and are ignored (no Sorcerer's Apprentice).
            let acked = match self.send_until_acked(
                |s| sender.send(s, &window),
                |n| window.iter().any(|b| b.0 == n),
            ) {
                Ok(n) => n,
                Err(o) => return o,
            };
            let mut done = 0;
            for (wire, payload) in &window {
                done += 1;
                self.acked_bytes += payload.len() as u64;
                if *wire == acked {
                    break;
                }
            }
            if done == window.len() && last_is_final {
                return Outcome::Completed;
            }
            base += done as u64;
        }
    }

    /// Sends with `send` (the OACK, or one window), then waits for an ACK `accept`s; on
    /// timeout sends again, up to `retries` times. A client ERROR ends at once.
    fn send_until_acked(
        &self,
        mut send: impl FnMut(&UdpSocket) -> io::Result<()>,
        accept: impl Fn(u16) -> bool,
    ) -> Result<u16, Outcome> {
        for attempt in 0..=self.retries {
            if attempt > 0 {
                self.retransmits.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = send(&self.socket) {
                return Err(Outcome::Io(e));
            }
            match self.wait_ack(&accept) {
                Wait::Acked(n) => return Ok(n),
                Wait::Abort(o) => return Err(o),
                Wait::TimedOut => continue,
            }
        }
        Err(Outcome::TimedOut)
    }

    /// Waits one timeout period (a deadline, so a stream of ignored packets cannot stretch it).
    fn wait_ack(&self, accept: &impl Fn(u16) -> bool) -> Wait {
        let deadline = Instant::now() + self.neg.timeout;
        let mut buf = [0u8; 1024];
        loop {
            // Checked before every receive, not only after a quiet one: a client that keeps
            // acknowledging would otherwise hold shutdown until its whole download is done.
            if self.cancel.load(Ordering::Relaxed) {
                return Wait::Abort(Outcome::Cancelled);
            }
            match self.socket.recv(&mut buf) {
                Ok(n) => match packet::parse_reply(&buf[..n]) {
                    Reply::Ack(block) if accept(block) => return Wait::Acked(block),
                    Reply::Ack(_) | Reply::Other => {}
                    Reply::Error { code, message } => {
                        return Wait::Abort(Outcome::ClientAbort { code, message })
                    }
                },
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // ICMP port unreachable shows up as ECONNREFUSED on a connected socket: the
                // client is gone; retrying would only hit the same wall.
                Err(e) => return Wait::Abort(Outcome::Io(e)),
            }
            if Instant::now() >= deadline {
                return Wait::TimedOut;
            }
        }
    }
}

/// Sends a window as DATA datagrams, one per (block number, payload), in as few `sendmmsg` calls
/// as the kernel allows (one, unless a signal or a full buffer splits it). Its buffers are kept
/// from window to window: a lock-step transfer sends one per block.
#[derive(Default)]
struct WindowSender {
    headers: Vec<[u8; 4]>,
    iovecs: Vec<[libc::iovec; 2]>,
    msgs: Vec<libc::mmsghdr>,
}

impl WindowSender {
    fn send(&mut self, socket: &UdpSocket, blocks: &[(u16, &[u8])]) -> io::Result<()> {
        let op = packet::OP_DATA.to_be_bytes();
        self.headers.clear();
        self.headers.extend(blocks.iter().map(|(n, _)| {
            let n = n.to_be_bytes();
            [op[0], op[1], n[0], n[1]]
        }));
        // The pointers are taken only once `headers` and `iovecs` are complete for this window,
        // so no later push can move what they point at.
        self.iovecs.clear();
        self.iovecs.extend(
            blocks
                .iter()
                .zip(&self.headers)
                .map(|((_, payload), header)| {
                    [
                        libc::iovec {
                            iov_base: header.as_ptr() as *mut libc::c_void,
                            iov_len: header.len(),
                        },
                        libc::iovec {
                            iov_base: payload.as_ptr() as *mut libc::c_void,
                            iov_len: payload.len(),
                        },
                    ]
                }),
        );
        self.msgs.clear();
        self.msgs.extend(self.iovecs.iter_mut().map(|iov| {
            // SAFETY: all-zero is a valid mmsghdr (no address, no control data).
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov.as_mut_ptr();
            m.msg_hdr.msg_iovlen = iov.len() as _;
            m
        }));
        let mut sent = 0;
        while sent < self.msgs.len() {
            let rest = &mut self.msgs[sent..];
            // SAFETY: every iovec points into `headers` or the caller's payloads, which outlive
            // this call; the socket is connected, so no address is needed.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            sent += n as usize;
        }
        Ok(())
    }
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

    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut f, &data).expect("write");
        (f, data)
    }

    /// Walks the file the way `Session::run` does (window after window, every block acked)
    /// and returns the blocks seen.
    fn walk(file: &File, blksize: usize, windowsize: usize) -> Vec<(u64, Vec<u8>)> {
        let mut stage = Stage::new(blksize, windowsize);
        let mut seen = Vec::new();
        let mut base = 1;
        loop {
            stage.cover(file, base, windowsize).expect("read");
            let mut last_short = false;
            let mut n = 0;
            for seq in base..base + windowsize as u64 {
                let Some(p) = stage.payload(seq) else { break };
                seen.push((seq, p.to_vec()));
                n += 1;
                if p.len() < blksize {
                    last_short = true;
                    break;
                }
            }
            if n == 0 || last_short {
                return seen;
            }
            base += n;
        }
    }

    #[test]
    fn blocks_cover_the_file_and_the_last_is_short_or_empty() {
        for (len, blksize, windowsize) in [
            (0, 512, 1),
            (1024, 512, 1),
            (1025, 512, 4),
            (100_000, 1468, 1),
            (100_000, 1468, 16),
            (1468 * 40, 1468, 16),
            (5000, 8, 64),
        ] {
            let (f, data) = file_of(len);
            let blocks = walk(f.as_file(), blksize, windowsize);
            let joined: Vec<u8> = blocks.iter().flat_map(|(_, p)| p.clone()).collect();
            assert_eq!(
                joined, data,
                "len {len} blksize {blksize} window {windowsize}"
            );
            let seqs: Vec<u64> = blocks.iter().map(|b| b.0).collect();
            assert_eq!(seqs, (1..=(len / blksize) as u64 + 1).collect::<Vec<_>>());
            let last = &blocks.last().expect("at least one block").1;
            assert_eq!(last.len(), len % blksize, "last block of len {len}");
        }
    }

    #[test]
    fn a_gap_restarts_the_window_from_the_acked_block() {
        let (f, data) = file_of(1468 * 40 + 3);
        let mut stage = Stage::new(1468, 16);
        stage.cover(f.as_file(), 1, 16).expect("read");
        // The client acked block 5 of 1..=16: the next window starts at 6, inside the stage.
        stage.cover(f.as_file(), 6, 16).expect("read");
        assert_eq!(stage.first, 6);
        assert_eq!(stage.payload(6), Some(&data[5 * 1468..6 * 1468]));
        assert_eq!(stage.payload(5), None, "blocks before the stage are gone");
        let end = stage.first + stage.blocks();
        stage.cover(f.as_file(), 41, 16).expect("read");
        assert!(end <= 41 || stage.first == 41);
        assert_eq!(stage.payload(41), Some(&data[40 * 1468..]));
        assert_eq!(stage.payload(42), None, "nothing past the short block");
    }

    #[test]
    fn a_window_leaves_as_one_datagram_per_block() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        tx.connect(rx.local_addr().expect("addr")).expect("connect");
        let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        // Wire numbers as a rolled-over window would carry them: 65534, 65535, 0, 1, ...
        let blocks: Vec<(u16, &[u8])> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (65534u16.wrapping_add(i as u16), &p[..]))
            .collect();
        let mut sender = WindowSender::default();
        // Twice through the same sender: its kept buffers must not leak the first window.
        sender.send(&tx, &blocks[..3]).expect("sendmmsg");
        sender.send(&tx, &blocks).expect("sendmmsg");
        let mut buf = [0u8; 2048];
        for (wire, payload) in blocks[..3].iter().chain(&blocks) {
            let n = rx.recv(&mut buf).expect("recv");
            assert_eq!(&buf[..2], &packet::OP_DATA.to_be_bytes());
            assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), *wire);
            assert_eq!(&buf[4..n], *payload);
        }
    }
}
