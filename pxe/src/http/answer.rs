//! What to answer one request: method, path and Range in; status, headers and body out. No
//! sockets here (see `conn` for the HTTP/1.1 framing).

use std::fs::File;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::range::{parse_range, RangeReq};
use super::{percent_decode, HttpStats};
use crate::saferoot::{PathError, SafeRoot};

/// One parsed request head, as much of it as a boot server looks at.
#[derive(Debug)]
pub(super) struct RequestHead {
    pub method: String,
    /// The request target exactly as sent (origin form, or absolute form from a proxy).
    pub target: String,
    /// The `Range` header, if any (only one is honoured).
    pub range: Option<String>,
}

pub(super) enum Body {
    None,
    Text(&'static str),
    /// `count` bytes of `file` from `start`, logged through `log` when they are sent (or not).
    File {
        file: File,
        start: u64,
        count: u64,
        log: Outcome,
    },
}

pub(super) struct Answer {
    pub status: u16,
    /// Extra headers; Content-Length and Date are added by the framing.
    pub headers: Vec<(&'static str, String)>,
    /// Content-Length (also for HEAD, where no body follows).
    pub length: u64,
    pub body: Body,
}

impl Answer {
    fn text(status: u16, text: &'static str) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            length: text.len() as u64,
            body: Body::Text(text),
        }
    }

    /// An error answer for a request the framing could not even parse.
    pub(super) fn malformed(
        stats: &Arc<HttpStats>,
        peer: SocketAddr,
        status: u16,
        why: &str,
    ) -> Answer {
        stats.requests.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(client = %peer, reason = why, "http: request refused");
        Outcome {
            stats: stats.clone(),
            peer,
            path: String::new(),
        }
        .finish(status, 0);
        Answer::text(status, reason(status))
    }
}

/// Opens the file and works out status and length. Runs on the async runtime: the open is a
/// few syscalls on a boot root that is normally in the page cache.
pub(super) fn answer(
    root: &SafeRoot,
    stats: &Arc<HttpStats>,
    peer: SocketAddr,
    req: &RequestHead,
) -> Answer {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let raw_path = path_of(&req.target).to_owned();
    let log = Outcome {
        stats: stats.clone(),
        peer,
        path: raw_path.clone(),
    };
    let head = match req.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut a = Answer::text(405, "only GET and HEAD\n");
            a.headers.push(("Allow", "GET, HEAD".into()));
            log.finish(405, 0);
            return a;
        }
    };
    let name = match percent_decode(&raw_path) {
        None => {
            tracing::warn!(client = %peer, path = %raw_path, reason = "malformed percent-encoding", "http: request refused");
            log.finish(400, 0);
            return Answer::text(400, "bad request\n");
        }
        Some(bytes) => String::from_utf8(bytes).map_err(|_| PathError::NotUtf8),
    };
    let (file, meta) = match name.and_then(|name| root.open(&name)) {
        Ok(v) => v,
        Err(e) if e.is_not_found() => {
            tracing::debug!(client = %peer, path = %raw_path, "http: not found");
            log.finish(404, 0);
            return Answer::text(404, reason(404));
        }
        Err(e) => {
            tracing::warn!(client = %peer, path = %raw_path, reason = %e, "http: request refused");
            let status = e.http_status();
            log.finish(status, 0);
            return Answer::text(status, reason(status));
        }
    };

    let len = meta.len();
    let (status, start, count) = match parse_range(req.range.as_deref(), len) {
        RangeReq::Full => (200, 0, len),
        RangeReq::Partial { start, end } => (206, start, end - start + 1),
        RangeReq::Unsatisfiable => {
            let mut a = Answer::text(416, "range not satisfiable\n");
            a.headers.push(("Content-Range", format!("bytes */{len}")));
            log.finish(416, 0);
            return a;
        }
    };
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("Accept-Ranges", "bytes".to_string()),
    ];
    if status == 206 {
        let end = start + count - 1;
        headers.push(("Content-Range", format!("bytes {start}-{end}/{len}")));
    }
    let body = if head || count == 0 {
        log.finish(status, 0);
        Body::None
    } else {
        Body::File {
            file,
            start,
            count,
            log,
        }
    };
    Answer {
        status,
        headers,
        length: count,
        body,
    }
}

/// The path of an origin-form (`/a?q`) or absolute-form (`http://host/a?q`) target; the query
/// is ignored.
fn path_of(target: &str) -> &str {
    let target = match target.find("://") {
        Some(i) if target[..i].bytes().all(|b| b.is_ascii_alphabetic()) => {
            let rest = &target[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        _ => target,
    };
    target.split(['?', '#']).next().unwrap_or("/")
}

pub(super) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Internal Server Error",
    }
}

/// Logs one line and counts a response when it is finished.
pub(super) struct Outcome {
    stats: Arc<HttpStats>,
    pub peer: SocketAddr,
    pub path: String,
}

impl Outcome {
    pub(super) fn finish(self, status: u16, bytes: u64) {
        let stats = &self.stats;
        stats.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        let counter = match status {
            200..=299 => &stats.completed,
            404 => &stats.not_found,
            400..=499 => &stats.refused,
            _ => &stats.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let (client, path) = (self.peer.ip(), &self.path);
        if (200..300).contains(&status) {
            tracing::info!(%client, %path, status, bytes, "http: transfer complete");
        } else if status == 404 {
            tracing::debug!(%client, %path, status, "http: not found");
        } else {
            tracing::info!(%client, %path, status, bytes, "http: transfer not completed");
        }
    }

    /// A body that did not go out in full: counted as an error.
    pub(super) fn cut(self, sent: u64, expected: u64, why: &str) {
        tracing::warn!(client = %self.peer.ip(), path = %self.path, sent, expected, reason = why,
            "http: body cut short");
        self.finish(500, sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_come_from_origin_and_absolute_targets_without_the_query() {
        assert_eq!(path_of("/a/b?x=1"), "/a/b");
        assert_eq!(path_of("/a%20b"), "/a%20b");
        assert_eq!(path_of("http://boot:8069/vmlinuz?x"), "/vmlinuz");
        assert_eq!(path_of("http://boot"), "/");
        // Not a scheme: a path that merely contains "://" stays a path.
        assert_eq!(path_of("/x://y"), "/x://y");
    }
}
