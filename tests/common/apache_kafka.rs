//! The real Apache Kafka broker `tests/services.sh` runs beside Tansu: its
//! four listeners, the `relay` user's secrets, and a client.properties for
//! each way in. [`PrivateApacheKafka`] is a broker of a test's own (on the
//! shared ZooKeeper, under a chroot of its own), so killing it disturbs no
//! other test.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{assert_success, free_port, unique_name};

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the services with `eval \"$(bash tests/services.sh start)\"`"
        )
    })
}

/// The shared broker's PLAINTEXT listener: anonymous, a super user.
pub fn plaintext() -> String {
    required("OUTBOX_TEST_APACHE_KAFKA")
}

pub fn sasl_plaintext() -> String {
    required("OUTBOX_TEST_APACHE_KAFKA_SASL_PLAINTEXT")
}

pub fn sasl_ssl() -> String {
    required("OUTBOX_TEST_APACHE_KAFKA_SASL_SSL")
}

pub fn ssl() -> String {
    required("OUTBOX_TEST_APACHE_KAFKA_SSL")
}

fn secrets() -> PathBuf {
    PathBuf::from(required("OUTBOX_TEST_APACHE_KAFKA_SECRETS"))
}

/// The CA that signed the broker's certificate.
pub fn ca() -> PathBuf {
    secrets().join("ca.pem")
}

/// The file holding the `relay` user's password (SCRAM and PLAIN).
pub fn relay_password_file() -> PathBuf {
    secrets().join("relay.password")
}

/// The password itself, as the relay reads it from the file (without the
/// file's line end).
pub fn relay_password() -> String {
    let text = std::fs::read_to_string(relay_password_file()).expect("relay password");
    text.trim_end().to_owned()
}

/// The file holding `plainonly`'s password (a PLAIN user with no SCRAM
/// credentials).
pub fn plainonly_password_file() -> PathBuf {
    secrets().join("plainonly.password")
}

/// Write a client.properties into `dir` (the password by reference) and
/// return its path.
pub fn client_properties(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("client.properties");
    path
}

/// SASL over TLS as `user` with `mechanism`, the password from `password_file`.
pub fn sasl_ssl_lines(mechanism: &str, user: &str, password_file: &Path) -> Vec<String> {
    vec![
        "security.protocol=SASL_SSL".to_owned(),
        format!("sasl.mechanism={mechanism}"),
        format!("sasl.username={user}"),
        format!("sasl.password=${{file:{}}}", password_file.display()),
        format!("ssl.ca.location={}", ca().display()),
    ]
}

/// A broker of the test's own: PLAINTEXT only, data kept across restarts.
pub struct PrivateApacheKafka {
    pub port: u16,
    dir: tempfile::TempDir,
    zookeeper: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/apache-kafka.sh")
}

impl PrivateApacheKafka {
    pub async fn start() -> Self {
        let chroot = unique_name("/broker");
        let broker = PrivateApacheKafka {
            port: free_port(),
            dir: tempfile::tempdir().expect("broker dir"),
            zookeeper: format!("{}{chroot}", required("OUTBOX_TEST_ZOOKEEPER")),
        };
        broker.launch().await;
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start the broker and wait until it says it started.
    async fn launch(&self) {
        let script = script();
        let dir = self.dir.path().to_owned();
        let zookeeper = self.zookeeper.clone();
        let port = self.port.to_string();
        let output = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .arg(script)
                .args(["broker", dir.to_str().unwrap(), &zookeeper, &port])
                .output()
                .expect("run apache-kafka.sh")
        })
        .await
        .expect("broker start");
        assert_success(&output, "start a private Apache Kafka broker");
    }

    fn pid(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("kafka.pid"))
            .ok()
            .map(|pid| pid.trim().to_owned())
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args([signal, &pid]).status();
        }
    }

    /// SIGKILL the broker and wait until it is gone.
    pub async fn kill(&self) {
        self.signal("-KILL");
        self.wait_gone().await;
    }

    /// Stop the broker gracefully (SIGTERM) and wait until it is gone.
    pub async fn stop(&self) {
        self.signal("-TERM");
        self.wait_gone().await;
    }

    async fn wait_gone(&self) {
        let Some(pid) = self.pid() else { return };
        let status = PathBuf::from(format!("/proc/{pid}/status"));
        super::wait_for(
            "the broker to exit",
            std::time::Duration::from_secs(60),
            || {
                // Gone, or a zombie waiting for init to reap it.
                let gone = std::fs::read_to_string(&status).map_or(true, |s| {
                    s.lines()
                        .any(|l| l.starts_with("State:") && l.contains('Z'))
                });
                async move { gone.then_some(()) }
            },
        )
        .await;
    }

    /// Start it again with the same port and data.
    pub async fn restart(&self) {
        self.launch().await;
    }
}

impl Drop for PrivateApacheKafka {
    fn drop(&mut self) {
        self.signal("-KILL");
    }
}
