//! Model → the types netcfg, pxe and dns take. All paths the agent touches get the --root prefix
//! here.

mod dns_server;

pub use dns_server::{describe_upstreams, DnsService, GuestResolvers, DNS_PORT};

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use hwaddr::Mac;
use netcfg::{Desired, Host, Ipv6Spec, Mode, NetworkSpec, PortForward, PortLimit, Services};
use pxe::config::{
    BootConfig, Dhcp6Config, DhcpConfig, FileServiceConfig, ProxyConfig, PxelinuxOptions,
    StaticHost, StaticHost6, StaticRoute,
};

use super::model::{Forward, Guest, Model, Network, Pxe};

/// Where a guest's rendered boot script goes, relative to its network's pxe root.
pub fn guest_script_path(guest: &str) -> String {
    format!("hostagent-guests/{guest}.ipxe")
}

/// A reservation made by `hostagent guest clone` for a guest that is not in the config; kept in
/// [`clone_reservations_file`] and served like a config reservation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExtraReservation {
    pub network: String,
    pub name: String,
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

/// ROOT/state_dir/guests/reservations.json
pub fn clone_reservations_file(root: &Path, state_dir: &Path) -> PathBuf {
    Host::new(root, state_dir)
        .state_path()
        .join("guests/reservations.json")
}

/// The clone reservations on record; a missing or unreadable file is an empty list (a bad file is
/// logged, never fatal: the config's own reservations must keep working).
pub fn read_clone_reservations(root: &Path, state_dir: &Path) -> Vec<ExtraReservation> {
    let path = clone_reservations_file(root, state_dir);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::warn!(file = %path.display(), "ignoring clone reservations: {e}");
        Vec::new()
    })
}

fn boot_config(host: &Host, p: &Pxe) -> BootConfig {
    BootConfig {
        root: host.path(&p.root),
        bios: p.bios.clone(),
        uefi: p.uefi.clone(),
        arm64: p.arm64.clone(),
        script: p.script.clone(),
        http_port: p.http_port,
        pxelinux: PxelinuxOptions {
            config_file: p.pxelinux_config.clone(),
            path_prefix: p.pxelinux_path_prefix.clone(),
            reboot_time: p
                .pxelinux_reboot
                .map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32),
        },
    }
}

fn guest_host(g: &Guest, has_pxe: bool) -> StaticHost {
    StaticHost {
        mac: g.mac,
        ip: g.ip,
        name: Some(g.name.clone()),
        boot: None,
        script: g
            .script
            .as_ref()
            .filter(|_| has_pxe)
            .map(|_| guest_script_path(&g.name)),
    }
}

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
            dhcp_port_limit: (self.dhcp_port_rate_limit > 0)
                .then(|| PortLimit::per_second(self.dhcp_port_rate_limit)),
            forwards: self
                .networks
                .iter()
                .flat_map(|n| n.forwards.iter().map(|f| port_forward(n, f)))
                .collect(),
            coexist: self.coexist,
        }
    }

    /// One DHCP service per network with `[network.dhcp]`.
    ///
    /// DNS servers (option 6): see [`Model::guest_resolvers`]. Domain (option 15): the
    /// network's or `[dhcp]`'s, else the DNS server's domain when it runs.
    pub fn dhcp_configs(&self, root: &Path) -> Vec<DhcpConfig> {
        let host = self.host(root);
        let clones = read_clone_reservations(root, &self.state_dir);
        let mut out = Vec::new();
        for n in &self.networks {
            let (Some(d), Some(address)) = (&n.dhcp, n.address) else {
                continue;
            };
            let dns = self
                .guest_resolvers(n, root)
                .map(|r| r.addrs())
                .unwrap_or_default();
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
                domain: d
                    .domain
                    .clone()
                    .or_else(|| n.dns.as_ref().map(|dns| dns.domain.clone())),
                mtu: n.mtu,
                ntp: d.ntp.clone(),
                routes: d
                    .routes
                    .iter()
                    .map(|r| StaticRoute {
                        destination: r.to,
                        router: r.via,
                    })
                    .collect(),
                hosts: self.reservations(n, &clones),
                boot: n.pxe.as_ref().map(|p| boot_config(&host, p)),
                lease_file: self.lease_file(root, &n.name),
            });
        }
        out
    }

    /// One proxyDHCP service per network with `[network.pxe] proxy = true` (validation keeps
    /// `[network.dhcp]` off those networks), on the network's bridge and address.
    pub fn proxy_configs(&self, root: &Path) -> Vec<ProxyConfig> {
        let host = self.host(root);
        self.networks
            .iter()
            .filter_map(|n| {
                let (p, gw) = (n.pxe.as_ref().filter(|p| p.proxy)?, n.gateway()?);
                Some(ProxyConfig {
                    network: n.name.clone(),
                    interface: n.bridge.clone(),
                    server_ip: gw,
                    boot: boot_config(&host, p),
                    hosts: Vec::new(),
                })
            })
            .collect()
    }

    /// A network's reservations: `[[network.dhcp.host]]`, then every guest on it, then clone
    /// reservations that clash with neither (validation already keeps the first two apart).
    fn reservations(&self, n: &Network, clones: &[ExtraReservation]) -> Vec<StaticHost> {
        let Some(d) = &n.dhcp else { return Vec::new() };
        let mut hosts: Vec<StaticHost> = d
            .hosts
            .iter()
            .map(|h| StaticHost {
                mac: h.mac,
                ip: h.ip,
                name: h.name.clone(),
                boot: h.boot.clone(),
                script: h.script.clone(),
            })
            .collect();
        hosts.extend(
            self.guests
                .iter()
                .filter(|g| g.network == n.name)
                .map(|g| guest_host(g, n.pxe.is_some())),
        );
        for r in clones.iter().filter(|r| r.network == n.name) {
            let in_subnet =
                n.subnet().is_some_and(|s| s.contains(&r.ip)) && Some(r.ip) != n.gateway();
            if !in_subnet {
                continue;
            }
            match hosts.iter().find(|h| h.mac == r.mac || h.ip == r.ip) {
                None => hosts.push(StaticHost {
                    mac: r.mac,
                    ip: r.ip,
                    name: Some(r.name.clone()),
                    boot: None,
                    script: None,
                }),
                // A guest or host added to the config after the clone was made: the config wins.
                Some(h) => tracing::warn!(
                    network = %n.name,
                    clone = %r.name,
                    "clone reservation ({}, {}) not served: {} in the config has {} too; give that entry another mac or ip, or undefine the clone",
                    r.mac,
                    r.ip,
                    h.name.as_deref().unwrap_or("a [[network.dhcp.host]]"),
                    if h.mac == r.mac { format!("MAC {}", r.mac) } else { format!("address {}", r.ip) },
                ),
            }
        }
        hosts
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
                        listen6: n.ipv6.as_ref().map(|v6| v6.address.addr()),
                        root: host.path(&p.root),
                    },
                    p.http_port,
                ))
            })
            .collect()
    }

    /// One router advertiser per network with `address6` and `[network.ra]` on.
    pub fn ra_configs(&self) -> Vec<ra::RaConfig> {
        self.networks.iter().filter_map(ra_config).collect()
    }

    /// ROOT/state_dir/leases/<network>.journal
    pub fn lease_file(&self, root: &Path, network: &str) -> PathBuf {
        self.host(root)
            .state_path()
            .join("leases")
            .join(format!("{network}.journal"))
    }

    /// ROOT/state_dir/leases/<network>.v6.journal
    pub fn lease6_file(&self, root: &Path, network: &str) -> PathBuf {
        self.host(root)
            .state_path()
            .join("leases")
            .join(format!("{network}.v6.journal"))
    }

    /// One DHCPv6 service per network with `[network.dhcp6]`: DNS servers (option 23) the
    /// gateway's IPv6 address while the network's DNS server runs there, the domain search
    /// list (24) the DNS domain (else `[network.dhcp] domain`), PXE over IPv6 from
    /// `[network.pxe]` (not a proxyDHCP one: that network's addresses are another server's).
    pub fn dhcp6_configs(&self, root: &Path) -> Vec<Dhcp6Config> {
        let host = self.host(root);
        let duid_file = host.state_path().join("dhcp6").join("server-duid");
        self.networks
            .iter()
            .filter_map(|n| {
                let v6 = n.ipv6.as_ref()?;
                let d = v6.dhcp6.as_ref()?;
                let domain = n
                    .dns
                    .as_ref()
                    .map(|dns| dns.domain.clone())
                    .or_else(|| n.dhcp.as_ref().and_then(|d| d.domain.clone()));
                Some(Dhcp6Config {
                    network: n.name.clone(),
                    interface: n.bridge.clone(),
                    server: v6.address,
                    range: d.range,
                    lease_time: d.lease_time,
                    rapid_commit: d.rapid_commit,
                    dns: if dns_server_runs(n) {
                        vec![v6.address.addr()]
                    } else {
                        Vec::new()
                    },
                    domain_search: domain.into_iter().collect(),
                    hosts: d
                        .hosts
                        .iter()
                        .map(|h| StaticHost6 {
                            id: h.id.clone(),
                            ip: h.ip,
                            name: h.name.clone(),
                        })
                        .collect(),
                    boot: n
                        .pxe
                        .as_ref()
                        .filter(|p| !p.proxy)
                        .map(|p| boot_config(&host, p)),
                    lease_file: self.lease6_file(root, &n.name),
                    duid_file: duid_file.clone(),
                })
            })
            .collect()
    }
}

fn port_forward(n: &Network, f: &Forward) -> PortForward {
    PortForward {
        network: n.name.clone(),
        proto: f.proto,
        host_address: f.host_address,
        host_port: f.host_port,
        to: f.to,
        to_port: f.to_port,
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
            // A proxyDHCP network answers on 67 too (and on 4011, which the accept-only input
            // chain leaves open).
            dhcp: n.dhcp.is_some() || n.pxe.as_ref().is_some_and(|p| p.proxy),
            tftp: n.pxe.is_some(),
            http_port: n.pxe.as_ref().and_then(|p| p.http_port),
            // Open even without our server (as before it existed), so a resolver of the
            // admin's own on the bridge keeps working when `[network.dns] enable = false`.
            dns: n.dns.is_some() || (n.mode != Mode::Bridge && n.address.is_some()),
        },
        ipv6: n.ipv6.as_ref().map(|v| Ipv6Spec {
            address: v.address,
            nat6: v.nat6,
            dhcp6: v.dhcp6.is_some(),
        }),
    }
}

/// Whether the network's own DNS server runs (then it listens on the IPv6 gateway too, and the
/// router advertisements name that address as RDNSS).
fn dns_server_runs(n: &Network) -> bool {
    n.dns.is_some()
}

/// What the router advertisement on a network's bridge says (a network with `address6` whose
/// `[network.ra]` is not turned off).
fn ra_config(n: &Network) -> Option<ra::RaConfig> {
    let v6 = n.ipv6.as_ref()?;
    let intervals = v6.ra?;
    Some(ra::RaConfig {
        network: n.name.clone(),
        interface: n.bridge.clone(),
        mac: n.mac,
        address: v6.address,
        // libvirt's meaning: an isolated network's prefix is on-link, nothing routes beyond it.
        default_router: n.mode.forwards(),
        dhcp6: v6.dhcp6.as_ref().map(|d| d.mode()).unwrap_or_default(),
        rdnss: if dns_server_runs(n) {
            vec![v6.address.addr()]
        } else {
            Vec::new()
        },
        mtu: n.mtu.map(u32::from),
        intervals,
    })
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
