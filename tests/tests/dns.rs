//! DNS for guests, end to end: `hostagent run` in a namespace, guests in namespaces of their own
//! getting their leases from busybox udhcpc and ISC dhclient, each client writing the resolver
//! it was handed into a resolv.conf, and names asked through it with `dig` and with the guest's
//! own libc resolver (`getent`). Lease names, reservations, `[[guest]]`s and `[[network.dns.host]]`
//! entries resolve, forward and reverse; foreign names are forwarded to a dnsmasq in an
//! "upstream" namespace (also through systemd-resolved's list when resolv.conf names only the
//! stub); a released lease stops resolving; the counters move; outsiders are refused; port 53
//! is bound again on a recreated bridge after the privilege drop.

use std::collections::BTreeMap;
use std::path::Path;

use hostagent_tests::daemon::{plug_guest, Daemon};
use hostagent_tests::dns::{dig, getent_hosts, nameservers, search, Dhclient, Udhcpc, Upstream};
use hostagent_tests::{stdout, wait_for, Netns, Scratch};
use serde_json::Value;

/// A nat network `lab` on `NET.0/24` with DHCP, a reservation `bastion` (.10), a `[[guest]]`
/// `web` (.20) and two extra names, `nas` (.50) and `api.k8s` (.51). libvirt's in-process test
/// driver takes the guest, so no libvirtd is needed.
fn config(bridge: &str, net: &str, dns_extra: &str) -> String {
    format!(
        "state_dir = \"/state\"\n\
         [[network]]\nname = \"lab\"\nmode = \"nat\"\nbridge = \"{bridge}\"\naddress = \"{net}.1/24\"\n\
         [network.dhcp]\nrange = \"{net}.100-{net}.199\"\nlease_time = \"1h\"\n\
         [[network.dhcp.host]]\nmac = \"52:54:00:00:aa:10\"\nip = \"{net}.10\"\nname = \"bastion\"\n\
         [network.dns]\n{dns_extra}\
         [[network.dns.host]]\nname = \"nas\"\nip = \"{net}.50\"\n\
         [[network.dns.host]]\nname = \"api.k8s\"\nip = \"{net}.51\"\n\
         [libvirt]\nuri = \"test:///default\"\nvirt_type = \"qemu\"\n\
         [[guest]]\nname = \"web\"\nnetwork = \"lab\"\nip = \"{net}.20\"\n"
    )
}

/// `hostagent status --json`: the DNS counters of network `lab`.
fn dns_status(host: &Netns, s: &Scratch, cfg: &str) -> Value {
    let out = host.hostagent(&["-c", cfg, "--root", s.root_str(), "status", "--json"]);
    assert!(
        out.status.success(),
        "status: {}",
        hostagent_tests::stderr(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("status json");
    v["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["network"] == "lab")
        .map(|s| s["dns"].clone())
        .filter(|d| !d.is_null())
        .unwrap_or_else(|| panic!("no DNS status for lab: {v}"))
}

fn counter(status: &Value, name: &str) -> u64 {
    status[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {status}"))
}

/// `dig @server NAME A` until it answers `want` (a lease is published within a moment of its
/// ACK), or the last answer's text.
fn resolves(guest: &Netns, server: &str, name: &str, want: &str) -> Result<(), String> {
    let at = format!("@{server}");
    let mut last = String::new();
    wait_for(5, || {
        let d = dig(guest, &[&at, name, "A"]);
        if d.status == "NOERROR" && d.data() == [want] && d.has_flag("aa") {
            return Some(());
        }
        last = d.text;
        None
    })
    .ok_or(last)
}

/// `dig @server NAME` until it says NXDOMAIN (a released lease is withdrawn within a moment).
fn stops_resolving(ns: &Netns, server: &str, args: &[&str]) -> Result<(), String> {
    let at = format!("@{server}");
    let mut argv = vec![at.as_str()];
    argv.extend_from_slice(args);
    let mut last = String::new();
    wait_for(5, || {
        let d = dig(ns, &argv);
        if d.status == "NXDOMAIN" {
            return Some(());
        }
        last = d.text;
        None
    })
    .ok_or(last)
}

/// Everything one guest can ask: every name bare and qualified, then the reverse of each
/// address, with dig at the server of its resolv.conf and with its libc resolver.
fn check_names(guest: &Netns, resolv_conf: &Path, names: &BTreeMap<&str, String>, d: &Daemon) {
    let servers = nameservers(resolv_conf);
    let [server] = servers.as_slice() else {
        panic!(
            "one resolver expected in {}: {servers:?}",
            resolv_conf.display()
        );
    };
    for (name, ip) in names {
        // Bare names are local only with one label: `api.k8s` alone is a name of the world's.
        let bare = (!name.contains('.')).then(|| name.to_string());
        for q in bare.into_iter().chain([format!("{name}.lab")]) {
            resolves(guest, server, &q, ip).unwrap_or_else(|text| {
                panic!("{q} should be {ip}:\n{text}\nagent log:\n{}", d.log_text())
            });
        }
        let d = dig(guest, &[&format!("@{server}"), "-x", ip]);
        assert_eq!(
            d.data(),
            [format!("{name}.lab.")],
            "reverse of {ip}:\n{}",
            d.text
        );
        assert!(d.has_flag("aa"), "{}", d.text);
        // The guest's own resolver: search domain from DHCP, then the server.
        let line = getent_hosts(guest, resolv_conf, &format!("{name}.lab"))
            .unwrap_or_else(|| panic!("libc does not resolve {name}.lab"));
        assert!(
            line.starts_with(&format!("{ip} ")),
            "getent hosts {name}.lab: {line}"
        );
        let line = getent_hosts(guest, resolv_conf, name)
            .unwrap_or_else(|| panic!("libc does not resolve {name}"));
        assert!(
            line.starts_with(&format!("{ip} ")),
            "getent hosts {name}: {line}"
        );
        let back = getent_hosts(guest, resolv_conf, ip)
            .unwrap_or_else(|| panic!("libc does not resolve {ip} back"));
        assert_eq!(
            back.split_whitespace().nth(1),
            Some(format!("{name}.lab").as_str()),
            "getent hosts {ip}: {back}"
        );
    }
}

#[test]
fn udhcpc_and_dhclient_guests_resolve_leases_reservations_guests_and_extra_names_both_ways() {
    let host = Netns::new("dnsn");
    let s = Scratch::new();
    let net = "10.91.0";
    let cfg = s.config(&config("br-dnsn", net, ""));
    let d = Daemon::start(&host, &s, &cfg, &[]);
    let before = dns_status(&host, &s, &cfg);

    let alpha = plug_guest(&host, "br-dnsn", "vdnsa");
    let udhcpc = Udhcpc::start(&alpha, s.root(), "alpha", "alpha");
    let alpha_ip = udhcpc
        .wait_bound(30)
        .unwrap_or_else(|| panic!("udhcpc got no lease; log:\n{}", d.log_text()));
    let beta = plug_guest(&host, "br-dnsn", "vdnsb");
    let dhclient = Dhclient::new(&beta, s.root(), "beta", "beta");
    dhclient
        .run(&["-1"])
        .unwrap_or_else(|e| panic!("dhclient: {e}\nlog:\n{}", d.log_text()));
    let beta_ip = dhclient.files.bound_ip().expect("dhclient bound");

    // Option 6 is the gateway (the network's DNS server runs), option 15 its domain.
    for files in [&udhcpc.files, &dhclient.files] {
        assert_eq!(
            nameservers(&files.resolv_conf),
            [format!("{net}.1")],
            "{}",
            files.resolv_conf.display()
        );
        assert_eq!(search(&files.resolv_conf), ["lab"]);
    }

    let names: BTreeMap<&str, String> = [
        ("alpha", alpha_ip.clone()),
        ("beta", beta_ip.clone()),
        ("bastion", format!("{net}.10")),
        ("web", format!("{net}.20")),
        ("nas", format!("{net}.50")),
        ("api.k8s", format!("{net}.51")),
    ]
    .into_iter()
    .collect();
    // Each guest: its own name, the other's (a lease name), the reservation's, the guest's and
    // the extra ones.
    check_names(&alpha, &udhcpc.files.resolv_conf, &names, &d);
    check_names(&beta, &dhclient.files.resolv_conf, &names, &d);

    // A name of the domain nobody has: NXDOMAIN from here, not forwarded.
    let at = format!("@{net}.1");
    let miss = dig(&alpha, &[&at, "nobody.lab", "A"]);
    assert_eq!(miss.status, "NXDOMAIN", "{}", miss.text);
    assert!(miss.has_flag("aa"));

    let after = dns_status(&host, &s, &cfg);
    assert_eq!(after["domain"], "lab");
    assert_eq!(after["listen"][0], format!("{net}.1:53"));
    assert_eq!(
        counter(&after, "names"),
        6,
        "bastion, web, nas, api.k8s and two leases: {after}"
    );
    for c in ["queries", "answered_local", "nxdomain"] {
        assert!(
            counter(&after, c) > counter(&before, c),
            "{c} did not move: {before} → {after}"
        );
    }
    assert_eq!(counter(&after, "forwarded"), 0, "{after}");
    assert_eq!(counter(&after, "refused"), 0, "{after}");
}

#[test]
fn foreign_names_are_forwarded_upstream_also_through_systemd_resolveds_list_and_outsiders_are_refused(
) {
    let host = Netns::new("dnsf");
    let s = Scratch::new();
    let net = "10.92.0";
    let up = Upstream::start(
        &host,
        s.root(),
        "10.92.1.1/24",
        "10.92.1.2/24",
        &[
            "--address=/upstream.test/10.9.9.9",
            "--address=/second.test/10.9.9.8",
        ],
    );
    std::fs::create_dir_all(s.file("etc")).expect("etc");
    std::fs::write(s.file("etc/resolv.conf"), "nameserver 10.92.1.2\n").expect("resolv.conf");
    let cfg = s.config(&config("br-dnsf", net, ""));
    let mut d = Daemon::start(&host, &s, &cfg, &[]);
    let alpha = plug_guest(&host, "br-dnsf", "vdnsf");
    let udhcpc = Udhcpc::start(&alpha, s.root(), "alpha", "alpha");
    let alpha_ip = udhcpc
        .wait_bound(30)
        .unwrap_or_else(|| panic!("udhcpc got no lease; log:\n{}", d.log_text()));
    let resolv = &udhcpc.files.resolv_conf;
    let at = format!("@{net}.1");

    // Forwarded (not authoritative), then the same question from the cache.
    let first = dig(&alpha, &[&at, "upstream.test", "A"]);
    assert_eq!(
        first.data(),
        ["10.9.9.9"],
        "{}\nlog:\n{}",
        first.text,
        d.log_text()
    );
    assert!(!first.has_flag("aa"), "{}", first.text);
    let line = getent_hosts(&alpha, resolv, "upstream.test").expect("libc resolves a foreign name");
    assert!(line.starts_with("10.9.9.9 "), "{line}");
    let again = dig(&alpha, &[&at, "upstream.test", "A"]);
    assert_eq!(again.data(), ["10.9.9.9"], "{}", again.text);
    assert_eq!(up.queries_for("A", "upstream.test"), 1, "{}", up.log_text());
    // A name of the local domain never reaches the upstream.
    assert_eq!(dig(&alpha, &[&at, "nobody.lab"]).status, "NXDOMAIN");
    assert_eq!(up.queries_for("A", "nobody.lab"), 0, "{}", up.log_text());
    let status = dns_status(&host, &s, &cfg);
    assert_eq!(status["upstreams"][0], "10.92.1.2:53", "{status}");
    // Each question the upstream saw (libc asked AAAA too) was one forward, and no more.
    assert_eq!(
        counter(&status, "forwarded") as usize,
        up.queries(),
        "{status}\n{}",
        up.log_text()
    );
    assert!(counter(&status, "cache_hits") >= 1, "{status}");

    // A query from outside the network's subnet (an address the host routes to the bridge,
    // but not the network's): REFUSED, nothing forwarded.
    alpha.ok(&["ip", "addr", "add", "10.93.0.5/24", "dev", "eth0"]);
    host.ok(&["ip", "route", "add", "10.93.0.0/24", "dev", "br-dnsf"]);
    let outsider = dig(&alpha, &["-b", "10.93.0.5", &at, "second.test", "A"]);
    assert_eq!(outsider.status, "REFUSED", "{}", outsider.text);
    assert!(outsider.answers.is_empty());
    assert_eq!(up.queries_for("A", "second.test"), 0);
    assert!(counter(&dns_status(&host, &s, &cfg), "refused") >= 1);

    // systemd-resolved's layout: resolv.conf names only the stub, the real upstreams are in
    // /run/systemd/resolve/resolv.conf. SIGHUP reads them again.
    std::fs::write(
        s.file("etc/resolv.conf"),
        "nameserver 127.0.0.53\noptions edns0 trust-ad\n",
    )
    .expect("stub");
    std::fs::create_dir_all(s.file("run/systemd/resolve")).expect("dir");
    std::fs::write(
        s.file("run/systemd/resolve/resolv.conf"),
        "nameserver 10.92.1.2\n",
    )
    .expect("resolved");
    d.signal(libc::SIGHUP);
    assert!(
        wait_for(10, || d
            .log_text()
            .contains("config reloaded")
            .then_some(()))
        .is_some(),
        "{}",
        d.log_text()
    );
    let second = wait_for(5, || {
        let r = dig(&alpha, &[&at, "second.test", "A"]);
        (r.data() == ["10.9.9.8"]).then_some(r)
    });
    assert!(
        second.is_some(),
        "not forwarded through resolved's list; log:\n{}",
        d.log_text()
    );
    assert_eq!(up.queries_for("A", "second.test"), 1, "{}", up.log_text());
    assert_eq!(
        dns_status(&host, &s, &cfg)["upstreams"][0],
        "10.92.1.2:53",
        "the stub is not used when resolved's list is there"
    );
    // The restarted servers still know the lease.
    resolves(&alpha, &format!("{net}.1"), "alpha.lab", &alpha_ip)
        .unwrap_or_else(|t| panic!("lease name lost over the reload:\n{t}"));
    assert!(d.wait_exit(0).is_none(), "daemon still running");
}

#[test]
fn a_released_lease_stops_resolving_for_udhcpc_and_dhclient() {
    let host = Netns::new("dnsr");
    let s = Scratch::new();
    let net = "10.94.0";
    let cfg = s.config(&config("br-dnsr", net, ""));
    let d = Daemon::start(&host, &s, &cfg, &[]);
    // A probe with a fixed address of the subnet asks; the guests come and go.
    let probe = plug_guest(&host, "br-dnsr", "vdnsp");
    probe.ok(&["ip", "addr", "add", &format!("{net}.250/24"), "dev", "eth0"]);
    let server = format!("{net}.1");

    let alpha = plug_guest(&host, "br-dnsr", "vdnsa");
    let udhcpc = Udhcpc::start(&alpha, s.root(), "alpha", "alpha");
    let alpha_ip = udhcpc.wait_bound(30).expect("udhcpc lease");
    let beta = plug_guest(&host, "br-dnsr", "vdnsb");
    let dhclient = Dhclient::new(&beta, s.root(), "beta", "beta");
    dhclient.run(&["-1"]).expect("dhclient lease");
    let beta_ip = dhclient.files.bound_ip().expect("dhclient bound");
    for (name, ip) in [("alpha", &alpha_ip), ("beta", &beta_ip)] {
        resolves(&probe, &server, name, ip)
            .unwrap_or_else(|t| panic!("{name} before release:\n{t}\n{}", d.log_text()));
    }

    udhcpc.release();
    stops_resolving(&probe, &server, &["alpha.lab", "A"])
        .unwrap_or_else(|t| panic!("alpha still resolves after RELEASE:\n{t}\n{}", d.log_text()));
    stops_resolving(&probe, &server, &["-x", &alpha_ip])
        .unwrap_or_else(|t| panic!("alpha's address still points back:\n{t}"));
    resolves(&probe, &server, "beta", &beta_ip).expect("beta unaffected");

    dhclient.run(&["-r"]).expect("dhclient -r");
    stops_resolving(&probe, &server, &["beta.lab", "A"]).unwrap_or_else(|t| {
        panic!(
            "beta still resolves after dhclient -r:\n{t}\n{}",
            d.log_text()
        )
    });
    // The config's names stay.
    resolves(&probe, &server, "bastion", &format!("{net}.10")).expect("bastion stays");
}

#[test]
fn dns_is_bound_again_on_a_recreated_bridge_after_the_privilege_drop() {
    let host = Netns::new("dnsd");
    let s = Scratch::new();
    let net = "10.95.0";
    let cfg = s.config(&config("br-dnsd", net, ""));
    let d = Daemon::start(&host, &s, &cfg, &[]);
    assert!(
        wait_for(5, || d
            .log_text()
            .contains("privileges dropped")
            .then_some(()))
        .is_some(),
        "{}",
        d.log_text()
    );
    let probe = plug_guest(&host, "br-dnsd", "vdnsp");
    probe.ok(&["ip", "addr", "add", &format!("{net}.250/24"), "dev", "eth0"]);
    let server = format!("{net}.1");
    resolves(&probe, &server, "nas", &format!("{net}.50")).expect("before");

    host.ok(&["ip", "link", "del", "br-dnsd"]);
    let back = wait_for(10, || {
        d.log_text()
            .contains("restarting its servers on the new device")
            .then_some(())
    });
    assert!(
        back.is_some(),
        "bridge not recreated; log:\n{}",
        d.log_text()
    );
    // The port left with the old bridge: plug it into the new one.
    host.ok(&["ip", "link", "set", "vdnsp", "master", "br-dnsd"]);
    assert!(wait_for(15, || stdout(
        &host.run(&["bridge", "-j", "link", "show", "dev", "vdnsp"])
    )
    .contains("\"state\":\"forwarding\"")
    .then_some(()))
    .is_some());
    resolves(&probe, &server, "nas", &format!("{net}.50")).unwrap_or_else(|t| {
        panic!(
            "no DNS on the recreated bridge:\n{t}\nlog:\n{}",
            d.log_text()
        )
    });
    let log = d.log_text();
    assert!(
        !log.contains("ERROR"),
        "no error rebinding after the drop:\n{log}"
    );
}

#[test]
fn plan_and_check_warn_when_guests_would_get_no_resolver_and_dns_off_hands_out_the_hosts() {
    let host = Netns::new("dnso");
    let s = Scratch::new();
    let net = "10.96.0";
    std::fs::create_dir_all(s.file("etc")).expect("etc");
    std::fs::write(s.file("etc/resolv.conf"), "nameserver 127.0.0.53\n").expect("stub only");
    let off = s.config(&config("br-dnso", net, "enable = false\n"));
    let args = |cmd: &str| {
        [
            "-c".to_string(),
            off.clone(),
            "--root".into(),
            s.root_str().into(),
            cmd.into(),
        ]
    };
    let run = |cmd: &[&str]| {
        let mut argv: Vec<String> = args(cmd[0]).to_vec();
        argv.extend(cmd[1..].iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        host.hostagent(&argv)
    };
    let plan = stdout(&run(&["plan"]));
    assert!(
        plan.contains("warning: network lab: DHCP hands out no DNS server")
            && plan.contains("127.0.0.53"),
        "{plan}"
    );
    let json: Value = serde_json::from_str(&stdout(&run(&["plan", "--json"]))).expect("plan json");
    assert_eq!(json["warnings"][0]["network"], "lab", "{json}");
    let check = stdout(&run(&["check"]));
    assert!(
        check
            .lines()
            .any(|l| l.starts_with("WARN") && l.contains("dns on lab")),
        "{check}"
    );

    // With DNS off the guests get what they got before it existed: the host's resolvers.
    std::fs::write(s.file("etc/resolv.conf"), "nameserver 192.0.2.53\n").expect("resolv.conf");
    let d = Daemon::start(&host, &s, &off, &[]);
    let guest = plug_guest(&host, "br-dnso", "vdnso");
    let udhcpc = Udhcpc::start(&guest, s.root(), "g", "g");
    udhcpc.wait_bound(30).expect("lease");
    assert_eq!(nameservers(&udhcpc.files.resolv_conf), ["192.0.2.53"]);
    assert!(
        search(&udhcpc.files.resolv_conf).is_empty(),
        "no domain unless configured"
    );
    let no_server = dig(&guest, &[&format!("@{net}.1"), "nas.lab"]);
    assert_eq!(
        no_server.status, "NO ANSWER",
        "nothing listens: {}",
        no_server.text
    );
    drop(d);

    // DNS on: no warning, and check says what guests are told.
    let on = s.config(&config("br-dnso", net, ""));
    let check = stdout(&host.hostagent(&["-c", &on, "--root", s.root_str(), "check"]));
    assert!(
        check.lines().any(|l| l.starts_with("PASS")
            && l.contains("dns on lab")
            && l.contains(&format!("guests are told {net}.1"))),
        "{check}"
    );
    let plan = stdout(&host.hostagent(&["-c", &on, "--root", s.root_str(), "plan"]));
    assert!(!plan.contains("warning:"), "{plan}");
}
