//! `[network.dns]`: where the server runs by default, its values and their errors (position +
//! hint), and the conversion to `dns::ServerConfig` with the config's names.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use dns::{Source, UpstreamSource};

use super::{errors, ok, one_error, BASE};
use crate::config::model::{DnsHost, Upstream, DEFAULT_DNS_RATE_LIMIT};
use crate::config::{GuestResolvers, Model};

fn net(name: &str, mode: &str, extra: &str) -> String {
    let n = name.len() as u8 + 10;
    format!(
        "[[network]]\nname = \"{name}\"\nmode = \"{mode}\"\nbridge = \"br-{name}\"\naddress = \"10.{n}.0.1/24\"\n{extra}"
    )
}

fn dhcp(name: &str) -> String {
    let n = name.len() as u8 + 10;
    format!("[network.dhcp]\nrange = \"10.{n}.0.100-10.{n}.0.200\"\n")
}

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// BASE (a nat network, lines 1-5) with DHCP (lines 6-7), then `extra` from line 8 on.
fn lab(extra: &str) -> String {
    format!("{BASE}[network.dhcp]\nrange = \"10.77.0.100-10.77.0.200\"\n{extra}")
}

#[test]
fn the_server_runs_where_libvirts_dnsmasq_would_and_isolated_forwards_nothing() {
    let text = [
        net("n", "nat", &dhcp("n")),
        net("rt", "routed", &dhcp("rt")),
        net("iso", "isolated", &dhcp("iso")),
        net("brid", "bridge", &dhcp("brid")),
        net("nodhc", "nat", ""),
    ]
    .concat();
    let m = ok(&text);
    let dns = |name: &str| {
        m.networks
            .iter()
            .find(|n| n.name == name)
            .expect("network")
            .dns
            .clone()
    };
    let n = dns("n").expect("nat with DHCP runs DNS");
    assert_eq!(n.domain, "n");
    assert_eq!(n.upstream, Upstream::HostResolvers);
    assert_eq!(n.rate_limit, DEFAULT_DNS_RATE_LIMIT);
    assert!(n.hosts.is_empty());
    assert_eq!(dns("rt").expect("routed").upstream, Upstream::HostResolvers);
    assert_eq!(dns("iso").expect("isolated").upstream, Upstream::LocalOnly);
    assert_eq!(dns("brid"), None, "a bridge onto a LAN: only when asked");
    assert_eq!(dns("nodhc"), None, "no DHCP: only when asked");
    let d = m.desired();
    let opened = |name: &str| {
        d.networks
            .iter()
            .find(|s| s.name == name)
            .expect("spec")
            .services
            .dns
    };
    assert!(opened("n") && opened("iso") && !opened("brid"));
}

#[test]
fn explicit_values_are_kept_and_the_domain_follows_dhcp_then_the_name() {
    let m = ok(&lab(
        "[network.dns]\ndomain = \"Lab.Example\"\nforwarders = [\"192.0.2.53\", \"192.0.2.54:5353\", \"2001:db8::53\", \"[2001:db8::54]:5353\"]\nrate_limit = 0\n\
         [[network.dns.host]]\nname = \"nas\"\nip = \"10.77.0.50\"\n\
         [[network.dns.host]]\nname = \"api.k8s.lab.example\"\nip = \"fd00::20\"\n\
         [[network.dns.host]]\nname = \"elsewhere\"\nip = \"198.51.100.7\"\n",
    ));
    let d = m.networks[0].dns.clone().expect("dns");
    assert_eq!(d.domain, "lab.example");
    assert_eq!(
        d.upstream,
        Upstream::Forwarders(vec![
            sock("192.0.2.53:53"),
            sock("192.0.2.54:5353"),
            sock("[2001:db8::53]:53"),
            sock("[2001:db8::54]:5353"),
        ])
    );
    assert_eq!(d.rate_limit, 0);
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    assert_eq!(
        d.hosts,
        [
            DnsHost {
                name: "nas".into(),
                ip: ip("10.77.0.50")
            },
            DnsHost {
                name: "api.k8s.lab.example".into(),
                ip: ip("fd00::20")
            },
            DnsHost {
                name: "elsewhere".into(),
                ip: ip("198.51.100.7")
            },
        ]
    );
    let local_only = ok(&lab("[network.dns]\nforwarders = []\n"));
    assert_eq!(
        local_only.networks[0].dns.as_ref().expect("dns").upstream,
        Upstream::LocalOnly
    );
    let from_dhcp = ok(&lab("domain = \"dhcp.example\"\n"));
    assert_eq!(
        from_dhcp.networks[0].dns.as_ref().expect("dns").domain,
        "dhcp.example"
    );
    let underscore = ok(&net("my_lab", "nat", &dhcp("my_lab")));
    assert_eq!(
        underscore.networks[0].dns.as_ref().expect("dns").domain,
        "my-lab"
    );
    let bridged = ok(&net(
        "b",
        "bridge",
        &(dhcp("b") + "[network.dns]\nenable = true\n"),
    ));
    assert!(bridged.networks[0].dns.is_some());
    assert!(bridged.desired().networks[0].services.dns);
    let off = ok(&lab(
        "[network.dns]\nenable = false\ndomain = \"kept.off\"\n",
    ));
    assert_eq!(off.networks[0].dns, None);
}

#[test]
fn each_bad_value_is_reported_at_its_place_with_a_hint() {
    one_error(
        &lab("[network.dns]\ndomain = \"lab..x\"\n"),
        9,
        10,
        "not a valid DNS domain",
    );
    one_error(
        &lab("[network.dns]\nforwarders = [\"dns.example\"]\n"),
        9,
        15,
        "is not an IP address or IP:port",
    );
    one_error(
        &lab("[network.dns]\nforwarders = [\"192.0.2.1:0\"]\n"),
        9,
        15,
        "not a usable DNS server address",
    );
    let d = one_error(
        &lab("[network.dns]\nforwarders = [\"10.77.0.1\"]\n"),
        9,
        15,
        "this network's own DNS server",
    );
    assert!(d.hint.expect("hint").contains("ask itself"));
    one_error(
        &lab("[network.dns]\nforwarders = [\"192.0.2.1\", \"192.0.2.1:53\"]\n"),
        9,
        28,
        "listed twice",
    );
    let d = one_error(
        &lab("[network.dns]\nrate_limit = 5\n"),
        9,
        14,
        "rate_limit = 5 is out of range",
    );
    assert!(d.hint.expect("hint").contains("or 0"));
    one_error(
        &lab("[[network.dns.host]]\nname = \"my_nas\"\nip = \"10.77.0.5\"\n"),
        9,
        8,
        "not a valid host name",
    );
    one_error(
        &lab("[[network.dns.host]]\nname = \"lab\"\nip = \"10.77.0.5\"\n"),
        9,
        8,
        "is the network's DNS domain",
    );
    one_error(
        &lab("[[network.dns.host]]\nname = \"nas\"\nip = \"10.77.0\"\n"),
        10,
        6,
        "is not an IP address",
    );
    one_error(
        &lab("[[network.dns.host]]\nname = \"nas\"\nip = \"224.0.0.1\"\n"),
        10,
        6,
        "not a host address",
    );
    let d = one_error(
        &lab("[[network.dns.host]]\nname = \"nas\"\nip = \"10.77.0.5\"\n[[network.dns.host]]\nname = \"NAS.lab\"\nip = \"10.77.0.5\"\n"),
        12,
        8,
        "written twice",
    );
    assert!(d.hint.expect("hint").contains("line 9"));
    // One name, two addresses: served in turn, not an error.
    ok(&lab(
        "[[network.dns.host]]\nname = \"vip\"\nip = \"10.77.0.5\"\n[[network.dns.host]]\nname = \"vip\"\nip = \"10.77.0.6\"\n",
    ));
}

#[test]
fn the_server_needs_an_address_and_settings_on_a_network_without_it_are_an_error() {
    let l2 = "[[network]]\nname = \"l2\"\nmode = \"bridge\"\nbridge = \"br-l2\"\n";
    one_error(
        &format!("{l2}[network.dns]\nenable = true\n"),
        6,
        10,
        "needs the network to have an address",
    );
    let d = one_error(
        &format!("{BASE}[network.dns]\ndomain = \"x\"\n"),
        6,
        1,
        "DNS is off on this network",
    );
    assert!(d.hint.expect("hint").contains("enable = true"));
    // The name is the default domain only while the server runs.
    let dotted = "[[network]]\nname = \"a..b\"\nmode = \"nat\"\nbridge = \"br-a\"\naddress = \"10.9.0.1/24\"\n[network.dhcp]\nrange = \"10.9.0.10-10.9.0.20\"\n";
    let d = one_error(dotted, 2, 8, "not a DNS domain");
    assert!(d.hint.expect("hint").contains("domain = "));
    ok(&format!("{dotted}[network.dns]\nenable = false\n"));
    ok(&format!("{dotted}[network.dns]\ndomain = \"ab\"\n"));
}

#[test]
fn an_extra_name_that_is_a_reservations_or_a_guests_is_an_error() {
    let text = lab(
        "[[network.dhcp.host]]\nmac = \"52:54:00:00:00:10\"\nip = \"10.77.0.10\"\nname = \"bastion\"\n\
         [[network.dns.host]]\nname = \"bastion.lab\"\nip = \"10.77.0.11\"\n\
         [[network.dns.host]]\nname = \"web\"\nip = \"10.77.0.12\"\n\
         [[guest]]\nname = \"web\"\nnetwork = \"lab\"\n",
    );
    let errs = errors(&text);
    let shown: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
    assert_eq!(errs.len(), 2, "{shown:#?}");
    assert_eq!((errs[0].line, errs[0].column), (13, 8), "{}", shown[0]);
    assert!(
        errs[0]
            .message
            .contains("[[network.dhcp.host]] \"bastion\" (10.77.0.10)"),
        "{}",
        shown[0]
    );
    assert_eq!((errs[1].line, errs[1].column), (16, 8), "{}", shown[1]);
    assert!(errs[1].message.contains("guest \"web\""), "{}", shown[1]);
}

fn services(text: &str, root: &Path) -> (Model, Vec<crate::config::DnsService>) {
    let m = ok(text);
    let s = m.dns_services(root);
    (m, s)
}

#[test]
fn each_running_server_listens_on_its_gateway_with_the_configs_names() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("etc")).expect("mkdir");
    std::fs::write(
        root.path().join("etc/resolv.conf"),
        "nameserver 192.0.2.1\n",
    )
    .expect("resolv.conf");
    let text = lab(
        "[[network.dhcp.host]]\nmac = \"52:54:00:00:00:10\"\nip = \"10.77.0.10\"\nname = \"bastion\"\n\
         [[network.dhcp.host]]\nmac = \"52:54:00:00:00:11\"\nip = \"10.77.0.11\"\n\
         [network.dns]\nrate_limit = 50\n\
         [[network.dns.host]]\nname = \"nas\"\nip = \"10.77.0.50\"\n\
         [[guest]]\nname = \"web\"\nnetwork = \"lab\"\n",
    ) + &net("iso", "isolated", &dhcp("iso"));
    let (m, s) = services(&text, root.path());
    assert_eq!(s.len(), 2);
    let lab = &s[0].config;
    assert_eq!(lab.network, "lab");
    assert_eq!(lab.listen, [sock("10.77.0.1:53")]);
    assert_eq!(lab.bind_device.as_deref(), Some("br-lab"));
    assert_eq!(lab.zone.domain, "lab");
    assert_eq!(lab.zone.ipv4, "10.77.0.0/24".parse().expect("net"));
    assert!(lab.allowed.is_empty(), "the zone's own subnet");
    assert_eq!(lab.upstreams.servers(), [sock("192.0.2.1:53")]);
    let rate = lab.limits.rate.expect("rate limit");
    assert_eq!((rate.per_second, rate.burst), (50.0, 100));
    let names: Vec<(String, String, Source)> = s[0]
        .records
        .iter()
        .map(|r| (r.name.clone(), r.addr.to_string(), r.source))
        .collect();
    let web_ip = m.guests[0].ip.to_string();
    assert_eq!(
        names,
        [
            ("nas".into(), "10.77.0.50".into(), Source::Config),
            ("bastion".into(), "10.77.0.10".into(), Source::StaticHost),
            ("web".into(), web_ip, Source::Guest),
        ]
    );
    assert_eq!(s[0].upstream_problem, None);
    assert_eq!(*s[1].config.upstreams.source(), UpstreamSource::LocalOnly);
    let resolvers = m.guest_resolvers(&m.networks[0], root.path());
    assert_eq!(
        resolvers,
        Some(GuestResolvers::Gateway("10.77.0.1".parse().expect("ip")))
    );
}

#[test]
fn upstreams_follow_systemd_resolved_and_none_found_is_said_not_fatal() {
    let root = tempfile::tempdir().expect("tempdir");
    let (_, s) = services(&lab(""), root.path());
    let problem = s[0]
        .upstream_problem
        .as_deref()
        .expect("no resolv.conf: a problem");
    assert!(problem.contains("forwarders"), "{problem}");
    assert!(s[0].config.upstreams.is_empty());
    // Only the stub: from the host (where the server runs) it answers, so it is used...
    std::fs::create_dir_all(root.path().join("etc")).expect("mkdir");
    std::fs::write(
        root.path().join("etc/resolv.conf"),
        "nameserver 127.0.0.53\n",
    )
    .expect("resolv.conf");
    let (_, s) = services(&lab(""), root.path());
    assert_eq!(s[0].config.upstreams.servers(), [sock("127.0.0.53:53")]);
    // ... unless systemd-resolved's own list is there: then the real upstreams.
    std::fs::create_dir_all(root.path().join("run/systemd/resolve")).expect("mkdir");
    std::fs::write(
        root.path().join("run/systemd/resolve/resolv.conf"),
        "nameserver 198.51.100.1\n",
    )
    .expect("resolved");
    let (_, s) = services(&lab(""), root.path());
    assert_eq!(s[0].upstream_problem, None);
    assert_eq!(s[0].config.upstreams.servers(), [sock("198.51.100.1:53")]);
    assert!(matches!(
        s[0].config.upstreams.source(),
        UpstreamSource::SystemdResolved(_)
    ));
}
