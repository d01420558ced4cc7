//! `[libvirt]` and `[[guest]]`: each entry expanded into its instances (`node-1` … `node-N`), each
//! instance given a MAC (its `mac`, else derived from its name; see `guest_macs` for collisions)
//! and a DHCP reservation on its network.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::Path;

use super::super::checks::{self, Bad};
use super::super::model::{
    guest_mac, BootDevice, DiskBus, DiskFormat, DiskSource, Guest, GuestDisk, GuestFirmware,
    Libvirt, LibvirtHost, Network, VirtType, LOCAL_HOST,
};
use super::super::units::parse_size;
use super::super::wire::{self, PerGuest, S};
use super::guest_macs::{Clash, GuestMacs};
use super::Checker;

/// Most instances one `[[guest]]` may expand to.
const MAX_COUNT: i64 = 256;
const MAX_VCPUS: i64 = 512;
const MIN_MEMORY_MIB: u64 = 64;
const DEFAULT_MEMORY_MIB: u64 = 1024;

pub(super) fn libvirt(c: &mut Checker, w: Option<&S<wire::Libvirt>>) -> Libvirt {
    let mut out = Libvirt::default();
    let Some(w) = w.map(|w| w.get_ref()) else {
        return out;
    };
    if let Some(uri) = &w.uri {
        if let Some(u) = c.check(uri.span(), connection_uri(uri.get_ref(), "qemu:///system")) {
            out.uri = u;
        }
    }
    if let Some(t) = &w.virt_type {
        match t.get_ref().as_str() {
            "kvm" => out.virt_type = VirtType::Kvm,
            "qemu" => out.virt_type = VirtType::Qemu,
            other => c.report(
                t.span(),
                checks::bad(
                    format!("virt_type \"{}\" is not known", other.escape_debug()),
                    "write virt_type = \"kvm\" (hardware virtualization) or \"qemu\" (TCG emulation, no /dev/kvm needed)",
                ),
            ),
        }
    }
    if let Some(pool) = &w.pool {
        match checks::pool_name(pool.get_ref()) {
            Ok(()) => out.pool = pool.get_ref().clone(),
            Err(bad) => c.report(pool.span(), bad),
        }
    }
    for (key, value, slot) in [
        (
            "cpu_overcommit",
            &w.cpu_overcommit,
            &mut out.cpu_overcommit_percent,
        ),
        (
            "memory_overcommit",
            &w.memory_overcommit,
            &mut out.memory_overcommit_percent,
        ),
    ] {
        if let Some(v) = value {
            let r = *v.get_ref();
            if r.is_finite() && (0.1..=100.0).contains(&r) {
                *slot = (r * 100.0).round() as u32;
            } else {
                c.report(
                    v.span(),
                    checks::bad(
                        format!("{key} = {r} is out of range"),
                        format!("write a ratio from 0.1 to 100, e.g. {key} = 1.5"),
                    ),
                );
            }
        }
    }
    out.hosts = hosts(c, &w.host, &out.uri);
    out
}

fn connection_uri(u: &str, example: &str) -> Result<String, Bad> {
    if u.is_empty() || !u.contains(':') || u.chars().any(char::is_control) {
        Err(checks::bad(
            format!(
                "uri \"{}\" is not a libvirt connection URI",
                u.escape_debug()
            ),
            format!("write e.g. uri = \"{example}\""),
        ))
    } else {
        Ok(u.to_string())
    }
}

/// `[[libvirt.host]]`: each a name `[[guest]] host` can use and a URI of its own (two entries
/// for one daemon would define its guests twice over).
fn hosts(c: &mut Checker, entries: &[S<wire::LibvirtHost>], local_uri: &str) -> Vec<LibvirtHost> {
    let mut out: Vec<LibvirtHost> = Vec::new();
    let mut seen: Vec<(String, String, Range<usize>)> = Vec::new();
    for e in entries {
        let w = e.get_ref();
        let name = w.name.get_ref();
        let name_ok = c.check(w.name.span(), checks::hostname(name)).is_some();
        if name_ok && name.eq_ignore_ascii_case(LOCAL_HOST) {
            c.report(
                w.name.span(),
                checks::bad(
                    format!("host name \"{name}\" is taken: it names the [libvirt] uri connection"),
                    "give the host its own name, e.g. the KVM host's hostname",
                ),
            );
            continue;
        }
        let uri = c.check(
            w.uri.span(),
            connection_uri(w.uri.get_ref(), "qemu+ssh://root@kvm2/system"),
        );
        let (Some(uri), true) = (uri, name_ok) else {
            continue;
        };
        if uri == local_uri {
            c.report(
                w.uri.span(),
                checks::bad(
                    format!("host \"{name}\" has the [libvirt] uri ({uri})"),
                    format!("drop this [[libvirt.host]] and the host = \"{name}\" of its guests: guests without a host are defined there already"),
                ),
            );
            continue;
        }
        if let Some((_, _, first)) = seen.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name)) {
            let line = c.line_of(first);
            c.report(
                w.name.span(),
                checks::bad(
                    format!("[[libvirt.host]] \"{name}\" is named twice"),
                    format!("give each host its own name (the other is on line {line})"),
                ),
            );
            continue;
        }
        if let Some((other, _, first)) = seen.iter().find(|(_, u, _)| *u == uri) {
            let line = c.line_of(first);
            c.report(
                w.uri.span(),
                checks::bad(
                    format!("hosts \"{other}\" and \"{name}\" have the same uri {uri}"),
                    format!("keep one [[libvirt.host]] per libvirt daemon (the other is on line {line}) and use its name in every [[guest]] host"),
                ),
            );
            continue;
        }
        seen.push((name.clone(), uri.clone(), w.name.span()));
        out.push(LibvirtHost {
            name: name.clone(),
            uri,
        });
    }
    out
}

/// A `[[guest]] host`: one of the `[[libvirt.host]]` names. Guests on another host cannot use a
/// disk file by path: the path would be the agent's, the file the other host's.
fn guest_host(c: &mut Checker, w: &wire::Guest, libvirt: &Libvirt) -> Option<Option<String>> {
    let Some(h) = &w.host else {
        return Some(None);
    };
    let name = h.get_ref();
    let Some(known) = libvirt.hosts.iter().find(|k| k.name == *name) else {
        let names: Vec<&str> = libvirt.hosts.iter().map(|k| k.name.as_str()).collect();
        c.report(
            h.span(),
            checks::bad(
                format!("there is no [[libvirt.host]] named \"{}\"", name.escape_debug()),
                if names.is_empty() {
                    format!("add [[libvirt.host]] name = \"{}\" with its uri, or drop host to use [libvirt] uri", name.escape_debug())
                } else {
                    format!("use one of: {} (or drop host to use [libvirt] uri)", names.join(", "))
                },
            ),
        );
        return None;
    };
    if let Some(d) = &w.disk {
        let d = d.get_ref();
        for (key, v) in [("path", &d.path), ("backing", &d.backing)] {
            if let Some(v) = v.as_ref().filter(|v| v.get_ref().starts_with('/')) {
                c.report(
                    v.span(),
                    checks::bad(
                        format!("a disk {key} by absolute path on host \"{}\"", known.name),
                        format!("name a volume of the storage pool there instead ({key} = \"NAME.qcow2\"): the agent reaches other hosts' disks only through libvirt's storage API"),
                    ),
                );
                return None;
            }
        }
    }
    Some(Some(known.name.clone()))
}

/// What is already taken on one network before guests get their addresses.
#[derive(Default)]
struct Taken {
    ips: HashMap<Ipv4Addr, Range<usize>>,
}

/// A `[[guest]]` key that takes a value per instance.
struct PerGuestKey {
    key: &'static str,
    noun: &'static str,
    nouns: &'static str,
    example: &'static str,
}

const IP_KEY: PerGuestKey = PerGuestKey {
    key: "ip",
    noun: "address",
    nouns: "addresses",
    example: "10.0.0.11",
};

const MAC_KEY: PerGuestKey = PerGuestKey {
    key: "mac",
    noun: "MAC",
    nouns: "MACs",
    example: "52:54:00:12:34:56",
};

pub(super) fn guests(
    c: &mut Checker,
    entries: &[S<wire::Guest>],
    networks: &[Network],
    libvirt: &Libvirt,
) -> Vec<Guest> {
    let mut out: Vec<Guest> = Vec::new();
    // Instances still waiting for an automatic address: (index into out, span to blame).
    let mut auto: Vec<(usize, Range<usize>)> = Vec::new();
    let mut names: HashMap<String, Range<usize>> = HashMap::new();
    let mut taken: HashMap<String, Taken> = HashMap::new();
    let mut macs = GuestMacs::new(networks);
    for n in networks {
        let t = taken.entry(n.name.clone()).or_default();
        for h in n.dhcp.iter().flat_map(|d| &d.hosts) {
            t.ips.insert(h.ip, 0..0);
            if let Some(name) = &h.name {
                names.insert(name.to_ascii_lowercase(), 0..0);
            }
        }
    }

    for entry in entries {
        let w = entry.get_ref();
        let before = c.problems.len();
        let count = match &w.count {
            None => Some(1),
            Some(n) => c.check(
                n.span(),
                u32::try_from(*n.get_ref())
                    .ok()
                    .filter(|v| (1..=MAX_COUNT as u32).contains(v))
                    .ok_or_else(|| {
                        checks::bad(
                            format!("count = {} is out of range", n.get_ref()),
                            format!("write a number of guests from 1 to {MAX_COUNT}"),
                        )
                    }),
            ),
        };
        let suffix_len = count.map_or(0, |n| if n > 1 { 1 + n.to_string().len() } else { 0 });
        let base = w.name.get_ref();
        let name_ok = c
            .check(w.name.span(), checks::hostname(base))
            .and_then(|()| {
                let r = if base.len() + suffix_len > 63 {
                    Err(checks::bad(
                        format!(
                            "guest name \"{base}\" is too long for {} numbered guests",
                            count.unwrap_or(1)
                        ),
                        "use a shorter name: NAME-N must fit in 63 characters",
                    ))
                } else {
                    Ok(())
                };
                c.check(w.name.span(), r)
            })
            .is_some();
        let network = networks.iter().find(|n| n.name == *w.network.get_ref());
        match network {
            None => {
                let known: Vec<&str> = networks.iter().map(|n| n.name.as_str()).collect();
                c.report(
                    w.network.span(),
                    checks::bad(
                        format!("there is no [[network]] named \"{}\"", w.network.get_ref()),
                        if known.is_empty() {
                            "add a [[network]] with DHCP for the guest to join".to_string()
                        } else {
                            format!("use one of: {}", known.join(", "))
                        },
                    ),
                );
            }
            Some(n) if n.dhcp.is_none() => c.report(
                w.network.span(),
                checks::bad(
                    format!(
                        "network \"{}\" has no [network.dhcp]: the guest's reservation needs it",
                        n.name
                    ),
                    "add [network.dhcp] with a range to that network",
                ),
            ),
            Some(_) => {}
        }
        let vcpus = match &w.vcpus {
            None => Some(1),
            Some(v) => c.check(
                v.span(),
                u32::try_from(*v.get_ref())
                    .ok()
                    .filter(|n| (1..=MAX_VCPUS as u32).contains(n))
                    .ok_or_else(|| {
                        checks::bad(
                            format!("vcpus = {} is out of range", v.get_ref()),
                            format!("write a number of virtual CPUs from 1 to {MAX_VCPUS}"),
                        )
                    }),
            ),
        };
        let memory_mib = match &w.memory {
            None => Some(DEFAULT_MEMORY_MIB),
            Some(m) => c.check(m.span(), memory(m.get_ref())),
        };
        let disk = w
            .disk
            .as_ref()
            .and_then(|d| disk(c, d, count.unwrap_or(1) > 1));
        let boot = match w.boot.as_ref().map(|b| (b, b.get_ref().as_str())) {
            None | Some((_, "network")) => Some(BootDevice::Network),
            Some((b, "disk")) => {
                if w.disk.is_none() {
                    c.report(
                        b.span(),
                        checks::bad(
                            "boot = \"disk\" needs a disk",
                            "add disk = { size = \"20GiB\" }, or boot = \"network\"",
                        ),
                    );
                }
                Some(BootDevice::Disk)
            }
            Some((b, other)) => {
                c.report(
                    b.span(),
                    checks::bad(
                        format!("boot \"{}\" is not known", other.escape_debug()),
                        "write boot = \"network\" (PXE install) or boot = \"disk\"",
                    ),
                );
                None
            }
        };
        let firmware = match w.firmware.as_ref().map(|f| (f, f.get_ref().as_str())) {
            None | Some((_, "bios")) => Some(GuestFirmware::Bios),
            Some((_, "uefi")) => Some(GuestFirmware::Uefi),
            Some((f, other)) => {
                c.report(
                    f.span(),
                    checks::bad(
                        format!("firmware \"{}\" is not known", other.escape_debug()),
                        "write firmware = \"bios\" (SeaBIOS) or firmware = \"uefi\" (OVMF)",
                    ),
                );
                None
            }
        };
        let script = w.script.as_ref().and_then(|s| {
            let ok = c.check(s.span(), checks::boot_file("script", s.get_ref()));
            if ok.is_some() && network.is_some_and(|n| n.pxe.is_none()) {
                c.report(
                    s.span(),
                    checks::bad(
                        "a guest boot script needs a [network.pxe] section on the guest's network",
                        "add [network.pxe] to the network, or remove script",
                    ),
                );
            }
            ok.map(|()| s.get_ref().clone())
        });
        let host = guest_host(c, w, libvirt);
        let ips = ips(c, w.ip.as_ref(), count.unwrap_or(1), network);
        let explicit_macs = per_guest(
            c,
            w.mac.as_ref(),
            count.unwrap_or(1),
            &MAC_KEY,
            |c, t, span| c.check(span, checks::mac(t)),
        );

        if c.problems.len() != before || !name_ok {
            continue;
        }
        let (
            Some(count),
            Some(network),
            Some(vcpus),
            Some(memory_mib),
            Some(boot),
            Some(firmware),
            Some(ips),
            Some(explicit_macs),
            Some(host),
        ) = (
            count,
            network,
            vcpus,
            memory_mib,
            boot,
            firmware,
            ips,
            explicit_macs,
            host,
        )
        else {
            continue;
        };
        let blame = w.ip.as_ref().map_or(w.name.span(), |i| i.span());
        let line = c.line_of(&w.name.span());
        let mut derived_clashes: Vec<Clash> = Vec::new();
        for i in 0..count {
            let name = if count > 1 {
                format!("{base}-{}", i + 1)
            } else {
                base.clone()
            };
            let key = name.to_ascii_lowercase();
            if let Some(first) = names.get(&key) {
                let where_ = if first.is_empty() {
                    "a [[network.dhcp.host]] has that name".to_string()
                } else {
                    format!("the other is on line {}", c.line_of(first))
                };
                c.report(
                    w.name.span(),
                    checks::bad(
                        format!("guest name \"{name}\" is used twice"),
                        format!("give each guest its own name ({where_})"),
                    ),
                );
                continue;
            }
            names.insert(key, w.name.span());
            let explicit = explicit_macs.get(i as usize).cloned().flatten();
            let mac = explicit
                .as_ref()
                .map_or_else(|| guest_mac(&name), |(m, _)| *m);
            if let Err(clash) = macs.claim(mac, &name, i + 1, line) {
                match explicit {
                    Some((_, span)) => c.report(span, macs.explicit(&clash)),
                    None => derived_clashes.push(clash),
                }
                continue;
            }
            let t = taken.entry(network.name.clone()).or_default();
            let ip = match ips.get(i as usize).cloned().flatten() {
                Some((ip, span)) => {
                    if let Some(first) = t.ips.get(&ip) {
                        let where_ = if first.is_empty() {
                            "by a [[network.dhcp.host]]".to_string()
                        } else {
                            format!("on line {}", c.line_of(first))
                        };
                        c.report(
                            span,
                            checks::bad(
                                format!("{ip} is already reserved {where_}"),
                                "give each guest its own address, or ip = \"auto\"",
                            ),
                        );
                        continue;
                    }
                    t.ips.insert(ip, span);
                    ip
                }
                None => {
                    auto.push((out.len(), blame.clone()));
                    Ipv4Addr::UNSPECIFIED
                }
            };
            out.push(Guest {
                name,
                group: base.clone(),
                network: network.name.clone(),
                bridge: network.bridge.clone(),
                vcpus,
                memory_mib,
                disk: disk.clone().map(|d| instance_disk(d, &w.name, count, i)),
                boot,
                firmware,
                vhost: w.vhost.unwrap_or(true),
                mac,
                ip,
                script: script.clone(),
                autostart: w.autostart.unwrap_or(false),
                host: host.clone(),
            });
        }
        if let Some(bad) = macs.derived(base, count, &derived_clashes) {
            c.report(w.name.span(), bad);
        }
    }

    // Automatic addresses come last so explicit ones anywhere in the file are never taken.
    for (i, span) in auto {
        let Some(n) = networks.iter().find(|n| n.name == out[i].network) else {
            continue;
        };
        let t = taken.entry(n.name.clone()).or_default();
        match free_address(n, &t.ips) {
            Some(ip) => {
                t.ips.insert(ip, span);
                out[i].ip = ip;
            }
            None => c.report(span, checks::bad(format!("network \"{}\" has no free address outside its DHCP range for guest \"{}\"", n.name, out[i].name), "shrink [network.dhcp] range to leave room for reservations, or give explicit addresses")),
        }
    }
    out
}

fn memory(text: &str) -> Result<u64, Bad> {
    let bytes = parse_size(text).map_err(|e| {
        checks::bad(
            format!("memory: {e}"),
            "write e.g. memory = \"2GiB\" or \"512MiB\"",
        )
    })?;
    let mib = bytes >> 20;
    if mib < MIN_MEMORY_MIB || !bytes.is_multiple_of(1 << 20) {
        return Err(checks::bad(
            format!("memory = \"{text}\" is too small or not whole MiB"),
            format!("give at least {MIN_MEMORY_MIB}MiB in whole MiB, e.g. memory = \"2GiB\""),
        ));
    }
    Ok(mib)
}

/// Parsed disk settings; `source` stays None until the instance name is known.
#[derive(Clone)]
struct DiskSpec {
    source: Option<DiskSource>,
    size_bytes: Option<u64>,
    format: DiskFormat,
    bus: DiskBus,
    backing: Option<DiskSource>,
}

fn disk(c: &mut Checker, d: &S<wire::GuestDisk>, fleet: bool) -> Option<DiskSpec> {
    let w = d.get_ref();
    let before = c.problems.len();
    let size_bytes = w.size.as_ref().and_then(|s| {
        let r = parse_size(s.get_ref())
            .map_err(|e| checks::bad(format!("disk size: {e}"), "write e.g. size = \"20GiB\""))
            .and_then(|b| {
                if b < 1 << 20 {
                    Err(checks::bad(
                        "disk size is below 1MiB",
                        "write e.g. size = \"20GiB\"",
                    ))
                } else {
                    Ok(b)
                }
            });
        c.check(s.span(), r)
    });
    let format = match w.format.as_ref().map(|f| (f, f.get_ref().as_str())) {
        None | Some((_, "qcow2")) => Some(DiskFormat::Qcow2),
        Some((_, "raw")) => Some(DiskFormat::Raw),
        Some((f, other)) => {
            c.report(
                f.span(),
                checks::bad(
                    format!("disk format \"{}\" is not known", other.escape_debug()),
                    "write format = \"qcow2\" or format = \"raw\"",
                ),
            );
            None
        }
    };
    let bus = match w.bus.as_ref().map(|b| (b, b.get_ref().as_str())) {
        None | Some((_, "virtio")) => Some(DiskBus::Virtio),
        Some((_, "sata")) => Some(DiskBus::Sata),
        Some((_, "ide")) => Some(DiskBus::Ide),
        Some((_, "scsi")) => Some(DiskBus::Scsi),
        Some((b, other)) => {
            c.report(
                b.span(),
                checks::bad(
                    format!("disk bus \"{}\" is not known", other.escape_debug()),
                    "write bus = \"virtio\" (fastest), \"sata\", \"scsi\" or \"ide\"",
                ),
            );
            None
        }
    };
    let mut file = |key: &str, v: &Option<S<String>>| -> Option<DiskSource> {
        let v = v.as_ref()?;
        c.check(v.span(), disk_source(key, v.get_ref()))
    };
    let source = file("path", &w.path);
    let backing = file("backing", &w.backing);
    if let (true, Some(p)) = (fleet, &w.path) {
        c.report(
            p.span(),
            checks::bad(
                "disk path names one file, but this [[guest]] has count > 1",
                "leave path out: each guest gets its own volume NAME.qcow2 in the storage pool",
            ),
        );
    }
    if let (Some(b), Some(DiskFormat::Raw)) = (&w.backing, format) {
        c.report(
            b.span(),
            checks::bad(
                "a backing image needs format = \"qcow2\"",
                "remove format = \"raw\", or remove backing",
            ),
        );
    }
    if w.size.is_none() && w.path.is_none() && w.backing.is_none() {
        c.report(
            d.span(),
            checks::bad(
                "disk needs a size, an existing image (path) or a template (backing)",
                "write disk = { size = \"20GiB\" } or disk = { backing = \"template.qcow2\" }",
            ),
        );
    }
    if c.problems.len() != before {
        return None;
    }
    Some(DiskSpec {
        source,
        size_bytes,
        format: format?,
        bus: bus?,
        backing,
    })
}

/// A disk's `path` or `backing`: an absolute path is a file kept where it is; a bare file name is
/// a volume of the storage pool.
fn disk_source(key: &str, text: &str) -> Result<DiskSource, Bad> {
    let p = Path::new(text);
    let hint = || {
        format!("write a volume name in the storage pool, e.g. {key} = \"template.qcow2\", or an absolute path to a file outside any pool")
    };
    if text.is_empty() || p.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(checks::bad(
            format!(
                "disk {key} \"{}\" is empty or contains \"..\"",
                text.escape_debug()
            ),
            hint(),
        ));
    }
    if p.is_absolute() {
        return Ok(DiskSource::File(p.to_path_buf()));
    }
    if text.contains('/') || text.chars().any(char::is_control) {
        return Err(checks::bad(
            format!(
                "disk {key} \"{}\" is neither a volume name nor an absolute path",
                text.escape_debug()
            ),
            hint(),
        ));
    }
    Ok(DiskSource::Volume(text.to_string()))
}

fn instance_disk(d: DiskSpec, name: &S<String>, count: u32, i: u32) -> GuestDisk {
    let instance = if count > 1 {
        format!("{}-{}", name.get_ref(), i + 1)
    } else {
        name.get_ref().clone()
    };
    let source = d
        .source
        .unwrap_or_else(|| DiskSource::Volume(format!("{instance}.{}", d.format.as_str())));
    GuestDisk {
        source,
        size_bytes: d.size_bytes,
        format: d.format,
        bus: d.bus,
        backing: d.backing,
    }
}

/// An explicit per-guest value and where it was written.
type Placed<T> = (T, Range<usize>);

/// The values of a per-instance key: `"auto"` (or no key) for every guest, one value for a single
/// guest, or a list with one entry (a value or `"auto"`) per guest. None when the value is refused.
fn per_guest<T>(
    c: &mut Checker,
    value: Option<&S<PerGuest>>,
    count: u32,
    key: &PerGuestKey,
    mut one: impl FnMut(&mut Checker, &str, Range<usize>) -> Option<T>,
) -> Option<Vec<Option<Placed<T>>>> {
    let auto = || (0..count).map(|_| None).collect::<Vec<_>>();
    let Some(value) = value else {
        return Some(auto());
    };
    let PerGuestKey {
        key,
        noun,
        nouns,
        example,
    } = key;
    match value.get_ref() {
        PerGuest::One(s) if s == "auto" => Some(auto()),
        PerGuest::One(s) if count == 1 => {
            one(c, s, value.span()).map(|v| vec![Some((v, value.span()))])
        }
        PerGuest::One(_) => {
            c.report(
                value.span(),
                checks::bad(
                    format!("one {noun} for {count} guests"),
                    format!("write {key} = \"auto\", or a list of {count} {nouns}: {key} = [\"{example}\", ...]"),
                ),
            );
            None
        }
        PerGuest::List(list) if list.len() != count as usize => {
            c.report(
                value.span(),
                checks::bad(
                    format!("{} {nouns} for {count} guests", list.len()),
                    format!(
                        "list exactly {count} {nouns}, one per guest (\"auto\" for any of them), or write {key} = \"auto\""
                    ),
                ),
            );
            None
        }
        PerGuest::List(list) => {
            let before = c.problems.len();
            let out: Vec<_> = list
                .iter()
                .map(|s| match s.get_ref().as_str() {
                    "auto" => None,
                    text => one(c, text, s.span()).map(|v| (v, s.span())),
                })
                .collect();
            (c.problems.len() == before).then_some(out)
        }
    }
}

/// Per-instance explicit addresses (None = automatic), or None when the value is refused.
fn ips(
    c: &mut Checker,
    ip: Option<&S<PerGuest>>,
    count: u32,
    network: Option<&Network>,
) -> Option<Vec<Option<Placed<Ipv4Addr>>>> {
    per_guest(c, ip, count, &IP_KEY, |c, text, span| {
        let addr = c.check(span.clone(), checks::ipv4(text))?;
        let Some(gw) = network.and_then(|n| n.address) else {
            return Some(addr);
        };
        let subnet = gw.trunc();
        let r = if addr == gw.addr() {
            Err(checks::bad(
                format!("{addr} is the network's gateway address"),
                "reserve a different address; the gateway belongs to the host",
            ))
        } else if !subnet.contains(&addr) || addr == subnet.network() || addr == subnet.broadcast()
        {
            Err(checks::bad(
                format!("{addr} is not a host address inside the network's subnet {subnet}"),
                format!(
                    "use an address from {}-{}",
                    checks::first_host(subnet),
                    checks::last_host(subnet)
                ),
            ))
        } else {
            Ok(addr)
        };
        c.check(span, r)
    })
}

/// Lowest host address of the subnet that is not the gateway, not in the dynamic range and not
/// reserved.
fn free_address(n: &Network, taken: &HashMap<Ipv4Addr, Range<usize>>) -> Option<Ipv4Addr> {
    let (gw, d) = (n.address?, n.dhcp.as_ref()?);
    let (first, last) = (
        u32::from(checks::first_host(gw.trunc())),
        u32::from(checks::last_host(gw.trunc())),
    );
    (first..=last).map(Ipv4Addr::from).find(|ip| {
        *ip != gw.addr() && !(d.range_start <= *ip && *ip <= d.range_end) && !taken.contains_key(ip)
    })
}
