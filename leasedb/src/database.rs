//! One agent's way to its lease database: the connection pool every network's store shares,
//! and the schema made current on first contact.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;

use crate::config::{parse_url, redact_url, DbConfig};
use crate::schema;

/// A pooled connection.
pub(crate) type Conn = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("[leases] url: {0}")]
    Url(String),
    #[error(
        "lease database {location} unreachable: {reason}; no lease is acknowledged until it \
         answers (is PostgreSQL running, and does [leases] url point at it?)"
    )]
    Unreachable { location: String, reason: String },
    #[error("lease database: cannot {what}: {}", describe(source))]
    Schema {
        what: String,
        source: postgres::Error,
    },
    #[error(
        "lease database schema is at version {found}, newer than this hostagent knows \
         ({known}): another agent was upgraded; upgrade this one too"
    )]
    SchemaTooNew { found: u32, known: u32 },
    #[error("lease database: {what}: {}", describe(source))]
    Query {
        what: String,
        source: postgres::Error,
    },
}

/// A client error with what the server said, if it said something: `postgres::Error`'s own
/// text is only "db error" then.
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(detail) = db.detail() {
                s.push_str(&format!("; {detail}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            s
        }
    }
}

impl DbError {
    pub(crate) fn query(what: &str) -> impl FnOnce(postgres::Error) -> DbError + '_ {
        move |source| DbError::Query {
            what: what.to_string(),
            source,
        }
    }
}

/// The pool and what it connects to. Creating it connects to nothing: a database that is down
/// when the agent starts is reached later, by the first batch after it comes back.
pub struct Database {
    cfg: DbConfig,
    location: String,
    pg: postgres::Config,
    pool: r2d2::Pool<PostgresConnectionManager<NoTls>>,
    schema_ready: AtomicBool,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("location", &self.location)
            .field("agent", &self.cfg.agent)
            .finish()
    }
}

impl Database {
    pub fn open(cfg: DbConfig) -> Result<Arc<Database>, DbError> {
        let mut pg = parse_url(&cfg.url).map_err(DbError::Url)?;
        let timeout_ms = cfg.timeout.as_millis().max(1);
        let options = format!(
            "{} -c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}",
            pg.get_options().unwrap_or("")
        );
        pg.options(options.trim())
            .application_name(&format!("hostagent {}", cfg.agent))
            .connect_timeout(cfg.connect_timeout)
            .keepalives(true)
            .keepalives_idle(cfg.connect_timeout.max(std::time::Duration::from_secs(1)))
            .tcp_user_timeout(cfg.timeout + cfg.connect_timeout);
        let location = redact_url(&cfg.url);
        let manager = PostgresConnectionManager::new(pg.clone(), NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(cfg.pool_size)
            .min_idle(Some(0))
            .connection_timeout(cfg.connect_timeout)
            // A broken connection shows when it is used: a check on every checkout would cost
            // each batch a round trip.
            .test_on_check_out(false)
            .error_handler(Box::new(LogConnectFailure {
                location: location.clone(),
            }))
            .build_unchecked(manager);
        Ok(Arc::new(Database {
            cfg,
            location,
            pg,
            pool,
            schema_ready: AtomicBool::new(false),
        }))
    }

    pub fn config(&self) -> &DbConfig {
        &self.cfg
    }

    /// This agent's name in the database.
    pub fn agent(&self) -> &str {
        &self.cfg.agent
    }

    /// The URL without its password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// A pooled connection to a database whose schema is current.
    pub(crate) fn get(&self) -> Result<Conn, DbError> {
        let mut conn = self.pool.get().map_err(|e| self.unreachable(e))?;
        if !self.schema_ready.load(Ordering::Acquire) {
            schema::migrate(&mut conn, &self.cfg.agent)?;
            self.schema_ready.store(true, Ordering::Release);
        }
        Ok(conn)
    }

    /// Reach the database now and make its schema current; the version it is at.
    pub fn migrate(&self) -> Result<u32, DbError> {
        self.get()?;
        Ok(schema::VERSION)
    }

    /// A connection of its own, outside the pool (LISTEN keeps its session for good).
    pub(crate) fn dedicated(&self) -> Result<postgres::Client, DbError> {
        self.pg.connect(NoTls).map_err(|e| self.unreachable(e))
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> DbError {
        DbError::Unreachable {
            location: self.location.clone(),
            reason: e.to_string(),
        }
    }
}

/// r2d2 reports failures of the connections it opens in the background here.
#[derive(Debug)]
struct LogConnectFailure {
    location: String,
}

impl r2d2::HandleError<postgres::Error> for LogConnectFailure {
    fn handle_error(&self, error: postgres::Error) {
        tracing::debug!(location = %self.location, %error, "lease database connection failed");
    }
}
