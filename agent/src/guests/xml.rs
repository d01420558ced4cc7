//! Domain XML: generated for config guests, read back from libvirt, and edited in place for
//! clone/virtio/vhost. Edits replace byte ranges of the XML libvirt gave us, so everything the
//! agent does not touch (hand-made devices, comments, ordering) survives exactly.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

use hwaddr::Mac;

use crate::config::{BootDevice, Guest, GuestFirmware, VirtType};

/// Namespace of the `<metadata>` element marking domains the agent defined.
pub const METADATA_NS: &str = "https://hostagent.dev/xmlns/guest/1";

#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("libvirt returned domain XML that does not parse: {0}")]
    Parse(#[from] roxmltree::Error),
    #[error("domain XML has no <{0}> element")]
    Missing(&'static str),
}

/// Escape text for an XML attribute value or element content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The persistent definition of a config guest. `console_log` is the serial console's file
/// (already under --root); `disk_path` likewise.
pub fn domain_xml(
    g: &Guest,
    virt_type: VirtType,
    console_log: &Path,
    disk_path: Option<&Path>,
) -> String {
    let mut x = String::new();
    let _ = writeln!(x, "<domain type='{}'>", virt_type.as_str());
    let _ = writeln!(x, "  <name>{}</name>", escape(&g.name));
    let _ = writeln!(x, "  <metadata>");
    let _ = writeln!(
        x,
        "    <hostagent:guest xmlns:hostagent='{METADATA_NS}' group='{}' network='{}' ip='{}'/>",
        escape(&g.group),
        escape(&g.network),
        g.ip
    );
    let _ = writeln!(x, "  </metadata>");
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", g.memory_mib);
    let _ = writeln!(x, "  <vcpu>{}</vcpu>", g.vcpus);
    let firmware = match g.firmware {
        GuestFirmware::Bios => String::new(),
        GuestFirmware::Uefi => " firmware='efi'".to_string(),
    };
    let _ = writeln!(x, "  <os{firmware}>");
    let _ = writeln!(x, "    <type arch='x86_64' machine='pc'>hvm</type>");
    if g.firmware == GuestFirmware::Uefi {
        // The firmware descriptors of the ovmf package offer secure-boot builds first; an
        // installer chainloaded by iPXE is not signed.
        let _ = writeln!(
            x,
            "    <firmware><feature enabled='no' name='secure-boot'/></firmware>"
        );
    }
    // Network first for an install, then the disk, so a guest whose installer left a system on
    // the disk still boots when the boot server hands it nothing.
    let order: &[&str] = match (g.boot, g.disk.is_some()) {
        (BootDevice::Network, true) => &["network", "hd"],
        (BootDevice::Network, false) => &["network"],
        (BootDevice::Disk, _) => &["hd"],
    };
    for dev in order {
        let _ = writeln!(x, "    <boot dev='{dev}'/>");
    }
    if g.firmware == GuestFirmware::Bios {
        // No graphics: SeaBIOS and the NIC's iPXE ROM print to the serial console instead, so the
        // console log shows the whole install. A failed network boot is retried every 10 s (the
        // boot server may start after the guest).
        let _ = writeln!(x, "    <bios useserial='yes' rebootTimeout='10000'/>");
    }
    let _ = writeln!(x, "  </os>");
    let _ = writeln!(x, "  <features><acpi/><apic/></features>");
    let _ = writeln!(x, "  <on_poweroff>destroy</on_poweroff>");
    let _ = writeln!(x, "  <on_reboot>restart</on_reboot>");
    let _ = writeln!(x, "  <on_crash>destroy</on_crash>");
    let _ = writeln!(x, "  <devices>");
    if let (Some(d), Some(path)) = (&g.disk, disk_path) {
        let _ = writeln!(x, "    <disk type='file' device='disk'>");
        let _ = writeln!(
            x,
            "      <driver name='qemu' type='{}'/>",
            d.format.as_str()
        );
        let _ = writeln!(
            x,
            "      <source file='{}'/>",
            escape(&path.to_string_lossy())
        );
        let _ = writeln!(
            x,
            "      <target dev='{}a' bus='{}'/>",
            d.bus.dev_prefix(),
            d.bus.as_str()
        );
        let _ = writeln!(x, "    </disk>");
    }
    let _ = writeln!(x, "    <interface type='bridge'>");
    let _ = writeln!(x, "      <mac address='{}'/>", g.mac);
    let _ = writeln!(x, "      <source bridge='{}'/>", escape(&g.bridge));
    let _ = writeln!(x, "      <model type='virtio'/>");
    if !g.vhost {
        let _ = writeln!(x, "      <driver name='qemu'/>");
    }
    let _ = writeln!(x, "    </interface>");
    let log = escape(&console_log.to_string_lossy());
    let _ = writeln!(x, "    <serial type='file'>");
    let _ = writeln!(x, "      <source path='{log}' append='on'/>");
    let _ = writeln!(x, "      <target port='0'/>");
    let _ = writeln!(x, "    </serial>");
    let _ = writeln!(x, "    <console type='file'>");
    let _ = writeln!(x, "      <source path='{log}' append='on'/>");
    let _ = writeln!(x, "      <target type='serial' port='0'/>");
    let _ = writeln!(x, "    </console>");
    let _ = writeln!(x, "    <memballoon model='virtio'/>");
    let _ = writeln!(x, "  </devices>");
    let _ = writeln!(x, "</domain>");
    x
}

/// What the agent reads back from a definition.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DomainInfo {
    pub name: String,
    pub uuid: Option<String>,
    pub virt_type: String,
    pub vcpus: u32,
    pub memory_kib: u64,
    /// Set when the agent defined this domain (or cloned it from one it defined).
    pub owner: Option<Owner>,
    pub disks: Vec<DiskInfo>,
    pub interfaces: Vec<NicInfo>,
    /// The serial console's file, if it logs to one.
    pub console_log: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Owner {
    pub group: String,
    pub network: String,
    pub ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiskInfo {
    pub device: String,
    pub target: String,
    pub bus: String,
    pub source: Option<String>,
    pub format: Option<String>,
    pub has_address: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NicInfo {
    /// None without a `<mac>` (libvirt then picks one at start) or with one we cannot read.
    pub mac: Option<Mac>,
    pub bridge: Option<String>,
    pub model: Option<String>,
    /// `<driver name=...>`: "qemu" means vhost-net is off.
    pub driver: Option<String>,
    pub has_address: bool,
}

impl NicInfo {
    pub fn vhost(&self) -> bool {
        self.driver.as_deref() != Some("qemu")
    }
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn children<'a, 'i: 'a>(
    n: roxmltree::Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn devices<'a, 'i>(doc: &'a roxmltree::Document<'i>) -> Result<roxmltree::Node<'a, 'i>, XmlError> {
    child(doc.root_element(), "devices").ok_or(XmlError::Missing("devices"))
}

pub fn parse(xml: &str) -> Result<DomainInfo, XmlError> {
    let doc = roxmltree::Document::parse(xml)?;
    let d = doc.root_element();
    let text = |name: &str| {
        child(d, name)
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string())
    };
    let memory_kib = child(d, "memory")
        .and_then(|m| {
            let v: u64 = m.text()?.trim().parse().ok()?;
            Some(match m.attribute("unit").unwrap_or("KiB") {
                "b" | "bytes" => v / 1024,
                "M" | "MiB" => v * 1024,
                "G" | "GiB" => v * 1024 * 1024,
                _ => v,
            })
        })
        .unwrap_or(0);
    let owner = child(d, "metadata").and_then(|m| {
        m.children()
            .find(|c| c.is_element() && c.tag_name().namespace() == Some(METADATA_NS))
            .map(|g| Owner {
                group: g.attribute("group").unwrap_or_default().to_string(),
                network: g.attribute("network").unwrap_or_default().to_string(),
                ip: g.attribute("ip").unwrap_or_default().to_string(),
            })
    });
    let mut info = DomainInfo {
        name: text("name").ok_or(XmlError::Missing("name"))?,
        uuid: text("uuid"),
        virt_type: d.attribute("type").unwrap_or_default().to_string(),
        vcpus: text("vcpu").and_then(|v| v.parse().ok()).unwrap_or(0),
        memory_kib,
        owner,
        ..Default::default()
    };
    let Ok(devs) = devices(&doc) else {
        return Ok(info);
    };
    for disk in children(devs, "disk") {
        let target = child(disk, "target");
        let source = child(disk, "source");
        info.disks.push(DiskInfo {
            device: disk.attribute("device").unwrap_or("disk").to_string(),
            target: target
                .and_then(|t| t.attribute("dev"))
                .unwrap_or_default()
                .to_string(),
            bus: target
                .and_then(|t| t.attribute("bus"))
                .unwrap_or_default()
                .to_string(),
            source: source
                .and_then(|s| s.attribute("file").or(s.attribute("dev")))
                .map(str::to_string),
            format: child(disk, "driver")
                .and_then(|d| d.attribute("type"))
                .map(str::to_string),
            has_address: child(disk, "address").is_some(),
        });
    }
    for nic in children(devs, "interface") {
        info.interfaces.push(NicInfo {
            mac: child(nic, "mac")
                .and_then(|m| m.attribute("address"))
                .and_then(|a| a.parse().ok()),
            bridge: child(nic, "source")
                .and_then(|s| s.attribute("bridge").or(s.attribute("network")))
                .map(str::to_string),
            model: child(nic, "model")
                .and_then(|m| m.attribute("type"))
                .map(str::to_string),
            driver: child(nic, "driver")
                .and_then(|m| m.attribute("name"))
                .map(str::to_string),
            has_address: child(nic, "address").is_some(),
        });
    }
    info.console_log = children(devs, "serial")
        .filter(|s| s.attribute("type") == Some("file"))
        .find_map(|s| child(s, "source").and_then(|src| src.attribute("path")))
        .map(str::to_string);
    Ok(info)
}

/// Byte-range replacements, applied back to front so earlier ranges stay valid.
#[derive(Default)]
struct Edits(Vec<(Range<usize>, String)>);

impl Edits {
    fn replace(&mut self, r: Range<usize>, with: impl Into<String>) {
        self.0.push((r, with.into()));
    }
    fn insert(&mut self, at: usize, text: impl Into<String>) {
        self.0.push((at..at, text.into()));
    }
    /// Remove an element together with the indentation before it, so no blank line is left.
    fn remove_node(&mut self, xml: &str, n: roxmltree::Node) {
        let r = n.range();
        let line_start = xml[..r.start].rfind('\n').map_or(r.start, |i| i + 1);
        let start = if xml[line_start..r.start].trim().is_empty() && line_start > 0 {
            line_start - 1
        } else {
            r.start
        };
        self.0.push((start..r.end, String::new()));
    }
    fn apply(mut self, xml: &str) -> String {
        self.0
            .sort_by_key(|(r, _)| std::cmp::Reverse((r.start, r.end)));
        let mut out = xml.to_string();
        for (r, t) in self.0 {
            out.replace_range(r, &t);
        }
        out
    }
}

/// Text just before an element's closing tag, for inserting a child.
fn before_close(n: roxmltree::Node, xml: &str) -> usize {
    let r = n.range();
    xml[r.clone()].rfind("</").map_or(r.end, |i| r.start + i)
}

fn set_attr(e: &mut Edits, n: roxmltree::Node, name: &str, value: &str) {
    match n.attributes().find(|a| a.name() == name) {
        Some(a) => e.replace(a.range_value(), escape(value)),
        None => {
            // After the tag name: "<tag" + " name='value'".
            let at = n.range().start + 1 + n.tag_name().name().len();
            e.insert(at, format!(" {name}='{}'", escape(value)));
        }
    }
}

/// `hostagent guest virtio`: IDE/SATA/SCSI disks → virtio (`hdX`/`sdX` → `vdX`), non-virtio
/// NICs → virtio; each moved device's `<address>` goes, since it names a slot on the old bus.
/// Returns the new XML and one line per change (empty when nothing is left to move).
pub fn to_virtio(xml: &str) -> Result<(String, Vec<String>), XmlError> {
    let doc = roxmltree::Document::parse(xml)?;
    let devs = devices(&doc)?;
    let mut e = Edits::default();
    let mut changes = Vec::new();
    let mut used: Vec<String> = children(devs, "disk")
        .filter_map(|d| child(d, "target"))
        .filter(|t| t.attribute("bus") == Some("virtio"))
        .filter_map(|t| t.attribute("dev").map(str::to_string))
        .collect();
    for disk in children(devs, "disk") {
        // CD-ROMs and floppies cannot be virtio-blk.
        if disk.attribute("device").unwrap_or("disk") != "disk" {
            continue;
        }
        let Some(target) = child(disk, "target") else {
            continue;
        };
        let bus = target.attribute("bus").unwrap_or("");
        if !matches!(bus, "ide" | "sata" | "scsi") {
            continue;
        }
        let old = target.attribute("dev").unwrap_or("").to_string();
        let new = virtio_name(&old, &used);
        used.push(new.clone());
        set_attr(&mut e, target, "bus", "virtio");
        set_attr(&mut e, target, "dev", &new);
        if let Some(a) = child(disk, "address") {
            e.remove_node(xml, a);
        }
        changes.push(format!("disk {old} ({bus}) → {new} (virtio)"));
    }
    for nic in children(devs, "interface") {
        let model = child(nic, "model");
        let current = model.and_then(|m| m.attribute("type"));
        if current == Some("virtio") {
            continue;
        }
        match model {
            Some(m) => set_attr(&mut e, m, "type", "virtio"),
            None => e.insert(before_close(nic, xml), "  <model type='virtio'/>\n    "),
        }
        if let Some(a) = child(nic, "address") {
            e.remove_node(xml, a);
        }
        let mac = child(nic, "mac")
            .and_then(|m| m.attribute("address"))
            .unwrap_or("?");
        changes.push(format!(
            "interface {mac} ({}) → virtio",
            current.unwrap_or("default model")
        ));
    }
    Ok((e.apply(xml), changes))
}

/// `hda` → `vda`, `sdb` → `vdb`, keeping the letter unless a virtio disk already has it.
fn virtio_name(old: &str, used: &[String]) -> String {
    let suffix = old.get(2..).filter(|s| !s.is_empty()).unwrap_or("a");
    let first = format!("vd{suffix}");
    if !used.contains(&first) {
        return first;
    }
    (b'a'..=b'z')
        .map(|c| format!("vd{}", c as char))
        .find(|n| !used.contains(n))
        .unwrap_or(first)
}

/// `hostagent guest vhost NAME on|off` on every virtio NIC: off writes `<driver name='qemu'/>`,
/// on writes `name='vhost'` (other driver attributes, e.g. queues, are kept).
pub fn set_vhost(xml: &str, on: bool) -> Result<(String, Vec<String>), XmlError> {
    let doc = roxmltree::Document::parse(xml)?;
    let devs = devices(&doc)?;
    let mut e = Edits::default();
    let mut changes = Vec::new();
    let want = if on { "vhost" } else { "qemu" };
    for nic in children(devs, "interface") {
        if child(nic, "model").and_then(|m| m.attribute("type")) != Some("virtio") {
            continue;
        }
        let mac = child(nic, "mac")
            .and_then(|m| m.attribute("address"))
            .unwrap_or("?")
            .to_string();
        match child(nic, "driver") {
            Some(d) if d.attribute("name") == Some(want) => continue,
            // Without a driver name libvirt already uses vhost-net when it can.
            None if on => continue,
            Some(d) => set_attr(&mut e, d, "name", want),
            None => e.insert(before_close(nic, xml), "  <driver name='qemu'/>\n    "),
        }
        changes.push(format!(
            "interface {mac}: vhost-net {}",
            if on { "on" } else { "off" }
        ));
    }
    Ok((e.apply(xml), changes))
}

/// What a clone changes in the source's definition.
pub struct CloneSpec<'a> {
    pub name: &'a str,
    /// One MAC per interface, in order.
    pub macs: &'a [Mac],
    /// New file per disk with a file source, in order (None: keep, e.g. a shared CD-ROM image).
    pub disk_files: &'a [Option<String>],
    pub console_log: Option<&'a str>,
    /// The clone's reservation on `network`: recorded in the hostagent metadata, which marks the
    /// clone as the agent's (listed by `hostagent guests`).
    pub ip: Option<std::net::Ipv4Addr>,
    pub network: Option<&'a str>,
    /// The source's name, kept as the clone's group.
    pub source: &'a str,
}

/// virt-clone's definition changes: new name; `<uuid>` dropped (libvirt makes a new one); new
/// MACs; new disk files; the UEFI variable store dropped (libvirt makes a fresh one); the console
/// log and the agent's metadata follow the new name.
pub fn clone_xml(xml: &str, spec: &CloneSpec) -> Result<String, XmlError> {
    let doc = roxmltree::Document::parse(xml)?;
    let d = doc.root_element();
    let mut e = Edits::default();
    let name = child(d, "name").ok_or(XmlError::Missing("name"))?;
    let inner = name
        .first_child()
        .map(|t| t.range())
        .unwrap_or(name.range().start..name.range().start);
    e.replace(inner, escape(spec.name));
    if let Some(u) = child(d, "uuid") {
        e.remove_node(xml, u);
    }
    if let Some(nv) = child(d, "os").and_then(|os| child(os, "nvram")) {
        e.remove_node(xml, nv);
    }
    let metadata = child(d, "metadata");
    let ours = metadata.and_then(|m| {
        m.children()
            .find(|c| c.is_element() && c.tag_name().namespace() == Some(METADATA_NS))
    });
    match (ours, spec.ip, spec.network) {
        (Some(g), Some(ip), Some(net)) => {
            set_attr(&mut e, g, "ip", &ip.to_string());
            set_attr(&mut e, g, "network", net);
        }
        (None, Some(ip), Some(net)) => {
            let el = format!(
                "<hostagent:guest xmlns:hostagent='{METADATA_NS}' group='{}' network='{}' ip='{ip}'/>",
                escape(spec.source),
                escape(net)
            );
            match metadata {
                Some(m) if m.has_children() => {
                    e.insert(before_close(m, xml), format!("  {el}\n  "))
                }
                Some(m) => e.replace(m.range(), format!("<metadata>\n    {el}\n  </metadata>")),
                None => e.insert(
                    name.range().end,
                    format!("\n  <metadata>\n    {el}\n  </metadata>"),
                ),
            }
        }
        _ => {}
    }
    let devs = devices(&doc)?;
    for (nic, mac) in children(devs, "interface").zip(spec.macs) {
        let text = mac.to_string();
        match child(nic, "mac") {
            Some(m) => set_attr(&mut e, m, "address", &text),
            None => e.insert(
                before_close(nic, xml),
                format!("  <mac address='{text}'/>\n    "),
            ),
        }
        // A fixed tap name would clash with the source's when both run.
        if let Some(t) = child(nic, "target") {
            e.remove_node(xml, t);
        }
    }
    let file_disks = children(devs, "disk")
        .filter_map(|disk| child(disk, "source").filter(|s| s.attribute("file").is_some()));
    for (src, new) in file_disks.zip(spec.disk_files) {
        if let Some(new) = new {
            set_attr(&mut e, src, "file", new);
        }
    }
    if let Some(log) = spec.console_log {
        for kind in ["serial", "console"] {
            for s in children(devs, kind).filter(|s| s.attribute("type") == Some("file")) {
                if let Some(src) = child(s, "source") {
                    set_attr(&mut e, src, "path", log);
                }
            }
        }
    }
    Ok(e.apply(xml))
}

#[cfg(test)]
mod tests;
