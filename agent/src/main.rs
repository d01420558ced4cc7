//! `hostagent`: one declarative config, one binary, a ready KVM host.

use std::process::ExitCode;

use clap::Parser;

use hostagent::cli::{Cli, Command, GuestOp, OnOff};
use hostagent::control::client;
use hostagent::{daemon, guestcmd, hostcmd, logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match &cli.command {
            Command::Check { json } => hostcmd::check(&cli, *json).await,
            Command::Plan { json } => hostcmd::plan(&cli, *json).await,
            Command::Apply => hostcmd::apply(&cli).await,
            Command::Down { guests } => hostcmd::down(&cli, *guests).await,
            Command::Run { down_on_exit } => daemon::run(&cli, *down_on_exit).await,
            Command::Status { json } => client::status(&cli.root, *json).await,
            Command::Leases { json } => client::leases(&cli.root, *json).await,
            Command::Guests { json } => guestcmd::list(&cli, *json).await,
            Command::GuestHelper => hostagent::guests::helper::serve().await,
            Command::Guest { op } => match op {
                GuestOp::Clone {
                    source,
                    new,
                    count,
                    full,
                } => guestcmd::clone(&cli, source, new, *count, *full).await,
                GuestOp::Virtio { name, next_boot } => {
                    guestcmd::virtio(&cli, name, *next_boot).await
                }
                GuestOp::Vhost {
                    name,
                    state,
                    next_boot,
                } => guestcmd::vhost(&cli, name, *state == OnOff::On, *next_boot).await,
            },
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // Config errors already read `FILE:LINE:COL: error: ...` with hints: print them as-is.
            match e.downcast_ref::<hostagent::config::ConfigError>() {
                Some(ce) => eprintln!("{ce}"),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
