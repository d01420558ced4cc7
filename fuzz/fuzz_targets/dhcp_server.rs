//! DHCP end to end, without sockets: every packet of the input goes through
//! `pxe::dhcp::server::answer_batch` (decode → classify → pool allocation → boot policy) on a
//! fresh pool over a real journal, every reply is encoded, and then:
//! - an encoded reply respects the client's option 57 (≥ 576) and the 300-byte BOOTP minimum and
//!   our own option walk reads it back;
//! - a lease ACK carries an address of the subnet, and a reservation's address only to its owner;
//! - no address is leased to two clients;
//! - replaying the journal (what a restart does) gives exactly the leases the pool has in memory.
#![no_main]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use hostagent_fuzz::{dhcp_config, frames, scratch_dir, RESERVED_IN_RANGE, RESERVED_OUTSIDE};
use libfuzzer_sys::fuzz_target;
use pxe::config::ProxyConfig;
use pxe::dhcp::pool::Pool;
use pxe::dhcp::proxy::{ProxyHandler, Via};
use pxe::dhcp::server::handler::Handler;
use pxe::dhcp::server::{answer_batch, pool_config, DhcpStats};
use pxe::dhcp::wire::{self, MessageType, RawOptions, ReplyMessage, HEADER_LEN};

/// Encode `reply`, check what every reply must hold, and return its options.
fn check_encoded(request: &[u8], reply: &ReplyMessage, mms: u16) -> RawOptions {
    let bytes = wire::encode(reply, mms);
    let limit = usize::from(mms.max(wire::MIN_MAX_MESSAGE_SIZE)) - 28;
    assert!(
        bytes.len() <= limit.max(300),
        "reply of {} bytes over option 57 = {mms}",
        bytes.len()
    );
    assert!(bytes.len() >= 300, "reply shorter than a BOOTP message");
    assert_eq!(&bytes[236..240], &wire::MAGIC_COOKIE);
    let opts = RawOptions::parse(&bytes[HEADER_LEN..]).expect("our own reply must parse");
    assert_eq!(
        opts.get(wire::opt::MESSAGE_TYPE),
        Some(&[reply.msg_type as u8][..])
    );
    // RFC 3046: the relay's option 82, byte for byte, last; left out only when it alone would
    // not fit the size limit (found by fuzzing: several concatenated instances).
    let asked = wire::decode(request).ok().and_then(|m| m.relay_info);
    let echoed = opts.get(wire::opt::RELAY_AGENT_INFO);
    match (&asked, echoed) {
        (Some(a), Some(e)) => assert_eq!(a.as_slice(), e),
        (Some(a), None) => {
            let encoded = a.len() + 2 * a.len().div_ceil(255).max(1);
            assert!(
                HEADER_LEN + 3 + encoded >= limit,
                "option 82 of {} bytes left out although it fits",
                a.len()
            );
        }
        (None, e) => assert_eq!(e, None, "option 82 nobody sent"),
    }
    if let Some(info) = asked.filter(|i| i.len() <= 255) {
        let end = bytes
            .iter()
            .rposition(|&b| b == wire::opt::END)
            .expect("END");
        let last = [&[wire::opt::RELAY_AGENT_INFO, info.len() as u8][..], &info].concat();
        assert!(
            bytes[..end].ends_with(&last),
            "option 82 is not the last option"
        );
    }
    opts
}

/// A boot root whose files carry (or lack) iPXE's signatures, so the chain rule's content check
/// runs on every iPXE request.
fn boot_root(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("boot");
    let _ = std::fs::create_dir_all(&root);
    for (name, body) in [
        ("undionly.kpxe", &b"\xea\x05 PXE->EB: !PXE"[..]),
        ("ipxe.efi", b"MZ iPXE http://ipxe.org/cfg"),
        ("custom.kpxe", b"PXE->EB:"),
        ("pxelinux.0", b"PXELINUX 6.04"),
    ] {
        let _ = std::fs::write(root.join(name), body);
    }
    root
}

/// Start of the fuzz clock (unix seconds); inputs move it forward.
const EPOCH: u64 = 1_800_000_000;

/// Finding, fixed in wire.rs (split fixed-width options are now refused; the inputs are kept in
/// fuzz/artifacts-keep/ and replayed by run-smoke.sh): an option that dhcproto reads at a
/// fixed width (94, 152–155) repeated NON-adjacently passes wire.rs's length check, which looks
/// at the RFC 3396 concatenation, while dhcproto decodes each instance alone and debug_asserts.
/// wire.rs catches that panic (DecodePanic drop), but libFuzzer aborts on any panic. With
/// `HOSTAGENT_FUZZ_TOLERATE_DHCPROTO_PANIC=1` panics raised inside dhcproto are left to that
/// catch_unwind, so fuzzing can go on past this finding; everything else still aborts.
fn tolerate_caught_dhcproto_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("HOSTAGENT_FUZZ_TOLERATE_DHCPROTO_PANIC").as_deref() != Ok("1") {
            return;
        }
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_dhcproto = info
                .location()
                .is_some_and(|l| l.file().contains("/dhcproto-"));
            if !in_dhcproto {
                abort_hook(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    tolerate_caught_dhcproto_panics();
    // One journal path per process, truncated for every input: results depend on the input only.
    thread_local! {
        static DIR: std::path::PathBuf = scratch_dir("dhcp");
    }
    let journal = DIR.with(|d| d.join("fuzz.journal"));
    let root = DIR.with(|d| boot_root(d));
    let _ = std::fs::remove_file(&journal);
    let mut cfg = dhcp_config(journal);
    if let Some(b) = cfg.boot.as_mut() {
        b.root = root;
    }
    let pool = Pool::open(pool_config(&cfg)).expect("open an empty journal");
    let subnet = cfg.subnet;
    let mut handler = Handler::new(cfg.clone(), pool, Arc::new(DhcpStats::default()));
    let mut proxy = ProxyHandler::new(
        ProxyConfig {
            network: cfg.network.clone(),
            interface: cfg.interface.clone(),
            server_ip: cfg.server_ip,
            boot: cfg.boot.clone().expect("the fuzz network boots"),
            hosts: cfg.hosts.clone(),
        },
        Arc::new(DhcpStats::default()),
    );

    let mut now = EPOCH;
    let packets = frames(data);
    for frame in &packets {
        now += frame.advance;
        let via = if (frame.advance / 8) % 2 == 1 {
            Via::BootServer {
                from: std::net::SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 150), 4011),
            }
        } else {
            Via::Dhcp
        };
        if let Some(out) = proxy.handle_packet(frame.bytes, via) {
            let opts = check_encoded(frame.bytes, &out.reply, out.max_message_size);
            assert_eq!(
                out.reply.yiaddr,
                Ipv4Addr::UNSPECIFIED,
                "a proxy offered an address"
            );
            assert_eq!(
                opts.get(wire::opt::LEASE_TIME),
                None,
                "a proxy reply with a lease"
            );
            assert!(!out.needs_flush, "a proxy reply waiting for a lease write");
        }
        for out in answer_batch(&mut handler, &[frame.bytes], now) {
            check_encoded(frame.bytes, &out.reply, out.max_message_size);

            let yiaddr = out.reply.yiaddr;
            if matches!(out.reply.msg_type, MessageType::Offer) || out.needs_flush {
                assert!(
                    subnet.contains(&yiaddr),
                    "{yiaddr} offered/leased outside {subnet}"
                );
                assert_ne!(yiaddr, cfg.server_ip, "the server's own address handed out");
                for (mac, ip) in [RESERVED_IN_RANGE, RESERVED_OUTSIDE] {
                    if yiaddr == ip {
                        assert_eq!(
                            out.reply.chaddr, mac,
                            "reserved {ip} handed to another client"
                        );
                    }
                    if out.reply.chaddr == mac {
                        assert_eq!(yiaddr, ip, "a reserved client got another address");
                    }
                }
            }
        }
    }
    assert_eq!(
        handler
            .stats()
            .received
            .load(std::sync::atomic::Ordering::Relaxed),
        packets.len() as u64
    );

    let leases = handler
        .pool()
        .leases_at(now)
        .expect("the journal's leases are in memory: reading them cannot fail");
    let mut holder: HashMap<Ipv4Addr, pxe::config::Mac> = HashMap::new();
    for l in &leases {
        if let Some(other) = holder.insert(l.ip, l.mac) {
            panic!("{} leased to {:?} and {:?}", l.ip, other, l.mac);
        }
    }

    // A restart replays the journal: it must rebuild exactly what the pool had.
    assert!(
        !handler.pool().has_pending(),
        "answer_batch leaves nothing unflushed"
    );
    drop(handler);
    let replayed = Pool::open(pool_config(&cfg)).expect("reopen the journal we wrote");
    assert_eq!(
        replayed.leases_at(now),
        leases,
        "journal replay differs from memory"
    );
});
