//! What a server is started with. Plain data: the agent fills it from its validated config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::ratelimit::RateLimit;
use crate::upstreams::Upstreams;
use crate::zone::ZoneConfig;

/// One network's DNS server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// The network's name, for logs.
    pub network: String,
    /// Where to listen, UDP and TCP each (the gateway address, port 53).
    pub listen: Vec<SocketAddr>,
    /// Bind the sockets to this device (the network's bridge), as the DHCP server does.
    pub bind_device: Option<String>,
    pub zone: ZoneConfig,
    /// Sources that are answered; everyone else gets REFUSED. Empty: the zone's own subnets.
    /// Loopback is allowed only when listed (tests do).
    pub allowed: Vec<IpNet>,
    pub upstreams: Upstreams,
    /// The host's resolvers are followed: the resolv.conf files under this root (`/` on a real
    /// host) are looked at every [`RESOLVER_POLL`] and, when one changed, `upstreams` is
    /// discovered again (a laptop joining another network, systemd-resolved learning new
    /// servers). `None`: `upstreams` is fixed (configured forwarders, local-only).
    pub follow_resolvers: Option<PathBuf>,
    pub limits: Limits,
}

/// How often followed resolver files are looked at: two `stat`s, so cheap; dnsmasq looks at
/// its resolv.conf at most once a second, when queries come.
pub(crate) const RESOLVER_POLL: Duration = Duration::from_secs(2);

/// Bounds on what one server holds and does.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Per-client token bucket; `None` turns it off.
    pub rate: Option<RateLimit>,
    /// Most answers in the forwarding cache (0: no cache).
    pub cache_entries: usize,
    /// Longest a forwarded answer is kept, whatever its TTL says.
    pub max_cache_ttl: u32,
    /// How long one upstream gets to answer before the next is tried.
    pub upstream_timeout: Duration,
    /// Forwarded queries waiting for upstreams at once; beyond, SERVFAIL at once.
    pub max_forwards_in_flight: usize,
    /// TCP clients served at once; beyond, new connections are closed.
    pub max_tcp_connections: usize,
    /// A TCP connection that sends nothing for this long is closed.
    pub tcp_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate: Some(RateLimit::default()),
            cache_entries: 10_000,
            max_cache_ttl: 86_400,
            upstream_timeout: Duration::from_millis(1500),
            max_forwards_in_flight: 1024,
            max_tcp_connections: 64,
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}
