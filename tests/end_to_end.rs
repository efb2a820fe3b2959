//! Committed rows reach Kafka with the right key, value and headers; rolled
//! back rows never do; the schema tools behave.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{consume_event_ids, consume_until, Count, NewRow, TestEnv};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_rows_arrive_with_key_value_and_headers_and_rolled_back_rows_never_do() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(3).await;

    // A rolled-back transaction, written before and after the committed rows.
    let rolled_back_marker = "rolled-back";
    insert_and_roll_back(&env, &topic, "rb-1", rolled_back_marker).await;

    let mut rows = vec![
        NewRow {
            topic: topic.clone(),
            key: Some("order-1".into()),
            payload: Some(json!({"b": [1, 2], "a": "x y"})),
            headers: json!({"trace-id": "abc", "source": "test"}),
        },
        NewRow {
            topic: topic.clone(),
            key: None,
            payload: Some(json!({"n": 1})),
            headers: json!({}),
        },
        NewRow {
            topic: topic.clone(),
            key: Some("order-1".into()),
            payload: None,
            headers: json!({}),
        },
    ];
    let mut inserted = env.insert(&rows).await;
    // The shipped enqueue function works like a plain INSERT.
    let function = env.table.replace(".outbox", ".outbox_enqueue");
    let row = env
        .client
        .query_one(
            &format!("SELECT {function}($1, $2, $3::jsonb, $4::jsonb)::text"),
            &[
                &topic,
                &"order-2",
                &json!({"via": "function"}),
                &json!({"h": "v"}),
            ],
        )
        .await
        .expect("enqueue function");
    let enqueued_event: String = row.get(0);
    inserted.push((0, enqueued_event.clone()));
    rows.push(NewRow {
        topic: topic.clone(),
        key: Some("order-2".into()),
        payload: Some(json!({"via": "function"})),
        headers: json!({"h": "v"}),
    });
    insert_and_roll_back(&env, &topic, "rb-2", rolled_back_marker).await;

    let mut relay = env.start_relay(&[]);
    relay.wait_ready().await;
    let expected: Vec<String> = inserted.iter().map(|(_, e)| e.clone()).collect();
    let received =
        consume_event_ids(&env.brokers, &topic, &expected, Duration::from_secs(30)).await;
    env.wait_for_status("published", Count::Exactly(4), Duration::from_secs(10))
        .await;

    let by_event: HashMap<&str, &common::Received> =
        received.iter().map(|r| (r.event_id(), r)).collect();
    let first = by_event[expected[0].as_str()];
    assert_eq!(first.key.as_deref(), Some("order-1"));
    assert_eq!(first.payload.as_deref(), Some(r#"{"a":"x y","b":[1,2]}"#));
    assert_eq!(first.header("trace-id"), Some("abc"));
    assert_eq!(first.header("source"), Some("test"));
    assert_eq!(
        first.headers.len(),
        3,
        "row headers plus id: {:?}",
        first.headers
    );

    let unkeyed = by_event[expected[1].as_str()];
    assert_eq!(unkeyed.key, None);

    let tombstone = by_event[expected[2].as_str()];
    assert_eq!(tombstone.payload, None, "a NULL payload is a tombstone");
    assert_eq!(tombstone.key.as_deref(), Some("order-1"));

    let via_function = by_event[enqueued_event.as_str()];
    assert_eq!(
        via_function.payload.as_deref(),
        Some(r#"{"via":"function"}"#)
    );
    assert_eq!(via_function.header("h"), Some("v"));

    assert!(
        received.iter().all(|r| !r
            .payload
            .as_deref()
            .unwrap_or("")
            .contains(rolled_back_marker)),
        "a rolled-back row reached Kafka"
    );
    assert_eq!(env.count("pending").await, 0);
    let _ = rows;

    // Nothing else shows up later either.
    let everything = consume_until(&env.brokers, &topic, Duration::from_secs(2), |_| false).await;
    assert_eq!(
        everything.len(),
        4,
        "unexpected extra messages: {everything:?}"
    );
}

async fn insert_and_roll_back(env: &TestEnv, topic: &str, key: &str, marker: &str) {
    env.client.batch_execute("BEGIN").await.expect("begin");
    env.client
        .execute(
            &format!(
                "INSERT INTO {} (topic, message_key, payload) VALUES ($1, $2, $3)",
                env.table
            ),
            &[&topic, &key, &json!({ marker: true })],
        )
        .await
        .expect("insert");
    env.client
        .batch_execute("ROLLBACK")
        .await
        .expect("rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_even_when_run_concurrently() {
    let env = TestEnv::new().await;
    let mut children: Vec<_> = (0..3)
        .map(|_| env.command(&["migrate", "--notify-trigger"]).output())
        .collect();
    for output in children.drain(..) {
        let output = output.expect("migrate ran");
        common::assert_success(&output, "migrate");
    }
    // And again, in parallel processes.
    let spawned: Vec<_> = (0..3)
        .map(|_| {
            env.command(&["migrate"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn migrate")
        })
        .collect();
    for child in spawned {
        let output = child.wait_with_output().expect("migrate ran");
        common::assert_success(&output, "concurrent migrate");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_pending_and_dead_per_topic_as_text_and_json() {
    let env = TestEnv::new().await;
    env.insert(&[
        NewRow::new("alpha", Some("k"), json!({})),
        NewRow::new("alpha", None, json!({})),
        NewRow::new("beta", None, json!({})),
    ])
    .await;
    env.client
        .batch_execute(&format!(
            "UPDATE {} SET status = 'dead' WHERE topic = 'beta'",
            env.table
        ))
        .await
        .expect("make a row dead");

    let output = env.command(&["status", "--json"]).output().expect("status");
    common::assert_success(&output, "status --json");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON status");
    assert_eq!(status["pending"], 2);
    assert_eq!(status["dead"], 1);
    assert!(status["oldest_pending_age_seconds"].as_f64().unwrap() >= 0.0);
    let topics = status["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 2);
    assert_eq!(topics[0]["topic"], "alpha");
    assert_eq!(topics[0]["pending"], 2);
    assert_eq!(topics[1]["dead"], 1);

    let output = env.command(&["status"]).output().expect("status");
    let text = String::from_utf8(output.stdout).unwrap();
    let first = text.lines().next().unwrap();
    let expected = format!("table {}: 2 pending, oldest ", env.table);
    assert!(
        first.starts_with(&expected) && first.contains(", 1 dead"),
        "{text}"
    );
    assert!(
        text.lines().nth(1).unwrap().starts_with("published: 0"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("TOTAL")), "{text}");
}
