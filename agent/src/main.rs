//! `hostagent`: one declarative config, one binary, a ready KVM host.

use std::process::ExitCode;

use clap::Parser;

use hostagent::cli::{Cli, Command};
use hostagent::{control, daemon, hostcmd, logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
            Command::Down => hostcmd::down(&cli).await,
            Command::Run { down_on_exit } => daemon::run(&cli, *down_on_exit).await,
            Command::Status { json } => control::client_status(&cli, *json).await,
            Command::Leases { json } => control::client_leases(&cli, *json).await,
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
