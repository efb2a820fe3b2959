//! TLS to PostgreSQL with libpq's connection strings, against a PostgreSQL
//! that accepts TLS only: `verify-full`, `require`, a wrong CA, a host-name
//! mismatch, `disable` refused, client-certificate login, the password file,
//! and the whole relay flow over TLS.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::certs::Certificates;
use common::private_pg::{PrivatePostgres, Tls};
use common::{assert_success, free_port, wait_for, RelayProcess, BINARY};

struct Server {
    certs: Certificates,
    pg: PrivatePostgres,
}

impl Server {
    fn start() -> Self {
        let certs = Certificates::generate();
        let pg = PrivatePostgres::start_with(
            30,
            Some(Tls {
                certs: &certs,
                required: true,
            }),
        );
        Server { certs, pg }
    }

    /// `postgres://USER@HOST:PORT/app?…` reaching 127.0.0.1 whatever HOST says.
    fn url(&self, user: &str, host: &str, params: &str) -> String {
        format!(
            "postgres://{user}@{host}:{}/app?hostaddr=127.0.0.1&{params}",
            self.pg.port
        )
    }

    fn ca(&self, name: &str) -> String {
        self.certs.path(name)
    }
}

fn relay(args: &[&str], url: &str) -> Output {
    Command::new(BINARY)
        .args(args)
        .args(["--database-url", url, "--table", "outbox"])
        .env_remove("OUTBOX_DATABASE_URL")
        .env("OUTBOX_DATABASE_PASSWORD", "unused")
        .output()
        .expect("run outbox-relay")
}

fn assert_fails_with(output: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "expected a failure:\n{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line:\n{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
    }
}

#[test]
fn verify_full_and_require_connect_and_the_wrong_ca_or_host_fail_clearly() {
    let server = Server::start();
    let ca = server.ca("ca.pem");
    let full = server.url(
        "relay:relay",
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    assert_success(&relay(&["migrate"], &full), "migrate over verify-full");
    let require = server.url("relay:relay", "127.0.0.1", "sslmode=require");
    assert_success(&relay(&["status"], &require), "status over require");

    let other = server.ca("other-ca.pem");
    let wrong_ca = server.url(
        "relay:relay",
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    );
    assert_fails_with(
        &relay(&["status"], &wrong_ca),
        &["not trusted", &other, "sslrootcert"],
    );
    // libpq: `require` with a root certificate verifies the CA too.
    let require_ca = server.url(
        "relay:relay",
        "localhost",
        &format!("sslmode=require&sslrootcert={other}"),
    );
    assert_fails_with(&relay(&["status"], &require_ca), &["not trusted"]);

    let by_ip = server.url(
        "relay:relay",
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    assert_fails_with(
        &relay(&["status"], &by_ip),
        &["does not name the host 127.0.0.1", "verify-ca"],
    );
    let by_ip_ca_only = server.url(
        "relay:relay",
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    );
    assert_success(
        &relay(&["status"], &by_ip_ca_only),
        "status over verify-ca by IP",
    );
}

#[test]
fn a_server_that_requires_tls_explains_sslmode_disable() {
    let server = Server::start();
    let disabled = server.url("relay:relay", "127.0.0.1", "sslmode=disable");
    assert_fails_with(
        &relay(&["status"], &disabled),
        &["requires TLS", "sslmode=require"],
    );
    // libpq's `allow` tries without TLS, then with it.
    let allow = server.url("relay:relay", "127.0.0.1", "sslmode=allow");
    assert_success(&relay(&["migrate"], &allow), "migrate over allow");
}

#[test]
fn a_client_certificate_logs_in_and_a_foreign_one_is_rejected() {
    let server = Server::start();
    let (ca, cert, key) = (
        server.ca("ca.pem"),
        server.ca("client.pem"),
        server.ca("client.key"),
    );
    let params = format!("sslmode=verify-full&sslrootcert={ca}&sslcert={cert}&sslkey={key}");
    let url = server.url("certuser", "localhost", &params);
    assert_success(
        &relay(&["migrate"], &url),
        "migrate with a client certificate",
    );

    let (rogue, rogue_key) = (server.ca("rogue-client.pem"), server.ca("rogue-client.key"));
    let params = format!("sslmode=verify-full&sslrootcert={ca}&sslcert={rogue}&sslkey={rogue_key}");
    let url = server.url("certuser", "localhost", &params);
    assert_fails_with(&relay(&["status"], &url), &["client certificate"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_runs_over_tls_with_a_rotated_password_file() {
    let server = Server::start();
    let topic = common::unique_name("tls");
    common::create_topic(&common::brokers(), &topic, 1).await;
    let password_file = server.certs.file("password");
    std::fs::write(&password_file, "relay\n").unwrap();
    let ca = server.ca("ca.pem");
    // No password in the URL: it comes from the file.
    let url = server.url(
        "relay",
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let with_file = |args: &[&str]| {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .args(["--database-url", &url, "--table", "outbox"])
            .arg("--database-password-file")
            .arg(&password_file)
            .env_remove("OUTBOX_DATABASE_URL");
        command
    };
    assert_success(
        &with_file(&["migrate", "--notify-trigger"])
            .output()
            .unwrap(),
        "migrate",
    );

    let log = server.certs.file("relay.log");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let child = with_file(&["run"])
        .args([
            "--kafka-brokers",
            &common::brokers(),
            "--metrics-addr",
            &metrics_addr,
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut process = RelayProcess {
        child,
        metrics_addr,
        log,
    };
    process.wait_ready().await;
    let insert =
        format!("INSERT INTO outbox (topic, message_key, payload) VALUES ('{topic}', 'k', '{{}}')");
    let published = |count: u32| {
        let sql = "SELECT count(*) FROM outbox WHERE status = 'published'";
        let pg = &server.pg;
        move || async move { (pg.query("app", sql) == count.to_string()).then_some(()) }
    };
    server.pg.query("app", &insert);
    wait_for("the row over TLS", Duration::from_secs(30), published(1)).await;
    let ssl = server.pg.query(
        "app",
        "SELECT count(*) || ' ' || bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'outbox-relay'",
    );
    let (connections, all_tls) = ssl.split_once(' ').unwrap();
    assert!(
        connections.parse::<u32>().unwrap() >= 2,
        "pool and LISTEN: {ssl}"
    );
    assert_eq!(all_tls, "true", "every relay connection uses TLS");

    // Rotate: a new password in the role and the file, old sessions cut.
    server.pg.psql("ALTER ROLE relay PASSWORD 'rotated'");
    std::fs::write(&password_file, "rotated\n").unwrap();
    server.pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'outbox-relay'");
    server.pg.query("app", &insert);
    wait_for(
        "the row after rotation",
        Duration::from_secs(30),
        published(2),
    )
    .await;
    let text = process.log_text();
    assert!(
        !text.contains("rotated"),
        "the password never reaches the log:\n{text}"
    );
}
