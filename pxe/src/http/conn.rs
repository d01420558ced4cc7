//! HTTP/1.1 framing for one connection: read a request head, send the answer, repeat while the
//! connection is kept alive.
//!
//! Why not hyper: a boot server's work is moving file bytes, and through hyper every byte is
//! read into a user-space buffer and written out again (two copies, 256 KiB per connection in
//! flight). Here a file body leaves with `sendfile(2)` straight from the page cache, and a
//! connection holds only its request buffer. A boot server needs very little of HTTP: GET and
//! HEAD, one Range, keep-alive, no request bodies, so the framing stays small; request heads are
//! parsed by `httparse` (hyper's own parser).
//!
//! Timeouts: a request head must arrive in full within `idle` of the server starting to wait for
//! it (slowloris, and an idle keep-alive connection), and a response write that makes no progress
//! for `idle` (a client that stopped reading) ends the connection.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

use super::answer::{answer, reason, Answer, Body, RequestHead};
use super::Ctx;

/// Longest request head accepted (request line and headers); longer gets 431.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// Most bytes one sendfile call is asked for, so one large body does not hold a worker thread
/// for long when the socket buffer keeps draining.
const SENDFILE_MAX: u64 = 4 << 20;

enum Head {
    Request {
        req: RequestHead,
        keep_alive: bool,
        /// Bytes of `buf` this head used (what follows belongs to the next request).
        used: usize,
    },
    /// A request the server cannot take: answered with this status, then the connection closes.
    Refused(u16, &'static str),
    /// The client closed the connection, or stayed silent past the timeout.
    Gone,
}

pub(super) async fn serve(ctx: Arc<Ctx>, mut stream: TcpStream, peer: SocketAddr, idle: Duration) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let (answer, keep_alive) = match read_head(&mut stream, &mut buf, idle).await {
            Head::Gone => break,
            Head::Refused(status, why) => (Answer::malformed(&ctx.stats, peer, status, why), false),
            Head::Request {
                req,
                keep_alive,
                used,
            } => {
                buf.drain(..used);
                (answer(&ctx.root, &ctx.stats, peer, &req), keep_alive)
            }
        };
        if send_answer(&stream, answer, keep_alive, idle)
            .await
            .is_err()
            || !keep_alive
        {
            break;
        }
    }
    // FIN rather than an abrupt close, so a response still in flight is not reset.
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
}

/// Reads until `buf` holds a complete request head.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, idle: Duration) -> Head {
    let deadline = Instant::now() + idle;
    loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                Ok(Some(head)) => return head,
                Ok(None) if buf.len() >= MAX_HEAD => {
                    return Head::Refused(431, "request head too large")
                }
                Ok(None) => {}
                Err(head) => return head,
            }
        }
        buf.reserve(4096);
        match timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            // EOF, a reset, or silence: nothing to answer.
            _ => return Head::Gone,
        }
    }
}

/// `Ok(None)`: incomplete, read more. `Err`: answer with an error and close.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Head::Refused(431, "too many request headers"))
        }
        Err(_) => return Err(Head::Refused(400, "malformed request head")),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Head::Refused(400, "malformed request line"));
    };
    let mut range = None;
    let mut connection = String::new();
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("");
        if h.name.eq_ignore_ascii_case("range") {
            range.get_or_insert_with(|| value.to_owned());
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection.push_str(&value.to_ascii_lowercase());
            connection.push(',');
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && value.trim() != "0")
        {
            // GET and HEAD carry no body; reading one only to throw it away is not worth the
            // request-smuggling surface.
            return Err(Head::Refused(413, "request bodies are not accepted"));
        }
    }
    let has = |token: &str| connection.split(',').any(|t| t.trim() == token);
    // HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 only when asked.
    let keep_alive = if version >= 1 {
        !has("close")
    } else {
        has("keep-alive")
    };
    Ok(Some(Head::Request {
        req: RequestHead {
            method: method.to_owned(),
            target: target.to_owned(),
            range,
        },
        keep_alive,
        used,
    }))
}

/// Sends status line, headers and body. An error means the connection cannot go on.
async fn send_answer(
    stream: &TcpStream,
    a: Answer,
    keep_alive: bool,
    idle: Duration,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", a.status, reason(a.status));
    for (name, value) in &a.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nDate: {}\r\n",
        a.length,
        httpdate::fmt_http_date(SystemTime::now())
    ));
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    match a.body {
        Body::None => send_all(stream, head.as_bytes(), false, idle).await,
        Body::Text(text) => {
            head.push_str(text);
            send_all(stream, head.as_bytes(), false, idle).await
        }
        Body::File {
            file,
            start,
            count,
            log,
        } => {
            // MSG_MORE: the head goes out in the same segment as the first body bytes.
            if let Err(e) = send_all(stream, head.as_bytes(), true, idle).await {
                log.cut(0, count, "client gone before the body");
                return Err(e);
            }
            let mut sent = 0;
            match send_file(stream, &file, start, count, idle, &mut sent).await {
                Ok(()) => {
                    log.finish(a.status, sent);
                    Ok(())
                }
                Err(e) => {
                    log.cut(sent, count, &e.to_string());
                    Err(e)
                }
            }
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(ErrorKind::TimedOut, "no progress within the idle timeout")
}

async fn send_all(
    stream: &TcpStream,
    mut data: &[u8],
    more: bool,
    idle: Duration,
) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    while !data.is_empty() {
        let write = stream.async_io(Interest::WRITABLE, || {
            // SAFETY: `data` is a live slice; the fd is the stream's own socket.
            let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), flags) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        let n = timeout(idle, write).await.map_err(|_| idle_error())??;
        data = &data[n..];
    }
    Ok(())
}

/// `count` bytes of `file` from `start` through sendfile(2). A file that shrank under us is an
/// error: the length was promised in Content-Length, so the connection must close.
async fn send_file(
    stream: &TcpStream,
    file: &std::fs::File,
    start: u64,
    count: u64,
    idle: Duration,
    sent: &mut u64,
) -> io::Result<()> {
    let (sock, src) = (stream.as_raw_fd(), file.as_raw_fd());
    let end = start + count;
    let mut offset = start as libc::off_t;
    while (offset as u64) < end {
        let want = (end - offset as u64).min(SENDFILE_MAX) as usize;
        let write = stream.async_io(Interest::WRITABLE, || {
            // SAFETY: both fds are open for the duration of the call; `offset` is ours.
            let n = unsafe { libc::sendfile(sock, src, &mut offset, want) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as u64)
            }
        });
        let n = timeout(idle, write).await.map_err(|_| idle_error())??;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "file shrank while serving",
            ));
        }
        *sent += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> (RequestHead, bool, usize) {
        match parse_head(raw.as_bytes()) {
            Ok(Some(Head::Request {
                req,
                keep_alive,
                used,
            })) => (req, keep_alive, used),
            _ => panic!("not a complete request: {raw:?}"),
        }
    }

    fn refused(raw: &str) -> u16 {
        match parse_head(raw.as_bytes()) {
            Err(Head::Refused(status, _)) => status,
            _ => panic!("not refused: {raw:?}"),
        }
    }

    #[test]
    fn keep_alive_follows_the_version_and_the_connection_header() {
        assert!(parsed("GET / HTTP/1.1\r\nHost: a\r\n\r\n").1);
        assert!(!parsed("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").1);
        assert!(!parsed("GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n").1);
        assert!(!parsed("GET / HTTP/1.0\r\n\r\n").1);
        assert!(parsed("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").1);
    }

    #[test]
    fn a_pipelined_request_stays_in_the_buffer() {
        let first = "GET /a HTTP/1.1\r\nRange: bytes=0-1\r\nRange: bytes=5-6\r\n\r\n";
        let raw = format!("{first}GET /b HTTP/1.1\r\n\r\n");
        let (req, _, used) = parsed(&raw);
        assert_eq!(used, first.len());
        assert_eq!((req.method.as_str(), req.target.as_str()), ("GET", "/a"));
        assert_eq!(
            req.range.as_deref(),
            Some("bytes=0-1"),
            "the first Range wins"
        );
    }

    #[test]
    fn incomplete_heads_wait_and_bad_ones_are_refused() {
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nHost:"), Ok(None)));
        assert_eq!(
            refused("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
            413
        );
        assert_eq!(
            refused("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            413
        );
        assert_eq!(refused("GET /a b HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused("\u{1}GET / HTTP/1.1\r\n\r\n"), 400);
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(refused(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
        // A zero Content-Length is no body.
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
                .0
                .method,
            "POST"
        );
    }
}
