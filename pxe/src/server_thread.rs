//! The OS thread a blocking server (DHCPv4, proxyDHCP, DHCPv6) serves on, with the stop flag its
//! loop looks at between receives: stopping sets the flag and joins, and so does dropping, so a
//! handle that goes away never leaves its thread (and its sockets) behind.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A running server thread, named `<kind>-<network>`.
#[derive(Debug)]
pub(crate) struct ServerThread {
    /// For the log line if the thread panicked: "DHCP server of network lab", say.
    what: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Runs `serve(stop)` on a new thread; `serve` returns soon after `stop` turns true.
    pub(crate) fn spawn(
        kind: &str,
        network: &str,
        serve: impl FnOnce(Arc<AtomicBool>) + Send + 'static,
    ) -> io::Result<ServerThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{kind}-{network}"))
            .spawn(move || serve(flag))?;
        Ok(ServerThread {
            what: format!("{kind} thread of network {network}"),
            stop,
            thread: Some(thread),
        })
    }

    /// Asks the loop to stop and waits for the thread (its loop notices within one receive
    /// timeout).
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the {} panicked", self.what);
            }
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn stopping_or_dropping_ends_the_loop_and_joins_it() {
        let rounds = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicBool::new(false));
        let (r, e) = (rounds.clone(), ended.clone());
        let mut t = ServerThread::spawn("test", "lab", move |stop| {
            while !stop.load(Ordering::Relaxed) {
                r.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
            e.store(true, Ordering::SeqCst);
        })
        .expect("spawn");
        while rounds.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        t.stop();
        assert!(
            ended.load(Ordering::SeqCst),
            "stop returned before the loop ended"
        );
        t.stop(); // twice is fine

        let ended = Arc::new(AtomicBool::new(false));
        let e = ended.clone();
        let t = ServerThread::spawn("test", "lab", move |stop| {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            e.store(true, Ordering::SeqCst);
        })
        .expect("spawn");
        drop(t);
        assert!(
            ended.load(Ordering::SeqCst),
            "drop returned before the loop ended"
        );
    }
}
