//! Host networking for hostagent.
//!
//! The flow is desired state vs actual state: [`plan::observe`] reads what the host has (netlink
//! dumps, /proc/sys, files under the root prefix, the agent's own nft table), [`plan::diff`] turns
//! the difference into concrete [`plan::Action`]s, [`plan::plan`] does both once, [`apply::apply`]
//! performs a plan with an undo for each step and reads back once, and [`teardown::teardown`]
//! removes exactly what the agent recorded as its own. Whether a bridge is the agent's is decided
//! in one place, [`owned::ownership`].

pub mod apply;
pub mod check;
pub mod coexist;
pub mod error;
pub mod files;
mod hostops;
pub mod link;
pub mod model;
pub mod nft;
pub mod owned;
pub mod plan;
pub mod sysctl;
pub mod takeover;
pub mod teardown;

pub use apply::{apply, ApplyError, ApplyReport};
pub use check::{check, CheckResult, Status};
pub use error::Error;
pub use hwaddr::Mac;
pub use model::{
    Desired, Host, Ipv6Spec, Mode, NetworkSpec, PortForward, PortLimit, Proto, Services,
};
pub use plan::{diff, observe, plan, Action, Observed, Plan};
pub use teardown::{teardown, TeardownError, TeardownReport};
