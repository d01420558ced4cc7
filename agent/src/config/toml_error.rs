//! Turns a toml/serde error (syntax, unknown key, missing key, wrong type) into a problem with a
//! hint saying what to write. serde's messages have a stable shape ("unknown field `x`, expected
//! one of `a`, `b`"), which is all we rely on; anything else is passed through unchanged.

use super::error::Problem;

pub(crate) fn problem(e: &toml::de::Error, text: &str) -> Problem {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (key, valid) = unknown_field(rest);
        let mut hint = if valid.is_empty() {
            "this table takes no keys; remove this line".to_string()
        } else {
            format!("valid keys here: {}", valid.join(", "))
        };
        if let Some(close) = closest(&key, &valid) {
            hint = format!("did you mean `{close}`? {hint}");
        }
        return Problem::new(span, format!("unknown key `{key}`")).hint(hint);
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let key = rest.trim_matches('`');
        let example = key_example(key).unwrap_or_else(|| format!("{key} = ..."));
        return Problem::new(span, format!("missing key `{key}` in this table"))
            .hint(format!("add {example}"));
    }
    if message == "duplicate key" {
        return Problem::new(span, "duplicate key")
            .hint("each key may appear once per table; remove one of them");
    }
    if let Some(hint) = header_hint(text, span.start) {
        return Problem::new(span, message.to_string()).hint(hint);
    }
    let hint = match key_at(text, span.start).and_then(|k| key_example(&k).map(|ex| (k, ex))) {
        Some((_, example)) => format!("write it like {example}"),
        None if message.starts_with("invalid type") || message.starts_with("invalid value") => {
            "check the value's type: strings are quoted, numbers and true/false are not".to_string()
        }
        None => "fix the TOML syntax here (see https://toml.io/en/v1.0.0)".to_string(),
    };
    // serde names Rust types ("i64"); users write TOML.
    let message = message.replace("expected i64", "expected an integer");
    Problem::new(span, message).hint(hint)
}

/// "`foo`, expected one of `a`, `b`" → ("foo", ["a", "b"]).
fn unknown_field(rest: &str) -> (String, Vec<String>) {
    let mut quoted = rest.split('`').skip(1).step_by(2).map(str::to_string);
    let key = quoted.next().unwrap_or_default();
    (key, quoted.collect())
}

/// The valid key nearest to a typo, if it is close enough to be a likely typo.
fn closest<'a>(key: &str, valid: &'a [String]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (edit_distance(key, v), v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The key of a `key = value` line whose value (or an element of it) starts at `offset`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let (key, _) = line.split_once('=')?;
    Some(key.trim().trim_matches('"').to_string())
}

/// A type error reported at a table header usually means single vs double brackets got mixed up.
fn header_hint(text: &str, offset: usize) -> Option<String> {
    const ARRAYS: [&str; 3] = ["network", "network.dhcp.host", "guest"];
    const TABLES: [&str; 7] = [
        "sysctl",
        "vhost_net",
        "dhcp",
        "network.dhcp",
        "network.pxe",
        "libvirt",
        "guest.disk",
    ];
    let rest = text.get(offset..)?;
    let line = rest.lines().next()?.split('#').next()?.trim();
    if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
        let name = name.trim();
        return TABLES.contains(&name).then(|| {
            format!("write [{name}] (single brackets): there is only one [{name}] per table")
        });
    }
    let name = line.strip_prefix('[')?.strip_suffix(']')?.trim();
    ARRAYS
        .contains(&name)
        .then(|| format!("write [[{name}]] (double brackets): each [[{name}]] adds one entry"))
}

/// How each key is written, for hints.
fn key_example(key: &str) -> Option<String> {
    let example = match key {
        "state_dir" => "state_dir = \"/var/lib/hostagent\"",
        "experimental_zcopytx" => "experimental_zcopytx = true",
        "name" => "name = \"default\"",
        "mode" => "mode = \"nat\" (nat, routed, isolated or bridge)",
        "bridge" => "bridge = \"virbr0\"",
        "address" => "address = \"192.168.122.1/24\"",
        "stp" => "stp = true",
        "forward_delay" => "forward_delay = 0 (seconds)",
        "mac" => "mac = \"52:54:00:d6:29:4c\"",
        "mtu" => "mtu = 1500",
        "interfaces" => "interfaces = [\"eth1\"]",
        "range" => "range = \"192.168.122.2-192.168.122.254\"",
        "lease_time" => "lease_time = \"12h\"",
        "dns" => "dns = [\"192.0.2.53\"]",
        "domain" => "domain = \"lab.example\"",
        "port_rate_limit" => {
            "port_rate_limit = 100 (DHCP packets per second per bridge port; 0 = off)"
        }
        "ip" => "ip = \"192.168.122.10\"",
        "root" => "root = \"/var/lib/hostagent/boot\"",
        "bios" => "bios = \"undionly.kpxe\"",
        "uefi" => "uefi = \"ipxe.efi\"",
        "arm64" => "arm64 = \"ipxe-arm64.efi\"",
        "script" => "script = \"boot.ipxe\"",
        "boot" => "boot = \"custom.kpxe\"",
        "http_port" => "http_port = 8069",
        "uri" => "uri = \"qemu:///system\"",
        "pool" => "pool = \"default\" (a libvirt storage pool)",
        "virt_type" => "virt_type = \"kvm\" (kvm, or qemu for TCG emulation)",
        "cpu_overcommit" => "cpu_overcommit = 4.0",
        "memory_overcommit" => "memory_overcommit = 1.0",
        "count" => "count = 3",
        "vcpus" => "vcpus = 2",
        "memory" => "memory = \"2GiB\"",
        "disk" => "disk = { size = \"20GiB\", format = \"qcow2\", bus = \"virtio\" }",
        "size" => "size = \"20GiB\"",
        "format" => "format = \"qcow2\" (qcow2 or raw)",
        "firmware" => "firmware = \"bios\" (bios or uefi)",
        "vhost" => "vhost = true",
        "autostart" => "autostart = true",
        "path" => "path = \"node.qcow2\" (a volume in the pool) or \"/srv/images/node.qcow2\"",
        "backing" => "backing = \"template.qcow2\"",
        k if k.contains('.') => "\"vm.max_map_count\" = 262144 (an integer or a string)",
        _ => return None,
    };
    Some(example.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_suggestions_are_close_only() {
        let valid: Vec<String> = ["name", "mode", "bridge", "address"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(closest("adress", &valid), Some("address"));
        assert_eq!(closest("brigde", &valid), Some("bridge"));
        assert_eq!(closest("zzzzzz", &valid), None);
    }

    #[test]
    fn key_at_finds_the_key_of_a_value() {
        let text = "a = 1\n  mtu = \"x\"\n";
        assert_eq!(
            key_at(text, text.find('"').expect("quote")),
            Some("mtu".to_string())
        );
        assert_eq!(key_at(text, 0), None);
        let text = "dns = [\"1.1.1.1\", 5]";
        assert_eq!(
            key_at(text, text.find('5').expect("5")),
            Some("dns".to_string())
        );
    }

    #[test]
    fn bracket_mixups_get_a_hint() {
        let hint = |t: &str| header_hint(t, 0).unwrap_or_default();
        assert!(hint("[network]\nname = 1").contains("[[network]]"));
        assert!(hint("[[network.dhcp]] # x").contains("write [network.dhcp]"));
        assert!(hint("[network.dhcp.host]").contains("[[network.dhcp.host]]"));
        assert_eq!(header_hint("[sysctl]", 0), None);
    }
}
