//! DHCPv4 (RFC 2131) for tests, written byte by byte and independently of the server's codec:
//! [`Packet`] builds what a client sends (tests then cut or corrupt the bytes to make hostile
//! input), [`Reply`] reads what a server sent back.
//!
//! Layout: a 236-byte BOOTP header, the magic cookie, then options; the builder always puts
//! option 53 (message type) first, at [`OPTIONS_START`], and ends with END.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

pub const BOOTREQUEST: u8 = 1;
pub const BOOTREPLY: u8 = 2;
pub const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Where the options start: the fixed header plus the cookie.
pub const OPTIONS_START: usize = 240;

/// Message types (option 53).
pub mod msg {
    pub const DISCOVER: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const DECLINE: u8 = 4;
    pub const ACK: u8 = 5;
    pub const NAK: u8 = 6;
    pub const RELEASE: u8 = 7;
    pub const INFORM: u8 = 8;
}

/// The option codes the kit itself writes or reads.
pub mod opt {
    pub const PAD: u8 = 0;
    pub const REQUESTED_IP: u8 = 50;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const CLIENT_ID: u8 = 61;
    pub const RELAY_AGENT_INFO: u8 = 82;
    pub const END: u8 = 255;
}

/// A client message: BOOTREQUEST, Ethernet, hlen 6, xid 0, no flags and no addresses until
/// set; option 53 first, then the options in the order given.
#[derive(Debug, Clone)]
pub struct Packet {
    msg_type: u8,
    mac: [u8; 6],
    xid: u32,
    broadcast: bool,
    ciaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    options: Vec<(u8, Vec<u8>)>,
}

impl Packet {
    pub fn new(msg_type: u8, mac: [u8; 6]) -> Packet {
        Packet {
            msg_type,
            mac,
            xid: 0,
            broadcast: false,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            options: Vec::new(),
        }
    }

    /// What the kit's simulated clients (dhcp-flood, dhcp-spam) send: broadcast flag, option 61
    /// with the MAC, and a parameter request for mask, router and lease time.
    pub fn simulated(msg_type: u8, mac: [u8; 6], xid: u32) -> Packet {
        Packet::new(msg_type, mac)
            .xid(xid)
            .broadcast()
            .client_id()
            .option(opt::PARAMETER_REQUEST_LIST, &[1, 3, 51])
    }

    pub fn xid(mut self, xid: u32) -> Packet {
        self.xid = xid;
        self
    }

    /// Set the broadcast flag: the server answers to 255.255.255.255:68.
    pub fn broadcast(mut self) -> Packet {
        self.broadcast = true;
        self
    }

    pub fn ciaddr(mut self, ip: Ipv4Addr) -> Packet {
        self.ciaddr = ip;
        self
    }

    /// As relayed: giaddr set to the relay agent's address.
    pub fn giaddr(mut self, ip: Ipv4Addr) -> Packet {
        self.giaddr = ip;
        self
    }

    pub fn option(mut self, code: u8, value: &[u8]) -> Packet {
        self.options.push((code, value.to_vec()));
        self
    }

    /// Option 61 as most clients send it: hardware type 1 and the MAC.
    pub fn client_id(self) -> Packet {
        let mut id = vec![1];
        id.extend_from_slice(&self.mac);
        self.option(opt::CLIENT_ID, &id)
    }

    /// A SELECTING REQUEST's options: the offered address (50) and the server chosen (54).
    pub fn selecting(self, ip: Ipv4Addr, server: Ipv4Addr) -> Packet {
        self.option(opt::REQUESTED_IP, &ip.octets())
            .option(opt::SERVER_ID, &server.octets())
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut p = vec![0u8; OPTIONS_START];
        p[0] = BOOTREQUEST;
        p[1] = 1; // Ethernet
        p[2] = 6;
        p[4..8].copy_from_slice(&self.xid.to_be_bytes());
        if self.broadcast {
            p[10] = 0x80;
        }
        p[12..16].copy_from_slice(&self.ciaddr.octets());
        p[24..28].copy_from_slice(&self.giaddr.octets());
        p[28..34].copy_from_slice(&self.mac);
        p[236..240].copy_from_slice(&COOKIE);
        p.extend_from_slice(&[opt::MESSAGE_TYPE, 1, self.msg_type]);
        for (code, value) in &self.options {
            p.push(*code);
            p.push(u8::try_from(value.len()).expect("one option holds at most 255 bytes"));
            p.extend_from_slice(value);
        }
        p.push(opt::END);
        p
    }
}

/// A message as received: the header fields and the options (an option that appears several
/// times is one value, concatenated as RFC 3396 says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub op: u8,
    pub xid: u32,
    pub broadcast: bool,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    /// The `file` header field up to its first NUL.
    pub file: Vec<u8>,
    options: Vec<(u8, Vec<u8>)>,
}

impl Reply {
    /// None for anything that is not a well-formed message: too short, no cookie, an option
    /// running past the end.
    pub fn parse(buf: &[u8]) -> Option<Reply> {
        if buf.len() < OPTIONS_START || buf[236..240] != COOKIE {
            return None;
        }
        let ip = |at: usize| Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3]);
        let file = &buf[108..236];
        let mut options: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut i = OPTIONS_START;
        while i < buf.len() {
            match buf[i] {
                opt::END => break,
                opt::PAD => i += 1,
                code => {
                    let len = usize::from(*buf.get(i + 1)?);
                    let value = buf.get(i + 2..i + 2 + len)?;
                    match options.iter_mut().find(|(c, _)| *c == code) {
                        Some((_, v)) => v.extend_from_slice(value),
                        None => options.push((code, value.to_vec())),
                    }
                    i += 2 + len;
                }
            }
        }
        Some(Reply {
            op: buf[0],
            xid: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            broadcast: buf[10] & 0x80 != 0,
            ciaddr: ip(12),
            yiaddr: ip(16),
            siaddr: ip(20),
            giaddr: ip(24),
            chaddr: buf[28..34].try_into().ok()?,
            file: file[..file.iter().position(|&b| b == 0).unwrap_or(file.len())].to_vec(),
            options,
        })
    }

    pub fn get(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    /// Option 53, if it is one byte long.
    pub fn msg_type(&self) -> Option<u8> {
        match self.get(opt::MESSAGE_TYPE)? {
            [t] => Some(*t),
            _ => None,
        }
    }

    /// An option that holds one IPv4 address.
    pub fn ip(&self, code: u8) -> Option<Ipv4Addr> {
        let a: [u8; 4] = self.get(code)?.try_into().ok()?;
        Some(Ipv4Addr::from(a))
    }

    /// An option that holds one 32-bit number.
    pub fn u32(&self, code: u8) -> Option<u32> {
        Some(u32::from_be_bytes(self.get(code)?.try_into().ok()?))
    }

    /// Option codes in the order they first appear.
    /// Whether the message carries `info` as option 82, unchanged and as its last option: what
    /// RFC 3046 §2.2 asks of a server's replies.
    pub fn echoes_relay_info(&self, info: &[u8]) -> bool {
        self.get(opt::RELAY_AGENT_INFO) == Some(info)
            && self.codes().last() == Some(&opt::RELAY_AGENT_INFO)
    }

    pub fn codes(&self) -> Vec<u8> {
        self.options.iter().map(|(c, _)| *c).collect()
    }
}

/// A UDP socket for a DHCP client that sends on `iface` only (SO_BINDTODEVICE) from `port` (68,
/// or 0 for an ephemeral port), broadcasts allowed. `share` sets SO_REUSEADDR so that another
/// client (busybox udhcpc, with its raw socket) can run on the same interface.
pub fn client_socket(iface: &str, port: u16, share: bool) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if share {
        s.set_reuse_address(true)?;
    }
    s.bind_device(Some(iface.as_bytes()))?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
    s.set_broadcast(true)?;
    Ok(s.into())
}

/// Bytes as lower-case hex: how packets travel on dhcp-raw's command line.
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex back to bytes; None for an odd length or a non-hex digit.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// aa:bb:cc:dd:ee:ff, as the agent logs and prints MACs.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parse aa:bb:cc:dd:ee:ff (any case); None for anything else.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = s
        .trim()
        .split(':')
        .map(|p| {
            (p.len() == 2)
                .then(|| u8::from_str_radix(p, 16).ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_request_parses_back() {
        let mac = [2, 0, 0, 0, 0, 7];
        let p = Packet::new(msg::REQUEST, mac)
            .xid(9)
            .broadcast()
            .client_id()
            .selecting(Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 1))
            .bytes();
        assert_eq!(&p[OPTIONS_START..OPTIONS_START + 3], &[53, 1, msg::REQUEST]);
        assert_eq!(*p.last().unwrap(), opt::END);
        let r = Reply::parse(&p).expect("well-formed");
        assert_eq!(
            (r.op, r.xid, r.broadcast, r.chaddr),
            (BOOTREQUEST, 9, true, mac)
        );
        assert_eq!(r.msg_type(), Some(msg::REQUEST));
        assert_eq!(r.ip(opt::REQUESTED_IP), Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(r.ip(opt::SERVER_ID), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(r.get(opt::CLIENT_ID), Some(&[1, 2, 0, 0, 0, 0, 7][..]));
        assert_eq!(r.codes(), [53, 61, 50, 54]);
    }

    #[test]
    fn split_options_are_joined_and_malformed_messages_refused() {
        let mut p = Packet::new(msg::OFFER, [2; 6])
            .option(43, &[1, 2])
            .option(43, &[3])
            .bytes();
        assert_eq!(Reply::parse(&p).unwrap().get(43), Some(&[1, 2, 3][..]));
        assert!(Reply::parse(&p[..239]).is_none(), "too short");
        p.truncate(p.len() - 2); // the second 43 now claims a byte that is not there
        assert!(Reply::parse(&p).is_none(), "option past the end");
        p[236] = 0;
        assert!(Reply::parse(&p).is_none(), "no cookie");
    }

    #[test]
    fn macs_read_and_write_as_the_agent_prints_them() {
        assert_eq!(
            mac_text(&[0x52, 0x54, 0, 0xab, 0, 0x10]),
            "52:54:00:ab:00:10"
        );
        assert_eq!(
            parse_mac("52:54:00:AB:00:10\n"),
            Some([0x52, 0x54, 0, 0xab, 0, 0x10])
        );
        assert_eq!(parse_mac("52:54:00:ab:00"), None);
        assert_eq!(parse_mac("52:54:00:ab:00:1"), None);
        assert_eq!(from_hex(&to_hex(&[0, 0xab, 255])), Some(vec![0, 0xab, 255]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
