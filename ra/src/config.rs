//! What one bridge advertises, and the RFC's rules for it: the interval bounds and defaults
//! (RFC 4861 §6.2.1), the router lifetime, the M/O flags from the network's DHCPv6, prefix
//! flags (SLAAC only for /64), RDNSS lifetime (RFC 8106 §5.1).

use std::net::Ipv6Addr;
use std::time::Duration;

use hwaddr::Mac;
use ipnet::Ipv6Net;

use crate::wire::{Advertisement, PrefixInfo, Rdnss};

/// AdvValidLifetime default (RFC 4861 §6.2.1): 30 days.
pub const VALID_LIFETIME: u32 = 2_592_000;
/// AdvPreferredLifetime default: 7 days.
pub const PREFERRED_LIFETIME: u32 = 604_800;
/// AdvCurHopLimit: the value hosts should use (the Internet default TTL, as radvd sends).
pub const CUR_HOP_LIMIT: u8 = 64;
/// AdvDefaultLifetime's upper bound.
pub const MAX_ROUTER_LIFETIME: Duration = Duration::from_secs(9000);
/// Bounds of MaxRtrAdvInterval.
pub const MAX_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(4), Duration::from_secs(1800));
/// MinRtrAdvInterval's lower bound.
pub const MIN_INTERVAL_FLOOR: Duration = Duration::from_secs(3);
/// MaxRtrAdvInterval default.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(600);

/// How a network's DHCPv6 runs, which decides the M and O flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dhcp6Mode {
    /// No DHCPv6: addresses by SLAAC, resolvers by RDNSS.
    #[default]
    None,
    /// DHCPv6 answers information requests only (resolvers, domain): O.
    Stateless,
    /// DHCPv6 hands out addresses from a range: M (and O: the same server answers both).
    Stateful,
}

impl Dhcp6Mode {
    /// (managed, other) of the RA header.
    pub fn flags(self) -> (bool, bool) {
        match self {
            Dhcp6Mode::None => (false, false),
            Dhcp6Mode::Stateless => (false, true),
            Dhcp6Mode::Stateful => (true, true),
        }
    }
}

/// MinRtrAdvInterval and MaxRtrAdvInterval, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    pub min: Duration,
    pub max: Duration,
}

/// Why an interval pair is refused, each with the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    #[error("max_interval = {0:?} is outside 4 s to 1800 s (RFC 4861 MaxRtrAdvInterval)")]
    Max(Duration),
    #[error(
        "min_interval = {min:?} must be at least 3 s and at most 0.75 × max_interval ({limit:?})"
    )]
    Min { min: Duration, limit: Duration },
}

impl Intervals {
    /// The pair from what the config gives; either may be left out. MaxRtrAdvInterval defaults
    /// to 600 s; MinRtrAdvInterval to 0.33 × Max when Max ≥ 9 s, else 0.75 × Max (RFC 4861
    /// §6.2.1 and radvd), never below 3 s.
    pub fn new(min: Option<Duration>, max: Option<Duration>) -> Result<Intervals, IntervalError> {
        let max = max.unwrap_or(DEFAULT_MAX_INTERVAL);
        if max < MAX_INTERVAL_RANGE.0 || max > MAX_INTERVAL_RANGE.1 {
            return Err(IntervalError::Max(max));
        }
        let limit = max.mul_f64(0.75);
        let min = match min {
            Some(m) => m,
            None if max >= Duration::from_secs(9) => max.mul_f64(0.33).max(MIN_INTERVAL_FLOOR),
            None => limit.max(MIN_INTERVAL_FLOOR),
        };
        if min < MIN_INTERVAL_FLOOR || min > limit {
            return Err(IntervalError::Min { min, limit });
        }
        Ok(Intervals { min, max })
    }
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            min: DEFAULT_MAX_INTERVAL.mul_f64(0.33),
            max: DEFAULT_MAX_INTERVAL,
        }
    }
}

/// Everything one bridge's advertiser needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaConfig {
    /// The network's name (for logs).
    pub network: String,
    /// The bridge to advertise on.
    pub interface: String,
    /// The bridge's MAC (the source link-layer address option).
    pub mac: Mac,
    /// The bridge's address with the guests' prefix length.
    pub address: Ipv6Net,
    /// Advertise as a default router (nat, routed); false on isolated networks: the prefix is
    /// on-link but nothing routes beyond it (router lifetime 0, libvirt's meaning).
    pub default_router: bool,
    pub dhcp6: Dhcp6Mode,
    /// RDNSS servers (the gateway when the network's DNS server runs); empty: no option.
    pub rdnss: Vec<Ipv6Addr>,
    /// The MTU option, when the network sets one.
    pub mtu: Option<u32>,
    pub intervals: Intervals,
}

impl RaConfig {
    /// AdvDefaultLifetime: 3 × MaxRtrAdvInterval (at most 5400 s, within the RFC's 9000 s), 0
    /// when not a default router.
    pub fn router_lifetime(&self) -> Duration {
        if self.default_router {
            (self.intervals.max * 3).min(MAX_ROUTER_LIFETIME)
        } else {
            Duration::ZERO
        }
    }

    /// The advertisement to send; `farewell` gives router lifetime 0 (RFC 4861 §6.2.5: the
    /// interface stops advertising, hosts drop it as a default router at once).
    pub fn advertisement(&self, farewell: bool) -> Advertisement {
        let (managed, other) = self.dhcp6.flags();
        let lifetime = if farewell {
            Duration::ZERO
        } else {
            self.router_lifetime()
        };
        let prefix = self.address.trunc();
        Advertisement {
            cur_hop_limit: CUR_HOP_LIMIT,
            managed,
            other,
            router_lifetime: u16::try_from(lifetime.as_secs()).unwrap_or(u16::MAX),
            reachable_time: 0,
            retrans_timer: 0,
            source_lladdr: Some(self.mac),
            mtu: self.mtu,
            prefixes: vec![PrefixInfo {
                prefix,
                on_link: true,
                // Stateless address autoconfiguration forms 64-bit interface identifiers.
                autonomous: prefix.prefix_len() == 64,
                valid_lifetime: VALID_LIFETIME,
                preferred_lifetime: PREFERRED_LIFETIME,
            }],
            rdnss: (!self.rdnss.is_empty()).then(|| Rdnss {
                // RFC 8106 §5.1: at least 3 × MaxRtrAdvInterval by default.
                lifetime: u32::try_from((self.intervals.max * 3).as_secs()).unwrap_or(u32::MAX),
                servers: self.rdnss.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    pub(crate) fn config() -> RaConfig {
        RaConfig {
            network: "lab".into(),
            interface: "br-lab".into(),
            mac: Mac([0x52, 0x54, 0, 1, 2, 3]),
            address: "fd00:122::1/64".parse().unwrap(),
            default_router: true,
            dhcp6: Dhcp6Mode::None,
            rdnss: vec![],
            mtu: None,
            intervals: Intervals::default(),
        }
    }

    #[test]
    fn interval_defaults_and_bounds_follow_rfc_4861() {
        assert_eq!(
            Intervals::new(None, None).unwrap(),
            Intervals {
                min: secs(600).mul_f64(0.33),
                max: secs(600)
            }
        );
        assert_eq!(Intervals::default(), Intervals::new(None, None).unwrap());
        // Below 9 s the minimum defaults to 0.75 × max, and never below 3 s.
        assert_eq!(Intervals::new(None, Some(secs(4))).unwrap().min, secs(3));
        assert_eq!(
            Intervals::new(None, Some(secs(8))).unwrap().min,
            Duration::from_millis(6000)
        );
        assert_eq!(
            Intervals::new(None, Some(secs(10))).unwrap().min,
            secs(3).max(secs(10).mul_f64(0.33))
        );
        assert_eq!(
            Intervals::new(Some(secs(3)), Some(secs(4))).unwrap(),
            Intervals {
                min: secs(3),
                max: secs(4)
            }
        );
        assert_eq!(
            Intervals::new(None, Some(secs(3))),
            Err(IntervalError::Max(secs(3)))
        );
        assert_eq!(
            Intervals::new(None, Some(secs(1801))),
            Err(IntervalError::Max(secs(1801)))
        );
        assert!(matches!(
            Intervals::new(Some(secs(2)), Some(secs(100))),
            Err(IntervalError::Min { .. })
        ));
        assert!(matches!(
            Intervals::new(Some(secs(76)), Some(secs(100))),
            Err(IntervalError::Min { .. })
        ));
    }

    #[test]
    fn m_and_o_follow_the_networks_dhcp6() {
        assert_eq!(Dhcp6Mode::None.flags(), (false, false));
        assert_eq!(Dhcp6Mode::Stateless.flags(), (false, true));
        assert_eq!(Dhcp6Mode::Stateful.flags(), (true, true));
        let mut c = config();
        c.dhcp6 = Dhcp6Mode::Stateful;
        let ra = c.advertisement(false);
        assert!(ra.managed && ra.other);
        c.dhcp6 = Dhcp6Mode::Stateless;
        let ra = c.advertisement(false);
        assert!(!ra.managed && ra.other);
    }

    #[test]
    fn a_default_router_lives_three_max_intervals_an_isolated_network_zero_and_a_farewell_zero() {
        let c = config();
        assert_eq!(c.advertisement(false).router_lifetime, 1800);
        assert_eq!(c.advertisement(true).router_lifetime, 0);
        let long = RaConfig {
            intervals: Intervals::new(None, Some(secs(1800))).unwrap(),
            ..config()
        };
        assert_eq!(long.advertisement(false).router_lifetime, 5400);
        let isolated = RaConfig {
            default_router: false,
            ..config()
        };
        let ra = isolated.advertisement(false);
        assert_eq!(ra.router_lifetime, 0);
        assert_eq!(
            ra.prefixes.len(),
            1,
            "the prefix is still advertised on-link"
        );
        assert!(ra.prefixes[0].on_link);
    }

    #[test]
    fn only_a_64_prefix_is_autonomous_and_the_prefix_is_the_network_not_the_gateway() {
        let ra = config().advertisement(false);
        assert_eq!(ra.prefixes[0].prefix, "fd00:122::/64".parse().unwrap());
        assert!(ra.prefixes[0].autonomous);
        for other in ["fd00:122::1/56", "fd00:122::1/80"] {
            let c = RaConfig {
                address: other.parse().unwrap(),
                ..config()
            };
            let ra = c.advertisement(false);
            assert!(!ra.prefixes[0].autonomous, "{other}");
            assert!(ra.prefixes[0].on_link, "{other}");
        }
    }

    #[test]
    fn rdnss_and_mtu_only_when_configured() {
        let ra = config().advertisement(false);
        assert_eq!((ra.rdnss, ra.mtu), (None, None));
        assert_eq!(ra.source_lladdr, Some(Mac([0x52, 0x54, 0, 1, 2, 3])));
        let c = RaConfig {
            rdnss: vec!["fd00:122::1".parse().unwrap()],
            mtu: Some(9000),
            ..config()
        };
        let ra = c.advertisement(false);
        assert_eq!(ra.mtu, Some(9000));
        let r = ra.rdnss.unwrap();
        assert_eq!(r.servers, vec!["fd00:122::1".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(r.lifetime, 1800);
    }
}
