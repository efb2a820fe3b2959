//! The Redis of the test services (`tests/services.sh start`), a private
//! server of a test's own, and the readers: streams and lists read back as
//! a consumer outside the relay sees them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use redis::aio::MultiplexedConnection;
use redis::Value;

use super::{assert_success, free_port, Received};

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the services with `eval \"$(bash tests/services.sh start)\"`"
        )
    })
}

/// The shared server's URL (user `relay`, without its password).
pub fn url() -> String {
    required("OUTBOX_TEST_REDIS_URL")
}

/// The shared server's TLS address, `127.0.0.1:port`.
pub fn tls_address() -> String {
    required("OUTBOX_TEST_REDISS")
}

fn shared_dir() -> PathBuf {
    PathBuf::from(required("OUTBOX_TEST_REDIS_DIR"))
}

pub fn password_file() -> PathBuf {
    shared_dir().join("relay.password")
}

fn password() -> String {
    std::fs::read_to_string(password_file())
        .expect("the Redis password file")
        .trim()
        .to_owned()
}

/// The `run` flags for the server at `url` (user `relay`), and `extra`.
pub fn relay_args(url: &str, extra: &[&str]) -> Vec<String> {
    relay_args_with(url, &password_file(), extra)
}

/// [`relay_args`] with the password read from `password_file`.
pub fn relay_args_with(url: &str, password_file: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--sink",
        "redis",
        "--redis-url",
        url,
        "--redis-password-file",
        &password_file.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A connection as user `relay` to the server at `url`.
pub async fn connect(url: &str) -> MultiplexedConnection {
    let with_password = url.replacen("relay@", &format!("relay:{}@", password()), 1);
    let client = redis::Client::open(with_password).expect("a Redis URL");
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect to Redis")
}

/// Run one command and return its reply.
pub async fn command(url: &str, args: &[&str]) -> redis::RedisResult<Value> {
    let mut connection = connect(url).await;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut connection).await
}

/// The entries of stream `key` until every one of `ids` arrived, or
/// `timeout`.
pub async fn read_stream(url: &str, key: &str, ids: &[String], timeout: Duration) -> Vec<Received> {
    read_until(url, key, ids, timeout, |connection, key| {
        Box::pin(async move {
            let mut received = Vec::new();
            let mut after = "-".to_owned();
            loop {
                let page: Vec<StreamEntry> = redis::cmd("XRANGE")
                    .arg(key)
                    .arg(&after)
                    .arg("+")
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(&mut *connection)
                    .await
                    .expect("XRANGE");
                let full = page.len() == PAGE;
                for (id, fields) in page {
                    received.push(from_stream_entry(received.len() as i64, &fields));
                    after = format!("({id}");
                }
                if !full {
                    return received;
                }
            }
        })
    })
    .await
}

/// The elements of list `key` in the order `BRPOP` takes them (oldest
/// first), without taking them, until every one of `ids` arrived.
pub async fn read_list(url: &str, key: &str, ids: &[String], timeout: Duration) -> Vec<Received> {
    read_until(url, key, ids, timeout, |connection, key| {
        Box::pin(async move {
            let mut elements: Vec<Vec<u8>> = Vec::new();
            loop {
                let start = elements.len();
                let page: Vec<Vec<u8>> = redis::cmd("LRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(start + PAGE - 1)
                    .query_async(&mut *connection)
                    .await
                    .expect("LRANGE");
                let full = page.len() == PAGE;
                elements.extend(page);
                if !full {
                    break;
                }
            }
            elements.reverse();
            elements
                .iter()
                .enumerate()
                .map(|(offset, element)| from_envelope(offset as i64, element))
                .collect()
        })
    })
    .await
}

/// A stream entry as `XRANGE` gives it: its id and its field/value pairs.
type StreamEntry = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// Entries read per round trip.
const PAGE: usize = 10_000;

type ReadAll = for<'a> fn(
    &'a mut MultiplexedConnection,
    &'a str,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Vec<Received>> + Send + 'a>,
>;

async fn read_until(
    url: &str,
    key: &str,
    ids: &[String],
    timeout: Duration,
    read_all: ReadAll,
) -> Vec<Received> {
    let mut connection = connect(url).await;
    let deadline = Instant::now() + timeout;
    loop {
        let received = read_all(&mut connection, key).await;
        let seen: std::collections::HashSet<&str> =
            received.iter().map(Received::event_id).collect();
        if ids.iter().all(|id| seen.contains(id.as_str())) || Instant::now() >= deadline {
            return received;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A stream entry as a received message: fields `id`, `key`, `payload`,
/// `headers` (JSON).
pub fn from_stream_entry(offset: i64, fields: &[(Vec<u8>, Vec<u8>)]) -> Received {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| text(v))
    };
    let mut headers = vec![("id".to_owned(), field("id").expect("an id field"))];
    if let Some(json) = field("headers") {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&json).expect("headers are a JSON object");
        for (name, value) in object {
            headers.push((name, value.as_str().expect("a string").to_owned()));
        }
    }
    Received {
        partition: 0,
        offset,
        key: field("key"),
        payload: field("payload"),
        headers,
        received_at: SystemTime::now(),
    }
}

/// A list element (the JSON envelope) as a received message; a JSON
/// payload is given back as compact JSON text.
pub fn from_envelope(offset: i64, element: &[u8]) -> Received {
    let envelope: serde_json::Value = serde_json::from_slice(element).expect("a JSON envelope");
    let mut headers = vec![(
        "id".to_owned(),
        envelope["id"].as_str().expect("an id").to_owned(),
    )];
    if let Some(object) = envelope["headers"].as_object() {
        for (name, value) in object {
            headers.push((name.clone(), value.as_str().expect("a string").to_owned()));
        }
    }
    Received {
        partition: 0,
        offset,
        key: envelope["key"].as_str().map(str::to_owned),
        payload: match &envelope["payload"] {
            serde_json::Value::Null => None,
            payload => Some(payload.to_string()),
        },
        headers,
        received_at: SystemTime::now(),
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/redis/redis.sh")
}

async fn run_script(args: Vec<String>) {
    let mut command = Command::new("bash");
    command.arg(script()).args(&args);
    let secrets = Path::new(&required("OUTBOX_TEST_CA"))
        .parent()
        .expect("the CA's directory")
        .to_owned();
    command.env("REDIS_SECRETS_DIR", secrets);
    let output = tokio::task::spawn_blocking(move || command.output().expect("redis.sh"))
        .await
        .expect("redis.sh");
    assert_success(&output, &format!("redis.sh {}", args[0]));
}

/// A server of a test's own (user `relay` with the shared password), to
/// stop and start, or to give a replica.
pub struct PrivateRedis {
    pub port: u16,
    tls_port: u16,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let server = PrivateRedis {
            port: free_port(),
            tls_port: free_port(),
            dir: tempfile::tempdir().expect("server dir"),
        };
        std::fs::copy(password_file(), server.dir.path().join("relay.password"))
            .expect("copy the password");
        server.launch().await;
        server
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    pub fn url(&self) -> String {
        format!("redis://relay@127.0.0.1:{}/0", self.port)
    }

    async fn launch(&self) {
        run_script(vec![
            "start".into(),
            self.path(),
            self.port.to_string(),
            self.tls_port.to_string(),
        ])
        .await;
    }

    /// SIGKILL: clients see the connection gone.
    pub async fn kill(&self) {
        run_script(vec!["stop".into(), self.path()]).await;
    }

    /// Start again on the same ports and directory (the append-only file
    /// brings its data back).
    pub async fn restart(&self) {
        self.launch().await;
    }

    /// A replica of this server, on a port of its own: it refuses writes
    /// with `READONLY`.
    pub async fn replica(&self) -> Replica {
        let replica = Replica {
            port: free_port(),
            dir: tempfile::tempdir().expect("replica dir"),
        };
        run_script(vec![
            "replica".into(),
            replica.dir.path().display().to_string(),
            replica.port.to_string(),
            self.path(),
        ])
        .await;
        replica
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", &self.path()])
            .output();
    }
}

/// A replica started by [`PrivateRedis::replica`].
pub struct Replica {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Replica {
    pub fn url(&self) -> String {
        format!("redis://relay@127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", &self.dir.path().display().to_string()])
            .output();
    }
}
