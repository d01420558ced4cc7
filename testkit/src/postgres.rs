//! A private PostgreSQL cluster for one test: `initdb` as the unprivileged user `postgres` into a
//! temporary directory, the server listening on a unix socket in that directory only (no TCP),
//! stopped and deleted on drop, also when the test panics. The machine's own cluster is never
//! touched. A unix socket is a path, so agents in any network namespace reach it.
//!
//! Needs Debian's `postgresql-15` (or another `postgresql-NN`): the server binaries under
//! `/usr/lib/postgresql/NN/bin`, or `PG_BIN` pointing at such a directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::process::{run_ok, stderr, stdout};

/// The OS user the cluster runs as (initdb refuses root).
const PG_USER: &str = "postgres";

/// A running private cluster; stopped (immediately) and deleted on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl PgCluster {
    /// initdb and start a fresh cluster (trust authentication: only the test's own processes can
    /// reach its socket directory's path, and nothing listens on TCP).
    pub fn start() -> PgCluster {
        let bin = server_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("hostagent-pg-")
            .tempdir()
            .expect("tempdir for the cluster");
        // The server runs as postgres; clients (an agent that kept no CAP_DAC_OVERRIDE) must
        // still get through the directory to the socket.
        chown_to_pg_user(dir.path());
        set_mode(dir.path(), 0o755);
        let cluster = PgCluster { dir, bin };
        let data = cluster.data_dir();
        cluster.as_pg_user(&[
            cluster.tool("initdb").as_str(),
            "-D",
            path_str(&data),
            "-A",
            "trust",
            "-U",
            PG_USER,
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        cluster.start_server();
        cluster
    }

    /// Where the server's socket is (`host=` in a connection URL).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `postgresql:///DB?host=SOCKET_DIR&user=postgres`: a unix-socket URL for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql:///{db}?host={}&user={PG_USER}",
            self.socket_dir().display()
        )
    }

    /// `createdb NAME`.
    pub fn create_db(&self, name: &str) {
        let createdb = self.tool("createdb");
        self.as_pg_user(&[createdb.as_str(), "-h", self.host(), "-U", PG_USER, name]);
    }

    /// `psql -At -c SQL` in database `db`: rows one per line, columns joined by `|`. Panics
    /// with psql's message when the statement fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.try_psql(db, sql);
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// [`PgCluster::psql`] without the panic.
    pub fn try_psql(&self, db: &str, sql: &str) -> Output {
        Command::new(self.tool("psql"))
            .args([
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host(),
                "-U",
                PG_USER,
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .expect("spawn psql")
    }

    /// Stop the server the way an admin does (`pg_ctl stop -m fast`: sessions are ended, the
    /// socket goes away).
    pub fn stop(&self) {
        let pg_ctl = self.tool("pg_ctl");
        let data = self.data_dir();
        self.as_pg_user(&[
            pg_ctl.as_str(),
            "-D",
            path_str(&data),
            "-m",
            "fast",
            "-w",
            "stop",
        ]);
    }

    /// Start it again after [`PgCluster::stop`].
    pub fn start_server(&self) {
        let pg_ctl = self.tool("pg_ctl");
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let opts = format!("-k {} -c listen_addresses=''", self.host());
        self.as_pg_user(&[
            pg_ctl.as_str(),
            "-D",
            path_str(&data),
            "-o",
            &opts,
            "-l",
            path_str(&log),
            "-w",
            "start",
        ]);
    }

    /// The server's log so far, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn host(&self) -> &str {
        path_str(self.dir.path())
    }

    fn tool(&self, name: &str) -> String {
        path_str(&self.bin.join(name)).to_string()
    }

    fn as_pg_user(&self, argv: &[&str]) -> String {
        run_ok(
            Command::new("runuser")
                .args(["-u", PG_USER, "--"])
                .args(argv)
                .current_dir(self.dir.path()),
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = Command::new("runuser")
            .args(["-u", PG_USER, "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", path_str(&data), "-m", "immediate", "-w", "stop"])
            .current_dir(self.dir.path())
            .output();
    }
}

/// The newest `/usr/lib/postgresql/NN/bin` with an `initdb`, or `PG_BIN`.
fn server_bin_dir() -> PathBuf {
    if let Ok(p) = std::env::var("PG_BIN") {
        return PathBuf::from(p);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries under /usr/lib/postgresql/NN/bin: \
             apt-get install postgresql-15 (or set PG_BIN)"
        )
    })
}

fn chown_to_pg_user(path: &Path) {
    run_ok(Command::new("chown").arg(PG_USER).arg(path));
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
