//! Following the other agents' leases: a thread per network with a connection of its own that
//! LISTENs on `hostagent_lease4` (schema version 2 notifies it on every lease change, with the
//! network's name) and moves the store's generation on when its network is named. The DHCP
//! server's lease feed sees the generation move and reads the leases again, so DNS names the
//! leases another agent grants within one poll.
//!
//! A lost connection is opened again (every [`crate::store::RETRY_EVERY`]); the generation moves
//! on after each (re)connect, since changes may have been missed meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use crate::database::Database;
use crate::store::RETRY_EVERY;

/// How long one wait for a notification lasts before the stop flag is looked at.
const POLL: Duration = Duration::from_millis(250);

/// The listening thread; stopped and joined on drop.
pub(crate) struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    pub(crate) fn start(
        db: Arc<Database>,
        network: String,
        generation: Arc<AtomicU64>,
    ) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("leasedb-{network}"))
                .spawn(move || listen(&db, &network, &generation, &stop))
        };
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the lease-change listener: other agents' leases reach the lease watch only with this agent's own");
                None
            }
        };
        Listener { stop, thread }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn listen(db: &Database, network: &str, generation: &AtomicU64, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut client = match db.dedicated() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%network, error = %e, "lease-change listener cannot connect");
                pause(stop, RETRY_EVERY);
                continue;
            }
        };
        if let Err(e) = client.batch_execute("LISTEN hostagent_lease4") {
            tracing::debug!(%network, error = %e, "LISTEN failed");
            pause(stop, RETRY_EVERY);
            continue;
        }
        generation.fetch_add(1, Ordering::Relaxed);
        while !stop.load(Ordering::Relaxed) {
            // A fresh iterator for every wait: a TimeoutIter's timer is only re-armed by a
            // notification, so once it has run out it returns at once, and reusing it spins.
            match client.notifications().timeout_iter(POLL).next() {
                Ok(Some(n)) => {
                    if n.payload() == network {
                        generation.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(%network, error = %e, "lease-change listener lost its connection");
                    break;
                }
            }
        }
    }
}

/// Sleep `total`, waking early when asked to stop.
fn pause(stop: &AtomicBool, total: Duration) {
    let step = Duration::from_millis(100);
    let mut left = total;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let now = step.min(left);
        std::thread::sleep(now);
        left -= now;
    }
}
