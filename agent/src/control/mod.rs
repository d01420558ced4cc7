//! The control socket: how `hostagent status`, `leases` and `guests` ask the running daemon.
//!
//! - `protocol`: the request and reply types, the one definition of what travels on the socket;
//! - `server`: the daemon's socket (root-only, one JSON line in, one out), answering through
//!   [`server::Answer`], which the daemon implements;
//! - `client`: the CLI's side, and the `status` and `leases` commands.
//!
//! Neither side knows the other's internals: the server never sees the CLI, the client never
//! sees the daemon's state.

pub mod client;
pub mod protocol;
pub mod server;
