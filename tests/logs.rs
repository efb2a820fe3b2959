//! What the relay logs, asserted on captured output in both formats: the
//! start-up line (version, the real metrics port for `:0`), JSON with
//! `message` and fields at the top level, dead rows at warn, the periodic
//! summary, and the shutdown lines, including a second signal.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{wait_for, Count, NewRow, RelayProcess, TestEnv};
use rdkafka::mocking::MockCluster;
use serde_json::{json, Value};

/// `run` with `--metrics-addr :0` and the given log format.
fn start(env: &TestEnv, brokers: &str, format: &str, extra: &[&str]) -> RelayProcess {
    let log = env
        .dir
        .path()
        .join(format!("relay-{}.log", common::unique_name(format)));
    let child = env
        .command(&["run"])
        .args([
            "--kafka-brokers",
            brokers,
            "--metrics-addr",
            ":0",
            "--log-format",
            format,
        ])
        .args(["--poll-interval-ms", "100"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    RelayProcess {
        child,
        metrics_addr: String::new(),
        log,
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_put_message_and_fields_at_the_top_and_name_the_real_port() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(1).await;
    env.drop_topic_check().await;
    let mut bad = NewRow::new(&topic, Some("k"), json!({}));
    bad.headers = json!({ "n": 1 });
    let ids = env
        .insert(&[bad, NewRow::new(&topic, None, json!({}))])
        .await;
    let mut relay = start(&env, &env.brokers, "json", &["--summary-interval", "1s"]);
    let started = wait_for("the start-up line", Duration::from_secs(30), || async {
        json_lines(&relay.log_text())
            .into_iter()
            .find(|line| line["message"] == "relay started")
    })
    .await;
    assert_eq!(started["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(started["level"], "INFO");
    // Short key=value fields, not the whole configuration's Debug text.
    assert_eq!(started["batch_size"], 1000, "{started}");
    assert!(started.get("config").is_none(), "{started}");
    assert!(started.to_string().len() < 800, "{started}");
    let bound = started["metrics"].as_str().unwrap().to_owned();
    let port = bound.rsplit(':').next().unwrap();
    assert_ne!(port, "0", "{started}");
    relay.metrics_addr = format!("127.0.0.1:{port}");
    relay.wait_ready().await;

    let dead = wait_for("the dead-row warning", Duration::from_secs(30), || async {
        json_lines(&relay.log_text()).into_iter().find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("row is dead"))
        })
    })
    .await;
    assert_eq!(dead["level"], "WARN");
    assert_eq!(dead["id"], ids[0].0);
    assert_eq!(dead["topic"], topic.as_str());
    assert_eq!(dead["key"], "k");
    assert_eq!(dead["attempts"], 1);
    assert_eq!(dead["reason"], "invalid_headers");
    // The table it is about, as a relay serving several tables says it.
    assert_eq!(dead["span"]["table"], env.table.as_str());
    assert!(dead["error"].as_str().unwrap().contains("invalid headers"));

    let summary = wait_for("the summary line", Duration::from_secs(30), || async {
        json_lines(&relay.log_text()).into_iter().find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("during the last 1s"))
        })
    })
    .await;
    let message = summary["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("1 published ({topic} 1)")),
        "{message}"
    );
    assert!(message.contains("1 dead"), "{message}");
    assert!(
        !relay.log_text().contains("\u{1b}["),
        "no colour codes in a file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_show_the_dead_row_the_stop_and_a_summary_at_exit() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(1).await;
    let mut bad = NewRow::new(&topic, Some("k"), json!({}));
    bad.headers = json!({ "n": 1 });
    env.insert(&[bad, NewRow::new(&topic, None, json!({}))])
        .await;
    let mut relay = start(&env, &env.brokers, "text", &[]);
    env.wait_for_status("dead", Count::Exactly(1), Duration::from_secs(30))
        .await;
    env.wait_for_status("published", Count::Exactly(1), Duration::from_secs(30))
        .await;
    relay.signal("TERM");
    let status = relay.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success());
    let log = relay.log_text();
    let dead = log
        .lines()
        .find(|l| l.contains("row is dead"))
        .unwrap_or_else(|| panic!("{log}"));
    for field in [
        "WARN",
        "topic=",
        "key=\"k\"",
        "attempts=1",
        "reason=\"invalid_headers\"",
    ] {
        assert!(dead.contains(field), "{field} not in {dead}");
    }
    // The last batch may still be on its way out of the relay's books when
    // the signal lands (its commit is what the status above saw): any count.
    assert!(
        log.contains("stopped claiming; waiting for ")
            && log.contains(" rows in flight (up to 30s"),
        "{log}"
    );
    assert!(log.contains("relay stopped: 1 published"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_and_leaves_rows_pending() {
    let env = TestEnv::new().await;
    let mock = MockCluster::new(1).expect("mock cluster");
    let topic = common::unique_name("slow");
    mock.create_topic(&topic, 1, 1).expect("mock topic");
    let mut relay = start(&env, &mock.bootstrap_servers(), "text", &[]);
    wait_for("the start-up line", Duration::from_secs(30), || async {
        relay.log_text().contains("relay started").then_some(())
    })
    .await;
    // Acks take a minute: the batch stays in flight.
    mock.broker_round_trip_time(1, Duration::from_secs(60))
        .expect("round trip time");
    env.insert(&[NewRow::new(&topic, Some("k"), json!({}))])
        .await;
    let log = relay.log_text();
    let port = log
        .split("metrics=\"0.0.0.0:")
        .nth(1)
        .and_then(|rest| rest.split('"').next());
    relay.metrics_addr = format!("127.0.0.1:{}", port.expect("the bound port in the log"));
    wait_for(
        "the row to be in flight",
        Duration::from_secs(30),
        || async { (relay.metric("outbox_in_flight_messages").await? == 1.0).then_some(()) },
    )
    .await;
    relay.signal("TERM");
    wait_for("the stop line", Duration::from_secs(10), || async {
        relay
            .log_text()
            .contains("waiting for 1 rows in flight")
            .then_some(())
    })
    .await;
    relay.signal("TERM");
    let status = relay.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success());
    let log = relay.log_text();
    assert!(log.contains("second signal: exiting now"), "{log}");
    assert!(
        log.contains("they stay pending and will be sent again"),
        "{log}"
    );
    assert_eq!(env.count("pending").await, 1);
}
