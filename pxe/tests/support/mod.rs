//! The DHCP server fixture pxe's DHCP tests share (`mod support;` in each): one lab network's
//! config over pxe's own types and a socket-free handler on a real pool and journal. What is not
//! pxe's (namespaces, packets, waiting) comes from the `testkit` crate.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pxe::config::{BootConfig, DhcpConfig, StaticHost};
use pxe::dhcp::pool::Pool;
use pxe::dhcp::server::handler::{Handler, Outgoing};
use pxe::dhcp::server::{answer_batch, pool_config, DhcpHandle, DhcpServer, DhcpStats};
use pxe::dhcp::wire;
use testkit::dhcp::Reply;
use testkit::Netns;

pub(crate) const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The one static host: its MAC always gets [`BASTION_IP`] and the name `bastion`.
pub(crate) const BASTION_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x10];
pub(crate) const BASTION_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
/// The handler's clock (Unix seconds) in tests that do not run a real server.
pub(crate) const NOW: u64 = 1_800_000_000;

/// Network `lab` on br0: 10.77.0.0/24, server and router .1, dynamic .`range.0`–.`range.1`,
/// DNS, domain, MTU, the bastion reservation, PXE (BIOS, UEFI, iPXE script, HTTP on 8069); the
/// journal under `dir`.
pub(crate) fn config(dir: &Path, range: (u8, u8), lease_secs: u64) -> DhcpConfig {
    DhcpConfig {
        network: "lab".into(),
        interface: "br0".into(),
        server_ip: SERVER,
        subnet: "10.77.0.0/24".parse().expect("subnet"),
        range_start: Ipv4Addr::new(10, 77, 0, range.0),
        range_end: Ipv4Addr::new(10, 77, 0, range.1),
        lease_time: Duration::from_secs(lease_secs),
        router: Some(SERVER),
        dns: vec![SERVER, Ipv4Addr::new(9, 9, 9, 9)],
        domain: Some("lab.test".into()),
        mtu: Some(1400),
        ntp: Vec::new(),
        routes: Vec::new(),
        hosts: vec![StaticHost {
            mac: BASTION_MAC.into(),
            ip: BASTION_IP,
            name: Some("bastion".into()),
            boot: None,
            script: None,
        }],
        boot: Some(BootConfig {
            root: dir.join("boot"),
            bios: Some("undionly.kpxe".into()),
            uefi: Some("ipxe.efi".into()),
            arm64: None,
            script: Some("boot.ipxe".into()),
            http_port: Some(8069),
            pxelinux: Default::default(),
        }),
        lease_file: dir.join("lab.leases"),
    }
}

/// The server's packet handler over a pool opened on `cfg`'s journal.
pub(crate) fn handler(cfg: &DhcpConfig) -> Handler {
    let pool = Pool::open(pool_config(cfg)).expect("open pool");
    Handler::new(cfg.clone(), pool, Arc::new(DhcpStats::default()))
}

/// One packet through the handler as its own batch (flushed): at most one reply.
#[allow(dead_code)]
pub(crate) fn one(h: &mut Handler, p: &[u8]) -> Option<Outgoing> {
    let mut out = answer_batch(h, &[p], NOW);
    assert!(out.len() <= 1);
    out.pop()
}

/// Our reply as it goes on the wire, and as an independent parser reads it back.
#[allow(dead_code)]
pub(crate) fn raw(o: &Outgoing) -> (Vec<u8>, Reply) {
    let bytes = wire::encode(&o.reply, o.max_message_size);
    let reply = Reply::parse(&bytes).expect("our reply parses");
    (bytes, reply)
}

/// Server namespace with bridge br0 (10.77.0.1/24) running the DHCP server, and a client
/// namespace whose `eth0` is a port of that bridge.
#[allow(dead_code)]
pub(crate) struct Lab {
    // Field order: the server stops before its namespaces go.
    server: Option<DhcpHandle>,
    pub cli: Netns,
    pub srv: Netns,
    _dir: tempfile::TempDir,
}

#[allow(dead_code)]
impl Lab {
    pub(crate) fn new(tag: &str) -> Lab {
        let srv = Netns::new(&format!("{tag}s"));
        srv.ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        srv.ok(&["ip", "addr", "add", "10.77.0.1/24", "dev", "br0"]);
        srv.ok(&["ip", "link", "set", "br0", "up"]);
        let cli = srv.plug("br0", "v0");
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), (100, 200), 3600);
        let server = srv
            .enter(move || DhcpServer::start(cfg))
            .expect("start DHCP server");
        Lab {
            server: Some(server),
            cli,
            srv,
            _dir: dir,
        }
    }

    pub(crate) fn server(&self) -> &DhcpHandle {
        self.server.as_ref().expect("running")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}
