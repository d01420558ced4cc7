//! DHCPv6 (RFC 8415) for one network: stateful IA_NA addresses from a range and static hosts,
//! stateless configuration (Information-Request), rapid commit, and PXE over IPv6 (RFC 5970).
//!
//! The pieces, each testable without a socket: `guard` (what a packet must look like before
//! dhcproto decodes it), `client` (a client's MAC and name), `pool` (which address), `boot`
//! (the boot file URL), `handler` (message → reply), `server_duid` (the server's stored
//! identity), `server` (socket, thread, group commit, lease watch). Leases are durable in
//! their own journal (`leases::v6`).

pub mod boot;
pub mod client;
pub mod guard;
pub mod handler;
pub mod pool;
pub mod server;
pub mod server_duid;
pub mod stats;
