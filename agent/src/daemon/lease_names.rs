//! The names a network's DHCP leases give its DNS server: the seam between pxe's leases and
//! dns's records, called with the current lease set every time it changes.
//!
//! Rules (dnsmasq's): a lease's name is the first label of the host name the client sent
//! (option 12 may carry a domain of the client's choosing); a name the config already gives
//! (`[[network.dns.host]]`, a reservation, a guest) stays with the config, so a guest cannot take
//! over another's name by asking for it; of two leases asking for one name, the one renewed last
//! (latest expiry) has it.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use dns::{HostRecord, RecordStore, Source};
use pxe::leases::v6::Lease6;
use pxe::leases::Lease;

/// The lease records for `leases` and `leases6` (unexpired at `now`, unix seconds), leaving out
/// names in `taken` (relative names as [`RecordStore::relative_name`] writes them). Names that
/// are not RFC 1123 host names are left out too: clients send anything in option 12 and 39.
/// A v4 lease gives its name an A record, a v6 lease an AAAA record: one machine with both
/// answers both, and the latest lease of each family has a name.
pub fn lease_records(
    leases: &[Lease],
    leases6: &[Lease6],
    store: &RecordStore,
    taken: &HashSet<String>,
    now: u64,
) -> Vec<HostRecord> {
    let v4 = leases
        .iter()
        .map(|l| (l.hostname.as_deref(), IpAddr::from(l.ip), l.expires));
    let v6 = leases6
        .iter()
        .map(|l| (l.hostname.as_deref(), IpAddr::from(l.ip), l.expires));
    let mut chosen: HashMap<(String, bool), (IpAddr, u64)> = HashMap::new();
    for (raw, ip, expires) in v4.chain(v6).filter(|l| l.2 > now) {
        let Some(raw) = raw else {
            continue;
        };
        let label = raw.split('.').next().unwrap_or_default();
        let Ok(name) = store.relative_name(label) else {
            tracing::debug!(%ip, hostname = raw, "lease host name is not a DNS name: not published");
            continue;
        };
        if taken.contains(&name) {
            tracing::debug!(%ip, hostname = raw, "lease host name belongs to the config: not published");
            continue;
        }
        let key = (name, ip.is_ipv6());
        let newer = chosen
            .get(&key)
            .is_none_or(|held| (expires, ip) > (held.1, held.0));
        if newer {
            chosen.insert(key, (ip, expires));
        }
    }
    let mut out: Vec<HostRecord> = chosen
        .into_iter()
        .map(|((name, _), (ip, _))| HostRecord::new(name, ip, Source::Lease))
        .collect();
    out.sort_by(|a, b| (&a.name, a.addr).cmp(&(&b.name, b.addr)));
    out
}

/// The relative names of `records` (the config's), for [`lease_records`]'s `taken`.
pub fn names_of(records: &[HostRecord], store: &RecordStore) -> HashSet<String> {
    records
        .iter()
        .filter_map(|r| store.relative_name(&r.name).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwaddr::Mac;

    fn lease(last: u8, name: Option<&str>, expires: u64) -> Lease {
        Lease {
            mac: Mac([0x52, 0x54, 0, 0, 0, last]),
            ip: [10, 0, 0, last].into(),
            expires,
            hostname: name.map(String::from),
            client_id: None,
            agent: None,
        }
    }

    fn pairs(records: &[HostRecord]) -> Vec<(String, String)> {
        records
            .iter()
            .map(|r| (r.name.clone(), r.addr.to_string()))
            .collect()
    }

    #[test]
    fn names_are_first_labels_checked_lowercased_and_unexpired() {
        let store = RecordStore::for_domain("lab").unwrap();
        let leases = [
            lease(2, Some("Web-1"), 200),
            lease(3, Some("db.example.com"), 200),
            lease(4, Some("db2.lab"), 200),
            lease(5, Some("bad_name"), 200),
            lease(6, Some(""), 200),
            lease(7, None, 200),
            lease(8, Some("gone"), 100),
            lease(9, Some("-x"), 200),
        ];
        let got = lease_records(&leases, &[], &store, &HashSet::new(), 100);
        assert_eq!(
            pairs(&got),
            [
                ("db".to_string(), "10.0.0.3".to_string()),
                ("db2".to_string(), "10.0.0.4".to_string()),
                ("web-1".to_string(), "10.0.0.2".to_string()),
            ]
        );
        assert!(got.iter().all(|r| r.source == Source::Lease));
    }

    #[test]
    fn the_config_keeps_its_names_and_the_latest_lease_wins_a_shared_name() {
        let store = RecordStore::for_domain("lab").unwrap();
        let config = [
            HostRecord::new("Bastion.lab", [10, 0, 0, 10].into(), Source::StaticHost),
            HostRecord::new("api.k8s", [10, 0, 0, 11].into(), Source::Config),
        ];
        let taken = names_of(&config, &store);
        assert!(taken.contains("bastion") && taken.contains("api.k8s"));
        let leases = [
            lease(2, Some("bastion"), 500),
            lease(3, Some("twin"), 400),
            lease(4, Some("TWIN"), 450),
            lease(5, Some("api"), 500),
        ];
        let got = lease_records(&leases, &[], &store, &taken, 0);
        assert_eq!(
            pairs(&got),
            [
                ("api".to_string(), "10.0.0.5".to_string()),
                ("twin".to_string(), "10.0.0.4".to_string()),
            ]
        );
    }

    #[test]
    fn a_v6_lease_names_an_aaaa_beside_the_v4_one_and_each_family_has_its_latest() {
        let store = RecordStore::for_domain("lab").unwrap();
        let v6 = |last: u16, name: &str, expires: u64| Lease6 {
            duid: pxe::leases::v6::Duid::parse("00:03:00:01:52:54:00:00:00:02").unwrap(),
            iaid: u32::from(last),
            ip: std::net::Ipv6Addr::new(0xfd00, 0x122, 0, 0, 0, 0, 0, last),
            expires,
            hostname: Some(name.to_string()),
            mac: None,
        };
        let got = lease_records(
            &[lease(2, Some("web"), 300)],
            &[
                v6(0x100, "web", 300),
                v6(0x101, "web", 400),
                v6(0x102, "old", 50),
            ],
            &store,
            &HashSet::new(),
            100,
        );
        assert_eq!(
            pairs(&got),
            [
                ("web".to_string(), "10.0.0.2".to_string()),
                ("web".to_string(), "fd00:122::101".to_string()),
            ]
        );
    }
}
