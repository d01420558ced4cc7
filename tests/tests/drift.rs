//! Drift repair while `hostagent run` is active: what someone else breaks on the host (bridge,
//! address, nftables, ip_forward, bridge MAC) is put back within 2 s, logged with the plan's
//! action, the boot servers work on a recreated bridge, and nothing foreign is touched.

use std::time::{Duration, Instant};

use hostagent_tests::config::{Config, Dhcp, Network, Pxe};
use hostagent_tests::daemon::Daemon;
use hostagent_tests::Scratch;
use testkit::{stderr, wait_for, wait_until, Netns};

/// The promise: repaired within 2 s of the change.
const REPAIR_DEADLINE: Duration = Duration::from_secs(2);

fn config(bridge: &str, address: &str, range: &str, pxe: bool) -> Config {
    let mut net = Network::nat("lab", bridge, address).dhcp(Dhcp::new(range).lease_time("1h"));
    if pxe {
        net = net.pxe(Pxe::ipxe("/srv/boot").http_port(8069));
    }
    Config::new("/state").network(net)
}

fn boot_root(s: &Scratch) {
    for (name, body) in [
        ("undionly.kpxe", "bios-loader"),
        ("ipxe.efi", "uefi-loader"),
        ("boot.ipxe", "#!ipxe\nboot\n"),
    ] {
        s.write(&format!("srv/boot/{name}"), body);
    }
}

/// Poll (every 25 ms) until `ok` holds; returns how long it took, panics after the deadline.
fn repaired_within(what: &str, d: &Daemon, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    let limit = REPAIR_DEADLINE + Duration::from_millis(500);
    let took = wait_until(limit, Duration::from_millis(25), || {
        ok().then(|| start.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "{what}: not repaired within {limit:?}; log:\n{}",
            d.log_text()
        )
    });
    assert!(
        took <= REPAIR_DEADLINE,
        "{what}: repaired only after {took:?}; log:\n{}",
        d.log_text()
    );
    took
}

/// What the agent could change on a link (not the bridge timers, which tick on their own).
fn link_summary(ns: &Netns, name: &str) -> String {
    let l = ns.link(name).unwrap_or_else(|| panic!("{name} is gone"));
    let addrs: Vec<String> = l["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["local"].to_string())
        .collect();
    format!(
        "index={} mac={} alias={} mtu={} flags={} master={} addrs={addrs:?}",
        l["ifindex"], l["address"], l["ifalias"], l["mtu"], l["flags"], l["master"]
    )
}

fn has_addr(l: &serde_json::Value, ip: &str) -> bool {
    l["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| a["local"] == ip)
}

fn bridge_ok(ns: &Netns, name: &str, ip: &str) -> bool {
    ns.link(name).is_some_and(|l| {
        has_addr(&l, ip)
            && l["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f == "UP")
    })
}

fn nft_tables(ns: &Netns) -> String {
    ns.ok(&["nft", "list", "tables"])
}

/// Lines of the agent log that start a repair step.
fn drift_lines(d: &Daemon) -> Vec<String> {
    d.log_text()
        .lines()
        .filter(|l| {
            l.contains("drift: ") && !l.contains("drift: repaired") && !l.contains("watcher")
        })
        .map(str::to_string)
        .collect()
}

/// The log gained a drift line containing `needle` after the first `before` lines.
fn logged_after(d: &Daemon, before: usize, needle: &str) -> bool {
    drift_lines(d)
        .iter()
        .skip(before)
        .any(|l| l.contains(needle))
}

#[test]
fn drift_is_repaired_within_two_seconds_and_foreign_objects_stay() {
    let host = Netns::new("drift");
    let s = Scratch::new();
    boot_root(&s);
    let cfg = s.config(config(
        "br-dr",
        "10.87.0.1/24",
        "10.87.0.100-10.87.0.199",
        true,
    ));
    // Someone else's bridge and firewall table, present before and during the run.
    host.ok(&["ip", "link", "add", "br-foreign", "type", "bridge"]);
    host.ok(&[
        "ip",
        "link",
        "set",
        "br-foreign",
        "address",
        "02:00:00:00:00:77",
    ]);
    host.ok(&["nft", "add table inet foreign"]);
    host.ok(&[
        "nft",
        "add chain inet foreign input { type filter hook input priority 10 ; }",
    ]);
    let foreign_table = host.ok(&["nft", "list", "table", "inet", "foreign"]);
    let foreign_bridge = link_summary(&host, "br-foreign");

    let d = Daemon::start(&host, &s, &cfg, &[]);
    assert!(bridge_ok(&host, "br-dr", "10.87.0.1"));

    // 1. The bridge is deleted: recreated with its address, up, and the servers rebound to it.
    let before = drift_lines(&d).len();
    host.ok(&["ip", "link", "del", "br-dr"]);
    repaired_within("deleted bridge", &d, || {
        bridge_ok(&host, "br-dr", "10.87.0.1")
    });
    assert!(
        wait_for(2, || logged_after(&d, before, "drift: create bridge br-dr")
            .then_some(()))
        .is_some(),
        "the repair names the action; log:\n{}",
        d.log_text()
    );
    let guest = host.plug("br-dr", "vdr0");
    // DHCP answers on the recreated bridge.
    d.lease_all(&guest, 2, 0x41);
    guest.ok(&["ip", "addr", "add", "10.87.0.50/24", "dev", "eth0"]);
    let tftp = guest.run(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "tftp://10.87.0.1/boot.ipxe",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&tftp.stdout),
        "#!ipxe\nboot\n",
        "TFTP after repair: {}",
        stderr(&tftp)
    );
    let http = guest.run(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "http://10.87.0.1:8069/undionly.kpxe",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&http.stdout),
        "bios-loader",
        "HTTP after repair: {}",
        stderr(&http)
    );

    // 2. The address is deleted: added back.
    let before = drift_lines(&d).len();
    host.ok(&["ip", "addr", "del", "10.87.0.1/24", "dev", "br-dr"]);
    repaired_within("deleted address", &d, || {
        bridge_ok(&host, "br-dr", "10.87.0.1")
    });
    assert!(
        wait_for(2, || logged_after(&d, before, "add address 10.87.0.1/24")
            .then_some(()))
        .is_some()
    );
    let tftp = guest.run(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "tftp://10.87.0.1/boot.ipxe",
    ]);
    assert!(
        tftp.status.success(),
        "TFTP after the address came back: {}",
        stderr(&tftp)
    );

    // 3. A firewall reload flushes the ruleset: our table comes back; a foreign table made
    //    afterwards (as the reload would) is left exactly as it is.
    let before = drift_lines(&d).len();
    host.ok(&["nft", "flush ruleset"]);
    host.ok(&["nft", "add table inet foreign"]);
    host.ok(&[
        "nft",
        "add chain inet foreign input { type filter hook input priority 10 ; }",
    ]);
    repaired_within("flushed ruleset", &d, || {
        nft_tables(&host).contains("table inet hostagent")
    });
    assert!(wait_for(2, || logged_after(
        &d,
        before,
        "nftables table inet hostagent"
    )
    .then_some(()))
    .is_some());

    // 4. ip_forward is switched off: on again.
    let before = drift_lines(&d).len();
    host.ok(&["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]);
    repaired_within("ip_forward=0", &d, || {
        host.read("/proc/sys/net/ipv4/ip_forward") == "1"
    });
    assert!(
        wait_for(2, || logged_after(&d, before, "net.ipv4.ip_forward 0 → 1")
            .then_some(()))
        .is_some()
    );

    // 5. The bridge MAC is changed: the configured one is back.
    let mac = host
        .link("br-dr")
        .and_then(|l| l["address"].as_str().map(String::from))
        .expect("mac");
    let before = drift_lines(&d).len();
    host.ok(&["ip", "link", "set", "br-dr", "address", "02:11:22:33:44:55"]);
    repaired_within("changed MAC", &d, || {
        host.link("br-dr")
            .is_some_and(|l| l["address"].as_str() == Some(mac.as_str()))
    });
    assert!(wait_for(2, || logged_after(&d, before, "set MAC of br-dr")
        .then_some(()))
    .is_some());

    // Nothing foreign was touched through all of it.
    assert_eq!(
        host.ok(&["nft", "list", "table", "inet", "foreign"]),
        foreign_table,
        "foreign table changed"
    );
    assert_eq!(
        link_summary(&host, "br-foreign"),
        foreign_bridge,
        "foreign bridge changed"
    );
    // And the host is settled: one more period passes without any repair.
    let settled = drift_lines(&d).len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        drift_lines(&d).len(),
        settled,
        "repairs keep happening on a settled host:\n{}",
        d.log_text()
    );
}

#[test]
fn a_foreign_device_taking_the_bridge_name_is_left_alone() {
    let host = Netns::new("drfor");
    let s = Scratch::new();
    let cfg = s.config(config(
        "br-df",
        "10.88.0.1/24",
        "10.88.0.100-10.88.0.199",
        false,
    ));
    let d = Daemon::start(&host, &s, &cfg, &[]);
    // Someone deletes our bridge and makes their own of the same name, in one go.
    host.ok(&[
        "sh",
        "-c",
        "ip link del br-df && ip link add br-df type bridge",
    ]);
    let theirs = link_summary(&host, "br-df");
    // The conflict is reported.
    d.wait_log("drift: cannot repair", 5);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        link_summary(&host, "br-df"),
        theirs,
        "the foreign bridge was changed"
    );
    // Reported once, not every second.
    let reports = d.log_text().matches("drift: cannot repair").count();
    assert_eq!(reports, 1, "log:\n{}", d.log_text());
}

/// `systemctl reload` right after `start` reaches a daemon that is still applying: the SIGHUP is
/// held and acted on once it serves, never the default action (exit) half-way through start-up.
#[test]
fn a_sighup_during_start_up_is_held_and_reloads_once_serving() {
    let host = Netns::new("drhup0");
    let s = Scratch::new();
    let cfg = s.config(config(
        "br-dh0",
        "10.89.2.1/24",
        "10.89.2.100-10.89.2.199",
        false,
    ));
    // The first apply step is logged before the bridge exists and long before the socket opens.
    let d = Daemon::start_signalled_at(&host, &s, &cfg, "apply action=", libc::SIGHUP);
    d.wait_log("config reloaded", 10);
    assert_eq!(d.liveness(), "the daemon is still running");
    assert!(bridge_ok(&host, "br-dh0", "10.89.2.1"));
}

#[test]
fn after_sighup_drift_repairs_to_the_new_config() {
    let host = Netns::new("drhup");
    let s = Scratch::new();
    let cfg = s.config(config(
        "br-dh",
        "10.89.0.1/24",
        "10.89.0.100-10.89.0.199",
        false,
    ));
    let d = Daemon::start(&host, &s, &cfg, &[]);
    s.config(config(
        "br-dh",
        "10.89.1.1/24",
        "10.89.1.100-10.89.1.199",
        false,
    ));
    d.signal(libc::SIGHUP);
    d.wait_log("config reloaded", 10);
    assert!(bridge_ok(&host, "br-dh", "10.89.1.1"));
    host.ok(&["ip", "link", "del", "br-dh"]);
    repaired_within("bridge deleted after a reload", &d, || {
        bridge_ok(&host, "br-dh", "10.89.1.1")
    });
    let l = host.link("br-dh").expect("bridge");
    assert!(
        !has_addr(&l, "10.89.0.1"),
        "the old config's address came back: {l}"
    );
    let guest = host.plug("br-dh", "vdh0");
    let acks = d.lease_all(&guest, 1, 0x42);
    assert!(
        acks[0].1.starts_with("10.89.1."),
        "lease from the new range: {:?}",
        acks
    );
}
