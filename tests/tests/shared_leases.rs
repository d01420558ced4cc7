//! Several agents, one lease database (`[leases] backend = "postgres"`): two agents in two
//! namespaces whose bridge-mode networks enslave a veth into one shared segment (a third
//! namespace's bridge), each with its own address there and the same pool, and one private
//! PostgreSQL cluster both reach through its unix socket (a path works across network
//! namespaces). Clients on either side: dhcp-flood, udhcpc, dhclient, dig.

use std::collections::{HashMap, HashSet};

use hostagent_tests::cli::{counter, Cli};
use hostagent_tests::config::{Config, Dhcp, Dns, Leases, Network};
use hostagent_tests::daemon::{flood, Daemon, Storm};
use hostagent_tests::Scratch;
use testkit::dhcp_client::{Dhclient, Udhcpc};
use testkit::dns::dig;
use testkit::{Netns, PgCluster};

const DB: &str = "hostagent";
/// The segment's subnet and the pool both agents serve.
const PREFIX: &str = "/22";
const RANGE: &str = "10.90.1.0-10.90.3.250";

/// The cluster, logging lock waits and slow statements (its log is in the failure messages).
fn database() -> PgCluster {
    let pg = PgCluster::start();
    pg.create_db(DB);
    pg.psql(DB, "ALTER SYSTEM SET log_lock_waits = on");
    pg.psql(DB, "ALTER SYSTEM SET log_min_duration_statement = 300");
    pg.psql(DB, "SELECT pg_reload_conf()");
    pg
}

/// The shared layer-2 segment: a namespace with bridge `br-seg` (STP off) that every agent's
/// uplink is plugged into.
struct Segment {
    ns: Netns,
}

impl Segment {
    fn new() -> Segment {
        let ns = Netns::new("seg");
        ns.ok(&["ip", "link", "add", "br-seg", "type", "bridge"]);
        ns.ok(&["ip", "link", "set", "br-seg", "up"]);
        Segment { ns }
    }

    /// A namespace for an agent whose `up0` is a port of the segment.
    fn host(&self, tag: &str) -> Netns {
        let host = Netns::new(tag);
        let port = format!("s-{tag}");
        self.ns.veth_to(&port, &host, "up0");
        self.ns
            .ok(&["ip", "link", "set", &port, "master", "br-seg"]);
        host
    }
}

/// An agent's own address and bridge MAC on the segment.
#[derive(Clone, Copy)]
struct Addr {
    ip: &'static str,
    mac: &'static str,
}

const AT_A: Addr = Addr {
    ip: "10.90.0.2",
    mac: "52:54:00:0a:00:01",
};
const AT_B: Addr = Addr {
    ip: "10.90.0.3",
    mac: "52:54:00:0b:00:01",
};

/// One agent: `hostagent run` in its namespace, network `lab` in bridge mode on the segment with
/// its own address and MAC, its leases in the shared database as agent `name`.
struct Agent {
    ns: Netns,
    s: Scratch,
    cfg: String,
    d: Daemon,
    addr: &'static str,
}

impl Agent {
    fn start(seg: &Segment, pg: &PgCluster, name: &str, at: Addr, lease: &str) -> Agent {
        let Addr { ip: addr, mac } = at;
        let ns = seg.host(name);
        let s = Scratch::new();
        let cfg = s.config(
            Config::new("/state")
                .leases(
                    Leases::postgres(&pg.url(DB))
                        .agent(name)
                        .timeouts("1s", "2s"),
                )
                .network(
                    // Each agent's bridge needs a MAC of its own on the shared segment: the
                    // derived one depends only on the network's name, the same on both.
                    Network::new("lab", "bridge", "br-lab")
                        .mac(mac)
                        .interfaces(&["up0"])
                        .stp(false)
                        .address(&format!("{addr}{PREFIX}"))
                        .dhcp(Dhcp::new(RANGE).lease_time(lease))
                        .dns(Dns::new().enable(true).domain("lab").forwarders(&[])),
                ),
        );
        let mut d = Daemon::start(&ns, &s, &cfg, &[]);
        d.wait_listening(&ns, "br-lab", &[67, 53], &[]);
        Agent {
            ns,
            s,
            cfg,
            d,
            addr,
        }
    }

    fn cli(&self) -> Cli<'_> {
        Cli::new(&self.ns, &self.s, &self.cfg)
    }

    /// A client namespace whose eth0 is a port of this agent's bridge (so of the segment).
    fn client(&self, port: &str) -> Netns {
        self.ns.plug("br-lab", port)
    }
}

/// The database's bound leases of network `lab`: mac → (ip, agent).
fn db_leases(pg: &PgCluster) -> HashMap<String, (String, String)> {
    pg.psql(
        DB,
        "SELECT mac::text, host(ip), agent FROM hostagent.lease4 \
         WHERE network = 'lab' AND client IS NOT NULL",
    )
    .lines()
    .filter_map(|l| {
        let mut cols = l.split('|');
        let (mac, ip, agent) = (cols.next()?, cols.next()?, cols.next()?);
        Some((mac.to_string(), (ip.to_string(), agent.to_string())))
    })
    .collect()
}

/// Every ACK names a different address, and the database holds each with that address.
fn assert_unique_and_stored(acked: &[(String, String)], pg: &PgCluster, what: &str) {
    let mut seen = HashSet::new();
    for (mac, ip) in acked {
        assert!(
            seen.insert(ip),
            "{what}: {ip} ACKed twice (second to {mac})"
        );
    }
    let stored = db_leases(pg);
    for (mac, ip) in acked {
        assert_eq!(
            stored.get(mac).map(|(i, _)| i.as_str()),
            Some(ip.as_str()),
            "{what}: ACKed lease {mac} {ip} is not in the database"
        );
    }
}

#[test]
fn two_agents_on_one_segment_give_hundreds_of_clients_unique_addresses_and_both_name_them() {
    let pg = database();
    let seg = Segment::new();
    let a = Agent::start(&seg, &pg, "a", AT_A, "1h");
    let b = Agent::start(&seg, &pg, "b", AT_B, "1h");
    let (ga, gb) = (a.client("vfa"), b.client("vfb"));

    // 150 clients from each side at once: every DISCOVER reaches both agents.
    let storm_a = Storm::start(&ga, 150, 0x51, 8, 60);
    let storm_b = Storm::start(&gb, 150, 0x52, 8, 60);
    let mut acked = storm_a.finish();
    acked.extend(storm_b.finish());
    assert_eq!(
        acked.len(),
        300,
        "every client gets a lease;\nagent a: {}\n{}\nagent b: {}\n{}\nPostgreSQL:\n{}",
        a.cli().server("lab"),
        a.d.log_text(),
        b.cli().server("lab"),
        b.d.log_text(),
        pg.log_text()
    );
    assert_unique_and_stored(&acked, &pg, "two agents, one pool");
    let stored = db_leases(&pg);
    assert_eq!(stored.len(), 300, "no lease but the ACKed ones");
    let by: HashSet<&str> = stored.values().map(|(_, agent)| agent.as_str()).collect();
    assert_eq!(by, HashSet::from(["a", "b"]), "both agents granted leases");

    // Each agent lists every lease of the pool with the agent that granted it, and counts them
    // by agent in its status.
    for agent in [&a, &b] {
        let listed = agent.cli().lease_records();
        assert_eq!(
            listed.len(),
            300,
            "agent at {}: {}\nlog:\n{}",
            agent.addr,
            agent.cli().status(),
            agent.d.log_text()
        );
        for (_, l) in &listed {
            let mac = l["mac"].as_str().unwrap_or_default();
            let (ip, who) = &stored[mac];
            assert_eq!(l["ip"], ip.as_str());
            assert_eq!(l["agent"], who.as_str());
        }
        // The counts come from the live lease watch, which follows the other agent's commits
        // (NOTIFY) within a publish interval and a receive timeout.
        let by_agent = |status: &serde_json::Value| {
            let of = |who: &str| status["dhcp"]["leases_by_agent"][who].as_u64().unwrap_or(0);
            (of("a"), of("b"))
        };
        let want = (
            stored.values().filter(|(_, who)| who == "a").count() as u64,
            stored.values().filter(|(_, who)| who == "b").count() as u64,
        );
        let converged = testkit::wait_for(5, || {
            let status = agent.cli().server("lab");
            (by_agent(&status) == want).then_some(status)
        });
        let status = converged.unwrap_or_else(|| {
            let status = agent.cli().server("lab");
            panic!(
                "agent at {}: leases by agent {:?}, the database says {want:?}: {status}",
                agent.addr,
                by_agent(&status)
            )
        });
        let dhcp = &status["dhcp"];
        assert_eq!(dhcp["store"]["backend"], "postgres", "{status}");
        assert_eq!(dhcp["store"]["available"], true, "{status}");
        let human = agent.cli().ok(&["leases"]);
        assert!(
            human.lines().next().unwrap_or("").contains("AGENT"),
            "{human}"
        );
    }

    // A guest with a host name resolves at both agents' DNS, whichever agent leased it: the
    // other one follows the database (LISTEN/NOTIFY).
    let gn = b.client("vnb");
    let udhcpc = Udhcpc::configuring(&gn, b.s.root(), "named").args(&["-x", "hostname:web-b"]);
    let bound = udhcpc.once().expect("the named guest gets a lease");
    for server in [a.addr, b.addr] {
        let answer = testkit::wait_for(5, || {
            let d = dig(Some(&gn), &[&format!("@{server}"), "web-b.lab", "A"]);
            (d.data() == vec![bound["ip"].clone()]).then_some(())
        });
        assert!(
            answer.is_some(),
            "web-b.lab at {server}: {}",
            dig(Some(&gn), &[&format!("@{server}"), "web-b.lab", "A"]).text
        );
    }
}

#[test]
fn kill_9_of_one_agent_loses_no_acked_lease_and_the_other_renews_its_clients() {
    let pg = database();
    let seg = Segment::new();
    // One-minute leases (the agent's minimum): T1 at 30 s, T2 at 52.5 s.
    let mut a = Agent::start(&seg, &pg, "a", AT_A, "1m");

    // Real clients bound by agent a alone (agent b is not running yet).
    let gd = a.client("vdc");
    let dhclient = Dhclient::new(&gd, a.s.root(), "dc").retrying_every(2);
    let out = dhclient.run(&["-1"]);
    assert!(out.status.success(), "dhclient: {}", testkit::stderr(&out));
    let dhclient_ip = dhclient.records("BOUND").pop().expect("dhclient bound")["ip"].clone();
    let gu = a.client("vuc");
    let udhcpc = Udhcpc::configuring(&gu, a.s.root(), "uc").spawn();
    let udhcpc_bound = udhcpc.wait_event("bound", 20).expect("udhcpc bound");
    assert_eq!(udhcpc_bound["serverid"], a.addr);
    let udhcpc_ip = udhcpc_bound["ip"].clone();

    let b = Agent::start(&seg, &pg, "b", AT_B, "1m");
    let (ga, gb) = (a.client("vka"), b.client("vkb"));
    // Clients on both sides keep asking while agent a is killed -9 after its side's 100th ACK.
    let mut storm_a = Storm::start(&ga, 300, 0x61, 16, 30);
    let storm_b = Storm::start(&gb, 300, 0x62, 16, 30);
    let mut acked = storm_a.first(100, &a.d);
    a.d.signal(libc::SIGKILL);
    // Still running after the kill, so running when it came: a died mid-storm.
    let mid_run = storm_a.running();
    assert!(a.d.wait_exit(5).is_some(), "agent a did not die");
    acked.extend(storm_a.finish());
    acked.extend(storm_b.finish());
    assert!(
        mid_run,
        "the storm on a's side ended before agent a was killed"
    );
    assert_unique_and_stored(&acked, &pg, "kill -9 of agent a");
    let mine = db_leases(&pg);
    assert!(
        mine.values().any(|(_, agent)| agent == "a")
            && mine.values().any(|(_, agent)| agent == "b"),
        "both agents granted some of the storm's leases"
    );

    // Agent a's real clients: RENEWING goes to a (dead) and gets nothing; REBINDING is broadcast
    // and agent b extends the lease from the database, with the same address.
    let renewed = udhcpc.wait_event("renew", 60).unwrap_or_else(|| {
        panic!(
            "udhcpc never renewed through agent b; agent b:\n{}",
            b.d.log_text()
        )
    });
    assert_eq!(renewed["ip"], udhcpc_ip);
    assert_eq!(
        renewed["serverid"], b.addr,
        "renewed by the surviving agent"
    );
    // dhclient reports an ACK it got while rebinding as RENEW too; a is dead, so it is b's (b
    // names itself as the DNS server).
    let rebound = dhclient.wait_event("RENEW", 75).unwrap_or_else(|| {
        panic!(
            "dhclient never rebound: {}\nagent b:\n{}",
            dhclient.record_text(),
            b.d.log_text()
        )
    });
    assert_eq!(rebound["ip"], dhclient_ip);
    assert_eq!(rebound["dns"], b.addr, "{}", dhclient.record_text());
    let now = db_leases(&pg);
    for (guest, ip) in [(&gd, &dhclient_ip), (&gu, &udhcpc_ip)] {
        let mac = guest.mac("eth0");
        assert_eq!(
            now.get(&mac),
            Some(&(ip.clone(), "b".to_string())),
            "{mac}'s lease, renewed by b"
        );
    }

    // And agent b goes on serving new clients, never with an address promised before.
    let fresh = flood(&gb, 20, 0x63, 20, 30);
    assert_eq!(fresh.len(), 20, "agent b:\n{}", b.d.log_text());
    let before: HashSet<&str> = acked.iter().map(|(_, ip)| ip.as_str()).collect();
    for (mac, ip) in &fresh {
        assert!(
            !before.contains(ip.as_str()),
            "{ip} given to {mac} after it was ACKed to another client"
        );
    }
}

#[test]
fn the_database_stopped_means_no_acks_a_clear_error_and_recovery_when_it_returns() {
    let pg = database();
    let host = Netns::new("pgdown");
    let s = Scratch::new();
    let cfg = s.config(
        Config::new("/state")
            .leases(
                Leases::postgres(&pg.url(DB))
                    .agent("solo")
                    .timeouts("1s", "1s"),
            )
            .network(
                Network::nat("lab", "br-lab", "10.91.0.1/24")
                    .dhcp(Dhcp::new("10.91.0.100-10.91.0.199").lease_time("1h")),
            ),
    );
    let cli = Cli::new(&host, &s, &cfg);
    let d = Daemon::start(&host, &s, &cfg, &[]);
    let guest = host.plug("br-lab", "vpg");
    let first = d.lease_all(&guest, 10, 0x71);
    let acks_before = counter(&cli.server("lab"), &["dhcp", "acks"]);

    pg.stop();
    let while_down = flood(&guest, 10, 0x72, 10, 8);
    assert!(
        while_down.is_empty(),
        "ACKs without the database: {while_down:?}"
    );
    let st = cli.server("lab");
    let dhcp = &st["dhcp"];
    assert_eq!(counter(dhcp, &["acks"]), acks_before, "{st}");
    assert_eq!(counter(dhcp, &["naks"]), 0, "no NAK either: {st}");
    assert!(counter(dhcp, &["store_failures"]) > 0, "{st}");
    assert_eq!(dhcp["store"]["available"], false, "{st}");
    let error = dhcp["store"]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("unreachable") && error.contains(&pg.socket_dir().display().to_string()),
        "the error names the database: {st}"
    );
    let human = cli.ok(&["status"]);
    assert!(human.contains("UNAVAILABLE"), "{human}");
    d.wait_log("lease database unreachable", 5);

    pg.start_server();
    let after = flood(&guest, 10, 0x73, 10, 30);
    assert_eq!(
        after.len(),
        10,
        "served again once the database is back; log:\n{}",
        d.log_text()
    );
    d.wait_log("lease database reachable again", 5);
    assert_eq!(cli.server("lab")["dhcp"]["store"]["available"], true);
    let leased = cli.leases();
    for (mac, ip) in first.iter().chain(&after) {
        assert!(
            leased.iter().any(|(_, m, i)| m == mac && i == ip),
            "{mac} {ip} missing after the outage: {leased:?}"
        );
    }
}
