//! A Tansu broker process of a test's own, so killing it disturbs no other
//! test. Tansu's memory storage forgets everything on restart (topics too).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

pub struct PrivateBroker {
    pub port: u16,
    /// The port clients are told to use (a proxy's, when one is in front).
    advertised_port: u16,
    child: Option<Child>,
}

impl PrivateBroker {
    pub async fn start() -> Self {
        let port = free_port();
        Self::start_advertising(port, port).await
    }

    /// A broker on `port` that tells clients to come back on
    /// `advertised_port`.
    pub async fn start_advertising(port: u16, advertised_port: u16) -> Self {
        let mut broker = PrivateBroker {
            port,
            advertised_port,
            child: None,
        };
        broker.launch().await;
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let tansu = std::env::var("OUTBOX_TEST_TANSU")
            .expect("OUTBOX_TEST_TANSU (set by tests/services.sh start)");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised_port);
        let child = Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        super::wait_for_port(self.port, "Tansu").await;
    }

    /// SIGKILL the broker.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port (empty: memory storage).
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TLS-terminating proxy (stunnel) in front of a broker: Tansu 0.6 takes
/// `--cert`/`--key` but does not serve TLS with them.
pub struct TlsProxy {
    pub port: u16,
    child: Child,
    _config: tempfile::NamedTempFile,
}

impl TlsProxy {
    /// Listen on `port` with `cert`/`key`, forward to `upstream_port`.
    pub async fn start(port: u16, upstream_port: u16, cert: &str, key: &str) -> Self {
        let mut config = tempfile::NamedTempFile::new().expect("stunnel config");
        let text = format!(
            "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{port}\n\
             connect = 127.0.0.1:{upstream_port}\ncert = {cert}\nkey = {key}\n"
        );
        std::io::Write::write_all(&mut config, text.as_bytes()).expect("write stunnel config");
        let child = Command::new("stunnel4")
            .arg(config.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stunnel4 (installed by tests/services.sh install)");
        super::wait_for_port(port, "stunnel").await;
        TlsProxy {
            port,
            child,
            _config: config,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
