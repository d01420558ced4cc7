//! Waiting for something to become true, by polling: the one place tests wait.

use std::time::{Duration, Instant};

/// Poll `f` every 100 ms until it returns Some or `secs` pass.
pub fn wait_for<T>(secs: u64, f: impl FnMut() -> Option<T>) -> Option<T> {
    wait_until(Duration::from_secs(secs), Duration::from_millis(100), f)
}

/// Poll `f` every `every` until it returns Some or `limit` passes (`f` runs at least once, and
/// once more after the limit).
pub fn wait_until<T>(
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}
