//! The chain rule (`pxe::dhcp::policy`) over real boot files and real firmware packets:
//! - which Debian-shipped files are iPXE builds, by content (`ipxe`, `ipxe-qemu`, `pxelinux`,
//!   `syslinux-common`, `shim-signed`, `grub-efi-amd64-signed`, the netboot tree);
//! - the server's replies to captured packets (SeaBIOS's iPXE ROM, OVMF's PXE and HTTP boot)
//!   for each chain of the table, with the boot root holding those files;
//! - proxyDHCP (`pxe::dhcp::proxy`): only PXE clients, no address, no option 43 on 67, the
//!   4011 answer to where the request came from, option 82 echoed.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;

use pxe::config::{BootConfig, ProxyConfig, PxelinuxOptions};
use pxe::dhcp::ipxe_build::{BootFiles, IpxeBuilds};
use pxe::dhcp::proxy::{ProxyHandler, Via};
use pxe::dhcp::server::delivery::Destination;
use pxe::dhcp::server::DhcpStats;
use pxe::dhcp::wire::MessageType;
use testkit::dhcp::{msg, opt, Packet};

mod support;
use support::{config, handler, one, raw, SERVER};

#[allow(dead_code)]
#[path = "../src/dhcp/classify/testpackets.rs"]
mod testpackets;

/// (file, package, is it an iPXE build?)
const SHIPPED: [(&str, &str, bool); 11] = [
    ("/usr/lib/ipxe/undionly.kpxe", "ipxe", true),
    ("/usr/lib/ipxe/undionly.kkpxe", "ipxe", true),
    ("/usr/lib/ipxe/ipxe.pxe", "ipxe", true),
    ("/usr/lib/ipxe/ipxe.efi", "ipxe", true),
    ("/usr/lib/ipxe/snponly.efi", "ipxe", true),
    ("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu", true),
    ("/usr/lib/PXELINUX/pxelinux.0", "pxelinux", false),
    ("/usr/lib/PXELINUX/lpxelinux.0", "pxelinux", false),
    (
        "/usr/lib/syslinux/modules/bios/ldlinux.c32",
        "syslinux-common",
        false,
    ),
    ("/usr/lib/shim/shimx64.efi.signed", "shim-signed", false),
    (
        "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
        "grub-efi-amd64-signed",
        false,
    ),
];
const TREE: &str = "/usr/lib/debian-installer/images/12/amd64/text";

/// A boot root holding the shipped files under their usual names.
fn root_with_shipped(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("boot");
    std::fs::create_dir_all(&root).unwrap();
    for (path, package, _) in SHIPPED {
        let name = Path::new(path).file_name().unwrap();
        std::fs::copy(path, root.join(name))
            .unwrap_or_else(|e| panic!("{path}: {e} (apt-get install {package})"));
    }
    root
}

#[test]
fn shipped_ipxe_builds_are_told_apart_from_other_loaders_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_shipped(dir.path());
    // Renamed: the content decides, not the name.
    std::fs::copy(root.join("undionly.kpxe"), root.join("pxelinux-really.0")).unwrap();
    std::fs::copy(root.join("pxelinux.0"), root.join("ipxe-named.kpxe")).unwrap();
    let builds = IpxeBuilds::new(root.clone());
    for (path, _, ipxe) in SHIPPED {
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        assert_eq!(builds.is_ipxe(name), ipxe, "{path}");
    }
    assert!(builds.is_ipxe("pxelinux-really.0"));
    assert!(!builds.is_ipxe("ipxe-named.kpxe"));
    // Debian's netboot tree as shipped (through its symlinks): no iPXE in it.
    let tree = IpxeBuilds::new(TREE.into());
    for f in [
        "pxelinux.0",
        "debian-installer/amd64/bootnetx64.efi",
        "debian-installer/amd64/grubx64.efi",
    ] {
        assert!(
            Path::new(TREE).join(f).exists(),
            "{TREE}/{f} missing: apt-get install debian-installer-12-netboot-amd64"
        );
        assert!(!tree.is_ipxe(f), "{f}");
    }
}

fn boot(root: &Path, bios: &str, uefi: &str, script: Option<&str>) -> BootConfig {
    BootConfig {
        root: root.to_path_buf(),
        bios: Some(bios.into()),
        uefi: Some(uefi.into()),
        arm64: None,
        script: script.map(Into::into),
        http_port: Some(8069),
        pxelinux: PxelinuxOptions::default(),
    }
}

/// (boot file or URL, option 60) the server answers `packet` with, None for address only.
fn answer(boot_cfg: BootConfig, packet: &str) -> Option<(String, Option<Vec<u8>>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), (100, 200), 3600);
    cfg.boot = Some(boot_cfg);
    let mut h = handler(&cfg);
    let offer = one(&mut h, &testpackets::bytes(packet)).expect("an offer");
    let (_, reply) = raw(&offer);
    let file = reply
        .get(67)
        .map(|f| String::from_utf8_lossy(f).into_owned())?;
    Some((file, reply.get(60).map(<[u8]>::to_vec)))
}

#[test]
fn each_chain_of_the_table_with_real_packets_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_shipped(dir.path());
    let file = |b: BootConfig, p| answer(b, p).map(|(f, _)| f);
    let rom = testpackets::IPXE_ROM_DISCOVER;
    let ovmf = testpackets::OVMF_DISCOVER;
    let http = testpackets::HTTP_DISCOVER;

    // PXE ROM → pxelinux: QEMU's ROM is iPXE; pxelinux.0 is not an iPXE build, so it gets it.
    let pxelinux = boot(&root, "pxelinux.0", "shimx64.efi.signed", None);
    assert_eq!(file(pxelinux.clone(), rom).as_deref(), Some("pxelinux.0"));
    let lpxelinux = boot(&root, "lpxelinux.0", "shimx64.efi.signed", None);
    assert_eq!(file(lpxelinux, rom).as_deref(), Some("lpxelinux.0"));
    // UEFI → shim (→ GRUB from shim's folder).
    assert_eq!(
        answer(pxelinux, ovmf),
        Some(("shimx64.efi.signed".into(), Some(b"PXEClient".to_vec())))
    );
    // PXE ROM → iPXE → script; UEFI → ipxe.efi → script.
    let ipxe = boot(&root, "undionly.kpxe", "ipxe.efi", Some("boot.ipxe"));
    assert_eq!(
        file(ipxe.clone(), rom).as_deref(),
        Some("http://10.77.0.1:8069/boot.ipxe")
    );
    assert_eq!(file(ipxe.clone(), ovmf).as_deref(), Some("ipxe.efi"));
    // UEFI HTTP boot: the uefi file as a URL, with HTTPClient.
    assert_eq!(
        answer(ipxe, http),
        Some((
            "http://10.77.0.1:8069/ipxe.efi".into(),
            Some(b"HTTPClient".to_vec())
        ))
    );
    // iPXE with only iPXE builds and no script: nothing (no loop).
    let looping = boot(&root, "undionly.kpxe", "ipxe.efi", None);
    assert_eq!(file(looping.clone(), rom), None);
    // ... also when the iPXE build hides behind a pxelinux-like name.
    let hidden = boot(&root, "pxelinux-really.0", "ipxe.efi", None);
    std::fs::copy(root.join("undionly.kpxe"), root.join("pxelinux-really.0")).unwrap();
    assert_eq!(file(hidden, rom), None);
    // The firmware itself still gets its iPXE build: that is where the chain starts.
    assert_eq!(file(looping, ovmf).as_deref(), Some("ipxe.efi"));
}

fn proxy(dir: &Path) -> ProxyHandler {
    let root = root_with_shipped(dir);
    ProxyHandler::new(
        ProxyConfig {
            network: "lan".into(),
            interface: "br0".into(),
            server_ip: SERVER,
            boot: boot(&root, "pxelinux.0", "ipxe.efi", Some("boot.ipxe")),
            hosts: Vec::new(),
        },
        Arc::new(DhcpStats::default()),
    )
}

#[test]
fn proxy_offers_boot_information_only_to_pxe_clients() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = proxy(dir.path());
    // OVMF's DISCOVER on 67: a proxy offer without an address and without option 43.
    let o = p
        .handle_packet(&testpackets::bytes(testpackets::OVMF_DISCOVER), Via::Dhcp)
        .expect("proxy offer");
    assert_eq!(o.reply.msg_type, MessageType::Offer);
    assert_eq!(o.reply.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(o.dest, Destination::Broadcast);
    let (_, r) = raw(&o);
    assert_eq!(r.get(60), Some(&b"PXEClient"[..]));
    assert_eq!(r.ip(54), Some(SERVER));
    assert_eq!(r.get(67), Some(&b"ipxe.efi"[..]));
    assert_eq!(r.siaddr, SERVER);
    assert_eq!(r.get(43), None, "no 43: EDK2 then asks on 4011");
    assert!(r.get(97).is_some(), "the client's UUID back");
    for code in [1, 3, 51] {
        assert_eq!(r.get(code), None, "no address options ({code})");
    }
    // The iPXE ROM: its script, marked PXEClient so iPXE takes it as a proxy offer.
    let o = p
        .handle_packet(
            &testpackets::bytes(testpackets::IPXE_ROM_DISCOVER),
            Via::Dhcp,
        )
        .expect("proxy offer to iPXE");
    let (_, r) = raw(&o);
    assert_eq!(r.get(67), Some(&b"http://10.77.0.1:8069/boot.ipxe"[..]));
    assert_eq!(r.get(60), Some(&b"PXEClient"[..]));
    // OS clients are the other server's: not a byte from us.
    for plain in [testpackets::UDHCPC_DISCOVER, testpackets::DHCLIENT_DISCOVER] {
        assert!(p
            .handle_packet(&testpackets::bytes(plain), Via::Dhcp)
            .is_none());
    }
    assert_eq!(
        p.stats().ignored.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn proxy_answers_the_boot_server_request_on_4011_and_leaves_67_requests_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = proxy(dir.path());
    let client_ip = Ipv4Addr::new(10, 77, 0, 155);
    let mac = [0x52, 0x54, 0, 0, 0, 0x77];
    let info = [1u8, 2, b'p', b'1'];
    let pxe_request = |server: Ipv4Addr| {
        Packet::new(msg::REQUEST, mac)
            .xid(5)
            .ciaddr(client_ip)
            .option(60, b"PXEClient:Arch:00007:UNDI:003000")
            .option(93, &[0, 7])
            .option(97, &[0; 17])
            .option(opt::SERVER_ID, &server.octets())
            .option(opt::RELAY_AGENT_INFO, &info)
    };
    let from = SocketAddrV4::new(client_ip, 4011);
    let ack = p
        .handle_packet(&pxe_request(SERVER).bytes(), Via::BootServer { from })
        .expect("4011 ack");
    assert_eq!(ack.reply.msg_type, MessageType::Ack);
    assert_eq!(
        ack.dest,
        Destination::BootServer {
            ip: client_ip,
            mac: mac.into(),
            port: 4011
        }
    );
    let (_, r) = raw(&ack);
    assert_eq!(r.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.ciaddr, client_ip);
    assert_eq!(r.get(67), Some(&b"ipxe.efi"[..]));
    assert_eq!(r.get(43), Some(&[6, 1, 8, 255][..]), "the ACK carries 43");
    assert!(r.echoes_relay_info(&info), "{:?}", r.codes());
    // On 67, a REQUEST to the other server (its option 54) is not ours to answer.
    let other = Ipv4Addr::new(10, 77, 0, 2);
    assert!(p
        .handle_packet(&pxe_request(other).bytes(), Via::Dhcp)
        .is_none());
    // A DISCOVER on 4011 is not a boot-server request.
    let d = testpackets::bytes(testpackets::OVMF_DISCOVER);
    assert!(p.handle_packet(&d, Via::BootServer { from }).is_none());
}
