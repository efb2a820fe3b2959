//! Shared helpers for the integration tests: a fresh schema and topic per
//! test on the PostgreSQL and Tansu that `tests/services.sh start` runs, the
//! relay as a real child process, and a Kafka consumer that reads a topic
//! from the outside.
#![allow(dead_code)]

pub mod load;
pub mod private_broker;
pub mod private_pg;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio_postgres::NoTls;

pub const BINARY: &str = env!("CARGO_BIN_EXE_outbox-relay");

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the services with `eval \"$(bash tests/services.sh start)\"` or run `bash .ci/run`")
    })
}

pub fn database_url() -> String {
    required_env("OUTBOX_TEST_DATABASE_URL")
}

pub fn brokers() -> String {
    required_env("OUTBOX_TEST_KAFKA_BROKERS")
}

/// A name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        fastrand::u32(..)
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Assert a finished command succeeded, showing its output if not; returns
/// its stdout.
pub fn assert_success(output: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Poll `check` until it returns `Some`, or panic after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A row for [`TestEnv::insert`].
#[derive(Debug, Clone)]
pub struct NewRow {
    pub topic: String,
    pub key: Option<String>,
    pub payload: Option<Value>,
    pub headers: Value,
}

impl NewRow {
    pub fn new(topic: &str, key: Option<&str>, payload: Value) -> Self {
        NewRow {
            topic: topic.to_owned(),
            key: key.map(str::to_owned),
            payload: Some(payload),
            headers: serde_json::json!({}),
        }
    }
}

/// One test's own outbox table (in its own schema) and database client.
pub struct TestEnv {
    pub database_url: String,
    pub brokers: String,
    pub table: String,
    pub client: tokio_postgres::Client,
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::on(&database_url()).await
    }

    /// A fresh schema on the database at `database_url`.
    pub async fn on(database_url: &str) -> Self {
        let database_url = database_url.to_owned();
        let schema = unique_name("t");
        let table = format!("{schema}.outbox");
        let client = connect(&database_url).await;
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create schema");
        let env = TestEnv {
            database_url,
            brokers: brokers(),
            table,
            client,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let output = env.command(&["migrate"]).output().expect("run migrate");
        assert_success(&output, "migrate");
        env
    }

    /// A new client, after the database restarted under the old one.
    pub async fn reconnect(&mut self) {
        self.client = wait_for(
            "the database to accept connections",
            Duration::from_secs(60),
            || async {
                let (client, connection) = tokio_postgres::connect(&self.database_url, NoTls)
                    .await
                    .ok()?;
                tokio::spawn(connection);
                Some(client)
            },
        )
        .await;
    }

    /// `outbox-relay <args> --database-url … --table …`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .args(["--database-url", &self.database_url, "--table", &self.table])
            .env_remove("OUTBOX_DATABASE_URL")
            .env_remove("OUTBOX_KAFKA_BROKERS");
        command
    }

    pub async fn create_topic(&self, partitions: i32) -> String {
        let topic = unique_name("topic");
        create_topic(&self.brokers, &topic, partitions).await;
        topic
    }

    /// Insert rows in one committed transaction; returns (id, event_id).
    pub async fn insert(&self, rows: &[NewRow]) -> Vec<(i64, String)> {
        let topics: Vec<&str> = rows.iter().map(|r| r.topic.as_str()).collect();
        let keys: Vec<Option<&str>> = rows.iter().map(|r| r.key.as_deref()).collect();
        let payloads: Vec<Option<Value>> = rows.iter().map(|r| r.payload.clone()).collect();
        let headers: Vec<Value> = rows.iter().map(|r| r.headers.clone()).collect();
        let sql = format!(
            "INSERT INTO {} (topic, message_key, payload, headers)
             SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::jsonb[])
             RETURNING id, event_id::text",
            self.table
        );
        self.client
            .query(&sql, &[&topics, &keys, &payloads, &headers])
            .await
            .expect("insert rows")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }

    pub async fn count(&self, status: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {} WHERE status = $1", self.table);
        self.client
            .query_one(&sql, &[&status])
            .await
            .expect("count")
            .get(0)
    }

    /// (status, attempts, last_error) of one row.
    pub async fn row_state(&self, id: i64) -> (String, i32, Option<String>) {
        let sql = format!(
            "SELECT status, attempts, last_error FROM {} WHERE id = $1",
            self.table
        );
        let row = self
            .client
            .query_one(&sql, &[&id])
            .await
            .expect("row state");
        (row.get(0), row.get(1), row.get(2))
    }

    pub async fn wait_for_status_count(&self, status: &str, expected: i64, timeout: Duration) {
        let what = format!("{expected} rows {status}");
        wait_for(&what, timeout, || async {
            (self.count(status).await == expected).then_some(())
        })
        .await;
    }

    pub async fn wait_for_status_count_at_least(&self, status: &str, at_least: i64) {
        let what = format!("at least {at_least} rows {status}");
        wait_for(&what, Duration::from_secs(60), || async {
            (self.count(status).await >= at_least).then_some(())
        })
        .await;
    }

    /// Start `outbox-relay run` against this table.
    pub fn start_relay(&self, extra: &[&str]) -> RelayProcess {
        self.start_relay_with_brokers(&self.brokers, extra)
    }

    pub fn start_relay_with_brokers(&self, brokers: &str, extra: &[&str]) -> RelayProcess {
        let port = free_port();
        let log = self
            .dir
            .path()
            .join(format!("relay-{}.log", unique_name("r")));
        let log_file = std::fs::File::create(&log).expect("log file");
        let metrics_addr = format!("127.0.0.1:{port}");
        let child = self
            .command(&["run"])
            .args(["--kafka-brokers", brokers, "--metrics-addr", &metrics_addr])
            // Test defaults by environment, so a test's own flags win.
            .env("OUTBOX_POLL_INTERVAL_MS", "100")
            .env("OUTBOX_STATS_INTERVAL_MS", "200")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start relay");
        RelayProcess {
            child,
            metrics_addr,
            log,
        }
    }
}

pub async fn connect(database_url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let results = admin_client(brokers)
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &admin_options(),
        )
        .await
        .expect("create topic");
    for result in results {
        result.expect("topic created");
    }
}

pub async fn delete_topic(brokers: &str, topic: &str) {
    let results = admin_client(brokers)
        .delete_topics(&[topic], &admin_options())
        .await
        .expect("delete topic");
    for result in results {
        result.expect("topic deleted");
    }
}

fn admin_client(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client")
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

/// A relay child process; killed on drop. Its log is printed if the test fails.
pub struct RelayProcess {
    pub child: Child,
    pub metrics_addr: String,
    pub log: PathBuf,
}

impl RelayProcess {
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Wait for the process to exit, or panic after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        wait_for("the relay to exit", timeout, || {
            let status = child.try_wait().expect("poll child");
            async move { status }
        })
        .await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET a path on the metrics address: (status code, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.metrics_addr, path).await
    }

    /// One sample value from /metrics, e.g. `outbox_pending_messages`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        parse_metric(&body, sample)
    }

    /// Wait until /metrics answers (the relay finished starting).
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = self.get("/readyz").await {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("relay exited early with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "relay not ready:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- relay log {} ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

pub fn parse_metric(body: &str, sample: &str) -> Option<f64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok()).flatten()
        })
}

/// Minimal HTTP/1.1 GET over a fresh connection.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// A message as a consumer outside the relay sees it.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The event id the relay attaches as header `id`.
    pub fn event_id(&self) -> &str {
        self.header("id")
            .expect("every message carries an id header")
    }
}

/// Read `topic` from the beginning until `done` says enough, or `timeout`.
pub async fn consume_until(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    done: impl FnMut(&[Received]) -> bool + Send + 'static,
) -> Vec<Received> {
    let brokers = brokers.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || consume_blocking(&brokers, &topic, timeout, done))
        .await
        .expect("consumer thread")
}

fn consume_blocking(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Received]) -> bool,
) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("test-consumer"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    while !done(&received) && Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = result.expect("consume");
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        received.push(Received {
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: message
                .payload()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            headers,
        });
    }
    received
}

/// Read until every id in `expected` was seen at least once.
pub async fn consume_event_ids(
    brokers: &str,
    topic: &str,
    expected: &[String],
    timeout: Duration,
) -> Vec<Received> {
    let mut missing: std::collections::HashSet<String> = expected.iter().cloned().collect();
    let mut checked = 0;
    consume_until(brokers, topic, timeout, move |received| {
        for message in &received[checked..] {
            missing.remove(message.event_id());
        }
        checked = received.len();
        missing.is_empty()
    })
    .await
}

/// Check per-key order: for every key, the first arrival of each event id
/// follows `expected_order` (event ids in id order, per key).
pub fn assert_per_key_order(received: &[Received], id_of_event: &HashMap<String, i64>) {
    let mut by_partition: Vec<&Received> = received.iter().collect();
    by_partition.sort_by_key(|r| (r.partition, r.offset));
    let mut last_id_per_key: HashMap<&str, i64> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for message in by_partition {
        let Some(key) = message.key.as_deref() else {
            continue;
        };
        if !seen.insert(message.event_id().to_owned()) {
            continue;
        }
        let id = id_of_event[message.event_id()];
        if let Some(previous) = last_id_per_key.insert(key, id) {
            assert!(
                previous < id,
                "key {key}: row {id} arrived after row {previous}"
            );
        }
    }
}
