//! `[libvirt]` and `[[guest]]`: expansion, defaults, derived MACs, automatic and explicit
//! reservations, and the reservations that reach DHCP.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use hwaddr::Mac;

use super::{errors, ok, one_error, BASE};
use crate::config::model::{
    guest_mac, BootDevice, DiskBus, DiskFormat, DiskSource, GuestFirmware, VirtType,
    DEFAULT_LIBVIRT_URI,
};
use crate::config::{clone_reservations_file, ExtraReservation};

/// A nat network with DHCP (range .100-.200), a reservation at .2, and PXE. Lines 1-16.
const LAB: &str = "[[network]]
name = \"lab\"
mode = \"nat\"
bridge = \"br-lab\"
address = \"10.77.0.1/24\"
[network.dhcp]
range = \"10.77.0.100-10.77.0.200\"
[[network.dhcp.host]]
mac = \"52:54:00:00:00:10\"
ip = \"10.77.0.2\"
name = \"bastion\"
[network.pxe]
root = \"/srv/boot\"
bios = \"undionly.kpxe\"
script = \"boot.ipxe\"
[[guest]]
";

fn lab(guest: &str) -> String {
    format!("{LAB}{guest}")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

#[test]
fn a_fleet_entry_expands_with_defaults_and_free_addresses() {
    let m = ok(&lab("name = \"node\"\ncount = 3\nnetwork = \"lab\"\n"));
    assert_eq!(m.libvirt.uri, DEFAULT_LIBVIRT_URI);
    assert_eq!(m.libvirt.virt_type, VirtType::Kvm);
    let names: Vec<&str> = m.guests.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["node-1", "node-2", "node-3"]);
    // .1 is the gateway, .2 the bastion's: the first free addresses below the range.
    let ips: Vec<Ipv4Addr> = m.guests.iter().map(|g| g.ip).collect();
    assert_eq!(ips, [ip("10.77.0.3"), ip("10.77.0.4"), ip("10.77.0.5")]);
    let g = &m.guests[0];
    assert_eq!(
        (g.vcpus, g.memory_mib, g.boot, g.firmware),
        (1, 1024, BootDevice::Network, GuestFirmware::Bios)
    );
    assert!(g.vhost && !g.autostart && g.disk.is_none());
    assert_eq!(g.bridge, "br-lab");
    assert_eq!(g.mac, guest_mac("node-1"));
    assert_eq!(g.mac.octets()[..3], hwaddr::Mac::QEMU_OUI);
    let macs: std::collections::HashSet<_> = m.guests.iter().map(|g| g.mac).collect();
    assert_eq!(macs.len(), 3);
}

#[test]
fn explicit_values_are_kept() {
    let m = ok(&format!(
        "[libvirt]\nuri = \"test:///default\"\nvirt_type = \"qemu\"\ncpu_overcommit = 2\nmemory_overcommit = 1.5\n{}",
        lab("name = \"db\"\ncount = 2\nnetwork = \"lab\"\nvcpus = 4\nmemory = \"2GiB\"\ndisk = { backing = \"template.qcow2\", size = \"40GiB\", bus = \"scsi\" }\nboot = \"disk\"\nfirmware = \"uefi\"\nvhost = false\nip = [\"10.77.0.50\", \"10.77.0.51\"]\nautostart = true\nscript = \"install.ipxe\"\n")
    ));
    assert_eq!(m.libvirt.uri, "test:///default");
    assert_eq!(m.libvirt.virt_type, VirtType::Qemu);
    assert_eq!(
        (
            m.libvirt.cpu_overcommit_percent,
            m.libvirt.memory_overcommit_percent
        ),
        (200, 150)
    );
    let g = &m.guests[1];
    assert_eq!(g.name, "db-2");
    assert_eq!(g.ip, ip("10.77.0.51"));
    assert_eq!(
        (
            g.vcpus,
            g.memory_mib,
            g.boot,
            g.firmware,
            g.vhost,
            g.autostart
        ),
        (4, 2048, BootDevice::Disk, GuestFirmware::Uefi, false, true)
    );
    let d = g.disk.as_ref().expect("disk");
    // Without a path each guest's disk is its own volume in the pool; a bare backing name is a
    // volume of the pool too.
    assert_eq!(d.source, DiskSource::Volume("db-2.qcow2".into()));
    assert_eq!(d.backing, Some(DiskSource::Volume("template.qcow2".into())));
    assert_eq!(m.libvirt.pool, "default");
    assert_eq!(
        (d.size_bytes, d.format, d.bus),
        (Some(40 << 30), DiskFormat::Qcow2, DiskBus::Scsi)
    );
    assert_eq!(g.script.as_deref(), Some("install.ipxe"));
}

#[test]
fn reservations_reach_the_networks_dhcp_config() {
    let m = ok(&lab(
        "name = \"node\"\ncount = 2\nnetwork = \"lab\"\nscript = \"install.ipxe\"\n",
    ));
    let root = tempfile::tempdir().expect("tempdir");
    let cfgs = m.dhcp_configs(root.path());
    let hosts = &cfgs[0].hosts;
    assert_eq!(hosts.len(), 3, "bastion + two guests: {hosts:?}");
    let node2 = hosts
        .iter()
        .find(|h| h.name.as_deref() == Some("node-2"))
        .expect("node-2 reserved");
    assert_eq!(
        (node2.mac, node2.ip),
        (guest_mac("node-2"), ip("10.77.0.4"))
    );
    assert_eq!(
        node2.script.as_deref(),
        Some("hostagent-guests/node-2.ipxe"),
        "the rendered per-guest script"
    );
}

#[test]
fn clone_reservations_are_served_unless_they_clash() {
    let m = ok(&lab("name = \"node\"\nnetwork = \"lab\"\n"));
    let root = tempfile::tempdir().expect("tempdir");
    let file = clone_reservations_file(root.path(), &m.state_dir);
    std::fs::create_dir_all(file.parent().expect("dir")).expect("mkdir");
    let r = |name: &str, mac: &str, ip: &str| ExtraReservation {
        network: "lab".into(),
        name: name.into(),
        mac: mac.parse().expect("mac"),
        ip: ip.parse().expect("ip"),
    };
    let list = vec![
        r("web-1", "52:54:00:0c:00:01", "10.77.0.9"),
        r("taken", "52:54:00:0c:00:02", "10.77.0.2"), // the bastion's address
        r("outside", "52:54:00:0c:00:03", "10.99.0.9"), // not in the subnet
    ];
    std::fs::write(&file, serde_json::to_string(&list).expect("json")).expect("write");
    let hosts = &m.dhcp_configs(root.path())[0].hosts;
    let names: Vec<&str> = hosts.iter().filter_map(|h| h.name.as_deref()).collect();
    assert_eq!(names, ["bastion", "node", "web-1"]);
    // A broken file is ignored, not fatal.
    std::fs::write(&file, "{not json").expect("write");
    assert_eq!(m.dhcp_configs(root.path())[0].hosts.len(), 2);
}

// --- rules: position, message, hint ---------------------------------------------------------

#[test]
fn unknown_network_lists_the_known_ones() {
    let d = one_error(
        &lab("name = \"n\"\nnetwork = \"lbb\"\n"),
        18,
        11,
        "no [[network]] named \"lbb\"",
    );
    assert!(d.hint.expect("hint").contains("lab"));
}

#[test]
fn guest_network_needs_dhcp() {
    let text = "[[network]]\nname = \"l2\"\nmode = \"isolated\"\nbridge = \"br-l2\"\naddress = \"10.9.0.1/24\"\n[[guest]]\nname = \"n\"\nnetwork = \"l2\"\n";
    one_error(text, 8, 11, "has no [network.dhcp]");
}

#[test]
fn bad_values_are_located() {
    one_error(
        &lab("name = \"n\"\nnetwork = \"lab\"\ncount = 0\n"),
        19,
        9,
        "count = 0",
    );
    one_error(
        &lab("name = \"n\"\nnetwork = \"lab\"\nvcpus = 0\n"),
        19,
        9,
        "vcpus = 0",
    );
    one_error(
        &lab("name = \"n\"\nnetwork = \"lab\"\nmemory = \"2GB\"\n"),
        19,
        10,
        "unknown size unit",
    );
    one_error(
        &lab("name = \"n\"\nnetwork = \"lab\"\nmemory = \"16MiB\"\n"),
        19,
        10,
        "too small",
    );
    one_error(
        &lab("name = \"n\"\nnetwork = \"lab\"\nboot = \"cdrom\"\n"),
        19,
        8,
        "boot \"cdrom\"",
    );
    one_error(
        &lab("name = \"n\"\nnetwork = \"lab\"\nboot = \"disk\"\n"),
        19,
        8,
        "needs a disk",
    );
    one_error(
        &lab("name = \"n\"\nnetwork = \"lab\"\nfirmware = \"coreboot\"\n"),
        19,
        12,
        "firmware \"coreboot\"",
    );
    one_error(
        &lab("name = \"n_1\"\nnetwork = \"lab\"\n"),
        17,
        8,
        "not a valid host name",
    );
    one_error(
        &format!(
            "[libvirt]\nvirt_type = \"xen\"\n{}",
            lab("name = \"n\"\nnetwork = \"lab\"\n")
        ),
        2,
        13,
        "virt_type \"xen\"",
    );
    one_error(
        &format!(
            "[libvirt]\ncpu_overcommit = 0\n{}",
            lab("name = \"n\"\nnetwork = \"lab\"\n")
        ),
        2,
        18,
        "out of range",
    );
}

#[test]
fn disk_rules() {
    one_error(
        &lab("name = \"n\"\nnetwork = \"lab\"\ndisk = { format = \"qcow2\" }\n"),
        19,
        8,
        "needs a size",
    );
    one_error(
        &lab("name = \"n\"\ncount = 2\nnetwork = \"lab\"\ndisk = { path = \"/img/x.qcow2\" }\n"),
        20,
        17,
        "count > 1",
    );
    one_error(
        &lab(
            "name = \"n\"\nnetwork = \"lab\"\ndisk = { backing = \"t.qcow2\", format = \"raw\" }\n",
        ),
        19,
        20,
        "needs format = \"qcow2\"",
    );
    one_error(
        &lab("name = \"n\"\nnetwork = \"lab\"\ndisk = { path = \"../x.qcow2\" }\n"),
        19,
        17,
        "contains \"..\"",
    );
    one_error(
        &lab("name = \"n\"\nnetwork = \"lab\"\ndisk = { path = \"sub/x.qcow2\" }\n"),
        19,
        17,
        "neither a volume name nor an absolute path",
    );
    one_error(
        &lab("name = \"n\"\nnetwork = \"lab\"\ndisk = { size = \"20GiB\", bus = \"usb\" }\n"),
        19,
        32,
        "bus \"usb\"",
    );
}

#[test]
fn address_rules() {
    one_error(
        &lab("name = \"n\"\ncount = 2\nnetwork = \"lab\"\nip = \"10.77.0.9\"\n"),
        20,
        6,
        "one address for 2 guests",
    );
    one_error(
        &lab("name = \"n\"\ncount = 2\nnetwork = \"lab\"\nip = [\"10.77.0.9\"]\n"),
        20,
        6,
        "1 addresses for 2 guests",
    );
    one_error(
        &lab("name = \"n\"\nnetwork = \"lab\"\nip = \"10.77.0.1\"\n"),
        19,
        6,
        "gateway",
    );
    one_error(
        &lab("name = \"n\"\nnetwork = \"lab\"\nip = \"10.78.0.9\"\n"),
        19,
        6,
        "not a host address inside",
    );
    let d = one_error(
        &lab("name = \"n\"\nnetwork = \"lab\"\nip = \"10.77.0.2\"\n"),
        19,
        6,
        "already reserved",
    );
    assert!(d.message.contains("[[network.dhcp.host]]"), "{d}");
    // Explicit addresses anywhere win over automatic ones earlier in the file.
    let m = ok(&format!(
        "{}[[guest]]\nname = \"b\"\nnetwork = \"lab\"\nip = \"10.77.0.3\"\n",
        lab("name = \"a\"\nnetwork = \"lab\"\n")
    ));
    assert_eq!(
        (m.guests[0].ip, m.guests[1].ip),
        (ip("10.77.0.4"), ip("10.77.0.3"))
    );
}

#[test]
fn names_must_be_unique_across_guests_and_hosts() {
    let d = one_error(
        &lab("name = \"bastion\"\nnetwork = \"lab\"\n"),
        17,
        8,
        "used twice",
    );
    assert!(d.hint.expect("hint").contains("[[network.dhcp.host]]"));
    // node (count 2) gives node-1; a second entry named node-1 clashes.
    let text = format!(
        "{}[[guest]]\nname = \"node-1\"\nnetwork = \"lab\"\n",
        lab("name = \"node\"\ncount = 2\nnetwork = \"lab\"\n")
    );
    let d = one_error(&text, 21, 8, "guest name \"node-1\" is used twice");
    assert!(d.hint.expect("hint").contains("line 17"));
}

#[test]
fn a_full_network_is_reported() {
    let text = "[[network]]\nname = \"tiny\"\nmode = \"nat\"\nbridge = \"br-t\"\naddress = \"10.5.0.1/29\"\n[network.dhcp]\nrange = \"10.5.0.2-10.5.0.5\"\n[[guest]]\nname = \"n\"\ncount = 2\nnetwork = \"tiny\"\n";
    // Hosts .1-.6: gateway .1, range .2-.5, so only .6 is free for two guests.
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].message.contains("no free address") && errs[0].message.contains("n-2"),
        "{}",
        errs[0]
    );
}

// --- MACs: explicit, derived, and derived ones that meet ------------------------------------

/// Brute force: the first candidate whose derived guest MAC is that of a name in `taken` (or,
/// with `among_themselves`, of an earlier candidate), as (that name, the candidate). A derived
/// MAC is 24 bits of a hash, so a few thousand names are enough for two to meet.
fn colliding_names(
    taken: &[String],
    among_themselves: bool,
    candidates: impl Iterator<Item = String>,
) -> (String, String) {
    let mut seen: HashMap<Mac, String> = taken.iter().map(|n| (guest_mac(n), n.clone())).collect();
    for c in candidates {
        let mac = guest_mac(&c);
        if let Some(first) = seen.get(&mac).filter(|f| **f != c) {
            return (first.clone(), c);
        }
        if among_themselves {
            seen.insert(mac, c);
        }
    }
    panic!("the candidates ran out before two MACs met")
}

/// The text between `start` and the next `end` in a hint.
fn between<'a>(hint: &'a str, start: &str, end: char) -> &'a str {
    let from = hint.find(start).map(|i| i + start.len());
    let rest = from.map_or("", |i| &hint[i..]);
    rest.find(end).map_or(rest, |j| &rest[..j])
}

fn entry(name: &str, extra: &str) -> String {
    format!("[[guest]]\nname = \"{name}\"\nnetwork = \"lab\"\n{extra}")
}

#[test]
fn guests_whose_derived_macs_meet_are_an_error_naming_both_with_the_fix() {
    let (a, b) = colliding_names(
        &[],
        true,
        (0..).flat_map(|n| [format!("db{n}"), format!("web{n}")]),
    );
    let mac = guest_mac(&a);
    assert_eq!(mac, guest_mac(&b), "{a} and {b}");
    let text = format!("{}{}", lab(&entry(&a, "")[10..]), entry(&b, ""));
    let d = one_error(
        &text,
        20,
        8,
        &format!("guest \"{b}\" gets the MAC {mac} derived from its name, but guest \"{a}\" has that MAC too"),
    );
    let hint = d.hint.expect("hint");
    assert!(
        hint.contains(&format!("give guest \"{b}\" another MAC: mac = \""))
            && hint.contains(&format!("or set mac on guest \"{a}\" (line 17)")),
        "{hint}"
    );
    // The MAC the hint offers settles it, and is what the guest and its reservation get.
    let fix: Mac = between(&hint, "mac = \"", '"')
        .parse()
        .expect("a MAC in the hint");
    let m = ok(&format!("{text}mac = \"{fix}\"\n"));
    assert_eq!((m.guests[0].mac, m.guests[1].mac), (mac, fix));
    let root = tempfile::tempdir().expect("tempdir");
    let hosts = &m.dhcp_configs(root.path())[0].hosts;
    assert!(
        hosts
            .iter()
            .any(|h| h.name.as_deref() == Some(b.as_str()) && h.mac == fix),
        "{hosts:?}"
    );
}

#[test]
fn count_expansions_that_meet_are_one_error_with_one_list_either_way_round() {
    // Two fleets of 8. Names that differ only in their last characters meet in pairs (web1204-3
    // meets web2367-2, so -2 meets -3, -4 meets -5 ...): one problem per [[guest]], one list.
    let fleet = |k: u32| (1..=8).map(move |j| format!("web{k}-{j}"));
    let (x, y) = colliding_names(&[], true, (0..).flat_map(fleet));
    let base = |n: &str| n.split('-').next().unwrap_or_default().to_string();
    assert_ne!(
        base(&x),
        base(&y),
        "the same base never meets itself: {x} {y}"
    );
    let group = |b: &str| format!("[[guest]]\nname = \"{b}\"\ncount = 8\nnetwork = \"lab\"\n");
    for (first, second) in [(&x, &y), (&y, &x)] {
        let (first, second) = (base(first), base(second));
        let taken: Vec<Mac> = (1..=8)
            .map(|j| guest_mac(&format!("{first}-{j}")))
            .collect();
        let clashing: Vec<String> = (1..=8)
            .map(|j| format!("{second}-{j}"))
            .filter(|n| taken.contains(&guest_mac(n)))
            .collect();
        let text = format!("{}{}", lab(&group(&first)[10..]), group(&second));
        let d = one_error(&text, 21, 8, "derived from");
        for n in &clashing {
            assert!(
                d.message.contains(&format!("\"{n}\"")),
                "{n} not named: {d}"
            );
        }
        assert!(d.message.contains(&format!("guest \"{first}-")), "{d}");
        let hint = d.hint.expect("hint");
        assert!(
            hint.contains(&format!("in [[guest]] \"{second}\" write mac = [")),
            "{hint}"
        );
        // The list the hint spells out settles it: the clashing guests get the offered MACs.
        let list = format!("[{}]", between(&hint, "mac = [", ']'));
        let m = ok(&format!("{text}mac = {list}\n"));
        let offered: Vec<Mac> = list.split('"').filter_map(|s| s.parse().ok()).collect();
        assert_eq!(offered.len(), clashing.len(), "{list}");
        for g in m.guests.iter().filter(|g| g.group == second) {
            if clashing.contains(&g.name) {
                assert!(offered.contains(&g.mac), "{}: {list}", g.name);
            } else {
                assert_eq!(g.mac, guest_mac(&g.name), "{}: {list}", g.name);
            }
        }
    }
}

#[test]
fn a_derived_mac_meeting_a_reservation_or_a_bridge_is_an_error() {
    let mac = guest_mac("web");
    let host = format!(
        "{BASE}[network.dhcp]\nrange = \"10.77.0.100-10.77.0.200\"\n[[network.dhcp.host]]\nmac = \"{mac}\"\nip = \"10.77.0.2\"\nname = \"printer\"\n{}",
        entry("web", "")
    );
    let d = one_error(
        &host,
        13,
        8,
        &format!("guest \"web\" gets the MAC {mac} derived from its name, but [[network.dhcp.host]] \"printer\" on network \"lab\" has that MAC too"),
    );
    let fix = between(d.hint.as_deref().unwrap_or(""), "mac = \"", '"').to_string();
    assert_eq!(
        ok(&format!("{host}mac = \"{fix}\"\n")).guests[0]
            .mac
            .to_string(),
        fix
    );

    let bridge = format!(
        "{BASE}mac = \"{mac}\"\n[network.dhcp]\nrange = \"10.77.0.100-10.77.0.200\"\n{}",
        entry("web", "")
    );
    one_error(
        &bridge,
        10,
        8,
        "but the bridge of network \"lab\" has that MAC too",
    );
}

#[test]
fn explicit_macs_are_checked_like_any_mac_and_must_be_unique() {
    let m = ok(&lab(&entry("web", "mac = \"52:54:00:12:34:56\"\n")[10..]));
    assert_eq!(m.guests[0].mac, Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
    // A list: one per guest, "auto" keeps the derived MAC.
    let m = ok(&lab(
        "name = \"n\"\ncount = 2\nnetwork = \"lab\"\nmac = [\"auto\", \"52:54:00:12:34:57\"]\n",
    ));
    assert_eq!(
        (m.guests[0].mac, m.guests[1].mac),
        (guest_mac("n-1"), Mac([0x52, 0x54, 0, 0x12, 0x34, 0x57]))
    );
    // ip lists take "auto" entries the same way.
    let m = ok(&lab(
        "name = \"n\"\ncount = 2\nnetwork = \"lab\"\nip = [\"10.77.0.50\", \"auto\"]\n",
    ));
    assert_eq!(
        (m.guests[0].ip, m.guests[1].ip),
        (ip("10.77.0.50"), ip("10.77.0.3"))
    );

    let one = |mac: &str, fragment: &str| {
        one_error(
            &lab(&entry("web", &format!("mac = {mac}\n"))[10..]),
            19,
            7,
            fragment,
        )
    };
    one(
        "\"52:54:00:zz:34:56\"",
        "\"52:54:00:zz:34:56\" is not a MAC address",
    );
    one("\"01:00:5e:00:00:01\"", "multicast");
    one("\"00:00:00:00:00:00\"", "not usable");
    let d = one("\"52:54:00:00:00:10\"", "mac 52:54:00:00:00:10 of guest \"web\" is also the MAC of [[network.dhcp.host]] \"bastion\"");
    assert!(d
        .hint
        .expect("hint")
        .contains("give guest \"web\" another MAC"));
    one_error(
        &lab("name = \"n\"\ncount = 2\nnetwork = \"lab\"\nmac = \"52:54:00:12:34:56\"\n"),
        20,
        7,
        "one MAC for 2 guests",
    );
    one_error(
        &lab("name = \"n\"\ncount = 2\nnetwork = \"lab\"\nmac = [\"auto\"]\n"),
        20,
        7,
        "1 MACs for 2 guests",
    );
    let d = one_error(
        &lab("name = \"n\"\ncount = 2\nnetwork = \"lab\"\nmac = [\"auto\", \"zz\"]\n"),
        20,
        16,
        "\"zz\" is not a MAC address",
    );
    assert!(d.hint.expect("hint").contains("52:54:00:12:34:56"));
    // Two guests given one MAC: the second is refused, naming the first.
    let twice = format!(
        "{}{}",
        lab(&entry("a", "mac = \"52:54:00:12:34:56\"\n")[10..]),
        entry("b", "mac = \"52:54:00:12:34:56\"\n")
    );
    let d = one_error(
        &twice,
        23,
        7,
        "mac 52:54:00:12:34:56 of guest \"b\" is also the MAC of guest \"a\"",
    );
    assert!(d.hint.expect("hint").contains("(line 17)"));
}

#[test]
fn disk_paths_are_volumes_or_absolute_files_and_the_pool_is_named() {
    let m = ok(&format!(
        "[libvirt]\npool = \"fleet\"\n{}",
        lab("name = \"a\"\nnetwork = \"lab\"\ndisk = { path = \"/srv/images/a.raw\", format = \"raw\" }\n\n[[guest]]\nname = \"b\"\nnetwork = \"lab\"\ndisk = { path = \"kept.qcow2\", backing = \"/srv/t.qcow2\" }\n")
    ));
    assert_eq!(m.libvirt.pool, "fleet");
    let disk = |i: usize| m.guests[i].disk.clone().expect("disk");
    assert_eq!(disk(0).source, DiskSource::File("/srv/images/a.raw".into()));
    assert_eq!(disk(1).source, DiskSource::Volume("kept.qcow2".into()));
    assert_eq!(
        disk(1).backing,
        Some(DiskSource::File("/srv/t.qcow2".into()))
    );
    for bad in ["a/b", "", "two words"] {
        one_error(
            &format!(
                "[libvirt]\npool = \"{bad}\"\n{}",
                lab("name = \"a\"\nnetwork = \"lab\"\n")
            ),
            2,
            8,
            "is not a libvirt storage pool name",
        );
    }
}

/// `[libvirt]` with two `[[libvirt.host]]`s: lines 1-8, so `lab()` starts on line 9 and its
/// `[[guest]]` keys on line 26.
const HOSTS: &str = "[libvirt]
uri = \"qemu:///system\"
[[libvirt.host]]
name = \"kvm2\"
uri = \"qemu+ssh://root@kvm2/system\"
[[libvirt.host]]
name = \"kvm3\"
uri = \"qemu+tcp://10.0.0.3/system\"
";

#[test]
fn guests_on_other_hosts_keep_their_reservations_and_boot_script() {
    let m = ok(&format!(
        "{HOSTS}{}",
        lab("name = \"far\"\ncount = 2\nnetwork = \"lab\"\nhost = \"kvm2\"\nscript = \"install.ipxe\"\ndisk = { size = \"8GiB\" }\n\n[[guest]]\nname = \"near\"\nnetwork = \"lab\"\n")
    ));
    let hosts: Vec<(&str, &str)> = m
        .libvirt
        .hosts
        .iter()
        .map(|h| (h.name.as_str(), h.uri.as_str()))
        .collect();
    assert_eq!(
        hosts,
        [
            ("kvm2", "qemu+ssh://root@kvm2/system"),
            ("kvm3", "qemu+tcp://10.0.0.3/system")
        ]
    );
    let placed: Vec<(&str, Option<&str>)> = m
        .guests
        .iter()
        .map(|g| (g.name.as_str(), g.host.as_deref()))
        .collect();
    assert_eq!(
        placed,
        [
            ("far-1", Some("kvm2")),
            ("far-2", Some("kvm2")),
            ("near", None)
        ]
    );
    assert_eq!(
        m.libvirt.uri_of(Some("kvm2")),
        Some("qemu+ssh://root@kvm2/system")
    );
    assert_eq!(m.libvirt.uri_of(None), Some("qemu:///system"));
    assert_eq!(m.libvirt.uri_of(Some("nope")), None);
    // Where a guest runs changes nothing of what the agent serves it.
    let root = tempfile::tempdir().expect("tempdir");
    let reserved = &m.dhcp_configs(root.path())[0].hosts;
    let far2 = reserved
        .iter()
        .find(|h| h.name.as_deref() == Some("far-2"))
        .expect("far-2 reserved");
    assert_eq!(far2.mac, guest_mac("far-2"));
    assert_eq!(far2.script.as_deref(), Some("hostagent-guests/far-2.ipxe"));
}

#[test]
fn libvirt_hosts_and_guest_hosts_are_checked_with_positions() {
    let guest = |extra: &str| {
        format!(
            "{HOSTS}{}",
            lab(&format!("name = \"a\"\nnetwork = \"lab\"\n{extra}"))
        )
    };
    let d = one_error(
        &guest("host = \"kvm9\"\n"),
        27,
        8,
        "no [[libvirt.host]] named \"kvm9\"",
    );
    assert!(
        d.hint.as_deref().is_some_and(|h| h.contains("kvm2, kvm3")),
        "{d}"
    );
    // Without any [[libvirt.host]], the hint says to add one.
    let d = one_error(
        &lab("name = \"a\"\nnetwork = \"lab\"\nhost = \"kvm2\"\n"),
        19,
        8,
        "no [[libvirt.host]] named \"kvm2\"",
    );
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|h| h.contains("add [[libvirt.host]]")),
        "{d}"
    );
    // Another host cannot have a disk by path: only libvirt's storage API reaches it.
    one_error(
        &guest("host = \"kvm2\"\ndisk = { path = \"/srv/a.qcow2\", size = \"1GiB\" }\n"),
        28,
        17,
        "a disk path by absolute path on host \"kvm2\"",
    );
    one_error(
        &guest("host = \"kvm2\"\ndisk = { backing = \"/srv/t.qcow2\" }\n"),
        28,
        20,
        "a disk backing by absolute path",
    );
    let host = |name: &str, uri: &str| {
        format!(
            "{HOSTS}[[libvirt.host]]\nname = \"{name}\"\nuri = \"{uri}\"\n{}",
            lab("name = \"a\"\nnetwork = \"lab\"\n")
        )
    };
    let d = one_error(
        &host("kvm2", "qemu+tcp://10.0.0.9/system"),
        10,
        8,
        "\"kvm2\" is named twice",
    );
    assert!(
        d.hint.as_deref().is_some_and(|h| h.contains("line 4")),
        "{d}"
    );
    let d = one_error(
        &host("kvm4", "qemu+tcp://10.0.0.3/system"),
        11,
        7,
        "hosts \"kvm3\" and \"kvm4\" have the same uri",
    );
    assert!(
        d.hint.as_deref().is_some_and(|h| h.contains("line 7")),
        "{d}"
    );
    one_error(
        &host("kvm4", "qemu:///system"),
        11,
        7,
        "has the [libvirt] uri",
    );
    one_error(
        &host("local", "qemu+tcp://10.0.0.4/system"),
        10,
        8,
        "it names the [libvirt] uri connection",
    );
    one_error(
        &host("kvm4", "nonsense"),
        11,
        7,
        "is not a libvirt connection URI",
    );
    one_error(&host("bad name", "qemu+tcp://10.0.0.4/system"), 10, 8, "");
}
