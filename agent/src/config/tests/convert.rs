//! Model → netcfg/pxe: services, router, DNS, paths under --root.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use netcfg::{PortLimit, Services};

use super::{ok, BASE};

fn net(name: &str, mode: &str, bridge: &str, address: &str, extra: &str) -> String {
    format!("[[network]]\nname = \"{name}\"\nmode = \"{mode}\"\nbridge = \"{bridge}\"\naddress = \"{address}\"\n{extra}")
}

fn dhcp(range: &str) -> String {
    format!("[network.dhcp]\nrange = \"{range}\"\n")
}

/// One network of each mode, all with DHCP; nat also with PXE.
fn four_modes() -> String {
    let pxe = "[network.pxe]\nroot = \"/srv/boot\"\nbios = \"undionly.kpxe\"\nscript = \"boot.ipxe\"\nhttp_port = 8069\n";
    [
        net("n", "nat", "br-n", "10.1.0.1/24", &(dhcp("10.1.0.10-10.1.0.20") + pxe)),
        net("r", "routed", "br-r", "10.2.0.1/24", &dhcp("10.2.0.10-10.2.0.20")),
        net("i", "isolated", "br-i", "10.3.0.1/24", &dhcp("10.3.0.10-10.3.0.20")),
        net("b", "bridge", "br-b", "10.4.0.1/24", &dhcp("10.4.0.10-10.4.0.20")),
        "[[network]]\nname = \"l2\"\nmode = \"bridge\"\nbridge = \"br-l2\"\ninterfaces = [\"eth1\"]\n".to_string(),
    ]
    .concat()
}

#[test]
fn desired_carries_networks_sysctls_and_services() {
    let text = format!(
        "[sysctl]\n\"vm.max_map_count\" = 262144\n[vhost_net]\nexperimental_zcopytx = true\n{}",
        four_modes()
    );
    let d = ok(&text).desired();
    assert_eq!(
        d.sysctls.get("vm.max_map_count").map(String::as_str),
        Some("262144")
    );
    assert_eq!(d.vhost_zcopytx, Some(true));
    let by_name = |n: &str| d.networks.iter().find(|s| s.name == n).expect("network");
    assert_eq!(
        by_name("n").services,
        Services {
            dhcp: true,
            tftp: true,
            http_port: Some(8069),
            dns: true
        }
    );
    assert_eq!(
        by_name("r").services,
        Services {
            dhcp: true,
            tftp: false,
            http_port: None,
            dns: true
        }
    );
    assert_eq!(
        by_name("i").services,
        Services {
            dhcp: true,
            tftp: false,
            http_port: None,
            dns: true
        }
    );
    assert_eq!(
        by_name("b").services,
        Services {
            dhcp: true,
            tftp: false,
            http_port: None,
            dns: false
        }
    );
    assert_eq!(by_name("l2").services, Services::default());
    let l2 = by_name("l2");
    assert_eq!(
        (l2.address, l2.interfaces.as_slice(), l2.mac),
        (None, &["eth1".to_string()][..], hwaddr::Mac::derived("l2"))
    );
    let n = by_name("n");
    assert_eq!(
        (n.bridge.as_str(), n.stp, n.forward_delay, n.mtu),
        ("br-n", true, 0, None)
    );
    assert_eq!(n.address, Some("10.1.0.1/24".parse().expect("cidr")));
}

#[test]
fn port_rate_limit_becomes_the_desired_per_port_limit_with_twice_the_burst() {
    let limit = |dhcp: &str| {
        ok(&format!("{dhcp}{}", four_modes()))
            .desired()
            .dhcp_port_limit
    };
    assert_eq!(
        limit(""),
        Some(PortLimit {
            rate_per_sec: 100,
            burst: 200
        }),
        "default"
    );
    assert_eq!(
        limit("[dhcp]\ndomain = \"lab.example\"\n"),
        Some(PortLimit::default())
    );
    assert_eq!(
        limit("[dhcp]\nport_rate_limit = 500\n"),
        Some(PortLimit {
            rate_per_sec: 500,
            burst: 1000
        })
    );
    assert_eq!(
        limit("[dhcp]\nport_rate_limit = 0\n"),
        None,
        "0 turns it off"
    );
}

#[test]
fn router_is_handed_out_only_on_nat_and_routed() {
    let root = tempfile::tempdir().expect("tempdir");
    let cfgs = ok(&four_modes()).dhcp_configs(root.path());
    let router = |n: &str| {
        cfgs.iter()
            .find(|c| c.network == n)
            .expect("dhcp config")
            .router
    };
    assert_eq!(router("n"), Some(Ipv4Addr::new(10, 1, 0, 1)));
    assert_eq!(router("r"), Some(Ipv4Addr::new(10, 2, 0, 1)));
    assert_eq!(router("i"), None);
    assert_eq!(router("b"), None);
    assert_eq!(cfgs.len(), 4, "no DHCP on a network without [network.dhcp]");
}

#[test]
fn dhcp_config_fields_and_paths_under_root() {
    let text = format!(
        "state_dir = \"/var/lib/ha\"\n{BASE}mtu = 1400\n[network.dhcp]\nrange = \"10.77.0.100-10.77.0.200\"\nlease_time = \"1h30m\"\ndomain = \"lab.example\"\n\
         [[network.dhcp.host]]\nmac = \"52:54:00:00:00:10\"\nip = \"10.77.0.10\"\nname = \"bastion\"\nscript = \"bastion.ipxe\"\n\
         [network.pxe]\nroot = \"/srv/boot\"\nuefi = \"ipxe.efi\"\n"
    );
    let root = Path::new("/tmp/some-root");
    let m = ok(&text);
    let [c] = m.dhcp_configs(root).try_into().expect("one dhcp config");
    assert_eq!(
        (c.network.as_str(), c.interface.as_str()),
        ("lab", "br-lab")
    );
    assert_eq!(c.server_ip, Ipv4Addr::new(10, 77, 0, 1));
    assert_eq!(c.subnet, "10.77.0.0/24".parse().expect("net"));
    assert_eq!(
        (c.range_start, c.range_end),
        (Ipv4Addr::new(10, 77, 0, 100), Ipv4Addr::new(10, 77, 0, 200))
    );
    assert_eq!(c.lease_time, Duration::from_secs(5400));
    assert_eq!(c.domain.as_deref(), Some("lab.example"));
    assert_eq!(c.mtu, Some(1400));
    assert_eq!(
        c.lease_file,
        Path::new("/tmp/some-root/var/lib/ha/leases/lab.journal")
    );
    assert_eq!(c.lease_file, m.lease_file(root, "lab"));
    let [h] = c.hosts.as_slice() else {
        panic!("one host")
    };
    assert_eq!(
        (h.mac, h.ip, h.name.as_deref(), h.script.as_deref()),
        (
            hwaddr::Mac([0x52, 0x54, 0, 0, 0, 0x10]),
            Ipv4Addr::new(10, 77, 0, 10),
            Some("bastion"),
            Some("bastion.ipxe")
        )
    );
    let boot = c.boot.expect("boot config");
    assert_eq!(boot.root, Path::new("/tmp/some-root/srv/boot"));
    assert_eq!(
        (boot.bios, boot.uefi.as_deref(), boot.http_port),
        (None, Some("ipxe.efi"), None)
    );
}

#[test]
fn dns_comes_from_config_else_the_gateway_else_root_resolv_conf_without_loopback() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("etc")).expect("mkdir");
    std::fs::write(
        root.path().join("etc/resolv.conf"),
        "# generated\nsearch example\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nnameserver 2001:db8::1\nnameserver 192.0.2.2 \n",
    )
    .expect("write resolv.conf");
    let off = "[network.dns]\nenable = false\n";
    let text = format!(
        "{}{}{}",
        net(
            "a",
            "nat",
            "br-a",
            "10.1.0.1/24",
            &(dhcp("10.1.0.10-10.1.0.20") + off)
        ),
        net(
            "b",
            "nat",
            "br-b",
            "10.2.0.1/24",
            &(dhcp("10.2.0.10-10.2.0.20") + "dns = [\"10.2.0.1\"]\n")
        ),
        net(
            "c",
            "nat",
            "br-c",
            "10.3.0.1/24",
            &dhcp("10.3.0.10-10.3.0.20")
        ),
    );
    let cfgs = ok(&text).dhcp_configs(root.path());
    assert_eq!(
        cfgs[0].dns,
        vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)]
    );
    assert_eq!(cfgs[0].domain, None, "DNS off: no domain unless configured");
    assert_eq!(cfgs[1].dns, vec![Ipv4Addr::new(10, 2, 0, 1)]);
    assert_eq!(
        (cfgs[2].dns.as_slice(), cfgs[2].domain.as_deref()),
        (&[Ipv4Addr::new(10, 3, 0, 1)][..], Some("c")),
        "the network's DNS server runs: the gateway, and its domain"
    );

    // DNS off with only a loopback resolver, or no file at all: no DNS option rather than an
    // unreachable one.
    std::fs::write(
        root.path().join("etc/resolv.conf"),
        "nameserver 127.0.0.53\n",
    )
    .expect("write");
    assert!(ok(&text).dhcp_configs(root.path())[0].dns.is_empty());
    let empty = tempfile::tempdir().expect("tempdir");
    assert!(ok(&text).dhcp_configs(empty.path())[0].dns.is_empty());
}

#[test]
fn file_services_listen_on_the_gateway_with_root_prefixed() {
    let root = Path::new("/tmp/r");
    let text = format!(
        "{}{}",
        net(
            "a",
            "nat",
            "br-a",
            "10.1.0.1/24",
            "[network.pxe]\nroot = \"/srv/a\"\nbios = \"undionly.kpxe\"\nhttp_port = 8069\n"
        ),
        net(
            "b",
            "isolated",
            "br-b",
            "10.2.0.1/24",
            "[network.pxe]\nroot = \"/srv/b\"\nscript = \"boot.ipxe\"\n"
        ),
    );
    let services = ok(&text).file_services(root);
    assert_eq!(services.len(), 2);
    let (a, a_http) = &services[0];
    assert_eq!(
        (a.network.as_str(), a.listen, a.root.as_path(), *a_http),
        (
            "a",
            Ipv4Addr::new(10, 1, 0, 1),
            Path::new("/tmp/r/srv/a"),
            Some(8069)
        )
    );
    let (b, b_http) = &services[1];
    assert_eq!(
        (b.listen, b.root.as_path(), *b_http),
        (Ipv4Addr::new(10, 2, 0, 1), Path::new("/tmp/r/srv/b"), None)
    );
}
