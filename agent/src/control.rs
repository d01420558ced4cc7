//! Control socket: a root-only Unix socket under ROOT/run/hostagent, one JSON request line in,
//! one JSON response line out. `hostagent status` and `hostagent leases` are its clients.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::RwLock;
use tokio::task::JoinHandle;

use crate::cli::Cli;
use crate::config::Model;
use crate::daemon::services::Shared;

/// Longest request line accepted; anything longer is garbage.
const MAX_REQUEST: u64 = 4096;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub fn socket_path(root: &Path) -> PathBuf {
    root.join("run/hostagent/control.sock")
}

pub struct DaemonState {
    model: RwLock<Model>,
    services: Shared,
    started: Instant,
}

impl DaemonState {
    pub fn new(model: Model, services: Shared) -> Self {
        DaemonState {
            model: RwLock::new(model),
            services,
            started: Instant::now(),
        }
    }
    pub async fn set_model(&self, model: Model) {
        *self.model.write().await = model;
    }
}

/// One request line: `{"cmd":"status"}` or `{"cmd":"leases"}`; anything else is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    cmd: Command,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Command {
    Status,
    Leases,
    Guests,
}

#[derive(Serialize, Deserialize)]
struct NetworkInfo {
    name: String,
    mode: String,
    bridge: String,
    address: Option<String>,
}

pub struct ControlServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl ControlServer {
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.path);
    }
}

pub async fn serve(root: &Path, state: Arc<DaemonState>) -> Result<ControlServer> {
    let path = socket_path(root);
    let dir = path.parent().context("socket path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 700 {}", dir.display()))?;
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            anyhow::bail!(
                "another hostagent is already running (it answers on {}); stop it first",
                path.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))?;
    let root = root.to_path_buf();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            let root = root.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(stream, &state, &root).await {
                    tracing::debug!("control connection: {e:#}");
                }
            });
        }
    });
    Ok(ControlServer { path, task })
}

async fn handle(stream: UnixStream, state: &DaemonState, root: &Path) -> Result<()> {
    // Root-only: the directory and socket modes already say so; the peer's uid is checked too, so
    // a loosened mode never opens the daemon to other users.
    let cred = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    if cred.uid() != 0 {
        let resp =
            serde_json::json!({"error": "permission denied: the control socket is root-only"});
        write.write_all(format!("{resp}\n").as_bytes()).await?;
        return Ok(());
    }
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line))
        .await
        .context("request timed out")??;
    let resp = match serde_json::from_str::<Request>(line.trim()) {
        Ok(Request {
            cmd: Command::Status,
        }) => status(state).await,
        Ok(Request {
            cmd: Command::Leases,
        }) => {
            let leases = state.services.lock().await.leases();
            serde_json::json!({ "leases": leases })
        }
        Ok(Request {
            cmd: Command::Guests,
        }) => guests(state, root).await,
        Err(e) => serde_json::json!({
            "error": format!("bad request: {e}; send one JSON line such as {{\"cmd\":\"status\"}} or {{\"cmd\":\"leases\"}}")
        }),
    };
    write.write_all(format!("{resp}\n").as_bytes()).await?;
    Ok(())
}

async fn status(state: &DaemonState) -> serde_json::Value {
    let model = state.model.read().await;
    let networks: Vec<NetworkInfo> = model
        .networks
        .iter()
        .map(|n| NetworkInfo {
            name: n.name.clone(),
            mode: n.mode.as_str().to_string(),
            bridge: n.bridge.clone(),
            address: n.address.map(|a| a.to_string()),
        })
        .collect();
    let servers = state.services.lock().await.status();
    serde_json::json!({
        "config": model.source.display().to_string(),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "networks": networks,
        "servers": servers,
    })
}

/// Guests with the daemon's leases; libvirt is asked on the blocking pool.
async fn guests(state: &DaemonState, root: &Path) -> serde_json::Value {
    let model = state.model.read().await.clone();
    let leases = crate::guests::commands::lease_views(&state.services.lock().await.leases());
    match crate::guests::rows(&model, root, Some(leases)).await {
        Ok(rows) => serde_json::json!({ "guests": rows }),
        Err(e) => serde_json::json!({ "error": format!("guests: {e}") }),
    }
}

pub(crate) async fn request(cli: &Cli, cmd: &str) -> Result<serde_json::Value> {
    let path = socket_path(&cli.root);
    let mut stream = UnixStream::connect(&path).await.with_context(|| {
        format!(
            "cannot reach the daemon at {}: is `hostagent run` running (as root)?",
            path.display()
        )
    })?;
    stream
        .write_all(format!("{{\"cmd\":\"{cmd}\"}}\n").as_bytes())
        .await?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await?;
    let v: serde_json::Value =
        serde_json::from_str(&line).context("daemon sent a malformed answer")?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        anyhow::bail!("daemon: {err}");
    }
    Ok(v)
}

pub async fn client_status(cli: &Cli, json: bool) -> Result<ExitCode> {
    let v = request(cli, "status").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "config: {}  uptime: {}s",
        v["config"].as_str().unwrap_or("?"),
        v["uptime_seconds"]
    );
    println!(
        "{:<14} {:<9} {:<15} {:<18}",
        "NETWORK", "MODE", "BRIDGE", "ADDRESS"
    );
    for n in v["networks"].as_array().into_iter().flatten() {
        println!(
            "{:<14} {:<9} {:<15} {:<18}",
            n["name"].as_str().unwrap_or(""),
            n["mode"].as_str().unwrap_or(""),
            n["bridge"].as_str().unwrap_or(""),
            n["address"].as_str().unwrap_or("-")
        );
    }
    for s in v["servers"].as_array().into_iter().flatten() {
        println!("{}:", s["network"].as_str().unwrap_or(""));
        for kind in ["dhcp", "tftp", "http"] {
            if let Some(obj) = s[kind].as_object() {
                let fields: Vec<String> = obj.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("  {kind:<5} {}", fields.join(" "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn client_leases(cli: &Cli, json: bool) -> Result<ExitCode> {
    let v = request(cli, "leases").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v["leases"])?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!(
        "{:<12} {:<17} {:<15} {:<20} EXPIRES IN",
        "NETWORK", "MAC", "IP", "HOSTNAME"
    );
    for net in v["leases"].as_array().into_iter().flatten() {
        let name = net["network"].as_str().unwrap_or("");
        for l in net["leases"].as_array().into_iter().flatten() {
            let mac: Vec<String> = l["mac"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| format!("{:02x}", b.as_u64().unwrap_or(0)))
                .collect();
            let expires = l["expires"].as_u64().unwrap_or(0);
            println!(
                "{:<12} {:<17} {:<15} {:<20} {}s",
                name,
                mac.join(":"),
                l["ip"].as_str().unwrap_or(""),
                l["hostname"].as_str().unwrap_or("-"),
                expires.saturating_sub(now)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
