//! SIGTERM in the middle of a load: exit 0 in time, nothing lost.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{consume_event_ids, wait_for, Count, NewRow, TestEnv};
use serde_json::json;

const ROWS: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_load_exits_zero_and_loses_nothing() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(3).await;
    let rows: Vec<NewRow> = (0..ROWS)
        .map(|i| {
            NewRow::new(
                &topic,
                Some(&format!("key-{}", i % 100)),
                json!({ "seq": i }),
            )
        })
        .collect();
    let mut inserted = Vec::new();
    for chunk in rows.chunks(2_000) {
        inserted.extend(env.insert(chunk).await);
    }

    let mut relay = env.start_relay(&["--batch-size", "200", "--shutdown-timeout-secs", "20"]);
    relay.wait_ready().await;
    wait_for("some progress", Duration::from_secs(60), || async {
        (env.count("published").await > 0).then_some(())
    })
    .await;
    relay.signal("TERM");
    let status = relay.wait_exit(Duration::from_secs(25)).await;
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        relay.log_text()
    );
    assert!(
        relay.log_text().contains("relay stopped"),
        "{}",
        relay.log_text()
    );
    let published_at_stop = env.count("published").await;

    // A second run finishes the job.
    let mut second = env.start_relay(&[]);
    second.wait_ready().await;
    env.wait_for_status(
        "published",
        Count::Exactly(ROWS as i64),
        Duration::from_secs(120),
    )
    .await;
    let expected: Vec<String> = inserted.iter().map(|(_, e)| e.clone()).collect();
    let received =
        consume_event_ids(&env.brokers, &topic, &expected, Duration::from_secs(60)).await;
    let unique: HashSet<&str> = received.iter().map(|r| r.event_id()).collect();
    assert_eq!(unique.len(), ROWS, "every row arrived");
    let duplicates = received.len() - unique.len();
    assert!(
        duplicates <= 200,
        "{duplicates} duplicates; at most one batch in flight (published {published_at_stop} before the stop)"
    );
}
