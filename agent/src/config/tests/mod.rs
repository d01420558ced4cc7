//! Config tests: the shipped files, defaults, one test per validation rule (position + hint), and
//! the conversions to netcfg/pxe types.

mod convert;
mod dns;
mod firewall;
mod forward;
mod guests;
mod ipv6;
mod leases;
mod pxe_field;
mod rules;

use std::path::{Path, PathBuf};

use super::*;

/// A valid nat network; tests append lines from line 6 on.
/// Value columns: name 8, mode 8, bridge 10, address 11.
pub(super) const BASE: &str = "[[network]]\nname = \"lab\"\nmode = \"nat\"\nbridge = \"br-lab\"\naddress = \"10.77.0.1/24\"\n";

pub(super) fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

pub(super) fn ok(text: &str) -> Model {
    match parse(text, Path::new("t.toml")) {
        Ok(m) => m,
        Err(e) => panic!("config refused:\n{e}\n--- config:\n{text}"),
    }
}

pub(super) fn errors(text: &str) -> Vec<Diagnostic> {
    match parse(text, Path::new("t.toml")) {
        Ok(_) => panic!("config accepted:\n{text}"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

/// Exactly one problem, at line:col, its message containing `fragment`, with a hint.
pub(super) fn one_error(text: &str, line: usize, col: usize, fragment: &str) -> Diagnostic {
    let errs = errors(text);
    let shown: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        errs.len(),
        1,
        "expected one error, got:\n{}",
        shown.join("\n")
    );
    let d = errs.into_iter().next().expect("one error");
    assert_eq!((d.line, d.column), (line, col), "wrong position: {d}");
    assert!(
        d.message.contains(fragment),
        "message lacks {fragment:?}: {d}"
    );
    assert!(
        d.hint.as_deref().is_some_and(|h| !h.is_empty()),
        "no hint: {d}"
    );
    d
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn shipped_config_and_every_example_load() {
    let mut files = vec![repo_file("etc/hostagent.toml")];
    let examples = std::fs::read_dir(repo_file("etc/examples")).expect("etc/examples exists");
    for entry in examples {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    assert!(
        files.len() >= 4,
        "expected the default and three examples, found {files:?}"
    );
    for f in &files {
        if let Err(e) = load(f) {
            panic!("{} does not load:\n{e}", f.display());
        }
    }
}

#[test]
fn shipped_default_is_libvirts_default_network() {
    let m = load(&repo_file("etc/hostagent.toml")).expect("default config loads");
    assert_eq!(m.state_dir, Path::new("/var/lib/hostagent"));
    assert_eq!(
        m.sysctl.get("vm.overcommit_memory").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        m.sysctl.get("vm.max_map_count").map(String::as_str),
        Some("262144")
    );
    let [n] = m.networks.as_slice() else {
        panic!("one network expected")
    };
    assert_eq!(
        (n.name.as_str(), n.mode, n.bridge.as_str()),
        ("default", Mode::Nat, "virbr0")
    );
    assert_eq!(n.address, Some("192.168.122.1/24".parse().expect("cidr")));
    assert!(n.stp);
    assert_eq!(n.forward_delay, 0);
    let d = n.dhcp.as_ref().expect("dhcp");
    assert_eq!(d.range_start, std::net::Ipv4Addr::new(192, 168, 122, 2));
    assert_eq!(d.range_end, std::net::Ipv4Addr::new(192, 168, 122, 254));
    assert_eq!(d.lease_time, std::time::Duration::from_secs(12 * 3600));
    let p = n.pxe.as_ref().expect("pxe");
    assert_eq!(p.root, Path::new("/var/lib/hostagent/boot"));
    assert_eq!(
        (p.bios.as_deref(), p.uefi.as_deref(), p.script.as_deref()),
        (Some("undionly.kpxe"), Some("ipxe.efi"), Some("boot.ipxe"))
    );
    assert_eq!(p.http_port, Some(8069));
    assert_eq!(
        m.dhcp_port_rate_limit, 100,
        "the shipped default keeps the limit on"
    );
}

#[test]
fn defaults_fill_in_what_is_left_out() {
    let m = ok(&with(
        "[network.dhcp]\nrange = \"10.77.0.100-10.77.0.200\"\n",
    ));
    assert_eq!(m.source, Path::new("t.toml"));
    assert_eq!(m.state_dir, Path::new(DEFAULT_STATE_DIR));
    assert!(m.sysctl.is_empty());
    assert_eq!(m.vhost_zcopytx, None);
    assert_eq!(m.dhcp_port_rate_limit, DEFAULT_PORT_RATE_LIMIT);
    assert_eq!(DEFAULT_PORT_RATE_LIMIT, 100);
    let n = &m.networks[0];
    assert!(n.stp, "stp defaults to on, as in libvirt");
    assert_eq!(n.forward_delay, 0);
    assert_eq!(n.mac, hwaddr::Mac::derived("lab"));
    assert_eq!(n.mtu, None);
    assert!(n.interfaces.is_empty());
    assert!(n.pxe.is_none());
    let d = n.dhcp.as_ref().expect("dhcp");
    assert_eq!(d.lease_time, DEFAULT_LEASE_TIME);
    assert_eq!(
        d.dns, None,
        "no dns configured: resolvers are read at use time"
    );
}

#[test]
fn global_dhcp_defaults_apply_unless_the_network_overrides() {
    let text = format!(
        "[dhcp]\ndns = [\"192.0.2.53\"]\ndomain = \"lab.example\"\nlease_time = \"2h\"\n{BASE}\
         [network.dhcp]\nrange = \"10.77.0.100-10.77.0.200\"\n\
         [[network]]\nname = \"b\"\nmode = \"isolated\"\nbridge = \"br-b\"\naddress = \"10.78.0.1/24\"\n\
         [network.dhcp]\nrange = \"10.78.0.100-10.78.0.200\"\ndns = [\"10.78.0.1\"]\ndomain = \"b.example\"\nlease_time = \"5m\"\n"
    );
    let m = ok(&text);
    let a = m.networks[0].dhcp.as_ref().expect("dhcp a");
    assert_eq!(a.dns, Some(vec!["192.0.2.53".parse().expect("ip")]));
    assert_eq!(a.domain.as_deref(), Some("lab.example"));
    assert_eq!(a.lease_time, std::time::Duration::from_secs(7200));
    let b = m.networks[1].dhcp.as_ref().expect("dhcp b");
    assert_eq!(b.dns, Some(vec!["10.78.0.1".parse().expect("ip")]));
    assert_eq!(b.domain.as_deref(), Some("b.example"));
    assert_eq!(b.lease_time, std::time::Duration::from_secs(300));
}

#[test]
fn explicit_values_are_kept() {
    let m = ok(&format!(
        "state_dir = \"/srv/ha\"\n[vhost_net]\nexperimental_zcopytx = false\n[sysctl]\n\"kernel.pid_max\" = \"4194304\"\n{}",
        with("stp = false\nforward_delay = 15\nmac = \"52:54:00:D6:29:4C\"\nmtu = 9000\n")
    ));
    assert_eq!(m.state_dir, Path::new("/srv/ha"));
    assert_eq!(m.vhost_zcopytx, Some(false));
    assert_eq!(
        m.sysctl.get("kernel.pid_max").map(String::as_str),
        Some("4194304")
    );
    let n = &m.networks[0];
    assert!(!n.stp);
    assert_eq!(n.forward_delay, 15);
    assert_eq!(n.mac, hwaddr::Mac([0x52, 0x54, 0, 0xd6, 0x29, 0x4c]));
    assert_eq!(n.mtu, Some(9000));
}

#[test]
fn unreadable_file_names_the_file_and_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.toml");
    let e = load(&missing).expect_err("missing file");
    let text = e.to_string();
    assert!(matches!(e, ConfigError::Unreadable { .. }));
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(text.contains("-c"), "{text}");
}

#[test]
fn errors_display_as_file_line_column_with_hint_lines() {
    let text = with("mtu = 10\nstp = \"yes\"\n");
    let e = parse(&text, Path::new("etc/x.toml")).expect_err("bad");
    let shown = e.to_string();
    assert!(shown.starts_with("etc/x.toml:7:7: error: "), "{shown}");
    assert!(shown.contains("\n  hint: "), "{shown}");
}
