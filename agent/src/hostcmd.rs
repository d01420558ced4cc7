//! The one-shot host commands: check, plan, apply, down.

use std::process::ExitCode;

use anyhow::{Context, Result};
use netcfg::check::{CheckResult, Status};
use netcfg::Host;

use crate::cli::Cli;
use crate::config::{self, Model};
use crate::guest_dns;
use crate::lock::HostLock;

/// Load and validate the config; a config error is printed as-is (it already names file:line:col).
pub fn load(cli: &Cli) -> Result<Model> {
    Ok(config::load(&cli.config)?)
}

pub fn host_for(cli: &Cli, model: &Model) -> Host {
    Host::new(&cli.root, &model.state_dir)
}

pub async fn check(cli: &Cli, json: bool) -> Result<ExitCode> {
    // The config is optional for `check`: without one we still validate the host itself.
    // An explicit -c that is missing is an error; the default path may be absent on a host that
    // only wants the checks.
    let explicit = cli.config.as_path() != std::path::Path::new(crate::cli::DEFAULT_CONFIG);
    let model = if explicit || cli.config.exists() {
        Some(load(cli)?)
    } else {
        None
    };
    let host = match &model {
        Some(m) => host_for(cli, m),
        None => Host::new(&cli.root, "/var/lib/hostagent"),
    };
    let mut results = netcfg::check::check(&host);
    let desired = model.as_ref().map(|m| m.desired());
    results.extend(netcfg::coexist::check(&host, desired.as_ref()));
    // The libvirt side, on each host with guests: daemon, QEMU driver, KVM vs TCG, overcommit.
    match &model {
        None => {
            let none = crate::config::Libvirt::default();
            results.extend(crate::guests::check::checks(&none, &[]).await);
        }
        Some(m) => {
            for h in crate::guests::hosts(m) {
                let share = crate::guests::on_host(m, h.as_deref())?;
                for mut r in crate::guests::check::checks(&share.libvirt, &share.guests).await {
                    if let Some(h) = &h {
                        r.name = format!("{} on host {h}", r.name);
                    }
                    results.push(r);
                }
            }
        }
    }
    // What guests get for DNS, per network (needs the config).
    if let Some(m) = &model {
        results.extend(
            guest_dns::findings(m, &cli.root)
                .into_iter()
                .map(|f| CheckResult {
                    name: format!("dns on {}", f.network),
                    status: if f.ok { Status::Pass } else { Status::Warn },
                    detail: f.message,
                    hint: f.hint,
                }),
        );
    }
    let failed = results.iter().any(|r| r.status == Status::Fail);
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            print_check(r);
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_check(r: &CheckResult) {
    let tag = match r.status {
        Status::Pass => "PASS",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
    };
    println!("{tag:<5} {:<28} {}", r.name, r.detail);
    if r.status != Status::Pass && !r.hint.is_empty() {
        println!("      hint: {}", r.hint);
    }
}

pub async fn plan(cli: &Cli, json: bool) -> Result<ExitCode> {
    let model = load(cli)?;
    let host = host_for(cli, &model);
    let desired = model.desired();
    let plan = netcfg::plan::plan(&host, &desired)
        .await
        .context("reading the host's current state")?;
    let guest_plan = crate::guests::plan(&model, &cli.root)
        .await
        .context("planning the guests")?;
    let warnings: Vec<guest_dns::Finding> = guest_dns::findings(&model, &cli.root)
        .into_iter()
        .filter(|f| !f.ok)
        .collect();
    if json {
        let mut v = serde_json::to_value(&plan)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("guests".into(), serde_json::to_value(&guest_plan)?);
            obj.insert("warnings".into(), serde_json::to_value(&warnings)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if plan.actions.is_empty() && guest_plan.actions.is_empty() {
        println!(
            "nothing to change: the host matches {}",
            cli.config.display()
        );
    } else {
        println!(
            "hostagent apply would make {} change{} for {}:",
            plan.actions.len() + guest_plan.actions.len(),
            if plan.actions.len() + guest_plan.actions.len() == 1 {
                ""
            } else {
                "s"
            },
            cli.config.display()
        );
        for (i, a) in plan.actions.iter().enumerate() {
            println!("  {:>2}. {a}", i + 1);
        }
        for (i, a) in guest_plan.actions.iter().enumerate() {
            println!("  {:>2}. {a}", plan.actions.len() + i + 1);
        }
    }
    if !json {
        for note in plan.notes.iter().chain(&guest_plan.notes) {
            println!("note: {note}");
        }
        for w in &warnings {
            println!(
                "warning: network {}: {}\n  hint: {}",
                w.network, w.message, w.hint
            );
        }
    }
    let changes = plan.actions.len() + guest_plan.actions.len();
    Ok(if changes == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Plan and apply; shared by `apply` and `run`.
pub async fn apply_model(host: &Host, model: &Model) -> Result<usize> {
    let desired = model.desired();
    let plan = netcfg::plan::plan(host, &desired)
        .await
        .context("reading the host's current state")?;
    if plan.actions.is_empty() {
        tracing::info!("host already matches the config: nothing to change");
        return Ok(0);
    }
    for a in &plan.actions {
        tracing::info!(action = %a, "apply");
    }
    let n = plan.actions.len();
    let report = netcfg::apply(host, &plan)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for note in &report.notes {
        tracing::warn!("{note}");
    }
    Ok(n)
}

pub async fn apply(cli: &Cli) -> Result<ExitCode> {
    let model = load(cli)?;
    let host = host_for(cli, &model);
    let _lock = HostLock::acquire(&cli.root, "apply")?;
    let n = apply_model(&host, &model).await?;
    // Guests after the networks they plug into; existing guests are never changed.
    let guest_changes = crate::guests::apply(&model, &cli.root)
        .await
        .context("defining the guests")?;
    for line in &guest_changes {
        println!("{line}");
    }
    let n = n + guest_changes.len();
    if n == 0 {
        println!(
            "nothing to change: the host matches {}",
            cli.config.display()
        );
    } else {
        println!("applied {n} change{}", if n == 1 { "" } else { "s" });
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn down(cli: &Cli, guests: bool) -> Result<ExitCode> {
    let model = load(cli)?;
    let host = host_for(cli, &model);
    let _lock = HostLock::acquire(&cli.root, "down")?;
    if guests {
        for line in crate::guests::down(&model)
            .await
            .context("removing the guests")?
        {
            println!("{line}");
        }
    }
    let report = netcfg::teardown(&host)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
