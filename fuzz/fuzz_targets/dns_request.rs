//! The DNS request path without sockets: `dns::QueryHandler::handle` (decode → refuse / local
//! zone / RFC 8482 / cache → encode) over a record set with names, reverse names and a
//! multi-label name, then, for a forwarded question, `relay` of a fuzzed upstream answer (decode →
//! cache → patch → encode) and the same question again (the cache-hit path).
//!
//! Input: `hostagent_fuzz::frames` framing. Frame 0 is the query; its `advance` byte picks the
//! transport (bit 0: TCP) and the source (bit 1: outside the allowed net). Frame 1, if any, is
//! the upstream's answer (absent: every upstream failed).
//!
//! Invariants: every reply decodes, is a response (QR) with the query's ID, fits the client's
//! limit over UDP (512 without EDNS, 1232 with) and is never larger than the query when the
//! source is refused.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Instant;

use dns::{
    HostRecord, Limits, Outcome, QueryHandler, RecordStore, Source, Transport, Zone, ZoneConfig,
};
use hickory_proto::op::Message;
use hostagent_fuzz::frames;
use libfuzzer_sys::fuzz_target;

fn handler() -> &'static QueryHandler {
    static H: OnceLock<QueryHandler> = OnceLock::new();
    H.get_or_init(|| {
        let zone = Zone::new(&ZoneConfig {
            domain: "default".into(),
            ipv4: "192.168.122.0/24".parse().expect("literal"),
            ipv6: Some("fd00:122::/64".parse().expect("literal")),
            ttl: 0,
        })
        .expect("zone");
        let records = RecordStore::new(zone.domain());
        records.set_all([
            HostRecord::new(
                "bastion",
                "192.168.122.10".parse().expect("ip"),
                Source::Lease,
            ),
            HostRecord::new(
                "web.default",
                "192.168.122.20".parse().expect("ip"),
                Source::StaticHost,
            ),
            HostRecord::new("web", "fd00:122::20".parse().expect("ip"), Source::Config),
            HostRecord::new(
                "api.k8s",
                "192.168.122.30".parse().expect("ip"),
                Source::Config,
            ),
        ]);
        let limits = Limits {
            rate: None,
            cache_entries: 256,
            ..Limits::default()
        };
        QueryHandler::new(zone, records, Vec::new(), &limits, true)
    })
}

fn check(reply: &[u8], query: &[u8], transport: Transport, refused: bool) {
    let m = Message::from_vec(reply)
        .unwrap_or_else(|e| panic!("reply does not decode: {e}: {reply:02x?}"));
    assert!(reply[2] & 0x80 != 0, "reply without QR");
    assert_eq!(reply[0..2], query[0..2], "reply with another ID");
    if transport == Transport::Udp {
        let q = Message::from_vec(query).ok();
        let limit = match q.as_ref().and_then(|q| q.edns.as_ref()) {
            Some(_) => 1232,
            None => 512,
        };
        assert!(
            reply.len() <= limit.max(512),
            "UDP reply of {} bytes (limit {limit})",
            reply.len()
        );
    }
    if refused {
        assert!(reply.len() <= query.len(), "refusal bigger than the query");
        assert_eq!(
            m.metadata.response_code,
            hickory_proto::op::ResponseCode::Refused
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let fs = frames(data);
    let Some(first) = fs.first() else {
        return;
    };
    let query = first.bytes;
    let flags = first.advance / 8;
    let transport = if flags & 1 != 0 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let src: IpAddr = if flags & 2 != 0 {
        "10.66.0.1".parse().expect("ip")
    } else {
        "192.168.122.50".parse().expect("ip")
    };
    let refused = flags & 2 != 0;
    let h = handler();
    let now = Instant::now();
    match h.handle(query, src, transport, now) {
        Outcome::Drop => {}
        Outcome::Reply(reply) => check(&reply, query, transport, refused),
        Outcome::Forward(job) => {
            assert!(!refused, "a refused source was forwarded");
            let upstream = fs.get(1).map(|f| f.bytes.to_vec());
            let reply = h.relay(&job, upstream, now);
            check(&reply, query, transport, false);
            if let Outcome::Reply(again) = h.handle(query, src, transport, now) {
                check(&again, query, transport, false);
            }
        }
    }
});
