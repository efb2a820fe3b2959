//! The RabbitMQ of the test services (`tests/services.sh start`), a private
//! node of a test's own, and the one AMQP reader: queues read back as a
//! consumer outside the relay sees them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};

use super::{assert_success, free_port, unique_name, Received};

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the services with `eval \"$(bash tests/services.sh start)\"`"
        )
    })
}

/// The shared node's URL, without its password.
pub fn url() -> String {
    required("OUTBOX_TEST_RABBITMQ_URL")
}

pub fn password_file() -> PathBuf {
    PathBuf::from(required("OUTBOX_TEST_RABBITMQ_PASSWORD_FILE"))
}

pub fn password() -> String {
    std::fs::read_to_string(password_file())
        .expect("the RabbitMQ password file")
        .trim()
        .to_owned()
}

/// The `run` flags for a node at `url` (vhost `outbox`, user `relay`).
pub fn relay_args(url: &str, exchange: Option<&str>) -> Vec<String> {
    relay_args_with(url, exchange, &password_file())
}

/// [`relay_args`] with the password read from `password_file`.
pub fn relay_args_with(url: &str, exchange: Option<&str>, password_file: &Path) -> Vec<String> {
    let mut args = vec![
        "--sink".to_owned(),
        "rabbitmq".to_owned(),
        "--rabbitmq-url".to_owned(),
        url.to_owned(),
        "--rabbitmq-password-file".to_owned(),
        password_file.display().to_string(),
    ];
    if let Some(exchange) = exchange {
        args.extend(["--rabbitmq-exchange".to_owned(), exchange.to_owned()]);
    }
    args
}

/// A connection as user `relay` to the node at `url`.
pub async fn connect(url: &str) -> Connection {
    let with_password = url.replacen("relay@", &format!("relay:{}@", password()), 1);
    Connection::connect(&with_password, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ")
}

/// Declare a durable queue (`arguments` e.g. `x-queue-type=quorum`).
pub async fn declare_queue(url: &str, name: &str, arguments: FieldTable) {
    let connection = connect(url).await;
    let channel = connection.create_channel().await.expect("channel");
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), durable, arguments)
        .await
        .expect("declare the queue");
    let _ = connection.close(200, "".into()).await;
}

/// Consume `queue` until every one of `ids` arrived, or `timeout`.
pub async fn read_queue(
    url: &str,
    queue: &str,
    ids: &[String],
    timeout: Duration,
) -> Vec<Received> {
    let connection = connect(url).await;
    let channel = connection.create_channel().await.expect("channel");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            unique_name("reader").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut missing: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut received = Vec::new();
    let deadline = Instant::now() + timeout;
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(Ok(delivery))) = tokio::time::timeout(left, consumer.next()).await else {
            break;
        };
        let message = received_from(&delivery, received.len() as i64);
        missing.remove(message.event_id());
        received.push(message);
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let _ = connection.close(200, "".into()).await;
    received
}

fn received_from(delivery: &lapin::message::Delivery, offset: i64) -> Received {
    let text = |value: &AMQPValue| match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        other => format!("{other:?}"),
    };
    let mut headers: Vec<(String, String)> = delivery
        .properties
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .map(|(k, v)| (k.to_string(), text(v)))
                .collect()
        })
        .unwrap_or_default();
    headers.sort();
    let key = headers
        .iter()
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.clone());
    Received {
        partition: 0,
        offset,
        key,
        payload: Some(String::from_utf8_lossy(&delivery.data).into_owned()),
        headers,
        received_at: SystemTime::now(),
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rabbitmq/rabbitmq.sh")
}

/// A node of a test's own (same user, password and vhost as the shared
/// one), to stop and start.
pub struct PrivateRabbitMq {
    pub port: u16,
    tls_port: u16,
    dist_port: u16,
    dir: tempfile::TempDir,
}

impl PrivateRabbitMq {
    pub async fn start() -> Self {
        let node = PrivateRabbitMq {
            port: free_port(),
            tls_port: free_port(),
            dist_port: free_port(),
            dir: tempfile::tempdir().expect("node dir"),
        };
        node.launch().await;
        node.script(&["users", node.path(), "outbox", "relay", &password()])
            .await;
        node
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().expect("a UTF-8 path")
    }

    pub fn url(&self) -> String {
        format!("amqp://relay@127.0.0.1:{}/outbox", self.port)
    }

    async fn script(&self, args: &[&str]) {
        let mut command = Command::new("bash");
        command.arg(script()).args(args);
        let secrets = Path::new(&required("OUTBOX_TEST_CA"))
            .parent()
            .expect("the CA's directory")
            .to_owned();
        command.env("RABBITMQ_SECRETS_DIR", secrets);
        let output = tokio::task::spawn_blocking(move || command.output().expect("rabbitmq.sh"))
            .await
            .expect("rabbitmq.sh");
        assert_success(&output, &format!("rabbitmq.sh {}", args[0]));
    }

    async fn launch(&self) {
        let (amqp, amqps, dist) = (
            self.port.to_string(),
            self.tls_port.to_string(),
            self.dist_port.to_string(),
        );
        self.script(&["start", self.path(), &amqp, &amqps, &dist])
            .await;
    }

    /// `rabbitmqctl ARGS` against the node.
    pub async fn ctl(&self, args: &[&str]) {
        let mut all = vec!["ctl", self.path()];
        all.extend_from_slice(args);
        self.script(&all).await;
    }

    /// SIGKILL the node.
    pub async fn kill(&self) {
        self.script(&["stop", self.path()]).await;
        super::wait_for(
            "the node to stop listening",
            Duration::from_secs(30),
            || {
                let closed = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err();
                async move { closed.then_some(()) }
            },
        )
        .await;
    }

    /// Start it again with the same ports and data.
    pub async fn restart(&self) {
        self.launch().await;
    }
}

impl Drop for PrivateRabbitMq {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", self.path()])
            .status();
    }
}
