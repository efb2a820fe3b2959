//! A Tansu broker process of a test's own, so killing it disturbs no other
//! test. Tansu's memory storage forgets everything on restart (topics too).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

pub struct PrivateBroker {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateBroker {
    pub async fn start() -> Self {
        let mut broker = PrivateBroker {
            port: free_port(),
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
        let child = Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let address = self.address();
        wait_for("Tansu to open its port", Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(&address).await.ok().map(drop)
        })
        .await;
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
