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

    // Guests last: their PXE boot needs the DHCP/TFTP servers above. A libvirt problem is logged,
    // not fatal: the networks and boot services keep serving.
    start_guests(cli, &model).await;

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

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut current: Model = model;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                let _host = host_lock.lock().await;
                match reload(cli, &current, &services).await {
                    Ok(new) => {
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
    start_guests(cli, &new).await;
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

async fn start_guests(cli: &Cli, model: &Model) {
    if let Err(e) = crate::guests::apply(model, &cli.root).await {
        tracing::error!("guests: {e:#}");
    }
}
