//! A network's DNS server as the daemon runs it: the server on the gateway, its record store
//! filled from the config, and the feed that keeps the store's lease names in step with the
//! network's DHCP leases (a new lease resolves, an expired or released one stops).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use dns::{DnsServer, HostRecord, RecordStore, Source};
use pxe::dhcp::pool::unix_now;
use pxe::dhcp::server::DhcpHandle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::lease_names::{lease_records, names_of};
use crate::config::DnsService;
use crate::control::protocol::DnsStatus;

/// How often the feed reads the DHCP server's leases. pxe has no lease-change notification yet
/// (`DhcpHandle::leases()` is a view fetched on request), so the feed asks; a lease therefore
/// resolves within this plus the DHCP thread's receive timeout (200 ms) of being bound.
const LEASE_POLL: Duration = Duration::from_millis(250);

pub(super) struct RunningDns {
    server: DnsServer,
    feed: Option<LeaseFeed>,
}

impl RunningDns {
    /// Binds the server (UDP and TCP 53 on the gateway, on the bridge) and, when the network
    /// has a DHCP server, starts following its leases.
    pub(super) async fn start(
        service: &DnsService,
        dhcp: Option<Arc<DhcpHandle>>,
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
        let feed = dhcp.map(|dhcp| {
            let taken = names_of(&service.records, &records);
            LeaseFeed::spawn(network.clone(), dhcp, records, taken)
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

    /// Stops the feed first (it holds the DHCP handle) and then the server.
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
        dhcp: Arc<DhcpHandle>,
        records: RecordStore,
        taken: HashSet<String>,
    ) -> LeaseFeed {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(follow(network, dhcp, records, taken, stop_rx));
        LeaseFeed { stop, task }
    }

    /// Waits for a lease read in progress to end, so the DHCP handle is released when this
    /// returns.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn follow(
    network: String,
    dhcp: Arc<DhcpHandle>,
    records: RecordStore,
    taken: HashSet<String>,
    mut stop: watch::Receiver<bool>,
) {
    let mut published: Option<Vec<HostRecord>> = None;
    while !*stop.borrow() {
        let handle = dhcp.clone();
        // Not cancelled by `stop`: it ends within the view's wait, and then lets go of `dhcp`.
        let Ok(leases) = tokio::task::spawn_blocking(move || handle.leases()).await else {
            return;
        };
        let names = lease_records(&leases, &records, &taken, unix_now());
        if published.as_ref() != Some(&names) {
            tracing::debug!(network = %network, names = names.len(), "DNS: lease names updated");
            records.replace_source(Source::Lease, names.clone());
            published = Some(names);
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(LEASE_POLL) => {}
        }
    }
}
