//! The control socket's wire protocol, and the only place that defines it: the daemon's server
//! and the CLI's client both speak these types.
//!
//! One request line in (`{"cmd":"status"}`, `{"cmd":"leases"}` or `{"cmd":"guests"}`), one
//! reply line out: the command's reply object, or `{"error":"..."}`. Every MAC in a reply is
//! written as text (`52:54:00:12:34:56`), as `hwaddr::Mac` serializes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dns::CountersSnapshot;
use ipnet::{Ipv4Net, Ipv6Net};
use pxe::dhcp::server::DhcpStatsSnapshot;
use pxe::dhcp::store::StoreStatus;
use pxe::http::HttpStatsSnapshot;
use pxe::leases::Lease;
use pxe::tftp::TftpStatsSnapshot;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::guests::GuestRow;

/// ROOT/run/hostagent/control.sock
pub fn socket_path(root: &Path) -> PathBuf {
    root.join("run/hostagent/control.sock")
}

/// One request line. Unknown fields are refused, so a typo is an error, not a silent default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub cmd: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    Status,
    Leases,
    Guests,
}

/// What the daemon writes back: the reply to the request's command, or an error. On the wire it
/// is the inner object alone (untagged): the client knows which reply it asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Response {
    Status(StatusReply),
    Leases(LeasesReply),
    Guests(GuestsReply),
    Error(ErrorReply),
}

impl Response {
    pub fn error(message: impl Into<String>) -> Response {
        Response::Error(ErrorReply {
            error: message.into(),
        })
    }
}

/// A reply type and the command that asks for it, so a client cannot pair them wrongly.
pub trait Reply: DeserializeOwned {
    const COMMAND: Command;
}

/// `{"error":"..."}`: the request was refused or could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    pub error: String,
}

/// `status`: the running config's networks and every boot server's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The config file the daemon runs.
    pub config: String,
    pub uptime_seconds: u64,
    /// `[leases] agent`: the name on every lease this agent grants.
    #[serde(default)]
    pub agent: String,
    /// `[leases] backend`: `journal` or `postgres`.
    #[serde(default)]
    pub lease_backend: String,
    pub networks: Vec<NetworkInfo>,
    pub servers: Vec<ServerStatus>,
}

impl Reply for StatusReply {
    const COMMAND: Command = Command::Status;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub name: String,
    /// `nat`, `routed`, `isolated` or `bridge`, as in the config.
    pub mode: String,
    pub bridge: String,
    /// The host's address with prefix, e.g. `10.0.0.1/24`.
    pub address: Option<Ipv4Net>,
    /// The host's IPv6 address with prefix, e.g. `fd00:122::1/64`.
    #[serde(default)]
    pub address6: Option<Ipv6Net>,
}

/// One network's boot servers; a server that does not run is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub network: String,
    pub dhcp: Option<DhcpStatus>,
    pub tftp: Option<FileServerStatus<TftpStatsSnapshot>>,
    pub http: Option<FileServerStatus<HttpStatsSnapshot>>,
    #[serde(default)]
    pub dns: Option<DnsStatus>,
    /// Router advertisements on the bridge.
    #[serde(default)]
    pub ra: Option<RaStatus>,
    #[serde(default)]
    pub dhcp6: Option<Dhcp6Status>,
    /// TFTP and HTTP boot on the IPv6 gateway (a network with `address6` and `[network.pxe]`).
    #[serde(default)]
    pub tftp6: Option<FileServerStatus<TftpStatsSnapshot>>,
    #[serde(default)]
    pub http6: Option<FileServerStatus<HttpStatsSnapshot>>,
}

/// The DHCPv6 server's counters and the bridge it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dhcp6Status {
    pub interface: String,
    #[serde(flatten)]
    pub counters: pxe::dhcp6::stats::Dhcp6StatsSnapshot,
}

/// The router advertiser's counters and the bridge it advertises on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaStatus {
    pub interface: String,
    #[serde(flatten)]
    pub counters: ra::RaStatsSnapshot,
}

/// The DNS server's counters, where it listens, its domain, its upstreams and how many names
/// it answers for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStatus {
    pub listen: Vec<SocketAddr>,
    pub domain: String,
    /// Where names outside the domain are forwarded (empty: nowhere).
    pub upstreams: Vec<SocketAddr>,
    pub names: usize,
    #[serde(flatten)]
    pub counters: CountersSnapshot,
}

/// The DHCP server's counters, the bridge it serves and its lease store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpStatus {
    pub interface: String,
    /// Where its leases are kept and whether that works now (a proxyDHCP server has none).
    #[serde(default)]
    pub store: Option<StoreStatus>,
    /// Unexpired leases by the agent that granted or last renewed them (with a shared lease
    /// database, other agents' too).
    #[serde(default)]
    pub leases_by_agent: BTreeMap<String, usize>,
    #[serde(flatten)]
    pub counters: DhcpStatsSnapshot,
}

/// A TFTP or HTTP server's counters and where it listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileServerStatus<C> {
    pub listen: SocketAddr,
    #[serde(flatten)]
    pub counters: C,
}

/// `leases`: every DHCP server's leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasesReply {
    pub leases: Vec<NetworkLeases>,
}

impl Reply for LeasesReply {
    const COMMAND: Command = Command::Leases;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkLeases {
    pub network: String,
    pub leases: Vec<Lease>,
    /// DHCPv6 (IA_NA) leases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases6: Vec<pxe::leases::v6::Lease6>,
}

/// `guests`: the guests with the daemon's leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestsReply {
    pub guests: Vec<GuestRow>,
}

impl Reply for GuestsReply {
    const COMMAND: Command = Command::Guests;
}

#[cfg(test)]
mod tests;
