//! One test per validation rule: the problem's exact line:column, its message and a hint.

use super::{errors, one_error, with, BASE};

fn second(name: &str, bridge: &str, address: &str) -> String {
    format!("[[network]]\nname = \"{name}\"\nmode = \"nat\"\nbridge = \"{bridge}\"\naddress = \"{address}\"\n")
}

const DHCP: &str = "[network.dhcp]\nrange = \"10.77.0.100-10.77.0.200\"\n";

// --- TOML and serde level -------------------------------------------------------------------

#[test]
fn toml_syntax_error_is_located() {
    let d = one_error(&with("stp = tru\n"), 6, 7, "");
    assert!(
        d.hint.as_deref().is_some_and(|h| h.contains("stp = true")),
        "{d}"
    );
}

#[test]
fn toml_unclosed_array_is_located() {
    one_error(&with("interfaces = [\"eth1\"\n"), 6, 21, "");
}

#[test]
fn unknown_key_points_at_the_key_and_lists_valid_keys() {
    let d = one_error(
        &with("adress = \"10.0.0.1/24\"\n"),
        6,
        1,
        "unknown key `adress`",
    );
    let hint = d.hint.expect("hint");
    assert!(hint.contains("did you mean `address`"), "{hint}");
    assert!(hint.contains("name, mode, bridge, address"), "{hint}");
}

#[test]
fn unknown_top_level_and_section_keys() {
    one_error("network_name = \"x\"\n", 1, 1, "unknown key `network_name`");
    let d = one_error(
        "[vhost_net]\nzcopytx = true\n",
        2,
        1,
        "unknown key `zcopytx`",
    );
    assert!(d.hint.expect("hint").contains("experimental_zcopytx"));
    one_error(
        &with(&format!("{DHCP}leases = \"1h\"\n")),
        8,
        1,
        "unknown key `leases`",
    );
}

#[test]
fn missing_required_key_points_at_its_table() {
    let d = one_error(
        "[[network]]\nname = \"lab\"\nmode = \"nat\"\n",
        1,
        1,
        "missing key `bridge`",
    );
    assert!(d.hint.expect("hint").contains("bridge = \"virbr0\""));
}

#[test]
fn wrong_type_says_how_to_write_the_key() {
    let d = one_error(&with("mtu = \"1500\"\n"), 6, 7, "expected an integer");
    assert!(d.hint.expect("hint").contains("mtu = 1500"));
}

#[test]
fn single_vs_double_brackets() {
    let d = one_error("[network]\nname = \"a\"\n", 1, 1, "");
    assert!(d.hint.expect("hint").contains("write [[network]]"));
    let d = one_error(
        &with("[[network.dhcp]]\nrange = \"10.77.0.2-10.77.0.9\"\n"),
        6,
        1,
        "",
    );
    assert!(d.hint.expect("hint").contains("write [network.dhcp]"));
    let d = one_error(
        &with(&format!(
            "{DHCP}[network.dhcp.host]\nmac = \"52:54:00:00:00:10\"\nip = \"10.77.0.10\"\n"
        )),
        8,
        1,
        "",
    );
    assert!(d.hint.expect("hint").contains("[[network.dhcp.host]]"));
}

#[test]
fn duplicate_key_is_a_syntax_error_with_a_hint() {
    let d = one_error(&with("name = \"again\"\n"), 6, 1, "duplicate key");
    assert!(d.hint.expect("hint").contains("once"));
}

// --- single values ----------------------------------------------------------------------------

#[test]
fn unknown_mode() {
    let d = one_error(
        &BASE.replace("\"nat\"", "\"natt\""),
        3,
        8,
        "unknown mode \"natt\"",
    );
    assert!(d.hint.expect("hint").contains("\"routed\""));
}

#[test]
fn malformed_and_multicast_macs() {
    one_error(
        &with("mac = \"52:54:00:zz:00:01\"\n"),
        6,
        7,
        "is not a MAC address",
    );
    one_error(
        &with("mac = \"52:54:00:00:01\"\n"),
        6,
        7,
        "is not a MAC address",
    );
    one_error(&with("mac = \"01:00:5e:00:00:01\"\n"), 6, 7, "multicast");
}

#[test]
fn address_without_prefix_or_not_an_address() {
    let d = one_error(
        &BASE.replace("10.77.0.1/24", "10.77.0.1"),
        5,
        11,
        "no prefix length",
    );
    assert!(d.hint.expect("hint").contains("10.77.0.1/24"));
    one_error(
        &BASE.replace("10.77.0.1/24", "10.77.0.300/24"),
        5,
        11,
        "not an IPv4 address",
    );
    one_error(
        &BASE.replace("10.77.0.1/24", "10.77.0.1/31"),
        5,
        11,
        "no room for guests",
    );
}

#[test]
fn address_is_network_or_broadcast() {
    let d = one_error(
        &BASE.replace("10.77.0.1/24", "10.77.0.0/24"),
        5,
        11,
        "network address",
    );
    assert!(d.hint.expect("hint").contains("10.77.0.1/24"));
    one_error(
        &BASE.replace("10.77.0.1/24", "10.77.0.255/24"),
        5,
        11,
        "broadcast address",
    );
}

#[test]
fn bridge_name_too_long() {
    let d = one_error(
        &BASE.replace("br-lab", "virbr0-with-a-long-name"),
        4,
        10,
        "",
    );
    assert_eq!(
        d.message,
        "bridge name \"virbr0-with-a-long-name\" is 23 bytes; Linux interface names are at most 15 bytes"
    );
    assert!(d
        .hint
        .expect("hint")
        .starts_with("choose a shorter name such as"));
}

#[test]
fn bridge_name_with_forbidden_characters_or_reserved() {
    for (name, fragment) in [
        ("br/0", "'/'"),
        ("br 0", "a space"),
        ("br:0", "':'"),
        ("", "is empty"),
        (".", "not allowed"),
        ("..", "not allowed"),
    ] {
        one_error(&BASE.replace("br-lab", name), 4, 10, fragment);
    }
}

#[test]
fn interface_names_follow_the_same_rules() {
    let text = "[[network]]\nname = \"a\"\nmode = \"bridge\"\nbridge = \"br-a\"\ninterfaces = [\"eth1\", \"a-very-long-port-name\"]\n";
    one_error(text, 5, 23, "at most 15 bytes");
}

#[test]
fn network_name_must_be_file_safe() {
    one_error(&BASE.replace("\"lab\"", "\"../x\""), 2, 8, "network name");
}

#[test]
fn mtu_and_forward_delay_ranges() {
    let d = one_error(&with("mtu = 10\n"), 6, 7, "mtu = 10 is out of range");
    assert!(d.hint.expect("hint").contains("68 to 65535"));
    one_error(&with("mtu = 70000\n"), 6, 7, "out of range");
    one_error(&with("forward_delay = 31\n"), 6, 17, "forward_delay");
    one_error(&with("forward_delay = -1\n"), 6, 17, "forward_delay");
}

#[test]
fn port_rate_limit_is_zero_or_a_sane_rate() {
    for good in [0, 10, 100, 500, 100_000] {
        let m = super::ok(&format!("[dhcp]\nport_rate_limit = {good}\n{BASE}"));
        assert_eq!(m.dhcp_port_rate_limit, good);
    }
    let d = one_error(
        &format!("[dhcp]\nport_rate_limit = 5\n{BASE}"),
        2,
        19,
        "port_rate_limit = 5 is out of range",
    );
    let hint = d.hint.expect("hint");
    assert!(
        hint.contains("10 to 100000") && hint.contains("or 0 to turn the per-port limit off"),
        "{hint}"
    );
    one_error("[dhcp]\nport_rate_limit = 9\n", 2, 19, "out of range");
    one_error("[dhcp]\nport_rate_limit = 100001\n", 2, 19, "out of range");
    one_error("[dhcp]\nport_rate_limit = -1\n", 2, 19, "out of range");
    one_error(
        "[dhcp]\nport_rate_limit = 99999999999\n",
        2,
        19,
        "port_rate_limit = 99999999999 is out of range",
    );
    let d = one_error(
        "[dhcp]\nport_rate_limit = \"100\"\n",
        2,
        19,
        "expected an integer",
    );
    assert!(
        d.hint.expect("hint").contains("port_rate_limit = 100"),
        "wrong-type hint"
    );
    // It belongs to the host-wide [dhcp], not to a network's [network.dhcp].
    let d = one_error(
        &with(&format!("{DHCP}port_rate_limit = 0\n")),
        8,
        1,
        "unknown key `port_rate_limit`",
    );
    assert!(!d.hint.expect("hint").contains("port_rate_limit"));
    // A typo is still an unknown key, with the right one suggested.
    let d = one_error(
        "[dhcp]\nport_ratelimit = 0\n",
        2,
        1,
        "unknown key `port_ratelimit`",
    );
    assert!(
        d.hint
            .expect("hint")
            .contains("did you mean `port_rate_limit`"),
        "typo hint"
    );
}

#[test]
fn lease_time_units_and_minimum() {
    let d = one_error(
        &with(&format!("{DHCP}lease_time = \"30s\"\n")),
        8,
        14,
        "shorter than 60s",
    );
    assert!(d.hint.expect("hint").contains("\"1h30m\""));
    one_error(
        &with(&format!("{DHCP}lease_time = \"12\"\n")),
        8,
        14,
        "no unit",
    );
    one_error(
        &with(&format!("{DHCP}lease_time = \"2w\"\n")),
        8,
        14,
        "unknown unit",
    );
    one_error("[dhcp]\nlease_time = \"1x\"\n", 2, 14, "unknown unit");
}

#[test]
fn dns_and_domain_values() {
    one_error(
        &with(&format!("{DHCP}dns = [\"10.77.0.1\", \"dns.example\"]\n")),
        8,
        21,
        "not an IPv4 address",
    );
    one_error(
        &with(&format!("{DHCP}domain = \"lab..example\"\n")),
        8,
        10,
        "not a valid DNS domain",
    );
    one_error("[dhcp]\ndns = [\"1.2.3\"]\n", 2, 8, "not an IPv4 address");
}

#[test]
fn state_dir_must_be_absolute() {
    let d = one_error(
        "state_dir = \"var/lib/hostagent\"\n",
        1,
        13,
        "not an absolute path",
    );
    assert!(d.hint.expect("hint").contains("/var/lib/hostagent"));
    one_error("state_dir = \"/var/../etc\"\n", 1, 13, "\"..\"");
}

#[test]
fn sysctl_keys_must_be_dotted_lowercase_names() {
    one_error(
        "[sysctl]\n\"VM.Max_Map_Count\" = 1\n",
        2,
        1,
        "not a sysctl key",
    );
    one_error("[sysctl]\n\"vm\" = 1\n", 2, 1, "not a sysctl key");
    let d = one_error("[sysctl]\n\"vm/max_map_count\" = 1\n", 2, 1, "'/'");
    assert!(d.hint.expect("hint").contains("vm.max_map_count"));
    one_error("[sysctl]\n\"vm.x\" = \"\"\n", 2, 10, "sysctl value");
}

#[test]
fn sysctl_refuses_ip_forward_with_a_hint() {
    let d = one_error(
        "[sysctl]\n\"net.ipv4.ip_forward\" = 1\n",
        2,
        1,
        "net.ipv4.ip_forward is managed by hostagent",
    );
    assert!(d.hint.expect("hint").contains("remove this line"));
}

#[test]
fn sysctl_unquoted_dotted_keys_work_too() {
    let m = super::ok("[sysctl]\nvm.max_map_count = 262144\nkernel.pid_max = \"4194304\"\n");
    assert_eq!(
        m.sysctl.get("vm.max_map_count").map(String::as_str),
        Some("262144")
    );
    assert_eq!(
        m.sysctl.get("kernel.pid_max").map(String::as_str),
        Some("4194304")
    );
    one_error(
        "[sysctl]\nnet.ipv4.ip_forward = 1\n",
        2,
        10,
        "managed by hostagent",
    );
}

// --- rules within a network -------------------------------------------------------------------

#[test]
fn nat_routed_isolated_need_an_address() {
    for mode in ["nat", "routed", "isolated"] {
        let text = format!("[[network]]\nname = \"a\"\nmode = \"{mode}\"\nbridge = \"br-a\"\n");
        let d = one_error(&text, 3, 8, "needs an address");
        assert!(d.hint.expect("hint").contains("address = "));
    }
    super::ok("[[network]]\nname = \"a\"\nmode = \"bridge\"\nbridge = \"br-a\"\n");
}

#[test]
fn interfaces_only_in_bridge_mode() {
    let d = one_error(
        &with("interfaces = [\"eth1\"]\n"),
        6,
        14,
        "only allowed with mode = \"bridge\"",
    );
    assert!(d.hint.expect("hint").contains("mode = \"bridge\""));
}

#[test]
fn interface_listed_twice_or_naming_the_bridge() {
    let base = "[[network]]\nname = \"a\"\nmode = \"bridge\"\nbridge = \"br-a\"\n";
    one_error(
        &format!("{base}interfaces = [\"eth1\", \"eth1\"]\n"),
        5,
        23,
        "listed twice",
    );
    one_error(
        &format!("{base}interfaces = [\"br-a\"]\n"),
        5,
        15,
        "this network's bridge",
    );
}

#[test]
fn dhcp_and_pxe_need_an_address() {
    let base = "[[network]]\nname = \"a\"\nmode = \"bridge\"\nbridge = \"br-a\"\n";
    let d = one_error(
        &format!("{base}[network.dhcp]\nrange = \"10.0.0.2-10.0.0.9\"\n"),
        5,
        1,
        "[network.dhcp] needs",
    );
    assert!(d.hint.expect("hint").contains("address = "));
    one_error(
        &format!("{base}[network.pxe]\nroot = \"/srv/boot\"\n"),
        5,
        1,
        "[network.pxe] needs",
    );
}

#[test]
fn dhcp_range_outside_reversed_covering_gateway() {
    let range = |r: &str| with(&format!("[network.dhcp]\nrange = \"{r}\"\n"));
    let d = one_error(
        &range("10.78.0.2-10.78.0.9"),
        7,
        9,
        "not inside the network's subnet 10.77.0.0/24",
    );
    assert!(d.hint.expect("hint").contains("10.77.0.2-10.77.0.254"));
    one_error(&range("10.77.0.0-10.77.0.9"), 7, 9, "not inside");
    one_error(&range("10.77.0.2-10.77.0.255"), 7, 9, "not inside");
    let d = one_error(&range("10.77.0.200-10.77.0.100"), 7, 9, "reversed");
    assert!(d
        .hint
        .expect("hint")
        .contains("\"10.77.0.100-10.77.0.200\""));
    let d = one_error(
        &range("10.77.0.1-10.77.0.50"),
        7,
        9,
        "covers the gateway address 10.77.0.1",
    );
    assert!(d.hint.expect("hint").contains("10.77.0.2-10.77.0.254"));
    one_error(&range("10.77.0.2"), 7, 9, "not an address range");
}

fn hosts(entries: &[(&str, &str)]) -> String {
    let mut s = with(DHCP);
    for (mac, ip) in entries {
        s += &format!("[[network.dhcp.host]]\nmac = \"{mac}\"\nip = \"{ip}\"\n");
    }
    s
}

#[test]
fn static_host_outside_subnet_or_on_the_gateway() {
    let d = one_error(
        &hosts(&[("52:54:00:00:00:10", "10.78.0.10")]),
        10,
        6,
        "not a host address inside",
    );
    assert!(d.hint.expect("hint").contains("10.77.0.1-10.77.0.254"));
    one_error(
        &hosts(&[("52:54:00:00:00:10", "10.77.0.255")]),
        10,
        6,
        "not a host address inside",
    );
    one_error(
        &hosts(&[("52:54:00:00:00:10", "10.77.0.1")]),
        10,
        6,
        "gateway address",
    );
    one_error(
        &hosts(&[("52:54:00:00:00:10", "10.77.0")]),
        10,
        6,
        "not an IPv4 address",
    );
}

#[test]
fn static_host_duplicate_mac_or_ip() {
    let d = one_error(
        &hosts(&[
            ("52:54:00:00:00:10", "10.77.0.10"),
            ("52:54:00:00:00:10", "10.77.0.11"),
        ]),
        12,
        7,
        "two reservations",
    );
    assert!(d.hint.expect("hint").contains("line 9"));
    let d = one_error(
        &hosts(&[
            ("52:54:00:00:00:10", "10.77.0.10"),
            ("52:54:00:00:00:11", "10.77.0.10"),
        ]),
        13,
        6,
        "reserved twice",
    );
    assert!(d.hint.expect("hint").contains("line 10"));
}

#[test]
fn static_host_names_and_boot_files() {
    let base = hosts(&[("52:54:00:00:00:10", "10.77.0.10")]);
    one_error(
        &format!("{base}name = \"web_1\"\n"),
        11,
        8,
        "not a valid host name",
    );
    let d = one_error(
        &format!("{base}boot = \"custom.kpxe\"\n"),
        11,
        8,
        "needs a [network.pxe]",
    );
    assert!(d.hint.expect("hint").contains("[network.pxe]"));
    let twice = format!("{base}name = \"web\"\n[[network.dhcp.host]]\nmac = \"52:54:00:00:00:11\"\nip = \"10.77.0.11\"\nname = \"WEB\"\n");
    one_error(&twice, 15, 8, "used twice");
    let pxe = "[network.pxe]\nroot = \"/srv/boot\"\n";
    one_error(
        &format!("{base}script = \"../x.ipxe\"\n{pxe}"),
        11,
        10,
        "\"..\"",
    );
}

#[test]
fn pxe_files_must_be_relative_without_dotdot() {
    let pxe = |line: &str| with(&format!("[network.pxe]\nroot = \"/srv/boot\"\n{line}\n"));
    let d = one_error(
        &pxe("bios = \"/srv/boot/undionly.kpxe\""),
        8,
        8,
        "absolute path",
    );
    assert!(d.hint.expect("hint").contains("bios = \"undionly.kpxe\""));
    one_error(&pxe("uefi = \"../ipxe.efi\""), 8, 8, "\"..\"");
    one_error(&pxe("arm64 = \"efi/../../x.efi\""), 8, 9, "\"..\"");
    one_error(&pxe("script = \"\""), 8, 10, "is empty");
}

#[test]
fn pxe_root_must_be_absolute_and_http_port_nonzero() {
    let d = one_error(
        &with("[network.pxe]\nroot = \"srv/boot\"\n"),
        7,
        8,
        "not an absolute path",
    );
    assert!(d.hint.expect("hint").contains("root = \"/"));
    let d = one_error(
        &with("[network.pxe]\nroot = \"/srv/boot\"\nhttp_port = 0\n"),
        8,
        13,
        "not a usable TCP port",
    );
    assert!(d.hint.expect("hint").contains("8069"));
    one_error(
        &with("[network.pxe]\nroot = \"/srv/boot\"\nhttp_port = 65536\n"),
        8,
        13,
        "not a usable TCP port",
    );
}

#[test]
fn pxe_root_must_not_expose_the_host_or_the_state_dir() {
    one_error(
        &with("[network.pxe]\nroot = \"/\"\n"),
        7,
        8,
        "whole host file system",
    );
    let d = one_error(
        &with("[network.pxe]\nroot = \"/var/lib\"\n"),
        7,
        8,
        "contains state_dir /var/lib/hostagent",
    );
    assert!(d.hint.expect("hint").contains("/var/lib/hostagent/boot"));
    // The shipped layout, a boot directory inside the state directory, is fine.
    super::ok(&with("[network.pxe]\nroot = \"/var/lib/hostagent/boot\"\n"));
}

// --- rules across networks ----------------------------------------------------------------------

#[test]
fn duplicate_network_names() {
    let d = one_error(
        &with(&second("lab", "br-b", "10.78.0.1/24")),
        7,
        8,
        "network name \"lab\" is used twice",
    );
    assert!(d.hint.expect("hint").contains("line 2"));
}

#[test]
fn duplicate_bridges() {
    let d = one_error(
        &with(&second("b", "br-lab", "10.78.0.1/24")),
        9,
        10,
        "bridge \"br-lab\" is used by two networks",
    );
    assert!(d.hint.expect("hint").contains("line 4"));
}

#[test]
fn overlapping_subnets() {
    let d = one_error(
        &with(&second("b", "br-b", "10.77.0.129/25")),
        10,
        11,
        "overlaps 10.77.0.0/24 of network \"lab\"",
    );
    assert!(d.hint.expect("hint").contains("line 5"));
    let d = one_error(
        &with(&second("b", "br-b", "10.0.0.1/8")),
        10,
        11,
        "overlaps",
    );
    assert!(d.message.contains("10.0.0.0/8"));
}

#[test]
fn duplicate_bridge_macs() {
    let text = with(&format!(
        "mac = \"52:54:00:00:00:01\"\n{}mac = \"52:54:00:00:00:01\"\n",
        second("b", "br-b", "10.78.0.1/24")
    ));
    let d = one_error(&text, 12, 7, "also the bridge MAC of network \"lab\"");
    assert!(d.hint.expect("hint").contains("line 6"));
}

#[test]
fn interface_in_two_networks_or_another_networks_bridge() {
    let text = "[[network]]\nname = \"a\"\nmode = \"bridge\"\nbridge = \"br-a\"\ninterfaces = [\"eth1\"]\n\
                [[network]]\nname = \"b\"\nmode = \"bridge\"\nbridge = \"br-b\"\ninterfaces = [\"eth2\", \"eth1\"]\n";
    let d = one_error(text, 10, 23, "listed in two networks");
    assert!(d.hint.expect("hint").contains("line 5"));
    let text = "[[network]]\nname = \"a\"\nmode = \"bridge\"\nbridge = \"br-a\"\ninterfaces = [\"br-b\"]\n\
                [[network]]\nname = \"b\"\nmode = \"bridge\"\nbridge = \"br-b\"\n";
    one_error(text, 5, 15, "the bridge of network \"b\"");
}

// --- all problems at once ---------------------------------------------------------------------

#[test]
fn dhcp_values_are_checked_even_when_the_address_is_bad() {
    let text = BASE.replace("10.77.0.1/24", "10.77.0.0/24")
        + "[network.dhcp]\nrange = \"10.77.0.200-10.77.0.100\"\n[[network.dhcp.host]]\nmac = \"zz\"\nip = \"10.77.0.5\"\n";
    let got: Vec<(usize, usize)> = errors(&text).iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(got, vec![(5, 11), (7, 9), (9, 7)]);
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = "state_dir = \"relative\"\n\
                [sysctl]\n\"net.ipv4.ip_forward\" = 1\n\
                [[network]]\nname = \"a\"\nmode = \"nat\"\nbridge = \"a-bridge-name-too-long\"\naddress = \"10.0.0.0/24\"\nmac = \"zz\"\n\
                [[network]]\nname = \"b\"\nmode = \"routed\"\nbridge = \"br-b\"\n\
                [network.pxe]\nroot = \"boot\"\nbios = \"/undionly.kpxe\"\nhttp_port = 0\n";
    let errs = errors(text);
    let got: Vec<(usize, usize)> = errs.iter().map(|d| (d.line, d.column)).collect();
    let shown: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        got,
        vec![
            (1, 13),
            (3, 1),
            (7, 10),
            (8, 11),
            (9, 7),
            (12, 8),
            (14, 1),
            (15, 8),
            (16, 8),
            (17, 13)
        ],
        "\n{}",
        shown.join("\n")
    );
    assert!(
        errs.iter().all(|d| d.hint.is_some()),
        "\n{}",
        shown.join("\n")
    );
}
