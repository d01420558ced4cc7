//! `hostagent`: one declarative config, one binary, a ready KVM host.

use std::process::ExitCode;

use clap::Parser;

use hostagent::cli::{Cli, Command, GuestOp, OnOff};
use hostagent::control::client;
use hostagent::{daemon, guestcmd, hostcmd, logging};

fn main() -> ExitCode {
    one_malloc_arena();
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

/// One malloc arena for every thread. glibc gives each thread that allocates an arena of its own
/// (up to 8 per CPU: the runtime's workers, each network's DHCP thread, each TFTP transfer), and
/// the pages each one touched stay resident: measured, 2–3 MiB of the idle daemon's 5–6 MiB of
/// heap with 4 networks and 3 guests (bench/run.sh memory sections, MALLOC_ARENA_MAX=1 against
/// glibc's default). Each thread's tcache still serves most small allocations without taking the
/// arena's lock. Called before any thread starts; `MALLOC_ARENA_MAX` in the environment is
/// overridden.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
