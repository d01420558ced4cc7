//! Real DHCP clients nobody here wrote (busybox udhcpc, ISC dhclient) against the real
//! `hostagent run`, each in its own namespace: leases, every option value they were told,
//! renewal (forced, and dhclient's own at T1), reboot, release, static reservations; read back
//! from the clients' hook scripts, `hostagent leases`, the server's counters and its log.
//! (The one suite of real clients: pxe's server is tested here through the agent.)

use hostagent_tests::cli::{counter, mac_text, Cli};
use hostagent_tests::config::{Config, Dhcp, Network};
use hostagent_tests::daemon::Daemon;
use hostagent_tests::Scratch;
use testkit::dhcp_client::{Dhclient, Udhcpc};
use testkit::{stderr, Netns};

const BASTION_MAC: &str = "52:54:00:00:00:10";

/// Network `lab` on `bridge`, `NET.1/24` with MTU 1400: DHCP .100–.199 with `lease_time`, DNS
/// (the host and 9.9.9.9), a domain, and the bastion reservation (.10).
fn config(bridge: &str, net: &str, lease_time: &str) -> Config {
    Config::new("/state").network(
        Network::nat("lab", bridge, &format!("{net}.1/24"))
            .mtu(1400)
            .dhcp(
                Dhcp::new(&format!("{net}.100-{net}.199"))
                    .lease_time(lease_time)
                    .dns(&[&format!("{net}.1"), "9.9.9.9"])
                    .domain("lab.test")
                    .host(BASTION_MAC, &format!("{net}.10"), Some("bastion")),
            ),
    )
}

/// The address `hostagent leases` lists for `mac` on network lab.
fn leased_ip(cli: &Cli, mac: &str) -> Option<String> {
    cli.leases()
        .into_iter()
        .find(|(n, m, _)| n == "lab" && m == mac)
        .map(|(_, _, ip)| ip)
}

fn dhcp_counter(cli: &Cli, name: &str) -> u64 {
    counter(&cli.server("lab"), &["dhcp", name])
}

#[test]
fn udhcpc_gets_renews_and_releases_a_lease_from_hostagent_run() {
    let host = Netns::new("udc");
    let s = Scratch::new();
    let cfg = s.config(config("br-udc", "10.84.0", "1h"));
    let cli = Cli::new(&host, &s, &cfg);
    let d = Daemon::start(&host, &s, &cfg, &[]);
    let guest = host.plug("br-udc", "vudc0");
    let mac = guest.mac("eth0");

    let udhcpc = Udhcpc::configuring(&guest, s.root(), "udc")
        .args(&["-x", "hostname:guest1"])
        .spawn();
    let bound = udhcpc
        .wait_event("bound", 30)
        .unwrap_or_else(|| panic!("udhcpc got no lease; agent log:\n{}", d.log_text()));
    let ip = bound["ip"].clone();
    let last: u8 = ip
        .strip_prefix("10.84.0.")
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("{ip} outside 10.84.0.0/24"));
    assert!((100..=199).contains(&last), "{ip} outside the range");
    assert_eq!(bound["mask"], "24");
    assert_eq!(bound["router"], "10.84.0.1");
    assert_eq!(bound["dns"], "10.84.0.1,9.9.9.9");
    assert_eq!(bound["lease"], "3600");
    assert_eq!(bound["domain"], "lab.test");
    assert_eq!(bound["mtu"], "1400");
    assert_eq!(bound["serverid"], "10.84.0.1");
    assert_eq!(
        leased_ip(&cli, &mac).as_deref(),
        Some(ip.as_str()),
        "`hostagent leases` lists it"
    );
    let lease = cli
        .lease_records()
        .into_iter()
        .find(|(n, l)| n == "lab" && mac_text(&l["mac"]) == mac)
        .map(|(_, l)| l)
        .expect("the lease record");
    assert_eq!(lease["ip"], ip.as_str(), "{lease}");
    assert_eq!(
        lease["hostname"], "guest1",
        "the lease keeps the client's name: {lease}"
    );

    // Renew now: unicast from its address; the ACK goes back to ciaddr at chaddr.
    let acks_before = dhcp_counter(&cli, "acks");
    udhcpc.renew();
    let renewed = udhcpc
        .wait_event("renew", 20)
        .unwrap_or_else(|| panic!("udhcpc did not renew; agent log:\n{}", d.log_text()));
    assert_eq!(renewed["ip"], ip);
    assert!(
        dhcp_counter(&cli, "acks") > acks_before,
        "the renewal was not ACKed by the server"
    );

    udhcpc.release();
    assert!(
        testkit::wait_for(15, || leased_ip(&cli, &mac).is_none().then_some(())).is_some(),
        "lease still listed after RELEASE; agent log:\n{}",
        d.log_text()
    );
    assert_eq!(dhcp_counter(&cli, "releases"), 1);
    drop(udhcpc);
    let log = d.log_text();
    assert!(
        log.lines().any(|l| l.contains(&mac)
            && l.contains(&ip)
            && l.contains("guest1")
            && l.contains("ack")),
        "no ACK log line with mac, ip and hostname:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(&mac) && l.contains("release")),
        "no RELEASE log line:\n{log}"
    );
}

/// A one-minute lease (the shortest the config takes): dhclient renews on its own at T1.
#[test]
fn dhclient_static_host_gets_its_reservation_renews_at_t1_reboots_and_releases() {
    let host = Netns::new("dcl");
    let s = Scratch::new();
    let cfg = s.config(config("br-dcl", "10.85.0", "1m"));
    let cli = Cli::new(&host, &s, &cfg);
    let d = Daemon::start(&host, &s, &cfg, &[]);
    let guest = host.plug("br-dcl", "vdcl0");
    guest.ok(&["ip", "link", "set", "eth0", "address", BASTION_MAC]);
    let dhclient = Dhclient::new(&guest, s.root(), "dcl");
    let run = |extra: &[&str]| {
        let out = dhclient.run(extra);
        assert!(
            out.status.success(),
            "dhclient {extra:?}: {}\nagent log:\n{}",
            stderr(&out),
            d.log_text()
        );
    };

    run(&["-1"]);
    let bound = dhclient.records("BOUND").pop().unwrap_or_else(|| {
        panic!("dhclient bound: {:?}", dhclient.record_text());
    });
    assert_eq!(bound["ip"], "10.85.0.10", "the static reservation");
    assert_eq!(bound["host"], "bastion");
    assert_eq!(bound["mask"], "255.255.255.0");
    assert_eq!(bound["routers"], "10.85.0.1");
    assert_eq!(bound["dns"], "10.85.0.1,9.9.9.9");
    assert_eq!(bound["lease"], "60");
    assert_eq!(bound["domain"], "lab.test");
    assert_eq!(bound["mtu"], "1400");
    assert_eq!(leased_ip(&cli, BASTION_MAC).as_deref(), Some("10.85.0.10"));

    // In the background it renews (RENEWING, unicast) at T1 = 30 s, with its own jitter.
    let renewed = dhclient.wait_event("RENEW", 45).unwrap_or_else(|| {
        panic!(
            "dhclient did not renew at T1: {:?}\nagent log:\n{}",
            dhclient.record_text(),
            d.log_text()
        )
    });
    assert_eq!(renewed["ip"], "10.85.0.10");

    // Stop it without releasing, start again: INIT-REBOOT (REQUEST with option 50, no server id).
    run(&["-x"]);
    run(&["-1"]);
    let reboot = dhclient
        .records("REBOOT")
        .pop()
        .expect("dhclient rebooted into its lease");
    assert_eq!(reboot["ip"], "10.85.0.10");

    run(&["-r"]);
    assert!(
        testkit::wait_for(15, || leased_ip(&cli, BASTION_MAC).is_none().then_some(())).is_some(),
        "lease still listed after dhclient -r; agent log:\n{}",
        d.log_text()
    );
    assert!(dhcp_counter(&cli, "releases") >= 1);
}
