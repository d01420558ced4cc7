//! Router advertisements for hostagent's IPv6 networks (RFC 4861 §6.2, RDNSS by RFC 8106).
//!
//! Layers, each testable on its own:
//! - [`wire`]: the messages as bytes: encode a Router Advertisement, decode a Router
//!   Solicitation (and an advertisement, for tests and the fuzz target), with every length
//!   checked;
//! - [`config`]: what one bridge advertises, the RFC's interval rules and defaults, and the M/O
//!   flag rule (which depends on whether DHCPv6 is configured);
//! - [`schedule`]: when to send, as a state machine over an injected clock: unsolicited
//!   advertisements between MinRtrAdvInterval and MaxRtrAdvInterval (the first few faster),
//!   answers to solicitations with the random delay and MIN_DELAY_BETWEEN_RAS;
//! - [`server`]: the raw ICMPv6 socket on the bridge and the task that runs the schedule, with
//!   a final advertisement (router lifetime 0) on a clean stop.
//!
//! Knows nothing of TOML, DHCP or netcfg: the agent hands it a [`RaConfig`].

pub mod config;
pub mod schedule;
pub mod server;
pub mod wire;

pub use config::{Dhcp6Mode, IntervalError, Intervals, RaConfig};
pub use server::{RaHandle, RaServer, RaStats, RaStatsSnapshot, Received};
