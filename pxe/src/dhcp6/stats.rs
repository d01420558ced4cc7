//! The DHCPv6 server's counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::guard::Drop6;

#[derive(Debug, Default)]
pub struct Dhcp6Stats {
    pub received: AtomicU64,
    pub advertises: AtomicU64,
    /// Replies that bound or extended an address (rapid commits included).
    pub replies: AtomicU64,
    pub rapid_commits: AtomicU64,
    pub releases: AtomicU64,
    pub declines: AtomicU64,
    pub confirms: AtomicU64,
    /// Information-Request answers.
    pub information: AtomicU64,
    /// Replies that carried a boot file URL (option 59).
    pub boot_urls: AtomicU64,
    /// IA_NAs answered NoAddrsAvail.
    pub exhausted: AtomicU64,
    /// Indexed by `Drop6::index()`.
    pub dropped: [AtomicU64; Drop6::ALL.len()],
    pub flush_errors: AtomicU64,
    /// Replies not sent because their batch's flush failed.
    pub replies_withheld: AtomicU64,
    pub send_errors: AtomicU64,
}

/// A point-in-time copy for `hostagent status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dhcp6StatsSnapshot {
    pub received: u64,
    pub advertises: u64,
    pub replies: u64,
    pub rapid_commits: u64,
    pub releases: u64,
    pub declines: u64,
    pub confirms: u64,
    pub information: u64,
    pub boot_urls: u64,
    pub exhausted: u64,
    /// By `Drop6::as_str`; reasons that never happened are left out.
    pub dropped: BTreeMap<String, u64>,
    pub flush_errors: u64,
    pub replies_withheld: u64,
    pub send_errors: u64,
}

impl Dhcp6Stats {
    pub fn count_drop(&self, reason: Drop6) {
        self.dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Dhcp6StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Dhcp6StatsSnapshot {
            received: l(&self.received),
            advertises: l(&self.advertises),
            replies: l(&self.replies),
            rapid_commits: l(&self.rapid_commits),
            releases: l(&self.releases),
            declines: l(&self.declines),
            confirms: l(&self.confirms),
            information: l(&self.information),
            boot_urls: l(&self.boot_urls),
            exhausted: l(&self.exhausted),
            dropped: Drop6::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), l(&self.dropped[r.index()])))
                .filter(|(_, n)| *n > 0)
                .collect(),
            flush_errors: l(&self.flush_errors),
            replies_withheld: l(&self.replies_withheld),
            send_errors: l(&self.send_errors),
        }
    }
}
