//! Model → one `dns::ServerConfig` per network whose DNS server runs, with the names the config
//! gives it, and the resolvers DHCP hands out (option 6) that follow from it. Lease names are
//! the daemon's business: they change while it runs.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use dns::{HostRecord, Limits, RateLimit, ServerConfig, Source, Upstreams, ZoneConfig};

use super::super::model::{Model, Network, Upstream};
use super::{host_resolvers, read_clone_reservations};

/// The port every network's DNS server listens on (on the gateway address).
pub const DNS_PORT: u16 = 53;

/// One network's DNS server as the daemon starts it.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsService {
    pub config: ServerConfig,
    /// The names from the config: `[[network.dns.host]]`, named reservations, guests (and clone
    /// reservations, which are guests too).
    pub records: Vec<HostRecord>,
    /// Why the host's resolvers could not be found, when they could not: the server then
    /// answers its own names and SERVFAIL for the rest.
    pub upstream_problem: Option<String>,
}

/// What a network's DHCP hands out as DNS servers, and why: `plan` and `check` explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestResolvers {
    /// `dns = [...]` in `[network.dhcp]` or `[dhcp]`.
    Configured(Vec<Ipv4Addr>),
    /// The network's own DNS server on the gateway.
    Gateway(Ipv4Addr),
    /// `[network.dns] enable = false`: the host's non-loopback IPv4 resolvers (possibly none).
    Host(Vec<Ipv4Addr>),
}

impl GuestResolvers {
    pub fn addrs(&self) -> Vec<Ipv4Addr> {
        match self {
            GuestResolvers::Configured(a) | GuestResolvers::Host(a) => a.clone(),
            GuestResolvers::Gateway(gw) => vec![*gw],
        }
    }
}

impl Model {
    /// Option 6 for a network with DHCP: the configured list, else the gateway when the
    /// network's DNS server runs, else the host's own resolvers from ROOT/etc/resolv.conf
    /// without loopback ones (a stub on 127.0.0.53 is unreachable from guests).
    pub fn guest_resolvers(&self, n: &Network, root: &Path) -> Option<GuestResolvers> {
        let (d, gateway) = (n.dhcp.as_ref()?, n.gateway()?);
        Some(match (&d.dns, &n.dns) {
            (Some(list), _) => GuestResolvers::Configured(list.clone()),
            (None, Some(_)) => GuestResolvers::Gateway(gateway),
            (None, None) => {
                GuestResolvers::Host(host_resolvers(&self.host(root).path("/etc/resolv.conf")))
            }
        })
    }

    /// One DNS server per network whose `[network.dns]` runs, on its gateway, port 53, bound
    /// to its bridge. Upstreams are found now, under `root` (see `dns::Upstreams::discover`).
    pub fn dns_services(&self, root: &Path) -> Vec<DnsService> {
        let clones = read_clone_reservations(root, &self.state_dir);
        self.networks
            .iter()
            .filter_map(|n| {
                let (dns, address) = (n.dns.as_ref()?, n.address?);
                let (upstreams, upstream_problem) = upstreams(root, &dns.upstream);
                // With address6 the server answers on the IPv6 gateway too: that is the address
                // the router advertisements name as RDNSS.
                let address6 = n.ipv6.as_ref().map(|v6| v6.address);
                let listen = std::iter::once(address.addr().into())
                    .chain(address6.map(|a| a.addr().into()))
                    .map(|ip| SocketAddr::new(ip, DNS_PORT))
                    .collect();
                let config = ServerConfig {
                    network: n.name.clone(),
                    listen,
                    bind_device: Some(n.bridge.clone()),
                    zone: ZoneConfig {
                        domain: dns.domain.clone(),
                        ipv4: address.trunc(),
                        ipv6: address6.map(|a| a.trunc()),
                        ttl: 0,
                    },
                    // The zone's own subnet: a query from anywhere else is REFUSED.
                    allowed: Vec::new(),
                    upstreams,
                    follow_resolvers: matches!(dns.upstream, Upstream::HostResolvers)
                        .then(|| root.to_path_buf()),
                    limits: Limits {
                        rate: (dns.rate_limit > 0).then(|| RateLimit {
                            per_second: f64::from(dns.rate_limit),
                            burst: dns.rate_limit.saturating_mul(2),
                            ..RateLimit::default()
                        }),
                        ..Limits::default()
                    },
                };
                Some(DnsService {
                    config,
                    records: self.config_records(n, &clones),
                    upstream_problem,
                })
            })
            .collect()
    }

    /// The names a network's config gives: extra records, named reservations, guests.
    fn config_records(&self, n: &Network, clones: &[super::ExtraReservation]) -> Vec<HostRecord> {
        let mut out: Vec<HostRecord> = n
            .dns
            .iter()
            .flat_map(|d| &d.hosts)
            .map(|h| HostRecord::new(h.name.clone(), h.ip, Source::Config))
            .collect();
        let configured = n.dhcp.as_ref().map_or(&[][..], |d| &d.hosts[..]);
        for h in self.reservations(n, clones) {
            let Some(name) = h.name else { continue };
            // `reservations` lists the config's hosts, then guests and clones.
            let source = if configured.iter().any(|c| c.mac == h.mac) {
                Source::StaticHost
            } else {
                Source::Guest
            };
            out.push(HostRecord::new(name, h.ip.into(), source));
        }
        out
    }
}

fn upstreams(root: &Path, upstream: &Upstream) -> (Upstreams, Option<String>) {
    match upstream {
        Upstream::LocalOnly => (Upstreams::local_only(), None),
        Upstream::Forwarders(list) => (Upstreams::explicit(list.iter().copied()), None),
        Upstream::HostResolvers => match Upstreams::discover(root, &[]) {
            Ok(u) => (u, None),
            Err(e) => (Upstreams::none(), Some(e.to_string())),
        },
    }
}

/// What to say about where a network's DNS server forwards, for `plan` and `check`.
pub fn describe_upstreams(u: &Upstreams) -> String {
    let list = || {
        u.servers()
            .iter()
            .map(|s| {
                if s.port() == DNS_PORT {
                    s.ip().to_string()
                } else {
                    s.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match u.source() {
        dns::UpstreamSource::Forwarders => format!("forwards to {} (forwarders)", list()),
        dns::UpstreamSource::ResolvConf(p) => {
            format!("forwards to {} (from {})", list(), p.display())
        }
        dns::UpstreamSource::SystemdResolved(p) => format!(
            "forwards to {} (from {}, since resolv.conf names only loopback stubs)",
            list(),
            p.display()
        ),
        dns::UpstreamSource::Nothing => "forwards nowhere: no upstream resolver found".into(),
        dns::UpstreamSource::LocalOnly => "answers only its own names".into(),
    }
}
