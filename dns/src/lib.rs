//! hostagent's per-network DNS server: the names of one guest network, answered with authority,
//! and everything else forwarded to the host's real resolvers through a cache. Knows nothing of
//! TOML, DHCP or the agent: the agent builds a [`ServerConfig`], keeps a [`RecordStore`] fed from
//! leases, static hosts, guests and config entries, and reads [`CountersSnapshot`]s.
//!
//! ```text
//! datagram / TCP frame ─▶ QueryHandler::handle ─┬─ Drop          (not a query, rate-limited)
//!                                                ├─ Reply         (REFUSED, FORMERR, local zone,
//!                                                │                 RFC 8482 ANY, cache hit)
//!                                                └─ Forward ─▶ upstreams (UDP, TCP on TC, next
//!                                                              on timeout) ─▶ relay ─▶ cache
//! ```
//!
//! # Why hickory-proto, and not hickory-server or hickory-resolver
//!
//! All DNS wire work (decoding every query and every upstream answer, encoding every local answer,
//! names, EDNS, record data) is hickory-proto 0.26, the protocol crate under hickory-dns. Its
//! server and resolver crates were evaluated (0.26.3) and not used:
//!
//! - **hickory-server's `Server`** decodes and answers before any handler sees a message: a
//!   malformed query gets FORMERR and a source outside its allow-list gets REFUSED without a hook,
//!   so neither can be counted; there is no place for a per-client rate limit before a task is
//!   spawned per UDP query (one task, a `Vec` of queries and a log line per query: it logs every
//!   request at `info`). (It does cap UDP answers at 512 bytes or the client's EDNS size.)
//! - **Its `Catalog` + zone handlers** find a zone by longest suffix, so bare names (`bastion`
//!   without the domain) would fall to the root forwarder, and the in-memory zone is built for
//!   zone files, not for a record set replaced many times a second by lease events.
//! - **`ForwardZoneHandler` / hickory-resolver** rebuild each answer from a `Lookup`: the
//!   upstream's flags and authority section are lost and NXDOMAIN/NODATA come back as errors, so
//!   a forwarder would not relay negative answers with their SOA (what lets guests cache them per
//!   RFC 2308). Its cache (moka) and name-server pool (with rustls, quinn and more behind
//!   features) are far more than a per-network forwarder needs. Its `NameServerPool` does do TCP
//!   fallback on TC and next-server on timeout; the few lines of that here (`forward.rs`) are
//!   plain socket code, not wire code.
//!
//! So: our own small request path ([`QueryHandler`]) over hickory-proto's `Message`, our own
//! socket loops ([`DnsServer`]), a forwarding cache that keeps upstream answers as their wire
//! bytes (a hit is one copy plus in-place patches of ID, flags, question case and TTLs: no
//! decode, no per-record allocation), and a token-bucket table per client.
//!
//! # Rules worth knowing
//!
//! - Names under the domain and the subnets' reverse zones are never forwarded: unknown ones are
//!   NXDOMAIN with the zone's SOA (libvirt's `localOnly`). Bare names are answered when a host
//!   has them and forwarded otherwise (a TLD is a bare name too). Reverse zones for prefixes off
//!   an octet boundary: see [`Zone`].
//! - Local answers carry AA and TTL [`ZoneConfig::ttl`] (default 0 like dnsmasq, so a released
//!   lease stops resolving in guests at once); forwarded ones never carry AA.
//! - UDP answers are at most 512 bytes without EDNS, and at most min(client's size, 1232) with
//!   it; what does not fit goes out with TC and only the question, and the client asks again
//!   over TCP.
//! - ANY is answered minimally (RFC 8482): the local addresses, or one synthesized HINFO for
//!   foreign names, which are never forwarded. AXFR/IXFR and classes other than IN: REFUSED.
//! - Sources outside [`ServerConfig::allowed`] (default: the zone's subnets) get REFUSED without
//!   EDNS or records, so never more bytes than they sent.

mod cache;
mod config;
mod counters;
mod error;
mod forward;
mod handler;
mod hostname;
mod ratelimit;
mod records;
mod relay;
mod server;
mod upstreams;
mod zone;

pub use config::{Limits, ServerConfig};
pub use counters::{Counters, CountersSnapshot};
pub use error::{DnsError, HostnameError, UpstreamError};
pub use handler::{Forward, Outcome, QueryHandler, Transport, MAX_UDP_PAYLOAD};
pub use hostname::normalize as normalize_hostname;
pub use ratelimit::RateLimit;
pub use records::{Addrs, HostRecord, RecordStore, Records, Rejected, Source};
pub use server::DnsServer;
pub use upstreams::{UpstreamSource, Upstreams};
pub use zone::{Zone, ZoneConfig};
