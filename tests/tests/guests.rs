//! libvirt guests against a real, private libvirtd in the test's namespace, running with
//! libvirt's stock security (QEMU as libvirt-qemu, DAC relabelling; see
//! `hostagent_tests::libvirt`): a 3-guest fleet from one `[[guest]]` entry, with disks in the
//! storage pool the agent creates, PXE-boots from the agent's network into the marker kernel (in
//! parallel, TCG), and clone / virtio / vhost run against definitions read back from libvirt.

use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use hostagent_tests::cli::{json, Cli};
use hostagent_tests::config::{Config, Dhcp, Guest, Network, Pxe};
use hostagent_tests::console::{read_log, tail};
use hostagent_tests::daemon::Daemon;
use hostagent_tests::libvirt::{qemu_credentials, Libvirtd};
use hostagent_tests::qemu::{install_payload, ipxe_script, Fetch, BOOT_MARKER};
use hostagent_tests::Scratch;
use testkit::{stderr, stdout, wait_for, Netns};

const STATE_DIR: &str = "/var/lib/hostagent";

/// The network the guests boot from: DHCP and PXE from the agent.
fn lab() -> Network {
    Network::nat("lab", "br-lab", "10.77.0.1/24")
        .dhcp(Dhcp::new("10.77.0.100-10.77.0.200").lease_time("1h"))
        .pxe(Pxe::ipxe("/srv/boot"))
}

/// The lab network, libvirt at `uri` with TCG guests, and `guests`.
fn config(uri: &str, guests: &[Guest]) -> Config {
    let c = Config::new(STATE_DIR)
        .libvirt(uri, Some("qemu"))
        .network(lab());
    guests.iter().cloned().fold(c, Config::guest)
}

/// Attribute `attr` of every `<tag ...>` in `xml`, in order (the tests read libvirt's own XML).
fn attrs(xml: &str, tag: &str, attr: &str) -> Vec<String> {
    let open = format!("<{tag} ");
    xml.match_indices(&open)
        .filter_map(|(i, _)| {
            let end = xml[i..].find('>')? + i;
            let el = &xml[i..end];
            let key = format!("{attr}='");
            let s = el.find(&key)? + key.len();
            let e = el[s..].find('\'')? + s;
            Some(el[s..e].to_string())
        })
        .collect()
}

fn element_text(xml: &str, tag: &str) -> Option<String> {
    let s = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let e = xml[s..].find(&format!("</{tag}>"))? + s;
    Some(xml[s..e].to_string())
}

/// One `<disk>…</disk>` block per disk.
fn disks(xml: &str) -> Vec<String> {
    xml.match_indices("<disk ")
        .filter_map(|(i, _)| xml[i..].find("</disk>").map(|e| xml[i..i + e].to_string()))
        .collect()
}

/// The boot root /srv/boot with the marker payload over TFTP and the per-guest script template
/// `fleet.ipxe`: the agent renders {{name}} into each guest's copy, and the guest's kernel echoes
/// it back in the marker line.
fn fleet_boot_root(s: &Scratch) -> std::path::PathBuf {
    let boot_root = s.file("srv/boot");
    install_payload(&boot_root, "boot.ipxe", Fetch::Tftp);
    let template = ipxe_script(Fetch::Tftp).replace(
        "hostagent_path=tftp",
        "hostagent_path=tftp hostagent_guest={{name}}",
    );
    std::fs::write(boot_root.join("fleet.ipxe"), template).expect("template");
    boot_root
}

/// The result `name` of `check --json` output `v`.
fn check_result<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v.as_array()
        .expect("results")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {v:#}"))
}

/// The status ("pass", "warn", "fail") of the result `name` in `check --json` output `v`.
fn check_status(v: &serde_json::Value, name: &str) -> String {
    check_result(v, name)["status"]
        .as_str()
        .expect("status")
        .to_string()
}

/// The marker kernel's line on the console `log`, waited for until 360 s after `started`
/// (libvirtd probes QEMU on the first define, slow on a loaded 2-core host); None if it never
/// came.
fn boot_line(log: &std::path::Path, started: Instant) -> Option<String> {
    wait_for(360u64.saturating_sub(started.elapsed().as_secs()), || {
        read_log(log)
            .lines()
            .find(|l| l.contains(BOOT_MARKER))
            .map(str::to_string)
    })
}

/// A `guests --json` row's MAC and address, after checking that its lease is its reservation and
/// that the daemon holds that lease on `network` (`held`: `Cli::leases`).
fn leased_reservation<'a>(
    r: &'a serde_json::Value,
    network: &str,
    held: &[(String, String, String)],
) -> (&'a str, &'a str) {
    let (mac, ip) = (
        r["mac"].as_str().expect("mac"),
        r["ip"].as_str().expect("ip"),
    );
    assert_eq!(
        r["lease"]["ip"], ip,
        "{}: the lease is not its reservation: {r}",
        r["name"]
    );
    assert!(
        held.iter()
            .any(|(net, m, i)| net == network && m == mac && i == ip),
        "{} {mac} {ip} not in leases {held:?}",
        r["name"]
    );
    (mac, ip)
}

#[test]
fn guests_fleet_pxe_boots_from_one_entry() {
    let ns = Netns::new("gf");
    let s = Scratch::new();
    let lv = Libvirtd::start(&ns);
    let boot_root = fleet_boot_root(&s);
    let node = Guest::new("node", "lab")
        .count(3)
        .vcpus(1)
        .memory("256MiB")
        .boot("network")
        .firmware("bios")
        .vhost(true)
        .ip("auto")
        .script("fleet.ipxe")
        .disk_size("64MiB");
    let cfg = s.config(config(&lv.uri, &[node]));
    let cli = Cli::new(&ns, &s, &cfg);
    // Stock libvirt: guests run under DAC (plus AppArmor where the kernel has it), not as root.
    let models = lv.security_models();
    assert!(models.iter().any(|m| m == "dac"), "{models:?}");
    if hostagent_tests::libvirt::apparmor_enabled() {
        assert!(models.iter().any(|m| m == "apparmor"), "{models:?}");
    }

    // plan: three guests to define and start (libvirt is asked; the host's networks too).
    let plan = cli.run(&["plan"]);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "{}{}",
        stdout(&plan),
        stderr(&plan)
    );
    // No pool yet in this libvirt: the agent makes libvirt's default one, then a volume each.
    assert!(
        stdout(&plan).contains("create storage pool default (directory /var/lib/libvirt/images"),
        "{}",
        stdout(&plan)
    );
    for n in ["node-1", "node-2", "node-3"] {
        assert!(
            stdout(&plan).contains(&format!(
                "create volume {n}.qcow2 in storage pool default for guest {n} (64 MiB qcow2)"
            )),
            "{}",
            stdout(&plan)
        );
        assert!(
            stdout(&plan).contains(&format!("define guest {n} on network lab")),
            "{}",
            stdout(&plan)
        );
        assert!(
            stdout(&plan).contains(&format!("start guest {n}")),
            "{}",
            stdout(&plan)
        );
    }

    let started = Instant::now();
    let daemon = Daemon::start(&ns, &s, &cfg, &[]);
    let console = |n: &str| s.file(&format!("var/lib/hostagent/guests/console/{n}.log"));
    // While it installs, each guest's QEMU runs as the libvirt-qemu user, not root: its disk
    // (a pool volume) and console log are reachable under DAC.
    let qemu = lv.qemu_ids();
    for n in ["node-1", "node-2", "node-3"] {
        let ids = wait_for(120, || qemu_credentials(&ns, n));
        assert_eq!(
            ids,
            Some(qemu),
            "{n}: no QEMU running as libvirt-qemu {qemu:?}\n--- agent ---\n{}\n--- libvirtd ---\n{}",
            tail(&daemon.log_text(), 40),
            tail(&lv.log(), 20)
        );
        // Read while it runs (it powers off once booted): libvirt's live label for it.
        let live = lv.virsh_ok(&["dumpxml", n]);
        assert!(
            live.contains("<seclabel type='dynamic' model='dac' relabel='yes'>"),
            "{live}"
        );
    }
    let mut booted = Vec::new();
    for n in ["node-1", "node-2", "node-3"] {
        let Some(line) = boot_line(&console(n), started) else {
            panic!(
                "{n} did not boot in {:?}\n--- console ---\n{}\n--- agent ---\n{}\n--- libvirtd ---\n{}",
                started.elapsed(),
                tail(&read_log(&console(n)), 40),
                tail(&daemon.log_text(), 60),
                tail(&lv.log(), 20)
            )
        };
        eprintln!("{n} booted after {:.1?}: {line}", started.elapsed());
        // The firmware and iPXE print to the serial console too (no graphics): a user can watch.
        let text = read_log(&console(n));
        assert!(
            text.contains("iPXE") && text.contains("SeaBIOS"),
            "{n}: no firmware output on the console:\n{}",
            tail(&text, 40)
        );
        if n == "node-1" {
            eprintln!("--- {n} console (tail) ---\n{}", tail(&text, 25));
        }
        assert!(
            line.contains(&format!("hostagent_guest={n}")),
            "{n} booted another guest's script: {line}"
        );
        booted.push(n);
    }

    // Each guest holds a lease on its reserved address, shown by `hostagent guests`.
    let rows = json(&cli.run(&["guests", "--json"]));
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let held = cli.leases();
    let mut ips = Vec::new();
    for (r, n) in rows.iter().zip(booted) {
        assert_eq!(r["name"], n, "{r}");
        let (mac, ip) = leased_reservation(r, "lab", &held);
        assert!(mac.starts_with("52:54:00:"), "{r}");
        assert_eq!(
            r["stage"],
            "os booted",
            "{r}\n--- console ---\n{}",
            tail(&read_log(&console(n)), 40)
        );
        let last: u8 = ip
            .rsplit('.')
            .next()
            .and_then(|o| o.parse().ok())
            .expect("ip");
        assert!(
            !(100..=200).contains(&last),
            "reservation {ip} inside the dynamic range"
        );
        ips.push(ip.to_string());
        // What libvirt holds: TCG, virtio NIC on the agent's bridge, serial console to a file.
        let xml = lv.inactive_xml(n);
        assert!(xml.contains("<domain type='qemu'"), "{xml}");
        assert_eq!(attrs(&xml, "model", "type"), ["virtio"], "{xml}");
        assert_eq!(attrs(&xml, "source", "bridge"), ["br-lab"], "{xml}");
        assert_eq!(attrs(&xml, "mac", "address"), [mac], "{xml}");
        assert!(!xml.contains("<graphics"), "{xml}");
        // Its disk is the volume libvirt made in the pool, as big as the config says.
        let volume = format!("/var/lib/libvirt/images/{n}.qcow2");
        assert_eq!(attrs(&xml, "source", "file"), [volume.as_str()], "{xml}");
        let image = qemu_img_info(lv.host_path(&volume).to_str().expect("utf-8"));
        assert_eq!(
            (image["format"].as_str(), image["virtual-size"].as_u64()),
            (Some("qcow2"), Some(64 << 20)),
            "{image}"
        );
    }
    let pool = lv.virsh_ok(&["pool-dumpxml", "default"]);
    assert!(
        pool.contains("<path>/var/lib/libvirt/images</path>") && pool.contains("<mode>0711</mode>"),
        "{pool}"
    );
    let info = lv.virsh_ok(&["pool-info", "default"]);
    assert!(
        info.contains("running")
            && info
                .lines()
                .any(|l| l.starts_with("Autostart:") && l.ends_with("yes")),
        "{info}"
    );
    // The rendered scripts went to the agent's state directory; the boot root is only read.
    assert!(s
        .file("var/lib/hostagent/guests/scripts/node-2.ipxe")
        .is_file());
    assert!(!boot_root.join("hostagent-guests").exists());
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "reservations must differ: {ips:?}");
    let table = cli.run(&["guests"]);
    assert!(stdout(&table).contains("os booted"), "{}", stdout(&table));
    // Defining, starting and listing the guests went through helper processes: none is left,
    // and libvirt was never mapped into the daemon.
    let libvirt = libvirt_mapped(&daemon);
    assert!(libvirt.is_empty(), "the daemon maps {libvirt:?}");
    assert_eq!(daemon.children(), Vec::<i32>::new());

    // Guests that powered off are not started again, and nothing else is left to do for them.
    let plan = cli.run(&["plan", "--json"]);
    let p: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan json");
    assert_eq!(p["guests"]["actions"], serde_json::json!([]), "{p}");
    drop(daemon);

    // down keeps guests unless asked; down --guests removes them.
    let down = cli.run(&["down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(lv.virsh_ok(&["list", "--all", "--name"]).contains("node-2"));
    let down = cli.run(&["down", "--guests"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(
        !lv.virsh_ok(&["list", "--all", "--name"]).contains("node-"),
        "guests left after down --guests"
    );
    // Their disks stay: deleting data takes a person.
    let volumes = lv.virsh_ok(&["vol-list", "default"]);
    for n in ["node-1", "node-2", "node-3"] {
        assert!(volumes.contains(&format!("{n}.qcow2")), "{volumes}");
    }
}

/// Issue 16's fleet across hosts: the agent's namespace runs the agent and a libvirtd; `kvm2` (a
/// second namespace) runs another libvirtd, reached only through `qemu+tcp://` over a management
/// link of its own. The lab segment is shared: a bridge in kvm2 with the same name as the agent's,
/// joined to it by one veth (a KVM host's bridge on the lab LAN). One guest on each libvirtd
/// PXE-boots from the agent.
#[test]
fn fleet_of_two_guests_on_two_libvirtds_one_remote_pxe_boots_from_the_shared_network() {
    let ns = Netns::new("fh");
    let kvm2 = Netns::new("fk");
    ns.veth_to("fl0", &kvm2, "fl0");
    kvm2.ok(&["ip", "link", "add", "br-fl", "type", "bridge"]);
    kvm2.ok(&["ip", "link", "set", "fl0", "master", "br-fl"]);
    kvm2.ok(&["ip", "link", "set", "br-fl", "up"]);
    kvm2.wait_forwarding("fl0");
    ns.veth_to("mg0", &kvm2, "mg0");
    ns.ok(&["ip", "addr", "add", "10.79.0.1/30", "dev", "mg0"]);
    kvm2.ok(&["ip", "addr", "add", "10.79.0.2/30", "dev", "mg0"]);
    let s = Scratch::new();
    let local = Libvirtd::start(&ns);
    let remote = Libvirtd::start_listening(&kvm2, "10.79.0.2".parse().expect("addr"));
    let remote_uri = remote.tcp_uri.clone().expect("tcp uri");
    fleet_boot_root(&s);
    let guest = |name: &str| {
        Guest::new(name, "fl")
            .vcpus(1)
            .memory("256MiB")
            .firmware("bios")
            .script("fleet.ipxe")
            .disk_size("64MiB")
    };
    let net = Network::new("fl", "bridge", "br-fl")
        .address("10.78.0.1/24")
        .interfaces(&["fl0"])
        .stp(false)
        .dhcp(Dhcp::new("10.78.0.100-10.78.0.200").lease_time("1h"))
        .pxe(Pxe::ipxe("/srv/boot"));
    let cfg = s.config(
        Config::new(STATE_DIR)
            .libvirt(&local.uri, Some("qemu"))
            .libvirt_host("kvm2", &remote_uri)
            .network(net)
            .guest(guest("near"))
            .guest(guest("far").host("kvm2")),
    );
    let cli = Cli::new(&ns, &s, &cfg);

    // plan asks both libvirtds (kvm2 over TCP): kvm2 has no pool yet either, and each step
    // there names its host.
    let plan = cli.run(&["plan"]);
    let text = stdout(&plan);
    assert_eq!(plan.status.code(), Some(2), "{text}{}", stderr(&plan));
    for line in [
        "create storage pool default (directory /var/lib/libvirt/images, through libvirt) (on host kvm2)",
        "create volume far.qcow2 in storage pool default for guest far (64 MiB qcow2) (on host kvm2)",
        "start guest far (on host kvm2)",
        "create volume near.qcow2 in storage pool default for guest near (64 MiB qcow2)\n",
        "start guest near\n",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}{}", stderr(&plan));
    }

    // check asks each host's libvirt too, naming the remote one.
    let out = cli.run(&["check", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)));
    for name in ["libvirt daemon", "libvirt daemon on host kvm2"] {
        assert_eq!(check_status(&v, name), "pass", "{v:#}");
    }

    let started = Instant::now();
    let daemon = Daemon::start(&ns, &s, &cfg, &[]);
    let near_console = s.file("var/lib/hostagent/guests/console/near.log");
    // Each guest's QEMU runs where its libvirtd is: far's in kvm2, as libvirt-qemu there too.
    for (n, here, other) in [("near", &ns, &kvm2), ("far", &kvm2, &ns)] {
        let ids = wait_for(120, || qemu_credentials(here, n));
        assert_eq!(
            ids,
            Some(local.qemu_ids()),
            "{n}: no QEMU in {}\n--- agent ---\n{}",
            here.name,
            tail(&daemon.log_text(), 40)
        );
        assert_eq!(
            qemu_credentials(other, n),
            None,
            "{n} runs in {}",
            other.name
        );
    }
    // The remote guest's console is in kvm2's QEMU driver directory (its private one here).
    let far_console = remote.host_path("/var/lib/libvirt/qemu/far.console.log");
    for (n, console) in [("near", &near_console), ("far", &far_console)] {
        let Some(line) = boot_line(console, started) else {
            panic!(
                "{n} did not boot in {:?}\n--- console ---\n{}\n--- agent ---\n{}\n--- local libvirtd ---\n{}\n--- kvm2 libvirtd ---\n{}",
                started.elapsed(),
                tail(&read_log(console), 40),
                tail(&daemon.log_text(), 60),
                tail(&local.log(), 20),
                tail(&remote.log(), 20)
            )
        };
        eprintln!("{n} booted after {:.1?}: {line}", started.elapsed());
        assert!(
            line.contains(&format!("hostagent_guest={n}")),
            "{n} booted another guest's script: {line}"
        );
    }

    // Each libvirtd holds exactly its own guest, read back from each directly.
    assert_eq!(local.virsh_ok(&["list", "--all", "--name"]).trim(), "near");
    assert_eq!(remote.virsh_ok(&["list", "--all", "--name"]).trim(), "far");
    let xml = remote.inactive_xml("far");
    assert_eq!(attrs(&xml, "source", "bridge"), ["br-fl"], "{xml}");
    assert_eq!(
        attrs(&xml, "source", "file"),
        ["/var/lib/libvirt/images/far.qcow2"],
        "{xml}"
    );
    assert!(
        remote
            .host_path("/var/lib/libvirt/images/far.qcow2")
            .is_file(),
        "far's volume is not in kvm2's pool"
    );

    // `guests` lists both hosts, each guest with the lease of its reservation from this agent.
    let rows = json(&cli.run(&["guests", "--json"]));
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let held = cli.leases();
    for (r, (n, host)) in rows.iter().zip([("near", "local"), ("far", "kvm2")]) {
        assert_eq!(
            (r["name"].as_str(), r["host"].as_str()),
            (Some(n), Some(host)),
            "{r}"
        );
        let (mac, _) = leased_reservation(r, "fl", &held);
        assert_eq!(
            attrs(
                &if n == "far" {
                    xml.clone()
                } else {
                    local.inactive_xml(n)
                },
                "mac",
                "address"
            ),
            [mac]
        );
    }
    let table = stdout(&cli.run(&["guests"]));
    let far = table
        .lines()
        .find(|l| l.starts_with("far "))
        .unwrap_or_else(|| panic!("no far row:\n{table}"));
    assert!(
        table.lines().next().is_some_and(|h| h.contains(" HOST ")),
        "{table}"
    );
    assert!(far.split_whitespace().nth(1) == Some("kvm2"), "{table}");
    // Stages: near's from its console here, far's from its lease (its console is on kvm2).
    let stages: Vec<&str> = rows.iter().filter_map(|r| r["stage"].as_str()).collect();
    assert_eq!(stages, ["os booted", "dhcp offered"], "{rows:#?}");

    // kvm2 gone: its guest is listed as unreachable, the local one as before.
    drop(remote);
    let rows = json(&cli.run(&["guests", "--json"]));
    let states: Vec<(&str, &str)> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| Some((r["name"].as_str()?, r["state"].as_str()?)))
        .collect();
    assert_eq!(
        states,
        [("near", "shut off"), ("far", "unreachable")],
        "{rows:#}"
    );
}

/// The libvirt libraries mapped into the daemon's process.
fn libvirt_mapped(daemon: &Daemon) -> Vec<String> {
    daemon
        .mapped_files()
        .into_iter()
        .filter(|p| {
            std::path::Path::new(p)
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("libvirt"))
        })
        .collect()
}

/// A hand-made guest with a qcow2 disk on the lab bridge, like one an administrator keeps as a
/// template.
fn base_xml(name: &str, mac: &str, disk: &str) -> String {
    format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{disk}'/><target dev='vda' bus='virtio'/></disk>
    <interface type='bridge'><mac address='{mac}'/><source bridge='br-lab'/><model type='virtio'/></interface>
  </devices></domain>"
    )
}

fn qemu_img_info(path: &str) -> serde_json::Value {
    let o = std::process::Command::new("qemu-img")
        .args(["info", "--output", "json", "-U", path])
        .output()
        .expect("qemu-img (package qemu-utils)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("qemu-img json")
}

#[test]
fn guest_clone_gives_new_identity_reservation_and_overlay_disks() {
    let ns = Netns::new("gc");
    let s = Scratch::new();
    let lv = Libvirtd::start(&ns);
    // The template lives in libvirt's default pool, as virt-manager leaves it.
    lv.define_pool("default", "/var/lib/libvirt/images");
    lv.virsh_ok(&[
        "vol-create-as",
        "default",
        "base.qcow2",
        "64M",
        "--format",
        "qcow2",
    ]);
    let disk = lv.virsh_ok(&["vol-path", "--pool", "default", "base.qcow2"]);
    let disk = disk.trim();
    lv.define(&base_xml("base", "52:54:00:aa:00:01", disk));
    let base_uuid = element_text(&lv.inactive_xml("base"), "uuid").expect("uuid");
    let cfg = s.config(config(&lv.uri, &[]));
    let cli = Cli::new(&ns, &s, &cfg);

    let out = cli.run(&["guest", "clone", "base", "web", "--count", "2"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let mut seen_uuids = vec![base_uuid];
    let mut seen_macs = vec!["52:54:00:aa:00:01".to_string()];
    let reservations: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.file("var/lib/hostagent/guests/reservations.json"))
            .expect("reservations file"),
    )
    .expect("reservations json");
    for n in ["web-1", "web-2"] {
        let xml = lv.inactive_xml(n);
        let uuid = element_text(&xml, "uuid").expect("uuid");
        assert!(!seen_uuids.contains(&uuid), "{n} reuses a UUID");
        seen_uuids.push(uuid);
        let mac = attrs(&xml, "mac", "address").pop().expect("mac");
        assert!(
            mac.starts_with("52:54:00:") && !seen_macs.contains(&mac),
            "{n}: MAC {mac} not new"
        );
        seen_macs.push(mac.clone());
        // A new volume in the pool (libvirt knows it), a qcow2 overlay on the template.
        let file = attrs(&xml, "source", "file").pop().expect("disk");
        assert_eq!(file, format!("/var/lib/libvirt/images/{n}.qcow2"));
        assert_eq!(
            lv.virsh_ok(&["vol-path", "--pool", "default", &format!("{n}.qcow2")])
                .trim(),
            file
        );
        let info = qemu_img_info(lv.host_path(&file).to_str().expect("utf-8"));
        assert_eq!(info["format"], "qcow2");
        assert_eq!(
            (
                info["backing-filename"].as_str(),
                info["backing-filename-format"].as_str()
            ),
            (Some(disk), Some("qcow2")),
            "{n} is not an overlay on the source: {info}"
        );
        let r = reservations
            .as_array()
            .expect("list")
            .iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("no reservation for {n}: {reservations}"));
        assert_eq!(r["mac"], mac.as_str());
        assert_eq!(r["network"], "lab");
        assert!(
            stdout(&out).contains(&format!(
                "defined {n} (MAC {mac}, reserved {}",
                r["ip"].as_str().expect("ip")
            )),
            "{}",
            stdout(&out)
        );
    }
    let ips: Vec<&str> = reservations
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["ip"].as_str())
        .collect();
    assert_eq!(ips.len(), 2);
    assert_ne!(ips[0], ips[1]);
    // The clones are listed (no daemon here: lease unknown).
    let rows = json(&cli.run(&["guests", "--json"]));
    let names: Vec<&str> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"web-1") && names.contains(&"web-2"),
        "{rows}"
    );

    // A taken name is refused; --full has libvirtd copy the volume instead of overlaying.
    let again = cli.run(&["guest", "clone", "base", "web-1"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let full = cli.run(&["guest", "clone", "base", "db", "--full"]);
    assert!(full.status.success(), "{}", stderr(&full));
    let file = attrs(&lv.inactive_xml("db"), "source", "file")
        .pop()
        .expect("disk");
    assert_eq!(file, "/var/lib/libvirt/images/db.qcow2");
    let info = qemu_img_info(lv.host_path(&file).to_str().expect("utf-8"));
    assert!(
        info.get("backing-filename").is_none() && info["virtual-size"] == 64 << 20,
        "--full made no full copy: {info}"
    );

    // A source disk outside every pool: an overlay on it works, a copy is refused before
    // anything is made, saying how to get a copy.
    let loose = s.file("loose.qcow2");
    let loose = loose.to_str().expect("utf-8");
    let o = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", loose, "32M"])
        .output()
        .expect("qemu-img");
    assert!(o.status.success());
    lv.define(&base_xml("loose", "52:54:00:aa:00:04", loose));
    let copy = cli.run(&["guest", "clone", "loose", "copy", "--full"]);
    assert_eq!(copy.status.code(), Some(1), "{}", stdout(&copy));
    assert!(
        stderr(&copy).contains(&format!("{loose} is in none"))
            && stderr(&copy).contains("virsh pool-define-as"),
        "{}",
        stderr(&copy)
    );
    assert!(!lv.virsh_ok(&["list", "--all", "--name"]).contains("copy"));
    assert!(!lv.virsh_ok(&["vol-list", "default"]).contains("copy.qcow2"));
    let over = cli.run(&["guest", "clone", "loose", "over"]);
    assert!(over.status.success(), "{}", stderr(&over));
    let info = qemu_img_info(
        lv.host_path("/var/lib/libvirt/images/over.qcow2")
            .to_str()
            .expect("utf-8"),
    );
    assert_eq!(info["backing-filename"], loose, "{info}");
}

/// Guests whose disks are volumes of a pool the administrator named, managed by a running
/// daemon: defined and started at start-up and after a SIGHUP (when the daemon has dropped its
/// capabilities), listed, and all of it without libvirt ever mapped into the daemon: its guest
/// work runs in helper processes that are gone afterwards.
#[test]
fn guests_in_a_named_pool_and_no_libvirt_in_the_daemon() {
    let ns = Netns::new("gp");
    let s = Scratch::new();
    let lv = Libvirtd::start(&ns);
    lv.define_pool("fleet", "/var/lib/libvirt/fleet");
    // Disk boot from an empty disk: SeaBIOS finds nothing and retries, nothing else runs.
    let guest = |name: &str| {
        Guest::new(name, "lab")
            .memory("64MiB")
            .boot("disk")
            .disk_size("16MiB")
    };
    let with = |guests: &[Guest]| {
        guests
            .iter()
            .cloned()
            .fold(
                Config::new(STATE_DIR)
                    .libvirt(&lv.uri, Some("qemu"))
                    .libvirt_pool("fleet")
                    .network(lab()),
                Config::guest,
            )
            .to_string()
    };
    install_payload(&s.file("srv/boot"), "boot.ipxe", Fetch::Tftp);
    let cfg = s.config(with(&[guest("solo")]));
    let cli = Cli::new(&ns, &s, &cfg);
    let running = |name: &str| {
        wait_for(180, || {
            (lv.virsh(&["domstate", name]).stdout == b"running\n\n").then_some(())
        })
        .is_some()
    };

    let daemon = Daemon::start(&ns, &s, &cfg, &[]);
    let logs = |d: &Daemon| {
        format!(
            "--- agent ---\n{}\n--- libvirtd ---\n{}",
            tail(&d.log_text(), 40),
            tail(&lv.log(), 20)
        )
    };
    assert!(running("solo"), "{}", logs(&daemon));
    let rows = json(&cli.run(&["guests", "--json"]));
    assert_eq!(rows[0]["name"], "solo", "{rows}");
    assert_eq!(rows[0]["state"], "running", "{rows}");
    // The privilege drop happens after start-up: a reload's guests go through a helper that
    // only has what the daemon kept.
    daemon.wait_log("privileges dropped", 10);
    s.config(with(&[guest("solo"), guest("duo")]));
    daemon.signal(libc::SIGHUP);
    assert!(running("duo"), "{}", logs(&daemon));
    for n in ["solo", "duo"] {
        let file = format!("/var/lib/libvirt/fleet/{n}.qcow2");
        assert_eq!(
            attrs(&lv.inactive_xml(n), "source", "file"),
            [file.as_str()]
        );
        let image = qemu_img_info(lv.host_path(&file).to_str().expect("utf-8"));
        assert_eq!(image["virtual-size"], 16 << 20, "{image}");
    }
    assert!(
        !lv.virsh_ok(&["pool-list", "--all", "--name"])
            .lines()
            .any(|p| p.trim() == "default"),
        "a named pool was configured: libvirt's default pool must not be made"
    );
    let libvirt = libvirt_mapped(&daemon);
    assert!(libvirt.is_empty(), "the daemon maps {libvirt:?}");
    assert_eq!(daemon.children(), Vec::<i32>::new(), "a helper was left");
    drop(daemon);

    // down --guests removes the guests, not their volumes.
    let down = cli.run(&["down", "--guests"]);
    assert!(down.status.success(), "{}", stderr(&down));
    let volumes = lv.virsh_ok(&["vol-list", "fleet"]);
    assert!(
        volumes.contains("solo.qcow2") && volumes.contains("duo.qcow2"),
        "{volumes}"
    );

    // A pool libvirt does not have is an error that says how to make it.
    let missing = s.config(
        Config::new(STATE_DIR)
            .libvirt(&lv.uri, Some("qemu"))
            .libvirt_pool("nope")
            .network(lab())
            .guest(guest("solo")),
    );
    let plan = Cli::new(&ns, &s, &missing).run(&["plan"]);
    assert_eq!(plan.status.code(), Some(1), "{}", stdout(&plan));
    assert!(
        stderr(&plan).contains("no storage pool named \"nope\"")
            && stderr(&plan).contains("virsh pool-define-as nope dir"),
        "{}",
        stderr(&plan)
    );
}

/// A disk with an explicit path is a file used where it is (qemu-img makes it when missing).
/// Under libvirt's default security QEMU must get through every directory above it: `plan` says
/// when one is closed, the start then fails exactly so, and works once the directory is open.
#[test]
fn a_disk_at_an_explicit_path_is_used_where_it_is_and_plan_warns_when_qemu_cannot_reach_it() {
    let ns = Netns::new("gd");
    let s = Scratch::new();
    let lv = Libvirtd::start(&ns);
    install_payload(&s.file("srv/boot"), "boot.ipxe", Fetch::Tftp);
    let filed = Guest::new("filed", "lab")
        .memory("64MiB")
        .boot("disk")
        .disk_file("/images/filed.qcow2", "16MiB");
    let cfg = s.config(config(&lv.uri, &[filed]));
    let cli = Cli::new(&ns, &s, &cfg);
    let file = s.file("images/filed.qcow2");
    // A root-only directory above the disk, as the agent's state directory is (0700): QEMU, as
    // libvirt-qemu, cannot pass it.
    std::fs::set_permissions(s.root(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let plan = cli.run(&["plan"]);
    assert_eq!(plan.status.code(), Some(2), "{}", stderr(&plan));
    for expected in [
        format!(
            "create disk {} for guest filed (16 MiB qcow2)",
            file.display()
        ),
        format!(
            "note: guest filed: disk {} is below {} (mode 0700), which other users cannot enter",
            file.display(),
            s.root().display()
        ),
    ] {
        assert!(stdout(&plan).contains(&expected), "{}", stdout(&plan));
    }
    assert!(
        !stdout(&plan).contains("storage pool"),
        "no pool is needed for a file disk: {}",
        stdout(&plan)
    );
    let apply = cli.run(&["apply"]);
    assert_eq!(apply.status.code(), Some(1), "{}", stdout(&apply));
    assert!(
        stderr(&apply).contains("Cannot access storage file")
            && stderr(&apply).contains("Permission denied"),
        "{}",
        stderr(&apply)
    );
    let image = qemu_img_info(file.to_str().expect("utf-8"));
    assert_eq!(image["virtual-size"], 16 << 20, "{image}");

    // Open the directory for others to pass (not to read). The guest stayed defined but off
    // (the agent never starts a defined guest again): undefine it, and apply defines it on the
    // disk file that is already there and starts it.
    std::fs::set_permissions(s.root(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let down = cli.run(&["down", "--guests"]);
    assert!(down.status.success(), "{}", stderr(&down));
    let plan = cli.run(&["plan"]);
    assert!(
        !stdout(&plan).contains("note: guest filed") && !stdout(&plan).contains("create disk"),
        "{}",
        stdout(&plan)
    );
    let apply = cli.run(&["apply"]);
    assert!(
        apply.status.success(),
        "{}{}",
        stdout(&apply),
        stderr(&apply)
    );
    let qemu = wait_for(120, || qemu_credentials(&ns, "filed"));
    assert_eq!(qemu, Some(lv.qemu_ids()), "{}", tail(&lv.log(), 20));
    assert_eq!(
        attrs(&lv.inactive_xml("filed"), "source", "file"),
        [file.to_str().expect("utf-8")]
    );
    let down = cli.run(&["down", "--guests"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(file.is_file(), "down --guests removed the disk file");
}

#[test]
fn guest_virtio_moves_ide_sata_disks_and_e1000_nic() {
    let ns = Netns::new("gv");
    let s = Scratch::new();
    let lv = Libvirtd::start(&ns);
    lv.define(
        "<domain type='qemu'><name>legacy</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/nonexistent/a.img'/><target dev='hda' bus='ide'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/nonexistent/b.img'/><target dev='sdb' bus='sata'/></disk>
    <disk type='file' device='cdrom'><source file='/nonexistent/x.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>
    <interface type='bridge'><mac address='52:54:00:aa:00:02'/><source bridge='br-lab'/><model type='e1000'/></interface>
  </devices></domain>",
    );
    let before = lv.inactive_xml("legacy");
    // libvirt gave the IDE/SATA disks drive addresses: those must go with the move.
    assert_eq!(
        attrs(&before, "address", "type")
            .iter()
            .filter(|t| *t == "drive")
            .count(),
        3,
        "{before}"
    );
    let cfg = s.config(config(&lv.uri, &[]));
    let cli = Cli::new(&ns, &s, &cfg);
    let out = cli.run(&["guest", "virtio", "legacy"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let after = lv.inactive_xml("legacy");
    let d = disks(&after);
    assert_eq!(d.len(), 3, "{after}");
    assert_eq!(attrs(&d[0], "target", "dev"), ["vda"], "{after}");
    assert_eq!(attrs(&d[0], "target", "bus"), ["virtio"], "{after}");
    assert_eq!(attrs(&d[1], "target", "dev"), ["vdb"], "{after}");
    assert_eq!(attrs(&d[1], "target", "bus"), ["virtio"], "{after}");
    for disk in &d[..2] {
        // libvirt assigns virtio disks a PCI slot; the old drive address is gone.
        assert!(
            attrs(disk, "address", "type").iter().all(|t| t == "pci"),
            "{disk}"
        );
    }
    assert_eq!(
        attrs(&d[2], "target", "bus"),
        ["ide"],
        "the CD-ROM stays on IDE: {after}"
    );
    assert_eq!(attrs(&after, "model", "type"), ["virtio"], "{after}");
    // Nothing left to move.
    let again = cli.run(&["guest", "virtio", "legacy"]);
    assert!(
        stdout(&again).contains("nothing to change"),
        "{}",
        stdout(&again)
    );
}

#[test]
fn guest_vhost_off_and_on_in_the_definition() {
    let ns = Netns::new("gh");
    let s = Scratch::new();
    let lv = Libvirtd::start(&ns);
    lv.define(
        "<domain type='qemu'><name>net</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><interface type='bridge'><mac address='52:54:00:aa:00:03'/><source bridge='br-lab'/><model type='virtio'/></interface></devices></domain>",
    );
    let cfg = s.config(config(&lv.uri, &[]));
    let cli = Cli::new(&ns, &s, &cfg);
    let vhost = |state: &str| {
        let o = cli.run(&["guest", "vhost", "net", state]);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        lv.inactive_xml("net")
    };
    assert_eq!(attrs(&vhost("off"), "driver", "name"), ["qemu"]);
    assert_eq!(attrs(&vhost("on"), "driver", "name"), ["vhost"]);
}

/// libvirt's test driver has a running domain named "test": edits are refused unless --next-boot.
#[test]
fn guest_edits_refuse_a_running_guest_without_next_boot() {
    let s = Scratch::new();
    let cfg = s.config(
        Config::new(STATE_DIR)
            .libvirt("test:///default", None)
            .network(lab()),
    );
    let bin = hostagent_tests::hostagent_bin();
    let run = |args: &[&str]| {
        std::process::Command::new(&bin)
            .args(["-c", &cfg, "--root", s.root_str()])
            .args(args)
            .output()
            .expect("hostagent")
    };
    let o = run(&["guest", "virtio", "test"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("running") && stderr(&o).contains("--next-boot"),
        "{}",
        stderr(&o)
    );
    let o = run(&["guest", "vhost", "test", "off", "--next-boot"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `check --json` run beside `lv` (its /dev/kvm and accounts, as on the daemon's host): the
/// parsed results and the exit code.
fn check_beside(lv: &Libvirtd, cli: &Cli) -> (serde_json::Value, Option<i32>) {
    let out = lv
        .beside(&cli.argv(&["check", "--json"]))
        .output()
        .expect("nsenter");
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)));
    (v, out.status.code())
}

/// `check` asks the daemon, its QEMU driver (KVM or only TCG) and sums the guests' vCPUs and
/// memory against the host: a guest far beyond the host warns. KVM counts only where the user
/// libvirt runs QEMU as may open /dev/kvm: on a host without udev (root-only /dev/kvm) libvirt
/// itself reports KVM, and `check` says why a KVM guest would not start.
#[test]
fn guest_check_reports_libvirt_and_overcommit() {
    let ns = Netns::new("gk");
    let s = Scratch::new();
    let lv = Libvirtd::start(&ns);
    let big = Guest::new("big", "lab").vcpus(64).memory("1024GiB");
    let cfg = s.config(config(&lv.uri, std::slice::from_ref(&big)));
    let cli = Cli::new(&ns, &s, &cfg);
    let (v, _) = check_beside(&lv, &cli);
    let status = |name: &str| check_status(&v, name);
    assert_eq!(status("libvirt daemon"), "pass");
    assert_eq!(status("libvirt qemu driver"), "pass");
    // With /dev/kvm as udev makes it, libvirt-qemu may open it; without one, only TCG (never a
    // failure with virt_type = "qemu").
    let has_kvm = hostagent_tests::libvirt::kvm_device().is_some();
    assert_eq!(
        status("libvirt kvm"),
        if has_kvm { "pass" } else { "warn" },
        "{v:#}"
    );
    assert_eq!(status("libvirt cpu overcommit"), "warn");
    assert_eq!(status("libvirt memory overcommit"), "warn");

    // A host without udev: /dev/kvm root:root 0600. libvirt's probe still finds KVM, but a KVM
    // guest's QEMU (libvirt-qemu) could not open it: check fails for a config that wants KVM.
    if has_kvm {
        let bare = Libvirtd::start_without_udev(&ns);
        let cfg = s.config(
            Config::new(STATE_DIR)
                .libvirt(&bare.uri, Some("kvm"))
                .network(lab())
                .guest(big),
        );
        let (v, code) = check_beside(&bare, &Cli::new(&ns, &s, &cfg));
        let kvm = check_result(&v, "libvirt kvm");
        assert_eq!(kvm["status"], "fail", "{v:#}");
        assert_eq!(code, Some(1), "{v:#}");
        let detail = kvm["detail"].as_str().expect("detail");
        assert!(
            detail.contains("libvirt reports KVM")
                && detail.contains(&format!("uid {} (libvirt-qemu)", bare.qemu_ids().0))
                && detail.contains("cannot open /dev/kvm (root:root, mode 0600)"),
            "{detail}"
        );
        let hint = kvm["hint"].as_str().expect("hint");
        assert!(
            hint.contains("chgrp kvm /dev/kvm && chmod 0660 /dev/kvm"),
            "{hint}"
        );
    }

    // An unreachable daemon fails the check when the config has guests.
    let cfg = s.config(config(
        "qemu:///system?socket=/nonexistent/sock",
        &[Guest::new("n", "lab")],
    ));
    let cli = Cli::new(&ns, &s, &cfg);
    let out = cli.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("FAIL  libvirt daemon"),
        "{}",
        stdout(&out)
    );
}

/// libvirt is loaded on first use, not linked: the binary starts (and the daemon serves) on a
/// host without libvirt, and a guest command there says what to install.
#[test]
fn without_libvirt_the_agent_runs_and_guest_checks_say_what_to_install() {
    let bin = hostagent_tests::hostagent_bin();
    let ldd = std::process::Command::new("ldd")
        .arg(&bin)
        .output()
        .expect("ldd");
    assert!(ldd.status.success(), "ldd: {}", stderr(&ldd));
    assert!(
        !stdout(&ldd).contains("libvirt"),
        "hostagent links libvirt: {}",
        stdout(&ldd)
    );

    let ns = Netns::new("gnl");
    let s = Scratch::new();
    // The library as a guest command would find it, hidden in a private mount namespace.
    let lib = std::fs::canonicalize("/usr/lib/x86_64-linux-gnu/libvirt.so.0")
        .expect("libvirt.so.0 is installed on the test host");
    let hidden = |args: &[&str]| {
        let mut c = std::process::Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind /dev/null \"$1\" && shift && exec \"$@\"")
            .arg("sh")
            .arg(&lib)
            .args(["ip", "netns", "exec", &ns.name])
            .arg(&bin)
            .args(args);
        c.output().expect("run hostagent with libvirt hidden")
    };
    let with_guest = s.config(config("qemu:///system", &[Guest::new("g", "lab")]));
    let out = hidden(&["-c", &with_guest, "--root", s.root_str(), "check"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("FAIL  libvirt daemon"), "{text}");
    assert!(
        text.contains("libvirt is not installed") && text.contains("libvirt0"),
        "{text}"
    );
    // Without guests the same host applies and tears down its networks: libvirt never loads.
    let no_guests = s.config(Config::new(STATE_DIR).network(lab()));
    for cmd in ["apply", "down"] {
        let out = hidden(&["-c", &no_guests, "--root", s.root_str(), cmd]);
        assert!(
            out.status.success(),
            "{cmd}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
}
