//! DHCPv4: wire (guarded decode/encode), classify (what firmware asks), policy (which boot file or
//! URL), pool (allocation over the durable lease store), server (sockets, RFC 2131 §4.1 delivery,
//! group commit).

pub mod classify;
pub mod ipxe_build;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod server;
pub mod wire;
