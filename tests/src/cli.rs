//! The hostagent command line as a test drives it: one config, one scratch `--root`, one
//! namespace; and what `status --json` and `leases --json` say.

use std::process::{Command, Output};

use testkit::{stderr, stdout, Netns};

use crate::{hostagent_bin, Scratch};

/// `hostagent -c CONFIG --root ROOT ...` inside a namespace.
pub struct Cli<'a> {
    ns: &'a Netns,
    config: String,
    root: String,
}

impl<'a> Cli<'a> {
    pub fn new(ns: &'a Netns, s: &Scratch, config: &str) -> Cli<'a> {
        Cli {
            ns,
            config: config.to_string(),
            root: s.root_str().to_string(),
        }
    }

    /// The command, for callers that add environment or redirections.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let argv = self.argv(args);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.ns.cmd(&argv)
    }

    /// `hostagent -c CONFIG --root ROOT ARGS`, for running elsewhere than in the namespace.
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let bin = hostagent_bin();
        let mut argv = vec![
            bin.to_str().expect("utf-8 path").to_string(),
            "-c".into(),
            self.config.clone(),
            "--root".into(),
            self.root.clone(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn hostagent")
    }

    /// Run and require exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "hostagent {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            o.status,
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// `plan`'s exit code (0: nothing to do, 2: changes) and what it printed.
    pub fn plan(&self) -> (Option<i32>, String) {
        let o = self.run(&["plan"]);
        (o.status.code(), format!("{}{}", stdout(&o), stderr(&o)))
    }

    /// `status --json` of the running daemon.
    pub fn status(&self) -> serde_json::Value {
        json(&self.run(&["status", "--json"]))
    }

    /// The running daemon's servers of one network (`dhcp`, `tftp`, `http` counters).
    pub fn server(&self, network: &str) -> serde_json::Value {
        let v = self.status();
        v["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["network"] == network)
            .cloned()
            .unwrap_or_else(|| panic!("no server status for network {network}: {v}"))
    }

    /// `leases --json` as (network, mac, ip) triples.
    pub fn leases(&self) -> Vec<(String, String, String)> {
        self.lease_records()
            .into_iter()
            .map(|(net, l)| {
                (
                    net,
                    mac_text(&l["mac"]),
                    l["ip"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// `leases --json` as (network, lease object) pairs, every field the daemon reports.
    pub fn lease_records(&self) -> Vec<(String, serde_json::Value)> {
        let v = json(&self.run(&["leases", "--json"]));
        let mut res = vec![];
        for net in v.as_array().into_iter().flatten() {
            let name = net["network"].as_str().unwrap_or("").to_string();
            for l in net["leases"].as_array().into_iter().flatten() {
                res.push((name.clone(), l.clone()));
            }
        }
        res
    }
}

/// Require exit 0 and parse stdout as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "command failed ({}): {}{}",
        out.status,
        stdout(out),
        stderr(out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", stdout(out)))
}

/// The number at `path` in a status object; panics when it is missing, so that a renamed
/// counter fails the test instead of reading as 0.
pub fn counter(v: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {path:?} in {v}"))
}

/// A MAC as JSON text or as a byte array, rendered aa:bb:...
pub fn mac_text(v: &serde_json::Value) -> String {
    if let Some(s) = v.as_str() {
        return s.to_lowercase();
    }
    v.as_array()
        .into_iter()
        .flatten()
        .map(|b| format!("{:02x}", b.as_u64().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(":")
}
