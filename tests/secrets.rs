//! Secrets never leak: every command and failure path, run with known
//! secrets at debug level in both log formats, and nothing captured (stdout,
//! stderr, /metrics, /readyz, `status`) contains them.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::private_pg::PrivatePostgres;
use common::{free_port, RelayProcess, BINARY};

const DB_PASSWORD: &str = "S3cretDbPw-x9";
const KAFKA_PASSWORD: &str = "S3cretKafkaPw-q7";
const FILE_PASSWORD: &str = "S3cretFromFile-k2";
const OAUTH_SECRET: &str = "S3cretOauth-m4";
const KEY_PASSWORD: &str = "S3cretKeyPw-z1";
const SECRETS: [&str; 5] = [
    DB_PASSWORD,
    KAFKA_PASSWORD,
    FILE_PASSWORD,
    OAUTH_SECRET,
    KEY_PASSWORD,
];

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
    }
}

struct Setup {
    pg: PrivatePostgres,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let pg = PrivatePostgres::start(30);
        pg.psql(&format!("ALTER ROLE relay PASSWORD '{DB_PASSWORD}'"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kafka-password"),
            format!("{FILE_PASSWORD}\n"),
        )
        .unwrap();
        let properties = format!(
            "# secrets that travel unused over plaintext\nsasl.username=relay\nsasl.password=${{file:{}}}\nssl.key.password={KEY_PASSWORD}\n",
            dir.path().join("kafka-password").display()
        );
        std::fs::write(dir.path().join("client.properties"), properties).unwrap();
        Setup { pg, dir }
    }

    fn url(&self, password: &str) -> String {
        format!(
            "postgres://relay:{password}@127.0.0.1:{}/app?sslmode=prefer",
            self.pg.port
        )
    }

    /// `outbox-relay ARGS` with the secrets in every place they can be given.
    fn command(&self, format: &str, url: &str, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .args([
                "--database-url",
                url,
                "--log-level",
                "debug",
                "--log-format",
                format,
            ])
            .env_remove("OUTBOX_DATABASE_URL")
            .env_remove("OUTBOX_KAFKA_BROKERS");
        if args[0] == "run" {
            command
                .arg("--kafka-config")
                .arg(self.dir.path().join("client.properties"))
                .args(["--kafka-option", &format!("sasl.password={KAFKA_PASSWORD}")])
                .args([
                    "--kafka-option",
                    &format!("sasl.oauthbearer.client.secret={OAUTH_SECRET}"),
                ]);
        }
        command
    }
}

fn captured(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_or_failure_shows_a_secret_in_either_log_format() {
    let setup = Setup::new();
    let good = setup.url(DB_PASSWORD);
    let wrong = setup.url(&format!("{DB_PASSWORD}-wrong"));
    let bad_param = format!("{good}&sslmod=require");
    let closed_broker = format!("127.0.0.1:{}", free_port());
    for format in ["text", "json"] {
        let runs: Vec<(&str, &str, Vec<&str>)> = vec![
            ("migrate", &good, vec!["migrate"]),
            ("status", &good, vec!["status", "--json"]),
            ("requeue", &good, vec!["requeue", "--all"]),
            ("prune", &good, vec!["prune", "--older-than", "1d"]),
            ("wrong password", &wrong, vec!["status"]),
            ("unknown parameter", &bad_param, vec!["status"]),
            (
                "closed broker",
                &good,
                vec![
                    "run",
                    "--kafka-brokers",
                    &closed_broker,
                    "--kafka-startup-timeout-secs",
                    "1",
                ],
            ),
        ];
        for (what, url, args) in runs {
            let output = setup.command(format, url, &args).output().unwrap();
            assert_no_secret(&format!("{what} ({format})"), &captured(&output));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_relay_shows_no_secret_in_logs_metrics_readiness_or_status() {
    let setup = Setup::new();
    let url = setup.url(DB_PASSWORD);
    common::assert_success(
        &setup.command("text", &url, &["migrate"]).output().unwrap(),
        "migrate",
    );
    for format in ["text", "json"] {
        let log = setup.dir.path().join(format!("relay-{format}.log"));
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let child = setup
            .command(format, &url, &["run"])
            .args([
                "--kafka-brokers",
                &common::brokers(),
                "--metrics-addr",
                &metrics_addr,
            ])
            // librdkafka's own configuration and security debug lines too.
            .args([
                "--kafka-option",
                "debug=conf,security",
                "--kafka-option",
                "log_level=7",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut relay = RelayProcess {
            child,
            metrics_addr,
            log,
        };
        relay.wait_ready().await;
        let (_, metrics) = relay.get("/metrics").await.unwrap();
        let (_, ready) = relay.get("/readyz").await.unwrap();
        assert_no_secret("/metrics", &metrics);
        assert_no_secret("/readyz", &ready);
        let status = setup.command(format, &url, &["status"]).output().unwrap();
        assert_no_secret("status", &captured(&status));
        relay.signal("TERM");
        relay.wait_exit(Duration::from_secs(30)).await;
        let text = relay.log_text();
        assert!(text.contains("relay started"), "{text}");
        assert_no_secret(&format!("the relay's log ({format})"), &text);
    }
}
