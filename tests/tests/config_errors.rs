//! A config error names file:line:column, says what to write instead, and changes nothing on the
//! host — whichever command was asked for.

use hostagent_tests::{stderr, Netns, Scratch};

/// Every file under the scratch root, with its content.
fn files(s: &Scratch) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![s.root().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.display().to_string(),
                    std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn assert_refused_without_change(ns: &Netns, s: &Scratch, cfg: &str, expect: &[(&str, &str)]) {
    let links_before = ns.ip_json(&["link"]);
    let fwd_before = ns.read("/proc/sys/net/ipv4/ip_forward");
    let files_before = files(s);
    for cmd in [&["plan"][..], &["apply"], &["run"], &["down"]] {
        let mut argv = vec!["-c", cfg, "--root", s.root_str()];
        argv.extend_from_slice(cmd);
        let out = ns.hostagent(&argv);
        assert_eq!(out.status.code(), Some(1), "{cmd:?} must fail with exit 1");
        let err = stderr(&out);
        for (position, words) in expect {
            let line = err
                .lines()
                .find(|l| l.starts_with(&format!("{cfg}:{position}: error:")))
                .unwrap_or_else(|| panic!("{cmd:?}: no error at {position}: {err}"));
            assert!(line.contains(words), "{cmd:?}: {line}");
        }
        assert!(
            err.matches("hint:").count() >= expect.len(),
            "every error carries a hint: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(ns.ip_json(&["link"]), links_before, "links changed");
    assert_eq!(
        ns.read("/proc/sys/net/ipv4/ip_forward"),
        fwd_before,
        "ip_forward changed"
    );
    let nft = ns.ok(&["nft", "list", "tables"]);
    assert!(nft.trim().is_empty(), "nft tables appeared: {nft}");
    assert_eq!(files(s), files_before, "files under --root changed");
}

const VALID_NETWORK: &str = "state_dir = \"/state\"\n[sysctl]\n\"vm.max_map_count\" = 262144\n\
    [[network]]\nname = \"ok\"\nmode = \"nat\"\nbridge = \"br-ok\"\naddress = \"10.91.0.1/24\"\n";

#[test]
fn semantic_config_errors_are_all_reported_located_and_change_nothing() {
    let ns = Netns::new("cfgsem");
    let s = Scratch::new();
    // A valid network first, then two mistakes: nothing of the valid network may be created either.
    let cfg = s.config(&format!(
        "{VALID_NETWORK}[[network]]\nname = \"bad\"\nmode = \"nat\"\nbridge = \"virbr0-with-a-long-name\"\n\
         address = \"10.92.0.1/24\"\n[network.dhcp]\nrange = \"10.92.0.1-10.92.0.254\"\n"
    ));
    assert_refused_without_change(
        &ns,
        &s,
        &cfg,
        &[("12:10", "virbr0-with-a-long-name"), ("15:9", "gateway")],
    );
}

#[test]
fn unknown_keys_are_located_with_the_valid_keys_and_change_nothing() {
    let ns = Netns::new("cfgkey");
    let s = Scratch::new();
    let cfg = s.config(&format!(
        "{VALID_NETWORK}[network.dhcp]\nrange = \"10.91.0.2-10.91.0.254\"\nleese_time = \"1h\"\n"
    ));
    assert_refused_without_change(&ns, &s, &cfg, &[("11:1", "leese_time")]);
}

#[test]
fn an_out_of_range_port_rate_limit_is_located_with_its_range_and_changes_nothing() {
    let ns = Netns::new("cfgprl");
    let s = Scratch::new();
    let cfg = s.config(&format!("{VALID_NETWORK}[dhcp]\nport_rate_limit = 5\n"));
    assert_refused_without_change(
        &ns,
        &s,
        &cfg,
        &[("10:19", "port_rate_limit = 5 is out of range")],
    );
    let err = stderr(&ns.hostagent(&["-c", &cfg, "--root", s.root_str(), "plan"]));
    assert!(
        err.contains("hint: write DHCP packets per second from 10 to 100000 (default 100), or 0"),
        "{err}"
    );
}
