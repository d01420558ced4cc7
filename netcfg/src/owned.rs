//! What the agent created, recorded in `<state_dir>/owned.json` so `down` removes exactly that.
//!
//! A bridge is removed only when it still matches its record (same ifindex and MAC) and still
//! carries the `hostagent:` alias mark: a device someone else created later under the same name is
//! never touched.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::files;
use crate::model::Host;

pub const FILE: &str = "owned.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedBridge {
    pub network: String,
    pub name: String,
    pub ifindex: u32,
    /// "52:54:00:.." form.
    pub mac: String,
}

/// ip_forward as the agent found it and what it set: `down` restores `previous` only when the
/// live value is still `set`.
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
}

impl Owned {
    pub fn path(host: &Host) -> PathBuf {
        host.state_path().join(FILE)
    }

    /// Load the record; a missing file means the agent owns nothing.
    pub fn load(host: &Host) -> Result<Owned, Error> {
        let path = Self::path(host);
        match files::read_opt(&path)? {
            None => Ok(Owned::default()),
            Some(s) => serde_json::from_str(&s).map_err(|e| Error::State {
                path,
                msg: e.to_string(),
            }),
        }
    }

    pub fn save(&self, host: &Host) -> Result<(), Error> {
        let path = Self::path(host);
        let mut text = serde_json::to_string_pretty(self).map_err(|e| Error::State {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        text.push('\n');
        files::write_atomic(&path, text.as_bytes())
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

    pub fn is_empty(&self) -> bool {
        self.bridges.is_empty() && self.sysctls.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path(), "/var/lib/hostagent");
        assert_eq!(Owned::load(&host).unwrap(), Owned::default());
        let mut o = Owned::default();
        o.record_bridge(OwnedBridge {
            network: "lab".into(),
            name: "br-lab".into(),
            ifindex: 7,
            mac: "52:54:00:00:00:01".into(),
        });
        o.record_sysctl(SysctlChange {
            key: "net.ipv4.ip_forward".into(),
            previous: "0".into(),
            set: "1".into(),
        });
        o.save(&host).unwrap();
        assert_eq!(Owned::load(&host).unwrap(), o);
        std::fs::write(Owned::path(&host), "{not json").unwrap();
        assert!(matches!(Owned::load(&host), Err(Error::State { .. })));
    }
}
