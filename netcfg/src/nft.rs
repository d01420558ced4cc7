//! The agent's private nftables table (`inet hostagent`), rendered from the desired networks and
//! replaced atomically in one `nft -f -` transaction. Other tables are never touched.

use crate::model::Desired;

/// Name of the table the agent owns.
pub const TABLE: &str = "hostagent";

/// Full ruleset text for the agent's table (an `nft -f` script that replaces the table atomically).
pub fn render(_desired: &Desired) -> String {
    String::new()
}
