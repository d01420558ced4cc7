//! HTTP boot server (HTTP/1.1, bodies by sendfile(2); see `conn`) over the same [`SafeRoot`] as
//! TFTP.
//!
//! - GET and HEAD only; anything else is 405 with `Allow: GET, HEAD`.
//! - The URL path is percent-decoded exactly once, then the SafeRoot rules apply (so `%2e%2e/`
//!   is refused like `../`); a malformed escape is 400. The query string is ignored.
//! - One byte range (`bytes=a-b`, `a-`, `-n`) gives 206 with Content-Range; an unsatisfiable
//!   one 416 with `Content-Range: bytes */len`; several ranges or an invalid header get the
//!   whole file with 200 (RFC 9110 allows ignoring Range).
//! - No directory listings: a directory is 404. Files go from the page cache to the socket with
//!   sendfile(2), never through a user-space buffer.
//! - Request bodies (Transfer-Encoding, or a Content-Length other than 0) get 413 and the
//!   connection closes; a malformed head gets 400, an oversized one 431.
//! - A request head must arrive within `idle_timeout` (default 10 s) of the server waiting for
//!   it (slowloris, idle keep-alive), and a response that makes no progress for as long (a client
//!   that stopped reading) ends the connection.
//! - At most [`MAX_CONNECTIONS`] connections; past that new ones are closed at once.
//! - Shutdown: when the watch turns true the listener stops and `run` returns; connections in
//!   flight are cut (their tasks aborted).

mod answer;
mod conn;
mod range;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::saferoot::SafeRoot;
pub use range::{parse_range, RangeReq};

pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_CONNECTIONS: usize = 1024;

/// Counters, shared with whoever reports status.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests received.
    pub requests: AtomicU64,
    /// 2xx responses delivered in full (HEAD included).
    pub completed: AtomicU64,
    /// 4xx answers other than 404: refused paths, bad methods, unsatisfiable ranges.
    pub refused: AtomicU64,
    /// 404s: a name that is not in the root. Normal traffic (iPXE and GRUB probe per-machine
    /// names that mostly do not exist), so only counted and logged at debug level.
    pub not_found: AtomicU64,
    /// 5xx answers and bodies cut short (client went away, read error, idle timeout).
    pub errors: AtomicU64,
    /// File bytes handed to the connection.
    pub bytes_sent: AtomicU64,
    /// Connections open now.
    pub connections: AtomicUsize,
}

/// A point-in-time copy of [`HttpStats`] for status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpStatsSnapshot {
    pub requests: u64,
    pub completed: u64,
    pub refused: u64,
    #[serde(default)]
    pub not_found: u64,
    pub errors: u64,
    pub bytes_sent: u64,
    pub connections: usize,
}

impl HttpStats {
    pub fn snapshot(&self) -> HttpStatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HttpStatsSnapshot {
            requests: get(&self.requests),
            completed: get(&self.completed),
            refused: get(&self.refused),
            not_found: get(&self.not_found),
            errors: get(&self.errors),
            bytes_sent: get(&self.bytes_sent),
            connections: self.connections.load(Ordering::Relaxed),
        }
    }
}

pub struct HttpServer {
    listener: TcpListener,
    local: SocketAddr,
    root: Arc<SafeRoot>,
    stats: Arc<HttpStats>,
    idle_timeout: Duration,
}

struct Ctx {
    root: Arc<SafeRoot>,
    stats: Arc<HttpStats>,
}

impl HttpServer {
    /// Binds the listener. Fails if the address is not (yet) on this host.
    pub async fn bind(addr: SocketAddr, root: SafeRoot) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok(HttpServer {
            listener,
            local,
            root: Arc::new(root),
            stats: Arc::new(HttpStats::default()),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        })
    }

    /// How long a connection may stay silent (and how long request headers may take).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> HttpServer {
        self.idle_timeout = timeout;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> Arc<HttpStats> {
        self.stats.clone()
    }

    /// Serves until `shutdown` turns true (or its sender is dropped).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let ctx = Arc::new(Ctx {
            root: self.root.clone(),
            stats: self.stats.clone(),
        });
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut connections = JoinSet::new();
        tracing::info!(listen = %self.local, root = %self.root.path().display(), "http: serving");
        while !*shutdown.borrow() {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(v) => v,
                        Err(e) => {
                            // EMFILE and friends: back off a little instead of spinning.
                            tracing::warn!(error = %e, "http: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(client = %peer, "http: too many connections, closing");
                        continue;
                    };
                    let ctx = ctx.clone();
                    let idle = self.idle_timeout;
                    connections.spawn(async move {
                        serve_connection(ctx, stream, peer, idle).await;
                        drop(slot);
                    });
                }
            }
        }
        let cut = connections.len();
        connections.abort_all();
        tracing::info!(listen = %self.local, cut, "http: stopped");
    }
}

async fn serve_connection(
    ctx: Arc<Ctx>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    idle: Duration,
) {
    ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
    conn::serve(ctx.clone(), stream, peer, idle).await;
    ctx.stats.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Decodes `%XX` escapes once. `None` for a `%` not followed by two hex digits.
pub fn percent_decode(path: &str) -> Option<Vec<u8>> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            // from_str_radix alone would accept "+1".
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_is_single_and_strict() {
        assert_eq!(percent_decode("/a%20b").as_deref(), Some(&b"/a b"[..]));
        assert_eq!(percent_decode("/%2e%2e/x").as_deref(), Some(&b"/../x"[..]));
        // Decoded once only: %252e stays "%2e", a literal name.
        assert_eq!(percent_decode("/%252e").as_deref(), Some(&b"/%2e"[..]));
        assert_eq!(percent_decode("/%00").as_deref(), Some(&b"/\0"[..]));
        assert_eq!(percent_decode("/%zz"), None);
        assert_eq!(percent_decode("/%2"), None);
        assert_eq!(percent_decode("/%+1"), None);
    }
}
