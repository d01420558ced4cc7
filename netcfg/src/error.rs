//! netcfg's typed errors.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A device with the bridge's name exists and is not the agent's: never adopt or delete it.
    #[error(
        "network {network:?}: a device named {bridge} already exists and is not hostagent's \
         (no `hostagent:` alias mark and not recorded in {state}); rename the network's bridge \
         in the config or remove the foreign device (`ip link del {bridge}`)"
    )]
    ForeignBridge {
        network: String,
        bridge: String,
        state: PathBuf,
    },
    /// A device with the bridge's name exists but is not a bridge.
    #[error("network {network:?}: {bridge} exists but is a {kind} device, not a bridge; rename the network's bridge")]
    NotABridge {
        network: String,
        bridge: String,
        kind: String,
    },
    /// mode = bridge lists a host port that does not exist or belongs to another master.
    #[error("network {network:?}: interface {port} {problem}")]
    Port {
        network: String,
        port: String,
        problem: String,
    },
    /// The state file (owned.json) cannot be parsed.
    #[error("{path}: corrupt state file: {msg}; move it away to start over (the agent then owns nothing)")]
    State { path: PathBuf, msg: String },
    /// A sysctl key with no file behind it.
    #[error("sysctl {key}: no such kernel setting ({path} does not exist)")]
    NoSuchSysctl { key: String, path: PathBuf },
    /// nftables failed; `stderr` is nft's own message, verbatim.
    #[error("nftables: {0}")]
    Nft(String),
    /// The `nft` command failed (added by the nft module); `stderr` is nft's own message, verbatim.
    #[error("nft {action} failed:\n{stderr}")]
    NftCommand { action: String, stderr: String },
    /// No `nft` binary on PATH.
    #[error("the `nft` command was not found on PATH; install the `nftables` package")]
    NftMissing,
    /// `nft -j` printed something we cannot read.
    #[error("cannot read `nft -j` output: {0}")]
    NftOutput(String),
    /// A bridge name that cannot be written inside an nft quoted string.
    #[error("bridge name {0:?} cannot be used in an nftables rule; use letters, digits, '-', '_' or '.'")]
    NftName(String),
    /// HOSTAGENT_FAIL_AFTER_STEPS test hook.
    #[error("injected failure after {0} step(s) (HOSTAGENT_FAIL_AFTER_STEPS)")]
    Injected(usize),
    /// After apply the host still differs from the config.
    #[error("read-back after apply still differs from the config: {}", .0.join("; "))]
    ReadBack(Vec<String>),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
