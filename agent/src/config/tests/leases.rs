//! `[leases]`: the journal by default, a PostgreSQL database with its url, pool and timeouts, the
//! agent's name; each rule with its position and hint.

use std::time::Duration;

use super::*;

const URL: &str = "postgresql:///hostagent?host=/run/postgresql&user=hostagent";

#[test]
fn without_a_leases_table_each_network_keeps_its_journal_and_the_agent_is_the_host_name() {
    let m = ok(BASE);
    assert_eq!(m.leases.backend, LeaseBackend::Journal);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    if !host.is_empty() && host.len() <= 63 {
        assert_eq!(m.leases.agent, host);
    }
    assert!(!m.leases.agent.is_empty());
}

#[test]
fn postgres_takes_its_url_pool_and_timeouts() {
    let m = ok(&format!(
        "[leases]\nbackend = \"postgres\"\nurl = \"{URL}\"\nagent = \"kvm1\"\npool_size = 8\n\
         connect_timeout = \"3s\"\ntimeout = \"5s\"\n{BASE}"
    ));
    assert_eq!(m.leases.agent, "kvm1");
    assert_eq!(
        m.leases.backend,
        LeaseBackend::Postgres {
            url: URL.into(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(5),
        }
    );
    let defaults = ok(&format!(
        "[leases]\nbackend = \"postgres\"\nurl = \"{URL}\"\n{BASE}"
    ));
    assert_eq!(
        defaults.leases.backend,
        LeaseBackend::Postgres {
            url: URL.into(),
            pool_size: leasedb::config::DEFAULT_POOL_SIZE,
            connect_timeout: leasedb::config::DEFAULT_CONNECT_TIMEOUT,
            timeout: leasedb::config::DEFAULT_TIMEOUT,
        }
    );
}

#[test]
fn each_bad_leases_key_is_reported_where_it_is_with_a_hint() {
    let table = |body: &str| format!("[leases]\n{body}{BASE}");
    one_error(&table("backend = \"mysql\"\n"), 2, 11, "not known");
    let d = one_error(
        &table("backend = \"postgres\"\n"),
        1,
        1,
        "needs the database's url",
    );
    assert!(d.hint.unwrap_or_default().contains("postgresql:///"));
    one_error(
        &table("backend = \"postgres\"\nurl = \"mysql://db/x\"\n"),
        3,
        7,
        "not a PostgreSQL URL",
    );
    one_error(
        &table("backend = \"postgres\"\nurl = \"postgresql:///hostagent\"\n"),
        3,
        7,
        "no database user",
    );
    one_error(
        &table("backend = \"postgres\"\nurl = \"postgres://u:pw@db/x?sslmode=require\"\n"),
        3,
        7,
        "TLS",
    );
    one_error(
        &table(&format!(
            "backend = \"postgres\"\nurl = \"{URL}\"\npool_size = 0\n"
        )),
        4,
        13,
        "out of range",
    );
    one_error(
        &table(&format!(
            "backend = \"postgres\"\nurl = \"{URL}\"\ntimeout = \"2m\"\n"
        )),
        4,
        11,
        "out of range",
    );
    one_error(
        &table(&format!("url = \"{URL}\"\n")),
        2,
        7,
        "only used with backend = \"postgres\"",
    );
    one_error(
        &table("agent = \"two words\"\n"),
        2,
        9,
        "not a usable agent name",
    );
}

#[test]
fn a_password_in_a_bad_url_is_not_repeated_in_the_error() {
    let d = one_error(
        &format!(
            "[leases]\nbackend = \"postgres\"\nurl = \"postgres://u:s3cret@db/x?bogus=1\"\n{BASE}"
        ),
        3,
        7,
        "not a usable PostgreSQL URL",
    );
    assert!(!d.to_string().contains("s3cret"), "{d}");
}
