//! hostagent's configuration: TOML file → checked `Model` → netcfg/pxe types.
//!
//! Layers, kept apart so the file format can change without the rest of the agent noticing:
//! - `wire`: serde types mirroring the file, with positions (`toml::Spanned`);
//! - `validate` (+ `checks`, `units`): every rule, all problems collected with positions and hints;
//! - `model`: the validated config the agent uses;
//! - `convert`: model → `netcfg::Desired`, `pxe::config::DhcpConfig`, file services,
//!   `dns::ServerConfig`.

mod checks;
mod convert;
mod error;
mod model;
mod toml_error;
mod units;
mod validate;
mod wire;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use convert::host_resolvers;
pub use convert::{
    clone_reservations_file, describe_upstreams, guest_script_path, guest_scripts_dir,
    read_clone_reservations, DnsService, ExtraReservation, GuestResolvers, DNS_PORT,
};
pub use error::{ConfigError, Diagnostic};
pub use model::{
    guest_mac, BootDevice, Dhcp, DhcpDefaults, DiskBus, DiskFormat, DiskSource, Dns, DnsHost,
    Forward, Guest, GuestDisk, GuestFirmware, LeaseBackend, Leases, Libvirt, LibvirtHost, Mode,
    Model, Network, Pxe, StaticHost, Upstream, VirtType, DEFAULT_LEASE_TIME, DEFAULT_LIBVIRT_POOL,
    DEFAULT_LIBVIRT_URI, DEFAULT_PORT_RATE_LIMIT, DEFAULT_STATE_DIR, LOCAL_HOST, MIN_LEASE_TIME,
    PORT_RATE_LIMIT_RANGE,
};
pub use units::{parse_duration, parse_size};

/// A guest name given on the command line (clone targets): a DNS label, as in the config.
pub fn check_guest_name(name: &str) -> Result<(), String> {
    checks::hostname(name).map_err(|b| format!("{} ({})", b.message, b.hint))
}

/// Reads and checks a config file. Nothing on the host is touched.
pub fn load(path: &Path) -> Result<Model, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Checks config text; `path` is used in messages and recorded as `Model::source`.
pub fn parse(text: &str, path: &Path) -> Result<Model, ConfigError> {
    let locate = |mut problems: Vec<error::Problem>| {
        // Checks run section by section; report in file order, as a reader goes through it.
        problems.sort_by_key(|p| p.span.start);
        ConfigError::Invalid(
            problems
                .into_iter()
                .map(|p| error::Diagnostic::locate(path, text, p))
                .collect(),
        )
    };
    let file: wire::File =
        toml::from_str(text).map_err(|e| locate(vec![toml_error::problem(&e, text)]))?;
    validate::validate(file, text, path).map_err(locate)
}
