//! A PostgreSQL instance of a test's own, for faults that would disturb other
//! tests on the shared one: restarts, exhausted connections, password auth.
//! The relay logs in as a non-superuser (`relay`), so reserved superuser
//! slots do not hide an exhausted `max_connections`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::certs::Certificates;
use super::{assert_success, free_port};

/// Copy the server key pair into the data directory (owned by postgres,
/// mode 0600, as the server insists), write pg_hba.conf, and return the
/// postgresql.conf lines.
fn enable_tls(data: &std::path::Path, tls: &Tls<'_>) -> String {
    let certs = tls.certs;
    for (from, to) in [
        ("server.pem", "server.crt"),
        ("server.key", "server.key"),
        ("ca.pem", "ca.crt"),
    ] {
        std::fs::copy(certs.file(from), data.join(to)).expect("copy certificate");
        super::chown_to_postgres(&data.join(to));
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        data.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod key");
    let plain = if tls.required {
        "hostnossl all all 0.0.0.0/0 reject"
    } else {
        "hostnossl all all 127.0.0.1/32 scram-sha-256"
    };
    let hba = format!(
        "local all all trust\n{plain}\n\
         hostssl all certuser 127.0.0.1/32 cert\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\n"
    );
    std::fs::write(data.join("pg_hba.conf"), hba).expect("pg_hba.conf");
    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'ca.crt'\n"
        .to_owned()
}

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

/// TLS for a private PostgreSQL: passwords (scram-sha-256) for everyone but
/// `certuser`, who logs in with a client certificate (`cert`); with
/// `required`, connections without TLS are rejected (`hostnossl … reject`).
pub struct Tls<'a> {
    pub certs: &'a Certificates,
    pub required: bool,
}

impl PrivatePostgres {
    pub fn start(max_connections: u32) -> Self {
        Self::start_with(max_connections, None)
    }

    pub fn start_with(max_connections: u32, tls: Option<Tls<'_>>) -> Self {
        Self::start_configured(max_connections, tls, "")
    }

    /// With more `postgresql.conf` lines (e.g. `wal_level = logical`).
    pub fn start_configured(max_connections: u32, tls: Option<Tls<'_>>, settings: &str) -> Self {
        let bin = std::env::var("OUTBOX_TEST_PG_BIN")
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
        let dir = std::env::temp_dir().join(super::unique_name("outbox-pg"));
        std::fs::create_dir_all(&dir).expect("pg dir");
        std::fs::write(dir.join("pw"), "postgres\n").expect("pwfile");
        super::chown_to_postgres(&dir);
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
        text.push_str(settings);
        text.push('\n');
        if let Some(tls) = &tls {
            text.push_str(&enable_tls(&data, tls));
        }
        std::fs::write(&conf, text).expect("write postgresql.conf");
        let pg = PrivatePostgres { port, dir, bin };
        pg.pg_ctl(&["start"]);
        pg.psql("CREATE ROLE relay LOGIN PASSWORD 'relay'");
        pg.psql("CREATE DATABASE app OWNER relay");
        if tls.is_some() {
            pg.psql("CREATE ROLE certuser LOGIN");
            pg.psql("GRANT ALL ON DATABASE app TO certuser");
            pg.query("app", "GRANT ALL ON SCHEMA public TO certuser");
        }
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

    /// Run `sql` in database `db` as the superuser; returns the rows as
    /// unaligned text.
    pub fn query(&self, db: &str, sql: &str) -> String {
        let output = Command::new("psql")
            .args([
                "-h",
                self.dir.to_str().unwrap(),
                "-p",
                &self.port.to_string(),
            ])
            .args(["-U", "postgres", "-d", db, "-Atqc", sql])
            .output()
            .expect("psql");
        assert_success(&output, &format!("psql {sql}"))
            .trim()
            .to_owned()
    }

    /// Run `sql` in database `postgres` as the superuser.
    pub fn psql(&self, sql: &str) {
        self.query("postgres", sql);
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
