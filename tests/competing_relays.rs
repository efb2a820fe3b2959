//! Several relay processes on one table: every row once, per-key order kept.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{assert_key_order, consume_event_ids, Count, NewRow, Order, TestEnv};
use serde_json::json;

const ROWS: usize = 10_000;
const KEYS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_on_one_table_publish_every_row_exactly_once_in_key_order() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(3).await;
    let rows: Vec<NewRow> = (0..ROWS)
        .map(|i| {
            NewRow::new(
                &topic,
                Some(&format!("key-{}", i % KEYS)),
                json!({ "seq": i }),
            )
        })
        .collect();
    let mut inserted = Vec::new();
    for chunk in rows.chunks(1_000) {
        inserted.extend(env.insert(chunk).await);
    }

    let mut relays: Vec<_> = (0..3)
        // Batches smaller than the key count let relays work side by side;
        // without an elected leader, all three claim.
        .map(|_| env.start_relay(&["--batch-size", "20", "--election", "none"]))
        .collect();
    for relay in &mut relays {
        relay.wait_ready().await;
    }
    env.wait_for_status(
        "published",
        Count::Exactly(ROWS as i64),
        Duration::from_secs(180),
    )
    .await;

    let expected: Vec<String> = inserted.iter().map(|(_, e)| e.clone()).collect();
    let received =
        consume_event_ids(&env.brokers, &topic, &expected, Duration::from_secs(60)).await;

    let unique: HashSet<&str> = received.iter().map(|r| r.event_id()).collect();
    assert_eq!(unique.len(), ROWS, "every row arrives");
    assert_eq!(received.len(), ROWS, "no row is published twice");
    let id_of_event: HashMap<String, i64> =
        inserted.iter().map(|(id, e)| (e.clone(), *id)).collect();
    assert_key_order(&received, Order::FirstArrivals, |m| {
        id_of_event[m.event_id()]
    });
    // Relays did work side by side, so the test exercised competition.
    let mut shares = Vec::new();
    for relay in &relays {
        let sample = format!("outbox_published_messages_total{{topic=\"{topic}\"}}");
        shares.push(relay.metric(&sample).await.unwrap_or(0.0));
    }
    assert_eq!(shares.iter().sum::<f64>(), ROWS as f64, "shares {shares:?}");
    assert!(
        shares.iter().filter(|s| **s > 0.0).count() >= 2,
        "shares {shares:?}"
    );
}
