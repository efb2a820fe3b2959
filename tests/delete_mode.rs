//! `--on-publish delete`: published rows are deleted in the transaction that
//! claimed them; dead rows stay; several relays keep per-key order.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{assert_key_order, consume_event_ids, Count, NewRow, Order, TestEnv};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_rows_are_deleted_and_dead_rows_stay() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(1).await;
    let mut bad = NewRow::new(&topic, Some("k"), json!({}));
    bad.headers = json!({ "n": 1 });
    let mut rows: Vec<NewRow> = (0..50)
        .map(|i| NewRow::new(&topic, Some(&format!("k{}", i % 5)), json!({ "n": i })))
        .collect();
    rows.push(bad);
    let inserted = env.insert(&rows).await;
    let mut relay = env.start_relay(&["--on-publish", "delete"]);
    relay.wait_ready().await;
    env.wait_for_status("dead", Count::Exactly(1), Duration::from_secs(30))
        .await;
    env.wait_for_status("pending", Count::Exactly(0), Duration::from_secs(30))
        .await;
    assert_eq!(env.count("published").await, 0);
    let left = format!("SELECT count(*) FROM {}", env.table);
    let left: i64 = env.client.query_one(&left, &[]).await.unwrap().get(0);
    assert_eq!(left, 1, "only the dead row is left");

    let expected: Vec<String> = inserted[..50].iter().map(|(_, e)| e.clone()).collect();
    let received =
        consume_event_ids(&env.brokers, &topic, &expected, Duration::from_secs(30)).await;
    let ids: HashSet<&str> = received.iter().map(|m| m.event_id()).collect();
    assert!(expected.iter().all(|e| ids.contains(e.as_str())));
    let sample = format!("outbox_published_messages_total{{topic=\"{topic}\"}}");
    assert_eq!(relay.metric(&sample).await, Some(50.0));
    let status = common::assert_success(&env.command(&["status"]).output().unwrap(), "status");
    assert!(
        status.starts_with(&format!("table {}: 0 pending", env.table)),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_deleting_relays_publish_every_row_once_in_key_order() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(3).await;
    let rows: Vec<NewRow> = (0..3_000)
        .map(|i| NewRow::new(&topic, Some(&format!("key-{}", i % 50)), json!({ "n": i })))
        .collect();
    let mut inserted = Vec::new();
    for chunk in rows.chunks(1_000) {
        inserted.extend(env.insert(chunk).await);
    }
    let args = ["--on-publish", "delete", "--batch-size", "20"];
    let mut relays = [
        env.start_relay(&args),
        env.start_relay(&args),
        env.start_relay(&args),
    ];
    for relay in &mut relays {
        relay.wait_ready().await;
    }
    let left = format!("SELECT count(*) FROM {}", env.table);
    common::wait_for("the table to empty", Duration::from_secs(120), || async {
        let n: i64 = env.client.query_one(&left, &[]).await.ok()?.get(0);
        (n == 0).then_some(())
    })
    .await;
    let expected: Vec<String> = inserted.iter().map(|(_, e)| e.clone()).collect();
    let received =
        consume_event_ids(&env.brokers, &topic, &expected, Duration::from_secs(60)).await;
    assert_eq!(received.len(), 3_000, "every row once");
    let id_of: HashMap<String, i64> = inserted.iter().map(|(id, e)| (e.clone(), *id)).collect();
    assert_key_order(&received, Order::FirstArrivals, |m| id_of[m.event_id()]);
}
