//! The hostagent binary's library half: CLI, config loading and validation, host commands, the
//! daemon and its control socket. A library so unit tests and fuzz targets can reach it.

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod guest_dns;
pub mod guestcmd;
pub mod guests;
pub mod hostcmd;
pub mod lock;
pub mod logging;
