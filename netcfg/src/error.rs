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
    /// A device with the bridge's name exists and is not the agent's (see
    /// [`crate::owned::ownership`]): never adopt or delete it. `why` says which mark is missing.
    #[error(
        "network {network:?}: a device named {bridge} already exists and is not hostagent's \
         ({why}); rename the network's bridge in the config or remove the foreign device \
         (`ip link del {bridge}`)"
    )]
    ForeignBridge {
        network: String,
        bridge: String,
        why: String,
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
    /// A port to take over is run by another network manager.
    #[error(
        "network {network:?}: {port} is managed by {manager} ({evidence}); hostagent will not take          its addresses over behind {manager}'s back\n  hint: {hint}"
    )]
    Managed {
        network: String,
        port: String,
        manager: String,
        evidence: String,
        hint: String,
    },
    /// A port's addresses cannot be taken over safely; `why` says what to change.
    #[error("network {network:?}: {why}")]
    Takeover { network: String, why: String },
    /// The state file (owned.json) cannot be parsed.
    #[error("{path}: corrupt state file: {msg}; move it away to start over (the agent then owns nothing)")]
    State { path: PathBuf, msg: String },
    /// A sysctl key with no file behind it.
    #[error(
        "sysctl {key}: no such kernel setting ({path} does not exist){}",
        ipv6_hint(key)
    )]
    NoSuchSysctl { key: String, path: PathBuf },
    /// Running `nft` failed, or nft said the table is absent where it must exist.
    #[error(transparent)]
    Nft(#[from] crate::nft::NftError),
    /// A bridge name that cannot be written inside an nft quoted string.
    #[error("bridge name {0:?} cannot be used in an nftables rule; use letters, digits, '-', '_' or '.'")]
    NftName(String),
    /// A bridge the plan names changed between `plan` and `apply` (deleted, or replaced by another
    /// device under the same name).
    #[error("bridge {name} changed since the plan was made ({what}); run the plan again")]
    Stale { name: String, what: String },
    /// A foreign firewall's tool (iptables-nft, firewall-cmd) failed or is missing; the text
    /// says which command and carries its message.
    #[error("{0}")]
    Coexist(String),
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

/// What a missing IPv6 key most likely means.
fn ipv6_hint(key: &str) -> &'static str {
    if key.starts_with("net.ipv6.") {
        "; this kernel runs without IPv6 (booted with ipv6.disable=1?): remove address6 from the config, or enable IPv6"
    } else {
        ""
    }
}
