//! TFTP wire format (RFC 1350, options per RFC 2347): parsing what clients send, building what
//! the server sends. Parsing never panics on any input.

use bytes::{BufMut, Bytes, BytesMut};

pub const OP_RRQ: u16 = 1;
pub const OP_WRQ: u16 = 2;
pub const OP_DATA: u16 = 3;
pub const OP_ACK: u16 = 4;
pub const OP_ERROR: u16 = 5;
pub const OP_OACK: u16 = 6;

/// RFC 1350 error codes used here.
pub const ERR_UNDEFINED: u16 = 0;
pub const ERR_ACCESS: u16 = 2;
pub const ERR_ILLEGAL_OP: u16 = 4;

/// A read or write request with its options, names lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub write: bool,
    /// The file name as raw bytes (validated later; may be non-UTF-8).
    pub filename: Vec<u8>,
    pub mode: String,
    pub options: Vec<(String, String)>,
}

impl Request {
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a transfer socket can receive from its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ack(u16),
    Error { code: u16, message: String },
    Other,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("packet too short")]
    Short,
    #[error("not a request (opcode {0})")]
    NotRequest(u16),
    #[error("missing NUL terminator")]
    Unterminated,
}

fn opcode(buf: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]))
}

pub fn parse_request(buf: &[u8]) -> Result<Request, ParseError> {
    let op = opcode(buf).ok_or(ParseError::Short)?;
    let write = match op {
        OP_RRQ => false,
        OP_WRQ => true,
        other => return Err(ParseError::NotRequest(other)),
    };
    let mut fields = buf[2..].split(|b| *b == 0);
    // A well-formed request ends with NUL, so the last split piece is empty.
    let mut pieces: Vec<&[u8]> = fields.by_ref().collect();
    if pieces.pop() != Some(&[][..]) || pieces.len() < 2 {
        return Err(ParseError::Unterminated);
    }
    let filename = pieces[0].to_vec();
    let mode = String::from_utf8_lossy(pieces[1]).to_ascii_lowercase();
    let mut options = Vec::new();
    // Options come in name/value pairs; a dangling name is ignored (RFC 2347 leaves it undefined).
    for pair in pieces[2..].chunks_exact(2) {
        let name = String::from_utf8_lossy(pair[0]).to_ascii_lowercase();
        let value = String::from_utf8_lossy(pair[1]).into_owned();
        if !options.iter().any(|(k, _): &(String, String)| *k == name) {
            options.push((name, value));
        }
    }
    Ok(Request {
        write,
        filename,
        mode,
        options,
    })
}

pub fn parse_reply(buf: &[u8]) -> Reply {
    match (opcode(buf), buf.get(2..4)) {
        (Some(OP_ACK), Some(b)) => Reply::Ack(u16::from_be_bytes([b[0], b[1]])),
        (Some(OP_ERROR), Some(b)) => {
            let rest = &buf[4..];
            let end = rest.iter().position(|c| *c == 0).unwrap_or(rest.len());
            Reply::Error {
                code: u16::from_be_bytes([b[0], b[1]]),
                message: String::from_utf8_lossy(&rest[..end]).into_owned(),
            }
        }
        _ => Reply::Other,
    }
}

pub fn error(code: u16, message: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u16(OP_ERROR);
    b.put_u16(code);
    b.put_slice(message.as_bytes());
    b.put_u8(0);
    b.freeze()
}

pub fn oack(options: &[(&str, String)]) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_u16(OP_OACK);
    for (name, value) in options {
        b.put_slice(name.as_bytes());
        b.put_u8(0);
        b.put_slice(value.as_bytes());
        b.put_u8(0);
    }
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rrq_with_options() {
        let pkt = b"\x00\x01/pxelinux.0\x00octet\x00BLKSIZE\x001468\x00tsize\x000\x00";
        let r = parse_request(pkt).expect("parse");
        assert!(!r.write);
        assert_eq!(r.filename, b"/pxelinux.0");
        assert_eq!(r.mode, "octet");
        assert_eq!(r.option("blksize"), Some("1468"));
        assert_eq!(r.option("tsize"), Some("0"));
    }

    #[test]
    fn rejects_malformed_requests_without_panicking() {
        assert_eq!(parse_request(b""), Err(ParseError::Short));
        assert_eq!(parse_request(b"\x00"), Err(ParseError::Short));
        assert_eq!(
            parse_request(b"\x00\x04\x00\x01"),
            Err(ParseError::NotRequest(4))
        );
        assert_eq!(
            parse_request(b"\x00\x01file"),
            Err(ParseError::Unterminated)
        );
        assert_eq!(
            parse_request(b"\x00\x01file\x00"),
            Err(ParseError::Unterminated)
        );
        assert_eq!(
            parse_request(b"\x00\x01file\x00octet"),
            Err(ParseError::Unterminated)
        );
        // Exhaustive short garbage must not panic.
        for a in 0..=255u8 {
            for len in 0..6 {
                let v: Vec<u8> = (0..len).map(|i| a.wrapping_mul(i + 1)).collect();
                let _ = parse_request(&v);
                let _ = parse_reply(&v);
            }
        }
    }

    #[test]
    fn parses_ack_and_error() {
        assert_eq!(parse_reply(b"\x00\x04\x01\x02"), Reply::Ack(0x0102));
        assert_eq!(
            parse_reply(b"\x00\x05\x00\x08tsize probe\x00"),
            Reply::Error {
                code: 8,
                message: "tsize probe".into()
            }
        );
        assert_eq!(
            parse_reply(b"\x00\x05\x00\x00"),
            Reply::Error {
                code: 0,
                message: String::new()
            }
        );
        assert_eq!(parse_reply(b"\x00\x03\x00\x01abc"), Reply::Other);
    }
}
