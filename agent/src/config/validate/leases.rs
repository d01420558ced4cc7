//! `[leases]`: `backend = "journal" | "postgres"`, the database `url`, pool and timeouts, and
//! `agent` (this agent's name on its leases).

use std::ops::Range;
use std::time::Duration;

use leasedb::config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT, POOL_SIZE_RANGE,
};

use super::super::checks::{self, Bad};
use super::super::model::{LeaseBackend, Leases};
use super::super::units::parse_duration;
use super::super::wire::{self, S};
use super::Checker;

/// The longest either timeout may be: a DHCP client retries within seconds.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest agent name (a DNS label's length: it is usually the host name).
const MAX_AGENT_NAME: usize = 63;

const URL_EXAMPLE: &str = "url = \"postgresql:///hostagent?host=/run/postgresql&user=hostagent\" (a unix socket) or \"postgres://hostagent@db.example/hostagent\"";

pub(super) fn leases(c: &mut Checker, w: Option<&S<wire::Leases>>) -> Option<Leases> {
    let Some(w) = w else {
        return Some(Leases {
            agent: host_name(),
            backend: LeaseBackend::Journal,
        });
    };
    let table = w.span();
    let w = w.get_ref();
    let agent = match &w.agent {
        Some(a) => c.check(a.span(), agent_name(a.get_ref())),
        None => Some(host_name()),
    };
    let postgres = match w.backend.as_ref().map(|b| (b.get_ref().as_str(), b.span())) {
        None | Some(("journal", _)) => false,
        Some(("postgres", _)) => true,
        Some((other, span)) => {
            c.report(
                span,
                checks::bad(
                    format!("backend = \"{}\" is not known", other.escape_debug()),
                    "write backend = \"journal\" (each agent keeps its own leases under state_dir) or \"postgres\" (agents share one PostgreSQL database)",
                ),
            );
            return None;
        }
    };
    if !postgres {
        // Database settings without the database are a mistake worth knowing about.
        let stray = [
            ("url", w.url.as_ref().map(S::span)),
            ("pool_size", w.pool_size.as_ref().map(S::span)),
            ("connect_timeout", w.connect_timeout.as_ref().map(S::span)),
            ("timeout", w.timeout.as_ref().map(S::span)),
        ];
        for (key, span) in stray {
            if let Some(span) = span {
                c.report(
                    span,
                    checks::bad(
                        format!("{key} is only used with backend = \"postgres\""),
                        format!("add backend = \"postgres\" to [leases], or remove {key}"),
                    ),
                );
            }
        }
        return Some(Leases {
            agent: agent?,
            backend: LeaseBackend::Journal,
        });
    }
    let url = match &w.url {
        Some(u) => c.check(u.span(), url(u.get_ref())),
        None => {
            c.report(
                table,
                checks::bad(
                    "backend = \"postgres\" needs the database's url",
                    format!("add {URL_EXAMPLE}"),
                ),
            );
            None
        }
    };
    let pool_size = match &w.pool_size {
        Some(p) => c.check(p.span(), pool_size(*p.get_ref())),
        None => Some(DEFAULT_POOL_SIZE),
    };
    let connect_timeout = timeout(
        c,
        "connect_timeout",
        w.connect_timeout.as_ref(),
        DEFAULT_CONNECT_TIMEOUT,
    );
    let timeout = timeout(c, "timeout", w.timeout.as_ref(), DEFAULT_TIMEOUT);
    Some(Leases {
        agent: agent?,
        backend: LeaseBackend::Postgres {
            url: url?,
            pool_size: pool_size?,
            connect_timeout: connect_timeout?,
            timeout: timeout?,
        },
    })
}

fn url(text: &str) -> Result<String, Bad> {
    leasedb::parse_url(text)
        .map(|_| text.to_string())
        .map_err(|why| checks::bad(why, format!("write {URL_EXAMPLE}")))
}

fn pool_size(n: i64) -> Result<u32, Bad> {
    u32::try_from(n)
        .ok()
        .filter(|n| POOL_SIZE_RANGE.contains(n))
        .ok_or_else(|| {
            checks::bad(
                format!("pool_size = {n} is out of range"),
                format!(
                    "write {} to {} connections (default {DEFAULT_POOL_SIZE}; each network's DHCP server uses one per batch)",
                    POOL_SIZE_RANGE.start(),
                    POOL_SIZE_RANGE.end()
                ),
            )
        })
}

fn timeout(
    c: &mut Checker,
    key: &str,
    value: Option<&S<String>>,
    default: Duration,
) -> Option<Duration> {
    let Some(v) = value else {
        return Some(default);
    };
    let parsed = parse_duration(v.get_ref())
        .map_err(|e| format!("{key} = \"{}\": {e}", v.get_ref().escape_debug()))
        .and_then(|d| {
            if d.is_zero() || d > MAX_TIMEOUT {
                Err(format!(
                    "{key} = \"{}\" is out of range",
                    v.get_ref().escape_debug()
                ))
            } else {
                Ok(d)
            }
        });
    let span: Range<usize> = v.span();
    c.check(
        span,
        parsed.map_err(|why| {
            checks::bad(
                why,
                format!(
                    "write a duration from 1s to {}s, e.g. {key} = \"{}s\" (the default)",
                    MAX_TIMEOUT.as_secs(),
                    default.as_secs()
                ),
            )
        }),
    )
}

fn agent_name(name: &str) -> Result<String, Bad> {
    let ok = !name.is_empty()
        && name.len() <= MAX_AGENT_NAME
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'));
    if ok {
        Ok(name.to_string())
    } else {
        Err(checks::bad(
            format!("agent = \"{}\" is not a usable agent name", name.escape_debug()),
            format!("write 1 to {MAX_AGENT_NAME} letters, digits, '-', '_' or '.', e.g. agent = \"kvm1\" (default: the host name)"),
        ))
    }
}

/// The default agent name: the kernel's host name (`localhost` if it has none).
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    let usable: String = name
        .chars()
        .filter(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        .take(MAX_AGENT_NAME)
        .collect();
    if usable.is_empty() {
        "localhost".to_string()
    } else {
        usable
    }
}
