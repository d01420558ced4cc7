//! The RFC promises of the DHCP server, socket-free over a real pool and journal (and the lease
//! watch over a real server): option 61 identifies the client (RFC 2131 §4.2, RFC 4361) while
//! reservations still match the MAC; option 82 comes back in every reply (RFC 3046 §2.2);
//! options 42, 121 (RFC 3442) and 249; a journal of the previous release loads; the live lease
//! feed follows binds, renewals, releases, declines and expiries.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use pxe::config::StaticRoute;
use pxe::dhcp::pool::{Client, ClientId, ClientKey, Pool};
use pxe::dhcp::server::{pool_config, LeaseFeed};
use pxe::dhcp::wire::MessageType;
use testkit::dhcp::{client_socket, msg, opt, parse_mac, Packet};
use testkit::wait_for;

mod support;
use support::{config, handler, one, raw, Lab, BASTION_IP, BASTION_MAC, NOW, SERVER};

const DUID: [u8; 14] = [
    0xff, 0, 0, 0, 1, 0, 1, 0x2a, 0x1b, 0x3c, 0x52, 0x54, 0, 0x42,
];

fn discover(mac: [u8; 6], id: Option<&[u8]>) -> Packet {
    let p = Packet::new(msg::DISCOVER, mac).xid(1);
    match id {
        Some(id) => p.option(opt::CLIENT_ID, id),
        None => p,
    }
}

/// DISCOVER then SELECTING REQUEST: the address ACKed.
fn lease(h: &mut pxe::dhcp::server::handler::Handler, mac: [u8; 6], id: Option<&[u8]>) -> Ipv4Addr {
    let offer = one(h, &discover(mac, id).bytes()).expect("offer");
    let ip = offer.reply.yiaddr;
    let mut req = Packet::new(msg::REQUEST, mac).xid(2).selecting(ip, SERVER);
    if let Some(id) = id {
        req = req.option(opt::CLIENT_ID, id);
    }
    let ack = one(h, &req.bytes()).expect("ack");
    assert_eq!(ack.reply.msg_type, MessageType::Ack);
    assert_eq!(ack.reply.yiaddr, ip);
    ip
}

#[test]
fn client_id_keeps_its_address_on_a_new_chaddr_and_reservations_still_match_the_mac() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), (100, 200), 3600);
    let mut h = handler(&cfg);
    let (nic_a, nic_b) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);

    let x = lease(&mut h, nic_a, Some(&DUID));
    // The same machine on a new NIC: same identifier, same address.
    assert_eq!(lease(&mut h, nic_b, Some(&DUID)), x);
    let id = ClientId::new(&DUID).unwrap();
    let held = h
        .pool()
        .lease_for(&Client::new(nic_b.into(), Some(id.clone())))
        .expect("the journal answers");
    assert_eq!(
        held.as_ref().map(|l| (l.ip, l.mac)),
        Some((x, nic_b.into()))
    );
    assert_eq!(held.and_then(|l| l.client_id), Some(id.clone()));
    // nic_a without an identifier is another client (RFC 2131 §4.2): another address.
    let y = lease(&mut h, nic_a, None);
    assert_ne!(y, x);
    // An Ethernet-type identifier names a MAC: `01:<nic_a>` from nic_b is nic_a's client.
    let mut eth = vec![1];
    eth.extend_from_slice(&nic_a);
    assert_eq!(lease(&mut h, nic_b, Some(&eth)), y);
    // A reservation is by MAC, whatever identifier the client sends.
    assert_eq!(lease(&mut h, BASTION_MAC, Some(&DUID[..10])), BASTION_IP);

    // All of it survives a restart (journal replay).
    drop(h);
    let pool = Pool::open(pool_config(&cfg)).expect("reopen");
    assert_eq!(
        pool.lease_for(Client::new(nic_b.into(), Some(id)))
            .map(|l| l.ip),
        Some(x)
    );
    assert_eq!(
        pool.lease_for(pxe::config::Mac(nic_a)).map(|l| l.ip),
        Some(y)
    );
    let keys: Vec<ClientKey> = pool.leases_at(NOW).iter().map(|l| l.key()).collect();
    assert_eq!(keys.len(), 3, "three clients, three leases: {keys:?}");
}

#[test]
fn option_82_is_echoed_last_in_every_reply() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(&config(dir.path(), (100, 200), 3600));
    let relay = Ipv4Addr::new(10, 77, 0, 254);
    let info = [1u8, 3, b'p', b'7', b'a', 2, 2, 0xbe, 0xef];
    let mac = [2, 0, 0, 0, 0, 0x82];
    let via = |p: Packet| p.giaddr(relay).option(opt::RELAY_AGENT_INFO, &info).bytes();
    let offer = one(&mut h, &via(Packet::new(msg::DISCOVER, mac).xid(1))).unwrap();
    let ip = offer.reply.yiaddr;
    let ack = one(
        &mut h,
        &via(Packet::new(msg::REQUEST, mac).xid(2).selecting(ip, SERVER)),
    )
    .unwrap();
    let nak = one(
        &mut h,
        &via(Packet::new(msg::REQUEST, mac)
            .xid(3)
            .selecting(Ipv4Addr::new(192, 168, 9, 9), SERVER)),
    )
    .unwrap();
    let inform = one(
        &mut h,
        &via(Packet::new(msg::INFORM, mac).xid(4).ciaddr(ip)),
    )
    .unwrap();
    for (o, kind) in [
        (&offer, MessageType::Offer),
        (&ack, MessageType::Ack),
        (&nak, MessageType::Nak),
        (&inform, MessageType::Ack),
    ] {
        assert_eq!(o.reply.msg_type, kind);
        let (_, reply) = raw(o);
        assert!(
            reply.echoes_relay_info(&info),
            "{kind:?}: {:?}",
            reply.codes()
        );
    }
    // No 82 asked, none sent.
    let plain = one(
        &mut h,
        &Packet::new(msg::DISCOVER, [2, 0, 0, 0, 0, 0x83]).bytes(),
    )
    .unwrap();
    assert_eq!(raw(&plain).1.get(opt::RELAY_AGENT_INFO), None);
}

#[test]
fn ntp_and_classless_static_routes_with_249_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), (100, 200), 3600);
    cfg.ntp = vec![SERVER, Ipv4Addr::new(10, 77, 0, 2)];
    cfg.routes = vec![StaticRoute {
        destination: "10.200.0.0/16".parse().unwrap(),
        router: Ipv4Addr::new(10, 77, 0, 254),
    }];
    let mut h = handler(&cfg);
    let offer = one(
        &mut h,
        &Packet::new(msg::DISCOVER, [2, 0, 0, 0, 0, 0x42]).bytes(),
    )
    .unwrap();
    let (_, reply) = raw(&offer);
    assert_eq!(reply.get(42), Some(&[10, 77, 0, 1, 10, 77, 0, 2][..]));
    let routes: &[u8] = &[16, 10, 200, 10, 77, 0, 254, 0, 10, 77, 0, 1];
    assert_eq!(
        reply.get(121),
        Some(routes),
        "with the default route (RFC 3442 §2)"
    );
    assert_eq!(reply.get(249), None, "249 only for clients that ask for it");
    let asking = Packet::new(msg::DISCOVER, [2, 0, 0, 0, 0, 0x43])
        .option(opt::PARAMETER_REQUEST_LIST, &[1, 3, 249, 6])
        .bytes();
    let (_, reply) = raw(&one(&mut h, &asking).unwrap());
    assert_eq!(reply.get(249), Some(routes));
    assert_eq!(reply.get(121), Some(routes));
}

/// CRC-32/IEEE, written here from the polynomial so the fixture below does not come from the
/// code under test.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc_input = len.to_vec();
    crc_input.extend_from_slice(payload);
    let mut out = len.to_vec();
    out.extend_from_slice(&crc32(&crc_input).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A journal exactly as the previous release wrote it (version 1: kinds 1 lease, 2 release,
/// 3 decline) loads unchanged, and is rewritten as version 2 on open.
#[test]
fn a_journal_of_the_previous_release_loads_and_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), (100, 200), 3600);
    let expires = (NOW + 3600).to_le_bytes();
    let until = (NOW + 600).to_le_bytes();
    let mut v1 = b"HAGLEASE".to_vec();
    v1.extend_from_slice(&1u32.to_le_bytes());
    for payload in [
        // lease 02:..:01 → .100, hostname "alpha"
        [
            &[1u8, 2, 0, 0, 0, 0, 1, 10, 77, 0, 100][..],
            &expires,
            &[5],
            b"alpha",
        ]
        .concat(),
        // lease 02:..:02 → .101, no hostname, then released
        [&[1u8, 2, 0, 0, 0, 0, 2, 10, 77, 0, 101][..], &expires, &[0]].concat(),
        vec![2, 2, 0, 0, 0, 0, 2, 10, 77, 0, 101],
        // .102 declined
        [&[3u8, 10, 77, 0, 102][..], &until].concat(),
    ] {
        v1.extend_from_slice(&frame(&payload));
    }
    std::fs::write(&cfg.lease_file, &v1).unwrap();

    let pool = Pool::open(pool_config(&cfg)).expect("a version-1 journal opens");
    let leases = pool.leases_at(NOW);
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0].ip, Ipv4Addr::new(10, 77, 0, 100));
    assert_eq!(leases[0].hostname.as_deref(), Some("alpha"));
    assert_eq!(leases[0].client_id, None);
    assert_eq!(pool.stats(NOW).quarantined, 1);
    assert_eq!(pool.load_report().version, 1);
    drop(pool);

    let bytes = std::fs::read(&cfg.lease_file).unwrap();
    assert_eq!(&bytes[8..12], &2u32.to_le_bytes(), "rewritten as version 2");
    let again = Pool::open(pool_config(&cfg)).expect("reopen");
    assert_eq!(again.leases_at(NOW), leases, "nothing lost in the rewrite");
    assert_eq!(again.stats(NOW).quarantined, 1);
    assert_eq!(again.load_report().version, 2);
}

/// A pool of 100 addresses with 60 s leases in `dir`, and a feed of it.
fn pool_with_feed(dir: &std::path::Path) -> (Pool, LeaseFeed) {
    let cfg = config(dir, (100, 200), 60);
    let pool = Pool::open(pool_config(&cfg)).unwrap();
    let feed = LeaseFeed::new(&pool, NOW);
    (pool, feed)
}

#[test]
fn lease_feed_follows_bind_renew_release_decline_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut pool, mut feed) = pool_with_feed(dir.path());
    let rx = feed.subscribe();
    let ips = |rx: &tokio::sync::watch::Receiver<Arc<pxe::dhcp::server::BoundLeases>>| {
        rx.borrow().leases.iter().map(|l| l.ip).collect::<Vec<_>>()
    };
    assert!(ips(&rx).is_empty());
    let a = Client::new([2, 0, 0, 0, 0, 1].into(), ClientId::new(&DUID));
    let ip_a = pool.offer(&a, None, NOW).unwrap();
    pool.request(&a, ip_a, Some("alpha"), NOW).unwrap();
    pool.flush().unwrap();
    assert!(feed.update(&pool, NOW), "a bind publishes");
    let set = rx.borrow().clone();
    assert_eq!(set.leases[0].hostname.as_deref(), Some("alpha"));
    assert_eq!(set.leases[0].client_id, ClientId::new(&DUID));
    assert_eq!(set.leases[0].expires, NOW + 60);
    assert!(
        !feed.update(&pool, NOW + 1),
        "nothing changed, nothing sent"
    );

    // Coalesced: a change within PUBLISH_EVERY of the last set waits for the next update.
    let b = Client::from(pxe::config::Mac([2, 0, 0, 0, 0, 2]));
    let ip_b = pool.offer(&b, None, NOW).unwrap();
    pool.request(&b, ip_b, None, NOW).unwrap();
    assert!(!feed.update(&pool, NOW));
    std::thread::sleep(pxe::dhcp::server::lease_feed::PUBLISH_EVERY);
    assert!(feed.update(&pool, NOW));
    assert_eq!(ips(&rx), vec![ip_a, ip_b]);

    std::thread::sleep(pxe::dhcp::server::lease_feed::PUBLISH_EVERY);
    pool.request(&b, ip_b, None, NOW + 30).unwrap(); // renewal: expiry moves
    assert!(feed.update(&pool, NOW + 30));
    let renewed = rx
        .borrow()
        .leases
        .iter()
        .find(|l| l.ip == ip_b)
        .map(|l| l.expires);
    assert_eq!(renewed, Some(NOW + 90));

    std::thread::sleep(pxe::dhcp::server::lease_feed::PUBLISH_EVERY);
    assert!(pool.release(&b, ip_b));
    assert!(feed.update(&pool, NOW + 31));
    assert_eq!(ips(&rx), vec![ip_a]);

    // a's lease runs out at NOW + 60: dropped without any record being written.
    std::thread::sleep(pxe::dhcp::server::lease_feed::PUBLISH_EVERY);
    assert!(!feed.update(&pool, NOW + 59));
    assert!(feed.update(&pool, NOW + 60), "an expiry publishes");
    assert!(ips(&rx).is_empty());

    // A decline drops the lease it names.
    let c = Client::from(pxe::config::Mac([2, 0, 0, 0, 0, 3]));
    let ip_c = pool.offer(&c, None, NOW + 61).unwrap();
    pool.request(&c, ip_c, None, NOW + 61).unwrap();
    std::thread::sleep(pxe::dhcp::server::lease_feed::PUBLISH_EVERY);
    assert!(feed.update(&pool, NOW + 61));
    assert_eq!(ips(&rx), vec![ip_c]);
    assert!(pool.decline(&c, ip_c, NOW + 62));
    std::thread::sleep(pxe::dhcp::server::lease_feed::PUBLISH_EVERY);
    assert!(feed.update(&pool, NOW + 62));
    assert!(ips(&rx).is_empty());
}

/// A handle's `LeaseWatch` is not a follower: while nobody subscribed, changes copy nothing; a
/// follower that comes later gets the current set at the next update.
#[test]
fn lease_feed_copies_nothing_until_someone_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (mut pool, mut feed) = pool_with_feed(dir.path());
    let watch = feed.watch();
    let a = Client::from(pxe::config::Mac([2, 0, 0, 0, 0, 1]));
    let ip_a = pool.offer(&a, None, NOW).unwrap();
    pool.request(&a, ip_a, None, NOW).unwrap();
    pool.flush().unwrap();
    assert!(!feed.update(&pool, NOW), "nobody follows: no copy");
    let rx = watch.subscribe();
    assert!(rx.borrow().leases.is_empty(), "the last published set");
    assert!(
        feed.update(&pool, NOW),
        "a follower came: the change goes out"
    );
    assert_eq!(
        rx.borrow().leases.iter().map(|l| l.ip).collect::<Vec<_>>(),
        vec![ip_a]
    );
}

/// `DhcpHandle::leases_watch` on a running server: a lease a client takes shows up, and goes
/// when the client releases it.
#[test]
fn leases_watch_follows_a_running_server() {
    let lab = Lab::new("lw");
    let mut rx = lab.server().leases_watch();
    assert!(rx.borrow_and_update().leases.is_empty());
    let mac = parse_mac(&lab.cli.mac("eth0")).expect("eth0's MAC");
    let bound = lab.cli.enter(move || {
        let sock = client_socket("eth0", 68, true).expect("client socket");
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let exchange = |p: &[u8], want: u8| {
            for _ in 0..5 {
                sock.send_to(p, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))
                    .unwrap();
                let mut buf = [0u8; 1500];
                while let Ok(n) = sock.recv(&mut buf) {
                    if let Some(r) = testkit::dhcp::Reply::parse(&buf[..n]) {
                        if r.msg_type() == Some(want) && r.chaddr == mac {
                            return r;
                        }
                    }
                }
            }
            panic!("no reply of type {want}");
        };
        let offer = exchange(
            &Packet::new(msg::DISCOVER, mac)
                .xid(7)
                .broadcast()
                .option(opt::CLIENT_ID, &DUID)
                .bytes(),
            msg::OFFER,
        );
        let ack = exchange(
            &Packet::new(msg::REQUEST, mac)
                .xid(8)
                .broadcast()
                .option(opt::CLIENT_ID, &DUID)
                .selecting(offer.yiaddr, SERVER)
                .bytes(),
            msg::ACK,
        );
        ack.yiaddr
    });
    let seen = wait_for(5, || {
        rx.borrow()
            .leases
            .iter()
            .find(|l| l.ip == bound)
            .map(|l| l.client_id.clone())
    });
    assert_eq!(
        seen,
        Some(ClientId::new(&DUID)),
        "the bound lease, with its client-id"
    );
    lab.cli.enter(move || {
        let sock = client_socket("eth0", 68, true).expect("client socket");
        let release = Packet::new(msg::RELEASE, mac)
            .xid(9)
            .ciaddr(bound)
            .option(opt::CLIENT_ID, &DUID)
            .option(opt::SERVER_ID, &SERVER.octets())
            .bytes();
        sock.send_to(&release, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))
            .unwrap();
    });
    let gone = wait_for(5, || rx.borrow().leases.is_empty().then_some(()));
    assert!(
        gone.is_some(),
        "still watched after RELEASE: {:?}",
        rx.borrow()
    );
}
