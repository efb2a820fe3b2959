//! Retention: `prune` and `run --retention` delete old published rows in
//! small batches, never dead or pending ones, and report it.

mod common;

use std::time::Duration;

use common::{wait_for, Count, NewRow, TestEnv};
use serde_json::json;

/// 2,500 old published rows, 100 recent published, 10 old dead, 10 pending.
async fn seed(env: &TestEnv) {
    let rows: Vec<NewRow> = (0..2_620)
        .map(|i| NewRow::new("t", None, json!({ "i": i })))
        .collect();
    env.insert(&rows).await;
    let table = &env.table;
    env.client
        .batch_execute(&format!(
            "UPDATE {table} SET status = 'published', published_at = now() - interval '3 days' WHERE id IN (SELECT id FROM {table} ORDER BY id LIMIT 2500);
             UPDATE {table} SET status = 'published', published_at = now() WHERE id IN (SELECT id FROM {table} WHERE status = 'pending' ORDER BY id LIMIT 100);
             UPDATE {table} SET status = 'dead', published_at = now() - interval '3 days' WHERE id IN (SELECT id FROM {table} WHERE status = 'pending' ORDER BY id LIMIT 10);"
        ))
        .await
        .expect("seed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_only_old_published_rows_and_shows_progress() {
    let env = TestEnv::new().await;
    seed(&env).await;
    let output = env
        .command(&["prune", "--older-than", "24h", "--max-rows-per-sec", "0"])
        .output()
        .expect("prune");
    common::assert_success(&output, "prune");
    assert!(String::from_utf8_lossy(&output.stdout).contains("deleted 2500 published rows"));
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(progress.contains("deleted 1000 rows so far"), "{progress}");
    assert_eq!(env.count("published").await, 100);
    assert_eq!(env.count("dead").await, 10);
    assert_eq!(env.count("pending").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_enforces_retention_and_reports_it() {
    let env = TestEnv::new().await;
    seed(&env).await;
    // The pending rows target a topic that does not exist; keep them waiting.
    let mut relay = env.start_relay(&[
        "--retention",
        "24h",
        "--kafka-option",
        "message.timeout.ms=60000",
    ]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(100), Duration::from_secs(60))
        .await;
    assert_eq!(env.count("dead").await, 10, "dead rows are never deleted");
    wait_for(
        "the pruned counter and table size",
        Duration::from_secs(30),
        || async {
            let pruned = relay.metric("outbox_pruned_messages_total").await?;
            let size = relay.metric("outbox_table_size_bytes").await?;
            (pruned == 2500.0 && size > 0.0).then_some(())
        },
    )
    .await;
}
