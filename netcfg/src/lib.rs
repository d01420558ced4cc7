//! Host networking for hostagent.
//!
//! The flow is desired state vs actual state: [`plan::observe`] reads what the host has (netlink
//! dumps, /proc/sys, files under the root prefix, the agent's own nft table), [`plan::diff`] turns
//! the difference into concrete [`plan::Action`]s, [`apply::apply`] performs them with an undo for
//! each and reads back, and [`apply::teardown`] removes exactly what the agent recorded as its own.

pub mod apply;
pub mod check;
pub mod error;
pub mod files;
pub mod link;
pub mod model;
pub mod nft;
pub mod owned;
pub mod plan;
pub mod sysctl;

pub use apply::{apply, teardown, ApplyError, ApplyReport, TeardownError, TeardownReport};
pub use check::{check, CheckResult, Status};
pub use error::Error;
pub use model::{derived_mac, format_mac, Desired, Host, Mode, NetworkSpec, PortLimit, Services};
pub use plan::{diff, observe, plan, Action, Observed, Plan};
