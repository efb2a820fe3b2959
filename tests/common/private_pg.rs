//! A PostgreSQL instance of a test's own, for faults that would disturb other
//! tests on the shared one: restarts, exhausted connections, password auth.
//! The relay logs in as a non-superuser (`relay`), so reserved superuser
//! slots do not hide an exhausted `max_connections`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{assert_success, free_port};

pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: String,
}

fn run_as_postgres(program: &str, args: &[&str]) {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--", program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runuser");
    assert_success(&output, &format!("{program} {args:?}"));
}

impl PrivatePostgres {
    pub fn start(max_connections: u32) -> Self {
        let bin = std::env::var("OUTBOX_TEST_PG_BIN")
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
        let dir = std::env::temp_dir().join(super::unique_name("outbox-pg"));
        std::fs::create_dir_all(&dir).expect("pg dir");
        std::fs::write(dir.join("pw"), "postgres\n").expect("pwfile");
        let status = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(status.success());
        let data = dir.join("data");
        let (data_s, dir_s) = (data.to_str().unwrap(), dir.to_str().unwrap());
        run_as_postgres(
            &format!("{bin}/initdb"),
            &[
                "-D",
                data_s,
                "-U",
                "postgres",
                "--pwfile",
                &format!("{dir_s}/pw"),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
        );
        let port = free_port();
        let config = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir_s}'\n\
             max_connections = {max_connections}\nsuperuser_reserved_connections = 3\nfsync = off\n"
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str(&config);
        std::fs::write(&conf, text).expect("write postgresql.conf");
        let pg = PrivatePostgres { port, dir, bin };
        pg.pg_ctl(&["start"]);
        pg.psql("CREATE ROLE relay LOGIN PASSWORD 'relay'");
        pg.psql("CREATE DATABASE app OWNER relay");
        pg
    }

    fn pg_ctl(&self, action: &[&str]) {
        let data = self.dir.join("data");
        let log = self.dir.join("pg.log");
        let mut args = vec![
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
        ];
        args.extend(action);
        run_as_postgres(&format!("{}/pg_ctl", self.bin), &args);
    }

    pub fn psql(&self, sql: &str) {
        let output = Command::new("psql")
            .args([
                "-h",
                self.dir.to_str().unwrap(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qc",
                sql,
            ])
            .output()
            .expect("psql");
        assert_success(&output, &format!("psql {sql}"));
    }

    /// The relay's login (a non-superuser owning database `app`).
    pub fn relay_url(&self) -> String {
        format!("postgres://relay:relay@127.0.0.1:{}/app", self.port)
    }

    pub fn url_with_password(&self, password: &str) -> String {
        format!("postgres://relay:{password}@127.0.0.1:{}/app", self.port)
    }

    /// Crash-restart: `pg_ctl restart -m immediate`.
    pub fn restart_immediate(&self) {
        self.pg_ctl(&["-m", "immediate", "restart"]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &format!("{}/pg_ctl", self.bin),
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
