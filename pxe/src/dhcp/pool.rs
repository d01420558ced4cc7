//! Address allocation for one network over the durable lease store.
//!
//! API CONTRACT (being implemented; the DHCP server is written against exactly this):
//! - `Pool::open(PoolConfig) -> Result<Pool, LeaseError>`: replays the journal.
//! - `offer(mac, requested, now) -> Option<Ipv4Addr>`: address to offer (static reservation first,
//!   then the client's current/previous lease, then the requested address if free, then the lowest
//!   free address). Held in memory for a short time so two DISCOVERs never get the same offer.
//!   None = pool exhausted.
//! - `request(mac, ip, hostname, now) -> Result<Lease, Nak>`: staged lease (index updated at once,
//!   record appended to the pending batch; durable only after `flush`).
//! - `release(mac, ip)`, `decline(mac, ip, now)` (quarantined), `renew` is `request`.
//! - `flush() -> Result<(), LeaseError>`: write pending records + fdatasync (one per batch).
//! - `leases() -> Vec<Lease>`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::config::Mac;

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub network: String,
    pub server_ip: Ipv4Addr,
    pub subnet: ipnet::Ipv4Net,
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    pub lease_time: Duration,
    /// (mac, ip) static reservations; these addresses are never given to anyone else.
    pub reservations: Vec<(Mac, Ipv4Addr)>,
    pub journal: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// Unix seconds.
    pub expires: u64,
    pub hostname: Option<String>,
}

/// Why a REQUEST is refused (answered with DHCPNAK).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Nak {
    #[error("{0} is not in this network")]
    WrongNetwork(Ipv4Addr),
    #[error("{0} is leased to another client")]
    Taken(Ipv4Addr),
    #[error("{0} is reserved for another client")]
    Reserved(Ipv4Addr),
    #[error("{0} is outside the dynamic range")]
    OutOfRange(Ipv4Addr),
}

pub use crate::leases::LeaseError;
