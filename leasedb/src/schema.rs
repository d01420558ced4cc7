//! The lease database's schema: everything lives in the PostgreSQL schema `hostagent`, created
//! and migrated by the agent when it first reaches the database.
//!
//! `hostagent.schema_migrations (version, description, applied_at, applied_by)` records every
//! migration applied, one row each. An agent applies the ones it knows and the database lacks, in
//! order, in ONE transaction (PostgreSQL's DDL is transactional: a failure leaves the schema as it
//! was), under a transaction-scoped advisory lock so that two agents starting at once do not
//! migrate twice. An agent that finds a newer version than it knows refuses to use the database
//! rather than guess at it: upgrade that agent.
//!
//! | version | what it adds |
//! |---|---|
//! | 1 | `lease4` (one row per address: lease, offer hold, quarantine), `reservation4`, and the allocation functions `prepare4`, `set_reservations4`, `offer4`, `request4`, `release4`, `decline4`, `forget_holds4` |
//! | 2 | triggers that `NOTIFY hostagent_lease4, '<network>'` on every change to a bound lease |
//! | 3 | the notification names the session too: `'<network>\n<application_name>'` (an agent's own changes are told apart from others'); `batch4`, a DHCP batch's operations in one call |

use postgres::GenericClient;

use crate::database::DbError;

/// One migration: `sql` takes the schema from `version - 1` to `version`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Never edit a released one: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description:
            "lease4 (lease, offer hold, quarantine per address), reservation4, allocation functions",
        sql: include_str!("schema/v1.sql"),
    },
    Migration {
        version: 2,
        description: "NOTIFY hostagent_lease4 on every lease change",
        sql: include_str!("schema/v2.sql"),
    },
    Migration {
        version: 3,
        description:
            "lease-change notifications name the session; batch4 answers a DHCP batch in one call",
        sql: include_str!("schema/v3.sql"),
    },
];

/// The version this build creates and understands.
pub const VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// The schema, its migration table and the lock key, before anything is known about the
/// database (idempotent, run under the lock).
const BOOTSTRAP: &str = "
    SELECT pg_advisory_xact_lock(hashtext('hostagent.schema_migrations'));
    CREATE SCHEMA IF NOT EXISTS hostagent;
    CREATE TABLE IF NOT EXISTS hostagent.schema_migrations (
        version     integer     PRIMARY KEY,
        description text        NOT NULL,
        applied_at  timestamptz NOT NULL DEFAULT now(),
        applied_by  text        NOT NULL
    );
";

/// What a migration run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: u32,
    pub to: u32,
}

/// Bring the schema to [`VERSION`]; `agent` is recorded as who applied each step.
pub fn migrate(client: &mut postgres::Client, agent: &str) -> Result<Migrated, DbError> {
    migrate_to(client, agent, VERSION)
}

/// Bring the schema to `target` (at most [`VERSION`]): what an older release of the agent did.
/// The tests use it to make a database of an earlier version.
pub fn migrate_to(
    client: &mut postgres::Client,
    agent: &str,
    target: u32,
) -> Result<Migrated, DbError> {
    let sql_err = |what: &str| {
        let what = what.to_string();
        move |source| DbError::Schema { what, source }
    };
    let mut tx = client.transaction().map_err(sql_err("begin"))?;
    tx.batch_execute(BOOTSTRAP)
        .map_err(sql_err("create the schema hostagent"))?;
    let from = version(&mut tx)?;
    if from > VERSION {
        return Err(DbError::SchemaTooNew {
            found: from,
            known: VERSION,
        });
    }
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > from && m.version <= target)
    {
        tx.batch_execute(m.sql).map_err(sql_err(&format!(
            "migration {} ({})",
            m.version, m.description
        )))?;
        tx.execute(
            "INSERT INTO hostagent.schema_migrations (version, description, applied_by) \
             VALUES ($1, $2, $3)",
            &[&(m.version as i32), &m.description, &agent],
        )
        .map_err(sql_err("record the migration"))?;
    }
    tx.commit().map_err(sql_err("commit the migration"))?;
    let to = from.max(target.min(VERSION));
    if to > from {
        tracing::info!(from, to, "lease database schema migrated");
    }
    Ok(Migrated { from, to })
}

/// The version the database is at (0: no schema yet).
pub fn version(client: &mut impl GenericClient) -> Result<u32, DbError> {
    let failed = |source| DbError::Schema {
        what: "read the schema version".into(),
        source,
    };
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('hostagent.schema_migrations') IS NOT NULL",
            &[],
        )
        .map_err(failed)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: i32 = client
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM hostagent.schema_migrations",
            &[],
        )
        .map_err(failed)?
        .get(0);
    Ok(v.max(0) as u32)
}
