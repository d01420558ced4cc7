//! Who holds a lease: the DHCP client identifier (option 61) when the client sends one, else its
//! hardware address (RFC 2131 §4.2, RFC 4361).
//!
//! One rule, used by the pool, the journal's replay and the lease index alike ([`ClientKey::of`]):
//! - a client identifier of type 1 (Ethernet) with six address bytes names that MAC, so it is the
//!   same client as one that sends no option 61 from that MAC (udhcpc and iPXE send `01:<mac>`,
//!   dhclient sends nothing, both from one NIC: one client, one address);
//! - any other identifier (a DUID from dhcpcd, systemd-networkd or NetworkManager, a text name)
//!   is the client, whatever `chaddr` it arrives with: a machine that moves to a new NIC keeps
//!   its address;
//! - an identifier shorter than 2 bytes (RFC 2132 §9.14's minimum) or longer than 255 (it could
//!   not be journaled) is ignored, and the client is its `chaddr`.
//!
//! Static reservations are by MAC and always match `chaddr`, whatever the identifier.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::Mac;

/// Longest client identifier kept (the journal stores its length in one byte).
pub const MAX_CLIENT_ID: usize = 255;

/// A DHCP client identifier (option 61) exactly as the client sent it: type byte first. Written
/// as colon-separated hex (`ff:00:00:00:01:00:01:...`), in text and JSON.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(Vec<u8>);

impl ClientId {
    /// The identifier, when it is one we use (2..=255 bytes).
    pub fn new(bytes: &[u8]) -> Option<ClientId> {
        (2..=MAX_CLIENT_ID)
            .contains(&bytes.len())
            .then(|| ClientId(bytes.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The MAC a type-1 (Ethernet) identifier names.
    pub fn ethernet(&self) -> Option<Mac> {
        match self.0.as_slice() {
            [1, rest @ ..] if rest.len() == 6 => Mac::from_slice(rest),
            _ => None,
        }
    }
}

/// `aa:bb:...`: how client identifiers and DUIDs are written in text and JSON.
pub(crate) fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            f.write_str(":")?;
        }
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({self})")
    }
}

impl std::str::FromStr for ClientId {
    type Err = String;

    fn from_str(s: &str) -> Result<ClientId, String> {
        let bytes: Option<Vec<u8>> = s
            .split(':')
            .map(|p| {
                (p.len() == 2)
                    .then(|| u8::from_str_radix(p, 16).ok())
                    .flatten()
            })
            .collect();
        bytes.as_deref().and_then(ClientId::new).ok_or_else(|| {
            format!("\"{s}\" is not a client identifier (2 to 255 hex bytes joined by ':')")
        })
    }
}

impl Serialize for ClientId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClientId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ClientId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The identity a lease is held under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientKey {
    /// No usable option 61, or an Ethernet-type one: the MAC.
    Mac(Mac),
    /// Any other client identifier.
    Id(ClientId),
}

impl ClientKey {
    /// The one rule of the module docs.
    pub fn of(chaddr: Mac, client_id: Option<&ClientId>) -> ClientKey {
        match client_id {
            None => ClientKey::Mac(chaddr),
            Some(id) => match id.ethernet() {
                Some(mac) => ClientKey::Mac(mac),
                None => ClientKey::Id(id.clone()),
            },
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Mac(m) => write!(f, "mac {m}"),
            ClientKey::Id(id) => write!(f, "client-id {id}"),
        }
    }
}

/// A client as one message shows it: its hardware address and, if it sent one, its identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub mac: Mac,
    pub id: Option<ClientId>,
}

impl Client {
    pub fn new(mac: Mac, id: Option<ClientId>) -> Client {
        Client { mac, id }
    }

    pub fn key(&self) -> ClientKey {
        ClientKey::of(self.mac, self.id.as_ref())
    }
}

impl From<Mac> for Client {
    fn from(mac: Mac) -> Client {
        Client { mac, id: None }
    }
}

impl From<&Mac> for Client {
    fn from(mac: &Mac) -> Client {
        Client {
            mac: *mac,
            id: None,
        }
    }
}

impl From<&Client> for Client {
    fn from(c: &Client) -> Client {
        c.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x52, 0x54, 0, 0, 0, 1]);

    #[test]
    fn ethernet_ids_are_the_mac_and_others_are_themselves() {
        let eth = ClientId::new(&[1, 0x52, 0x54, 0, 0, 0, 9]).unwrap();
        assert_eq!(
            ClientKey::of(MAC, Some(&eth)),
            ClientKey::Mac(Mac([0x52, 0x54, 0, 0, 0, 9])),
            "the MAC inside the identifier, not chaddr"
        );
        assert_eq!(ClientKey::of(MAC, None), ClientKey::Mac(MAC));
        let duid = ClientId::new(&[0xff, 0, 0, 0, 1, 0, 1, 0, 1, 2, 3]).unwrap();
        assert_eq!(ClientKey::of(MAC, Some(&duid)), ClientKey::Id(duid.clone()));
        // Type 1 of another length is just an identifier.
        let odd = ClientId::new(&[1, 2, 3]).unwrap();
        assert_eq!(ClientKey::of(MAC, Some(&odd)), ClientKey::Id(odd));
    }

    #[test]
    fn identifiers_outside_2_to_255_bytes_are_not_used() {
        assert_eq!(ClientId::new(&[]), None);
        assert_eq!(ClientId::new(&[1]), None);
        assert!(ClientId::new(&[0; 255]).is_some());
        assert_eq!(ClientId::new(&[0; 256]), None);
    }

    #[test]
    fn text_and_json_round_trip() {
        let id = ClientId::new(&[0xff, 0x00, 0x1a]).unwrap();
        assert_eq!(id.to_string(), "ff:00:1a");
        assert_eq!("ff:00:1a".parse::<ClientId>(), Ok(id.clone()));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"ff:00:1a\"");
        assert_eq!(serde_json::from_str::<ClientId>(&json).unwrap(), id);
        assert!("ff".parse::<ClientId>().is_err());
        assert!("ff:0g".parse::<ClientId>().is_err());
        assert!("ff:001".parse::<ClientId>().is_err());
    }
}
