//! What the agent created, recorded in `<state_dir>/owned.json`, and the one rule that says
//! whether a live bridge is the agent's ([`ownership`]): `conflicts`, `diff`, the executor and
//! `down` all ask it, so "ours" means the same thing everywhere.

use std::path::{Path, PathBuf};

use hwaddr::Mac;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::files;
use crate::link::Link;
use crate::model::Host;

pub const FILE: &str = "owned.json";

/// Prefix of the IFLA_IFALIAS mark on every bridge the agent creates: `hostagent:<network>`.
pub const ALIAS_PREFIX: &str = "hostagent:";

/// The alias mark for a network's bridge.
pub fn owner_alias(network: &str) -> String {
    format!("{ALIAS_PREFIX}{network}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedBridge {
    pub network: String,
    pub name: String,
    pub ifindex: u32,
    /// The MAC the agent last gave the bridge, for a person reading the file. Not part of the
    /// ownership rule (see [`ownership`]). Written as "52:54:00:.." (and "" for none, as the
    /// previous release wrote it and still reads it).
    #[serde(with = "mac_or_empty")]
    pub mac: Option<Mac>,
}

/// `Option<Mac>` as the string the previous release wrote: "aa:bb:cc:dd:ee:ff", or "" for a link
/// that had no MAC. A malformed MAC is a corrupt state file, never a made-up address.
mod mac_or_empty {
    use super::*;

    pub(super) fn serialize<S: Serializer>(mac: &Option<Mac>, s: S) -> Result<S::Ok, S::Error> {
        match mac {
            Some(m) => m.serialize(s),
            None => s.serialize_str(""),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mac>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(serde::de::Error::custom)
    }
}

/// A sysctl as the agent found it (read just before its first write) and what it set: `down`
/// restores `previous` only when the live value is still `set`. Every key the agent writes is
/// recorded: ip_forward for forwarding networks and each `[sysctl]` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlChange {
    pub key: String,
    pub previous: String,
    pub set: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    #[serde(default)]
    pub bridges: Vec<OwnedBridge>,
    #[serde(default)]
    pub sysctls: Vec<SysctlChange>,
    /// Interfaces the agent put into a firewalld zone (a zone binding carries no mark of its
    /// own, see [`crate::coexist::firewalld`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub firewalld: Vec<String>,
    /// Host ports whose addresses and routes the agent moved onto a bridge (see
    /// [`crate::takeover`]); `down` gives them back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub takeovers: Vec<Takeover>,
}

/// What the agent moved from a host port onto its bridge, so `down` (and drift repair) can put
/// it back exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Takeover {
    pub network: String,
    pub bridge: String,
    pub port: String,
    /// The port's MAC, which the bridge carries (upstream ARP caches and DHCP reservations
    /// keep working).
    #[serde(with = "mac_or_empty")]
    pub port_mac: Option<Mac>,
    /// In the order they were on the port (the first is the primary).
    pub addresses: Vec<crate::link::AddrDetail>,
    pub routes: Vec<crate::link::Route>,
}

impl Owned {
    pub fn path(host: &Host) -> PathBuf {
        host.state_path().join(FILE)
    }

    /// Load the record; a missing file means the agent owns nothing.
    pub fn load(host: &Host) -> Result<Owned, Error> {
        let path = Self::path(host);
        let text = files::read_opt(&path)?;
        Self::parse(&path, text.as_deref())
    }

    /// The record from the file's content (None: no file, the agent owns nothing); `path` is for
    /// the error.
    pub fn parse(path: &Path, text: Option<&str>) -> Result<Owned, Error> {
        match text {
            None => Ok(Owned::default()),
            Some(s) => serde_json::from_str(s).map_err(|e| Error::State {
                path: path.to_path_buf(),
                msg: e.to_string(),
            }),
        }
    }

    /// The file's content.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serializing cannot fail.
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    pub fn save(&self, host: &Host) -> Result<(), Error> {
        files::write_atomic(&Self::path(host), self.to_json().as_bytes())
    }

    pub fn bridge(&self, name: &str) -> Option<&OwnedBridge> {
        self.bridges.iter().find(|b| b.name == name)
    }

    /// Insert or replace the record for `b.name`.
    pub fn record_bridge(&mut self, b: OwnedBridge) {
        self.bridges.retain(|x| x.name != b.name);
        self.bridges.push(b);
    }

    pub fn forget_bridge(&mut self, name: &str) {
        self.bridges.retain(|x| x.name != name);
    }

    pub fn sysctl(&self, key: &str) -> Option<&SysctlChange> {
        self.sysctls.iter().find(|s| s.key == key)
    }

    pub fn record_sysctl(&mut self, c: SysctlChange) {
        // Keep the first `previous`: a second change must not forget the admin's original value.
        if let Some(old) = self.sysctls.iter_mut().find(|s| s.key == c.key) {
            old.set = c.set;
        } else {
            self.sysctls.push(c);
        }
    }

    /// Record an accept that carries no mark of its own (a firewalld zone binding); true when
    /// the record changed.
    pub fn record_accept(&mut self, a: &crate::coexist::Accept) -> bool {
        let unmarked = a.system == crate::coexist::System::Firewalld;
        if unmarked && !self.firewalld.contains(&a.rule) {
            self.firewalld.push(a.rule.clone());
            return true;
        }
        false
    }

    /// Forget the record [`Owned::record_accept`] made; true when the record changed.
    pub fn forget_accept(&mut self, a: &crate::coexist::Accept) -> bool {
        let before = self.firewalld.len();
        if a.system == crate::coexist::System::Firewalld {
            self.firewalld.retain(|i| *i != a.rule);
        }
        before != self.firewalld.len()
    }

    pub fn takeover(&self, network: &str, port: &str) -> Option<&Takeover> {
        self.takeovers
            .iter()
            .find(|t| t.network == network && t.port == port)
    }

    /// The record for (network, port), made when missing.
    pub fn takeover_mut(
        &mut self,
        network: &str,
        bridge: &str,
        port: &str,
        port_mac: Option<Mac>,
    ) -> &mut Takeover {
        let i = match self
            .takeovers
            .iter()
            .position(|t| t.network == network && t.port == port)
        {
            Some(i) => i,
            None => {
                self.takeovers.push(Takeover {
                    network: network.to_string(),
                    bridge: bridge.to_string(),
                    port: port.to_string(),
                    port_mac,
                    addresses: Vec::new(),
                    routes: Vec::new(),
                });
                self.takeovers.len() - 1
            }
        };
        &mut self.takeovers[i]
    }

    pub fn forget_takeover(&mut self, network: &str, port: &str) {
        self.takeovers
            .retain(|t| !(t.network == network && t.port == port));
    }

    pub fn is_empty(&self) -> bool {
        self.bridges.is_empty()
            && self.sysctls.is_empty()
            && self.firewalld.is_empty()
            && self.takeovers.is_empty()
    }
}

/// Whose a live bridge is, by [`ownership`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Both marks: the alias `hostagent:<network>` and a record of this very ifindex for this
    /// network. The agent may change it, and `down` deletes it.
    Ours,
    /// The agent's, with one mark missing; a `MarkOwned` step completes it, and until then it is
    /// never deleted (an alias changed by hand is an admin taking the bridge over, as a drop-in
    /// without our header is).
    NeedsMark(MissingMark),
    /// Not the agent's: never adopted, changed or deleted.
    Foreign(ForeignReason),
}

/// Which mark an [`Ownership::NeedsMark`] bridge lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingMark {
    /// It carries our alias for this network but owned.json has no record of it (the state file
    /// was lost or moved away).
    Record,
    /// owned.json records this very ifindex, but the alias is missing or changed (by hand, or the
    /// network was renamed and the record names the old one).
    Alias { now: Option<String> },
}

/// Why a bridge is [`Ownership::Foreign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForeignReason {
    /// Neither our alias for this network nor a record (possibly another network's alias: a
    /// bridge of another hostagent, or a copy).
    Unmarked { alias: Option<String> },
    /// owned.json records the name with another ifindex: the device was deleted and made again
    /// by someone else, whatever alias it carries now.
    Recreated { recorded: u32, live: u32 },
}

impl std::fmt::Display for ForeignReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForeignReason::Unmarked { alias: None } => {
                write!(f, "no `hostagent:` alias mark and no record in owned.json")
            }
            ForeignReason::Unmarked { alias: Some(a) } => write!(
                f,
                "its alias is {a:?}, not this network's mark, and owned.json has no record of it"
            ),
            ForeignReason::Recreated { recorded, live } => write!(
                f,
                "owned.json records ifindex {recorded} under that name but this device is ifindex \
                 {live}: it was made again outside hostagent"
            ),
        }
    }
}

/// Is `link` the bridge the agent made for `network`? `record` is owned.json's entry for the
/// link's name, if any.
///
/// The rule, as an admin would expect it: a bridge is ours when it carries our alias for *this*
/// network and, if owned.json records the name, the record names this very device (ifindex).
/// - The alias must name this network, not merely start with `hostagent:`: another network's
///   mark on an unrecorded device is some other instance's bridge (or a copy), not ours.
/// - The ifindex is what tells one device from another of the same name: within a boot the
///   kernel hands out ifindexes in increasing order (wrapping only past 2^31), so a recorded
///   name with another ifindex was deleted and made again by someone else, and is refused even
///   if it copies our alias. (Across a reboot the counter starts again and our bridges are gone:
///   a record left from before a reboot can match a new device by chance, which is why a record
///   alone never lets `down` delete anything.)
/// - One mark alone is enough to take a bridge back (`MarkOwned`, for a configured network),
///   never to delete it: our alias on an unrecorded device (owned.json lost) or a record of
///   this ifindex on a device whose alias changed.
/// - The MAC is not part of the rule: drift repair sets it back (`SetBridgeMac`) on a bridge that
///   is still ours, and `down` must remove a bridge whose MAC someone changed. A device made
///   again under our name always has a new ifindex, so the MAC would add no protection, only
///   bridges left behind.
pub fn ownership(link: &Link, network: &str, record: Option<&OwnedBridge>) -> Ownership {
    let marked = link.alias.as_deref() == Some(owner_alias(network).as_str());
    match record {
        Some(r) if r.ifindex != link.index => Ownership::Foreign(ForeignReason::Recreated {
            recorded: r.ifindex,
            live: link.index,
        }),
        Some(r) if marked && r.network == network => Ownership::Ours,
        Some(_) if marked => Ownership::NeedsMark(MissingMark::Record),
        Some(_) => Ownership::NeedsMark(MissingMark::Alias {
            now: link.alias.clone(),
        }),
        None if marked => Ownership::NeedsMark(MissingMark::Record),
        None => Ownership::Foreign(ForeignReason::Unmarked {
            alias: link.alias.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(network: &str, ifindex: u32) -> OwnedBridge {
        OwnedBridge {
            network: network.into(),
            name: "br-lab".into(),
            ifindex,
            mac: Some(Mac([0x52, 0x54, 0, 1, 2, 3])),
        }
    }

    fn bridge(index: u32, alias: Option<&str>, mac: [u8; 6]) -> Link {
        Link {
            index,
            name: "br-lab".into(),
            mac: Some(Mac(mac)),
            mtu: 1500,
            up: true,
            alias: alias.map(String::from),
            kind: Some("bridge".into()),
            controller: None,
            bridge: None,
        }
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0, 1, 2, 3];

    #[test]
    fn alias_for_this_network_and_the_recorded_ifindex_is_ours() {
        let l = bridge(7, Some("hostagent:lab"), MAC);
        assert_eq!(ownership(&l, "lab", Some(&rec("lab", 7))), Ownership::Ours);
    }

    #[test]
    fn an_alias_for_another_network_does_not_make_an_unrecorded_device_ours() {
        let l = bridge(7, Some("hostagent:other"), MAC);
        assert_eq!(
            ownership(&l, "lab", None),
            Ownership::Foreign(ForeignReason::Unmarked {
                alias: Some("hostagent:other".into())
            })
        );
        // A plain foreign alias, or none, likewise.
        for alias in [Some("someone-else"), None] {
            let l = bridge(7, alias, MAC);
            assert!(matches!(
                ownership(&l, "lab", None),
                Ownership::Foreign(ForeignReason::Unmarked { .. })
            ));
        }
    }

    #[test]
    fn a_foreign_device_with_our_name_and_a_new_ifindex_is_foreign_even_with_our_alias() {
        // Someone deleted our br-lab (ifindex 7) and made their own: new ifindex.
        for alias in [None, Some("hostagent:lab")] {
            let l = bridge(9, alias, MAC);
            assert_eq!(
                ownership(&l, "lab", Some(&rec("lab", 7))),
                Ownership::Foreign(ForeignReason::Recreated {
                    recorded: 7,
                    live: 9
                }),
                "{alias:?}"
            );
        }
        let why = ForeignReason::Recreated {
            recorded: 7,
            live: 9,
        }
        .to_string();
        assert!(
            why.contains("ifindex 7") && why.contains("ifindex 9"),
            "{why}"
        );
    }

    #[test]
    fn one_mark_alone_needs_mark_owned() {
        // Our alias, owned.json lost.
        let l = bridge(7, Some("hostagent:lab"), MAC);
        assert_eq!(
            ownership(&l, "lab", None),
            Ownership::NeedsMark(MissingMark::Record)
        );
        // Recorded ifindex, alias removed or changed by hand.
        for alias in [None, Some("mine")] {
            let l = bridge(7, alias, MAC);
            assert_eq!(
                ownership(&l, "lab", Some(&rec("lab", 7))),
                Ownership::NeedsMark(MissingMark::Alias {
                    now: alias.map(String::from)
                })
            );
        }
        // The network was renamed lab → lab2 with the same bridge name: the record (for "lab")
        // proves the device; MarkOwned moves alias and record to "lab2".
        let l = bridge(7, Some("hostagent:lab"), MAC);
        assert_eq!(
            ownership(&l, "lab2", Some(&rec("lab", 7))),
            Ownership::NeedsMark(MissingMark::Alias {
                now: Some("hostagent:lab".into())
            })
        );
        // Half-way through such a rename (alias already new, record still old): the record.
        let l = bridge(7, Some("hostagent:lab2"), MAC);
        assert_eq!(
            ownership(&l, "lab2", Some(&rec("lab", 7))),
            Ownership::NeedsMark(MissingMark::Record)
        );
    }

    #[test]
    fn a_mac_changed_by_drift_leaves_the_bridge_ours() {
        let l = bridge(7, Some("hostagent:lab"), [2, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(ownership(&l, "lab", Some(&rec("lab", 7))), Ownership::Ours);
        let mut no_mac = l.clone();
        no_mac.mac = None;
        assert_eq!(
            ownership(&no_mac, "lab", Some(&rec("lab", 7))),
            Ownership::Ours
        );
    }

    #[test]
    fn save_load_round_trip_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path(), "/var/lib/hostagent");
        assert_eq!(Owned::load(&host).unwrap(), Owned::default());
        let mut o = Owned::default();
        o.record_bridge(rec("lab", 7));
        o.record_bridge(OwnedBridge {
            mac: None,
            name: "br-x".into(),
            ..rec("x", 8)
        });
        o.record_sysctl(SysctlChange {
            key: "net.ipv4.ip_forward".into(),
            previous: "0".into(),
            set: "1".into(),
        });
        o.save(&host).unwrap();
        let text = std::fs::read_to_string(Owned::path(&host)).unwrap();
        assert!(text.contains("\"mac\": \"52:54:00:01:02:03\""), "{text}");
        assert!(
            text.contains("\"mac\": \"\""),
            "no MAC is written as before: {text}"
        );
        assert_eq!(Owned::load(&host).unwrap(), o);
        std::fs::write(Owned::path(&host), "{not json").unwrap();
        assert!(matches!(Owned::load(&host), Err(Error::State { .. })));
    }

    /// owned.json as the previous release wrote it (MACs as strings, "" for a link without one).
    #[test]
    fn a_file_from_the_previous_release_loads() {
        let old = r#"{
  "bridges": [
    {
      "network": "lab",
      "name": "br-lab",
      "ifindex": 7,
      "mac": "52:54:00:AA:00:01"
    },
    {
      "network": "old",
      "name": "br-old",
      "ifindex": 9,
      "mac": ""
    }
  ],
  "sysctls": [
    {
      "key": "net.ipv4.ip_forward",
      "previous": "0",
      "set": "1"
    }
  ]
}
"#;
        let o = Owned::parse(Path::new("owned.json"), Some(old)).unwrap();
        assert_eq!(o.bridges[0].mac, Some(Mac([0x52, 0x54, 0, 0xaa, 0, 1])));
        assert_eq!(o.bridges[1].mac, None);
        assert_eq!(o.sysctls[0].previous, "0");
        // Written back, it is the same file (MAC in lower case, the one way it is written).
        assert_eq!(o.to_json(), old.replace("AA", "aa"));
        // A bad MAC is a corrupt file naming the text, not a made-up address.
        let bad = old.replace("52:54:00:AA:00:01", "52:54:00:zz");
        let e = Owned::parse(Path::new("owned.json"), Some(&bad)).unwrap_err();
        assert!(
            matches!(&e, Error::State { msg, .. } if msg.contains("52:54:00:zz")),
            "{e}"
        );
    }
}
