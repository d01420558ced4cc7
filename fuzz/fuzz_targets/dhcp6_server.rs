//! DHCPv6 end to end, without sockets: every packet of the input goes through
//! `pxe::dhcp6::server::answer_batch` (guard → dhcproto decode → handler → pool → encode) on a
//! fresh pool over a real v6 journal, and then:
//! - every reply decodes again with dhcproto and echoes the transaction id;
//! - an address handed out with a non-zero lifetime is in the range or a static host's, and a
//!   static host's only to its owner;
//! - no address is bound to two clients;
//! - replaying the journal (what a restart does) gives exactly the leases the pool has in memory;
//! - the input itself, read as a v6 journal (with a header put before it), replays without a
//!   panic, and the file-backed store agrees with the in-memory replay.
#![no_main]

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v6::{DhcpOption, Message, OptionCode};
use dhcproto::{Decodable, Decoder};
use hostagent_fuzz::{frames, scratch_dir};
use libfuzzer_sys::fuzz_target;
use pxe::config::{Dhcp6Config, Host6Id, StaticHost6};
use pxe::dhcp6::handler::Handler6;
use pxe::dhcp6::pool::Pool6;
use pxe::dhcp6::server::answer_batch;
use pxe::dhcp6::stats::Dhcp6Stats;
use pxe::leases::v6::{journal_bytes, replay_bytes, Duid, Lease6Store};

const START: u64 = 1_800_000_000;
const FIRST: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x122, 0, 0, 0, 0, 0, 0x100);
const LAST: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x122, 0, 0, 0, 0, 0, 0x10f);
const STATIC: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x122, 0, 0, 0, 0, 0, 0x10);

fn static_duid() -> Duid {
    Duid::parse("00:03:00:01:52:54:00:00:00:10").expect("duid")
}

fn config(dir: &std::path::Path) -> Dhcp6Config {
    Dhcp6Config {
        network: "fuzz".into(),
        interface: "br0".into(),
        server: "fd00:122::1/64".parse().expect("net"),
        range: Some((FIRST, LAST)),
        lease_time: Duration::from_secs(600),
        rapid_commit: true,
        dns: vec!["fd00:122::1".parse().expect("ip")],
        domain_search: vec!["lab".into()],
        hosts: vec![StaticHost6 {
            id: Host6Id::Duid(static_duid()),
            ip: STATIC,
            name: Some("fixed".into()),
        }],
        boot: Some(pxe::config::BootConfig {
            root: dir.join("boot"),
            bios: Some("undionly.kpxe".into()),
            uefi: Some("ipxe.efi".into()),
            arm64: None,
            script: Some("boot.ipxe".into()),
            http_port: Some(8069),
            pxelinux: Default::default(),
        }),
        lease_file: dir.join("fuzz.v6.journal"),
        duid_file: dir.join("server-duid"),
    }
}

fn server_duid() -> Duid {
    Duid::parse("00:04:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10").expect("duid")
}

fuzz_target!(|data: &[u8]| {
    // The input as a journal body.
    let mut journal = journal_bytes(&[]);
    journal.extend_from_slice(data);
    let replayed = replay_bytes(&journal);
    let dir = scratch_dir("dhcp6");
    let path = dir.join("replay.v6.journal");
    std::fs::write(&path, &journal).expect("write");
    if let Ok((store, report)) = Lease6Store::open(&path) {
        assert_eq!(report.records, replayed.len());
        assert!(store.index().leases().count() <= replayed.len());
    }

    // The input as packets.
    let cfg = config(&dir);
    let _ = std::fs::remove_file(&cfg.lease_file);
    let (pool, _) = Pool6::open(&cfg).expect("pool");
    let mut handler = Handler6::new(
        cfg.clone(),
        pool,
        server_duid(),
        Arc::new(Dhcp6Stats::default()),
    );
    let mut now = START;
    for (i, frame) in frames(data).into_iter().enumerate() {
        now += frame.advance;
        let from = SocketAddrV6::new(
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe00, (i % 3) as u16),
            546,
            0,
            2,
        );
        for reply in answer_batch(&mut handler, &[(frame.bytes, from)], now) {
            let m = Message::decode(&mut Decoder::new(&reply.bytes)).expect("our reply decodes");
            assert_eq!(&m.xid()[..], &frame.bytes[1..4]);
            let client = match m.opts().get(OptionCode::ClientId) {
                Some(DhcpOption::ClientId(id)) => Duid::new(id),
                _ => None,
            };
            for ia in m.opts().get_all(OptionCode::IANA).unwrap_or_default() {
                let DhcpOption::IANA(ia) = ia else { continue };
                for a in ia.opts.get_all(OptionCode::IAAddr).unwrap_or_default() {
                    let DhcpOption::IAAddr(a) = a else { continue };
                    if a.valid_life == 0 {
                        continue;
                    }
                    let in_range =
                        (u128::from(FIRST)..=u128::from(LAST)).contains(&u128::from(a.addr));
                    assert!(in_range || a.addr == STATIC, "{} handed out", a.addr);
                    if a.addr == STATIC {
                        assert_eq!(
                            client.as_ref(),
                            Some(&static_duid()),
                            "static address to a stranger"
                        );
                    }
                }
            }
        }
    }
    let leases = handler.pool().leases_at(now);
    let mut holders = HashMap::new();
    for l in &leases {
        assert!(
            holders.insert(l.ip, l.binding()).is_none(),
            "{} bound twice",
            l.ip
        );
    }
    let (reopened, _) = Pool6::open(&cfg).expect("reopen");
    let mut again = reopened.leases_at(now);
    let mut mem = leases;
    again.sort_by_key(|l| (l.ip, l.iaid));
    mem.sort_by_key(|l| (l.ip, l.iaid));
    assert_eq!(again, mem, "the journal replays to what the pool holds");
    let _ = std::fs::remove_dir_all(&dir);
});
