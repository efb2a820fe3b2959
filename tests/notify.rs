//! LISTEN/NOTIFY wake-ups: with the trigger installed, a row committed while
//! the relay idles on a long poll interval goes out at once; a rolled-back
//! row sends nothing; a lost LISTEN connection is re-established without
//! missing rows.

mod common;

use std::time::{Duration, Instant};

use common::{consume_until, wait_for, NewRow, TestEnv};
use serde_json::json;

/// Far longer than any wake-up may take: only a notification explains an
/// arrival well within it.
const LONG_POLL_MS: &str = "120000";
const WELL_UNDER_POLL: Duration = Duration::from_secs(20);

async fn env_with_trigger() -> TestEnv {
    let env = TestEnv::new().await;
    let output = env
        .command(&["migrate", "--notify-trigger"])
        .output()
        .unwrap();
    common::assert_success(&output, "migrate --notify-trigger");
    env
}

async fn published_within(env: &TestEnv, id: i64, limit: Duration) -> Duration {
    let started = Instant::now();
    wait_for("the row to be published", limit, || async {
        (env.row_state(id).await.0 == "published").then_some(())
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_an_idle_relay_and_a_rollback_sends_nothing() {
    let env = env_with_trigger().await;
    let topic = env.create_topic(1).await;
    let mut relay = env.start_relay(&["--poll-interval-ms", LONG_POLL_MS]);
    relay.wait_ready().await;
    listener_pid(&env, None).await;

    env.client.batch_execute("BEGIN").await.unwrap();
    env.client
        .execute(
            &format!("INSERT INTO {} (topic, payload) VALUES ($1, $2)", env.table),
            &[&topic, &json!({"rolled": "back"})],
        )
        .await
        .unwrap();
    env.client.batch_execute("ROLLBACK").await.unwrap();

    // One row could ride on a wake-up left over from start-up; three rows in
    // a row, each waited for, can only be explained by notifications.
    let mut committed = Vec::new();
    for n in 0..3 {
        let inserted = env
            .insert(&[NewRow::new(&topic, Some("k"), json!({ "n": n }))])
            .await;
        published_within(&env, inserted[0].0, WELL_UNDER_POLL).await;
        committed.push(inserted[0].1.clone());
    }

    let received = consume_until(&env.brokers, &topic, Duration::from_secs(3), |_| false).await;
    let ids: Vec<&str> = received.iter().map(|r| r.event_id()).collect();
    assert_eq!(ids, committed, "only the committed rows arrive, in order");
}

/// The backend pid of the relay's LISTEN connection for this table, waiting
/// for one that differs from `not`.
async fn listener_pid(env: &TestEnv, not: Option<i32>) -> i32 {
    let listen = format!("LISTEN \"{}\"", env.table);
    wait_for("the relay's LISTEN connection", Duration::from_secs(15), || async {
        let row = env
            .client
            .query_opt("SELECT pid FROM pg_stat_activity WHERE position($1 in query) > 0 AND pid <> pg_backend_pid()", &[&listen])
            .await
            .unwrap()?;
        let pid: i32 = row.get(0);
        (Some(pid) != not).then_some(pid)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listen_connection_is_re_established_without_missing_rows() {
    let env = env_with_trigger().await;
    let topic = env.create_topic(1).await;
    let mut relay = env.start_relay(&["--poll-interval-ms", LONG_POLL_MS]);
    relay.wait_ready().await;
    let first = listener_pid(&env, None).await;

    env.client
        .execute("SELECT pg_terminate_backend($1)", &[&first])
        .await
        .unwrap();
    // Committed while nobody listens: the re-subscription must pick it up.
    let inserted = env
        .insert(&[NewRow::new(&topic, None, json!({"gap": true}))])
        .await;
    published_within(&env, inserted[0].0, WELL_UNDER_POLL).await;

    listener_pid(&env, Some(first)).await;
    let later = env
        .insert(&[NewRow::new(&topic, None, json!({"after": true}))])
        .await;
    published_within(&env, later[0].0, WELL_UNDER_POLL).await;
}
