//! What the daemon answers on its control socket, from its running state.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::sync::RwLock;

use super::services::Shared;
use crate::config::Model;
use crate::control::protocol::{
    Command, GuestsReply, LeasesReply, NetworkInfo, Request, Response, StatusReply,
};
use crate::control::server::Answer;
use crate::guests::{self, LeaseView};

pub(super) struct DaemonState {
    root: PathBuf,
    model: RwLock<Model>,
    services: Shared,
    started: Instant,
}

impl DaemonState {
    pub(super) fn new(root: &Path, model: Model, services: Shared) -> Self {
        DaemonState {
            root: root.to_path_buf(),
            model: RwLock::new(model),
            services,
            started: Instant::now(),
        }
    }

    pub(super) async fn set_model(&self, model: Model) {
        *self.model.write().await = model;
    }

    async fn status(&self) -> StatusReply {
        let model = self.model.read().await;
        let networks = model
            .networks
            .iter()
            .map(|n| NetworkInfo {
                name: n.name.clone(),
                mode: n.mode.as_str().to_string(),
                bridge: n.bridge.clone(),
                address: n.address,
                address6: n.ipv6.as_ref().map(|v| v.address),
            })
            .collect();
        let servers = self.services.lock().await.status();
        StatusReply {
            config: model.source.display().to_string(),
            uptime_seconds: self.started.elapsed().as_secs(),
            agent: model.leases.agent.clone(),
            lease_backend: model.leases.backend.name().to_string(),
            networks,
            servers,
        }
    }

    /// Guests with the daemon's leases; libvirt is asked by a guest helper process.
    async fn guests(&self) -> Response {
        let model = self.model.read().await.clone();
        let leases: Vec<LeaseView> = self
            .services
            .lock()
            .await
            .leases()
            .iter()
            .flat_map(|n| &n.leases)
            .map(LeaseView::from)
            .collect();
        match guests::helper::rows(&model, &self.root, leases).await {
            Ok(guests) => Response::Guests(GuestsReply { guests }),
            Err(e) => Response::error(format!("guests: {e:#}")),
        }
    }
}

impl Answer for DaemonState {
    async fn answer(&self, request: Request) -> Response {
        match request.cmd {
            Command::Status => Response::Status(self.status().await),
            Command::Leases => Response::Leases(LeasesReply {
                leases: self.services.lock().await.leases(),
            }),
            Command::Guests => self.guests().await,
        }
    }
}
