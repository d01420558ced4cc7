//! hostagent's network-boot services: DHCPv4 with durable leases and firmware-aware boot
//! replies, TFTP and HTTP boot over one read-only root.

pub mod config;
pub mod dhcp;
pub mod dhcp6;
pub mod http;
pub mod leases;
pub mod saferoot;
mod server_thread;
pub mod tftp;
