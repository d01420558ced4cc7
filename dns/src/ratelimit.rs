//! Per-client token buckets, so a guest cannot turn the host into an amplifier or starve the
//! other guests. The table is bounded: when it is full, buckets that have refilled (idle clients)
//! go first, then the least recently seen.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// `per_second` queries per second per source address, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
    /// Most source addresses tracked at once.
    pub max_clients: usize,
}

impl Default for RateLimit {
    /// dnsmasq has no such limit; 200/s with bursts of 400 is far above what a guest's resolver
    /// sends, and bounds what one guest can make the host send.
    fn default() -> Self {
        RateLimit {
            per_second: 200.0,
            burst: 400,
            max_clients: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub(crate) struct Limiter {
    limit: RateLimit,
    table: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Limiter {
        Limiter {
            limit,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `client`; false when its bucket is empty.
    pub(crate) fn allow(&self, client: IpAddr, now: Instant) -> bool {
        let burst = f64::from(self.limit.burst.max(1));
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !table.contains_key(&client) && table.len() >= self.limit.max_clients.max(1) {
            self.make_room(&mut table, now, burst);
        }
        let bucket = table.entry(client).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.limit.per_second).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn make_room(&self, table: &mut HashMap<IpAddr, Bucket>, now: Instant, burst: f64) {
        let rate = self.limit.per_second;
        table.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
        });
        if table.len() >= self.limit.max_clients.max(1) {
            if let Some(oldest) = table.iter().min_by_key(|(_, b)| b.last).map(|(ip, _)| *ip) {
                table.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let l = Limiter::new(RateLimit {
            per_second: 10.0,
            burst: 5,
            max_clients: 8,
        });
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        let allowed = (0..20).filter(|_| l.allow(ip, t0)).count();
        assert_eq!(allowed, 5);
        // 0.3 s at 10/s refills 3 tokens.
        let t1 = t0 + Duration::from_millis(300);
        assert_eq!((0..20).filter(|_| l.allow(ip, t1)).count(), 3);
        // Another client has its own bucket.
        assert!(l.allow("10.0.0.3".parse().unwrap(), t1));
    }

    #[test]
    fn the_table_stays_bounded() {
        let l = Limiter::new(RateLimit {
            per_second: 1.0,
            burst: 2,
            max_clients: 16,
        });
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(l.allow(ip, t0 + Duration::from_micros(u64::from(i))));
            assert!(l.tracked() <= 16);
        }
    }
}
