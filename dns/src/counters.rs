//! What the server did, counted with relaxed atomics (one increment per event, no lock) and read
//! as one serializable snapshot for `hostagent status`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// The live counters of one server.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub(crate) $name: AtomicU64,)*
        }

        /// A copy of [`Counters`] at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct CountersSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            pub fn snapshot(&self) -> CountersSnapshot {
                CountersSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// Every message received (UDP datagram or TCP frame), good or bad.
    queries,
    /// Answered from the local zone (names, reverse names, local NXDOMAIN), never forwarded.
    answered_local,
    /// Sent to an upstream resolver (cache misses).
    forwarded,
    /// Answered from the forwarding cache.
    cache_hits,
    /// NXDOMAIN answers sent, local or relayed.
    nxdomain,
    /// REFUSED answers: sources outside the allowed networks, zone transfers, classes other than IN.
    refused,
    /// Queries dropped by the per-client rate limit.
    rate_limited,
    /// Messages that were not a decodable query (dropped, or FORMERR when the header was readable).
    malformed,
    /// Forwarded queries that no upstream answered (the client got SERVFAIL).
    upstream_failures,
    /// Answers sent with TC set because they did not fit the client's UDP size.
    truncated,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
