//! Per-client rate limit: one token bucket per client MAC (chaddr), checked before any pool work.
//!
//! A client that sends more than its share (a broken firmware in a retry loop, or a flood that
//! reuses one MAC) is dropped and counted instead of costing pool lookups, journal writes and
//! replies. Each MAC has its own bucket, so a static reservation is served however hard other MACs
//! hammer the server. Flooding with *many* MACs is the per-port limit's job (nftables, in netcfg):
//! this table only has to stay bounded while that happens.
//!
//! Bounded memory: at most `max_tracked` buckets. When the table is full, buckets that have
//! refilled completely are forgotten first (forgetting them changes nothing: a new bucket starts
//! full); if that frees too little, arbitrary buckets are forgotten down to three quarters of the
//! cap. Forgetting only ever *forgives* a client, so a new MAC (say a reservation arriving in the
//! middle of a flood) is never refused for lack of room. The full scan happens at most once per
//! `max_tracked / 4` new MACs.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use crate::config::Mac;

/// Packets one MAC may send back to back: a PXE ROM's DISCOVER/REQUEST, then iPXE's own
/// DISCOVER/REQUEST, with a retry or two each.
pub const MAC_BURST: u32 = 8;
/// Sustained packets per second per MAC once the burst is spent.
pub const MAC_REFILL_PER_SEC: u32 = 2;
/// Most MACs tracked at once (about 40 bytes each: well under a megabyte).
pub const MAX_TRACKED_MACS: usize = 16_384;

/// One token, in the milli-token units the buckets count in (integer arithmetic, no drift).
const TOKEN: u64 = 1000;

/// The per-MAC limit's parameters. `Default` is the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// Bucket size, in packets.
    pub burst: u32,
    /// Refill, in packets per second.
    pub per_second: u32,
    /// Most MACs tracked at once.
    pub max_tracked: usize,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            burst: MAC_BURST,
            per_second: MAC_REFILL_PER_SEC,
            max_tracked: MAX_TRACKED_MACS,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Milli-tokens left as of `last`.
    tokens: u64,
    last: Instant,
}

/// Token buckets keyed by client MAC.
#[derive(Debug)]
pub struct MacLimiter {
    limit: RateLimit,
    buckets: HashMap<Mac, Bucket>,
}

impl MacLimiter {
    pub fn new(limit: RateLimit) -> MacLimiter {
        // A zero-sized bucket would refuse everything: treat it as the smallest useful one.
        let limit = RateLimit {
            burst: limit.burst.max(1),
            max_tracked: limit.max_tracked.max(4),
            ..limit
        };
        MacLimiter {
            limit,
            buckets: HashMap::new(),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// How many MACs have a bucket right now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    fn capacity(&self) -> u64 {
        u64::from(self.limit.burst) * TOKEN
    }

    /// A bucket's tokens at `now`, refilled for the time since it was last touched.
    fn refilled(&self, b: &Bucket, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(b.last).as_millis();
        let gained = ms.saturating_mul(u128::from(self.limit.per_second));
        let total = u128::from(b.tokens).saturating_add(gained);
        total.min(u128::from(self.capacity())) as u64
    }

    /// May a packet from `mac` be answered at `now`? Takes a token when it may.
    pub fn allow(&mut self, mac: Mac, now: Instant) -> bool {
        if let Some(b) = self.buckets.get(&mac).copied() {
            let tokens = self.refilled(&b, now);
            let allowed = tokens >= TOKEN;
            let tokens = if allowed { tokens - TOKEN } else { tokens };
            // Keep `last` monotonic even if a caller passes an older instant.
            let last = now.max(b.last);
            self.buckets.insert(mac, Bucket { tokens, last });
            return allowed;
        }
        if self.buckets.len() >= self.limit.max_tracked {
            self.make_room(now);
        }
        let tokens = self.capacity() - TOKEN;
        self.buckets.insert(mac, Bucket { tokens, last: now });
        true
    }

    /// Forget full buckets; if fewer than a quarter of the slots came free, forget arbitrary
    /// ones down to three quarters of the cap.
    fn make_room(&mut self, now: Instant) {
        let cap = self.capacity();
        let per_second = u128::from(self.limit.per_second);
        self.buckets.retain(|_, b| {
            let ms = now.saturating_duration_since(b.last).as_millis();
            u128::from(b.tokens) + ms.saturating_mul(per_second) < u128::from(cap)
        });
        let target = self.limit.max_tracked / 4 * 3;
        if self.buckets.len() > target {
            let excess = self.buckets.len() - target;
            let victims: Vec<Mac> = self.buckets.keys().take(excess).copied().collect();
            for mac in victims {
                self.buckets.remove(&mac);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn mac(i: u32) -> Mac {
        let b = i.to_be_bytes();
        Mac([2, 0, b[0], b[1], b[2], b[3]])
    }

    fn allowed(l: &mut MacLimiter, m: Mac, now: Instant, n: u32) -> u32 {
        (0..n).filter(|_| l.allow(m, now)).count() as u32
    }

    #[test]
    fn burst_then_nothing_at_the_same_instant() {
        let mut l = MacLimiter::new(RateLimit::default());
        let t = Instant::now();
        assert_eq!(allowed(&mut l, mac(1), t, 50), MAC_BURST);
        // Another MAC has its own, full bucket.
        assert_eq!(allowed(&mut l, mac(2), t, 50), MAC_BURST);
    }

    #[test]
    fn refill_follows_the_rate_and_caps_at_the_burst() {
        let limit = RateLimit {
            burst: 8,
            per_second: 2,
            max_tracked: 100,
        };
        let mut l = MacLimiter::new(limit);
        let t = Instant::now();
        assert_eq!(allowed(&mut l, mac(1), t, 8), 8);
        assert!(!l.allow(mac(1), t));
        // Half a token after 250 ms: still nothing; one after 500 ms.
        assert!(!l.allow(mac(1), t + Duration::from_millis(250)));
        assert!(l.allow(mac(1), t + Duration::from_millis(500)));
        assert!(!l.allow(mac(1), t + Duration::from_millis(500)));
        // 3 s later: 6 tokens.
        let later = t + Duration::from_millis(3500);
        assert_eq!(allowed(&mut l, mac(1), later, 50), 6);
        // An hour idle refills to the burst, not beyond.
        let idle = later + Duration::from_secs(3600);
        assert_eq!(allowed(&mut l, mac(1), idle, 50), 8);
        // Sustained: one packet every 100 ms for 10 s passes at about 2/s.
        let start = idle + Duration::from_secs(3600);
        assert_eq!(allowed(&mut l, mac(1), start, 8), 8);
        let passed = (1..=100)
            .filter(|i| l.allow(mac(1), start + Duration::from_millis(100 * i)))
            .count();
        assert_eq!(passed, 20);
    }

    #[test]
    fn table_stays_bounded_under_many_macs_and_prefers_forgetting_idle_buckets() {
        let limit = RateLimit {
            burst: 8,
            per_second: 2,
            max_tracked: 1000,
        };
        let mut l = MacLimiter::new(limit);
        let t = Instant::now();
        // A busy client with an empty bucket.
        let busy = mac(0xffff_0000);
        assert_eq!(allowed(&mut l, busy, t, 20), 8);
        // 100,000 random-looking MACs, one packet each, all within a second.
        for i in 0..100_000u32 {
            let now = t + Duration::from_micros(u64::from(i) * 10);
            assert!(
                l.allow(mac(i.wrapping_mul(2_654_435_761)), now),
                "new MAC refused"
            );
            assert!(l.tracked() <= 1000, "{} buckets", l.tracked());
        }
        // Full buckets are evicted before busy ones: after the flood ages, only idle MACs go.
        let mut l = MacLimiter::new(limit);
        for i in 0..999u32 {
            l.allow(mac(i), t);
        }
        assert_eq!(allowed(&mut l, busy, t, 20), 8);
        assert_eq!(l.tracked(), 1000);
        // 4 s later the one-packet MACs have refilled (1 token missing = 0.5 s); the busy one
        // (8 tokens missing = 4 s) has not, quite.
        let later = t + Duration::from_millis(3900);
        assert!(l.allow(mac(5000), later));
        assert_eq!(l.tracked(), 2, "only the busy MAC and the new one remain");
        assert_eq!(
            allowed(&mut l, busy, later, 20),
            7,
            "the busy MAC kept its (partly refilled) bucket"
        );
    }
}
