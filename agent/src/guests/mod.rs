//! Guests in libvirt: the config's `[[guest]]` entries defined and started (never destroyed
//! without an explicit command), their install progress, and the virt-clone / virsh-edit style
//! operations on existing definitions.
//!
//! A config without guests never opens a libvirt connection, so hosts without libvirt keep
//! working for everything else.

pub mod check;
pub mod conn;
mod disks;
pub mod helper;
pub mod kvm_access;
pub mod ops;
mod qemu_img;
pub mod stage;
pub mod storage;
mod sys;
pub mod xml;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use hwaddr::Mac;
use netcfg::Host;
use serde::{Deserialize, Serialize};

use crate::config::{Guest, Model};
use conn::{Conn, LibvirtError};

/// ROOT/state_dir/guests/console/NAME.log: the serial console of a guest.
pub fn console_log(root: &Path, model: &Model, name: &str) -> PathBuf {
    Host::new(root, &model.state_dir)
        .state_path()
        .join("guests/console")
        .join(format!("{name}.log"))
}

/// The serial console of a guest on another host: the agent's state directory is not there.
/// virtlogd (root) writes it into the QEMU driver's own directory, which libvirtd makes when it
/// starts; its log directory (/var/log/libvirt/qemu) would not do: libvirtd makes that one only
/// after it has opened the first guest's console file.
pub fn remote_console_log(name: &str) -> PathBuf {
    PathBuf::from(format!("/var/lib/libvirt/qemu/{name}.console.log"))
}

/// Where the config's guest `g` logs its console, on the host it runs on.
fn console_of(root: &Path, model: &Model, g: &Guest) -> PathBuf {
    match g.host {
        None => console_log(root, model, &g.name),
        Some(_) => remote_console_log(&g.name),
    }
}

/// The libvirt daemons the config's guests are on: `[libvirt] uri` first (always: clones live
/// there), then each `[[libvirt.host]]` that has guests, in config order.
pub fn hosts(model: &Model) -> Vec<Option<String>> {
    let mut out = vec![None];
    out.extend(
        model
            .libvirt
            .hosts
            .iter()
            .filter(|h| {
                model
                    .guests
                    .iter()
                    .any(|g| g.host.as_deref() == Some(&h.name))
            })
            .map(|h| Some(h.name.clone())),
    );
    out
}

/// One daemon's share of the config: only the guests placed on `host`, and `[libvirt] uri` set
/// to that daemon's, so the per-connection code below never needs to know about other hosts.
pub fn on_host(model: &Model, host: Option<&str>) -> Result<Model, LibvirtError> {
    let uri = model
        .libvirt
        .uri_of(host)
        .ok_or_else(|| LibvirtError::Call {
            what: "placing guests".to_string(),
            message: format!("no [[libvirt.host]] named {}", host.unwrap_or_default()),
        })?
        .to_string();
    let mut m = model.clone();
    m.libvirt.uri = uri;
    m.guests.retain(|g| g.host.as_deref() == host);
    Ok(m)
}

/// How `guests`, plans and logs name a host: the `[[libvirt.host]]` name, or `local`.
pub fn host_label(host: Option<&str>) -> &str {
    host.unwrap_or(crate::config::LOCAL_HOST)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum GuestAction {
    /// libvirt's `default` storage pool, which it does not have yet (a directory pool).
    CreatePool {
        pool: String,
        dir: String,
    },
    /// The storage pool is defined but not running.
    StartPool {
        pool: String,
    },
    /// A new volume in the pool (`how`: "20 GiB qcow2", "qcow2 overlay on …").
    CreateVolume {
        guest: String,
        pool: String,
        volume: String,
        how: String,
    },
    /// A new image file at the path the config names, made with qemu-img.
    CreateDisk {
        guest: String,
        path: String,
        how: String,
    },
    Define {
        guest: String,
        network: String,
        mac: Mac,
        ip: Ipv4Addr,
    },
    Start {
        guest: String,
    },
}

impl std::fmt::Display for GuestAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestAction::CreatePool { pool, dir } => {
                write!(
                    f,
                    "create storage pool {pool} (directory {dir}, through libvirt)"
                )
            }
            GuestAction::StartPool { pool } => write!(f, "start storage pool {pool}"),
            GuestAction::CreateVolume {
                guest,
                pool,
                volume,
                how,
            } => write!(
                f,
                "create volume {volume} in storage pool {pool} for guest {guest} ({how})"
            ),
            GuestAction::CreateDisk { guest, path, how } => {
                write!(f, "create disk {path} for guest {guest} ({how})")
            }
            GuestAction::Define {
                guest,
                network,
                mac,
                ip,
            } => {
                write!(
                    f,
                    "define guest {guest} on network {network} (MAC {mac}, reserved {ip})"
                )
            }
            GuestAction::Start { guest } => write!(f, "start guest {guest}"),
        }
    }
}

/// What `apply` would do on one libvirt connection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuestPlan {
    pub actions: Vec<GuestAction>,
    pub notes: Vec<String>,
}

/// What `apply` would do for the guests on every host.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetPlan {
    pub actions: Vec<HostAction>,
    pub notes: Vec<String>,
}

/// A [`GuestAction`] and the `[[libvirt.host]]` it happens on (None: `[libvirt] uri`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostAction {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(flatten)]
    pub action: GuestAction,
}

impl std::fmt::Display for HostAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = on_host_suffix(self.host.as_deref(), self.action.to_string());
        f.write_str(&line)
    }
}

/// "… (on host kvm2)" after a line about a guest of another host.
fn on_host_suffix(host: Option<&str>, line: String) -> String {
    match host {
        None => line,
        Some(h) => format!("{line} (on host {h})"),
    }
}

/// What `apply` would do for guests. Blocking; call through [`plan`].
fn plan_blocking(conn: &Conn, model: &Model, root: &Path) -> conn::Result<GuestPlan> {
    let mut p = GuestPlan::default();
    let mut pool = disks::PoolView::new(&model.libvirt.pool);
    for g in &model.guests {
        match conn.lookup(&g.name)? {
            None => {
                disks::plan(
                    conn,
                    model,
                    root,
                    g,
                    &mut pool,
                    &mut p.actions,
                    &mut p.notes,
                )?;
                p.actions.push(GuestAction::Define {
                    guest: g.name.clone(),
                    network: g.network.clone(),
                    mac: g.mac,
                    ip: g.ip,
                });
                p.actions.push(GuestAction::Start {
                    guest: g.name.clone(),
                });
            }
            Some(d) => {
                let (info, _) = conn::inactive_info(&d)?;
                if info.owner.is_none() {
                    p.notes.push(format!("a domain named {} exists that hostagent did not define: left alone (rename the guest in the config or the domain in libvirt)", g.name));
                    continue;
                }
                let mut drift = Vec::new();
                if info.vcpus != g.vcpus {
                    drift.push(format!("vcpus {} (config {})", info.vcpus, g.vcpus));
                }
                if info.memory_kib != g.memory_mib * 1024 {
                    drift.push(format!(
                        "memory {} MiB (config {} MiB)",
                        info.memory_kib / 1024,
                        g.memory_mib
                    ));
                }
                if !info.interfaces.iter().any(|n| n.mac == Some(g.mac)) {
                    drift.push(format!("no interface with MAC {}", g.mac));
                }
                if !drift.is_empty() {
                    p.notes.push(format!(
                        "guest {} differs from the config: {}; hostagent never redefines an existing guest (change it with virsh edit, or `hostagent down --guests` and apply)",
                        g.name,
                        drift.join(", ")
                    ));
                }
            }
        }
    }
    for d in conn.all_domains()? {
        let Ok((info, _)) = conn::inactive_info(&d) else {
            continue;
        };
        if info.owner.is_some() && !model.guests.iter().any(|g| g.name == info.name) {
            p.notes.push(format!(
                "guest {} was defined by hostagent but is not in the config: left alone",
                info.name
            ));
        }
    }
    Ok(p)
}

/// The guest part of `plan`, host by host; no libvirt connection for a host without guests.
pub async fn plan(model: &Model, root: &Path) -> Result<FleetPlan, LibvirtError> {
    let mut out = FleetPlan::default();
    for host in hosts(model) {
        let m = on_host(model, host.as_deref())?;
        if m.guests.is_empty() {
            continue;
        }
        let r = root.to_path_buf();
        let p = conn::with_conn(&m.libvirt.uri.clone(), move |c| plan_blocking(c, &m, &r)).await?;
        out.actions
            .extend(p.actions.into_iter().map(|action| HostAction {
                host: host.clone(),
                action,
            }));
        out.notes.extend(
            p.notes
                .into_iter()
                .map(|n| on_host_suffix(host.as_deref(), n)),
        );
    }
    Ok(out)
}

/// Define and start missing guests on every host; returns what was done. Existing guests are
/// never changed.
pub async fn apply(model: &Model, root: &Path) -> Result<Vec<String>, anyhow::Error> {
    let mut done = Vec::new();
    for host in hosts(model) {
        done.extend(apply_on(model, root, host.as_deref()).await?);
    }
    Ok(done)
}

/// [`apply`] for the guests on one host (what one guest helper does).
pub async fn apply_on(
    model: &Model,
    root: &Path,
    host: Option<&str>,
) -> Result<Vec<String>, anyhow::Error> {
    let model = &on_host(model, host)?;
    if model.guests.is_empty() {
        return Ok(Vec::new());
    }
    render_scripts(model, root)?;
    let (m, r) = (model.clone(), root.to_path_buf());
    let label = host.map(str::to_string);
    let done = conn::with_conn(&model.libvirt.uri, move |c| {
        let plan = plan_blocking(c, &m, &r)?;
        let mut done = Vec::new();
        for a in &plan.actions {
            let step = || -> Result<(), anyhow::Error> {
                let guest = |name: &str| {
                    m.guests
                        .iter()
                        .find(|g| g.name == name)
                        .ok_or_else(|| anyhow::anyhow!("guest {name} vanished"))
                };
                match a {
                    GuestAction::CreatePool { pool, .. } | GuestAction::StartPool { pool } => {
                        c.ensure_pool(pool)?;
                    }
                    GuestAction::CreateVolume { guest: name, .. }
                    | GuestAction::CreateDisk { guest: name, .. } => {
                        disks::create(c, &m, &r, guest(name)?)?
                    }
                    GuestAction::Define { guest: name, .. } => {
                        let g = guest(name)?;
                        let log = console_of(&r, &m, g);
                        if g.host.is_none() {
                            if let Some(dir) = log.parent() {
                                std::fs::create_dir_all(dir)?;
                            }
                        }
                        let disk = disks::locate(c, &m, &r, g)?;
                        let xml = xml::domain_xml(g, m.libvirt.virt_type, &log, disk.as_deref());
                        let d = c.define(&xml)?;
                        conn::set_autostart(&d, g.autostart)?;
                    }
                    GuestAction::Start { guest } => {
                        let d = c
                            .lookup(guest)?
                            .ok_or_else(|| anyhow::anyhow!("guest {guest} is not defined"))?;
                        conn::start(&d)?;
                    }
                }
                Ok(())
            };
            step().map_err(|e| LibvirtError::Call {
                what: a.to_string(),
                message: format!("{e:#}"),
            })?;
            let line = on_host_suffix(label.as_deref(), a.to_string());
            tracing::info!(action = %line, "guest");
            done.push(line);
        }
        for n in &plan.notes {
            tracing::warn!("{}", on_host_suffix(label.as_deref(), n.clone()));
        }
        Ok(done)
    })
    .await?;
    Ok(done)
}

/// Write each guest's boot script from its template: `{{name}}`, `{{mac}}`, `{{ip}}`,
/// `{{network}}` and `{{gateway}}` are replaced (iPXE's own `${...}` settings are left alone).
/// The template is read from the boot root; the result goes to the agent's state directory
/// (`config::guest_scripts_dir`), which TFTP and HTTP serve as `hostagent-guests/`.
pub fn render_scripts(model: &Model, root: &Path) -> Result<(), anyhow::Error> {
    let host = Host::new(root, &model.state_dir);
    for g in model.guests.iter().filter(|g| g.script.is_some()) {
        let Some(net) = model.networks.iter().find(|n| n.name == g.network) else {
            continue;
        };
        let (Some(pxe), Some(template)) = (&net.pxe, &g.script) else {
            continue;
        };
        let boot_root = host.path(&pxe.root);
        let src = boot_root.join(template);
        let text = std::fs::read_to_string(&src).map_err(|e| {
            anyhow::anyhow!(
                "guest {}: boot script template {}: {e}",
                g.name,
                src.display()
            )
        })?;
        let rendered = text
            .replace("{{name}}", &g.name)
            .replace("{{mac}}", &g.mac.to_string())
            .replace("{{ip}}", &g.ip.to_string())
            .replace("{{network}}", &g.network)
            .replace(
                "{{gateway}}",
                &net.gateway().map(|a| a.to_string()).unwrap_or_default(),
            );
        let dst = crate::config::guest_scripts_dir(root, &model.state_dir)
            .join(format!("{}.ipxe", g.name));
        if std::fs::read_to_string(&dst).ok().as_deref() != Some(rendered.as_str()) {
            if let Some(dir) = dst.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&dst, rendered)?;
        }
    }
    Ok(())
}

/// `down --guests`: stop and undefine the config's guests on every host (only those hostagent
/// defined). Disk images and console logs stay: deleting data takes a person.
pub async fn down(model: &Model) -> Result<Vec<String>, LibvirtError> {
    let mut done = Vec::new();
    for host in hosts(model) {
        let m = on_host(model, host.as_deref())?;
        done.extend(
            down_on(&m)
                .await?
                .into_iter()
                .map(|l| on_host_suffix(host.as_deref(), l)),
        );
    }
    Ok(done)
}

/// [`down`] on the one connection of `model` (see [`on_host`]).
async fn down_on(model: &Model) -> Result<Vec<String>, LibvirtError> {
    if model.guests.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = model.guests.iter().map(|g| g.name.clone()).collect();
    conn::with_conn(&model.libvirt.uri, move |c| {
        let mut done = Vec::new();
        for name in names {
            let Some(d) = c.lookup(&name)? else { continue };
            let (info, _) = conn::inactive_info(&d)?;
            if info.owner.is_none() {
                done.push(format!("left {name} alone: hostagent did not define it"));
                continue;
            }
            conn::destroy_and_undefine(&d)?;
            done.push(format!(
                "removed guest {name} (its disk image and console log are kept)"
            ));
        }
        Ok(done)
    })
    .await
}

/// A lease the daemon holds, as `guests` needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// Unix seconds.
    pub expires: u64,
}

impl From<&pxe::leases::Lease> for LeaseView {
    fn from(l: &pxe::leases::Lease) -> LeaseView {
        LeaseView {
            mac: l.mac,
            ip: l.ip,
            expires: l.expires,
        }
    }
}

/// One line of `hostagent guests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRow {
    pub name: String,
    /// The `[[libvirt.host]]` it is defined on, or `local` (`[libvirt] uri`).
    #[serde(default)]
    pub host: String,
    /// virsh's words ("running", "shut off"), or "undefined".
    pub state: String,
    /// None for a clone whose first interface has no MAC in its definition.
    pub mac: Option<Mac>,
    pub network: String,
    /// The reservation.
    pub ip: String,
    pub lease: Option<LeaseView>,
    pub stage: String,
    pub console: String,
}

/// The config's guests on every host and any other guest hostagent defined there (clones), with
/// state, lease and install stage. `leases` is the daemon's view; None when no daemon answered.
/// A host that does not answer lists its config guests as `unreachable` (and logs why): the
/// others are still shown.
pub async fn rows(
    model: &Model,
    root: &Path,
    leases: Option<Vec<LeaseView>>,
) -> Result<Vec<GuestRow>, LibvirtError> {
    let mut out = Vec::new();
    for host in hosts(model) {
        match rows_on(model, root, leases.clone(), host.as_deref()).await {
            Ok(rows) => out.extend(rows),
            Err(e) if host.is_some() => {
                tracing::warn!(host = host_label(host.as_deref()), "guests: {e}");
                out.extend(unreachable_rows(model, host.as_deref()));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The rows of `host`'s config guests when its libvirt does not answer.
pub fn unreachable_rows(model: &Model, host: Option<&str>) -> Vec<GuestRow> {
    model
        .guests
        .iter()
        .filter(|g| g.host.as_deref() == host)
        .map(|g| GuestRow {
            name: g.name.clone(),
            host: host_label(host).to_string(),
            state: "unreachable".to_string(),
            mac: Some(g.mac),
            network: g.network.clone(),
            ip: g.ip.to_string(),
            lease: None,
            stage: "-".to_string(),
            console: String::new(),
        })
        .collect()
}

/// [`rows`] for one host.
pub async fn rows_on(
    model: &Model,
    root: &Path,
    leases: Option<Vec<LeaseView>>,
    host: Option<&str>,
) -> Result<Vec<GuestRow>, LibvirtError> {
    let model = &on_host(model, host)?;
    let domains = if !rows_need_libvirt(model, root, host) {
        Vec::new()
    } else {
        conn::with_conn(&model.libvirt.uri, move |c| {
            let mut out = Vec::new();
            for d in c.all_domains()? {
                let Ok((info, _)) = conn::inactive_info(&d) else {
                    continue;
                };
                let st = conn::state(&d).map(conn::state_name).unwrap_or("unknown");
                out.push((info, st.to_string()));
            }
            Ok(out)
        })
        .await?
    };
    let mut rows = Vec::new();
    let mut seen = Vec::new();
    let lease_for = |mac: Option<Mac>| {
        leases
            .as_ref()
            .and_then(|ls| ls.iter().find(|l| Some(l.mac) == mac).cloned())
    };
    for g in &model.guests {
        let found = domains.iter().find(|(i, _)| i.name == g.name);
        let console = console_of(root, model, g);
        seen.push(g.name.clone());
        rows.push(row(
            host,
            &g.name,
            found.map(|(_, s)| s.as_str()),
            Some(g.mac),
            &g.network,
            g.ip.to_string(),
            lease_for(Some(g.mac)),
            &console,
            g.boot == crate::config::BootDevice::Disk,
        ));
    }
    for (info, st) in &domains {
        let Some(owner) = &info.owner else { continue };
        if seen.contains(&info.name) {
            continue;
        }
        let mac = info.interfaces.first().and_then(|n| n.mac);
        let console = info
            .console_log
            .clone()
            .map(PathBuf::from)
            .unwrap_or_else(|| console_log(root, model, &info.name));
        rows.push(row(
            host,
            &info.name,
            Some(st),
            mac,
            &owner.network,
            owner.ip.clone(),
            lease_for(mac),
            &console,
            false,
        ));
    }
    Ok(rows)
}

/// `guests` asks a host's libvirt only when there is something of ours to find there: config
/// guests, or (on the local one, where `guest clone` works) clones on record. `model` is that
/// host's share ([`on_host`]).
pub fn rows_need_libvirt(model: &Model, root: &Path, host: Option<&str>) -> bool {
    !model.guests.is_empty()
        || (host.is_none()
            && !crate::config::read_clone_reservations(root, &model.state_dir).is_empty())
}

/// From now on this process refuses to load libvirt: the daemon, whose guest work runs in
/// [`helper`] processes.
pub fn forbid_libvirt_in_this_process() {
    sys::forbid_in_this_process();
}

#[allow(clippy::too_many_arguments)]
fn row(
    host: Option<&str>,
    name: &str,
    state: Option<&str>,
    mac: Option<Mac>,
    network: &str,
    ip: String,
    lease: Option<LeaseView>,
    console: &Path,
    boots_disk: bool,
) -> GuestRow {
    // Another host's console log is on that host: its stage comes from the lease alone.
    let text = match host {
        None => std::fs::read(console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default(),
        Some(_) => String::new(),
    };
    let mut stage = stage::from_console(&crate::guests::strip_escapes(&text));
    if lease.is_some() {
        stage = stage.max(stage::Stage::DhcpOffered);
    }
    if boots_disk && state == Some("running") && stage == stage::Stage::Defined {
        stage = stage::Stage::DiskBoot;
    }
    GuestRow {
        name: name.to_string(),
        host: host_label(host).to_string(),
        state: state.unwrap_or("undefined").to_string(),
        mac,
        network: network.to_string(),
        ip,
        lease,
        // Not defined: nothing to report, whatever an old console log says.
        stage: if state.is_some() { stage.as_str() } else { "-" }.to_string(),
        console: match host {
            None => console.display().to_string(),
            Some(h) => format!("{h}:{}", console.display()),
        },
    }
}

/// Console logs carry terminal control sequences (SeaBIOS and iPXE draw with them) and CRs.
pub fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The `hostagent guests` table.
pub fn print_rows(rows: &[GuestRow], daemon_seen: bool) {
    // The leases' own clock.
    let now = pxe::dhcp::pool::unix_now();
    println!(
        "{:<16} {:<10} {:<10} {:<17} {:<15} {:<14} STAGE",
        "NAME", "HOST", "STATE", "MAC", "ADDRESS", "LEASE"
    );
    for r in rows {
        let lease = match (&r.lease, daemon_seen) {
            (Some(l), _) => format!("{}s left", l.expires.saturating_sub(now)),
            (None, true) => "-".to_string(),
            (None, false) => "?".to_string(),
        };
        let mac = r.mac.map_or("-".to_string(), |m| m.to_string());
        println!(
            "{:<16} {:<10} {:<10} {:<17} {:<15} {:<14} {}",
            r.name, r.host, r.state, mac, r.ip, lease, r.stage
        );
    }
    if !daemon_seen {
        println!("note: no hostagent daemon answered, so leases are unknown (`?`); stages come from the console logs only");
    }
}
