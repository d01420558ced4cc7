//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub const DEFAULT_CONFIG: &str = "/etc/hostagent/hostagent.toml";

#[derive(Debug, Parser)]
#[command(
    name = "hostagent",
    version,
    about = "Turns this machine into a ready KVM host: guest networks, firewall, sysctl, vhost-net, and DHCP/TFTP/HTTP network boot"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(short = 'c', long = "config", global = true, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Prefix for every file the agent reads or writes outside /proc/sys/net and netlink
    /// (sysctl.d, modprobe.d, /sys/module, state_dir, /run/hostagent, resolv.conf, the boot root).
    #[arg(long, global = true, default_value = "/")]
    pub root: PathBuf,
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Is this a usable KVM host? PASS/WARN/FAIL lines with a hint each; exit 1 on any FAIL.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Show what `apply` would change; exit 0 when nothing would, 2 when something would.
    Plan {
        #[arg(long)]
        json: bool,
    },
    /// Make the host match the config (idempotent; undone on failure).
    Apply,
    /// Remove exactly what the agent created (guests only with --guests).
    Down {
        /// Also stop and undefine the config's guests (their disk images are kept).
        #[arg(long)]
        guests: bool,
    },
    /// Apply, then serve DHCP, TFTP and HTTP boot until SIGTERM/SIGINT; SIGHUP reloads the config.
    Run {
        /// Remove the agent's networks when stopping.
        #[arg(long)]
        down_on_exit: bool,
    },
    /// Ask the running daemon for its networks, servers and counters.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List the running daemon's DHCP leases.
    Leases {
        #[arg(long)]
        json: bool,
    },
    /// List the guests: state, MAC, address, lease and install stage.
    Guests {
        #[arg(long)]
        json: bool,
    },
    /// Operate on one libvirt guest.
    Guest {
        #[command(subcommand)]
        op: GuestOp,
    },
    /// The daemon's libvirt calls, in a process of their own (`guests::helper`); started by
    /// `hostagent run`, reads its call on stdin.
    #[command(name = "guest-helper", hide = true)]
    GuestHelper,
}

#[derive(Debug, Subcommand)]
pub enum GuestOp {
    /// Clone a shut-off guest (like virt-clone): new name, UUID, MAC, reservation, disks.
    Clone {
        source: String,
        new: String,
        /// Make N clones named NEW-1 … NEW-N.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Full disk copies instead of qcow2 overlays on the source's disks.
        #[arg(long)]
        full: bool,
    },
    /// Move IDE/SATA/SCSI disks and non-virtio NICs to virtio in the persistent definition.
    Virtio {
        name: String,
        /// Allow a running guest: the change applies from its next start.
        #[arg(long)]
        next_boot: bool,
    },
    /// Turn vhost-net on or off for the guest's virtio NICs.
    Vhost {
        name: String,
        #[arg(value_enum)]
        state: OnOff,
        /// Allow a running guest: the change applies from its next start.
        #[arg(long)]
        next_boot: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}
