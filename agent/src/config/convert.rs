//! Model → the types netcfg and pxe take. All paths the agent touches get the --root prefix here.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use netcfg::{Desired, Host, Mode, NetworkSpec, Services};
use pxe::config::{BootConfig, DhcpConfig, FileServiceConfig, StaticHost};

use super::model::{Model, Network};

impl Model {
    fn host(&self, root: &Path) -> Host {
        Host::new(root, &self.state_dir)
    }

    /// What the host should look like, for netcfg.
    pub fn desired(&self) -> Desired {
        Desired {
            networks: self.networks.iter().map(network_spec).collect(),
            sysctls: self.sysctl.clone(),
            vhost_zcopytx: self.vhost_zcopytx,
        }
    }

    /// One DHCP service per network with `[network.dhcp]`.
    ///
    /// DNS servers: the network's, else `[dhcp] dns`, else the non-loopback IPv4 resolvers in
    /// ROOT/etc/resolv.conf (read now; none found gives an empty list).
    pub fn dhcp_configs(&self, root: &Path) -> Vec<DhcpConfig> {
        let host = self.host(root);
        let mut resolvers: Option<Vec<Ipv4Addr>> = None;
        let mut out = Vec::new();
        for n in &self.networks {
            let (Some(d), Some(address)) = (&n.dhcp, n.address) else {
                continue;
            };
            let dns = match &d.dns {
                Some(dns) => dns.clone(),
                None => resolvers
                    .get_or_insert_with(|| host_resolvers(&host.path("/etc/resolv.conf")))
                    .clone(),
            };
            out.push(DhcpConfig {
                network: n.name.clone(),
                interface: n.bridge.clone(),
                server_ip: address.addr(),
                subnet: address.trunc(),
                range_start: d.range_start,
                range_end: d.range_end,
                lease_time: d.lease_time,
                router: n.mode.forwards().then(|| address.addr()),
                dns,
                domain: d.domain.clone(),
                mtu: n.mtu,
                hosts: d
                    .hosts
                    .iter()
                    .map(|h| StaticHost {
                        mac: h.mac,
                        ip: h.ip,
                        name: h.name.clone(),
                        boot: h.boot.clone(),
                        script: h.script.clone(),
                    })
                    .collect(),
                boot: n.pxe.as_ref().map(|p| BootConfig {
                    root: host.path(&p.root),
                    bios: p.bios.clone(),
                    uefi: p.uefi.clone(),
                    arm64: p.arm64.clone(),
                    script: p.script.clone(),
                    http_port: p.http_port,
                }),
                lease_file: self.lease_file(root, &n.name),
            });
        }
        out
    }

    /// TFTP (and, with a port, HTTP) service per network with `[network.pxe]`, listening on the
    /// network's gateway address.
    pub fn file_services(&self, root: &Path) -> Vec<(FileServiceConfig, Option<u16>)> {
        let host = self.host(root);
        self.networks
            .iter()
            .filter_map(|n| {
                let (p, gw) = (n.pxe.as_ref()?, n.gateway()?);
                Some((
                    FileServiceConfig {
                        network: n.name.clone(),
                        listen: gw,
                        root: host.path(&p.root),
                    },
                    p.http_port,
                ))
            })
            .collect()
    }

    /// ROOT/state_dir/leases/<network>.journal
    pub fn lease_file(&self, root: &Path, network: &str) -> PathBuf {
        self.host(root)
            .state_path()
            .join("leases")
            .join(format!("{network}.journal"))
    }
}

fn network_spec(n: &Network) -> NetworkSpec {
    NetworkSpec {
        name: n.name.clone(),
        mode: n.mode,
        bridge: n.bridge.clone(),
        address: n.address,
        stp: n.stp,
        forward_delay: n.forward_delay,
        mac: n.mac,
        mtu: n.mtu.map(u32::from),
        interfaces: n.interfaces.clone(),
        services: Services {
            dhcp: n.dhcp.is_some(),
            tftp: n.pxe.is_some(),
            http_port: n.pxe.as_ref().and_then(|p| p.http_port),
            dns: n.mode != Mode::Bridge && n.address.is_some(),
        },
    }
}

/// IPv4 `nameserver` lines of a resolv.conf, without loopback (a local stub resolver such as
/// systemd-resolved's 127.0.0.53 is unreachable from guests) or unspecified addresses.
pub fn host_resolvers(resolv_conf: &Path) -> Vec<Ipv4Addr> {
    let Ok(text) = std::fs::read_to_string(resolv_conf) else {
        return Vec::new();
    };
    parse_resolvers(&text)
}

pub(crate) fn parse_resolvers(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        if let Some(ip) = words.next().and_then(|w| w.parse::<Ipv4Addr>().ok()) {
            if !ip.is_loopback() && !ip.is_unspecified() && !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}
