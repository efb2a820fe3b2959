//! A row for a topic that does not exist must not hold up other topics: it
//! fails at once with reason `unknown_topic` and a `last_error` that says what
//! to do, is logged once per topic, keeps its key's later rows waiting, and
//! goes out once the topic is created. Where the broker creates topics on
//! first use, it simply goes out.

mod common;

use std::time::Duration;

use common::{create_topic, wait_for, Count, NewRow, TestEnv};
use rdkafka::mocking::MockCluster;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_fails_its_rows_at_once_and_other_topics_flow() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(1).await;
    let missing = common::unique_name("not_yet");
    let mut rows = vec![NewRow::new(&missing, Some("k"), json!({ "first": true }))];
    rows.extend((0..100).map(|i| {
        NewRow::new(
            &topic,
            Some(&format!("other-{}", i % 10)),
            json!({ "n": i }),
        )
    }));
    rows.push(NewRow::new(
        &topic,
        Some("k"),
        json!({ "after": "the missing one" }),
    ));
    let ids = env.insert(&rows).await;
    let mut relay = env.start_relay(&[
        "--retry-backoff-base-ms",
        "300",
        "--retry-backoff-max-secs",
        "1",
    ]);
    relay.wait_ready().await;

    // Far less than librdkafka's 30 s wait for an unknown topic.
    env.wait_for_status("published", Count::Exactly(100), Duration::from_secs(10))
        .await;
    let (status, attempts, error) = env.row_state(ids[0].0).await;
    assert_eq!(status, "pending");
    assert!(attempts >= 1);
    let expected = format!(
        "topic {missing} does not exist; create it, then `outbox-relay requeue --topic {missing}`"
    );
    assert_eq!(error.as_deref(), Some(expected.as_str()));
    let held = ids.last().unwrap().0;
    assert_eq!(
        env.row_state(held).await.0,
        "pending",
        "the key's later row waits"
    );
    let reason = "outbox_publish_failures_total{reason=\"unknown_topic\"}";
    // Telemetry follows the commit the status above saw: poll, do not race.
    wait_for(
        "the unknown_topic failure metric",
        Duration::from_secs(10),
        || async { (relay.metric(reason).await.unwrap_or(0.0) >= 1.0).then_some(()) },
    )
    .await;

    // Several retries later, still one warning for the topic.
    wait_for("a few retries", Duration::from_secs(30), || async {
        (env.row_state(ids[0].0).await.1 >= 3).then_some(())
    })
    .await;
    let log = relay.log_text();
    let warnings = log.matches("topic does not exist").count();
    assert_eq!(warnings, 1, "{log}");

    create_topic(&env.brokers, &missing, 1).await;
    env.wait_for_status("published", Count::Exactly(102), Duration::from_secs(30))
        .await;
    assert!(relay.log_text().contains("topic exists now"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_creates_topics_on_first_use_gets_the_row() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let env = TestEnv::new().await;
    let new_topic = common::unique_name("auto");
    env.insert(&[NewRow::new(&new_topic, Some("k"), json!({}))])
        .await;
    let mut relay = env.start_relay_with_brokers(&mock.bootstrap_servers(), &[]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(1), Duration::from_secs(30))
        .await;
    assert!(!relay.log_text().contains("does not exist"));
}
