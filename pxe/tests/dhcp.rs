//! DHCP server tests: the guarded decoder under hostile input, the socket-free handler over a real
//! pool and journal, and the real server in network namespaces: a packet-socket capture that
//! checks UDP checksums, and the socket's receive queue. Real clients nobody here wrote (busybox
//! udhcpc, ISC dhclient) are one suite against the whole agent: tests/tests/dhcp_clients.rs.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use pxe::dhcp::pool::Pool;
use pxe::dhcp::server::delivery::Destination;
use pxe::dhcp::server::{answer_batch, pool_config};
use pxe::dhcp::wire::{self, opt, DropReason, MessageType};
use testkit::dhcp::{client_socket, msg, parse_mac, Packet, Reply, BOOTREPLY};

mod support;
use support::{config, handler, one, raw, Lab, BASTION_IP, BASTION_MAC, NOW, SERVER};

#[allow(dead_code)]
#[path = "../src/dhcp/classify/testpackets.rs"]
mod testpackets;

const NO_IP: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

// ---------------------------------------------------------------- decoder under hostile input

/// xorshift64*: deterministic, no external crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn decode_never_panics_on_random_and_mutated_packets() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds: Vec<Vec<u8>> = [
        testpackets::OVMF_DISCOVER,
        testpackets::IPXE_ROM_DISCOVER,
        testpackets::HTTP_DISCOVER,
        testpackets::UDHCPC_DISCOVER,
        testpackets::DHCLIENT_DISCOVER,
    ]
    .iter()
    .map(|h| testpackets::bytes(h))
    .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(&config(dir.path(), (100, 200), 3600));
    let mut decoded = 0u32;
    let mut panics = 0u32;
    for i in 0..100_000u32 {
        let p: Vec<u8> = if i % 2 == 0 {
            // Pure noise, but often with a plausible header so the option walk gets exercised.
            let len = rng.below(1600);
            let mut p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if len >= 240 && i % 4 == 0 {
                p[0] = 1;
                p[1] = 1;
                p[2] = if i % 8 == 0 {
                    6
                } else {
                    (rng.next() as u8) | 0x10
                };
                p[236..240].copy_from_slice(&wire::MAGIC_COOKIE);
                if p.len() > 243 {
                    p[240..243].copy_from_slice(&[53, 1, 1 + (rng.below(8) as u8)]);
                }
            }
            p
        } else {
            // A real packet with a few bytes flipped, cut or extended.
            let mut p = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(p.len());
                p[at] = rng.next() as u8;
            }
            match rng.below(4) {
                0 => p.truncate(rng.below(p.len() + 1)),
                1 => p.extend((0..rng.below(300)).map(|_| rng.next() as u8)),
                _ => {}
            }
            p
        };
        match wire::decode(&p) {
            Ok(_) => decoded += 1,
            Err(DropReason::DecodePanic) => panics += 1,
            Err(_) => {}
        }
        // And the whole handler path (pool, policy, encoder) on every accepted packet.
        if i % 10 == 1 {
            let _ = answer_batch(&mut h, &[&p], NOW);
        }
    }
    assert_eq!(
        panics, 0,
        "our guards must stop everything dhcproto would panic on"
    );
    assert!(
        decoded > 1000,
        "the mutation half must reach the full decoder (decoded {decoded})"
    );
}

#[test]
fn decode_refuses_each_malformation_by_name() {
    let good = testpackets::bytes(testpackets::OVMF_DISCOVER);
    assert!(wire::decode(&good).is_ok());

    let mut p = good.clone();
    p[2] = 17; // hlen > 16: dhcproto's chaddr() would panic
    assert_eq!(wire::decode(&p), Err(DropReason::BadHardware));
    p[2] = 255;
    assert_eq!(wire::decode(&p), Err(DropReason::BadHardware));

    for cut in [0, 1, 100, 239] {
        assert_eq!(wire::decode(&good[..cut]), Err(DropReason::TooShort));
    }
    // Cut inside an option: its length byte overflows the packet.
    assert_eq!(wire::decode(&good[..260]), Err(DropReason::BadOption));

    let mut p = good.clone();
    p[236..240].copy_from_slice(&[0, 0, 0, 0]);
    assert_eq!(wire::decode(&p), Err(DropReason::BadCookie));

    // A 1,500-byte option blob (six 250-byte vendor options, split per RFC 3396) is fine...
    let mut big = Packet::new(msg::DISCOVER, [2, 0, 0, 0, 0, 1])
        .xid(1)
        .bytes();
    big.pop();
    for _ in 0..6 {
        big.push(opt::VENDOR_SPECIFIC);
        big.push(250);
        big.extend(std::iter::repeat_n(0x41, 250));
    }
    big.push(255);
    let m = wire::decode(&big).expect("big but well-formed");
    assert_eq!(m.msg_type, MessageType::Discover);
    // ...and one whose last option claims more than is there is not.
    let n = big.len();
    big[n - 252] = 255;
    big.truncate(n - 10);
    assert_eq!(wire::decode(&big), Err(DropReason::BadOption));
}

// ---------------------------------------------------------------- handler over a real pool

#[test]
fn full_exchange_discover_request_renew_inform_release() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), (100, 200), 3600);
    let mut h = handler(&cfg);
    let mac = [0x02, 0xaa, 0, 0, 0, 1];
    let prl: &[u8] = &[1, 28, 3, 15, 6, 12, 26];

    // DISCOVER → OFFER, unicast to yiaddr at chaddr (no broadcast bit).
    let offer = one(
        &mut h,
        &Packet::new(msg::DISCOVER, mac)
            .xid(7)
            .option(55, prl)
            .option(12, b"guest1")
            .bytes(),
    )
    .unwrap();
    assert_eq!(offer.reply.msg_type, MessageType::Offer);
    let ip = offer.reply.yiaddr;
    assert!((100..=200).contains(&ip.octets()[3]), "{ip}");
    assert_eq!(
        offer.dest,
        Destination::Link {
            ip,
            mac: mac.into()
        }
    );
    assert!(!offer.needs_flush);
    let (bytes, o) = raw(&offer);
    assert_eq!(&bytes[4..8], &7u32.to_be_bytes());
    assert_eq!(o.ip(opt::SERVER_ID), Some(SERVER));
    assert_eq!(
        o.ip(opt::SUBNET_MASK),
        Some(Ipv4Addr::new(255, 255, 255, 0))
    );
    assert_eq!(o.ip(opt::ROUTER), Some(SERVER));
    assert_eq!(
        o.ip(opt::BROADCAST_ADDR),
        Some(Ipv4Addr::new(10, 77, 0, 255))
    );
    assert_eq!(o.get(opt::DNS), Some(&[10, 77, 0, 1, 9, 9, 9, 9][..]));
    assert_eq!(o.get(opt::DOMAIN_NAME), Some(&b"lab.test"[..]));
    assert_eq!(o.get(opt::MTU), Some(&1400u16.to_be_bytes()[..]));
    assert_eq!(o.u32(opt::LEASE_TIME), Some(3600));
    assert_eq!(o.u32(opt::RENEWAL_T1), Some(1800));
    assert_eq!(o.u32(opt::REBINDING_T2), Some(3150));
    assert_eq!(
        o.get(opt::HOSTNAME),
        None,
        "only static hosts are given a name"
    );
    assert_eq!(
        o.get(opt::BOOTFILE_NAME),
        None,
        "a plain client gets no boot file"
    );
    assert_eq!(
        &bytes[20..24],
        &[0, 0, 0, 0],
        "no next-server without a boot file"
    );
    // The optional options follow the parameter request list's order: 28 before 15 before 6.
    let pos = |code: u8| {
        offer
            .reply
            .options
            .iter()
            .position(|(c, _)| *c == code)
            .unwrap()
    };
    assert!(
        pos(opt::BROADCAST_ADDR) < pos(opt::DOMAIN_NAME) && pos(opt::DOMAIN_NAME) < pos(opt::DNS)
    );

    // REQUEST for another server's offer: silence.
    let other = Packet::new(msg::REQUEST, mac)
        .xid(8)
        .option(54, &[10, 77, 0, 2])
        .option(50, &ip.octets())
        .bytes();
    assert!(one(&mut h, &other).is_none());

    // SELECTING REQUEST → ACK, durable before it is handed out.
    let req = Packet::new(msg::REQUEST, mac)
        .xid(9)
        .option(54, &SERVER.octets())
        .option(50, &ip.octets())
        .option(12, b"guest1")
        .bytes();
    let ack = one(&mut h, &req).unwrap();
    assert_eq!(ack.reply.msg_type, MessageType::Ack);
    assert_eq!(ack.reply.yiaddr, ip);
    assert!(ack.needs_flush);
    assert_eq!(ack.event.as_ref().map(|e| e.what), Some("ack"));
    let reread = Pool::open(pool_config(&cfg)).unwrap();
    let durable = reread.leases_at(NOW);
    assert_eq!(durable.len(), 1, "the ACKed lease is in the journal");
    assert_eq!(
        (
            durable[0].mac,
            durable[0].ip,
            durable[0].hostname.as_deref()
        ),
        (pxe::config::Mac::from(mac), ip, Some("guest1"))
    );
    drop(reread);

    // RENEWING: ciaddr set, no 50/54 → ACK straight to ciaddr at chaddr.
    let renew = one(
        &mut h,
        &Packet::new(msg::REQUEST, mac).xid(10).ciaddr(ip).bytes(),
    )
    .unwrap();
    assert_eq!(renew.reply.msg_type, MessageType::Ack);
    assert_eq!(
        renew.dest,
        Destination::Link {
            ip,
            mac: mac.into()
        }
    );
    assert_eq!(renew.reply.ciaddr, ip);

    // INFORM: configuration only.
    let inform = one(
        &mut h,
        &Packet::new(msg::INFORM, mac).xid(11).ciaddr(ip).bytes(),
    )
    .unwrap();
    assert_eq!(inform.reply.msg_type, MessageType::Ack);
    assert_eq!(inform.reply.yiaddr, NO_IP);
    assert!(!inform.needs_flush);
    let (_, o) = raw(&inform);
    assert_eq!(o.get(opt::LEASE_TIME), None);
    assert_eq!(o.ip(opt::ROUTER), Some(SERVER));

    // INIT-REBOOT into a foreign network → NAK, broadcast.
    let reboot = Packet::new(msg::REQUEST, mac)
        .xid(12)
        .option(50, &[192, 168, 1, 5])
        .bytes();
    let nak = one(&mut h, &reboot).unwrap();
    assert_eq!(nak.reply.msg_type, MessageType::Nak);
    assert_eq!(nak.dest, Destination::Broadcast);
    assert_eq!(nak.reply.yiaddr, NO_IP);

    // RELEASE → the lease is gone, durably.
    assert!(one(
        &mut h,
        &Packet::new(msg::RELEASE, mac)
            .xid(13)
            .ciaddr(ip)
            .option(54, &SERVER.octets())
            .bytes()
    )
    .is_none());
    assert!(h
        .pool()
        .leases_at(NOW)
        .expect("the journal answers")
        .is_empty());
    assert!(Pool::open(pool_config(&cfg))
        .unwrap()
        .leases_at(NOW)
        .is_empty());

    let s = h.stats().snapshot();
    assert_eq!(
        (s.offers, s.acks, s.naks, s.informs, s.releases),
        (1, 2, 1, 1, 1)
    );
    assert_eq!(s.flush_errors, 0);
}

#[test]
fn static_host_gets_its_address_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(&config(dir.path(), (100, 200), 3600));
    let offer = one(
        &mut h,
        &Packet::new(msg::DISCOVER, BASTION_MAC)
            .xid(1)
            .broadcast()
            .option(50, &[10, 77, 0, 150])
            .bytes(),
    )
    .unwrap();
    assert_eq!(offer.reply.yiaddr, BASTION_IP);
    assert_eq!(offer.dest, Destination::Broadcast, "broadcast bit set");
    assert_eq!(raw(&offer).1.get(opt::HOSTNAME), Some(&b"bastion"[..]));
    // Someone else asking for the reserved address is refused.
    let thief = Packet::new(msg::REQUEST, [2, 0, 0, 0, 0, 9])
        .xid(2)
        .option(50, &[10, 77, 0, 10])
        .bytes();
    assert_eq!(
        one(&mut h, &thief).unwrap().reply.msg_type,
        MessageType::Nak
    );
}

#[test]
fn boot_replies_per_real_firmware_packet() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(&config(dir.path(), (100, 200), 3600));

    // OVMF's EDK2 PXE: file in header and 67, next-server, PXEClient + 43 (6 = 8), UUID echoed.
    let ovmf = testpackets::bytes(testpackets::OVMF_DISCOVER);
    let o = one(&mut h, &ovmf).unwrap();
    let (bytes, opts) = raw(&o);
    assert_eq!(opts.file, b"ipxe.efi");
    assert_eq!(opts.get(opt::BOOTFILE_NAME), Some(&b"ipxe.efi"[..]));
    assert_eq!(opts.siaddr, SERVER, "siaddr");
    assert_eq!(opts.get(opt::TFTP_SERVER_NAME), Some(&b"10.77.0.1"[..]));
    assert_eq!(opts.get(opt::VENDOR_CLASS), Some(&b"PXEClient"[..]));
    assert_eq!(opts.get(opt::VENDOR_SPECIFIC), Some(&[6, 1, 8, 255][..]));
    let sent_uuid = wire::decode(&ovmf).unwrap().client_uuid.unwrap();
    assert_eq!(opts.get(opt::CLIENT_UUID), Some(&sent_uuid[..]));
    assert_eq!(
        o.dest,
        Destination::Broadcast,
        "OVMF sets the broadcast bit"
    );
    // OVMF's option 57 (1472) is honoured.
    assert!(bytes.len() <= 1472 - 28);

    // iPXE NIC ROM: the script over HTTP, no PXEClient, never a binary.
    let o = one(&mut h, &testpackets::bytes(testpackets::IPXE_ROM_DISCOVER)).unwrap();
    let (_, opts) = raw(&o);
    assert_eq!(
        opts.get(opt::BOOTFILE_NAME),
        Some(&b"http://10.77.0.1:8069/boot.ipxe"[..])
    );
    assert_eq!(opts.file, b"http://10.77.0.1:8069/boot.ipxe");
    assert_eq!(opts.get(opt::VENDOR_CLASS), None);

    // UEFI HTTP boot: HTTPClient + URL.
    let o = one(&mut h, &testpackets::bytes(testpackets::HTTP_DISCOVER)).unwrap();
    let (_, opts) = raw(&o);
    assert_eq!(opts.get(opt::VENDOR_CLASS), Some(&b"HTTPClient"[..]));
    assert_eq!(
        opts.get(opt::BOOTFILE_NAME),
        Some(&b"http://10.77.0.1:8069/ipxe.efi"[..])
    );

    // An OS client: address only.
    let o = one(&mut h, &testpackets::bytes(testpackets::DHCLIENT_DISCOVER)).unwrap();
    let (_, opts) = raw(&o);
    assert_eq!(opts.get(opt::BOOTFILE_NAME), None);
    assert_eq!(opts.get(opt::VENDOR_CLASS), None);
    assert_eq!(opts.file, b"");
}

#[test]
fn decline_quarantines_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(&config(dir.path(), (100, 200), 3600));
    let mac = [2, 0, 0, 0, 0, 0x33];
    let ip = one(&mut h, &Packet::new(msg::DISCOVER, mac).xid(1).bytes())
        .unwrap()
        .reply
        .yiaddr;
    let req = Packet::new(msg::REQUEST, mac)
        .xid(2)
        .option(54, &SERVER.octets())
        .option(50, &ip.octets())
        .bytes();
    assert_eq!(one(&mut h, &req).unwrap().reply.msg_type, MessageType::Ack);
    let decline = Packet::new(msg::DECLINE, mac)
        .xid(3)
        .option(54, &SERVER.octets())
        .option(50, &ip.octets())
        .bytes();
    assert!(one(&mut h, &decline).is_none());
    assert_eq!(h.stats().snapshot().declines, 1);
    for (i, m) in [mac, [2, 0, 0, 0, 0, 0x34]].into_iter().enumerate() {
        let again = one(
            &mut h,
            &Packet::new(msg::DISCOVER, m).xid(10 + i as u32).bytes(),
        )
        .unwrap();
        assert_ne!(
            again.reply.yiaddr, ip,
            "a declined address is not offered again"
        );
    }
}

#[test]
fn exhausted_pool_is_silent_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(&config(dir.path(), (100, 101), 3600));
    let mut offered = vec![];
    for i in 0..3u8 {
        let p = Packet::new(msg::DISCOVER, [2, 0, 0, 0, 1, i])
            .xid(i as u32)
            .bytes();
        offered.push(one(&mut h, &p).map(|o| o.reply.yiaddr));
    }
    assert_eq!(
        offered,
        vec![
            Some(Ipv4Addr::new(10, 77, 0, 100)),
            Some(Ipv4Addr::new(10, 77, 0, 101)),
            None
        ]
    );
    assert_eq!(h.stats().snapshot().exhausted, 1);
}

#[test]
fn malformed_and_stateless_requests_are_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(&config(dir.path(), (100, 200), 3600));
    let mut hlen = Packet::new(msg::DISCOVER, [2; 6]).xid(1).bytes();
    hlen[2] = 20;
    let stateless = Packet::new(msg::REQUEST, [2; 6]).xid(2).bytes();
    let out = answer_batch(&mut h, &[&hlen, &stateless, &[1, 2, 3]], NOW);
    assert!(out.is_empty());
    let s = h.stats().snapshot();
    assert_eq!(s.received, 3);
    assert_eq!(s.dropped_malformed.get("bad_hardware"), Some(&1));
    assert_eq!(s.dropped_malformed.get("bad_request_state"), Some(&1));
    assert_eq!(s.dropped_malformed.get("too_short"), Some(&1));
    serde_json::to_string(&s).unwrap();
}

/// The journal cannot grow (RLIMIT_FSIZE, in a child process so the limit touches nothing
/// else): the batch's ACK is withheld and counted, the OFFER in the same batch still goes out,
/// and the client's retry is ACKed once writes work again.
#[test]
fn flush_failure_withholds_the_batch_acks() {
    const CHILD: &str = "PXE_DHCP_TEST_FSIZE_CHILD";
    if std::env::var_os(CHILD).is_some() {
        flush_failure_child();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "flush_failure_withholds_the_batch_acks",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("FLUSH-CHILD-OK"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn flush_failure_child() {
    // SAFETY: ignoring SIGXFSZ so an oversized write fails with EFBIG instead of killing us.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), (100, 200), 3600);
    let mut h = handler(&cfg);
    let mac = [2, 0, 0, 0, 0, 0x44];
    let ip = one(&mut h, &Packet::new(msg::DISCOVER, mac).xid(1).bytes())
        .unwrap()
        .reply
        .yiaddr;
    let size = std::fs::metadata(&cfg.lease_file).unwrap().len();
    let set_limit = |soft: u64| {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: plain setrlimit with a valid struct.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) }, 0);
    };
    set_limit(size);
    let req = Packet::new(msg::REQUEST, mac)
        .xid(2)
        .option(54, &SERVER.octets())
        .option(50, &ip.octets())
        .bytes();
    let other = Packet::new(msg::DISCOVER, [2, 0, 0, 0, 0, 0x45])
        .xid(3)
        .bytes();
    let out = answer_batch(&mut h, &[&req, &other], NOW);
    set_limit(libc::RLIM_INFINITY);
    assert_eq!(
        out.iter().map(|o| o.reply.msg_type).collect::<Vec<_>>(),
        vec![MessageType::Offer]
    );
    let s = h.stats().snapshot();
    assert_eq!((s.flush_errors, s.acks_withheld), (1, 1));
    assert!(
        Pool::open(pool_config(&cfg))
            .unwrap()
            .leases_at(NOW)
            .is_empty(),
        "nothing durable"
    );
    let retry = one(&mut h, &req).unwrap();
    assert_eq!(
        (retry.reply.msg_type, retry.reply.yiaddr),
        (MessageType::Ack, ip)
    );
    assert_eq!(
        Pool::open(pool_config(&cfg)).unwrap().leases_at(NOW).len(),
        1
    );
    println!("FLUSH-CHILD-OK");
}

// ---------------------------------------------------------------- real sockets in namespaces
// (The real DHCP clients, busybox udhcpc and ISC dhclient, are in one suite against the whole
// agent: tests/tests/dhcp_clients.rs.)

/// RFC 1071 sum, written independently of the server's.
fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[test]
fn broadcast_reply_arrives_with_complete_udp_checksum() {
    let lab = Lab::new("ck");
    let mac = parse_mac(&lab.cli.mac("eth0")).expect("eth0's MAC");
    let discover = Packet::new(msg::DISCOVER, mac)
        .xid(0x0bad_cafe)
        .broadcast()
        .bytes();
    let frame = lab.cli.enter(move || -> Vec<u8> {
        // Packet socket on the client's NIC: sees the frame exactly as it arrived.
        // SAFETY: socket(2) + bind(2) with a zeroed, filled sockaddr_ll.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            )
        };
        assert!(fd >= 0);
        // SAFETY: if_nametoindex(3) with a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) } as i32;
        // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex;
        assert_eq!(
            // SAFETY: bind(2) with a filled sockaddr_ll and its size.
            unsafe {
                libc::bind(
                    fd,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            },
            0
        );
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: setsockopt(2) with a live timeval and its size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                16,
            )
        };

        let udp = client_socket("eth0", 68, true).expect("client socket");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 2048];
        let mut last_send = Instant::now() - Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "no OFFER arrived");
            if last_send.elapsed() > Duration::from_secs(2) {
                udp.send_to(&discover, (Ipv4Addr::BROADCAST, 67)).unwrap();
                last_send = Instant::now();
            }
            // SAFETY: recv(2) into a buffer of the given length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            let f = &buf[..n as usize];
            // IPv4/UDP 67 → 68 carrying our xid.
            if f.len() > 14 + 20 + 8 + 8
                && f[12..14] == [8, 0]
                && f[23] == 17
                && f[34..38] == [0, 67, 0, 68]
                && f[46..50] == 0x0bad_cafeu32.to_be_bytes()
            {
                // SAFETY: close(2) on the packet socket opened above, used no more.
                unsafe { libc::close(fd) };
                return f.to_vec();
            }
        }
    });
    assert_eq!(&frame[0..6], &[0xff; 6], "Ethernet broadcast");
    let ip = &frame[14..34];
    assert_eq!(&ip[16..20], &[255, 255, 255, 255]);
    assert_eq!(&ip[12..16], &SERVER.octets());
    assert_eq!(ones_complement_sum(ip), 0xffff, "IPv4 header checksum");
    let udp = &frame[34..14 + u16::from_be_bytes([ip[2], ip[3]]) as usize];
    assert_ne!(&udp[6..8], &[0, 0], "UDP checksum present");
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(udp);
    assert_eq!(
        ones_complement_sum(&pseudo),
        0xffff,
        "UDP checksum complete and valid"
    );
    let reply = Reply::parse(&udp[8..]).expect("a DHCP message");
    assert_eq!(reply.op, BOOTREPLY);
    assert_eq!(reply.msg_type(), Some(msg::OFFER));
    assert_eq!(lab.server().stats().snapshot().offers, 1);
}

#[test]
fn relayed_messages_go_back_to_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(&config(dir.path(), (100, 200), 3600));
    let relay = Ipv4Addr::new(10, 77, 0, 254);
    let p = Packet::new(msg::DISCOVER, [2, 0, 0, 0, 0, 0x55])
        .xid(1)
        .giaddr(relay)
        .bytes();
    let offer = one(&mut h, &p).unwrap();
    assert_eq!(offer.dest, Destination::Relay(relay));
    assert_eq!(offer.reply.giaddr, relay);
    // A NAK through a relay asks it to broadcast.
    let p = Packet::new(msg::REQUEST, [2, 0, 0, 0, 0, 0x55])
        .xid(2)
        .giaddr(relay)
        .option(50, &[192, 168, 9, 9])
        .bytes();
    let nak = one(&mut h, &p).unwrap();
    assert_eq!(
        (nak.reply.msg_type, nak.dest, nak.reply.broadcast),
        (MessageType::Nak, Destination::Relay(relay), true)
    );
}

/// A burst that arrives while a batch syncs must queue, not drop: the DHCP socket's receive
/// buffer is forced past net.core.rmem_max.
#[test]
fn the_dhcp_socket_queues_more_than_rmem_max_allows() {
    let lab = Lab::new("rb");
    let rmem_max: u64 = lab
        .srv
        .ok(&["cat", "/proc/sys/net/core/rmem_max"])
        .trim()
        .parse()
        .expect("rmem_max");
    let wanted = pxe::dhcp::server::RECV_QUEUE_BYTES as u64;
    assert!(
        rmem_max < wanted,
        "rmem_max {rmem_max} would not cap the ask: the test proves nothing"
    );
    let ss = lab.srv.ok(&["ss", "-lunmH", "sport = :67"]);
    let rb: u64 = ss
        .split("rb")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no receive buffer size in `ss` output: {ss}"));
    // The kernel doubles the asked size for its bookkeeping.
    assert_eq!(rb, 2 * wanted, "receive buffer: {ss}");
}
