//! The per-network services the daemon runs (DHCP, TFTP, HTTP boot, DNS), and how a new config
//! is reconciled with them: only the networks whose settings changed are restarted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use leasedb::{Database, DbConfig, PgStore};
use pxe::config::{Dhcp6Config, DhcpConfig, FileServiceConfig, ProxyConfig, TftpLimits};
use pxe::dhcp::server::{DhcpHandle, DhcpServer};
use pxe::dhcp6::server::{Dhcp6Handle, Dhcp6Server};
use pxe::http::{HttpServer, HttpStatsSnapshot};
use pxe::saferoot::SafeRoot;
use pxe::tftp::{TftpServer, TftpStatsSnapshot};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::dns::RunningDns;
use crate::config::{DnsService, LeaseBackend, Leases, Model};
use crate::control::protocol::{
    Dhcp6Status, DhcpStatus, FileServerStatus, NetworkLeases, RaStatus, ServerStatus,
};

/// A file server (TFTP or HTTP) running as a task, stopped through its watch channel; `C` is
/// its counters' snapshot.
struct FileTask<C> {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    stats: Box<dyn Fn() -> C + Send + Sync>,
}

impl<C> FileTask<C> {
    fn status(&self) -> FileServerStatus<C> {
        FileServerStatus {
            listen: self.addr,
            counters: (self.stats)(),
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What one network asks for; compared across reloads to decide what to restart.
#[derive(Clone, PartialEq)]
struct Wanted {
    dhcp: Option<DhcpConfig>,
    /// Where `dhcp` keeps its leases (None without `dhcp`).
    leases: Option<Leases>,
    /// proxyDHCP instead of `dhcp` (validation never sets both).
    proxy: Option<ProxyConfig>,
    files: Option<(FileServiceConfig, Option<u16>)>,
    ra: Option<ra::RaConfig>,
    dns: Option<DnsService>,
    dhcp6: Option<Dhcp6Config>,
}

struct Running {
    wanted: Wanted,
    dhcp: Option<DhcpHandle>,
    dhcp6: Option<Dhcp6Handle>,
    ra: Option<ra::RaHandle>,
    tftp: Option<FileTask<TftpStatsSnapshot>>,
    http: Option<FileTask<HttpStatsSnapshot>>,
    tftp6: Option<FileTask<TftpStatsSnapshot>>,
    http6: Option<FileTask<HttpStatsSnapshot>>,
    dns: Option<RunningDns>,
}

#[derive(Default)]
pub struct Services {
    networks: BTreeMap<String, Running>,
    /// The lease database's pool, shared by every network's DHCP server (`[leases] backend =
    /// "postgres"`), with the settings it was opened with.
    database: Option<(DbConfig, Arc<Database>)>,
}

fn wanted_from(model: &Model, root: &Path) -> BTreeMap<String, Wanted> {
    let mut out: BTreeMap<String, Wanted> = model
        .networks
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                Wanted {
                    dhcp: None,
                    leases: None,
                    proxy: None,
                    files: None,
                    ra: None,
                    dns: None,
                    dhcp6: None,
                },
            )
        })
        .collect();
    for d in model.dhcp6_configs(root) {
        if let Some(w) = out.get_mut(&d.network) {
            w.dhcp6 = Some(d);
        }
    }
    for d in model.dhcp_configs(root) {
        if let Some(w) = out.get_mut(&d.network) {
            w.dhcp = Some(d);
            w.leases = Some(model.leases.clone());
        }
    }
    for p in model.proxy_configs(root) {
        if let Some(w) = out.get_mut(&p.network) {
            w.proxy = Some(p);
        }
    }
    for (f, port) in model.file_services(root) {
        if let Some(w) = out.get_mut(&f.network) {
            w.files = Some((f, port));
        }
    }
    for r in model.ra_configs() {
        if let Some(w) = out.get_mut(&r.network) {
            w.ra = Some(r);
        }
    }
    for d in model.dns_services(root) {
        if let Some(w) = out.get_mut(&d.config.network) {
            w.dns = Some(d);
        }
    }
    out
}

impl Services {
    /// Bring the running servers in line with `model`: stop what is gone, restart what changed,
    /// start what is new. Errors starting one network's servers are collected, not fatal to the
    /// others.
    pub async fn reconcile(&mut self, model: &Model, root: &Path) -> Vec<anyhow::Error> {
        let wanted = wanted_from(model, root);
        let mut errors = Vec::new();
        let names: Vec<String> = self.networks.keys().cloned().collect();
        for name in names {
            let keep = wanted
                .get(&name)
                .is_some_and(|w| self.networks.get(&name).is_some_and(|r| &r.wanted == w));
            if !keep {
                if let Some(r) = self.networks.remove(&name) {
                    tracing::info!(network = %name, "stopping servers (settings changed or network removed)");
                    // Router advertisements that end (not merely change) say goodbye.
                    let farewell = wanted.get(&name).is_none_or(|w| w.ra.is_none());
                    stop_running(r, farewell).await;
                }
            }
        }
        let database = match self.database_for(&model.leases).await {
            Ok(db) => db,
            Err(e) => {
                errors.push(e);
                None
            }
        };
        for (name, w) in wanted {
            if self.networks.contains_key(&name) {
                continue;
            }
            match start(&name, &w, database.clone()).await {
                Ok(r) => {
                    self.networks.insert(name, r);
                }
                Err(e) => errors.push(e.context(format!("network {name}: starting its servers"))),
            }
        }
        errors
    }

    /// Stop and start one network's servers again with the same settings: after drift repair
    /// recreated its bridge, the DHCP and DNS sockets are still bound to the old device's
    /// ifindex.
    pub async fn restart_network(
        &mut self,
        name: &str,
        model: &Model,
        root: &Path,
    ) -> Vec<anyhow::Error> {
        if let Some(r) = self.networks.remove(name) {
            stop_running(r, false).await;
        }
        self.reconcile(model, root).await
    }

    pub async fn stop_all(&mut self) {
        for (_, r) in std::mem::take(&mut self.networks) {
            stop_running(r, true).await;
        }
        close_database(self.database.take()).await;
    }

    /// The pool for `leases` when it names a database: the running one if its settings are the
    /// same, else a new one (the old one is closed once no server uses it).
    async fn database_for(&mut self, leases: &Leases) -> Result<Option<Arc<Database>>> {
        let LeaseBackend::Postgres {
            url,
            pool_size,
            connect_timeout,
            timeout,
        } = &leases.backend
        else {
            close_database(self.database.take()).await;
            return Ok(None);
        };
        let cfg = DbConfig {
            url: url.clone(),
            agent: leases.agent.clone(),
            pool_size: *pool_size,
            connect_timeout: *connect_timeout,
            timeout: *timeout,
        };
        if let Some((running, db)) = &self.database {
            if *running == cfg {
                return Ok(Some(db.clone()));
            }
        }
        close_database(self.database.take()).await;
        let db = Database::open(cfg.clone()).context("[leases]")?;
        self.database = Some((cfg, db.clone()));
        Ok(Some(db))
    }

    pub fn status(&self) -> Vec<ServerStatus> {
        self.networks
            .iter()
            .map(|(name, r)| ServerStatus {
                network: name.clone(),
                dhcp: r.dhcp.as_ref().and_then(|h| {
                    let interface = match (&r.wanted.dhcp, &r.wanted.proxy) {
                        (Some(cfg), _) => cfg.interface.clone(),
                        (None, Some(p)) => p.interface.clone(),
                        (None, None) => return None,
                    };
                    let leases_by_agent = leases_by_agent(h, &r.wanted);
                    Some(DhcpStatus {
                        interface,
                        store: h.store_status(),
                        leases_by_agent,
                        counters: h.stats().snapshot(),
                    })
                }),
                tftp: r.tftp.as_ref().map(FileTask::status),
                http: r.http.as_ref().map(FileTask::status),
                ra: r
                    .ra
                    .as_ref()
                    .zip(r.wanted.ra.as_ref())
                    .map(|(h, cfg)| RaStatus {
                        interface: cfg.interface.clone(),
                        counters: h.stats(),
                    }),
                dns: r.dns.as_ref().map(RunningDns::status),
                dhcp6: r
                    .dhcp6
                    .as_ref()
                    .zip(r.wanted.dhcp6.as_ref())
                    .map(|(h, cfg)| Dhcp6Status {
                        interface: cfg.interface.clone(),
                        counters: h.stats().snapshot(),
                    }),
                tftp6: r.tftp6.as_ref().map(FileTask::status),
                http6: r.http6.as_ref().map(FileTask::status),
            })
            .collect()
    }

    pub fn leases(&self) -> Vec<NetworkLeases> {
        self.networks
            .iter()
            .filter(|(_, r)| r.dhcp.is_some() || r.dhcp6.is_some())
            .map(|(name, r)| NetworkLeases {
                network: name.clone(),
                leases: r
                    .dhcp
                    .as_ref()
                    .map(|h| leases_of(h, &r.wanted))
                    .unwrap_or_default(),
                leases6: r
                    .dhcp6
                    .as_ref()
                    .map(Dhcp6Handle::leases)
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// How many unexpired leases each agent holds on a network, from the live lease watch (no wait
/// for the server thread).
fn leases_by_agent(h: &DhcpHandle, w: &Wanted) -> BTreeMap<String, usize> {
    let own = w.leases.as_ref().map(|l| l.agent.as_str()).unwrap_or("");
    let now = pxe::dhcp::pool::unix_now();
    let mut out = BTreeMap::new();
    for l in h
        .leases_watch()
        .borrow()
        .leases
        .iter()
        .filter(|l| l.expires > now)
    {
        let agent = l.agent.as_deref().unwrap_or(own).to_string();
        *out.entry(agent).or_default() += 1;
    }
    out
}

/// A network's unexpired leases, each naming its agent: a journal's are all this agent's.
fn leases_of(h: &DhcpHandle, w: &Wanted) -> Vec<pxe::leases::Lease> {
    let own = w.leases.as_ref().map(|l| l.agent.as_str()).unwrap_or("");
    let mut leases = h.leases();
    for l in &mut leases {
        l.agent.get_or_insert_with(|| own.to_string());
    }
    leases
}

/// Stop one network's servers; `farewell`: its router advertisements end for good (the network
/// is gone, RA is turned off, the daemon stops), so hosts are told to drop the router.
async fn stop_running(r: Running, farewell: bool) {
    // The DNS server first: it names the DHCP server's leases until the end.
    if let Some(d) = r.dns {
        d.stop().await;
    }
    if let Some(a) = r.ra {
        a.stop(farewell).await;
    }
    if let Some(d) = r.dhcp {
        // The DHCP server is a blocking thread: joining it must not stall the runtime.
        let _ = tokio::task::spawn_blocking(move || d.stop()).await;
    }
    if let Some(d) = r.dhcp6 {
        let _ = tokio::task::spawn_blocking(move || d.stop()).await;
    }
    for t in [r.tftp, r.tftp6].into_iter().flatten() {
        t.stop().await;
    }
    for h in [r.http, r.http6].into_iter().flatten() {
        h.stop().await;
    }
}

async fn start(name: &str, w: &Wanted, database: Option<Arc<Database>>) -> Result<Running> {
    let mut running = Running {
        wanted: w.clone(),
        dhcp: None,
        dhcp6: None,
        ra: None,
        tftp: None,
        http: None,
        tftp6: None,
        http6: None,
        dns: None,
    };
    // Half-started networks are stopped again: never leave a TFTP server running whose DHCP
    // partner failed to bind.
    if let Err(e) = start_into(name, w, database, &mut running).await {
        stop_running(running, false).await;
        return Err(e);
    }
    Ok(running)
}

async fn start_into(
    name: &str,
    w: &Wanted,
    database: Option<Arc<Database>>,
    running: &mut Running,
) -> Result<()> {
    if let Some((files, http_port)) = &w.files {
        let (tftp, http) =
            start_files(name, files, SocketAddr::from((files.listen, 0)), *http_port).await?;
        running.tftp = Some(tftp);
        running.http = http;
        if let Some(v6) = files.listen6 {
            // PXE over IPv6: the boot file URLs of DHCPv6 name the IPv6 gateway.
            let (tftp, http) =
                start_files(name, files, SocketAddr::from((v6, 0)), *http_port).await?;
            running.tftp6 = Some(tftp);
            running.http6 = http;
        }
    }
    let started = match (&w.dhcp, &w.proxy) {
        (Some(cfg), _) => Some(("DHCP", start_leasing(cfg.clone(), database).await)),
        (None, Some(cfg)) => Some((
            "proxyDHCP",
            start_dhcp(cfg.clone(), DhcpServer::start_proxy).await,
        )),
        (None, None) => None,
    };
    if let Some((what, handle)) = started {
        running.dhcp = Some(handle.with_context(|| format!("{what} start"))?);
        tracing::info!(network = %name, "{what} serving");
    }
    if let Some(cfg) = &w.dhcp6 {
        let cfg = cfg.clone();
        let handle = tokio::task::spawn_blocking(move || Dhcp6Server::start(cfg))
            .await?
            .context("DHCPv6 start")?;
        running.dhcp6 = Some(handle);
        tracing::info!(network = %name, "DHCPv6 serving");
    }
    if let Some(cfg) = &w.ra {
        running.ra = Some(ra::RaServer::start(cfg.clone()));
    }
    if let Some(service) = &w.dns {
        let leases = running.dhcp.as_ref().map(DhcpHandle::leases_watch);
        let leases6 = running.dhcp6.as_ref().map(Dhcp6Handle::leases_watch);
        let dns = RunningDns::start(service, leases, leases6).await?;
        tracing::info!(network = %name, listen = ?service.config.listen, domain = %service.config.zone.domain, "DNS serving");
        running.dns = Some(dns);
    }
    Ok(())
}

/// The DHCP server of `cfg` over its lease store: the network's journal, or (with `database`)
/// the shared lease database.
async fn start_leasing(cfg: DhcpConfig, database: Option<Arc<Database>>) -> Result<DhcpHandle> {
    match database {
        None => start_dhcp(cfg, DhcpServer::start).await,
        // Connecting (and the store's first contact with the database) blocks: off the runtime.
        Some(db) => Ok(tokio::task::spawn_blocking(move || {
            let store = PgStore::new(db, &cfg);
            DhcpServer::start_with_store(cfg, Box::new(store))
        })
        .await??),
    }
}

/// Closes a lease database pool off the runtime: the blocking client's connections end with a
/// blocking call each.
async fn close_database(database: Option<(DbConfig, Arc<Database>)>) {
    if let Some((_, db)) = database {
        let _ = tokio::task::spawn_blocking(move || drop(db)).await;
    }
}

/// TFTP on `at`'s address port 69 and, with `http_port`, HTTP boot there.
async fn start_files(
    name: &str,
    files: &FileServiceConfig,
    at: SocketAddr,
    http_port: Option<u16>,
) -> Result<(
    FileTask<TftpStatsSnapshot>,
    Option<FileTask<HttpStatsSnapshot>>,
)> {
    let root = safe_root(files)?;
    let addr = SocketAddr::new(at.ip(), 69);
    let tftp = TftpServer::bind(addr, root, TftpLimits::default())
        .await
        .with_context(|| format!("TFTP on {addr}"))?;
    let (tx, rx) = watch::channel(false);
    let stats = tftp.stats();
    let addr = tftp.local_addr();
    tracing::info!(network = %name, %addr, root = %files.root.display(), "TFTP serving");
    let tftp = FileTask {
        addr,
        stop: tx,
        task: tokio::spawn(tftp.run(rx)),
        stats: Box::new(move || stats.snapshot()),
    };
    let Some(port) = http_port else {
        return Ok((tftp, None));
    };
    let addr = SocketAddr::new(at.ip(), port);
    let root = match safe_root(files) {
        Ok(r) => r,
        Err(e) => {
            tftp.stop().await;
            return Err(e);
        }
    };
    let http = match HttpServer::bind(addr, root).await {
        Ok(h) => h,
        Err(e) => {
            tftp.stop().await;
            return Err(anyhow::Error::new(e).context(format!("HTTP on {addr}")));
        }
    };
    let (tx, rx) = watch::channel(false);
    let stats = http.stats();
    let addr = http.local_addr();
    tracing::info!(network = %name, %addr, "HTTP boot serving");
    Ok((
        tftp,
        Some(FileTask {
            addr,
            stop: tx,
            task: tokio::spawn(http.run(rx)),
            stats: Box::new(move || stats.snapshot()),
        }),
    ))
}

/// Opens a DHCP server's sockets and starts its thread off the runtime (binding and replaying a
/// journal block).
async fn start_dhcp<C: Send + 'static>(
    cfg: C,
    start: fn(C) -> Result<DhcpHandle, pxe::dhcp::server::DhcpError>,
) -> Result<DhcpHandle> {
    Ok(tokio::task::spawn_blocking(move || start(cfg)).await??)
}

/// The boot root with its mounts. A mounted directory is the agent's own (rendered guest
/// scripts in the state directory): made here if the guests have not written it yet.
fn safe_root(files: &FileServiceConfig) -> Result<SafeRoot> {
    let mut root = SafeRoot::new(&files.root)
        .with_context(|| format!("boot root {}", files.root.display()))?;
    for (name, dir) in &files.mounts {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        root = root
            .with_mount(name, dir)
            .with_context(|| format!("serving {} as {name}/", dir.display()))?;
    }
    Ok(root)
}

pub type Shared = Arc<tokio::sync::Mutex<Services>>;
