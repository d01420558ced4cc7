//! The per-MAC rate limit at the handler level, over a real pool and journal: a MAC over its
//! burst is dropped before any pool work and counted; other MACs (a static reservation in
//! particular) keep their own buckets; the limiter stays bounded under thousands of random MACs.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use pxe::dhcp::server::handler::Handler;
use pxe::dhcp::server::ratelimit::{RateLimit, MAC_BURST};
use pxe::dhcp::wire::MessageType;
use testkit::dhcp::{msg, Packet};

mod support;
use support::{
    config, handler, BASTION_IP as RESERVED_IP, BASTION_MAC as RESERVED_MAC, NOW, SERVER,
};

/// A broadcast DISCOVER from `mac`.
fn discover(mac: [u8; 6], xid: u32) -> Vec<u8> {
    Packet::new(msg::DISCOVER, mac).xid(xid).broadcast().bytes()
}

/// A broadcast SELECTING REQUEST from `mac` for `ip`, offered by us.
fn request(mac: [u8; 6], xid: u32, ip: Ipv4Addr) -> Vec<u8> {
    Packet::new(msg::REQUEST, mac)
        .xid(xid)
        .broadcast()
        .selecting(ip, SERVER)
        .bytes()
}

/// DISCOVER then REQUEST at `clock`; the ACKed address, if both were answered.
fn lease(h: &mut Handler, mac: [u8; 6], clock: Instant) -> Option<Ipv4Addr> {
    let offer = h.handle_packet_at(&discover(mac, 1), NOW, clock)?;
    let ip = offer.reply.yiaddr;
    let ack = h.handle_packet_at(&request(mac, 1, ip), NOW, clock)?;
    (ack.reply.msg_type == MessageType::Ack).then_some(ack.reply.yiaddr)
}

#[test]
fn one_mac_over_its_burst_is_dropped_before_the_pool_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), (100, 200), 3600);
    let mut h = handler(&cfg);
    let t = Instant::now();
    let spammer = [2, 0x77, 0, 0, 0, 1];

    let answered = (0..100)
        .filter(|i| h.handle_packet_at(&discover(spammer, *i), NOW, t).is_some())
        .count() as u32;
    assert_eq!(answered, MAC_BURST);
    let s = h.stats().snapshot();
    assert_eq!(s.rate_limited, u64::from(100 - MAC_BURST));
    assert_eq!(s.offers, u64::from(MAC_BURST));
    assert_eq!(s.received, 100);

    // Over its rate, even a valid REQUEST does no pool work: no lease, no ACK.
    let offered = h.pool().leases().expect("the journal answers").len();
    let req = request(spammer, 7, Ipv4Addr::new(10, 77, 0, 100));
    assert!(h.handle_packet_at(&req, NOW, t).is_none());
    assert_eq!(h.stats().snapshot().acks, 0);
    assert_eq!(
        h.pool().leases().expect("the journal answers").len(),
        offered
    );
    assert!(!h.pool().has_pending(), "nothing was written for it");

    // The reservation, and any other client, has its own bucket.
    assert_eq!(lease(&mut h, RESERVED_MAC, t), Some(RESERVED_IP));
    assert!(lease(&mut h, [2, 0x77, 0, 0, 0, 2], t).is_some());

    // Half a second later the spammer has earned one packet (2/s), not two.
    let later = t + Duration::from_millis(500);
    assert!(h
        .handle_packet_at(&discover(spammer, 8), NOW, later)
        .is_some());
    assert!(h
        .handle_packet_at(&discover(spammer, 9), NOW, later)
        .is_none());
}

#[test]
fn thousands_of_random_macs_exhaust_the_pool_but_the_reservation_is_served_and_memory_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), (100, 109), 3600);
    let limit = RateLimit {
        max_tracked: 1024,
        ..RateLimit::default()
    };
    let mut h = handler(&cfg).with_rate_limit(limit);
    let t = Instant::now();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..20_000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let b = seed.to_be_bytes();
        let mac = [b[0] & 0xfe | 0x02, b[1], b[2], b[3], b[4], b[5]];
        let clock = t + Duration::from_micros(u64::from(i) * 50);
        h.handle_packet_at(&discover(mac, i), NOW, clock);
        assert!(
            h.rate_tracked() <= 1024,
            "{} MACs tracked",
            h.rate_tracked()
        );
    }
    let s = h.stats().snapshot();
    assert!(s.exhausted > 0, "{s:?}");
    assert_eq!(s.rate_limited, 0, "one packet per MAC is never limited");
    // In the middle of it, the reservation still gets its address.
    let clock = t + Duration::from_secs(1);
    assert_eq!(lease(&mut h, RESERVED_MAC, clock), Some(RESERVED_IP));
}
