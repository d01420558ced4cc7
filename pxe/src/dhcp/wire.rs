//! DHCPv4 on the wire: a guarded decoder for untrusted bytes and an encoder for our replies.
//!
//! Decoding happens in three layers, cheapest and strictest first:
//! 1. our own header checks (length, op, htype/hlen, magic cookie) — dhcproto 0.15 panics in
//!    `chaddr()` when hlen > 16 and never checks the cookie;
//! 2. our own option walk (`RawOptions`), which validates every length byte, concatenates split
//!    options (RFC 3396) and rejects the bad lengths on which dhcproto's debug_asserts fire
//!    (options 80, 81, 94, 152–155);
//! 3. dhcproto's decoder inside `catch_unwind`, as a last line of defence: a packet it refuses or
//!    panics on is dropped too.
//!
//! Option values come from our walk, not from dhcproto's model: dhcproto reads fixed-width options
//! (57, 93, ...) without checking their length byte, keeps only one of a repeated option, has no
//! option 175, and maps option 93 through a pre-RFC-4578-errata enum.
//!
//! Replies are encoded here (no dhcproto): the header fields are fixed-size so nothing can panic,
//! option order follows the client's parameter request list, and the size limit (option 57) is
//! enforced by leaving out options that do not fit.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::config::Mac;
use crate::leases::{Client, ClientId};

/// Magic cookie 99.130.83.99 (RFC 2131 §3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP header (236 bytes) + cookie.
pub const HEADER_LEN: usize = 240;
/// Every DHCP client must accept a 576-byte IP datagram (RFC 2131 §2).
pub const MIN_MAX_MESSAGE_SIZE: u16 = 576;
/// IPv4 header (20) + UDP header (8): option 57 counts the whole IP datagram.
const IP_UDP_OVERHEAD: usize = 28;
/// Some BOOTP-era clients discard replies shorter than a BOOTP message (300 bytes).
const MIN_REPLY_LEN: usize = 300;

pub const BOOTREQUEST: u8 = 1;
pub const BOOTREPLY: u8 = 2;
const HTYPE_ETHERNET: u8 = 1;
const BROADCAST_FLAG: u16 = 0x8000;

/// Option codes used by the server.
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const MTU: u8 = 26;
    pub const BROADCAST_ADDR: u8 = 28;
    pub const NTP_SERVERS: u8 = 42;
    pub const VENDOR_SPECIFIC: u8 = 43;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAM_REQUEST_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_T1: u8 = 58;
    pub const REBINDING_T2: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const TFTP_SERVER_NAME: u8 = 66;
    pub const BOOTFILE_NAME: u8 = 67;
    pub const USER_CLASS: u8 = 77;
    pub const RAPID_COMMIT: u8 = 80;
    pub const CLIENT_FQDN: u8 = 81;
    /// Relay agent information (RFC 3046): echoed back unchanged, last.
    pub const RELAY_AGENT_INFO: u8 = 82;
    pub const CLIENT_ARCH: u8 = 93;
    pub const CLIENT_NDI: u8 = 94;
    pub const CLIENT_UUID: u8 = 97;
    /// Classless static routes (RFC 3442).
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const IPXE_ENCAP: u8 = 175;
    /// PXELINUX (RFC 5071): magic, config file, path prefix, reboot time.
    pub const PXELINUX_MAGIC: u8 = 208;
    pub const PXELINUX_CONFIG_FILE: u8 = 209;
    pub const PXELINUX_PATH_PREFIX: u8 = 210;
    pub const PXELINUX_REBOOT_TIME: u8 = 211;
    /// Microsoft's pre-RFC-3442 classless static routes (same encoding as 121).
    pub const MS_CLASSLESS_ROUTES: u8 = 249;
    pub const END: u8 = 255;
}

/// DHCP message types (option 53) that a server receives or sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<MessageType> {
        Some(match v {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            _ => return None,
        })
    }
}

/// Why an incoming packet was dropped without an answer. Counted per reason in the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum DropReason {
    /// Shorter than the 240-byte header + cookie.
    TooShort,
    /// op is not BOOTREQUEST (a reply, or garbage).
    NotRequest,
    /// htype is not Ethernet or hlen is not 6 (includes hlen > 16, which panics dhcproto).
    BadHardware,
    /// Magic cookie is not 99.130.83.99.
    BadCookie,
    /// An option runs past the end of the packet, or has a length its type forbids.
    BadOption,
    /// No option 53, or a value we do not know.
    BadMessageType,
    /// A message type only servers send (OFFER/ACK/NAK).
    ServerMessage,
    /// dhcproto refused the packet after our checks passed.
    DecodeError,
    /// dhcproto panicked after our checks passed (caught; should never happen).
    DecodePanic,
    /// A REQUEST that matches none of RFC 2131 §4.3.2's states (e.g. no address to request).
    BadRequestState,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::TooShort,
        DropReason::NotRequest,
        DropReason::BadHardware,
        DropReason::BadCookie,
        DropReason::BadOption,
        DropReason::BadMessageType,
        DropReason::ServerMessage,
        DropReason::DecodeError,
        DropReason::DecodePanic,
        DropReason::BadRequestState,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::NotRequest => "not_request",
            DropReason::BadHardware => "bad_hardware",
            DropReason::BadCookie => "bad_cookie",
            DropReason::BadOption => "bad_option",
            DropReason::BadMessageType => "bad_message_type",
            DropReason::ServerMessage => "server_message",
            DropReason::DecodeError => "decode_error",
            DropReason::DecodePanic => "decode_panic",
            DropReason::BadRequestState => "bad_request_state",
        }
    }
}

/// What the server needs from one client message, extracted from the raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    pub msg_type: MessageType,
    pub xid: u32,
    pub secs: u16,
    pub broadcast: bool,
    pub hops: u8,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: Mac,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 12 (lossy UTF-8, control characters removed).
    pub hostname: Option<String>,
    /// Option 61, when usable as an identity (2..=255 bytes; see `leases::client`).
    pub client_id: Option<ClientId>,
    /// Option 55, in the client's order.
    pub param_request_list: Vec<u8>,
    /// Option 60.
    pub vendor_class: Option<Vec<u8>>,
    /// Option 77, raw (RFC 3004 length-prefixed list, or iPXE's plain "iPXE").
    pub user_class: Option<Vec<u8>>,
    /// Option 93: every u16 the client listed.
    pub client_arch: Vec<u16>,
    /// Option 94 (type, major, minor).
    pub client_ndi: Option<[u8; 3]>,
    /// Option 97, raw (type byte + 16-byte UUID for PXE).
    pub client_uuid: Option<Vec<u8>>,
    /// Option 175 present: the client is iPXE.
    pub ipxe_encap: bool,
    /// Option 57, as sent (callers clamp to ≥ 576).
    pub max_message_size: Option<u16>,
    /// Option 82 exactly as the relay sent it (RFC 3046: echoed in every reply).
    pub relay_info: Option<Vec<u8>>,
}

impl ClientMessage {
    /// The client as the lease store knows it (chaddr and option 61).
    pub fn client(&self) -> Client {
        Client::new(self.chaddr, self.client_id.clone())
    }
}

/// Options dhcproto 0.15 reads at a fixed width (and debug_asserts on): never split, see
/// [`RawOptions::parse`].
const DHCPROTO_FIXED_WIDTH: [u8; 7] = [80, 81, 94, 152, 153, 154, 155];

/// Option walk over the bytes after the cookie. Repeated options are concatenated (RFC 3396).
#[derive(Debug, Default)]
pub struct RawOptions {
    map: BTreeMap<u8, Vec<u8>>,
}

impl RawOptions {
    /// Walks TLVs until END. Err when a length byte points past the buffer or a length is invalid
    /// for its option type. A buffer that ends without END is accepted (many clients do that).
    pub fn parse(mut buf: &[u8]) -> Result<RawOptions, DropReason> {
        let mut map: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        while let Some((&code, rest)) = buf.split_first() {
            match code {
                opt::PAD => {
                    buf = rest;
                    continue;
                }
                opt::END => break,
                _ => {}
            }
            let (&len, rest) = rest.split_first().ok_or(DropReason::BadOption)?;
            let len = len as usize;
            if rest.len() < len {
                return Err(DropReason::BadOption);
            }
            let (value, rest) = rest.split_at(len);
            // dhcproto decodes each instance of its fixed-width options alone, so a split one
            // would pass the length check on the concatenation and still trip its debug_asserts.
            // They are a few bytes long: no real client splits them.
            if DHCPROTO_FIXED_WIDTH.contains(&code) && map.contains_key(&code) {
                return Err(DropReason::BadOption);
            }
            map.entry(code).or_default().extend_from_slice(value);
            buf = rest;
        }
        let raw = RawOptions { map };
        raw.check_lengths()?;
        Ok(raw)
    }

    /// Lengths the type of an option fixes. Includes every option on which dhcproto 0.15
    /// debug_asserts (80, 81, 94, 152–155) so it is never handed one.
    fn check_lengths(&self) -> Result<(), DropReason> {
        for (&code, v) in &self.map {
            let ok = match code {
                opt::MESSAGE_TYPE | opt::OVERLOAD => v.len() == 1,
                opt::REQUESTED_IP | opt::SERVER_ID => v.len() == 4,
                opt::MAX_MESSAGE_SIZE => v.len() == 2,
                opt::RAPID_COMMIT => v.is_empty(),
                opt::CLIENT_FQDN => v.len() >= 3,
                opt::CLIENT_NDI => v.len() == 3,
                152..=155 => v.len() == 4,
                opt::CLIENT_ARCH => !v.is_empty() && v.len() % 2 == 0,
                _ => true,
            };
            if !ok {
                return Err(DropReason::BadOption);
            }
        }
        Ok(())
    }

    pub fn get(&self, code: u8) -> Option<&[u8]> {
        self.map.get(&code).map(Vec::as_slice)
    }

    fn ipv4(&self, code: u8) -> Option<Ipv4Addr> {
        let v: [u8; 4] = self.get(code)?.try_into().ok()?;
        Some(Ipv4Addr::from(v))
    }
}

/// Decode one packet from the network. Never panics; every refusal names its reason.
pub fn decode(bytes: &[u8]) -> Result<ClientMessage, DropReason> {
    if bytes.len() < HEADER_LEN {
        return Err(DropReason::TooShort);
    }
    if bytes[0] != BOOTREQUEST {
        return Err(DropReason::NotRequest);
    }
    // hlen > 16 makes dhcproto's chaddr() slice out of bounds; we only serve Ethernet anyway.
    if bytes[1] != HTYPE_ETHERNET || bytes[2] != 6 {
        return Err(DropReason::BadHardware);
    }
    if bytes[236..240] != MAGIC_COOKIE {
        return Err(DropReason::BadCookie);
    }
    let raw = RawOptions::parse(&bytes[HEADER_LEN..])?;
    let msg_type = raw
        .get(opt::MESSAGE_TYPE)
        .and_then(|v| v.first().copied())
        .and_then(MessageType::from_u8)
        .ok_or(DropReason::BadMessageType)?;
    if matches!(
        msg_type,
        MessageType::Offer | MessageType::Ack | MessageType::Nak
    ) {
        return Err(DropReason::ServerMessage);
    }

    let msg = dhcproto_decode(bytes)?;
    // Safe: hlen == 6 was checked above, so chaddr() is the first 6 bytes of a 16-byte array.
    let chaddr = Mac::from_slice(msg.chaddr()).ok_or(DropReason::BadHardware)?;

    Ok(ClientMessage {
        msg_type,
        xid: msg.xid(),
        secs: msg.secs(),
        broadcast: msg.flags().broadcast(),
        hops: msg.hops(),
        ciaddr: msg.ciaddr(),
        giaddr: msg.giaddr(),
        chaddr,
        requested_ip: raw.ipv4(opt::REQUESTED_IP),
        server_id: raw.ipv4(opt::SERVER_ID),
        hostname: raw.get(opt::HOSTNAME).and_then(clean_hostname),
        client_id: raw.get(opt::CLIENT_ID).and_then(ClientId::new),
        param_request_list: raw
            .get(opt::PARAM_REQUEST_LIST)
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
        vendor_class: raw.get(opt::VENDOR_CLASS).map(<[u8]>::to_vec),
        user_class: raw.get(opt::USER_CLASS).map(<[u8]>::to_vec),
        client_arch: raw
            .get(opt::CLIENT_ARCH)
            .map(|v| {
                v.chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect()
            })
            .unwrap_or_default(),
        client_ndi: raw.get(opt::CLIENT_NDI).and_then(|v| v.try_into().ok()),
        client_uuid: raw.get(opt::CLIENT_UUID).map(<[u8]>::to_vec),
        ipxe_encap: raw.get(opt::IPXE_ENCAP).is_some(),
        max_message_size: raw
            .get(opt::MAX_MESSAGE_SIZE)
            .and_then(|v| v.try_into().ok())
            .map(u16::from_be_bytes),
        relay_info: raw.get(opt::RELAY_AGENT_INFO).map(<[u8]>::to_vec),
    })
}

/// dhcproto's decode, with its panics turned into a drop.
fn dhcproto_decode(bytes: &[u8]) -> Result<dhcproto::v4::Message, DropReason> {
    use dhcproto::Decodable;
    let result = std::panic::catch_unwind(|| {
        let msg = dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(bytes))?;
        // Touch chaddr inside the guard: it is what panics on a bad hlen.
        let _ = msg.chaddr().len();
        Ok::<_, dhcproto::error::DecodeError>(msg)
    });
    match result {
        Ok(Ok(msg)) => Ok(msg),
        Ok(Err(_)) => Err(DropReason::DecodeError),
        Err(_) => Err(DropReason::DecodePanic),
    }
}

/// Hostnames go into logs and lease files: printable ASCII only, at most 63 bytes.
fn clean_hostname(raw: &[u8]) -> Option<String> {
    let s: String = raw
        .iter()
        .take_while(|&&b| b != 0)
        .filter(|b| b.is_ascii_graphic())
        .take(63)
        .map(|&b| b as char)
        .collect();
    (!s.is_empty()).then_some(s)
}

/// A reply we are about to send, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyMessage {
    pub msg_type: MessageType,
    pub xid: u32,
    pub broadcast: bool,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: Mac,
    /// Header `sname` (≤ 63 bytes + NUL; longer values are left out of the header).
    pub sname: Vec<u8>,
    /// Header `file` (≤ 127 bytes + NUL; longer values only travel in option 67).
    pub file: Vec<u8>,
    /// Options other than 53, in priority order. Values over 255 bytes are split (RFC 3396).
    pub options: Vec<(u8, Vec<u8>)>,
    /// Option 82 to echo (RFC 3046 §2.2): written last, and room for it is kept before any other
    /// option is placed; left out only if it alone would not fit the client's size limit.
    pub relay_info: Option<Vec<u8>>,
}

impl ReplyMessage {
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        if code == opt::RELAY_AGENT_INFO {
            return self.relay_info.as_deref();
        }
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }
}

/// Encode a reply that fits in `max_message_size` (IP datagram bytes, clamped to ≥ 576).
/// Options are written in `options` order; one that does not fit is skipped (so put the ones the
/// client cannot do without first).
pub fn encode(reply: &ReplyMessage, max_message_size: u16) -> Vec<u8> {
    let limit = max_message_size.max(MIN_MAX_MESSAGE_SIZE) as usize - IP_UDP_OVERHEAD;
    let mut out = Vec::with_capacity(limit.min(1500));
    out.push(BOOTREPLY);
    out.push(HTYPE_ETHERNET);
    out.push(6);
    out.push(0); // hops
    out.extend_from_slice(&reply.xid.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // secs
    let flags = if reply.broadcast { BROADCAST_FLAG } else { 0 };
    out.extend_from_slice(&flags.to_be_bytes());
    for a in [reply.ciaddr, reply.yiaddr, reply.siaddr, reply.giaddr] {
        out.extend_from_slice(&a.octets());
    }
    let mut chaddr = [0u8; 16];
    chaddr[..6].copy_from_slice(&reply.chaddr.octets());
    out.extend_from_slice(&chaddr);
    out.extend_from_slice(&nul_field::<64>(&reply.sname));
    out.extend_from_slice(&nul_field::<128>(&reply.file));
    out.extend_from_slice(&MAGIC_COOKIE);
    out.extend_from_slice(&[opt::MESSAGE_TYPE, 1, reply.msg_type as u8]);
    // Option 82 goes in whenever it fits at all: only an option longer than any relay writes
    // (RFC 3046 caps it at 255 bytes; RFC 3396 concatenation could make more) can be too big.
    let relay = reply
        .relay_info
        .as_deref()
        .map(|v| encode_option(opt::RELAY_AGENT_INFO, v))
        .filter(|r| out.len() + r.len() < limit)
        .unwrap_or_default();
    for (code, value) in &reply.options {
        let encoded = encode_option(*code, value);
        // Keep room for option 82 and one byte for END.
        if out.len() + encoded.len() + relay.len() < limit {
            out.extend_from_slice(&encoded);
        }
    }
    out.extend_from_slice(&relay);
    out.push(opt::END);
    if out.len() < MIN_REPLY_LEN {
        out.resize(MIN_REPLY_LEN, 0);
    }
    out
}

/// A NUL-terminated fixed-size header field; a value that does not fit with its NUL is left out
/// entirely (a cut-off file name would point at the wrong file).
fn nul_field<const N: usize>(value: &[u8]) -> [u8; N] {
    let mut field = [0u8; N];
    if value.len() < N && !value.contains(&0) {
        field[..value.len()].copy_from_slice(value);
    }
    field
}

fn encode_option(code: u8, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 2);
    if value.is_empty() {
        out.extend_from_slice(&[code, 0]);
    }
    for chunk in value.chunks(255) {
        out.push(code);
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid DISCOVER.
    pub(crate) fn discover(mac: Mac, extra: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 240];
        p[0] = BOOTREQUEST;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        p[28..34].copy_from_slice(&mac.octets());
        p[236..240].copy_from_slice(&MAGIC_COOKIE);
        p.extend_from_slice(&[53, 1, 1]);
        p.extend_from_slice(extra);
        p.push(255);
        p
    }

    #[test]
    fn decodes_minimal_discover() {
        let m = decode(&discover(
            Mac([1, 2, 3, 4, 5, 6]),
            &[50, 4, 10, 0, 0, 7, 57, 2, 5, 192],
        ))
        .unwrap();
        assert_eq!(m.msg_type, MessageType::Discover);
        assert_eq!(m.xid, 0x1234_5678);
        assert_eq!(m.chaddr, Mac([1, 2, 3, 4, 5, 6]));
        assert_eq!(m.requested_ip, Some(Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(m.max_message_size, Some(1472));
    }

    #[test]
    fn header_guards_name_their_reason() {
        let good = discover(Mac([1; 6]), &[]);
        assert_eq!(decode(&good[..239]), Err(DropReason::TooShort));
        let mut p = good.clone();
        p[0] = BOOTREPLY;
        assert_eq!(decode(&p), Err(DropReason::NotRequest));
        let mut p = good.clone();
        p[2] = 17;
        assert_eq!(decode(&p), Err(DropReason::BadHardware));
        let mut p = good.clone();
        p[2] = 255;
        assert_eq!(decode(&p), Err(DropReason::BadHardware));
        let mut p = good.clone();
        p[236] = 0;
        assert_eq!(decode(&p), Err(DropReason::BadCookie));
        let mut p = good.clone();
        p[242] = 2; // OFFER from a "client"
        assert_eq!(decode(&p), Err(DropReason::ServerMessage));
        let mut p = good;
        p[242] = 99;
        assert_eq!(decode(&p), Err(DropReason::BadMessageType));
    }

    #[test]
    fn option_lengths_that_trip_dhcproto_debug_asserts_are_dropped() {
        for bad in [
            &[80u8, 1, 0][..],
            &[81, 1, 0],
            &[94, 2, 1, 2],
            &[152, 3, 0, 0, 0],
            &[155, 0],
            &[93, 3, 0, 7, 0],
            &[57, 3, 1, 2, 3],
        ] {
            assert_eq!(
                decode(&discover(Mac([1; 6]), bad)),
                Err(DropReason::BadOption),
                "{bad:?}"
            );
        }
        // Overflowing length.
        let mut p = discover(Mac([1; 6]), &[]);
        p.pop();
        p.extend_from_slice(&[60, 200, 1, 2]);
        assert_eq!(decode(&p), Err(DropReason::BadOption));
    }

    #[test]
    fn split_fixed_width_options_are_refused() {
        // Found by fuzzing (fuzz/artifacts-keep/dhcp_server-split-opt94-min.bin): option 94 in two
        // non-adjacent pieces whose concatenation has the right length.
        let mut buf = vec![94, 1, 1, 53, 1, 1, 94, 2, 2, 3, 255];
        assert_eq!(RawOptions::parse(&buf).err(), Some(DropReason::BadOption));
        buf = vec![94, 3, 1, 2, 3, 53, 1, 1, 255];
        assert!(RawOptions::parse(&buf).is_ok());
    }

    #[test]
    fn split_options_are_concatenated() {
        let m = decode(&discover(Mac([1; 6]), &[93, 2, 0, 7, 93, 2, 0, 9])).unwrap();
        assert_eq!(m.client_arch, vec![7, 9]);
    }

    #[test]
    fn encode_round_trips_through_dhcproto() {
        use dhcproto::Decodable;
        let reply = ReplyMessage {
            msg_type: MessageType::Offer,
            xid: 42,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(10, 0, 0, 5),
            siaddr: Ipv4Addr::new(10, 0, 0, 1),
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: Mac([2, 0, 0, 0, 0, 1]),
            sname: b"10.0.0.1".to_vec(),
            file: b"ipxe.efi".to_vec(),
            options: vec![
                (opt::SERVER_ID, vec![10, 0, 0, 1]),
                (opt::VENDOR_CLASS, vec![b'x'; 300]),
            ],
            relay_info: None,
        };
        let bytes = encode(&reply, 1500);
        let m = dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&bytes)).unwrap();
        assert_eq!(m.opcode(), dhcproto::v4::Opcode::BootReply);
        assert_eq!(m.xid(), 42);
        assert!(m.flags().broadcast());
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(
            m.fname().map(|f| f.strip_suffix(b"\0").unwrap_or(f)),
            Some(&b"ipxe.efi"[..])
        );
        assert_eq!(m.opts().msg_type(), Some(dhcproto::v4::MessageType::Offer));
        // The 300-byte option was split in two and our own walk joins it back.
        let raw = RawOptions::parse(&bytes[HEADER_LEN..]).unwrap();
        assert_eq!(raw.get(opt::VENDOR_CLASS).map(<[u8]>::len), Some(300));
    }

    #[test]
    fn encode_respects_max_message_size_and_pads_to_bootp_minimum() {
        let mut reply = ReplyMessage {
            msg_type: MessageType::Ack,
            xid: 1,
            broadcast: false,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: Mac::default(),
            sname: vec![],
            file: vec![b'f'; 128], // does not fit with its NUL: left out of the header
            options: vec![(opt::SERVER_ID, vec![1, 2, 3, 4])],
            relay_info: None,
        };
        let small = encode(&reply, 0);
        assert_eq!(small.len(), MIN_REPLY_LEN);
        assert!(small[108..236].iter().all(|&b| b == 0));
        reply.options.push((opt::VENDOR_SPECIFIC, vec![7; 1000]));
        let capped = encode(&reply, 576);
        assert!(capped.len() <= 576 - 28, "{}", capped.len());
        let raw = RawOptions::parse(&capped[HEADER_LEN..]).unwrap();
        assert_eq!(raw.get(opt::SERVER_ID), Some(&[1, 2, 3, 4][..]));
        assert_eq!(raw.get(opt::VENDOR_SPECIFIC), None);
        let big = encode(&reply, 1500);
        let raw = RawOptions::parse(&big[HEADER_LEN..]).unwrap();
        assert_eq!(raw.get(opt::VENDOR_SPECIFIC).map(<[u8]>::len), Some(1000));
    }

    /// RFC 3046 §2.2: option 82 comes back byte for byte, as the last option, even when the
    /// reply is too big for everything else.
    #[test]
    fn relay_info_is_echoed_last_and_never_dropped() {
        let info: Vec<u8> = [1, 4, b'p', b'o', b'r', b't', 2, 3, 0xaa, 0xbb, 0xcc].to_vec();
        let reply = ReplyMessage {
            msg_type: MessageType::Offer,
            xid: 1,
            broadcast: false,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(10, 0, 0, 9),
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::new(10, 9, 0, 1),
            chaddr: Mac::default(),
            sname: vec![],
            file: vec![],
            options: vec![
                (opt::SERVER_ID, vec![1, 2, 3, 4]),
                (opt::VENDOR_SPECIFIC, vec![7; 300]),
            ],
            relay_info: Some(info.clone()),
        };
        for size in [576, 1500] {
            let bytes = encode(&reply, size);
            let tail = &bytes[..bytes.iter().rposition(|&b| b == opt::END).unwrap()];
            let mut want = vec![opt::RELAY_AGENT_INFO, info.len() as u8];
            want.extend_from_slice(&info);
            assert!(tail.ends_with(&want), "82 last, unchanged (size {size})");
            let raw = RawOptions::parse(&bytes[HEADER_LEN..]).unwrap();
            assert_eq!(raw.get(opt::RELAY_AGENT_INFO), Some(&info[..]));
            assert!(bytes.len() <= size as usize - 28);
        }
        // Found by fuzzing: an option 82 bigger than the whole size limit (several concatenated
        // instances) cannot be echoed; the reply still fits.
        let huge = ReplyMessage {
            relay_info: Some(vec![9; 400]),
            ..reply
        };
        let bytes = encode(&huge, 576);
        assert!(bytes.len() <= 576 - 28, "{}", bytes.len());
        let raw = RawOptions::parse(&bytes[HEADER_LEN..]).unwrap();
        assert_eq!(raw.get(opt::RELAY_AGENT_INFO), None);
        assert!(raw.get(opt::SERVER_ID).is_some());
    }
}
