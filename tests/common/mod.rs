//! The test kit: a fresh schema (dropped when the test ends) and topic per
//! test on the PostgreSQL, Tansu and Apache Kafka ([`apache_kafka`]) that
//! `tests/services.sh start` runs, the
//! relay as a real child process, and one of each helper: a Kafka consumer
//! ([`reader`]), a connect helper, a `wait_for`, a status waiter
//! ([`TestEnv::wait_for_status`]) and a per-key order check ([`order`]).
// Each test binary uses a part of the kit.
#![allow(dead_code, unused_imports)]

pub mod apache_kafka;
pub mod certs;
pub mod databases;
pub mod env;
pub mod kafka;
pub mod load;
pub mod nats;
pub mod order;
pub mod outside;
pub mod pgbouncer;
pub mod private_broker;
pub mod private_pg;
pub mod process;
pub mod rabbitmq;
pub mod reader;
pub mod redis;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

pub use env::{Count, NewRow, TestEnv};
pub use kafka::{consume_event_ids, consume_until, create_topic, delete_topic};
pub use order::{assert_key_order, Order};
pub use process::{http_get, parse_metric, RelayProcess};
pub use reader::{Received, TopicReader};

pub const BINARY: &str = env!("CARGO_BIN_EXE_outbox-relay");

/// The relay binary the kit runs: this build's, unless `OUTBOX_RELAY_BINARY`
/// names another (the benchmark measures two builds side by side so).
pub fn binary() -> String {
    std::env::var("OUTBOX_RELAY_BINARY").unwrap_or_else(|_| BINARY.to_owned())
}

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

/// Poll `check` every 50 ms until it returns `Some`, or panic after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_for_every(what, timeout, Duration::from_millis(50), check).await
}

/// [`wait_for`], polling every `interval`.
pub async fn wait_for_every<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> T
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
        tokio::time::sleep(interval).await;
    }
}

/// Wait until something (`what`) listens on 127.0.0.1:`port`.
pub async fn wait_for_port(port: u16, what: &str) {
    let address = format!("127.0.0.1:{port}");
    let description = format!("{what} to open port {port}");
    wait_for(&description, Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(&address)
            .await
            .ok()
            .map(drop)
    })
    .await;
}

/// Hand `path` (recursively) to the `postgres` user, which the servers the
/// tests start run as.
pub fn chown_to_postgres(path: &std::path::Path) {
    let status = std::process::Command::new("chown")
        .args(["-R", "postgres"])
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success(), "chown {}", path.display());
}

/// A client of the database at `database_url`, or `None` if it cannot
/// connect now.
pub async fn try_connect(database_url: &str) -> Option<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(database_url, NoTls).await.ok()?;
    tokio::spawn(connection);
    Some(client)
}

/// A client of the database at `database_url`; panics if it cannot connect.
pub async fn connect(database_url: &str) -> tokio_postgres::Client {
    try_connect(database_url)
        .await
        .expect("connect to the test database")
}
