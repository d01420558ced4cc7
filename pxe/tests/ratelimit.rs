//! The per-MAC rate limit at the handler level, over a real pool and journal: a MAC over its
//! burst is dropped before any pool work and counted; other MACs (a static reservation in
//! particular) keep their own buckets; the limiter stays bounded under thousands of random MACs.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pxe::config::{DhcpConfig, StaticHost};
use pxe::dhcp::pool::Pool;
use pxe::dhcp::server::handler::Handler;
use pxe::dhcp::server::ratelimit::{RateLimit, MAC_BURST};
use pxe::dhcp::server::{pool_config, DhcpStats};
use pxe::dhcp::wire::{self, MessageType};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const RESERVED_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x10];
const RESERVED_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const NOW: u64 = 1_800_000_000;

fn config(dir: &Path, range: (u8, u8)) -> DhcpConfig {
    DhcpConfig {
        network: "lab".into(),
        interface: "br0".into(),
        server_ip: SERVER,
        subnet: "10.77.0.0/24".parse().unwrap(),
        range_start: Ipv4Addr::new(10, 77, 0, range.0),
        range_end: Ipv4Addr::new(10, 77, 0, range.1),
        lease_time: Duration::from_secs(3600),
        router: Some(SERVER),
        dns: vec![],
        domain: None,
        mtu: None,
        ntp: Vec::new(),
        routes: Vec::new(),
        hosts: vec![StaticHost {
            mac: RESERVED_MAC.into(),
            ip: RESERVED_IP,
            name: Some("bastion".into()),
            boot: None,
            script: None,
        }],
        boot: None,
        lease_file: dir.join("lab.leases"),
    }
}

fn handler(cfg: &DhcpConfig) -> Handler {
    let pool = Pool::open(pool_config(cfg)).expect("open pool");
    Handler::new(cfg.clone(), pool, Arc::new(DhcpStats::default()))
}

fn packet(kind: MessageType, mac: [u8; 6], xid: u32, requested: Option<Ipv4Addr>) -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[0] = 1;
    p[1] = 1;
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10] = 0x80;
    p[28..34].copy_from_slice(&mac);
    p[236..240].copy_from_slice(&wire::MAGIC_COOKIE);
    p.extend_from_slice(&[53, 1, kind as u8]);
    if let Some(ip) = requested {
        p.extend_from_slice(&[50, 4]);
        p.extend_from_slice(&ip.octets());
        p.extend_from_slice(&[54, 4]);
        p.extend_from_slice(&SERVER.octets());
    }
    p.push(255);
    p
}

/// DISCOVER then REQUEST at `clock`; the ACKed address, if both were answered.
fn lease(h: &mut Handler, mac: [u8; 6], clock: Instant) -> Option<Ipv4Addr> {
    let offer = h.handle_packet_at(&packet(MessageType::Discover, mac, 1, None), NOW, clock)?;
    let ip = offer.reply.yiaddr;
    let ack = h.handle_packet_at(&packet(MessageType::Request, mac, 1, Some(ip)), NOW, clock)?;
    (ack.reply.msg_type == MessageType::Ack).then_some(ack.reply.yiaddr)
}

#[test]
fn one_mac_over_its_burst_is_dropped_before_the_pool_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), (100, 200));
    let mut h = handler(&cfg);
    let t = Instant::now();
    let spammer = [2, 0x77, 0, 0, 0, 1];

    let answered = (0..100)
        .filter(|i| {
            h.handle_packet_at(&packet(MessageType::Discover, spammer, *i, None), NOW, t)
                .is_some()
        })
        .count() as u32;
    assert_eq!(answered, MAC_BURST);
    let s = h.stats().snapshot();
    assert_eq!(s.rate_limited, u64::from(100 - MAC_BURST));
    assert_eq!(s.offers, u64::from(MAC_BURST));
    assert_eq!(s.received, 100);

    // Over its rate, even a valid REQUEST does no pool work: no lease, no ACK.
    let offered = h.pool().leases().len();
    let req = packet(
        MessageType::Request,
        spammer,
        7,
        Some(Ipv4Addr::new(10, 77, 0, 100)),
    );
    assert!(h.handle_packet_at(&req, NOW, t).is_none());
    assert_eq!(h.stats().snapshot().acks, 0);
    assert_eq!(h.pool().leases().len(), offered);
    assert!(!h.pool().has_pending(), "nothing was written for it");

    // The reservation, and any other client, has its own bucket.
    assert_eq!(lease(&mut h, RESERVED_MAC, t), Some(RESERVED_IP));
    assert!(lease(&mut h, [2, 0x77, 0, 0, 0, 2], t).is_some());

    // Half a second later the spammer has earned one packet (2/s), not two.
    let later = t + Duration::from_millis(500);
    assert!(h
        .handle_packet_at(&packet(MessageType::Discover, spammer, 8, None), NOW, later)
        .is_some());
    assert!(h
        .handle_packet_at(&packet(MessageType::Discover, spammer, 9, None), NOW, later)
        .is_none());
}

#[test]
fn thousands_of_random_macs_exhaust_the_pool_but_the_reservation_is_served_and_memory_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), (100, 109));
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
        h.handle_packet_at(&packet(MessageType::Discover, mac, i, None), NOW, clock);
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
