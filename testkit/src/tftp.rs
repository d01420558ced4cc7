//! TFTP (RFC 1350, options RFC 2347–2349, windowsize RFC 7440) for tests: a raw client that sends
//! and receives single packets, so a test sees exactly what a server answers and when.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// A read or write request: `name`, `mode` and the options in the order given.
pub fn request(op: u16, name: &[u8], mode: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut p = op.to_be_bytes().to_vec();
    p.extend_from_slice(name);
    p.push(0);
    p.extend_from_slice(mode.as_bytes());
    p.push(0);
    for (k, v) in opts {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    }
    p
}

pub fn ack(block: u16) -> Vec<u8> {
    let mut p = ACK.to_be_bytes().to_vec();
    p.extend_from_slice(&block.to_be_bytes());
    p
}

pub fn error(code: u16, msg: &str) -> Vec<u8> {
    let mut p = ERROR.to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p
}

/// A packet from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Data(u16, Vec<u8>),
    /// The acknowledged options as sent (name, value).
    Oack(Vec<(String, String)>),
    Error(u16, String),
    Other(Vec<u8>),
}

impl Packet {
    pub fn parse(b: &[u8]) -> Packet {
        if b.len() < 2 {
            return Packet::Other(b.to_vec());
        }
        let strings = |from: usize| -> Vec<String> {
            let body = b.get(from..).unwrap_or_default();
            let body = body.strip_suffix(&[0]).unwrap_or(body);
            body.split(|c| *c == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        };
        let number = || u16::from_be_bytes([b[2], b[3]]);
        match u16::from_be_bytes([b[0], b[1]]) {
            DATA if b.len() >= 4 => Packet::Data(number(), b[4..].to_vec()),
            ERROR if b.len() >= 4 => Packet::Error(number(), strings(4).concat()),
            OACK => Packet::Oack(
                strings(2)
                    .chunks(2)
                    .map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default()))
                    .collect(),
            ),
            _ => Packet::Other(b.to_vec()),
        }
    }

    /// The value an OACK gives option `name` (compared without regard to case, as RFC 2347
    /// says); None for any other packet.
    pub fn oack_value(&self, name: &str) -> Option<&str> {
        match self {
            Packet::Oack(opts) => opts
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// One client socket talking to a server's port 69 and then to the transfer's own port (TID),
/// learned from the first reply.
pub struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    tid: Option<SocketAddr>,
}

impl Client {
    pub fn new(server: SocketAddr) -> Client {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind a UDP socket");
        Client {
            sock,
            server,
            tid: None,
        }
    }

    /// Send a read request (to port 69, not the TID).
    pub fn rrq(&self, name: &[u8], mode: &str, opts: &[(&str, &str)]) {
        self.request(RRQ, name, mode, opts);
    }

    pub fn request(&self, op: u16, name: &[u8], mode: &str, opts: &[(&str, &str)]) {
        self.sock
            .send_to(&request(op, name, mode, opts), self.server)
            .expect("send request");
    }

    /// The next packet within `timeout`, or None when nothing came.
    pub fn recv(&mut self, timeout: Duration) -> Option<Packet> {
        self.sock
            .set_read_timeout(Some(timeout))
            .expect("set timeout");
        let mut buf = vec![0u8; 70000];
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                self.tid.get_or_insert(from);
                Some(Packet::parse(&buf[..n]))
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("recv from {}: {e}", self.server),
        }
    }

    /// Send raw bytes to the transfer's TID.
    pub fn send_to_tid(&self, p: &[u8]) {
        self.sock
            .send_to(p, self.tid.expect("TID known after the first reply"))
            .expect("send to TID");
    }

    pub fn ack(&self, block: u16) {
        self.send_to_tid(&ack(block));
    }

    pub fn error(&self, code: u16, msg: &str) {
        self.send_to_tid(&error(code, msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_built_and_read_as_the_rfcs_lay_them_out() {
        assert_eq!(
            request(RRQ, b"a", "octet", &[("blksize", "8")]),
            b"\x00\x01a\x00octet\x00blksize\x008\x00"
        );
        assert_eq!(ack(258), [0, 4, 1, 2]);
        assert_eq!(error(1, "x"), b"\x00\x05\x00\x01x\x00");
        assert_eq!(
            Packet::parse(b"\x00\x03\x00\x02ab"),
            Packet::Data(2, b"ab".to_vec())
        );
        assert_eq!(
            Packet::parse(b"\x00\x05\x00\x01File not found\x00"),
            Packet::Error(1, "File not found".into())
        );
        let oack = Packet::parse(b"\x00\x06blksize\x00512\x00tsize\x0010\x00");
        assert_eq!(oack.oack_value("BLKSIZE"), Some("512"));
        assert_eq!(oack.oack_value("tsize"), Some("10"));
        assert_eq!(Packet::parse(b"\x00"), Packet::Other(vec![0]));
    }
}
