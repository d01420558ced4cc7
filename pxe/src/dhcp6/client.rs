//! What the server learns about a DHCPv6 client beyond its DUID: its MAC and its name.
//!
//! **MAC**, first that applies:
//! 1. the Client Link-Layer Address option (79, RFC 6939), when present: it is the address the
//!    frame came from on the wire, written by the relay that saw it (this server serves its
//!    own link only, so in practice it never arrives);
//! 2. the link-local source address's EUI-64 interface identifier (`ff:fe` in its middle, the
//!    universal/local bit flipped back): the address the kernel built from the NIC that sent
//!    the packet (Linux's default `addr_gen_mode = 0`, and what firmware PXE clients use);
//! 3. the Ethernet address inside a DUID-LLT or DUID-LL: the client's DUID is made once and
//!    kept (dhclient and systemd-networkd store it), so it may name another NIC of the machine,
//!    or one it no longer has; it is the last resort.
//!
//! Stable-privacy link-local addresses (RFC 7217, NetworkManager's default) carry no MAC; such
//! a client is matched by its DUID-LL(T) if it has one, or should be given a static host by
//! `duid`.
//!
//! **Name**: the Client FQDN option (39, RFC 4704): flags, then the name in DNS wire format
//! (a full name, or a partial one without the terminating root label).

use std::net::Ipv6Addr;

use crate::config::Mac;
use crate::leases::v6::Duid;

/// Option 79's code.
pub const CLIENT_LINKLAYER_ADDR: u16 = 79;
/// Option 39's code.
pub const CLIENT_FQDN: u16 = 39;

/// The client's MAC, by the rule of the module docs. `option79` is the option's raw value.
pub fn client_mac(option79: Option<&[u8]>, source: Ipv6Addr, duid: Option<&Duid>) -> Option<Mac> {
    option79
        .and_then(|raw| match raw {
            // Hardware type 1 (Ethernet), six bytes.
            [0, 1, mac @ ..] if mac.len() == 6 => Mac::from_slice(mac),
            _ => None,
        })
        .or_else(|| eui64_mac(source))
        .or_else(|| duid.and_then(Duid::ethernet))
}

/// The MAC inside an EUI-64 link-local address (fe80::/64 with `ff:fe` in the middle).
pub fn eui64_mac(addr: Ipv6Addr) -> Option<Mac> {
    let o = addr.octets();
    if o[..8] != [0xfe, 0x80, 0, 0, 0, 0, 0, 0] || o[11] != 0xff || o[12] != 0xfe {
        return None;
    }
    let mac = Mac([o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]]);
    (!mac.is_zero()).then_some(mac)
}

/// The name in a Client FQDN option's value, labels joined by dots, lowercased; None for an
/// empty or malformed one (a label over 63 bytes, a length past the end, bytes that are not
/// printable ASCII).
pub fn fqdn_name(raw: &[u8]) -> Option<String> {
    let (_flags, mut rest) = raw.split_first()?;
    let mut labels: Vec<String> = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len == 0 {
            break;
        }
        if len > 63 || len > tail.len() {
            return None;
        }
        let label = &tail[..len];
        if !label.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        rest = &tail[len..];
    }
    (!labels.is_empty()).then(|| labels.join("."))
}

/// The Client FQDN option a Reply carries back (RFC 4704 §4.2): the client's name, with the S
/// flag set since the server's own DNS publishes the name (AAAA and PTR) and N clear.
pub fn fqdn_reply(name: &str) -> Vec<u8> {
    let mut out = vec![0x01];
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_comes_from_option_79_then_the_eui64_then_the_duid() {
        let duid = Duid::parse("00:03:00:01:52:54:00:00:00:03").unwrap();
        let ll: Ipv6Addr = "fe80::5054:ff:fe00:2".parse().unwrap();
        let privacy: Ipv6Addr = "fe80::1c2d:3e4f:5a6b:7c8d".parse().unwrap();
        let m = |last| Mac([0x52, 0x54, 0, 0, 0, last]);
        assert_eq!(
            client_mac(Some(&[0, 1, 0x52, 0x54, 0, 0, 0, 1]), ll, Some(&duid)),
            Some(m(1))
        );
        assert_eq!(client_mac(None, ll, Some(&duid)), Some(m(2)));
        assert_eq!(client_mac(None, privacy, Some(&duid)), Some(m(3)));
        assert_eq!(client_mac(Some(&[0, 6, 1]), privacy, None), None);
    }

    #[test]
    fn fqdn_names_are_read_checked_and_written_back() {
        let raw = [0, 3, b'W', b'e', b'b', 3, b'l', b'a', b'b', 0];
        assert_eq!(fqdn_name(&raw).as_deref(), Some("web.lab"));
        assert_eq!(fqdn_name(&[0, 3, b'd', b'b', b'1']).as_deref(), Some("db1"));
        assert_eq!(fqdn_name(&[0, 9, b'x']), None);
        assert_eq!(fqdn_name(&[0, 1, 0]), None);
        assert_eq!(fqdn_name(&[0]), None);
        assert_eq!(fqdn_name(&[]), None);
        assert_eq!(fqdn_reply("web"), vec![1, 3, b'w', b'e', b'b', 0]);
    }
}
