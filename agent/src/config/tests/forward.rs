//! `[[network.forward]]`: targets by address or by guest, ports, placement in the subnet, the
//! modes that forward, uniqueness, and what reaches netcfg.

use std::net::Ipv4Addr;

use netcfg::{PortForward, Proto};

use super::{errors, ok, one_error, with, BASE};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

#[test]
fn a_forward_by_address_and_one_by_guest_reach_netcfg() {
    let m = ok(&with(
        "[network.dhcp]\nrange = \"10.77.0.100-10.77.0.200\"\n\
         [[network.forward]]\nproto = \"tcp\"\nhost_port = 8022\nto = \"10.77.0.10:22\"\n\
         [[network.forward]]\nproto = \"udp\"\nhost_port = 5353\nhost_address = \"203.0.113.1\"\nguest = \"web\"\nguest_port = 53\n\
         [[network.forward]]\nproto = \"tcp\"\nhost_port = 8080\nto = \"10.77.0.11\"\n\
         [[guest]]\nname = \"web\"\nnetwork = \"lab\"\nip = \"10.77.0.20\"\n",
    ));
    let f = &m.networks[0].forwards;
    assert_eq!(f.len(), 3);
    assert_eq!(f[1].guest.as_deref(), Some("web"));
    assert_eq!(
        m.desired().forwards,
        [
            PortForward {
                network: "lab".into(),
                proto: Proto::Tcp,
                host_address: None,
                host_port: 8022,
                to: ip("10.77.0.10"),
                to_port: 22,
            },
            PortForward {
                network: "lab".into(),
                proto: Proto::Udp,
                host_address: Some(ip("203.0.113.1")),
                host_port: 5353,
                to: ip("10.77.0.20"),
                to_port: 53,
            },
            PortForward {
                network: "lab".into(),
                proto: Proto::Tcp,
                host_address: None,
                host_port: 8080,
                to: ip("10.77.0.11"),
                to_port: 8080,
            },
        ]
    );
}

#[test]
fn a_guest_forward_follows_the_guests_automatic_reservation() {
    let m = ok(&with(
        "[network.dhcp]\nrange = \"10.77.0.100-10.77.0.200\"\n\
         [[network.forward]]\nproto = \"tcp\"\nhost_port = 8022\nguest = \"node-2\"\nguest_port = 22\n\
         [[guest]]\nname = \"node\"\ncount = 2\nnetwork = \"lab\"\n",
    ));
    let node2 = m
        .guests
        .iter()
        .find(|g| g.name == "node-2")
        .expect("node-2");
    assert_eq!(m.networks[0].forwards[0].to, node2.ip);
    // The group's name alone is not a guest; the hint names an instance.
    let d = one_error(
        &with(
            "[network.dhcp]\nrange = \"10.77.0.100-10.77.0.200\"\n\
             [[network.forward]]\nproto = \"tcp\"\nhost_port = 8022\nguest = \"node\"\n\
             [[guest]]\nname = \"node\"\ncount = 2\nnetwork = \"lab\"\n",
        ),
        11,
        9,
        "no guest is named \"node\"",
    );
    assert!(d.hint.unwrap().contains("node-1"));
    // A guest that fails its own checks is reported once, there, not again by the forward.
    let errs = errors(&with(
        "[[network.forward]]\nproto = \"tcp\"\nhost_port = 8022\nguest = \"web\"\n\
         [[guest]]\nname = \"web\"\nnetwork = \"lab\"\n",
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].message.contains("has no [network.dhcp]"),
        "{}",
        errs[0]
    );
}

#[test]
fn bad_values_are_reported_at_their_position() {
    let fwd = |body: &str| with(&format!("[[network.forward]]\n{body}"));
    one_error(
        &fwd("proto = \"sctp\"\nhost_port = 1\nto = \"10.77.0.10\"\n"),
        7,
        9,
        "proto \"sctp\" is not known",
    );
    for port in ["0", "65536", "-1"] {
        one_error(
            &fwd(&format!(
                "proto = \"tcp\"\nhost_port = {port}\nto = \"10.77.0.10\"\n"
            )),
            8,
            13,
            "is not a port",
        );
    }
    one_error(
        &fwd("proto = \"tcp\"\nhost_port = 22\nto = \"10.77.0.10:0\"\n"),
        9,
        6,
        "is not a guest address and port",
    );
    one_error(
        &fwd("proto = \"tcp\"\nhost_port = 22\nto = \"web:22\"\n"),
        9,
        6,
        "is not a guest address and port",
    );
    one_error(
        &fwd(
            "proto = \"tcp\"\nhost_port = 22\nhost_address = \"127.0.0.1\"\nto = \"10.77.0.10\"\n",
        ),
        9,
        16,
        "cannot be forwarded to a guest",
    );
    one_error(
        &fwd("proto = \"tcp\"\nhost_port = 22\n"),
        6,
        1,
        "has no target",
    );
    one_error(
        &fwd("proto = \"tcp\"\nhost_port = 22\nto = \"10.77.0.10\"\nguest = \"x\"\n"),
        10,
        9,
        "either `to` or `guest`",
    );
    one_error(
        &fwd("proto = \"tcp\"\nhost_port = 22\nto = \"10.77.0.10\"\nguest_port = 2\n"),
        10,
        14,
        "guest_port goes with guest",
    );
}

#[test]
fn the_target_must_be_a_guest_address_of_the_subnet() {
    for to in [
        "10.78.0.10:22",
        "10.77.0.1:22",
        "10.77.0.255:22",
        "10.77.0.0:22",
    ] {
        let d = one_error(
            &with(&format!(
                "[[network.forward]]\nproto = \"tcp\"\nhost_port = 8022\nto = \"{to}\"\n"
            )),
            9,
            6,
            "is not a guest address of network \"lab\"",
        );
        assert!(
            d.hint
                .unwrap()
                .contains("from 10.77.0.1 to 10.77.0.254, other than the gateway"),
            "{to}"
        );
    }
}

#[test]
fn only_nat_and_routed_networks_forward_and_each_says_why() {
    for (mode, why) in [
        ("isolated", "reach only the host and each other"),
        ("bridge", "on the outer network already"),
    ] {
        let text = BASE.replace("mode = \"nat\"", &format!("mode = \"{mode}\""))
            + "[[network.forward]]\nproto = \"tcp\"\nhost_port = 8022\nto = \"10.77.0.10:22\"\n";
        let d = one_error(&text, 6, 1, "need mode = \"nat\" or \"routed\"");
        assert!(d.hint.unwrap().contains(why), "{mode}");
    }
    let routed = BASE.replace("mode = \"nat\"", "mode = \"routed\"")
        + "[[network.forward]]\nproto = \"tcp\"\nhost_port = 8022\nto = \"10.77.0.10:22\"\n";
    assert_eq!(ok(&routed).desired().forwards.len(), 1);
}

#[test]
fn a_host_port_is_forwarded_once_per_address_and_never_one_the_agent_serves() {
    let two = |a: &str, b: &str| {
        with(&format!(
            "[[network.forward]]\nproto = \"tcp\"\nhost_port = 8022\n{a}to = \"10.77.0.10:22\"\n\
             [[network.forward]]\nproto = \"tcp\"\nhost_port = 8022\n{b}to = \"10.77.0.11:22\"\n"
        ))
    };
    let d = one_error(
        &two("", ""),
        10,
        1,
        "host tcp port 8022 is already forwarded",
    );
    assert!(d.hint.unwrap().contains("line 6"));
    one_error(
        &two("host_address = \"203.0.113.1\"\n", ""),
        11,
        1,
        "already forwarded",
    );
    // Two addresses, or two protocols, do not clash.
    ok(&two(
        "host_address = \"203.0.113.1\"\n",
        "host_address = \"203.0.113.2\"\n",
    ));
    ok(&with(
        "[[network.forward]]\nproto = \"tcp\"\nhost_port = 53\nhost_address = \"203.0.113.1\"\nto = \"10.77.0.10\"\n\
         [[network.forward]]\nproto = \"udp\"\nhost_port = 8022\nto = \"10.77.0.10\"\n\
         [[network.forward]]\nproto = \"tcp\"\nhost_port = 8022\nto = \"10.77.0.10\"\n",
    ));
    // DNS on every gateway, DHCP, TFTP and the HTTP boot port where served.
    let served = with(
        "[network.dhcp]\nrange = \"10.77.0.100-10.77.0.200\"\n[network.pxe]\nroot = \"/srv/boot\"\nhttp_port = 8069\n",
    );
    for (proto, port, what) in [
        ("udp", 53, "DNS"),
        ("tcp", 53, "DNS"),
        ("udp", 67, "DHCP"),
        ("udp", 69, "TFTP"),
        ("tcp", 8069, "HTTP boot"),
    ] {
        let text = format!(
            "{served}[[network.forward]]\nproto = \"{proto}\"\nhost_port = {port}\nto = \"10.77.0.10:22\"\n"
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0]
                .message
                .contains(&format!("the {what} port hostagent serves")),
            "{}",
            errs[0]
        );
        // On the gateway address itself too; on another host address it is fine.
        let on_gw = text.replace("host_port", "host_address = \"10.77.0.1\"\nhost_port");
        assert_eq!(errors(&on_gw).len(), 1, "{proto} {port} on the gateway");
        ok(&text.replace("host_port", "host_address = \"203.0.113.1\"\nhost_port"));
    }
}
