//! Checks of single values, independent of where they appear. Each returns the parsed value or a
//! `Bad` saying what is wrong and what to write instead; `validate` attaches the position.

use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hwaddr::Mac;
use ipnet::Ipv4Net;

use super::model::{Mode, MIN_LEASE_TIME};
use super::units::parse_duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bad {
    pub message: String,
    pub hint: String,
}

pub(crate) fn bad(message: impl Into<String>, hint: impl Into<String>) -> Bad {
    Bad {
        message: message.into(),
        hint: hint.into(),
    }
}

/// Linux IFNAMSIZ is 16 including the terminating NUL.
pub(crate) const MAX_IFNAME: usize = 15;
/// The BOOTP `file` field is 128 bytes including a NUL; longer boot file names cannot be sent.
pub(crate) const MAX_BOOT_FILE: usize = 127;

pub(crate) fn mode(text: &str) -> Result<Mode, Bad> {
    match text {
        "nat" => Ok(Mode::Nat),
        "routed" => Ok(Mode::Routed),
        "isolated" => Ok(Mode::Isolated),
        "bridge" => Ok(Mode::Bridge),
        _ => Err(bad(
            format!("unknown mode \"{text}\""),
            "write one of \"nat\", \"routed\", \"isolated\" or \"bridge\"",
        )),
    }
}

/// The kernel's rules for a network device name (dev_valid_name).
pub(crate) fn interface_name(what: &str, name: &str) -> Result<(), Bad> {
    let example = "choose a name such as \"virbr1\" or \"br-lab\"";
    if name.is_empty() {
        return Err(bad(format!("{what} name is empty"), example));
    }
    if name == "." || name == ".." {
        return Err(bad(
            format!("{what} name \"{name}\" is not allowed by Linux"),
            example,
        ));
    }
    if name.len() > MAX_IFNAME {
        return Err(bad(
            format!(
                "{what} name \"{name}\" is {} bytes; Linux interface names are at most {MAX_IFNAME} bytes",
                name.len()
            ),
            format!("choose a shorter name such as \"{}\"", shorten_ifname(name)),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            format!(
                "{what} name \"{}\" contains {}, which Linux interface names cannot",
                name.escape_debug(),
                describe_char(c)
            ),
            "use letters, digits, '-', '_' or '.' only, e.g. \"br-lab\"",
        ));
    }
    Ok(())
}

/// A suggestion for an over-long interface name: its first 15 bytes, cut at a character boundary.
fn shorten_ifname(name: &str) -> String {
    let mut end = MAX_IFNAME.min(name.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &name[..end];
    // Prefer cutting at a separator ("virbr0-with-a-long-name" → "virbr0-with-a").
    let cut = match cut.rfind(['-', '_', '.']) {
        Some(i) if i > 0 && end < name.len() => &cut[..i],
        _ => cut,
    };
    cut.to_string()
}

fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        '\t' => "a tab".into(),
        c if c.is_whitespace() || c.is_control() => format!("the character {:?}", c),
        c => format!("'{c}'"),
    }
}

/// Network names become file names (lease journals) and nft comments: keep them plain.
pub(crate) fn network_name(name: &str) -> Result<(), Bad> {
    let hint = "use 1 to 64 letters, digits, '-', '_' or '.', e.g. \"lab\"";
    if name.is_empty() || name.len() > 64 || name == "." || name == ".." {
        return Err(bad(
            format!("network name \"{}\" is not usable", name.escape_debug()),
            hint,
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(bad(
            format!(
                "network name \"{}\" contains {}",
                name.escape_debug(),
                describe_char(c)
            ),
            hint,
        ));
    }
    Ok(())
}

/// A MAC written in the config: the text form `Mac` reads, and usable as a host's address.
pub(crate) fn mac(text: &str) -> Result<Mac, Bad> {
    let mac = Mac::from_str(text).map_err(|_| {
        bad(
            format!("\"{}\" is not a MAC address", text.escape_debug()),
            "write six two-digit hex bytes separated by ':', e.g. \"52:54:00:12:34:56\"",
        )
    })?;
    if mac.is_multicast() {
        return Err(bad(
            format!("MAC address {text} is a multicast address"),
            "the first byte must be even; QEMU/libvirt guests use 52:54:00:xx:xx:xx",
        ));
    }
    if mac.is_zero() {
        return Err(bad(
            "MAC address 00:00:00:00:00:00 is not usable",
            "use e.g. \"52:54:00:12:34:56\"",
        ));
    }
    Ok(mac)
}

pub(crate) fn ipv4(text: &str) -> Result<Ipv4Addr, Bad> {
    text.parse::<Ipv4Addr>().map_err(|_| {
        bad(
            format!("\"{}\" is not an IPv4 address", text.escape_debug()),
            "write a dotted quad such as \"192.168.122.10\"",
        )
    })
}

/// The host's address on a bridge, with prefix: usable for guests (prefix at most /30) and not
/// the subnet's network or broadcast address.
pub(crate) fn gateway_address(text: &str) -> Result<Ipv4Net, Bad> {
    let net: Ipv4Net = match text.parse() {
        Ok(n) => n,
        Err(_) if text.parse::<Ipv4Addr>().is_ok() => {
            return Err(bad(
                format!("address \"{text}\" has no prefix length"),
                format!("add the prefix length, e.g. \"{text}/24\""),
            ))
        }
        Err(_) => {
            return Err(bad(
                format!(
                    "\"{}\" is not an IPv4 address with prefix length",
                    text.escape_debug()
                ),
                "write the host's gateway address on the bridge, e.g. \"192.168.122.1/24\"",
            ))
        }
    };
    if net.prefix_len() > 30 {
        return Err(bad(
            format!("address {net} leaves no room for guests"),
            "use a prefix length of at most /30, e.g. /24",
        ));
    }
    let example = format!("{}/{}", first_host(net), net.prefix_len());
    if net.addr() == net.network() {
        return Err(bad(
            format!("address {net} is the subnet's network address"),
            format!(
                "use a host address inside {}, e.g. \"{example}\"",
                net.trunc()
            ),
        ));
    }
    if net.addr() == net.broadcast() {
        return Err(bad(
            format!("address {net} is the subnet's broadcast address"),
            format!(
                "use a host address inside {}, e.g. \"{example}\"",
                net.trunc()
            ),
        ));
    }
    Ok(net)
}

pub(crate) fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).saturating_add(1))
}

pub(crate) fn last_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.broadcast()).saturating_sub(1))
}

/// "A.B.C.D-E.F.G.H", syntax only; placement is checked against the subnet by the caller.
pub(crate) fn range_syntax(text: &str) -> Result<(Ipv4Addr, Ipv4Addr), Bad> {
    let syntax = || {
        bad(
            format!("\"{}\" is not an address range", text.escape_debug()),
            "write FIRST-LAST with two IPv4 addresses, e.g. \"192.168.122.2-192.168.122.254\"",
        )
    };
    let (a, b) = text.split_once('-').ok_or_else(syntax)?;
    let a = a.trim().parse::<Ipv4Addr>().map_err(|_| syntax())?;
    let b = b.trim().parse::<Ipv4Addr>().map_err(|_| syntax())?;
    Ok((a, b))
}

/// RFC 1123 host name label.
pub(crate) fn hostname(text: &str) -> Result<(), Bad> {
    if label_ok(text) {
        Ok(())
    } else {
        Err(bad(
            format!(
                "host name \"{}\" is not a valid host name",
                text.escape_debug()
            ),
            "use 1 to 63 letters, digits or '-', not starting or ending with '-', e.g. \"bastion\"",
        ))
    }
}

fn label_ok(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

pub(crate) fn domain(text: &str) -> Result<(), Bad> {
    if !text.is_empty() && text.len() <= 253 && text.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(bad(
            format!("domain \"{}\" is not a valid DNS domain", text.escape_debug()),
            "write dot-separated labels of letters, digits and '-', without a trailing dot, e.g. \"lab.example\"",
        ))
    }
}

/// A libvirt storage pool name: libvirt keeps it as a file name (`/etc/libvirt/storage/NAME.xml`).
pub(crate) fn pool_name(text: &str) -> Result<(), Bad> {
    if text.is_empty()
        || text.len() > 255
        || text.contains('/')
        || text.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(bad(
            format!(
                "pool \"{}\" is not a libvirt storage pool name",
                text.escape_debug()
            ),
            "write the name `virsh pool-list --all` shows, e.g. pool = \"default\"",
        ));
    }
    Ok(())
}

/// A file served from the boot root: relative, inside the root, short enough for the BOOTP field.
pub(crate) fn boot_file(key: &str, text: &str) -> Result<(), Bad> {
    let example = format!(
        "write a path relative to [network.pxe] root, e.g. {key} = \"{}\"",
        example_boot_file(key)
    );
    if text.is_empty() {
        return Err(bad(format!("{key} is empty"), example));
    }
    if text.starts_with('/') {
        return Err(bad(
            format!(
                "{key} \"{text}\" is an absolute path; boot files are relative to the pxe root"
            ),
            example,
        ));
    }
    if text.split('/').any(|c| c == "..") {
        return Err(bad(
            format!("{key} \"{text}\" contains \"..\"; boot files must stay inside the pxe root"),
            example,
        ));
    }
    if let Some(c) = text.chars().find(|c| c.is_control() || *c == '\\') {
        return Err(bad(
            format!(
                "{key} \"{}\" contains {}",
                text.escape_debug(),
                describe_char(c)
            ),
            example,
        ));
    }
    if text.len() > MAX_BOOT_FILE {
        return Err(bad(
            format!(
                "{key} is {} bytes; DHCP boot file names are at most {MAX_BOOT_FILE} bytes",
                text.len()
            ),
            "use a shorter path",
        ));
    }
    Ok(())
}

fn example_boot_file(key: &str) -> &'static str {
    match key {
        "bios" => "undionly.kpxe",
        "uefi" => "ipxe.efi",
        "arm64" => "ipxe-arm64.efi",
        "script" => "boot.ipxe",
        _ => "custom.kpxe",
    }
}

/// An absolute directory (state_dir, pxe root). `..` is refused so the path stays under --root.
pub(crate) fn absolute_dir(key: &str, text: &str, example: &str) -> Result<PathBuf, Bad> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(bad(
            format!("{key} \"{text}\" is not an absolute path"),
            format!("write an absolute path, e.g. {key} = \"{example}\""),
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(bad(
            format!("{key} \"{text}\" contains \"..\""),
            format!("write the path without \"..\", e.g. {key} = \"{example}\""),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(bad(
            format!(
                "{key} \"{}\" contains a control character",
                text.escape_debug()
            ),
            format!("e.g. {key} = \"{example}\""),
        ));
    }
    Ok(path.to_path_buf())
}

/// A directory served to every guest must not expose the whole host or the agent's own state
/// (lease journals list every guest's MAC and address).
pub(crate) fn served_root(root: PathBuf, state_dir: Option<&Path>) -> Result<PathBuf, Bad> {
    let hint = "serve a directory of its own, e.g. root = \"/var/lib/hostagent/boot\"";
    if root.parent().is_none() {
        return Err(bad(
            "root = \"/\" would serve the whole host file system to guests",
            hint,
        ));
    }
    if let Some(state) = state_dir.filter(|s| s.starts_with(&root)) {
        return Err(bad(
            format!(
                "root {} contains state_dir {}, whose lease files must not be served",
                root.display(),
                state.display()
            ),
            hint,
        ));
    }
    Ok(root)
}

pub(crate) fn sysctl_key(key: &str) -> Result<(), Bad> {
    if key == "net.ipv4.ip_forward" {
        return Err(bad(
            "net.ipv4.ip_forward is managed by hostagent",
            "remove this line: the agent enables IPv4 forwarding itself while a nat or routed network exists",
        ));
    }
    if key.contains('/') {
        return Err(bad(
            format!("sysctl key \"{key}\" uses '/' separators"),
            format!(
                "write it with dots, e.g. \"{}\"",
                key.trim_matches('/').replace('/', ".")
            ),
        ));
    }
    let charset_ok = key
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    if !charset_ok || !key.contains('.') || key.split('.').any(str::is_empty) {
        return Err(bad(
            format!("\"{}\" is not a sysctl key", key.escape_debug()),
            "write a dotted name of lowercase letters, digits, '_' and '-', e.g. \"vm.max_map_count\"",
        ));
    }
    Ok(())
}

pub(crate) fn sysctl_text(text: &str) -> Result<(), Bad> {
    if text.is_empty() || text.chars().any(char::is_control) {
        return Err(bad(
            format!(
                "sysctl value \"{}\" is empty or contains a control character",
                text.escape_debug()
            ),
            "write the value as the kernel expects it, e.g. 1 or \"4096 87380 6291456\"",
        ));
    }
    Ok(())
}

pub(crate) fn lease_time(text: &str) -> Result<Duration, Bad> {
    let hint = "write a duration with units s, m, h, d, e.g. \"12h\" or \"1h30m\" (at least 60s)";
    let d = parse_duration(text).map_err(|why| {
        bad(
            format!("lease_time \"{}\": {why}", text.escape_debug()),
            hint,
        )
    })?;
    if d < MIN_LEASE_TIME {
        return Err(bad(
            format!("lease_time \"{text}\" is shorter than 60s"),
            hint,
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        assert!(interface_name("bridge", "virbr0").is_ok());
        assert!(interface_name("bridge", "a23456789012345").is_ok());
        for bad_name in [
            "",
            ".",
            "..",
            "a234567890123456",
            "br/0",
            "br 0",
            "br:0",
            "br\t0",
        ] {
            assert!(
                interface_name("bridge", bad_name).is_err(),
                "{bad_name:?} accepted"
            );
        }
    }

    #[test]
    fn shortened_suggestion_fits() {
        let s = shorten_ifname("virbr0-with-a-long-name");
        assert!(
            s.len() <= MAX_IFNAME && interface_name("bridge", &s).is_ok(),
            "{s}"
        );
    }

    #[test]
    fn macs_must_be_unicast_colon_hex() {
        assert_eq!(
            mac("52:54:00:D6:29:4c"),
            Ok(Mac([0x52, 0x54, 0, 0xd6, 0x29, 0x4c]))
        );
        for m in [
            "52:54:00:d6:29",
            "52-54-00-d6-29-4c",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "5:54:00:d6:29:4c",
            "+5:54:00:d6:29:4c",
        ] {
            assert!(mac(m).is_err(), "{m} accepted");
        }
    }

    #[test]
    fn gateway_address_rejects_network_broadcast_and_tiny_subnets() {
        assert!(gateway_address("10.0.0.1/24").is_ok());
        assert!(gateway_address("10.0.0.0/24").is_err());
        assert!(gateway_address("10.0.0.255/24").is_err());
        assert!(gateway_address("10.0.0.1/31").is_err());
        assert!(gateway_address("10.0.0.1")
            .unwrap_err()
            .hint
            .contains("10.0.0.1/24"));
    }

    #[test]
    fn boot_files_stay_inside_the_root() {
        assert!(boot_file("bios", "undionly.kpxe").is_ok());
        assert!(boot_file("bios", "x86/undionly.kpxe").is_ok());
        for f in [
            "",
            "/srv/undionly.kpxe",
            "../x",
            "a/../../x",
            "a\\b",
            &"x".repeat(128),
        ] {
            assert!(boot_file("bios", f).is_err(), "{f} accepted");
        }
    }

    #[test]
    fn sysctl_keys_are_dotted_and_ip_forward_is_refused() {
        assert!(sysctl_key("vm.max_map_count").is_ok());
        assert!(sysctl_key("net.ipv4.conf.br-lab.rp_filter").is_ok());
        for k in [
            "vm",
            "VM.x",
            "vm..x",
            ".vm.x",
            "vm.x.",
            "vm x",
            "net.ipv4.ip_forward",
            "vm/x",
        ] {
            assert!(sysctl_key(k).is_err(), "{k} accepted");
        }
    }

    #[test]
    fn names_and_domains() {
        assert!(hostname("bastion-1").is_ok());
        assert!(hostname("-x").is_err() && hostname("a.b").is_err() && hostname("").is_err());
        assert!(domain("lab.example").is_ok());
        assert!(domain("lab.example.").is_err() && domain("a..b").is_err());
        assert!(network_name("default").is_ok());
        assert!(network_name("../x").is_err() && network_name("..").is_err());
    }
}
