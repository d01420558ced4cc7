//! DNS from the client's side, with programs nobody here wrote: `dig` (Debian's
//! `bind9-dnsutils`) with its answer parsed, the libc resolver through a resolv.conf of the
//! test's choosing (`getent` in a private mount namespace, never the host's /etc), and `dnsmasq`
//! (`dnsmasq-base`) as the upstream resolver, logging every query it gets.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::netns::Netns;
use crate::wait::wait_for;

/// One dig run and what it printed, parsed.
#[derive(Debug)]
pub struct Dig {
    /// `NOERROR`, `NXDOMAIN`, ...; `NO ANSWER` when dig got none.
    pub status: String,
    pub flags: Vec<String>,
    pub answers: Vec<Vec<String>>,
    pub authority: Vec<Vec<String>>,
    pub text: String,
}

impl Dig {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    /// The data column of each answer (`192.168.122.10`, `bastion.default.`).
    pub fn data(&self) -> Vec<String> {
        self.answers.iter().map(|r| r[4..].join(" ")).collect()
    }

    /// The type column of each answer (`A`, `SOA`).
    pub fn types(&self) -> Vec<String> {
        self.answers.iter().map(|r| r[3].clone()).collect()
    }
}

/// `dig +time=2 +tries=1 +nocookie ARGS` in `ns` (None: the test's own namespace, for servers on
/// loopback). `args` carry `@SERVER`, `-p PORT`, `-b SOURCE`, `+tcp`, names and types.
pub fn dig(ns: Option<&Netns>, args: &[&str]) -> Dig {
    let mut argv = vec!["dig", "+time=2", "+tries=1", "+nocookie"];
    argv.extend_from_slice(args);
    let out = command(ns, &argv)
        .output()
        .expect("dig runs (Debian package bind9-dnsutils)");
    parse_dig(&String::from_utf8_lossy(&out.stdout))
}

/// `argv` in `ns`, or in the test's own namespace.
fn command(ns: Option<&Netns>, argv: &[&str]) -> Command {
    match ns {
        Some(ns) => ns.cmd(argv),
        None => {
            let mut c = Command::new(argv[0]);
            c.args(&argv[1..]);
            c
        }
    }
}

pub fn parse_dig(text: &str) -> Dig {
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").to_string())
        .unwrap_or_else(|| "NO ANSWER".into());
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .map(|l| {
            l.split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let section = |title: &str| -> Vec<Vec<String>> {
        let mut lines = text.lines().skip_while(|l| !l.starts_with(title)).skip(1);
        let mut out = Vec::new();
        for l in lines.by_ref() {
            if l.trim().is_empty() {
                break;
            }
            out.push(l.split_whitespace().map(String::from).collect());
        }
        out
    };
    Dig {
        status,
        flags,
        answers: section(";; ANSWER SECTION:"),
        authority: section(";; AUTHORITY SECTION:"),
        text: text.to_string(),
    }
}

/// `getent hosts KEY` (a name or an address) as a guest's libc resolves it: in a private mount
/// namespace of `ns` whose /etc/resolv.conf is `resolv_conf`. The line getent printed
/// (`ADDRESS NAME [ALIASES]`), or None when it does not resolve.
pub fn getent_hosts(ns: &Netns, resolv_conf: &Path, key: &str) -> Option<String> {
    // unshare(1) makes the new mount namespace's mounts private: the bind mount never reaches
    // the host's mount table.
    let script = format!(
        "mount --bind '{}' /etc/resolv.conf && exec getent hosts '{key}'",
        resolv_conf.display()
    );
    let out = ns.run(&["unshare", "--mount", "sh", "-c", &script]);
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !line.is_empty()).then_some(line)
}

/// The `nameserver` addresses of a resolv.conf.
pub fn nameservers(resolv_conf: &Path) -> Vec<String> {
    resolv_lines(resolv_conf, "nameserver ")
}

/// The `search` domains of a resolv.conf.
pub fn search(resolv_conf: &Path) -> Vec<String> {
    resolv_lines(resolv_conf, "search ")
}

fn resolv_lines(path: &Path, key: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(key))
        .flat_map(|s| s.split_whitespace().map(String::from))
        .collect()
}

/// A real dnsmasq as an upstream resolver on `addr`, answering what `extra` says
/// (`--address=/upstream.test/10.9.9.9`, TTL 300) and nothing else (no resolv.conf, no hosts
/// file, no forwarding of its own); every query it gets is logged. Killed on drop.
pub struct Dnsmasq {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Dnsmasq {
    /// In `ns` (None: the test's own namespace, `addr` on loopback); `addr` must already be
    /// there.
    pub fn start(ns: Option<&Netns>, addr: SocketAddr, extra: &[&str]) -> Dnsmasq {
        let dir = tempfile::Builder::new()
            .prefix("testkit-dnsmasq-")
            .tempdir()
            .expect("dnsmasq log dir");
        let log = dir.path().join("dnsmasq.log");
        let mut argv: Vec<String> = [
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--user=root",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--log-queries",
            "--local-ttl=300",
        ]
        .map(String::from)
        .to_vec();
        argv.push(format!("--listen-address={}", addr.ip()));
        argv.push(format!("--port={}", addr.port()));
        argv.push(format!("--log-facility={}", log.display()));
        argv.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let child = command(ns, &argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dnsmasq runs (Debian package dnsmasq-base)");
        let mut d = Dnsmasq {
            child,
            log,
            _dir: dir,
            addr,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let ready = wait_for(10, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("dnsmasq exited with {status}: {err}");
            }
            self.log_text().contains("started, version").then_some(())
        });
        assert!(
            ready.is_some(),
            "dnsmasq did not start: {}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many queries it has logged, of any type and name.
    pub fn queries(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("query["))
            .count()
    }

    /// How many queries for `name` it has logged, of any type (`query[TYPE] name from ...`).
    pub fn queries_for(&self, name: &str) -> usize {
        let needle = format!("] {name} from ");
        self.log_text()
            .lines()
            .filter(|l| l.contains("query[") && l.contains(&needle))
            .count()
    }

    /// How many queries of `qtype` for `name` it has logged (`query[A] name from ...`).
    pub fn queries_of(&self, qtype: &str, name: &str) -> usize {
        let needle = format!("query[{qtype}] {name} from ");
        self.log_text()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on `ip` in the test's own namespace, for a dnsmasq on loopback (UDP and TCP both
/// free).
pub fn free_port(ip: Ipv4Addr) -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind((ip, 0)).expect("bind a UDP port");
        let port = udp.local_addr().expect("local address").port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
}
