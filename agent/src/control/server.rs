//! The daemon's side of the control socket: a root-only Unix socket under ROOT/run/hostagent
//! that reads one request line and writes one reply line. What a request is answered with is the
//! daemon's business ([`Answer`]); this module owns the socket, its permissions and the framing.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use super::protocol::{socket_path, ErrorReply, Request, Response};

/// Longest request line accepted; anything longer is garbage.
const MAX_REQUEST: u64 = 4096;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers well-formed requests (the daemon implements it over its running state).
pub trait Answer: Send + Sync + 'static {
    fn answer(&self, request: Request) -> impl Future<Output = Response> + Send;
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

/// Bind ROOT/run/hostagent/control.sock (directory 0700, socket 0600) and answer on it until
/// [`ControlServer::shutdown`]. Refuses to start while another daemon answers on the socket.
pub async fn serve<A: Answer>(root: &Path, answers: Arc<A>) -> Result<ControlServer> {
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
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let answers = answers.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(stream, &*answers).await {
                    tracing::debug!("control connection: {e:#}");
                }
            });
        }
    });
    Ok(ControlServer { path, task })
}

async fn handle(stream: UnixStream, answers: &impl Answer) -> Result<()> {
    // Root-only: the directory and socket modes already say so; the peer's uid is checked too, so
    // a loosened mode never opens the daemon to other users.
    let cred = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    let response = if cred.uid() != 0 {
        Response::error("permission denied: the control socket is root-only")
    } else {
        let mut line = String::new();
        let mut reader = BufReader::new(read.take(MAX_REQUEST));
        tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line))
            .await
            .context("request timed out")??;
        match parse_request(&line) {
            Ok(request) => answers.answer(request).await,
            Err(refusal) => Response::Error(refusal),
        }
    };
    let mut out = serde_json::to_string(&response).context("encoding the reply")?;
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    Ok(())
}

/// A request line, or the error reply that says what to send instead.
pub(super) fn parse_request(line: &str) -> Result<Request, ErrorReply> {
    serde_json::from_str::<Request>(line.trim()).map_err(|e| ErrorReply {
        error: format!(
            "bad request: {e}; send one JSON line such as {{\"cmd\":\"status\"}}, {{\"cmd\":\"leases\"}} or {{\"cmd\":\"guests\"}}"
        ),
    })
}
