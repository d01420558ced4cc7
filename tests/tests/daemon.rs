//! `hostagent run` as a daemon: serving, control socket, SIGHUP reload, clean stop, crash safety.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;

use hostagent_tests::cli::{counter, Cli};
use hostagent_tests::config::{Config, Dhcp, Network};
use hostagent_tests::daemon::{assert_kept, flood, Daemon, Storm};
use hostagent_tests::Scratch;
use testkit::{stderr, Netns};

/// NAT networks (name, bridge, address, DHCP range), 1 h leases.
fn config(nets: &[(&str, &str, &str, &str)]) -> Config {
    nets.iter()
        .fold(Config::new("/state"), |c, (name, bridge, addr, range)| {
            c.network(Network::nat(name, bridge, addr).dhcp(Dhcp::new(range).lease_time("1h")))
        })
}

fn dhcp_acks(cli: &Cli, network: &str) -> u64 {
    counter(&cli.server(network), &["dhcp", "acks"])
}

#[test]
fn run_serves_leases_reports_status_and_stops_cleanly() {
    let host = Netns::new("run");
    let s = Scratch::new();
    let cfg = s.config(config(&[(
        "lab",
        "br-lab",
        "10.81.0.1/24",
        "10.81.0.100-10.81.0.199",
    )]));
    let cli = Cli::new(&host, &s, &cfg);
    let mut d = Daemon::start(&host, &s, &cfg, &[]);
    let guest = host.plug("br-lab", "vrun0");

    let acks = d.lease_all(&guest, 5, 0x21);
    let leased = cli.leases();
    for (mac, ip) in &acks {
        assert!(
            leased
                .iter()
                .any(|(n, m, i)| n == "lab" && m == mac && i == ip),
            "lease {mac} {ip} missing from `hostagent leases`: {leased:?}"
        );
        assert!(
            ip.starts_with("10.81.0.1"),
            "address {ip} outside the range"
        );
    }
    let st = cli.status();
    assert_eq!(st["networks"][0]["bridge"], "br-lab");
    assert!(dhcp_acks(&cli, "lab") >= 5, "status counters: {st}");
    // Human output names the network too.
    let human = cli.ok(&["status"]);
    assert!(human.contains("br-lab"), "{human}");

    d.signal(libc::SIGTERM);
    let code = d
        .wait_exit(10)
        .expect("daemon did not stop within 10 s of SIGTERM");
    assert_eq!(code, Some(0), "clean stop exits 0; log:\n{}", d.log_text());
    assert!(
        host.has_link("br-lab"),
        "networks stay up after a stop without --down-on-exit"
    );
    assert!(
        !s.file("run/hostagent/control.sock").exists(),
        "control socket removed on stop"
    );
    // One log line per lease event with the client MAC and IP.
    let log = d.log_text();
    for (mac, ip) in &acks {
        assert!(
            log.lines()
                .any(|l| l.contains(mac.as_str()) && l.contains(ip.as_str())),
            "no log line for {mac} {ip}:\n{log}"
        );
    }
}

#[test]
fn down_on_exit_removes_the_networks() {
    let host = Netns::new("doe");
    let s = Scratch::new();
    let cfg = s.config(config(&[(
        "lab",
        "br-doe",
        "10.82.0.1/24",
        "10.82.0.100-10.82.0.199",
    )]));
    let mut d = Daemon::start(&host, &s, &cfg, &["--down-on-exit"]);
    assert!(host.has_link("br-doe"));
    d.signal(libc::SIGINT);
    assert_eq!(
        d.wait_exit(10).expect("stops"),
        Some(0),
        "log:\n{}",
        d.log_text()
    );
    assert!(
        !host.has_link("br-doe"),
        "--down-on-exit removes the bridge"
    );
    let nft = host.run(&["nft", "list", "table", "inet", "hostagent"]);
    assert!(
        !nft.status.success(),
        "--down-on-exit removes the agent's nft table"
    );
}

#[test]
fn sighup_restarts_only_changed_servers_and_keeps_running_on_a_bad_config() {
    let host = Netns::new("hup");
    let s = Scratch::new();
    let nets = [
        ("a", "br-ha", "10.83.0.1/24", "10.83.0.100-10.83.0.199"),
        ("b", "br-hb", "10.84.0.1/24", "10.84.0.100-10.84.0.199"),
    ];
    let cfg = s.config(config(&nets));
    let cli = Cli::new(&host, &s, &cfg);
    let d = Daemon::start(&host, &s, &cfg, &[]);
    let ga = host.plug("br-ha", "vhupa");
    let gb = host.plug("br-hb", "vhupb");
    d.lease_all(&ga, 3, 0x31);
    d.lease_all(&gb, 3, 0x32);

    // A broken config: reported, the running one kept.
    std::fs::write(&cfg, "state_dir = \"/state\"\n[[network]]\nname = 1\n").expect("write");
    d.signal(libc::SIGHUP);
    d.wait_log("keeping the running config", 10);
    assert_eq!(dhcp_acks(&cli, "a"), 3);

    // Change only network b's DHCP range: b's server restarts (counters from 0), a's keeps going.
    let changed = [
        nets[0],
        ("b", "br-hb", "10.84.0.1/24", "10.84.0.50-10.84.0.99"),
    ];
    s.config(config(&changed));
    d.signal(libc::SIGHUP);
    d.wait_log("config reloaded", 10);
    assert_eq!(
        dhcp_acks(&cli, "a"),
        3,
        "network a's server must not restart: {}",
        cli.status()
    );
    assert_eq!(
        dhcp_acks(&cli, "b"),
        0,
        "network b's server restarts with its new range: {}",
        cli.status()
    );
    let fresh = d.lease_all(&gb, 2, 0x33);
    for (_, ip) in &fresh {
        let last: u8 = ip
            .rsplit('.')
            .next()
            .and_then(|o| o.parse().ok())
            .expect("ip");
        assert!(
            (50..=99).contains(&last),
            "new range applies to new clients: {ip}"
        );
    }
}

#[test]
fn control_socket_is_root_only_and_answers_garbage_with_an_error() {
    let host = Netns::new("ctl");
    let s = Scratch::new();
    let cfg = s.config(config(&[(
        "lab",
        "br-ctl",
        "10.85.0.1/24",
        "10.85.0.100-10.85.0.199",
    )]));
    let _d = Daemon::start(&host, &s, &cfg, &[]);
    let sock = s.file("run/hostagent/control.sock");
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "socket mode");
    let dir_mode = std::fs::metadata(sock.parent().expect("dir"))
        .expect("dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700, "runtime dir mode");

    for garbage in [
        "hello\n",
        "{\"cmd\":\"reboot\"}\n",
        "{\"cmd\":\"status\",\"x\":1}\n",
        "\u{0}\u{1}\n",
    ] {
        let mut c = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
        c.write_all(garbage.as_bytes()).expect("write");
        let mut line = String::new();
        BufReader::new(&c).read_line(&mut line).expect("read");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json answer");
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("bad request")),
            "{garbage:?} → {line}"
        );
    }
    // A non-root user cannot reach it.
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "cat",
        ])
        .arg(&sock)
        .output()
        .expect("setpriv");
    assert!(
        !out.status.success(),
        "nobody could open the control socket"
    );
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn kill_9_during_lease_storm_loses_no_acked_lease_and_never_duplicates() {
    let host = Netns::new("k9");
    let s = Scratch::new();
    let cfg = s.config(config(&[(
        "lab",
        "br-k9",
        "10.86.0.1/20",
        "10.86.1.0-10.86.15.250",
    )]));
    let mut d = Daemon::start(&host, &s, &cfg, &[]);
    let guest = host.plug("br-k9", "vk9");

    // Clients keep asking while the daemon is killed -9 after the 150th ACK.
    let mut storm = Storm::start(&guest, 1500, 65, 64, 10);
    let mut acked = storm.first(150, &d);
    d.signal(libc::SIGKILL);
    acked.extend(storm.finish());
    let _ = d.wait_exit(5);
    assert!(acked.len() < 1500, "the daemon was not killed mid-storm");

    // Restart on the same state: every ACKed lease is back.
    let d2 = Daemon::start(&host, &s, &cfg, &[]);
    let leased = Cli::new(&host, &s, &cfg).leases();
    assert_kept(&leased, &acked, "after kill -9");
    let mut seen = HashSet::new();
    for (_, m, ip) in &leased {
        assert!(
            seen.insert(ip.clone()),
            "address {ip} leased twice (second holder {m})"
        );
    }
    // New clients after the restart never get an address that was promised before the crash.
    let fresh = flood(&guest, 100, 66, 32, 30);
    assert_eq!(fresh.len(), 100, "log:\n{}", d2.log_text());
    let before: HashSet<&str> = acked.iter().map(|(_, ip)| ip.as_str()).collect();
    for (mac, ip) in &fresh {
        assert!(
            !before.contains(ip.as_str()),
            "{ip} given to {mac} after it was ACKed to another client"
        );
    }
}
