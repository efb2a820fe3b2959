//! The nats-server of the test services (`tests/services.sh start`), a
//! private server of a test's own, streams made through the JetStream API,
//! and the one reader: a stream read back as a consumer outside the relay
//! sees it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;

use super::{assert_success, free_port, unique_name, Received};

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the services with `eval \"$(bash tests/services.sh start)\"`"
        )
    })
}

/// The shared server's directory (its password file).
fn shared_dir() -> PathBuf {
    PathBuf::from(required("OUTBOX_TEST_NATS_DIR"))
}

fn password_in(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("relay.password"))
        .expect("the NATS password file")
        .trim()
        .to_owned()
}

pub fn password() -> String {
    password_in(&shared_dir())
}

/// The shared server's URL, user `relay` with its password.
pub fn url() -> String {
    format!(
        "nats://relay:{}@{}",
        password(),
        required("OUTBOX_TEST_NATS")
    )
}

/// The `run` flags for the server(s) at `url`, and `extra`.
pub fn relay_args(url: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--sink", "nats", "--nats-url", url]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A JetStream context as user `relay` on the server at `url`.
pub async fn jetstream(url: &str) -> jetstream::Context {
    jetstream::new(connect(url).await)
}

/// A client of the server at `url`, with the user and password in it
/// (the client takes them only as options).
pub async fn connect(url: &str) -> async_nats::Client {
    let mut parsed = url::Url::parse(url).expect("a NATS URL");
    let options = match parsed.password() {
        Some(password) => async_nats::ConnectOptions::with_user_and_password(
            parsed.username().to_owned(),
            password.to_owned(),
        ),
        None => async_nats::ConnectOptions::new(),
    };
    let options = if parsed.scheme() == "tls" {
        let ca = required("OUTBOX_TEST_CA");
        options.require_tls(true).add_root_certificates(ca.into())
    } else {
        options
    };
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    let address = format!(
        "nats://{}:{}",
        parsed.host_str().expect("a host"),
        parsed.port().unwrap_or(4222)
    );
    options
        .connect(address.as_str())
        .await
        .expect("connect to NATS")
}

/// A file stream capturing `subjects`; `configure` may change the rest.
pub async fn create_stream(
    url: &str,
    subjects: &[&str],
    configure: impl FnOnce(&mut stream::Config),
) -> String {
    let name = unique_name("stream");
    let mut config = stream::Config {
        name: name.clone(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..stream::Config::default()
    };
    configure(&mut config);
    jetstream(url)
        .await
        .create_stream(config)
        .await
        .expect("create the stream");
    name
}

/// A subject of the test's own, and a stream capturing it.
pub async fn subject_with_stream(url: &str) -> (String, String) {
    let subject = format!("{}.events", unique_name("orders"));
    let stream = create_stream(url, &[&subject], |_| {}).await;
    (subject, stream)
}

/// How many messages `stream` holds.
pub async fn stream_messages(url: &str, stream: &str) -> u64 {
    let mut stream = jetstream(url)
        .await
        .get_stream(stream)
        .await
        .expect("the stream");
    stream.info().await.expect("stream info").state.messages
}

/// Read `subject` from the stream capturing it, from the start, until
/// every one of `ids` arrived, or `timeout`.
pub async fn read(url: &str, subject: &str, ids: &[String], timeout: Duration) -> Vec<Received> {
    let context = jetstream(url).await;
    let deadline = Instant::now() + timeout;
    let name = loop {
        match context.stream_by_subject(subject).await {
            Ok(name) => break name,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(error) => panic!("no stream captures {subject}: {error}"),
        }
    };
    let stream = context.get_stream(&name).await.expect("the stream");
    let reader = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject.to_owned(),
            ..Default::default()
        })
        .await
        .expect("an ordered consumer");
    let mut messages = reader.messages().await.expect("messages");
    let mut missing: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut received = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if (missing.is_empty() && !received.is_empty()) || left.is_zero() {
            // Whatever else is already there (copies) counts too.
            if let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_millis(300), messages.next()).await
            {
                received.push(received_from(&message, received.len() as i64));
                continue;
            }
            return received;
        }
        let Ok(Some(Ok(message))) = tokio::time::timeout(left, messages.next()).await else {
            return received;
        };
        let message = received_from(&message, received.len() as i64);
        missing.remove(message.event_id());
        received.push(message);
    }
}

fn received_from(message: &async_nats::Message, offset: i64) -> Received {
    let mut headers: Vec<(String, String)> = message
        .headers
        .iter()
        .flat_map(|map| map.iter())
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |value| (name.to_string(), value.as_str().to_owned()))
        })
        .collect();
    headers.sort();
    let key = headers
        .iter()
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.clone());
    Received {
        partition: 0,
        offset,
        key,
        payload: Some(String::from_utf8_lossy(&message.payload).into_owned()),
        headers,
        received_at: SystemTime::now(),
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nats/nats.sh")
}

fn run_script(args: Vec<String>) {
    let mut command = Command::new("bash");
    command.arg(script()).args(&args);
    let secrets = Path::new(&required("OUTBOX_TEST_CA"))
        .parent()
        .expect("the CA's directory")
        .to_owned();
    command.env("NATS_SECRETS_DIR", secrets);
    let output = command.output().expect("nats.sh");
    assert_success(&output, &format!("nats.sh {}", args[0]));
}

/// A server of a test's own, to stop and start: `password` (user `relay`),
/// `token` or `tls` mode (see `tests/nats/nats.sh`).
pub struct PrivateNats {
    pub port: u16,
    mode: &'static str,
    dir: tempfile::TempDir,
}

impl PrivateNats {
    pub async fn start(mode: &'static str) -> Self {
        let server = PrivateNats {
            port: free_port(),
            mode,
            dir: tempfile::tempdir().expect("server dir"),
        };
        server.launch().await;
        server
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    async fn launch(&self) {
        let args = vec![
            "start".into(),
            self.path(),
            self.port.to_string(),
            self.mode.into(),
        ];
        tokio::task::spawn_blocking(move || run_script(args))
            .await
            .expect("nats.sh");
    }

    /// The URL with user `relay` and its password (`nats://`, or `tls://`).
    pub fn url(&self) -> String {
        let scheme = if self.mode == "tls" { "tls" } else { "nats" };
        format!(
            "{scheme}://relay:{}@127.0.0.1:{}",
            password_in(self.dir.path()),
            self.port
        )
    }

    /// The token of a `token` server.
    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The running server's pid, as `nats.sh` recorded it.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("nats.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILL: clients see the connection gone.
    pub async fn kill(&self) {
        let args = vec!["stop".into(), self.path()];
        tokio::task::spawn_blocking(move || run_script(args))
            .await
            .expect("nats.sh");
    }

    /// Start again on the same port and store (streams and messages kept).
    pub async fn restart(&self) {
        self.launch().await;
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", &self.path()])
            .output();
    }
}
