//! A broker outage (librdkafka's MockCluster): no row goes dead, readiness
//! follows the outage, and everything is delivered after recovery. A broker
//! too slow to ack within `--claim-timeout-secs`: the claim is rolled back,
//! nothing is lost, and order per key holds on first arrival.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{consume_event_ids, load, wait_for, Count, NewRow, TestEnv};
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
    let mut relay = env.start_relay_with_brokers(&brokers, &common::process::OUTAGE_FLAGS);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(100), Duration::from_secs(30))
        .await;

    mock.broker_down(1).expect("broker down");
    inserted.extend(env.insert(&rows(100, 300)).await);
    relay.wait_into_outage().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_acks_outlast_the_claim_timeout_is_released_and_sent_again() {
    let mut env = TestEnv::new().await;
    // Its own name in pg_stat_activity: other tests' relays hold claims too.
    let application = common::unique_name("claim_timeout");
    env.relay_database_url = format!("{}?application_name={application}", env.database_url);
    let mock = MockCluster::new(1).expect("mock cluster");
    let topic = common::unique_name("slow");
    mock.create_topic(&topic, 3, 1).expect("mock topic");
    let brokers = mock.bootstrap_servers();
    // The load's payload shape: `seq` is the row's place in its key.
    let rows = |from: usize, n: usize| -> Vec<NewRow> {
        (from..from + n)
            .map(|i| {
                NewRow::new(
                    &topic,
                    Some(&format!("k{}", i % 7)),
                    json!({ "seq": i / 7 }),
                )
            })
            .collect()
    };
    let mut inserted = env.insert(&rows(0, 50)).await;
    let mut relay = env.start_relay_with_brokers(
        &brokers,
        &["--claim-timeout-secs", "1s", "--batch-size", "20"],
    );
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(50), Duration::from_secs(30))
        .await;

    // Acks now take 3 s, longer than the claim may stay open.
    mock.broker_round_trip_time(1, Duration::from_secs(3))
        .expect("slow broker");
    inserted.extend(env.insert(&rows(50, 150)).await);
    let open_claim = wait_for(
        "an open claim to show in outbox_oldest_open_claim_seconds",
        Duration::from_secs(30),
        || async {
            let age = relay.metric("outbox_oldest_open_claim_seconds").await?;
            (age >= 0.5).then_some(age)
        },
    )
    .await;
    wait_for(
        "a claim to be released at the timeout",
        Duration::from_secs(30),
        || async {
            let released = relay.metric("outbox_claims_released_total").await?;
            (released >= 2.0).then_some(())
        },
    )
    .await;
    // No transaction of the relay's stays open much past the bound.
    let oldest: f64 = env
        .client
        .query_one(
            "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)::float8
             FROM pg_stat_activity WHERE application_name = $1 AND xact_start IS NOT NULL",
            &[&application],
        )
        .await
        .expect("open transactions")
        .get(0);
    assert!(
        oldest < 10.0,
        "a relay transaction has been open for {oldest:.1} s (gauge saw {open_claim:.1} s)"
    );
    assert!(relay
        .log_text()
        .contains("waited longer than --claim-timeout-secs"));
    assert_eq!(env.count("dead").await, 0);

    mock.broker_round_trip_time(1, Duration::ZERO)
        .expect("fast broker");
    env.wait_for_status("published", Count::Exactly(200), Duration::from_secs(90))
        .await;
    wait_for("no claim left open", Duration::from_secs(30), || async {
        let age = relay.metric("outbox_oldest_open_claim_seconds").await?;
        (age < 1.0).then_some(())
    })
    .await;
    // Released rows were never counted as failed attempts.
    assert_eq!(env.count("dead").await, 0);
    let received = consume_event_ids(
        &brokers,
        &topic,
        &inserted.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        Duration::from_secs(30),
    )
    .await;
    let verdict = load::verify(&received, &inserted, &inserted);
    eprintln!("claim timeout: {verdict}");
}
