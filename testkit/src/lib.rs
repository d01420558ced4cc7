//! The test kit every test crate of hostagent shares: `tests/` (the real binary in network
//! namespaces), `pxe/tests` (pxe's servers driven directly) and `dns/tests` (dns's server on
//! loopback). It holds what they need and knows nothing of hostagent's binary, its config file or
//! pxe's types, so pxe and dns can take it as a dev-dependency; what only hostagent's integration tests need (the binary, its TOML fixtures,
//! the daemon, QEMU, libvirt) lives in `tests/src` on top of it.
//!
//! - [`netns`]: network namespaces made by a test, deleted on drop even when the test panics;
//!   commands and threads inside them.
//! - [`wait`]: poll until something holds.
//! - [`process`]: run commands, read their output, write hook scripts.
//! - [`dhcp`]: DHCP client packets built byte by byte and replies parsed independently of the
//!   server's own codec.
//! - [`dhcp_client`]: the real clients (busybox udhcpc, ISC dhclient) with hook scripts that
//!   record what they were told.
//! - [`tftp`], [`http`]: raw clients that show single packets and answers.
//! - [`dns`]: `dig` with its answer parsed, a guest's libc resolver through a resolv.conf of the
//!   test's, and dnsmasq as an upstream resolver.
//! - [`postgres`]: a private PostgreSQL cluster on a unix socket in a temporary directory (the
//!   lease database tests of `leasedb/tests` and `tests/`).
//! - [`sock`]: TCP/UDP echo servers that record their peers, and clients whose sockets live in a
//!   namespace.

pub mod dhcp;
pub mod dhcp_client;
pub mod dns;
pub mod http;
pub mod netns;
pub mod postgres;
pub mod process;
pub mod sock;
pub mod tftp;
pub mod wait;

pub use netns::{Entered, Netns};
pub use postgres::PgCluster;
pub use process::{run_ok, sha256, stderr, stdout};
pub use wait::{wait_for, wait_until};
