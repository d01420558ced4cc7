//! hostagent's shared lease store: a network's DHCPv4 leases in PostgreSQL, allocated by
//! transactions, so that several agents can serve one segment from one pool. It implements
//! `pxe::dhcp::store::LeaseBackend`, the trait the DHCP server allocates through; the journal
//! (`pxe::dhcp::pool::Pool`) is the other implementation and stays the default.
//!
//! - [`config`]: the URL and settings (`[leases]` in the agent's config), URL checks, redaction.
//! - [`schema`]: the versioned schema, created and migrated by the agent (`schema/v*.sql`).
//! - [`database`]: one connection pool per agent, shared by its networks.
//! - [`store`]: [`PgStore`], one network's `LeaseBackend`: one transaction and one `batch4`
//!   call per DHCP batch; the bound leases kept in memory for the lease watch.
//! - `listen`: LISTEN/NOTIFY, so a lease another agent grants reaches this agent's lease
//!   watch (DNS) within one poll.
//!
//! # How an address goes to at most one client
//!
//! One row per address (`hostagent.lease4`, primary key `(network, ip)`): a lease, an offer hold
//! and a quarantine are columns of that row, so every decision about an address is made on one
//! row under its row lock, inside the batch's transaction. No lock of our own, no serializable
//! retries:
//! - a REQUEST locks its address's row `FOR UPDATE` and checks it there (another agent answering
//!   the same broadcast waits for this transaction and then sees its result);
//! - an OFFER takes a candidate row `FOR UPDATE SKIP LOCKED` (the job-queue pattern): two agents
//!   offering at once take different rows and never wait for each other, and a hold becomes
//!   visible to the other agents with the COMMIT, before the OFFER leaves (offers wait for the
//!   commit, `LeaseBackend::offers_wait_for_commit`);
//! - a conflict that holds could not prevent (an address taken between OFFER and REQUEST, after a
//!   database restart lost uncommitted holds) is answered with a NAK, and the client starts over
//!   with a DISCOVER (RFC 2131 §4.3.2).
//!
//! Every DHCP batch is one transaction and one COMMIT; the batch's ACKs leave after it. A batch
//! that only holds offers commits with `synchronous_commit = off` (a hold need not survive a
//! database crash: the REQUEST decides).
//!
//! # Why the blocking `postgres` crate and r2d2
//!
//! The DHCP server is one blocking thread per network (receive a batch, answer it, one commit,
//! send): the blocking client runs each query on that thread, with no runtime hop per query, and
//! a batch is one transaction on one connection. `tokio-postgres` (with deadpool or bb8) would
//! need a `block_on` into another runtime for every statement of the batch and gains nothing
//! the loop could use; sqlx likewise. `postgres` is rust-postgres' own blocking client (the same
//! protocol code as tokio-postgres); `r2d2` with `r2d2_postgres` (the same authors') is the
//! blocking pool Diesel uses: connection timeouts, a size limit, broken connections replaced.
//! Each statement is one round trip (`query_typed`: no prepare), and a whole DHCP batch is one
//! statement (`hostagent.batch4` calls the allocation functions of the schema, one per client
//! message, in order). TLS is not built in: use a
//! unix socket, or a network you trust (the URL's `sslmode=require` is refused at config check).

pub mod config;
pub mod database;
mod listen;
pub mod schema;
pub mod store;

pub use config::{parse_url, redact_url, DbConfig};
pub use database::{Database, DbError};
pub use store::PgStore;
