//! DNS for guests, end to end: `hostagent run` in a namespace, guests in namespaces of their own
//! getting their leases from busybox udhcpc and ISC dhclient, each client writing the resolver
//! it was handed into a resolv.conf, and names asked through it with `dig` and with the guest's
//! own libc resolver (`getent`). Lease names, reservations, `[[guest]]`s and `[[network.dns.host]]`
//! entries resolve, forward and reverse; foreign names are forwarded to a dnsmasq in an
//! "upstream" namespace (also through systemd-resolved's list when resolv.conf names only the
//! stub); a released lease stops resolving; the counters move; outsiders are refused; port 53
//! is bound again on a recreated bridge after the privilege drop; the host's resolv.conf files are
//! followed as they change.

use std::collections::BTreeMap;
use std::path::Path;

use hostagent_tests::cli::{counter, Cli};
use hostagent_tests::config::{Config, Dhcp, Dns, Guest, Network};
use hostagent_tests::daemon::Daemon;
use hostagent_tests::dns::Upstream;
use hostagent_tests::Scratch;
use serde_json::Value;
use testkit::dhcp_client::{Dhclient, Udhcpc};
use testkit::dns::{dig, getent_hosts, nameservers, search};
use testkit::{stdout, wait_for, Netns};

/// A nat network `lab` on `NET.0/24` with DHCP, a reservation `bastion` (.10), a `[[guest]]`
/// `web` (.20) and two extra names, `nas` (.50) and `api.k8s` (.51). libvirt's in-process test
/// driver takes the guest, so no libvirtd is needed.
fn config(bridge: &str, net: &str, dns: Dns) -> Config {
    config_of("nat", bridge, net, dns)
}

/// The same network in another mode.
fn config_of(mode: &str, bridge: &str, net: &str, dns: Dns) -> Config {
    Config::new("/state")
        .libvirt("test:///default", Some("qemu"))
        .network(
            Network::new("lab", mode, bridge)
                .address(&format!("{net}.1/24"))
                .dhcp(
                    Dhcp::new(&format!("{net}.100-{net}.199"))
                        .lease_time("1h")
                        .host("52:54:00:00:aa:10", &format!("{net}.10"), Some("bastion")),
                )
                .dns(
                    dns.host("nas", &format!("{net}.50"))
                        .host("api.k8s", &format!("{net}.51")),
                ),
        )
        .guest(Guest::new("web", "lab").ip(&format!("{net}.20")))
}

/// `status --json`: the DNS server of network `lab`.
fn dns_status(cli: &Cli) -> Value {
    let dns = cli.server("lab")["dns"].clone();
    assert!(!dns.is_null(), "no DNS status for lab: {}", cli.status());
    dns
}

/// `dig @server NAME A` until it answers `want` with authority (a lease is published within a
/// moment of its ACK); the last answer's text otherwise.
fn resolves(ns: &Netns, server: &str, name: &str, want: &str) -> Result<(), String> {
    let at = format!("@{server}");
    let mut last = String::new();
    wait_for(5, || {
        let d = dig(Some(ns), &[&at, name, "A"]);
        if d.status == "NOERROR" && d.data() == [want] && d.has_flag("aa") {
            return Some(());
        }
        last = d.text;
        None
    })
    .ok_or(last)
}

/// `dig @server ARGS` until it says NXDOMAIN (a released lease is withdrawn within a moment).
fn stops_resolving(ns: &Netns, server: &str, args: &[&str]) -> Result<(), String> {
    let at = format!("@{server}");
    let mut argv = vec![at.as_str()];
    argv.extend_from_slice(args);
    let mut last = String::new();
    wait_for(5, || {
        let d = dig(Some(ns), &argv);
        if d.status == "NXDOMAIN" {
            return Some(());
        }
        last = d.text;
        None
    })
    .ok_or(last)
}

/// Everything one guest can ask: every name (bare when it has one label, and qualified), then
/// the reverse of each address, with dig at the server of its resolv.conf and with its libc
/// resolver.
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
        let back = dig(Some(guest), &[&format!("@{server}"), "-x", ip]);
        assert_eq!(
            back.data(),
            [format!("{name}.lab.")],
            "reverse of {ip}:\n{}",
            back.text
        );
        assert!(back.has_flag("aa"), "{}", back.text);
        // The guest's own resolver: the search domain DHCP gave it, then the server.
        for q in [format!("{name}.lab"), name.to_string()] {
            let line = getent_hosts(guest, resolv_conf, &q)
                .unwrap_or_else(|| panic!("libc does not resolve {q}"));
            assert!(
                line.starts_with(&format!("{ip} ")),
                "getent hosts {q}: {line}"
            );
        }
        let line = getent_hosts(guest, resolv_conf, ip)
            .unwrap_or_else(|| panic!("libc does not resolve {ip} back"));
        assert_eq!(
            line.split_whitespace().nth(1),
            Some(format!("{name}.lab").as_str()),
            "getent hosts {ip}: {line}"
        );
    }
}

#[test]
fn udhcpc_and_dhclient_guests_resolve_leases_reservations_guests_and_extra_names_both_ways() {
    let host = Netns::new("dnsn");
    let s = Scratch::new();
    let net = "10.91.0";
    let cfg = s.config(config("br-dnsn", net, Dns::new()));
    let cli = Cli::new(&host, &s, &cfg);
    let d = Daemon::start(&host, &s, &cfg, &[]);
    let before = dns_status(&cli);

    let alpha = host.plug("br-dnsn", "vdnsa");
    let udhcpc = Udhcpc::resolving(&alpha, s.root(), "alpha").args(&["-x", "hostname:alpha"]);
    let alpha_ip = udhcpc
        .once()
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", d.log_text()))["ip"]
        .clone();
    let beta = host.plug("br-dnsn", "vdnsb");
    let dhclient = Dhclient::resolving(&beta, s.root(), "beta", "beta");
    let out = dhclient.run(&["-1"]);
    assert!(
        out.status.success(),
        "dhclient: {}\nlog:\n{}",
        testkit::stderr(&out),
        d.log_text()
    );
    let beta_ip = dhclient.records("BOUND").pop().expect("dhclient bound")["ip"].clone();

    // Option 6 is the gateway (the network's DNS server runs), option 15 its domain.
    for resolv_conf in [udhcpc.resolv_conf(), dhclient.resolv_conf()] {
        assert_eq!(
            nameservers(resolv_conf),
            [format!("{net}.1")],
            "{}",
            resolv_conf.display()
        );
        assert_eq!(search(resolv_conf), ["lab"]);
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
    check_names(&alpha, udhcpc.resolv_conf(), &names, &d);
    check_names(&beta, dhclient.resolv_conf(), &names, &d);

    // A name of the domain nobody has: NXDOMAIN from here, not forwarded.
    let miss = dig(Some(&alpha), &[&format!("@{net}.1"), "nobody.lab", "A"]);
    assert_eq!(miss.status, "NXDOMAIN", "{}", miss.text);
    assert!(miss.has_flag("aa"));

    let after = dns_status(&cli);
    assert_eq!(after["domain"], "lab");
    assert_eq!(after["listen"][0], format!("{net}.1:53"));
    assert_eq!(
        counter(&after, &["names"]),
        6,
        "bastion, web, nas, api.k8s and two leases: {after}"
    );
    for c in ["queries", "answered_local", "nxdomain"] {
        assert!(
            counter(&after, &[c]) > counter(&before, &[c]),
            "{c} did not move: {before} → {after}"
        );
    }
    assert_eq!(counter(&after, &["forwarded"]), 0, "{after}");
    assert_eq!(counter(&after, &["refused"]), 0, "{after}");
    // The text form has them too, on the network's `dns` line.
    let text = cli.ok(&["status"]);
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("dns ")
            && l.contains("answered_local=")
            && l.contains("domain=\"lab\"")),
        "{text}"
    );
}

#[test]
fn foreign_names_are_forwarded_upstream_also_through_systemd_resolveds_list_and_outsiders_are_refused(
) {
    let host = Netns::new("dnsf");
    let s = Scratch::new();
    let net = "10.92.0";
    let up = Upstream::start(
        &host,
        "10.92.1.1/24",
        "10.92.1.2/24",
        &[
            "--address=/upstream.test/10.9.9.9",
            "--address=/second.test/10.9.9.8",
        ],
    );
    let up = &up.dnsmasq;
    s.write("etc/resolv.conf", "nameserver 10.92.1.2\n");
    let cfg = s.config(config("br-dnsf", net, Dns::new()));
    let cli = Cli::new(&host, &s, &cfg);
    let mut d = Daemon::start(&host, &s, &cfg, &[]);
    let alpha = host.plug("br-dnsf", "vdnsf");
    let udhcpc = Udhcpc::resolving(&alpha, s.root(), "alpha").args(&["-x", "hostname:alpha"]);
    let alpha_ip = udhcpc
        .once()
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", d.log_text()))["ip"]
        .clone();
    let resolv = udhcpc.resolv_conf();
    let at = format!("@{net}.1");

    // Forwarded (not authoritative), then the same question from the cache.
    let first = dig(Some(&alpha), &[&at, "upstream.test", "A"]);
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
    let again = dig(Some(&alpha), &[&at, "upstream.test", "A"]);
    assert_eq!(again.data(), ["10.9.9.9"], "{}", again.text);
    assert_eq!(up.queries_of("A", "upstream.test"), 1, "{}", up.log_text());
    // A name of the local domain never reaches the upstream.
    assert_eq!(dig(Some(&alpha), &[&at, "nobody.lab"]).status, "NXDOMAIN");
    assert_eq!(up.queries_for("nobody.lab"), 0, "{}", up.log_text());
    let status = dns_status(&cli);
    assert_eq!(status["upstreams"][0], "10.92.1.2:53", "{status}");
    // Each question the upstream saw (libc asked AAAA too) was one forward, and no more.
    assert_eq!(
        counter(&status, &["forwarded"]) as usize,
        up.queries(),
        "{status}\n{}",
        up.log_text()
    );
    assert!(counter(&status, &["cache_hits"]) >= 1, "{status}");

    // A query from outside the network's subnet (an address the host routes to the bridge,
    // but not the network's): REFUSED, nothing forwarded.
    alpha.ok(&["ip", "addr", "add", "10.93.0.5/24", "dev", "eth0"]);
    host.ok(&["ip", "route", "add", "10.93.0.0/24", "dev", "br-dnsf"]);
    let outsider = dig(Some(&alpha), &["-b", "10.93.0.5", &at, "second.test", "A"]);
    assert_eq!(outsider.status, "REFUSED", "{}", outsider.text);
    assert!(outsider.answers.is_empty());
    assert_eq!(up.queries_for("second.test"), 0);
    assert!(counter(&dns_status(&cli), &["refused"]) >= 1);

    // systemd-resolved's layout: resolv.conf names only the stub, the real upstreams are in
    // /run/systemd/resolve/resolv.conf. SIGHUP reads them again.
    s.write(
        "etc/resolv.conf",
        "nameserver 127.0.0.53\noptions edns0 trust-ad\n",
    );
    s.write("run/systemd/resolve/resolv.conf", "nameserver 10.92.1.2\n");
    d.signal(libc::SIGHUP);
    d.wait_log("config reloaded", 10);
    let second = wait_for(5, || {
        let r = dig(Some(&alpha), &[&at, "second.test", "A"]);
        (r.data() == ["10.9.9.8"]).then_some(r)
    });
    assert!(
        second.is_some(),
        "not forwarded through resolved's list; log:\n{}",
        d.log_text()
    );
    assert_eq!(up.queries_of("A", "second.test"), 1, "{}", up.log_text());
    assert_eq!(
        dns_status(&cli)["upstreams"][0],
        "10.92.1.2:53",
        "the stub is not used when resolved's list is there"
    );
    // The restarted servers still know the lease.
    resolves(&alpha, &format!("{net}.1"), "alpha.lab", &alpha_ip)
        .unwrap_or_else(|t| panic!("lease name lost over the reload:\n{t}"));
    d.assert_alive();
}

/// A host's resolvers change under a running daemon (DHCP on the uplink renews, a VPN comes up,
/// systemd-resolved learns new servers): the server follows the files, no SIGHUP needed, and
/// says so in the log; when no resolver is left it fails forwarded names (SERVFAIL) until one
/// comes back.
#[test]
fn the_hosts_resolvers_are_followed_as_they_change_without_a_reload() {
    let host = Netns::new("dnsw");
    let s = Scratch::new();
    let net = "10.98.0";
    let up = Upstream::start(
        &host,
        "10.98.1.1/24",
        "10.98.1.2/24",
        &[
            "--address=/first.test/10.9.9.1",
            "--address=/second.test/10.9.9.2",
            "--address=/third.test/10.9.9.3",
        ],
    );
    // At start the host has no resolver at all.
    let cfg = s.config(config("br-dnsw", net, Dns::new()));
    let cli = Cli::new(&host, &s, &cfg);
    let d = Daemon::start(&host, &s, &cfg, &[]);
    let probe = host.plug("br-dnsw", "vdnsw");
    probe.ok(&["ip", "addr", "add", &format!("{net}.250/24"), "dev", "eth0"]);
    let at = format!("@{net}.1");
    let none = dig(Some(&probe), &[&at, "first.test", "A"]);
    assert_eq!(none.status, "SERVFAIL", "{}", none.text);
    assert_eq!(up.dnsmasq.queries(), 0);

    let answers = |name: &str, want: &str| {
        wait_for(10, || {
            let r = dig(Some(&probe), &[&at, name, "A"]);
            (r.data() == [want]).then_some(())
        })
        .is_some()
    };
    // A plain resolv.conf appears.
    s.write("etc/resolv.conf", "nameserver 10.98.1.2\n");
    assert!(
        answers("second.test", "10.9.9.2"),
        "not forwarded once resolv.conf named a server; log:\n{}",
        d.log_text()
    );
    assert_eq!(dns_status(&cli)["upstreams"][0], "10.98.1.2:53");
    d.wait_log("the host's resolvers changed", 1);

    // systemd-resolved takes over: the stub in resolv.conf, the real list beside it.
    s.write("etc/resolv.conf", "nameserver 127.0.0.53\n");
    s.write("run/systemd/resolve/resolv.conf", "nameserver 10.98.1.2\n");
    assert!(
        answers("third.test", "10.9.9.3"),
        "not forwarded through resolved's list; log:\n{}",
        d.log_text()
    );
    assert_eq!(
        dns_status(&cli)["upstreams"][0],
        "10.98.1.2:53",
        "the stub is not used when resolved's list is there"
    );

    // Every resolver gone: once the server has seen it, forwarded names fail (first.test was
    // never asked, so no cached answer hides it), local names still answer.
    std::fs::remove_file(s.root().join("etc/resolv.conf")).expect("rm resolv.conf");
    std::fs::remove_file(s.root().join("run/systemd/resolve/resolv.conf")).expect("rm resolved");
    d.wait_log("none is left", 10);
    let failed = dig(Some(&probe), &[&at, "first.test", "A"]);
    assert_eq!(failed.status, "SERVFAIL", "{}", failed.text);
    assert_eq!(
        up.dnsmasq.queries_for("first.test"),
        0,
        "{}",
        up.dnsmasq.log_text()
    );
    let status = dns_status(&cli);
    assert!(
        status["upstreams"].as_array().is_some_and(|u| u.is_empty()),
        "{status}"
    );
    resolves(&probe, &format!("{net}.1"), "nas", &format!("{net}.50"))
        .unwrap_or_else(|t| panic!("{t}"));
    assert!(
        !d.log_text().contains("config reloaded"),
        "no reload was asked for"
    );
}

#[test]
fn an_isolated_network_answers_its_own_names_and_forwards_nothing() {
    let host = Netns::new("dnsi");
    let s = Scratch::new();
    let net = "10.97.0";
    let up = Upstream::start(
        &host,
        "10.97.1.1/24",
        "10.97.1.2/24",
        &["--address=/upstream.test/10.9.9.9"],
    );
    // The host's resolver is reachable: the isolated network still does not use it.
    s.write("etc/resolv.conf", "nameserver 10.97.1.2\n");
    let cfg = s.config(config_of("isolated", "br-dnsi", net, Dns::new()));
    let cli = Cli::new(&host, &s, &cfg);
    let d = Daemon::start(&host, &s, &cfg, &[]);
    let probe = host.plug("br-dnsi", "vdnsp");
    probe.ok(&["ip", "addr", "add", &format!("{net}.250/24"), "dev", "eth0"]);
    let server = format!("{net}.1");
    resolves(&probe, &server, "nas", &format!("{net}.50"))
        .unwrap_or_else(|t| panic!("{t}\nlog:\n{}", d.log_text()));
    let foreign = dig(Some(&probe), &[&format!("@{server}"), "upstream.test", "A"]);
    assert_eq!(foreign.status, "REFUSED", "{}", foreign.text);
    assert_eq!(up.dnsmasq.queries(), 0, "{}", up.dnsmasq.log_text());
    let status = dns_status(&cli);
    assert!(
        status["upstreams"].as_array().is_some_and(|u| u.is_empty()),
        "{status}"
    );
    assert_eq!(counter(&status, &["upstream_failures"]), 0, "{status}");
}

#[test]
fn a_released_lease_stops_resolving_for_udhcpc_and_dhclient() {
    let host = Netns::new("dnsr");
    let s = Scratch::new();
    let net = "10.94.0";
    let cfg = s.config(config("br-dnsr", net, Dns::new()));
    let d = Daemon::start(&host, &s, &cfg, &[]);
    // A probe with a fixed address of the subnet asks; the guests come and go.
    let probe = host.plug("br-dnsr", "vdnsp");
    probe.ok(&["ip", "addr", "add", &format!("{net}.250/24"), "dev", "eth0"]);
    let server = format!("{net}.1");

    let alpha = host.plug("br-dnsr", "vdnsa");
    let udhcpc = Udhcpc::resolving(&alpha, s.root(), "alpha")
        .args(&["-x", "hostname:alpha"])
        .spawn();
    let alpha_ip = udhcpc.wait_event("bound", 30).expect("udhcpc lease")["ip"].clone();
    let beta = host.plug("br-dnsr", "vdnsb");
    let dhclient = Dhclient::resolving(&beta, s.root(), "beta", "beta");
    assert!(dhclient.run(&["-1"]).status.success(), "dhclient lease");
    let beta_ip = dhclient.records("BOUND").pop().expect("dhclient bound")["ip"].clone();
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

    assert!(dhclient.run(&["-r"]).status.success(), "dhclient -r");
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
    let cfg = s.config(config("br-dnsd", net, Dns::new()));
    let d = Daemon::start(&host, &s, &cfg, &[]);
    d.wait_log("privileges dropped", 5);
    let probe = host.plug("br-dnsd", "vdnsp");
    probe.ok(&["ip", "addr", "add", &format!("{net}.250/24"), "dev", "eth0"]);
    let server = format!("{net}.1");
    resolves(&probe, &server, "nas", &format!("{net}.50")).expect("before");

    host.ok(&["ip", "link", "del", "br-dnsd"]);
    d.wait_log("restarting its servers on the new device", 10);
    // The port left with the old bridge: plug it into the new one.
    host.ok(&["ip", "link", "set", "vdnsp", "master", "br-dnsd"]);
    host.wait_forwarding("vdnsp");
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
    s.write("etc/resolv.conf", "nameserver 127.0.0.53\n");
    let off = s.config(config("br-dnso", net, Dns::new().enable(false)));
    let cli = Cli::new(&host, &s, &off);
    let (_, plan) = cli.plan();
    assert!(
        plan.contains("warning: network lab: DHCP hands out no DNS server")
            && plan.contains("127.0.0.53"),
        "{plan}"
    );
    let plan_json: Value =
        serde_json::from_str(&stdout(&cli.run(&["plan", "--json"]))).expect("plan --json");
    assert_eq!(plan_json["warnings"][0]["network"], "lab", "{plan_json}");
    let check = stdout(&cli.run(&["check"]));
    assert!(
        check
            .lines()
            .any(|l| l.starts_with("WARN") && l.contains("dns on lab")),
        "{check}"
    );

    // With DNS off the guests get what they got before it existed: the host's resolvers.
    s.write("etc/resolv.conf", "nameserver 192.0.2.53\n");
    let d = Daemon::start(&host, &s, &off, &[]);
    let guest = host.plug("br-dnso", "vdnso");
    let udhcpc = Udhcpc::resolving(&guest, s.root(), "g");
    udhcpc
        .once()
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", d.log_text()));
    assert_eq!(nameservers(udhcpc.resolv_conf()), ["192.0.2.53"]);
    assert!(
        search(udhcpc.resolv_conf()).is_empty(),
        "no domain unless configured"
    );
    let no_server = dig(Some(&guest), &[&format!("@{net}.1"), "nas.lab"]);
    assert_eq!(
        no_server.status, "NO ANSWER",
        "nothing listens: {}",
        no_server.text
    );
    drop(d);

    // DNS on: no warning, and check says what guests are told.
    let on = s.config(config("br-dnso", net, Dns::new()));
    let cli = Cli::new(&host, &s, &on);
    let check = stdout(&cli.run(&["check"]));
    let told = format!("guests are told {net}.1");
    assert!(
        check
            .lines()
            .any(|l| l.starts_with("PASS") && l.contains("dns on lab") && l.contains(&told)),
        "{check}"
    );
    let (_, plan) = cli.plan();
    assert!(!plan.contains("warning:"), "{plan}");
}
