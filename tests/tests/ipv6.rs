//! IPv6 on a network, with the real binary in fresh namespaces: the bridge's address and
//! sysctls (and `down` putting them back), router advertisements read by the guest kernel's
//! own SLAAC and by `rdisc6`, forwarding per mode (routed, nat untranslated, nat6 masqueraded,
//! isolated), drift repair, and the goodbye advertisement on a clean stop.
//!
//! ```text
//!  guest ns (SLAAC)          host ns (runs hostagent)                        upstream ns
//!  eth0 fd00:77::…/64 ──veth── vg0 ∈ br-lab fd00:77::1/64   up0 2001:db8:1::1/64 ──veth── eth0 2001:db8:1::2/64
//!  default via fe80::(br-lab)
//! ```

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use hostagent_tests::cli::{counter, Cli};
use hostagent_tests::config::{Config, Dns, Network, Ra};
use hostagent_tests::daemon::Daemon;
use hostagent_tests::ipv6::{
    addresses, default_routes, rdisc6, rdisc6_field, slaac_guest, wait_global_address,
    wait_link_local,
};
use hostagent_tests::Scratch;
use testkit::dns::dig;
use testkit::sock::{tcp_connect, EchoServer};
use testkit::{wait_for, Netns};

const PREFIX: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0);
const GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
const UPLINK: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const UPSTREAM: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
/// How long a guest may take from its first solicitation to a usable SLAAC address: the
/// bridge's link-local address needs carrier and DAD (~1 s), the guest's own two DADs (~1 s
/// each), and a solicitation lost before the advertiser opened its socket is retried after 4 s.
const SLAAC_SECS: u64 = 20;

struct Lab {
    scratch: Scratch,
    config: String,
    host: Netns,
    upstream: Netns,
}

impl Lab {
    /// Namespaces, the uplink with its IPv6 address, and the config with `net`.
    fn new(net: Network) -> Lab {
        Lab::with(Config::new("/var/lib/hostagent").network(net))
    }

    fn with(config: Config) -> Lab {
        let scratch = Scratch::new();
        let config = scratch.config(config);
        let host = Netns::new("v6h");
        let upstream = Netns::new("v6u");
        host.veth_to("up0", &upstream, "eth0");
        // nodad: the uplink is test scaffolding, not what is tested; its DAD would only wait.
        host.ok(&[
            "ip",
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            "up0",
            "nodad",
        ]);
        upstream.ok(&[
            "ip",
            "addr",
            "add",
            "2001:db8:1::2/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        Lab {
            scratch,
            config,
            host,
            upstream,
        }
    }

    fn cli(&self) -> Cli<'_> {
        Cli::new(&self.host, &self.scratch, &self.config)
    }

    fn daemon(&self) -> Daemon {
        Daemon::start(&self.host, &self.scratch, &self.config, &[])
    }

    /// A guest on the bridge that has autoconfigured: its address in the prefix.
    fn guest(&self, d: &Daemon, port: &str) -> (Netns, Ipv6Addr) {
        let guest = slaac_guest(&self.host, "br-lab", port);
        let addr = wait_global_address(&guest, "eth0", PREFIX, SLAAC_SECS).unwrap_or_else(|| {
            panic!(
                "the guest formed no address in {PREFIX}/64 from the RA: {:?}\nlog:\n{}",
                addresses(&guest, "eth0", "global"),
                d.log_text()
            )
        });
        (guest, addr)
    }

    /// The bridge's own link-local address (the router's address in the guests' routes).
    fn bridge_link_local(&self) -> Ipv6Addr {
        wait_link_local(&self.host, "br-lab", 10).expect("br-lab has a link-local address")
    }

    /// The upstream learns that the guests' prefix is behind the host (what routed IPv6 needs).
    fn upstream_routes_back(&self) {
        self.upstream.ok(&[
            "ip",
            "-6",
            "route",
            "add",
            "fd00:77::/64",
            "via",
            "2001:db8:1::1",
        ]);
    }

    /// The address the upstream sees when the guest connects to it over TCP (None: refused).
    fn source_seen_upstream(&self, guest: &Netns) -> Option<Ipv6Addr> {
        let to = SocketAddr::from((UPSTREAM, 7070));
        let server = EchoServer::tcp(&self.upstream, to);
        let connected = tcp_connect(guest, to).is_ok();
        let peer = wait_for(3, || server.peers().first().copied());
        assert_eq!(
            connected,
            peer.is_some(),
            "connected but unseen, or the reverse"
        );
        peer.and_then(|p| match p.ip() {
            std::net::IpAddr::V6(a) => Some(a),
            _ => None,
        })
    }
}

fn lab_net(mode: &str) -> Network {
    Network::new("lab", mode, "br-lab")
        .address("10.77.0.1/24")
        .address6("fd00:77::1/64")
        .stp(false)
}

/// An IPv6 default route via `via` out of `dev`, with routing protocol `proto` ("ra": as if
/// learnt from router advertisements).
fn add_default_route(ns: &Netns, via: &str, dev: &str, proto: &str) {
    ns.ok(&[
        "ip", "-6", "route", "add", "default", "via", via, "dev", dev, "proto", proto,
    ]);
}

fn sysctl(ns: &Netns, key: &str) -> String {
    ns.read(&format!("/proc/sys/{}", key.replace('.', "/")))
}

#[test]
fn a_routed_guest_autoconfigures_from_the_ra_and_reaches_upstream_with_its_own_address() {
    let lab = Lab::new(lab_net("routed").mtu(1400));
    let d = lab.daemon();
    let (guest, addr) = lab.guest(&d, "vg0");
    let router = lab.bridge_link_local();

    // The kernel's SLAAC made the address and a default route via the bridge's link-local.
    assert_eq!(
        default_routes(&guest),
        [(router.to_string(), "eth0".to_string(), "ra".to_string())],
        "log:\n{}",
        d.log_text()
    );
    // The guest took the advertised MTU.
    assert_eq!(sysctl(&guest, "net.ipv6.conf.eth0.mtu"), "1400");

    // rdisc6, a client nobody here wrote, reads the same advertisement.
    let report = rdisc6(&guest, "eth0");
    let field =
        |f: &str| rdisc6_field(&report, f).unwrap_or_else(|| panic!("no {f:?} in:\n{report}"));
    assert_eq!(field("Stateful address conf."), "No", "{report}");
    assert_eq!(field("Stateful other conf."), "No", "{report}");
    assert_eq!(field("Router lifetime"), "1800", "{report}");
    assert_eq!(field("Prefix"), "fd00:77::/64", "{report}");
    assert_eq!(field("On-link"), "Yes", "{report}");
    assert_eq!(field("Autonomous address conf."), "Yes", "{report}");
    assert_eq!(field("MTU"), "1400 bytes", "{report}");
    assert_eq!(
        field("Source link-layer address").to_lowercase(),
        lab.host.mac("br-lab"),
        "{report}"
    );
    assert!(report.contains(&format!("from {router}")), "{report}");

    // Routed: forwarded untranslated; the upstream sees the guest's own address.
    lab.upstream_routes_back();
    assert_eq!(lab.source_seen_upstream(&guest), Some(addr));

    // The counters say what happened.
    let ra = &lab.cli().server("lab")["ra"];
    assert_eq!(ra["interface"], "br-lab", "{ra}");
    assert_eq!(ra["advertising"], true, "{ra}");
    // rdisc6's solicitation at least (the kernel's may have come before the socket opened).
    assert!(counter(ra, &["solicitations"]) >= 1, "{ra}");
    assert!(
        counter(ra, &["multicast_sent"]) + counter(ra, &["unicast_sent"]) >= 2,
        "{ra}"
    );
    assert_eq!(counter(ra, &["invalid"]), 0, "{ra}");
}

#[test]
fn the_ra_names_the_networks_dns_server_as_rdnss_and_it_answers_on_the_ipv6_gateway() {
    let lab = Lab::new(
        lab_net("nat").dns(
            Dns::new()
                .enable(true)
                .forwarders(&[])
                .host("nas", "10.77.0.50")
                .host("nas6", "fd00:77::50"),
        ),
    );
    let d = lab.daemon();
    let (guest, _addr) = lab.guest(&d, "vg0");

    // rdisc6 sees the gateway's IPv6 address as the recursive DNS server (RFC 8106).
    let report = rdisc6(&guest, "eth0");
    assert_eq!(
        rdisc6_field(&report, "Recursive DNS server").as_deref(),
        Some(GATEWAY.to_string().as_str()),
        "{report}"
    );

    // And the server named there answers, over IPv6, from the guest's SLAAC address: its A and
    // AAAA records, and the reverse of an address in the IPv6 prefix (ip6.arpa is local too).
    let at = format!("@{GATEWAY}");
    let a = dig(Some(&guest), &[&at, "nas.lab", "A"]);
    assert_eq!(a.status, "NOERROR", "{}", a.text);
    assert_eq!(a.data(), ["10.77.0.50"], "{}", a.text);
    assert!(a.has_flag("aa"), "{}", a.text);
    let aaaa = dig(Some(&guest), &[&at, "nas6.lab", "AAAA"]);
    assert_eq!(aaaa.data(), ["fd00:77::50"], "{}", aaaa.text);
    let ptr = dig(Some(&guest), &[&at, "-x", "fd00:77::50"]);
    assert_eq!(ptr.data(), ["nas6.lab."], "{}", ptr.text);
    let miss = dig(Some(&guest), &[&at, "-x", "fd00:77::99"]);
    assert_eq!(miss.status, "NXDOMAIN", "{}", miss.text);
}

#[test]
fn nat_forwards_ipv6_untranslated_as_libvirt_and_nat6_masquerades_it() {
    // nat without nat6: libvirt's meaning, the prefix is routed.
    let lab = Lab::new(lab_net("nat"));
    let d = lab.daemon();
    let (guest, addr) = lab.guest(&d, "vg0");
    lab.upstream_routes_back();
    assert_eq!(lab.source_seen_upstream(&guest), Some(addr));
    drop((guest, d, lab));

    // nat6: the upstream sees the host's uplink address, and needs no route back.
    let lab = Lab::new(lab_net("nat").nat6(true));
    let d = lab.daemon();
    let (guest, addr) = lab.guest(&d, "vg0");
    assert_ne!(addr, UPLINK);
    assert_eq!(lab.source_seen_upstream(&guest), Some(UPLINK));
    let ruleset = lab.host.ok(&["nft", "list", "table", "inet", "hostagent"]);
    assert!(
        ruleset.contains("ip6 saddr fd00:77::/64 ip6 daddr != fd00:77::/64 masquerade"),
        "{ruleset}"
    );
}

#[test]
fn an_isolated_guest_gets_the_prefix_on_link_but_no_default_route_and_cannot_get_out() {
    // With a DHCPv6 range configured (the server itself comes later): M and O are advertised.
    let lab = Lab::new(lab_net("isolated").dhcp6(Some("fd00:77::100-fd00:77::1ff")));
    let d = lab.daemon();
    let (guest, _addr) = lab.guest(&d, "vg0");
    let router = lab.bridge_link_local();
    // Router lifetime 0: the kernel keeps the prefix (and the address) but no default route.
    let report = rdisc6(&guest, "eth0");
    assert_eq!(
        rdisc6_field(&report, "Router lifetime").as_deref(),
        Some("0"),
        "{report}"
    );
    assert_eq!(
        rdisc6_field(&report, "Stateful address conf.").as_deref(),
        Some("Yes"),
        "{report}"
    );
    assert_eq!(
        rdisc6_field(&report, "Stateful other conf.").as_deref(),
        Some("Yes"),
        "{report}"
    );
    let table = lab.host.ok(&["nft", "list", "table", "inet", "hostagent"]);
    assert!(
        table.contains("iifname \"br-lab\" udp dport 547 accept"),
        "{table}"
    );
    assert_eq!(
        rdisc6_field(&report, "Prefix").as_deref(),
        Some("fd00:77::/64"),
        "{report}"
    );
    assert_eq!(default_routes(&guest), [], "log:\n{}", d.log_text());
    // The host itself is reachable on the link.
    let echo = EchoServer::tcp(&lab.host, SocketAddr::from((GATEWAY, 7071)));
    assert!(tcp_connect(&guest, SocketAddr::from((GATEWAY, 7071))).is_ok());
    let seen = wait_for(3, || echo.peers().first().copied());
    assert!(seen.is_some(), "the host never saw the guest's connection");
    // Even with a default route of its own the guest gets nowhere: nothing is forwarded.
    add_default_route(&guest, &router.to_string(), "eth0", "static");
    lab.upstream_routes_back();
    assert_eq!(lab.source_seen_upstream(&guest), None);
    // The host does not forward for an isolated network: IPv6 forwarding stays as it was.
    assert_eq!(sysctl(&lab.host, "net.ipv6.conf.all.forwarding"), "0");
}

#[test]
fn apply_sets_the_bridge_up_for_ipv6_and_down_restores_every_sysctl() {
    let lab = Lab::new(lab_net("nat"));
    // A host that disables IPv6 on new interfaces: the bridge still gets it, before its address.
    lab.host
        .ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    let before = [
        "net.ipv6.conf.all.forwarding",
        "net.ipv6.conf.default.disable_ipv6",
        "net.ipv6.conf.default.accept_ra",
        "net.ipv4.ip_forward",
    ]
    .map(|k| (k, sysctl(&lab.host, k)));
    assert_eq!(before[0].1, "0");

    // The host's uplink configured by router advertisements (a default route with proto ra),
    // accepting them only while not forwarding: plan says what forwarding does to it.
    lab.host
        .ok(&["sysctl", "-qw", "net.ipv6.conf.up0.accept_ra=1"]);
    add_default_route(&lab.host, "2001:db8:1::2", "up0", "ra");
    let (code, plan) = lab.cli().plan();
    assert_eq!(code, Some(2), "{plan}");
    assert!(
        plan.contains("up0 has an IPv6 default route from router advertisements and accept_ra = 1")
            && plan.contains("\"net.ipv6.conf.up0.accept_ra\" = 2"),
        "{plan}"
    );
    for step in [
        "set net.ipv6.conf.br-lab.disable_ipv6 (absent) → 0",
        "set net.ipv6.conf.br-lab.accept_ra (absent) → 0",
        "add address fd00:77::1/64 to br-lab (nodad)",
        "set net.ipv6.conf.all.forwarding 0 → 1",
    ] {
        assert!(plan.contains(step), "plan lacks {step:?}:\n{plan}");
    }
    lab.cli().ok(&["apply"]);
    assert_eq!(sysctl(&lab.host, "net.ipv6.conf.br-lab.disable_ipv6"), "0");
    assert_eq!(sysctl(&lab.host, "net.ipv6.conf.br-lab.accept_ra"), "0");
    assert_eq!(sysctl(&lab.host, "net.ipv6.conf.all.forwarding"), "1");
    // nodad: usable at once, though the bridge has no port and so no carrier.
    assert_eq!(addresses(&lab.host, "br-lab", "global"), [(GATEWAY, false)]);
    // A second plan has nothing to do: everything reads back as applied.
    let (code, plan) = lab.cli().plan();
    assert_eq!(code, Some(0), "{plan}");

    let report = lab.cli().ok(&["down"]);
    assert!(!lab.host.has_link("br-lab"), "{report}");
    for (k, v) in &before {
        assert_eq!(&sysctl(&lab.host, k), v, "{k} after down:\n{report}");
    }
    assert!(
        report.contains("net.ipv6.conf.all.forwarding = 1 (restored the previous value 0)"),
        "{report}"
    );
    assert!(!report.contains("left alone"), "{report}");
}

#[test]
fn drift_a_deleted_address6_is_put_back_and_the_ra_resumes_on_a_recreated_bridge() {
    let lab = Lab::new(lab_net("routed"));
    let d = lab.daemon();
    let (guest, _) = lab.guest(&d, "vg0");

    lab.host
        .ok(&["ip", "addr", "del", "fd00:77::1/64", "dev", "br-lab"]);
    let back = wait_for(5, || {
        (addresses(&lab.host, "br-lab", "global") == [(GATEWAY, false)]).then_some(())
    });
    assert!(
        back.is_some(),
        "address6 not put back; log:\n{}",
        d.log_text()
    );
    d.wait_log("drift: add address fd00:77::1/64 to br-lab", 5);

    // The bridge itself goes: the port is released with it. Once the agent made the bridge
    // again and the guest's port is back on it, the advertiser opens a new socket (after the
    // privilege drop: CAP_NET_RAW is kept for this) and the guest hears it again.
    let advertising = |d: &Daemon| d.log_text().matches("RA: advertising").count();
    assert_eq!(advertising(&d), 1, "log:\n{}", d.log_text());
    lab.host.ok(&["ip", "link", "del", "br-lab"]);
    let rebuilt = wait_for(10, || lab.host.has_link("br-lab").then_some(()));
    assert!(
        rebuilt.is_some(),
        "bridge not rebuilt; log:\n{}",
        d.log_text()
    );
    lab.host
        .ok(&["ip", "link", "set", "vg0", "master", "br-lab"]);
    lab.host.wait_forwarding("vg0");
    let reopened = wait_for(15, || (advertising(&d) >= 2).then_some(()));
    assert!(
        reopened.is_some(),
        "advertiser did not come back; log:\n{}",
        d.log_text()
    );
    let ra = &lab.cli().server("lab")["ra"];
    assert_eq!(ra["advertising"], true, "{ra}");
    let report = rdisc6(&guest, "eth0");
    assert_eq!(
        rdisc6_field(&report, "Prefix").as_deref(),
        Some("fd00:77::/64"),
        "{report}"
    );
    assert_eq!(sysctl(&lab.host, "net.ipv6.conf.br-lab.accept_ra"), "0");
}

#[test]
fn a_clean_stop_says_goodbye_and_the_guests_default_route_goes() {
    let lab = Lab::new(lab_net("routed").ra(Ra::new().intervals("3s", "4s")));
    let mut d = lab.daemon();
    let (guest, _) = lab.guest(&d, "vg0");
    assert_eq!(default_routes(&guest).len(), 1, "log:\n{}", d.log_text());
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(10), Some(Some(0)), "log:\n{}", d.log_text());
    // The final advertisement (router lifetime 0) removes the route at once; without it the
    // route would live for its 12 s lifetime.
    let gone = testkit::wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        default_routes(&guest).is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "default route kept: {:?}",
        default_routes(&guest)
    );
    // The prefix stays on-link (only the router goes).
    assert!(!addresses(&guest, "eth0", "global").is_empty());
}

/// An admin's own firewall that drops what it does not accept on input and forward: it trusts
/// loopback and the uplink, and replies; nothing of the guests'.
const INET_FILTER: &str = "table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iifname { \"lo\", \"up0\" } accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
	}
}
";

#[test]
fn behind_an_inet_filter_that_drops_the_guest_is_cut_off_unless_coexist_adds_the_ipv6_accepts() {
    for coexist in ["off", "auto"] {
        let lab = Lab::with(
            Config::new("/var/lib/hostagent")
                .coexist(coexist)
                .network(lab_net("routed")),
        );
        let loaded = lab.host.run_with_stdin(&["nft", "-f", "-"], INET_FILTER);
        assert!(loaded.status.success(), "{}", testkit::stderr(&loaded));
        lab.upstream_routes_back();
        let d = lab.daemon();
        let filter = || lab.host.ok(&["nft", "list", "table", "inet", "filter"]);
        if coexist == "off" {
            // A guest with an address of its own and a route via the gateway: without the
            // accepts it cannot even resolve the router (neighbour discovery is input).
            let guest = lab.host.plug("br-lab", "vg0");
            guest.ok(&[
                "ip",
                "addr",
                "add",
                "fd00:77::99/64",
                "dev",
                "eth0",
                "nodad",
            ]);
            guest.ok(&["ip", "-6", "route", "add", "default", "via", "fd00:77::1"]);
            assert_eq!(lab.source_seen_upstream(&guest), None, "{}", filter());
            assert!(!filter().contains("hostagent"), "{}", filter());
            continue;
        }
        let (guest, addr) = lab.guest(&d, "vg0");
        assert_eq!(lab.source_seen_upstream(&guest), Some(addr), "{}", filter());
        let rules = filter();
        for want in [
            "iifname \"br-lab\" meta l4proto ipv6-icmp accept comment \"hostagent\"",
            "iifname \"br-lab\" ip6 saddr fd00:77::/64 accept comment \"hostagent\"",
            "oifname \"br-lab\" ip6 daddr fd00:77::/64 accept comment \"hostagent\"",
        ] {
            assert!(rules.contains(want), "{want} missing:\n{rules}");
        }
        drop(d);
        lab.cli().ok(&["down"]);
        assert!(
            !filter().contains("hostagent"),
            "down leaves the accepts:\n{}",
            filter()
        );
    }
}

#[test]
fn sighup_keeps_the_router_through_new_ra_settings_and_says_goodbye_when_ra_is_turned_off() {
    let net = |ra: Ra| lab_net("routed").ra(ra);
    let lab = Lab::new(net(Ra::new().intervals("3s", "4s")));
    let d = lab.daemon();
    let (guest, _) = lab.guest(&d, "vg0");
    assert_eq!(default_routes(&guest).len(), 1, "log:\n{}", d.log_text());
    let reload = |ra: Ra| {
        lab.scratch
            .config(Config::new("/var/lib/hostagent").network(net(ra)));
        let before = d.log_text().matches("config reloaded").count();
        d.signal(libc::SIGHUP);
        let done = wait_for(10, || {
            (d.log_text().matches("config reloaded").count() > before).then_some(())
        });
        assert!(done.is_some(), "no reload; log:\n{}", d.log_text());
    };
    // New intervals: the advertiser restarts without a goodbye, the route stays.
    reload(Ra::new().intervals("5s", "8s"));
    let restarted = wait_for(10, || {
        (d.log_text().matches("RA: advertising").count() >= 2).then_some(())
    });
    assert!(restarted.is_some(), "log:\n{}", d.log_text());
    assert_eq!(default_routes(&guest).len(), 1, "log:\n{}", d.log_text());
    // RA off: the last advertisement takes the route away at once (its lifetime was 24 s).
    reload(Ra::new().enable(false));
    let gone = testkit::wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        default_routes(&guest).is_empty().then_some(())
    });
    assert!(gone.is_some(), "route kept; log:\n{}", d.log_text());
    assert!(lab.cli().server("lab")["ra"].is_null());
}
