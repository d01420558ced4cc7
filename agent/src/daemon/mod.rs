//! `hostagent run`: apply the host config, serve DHCP/TFTP/HTTP/DNS on every network that asks
//! for them, answer the control socket, reload on SIGHUP, stop cleanly on SIGTERM/SIGINT.

mod answers;
mod dns;
pub mod drift;
pub mod lease_names;
pub mod privileges;
pub mod services;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::Cli;
use crate::config::Model;
use crate::lock::HostLock;
use crate::{control, hostcmd};
use services::Services;

pub async fn run(cli: &Cli, down_on_exit: bool) -> Result<ExitCode> {
    // Guest work runs in helper processes (`guests::helper`): libvirt, once loaded, would stay
    // mapped in the daemon for good.
    crate::guests::forbid_libvirt_in_this_process();
    // Handlers first: a SIGHUP (`systemctl reload`) or SIGTERM that arrives while the host is
    // applied or privileges are dropped is then held for the loop below, instead of taking the
    // default action (exit) half-way through start-up. The control socket answering is the
    // readiness sign, and it opens after this.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let model = hostcmd::load(cli)?;
    warn_about_guest_dns(cli, &model);
    let host = hostcmd::host_for(cli, &model);
    // Held until this function returns: no `apply` or `down` runs while the daemon does.
    let _lock = HostLock::acquire(&cli.root, "run")?;
    hostcmd::apply_model(&host, &model)
        .await
        .context("applying the host config")?;

    let services = Arc::new(tokio::sync::Mutex::new(Services::default()));
    let errors = services.lock().await.reconcile(&model, &cli.root).await;
    if !errors.is_empty() {
        services.lock().await.stop_all().await;
        let text: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
        anyhow::bail!(
            "could not start the boot services:\n  {}",
            text.join("\n  ")
        );
    }

    let state = Arc::new(answers::DaemonState::new(
        &cli.root,
        model.clone(),
        services.clone(),
    ));
    let control = control::server::serve(&cli.root, state.clone())
        .await
        .context("control socket")?;
    tracing::info!(config = %cli.config.display(), networks = model.networks.len(), "hostagent running");

    // Drift repair sees the running config through `model_tx`; `host_lock` keeps its applies and
    // a SIGHUP reload's apart.
    let (model_tx, model_rx) = tokio::sync::watch::channel(model.clone());
    let host_lock = Arc::new(tokio::sync::Mutex::new(()));
    let drift = drift::spawn(drift::Context {
        root: cli.root.clone(),
        model: model_rx,
        services: services.clone(),
        host_lock: host_lock.clone(),
    })?;
    // Everything is bound and applied: keep only what repairs, reloads and restarts need.
    match privileges::drop_privileges() {
        Ok(d) => {
            tracing::info!(kept = %d.kept.join(","), threads = d.threads, "privileges dropped")
        }
        Err(e) => {
            drift.stop().await;
            control.shutdown().await;
            services.lock().await.stop_all().await;
            return Err(anyhow::anyhow!(e).context("dropping privileges"));
        }
    }

    // Guests last: their PXE boot needs the DHCP/TFTP servers above. In the background, in a
    // helper process: a slow or broken libvirt is logged and never delays or stops the networks,
    // the boot services or the control socket.
    let guests = GuestApplies::new(&cli.root);
    guests.spawn(model.clone());

    let mut current: Model = model;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                let _host = host_lock.lock().await;
                match reload(cli, &current, &services).await {
                    Ok(new) => {
                        guests.spawn(new.clone());
                        state.set_model(new.clone()).await;
                        model_tx.send_replace(new.clone());
                        current = new;
                    }
                    Err(e) => tracing::error!("reload failed, keeping the running config: {e:#}"),
                }
            }
        }
    }

    drift.stop().await;
    control.shutdown().await;
    services.lock().await.stop_all().await;
    if down_on_exit {
        let host = hostcmd::host_for(cli, &current);
        match netcfg::teardown(&host).await {
            Ok(report) => tracing::info!("down on exit: {report}"),
            Err(e) => {
                tracing::error!("down on exit: {e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP: read the config again; a bad one is reported and the running one kept. Otherwise the
/// host is brought to the new config and only servers whose settings changed are restarted.
async fn reload(cli: &Cli, current: &Model, services: &services::Shared) -> Result<Model> {
    let new = hostcmd::load(cli).context("SIGHUP: the new config is invalid")?;
    warn_about_guest_dns(cli, &new);
    if new.state_dir != current.state_dir {
        anyhow::bail!(
            "state_dir changed from {} to {}: restart the daemon to move its state",
            current.state_dir.display(),
            new.state_dir.display()
        );
    }
    let host = hostcmd::host_for(cli, &new);
    let n = hostcmd::apply_model(&host, &new).await?;
    let errors = services.lock().await.reconcile(&new, &cli.root).await;
    for e in &errors {
        tracing::error!("{e:#}");
    }
    tracing::info!(
        host_changes = n,
        server_errors = errors.len(),
        "SIGHUP: config reloaded"
    );
    Ok(new)
}

/// What `plan` warns about, in the log: a network whose guests get no resolver, say.
fn warn_about_guest_dns(cli: &Cli, model: &Model) {
    for f in crate::guest_dns::findings(model, &cli.root) {
        if !f.ok {
            tracing::warn!(network = %f.network, hint = %f.hint, "{}", f.message);
        }
    }
}

/// Defining and starting the config's missing guests, each time in a guest helper process, one
/// run at a time in the order the configs came (a reload's run waits for the one before, so two
/// never define the same guest).
struct GuestApplies {
    root: std::path::PathBuf,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl GuestApplies {
    fn new(root: &std::path::Path) -> GuestApplies {
        GuestApplies {
            root: root.to_path_buf(),
            one_at_a_time: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn spawn(&self, model: Model) {
        if model.guests.is_empty() {
            return;
        }
        let (root, lock) = (self.root.clone(), self.one_at_a_time.clone());
        // Not awaited: stopping the daemon drops the task, and with it kills its helper.
        drop(tokio::spawn(async move {
            let _turn = lock.lock().await;
            match crate::guests::helper::apply(&model, &root).await {
                Ok(done) if !done.is_empty() => {
                    tracing::info!(steps = done.len(), "guests applied")
                }
                Ok(_) => {}
                Err(e) => tracing::error!("guests: {e:#}"),
            }
        }));
    }
}
