//! The one MAC address type of hostagent.
//!
//! A MAC is parsed once, where it enters (config, netlink, a DHCP packet), and from then on
//! travels as [`Mac`]. It is written in one way everywhere a person or another program reads it:
//! six lower-case two-digit hex bytes joined by `:` (`52:54:00:12:34:56`), in plain text, JSON,
//! libvirt XML and nft rules alike.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mac(pub [u8; 6]);

/// Why a text is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{text}\" is not a MAC address: write six two-digit hex bytes separated by ':', e.g. \"52:54:00:12:34:56\"")]
pub struct ParseMacError {
    pub text: String,
}

impl Mac {
    /// QEMU's OUI, which libvirt uses for the guests and bridges it makes.
    pub const QEMU_OUI: [u8; 3] = [0x52, 0x54, 0x00];

    pub const fn new(bytes: [u8; 6]) -> Mac {
        Mac(bytes)
    }

    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// The first six bytes of `bytes` (a DHCP `chaddr`, a link-layer header), if there are six.
    pub fn from_slice(bytes: &[u8]) -> Option<Mac> {
        let six: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(Mac(six))
    }

    /// Group (multicast/broadcast) bit set: never a host's address.
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }

    /// A stable, locally administered address in QEMU's 52:54:00 block derived from `name`: the
    /// same on every run, host and release (FNV-1a of the name; std's hasher is not stable).
    pub fn derived(name: &str) -> Mac {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in name.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        let [a, b, c] = Self::QEMU_OUI;
        Mac([a, b, c, (h >> 16) as u8, (h >> 8) as u8, h as u8])
    }
}

impl From<[u8; 6]> for Mac {
    fn from(b: [u8; 6]) -> Mac {
        Mac(b)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(m: Mac) -> [u8; 6] {
        m.0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl FromStr for Mac {
    type Err = ParseMacError;

    /// Exactly six `:`-separated two-digit hex bytes, either case.
    fn from_str(text: &str) -> Result<Mac, ParseMacError> {
        let err = || ParseMacError {
            text: text.to_string(),
        };
        let mut out = [0u8; 6];
        let mut parts = text.split(':');
        for slot in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_in_lower_case_and_accepts_upper_case() {
        let m: Mac = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(m, Mac([0x52, 0x54, 0, 0xab, 0xcd, 0x0f]));
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!(m.to_string().parse::<Mac>().unwrap(), m);
    }

    #[test]
    fn malformed_text_is_refused_with_the_text_and_the_form_to_write() {
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:00",
            "52:54:00:ab:cd:f",
            "52:54:00:ab:cd:0g",
            "52-54-00-ab-cd-0f",
            "52:54:00:ab:cd:+f",
            "525400abcd0f",
        ] {
            let e = bad.parse::<Mac>().unwrap_err();
            assert!(e.to_string().contains(bad) && e.to_string().contains("52:54:00:12:34:56"));
        }
    }

    #[test]
    fn json_is_the_text_form_both_ways() {
        let m = Mac([0x52, 0x54, 0, 1, 2, 3]);
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, "\"52:54:00:01:02:03\"");
        assert_eq!(serde_json::from_str::<Mac>(&j).unwrap(), m);
        assert!(serde_json::from_str::<Mac>("[82,84,0,1,2,3]").is_err());
        assert!(serde_json::from_str::<Mac>("\"nope\"").is_err());
    }

    #[test]
    fn derived_is_stable_local_and_differs_by_name() {
        let a = Mac::derived("default");
        assert_eq!(a, Mac::derived("default"));
        assert_ne!(a, Mac::derived("lab"));
        assert_eq!(a.0[..3], Mac::QEMU_OUI);
        assert!(!a.is_multicast());
        // Pinned: changing the derivation would change every bridge and guest MAC on upgrade.
        assert_eq!(a.to_string(), "52:54:00:20:c5:fe");
    }

    #[test]
    fn multicast_zero_and_slices() {
        assert!(Mac([1, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(Mac::default().is_zero());
        assert_eq!(
            Mac::from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]),
            Some(Mac([1, 2, 3, 4, 5, 6]))
        );
        assert_eq!(Mac::from_slice(&[1, 2, 3]), None);
    }
}
