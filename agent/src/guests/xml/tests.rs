//! Domain XML without a daemon: what the agent generates, and the virtio/vhost/clone edits on
//! definitions shaped like the ones libvirt returns.

use std::path::{Path, PathBuf};

use super::*;
use crate::config::{parse, DiskBus, DiskFormat, DiskSource, GuestDisk};

fn model(guest: &str) -> crate::config::Model {
    let text = format!(
        "[[network]]\nname = \"lab\"\nmode = \"nat\"\nbridge = \"br-lab\"\naddress = \"10.77.0.1/24\"\n\
         [network.dhcp]\nrange = \"10.77.0.100-10.77.0.200\"\n\
         [network.pxe]\nroot = \"/srv/boot\"\nbios = \"undionly.kpxe\"\n\
         [[guest]]\n{guest}"
    );
    parse(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn doc(xml: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(xml)
        .unwrap_or_else(|e| panic!("generated XML does not parse: {e}\n{xml}"))
}

fn find<'a, 'i>(d: &'a roxmltree::Document<'i>, path: &[&str]) -> Vec<roxmltree::Node<'a, 'i>> {
    let mut nodes = vec![d.root_element()];
    for p in path {
        nodes = nodes
            .iter()
            .flat_map(|n| {
                n.children()
                    .filter(|c| c.is_element() && c.tag_name().name() == *p)
            })
            .collect();
    }
    nodes
}

#[test]
fn fleet_guest_xml_has_virtio_nic_serial_log_and_no_graphics() {
    let m = model("name = \"node\"\ncount = 3\nnetwork = \"lab\"\nvcpus = 2\nmemory = \"2GiB\"\n");
    assert_eq!(m.guests.len(), 3);
    let g = &m.guests[1];
    assert_eq!(g.name, "node-2");
    let log = PathBuf::from("/r/var/lib/hostagent/guests/console/node-2.log");
    let xml = domain_xml(g, VirtType::Qemu, &log, None);
    let d = doc(&xml);
    assert_eq!(d.root_element().attribute("type"), Some("qemu"));
    assert_eq!(find(&d, &["name"])[0].text(), Some("node-2"));
    assert_eq!(find(&d, &["vcpu"])[0].text(), Some("2"));
    let mem = find(&d, &["memory"])[0];
    assert_eq!(
        (mem.attribute("unit"), mem.text()),
        (Some("MiB"), Some("2048"))
    );
    let boots: Vec<_> = find(&d, &["os", "boot"])
        .iter()
        .map(|b| b.attribute("dev").unwrap_or(""))
        .collect();
    assert_eq!(boots, ["network"]);
    let bios = find(&d, &["os", "bios"]);
    assert_eq!(
        bios[0].attribute("useserial"),
        Some("yes"),
        "firmware output on the serial console"
    );
    let nic = find(&d, &["devices", "interface"]);
    assert_eq!(nic.len(), 1);
    assert_eq!(nic[0].attribute("type"), Some("bridge"));
    assert_eq!(
        find(&d, &["devices", "interface", "source"])[0].attribute("bridge"),
        Some("br-lab")
    );
    assert_eq!(
        find(&d, &["devices", "interface", "model"])[0].attribute("type"),
        Some("virtio")
    );
    assert_eq!(
        find(&d, &["devices", "interface", "mac"])[0].attribute("address"),
        Some(g.mac.to_string().as_str())
    );
    assert!(
        find(&d, &["devices", "interface", "driver"]).is_empty(),
        "vhost on: no driver override"
    );
    let serial = find(&d, &["devices", "serial", "source"]);
    assert_eq!(
        serial[0].attribute("path"),
        Some(log.to_str().unwrap_or(""))
    );
    assert!(find(&d, &["devices", "graphics"]).is_empty());
    assert!(find(&d, &["devices", "video"]).is_empty());
    // Read back by our own parser: owner metadata and the reservation.
    let info = parse_xml(&xml);
    let owner = info.owner.expect("hostagent metadata");
    assert_eq!(
        (
            owner.group.as_str(),
            owner.network.as_str(),
            owner.ip.as_str()
        ),
        ("node", "lab", g.ip.to_string().as_str())
    );
    assert_eq!(info.console_log.as_deref(), log.to_str());
}

fn parse_xml(xml: &str) -> DomainInfo {
    super::parse(xml).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn disk_uefi_and_vhost_off_show_in_the_xml() {
    let m = model("name = \"db\"\nnetwork = \"lab\"\ndisk = { size = \"20GiB\", bus = \"sata\" }\nboot = \"network\"\nfirmware = \"uefi\"\nvhost = false\n");
    let g = &m.guests[0];
    assert_eq!(
        g.disk,
        Some(GuestDisk {
            source: DiskSource::Volume("db.qcow2".into()),
            size_bytes: Some(20 << 30),
            format: DiskFormat::Qcow2,
            bus: DiskBus::Sata,
            backing: None
        })
    );
    let xml = domain_xml(
        g,
        VirtType::Kvm,
        Path::new("/c.log"),
        Some(Path::new("/r/db.qcow2")),
    );
    let d = doc(&xml);
    assert_eq!(d.root_element().attribute("type"), Some("kvm"));
    assert_eq!(find(&d, &["os"])[0].attribute("firmware"), Some("efi"));
    let boots: Vec<_> = find(&d, &["os", "boot"])
        .iter()
        .map(|b| b.attribute("dev").unwrap_or(""))
        .collect();
    assert_eq!(
        boots,
        ["network", "hd"],
        "install from the network, then the disk"
    );
    let t = find(&d, &["devices", "disk", "target"])[0];
    assert_eq!(
        (t.attribute("dev"), t.attribute("bus")),
        (Some("sda"), Some("sata"))
    );
    assert_eq!(
        find(&d, &["devices", "disk", "driver"])[0].attribute("type"),
        Some("qcow2")
    );
    assert_eq!(
        find(&d, &["devices", "disk", "source"])[0].attribute("file"),
        Some("/r/db.qcow2")
    );
    assert_eq!(
        find(&d, &["devices", "interface", "driver"])[0].attribute("name"),
        Some("qemu")
    );
}

/// Shaped like `virsh dumpxml --inactive` of a guest made years ago with IDE/SATA and e1000.
const OLD_GUEST: &str = "<domain type='kvm'>
  <name>legacy</name>
  <uuid>6f1ab0b1-2f8a-4a4c-9a57-1d2a3f4b5c6d</uuid>
  <memory unit='KiB'>1048576</memory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <nvram>/var/lib/libvirt/qemu/nvram/legacy_VARS.fd</nvram>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/img/legacy.qcow2'/>
      <target dev='hda' bus='ide'/>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/img/data.raw'/>
      <target dev='sdb' bus='sata'/>
      <address type='drive' controller='0' bus='0' target='0' unit='1'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/iso/install.iso'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:0a:0b:0c'/>
      <source bridge='br-lab'/>
      <model type='e1000'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:0a:0b:0d'/>
      <source bridge='br-lab'/>
    </interface>
    <serial type='file'>
      <source path='/logs/legacy.log'/>
      <target port='0'/>
    </serial>
  </devices>
</domain>
";

#[test]
fn virtio_moves_ide_and_sata_disks_and_nics_and_drops_their_addresses() {
    let (xml, changes) = to_virtio(OLD_GUEST).expect("edit");
    assert_eq!(changes.len(), 4, "{changes:#?}");
    let info = parse_xml(&xml);
    let disks: Vec<_> = info
        .disks
        .iter()
        .map(|d| (d.target.as_str(), d.bus.as_str(), d.has_address))
        .collect();
    assert_eq!(
        disks,
        [
            ("vda", "virtio", false),
            ("vdb", "virtio", false),
            ("hdc", "ide", false)
        ],
        "{xml}"
    );
    let nics: Vec<_> = info
        .interfaces
        .iter()
        .map(|n| (n.model.as_deref(), n.has_address))
        .collect();
    assert_eq!(
        nics,
        [(Some("virtio"), false), (Some("virtio"), false)],
        "{xml}"
    );
    // Untouched parts survive byte for byte.
    assert!(xml.contains("<source file='/img/data.raw'/>"));
    assert!(xml.contains("<uuid>6f1ab0b1-2f8a-4a4c-9a57-1d2a3f4b5c6d</uuid>"));
    assert!(
        !xml.contains("\n\n"),
        "removed elements leave no blank lines:\n{xml}"
    );
    // Idempotent.
    let (again, none) = to_virtio(&xml).expect("edit");
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(again, xml);
}

#[test]
fn virtio_picks_a_free_vd_name_when_the_letter_is_taken() {
    let xml = OLD_GUEST.replace(
        "<target dev='sdb' bus='sata'/>",
        "<target dev='vda' bus='virtio'/>",
    );
    let (out, _) = to_virtio(&xml).expect("edit");
    let targets: Vec<String> = parse_xml(&out)
        .disks
        .iter()
        .map(|d| d.target.clone())
        .collect();
    assert_eq!(targets, ["vdb", "vda", "hdc"]);
}

#[test]
fn vhost_off_then_on() {
    let (virtio, _) = to_virtio(OLD_GUEST).expect("edit");
    let (off, changes) = set_vhost(&virtio, false).expect("off");
    assert_eq!(changes.len(), 2);
    assert!(
        parse_xml(&off)
            .interfaces
            .iter()
            .all(|n| n.driver.as_deref() == Some("qemu")),
        "{off}"
    );
    let (on, changes) = set_vhost(&off, true).expect("on");
    assert_eq!(changes.len(), 2);
    assert!(
        parse_xml(&on)
            .interfaces
            .iter()
            .all(|n| n.vhost() && n.driver.as_deref() == Some("vhost")),
        "{on}"
    );
    let (_, none) = set_vhost(&on, true).expect("on again");
    assert!(none.is_empty());
    // A driver with other settings keeps them.
    let queues = virtio.replace(
        "<model type='virtio'/>\n    </interface>",
        "<model type='virtio'/>\n      <driver queues='4'/>\n    </interface>",
    );
    let (off, _) = set_vhost(&queues, false).expect("off");
    assert!(
        off.contains("<driver queues='4' name='qemu'/>")
            || off.contains("<driver name='qemu' queues='4'/>"),
        "{off}"
    );
}

#[test]
fn clone_changes_identity_and_disks_only() {
    let macs = [Mac([0x52, 0x54, 0, 1, 2, 3]), Mac([0x52, 0x54, 0, 1, 2, 4])];
    let files = [
        Some("/state/guests/copy-hda.qcow2".to_string()),
        Some("/state/guests/copy-sdb.qcow2".to_string()),
        None,
    ];
    let xml = clone_xml(
        OLD_GUEST,
        &CloneSpec {
            name: "copy",
            macs: &macs,
            disk_files: &files,
            console_log: Some("/state/guests/console/copy.log"),
            ip: Some(std::net::Ipv4Addr::new(10, 77, 0, 9)),
            network: Some("lab"),
            source: "legacy",
        },
    )
    .expect("clone");
    let info = parse_xml(&xml);
    assert_eq!(info.name, "copy");
    assert_eq!(info.uuid, None, "libvirt assigns a new UUID");
    assert!(!xml.contains("<nvram>"), "a fresh UEFI variable store");
    let m: Vec<_> = info.interfaces.iter().filter_map(|n| n.mac).collect();
    assert_eq!(m, macs, "written as text and read back");
    assert!(xml.contains("<mac address='52:54:00:01:02:03'/>"), "{xml}");
    let src: Vec<_> = info.disks.iter().filter_map(|d| d.source.clone()).collect();
    assert_eq!(
        src,
        [
            "/state/guests/copy-hda.qcow2",
            "/state/guests/copy-sdb.qcow2",
            "/iso/install.iso"
        ]
    );
    assert_eq!(
        info.console_log.as_deref(),
        Some("/state/guests/console/copy.log")
    );
    assert_eq!(info.vcpus, 1);
    assert_eq!(info.memory_kib, 1 << 20);
    // The clone is marked as the agent's, with its reservation.
    let owner = info.owner.expect("metadata added");
    assert_eq!(
        (
            owner.group.as_str(),
            owner.network.as_str(),
            owner.ip.as_str()
        ),
        ("legacy", "lab", "10.77.0.9")
    );
}

#[test]
fn escaping_keeps_paths_with_quotes_well_formed() {
    let m = model("name = \"a\"\nnetwork = \"lab\"\n");
    let xml = domain_xml(
        &m.guests[0],
        VirtType::Qemu,
        Path::new("/tmp/it's <odd> & \"x\".log"),
        None,
    );
    assert_eq!(
        parse_xml(&xml).console_log.as_deref(),
        Some("/tmp/it's <odd> & \"x\".log")
    );
}

#[test]
fn an_explicit_mac_is_the_nics_and_reads_back() {
    let m = model("name = \"web\"\nnetwork = \"lab\"\nmac = \"52:54:00:12:34:56\"\n");
    let xml = domain_xml(&m.guests[0], VirtType::Qemu, Path::new("/log"), None);
    assert_eq!(
        find(&doc(&xml), &["devices", "interface", "mac"])[0].attribute("address"),
        Some("52:54:00:12:34:56")
    );
    let nics = parse_xml(&xml).interfaces;
    assert_eq!(nics[0].mac, Some(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])));
}
