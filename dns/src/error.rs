//! The crate's errors: each says what was wrong and what to do about it.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a host name was not taken into the record set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    #[error("host name is empty")]
    Empty,
    #[error("host name {name:?} is {len} bytes; DNS names are at most 253")]
    TooLong { name: String, len: usize },
    #[error("host name {name:?} has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel { name: String },
    #[error("host name {name:?} has a label of {len} bytes; a label is at most 63")]
    LabelTooLong { name: String, len: usize },
    #[error(
        "host name {name:?} has {bad:?}; a label takes only letters, digits and '-' (RFC 1123)"
    )]
    BadCharacter { name: String, bad: char },
    #[error("host name {name:?} has a label that starts or ends with '-' (RFC 1123)")]
    EdgeHyphen { name: String },
    #[error("host name {name:?} is the domain itself, not a host in it")]
    IsTheDomain { name: String },
}

/// Errors building a zone or starting a server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("domain {domain:?} is not a usable DNS domain: {reason}")]
    BadDomain { domain: String, reason: String },
    #[error("the record store is for domain {store} but the zone is {zone}; make the store with RecordStore::new(zone.domain())")]
    DomainMismatch { store: String, zone: String },
    #[error("the server has no address to listen on; give at least one (the network's gateway, port 53)")]
    NoListenAddress,
    #[error("cannot bind DNS {proto} socket on {addr}{device}: {source}; is another DNS server (dnsmasq, systemd-resolved) listening there?")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        device: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why no upstream resolver could be found.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no upstream DNS server found (looked in {}); names outside the network's domain will get SERVFAIL. hint: set `forwarders = [\"IP\", ...]` under [network.dns]",
        .looked_in.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoneFound { looked_in: Vec<PathBuf> },
}
