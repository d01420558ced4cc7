//! `hostagent run` as a daemon in a test's namespace: started with its log captured, ready once
//! its control socket answers; and the simulated DHCP client fleet (`dhcp-flood`) tests point
//! at it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Lines};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Stdio};
use std::time::Duration;

use testkit::{wait_for, wait_until, Netns};

use crate::console::read_log;
use crate::{helper_bin, hostagent_bin, Scratch};

/// How long a daemon may take to open its control socket (apply included).
const READY_SECS: u64 = 30;

/// A running `hostagent run` inside a namespace; killed on drop (the namespace drop kills it too).
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// `hostagent -c CFG --root ROOT run EXTRA...`.
    pub fn start(ns: &Netns, s: &Scratch, cfg: &str, extra: &[&str]) -> Daemon {
        Daemon::start_with(ns, s, cfg, extra, None)
    }

    /// Start `argv` in `ns` (a `hostagent run`, possibly behind wrappers that exec it in place)
    /// with stdout and stderr in a log under the scratch root; returns once the control socket
    /// answers, panics with the log if the process exits first or takes too long.
    pub fn spawn(ns: &Netns, s: &Scratch, argv: &[&str]) -> Daemon {
        Daemon::spawn_signalled(ns, s, argv, None)
    }

    /// `start`, sending `sig` once during start-up: as soon as the log has `needle`, before the
    /// control socket answers (what `systemctl reload` does to a unit that is still starting).
    pub fn start_signalled_at(
        ns: &Netns,
        s: &Scratch,
        cfg: &str,
        needle: &str,
        sig: i32,
    ) -> Daemon {
        Daemon::start_with(ns, s, cfg, &[], Some((needle, sig)))
    }

    fn start_with(
        ns: &Netns,
        s: &Scratch,
        cfg: &str,
        extra: &[&str],
        early: Option<(&str, i32)>,
    ) -> Daemon {
        let bin = hostagent_bin();
        let mut argv = vec![
            bin.to_str().expect("utf-8"),
            "-c",
            cfg,
            "--root",
            s.root_str(),
            "run",
        ];
        argv.extend_from_slice(extra);
        Daemon::spawn_signalled(ns, s, &argv, early)
    }

    fn spawn_signalled(
        ns: &Netns,
        s: &Scratch,
        argv: &[&str],
        mut early: Option<(&str, i32)>,
    ) -> Daemon {
        let log = s.root().join(format!("agent-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = ns
            .cmd(argv)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .expect("spawn hostagent run");
        let mut d = Daemon { child, log };
        let sock = s.root().join("run/hostagent/control.sock");
        // Connect, not just exist: a daemon killed with -9 leaves its socket file behind.
        if let Some((needle, sig)) = early.take() {
            // Polled every millisecond: start-up takes tens of them, and the signal must land
            // while it is still under way.
            let seen = wait_until(
                Duration::from_secs(READY_SECS),
                Duration::from_millis(1),
                || d.log_text().contains(needle).then_some(()),
            );
            assert!(
                seen.is_some(),
                "no {needle:?} in the log during start-up; log:\n{}",
                d.log_text()
            );
            d.signal(sig);
        }
        let up = wait_for(READY_SECS, || {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!(
                    "hostagent run exited ({status}) before serving; log:\n{}",
                    d.log_text()
                );
            }
            std::os::unix::net::UnixStream::connect(&sock)
                .ok()
                .map(|_| ())
        });
        assert!(
            up.is_some(),
            "hostagent run did not open its control socket in {READY_SECS} s; log:\n{}",
            d.log_text()
        );
        d
    }

    /// The log so far, escape sequences removed.
    pub fn log_text(&self) -> String {
        read_log(&self.log)
    }

    /// Wait until the log has a line containing `needle`; panics with the log after `secs`.
    pub fn wait_log(&self, needle: &str, secs: u64) {
        let seen = wait_for(secs, || self.log_text().contains(needle).then_some(()));
        assert!(
            seen.is_some(),
            "no {needle:?} in the log within {secs} s ({}); log:\n{}",
            self.liveness(),
            self.log_text()
        );
    }

    /// Whether the process still runs, for failure messages: a daemon killed by a signal it had
    /// no handler for yet leaves a log that just stops.
    pub fn liveness(&self) -> String {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) {
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z')) =>
            {
                "the daemon has exited".to_string()
            }
            Ok(_) => "the daemon is still running".to_string(),
            Err(_) => "the daemon is gone".to_string(),
        }
    }

    /// The process id (`ip netns exec` and wrappers exec in place: it is the daemon's).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The files mapped into the daemon's memory (/proc/PID/maps, one path per line, no repeats).
    pub fn mapped_files(&self) -> Vec<String> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid()))
            .unwrap_or_else(|e| panic!("maps of the daemon: {e}"));
        let mut out: Vec<String> = Vec::new();
        for path in maps.lines().filter_map(|l| l.find('/').map(|i| &l[i..])) {
            if !out.iter().any(|p| p == path) {
                out.push(path.to_string());
            }
        }
        out
    }

    /// Processes the daemon started that are still there (zombies included).
    pub fn children(&self) -> Vec<i32> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).expect("tasks");
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| {
                c.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Wait for exit up to `secs`; returns the exit code (None = still running or signalled).
    pub fn wait_exit(&mut self, secs: u64) -> Option<Option<i32>> {
        let child = &mut self.child;
        wait_for(secs, || child.try_wait().ok().flatten().map(|s| s.code()))
    }

    /// Panics with the log unless the daemon is still running.
    pub fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().expect("try_wait").is_none(),
            "daemon died; log:\n{}",
            self.log_text()
        );
    }

    /// `count` simulated clients in `guest` at once (MACs 02:PREFIX:…): every one must get a
    /// lease within 20 s. Their (mac, ip) pairs.
    pub fn lease_all(&self, guest: &Netns, count: u32, prefix: u8) -> Vec<(String, String)> {
        let acks = flood(guest, count, prefix, count, 20);
        assert_eq!(
            acks.len(),
            count as usize,
            "{count} clients should get leases, got {acks:?}; agent log:\n{}",
            self.log_text()
        );
        acks
    }

    /// Wait until `bridge` exists and something listens on these UDP and TCP ports in `ns`
    /// (`ss`, independently of the daemon's own status).
    pub fn wait_listening(&mut self, ns: &Netns, bridge: &str, udp: &[u16], tcp: &[u16]) {
        let listening = |table: &[u8], port: &u16| {
            let suffix = format!(":{port}");
            String::from_utf8_lossy(table)
                .split_whitespace()
                .any(|w| w.ends_with(&suffix))
        };
        let ready = wait_for(READY_SECS, || {
            self.assert_alive();
            let (u, t) = (ns.sh("ss -Hlun").stdout, ns.sh("ss -Hltn").stdout);
            let ok = ns.has_link(bridge)
                && udp.iter().all(|p| listening(&u, p))
                && tcp.iter().all(|p| listening(&t, p));
            ok.then_some(())
        });
        assert!(
            ready.is_some(),
            "not serving after {READY_SECS} s (bridge {bridge}, udp {udp:?}, tcp {tcp:?});\nss -lunt:\n{}\nlog:\n{}",
            String::from_utf8_lossy(&ns.sh("ss -lunt").stdout),
            self.log_text()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `dhcp-flood` client fleet.
pub fn dhcp_flood_bin() -> PathBuf {
    helper_bin("dhcp-flood")
}

/// `dhcp-flood eth0 COUNT PREFIX WINDOW SECONDS` in `ns`; returns the (mac, ip) pairs it got ACKs for.
pub fn flood(ns: &Netns, count: u32, prefix: u8, window: u32, secs: u32) -> Vec<(String, String)> {
    Storm::start(ns, count, prefix, window, secs).finish()
}

/// dhcp-flood in the background: the (mac, ip) of each ACK read the moment it arrives, so a test
/// can stop or kill the server mid-storm and still know every lease that was promised.
pub struct Storm {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Storm {
    pub fn start(ns: &Netns, count: u32, prefix: u8, window: u32, secs: u32) -> Storm {
        let bin = dhcp_flood_bin();
        let mut child = ns
            .cmd(&[
                bin.to_str().expect("utf-8"),
                "eth0",
                &count.to_string(),
                &prefix.to_string(),
                &window.to_string(),
                &secs.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run dhcp-flood");
        let lines = BufReader::new(child.stdout.take().expect("dhcp-flood stdout")).lines();
        Storm { child, lines }
    }

    /// The first `n` ACKs (the rest stay in the pipe); panics with the daemon's log when the
    /// storm ends before `n` clients got one.
    pub fn first(&mut self, n: usize, d: &Daemon) -> Vec<(String, String)> {
        let acked = self.read_up_to(n);
        assert!(
            acked.len() >= n,
            "the storm never reached {n} ACKs ({}); log:\n{}",
            acked.len(),
            d.log_text()
        );
        acked
    }

    /// Whether dhcp-flood is still at work (some of its clients have no answer yet).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Every ACK not read yet, once the storm is over.
    pub fn finish(mut self) -> Vec<(String, String)> {
        let rest = self.read_up_to(usize::MAX);
        let _ = self.child.wait();
        rest
    }

    fn read_up_to(&mut self, n: usize) -> Vec<(String, String)> {
        let mut acked = vec![];
        while acked.len() < n {
            let Some(line) = self.lines.next() else { break };
            acked.extend(parse_acks(&line.expect("dhcp-flood output")));
        }
        acked
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every lease a storm was promised (`acked`, mac → ip) is among `leased` (`Cli::leases`), with
/// the same address: nothing ACKed was lost `across` a stop or crash.
pub fn assert_kept(leased: &[(String, String, String)], acked: &[(String, String)], across: &str) {
    let by_mac: HashMap<&str, &str> = leased
        .iter()
        .map(|(_, m, i)| (m.as_str(), i.as_str()))
        .collect();
    for (mac, ip) in acked {
        assert_eq!(
            by_mac.get(mac.as_str()),
            Some(&ip.as_str()),
            "ACKed lease {mac} {ip} lost {across}"
        );
    }
}

/// The `ACK <mac> <ip>` lines dhcp-flood prints, as (mac, ip).
pub fn parse_acks(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some("ACK")).then(|| {
                (
                    it.next().unwrap_or("").to_string(),
                    it.next().unwrap_or("").to_string(),
                )
            })
        })
        .collect()
}

/// `dhcp-raw eth0 ARGS...` in `guest`: each hex argument one datagram to the DHCP server.
pub fn dhcp_raw(guest: &Netns, args: &[&str]) {
    let bin = helper_bin("dhcp-raw");
    let mut argv = vec![bin.to_str().expect("utf-8"), "eth0"];
    argv.extend_from_slice(args);
    testkit::run_ok(&mut guest.cmd(&argv));
}
