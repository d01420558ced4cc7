//! The SQL layer against a private PostgreSQL cluster (started by each test, unix socket only):
//! migrations from an empty database and from version 1, two agents racing for the last free
//! address, shared reservations and quarantine, renewals at any agent, the database going away
//! and coming back.

use std::net::Ipv4Addr;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use leasedb::schema::{self, Migrated};
use leasedb::{Database, DbConfig, PgStore};
use pxe::config::{DhcpConfig, Mac, StaticHost};
use pxe::dhcp::pool::{Client, Nak};
use pxe::dhcp::store::LeaseBackend;
use testkit::PgCluster;

const NOW: u64 = 1_800_000_000;
const DB: &str = "hostagent";

fn cluster() -> PgCluster {
    let pg = PgCluster::start();
    pg.create_db(DB);
    pg
}

fn db(pg: &PgCluster, agent: &str) -> Arc<Database> {
    let mut cfg = DbConfig::new(&pg.url(DB), agent);
    cfg.connect_timeout = Duration::from_secs(1);
    Database::open(cfg).expect("open the pool")
}

/// Network `name`: 10.90.0.0/24, server .1, dynamic .`first`–.`last`, 1 h leases.
fn net(name: &str, first: u8, last: u8, hosts: &[(Mac, Ipv4Addr)]) -> DhcpConfig {
    DhcpConfig {
        network: name.into(),
        interface: "br0".into(),
        server_ip: Ipv4Addr::new(10, 90, 0, 1),
        subnet: "10.90.0.0/24".parse().expect("subnet"),
        range_start: Ipv4Addr::new(10, 90, 0, first),
        range_end: Ipv4Addr::new(10, 90, 0, last),
        lease_time: Duration::from_secs(3600),
        router: None,
        dns: Vec::new(),
        domain: None,
        mtu: None,
        ntp: Vec::new(),
        routes: Vec::new(),
        hosts: hosts
            .iter()
            .map(|(mac, ip)| StaticHost {
                mac: *mac,
                ip: *ip,
                name: None,
                boot: None,
                script: None,
            })
            .collect(),
        boot: None,
        lease_file: "/nonexistent".into(),
    }
}

fn mac(n: u32) -> Mac {
    let b = n.to_be_bytes();
    Mac([2, 0x44, b[0], b[1], b[2], b[3]])
}

fn client(n: u32) -> Client {
    Client::from(mac(n))
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 90, 0, last)
}

/// DISCOVER then REQUEST for `c`, each its own committed batch, as a server does it.
fn lease(s: &mut PgStore, c: &Client, now: u64) -> Option<Ipv4Addr> {
    let offered = s.offer(c, None, now).expect("offer");
    s.commit().expect("commit the offer");
    let ip = offered?;
    let granted = s.request(c, ip, None, now).expect("request");
    s.commit().expect("commit the lease");
    Some(granted.expect("the offered address is granted").ip)
}

#[test]
fn an_empty_database_gets_the_current_schema_and_a_second_run_changes_nothing() {
    let pg = cluster();
    let d = db(&pg, "a");
    assert_eq!(d.migrate().expect("migrate"), schema::VERSION);
    let rows = pg.psql(
        DB,
        "SELECT version, applied_by FROM hostagent.schema_migrations ORDER BY version",
    );
    let expected: Vec<String> = schema::MIGRATIONS
        .iter()
        .map(|m| format!("{}|a", m.version))
        .collect();
    assert_eq!(rows.lines().collect::<Vec<_>>(), expected);
    for table in ["hostagent.lease4", "hostagent.reservation4"] {
        assert_eq!(
            pg.psql(DB, &format!("SELECT to_regclass('{table}') IS NOT NULL")),
            "t\n"
        );
    }
    // Another agent, and the same one again: nothing more is applied.
    let mut c = postgres::Client::connect(&pg.url(DB), postgres::NoTls).expect("connect");
    assert_eq!(
        schema::migrate(&mut c, "b").expect("again"),
        Migrated {
            from: schema::VERSION,
            to: schema::VERSION
        }
    );
    assert_eq!(
        pg.psql(DB, "SELECT count(*) FROM hostagent.schema_migrations"),
        format!("{}\n", schema::MIGRATIONS.len())
    );
}

#[test]
fn a_version_1_database_is_migrated_with_its_leases_and_then_notifies_changes() {
    let pg = cluster();
    let mut c = postgres::Client::connect(&pg.url(DB), postgres::NoTls).expect("connect");
    assert_eq!(
        schema::migrate_to(&mut c, "old", 1).expect("v1"),
        Migrated { from: 0, to: 1 }
    );
    // What an agent of version 1 wrote: a network's rows and one lease.
    pg.psql(
        DB,
        "SELECT hostagent.prepare4('lab', '10.90.0.100', '10.90.0.110');
         SELECT o_outcome FROM hostagent.request4('lab', '\\x01024400000007', '02:44:00:00:00:07',
             NULL, '10.90.0.105', 'old-guest', 1800000000, 1800003600,
             '10.90.0.100', '10.90.0.110', '10.90.0.1', 'old');",
    );
    assert_eq!(
        pg.psql(DB, "SELECT to_regproc('hostagent.notify_lease4') IS NULL"),
        "t\n",
        "version 1 has no notify trigger"
    );

    let d = db(&pg, "a");
    let s = PgStore::new(d, &net("lab", 100, 110, &[]));
    assert_eq!(
        pg.psql(DB, "SELECT max(version) FROM hostagent.schema_migrations"),
        format!("{}\n", schema::VERSION)
    );
    let kept = s
        .lease_for(&client(7))
        .expect("read")
        .expect("the old lease");
    assert_eq!(
        (
            kept.ip,
            kept.hostname.as_deref(),
            kept.agent.as_deref(),
            kept.expires
        ),
        (ip(105), Some("old-guest"), Some("old"), NOW + 3600)
    );

    // Version 2's trigger, with version 3's payload: a lease change reaches a listener, naming
    // the network and the session that made it.
    let mut listener = postgres::Client::connect(&pg.url(DB), postgres::NoTls).expect("connect");
    listener
        .batch_execute("LISTEN hostagent_lease4")
        .expect("listen");
    pg.psql(
        DB,
        "SELECT hostagent.release4('lab', '\\x01024400000007', '10.90.0.105', 'a')",
    );
    use postgres::fallible_iterator::FallibleIterator;
    let note = listener
        .notifications()
        .timeout_iter(Duration::from_secs(5))
        .next()
        .expect("notification stream")
        .expect("a notification within 5 s");
    assert_eq!(note.payload(), "lab\npsql");
}

/// The lease watch's copy of the bound leases: this agent's own grants, releases and declines
/// reach it as they commit, with no read of the table; a change it did not make (a hand edit,
/// another agent's lease) is notified, and the table is read again.
#[test]
fn the_watched_leases_follow_own_commits_unread_and_other_changes_by_notification() {
    let pg = cluster();
    let mut a = PgStore::new(db(&pg, "a"), &net("lab", 20, 40, &[]));
    let first = lease(&mut a, &client(1), NOW).expect("lease");
    // A hand edit seen in the watch proves the listener is connected (its connect counts as a
    // change, as changes may have been missed before it).
    pg.psql(
        DB,
        &format!("UPDATE hostagent.lease4 SET hostname = 'by-hand' WHERE ip = '{first}'"),
    );
    let hostname_of = |a: &PgStore, ip: Ipv4Addr| {
        a.watched_leases(NOW)
            .expect("watched leases")
            .into_iter()
            .find(|l| l.ip == ip)
            .and_then(|l| l.hostname)
    };
    assert!(
        testkit::wait_for(5, || (hostname_of(&a, first).as_deref() == Some("by-hand"))
            .then_some(()))
        .is_some(),
        "a hand edit reaches the watch"
    );
    let reads = a.mirror_reads();

    let more: Vec<Ipv4Addr> = (2..=4)
        .map(|n| lease(&mut a, &client(n), NOW).expect("lease"))
        .collect();
    assert!(a.release(&client(2), more[0]).expect("release"));
    a.commit().expect("commit the release");
    assert!(a.decline(&client(3), more[1], NOW).expect("decline"));
    a.commit().expect("commit the decline");
    // This agent's own notifications arrive meanwhile: they must not cost a read.
    std::thread::sleep(Duration::from_millis(500));
    let ips = |leases: Vec<pxe::dhcp::pool::Lease>| -> Vec<Ipv4Addr> {
        leases.iter().map(|l| l.ip).collect()
    };
    let watched = ips(a.watched_leases(NOW).expect("watched"));
    let fresh = ips(a.leases_at(NOW).expect("read"));
    assert_eq!(watched, vec![first, more[2]]);
    assert_eq!(watched, fresh, "the copy is what the table holds");
    assert_eq!(
        a.mirror_reads(),
        reads + 1,
        "own commits applied to the copy; only leases_at read the table"
    );

    // Another agent's lease: notified, read, shown with its agent.
    let mut b = PgStore::new(db(&pg, "b"), &net("lab", 20, 40, &[]));
    let theirs = lease(&mut b, &client(9), NOW).expect("b's lease");
    let seen = testkit::wait_for(5, || {
        a.watched_leases(NOW)
            .expect("watched")
            .into_iter()
            .find(|l| l.ip == theirs)
    })
    .expect("b's lease reaches a's watch");
    assert_eq!(seen.agent.as_deref(), Some("b"));
}

#[test]
fn a_schema_newer_than_this_agent_is_refused_with_what_to_do() {
    let pg = cluster();
    db(&pg, "a").migrate().expect("migrate");
    pg.psql(
        DB,
        "INSERT INTO hostagent.schema_migrations (version, description, applied_by) \
         VALUES (99, 'from the future', 'new')",
    );
    let d = db(&pg, "b");
    let err = d.migrate().expect_err("a newer schema").to_string();
    assert!(
        err.contains("version 99") && err.contains("upgrade"),
        "{err}"
    );
}

/// Two agents, one address left: whatever the interleaving, one client gets it and the other
/// is told the pool is exhausted; then both ask for it directly, and one is refused.
#[test]
fn two_agents_racing_for_the_last_free_address_never_share_it() {
    let pg = cluster();
    let (da, db_) = (db(&pg, "a"), db(&pg, "b"));
    for round in 0..12u32 {
        let name = format!("race{round}");
        let stores = [
            PgStore::new(da.clone(), &net(&name, 50, 50, &[])),
            PgStore::new(db_.clone(), &net(&name, 50, 50, &[])),
        ];
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = stores
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let c = client(1000 * round + i as u32);
                    barrier.wait();
                    let offered = s.offer(&c, None, NOW).expect("offer");
                    s.commit().expect("commit");
                    (s, c, offered)
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("racer"))
            .collect();
        let offered: Vec<_> = results.iter().filter_map(|(_, _, o)| *o).collect();
        assert_eq!(
            offered,
            vec![ip(50)],
            "round {round}: exactly one agent offers the last address"
        );

        // Both clients REQUEST it at once (INIT-REBOOT style, no offer needed): one lease.
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = results
            .into_iter()
            .map(|(mut s, c, _)| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let r = s.request(&c, ip(50), None, NOW).expect("request");
                    s.commit().expect("commit");
                    (c, r)
                })
            })
            .collect();
        let granted: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("requester"))
            .collect();
        let acks: Vec<_> = granted.iter().filter(|(_, r)| r.is_ok()).collect();
        assert_eq!(acks.len(), 1, "round {round}: {granted:?}");
        assert!(
            granted
                .iter()
                .any(|(_, r)| matches!(r, Err(Nak::Taken(a)) if *a == ip(50))),
            "round {round}: the other is refused: {granted:?}"
        );
        let holder = pg.psql(
            DB,
            &format!(
                "SELECT mac FROM hostagent.lease4 WHERE network = '{name}' AND ip = '10.90.0.50'"
            ),
        );
        assert_eq!(holder.trim(), acks[0].0.mac.to_string());
    }
}

/// Four connections (two agents, two threads each) allocate 160 clients from a 200-address pool
/// at once, in batches of eight: every ACK is a different address, and the database agrees.
#[test]
fn concurrent_batches_of_two_agents_hand_out_unique_addresses() {
    let pg = cluster();
    let (da, db_) = (db(&pg, "a"), db(&pg, "b"));
    let workers: Vec<_> = (0..4u32)
        .map(|w| {
            let d = if w % 2 == 0 { da.clone() } else { db_.clone() };
            std::thread::spawn(move || {
                let mut s = PgStore::new(d, &net("lab", 20, 219, &[]));
                let mut acked = Vec::new();
                for batch in 0..5u32 {
                    let clients: Vec<Client> =
                        (0..8).map(|i| client(w * 100 + batch * 8 + i)).collect();
                    let offers: Vec<_> = clients
                        .iter()
                        .map(|c| s.offer(c, None, NOW).expect("offer"))
                        .collect();
                    s.commit().expect("commit offers");
                    for (c, o) in clients.iter().zip(offers) {
                        let ip = o.expect("the pool has room");
                        match s.request(c, ip, None, NOW).expect("request") {
                            Ok(l) => acked.push((c.mac, l.ip)),
                            Err(nak) => panic!("{} was offered {ip} and refused: {nak}", c.mac),
                        }
                    }
                    s.commit().expect("commit leases");
                }
                acked
            })
        })
        .collect();
    let acked: Vec<(Mac, Ipv4Addr)> = workers
        .into_iter()
        .flat_map(|h| h.join().expect("worker"))
        .collect();
    assert_eq!(acked.len(), 160);
    let mut ips: Vec<_> = acked.iter().map(|(_, ip)| *ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 160, "an address was ACKed twice");
    let rows = pg.psql(
        DB,
        "SELECT mac, host(ip) FROM hostagent.lease4 WHERE network = 'lab' AND client IS NOT NULL",
    );
    let mut in_db: Vec<(String, String)> = rows
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(m, i)| (m.to_string(), i.to_string()))
        .collect();
    in_db.sort();
    let mut expected: Vec<(String, String)> = acked
        .iter()
        .map(|(m, i)| (m.to_string(), i.to_string()))
        .collect();
    expected.sort();
    assert_eq!(
        in_db, expected,
        "the database holds exactly the ACKed leases"
    );
}

#[test]
fn reservations_and_quarantine_are_shared_by_every_agent() {
    let pg = cluster();
    let owner = mac(0xbeef);
    let reserved = ip(30);
    // Agent a knows the reservation; agent b's config does not.
    let mut a = PgStore::new(db(&pg, "a"), &net("lab", 20, 31, &[(owner, reserved)]));
    let mut b = PgStore::new(db(&pg, "b"), &net("lab", 20, 31, &[]));

    assert_eq!(
        b.offer(&Client::from(owner), None, NOW).unwrap(),
        Some(reserved)
    );
    b.commit().unwrap();
    assert_eq!(
        b.request(&client(1), reserved, None, NOW).unwrap(),
        Err(Nak::Reserved(reserved))
    );
    assert_eq!(
        b.request(&Client::from(owner), ip(25), None, NOW).unwrap(),
        Err(Nak::NotItsReservation {
            requested: ip(25),
            reserved
        })
    );
    b.commit().unwrap();
    // Agent b fills the pool: never with the reserved address.
    let mut given = Vec::new();
    for n in 1..20 {
        match lease(&mut b, &client(n), NOW) {
            Some(ip) => given.push(ip),
            None => break,
        }
    }
    assert_eq!(given.len(), 11, "20..=31 minus the reservation: {given:?}");
    assert!(!given.contains(&reserved));

    // A client declines at agent a: agent b offers the address to nobody until the quarantine
    // ends.
    let declined = given[0];
    assert!(a.decline(&client(1), declined, NOW).unwrap());
    a.commit().unwrap();
    let fresh = client(99);
    assert_ne!(
        b.offer(&fresh, Some(declined), NOW).unwrap(),
        Some(declined)
    );
    b.commit().unwrap();
    assert_eq!(
        b.request(&fresh, declined, None, NOW).unwrap(),
        Err(Nak::Taken(declined))
    );
    b.commit().unwrap();
    let later = NOW + pxe::dhcp::pool::DECLINE_QUARANTINE_SECS + 1;
    assert_eq!(
        b.offer(&client(100), Some(declined), later).unwrap(),
        Some(declined)
    );
    b.commit().unwrap();
}

/// RFC 2131's RENEWING goes to the agent that granted the lease; REBINDING and INIT-REBOOT to any:
/// the other agent extends it from the database, and the lease names who renewed it.
#[test]
fn a_lease_renews_at_either_agent_with_its_address() {
    let pg = cluster();
    let mut a = PgStore::new(db(&pg, "a"), &net("lab", 20, 40, &[]));
    let mut b = PgStore::new(db(&pg, "b"), &net("lab", 20, 40, &[]));
    let c = client(5);
    let got = lease(&mut a, &c, NOW).expect("lease");
    assert_eq!(
        a.lease_for(&c).unwrap().and_then(|l| l.agent),
        Some("a".into())
    );

    let renewed = b
        .request(&c, got, Some("renamed"), NOW + 1800)
        .unwrap()
        .expect("b renews a's lease");
    b.commit().unwrap();
    assert_eq!(renewed.ip, got);
    let stored = b.lease_for(&c).unwrap().expect("stored");
    assert_eq!(
        (
            stored.ip,
            stored.expires,
            stored.agent.as_deref(),
            stored.hostname.as_deref()
        ),
        (got, NOW + 1800 + 3600, Some("b"), Some("renamed"))
    );
    // Agent a sees b's renewal, and another client still cannot have the address.
    let seen = a.leases_at(NOW + 1800).unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].agent.as_deref(), Some("b"));
    assert_eq!(
        a.request(&client(6), got, None, NOW + 1800).unwrap(),
        Err(Nak::Taken(got))
    );
    a.commit().unwrap();
    // Its DISCOVER at a, after a restart of the client: its own address again.
    assert_eq!(a.offer(&c, None, NOW + 1900).unwrap(), Some(got));
    a.commit().unwrap();
}

/// Offers hold an address for one client across agents, until the client takes another
/// server's offer or the hold runs out.
#[test]
fn offer_holds_keep_an_address_from_other_clients_until_dropped_or_expired() {
    let pg = cluster();
    let mut a = PgStore::new(db(&pg, "a"), &net("lab", 20, 21, &[]));
    let mut b = PgStore::new(db(&pg, "b"), &net("lab", 20, 21, &[]));
    let (c1, c2, c3) = (client(1), client(2), client(3));
    let first = a.offer(&c1, None, NOW).unwrap().expect("offer");
    a.commit().unwrap();
    // The same DISCOVER seen by b: b offers c1 the address a holds for it.
    assert_eq!(b.offer(&c1, None, NOW).unwrap(), Some(first));
    let second = b.offer(&c2, None, NOW).unwrap().expect("the other address");
    b.commit().unwrap();
    assert_ne!(first, second);
    assert_eq!(b.offer(&c3, None, NOW).unwrap(), None, "both held");
    b.commit().unwrap();
    // c2 took another server's offer (say, a DHCP server we do not know): b lets it go.
    b.offer_not_taken(&c2, None, NOW).unwrap();
    b.commit().unwrap();
    assert_eq!(a.offer(&c3, None, NOW).unwrap(), Some(second));
    a.commit().unwrap();
    // c1's hold runs out: c1's address is free for others after OFFER_HOLD_SECS.
    let later = NOW + pxe::dhcp::pool::OFFER_HOLD_SECS + 1;
    assert_eq!(b.offer(&client(4), None, later).unwrap(), Some(first));
    b.commit().unwrap();
}

/// Both agents saw a client's DISCOVER: the second one offers the address the first holds for
/// it without taking that row's lock, so the first agent's batch granting it (the client chose
/// that agent) never waits for the second's batch; two agents doing this to each other used to
/// deadlock or run into the statement timeout under a lease storm.
#[test]
fn offering_another_agents_hold_never_blocks_that_agent_granting_it() {
    let pg = cluster();
    let mut a = PgStore::new(db(&pg, "a"), &net("lab", 20, 30, &[]));
    let mut b = PgStore::new(db(&pg, "b"), &net("lab", 20, 30, &[]));
    let c = client(1);
    let held = a.offer(&c, None, NOW).unwrap().expect("offer");
    a.commit().unwrap();
    // b's batch with the late DISCOVER stays open while a grants the address.
    assert_eq!(b.offer(&c, None, NOW).unwrap(), Some(held));
    let started = std::time::Instant::now();
    let granted = a
        .request(&c, held, None, NOW)
        .expect("a's request does not wait for b's open batch")
        .expect("granted");
    a.commit().unwrap();
    b.commit().unwrap();
    assert_eq!(granted.ip, held);
    // The statement timeout (2 s) would have ended a request blocked on b's row lock.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a's request waited {:?} for b's batch",
        started.elapsed()
    );
}

/// The LISTEN thread waits for notifications, it does not poll in a loop: idle for two seconds
/// it uses almost no CPU (a reused postgres `TimeoutIter` returns at once after its first
/// timeout and made it spin on a whole core).
#[test]
fn the_lease_change_listener_sleeps_while_nothing_changes() {
    let pg = cluster();
    let _store = PgStore::new(db(&pg, "a"), &net("lab", 20, 30, &[]));
    std::thread::sleep(Duration::from_millis(500));
    let before = thread_cpu_ticks("leasedb-lab");
    std::thread::sleep(Duration::from_secs(2));
    let used = thread_cpu_ticks("leasedb-lab") - before;
    // Clock ticks are 1/100 s: waking every 250 ms costs ~0; spinning showed 30 to 200 here
    // (depending on what else the machine runs).
    assert!(
        used <= 20,
        "the listener used {used} ticks of CPU in 2 s idle"
    );
}

/// utime + stime of this process's thread named `name` (/proc/self/task/*/stat).
fn thread_cpu_ticks(name: &str) -> u64 {
    for task in std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).expect("stat");
        // Fields after the ")" that ends comm: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').expect("stat has a comm").1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields[n - 3].parse::<u64>().expect("a tick count");
        return field(14) + field(15);
    }
    panic!("no thread named {name}");
}

/// The database stops: operations fail at once with the reason, no commit succeeds, status
/// says so; it starts again: the next batch after the retry interval works.
#[test]
fn the_database_going_away_fails_batches_and_its_return_is_noticed() {
    let pg = cluster();
    let mut s = PgStore::new(db(&pg, "a"), &net("lab", 20, 40, &[]));
    let c = client(1);
    assert!(lease(&mut s, &c, NOW).is_some());
    assert!(s.health().snapshot().available);

    pg.stop();
    let offered = s.offer(&client(2), None, NOW);
    assert!(
        offered.is_err(),
        "an offer without the database: {offered:?}"
    );
    let commit = s.commit();
    let err = commit.expect_err("nothing is committed").to_string();
    assert!(err.contains("lease database"), "{err}");
    let status = s.health().snapshot();
    assert!(!status.available, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("unreachable")),
        "{status:?}"
    );
    assert!(
        s.leases_at(NOW).is_err(),
        "reads fail too: the view keeps its last set"
    );

    pg.start_server();
    let back = testkit::wait_for(10, || {
        let r = s.offer(&client(2), None, NOW);
        let committed = s.commit();
        matches!((r, committed), (Ok(Some(_)), Ok(()))).then_some(())
    });
    assert!(
        back.is_some(),
        "no recovery; server log:\n{}",
        pg.log_text()
    );
    assert!(s.health().snapshot().available);
    assert_eq!(
        s.lease_for(&c).unwrap().map(|l| l.ip),
        Some(ip(20)),
        "the lease survived"
    );
}

/// A DHCP batch's questions asked together (`answer_all`, one `batch4` call): each is answered
/// in order as if asked alone after the ones before it — offers of one batch get different
/// addresses, a REQUEST sees the hold its DISCOVER took earlier in the batch, a release frees
/// what a request of the same batch granted, an address outside the network is refused
/// without the database — and nothing of it is durable before the commit.
#[test]
fn a_batch_of_questions_is_answered_in_order_as_if_asked_one_by_one() {
    use pxe::dhcp::store::{StoreAnswer, StoreOp};
    let pg = cluster();
    let mut a = PgStore::new(db(&pg, "a"), &net("lab", 20, 40, &[]));
    let offers: Vec<StoreOp> = (1..=3)
        .map(|n| StoreOp::Offer {
            client: client(n),
            requested: None,
        })
        .collect();
    let answers = a.answer_all(&offers, NOW);
    let offered: Vec<Ipv4Addr> = answers
        .iter()
        .map(|r| match r {
            Ok(StoreAnswer::Offered(Some(ip))) => *ip,
            other => panic!("an offer: {other:?}"),
        })
        .collect();
    assert_eq!(offered, vec![ip(20), ip(21), ip(22)], "one address each");
    a.commit().expect("commit the offers");

    let batch = vec![
        StoreOp::Request {
            client: client(1),
            ip: offered[0],
            hostname: Some("one".into()),
        },
        // Another client's hold: taken.
        StoreOp::Request {
            client: client(4),
            ip: offered[1],
            hostname: None,
        },
        StoreOp::Request {
            client: client(2),
            ip: offered[1],
            hostname: None,
        },
        StoreOp::Release {
            client: client(2),
            ip: offered[1],
        },
        StoreOp::Request {
            client: client(3),
            ip: Ipv4Addr::new(192, 168, 9, 9),
            hostname: None,
        },
        StoreOp::Offer {
            client: client(5),
            requested: None,
        },
    ];
    let answers: Vec<StoreAnswer> = a
        .answer_all(&batch, NOW)
        .into_iter()
        .map(|r| r.expect("answered"))
        .collect();
    let granted = |a: &StoreAnswer| match a {
        StoreAnswer::Requested(Ok(l)) => (l.ip, l.hostname.clone()),
        other => panic!("a lease: {other:?}"),
    };
    assert_eq!(granted(&answers[0]), (offered[0], Some("one".into())));
    assert_eq!(
        answers[1],
        StoreAnswer::Requested(Err(Nak::Taken(offered[1])))
    );
    assert_eq!(granted(&answers[2]).0, offered[1]);
    assert_eq!(answers[3], StoreAnswer::Released(true));
    assert_eq!(
        answers[4],
        StoreAnswer::Requested(Err(Nak::WrongNetwork(Ipv4Addr::new(192, 168, 9, 9))))
    );
    // Not .21 (just released, but the search goes on after the last address offered) nor .22
    // (client 3's hold).
    assert_eq!(answers[5], StoreAnswer::Offered(Some(ip(23))));
    let bound = || {
        pg.psql(
            DB,
            "SELECT string_agg(host(ip), ',' ORDER BY ip) FROM hostagent.lease4 \
             WHERE client IS NOT NULL",
        )
    };
    assert_eq!(bound(), "\n", "nothing is visible before the commit");
    a.commit().expect("commit the batch");
    assert_eq!(
        bound(),
        format!("{}\n", offered[0]),
        "the release of the same batch stands"
    );
}
