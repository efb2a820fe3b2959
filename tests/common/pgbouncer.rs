//! A PgBouncer of a test's own in transaction mode with PgBouncer's default
//! settings otherwise (no `ignore_startup_parameters`, no
//! `max_prepared_statements`), in front of a PostgreSQL.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

pub struct PgBouncer {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl PgBouncer {
    /// Pool `pool_size` server connections per user and database to the
    /// PostgreSQL on `pg_port`. `users` are (name, password) pairs it may log
    /// in as (the password is what it sends the server).
    pub async fn start(pg_port: u16, pool_size: u32, users: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(super::unique_name("outbox-pgbouncer"));
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        let port = free_port();
        let d = dir.display();
        let auth: String = users
            .iter()
            .map(|(user, password)| format!("\"{user}\" \"{password}\"\n"))
            .collect();
        std::fs::write(dir.join("users.txt"), auth).expect("auth file");
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port={pg_port}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {d}/users.txt\npool_mode = transaction\n\
             default_pool_size = {pool_size}\nmax_client_conn = 500\n\
             logfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\n"
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).expect("pgbouncer.ini");
        super::chown_to_postgres(&dir);
        // PgBouncer refuses to run as root.
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", "pgbouncer"])
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer (installed by tests/services.sh install)");
        super::wait_for_port(port, "PgBouncer").await;
        PgBouncer { port, dir, child }
    }

    /// `postgres://user@127.0.0.1:PORT/db` through the pooler.
    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // runuser forwards the signal to pgbouncer.
        let _ = self.child.kill();
        let _ = Command::new("pkill")
            .args(["-f", &self.dir.join("pgbouncer.ini").display().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Another client of the same pool that prepares named statements and keeps
/// them, as an application on a driver with a statement cache would: the
/// server connections it leaves behind hold names like `s0`, `s1`, …
pub struct StatementChurner {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<usize>,
}

impl StatementChurner {
    pub async fn start(url: &str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let client = super::connect(url).await;
        let task = {
            let stop = std::sync::Arc::clone(&stop);
            tokio::spawn(async move {
                let mut kept = Vec::new();
                while !stop.load(Ordering::SeqCst) && kept.len() < 200 {
                    // Named statements, never closed: they stay on whichever
                    // server connection PgBouncer gave this client.
                    if let Ok(statement) = client.prepare("SELECT 1").await {
                        kept.push(statement);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let prepared = kept.len();
                std::mem::forget(kept);
                prepared
            })
        };
        StatementChurner { stop, task }
    }

    /// Stop; returns how many statements it prepared.
    pub async fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("churner")
    }
}
