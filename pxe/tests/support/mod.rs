//! The DHCP server fixture pxe's DHCP tests share (`mod support;` in each): one lab network's
//! config over pxe's own types and a socket-free handler on a real pool and journal. What is not
//! pxe's (namespaces, packets, waiting) comes from the `testkit` crate.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pxe::config::{BootConfig, DhcpConfig, StaticHost};
use pxe::dhcp::pool::Pool;
use pxe::dhcp::server::handler::Handler;
use pxe::dhcp::server::{pool_config, DhcpStats};

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
        }),
        lease_file: dir.join("lab.leases"),
    }
}

/// The server's packet handler over a pool opened on `cfg`'s journal.
pub(crate) fn handler(cfg: &DhcpConfig) -> Handler {
    let pool = Pool::open(pool_config(cfg)).expect("open pool");
    Handler::new(cfg.clone(), pool, Arc::new(DhcpStats::default()))
}
