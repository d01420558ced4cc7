//! An upstream answer kept as its own wire bytes, ready to be relayed to any client that asks the
//! same question: on the way out only the ID, a few flag bits, the question's letter case and the
//! TTLs (minus the time spent in the cache) are patched in place, so a cache hit costs one copy
//! of the bytes and no decoding. The answer was decoded completely by hickory-proto before it is
//! kept; the walk here only notes where the TTL fields are.

use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// What the client asked, as far as the reply to it depends on it.
#[derive(Debug, Clone)]
pub(crate) struct Asker {
    pub id: u16,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    /// The client sent an OPT record: the reply carries one (RFC 6891 §7), else it must not.
    pub edns: bool,
    /// Largest reply the client takes (512 without EDNS; TCP: 65535).
    pub limit: usize,
    /// The question name exactly as the client wrote it (its letter case, RFC 0x20 clients check).
    pub qname_wire: Vec<u8>,
}

/// Why an upstream answer is not relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RelayError {
    #[error("undecodable answer: {0}")]
    Decode(String),
    #[error("answer to another question")]
    WrongQuestion,
    #[error("not a response to a standard query")]
    NotAnAnswer,
}

#[derive(Debug)]
pub(crate) struct Relayed {
    wire: Box<[u8]>,
    /// End of the question name (it starts at offset 12).
    qname_end: usize,
    ttl_offsets: Vec<usize>,
    /// Start of the OPT record when it is the message's last record (where it always is).
    opt_at: Option<usize>,
    rcode: ResponseCode,
    stored: Instant,
    /// How long it may be served from the cache; zero: not cacheable.
    pub(crate) lifetime: Duration,
}

/// Our own OPT record: root name, type 41, UDP size 1232, no extended rcode, version 0, no flags.
pub(crate) const OPT_1232: [u8; 11] = [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0];

impl Relayed {
    /// Takes an upstream answer to `query`; `max_ttl` caps every TTL (and so the cache lifetime).
    pub(crate) fn parse(
        mut wire: Vec<u8>,
        query: &Query,
        max_ttl: u32,
        now: Instant,
    ) -> Result<Relayed, RelayError> {
        let message = Message::from_vec(&wire).map_err(|e| RelayError::Decode(e.to_string()))?;
        if message.metadata.message_type != MessageType::Response
            || message.metadata.op_code != OpCode::Query
        {
            return Err(RelayError::NotAnAnswer);
        }
        let same_question = message.queries.len() == 1 && {
            let q = &message.queries[0];
            q.name() == query.name()
                && q.query_type() == query.query_type()
                && q.query_class() == query.query_class()
        };
        if !same_question {
            return Err(RelayError::WrongQuestion);
        }
        let rcode = message.metadata.response_code;
        let layout = walk(&wire).map_err(|e| RelayError::Decode(e.to_string()))?;
        let negative = rcode == ResponseCode::NXDomain
            || (rcode == ResponseCode::NoError && message.answers.is_empty());
        // RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM); its SOA says so.
        let negative_ttl = message.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        });
        let mut lifetime = u32::MAX;
        for (i, &(rtype, at)) in layout.records.iter().enumerate() {
            let mut ttl = read_u32(&wire, at).min(max_ttl);
            if negative && rtype == RecordType::SOA && i >= layout.answers {
                ttl = ttl.min(negative_ttl.unwrap_or(0));
            }
            write_u32(&mut wire, at, ttl);
            lifetime = lifetime.min(ttl);
        }
        let cacheable = matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain)
            && !message.metadata.truncation
            && (!negative || negative_ttl.is_some());
        let lifetime = if cacheable && lifetime != u32::MAX {
            Duration::from_secs(u64::from(lifetime))
        } else {
            Duration::ZERO
        };
        Ok(Relayed {
            wire: wire.into_boxed_slice(),
            qname_end: layout.qname_end,
            ttl_offsets: layout.records.iter().map(|&(_, at)| at).collect(),
            opt_at: layout.opt_at,
            rcode,
            stored: now,
            lifetime,
        })
    }

    pub(crate) fn rcode(&self) -> ResponseCode {
        self.rcode
    }

    pub(crate) fn fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.stored) < self.lifetime
    }

    /// The reply for `asker`: one copy of the kept bytes, patched; TC and no records when it does
    /// not fit the asker's limit.
    pub(crate) fn render(&self, asker: &Asker, now: Instant) -> (Vec<u8>, bool) {
        let aged = now.saturating_duration_since(self.stored).as_secs();
        let aged = u32::try_from(aged).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(self.wire.len().min(asker.limit) + OPT_1232.len());
        out.extend_from_slice(&self.wire);
        out[0..2].copy_from_slice(&asker.id.to_be_bytes());
        // QR, opcode and TC as upstream sent them; AA off (we are not the authority); RD the
        // client's; RA on; CD the client's.
        out[2] = (out[2] & 0b1111_1010) | u8::from(asker.recursion_desired);
        out[3] = (out[3] & 0b0010_1111) | 0x80 | (u8::from(asker.checking_disabled) << 4);
        let qname = &mut out[12..self.qname_end];
        if qname.len() == asker.qname_wire.len() && qname.eq_ignore_ascii_case(&asker.qname_wire) {
            qname.copy_from_slice(&asker.qname_wire);
        }
        for &at in &self.ttl_offsets {
            let ttl = read_u32(&out, at).saturating_sub(aged);
            write_u32(&mut out, at, ttl);
        }
        if let (Some(at), false) = (self.opt_at, asker.edns) {
            out.truncate(at);
            let additionals = u16::from_be_bytes([out[10], out[11]]).saturating_sub(1);
            out[10..12].copy_from_slice(&additionals.to_be_bytes());
        }
        if out.len() <= asker.limit {
            return (out, false);
        }
        // Header + question, counts 1/0/0/(OPT), TC set.
        out.truncate(self.qname_end + 4);
        out[2] |= 0b0000_0010;
        out[6..12].fill(0);
        if asker.edns {
            out.extend_from_slice(&OPT_1232);
            out[11] = 1;
        }
        (out, true)
    }
}

struct Layout {
    qname_end: usize,
    /// Type and TTL offset of every record except OPT, in message order.
    records: Vec<(RecordType, usize)>,
    /// How many of `records` are answers.
    answers: usize,
    opt_at: Option<usize>,
}

fn walk(wire: &[u8]) -> Result<Layout, hickory_proto::serialize::binary::DecodeError> {
    let count = |i: usize| usize::from(u16::from_be_bytes([wire[i], wire[i + 1]]));
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let mut d = BinDecoder::new(wire);
    d.read_slice(12)?;
    let mut qname_end = 12;
    for i in 0..qd {
        Name::read(&mut d)?;
        if i == 0 {
            qname_end = d.index();
        }
        d.read_u16()?;
        d.read_u16()?;
    }
    let total = an + ns + ar;
    let mut records = Vec::with_capacity(total);
    let mut opt_at = None;
    for i in 0..total {
        let start = d.index();
        Name::read(&mut d)?;
        let rtype = RecordType::from(d.read_u16()?.unverified());
        d.read_u16()?;
        let ttl_at = d.index();
        d.read_u32()?;
        let len = d.read_u16()?.unverified();
        d.read_slice(usize::from(len))?;
        if rtype == RecordType::OPT {
            if i + 1 == total {
                opt_at = Some(start);
            }
        } else {
            records.push((rtype, ttl_at));
        }
    }
    Ok(Layout {
        qname_end,
        answers: an,
        records,
        opt_at,
    })
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Edns;
    use hickory_proto::rr::rdata::{A, SOA, TXT};
    use hickory_proto::rr::Record;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn asker(edns: bool, limit: usize, qname: &str) -> Asker {
        let name = n(qname);
        let mut wire = Vec::new();
        for label in name.iter() {
            wire.push(label.len() as u8);
            wire.extend_from_slice(label);
        }
        wire.push(0);
        Asker {
            id: 0xbeef,
            recursion_desired: true,
            checking_disabled: false,
            edns,
            limit,
            qname_wire: wire,
        }
    }

    fn upstream(
        query: &Query,
        answers: Vec<Record>,
        authorities: Vec<Record>,
        rcode: ResponseCode,
    ) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        m.metadata.authoritative = true;
        m.add_query(query.clone());
        m.add_answers(answers);
        m.add_authorities(authorities);
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        m.set_edns(edns);
        m.to_vec().unwrap()
    }

    #[test]
    fn ttls_age_case_and_id_follow_the_asker_and_opt_goes_without_edns() {
        let q = Query::query(n("www.example.test."), RecordType::A);
        let wire = upstream(
            &q,
            vec![Record::from_rdata(
                n("www.example.test."),
                300,
                RData::A(A::new(10, 9, 9, 9)),
            )],
            vec![],
            ResponseCode::NoError,
        );
        let t0 = Instant::now();
        let r = Relayed::parse(wire, &q, 86400, t0).unwrap();
        assert_eq!(r.lifetime, Duration::from_secs(300));
        let (out, tc) = r.render(
            &asker(false, 512, "WwW.Example.TEST."),
            t0 + Duration::from_secs(100),
        );
        assert!(!tc);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 0xbeef);
        assert!(!m.metadata.authoritative);
        assert!(m.metadata.recursion_available);
        assert_eq!(m.queries[0].name().to_ascii(), "WwW.Example.TEST.");
        assert_eq!(m.answers[0].ttl, 200);
        assert!(m.edns.is_none(), "no OPT to a client that sent none");
        let (out, _) = r.render(&asker(true, 1232, "www.example.test."), t0);
        assert!(Message::from_vec(&out).unwrap().edns.is_some());
        assert!(!r.fresh(t0 + Duration::from_secs(300)));
    }

    #[test]
    fn negative_answers_live_the_soa_minimum_and_need_a_soa() {
        let q = Query::query(n("nope.example.test."), RecordType::A);
        let soa = SOA::new(n("ns.example.test."), n("h.example.test."), 1, 1, 1, 1, 30);
        let wire = upstream(
            &q,
            vec![],
            vec![Record::from_rdata(n("example.test."), 900, RData::SOA(soa))],
            ResponseCode::NXDomain,
        );
        let r = Relayed::parse(wire, &q, 86400, Instant::now()).unwrap();
        assert_eq!(r.lifetime, Duration::from_secs(30));
        assert_eq!(r.rcode(), ResponseCode::NXDomain);
        let bare = upstream(&q, vec![], vec![], ResponseCode::NXDomain);
        assert_eq!(
            Relayed::parse(bare, &q, 86400, Instant::now())
                .unwrap()
                .lifetime,
            Duration::ZERO
        );
        let servfail = upstream(&q, vec![], vec![], ResponseCode::ServFail);
        assert_eq!(
            Relayed::parse(servfail, &q, 86400, Instant::now())
                .unwrap()
                .lifetime,
            Duration::ZERO
        );
    }

    #[test]
    fn too_big_for_the_asker_is_truncated_to_the_question() {
        let q = Query::query(n("big.example.test."), RecordType::TXT);
        let answers = (0..20)
            .map(|i| {
                Record::from_rdata(
                    n("big.example.test."),
                    60,
                    RData::TXT(TXT::new(vec![format!("{i:02}-{}", "x".repeat(60))])),
                )
            })
            .collect();
        let wire = upstream(&q, answers, vec![], ResponseCode::NoError);
        assert!(wire.len() > 1232);
        let r = Relayed::parse(wire, &q, 86400, Instant::now()).unwrap();
        for edns in [false, true] {
            let (out, tc) = r.render(
                &asker(edns, if edns { 1232 } else { 512 }, "big.example.test."),
                Instant::now(),
            );
            assert!(tc);
            let m = Message::from_vec(&out).unwrap();
            assert!(m.metadata.truncation);
            assert!(m.answers.is_empty());
            assert_eq!(m.queries.len(), 1);
            assert_eq!(m.edns.is_some(), edns);
        }
        let (out, tc) = r.render(&asker(false, 65535, "big.example.test."), Instant::now());
        assert!(!tc);
        assert_eq!(Message::from_vec(&out).unwrap().answers.len(), 20);
    }

    #[test]
    fn an_answer_to_another_question_is_refused() {
        let q = Query::query(n("a.test."), RecordType::A);
        let other = Query::query(n("b.test."), RecordType::A);
        let wire = upstream(&other, vec![], vec![], ResponseCode::NoError);
        assert_eq!(
            Relayed::parse(wire, &q, 60, Instant::now()).unwrap_err(),
            RelayError::WrongQuestion
        );
        let mut query_not_answer = Message::query();
        query_not_answer.add_query(q.clone());
        assert_eq!(
            Relayed::parse(query_not_answer.to_vec().unwrap(), &q, 60, Instant::now()).unwrap_err(),
            RelayError::NotAnAnswer
        );
        assert!(matches!(
            Relayed::parse(vec![1, 2, 3], &q, 60, Instant::now()),
            Err(RelayError::Decode(_))
        ));
    }
}
