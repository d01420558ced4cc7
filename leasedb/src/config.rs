//! What the agent says about its lease database (`[leases]`), and the one check of a URL that
//! config validation and the connection pool share.

use std::str::FromStr;
use std::time::Duration;

/// Connections per agent (all its networks together) when `pool_size` is left out.
pub const DEFAULT_POOL_SIZE: u32 = 4;
/// The accepted pool sizes.
pub const POOL_SIZE_RANGE: std::ops::RangeInclusive<u32> = 1..=64;
/// How long to wait for a connection (new, or free in the pool) by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one statement may run (or wait for a row another agent has locked) by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The socket directory used when the URL names no host (Debian's).
pub const DEFAULT_SOCKET_DIR: &str = "/run/postgresql";

/// How to reach the lease database and who this agent is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    /// `postgres://…` or `postgresql://…`; a unix socket as `postgresql:///DB?host=/DIR`.
    pub url: String,
    /// This agent's name in the database: every lease it grants carries it.
    pub agent: String,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    /// Longest a statement may run, and longest it may wait for a row lock.
    pub timeout: Duration,
}

impl DbConfig {
    /// `url` for `agent` with the default pool size and timeouts.
    pub fn new(url: &str, agent: &str) -> DbConfig {
        DbConfig {
            url: url.to_string(),
            agent: agent.to_string(),
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The connection settings of `url`, or what is wrong with it (a sentence for the config error,
/// whose hint the caller adds). A URL without a host means Debian's socket directory.
pub fn parse_url(url: &str) -> Result<postgres::Config, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "\"{}\" is not a PostgreSQL URL (postgres://… or postgresql://…)",
            redact_url(url)
        ));
    }
    let mut cfg = postgres::Config::from_str(url).map_err(|e| {
        format!(
            "\"{}\" is not a usable PostgreSQL URL: {e}",
            redact_url(url)
        )
    })?;
    if cfg.get_user().is_none() {
        return Err(format!("\"{}\" names no database user", redact_url(url)));
    }
    if cfg.get_ssl_mode() == postgres::config::SslMode::Require {
        return Err(format!(
            "\"{}\" asks for TLS (sslmode=require), which hostagent does not speak",
            redact_url(url)
        ));
    }
    if cfg.get_hosts().is_empty() {
        cfg.host(DEFAULT_SOCKET_DIR);
    }
    Ok(cfg)
}

/// `url` with its password replaced by `***` (for logs and status).
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    // postgres://user:secret@host/…
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        let rest = &out[auth_start..];
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out.replace_range(auth_start + colon + 1..auth_start + at, "***");
            }
        }
    }
    // …?password=secret&…
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k == "password" => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_socket_and_tcp_urls_parse_and_bad_ones_say_why() {
        let c = parse_url("postgresql:///hostagent?host=/run/postgresql&user=hostagent").unwrap();
        assert_eq!(c.get_dbname(), Some("hostagent"));
        assert_eq!(c.get_user(), Some("hostagent"));
        let c = parse_url("postgres://agent:pw@db.example:5433/leases").unwrap();
        assert_eq!(c.get_ports(), &[5433]);
        let defaulted = parse_url("postgresql:///hostagent?user=hostagent").unwrap();
        assert_eq!(
            defaulted.get_hosts(),
            &[postgres::config::Host::Unix(DEFAULT_SOCKET_DIR.into())]
        );
        assert!(parse_url("mysql://x/y")
            .unwrap_err()
            .contains("not a PostgreSQL URL"));
        assert!(parse_url("postgresql:///db")
            .unwrap_err()
            .contains("no database user"));
        assert!(parse_url("postgres://u@h/db?sslmode=require")
            .unwrap_err()
            .contains("TLS"));
        assert!(parse_url("postgres://u@h/db?bogus=1")
            .unwrap_err()
            .contains("not a usable"));
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("postgres://agent:s3cret@db:5432/leases"),
            "postgres://agent:***@db:5432/leases"
        );
        assert_eq!(
            redact_url("postgresql:///l?user=a&password=s3cret&host=/run"),
            "postgresql:///l?user=a&password=***&host=/run"
        );
        assert_eq!(
            redact_url("postgresql:///l?host=/run/postgresql"),
            "postgresql:///l?host=/run/postgresql"
        );
        let err = parse_url("postgres://agent:s3cret@db/l?bogus=1").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
