//! When to advertise (RFC 4861 §6.2.4 and §6.2.6), as a state machine that is told the time:
//! no clock, no sleeps, so every rule is tested by moving an `Instant` forward.
//!
//! - Unsolicited: the first advertisement goes out at once, then each after a random interval
//!   between MinRtrAdvInterval and MaxRtrAdvInterval, the first MAX_INITIAL_RTR_ADVERTISEMENTS
//!   of them no later than MAX_INITIAL_RTR_ADVERT_INTERVAL apart. Every multicast
//!   advertisement (solicited or not) restarts that timer.
//! - Solicited: a valid solicitation is answered after a random delay of up to
//!   MAX_RA_DELAY_TIME. From a host with an address the answer is unicast to it (RFC 7772, and
//!   radvd's default): the host hears it at once and the others are not woken. From the
//!   unspecified address (a host still without one) the answer is the next multicast
//!   advertisement, brought forward, but never sooner than MIN_DELAY_BETWEEN_RAS after the
//!   previous multicast one; a solicitation that would be answered later than the multicast
//!   already scheduled is covered by it. At most [`MAX_PENDING_UNICAST`] unicast answers wait at
//!   once (one per host); more are folded into the multicast answer, so a solicitation flood
//!   costs at most one multicast per MIN_DELAY_BETWEEN_RAS.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use crate::config::Intervals;

pub const MAX_INITIAL_RTR_ADVERTISEMENTS: u32 = 3;
pub const MAX_INITIAL_RTR_ADVERT_INTERVAL: Duration = Duration::from_secs(16);
pub const MAX_RA_DELAY_TIME: Duration = Duration::from_millis(500);
pub const MIN_DELAY_BETWEEN_RAS: Duration = Duration::from_secs(3);
/// Unicast answers waiting at once.
pub const MAX_PENDING_UNICAST: usize = 32;

/// A random duration in `[lo, hi]`: randomness injected so tests pick the ends.
pub trait Jitter {
    fn pick(&mut self, lo: Duration, hi: Duration) -> Duration;
}

/// Uniformly random, from the thread's RNG.
#[derive(Debug, Default)]
pub struct Random;

impl Jitter for Random {
    fn pick(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo).as_micros().min(u128::from(u64::MAX)) as u64;
        lo + Duration::from_micros(rand::random_range(0..=span))
    }
}

/// Where one advertisement goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// ff02::1, all nodes on the link.
    AllNodes,
    Unicast(Ipv6Addr),
}

#[derive(Debug)]
pub struct Scheduler<J: Jitter = Random> {
    intervals: Intervals,
    jitter: J,
    next_multicast: Instant,
    last_multicast: Option<Instant>,
    /// Unsolicited advertisements still to be sent at the initial pace.
    initial_left: u32,
    pending: Vec<(Ipv6Addr, Instant)>,
}

impl<J: Jitter> Scheduler<J> {
    /// A scheduler for an interface that starts advertising at `now`: the first advertisement
    /// is due at once.
    pub fn new(now: Instant, intervals: Intervals, jitter: J) -> Self {
        Scheduler {
            intervals,
            jitter,
            next_multicast: now,
            last_multicast: None,
            initial_left: MAX_INITIAL_RTR_ADVERTISEMENTS,
            pending: Vec::new(),
        }
    }

    /// A valid solicitation from `source` arrived at `now`.
    pub fn solicited(&mut self, now: Instant, source: Ipv6Addr) {
        let delay = self.jitter.pick(Duration::ZERO, MAX_RA_DELAY_TIME);
        let specified = !source.is_unspecified() && !source.is_multicast();
        if specified && self.pending.iter().any(|(a, _)| *a == source) {
            return;
        }
        if specified && self.pending.len() < MAX_PENDING_UNICAST {
            self.pending.push((source, now + delay));
            return;
        }
        let mut at = now + delay;
        if let Some(last) = self.last_multicast {
            if now < last + MIN_DELAY_BETWEEN_RAS {
                at = last + MIN_DELAY_BETWEEN_RAS + delay;
            }
        }
        if at < self.next_multicast {
            self.next_multicast = at;
        }
    }

    /// When something is next due.
    pub fn next_wakeup(&self) -> Instant {
        self.pending
            .iter()
            .map(|(_, t)| *t)
            .fold(self.next_multicast, Instant::min)
    }

    /// What is due at `now`, in the order to send it; the schedule moves on past it.
    pub fn due(&mut self, now: Instant) -> Vec<Destination> {
        let mut out = Vec::new();
        if now >= self.next_multicast {
            out.push(Destination::AllNodes);
            self.last_multicast = Some(now);
            let mut wait = self.jitter.pick(self.intervals.min, self.intervals.max);
            if self.initial_left > 0 {
                self.initial_left -= 1;
                wait = wait.min(MAX_INITIAL_RTR_ADVERT_INTERVAL);
            }
            self.next_multicast = now + wait;
        }
        let multicast_now = !out.is_empty();
        self.pending.retain(|(addr, at)| {
            if *at > now {
                return true;
            }
            // A multicast advertisement at this moment already answers them.
            if !multicast_now {
                out.push(Destination::Unicast(*addr));
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Always the given fraction of the range (0.0: the low end, 1.0: the high end).
    struct At(f64);
    impl Jitter for At {
        fn pick(&mut self, lo: Duration, hi: Duration) -> Duration {
            lo + (hi - lo).mul_f64(self.0)
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn intervals(min: u64, max: u64) -> Intervals {
        Intervals::new(Some(secs(min)), Some(secs(max))).unwrap()
    }

    /// Run the schedule from `start` for `span`, stepping to each wakeup: the times (offsets
    /// from `start`) of the multicast advertisements.
    fn multicasts<J: Jitter>(
        s: &mut Scheduler<J>,
        start: Instant,
        span: Duration,
    ) -> Vec<Duration> {
        let mut out = Vec::new();
        loop {
            let t = s.next_wakeup();
            if t > start + span {
                return out;
            }
            for d in s.due(t) {
                if d == Destination::AllNodes {
                    out.push(t - start);
                }
            }
        }
    }

    #[test]
    fn the_first_advertisement_is_at_once_then_the_first_three_intervals_are_at_most_16_s() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, intervals(198, 600), At(1.0));
        let sent = multicasts(&mut s, t0, secs(2000));
        assert_eq!(
            sent,
            [
                secs(0),
                secs(16),
                secs(32),
                secs(48),
                secs(648),
                secs(1248),
                secs(1848)
            ]
        );
    }

    #[test]
    fn unsolicited_intervals_stay_between_min_and_max() {
        let t0 = Instant::now();
        for frac in [0.0, 0.5, 1.0] {
            let mut s = Scheduler::new(t0, intervals(3, 4), At(frac));
            let sent = multicasts(&mut s, t0, secs(100));
            for w in sent.windows(2) {
                let gap = w[1] - w[0];
                assert!(gap >= secs(3) && gap <= secs(4), "{frac}: {gap:?}");
            }
            assert!(sent.len() >= 25, "{frac}: {}", sent.len());
        }
        let mut r = Random;
        for _ in 0..1000 {
            let d = r.pick(secs(3), secs(4));
            assert!(d >= secs(3) && d <= secs(4));
        }
    }

    #[test]
    fn a_solicitation_from_an_address_is_answered_by_unicast_within_half_a_second() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, intervals(198, 600), At(1.0));
        assert_eq!(s.due(t0), [Destination::AllNodes]);
        let host: Ipv6Addr = "fe80::2".parse().unwrap();
        let t1 = t0 + secs(5);
        s.solicited(t1, host);
        s.solicited(t1, host); // a repeat while one is pending adds nothing
        assert_eq!(s.next_wakeup(), t1 + MAX_RA_DELAY_TIME);
        assert_eq!(s.due(t1 + Duration::from_millis(499)), []);
        assert_eq!(s.due(t1 + MAX_RA_DELAY_TIME), [Destination::Unicast(host)]);
        assert_eq!(
            s.next_wakeup(),
            t0 + secs(16),
            "the multicast schedule is unchanged"
        );
    }

    #[test]
    fn a_solicitation_from_the_unspecified_address_brings_the_multicast_forward_but_not_within_3_s()
    {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, intervals(198, 600), At(0.0));
        assert_eq!(s.due(t0), [Destination::AllNodes]);
        // 1 s after the last multicast: answered MIN_DELAY_BETWEEN_RAS after it.
        s.solicited(t0 + secs(1), Ipv6Addr::UNSPECIFIED);
        assert_eq!(s.next_wakeup(), t0 + MIN_DELAY_BETWEEN_RAS);
        assert_eq!(s.due(t0 + MIN_DELAY_BETWEEN_RAS), [Destination::AllNodes]);
        // Long after: answered at once (delay 0 from this jitter).
        let t2 = t0 + secs(10);
        s.solicited(t2, Ipv6Addr::UNSPECIFIED);
        assert_eq!(s.next_wakeup(), t2);
        // A solicitation that would be answered later than the scheduled multicast changes nothing.
        let mut late = Scheduler::new(t0, intervals(3, 4), At(1.0));
        assert_eq!(late.due(t0), [Destination::AllNodes]);
        let next = late.next_wakeup();
        late.solicited(t0 + Duration::from_millis(3900), Ipv6Addr::UNSPECIFIED);
        assert_eq!(late.next_wakeup(), next);
    }

    #[test]
    fn a_solicitation_flood_costs_at_most_one_multicast_per_3_s() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, intervals(198, 600), At(0.5));
        let mut multicast = 0;
        let mut unicast = 0;
        // 10 s of solicitations, one per millisecond, from 1000 different hosts.
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            let host = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, (ms % 1000) as u16 + 1);
            s.solicited(now, host);
            for d in s.due(now) {
                match d {
                    Destination::AllNodes => multicast += 1,
                    Destination::Unicast(_) => unicast += 1,
                }
            }
        }
        assert!(multicast <= 1 + 10 / 3 + 1, "{multicast}");
        // Unicast answers: at most the pending cap per answer delay (250 ms from this jitter).
        assert!(
            unicast > 0 && unicast <= 41 * MAX_PENDING_UNICAST,
            "{unicast}"
        );
        assert!(s.pending.len() <= MAX_PENDING_UNICAST);
    }

    #[test]
    fn a_multicast_that_is_due_covers_the_unicast_answers_due_with_it() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0, intervals(3, 4), At(0.0));
        assert_eq!(s.due(t0), [Destination::AllNodes]);
        let host: Ipv6Addr = "fe80::9".parse().unwrap();
        s.solicited(t0 + secs(3), host);
        assert_eq!(s.due(t0 + secs(3)), [Destination::AllNodes]);
        assert_eq!(s.next_wakeup(), t0 + secs(6), "nothing left pending");
    }
}
