//! The relay as a real child process, and its HTTP endpoints.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use super::wait_for;

/// `run` flags for outage tests: message timeouts of 1 s, so an outage
/// fails several sends quickly, and rows that burn two attempts go dead.
pub const OUTAGE_FLAGS: [&str; 4] = [
    "--max-attempts",
    "2",
    "--kafka-option",
    "message.timeout.ms=1000",
];

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

    /// Wait until /readyz reports a broker outage, then let several
    /// message timeouts ([`OUTAGE_FLAGS`]) pass in it: long enough for
    /// rows to burn attempts if an outage counted against them.
    pub async fn wait_into_outage(&self) {
        wait_for(
            "/readyz to report the outage",
            Duration::from_secs(30),
            || async { (self.get("/readyz").await?.0 == 503).then_some(()) },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(4)).await;
    }

    /// Wait until /readyz answers 200 (the relay finished starting); panics
    /// with the log if the relay exits first.
    pub async fn wait_ready(&mut self) {
        let (child, addr, log) = (&mut self.child, &self.metrics_addr, &self.log);
        wait_for("the relay to be ready", Duration::from_secs(30), || {
            let exited = child.try_wait().ok().flatten();
            async move {
                if let Some(status) = exited {
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    panic!("relay exited early with {status}:\n{log}");
                }
                matches!(http_get(addr, "/readyz").await, Some((200, _))).then_some(())
            }
        })
        .await;
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

/// The value of the first series of `sample`'s name that carries at least
/// `sample`'s labels (`name` or `name{label="value",…}`): every series also
/// carries `table`, which tests need not spell out.
pub fn parse_metric(body: &str, sample: &str) -> Option<f64> {
    let (name, wanted) = split_series(sample);
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, labels) = split_series(series);
            let matches = series_name == name && wanted.iter().all(|l| labels.contains(l));
            matches.then(|| value.parse().ok()).flatten()
        })
}

/// `name{a="1",b="2"}` → (`name`, [`a="1"`, `b="2"`]). Label values in these
/// tests hold no commas.
fn split_series(series: &str) -> (&str, Vec<&str>) {
    match series.split_once('{') {
        Some((name, rest)) => {
            let labels = rest.trim_end_matches('}');
            (name, labels.split(',').filter(|l| !l.is_empty()).collect())
        }
        None => (series, Vec::new()),
    }
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
