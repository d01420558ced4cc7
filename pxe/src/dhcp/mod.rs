//! DHCPv4: wire (guarded decode/encode), classify (what firmware asks), policy (which boot file or
//! URL: the chain rule) with ipxe_build (is a file an iPXE build?), store (the lease-store trait
//! the server allocates through), pool (its journal implementation: allocation by client-id or
//! MAC over the durable lease journal), server (sockets, RFC 2131 §4.1 delivery, group commit,
//! the live lease feed), proxy (proxyDHCP on UDP 67 and 4011, no leases).

pub mod classify;
pub mod ipxe_build;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod server;
pub mod store;
pub mod wire;
