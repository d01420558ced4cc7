//! Following the other agents' leases: a thread per network with a connection of its own that
//! LISTENs on `hostagent_lease4` (schema version 3 notifies it on every lease change with
//! `'<network>\n<application_name>'`) and, when its network is named, moves the store's
//! generation on; when the change was not this agent's own (another agent's session, or a hand
//! edit's), it also moves `foreign` on, which tells the store that its copy of the bound leases
//! must be read again. The DHCP server's lease feed sees the generation move and reads the leases,
//! so DNS names the leases another agent grants within one poll.
//!
//! An agent's sessions all carry its application name (`Database::open`), so this session's own
//! name, asked of the server, is what this agent's changes are signed with.
//!
//! A lost connection is opened again (every [`crate::store::RETRY_EVERY`]); both counters move
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
    pub(crate) fn start(db: Arc<Database>, network: String, moved: Moved) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("leasedb-{network}"))
                .spawn(move || listen(&db, &network, &moved, &stop))
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

/// The counters a listener moves on (see the module docs).
#[derive(Debug, Clone, Default)]
pub(crate) struct Moved {
    /// Every change to the network's leases, this agent's own included.
    pub(crate) generation: Arc<AtomicU64>,
    /// The changes this agent did not make.
    pub(crate) foreign: Arc<AtomicU64>,
}

impl Moved {
    fn both(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.foreign.fetch_add(1, Ordering::Release);
    }
}

/// Whose change a notification's payload tells of, if it is about `network`.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Own,
    Foreign,
}

fn change_of(payload: &str, network: &str, own_session: &str) -> Option<Change> {
    // A payload without a session name (schema version 2's) counts as someone else's.
    let (net, session) = payload.split_once('\n').unwrap_or((payload, ""));
    (net == network).then(|| {
        if session == own_session {
            Change::Own
        } else {
            Change::Foreign
        }
    })
}

fn listen(db: &Database, network: &str, moved: &Moved, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut client = match db.dedicated() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%network, error = %e, "lease-change listener cannot connect");
                pause(stop, RETRY_EVERY);
                continue;
            }
        };
        let own_session = match client
            .batch_execute("LISTEN hostagent_lease4")
            .and_then(|()| client.query_one("SELECT current_setting('application_name')", &[]))
        {
            Ok(row) => row.get::<_, String>(0),
            Err(e) => {
                tracing::debug!(%network, error = %e, "LISTEN failed");
                pause(stop, RETRY_EVERY);
                continue;
            }
        };
        moved.both();
        while !stop.load(Ordering::Relaxed) {
            // A fresh iterator for every wait: a TimeoutIter's timer is only re-armed by a
            // notification, so once it has run out it returns at once, and reusing it spins.
            match client.notifications().timeout_iter(POLL).next() {
                Ok(Some(n)) => match change_of(n.payload(), network, &own_session) {
                    Some(Change::Own) => {
                        moved.generation.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Change::Foreign) => moved.both(),
                    None => {}
                },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_the_network_and_whose_change_it_was() {
        let own = "hostagent kvm1";
        assert_eq!(
            change_of("lab\nhostagent kvm1", "lab", own),
            Some(Change::Own)
        );
        assert_eq!(
            change_of("lab\nhostagent kvm2", "lab", own),
            Some(Change::Foreign)
        );
        assert_eq!(change_of("lab\npsql", "lab", own), Some(Change::Foreign));
        assert_eq!(change_of("lab", "lab", own), Some(Change::Foreign));
        assert_eq!(change_of("lab2\nhostagent kvm1", "lab", own), None);
        assert_eq!(change_of("", "lab", own), None);
    }
}
