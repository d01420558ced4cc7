//! A config error names file:line:column, says what to write instead, and changes nothing on the
//! host — whichever command was asked for.

use hostagent_tests::cli::Cli;
use hostagent_tests::config::{position, Config, Dhcp, Network};
use hostagent_tests::Scratch;
use testkit::{stderr, Netns};

/// Every command refuses `config` with exit 1 and the errors `expect`s (position as
/// `LINE:COLUMN`, words the message must contain), each with a hint; nothing on the host or
/// under the root changes.
fn assert_refused_without_change(
    ns: &Netns,
    s: &Scratch,
    config: &Config,
    expect: &[(String, &str)],
) {
    let cfg = s.config(config);
    let cli = Cli::new(ns, s, &cfg);
    let links_before = ns.ip_json(&["link"]);
    let fwd_before = ns.read("/proc/sys/net/ipv4/ip_forward");
    let files_before = s.files();
    for cmd in [&["plan"][..], &["apply"], &["run"], &["down"]] {
        let out = cli.run(cmd);
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
    assert_eq!(s.files(), files_before, "files under --root changed");
}

/// A valid config: a sysctl and one network, `ok`.
fn valid() -> Config {
    Config::new("/state").sysctl("vm.max_map_count", 262144)
}

fn ok_network() -> Network {
    Network::nat("ok", "br-ok", "10.91.0.1/24")
}

#[test]
fn semantic_config_errors_are_all_reported_located_and_change_nothing() {
    let ns = Netns::new("cfgsem");
    let s = Scratch::new();
    // A valid network first, then two mistakes: nothing of the valid network may be created either.
    let config = valid().network(ok_network()).network(
        Network::nat("bad", "virbr0-with-a-long-name", "10.92.0.1/24")
            .dhcp(Dhcp::new("10.92.0.1-10.92.0.254")),
    );
    let text = config.to_string();
    assert_refused_without_change(
        &ns,
        &s,
        &config,
        &[
            (
                position(&text, "virbr0-with-a-long-name", "\""),
                "virbr0-with-a-long-name",
            ),
            (position(&text, "10.92.0.1-10.92.0.254", "\""), "gateway"),
        ],
    );
}

#[test]
fn unknown_keys_are_located_with_the_valid_keys_and_change_nothing() {
    let ns = Netns::new("cfgkey");
    let s = Scratch::new();
    let config = valid()
        .network(ok_network().dhcp(Dhcp::new("10.91.0.2-10.91.0.254").raw("leese_time = \"1h\"")));
    let text = config.to_string();
    assert_refused_without_change(
        &ns,
        &s,
        &config,
        &[(position(&text, "leese_time", "leese_time"), "leese_time")],
    );
}

#[test]
fn an_out_of_range_port_rate_limit_is_located_with_its_range_and_changes_nothing() {
    let ns = Netns::new("cfgprl");
    let s = Scratch::new();
    let config = valid().port_rate_limit(5).network(ok_network());
    let text = config.to_string();
    assert_refused_without_change(
        &ns,
        &s,
        &config,
        &[(
            position(&text, "port_rate_limit = 5", "5"),
            "port_rate_limit = 5 is out of range",
        )],
    );
    let cfg = s.config(config);
    let err = stderr(&Cli::new(&ns, &s, &cfg).run(&["plan"]));
    assert!(
        err.contains("hint: write DHCP packets per second from 10 to 100000 (default 100), or 0"),
        "{err}"
    );
}
