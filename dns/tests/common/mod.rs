//! The DNS tests' kit: a server on a loopback block of its own, real `dig` as the client and a
//! real `dnsmasq` as the upstream (both from the shared `testkit::dns`). Every test uses its own
//! 127.53.N.0/24 so tests run in parallel without sharing an address: .1 our server, .2 the allowed client, .3 the upstream,
//! .200 a client outside the allowed nets.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use dns::{
    DnsServer, HostRecord, Limits, RecordStore, ServerConfig, Source, Upstreams, ZoneConfig,
};
pub(crate) use testkit::dns::{free_port, Dig, Dnsmasq};

pub(crate) struct Block(pub u8);

impl Block {
    pub(crate) fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 53, self.0, host)
    }
    pub(crate) fn server(&self) -> Ipv4Addr {
        self.ip(1)
    }
    pub(crate) fn client(&self) -> Ipv4Addr {
        self.ip(2)
    }
    pub(crate) fn upstream(&self) -> Ipv4Addr {
        self.ip(3)
    }
    pub(crate) fn outsider(&self) -> Ipv4Addr {
        self.ip(200)
    }
}

/// The network the records live in (its reverse zone is 122.168.192.in-addr.arpa).
pub(crate) const BASTION: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 10);
pub(crate) const WEB: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 20);

pub(crate) fn config(block: &Block, upstreams: Upstreams, limits: Limits) -> ServerConfig {
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
        follow_resolvers: None,
        limits,
    }
}

/// Limits for tests: no rate limit unless a test sets one, short upstream timeout.
pub(crate) fn limits() -> Limits {
    Limits {
        rate: None,
        upstream_timeout: Duration::from_millis(700),
        ..Limits::default()
    }
}

pub(crate) async fn start(
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

/// Runs `dig` from `from` against `server` (one try, 2 s), with extra arguments (`+tcp`, names,
/// types). dig runs on a blocking thread so the server keeps its runtime.
pub(crate) async fn dig(from: Ipv4Addr, server: SocketAddr, args: &[&str]) -> Dig {
    let mut argv = vec![
        "-b".to_string(),
        from.to_string(),
        format!("@{}", server.ip()),
        "-p".to_string(),
        server.port().to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        testkit::dns::dig(None, &argv)
    })
    .await
    .unwrap()
}

/// A real dnsmasq on loopback as the upstream (`testkit::dns::Dnsmasq`), answering
/// `upstream.test` (10.9.9.9, TTL 300) and whatever `extra` adds.
pub(crate) fn upstream(addr: SocketAddr, extra: &[&str]) -> Dnsmasq {
    let mut args = vec!["--address=/upstream.test/10.9.9.9"];
    args.extend_from_slice(extra);
    Dnsmasq::start(None, addr, &args)
}
