//! The DNS tests' kit: a server on a loopback block of its own, real `dig` as the client and a
//! real `dnsmasq` as the upstream. Every test uses its own 127.53.N.0/24 so tests run in
//! parallel without sharing an address: .1 our server, .2 the allowed client, .3 the upstream,
//! .200 a client outside the allowed nets.
#![allow(dead_code)]

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dns::{
    DnsServer, HostRecord, Limits, RecordStore, ServerConfig, Source, Upstreams, ZoneConfig,
};

pub struct Block(pub u8);

impl Block {
    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 53, self.0, host)
    }
    pub fn server(&self) -> Ipv4Addr {
        self.ip(1)
    }
    pub fn client(&self) -> Ipv4Addr {
        self.ip(2)
    }
    pub fn upstream(&self) -> Ipv4Addr {
        self.ip(3)
    }
    pub fn outsider(&self) -> Ipv4Addr {
        self.ip(200)
    }
}

/// The network the records live in (its reverse zone is 122.168.192.in-addr.arpa).
pub const BASTION: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 10);
pub const WEB: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 20);

pub fn config(block: &Block, upstreams: Upstreams, limits: Limits) -> ServerConfig {
    ServerConfig {
        network: "default".into(),
        listen: vec![SocketAddr::new(IpAddr::V4(block.server()), 0)],
        bind_device: None,
        zone: ZoneConfig {
            domain: "default".into(),
            ipv4: "192.168.122.0/24".parse().unwrap(),
            ipv6: Some("fd00:122::/64".parse().unwrap()),
            ttl: 0,
        },
        // The guests' subnet is 192.168.122.0/24; the test clients are on loopback, so the
        // test lists its own block's first 16 addresses (.200 stays outside).
        allowed: vec![format!("127.53.{}.0/28", block.0).parse().unwrap()],
        upstreams,
        limits,
    }
}

/// Limits for tests: no rate limit unless a test sets one, short upstream timeout.
pub fn limits() -> Limits {
    Limits {
        rate: None,
        upstream_timeout: Duration::from_millis(700),
        ..Limits::default()
    }
}

pub async fn start(
    block: &Block,
    upstreams: Upstreams,
    limits: Limits,
) -> (DnsServer, RecordStore) {
    let records = RecordStore::for_domain("default").unwrap();
    records.set_all([
        HostRecord::new("bastion", BASTION.into(), Source::Lease),
        HostRecord::new("web.default", WEB.into(), Source::StaticHost),
        HostRecord::new("web", "fd00:122::20".parse().unwrap(), Source::Config),
    ]);
    let server = DnsServer::start(config(block, upstreams, limits), records.clone())
        .await
        .expect("DNS server starts on loopback");
    (server, records)
}

/// One dig run and what it printed, parsed.
#[derive(Debug)]
pub struct Dig {
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
    pub fn types(&self) -> Vec<String> {
        self.answers.iter().map(|r| r[3].clone()).collect()
    }
}

/// Runs `dig` from `from` against `server` (one try, 2 s), with extra arguments (`+tcp`, names,
/// types). dig runs on a blocking thread so the server keeps its runtime.
pub async fn dig(from: Ipv4Addr, server: SocketAddr, args: &[&str]) -> Dig {
    let mut cmd = Command::new("dig");
    cmd.args(["+time=2", "+tries=1", "+nocookie", "-b"])
        .arg(from.to_string())
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("dig runs (Debian package bind9-dnsutils)");
    parse_dig(&String::from_utf8_lossy(&out.stdout))
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

/// A real dnsmasq as the upstream resolver, logging every query it gets to a file.
pub struct Dnsmasq {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Dnsmasq {
    /// dnsmasq on `addr` answering `upstream.test` (10.9.9.9, TTL 300) and whatever `extra` adds;
    /// no resolv.conf, no hosts file, no forwarding of its own.
    pub fn start(addr: SocketAddr, extra: &[&str]) -> Dnsmasq {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dnsmasq.log");
        let child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--user=root",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--log-queries",
                "--local-ttl=300",
                "--address=/upstream.test/10.9.9.9",
            ])
            .arg(format!("--listen-address={}", addr.ip()))
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--log-facility={}", log.display()))
            .args(extra)
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("dnsmasq exited with {status}: {err}");
            }
            if self.log_text().contains("started, version") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("dnsmasq did not start: {}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many queries for `name` dnsmasq has logged (`query[TYPE] name from ...`).
    pub fn queries_for(&self, name: &str) -> usize {
        let needle = format!("] {name} from ");
        self.log_text()
            .lines()
            .filter(|l| l.contains("query[") && l.contains(&needle))
            .count()
    }

    pub fn queries(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("query["))
            .count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on `ip`, for the upstream dnsmasq (UDP and TCP both free).
pub fn free_port(ip: Ipv4Addr) -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind((ip, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
}
