//! The router advertiser's input path: what arrives on its ICMPv6 socket, a solicitation with
//! its control messages and source, through the same validation the server runs
//! (`ra::server::classify`: the hop limit from the cmsg walk, then the RS decoder) into the
//! schedule, with the clock moved by the input. Also: every input as raw control bytes
//! (the cmsg walker) and as a Router Advertisement (decode, encode, decode again: the same).
//!
//! Frames (`hostagent_fuzz::frames`): advance in 100 ms units, then `[flags][hop limit][ICMPv6
//! message]`; flags bit 0: from the unspecified address, else from fe80::<flags>; bits 1-7 pick
//! the schedule's random choices. Invariants: no panic; two multicast advertisements are never
//! closer than MIN_DELAY_BETWEEN_RAS; a solicitation is valid only with hop limit 255; an
//! answer is never scheduled before its solicitation arrived.
#![no_main]

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use hostagent_fuzz::{cmsg_hop_limit, frames};
use libfuzzer_sys::fuzz_target;
use ra::schedule::{Destination, Jitter, Scheduler, MIN_DELAY_BETWEEN_RAS};
use ra::wire::Advertisement;
use ra::{Intervals, Received};

/// The input's choice of where in each random range to land.
struct FromInput(f64);

impl Jitter for FromInput {
    fn pick(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + (hi.saturating_sub(lo)).mul_f64(self.0)
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = ra::server::hop_limit(data);
    if let Ok(ra) = Advertisement::parse(data) {
        let again = Advertisement::parse(&ra.encode()).expect("an encoded RA decodes");
        assert_eq!(again, ra);
    }

    let start = Instant::now();
    let intervals = Intervals::new(None, Some(Duration::from_secs(4))).expect("valid");
    let mut schedule = Scheduler::new(start, intervals, FromInput(0.5));
    let mut now = start;
    let mut last_multicast: Option<Instant> = None;
    for f in frames(data) {
        now += Duration::from_millis(f.advance / 8 * 100);
        let [flags, hop, message @ ..] = f.bytes else {
            continue;
        };
        let source = if flags & 1 == 1 {
            Ipv6Addr::UNSPECIFIED
        } else {
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(*flags))
        };
        let control = cmsg_hop_limit(i32::from(*hop));
        match ra::server::classify(message, &control, source) {
            Received::Valid(from) => {
                assert_eq!(*hop, 255, "a solicitation with hop limit {hop} passed");
                assert_eq!(from, source);
                schedule.solicited(now, source);
                assert!(schedule.next_wakeup() >= start);
            }
            Received::Invalid(_) => {}
        }
        // Run the schedule up to now, as the server's loop does.
        while schedule.next_wakeup() <= now {
            let at = schedule.next_wakeup();
            for d in schedule.due(at) {
                if d == Destination::AllNodes {
                    if let Some(last) = last_multicast {
                        assert!(
                            at >= last + MIN_DELAY_BETWEEN_RAS,
                            "multicasts {:?} apart",
                            at - last
                        );
                    }
                    last_multicast = Some(at);
                }
            }
        }
    }
});
