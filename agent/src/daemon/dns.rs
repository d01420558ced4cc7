//! A network's DNS server as the daemon runs it: the server on the gateway, its record store
//! filled from the config, and the feed that keeps the store's lease names in step with the
//! network's DHCP leases (a new lease resolves, an expired or released one stops): every set
//! the DHCP server publishes on its lease watch (`DhcpHandle::leases_watch`) replaces the lease
//! records at once.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Context, Result};
use dns::{DnsServer, RecordStore, Source};
use pxe::dhcp::server::BoundLeases;
use pxe::dhcp6::server::BoundLeases6;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::lease_names::{lease_records, names_of};
use crate::config::DnsService;
use crate::control::protocol::DnsStatus;

/// The DHCP server's lease sets, as `DhcpHandle::leases_watch` gives them.
pub(super) type Leases = watch::Receiver<Arc<BoundLeases>>;
/// The DHCPv6 server's, as `Dhcp6Handle::leases_watch` gives them.
pub(super) type Leases6 = watch::Receiver<Arc<BoundLeases6>>;

pub(super) struct RunningDns {
    server: DnsServer,
    feed: Option<LeaseFeed>,
}

impl RunningDns {
    /// Binds the server (UDP and TCP 53 on the gateway, on the bridge) and, when the network
    /// has a DHCP or DHCPv6 server, starts following its leases (A and AAAA).
    pub(super) async fn start(
        service: &DnsService,
        leases: Option<Leases>,
        leases6: Option<Leases6>,
    ) -> Result<RunningDns> {
        let network = &service.config.network;
        let records = RecordStore::for_domain(&service.config.zone.domain)
            .with_context(|| format!("DNS domain {:?}", service.config.zone.domain))?;
        for r in records.set_all(service.records.clone()) {
            // Validation checked these names; a clone reservation's name is the one way in.
            tracing::warn!(network = %network, name = %r.record.name, "name not served by DNS: {}", r.error);
        }
        let server = DnsServer::start(service.config.clone(), records.clone())
            .await
            .context("DNS server (to run without it: [network.dns] enable = false)")?;
        let feed = (leases.is_some() || leases6.is_some()).then(|| {
            let taken = names_of(&service.records, &records);
            LeaseFeed::spawn(network.clone(), leases, leases6, records, taken)
        });
        Ok(RunningDns { server, feed })
    }

    pub(super) fn status(&self) -> DnsStatus {
        DnsStatus {
            listen: self.server.local_addrs().to_vec(),
            domain: self
                .server
                .zone()
                .domain()
                .to_ascii()
                .trim_end_matches('.')
                .to_string(),
            upstreams: self.server.upstreams().servers().to_vec(),
            names: self.server.records().with(|r| r.len()),
            counters: self.server.counters(),
        }
    }

    /// Stops the feed, then the server.
    pub(super) async fn stop(self) {
        if let Some(feed) = self.feed {
            feed.stop().await;
        }
        self.server.shutdown().await;
    }
}

/// The task that publishes a network's lease names.
struct LeaseFeed {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl LeaseFeed {
    fn spawn(
        network: String,
        leases: Option<Leases>,
        leases6: Option<Leases6>,
        records: RecordStore,
        taken: HashSet<String>,
    ) -> LeaseFeed {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(follow(network, leases, leases6, records, taken, stop_rx));
        LeaseFeed { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Publishes the current sets, then again whenever either server publishes a new one, until
/// stopped or both DHCP servers are gone.
async fn follow(
    network: String,
    mut leases: Option<Leases>,
    mut leases6: Option<Leases6>,
    records: RecordStore,
    taken: HashSet<String>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let v4 = leases.as_mut().map(|l| l.borrow_and_update().clone());
        let v6 = leases6.as_mut().map(|l| l.borrow_and_update().clone());
        let now = v4
            .iter()
            .map(|s| s.at)
            .chain(v6.iter().map(|s| s.at))
            .max()
            .unwrap_or(0);
        let names = lease_records(
            v4.as_ref().map_or(&[][..], |s| &s.leases),
            v6.as_ref().map_or(&[][..], |s| &s.leases),
            &records,
            &taken,
            now,
        );
        tracing::debug!(network = %network, names = names.len(), "DNS: lease names updated");
        records.replace_source(Source::Lease, names);
        tokio::select! {
            _ = stop.changed() => return,
            changed = changed(&mut leases) => {
                if changed.is_err() {
                    leases = None;
                }
            }
            changed = changed(&mut leases6) => {
                if changed.is_err() {
                    leases6 = None;
                }
            }
        }
        if leases.is_none() && leases6.is_none() {
            return;
        }
    }
}

/// The next change of a watch; never, for a server that is not there.
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}
