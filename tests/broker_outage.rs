//! A broker outage (librdkafka's MockCluster): no row goes dead, readiness
//! follows the outage, and everything is delivered after recovery.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{consume_event_ids, wait_for, Count, NewRow, TestEnv};
use rdkafka::mocking::MockCluster;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_kills_no_row_and_everything_arrives_after_recovery() {
    let env = TestEnv::new().await;
    let mock = MockCluster::new(1).expect("mock cluster");
    let topic = common::unique_name("outage");
    mock.create_topic(&topic, 3, 1).expect("mock topic");
    let brokers = mock.bootstrap_servers();

    let rows = |from: usize, n: usize| -> Vec<NewRow> {
        (from..from + n)
            .map(|i| NewRow::new(&topic, Some(&format!("k{}", i % 10)), json!({ "i": i })))
            .collect()
    };
    let mut inserted = env.insert(&rows(0, 100)).await;
    let mut relay = env.start_relay_with_brokers(
        &brokers,
        &[
            "--max-attempts",
            "2",
            "--kafka-option",
            "message.timeout.ms=1000",
        ],
    );
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(100), Duration::from_secs(30))
        .await;

    mock.broker_down(1).expect("broker down");
    inserted.extend(env.insert(&rows(100, 300)).await);
    wait_for(
        "/readyz to report the outage",
        Duration::from_secs(30),
        || async { (relay.get("/readyz").await?.0 == 503).then_some(()) },
    )
    .await;
    // Several message timeouts pass while the broker is down.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        env.count("dead").await,
        0,
        "an outage burned rows:\n{}",
        relay.log_text()
    );
    assert_eq!(env.count("pending").await, 300);

    mock.broker_up(1).expect("broker up");
    env.wait_for_status("published", Count::Exactly(400), Duration::from_secs(60))
        .await;
    wait_for("/readyz to recover", Duration::from_secs(30), || async {
        (relay.get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    assert_eq!(env.count("dead").await, 0);

    let expected: Vec<String> = inserted.iter().map(|(_, e)| e.clone()).collect();
    let received = consume_event_ids(&brokers, &topic, &expected, Duration::from_secs(30)).await;
    let unique: HashSet<&str> = received.iter().map(|r| r.event_id()).collect();
    assert_eq!(unique.len(), 400);
    // Attempts were never counted against the rows.
    let attempts: i64 = env
        .client
        .query_one(
            &format!("SELECT coalesce(max(attempts), 0)::int8 FROM {}", env.table),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 0);
}
