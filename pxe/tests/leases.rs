//! The lease store and pool against their promises: allocation rules, durability across restarts,
//! torn and corrupt journals, kill -9 during group commit, a full disk, compaction.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pxe::config::Mac;
use pxe::dhcp::pool::{Lease, Nak, Pool, PoolConfig, DECLINE_QUARANTINE_SECS, OFFER_HOLD_SECS};
use pxe::leases::{LeaseError, LeaseStore, Record};

const T0: u64 = 1_800_000_000;
const LEASE_SECS: u64 = 3600;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 9, 0, last)
}

fn mac(n: u16) -> Mac {
    Mac([0x52, 0x54, 0, 0, (n >> 8) as u8, n as u8])
}

/// 10.9.0.0/24, server .1, dynamic .10–.19, one reservation (mac 900 → .50, outside the range)
/// and one inside the range (mac 901 → .12).
fn config(journal: &Path) -> PoolConfig {
    PoolConfig {
        network: "test".into(),
        server_ip: ip(1),
        subnet: "10.9.0.0/24".parse().unwrap(),
        range_start: ip(10),
        range_end: ip(19),
        lease_time: Duration::from_secs(LEASE_SECS),
        reservations: vec![(mac(900), ip(50)), (mac(901), ip(12))],
        journal: journal.to_path_buf(),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    journal: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("state/test.leases");
    Fixture { _dir: dir, journal }
}

fn open(journal: &Path) -> Pool {
    Pool::open(config(journal)).unwrap()
}

/// DISCOVER + REQUEST of the offered address, flushed: what a 4-way exchange does.
fn lease(pool: &mut Pool, m: Mac, now: u64) -> Lease {
    let offered = pool.offer(m, None, now).expect("offer");
    let lease = pool.request(m, offered, None, now).expect("ack");
    pool.flush().unwrap();
    lease
}

// ---------------------------------------------------------------- allocation rules

#[test]
fn offers_lowest_free_address_first() {
    let f = fixture();
    let mut pool = open(&f.journal);
    assert_eq!(pool.offer(mac(1), None, T0), Some(ip(10)));
    assert_eq!(
        pool.offer(mac(2), None, T0),
        Some(ip(11)),
        "offer held for mac 1 is skipped"
    );
    // .12 is reserved for mac 901
    assert_eq!(pool.offer(mac(3), None, T0), Some(ip(13)));
}

#[test]
fn reservation_goes_to_its_owner_and_nobody_else() {
    let f = fixture();
    let mut pool = open(&f.journal);
    assert_eq!(pool.offer(mac(900), None, T0), Some(ip(50)));
    assert_eq!(pool.offer(mac(901), Some(ip(15)), T0), Some(ip(12)));
    let l = pool.request(mac(900), ip(50), Some("fixed"), T0).unwrap();
    assert_eq!((l.ip, l.hostname.as_deref()), (ip(50), Some("fixed")));
    for n in 1..=8 {
        let got = pool.offer(mac(n), Some(ip(12)), T0).unwrap();
        assert_ne!(got, ip(12), "reserved address offered to a stranger");
        assert_ne!(got, ip(50));
    }
    assert_eq!(
        pool.request(mac(1), ip(12), None, T0),
        Err(Nak::Reserved(ip(12)))
    );
    assert_eq!(
        pool.request(mac(1), ip(50), None, T0),
        Err(Nak::Reserved(ip(50)))
    );
    assert_eq!(
        pool.request(mac(901), ip(17), None, T0),
        Err(Nak::NotItsReservation {
            requested: ip(17),
            reserved: ip(12)
        })
    );
}

#[test]
fn requested_address_is_offered_when_free_and_in_range() {
    let f = fixture();
    let mut pool = open(&f.journal);
    assert_eq!(pool.offer(mac(1), Some(ip(17)), T0), Some(ip(17)));
    // outside the range, the server's own, and another's hold: ignored, lowest free instead
    assert_eq!(pool.offer(mac(2), Some(ip(100)), T0), Some(ip(10)));
    assert_eq!(pool.offer(mac(3), Some(ip(1)), T0), Some(ip(11)));
    assert_eq!(pool.offer(mac(4), Some(ip(17)), T0), Some(ip(13)));
}

#[test]
fn client_gets_its_previous_address_back_even_after_expiry() {
    let f = fixture();
    let mut pool = open(&f.journal);
    lease(&mut pool, mac(1), T0);
    let second = lease(&mut pool, mac(2), T0);
    assert_eq!(second.ip, ip(11));
    let later = T0 + 10 * LEASE_SECS; // both expired long ago
    assert_eq!(
        pool.offer(mac(2), Some(ip(15)), later),
        Some(ip(11)),
        "previous lease wins over the requested one"
    );
}

#[test]
fn never_used_addresses_go_before_expired_leases_of_others() {
    let f = fixture();
    let mut pool = open(&f.journal);
    let old = lease(&mut pool, mac(1), T0);
    let later = T0 + 2 * LEASE_SECS;
    let fresh = pool.offer(mac(2), None, later).unwrap();
    assert_ne!(
        fresh, old.ip,
        "expired address reused while never-used ones remain"
    );
    assert!(pool.request(mac(2), fresh, None, later).is_ok());
}

#[test]
fn expired_leases_are_reused_oldest_first_when_nothing_else_is_left() {
    let f = fixture();
    let mut pool = open(&f.journal);
    // 9 dynamic addresses (.10–.19 minus reserved .12); lease them at increasing times
    let mut by_time = Vec::new();
    for n in 1..=9u16 {
        by_time.push(lease(&mut pool, mac(n), T0 + n as u64).ip);
    }
    assert_eq!(
        pool.offer(mac(100), None, T0 + 10),
        None,
        "all leased and unexpired"
    );
    let after = T0 + 10 + LEASE_SECS; // all expired
    assert_eq!(pool.offer(mac(100), None, after), Some(by_time[0]));
    assert_eq!(pool.offer(mac(101), None, after), Some(by_time[1]));
    let l = pool.request(mac(100), by_time[0], None, after).unwrap();
    assert_eq!(l.mac, mac(100));
    assert!(
        pool.lease_for(mac(1)).is_none(),
        "the old holder's lease is gone"
    );
}

#[test]
fn exhausted_pool_offers_nothing() {
    let f = fixture();
    let mut pool = open(&f.journal);
    let mut got = std::collections::HashSet::new();
    for n in 1..=9u16 {
        assert!(got.insert(lease(&mut pool, mac(n), T0).ip));
    }
    assert_eq!(pool.offer(mac(50), None, T0), None);
    assert_eq!(pool.offer(mac(51), Some(ip(10)), T0), None);
    assert_eq!(
        pool.request(mac(50), ip(10), None, T0),
        Err(Nak::Taken(ip(10)))
    );
    assert_eq!(pool.stats(T0).free, 0);
}

#[test]
fn offer_is_held_for_its_client_then_lapses() {
    let f = fixture();
    let mut pool = open(&f.journal);
    assert_eq!(pool.offer(mac(1), None, T0), Some(ip(10)));
    assert_eq!(
        pool.offer(mac(1), None, T0 + 1),
        Some(ip(10)),
        "repeated DISCOVER, same offer"
    );
    assert_eq!(
        pool.request(mac(2), ip(10), None, T0 + 2),
        Err(Nak::Taken(ip(10)))
    );
    assert_eq!(pool.stats(T0 + 2).offered, 1);
    let lapsed = T0 + 1 + OFFER_HOLD_SECS;
    assert_eq!(
        pool.offer(mac(2), None, lapsed),
        Some(ip(10)),
        "lapsed offer is free again"
    );
}

#[test]
fn requests_for_taken_or_foreign_addresses_are_naked() {
    let f = fixture();
    let mut pool = open(&f.journal);
    let a = lease(&mut pool, mac(1), T0);
    assert_eq!(
        pool.request(mac(2), a.ip, None, T0 + 5),
        Err(Nak::Taken(a.ip))
    );
    assert_eq!(
        pool.request(mac(2), Ipv4Addr::new(192, 168, 1, 5), None, T0),
        Err(Nak::WrongNetwork(Ipv4Addr::new(192, 168, 1, 5)))
    );
    assert_eq!(
        pool.request(mac(2), ip(255), None, T0),
        Err(Nak::WrongNetwork(ip(255)))
    );
    assert_eq!(
        pool.request(mac(2), ip(100), None, T0),
        Err(Nak::OutOfRange(ip(100)))
    );
    assert_eq!(
        pool.request(mac(2), ip(1), None, T0),
        Err(Nak::Taken(ip(1)))
    );
    // once the lease has expired another client may ask for it by name (INIT-REBOOT)
    assert!(pool.request(mac(2), a.ip, None, a.expires).is_ok());
}

#[test]
fn renewal_keeps_the_address_and_extends_it() {
    let f = fixture();
    let mut pool = open(&f.journal);
    let first = pool.request(mac(1), ip(14), Some("web"), T0).unwrap();
    pool.flush().unwrap();
    let renewed = pool.request(mac(1), ip(14), None, T0 + 1800).unwrap();
    pool.flush().unwrap();
    assert_eq!(renewed.ip, first.ip);
    assert_eq!(renewed.expires, T0 + 1800 + LEASE_SECS);
    assert_eq!(
        renewed.hostname.as_deref(),
        Some("web"),
        "hostname kept when the renewal omits it"
    );
    assert_eq!(pool.offer(mac(1), None, T0 + 1900), Some(ip(14)));
}

#[test]
fn leases_survive_close_and_reopen() {
    let f = fixture();
    let mut pool = open(&f.journal);
    let a = lease(&mut pool, mac(1), T0);
    let b = pool.request(mac(2), ip(18), Some("db"), T0).unwrap();
    pool.flush().unwrap();
    drop(pool);

    let mut pool = open(&f.journal);
    assert_eq!(pool.lease_for(mac(1)), Some(a.clone()));
    assert_eq!(pool.lease_for(mac(2)), Some(b.clone()));
    assert_eq!(pool.leases_at(T0), vec![a.clone(), b.clone()]);
    assert_eq!(
        pool.offer(mac(1), None, T0 + 10),
        Some(a.ip),
        "same address after restart"
    );
    assert_eq!(
        pool.request(mac(3), b.ip, None, T0 + 10),
        Err(Nak::Taken(b.ip))
    );
    assert_ne!(pool.offer(mac(3), None, T0 + 10), Some(b.ip));
}

#[test]
fn release_frees_the_address_durably() {
    let f = fixture();
    let mut pool = open(&f.journal);
    let a = lease(&mut pool, mac(1), T0);
    assert!(
        !pool.release(mac(2), a.ip),
        "release by a stranger is ignored"
    );
    assert!(pool.release(mac(1), a.ip));
    pool.flush().unwrap();
    drop(pool);
    let mut pool = open(&f.journal);
    assert_eq!(pool.lease_for(mac(1)), None);
    assert_eq!(pool.offer(mac(2), None, T0 + 1), Some(a.ip));
}

#[test]
fn declined_address_is_quarantined_durably() {
    let f = fixture();
    let mut pool = open(&f.journal);
    let a = lease(&mut pool, mac(1), T0);
    assert!(
        !pool.decline(mac(2), a.ip, T0),
        "decline by a stranger is ignored"
    );
    assert!(
        !pool.decline(mac(2), ip(15), T0),
        "decline of an address never offered to it is ignored"
    );
    assert!(pool.decline(mac(1), a.ip, T0));
    pool.flush().unwrap();
    assert_eq!(pool.lease_for(mac(1)), None);
    drop(pool);

    let mut pool = open(&f.journal);
    assert_eq!(pool.stats(T0).quarantined, 1);
    assert_ne!(
        pool.offer(mac(1), None, T0 + 1),
        Some(a.ip),
        "quarantined address offered again"
    );
    assert_eq!(
        pool.request(mac(3), a.ip, None, T0 + 1),
        Err(Nak::Taken(a.ip))
    );
    let over = T0 + DECLINE_QUARANTINE_SECS;
    assert_eq!(
        pool.offer(mac(4), Some(a.ip), over),
        Some(a.ip),
        "quarantine lifted after its time"
    );
}

#[test]
fn large_range_hands_out_every_address_once() {
    let f = fixture();
    let mut cfg = config(&f.journal);
    cfg.subnet = "10.20.0.0/16".parse().unwrap();
    cfg.server_ip = Ipv4Addr::new(10, 20, 0, 1);
    cfg.range_start = Ipv4Addr::new(10, 20, 0, 2);
    cfg.range_end = Ipv4Addr::new(10, 20, 255, 254);
    cfg.reservations = vec![(Mac([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 20, 100, 100))];
    let size = 65_533 - 1; // the range minus the reservation
    let mut pool = Pool::open(cfg.clone()).unwrap();
    let mut seen = std::collections::HashSet::new();
    for n in 0..size as u32 {
        let m = Mac([0x52, 0x54, 1, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
        let offered = pool.offer(m, None, T0).expect("range not exhausted yet");
        assert!(seen.insert(offered), "{offered} handed out twice");
        pool.request(m, offered, None, T0).unwrap();
        if n % 64 == 63 {
            pool.flush().unwrap();
        }
    }
    pool.flush().unwrap();
    assert!(!seen.contains(&Ipv4Addr::new(10, 20, 100, 100)));
    assert_eq!(pool.offer(Mac([0x52, 0x54, 9, 9, 9, 9]), None, T0), None);
    drop(pool);
    let pool = Pool::open(cfg).unwrap();
    assert_eq!(pool.leases_at(T0).len(), size);
}

// ---------------------------------------------------------------- journal files

#[test]
fn journal_directory_and_file_are_private() {
    let f = fixture();
    drop(open(&f.journal));
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&f.journal), 0o600);
    assert_eq!(mode(f.journal.parent().unwrap()), 0o700);
}

#[test]
fn foreign_file_is_refused_not_overwritten() {
    let f = fixture();
    fs::create_dir_all(f.journal.parent().unwrap()).unwrap();
    fs::write(&f.journal, b"# some config file\nkey = value\n").unwrap();
    let err = Pool::open(config(&f.journal))
        .err()
        .expect("opened a foreign file");
    assert!(matches!(err, LeaseError::NotAJournal { .. }), "{err}");
    assert!(err.to_string().contains(&f.journal.display().to_string()));
    assert_eq!(
        fs::read(&f.journal).unwrap(),
        b"# some config file\nkey = value\n"
    );
}

/// A journal with one flush per record; returns its bytes and the length after each record.
fn journal_with_boundaries(path: &Path) -> (Vec<u8>, Vec<u64>, Vec<Record>) {
    let records = vec![
        Record::Lease(Lease {
            mac: mac(1),
            ip: ip(10),
            expires: T0 + 10,
            hostname: Some("alpha".into()),
            client_id: None,
            agent: None,
        }),
        Record::Lease(Lease {
            mac: mac(2),
            ip: ip(11),
            expires: T0 + 20,
            hostname: None,
            client_id: None,
            agent: None,
        }),
        Record::Lease(Lease {
            mac: mac(1),
            ip: ip(10),
            expires: T0 + 30,
            hostname: Some("alpha".into()),
            client_id: None,
            agent: None,
        }),
        Record::Decline {
            ip: ip(13),
            until: T0 + 600,
        },
        Record::Release {
            mac: mac(2),
            ip: ip(11),
        },
        Record::Lease(Lease {
            mac: mac(3),
            ip: ip(11),
            expires: T0 + 40,
            hostname: Some("γάμμα".into()),
            client_id: None,
            agent: None,
        }),
    ];
    let (mut store, _) = LeaseStore::open(path).unwrap();
    let mut bounds = vec![store.journal_len()];
    for r in &records {
        store.stage(r.clone());
        store.flush().unwrap();
        bounds.push(store.journal_len());
    }
    drop(store);
    (fs::read(path).unwrap(), bounds, records)
}

/// The index after replaying `records`, as a comparable list.
fn state_of(store: &LeaseStore) -> (Vec<Lease>, Vec<(Ipv4Addr, u64)>) {
    let mut leases: Vec<Lease> = store.index().leases().cloned().collect();
    leases.sort_by_key(|l| l.ip);
    let mut q: Vec<_> = store.index().quarantined().collect();
    q.sort();
    (leases, q)
}

fn expected_state(records: &[Record]) -> (Vec<Lease>, Vec<(Ipv4Addr, u64)>) {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LeaseStore::open(&dir.path().join("j")).unwrap();
    for r in records {
        store.stage(r.clone());
    }
    state_of(&store)
}

#[test]
fn journal_cut_at_every_byte_loads_exactly_the_complete_records() {
    let f = fixture();
    let (bytes, bounds, records) = journal_with_boundaries(&f.journal);
    let header = bounds[0] as usize;
    for cut in 0..=bytes.len() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.leases");
        fs::write(&path, &bytes[..cut]).unwrap();
        let (mut store, report) =
            LeaseStore::open(&path).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let complete = bounds
            .iter()
            .skip(1)
            .filter(|b| **b as usize <= cut)
            .count();
        assert_eq!(report.records, complete, "cut at {cut}");
        assert_eq!(
            state_of(&store),
            expected_state(&records[..complete]),
            "cut at {cut}"
        );
        let valid = if cut < header {
            header
        } else {
            bounds[complete] as usize
        };
        assert_eq!(
            fs::metadata(&path).unwrap().len() as usize,
            valid,
            "cut at {cut}: torn tail not removed"
        );
        let dropped = if cut < header { cut } else { cut - valid };
        assert_eq!(report.dropped_bytes as usize, dropped, "cut at {cut}");
        // appends after the repair are found on the next open
        store.stage(Record::Lease(Lease {
            mac: mac(77),
            ip: ip(19),
            expires: T0,
            hostname: None,
            client_id: None,
            agent: None,
        }));
        store.flush().unwrap();
        drop(store);
        let (store, _) = LeaseStore::open(&path).unwrap();
        assert!(
            store.index().by_mac(&mac(77)).is_some(),
            "cut at {cut}: append after repair lost"
        );
    }
}

#[test]
fn corrupt_byte_loads_the_prefix_before_it() {
    let f = fixture();
    let (bytes, bounds, records) = journal_with_boundaries(&f.journal);
    // flip one byte inside the 4th record (its payload)
    let at = bounds[3] as usize + 10;
    let mut bad = bytes.clone();
    bad[at] ^= 0x40;
    fs::write(&f.journal, &bad).unwrap();
    let (store, report) = LeaseStore::open(&f.journal).unwrap();
    assert_eq!(report.records, 3);
    assert_eq!(report.dropped_bytes, bytes.len() as u64 - bounds[3]);
    assert!(report.corruption.is_some());
    assert_eq!(state_of(&store), expected_state(&records[..3]));
    let saved = fs::read(format!("{}.dropped", f.journal.display())).unwrap();
    assert_eq!(
        saved,
        bad[bounds[3] as usize..],
        "dropped tail kept for a post-mortem"
    );
}

#[test]
fn compaction_keeps_every_live_lease_and_quarantine() {
    let f = fixture();
    let mut pool = open(&f.journal);
    for round in 0..200u64 {
        for n in 1..=5u16 {
            let l = lease(&mut pool, mac(n), T0 + round);
            assert_eq!(
                pool.request(mac(n), l.ip, None, T0 + round).map(|l| l.ip),
                Ok(l.ip)
            );
        }
    }
    let declined = lease(&mut pool, mac(6), T0 + 300);
    assert!(pool.decline(mac(6), declined.ip, T0 + 300));
    pool.flush().unwrap();
    let before = pool.journal_len();
    let leases_before = pool.leases_at(T0);
    pool.compact().unwrap();
    assert!(
        pool.journal_len() < before / 50,
        "{} -> {}",
        before,
        pool.journal_len()
    );
    assert_eq!(pool.leases_at(T0), leases_before);
    drop(pool);
    let mut pool = open(&f.journal);
    assert_eq!(pool.leases_at(T0), leases_before);
    assert_eq!(pool.stats(T0 + 300).quarantined, 1);
    assert_eq!(
        pool.request(mac(7), declined.ip, None, T0 + 301),
        Err(Nak::Taken(declined.ip))
    );
}

#[test]
fn stale_compaction_file_is_ignored_and_nothing_is_lost() {
    let f = fixture();
    let mut pool = open(&f.journal);
    let a = lease(&mut pool, mac(1), T0);
    let b = lease(&mut pool, mac(2), T0);
    drop(pool);
    // A compaction killed before its rename leaves a partial .tmp next to a complete journal.
    let tmp = PathBuf::from(format!("{}.tmp", f.journal.display()));
    let journal = fs::read(&f.journal).unwrap();
    fs::write(&tmp, &journal[..journal.len() - 7]).unwrap();
    let pool = open(&f.journal);
    assert_eq!(pool.leases_at(T0), vec![a, b]);
    assert!(!tmp.exists(), "stale .tmp left behind");
}

// ---------------------------------------------------------------- kill -9

const CHILD_ENV: &str = "PXE_LEASE_CRASH_WRITER";
const CHILD_MACS: u16 = 150;

/// The child side of `acked_leases_survive_kill_9`: grants leases in batches, prints each only
/// after the flush that made it durable returned Ok (that is when the server would send the ACK).
#[test]
#[ignore = "run by acked_leases_survive_kill_9 as a child process"]
fn crash_writer_child() {
    let Ok(journal) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round: u64 = std::env::var("PXE_LEASE_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let mut cfg = config(Path::new(&journal));
    cfg.range_end = ip(250);
    let mut pool = Pool::open(cfg).unwrap();
    // compact every few hundred records, so kills also land inside compactions
    pool.set_compaction_min_bytes(4096);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n: u64 = round * 7919;
    while Instant::now() < deadline {
        let now = T0 + round * 100_000 + n / 50; // never goes backwards
        let mut batch = Vec::new();
        let mut releases = Vec::new();
        for _ in 0..(1 + n % 8) {
            n += 1;
            let m = mac((n * 37 % CHILD_MACS as u64) as u16);
            // (a release of a lease granted earlier in the same batch would follow its ACK)
            if n.is_multiple_of(13) && batch.iter().all(|l: &Lease| l.mac != m) {
                if let Some(l) = pool.lease_for(m) {
                    // announce before staging: from here on the parent no longer relies on it
                    println!("@REL {:?}", m);
                    pool.release(m, l.ip);
                    releases.push(m);
                }
                continue;
            }
            let offered = pool.offer(m, None, now).expect("range big enough");
            if let Ok(l) = pool.request(m, offered, None, now) {
                batch.push(l);
            }
        }
        let before = pool.journal_len();
        pool.flush().unwrap();
        if pool.journal_len() < before {
            println!("@COMPACTED");
        }
        for l in batch {
            println!("@ACK {:?} {} {}", l.mac, l.ip, l.expires);
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn acked_leases_survive_kill_9() {
    let f = fixture();
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed | 1);
    // mac -> (ip, expires) of its last ACK; None while a release of it may be durable
    let mut acked: HashMap<String, Option<(Ipv4Addr, u64)>> = HashMap::new();
    let mut total_acks = 0;
    let mut compactions = 0;
    let mut history = Vec::new();
    for round in 0..8u64 {
        let mut child = Command::new(&exe)
            .args([
                "crash_writer_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &f.journal)
            .env("PXE_LEASE_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if line.ends_with('\n') {
                    lines.push(line.trim_end().to_string());
                }
                line.clear();
            }
            lines
        });
        std::thread::sleep(Duration::from_millis(20 + rng.next() % 300));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        for line in &lines {
            history.push(format!("round {round}: {line}"));
            // libtest may print "test crash_writer_child ... " in front of the first line
            let event = |tag: &str| line.find(tag).map(|i| &line[i + tag.len()..]);
            if let Some(rest) = event("@ACK ") {
                let (m, rest) = rest.split_at(rest.find(')').unwrap() + 1);
                let mut it = rest.split_whitespace();
                let ip: Ipv4Addr = it.next().unwrap().parse().unwrap();
                let expires: u64 = it.next().unwrap().parse().unwrap();
                acked.insert(m.to_string(), Some((ip, expires)));
                total_acks += 1;
            } else if event("@COMPACTED").is_some() {
                compactions += 1;
            } else if let Some(m) = event("@REL ") {
                acked.insert(m.to_string(), None);
            }
        }

        let (store, _) = LeaseStore::open(&f.journal).unwrap();
        let mut owner: HashMap<Ipv4Addr, String> = HashMap::new();
        for (m, state) in &acked {
            let Some((ip, expires)) = state else { continue };
            let got = store
                .index()
                .leases()
                .find(|l| format!("{:?}", l.mac) == *m);
            let got = got.unwrap_or_else(|| {
                let seen: Vec<_> = history.iter().filter(|h| h.contains(m.as_str())).collect();
                panic!("round {round}: ACKed lease of {m} lost; its history: {seen:#?}")
            });
            assert_eq!(got.ip, *ip, "round {round}: {m} moved");
            assert!(
                got.expires >= *expires,
                "round {round}: {m} lease shortened"
            );
            if let Some(other) = owner.insert(*ip, m.clone()) {
                panic!("round {round}: {ip} ACKed to {other} and {m}");
            }
        }
    }
    eprintln!("{total_acks} ACKs, {compactions} compactions seen over the kills");
    assert!(
        total_acks > 100,
        "the writer barely ran ({total_acks} ACKs): the test proves nothing"
    );
    assert!(compactions > 0, "no compaction happened under the kills");
}

// ---------------------------------------------------------------- full disk

/// A 64 KiB tmpfs on a temp dir of ours, unmounted on drop.
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    fn mount() -> TinyFs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount(8)");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN)"
        );
        TinyFs { dir }
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn full_disk_fails_the_flush_clearly_and_leaves_no_half_record() {
    let fs_ = TinyFs::mount();
    let journal = fs_.dir.path().join("net.leases");
    let mut pool = open(&journal);
    let durable = lease(&mut pool, mac(1), T0);
    // fill the filesystem to the last byte
    let filler = fs_.dir.path().join("filler");
    let mut fill = fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        use std::io::Write;
        if let Err(e) = fill.write_all(&chunk).and_then(|_| fill.flush()) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
            break;
        }
    }
    // a batch big enough to need a new page
    let len_before = fs::metadata(&journal).unwrap().len();
    let mut staged = Vec::new();
    for n in 2..=9u16 {
        let offered = pool.offer(mac(n), None, T0).unwrap();
        staged.push(
            pool.request(mac(n), offered, Some(&"h".repeat(200)), T0)
                .unwrap(),
        );
    }
    for _ in 0..20 {
        pool.request(mac(2), staged[0].ip, Some(&"h".repeat(200)), T0)
            .unwrap();
    }
    let err = pool.flush().expect_err("flush on a full disk succeeded");
    assert!(err.is_disk_full(), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("disk full") && msg.contains("ENOSPC"), "{msg}");
    assert!(msg.contains(&journal.display().to_string()), "{msg}");
    assert!(msg.contains("free space"), "no hint in: {msg}");
    assert_eq!(
        fs::metadata(&journal).unwrap().len(),
        len_before,
        "failed batch left bytes behind"
    );
    // the failed batch's addresses stay reserved in memory: nobody else is offered them
    for n in 20..=21u16 {
        if let Some(got) = pool.offer(mac(n), None, T0) {
            assert!(staged.iter().all(|l| l.ip != got), "{got} promised twice");
        }
    }

    // make room: the next batch goes through, and a reopen sees no trace of the failed one
    drop(fill);
    fs::remove_file(&filler).unwrap();
    // the client of the failed batch retries its REQUEST and this time gets a durable lease
    let retried = pool
        .request(staged[1].mac, staged[1].ip, None, T0 + 1)
        .unwrap();
    pool.flush().unwrap();
    drop(pool);
    let (store, report) = LeaseStore::open(&journal).unwrap();
    assert_eq!(report.dropped_bytes, 0);
    assert_eq!(store.index().by_mac(&mac(1)), Some(&durable));
    assert_eq!(store.index().by_mac(&retried.mac), Some(&retried));
    for l in staged.iter().filter(|l| l.mac != retried.mac) {
        assert!(
            store.index().by_mac(&l.mac).is_none(),
            "un-ACKed lease of {:?} became durable",
            l.mac
        );
    }
}

#[test]
fn random_garbage_after_a_valid_header_never_panics() {
    let f = fixture();
    let (bytes, bounds, _) = journal_with_boundaries(&f.journal);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..2000 {
        // a valid prefix of random length, then random bytes
        let keep = bounds[(rng.next() % bounds.len() as u64) as usize] as usize;
        let mut data = bytes[..keep].to_vec();
        for _ in 0..rng.next() % 300 {
            data.push(rng.next() as u8);
        }
        if round % 2 == 0 {
            // make some garbage look like a frame with a plausible length
            if let Some(b) = data.get_mut(keep) {
                *b = 20;
            }
        }
        fs::write(&f.journal, &data).unwrap();
        let (_, report) = LeaseStore::open(&f.journal).unwrap();
        let complete = bounds
            .iter()
            .skip(1)
            .filter(|b| **b as usize <= keep)
            .count();
        assert!(
            report.records >= complete,
            "round {round}: lost valid records"
        );
    }
}
