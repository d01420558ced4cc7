//! The DNS request path without sockets: `dns::QueryHandler::handle` (decode → refuse / local
//! zone / RFC 8482 / cache → encode) over a record set with names, reverse names and a
//! multi-label name, then, for a forwarded question, `relay` of a fuzzed upstream answer (decode →
//! cache → patch → encode) and the same question again (the cache-hit path).
//!
//! Input: `hostagent_fuzz::frames` framing. Frame 0 is the query; its `advance` byte picks the
//! transport (bit 0: TCP) and the source (bit 1: outside the allowed net). Frame 1, if any, is
//! the upstream's answer (absent: every upstream failed). Frame 2, if any, is the network's
//! leases before the query, one client host name (option 12, any bytes) per line: they go
//! through the agent's `lease_records` into the record store, as the daemon's lease feed does.
//!
//! Invariants: every reply decodes, is a response (QR) with the query's ID, fits the client's
//! limit over UDP (512 without EDNS, 1232 with) and is never larger than the query when the
//! source is refused. Every lease record is taken by the store, none has a name the config owns.
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::Instant;

use dns::{
    HostRecord, Limits, Outcome, QueryHandler, RecordStore, Source, Transport, Zone, ZoneConfig,
};
use hickory_proto::op::Message;
use hostagent::daemon::lease_names::{lease_records, names_of};
use hostagent_fuzz::frames;
use libfuzzer_sys::fuzz_target;
use pxe::config::Mac;
use pxe::leases::Lease;

/// The config's names (what `lease_records` must leave alone) and their store.
fn config_records() -> Vec<HostRecord> {
    vec![
        HostRecord::new(
            "bastion",
            "192.168.122.10".parse().expect("ip"),
            Source::StaticHost,
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
    ]
}

/// Frame 2 as the DHCP server's lease set: line i is the host name of 192.168.122.(100 + i).
fn feed_leases(h: &QueryHandler, raw: &[u8]) {
    let now = 1_000_000;
    let leases: Vec<Lease> = raw
        .split(|b| *b == b'\n')
        .take(64)
        .enumerate()
        .map(|(i, name)| Lease {
            mac: Mac([0x52, 0x54, 0, 0, 0, i as u8]),
            ip: Ipv4Addr::new(192, 168, 122, 100 + i as u8),
            // Every fourth one has expired.
            expires: if i % 4 == 3 { now - 1 } else { now + 3600 },
            hostname: (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned()),
            client_id: None,
            agent: None,
        })
        .collect();
    let store = h.records();
    let taken: HashSet<String> = names_of(&config_records(), store);
    let records = lease_records(&leases, &[], store, &taken, now);
    for r in &records {
        let name = store
            .relative_name(&r.name)
            .expect("a lease record's name is valid");
        assert!(
            !taken.contains(&name),
            "lease took the config's name {name}"
        );
        assert!(!name.contains('.'), "a lease name is one label: {name}");
    }
    let rejected = store.replace_source(Source::Lease, records);
    assert!(
        rejected.is_empty(),
        "the store refused lease records: {rejected:?}"
    );
}

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
        records.set_all(config_records());
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
    // No frame 2: no leases (a previous input's must not linger).
    feed_leases(h, fs.get(2).map_or(&[][..], |f| f.bytes));
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
