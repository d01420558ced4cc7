//! The hostagent binary's library half: config loading and validation, the daemon, the control
//! socket. Kept as a library so unit tests and fuzz targets can reach it.

pub mod config;
