//! State hygiene: `down` puts back every live `[sysctl]` value the agent changed (only where the
//! live value is still the agent's), and one lock keeps two hostagent processes from changing
//! the host at the same time, without a stale lock ever blocking.

use hostagent_tests::cli::Cli;
use hostagent_tests::config::{Config, Network};
use hostagent_tests::daemon::Daemon;
use hostagent_tests::Scratch;
use testkit::{stderr, stdout, wait_for, Netns};

fn agent(ns: &Netns, s: &Scratch, cfg: &str, args: &[&str]) -> std::process::Output {
    Cli::new(ns, s, cfg).run(args)
}

fn must(ns: &Netns, s: &Scratch, cfg: &str, args: &[&str]) -> String {
    Cli::new(ns, s, cfg).ok(args)
}

/// `plan` that has something to do (exit 2); its output.
fn plan(ns: &Netns, s: &Scratch, cfg: &str) -> String {
    let o = agent(ns, s, cfg, &["plan"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "plan: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// A host-wide sysctl lives under --root: give it a fake /proc file with `value`.
fn fake_sysctl(s: &Scratch, key: &str, value: &str) -> std::path::PathBuf {
    let path = s.file(&format!("proc/sys/{}", key.replace('.', "/")));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, format!("{value}\n")).expect("write fake sysctl");
    path
}

fn read_trim(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .expect("read")
        .trim()
        .to_string()
}

/// An isolated network on br-hy with `address`, and the `[sysctl]` entries given.
fn config(address: &str, sysctls: &[(&str, &str)]) -> Config {
    let mut c =
        Config::new("/state").network(Network::new("lab", "isolated", "br-hy").address(address));
    for (k, v) in sysctls {
        c = c.sysctl(k, v);
    }
    c
}

#[test]
fn down_restores_every_sysctl_the_agent_changed_unless_someone_changed_it_since() {
    let ns = Netns::new("hys");
    let s = Scratch::new();
    let map_count = fake_sysctl(&s, "vm.max_map_count", "65530");
    let swappiness = fake_sysctl(&s, "vm.swappiness", "60");
    let rp_key = "/proc/sys/net/ipv4/conf/default/rp_filter";
    let rp_before = ns.read(rp_key);
    let rp_want = if rp_before == "2" { "1" } else { "2" };
    let cfg = s.config(config(
        "10.77.0.1/24",
        &[
            ("vm.max_map_count", "262144"),
            ("vm.swappiness", "10"),
            ("net.ipv4.conf.default.rp_filter", rp_want),
        ],
    ));

    let plan = plan(&ns, &s, &cfg);
    assert!(
        plan.contains("set vm.max_map_count 65530 → 262144 (`down` restores it)"),
        "{plan}"
    );
    must(&ns, &s, &cfg, &["apply"]);
    assert_eq!(read_trim(&map_count), "262144");
    assert_eq!(read_trim(&swappiness), "10");
    assert_eq!(ns.read(rp_key), rp_want);
    let owned: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.file("state/owned.json")).unwrap())
            .unwrap();
    let recorded: Vec<(String, String, String)> = owned["sysctls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_string(),
                c["previous"].as_str().unwrap().to_string(),
                c["set"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (key, previous, set) in [
        ("vm.max_map_count", "65530", "262144"),
        ("vm.swappiness", "60", "10"),
        (
            "net.ipv4.conf.default.rp_filter",
            rp_before.as_str(),
            rp_want,
        ),
    ] {
        assert!(
            recorded.contains(&(key.into(), previous.into(), set.into())),
            "{key} recorded before the write: {recorded:?}"
        );
    }

    // A second apply (e.g. drift repair) keeps the first previous value.
    std::fs::write(&map_count, "1\n").unwrap();
    must(&ns, &s, &cfg, &["apply"]);
    assert_eq!(read_trim(&map_count), "262144");

    // The admin takes vm.swappiness over: down leaves it alone and says so.
    std::fs::write(&swappiness, "33\n").unwrap();
    let out = must(&ns, &s, &cfg, &["down"]);
    assert_eq!(read_trim(&map_count), "65530", "{out}");
    assert_eq!(ns.read(rp_key), rp_before, "{out}");
    assert_eq!(read_trim(&swappiness), "33", "{out}");
    assert!(
        out.contains("vm.swappiness is 33 now, not the 10 hostagent set: not restored"),
        "{out}"
    );
    assert!(
        !s.file("state/owned.json").exists(),
        "nothing left recorded"
    );
}

#[test]
fn a_key_dropped_from_the_config_is_put_back_by_the_next_apply() {
    let ns = Netns::new("hyd");
    let s = Scratch::new();
    let map_count = fake_sysctl(&s, "vm.max_map_count", "65530");
    let swappiness = fake_sysctl(&s, "vm.swappiness", "60");
    let cfg = s.config(config(
        "10.77.0.1/24",
        &[("vm.max_map_count", "262144"), ("vm.swappiness", "10")],
    ));
    must(&ns, &s, &cfg, &["apply"]);
    s.config(config("10.77.0.1/24", &[("vm.max_map_count", "262144")]));
    let plan = plan(&ns, &s, &cfg);
    assert!(
        plan.contains("set vm.swappiness 10 → 60 (restore the value found before hostagent)"),
        "{plan}"
    );
    must(&ns, &s, &cfg, &["apply"]);
    assert_eq!(read_trim(&swappiness), "60");
    assert_eq!(read_trim(&map_count), "262144");
    must(&ns, &s, &cfg, &["down"]);
    assert_eq!(read_trim(&map_count), "65530");
}

#[test]
fn while_run_holds_the_lock_apply_and_down_fail_clearly_and_a_killed_holder_never_blocks() {
    let ns = Netns::new("hyl");
    let s = Scratch::new();
    let cfg = s.config(config("10.77.0.1/24", &[]));
    let mut daemon = Daemon::start(&ns, &s, &cfg, &[]);
    let pid = daemon.pid();

    // A second process: refused, naming the holder, and it changed nothing.
    for command in ["apply", "down"] {
        let o = agent(&ns, &s, &cfg, &[command]);
        assert_eq!(o.status.code(), Some(1), "{command}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!(
                "another hostagent (pid {pid}, `hostagent run`) holds the lock on"
            )) && err.contains("run/hostagent: wait for it"),
            "{command}: {err}"
        );
        assert!(ns.has_link("br-hy"), "{command} must not have run");
    }
    // `plan` only reads: it works while the daemon runs.
    let o = agent(&ns, &s, &cfg, &["plan"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // The holder's own drift repair still works...
    ns.ok(&["ip", "link", "del", "br-hy"]);
    assert!(
        wait_for(10, || ns.has_link("br-hy").then_some(())).is_some(),
        "drift repair while holding the lock; log:\n{}",
        daemon.log_text()
    );
    // ...and so does its SIGHUP reload (a new address on the bridge).
    s.config(config("10.78.0.1/24", &[]));
    daemon.signal(libc::SIGHUP);
    let reloaded = wait_for(10, || {
        let addrs = ns.ok(&["ip", "-4", "-o", "addr", "show", "dev", "br-hy"]);
        addrs.contains("10.78.0.1/24").then_some(())
    });
    assert!(
        reloaded.is_some(),
        "SIGHUP reload while holding the lock; log:\n{}",
        daemon.log_text()
    );

    // Killed without any chance to clean up: the lock goes with the process.
    daemon.signal(libc::SIGKILL);
    assert!(daemon.wait_exit(10).is_some(), "daemon did not die");
    // (The killed daemon's control socket is still there: proof nothing was cleaned up.)
    assert!(s.file("run/hostagent/control.sock").exists());
    let o = agent(&ns, &s, &cfg, &["apply"]);
    assert!(o.status.success(), "after kill -9: {}", stderr(&o));
    let out = must(&ns, &s, &cfg, &["down"]);
    assert!(out.contains("removed bridge br-hy"), "{out}");
    assert!(!ns.has_link("br-hy"));
}
