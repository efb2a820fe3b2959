//! Retry with backoff, `dead` after --max-attempts or at once for errors no
//! retry can fix, per-key hold-back, and `requeue`.

mod common;

use std::time::Duration;

use common::{consume_event_ids, create_topic, unique_name, wait_for, Count, NewRow, TestEnv};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_row_backs_off_holds_its_key_goes_dead_and_requeue_brings_it_back() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(1).await;
    // Tansu does not auto-create topics: sends to this one fail until it exists.
    let missing = unique_name("missing");
    let inserted = env
        .insert(&[
            NewRow::new(&missing, Some("k"), json!({"n": 1})),
            NewRow::new(&topic, Some("k"), json!({"n": 2})),
            NewRow::new(&topic, Some("other"), json!({"n": 3})),
        ])
        .await;
    let (failing, behind, other) = (inserted[0].0, inserted[1].0, inserted[2].0);

    let _relay = env.start_relay(&[
        "--max-attempts",
        "3",
        "--retry-backoff-base-ms",
        "1000",
        "--kafka-option",
        "message.timeout.ms=1000",
    ]);

    // Other keys flow while the failing row retries.
    wait_for(
        "the other key to be published",
        Duration::from_secs(30),
        || async { (env.row_state(other).await.0 == "published").then_some(()) },
    )
    .await;

    // After the first failure: attempt counted, error recorded, retry scheduled
    // at least half the base delay later, later row of the key held back.
    wait_for(
        "the first failed attempt",
        Duration::from_secs(30),
        || async { (env.row_state(failing).await.1 >= 1).then_some(()) },
    )
    .await;
    let (status, _, last_error) = env.row_state(failing).await;
    assert_eq!(status, "pending");
    let expected = format!("topic {missing} does not exist; create it");
    assert!(last_error.is_some_and(|e| e.starts_with(&expected)));
    let gap: f64 = env
        .client
        .query_one(
            &format!(
                "SELECT extract(epoch FROM next_attempt_at - last_attempt_at)::float8 FROM {} WHERE id = $1",
                env.table
            ),
            &[&failing],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (0.5..=1.0).contains(&gap),
        "first retry delay {gap}s is outside 0.5–1s"
    );
    assert_eq!(
        env.row_state(behind).await.0,
        "pending",
        "a later row of the key overtook"
    );

    // Attempts run out: dead, and the key is released.
    wait_for(
        "the failing row to go dead",
        Duration::from_secs(60),
        || async {
            let (status, attempts, _) = env.row_state(failing).await;
            (status == "dead").then_some(attempts)
        },
    )
    .await;
    assert_eq!(env.row_state(failing).await.1, 3);
    wait_for(
        "the held-back row to be published",
        Duration::from_secs(30),
        || async { (env.row_state(behind).await.0 == "published").then_some(()) },
    )
    .await;

    // Fix the cause, requeue, and the row goes out.
    create_topic(&env.brokers, &missing, 1).await;
    let output = env
        .command(&["requeue", "--id", &failing.to_string()])
        .output()
        .expect("requeue");
    common::assert_success(&output, "requeue");
    assert!(String::from_utf8_lossy(&output.stdout).contains("requeued 1 dead rows"));
    wait_for(
        "the requeued row to be published",
        Duration::from_secs(60),
        || async { (env.row_state(failing).await.0 == "published").then_some(()) },
    )
    .await;
    let received = consume_event_ids(
        &env.brokers,
        &missing,
        &[inserted[0].1.clone()],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(received.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_no_retry_can_fix_go_dead_at_once_and_do_not_block_their_key() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(1).await;
    let mut bad_headers = NewRow::new(&topic, Some("k"), json!({}));
    bad_headers.headers = json!({"count": 1});
    env.drop_topic_check().await;
    let inserted = env
        .insert(&[
            bad_headers,
            NewRow::new("not a valid topic!", Some("k"), json!({})),
            NewRow::new(&topic, Some("k"), json!({"after": true})),
        ])
        .await;
    let _relay = env.start_relay(&["--max-attempts", "5"]);
    env.wait_for_status("published", Count::Exactly(1), Duration::from_secs(30))
        .await;

    let (status, attempts, error) = env.row_state(inserted[0].0).await;
    assert_eq!((status.as_str(), attempts), ("dead", 1));
    assert!(error.unwrap().contains("header \"count\" is a number"));
    let (status, attempts, error) = env.row_state(inserted[1].0).await;
    assert_eq!((status.as_str(), attempts), ("dead", 1));
    assert!(error.unwrap().contains("invalid topic name"));
    assert_eq!(env.row_state(inserted[2].0).await.0, "published");

    // requeue by topic and --all select dead rows only.
    let output = env
        .command(&["requeue", "--topic", &topic])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("requeued 1 dead rows"));
    let output = env.command(&["requeue", "--all"]).output().unwrap();
    assert!(output.status.success());
    // Both are poison, so both end up dead again, attempts counted afresh.
    env.wait_for_status("dead", Count::Exactly(2), Duration::from_secs(30))
        .await;
    assert_eq!(env.row_state(inserted[0].0).await.1, 1);
}
