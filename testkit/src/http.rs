//! A raw HTTP/1.1 client for tests: the request goes out exactly as written (curl would
//! normalise `..` and percent-escapes), the answer comes back as status, head and body.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The status line and the header lines.
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (names compared without regard to case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.head, name)
    }
}

/// A header's value in a response head (a status line, then `Name: value` lines), as any
/// client prints it (`curl -I`).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// Send `request` as is and read the answer until the server closes the connection.
pub fn exchange(server: SocketAddr, request: &str) -> Response {
    let mut c = TcpStream::connect_timeout(&server, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {server}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    c.write_all(request.as_bytes()).expect("write request");
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Response {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

/// `GET target` with `Connection: close` and `extra` header lines (each ending in CRLF).
pub fn get(server: SocketAddr, target: &str, extra: &str) -> Response {
    exchange(
        server,
        &format!("GET {target} HTTP/1.1\r\nHost: boot\r\nConnection: close\r\n{extra}\r\n"),
    )
}
