//! A PostgreSQL instance of the fault run's own: `initdb` into a state
//! directory, started on its own port, so that the run may terminate its
//! backends and restart it without touching the shared server other tests
//! use. Stopped and its directory deleted on drop, even when the run panics.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's PostgreSQL 15 keeps its programs (`IDV_FAULT_PG_BIN` to change).
const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running private PostgreSQL (trust authentication on 127.0.0.1).
#[derive(Debug)]
pub struct PrivatePostgres {
    /// The state directory (data and socket), owned by the `postgres` user.
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    stopped: bool,
}

impl PrivatePostgres {
    /// Creates and starts an instance in `dir` (which must not exist) on `port`.
    pub fn start(dir: &Path, port: u16) -> Self {
        let bin = PathBuf::from(
            std::env::var("IDV_FAULT_PG_BIN").unwrap_or_else(|_| DEFAULT_BIN.to_owned()),
        );
        std::fs::create_dir_all(dir).expect("create the private PostgreSQL's directory");
        // The guard exists from here on: whatever fails next, drop cleans up.
        let pg = Self {
            dir: dir.to_owned(),
            bin,
            port,
            stopped: false,
        };
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir));
        let data = pg.data();
        run(pg
            .as_postgres("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data));
        pg.pg_ctl(&["start", "-w", "-t", "60"]);
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `program` of PostgreSQL's, run as the `postgres` user (we are root).
    fn as_postgres(&self, program: &str) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program));
        command
    }

    fn pg_ctl(&self, action: &[&str]) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        run(self
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .args(action));
    }

    /// `postgres://postgres@127.0.0.1:<port>` (no database).
    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// A full restart (`pg_ctl restart -m fast`): every connection is cut,
    /// in-flight transactions roll back, and it is back once this returns.
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60"]);
    }

    /// Terminates every backend of `database` but the caller's own
    /// (`pg_terminate_backend`); returns how many.
    pub async fn terminate_backends(&self, database: &str) -> i64 {
        let url = format!("{}/postgres", self.server_url());
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("the private PostgreSQL answers");
        tokio::spawn(connection);
        client
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&database],
            )
            .await
            .expect("terminate the pipeline's backends")
            .get(0)
    }

    /// Stops the instance (fast) and deletes its directory.
    pub fn stop(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if self.data().join("postmaster.pid").exists() {
            let status = self
                .as_postgres("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["stop", "-m", "immediate", "-w", "-t", "60"])
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!("could not stop the private PostgreSQL: {status:?}");
            }
        }
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not delete {}: {error}", self.dir.display());
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Runs `command`, panicking with its output when it fails.
fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?} runs: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
