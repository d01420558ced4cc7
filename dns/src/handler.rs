//! One message in, one decision out: the whole request path without sockets, so the fuzz target
//! and the server run the same code. Order: drop what is not a query, refuse foreign sources,
//! rate-limit, decode (hickory-proto), then the local zone, RFC 8482 for ANY, the cache, and
//! last the upstreams.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use ipnet::IpNet;

use crate::cache::{Cache, CacheKey};
use crate::config::Limits;
use crate::counters::{Counters, CountersSnapshot};
use crate::ratelimit::Limiter;
use crate::records::RecordStore;
use crate::relay::{Asker, Relayed};
use crate::zone::{Lookup, Zone};

/// Largest UDP answer we send or ask upstreams for: the DNS Flag Day 2020 size, which avoids
/// IP fragmentation on every common path.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Without EDNS a UDP answer is at most 512 bytes (RFC 1035 §4.2.1).
const CLASSIC_UDP: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with one received message.
#[derive(Debug)]
pub enum Outcome {
    Reply(Vec<u8>),
    /// Not ours and not cached: ask the upstreams, then [`QueryHandler::relay`].
    Forward(Forward),
    /// Nothing is sent (not a query, or rate-limited).
    Drop,
}

/// A query waiting for an upstream answer.
#[derive(Debug)]
pub struct Forward {
    asker: Asker,
    query: Query,
    key: CacheKey,
}

impl Forward {
    /// The query to send upstream with this ID: recursion desired, EDNS with our UDP size, the
    /// client's DO and CD bits.
    pub fn upstream_query(&self, id: u16) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.metadata.checking_disabled = self.key.checking_disabled;
        m.add_query(self.query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        edns.set_dnssec_ok(self.key.dnssec_ok);
        m.set_edns(edns);
        // A decoded query re-encodes; an empty answer makes the upstream exchange fail cleanly.
        m.to_vec().unwrap_or_default()
    }

    /// The question being forwarded.
    pub fn query(&self) -> &Query {
        &self.query
    }
}

/// The request path of one network's server.
pub struct QueryHandler {
    zone: Zone,
    records: RecordStore,
    allowed: Vec<IpNet>,
    limiter: Option<Limiter>,
    cache: Cache,
    max_cache_ttl: u32,
    onward: Onward,
    counters: Counters,
}

/// What happens to a question that is neither local nor cached: forwarded while there are
/// upstreams; SERVFAIL (counted as a failure) while none can be found, which can change as the
/// host's resolvers do ([`QueryHandler::set_has_upstreams`]); REFUSED when the server answers
/// local names only by choice ([`QueryHandler::local_only`]).
#[derive(Debug)]
struct Onward {
    local_only: bool,
    has_upstreams: AtomicBool,
}

impl QueryHandler {
    /// `allowed` empty means the zone's own subnets.
    pub fn new(
        zone: Zone,
        records: RecordStore,
        allowed: Vec<IpNet>,
        limits: &Limits,
        has_upstreams: bool,
    ) -> QueryHandler {
        let allowed = if allowed.is_empty() {
            zone.nets().to_vec()
        } else {
            allowed
        };
        QueryHandler {
            zone,
            records,
            allowed,
            limiter: limits.rate.map(Limiter::new),
            cache: Cache::new(limits.cache_entries),
            max_cache_ttl: limits.max_cache_ttl,
            onward: Onward {
                local_only: false,
                has_upstreams: AtomicBool::new(has_upstreams),
            },
            counters: Counters::default(),
        }
    }

    /// Answer only the local zone: every other name is REFUSED, and nothing is forwarded (an
    /// isolated network, whose guests must not reach the outside through the host).
    pub fn local_only(mut self) -> QueryHandler {
        self.onward.local_only = true;
        self
    }

    /// Whether questions that are not local can be forwarded now (the upstream list became
    /// empty, or not empty any more).
    pub fn set_has_upstreams(&self, yes: bool) {
        self.onward.has_upstreams.store(yes, Ordering::Relaxed);
    }

    pub fn counters(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }

    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    pub fn records(&self) -> &RecordStore {
        &self.records
    }

    /// Entries in the forwarding cache.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    pub fn handle(&self, msg: &[u8], src: IpAddr, transport: Transport, now: Instant) -> Outcome {
        let c = &self.counters;
        Counters::bump(&c.queries);
        // Shorter than a header, or a response (QR set): answering could start a loop between
        // two servers, so nothing is sent.
        if msg.len() < 12 || msg[2] & 0x80 != 0 {
            Counters::bump(&c.malformed);
            return Outcome::Drop;
        }
        let src = canonical(src);
        if !self.allowed.iter().any(|net| net.contains(&src)) {
            Counters::bump(&c.refused);
            // No EDNS and no records: never bigger than the query, so no amplification.
            return match Message::from_vec(msg) {
                Ok(req) if req.queries.len() == 1 => {
                    let reply = self.error(&req, ResponseCode::Refused, false);
                    // A question compressed into the header decodes longer than it was sent.
                    if reply.len() <= msg.len() {
                        Outcome::Reply(reply)
                    } else {
                        Outcome::Drop
                    }
                }
                _ => Outcome::Drop,
            };
        }
        if let Some(limiter) = &self.limiter {
            if !limiter.allow(src, now) {
                Counters::bump(&c.rate_limited);
                return Outcome::Drop;
            }
        }
        let req = match Message::from_vec(msg) {
            Ok(req) if req.metadata.message_type == MessageType::Query => req,
            _ => {
                Counters::bump(&c.malformed);
                let id = u16::from_be_bytes([msg[0], msg[1]]);
                let op = OpCode::from_u8((msg[2] >> 3) & 0x0f);
                let reply = Message::error_msg(id, op, ResponseCode::FormErr);
                return Outcome::Reply(reply.to_vec().unwrap_or_default());
            }
        };
        let edns = req.edns.is_some();
        if req.metadata.op_code != OpCode::Query {
            return Outcome::Reply(self.error(&req, ResponseCode::NotImp, edns));
        }
        if req.queries.len() != 1 {
            Counters::bump(&c.malformed);
            return Outcome::Reply(self.error(&req, ResponseCode::FormErr, edns));
        }
        if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return Outcome::Reply(self.error(&req, ResponseCode::BADVERS, true));
        }
        let query = req.queries[0].clone();
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::OPT)
        {
            Counters::bump(&c.refused);
            return Outcome::Reply(self.error(&req, ResponseCode::Refused, edns));
        }
        let asker = asker(&req, msg, transport);
        let lookup = self
            .records
            .with(|records| self.zone.lookup(records, query.name(), qtype));
        match lookup {
            Lookup::Local {
                rcode,
                answers,
                soa,
            } => {
                Counters::bump(&c.answered_local);
                if rcode == ResponseCode::NXDomain {
                    Counters::bump(&c.nxdomain);
                }
                let mut m = self.response(&req, rcode, edns);
                m.metadata.authoritative = true;
                m.answers = answers;
                m.authorities.extend(soa.map(|soa| *soa));
                Outcome::Reply(self.encode(m, asker.limit))
            }
            Lookup::Forward if qtype == RecordType::ANY => {
                // RFC 8482 §4.2: one synthesized HINFO instead of everything the name has.
                let mut m = self.response(&req, ResponseCode::NoError, edns);
                let hinfo = HINFO::new("RFC8482".into(), String::new());
                m.add_answer(Record::from_rdata(
                    query.name().clone(),
                    3600,
                    RData::HINFO(hinfo),
                ));
                Outcome::Reply(self.encode(m, asker.limit))
            }
            Lookup::Forward => {
                let (dnssec_ok, checking_disabled) = (
                    req.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
                    req.metadata.checking_disabled,
                );
                let key = CacheKey {
                    name: query.name().clone(),
                    qtype,
                    qclass: query.query_class(),
                    dnssec_ok,
                    checking_disabled,
                };
                if let Some(hit) = self.cache.get(&key, now) {
                    Counters::bump(&c.cache_hits);
                    return Outcome::Reply(self.send_relayed(&hit, &asker, now));
                }
                if self.onward.local_only {
                    Counters::bump(&c.refused);
                    return Outcome::Reply(self.error(&req, ResponseCode::Refused, edns));
                }
                if !self.onward.has_upstreams.load(Ordering::Relaxed) {
                    Counters::bump(&c.upstream_failures);
                    return Outcome::Reply(self.error(&req, ResponseCode::ServFail, edns));
                }
                Counters::bump(&c.forwarded);
                Outcome::Forward(Forward { asker, query, key })
            }
        }
    }

    /// The reply to a forwarded query: the upstream's answer (cached when its TTLs allow), or
    /// SERVFAIL when no upstream gave a usable one (`None`, or an answer that does not decode).
    pub fn relay(&self, job: &Forward, upstream: Option<Vec<u8>>, now: Instant) -> Vec<u8> {
        let parsed = upstream.and_then(|wire| {
            Relayed::parse(wire, &job.query, self.max_cache_ttl, now)
                .inspect_err(
                    |e| tracing::debug!(query = %job.query, "upstream answer dropped: {e}"),
                )
                .ok()
        });
        let Some(relayed) = parsed else {
            Counters::bump(&self.counters.upstream_failures);
            return self.servfail_for(job);
        };
        let relayed = std::sync::Arc::new(relayed);
        self.cache.insert(job.key.clone(), relayed.clone());
        self.send_relayed(&relayed, &job.asker, now)
    }

    /// SERVFAIL for a forwarded query (all upstreams failed, or too many forwards waiting).
    pub fn servfail(&self, job: &Forward) -> Vec<u8> {
        Counters::bump(&self.counters.upstream_failures);
        self.servfail_for(job)
    }

    fn servfail_for(&self, job: &Forward) -> Vec<u8> {
        let mut m = Message::new(job.asker.id, MessageType::Response, OpCode::Query);
        m.metadata.response_code = ResponseCode::ServFail;
        m.metadata.recursion_desired = job.asker.recursion_desired;
        m.metadata.recursion_available = true;
        m.add_query(job.query.clone());
        if job.asker.edns {
            m.set_edns(our_edns());
        }
        m.to_vec().unwrap_or_default()
    }

    fn send_relayed(&self, relayed: &Relayed, asker: &Asker, now: Instant) -> Vec<u8> {
        if relayed.rcode() == ResponseCode::NXDomain {
            Counters::bump(&self.counters.nxdomain);
        }
        let (out, truncated) = relayed.render(asker, now);
        if truncated {
            Counters::bump(&self.counters.truncated);
        }
        out
    }

    fn response(&self, req: &Message, rcode: ResponseCode, edns: bool) -> Message {
        let mut m = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
        m.metadata.response_code = rcode;
        m.metadata.recursion_desired = req.metadata.recursion_desired;
        m.metadata.recursion_available = true;
        m.metadata.checking_disabled = req.metadata.checking_disabled;
        m.queries = req.queries.clone();
        if edns {
            m.set_edns(our_edns());
        }
        m
    }

    fn error(&self, req: &Message, rcode: ResponseCode, edns: bool) -> Vec<u8> {
        let mut m = self.response(req, rcode, edns);
        if req.queries.len() != 1 {
            m.queries.clear();
        }
        m.to_vec().unwrap_or_default()
    }

    fn encode(&self, m: Message, limit: usize) -> Vec<u8> {
        match m.to_vec() {
            Ok(wire) if wire.len() <= limit => wire,
            _ => {
                Counters::bump(&self.counters.truncated);
                m.truncate().to_vec().unwrap_or_default()
            }
        }
    }
}

fn our_edns() -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(MAX_UDP_PAYLOAD);
    edns
}

/// What the reply depends on, taken from the request.
fn asker(req: &Message, raw: &[u8], transport: Transport) -> Asker {
    let limit = match (transport, &req.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, None) => CLASSIC_UDP,
        (Transport::Udp, Some(e)) => {
            usize::from(e.max_payload().min(MAX_UDP_PAYLOAD)).max(CLASSIC_UDP)
        }
    };
    // The question name as it sits in the request (uncompressed: it is the first name).
    let name = req.queries[0].name();
    let len = name.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    let qname_wire = raw
        .get(12..12 + len)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    Asker {
        id: req.metadata.id,
        recursion_desired: req.metadata.recursion_desired,
        checking_disabled: req.metadata.checking_disabled,
        edns: req.edns.is_some(),
        limit,
        qname_wire,
    }
}

/// An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d; the allowed nets are IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{HostRecord, Source};
    use crate::zone::ZoneConfig;
    use hickory_proto::rr::Name;

    fn handler() -> QueryHandler {
        let zone = Zone::new(&ZoneConfig {
            domain: "default".into(),
            ipv4: "192.168.122.0/24".parse().unwrap(),
            ipv6: None,
            ttl: 0,
        })
        .unwrap();
        let records = RecordStore::new(zone.domain());
        records
            .set_all((1..=100u8).map(|i| {
                HostRecord::new("many", IpAddr::from([192, 168, 122, i]), Source::Config)
            }));
        let limits = Limits {
            rate: None,
            ..Limits::default()
        };
        QueryHandler::new(zone, records, Vec::new(), &limits, true)
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 122, 50));

    fn query(name: &str, qtype: RecordType, edns: Option<Edns>) -> Message {
        let mut m = Message::query();
        m.metadata.id = 42;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(e) = edns {
            m.set_edns(e);
        }
        m
    }

    fn reply(h: &QueryHandler, m: &Message, t: Transport) -> Message {
        match h.handle(&m.to_vec().unwrap(), CLIENT, t, Instant::now()) {
            Outcome::Reply(r) => Message::from_vec(&r).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_big_local_answer_is_truncated_over_udp_and_whole_over_tcp() {
        let h = handler();
        let q = query("many.default.", RecordType::A, None);
        let udp = reply(&h, &q, Transport::Udp);
        assert!(udp.metadata.truncation);
        assert!(udp.answers.is_empty());
        let mut big = Edns::new();
        big.set_max_payload(4096);
        let with_edns = reply(
            &h,
            &query("many.default.", RecordType::A, Some(big)),
            Transport::Udp,
        );
        assert!(with_edns.metadata.truncation, "1.6 KB is over our 1232 cap");
        let tcp = reply(&h, &q, Transport::Tcp);
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 100);
        assert_eq!(h.counters().truncated, 2);
    }

    #[test]
    fn odd_requests_get_their_rcode() {
        let h = handler();
        let mut v1 = Edns::new();
        v1.set_version(1);
        let r = reply(
            &h,
            &query("many.default.", RecordType::A, Some(v1)),
            Transport::Udp,
        );
        // 16 is BADVERS with an OPT (hickory names the shared code BADSIG when decoding).
        assert_eq!(u16::from(r.metadata.response_code), 16);
        assert!(r.edns.is_some());
        let mut two = query("a.default.", RecordType::A, None);
        two.add_query(Query::query(
            Name::from_ascii("b.default.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(
            reply(&h, &two, Transport::Udp).metadata.response_code,
            ResponseCode::FormErr
        );
        let mut notify = query("default.", RecordType::SOA, None);
        notify.metadata.op_code = OpCode::Notify;
        assert_eq!(
            reply(&h, &notify, Transport::Udp).metadata.response_code,
            ResponseCode::NotImp
        );
        let mut chaos = query("version.bind.", RecordType::TXT, None);
        chaos.queries[0].set_query_class(DNSClass::CH);
        assert_eq!(
            reply(&h, &chaos, Transport::Udp).metadata.response_code,
            ResponseCode::Refused
        );
        let axfr = query("default.", RecordType::AXFR, None);
        assert_eq!(
            reply(&h, &axfr, Transport::Tcp).metadata.response_code,
            ResponseCode::Refused
        );
    }

    #[test]
    fn a_forwarded_question_is_answered_from_a_relayed_answer_then_from_the_cache() {
        let h = handler();
        let q = query("upstream.test.", RecordType::A, None);
        let Outcome::Forward(job) =
            h.handle(&q.to_vec().unwrap(), CLIENT, Transport::Udp, Instant::now())
        else {
            panic!("not forwarded");
        };
        let upstream = Message::from_vec(&job.upstream_query(7)).unwrap();
        assert!(upstream.metadata.recursion_desired);
        assert_eq!(
            upstream.edns.as_ref().unwrap().max_payload(),
            MAX_UDP_PAYLOAD
        );
        let mut answer = Message::new(7, MessageType::Response, OpCode::Query);
        answer.add_query(job.query().clone());
        answer.add_answer(Record::from_rdata(
            job.query().name().clone(),
            60,
            RData::A(hickory_proto::rr::rdata::A::new(10, 9, 9, 9)),
        ));
        let out = Message::from_vec(&h.relay(&job, Some(answer.to_vec().unwrap()), Instant::now()))
            .unwrap();
        assert_eq!(out.metadata.id, 42);
        assert_eq!(out.answers.len(), 1);
        let again = reply(&h, &q, Transport::Udp);
        assert_eq!(again.answers.len(), 1);
        assert_eq!(h.counters().cache_hits, 1);
        // No usable upstream answer: SERVFAIL, counted.
        let q2 = query("down.test.", RecordType::A, None);
        let Outcome::Forward(job) = h.handle(
            &q2.to_vec().unwrap(),
            CLIENT,
            Transport::Udp,
            Instant::now(),
        ) else {
            panic!("not forwarded");
        };
        let out = Message::from_vec(&h.relay(&job, Some(vec![1, 2, 3]), Instant::now())).unwrap();
        assert_eq!(out.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(h.counters().upstream_failures, 1);
    }

    #[test]
    fn local_only_answers_its_names_and_refuses_the_rest_without_forwarding() {
        let h = handler().local_only();
        let local = reply(
            &h,
            &query("many.default.", RecordType::A, None),
            Transport::Tcp,
        );
        assert_eq!(local.answers.len(), 100);
        let foreign = query("upstream.test.", RecordType::A, None);
        match h.handle(
            &foreign.to_vec().unwrap(),
            CLIENT,
            Transport::Udp,
            Instant::now(),
        ) {
            Outcome::Reply(r) => assert_eq!(
                Message::from_vec(&r).unwrap().metadata.response_code,
                ResponseCode::Refused
            ),
            other => panic!("{other:?}"),
        }
        let c = h.counters();
        assert_eq!((c.refused, c.forwarded, c.upstream_failures), (1, 0, 0));
    }
}
