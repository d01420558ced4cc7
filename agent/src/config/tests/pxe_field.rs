//! The keys for stock boot loaders and the RFC options: proxyDHCP, PXELINUX 209–211, NTP (42)
//! and classless static routes (121), each rule with its position and hint, and what reaches pxe.

use std::path::Path;
use std::time::Duration;

use super::*;

const DHCP: &str = "[network.dhcp]\nrange = \"10.77.0.100-10.77.0.200\"\n";
const PXE: &str = "[network.pxe]\nroot = \"/srv/boot\"\nbios = \"pxelinux.0\"\n";

#[test]
fn ntp_and_routes_reach_the_dhcp_config() {
    let m = ok(&with(&format!(
        "{DHCP}ntp = [\"10.77.0.1\", \"192.0.2.123\"]\n\
         routes = [{{ to = \"10.20.0.0/16\", via = \"10.77.0.254\" }}, {{ to = \"0.0.0.0/0\", via = \"10.77.0.1\" }}]\n"
    )));
    let d = &m.dhcp_configs(Path::new("/"))[0];
    assert_eq!(
        d.ntp,
        [
            "10.77.0.1".parse::<std::net::Ipv4Addr>().unwrap(),
            "192.0.2.123".parse().unwrap()
        ]
    );
    assert_eq!(d.routes.len(), 2);
    assert_eq!(d.routes[0].destination, "10.20.0.0/16".parse().unwrap());
    assert_eq!(
        d.routes[0].router,
        "10.77.0.254".parse::<std::net::Ipv4Addr>().unwrap()
    );
}

#[test]
fn routes_need_a_network_without_host_bits_and_a_router_on_the_subnet() {
    // Line 8, value columns: `routes = [{ to = ` is 17 characters.
    let route = |to: &str, via: &str| {
        with(&format!(
            "{DHCP}routes = [{{ to = \"{to}\", via = \"{via}\" }}]\n"
        ))
    };
    one_error(&route("10.20.0.5/16", "10.77.0.254"), 8, 18, "host bits");
    one_error(
        &route("10.20.0.0", "10.77.0.254"),
        8,
        18,
        "not a network with a prefix",
    );
    let d = one_error(
        &route("10.20.0.0/16", "192.168.1.1"),
        8,
        40,
        "on the network's subnet",
    );
    assert!(d.hint.unwrap_or_default().contains("10.77.0.1-10.77.0.254"));
    one_error(
        &with(&format!(
            "{DHCP}routes = [{{ to = \"10.20.0.0/16\", via = \"10.77.0.9\" }},\n  {{ to = \"10.20.0.0/16\", via = \"10.77.0.8\" }}]\n"
        )),
        9,
        10,
        "listed twice",
    );
    one_error(
        &with(&format!("{DHCP}ntp = [\"ntp.example\"]\n")),
        8,
        8,
        "not an IPv4 address",
    );
}

#[test]
fn pxelinux_options_reach_the_boot_config() {
    let m = ok(&with(&format!(
        "{DHCP}{PXE}pxelinux_config = \"pxelinux.cfg/lab\"\n\
         pxelinux_path_prefix = \"debian-installer/amd64/\"\npxelinux_reboot = \"5m\"\n"
    )));
    let p = m.networks[0].pxe.as_ref().unwrap();
    assert_eq!(p.pxelinux_reboot, Some(Duration::from_secs(300)));
    let boot = m.dhcp_configs(Path::new("/"))[0].boot.clone().unwrap();
    assert_eq!(
        boot.pxelinux.config_file.as_deref(),
        Some("pxelinux.cfg/lab")
    );
    assert_eq!(
        boot.pxelinux.path_prefix.as_deref(),
        Some("debian-installer/amd64/")
    );
    assert_eq!(boot.pxelinux.reboot_time, Some(300));
}

#[test]
fn pxelinux_options_are_checked() {
    let at = |line: &str| with(&format!("{DHCP}{PXE}{line}\n"));
    one_error(&at("pxelinux_config = \"\""), 11, 19, "is empty");
    one_error(&at("pxelinux_config = \"a b\""), 11, 19, "contains ' '");
    one_error(
        &at(&format!("pxelinux_path_prefix = \"{}\"", "a".repeat(300))),
        11,
        24,
        "more than one DHCP option holds",
    );
    one_error(&at("pxelinux_reboot = \"soon\""), 11, 19, "pxelinux_reboot");
    one_error(&at("pxelinux_reboot = \"0s\""), 11, 19, "out of range");
}

#[test]
fn proxy_networks_have_no_dhcp_section_and_get_a_proxy_service() {
    let proxy = format!("{PXE}proxy = true\n");
    let m = ok(&with(&proxy));
    assert!(
        m.dhcp_configs(Path::new("/")).is_empty(),
        "no lease-giving server"
    );
    let p = &m.proxy_configs(Path::new("/"))[0];
    assert_eq!(p.interface, "br-lab");
    assert_eq!(
        p.server_ip,
        "10.77.0.1".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert_eq!(p.boot.bios.as_deref(), Some("pxelinux.0"));
    assert_eq!(p.boot.root, Path::new("/srv/boot"));
    // The firewall accepts DHCP on the bridge as for a full server.
    assert!(m.desired().networks[0].services.dhcp);
    // Both at once is a contradiction the admin has to settle.
    let d = one_error(
        &with(&format!("{DHCP}{proxy}")),
        11,
        9,
        "proxy = true and a [network.dhcp]",
    );
    assert!(d.hint.unwrap_or_default().contains("remove [network.dhcp]"));
    // proxy = false is an ordinary network.
    let m = ok(&with(&format!("{DHCP}{PXE}proxy = false\n")));
    assert!(m.proxy_configs(Path::new("/")).is_empty());
    assert_eq!(m.dhcp_configs(Path::new("/")).len(), 1);
}
