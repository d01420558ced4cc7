//! `address6`, `nat6`, `[network.ra]`, `[network.dhcp6]`: each rule with its position and hint,
//! and what reaches netcfg and the router advertiser.

use std::time::Duration;

use netcfg::Ipv6Spec;

use super::{errors, ok, one_error, with, BASE};

/// BASE with line 6 `address6 = "fd00:122::1/64"` (value at column 12).
fn v6(extra: &str) -> String {
    with(&format!("address6 = \"fd00:122::1/64\"\n{extra}"))
}

#[test]
fn address6_reaches_netcfg_and_the_advertiser_with_rfc_defaults() {
    let m = ok(&v6(""));
    let spec = &m.desired().networks[0];
    assert_eq!(
        spec.ipv6,
        Some(Ipv6Spec {
            address: "fd00:122::1/64".parse().unwrap(),
            nat6: false,
            dhcp6: false,
        })
    );
    let ras = m.ra_configs();
    assert_eq!(ras.len(), 1);
    let r = &ras[0];
    assert_eq!((r.interface.as_str(), r.default_router), ("br-lab", true));
    assert_eq!(r.mac, m.networks[0].mac);
    assert_eq!(r.intervals, ra::Intervals::default());
    assert_eq!(r.dhcp6, ra::Dhcp6Mode::None);
    assert!(r.rdnss.is_empty(), "no DNS server runs on the gateway yet");
    assert_eq!(r.mtu, None);
}

#[test]
fn isolated_networks_advertise_without_a_default_route_and_mtu_is_advertised() {
    let text =
        BASE.replace("\"nat\"", "\"isolated\"") + "address6 = \"fd00:1::1/64\"\nmtu = 9000\n";
    let r = &ok(&text).ra_configs()[0];
    assert!(!r.default_router);
    assert_eq!(r.mtu, Some(9000));
    assert_eq!(r.advertisement(false).router_lifetime, 0);
}

#[test]
fn ra_can_be_turned_off_and_its_intervals_set() {
    let off = ok(&v6("[network.ra]\nenable = false\n"));
    assert!(off.ra_configs().is_empty());
    assert!(
        off.desired().networks[0].ipv6.is_some(),
        "the address stays"
    );
    let fast = ok(&v6(
        "[network.ra]\nmin_interval = \"3s\"\nmax_interval = \"4s\"\n",
    ));
    assert_eq!(
        fast.ra_configs()[0].intervals,
        ra::Intervals {
            min: Duration::from_secs(3),
            max: Duration::from_secs(4)
        }
    );
    one_error(
        &v6("[network.ra]\nmax_interval = \"2s\"\n"),
        8,
        16,
        "outside 4 s to 1800 s",
    );
    one_error(
        &v6("[network.ra]\nmin_interval = \"500s\"\n"),
        8,
        16,
        "at most 0.75",
    );
    one_error(
        &v6("[network.ra]\nmax_interval = \"soon\"\n"),
        8,
        16,
        "soon",
    );
}

#[test]
fn dhcp6_decides_the_m_and_o_flags() {
    let stateful = ok(&v6(
        "[network.dhcp6]\nrange = \"fd00:122::100-fd00:122::1ff\"\n",
    ));
    assert_eq!(stateful.ra_configs()[0].dhcp6, ra::Dhcp6Mode::Stateful);
    assert!(stateful.desired().networks[0].ipv6.as_ref().unwrap().dhcp6);
    let ra = stateful.ra_configs()[0].advertisement(false);
    assert!(ra.managed && ra.other);
    let stateless = ok(&v6("[network.dhcp6]\n"));
    assert_eq!(stateless.ra_configs()[0].dhcp6, ra::Dhcp6Mode::Stateless);
    let ra = stateless.ra_configs()[0].advertisement(false);
    assert!(!ra.managed && ra.other);
}

#[test]
fn dhcp6_ranges_are_placed_in_the_prefix_and_leave_the_gateway_out() {
    let at = |range: &str, fragment: &str| {
        one_error(
            &v6(&format!("[network.dhcp6]\nrange = \"{range}\"\n")),
            8,
            9,
            fragment,
        )
    };
    at("fd00:122::100", "not an IPv6 address range");
    at("fd00:122::200-fd00:122::100", "ends before it starts");
    at("fd00:999::1-fd00:999::9", "not inside the prefix");
    let d = at("fd00:122::1-fd00:122::9", "covers the gateway");
    assert!(d.hint.unwrap().contains("fd00:122::100-fd00:122::1ff"));
}

#[test]
fn address6_must_be_a_routable_unicast_address_with_a_sane_prefix() {
    let at = |value: &str, fragment: &str| {
        one_error(&with(&format!("address6 = \"{value}\"\n")), 6, 12, fragment)
    };
    at("fd00:122::1", "no prefix length");
    at("192.168.1.1/24", "not an IPv6 address");
    at("fe80::1/64", "link-local");
    at("ff02::1/64", "multicast");
    at("::1/64", "not a host address");
    at("::ffff:10.0.0.1/120", "IPv4-mapped");
    at("fd00:122::1/127", "prefix length /127");
    at("fd00::1/16", "prefix length /16");
    let d = at("fd00:122::/64", "subnet-router anycast");
    assert!(d.hint.unwrap().contains("fd00:122::1/64"));
}

#[test]
fn ipv6_keys_need_address6_and_a_mode_that_uses_them() {
    one_error(
        &with("nat6 = true\n"),
        6,
        8,
        "needs the network to have an address6",
    );
    one_error(
        &with("[network.ra]\nenable = true\n"),
        6,
        1,
        "needs the network to have an address6",
    );
    one_error(
        &with("[network.dhcp6]\n"),
        6,
        1,
        "needs the network to have an address6",
    );
    let routed = BASE.replace("\"nat\"", "\"routed\"");
    one_error(
        &format!("{routed}address6 = \"fd00:1::1/64\"\nnat6 = true\n"),
        7,
        8,
        "only for mode = \"nat\"",
    );
    let bridge = "[[network]]\nname = \"lan\"\nmode = \"bridge\"\nbridge = \"br0\"\naddress6 = \"fd00:1::1/64\"\n";
    one_error(bridge, 5, 12, "not for mode = \"bridge\"");
}

#[test]
fn ipv6_needs_an_mtu_of_at_least_1280() {
    one_error(&v6("mtu = 1279\n"), 7, 7, "below 1280");
    ok(&v6("mtu = 1280\n"));
}

#[test]
fn nat6_reaches_netcfg() {
    let m = ok(&v6("nat6 = true\n"));
    assert!(m.desired().networks[0].ipv6.as_ref().unwrap().nat6);
}

#[test]
fn two_networks_may_not_share_or_overlap_a_prefix() {
    let two = format!(
        "{}address6 = \"fd00:122::1/64\"\n[[network]]\nname = \"two\"\nmode = \"routed\"\nbridge = \"br-two\"\naddress = \"10.78.0.1/24\"\naddress6 = \"fd00:122::2/48\"\n",
        BASE
    );
    let errs = errors(&two);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].line, errs[0].column), (12, 12));
    assert!(
        errs[0].message.contains("overlaps fd00:122::/64"),
        "{}",
        errs[0]
    );
    assert!(errs[0].hint.as_deref().unwrap().contains("line 6"));
    ok(&two.replace("fd00:122::2/48", "fd00:123::1/64"));
}
