//! One network's local zone: its domain (forward names) and the reverse zones of its subnets.
//! Everything here is answered authoritatively and never forwarded (libvirt's `localOnly`);
//! the rest is [`Lookup::Forward`].
//!
//! Reverse zones follow the subnet: a /24 is `122.168.192.in-addr.arpa`, a /16 is
//! `168.192.in-addr.arpa`. A prefix off an octet boundary is served as the reverse names that lie
//! inside it, one zone per enclosing octet: a /20 answers for its sixteen /24 zones
//! (`16.0.10.in-addr.arpa` … `31.0.10.in-addr.arpa`); a /26 answers for its own 64 addresses
//! only, with the enclosing /24 name as the SOA owner, and forwards the rest of that /24 (it is not
//! ours). IPv6 works the same with nibbles (`ip6.arpa`).

use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::DnsError;
use crate::hostname;
use crate::records::Records;

/// What the caller knows of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The network's domain, e.g. `default` or `lab.example.com`.
    pub domain: String,
    pub ipv4: Ipv4Net,
    pub ipv6: Option<Ipv6Net>,
    /// TTL of local answers and of their negative answers (SOA minimum). dnsmasq's default is 0,
    /// so a guest's resolver never keeps a name after its lease is gone.
    pub ttl: u32,
}

/// A validated [`ZoneConfig`].
#[derive(Debug, Clone)]
pub struct Zone {
    domain: Name,
    nets: Vec<IpNet>,
    ttl: u32,
    in_addr: Name,
    ip6: Name,
    hostmaster: Name,
}

/// The answer the local zone gives, or that the name is not ours.
#[derive(Debug, PartialEq)]
pub(crate) enum Lookup {
    Forward,
    Local {
        rcode: ResponseCode,
        answers: Vec<Record>,
        /// SOA for the authority section of negative answers (RFC 2308).
        soa: Option<Box<Record>>,
    },
}

impl Zone {
    pub fn new(config: &ZoneConfig) -> Result<Zone, DnsError> {
        let domain = parse_domain(&config.domain)?;
        let hostmaster = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&domain))
            .map_err(|e| DnsError::BadDomain {
                domain: config.domain.clone(),
                reason: e.to_string(),
            })?;
        let mut nets = vec![IpNet::V4(config.ipv4.trunc())];
        if let Some(v6) = config.ipv6 {
            nets.push(IpNet::V6(v6.trunc()));
        }
        Ok(Zone {
            domain,
            nets,
            ttl: config.ttl,
            in_addr: Name::from_str("in-addr.arpa.").expect("literal"),
            ip6: Name::from_str("ip6.arpa.").expect("literal"),
            hostmaster,
        })
    }

    /// The domain as a lowercase, fully qualified name (`default.`).
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// The subnets whose reverse names are answered here.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// The reverse zones answered locally, for logs and status (`122.168.192.in-addr.arpa.`).
    /// A /20 lists its sixteen /24 zones; at most 256 are listed.
    pub fn reverse_zones(&self) -> Vec<Name> {
        let mut out = Vec::new();
        for net in &self.nets {
            let step = apex_bits(net);
            let Ok(subnets) = net.subnets(step.max(net.prefix_len())) else {
                continue;
            };
            for sub in subnets.take(256) {
                out.push(reverse_name(&sub.network(), step));
            }
        }
        out
    }

    pub(crate) fn lookup(&self, records: &Records, qname: &Name, qtype: RecordType) -> Lookup {
        if self.domain.zone_of(qname) {
            return self.forward_zone(records, qname, qtype);
        }
        if qname.num_labels() == 1 {
            // A bare name: ours when a host has it, otherwise the world's (a TLD, say).
            let Ok(fqdn) = qname.clone().append_domain(&self.domain) else {
                return Lookup::Forward;
            };
            if records.addrs(&fqdn).is_none() {
                return Lookup::Forward;
            }
            return match self.host_answers(records, &fqdn, qname, qtype) {
                Some(answers) => ok(answers, None),
                // No SOA: ours would not be an ancestor of the bare name.
                None => ok(Vec::new(), None),
            };
        }
        if self.in_addr.zone_of(qname) || self.ip6.zone_of(qname) {
            return self.reverse(records, qname, qtype);
        }
        Lookup::Forward
    }

    fn forward_zone(&self, records: &Records, qname: &Name, qtype: RecordType) -> Lookup {
        let apex_soa = || Some(Box::new(self.soa(&self.domain, records)));
        if qname.num_labels() == self.domain.num_labels() {
            return match qtype {
                RecordType::SOA | RecordType::ANY => {
                    ok(vec![self.soa(&self.domain, records)], None)
                }
                _ => ok(Vec::new(), apex_soa()),
            };
        }
        match self.host_answers(records, qname, qname, qtype) {
            Some(answers) if answers.is_empty() => ok(answers, apex_soa()),
            Some(answers) => ok(answers, None),
            None if records.is_nonterminal(qname) => ok(Vec::new(), apex_soa()),
            None => nxdomain(apex_soa()),
        }
    }

    /// Address answers for a known name (`None` when the name is unknown), owned by `owner`
    /// (the name as asked).
    fn host_answers(
        &self,
        records: &Records,
        fqdn: &Name,
        owner: &Name,
        qtype: RecordType,
    ) -> Option<Vec<Record>> {
        let addrs = records.addrs(fqdn)?;
        let want_a = matches!(qtype, RecordType::A | RecordType::ANY);
        let want_aaaa = matches!(qtype, RecordType::AAAA | RecordType::ANY);
        let mut out = Vec::new();
        if want_a {
            out.extend(
                addrs
                    .v4
                    .iter()
                    .map(|a| Record::from_rdata(owner.clone(), self.ttl, RData::A(A(*a)))),
            );
        }
        if want_aaaa {
            out.extend(
                addrs
                    .v6
                    .iter()
                    .map(|a| Record::from_rdata(owner.clone(), self.ttl, RData::AAAA(AAAA(*a)))),
            );
        }
        Some(out)
    }

    fn reverse(&self, records: &Records, qname: &Name, qtype: RecordType) -> Lookup {
        match qname.parse_arpa_name() {
            Ok(asked) => {
                let Some(net) = self.net_holding(&asked) else {
                    return Lookup::Forward;
                };
                let apex = reverse_name(&asked.network(), apex_bits(net));
                let soa = Some(Box::new(self.soa(&apex, records)));
                let full = asked.prefix_len() == asked.max_prefix_len();
                if !full {
                    // Inside our space but not an address: an apex or an empty non-terminal.
                    return match qtype {
                        RecordType::SOA if qname.num_labels() == apex.num_labels() => {
                            ok(vec![self.soa(&apex, records)], None)
                        }
                        _ => ok(Vec::new(), soa),
                    };
                }
                match records.ptr(asked.addr()) {
                    Some(target) if matches!(qtype, RecordType::PTR | RecordType::ANY) => ok(
                        vec![Record::from_rdata(
                            qname.clone(),
                            self.ttl,
                            RData::PTR(PTR(target.clone())),
                        )],
                        None,
                    ),
                    Some(_) => ok(Vec::new(), soa),
                    None => nxdomain(soa),
                }
            }
            Err(_) => {
                // Not an address (`x.5.122.168.192.in-addr.arpa`, `300.122...`): NXDOMAIN when
                // it sits under a reverse name of ours, else not our business.
                let mut parent = qname.base_name();
                while parent.num_labels() > 2 {
                    if let Ok(asked) = parent.parse_arpa_name() {
                        return match self.net_holding(&asked) {
                            Some(net) => {
                                let apex = reverse_name(&asked.network(), apex_bits(net));
                                nxdomain(Some(Box::new(self.soa(&apex, records))))
                            }
                            None => Lookup::Forward,
                        };
                    }
                    parent = parent.base_name();
                }
                Lookup::Forward
            }
        }
    }

    /// The subnet that holds all of `asked` (a reverse name's prefix), if any.
    fn net_holding(&self, asked: &IpNet) -> Option<&IpNet> {
        self.nets
            .iter()
            .find(|net| asked.prefix_len() >= net.prefix_len() && net.contains(&asked.network()))
    }

    fn soa(&self, apex: &Name, records: &Records) -> Record {
        let soa = SOA::new(
            self.domain.clone(),
            self.hostmaster.clone(),
            records.serial() as u32,
            3600,
            600,
            86400,
            self.ttl,
        );
        Record::from_rdata(apex.clone(), self.ttl, RData::SOA(soa))
    }
}

/// A domain as written in a config (`default`, `lab.example.com`) as a lowercase FQDN.
pub(crate) fn parse_domain(domain: &str) -> Result<Name, DnsError> {
    let bad = |reason: String| DnsError::BadDomain {
        domain: domain.to_string(),
        reason,
    };
    let text = hostname::normalize(domain).map_err(|e| bad(e.to_string()))?;
    Name::from_ascii(format!("{text}.")).map_err(|e| bad(e.to_string()))
}

fn ok(answers: Vec<Record>, soa: Option<Box<Record>>) -> Lookup {
    Lookup::Local {
        rcode: ResponseCode::NoError,
        answers,
        soa,
    }
}

fn nxdomain(soa: Option<Box<Record>>) -> Lookup {
    Lookup::Local {
        rcode: ResponseCode::NXDomain,
        answers: Vec::new(),
        soa,
    }
}

/// How many leading bits of a subnet's addresses name its reverse zone: the prefix rounded up to
/// the label size (8 bits in-addr, 4 bits ip6), but never a whole address (a /26 uses its /24).
fn apex_bits(net: &IpNet) -> u8 {
    let (label, max) = match net {
        IpNet::V4(_) => (8, 32),
        IpNet::V6(_) => (4, 128),
    };
    let rounded = net.prefix_len().div_ceil(label) * label;
    rounded.clamp(label, max - label)
}

/// The reverse name of the first `bits` bits of `addr` (`bits` a multiple of the label size).
fn reverse_name(addr: &IpAddr, bits: u8) -> Name {
    let mut labels: Vec<String> = match addr {
        IpAddr::V4(a) => a.octets()[..usize::from(bits / 8)]
            .iter()
            .map(u8::to_string)
            .collect(),
        IpAddr::V6(a) => a
            .octets()
            .iter()
            .flat_map(|b| [b >> 4, b & 0xf])
            .take(usize::from(bits / 4))
            .map(|n| format!("{n:x}"))
            .collect(),
    };
    labels.reverse();
    labels.push(if addr.is_ipv4() { "in-addr" } else { "ip6" }.into());
    labels.push("arpa".into());
    let mut name = Name::from_labels(labels.iter().map(String::as_bytes)).expect("short labels");
    name.set_fqdn(true);
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{HostRecord, RecordStore, Source};

    fn zone(v4: &str, v6: Option<&str>) -> Zone {
        Zone::new(&ZoneConfig {
            domain: "Default".into(),
            ipv4: v4.parse().unwrap(),
            ipv6: v6.map(|s| s.parse().unwrap()),
            ttl: 0,
        })
        .unwrap()
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn rcode(l: &Lookup) -> Option<ResponseCode> {
        match l {
            Lookup::Local { rcode, .. } => Some(*rcode),
            Lookup::Forward => None,
        }
    }

    #[test]
    fn reverse_zone_names_follow_the_prefix() {
        let names =
            |z: &Zone| -> Vec<String> { z.reverse_zones().iter().map(|n| n.to_ascii()).collect() };
        assert_eq!(
            names(&zone("192.168.122.0/24", None)),
            ["122.168.192.in-addr.arpa."]
        );
        assert_eq!(names(&zone("10.1.0.0/16", None)), ["1.10.in-addr.arpa."]);
        let z20 = names(&zone("10.0.16.0/20", None));
        assert_eq!(z20.len(), 16);
        assert_eq!(z20[0], "16.0.10.in-addr.arpa.");
        assert_eq!(z20[15], "31.0.10.in-addr.arpa.");
        assert_eq!(
            names(&zone("192.168.7.64/26", Some("fd00:1:2:3::/64"))),
            [
                "7.168.192.in-addr.arpa.".to_string(),
                "3.0.0.0.2.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.".to_string()
            ]
        );
    }

    #[test]
    fn local_misses_are_nxdomain_and_foreign_names_forward() {
        let z = zone("192.168.122.0/24", None);
        let s = RecordStore::new(z.domain());
        s.upsert(HostRecord::new(
            "bastion",
            "192.168.122.10".parse().unwrap(),
            Source::Lease,
        ))
        .unwrap();
        let r = s.snapshot();
        let q = |name: &str, t| z.lookup(&r, &n(name), t);
        assert_eq!(
            rcode(&q("bastion.default.", RecordType::A)),
            Some(ResponseCode::NoError)
        );
        assert_eq!(
            rcode(&q("BASTION.", RecordType::A)),
            Some(ResponseCode::NoError)
        );
        assert_eq!(
            rcode(&q("nope.default.", RecordType::A)),
            Some(ResponseCode::NXDomain)
        );
        assert_eq!(rcode(&q("nope.", RecordType::A)), None);
        assert_eq!(rcode(&q("example.com.", RecordType::A)), None);
        assert_eq!(
            rcode(&q("10.122.168.192.in-addr.arpa.", RecordType::PTR)),
            Some(ResponseCode::NoError)
        );
        assert_eq!(
            rcode(&q("11.122.168.192.in-addr.arpa.", RecordType::PTR)),
            Some(ResponseCode::NXDomain)
        );
        assert_eq!(
            rcode(&q("x.11.122.168.192.in-addr.arpa.", RecordType::PTR)),
            Some(ResponseCode::NXDomain)
        );
        assert_eq!(
            rcode(&q("1.1.168.192.in-addr.arpa.", RecordType::PTR)),
            None
        );
        assert_eq!(rcode(&q("168.192.in-addr.arpa.", RecordType::SOA)), None);
        match q("bastion.default.", RecordType::AAAA) {
            Lookup::Local { answers, soa, .. } => {
                assert!(answers.is_empty());
                assert!(soa.is_some(), "NODATA carries the SOA");
            }
            other => panic!("{other:?}"),
        }
        match q("nope.default.", RecordType::A) {
            Lookup::Local { soa: Some(soa), .. } => assert_eq!(soa.name, n("default.")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_26_answers_only_its_own_addresses() {
        let z = zone("192.168.7.64/26", None);
        let r = RecordStore::new(z.domain()).snapshot();
        let q = |name: &str| rcode(&z.lookup(&r, &n(name), RecordType::PTR));
        assert_eq!(
            q("70.7.168.192.in-addr.arpa."),
            Some(ResponseCode::NXDomain)
        );
        assert_eq!(q("10.7.168.192.in-addr.arpa."), None);
        assert_eq!(q("7.168.192.in-addr.arpa."), None);
    }

    #[test]
    fn ipv6_names_and_reverse() {
        let z = zone("192.168.122.0/24", Some("fd00:1:2:3::/64"));
        let s = RecordStore::new(z.domain());
        let ip: IpAddr = "fd00:1:2:3::10".parse().unwrap();
        s.upsert(HostRecord::new("v6host", ip, Source::Guest))
            .unwrap();
        let r = s.snapshot();
        match z.lookup(&r, &n("v6host.default."), RecordType::AAAA) {
            Lookup::Local { answers, .. } => assert_eq!(answers.len(), 1),
            other => panic!("{other:?}"),
        }
        let rev = Name::from(ip).to_ascii();
        match z.lookup(&r, &n(&rev), RecordType::PTR) {
            Lookup::Local { answers, .. } => assert_eq!(answers.len(), 1, "{rev}"),
            other => panic!("{rev}: {other:?}"),
        }
    }
}
