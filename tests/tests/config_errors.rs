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
                out.push((p.display().to_string(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn config_errors_print_file_line_column_and_change_nothing() {
    let ns = Netns::new("cfgerr");
    let s = Scratch::new();
    // Valid network first, then three mistakes: a too-long bridge, a range over the gateway, an
    // unknown key. Nothing of the valid network may be created either.
    let cfg = s.config(
        "state_dir = \"/state\"\n\
         [sysctl]\n\"vm.max_map_count\" = 262144\n\
         [[network]]\nname = \"ok\"\nmode = \"nat\"\nbridge = \"br-ok\"\naddress = \"10.91.0.1/24\"\n\
         [[network]]\nname = \"bad\"\nmode = \"nat\"\nbridge = \"virbr0-with-a-long-name\"\naddress = \"10.92.0.1/24\"\n\
         [network.dhcp]\nrange = \"10.92.0.1-10.92.0.254\"\nleese_time = \"1h\"\n",
    );
    let links_before = ns.ip_json(&["link"]);
    let fwd_before = ns.read("/proc/sys/net/ipv4/ip_forward");
    let files_before = files(&s);

    for cmd in [&["plan"][..], &["apply"], &["run"], &["down"]] {
        let mut argv = vec!["-c", cfg.as_str(), "--root", s.root_str()];
        argv.extend_from_slice(cmd);
        let out = ns.hostagent(&argv);
        assert_eq!(out.status.code(), Some(1), "{cmd:?} must fail with exit 1");
        let err = stderr(&out);
        assert!(err.contains(&format!("{cfg}:12:10: error: bridge name \"virbr0-with-a-long-name\"")), "{cmd:?}: {err}");
        assert!(err.contains(&format!("{cfg}:15:9: error:")) && err.contains("gateway"), "{cmd:?}: {err}");
        assert!(err.contains(&format!("{cfg}:16:1: error:")) && err.contains("leese_time"), "{cmd:?}: {err}");
        assert!(err.matches("hint:").count() >= 3, "every error carries a hint: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    assert_eq!(ns.ip_json(&["link"]), links_before, "links changed");
    assert_eq!(ns.read("/proc/sys/net/ipv4/ip_forward"), fwd_before, "ip_forward changed");
    let nft = ns.ok(&["nft", "list", "tables"]);
    assert!(nft.trim().is_empty(), "nft tables appeared: {nft}");
    assert_eq!(files(&s), files_before, "files under --root changed");
}
