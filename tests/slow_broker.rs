//! A slow broker (librdkafka's MockCluster with a long round trip):
//! `published_at` records when the Kafka ack was recorded, not when the row
//! was claimed.

mod common;

use std::time::Duration;

use common::{Count, NewRow, TestEnv};
use rdkafka::mocking::MockCluster;
use serde_json::json;

const ROUND_TRIP: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_at_is_after_the_ack_of_a_slow_broker() {
    let env = TestEnv::new().await;
    let mock = MockCluster::new(1).expect("mock cluster");
    let topic = common::unique_name("slow");
    mock.create_topic(&topic, 1, 1).expect("mock topic");
    let mut relay = env.start_relay_with_brokers(&mock.bootstrap_servers(), &[]);
    relay.wait_ready().await;
    mock.broker_round_trip_time(1, ROUND_TRIP)
        .expect("round trip time");

    // The relay idles on a 100 ms poll, so it claims the row well within
    // the round trip; only the ack can be that late.
    env.insert(&[NewRow::new(&topic, Some("k"), json!({ "n": 1 }))])
        .await;
    env.wait_for_status("published", Count::Exactly(1), Duration::from_secs(30))
        .await;
    let seconds: f64 = env
        .client
        .query_one(
            &format!(
                "SELECT extract(epoch FROM published_at - created_at)::float8 FROM {}",
                env.table
            ),
            &[],
        )
        .await
        .expect("published row")
        .get(0);
    assert!(
        seconds >= ROUND_TRIP.as_secs_f64() * 0.9,
        "published_at is {seconds:.3} s after created_at, before the {ROUND_TRIP:?} ack:\n{}",
        relay.log_text()
    );
}
