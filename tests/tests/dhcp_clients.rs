//! Real DHCP clients nobody here wrote (busybox udhcpc, ISC dhclient) against the real
//! `hostagent run`, each in its own namespace: leases, option values, renewal, reboot, release,
//! static reservations.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;

use hostagent_tests::daemon::{leases, plug_guest, Daemon};
use hostagent_tests::{run_ok, wait_for, Netns, Scratch};

fn config(bridge: &str, net: &str) -> String {
    format!(
        "state_dir = \"/state\"\n\
         [[network]]\nname = \"lab\"\nmode = \"nat\"\nbridge = \"{bridge}\"\naddress = \"{net}.1/24\"\n\
         [network.dhcp]\nrange = \"{net}.100-{net}.199\"\nlease_time = \"1h\"\n\
         dns = [\"{net}.1\", \"9.9.9.9\"]\ndomain = \"lab.test\"\n\
         [[network.dhcp.host]]\nmac = \"52:54:00:00:00:10\"\nip = \"{net}.10\"\nname = \"bastion\"\n"
    )
}

/// A hook script that appends `reason key=value ...` to `record` and configures the address (so
/// renewals can be unicast). The record path is written in: dhclient clears the environment.
fn script(s: &Scratch, name: &str, record: &Path, body: &str) -> String {
    let p = s.file(name);
    std::fs::write(
        &p,
        format!("#!/bin/sh\nRECORD='{}'\n{body}\n", record.display()),
    )
    .expect("write script");
    run_ok(std::process::Command::new("chmod").arg("+x").arg(&p));
    p.to_str().expect("utf-8").to_string()
}

fn records(path: &Path, reason: &str) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| l.split_whitespace().next() == Some(reason))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    ns.read(&format!("/sys/class/net/{dev}/address"))
}

fn has_lease(host: &Netns, s: &Scratch, cfg: &str, mac: &str) -> Option<String> {
    leases(host, s, cfg)
        .into_iter()
        .find(|(n, m, _)| n == "lab" && m == mac)
        .map(|(_, _, ip)| ip)
}

const UDHCPC: &str = r#"echo "$1 ip=$ip mask=$mask router=$router dns=$(echo $dns | tr ' ' ,) lease=$lease domain=$domain serverid=$serverid" >> "$RECORD"
case "$1" in bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface" ;; deconfig) ip addr flush dev "$interface" ;; esac"#;

#[test]
fn udhcpc_gets_renews_and_releases_a_lease_from_hostagent_run() {
    let host = Netns::new("udc");
    let s = Scratch::new();
    let cfg = s.config(&config("br-udc", "10.84.0"));
    let d = Daemon::start(&host, &s, &cfg, &[]);
    let guest = plug_guest(&host, "br-udc", "vudc0");
    let mac = mac_of(&guest, "eth0");
    let record = s.file("udhcpc.record");
    let sh = script(&s, "udhcpc.sh", &record, UDHCPC);

    let mut child = guest
        .cmd(&[
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-f",
            "-t",
            "10",
            "-T",
            "2",
            "-s",
            &sh,
            "-x",
            "hostname:guest1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn udhcpc");
    let bound = wait_for(30, || records(&record, "bound").pop())
        .unwrap_or_else(|| panic!("udhcpc got no lease; agent log:\n{}", d.log_text()));
    let ip = bound["ip"].clone();
    assert!(
        ip.starts_with("10.84.0.1") && ip.len() == "10.84.0.1xx".len(),
        "{ip} outside the range"
    );
    assert_eq!(bound["mask"], "24");
    assert_eq!(bound["router"], "10.84.0.1");
    assert_eq!(bound["dns"], "10.84.0.1,9.9.9.9");
    assert_eq!(bound["lease"], "3600");
    assert_eq!(bound["domain"], "lab.test");
    assert_eq!(bound["serverid"], "10.84.0.1");
    assert_eq!(
        has_lease(&host, &s, &cfg, &mac).as_deref(),
        Some(ip.as_str()),
        "`hostagent leases` lists it"
    );

    // SIGUSR1: renew now (unicast from its address; the ACK goes back to ciaddr at chaddr).
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    let renewed = wait_for(20, || records(&record, "renew").pop())
        .unwrap_or_else(|| panic!("udhcpc did not renew; agent log:\n{}", d.log_text()));
    assert_eq!(renewed["ip"], ip);

    // SIGUSR2: release.
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR2) };
    assert!(
        wait_for(15, || has_lease(&host, &s, &cfg, &mac)
            .is_none()
            .then_some(()))
        .is_some(),
        "lease still listed after RELEASE; agent log:\n{}",
        d.log_text()
    );
    let _ = child.kill();
    let _ = child.wait();
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

const DHCLIENT: &str = r#"echo "$reason ip=$new_ip_address mask=$new_subnet_mask routers=$new_routers dns=$(echo $new_domain_name_servers | tr ' ' ,) lease=$new_dhcp_lease_time host=$new_host_name domain=$new_domain_name" >> "$RECORD"
case "$reason" in BOUND|RENEW|REBIND|REBOOT) ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface" ;; esac
exit 0"#;

#[test]
fn dhclient_static_host_gets_its_reservation_reboots_and_releases() {
    let host = Netns::new("dcl");
    let s = Scratch::new();
    let cfg = s.config(&config("br-dcl", "10.85.0"));
    let d = Daemon::start(&host, &s, &cfg, &[]);
    let guest = plug_guest(&host, "br-dcl", "vdcl0");
    guest.ok(&["ip", "link", "set", "eth0", "address", "52:54:00:00:00:10"]);
    let record = s.file("dhclient.record");
    let sh = script(&s, "dhclient.sh", &record, DHCLIENT);
    let lf = s.file("dhclient.leases");
    let pf = s.file("dhclient.pid");
    let (lf, pf) = (lf.to_str().expect("utf-8"), pf.to_str().expect("utf-8"));
    let dhclient = |extra: &[&str]| {
        let mut argv = vec!["timeout", "40", "dhclient", "-4", "-v"];
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&["-lf", lf, "-pf", pf, "-sf", &sh, "eth0"]);
        let out = guest.run(&argv);
        assert!(
            out.status.success(),
            "dhclient {extra:?}: {}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log_text()
        );
    };

    dhclient(&["-1"]);
    let bound = records(&record, "BOUND").pop().expect("dhclient bound");
    assert_eq!(bound["ip"], "10.85.0.10", "the static reservation");
    assert_eq!(bound["host"], "bastion");
    assert_eq!(bound["mask"], "255.255.255.0");
    assert_eq!(bound["routers"], "10.85.0.1");
    assert_eq!(bound["dns"], "10.85.0.1,9.9.9.9");
    assert_eq!(bound["lease"], "3600");
    assert_eq!(bound["domain"], "lab.test");
    assert_eq!(
        has_lease(&host, &s, &cfg, "52:54:00:00:00:10").as_deref(),
        Some("10.85.0.10")
    );

    // Stop it without releasing, start again: INIT-REBOOT (REQUEST with option 50, no server id).
    dhclient(&["-x"]);
    dhclient(&["-1"]);
    let reboot = records(&record, "REBOOT")
        .pop()
        .expect("dhclient rebooted into its lease");
    assert_eq!(reboot["ip"], "10.85.0.10");

    dhclient(&["-r"]);
    assert!(
        wait_for(15, || has_lease(&host, &s, &cfg, "52:54:00:00:00:10")
            .is_none()
            .then_some(()))
        .is_some(),
        "lease still listed after dhclient -r; agent log:\n{}",
        d.log_text()
    );
}
