//! HTTP boot server (hyper 1, HTTP/1.1) over the same [`SafeRoot`] as TFTP.
//!
//! - GET and HEAD only; anything else is 405 with `Allow: GET, HEAD`.
//! - The URL path is percent-decoded exactly once, then the SafeRoot rules apply (so `%2e%2e/`
//!   is refused like `../`); a malformed escape is 400. The query string is ignored.
//! - One byte range (`bytes=a-b`, `a-`, `-n`) gives 206 with Content-Range; an unsatisfiable
//!   one 416 with `Content-Range: bytes */len`; several ranges or an invalid header get the
//!   whole file with 200 (RFC 9110 allows ignoring Range).
//! - No directory listings: a directory is 404. Files are streamed in chunks, never read whole.
//! - A connection quiet for `idle_timeout` (default 10 s) in both directions is closed, and
//!   request headers must arrive within the same time (hyper's header_read_timeout): slowloris.
//! - At most [`MAX_CONNECTIONS`] connections; past that new ones are closed at once.
//! - Shutdown: when the watch turns true the listener stops and `run` returns; connections in
//!   flight are cut (their tasks aborted).

mod idle;
mod range;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::saferoot::{PathError, SafeRoot};
pub use range::{parse_range, RangeReq};

pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_CONNECTIONS: usize = 1024;
/// Size of one read from the file into the response.
const CHUNK: usize = 256 * 1024;

type Body = BoxBody<Bytes, io::Error>;

/// Counters, shared with whoever reports status.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests received.
    pub requests: AtomicU64,
    /// 2xx responses delivered in full (HEAD included).
    pub completed: AtomicU64,
    /// 4xx answers: refused or missing paths, bad methods, unsatisfiable ranges.
    pub refused: AtomicU64,
    /// 5xx answers and bodies cut short (client went away, read error, idle timeout).
    pub errors: AtomicU64,
    /// File bytes handed to the connection.
    pub bytes_sent: AtomicU64,
    /// Connections open now.
    pub connections: AtomicUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HttpStatsSnapshot {
    pub requests: u64,
    pub completed: u64,
    pub refused: u64,
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
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(idle::IdleTimeout::new(stream, idle));
    let svc_ctx = ctx.clone();
    let svc = hyper::service::service_fn(move |req| {
        let ctx = svc_ctx.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, peer, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .keep_alive(true)
        .serve_connection(io, svc);
    if let Err(e) = conn.await {
        tracing::debug!(client = %peer, error = %e, "http: connection ended");
    }
    ctx.stats.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn handle(ctx: &Ctx, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    ctx.stats.requests.fetch_add(1, Ordering::Relaxed);
    let raw_path = req.uri().path().to_owned();
    let log = Outcome {
        stats: ctx.stats.clone(),
        peer,
        path: raw_path.clone(),
    };

    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            log.finish(resp.status(), 0);
            return resp;
        }
    };
    let name = match percent_decode(&raw_path) {
        None => {
            tracing::warn!(client = %peer, path = %raw_path, reason = "malformed percent-encoding", "http: request refused");
            log.finish(StatusCode::BAD_REQUEST, 0);
            return plain(StatusCode::BAD_REQUEST, "bad request\n");
        }
        Some(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Ok(s),
            Err(_) => Err(PathError::NotUtf8),
        },
    };
    let opened = match name {
        Err(e) => Err(e),
        Ok(name) => {
            let root = ctx.root.clone();
            tokio::task::spawn_blocking(move || root.open(&name))
                .await
                .unwrap_or_else(|e| Err(PathError::Io(io::Error::other(e))))
        }
    };
    let (file, meta) = match opened {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(client = %peer, path = %raw_path, reason = %e, "http: request refused");
            let status =
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            log.finish(status, 0);
            return plain(status, status.canonical_reason().unwrap_or("error"));
        }
    };

    let len = meta.len();
    let range_header = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let (status, start, count) = match parse_range(range_header, len) {
        RangeReq::Full => (StatusCode::OK, 0, len),
        RangeReq::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeReq::Unsatisfiable => {
            let mut resp = plain(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            log.finish(resp.status(), 0);
            return resp;
        }
    };

    let body = if head || count == 0 {
        log.finish(status, 0);
        Empty::new().map_err(|never| match never {}).boxed()
    } else {
        let mut file = tokio::fs::File::from_std(file);
        if start > 0 {
            if let Err(e) = file.seek(io::SeekFrom::Start(start)).await {
                tracing::warn!(client = %peer, path = %raw_path, error = %e, "http: seek failed");
                log.finish(StatusCode::INTERNAL_SERVER_ERROR, 0);
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "read error\n");
            }
        }
        file_body(
            file,
            count,
            Transfer {
                outcome: Some(log),
                status,
                sent: 0,
                expected: count,
            },
        )
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if status == StatusCode::PARTIAL_CONTENT {
        let end = start + count - 1;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            headers.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// Streams `count` bytes from the file's current position in [`CHUNK`]-sized reads.
fn file_body(file: tokio::fs::File, count: u64, transfer: Transfer) -> Body {
    let chunks = stream::unfold(
        (file, count, transfer),
        |(mut file, left, mut transfer)| async move {
            if left == 0 {
                transfer.done();
                return None;
            }
            let want = left.min(CHUNK as u64) as usize;
            let mut buf = BytesMut::with_capacity(want);
            // The length must match Content-Length, so a file that shrank under us is an error
            // (hyper then closes the connection rather than send a short body).
            let read = file.read_buf(&mut buf).await.and_then(|n| {
                if n == 0 {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while serving",
                    ))
                } else {
                    Ok(n)
                }
            });
            match read {
                Ok(n) => {
                    transfer.sent += n as u64;
                    Some((
                        Ok(Frame::data(buf.freeze())),
                        (file, left - n as u64, transfer),
                    ))
                }
                Err(e) => Some((Err(e), (file, 0, transfer))),
            }
        },
    );
    StreamBody::new(chunks).boxed()
}

/// Logs one line and counts a response when it is finished.
struct Outcome {
    stats: Arc<HttpStats>,
    peer: SocketAddr,
    path: String,
}

impl Outcome {
    fn finish(self, status: StatusCode, bytes: u64) {
        let stats = &self.stats;
        stats.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        let counter = if status.is_success() {
            &stats.completed
        } else if status.is_client_error() {
            &stats.refused
        } else {
            &stats.errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let (client, path, code) = (self.peer.ip(), &self.path, status.as_u16());
        if status.is_success() {
            tracing::info!(%client, %path, status = code, bytes, "http: transfer complete");
        } else {
            tracing::info!(%client, %path, status = code, bytes, "http: transfer not completed");
        }
    }
}

/// A body in flight; logs when the body ends or is dropped (client gone, connection cut).
struct Transfer {
    outcome: Option<Outcome>,
    status: StatusCode,
    sent: u64,
    expected: u64,
}

impl Transfer {
    fn done(&mut self) {
        if let Some(outcome) = self.outcome.take() {
            if self.sent == self.expected {
                outcome.finish(self.status, self.sent);
            } else {
                tracing::warn!(client = %outcome.peer.ip(), path = %outcome.path,
                    sent = self.sent, expected = self.expected, "http: body cut short");
                outcome.finish(StatusCode::INTERNAL_SERVER_ERROR, self.sent);
            }
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.done();
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let body = Full::new(Bytes::copy_from_slice(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
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
