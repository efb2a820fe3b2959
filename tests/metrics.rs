//! /metrics, /healthz and /readyz: values move as the relay works, and the
//! exposition passes `promtool check metrics`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{parse_metric, unique_name, wait_for, NewRow, TestEnv};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_publishing_failures_and_the_backlog() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(1).await;
    let mut relay = env.start_relay(&[
        "--max-attempts",
        "1",
        "--kafka-option",
        "message.timeout.ms=1000",
    ]);
    relay.wait_ready().await;

    let published = format!("outbox_published_messages_total{{topic=\"{topic}\"}}");
    let (status, body) = relay.get("/metrics").await.expect("scrape");
    assert_eq!(status, 200);
    // Every series of the relay's work names its table (build and process
    // metrics are the process's).
    let table = format!("table=\"{}\"", env.table);
    let work = |l: &&str| l.starts_with("outbox_") && !l.starts_with("outbox_relay_build_info");
    for line in body.lines().filter(work) {
        assert!(line.contains(&table), "a series without {table}: {line}");
    }
    assert_eq!(
        parse_metric(&body, &published),
        None,
        "nothing published yet"
    );
    assert_eq!(parse_metric(&body, "outbox_pending_messages"), Some(0.0));
    assert_eq!(relay.get("/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(relay.get("/readyz").await.map(|r| r.0), Some(200));

    let rows: Vec<NewRow> = (0..5)
        .map(|i| NewRow::new(&topic, None, json!({ "i": i })))
        .collect();
    env.insert(&rows).await;
    let missing = unique_name("missing");
    env.insert(&[NewRow::new(&missing, None, json!({}))]).await;

    wait_for(
        "5 published in /metrics",
        Duration::from_secs(30),
        || async { (relay.metric(&published).await == Some(5.0)).then_some(()) },
    )
    .await;
    wait_for(
        "the dead row in /metrics",
        Duration::from_secs(30),
        || async { (relay.metric("outbox_dead_messages").await == Some(1.0)).then_some(()) },
    )
    .await;
    let (_, body) = relay.get("/metrics").await.unwrap();
    assert_eq!(parse_metric(&body, "outbox_pending_messages"), Some(0.0));
    assert_eq!(
        parse_metric(&body, "outbox_oldest_pending_age_seconds"),
        Some(0.0)
    );
    assert_eq!(
        parse_metric(&body, "outbox_dead_lettered_messages_total"),
        Some(1.0)
    );
    assert!(parse_metric(&body, "outbox_delivery_latency_seconds_count").unwrap() >= 5.0);
    assert!(parse_metric(&body, "outbox_batch_duration_seconds_count").unwrap() >= 1.0);
    let failures: f64 = ["timeout", "unknown_topic", "broker_unavailable", "other"]
        .iter()
        .filter_map(|reason| {
            parse_metric(
                &body,
                &format!("outbox_publish_failures_total{{reason=\"{reason}\"}}"),
            )
        })
        .sum();
    assert!(failures >= 1.0, "the failed attempt is counted:\n{body}");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by tests/services.sh install");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    common::assert_success(&output, "promtool check metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_rows_show_in_the_backlog_gauges_while_they_wait() {
    let env = TestEnv::new().await;
    let missing = unique_name("missing");
    // A row that keeps failing holds back its key: the row behind it waits.
    env.insert(&[
        NewRow::new(&missing, Some("k"), json!({})),
        NewRow::new(&missing, Some("k"), json!({})),
    ])
    .await;
    let mut relay = env.start_relay(&["--kafka-option", "message.timeout.ms=1000"]);
    relay.wait_ready().await;
    wait_for(
        "2 pending rows with an age",
        Duration::from_secs(30),
        || async {
            let (_, body) = relay.get("/metrics").await?;
            let pending = parse_metric(&body, "outbox_pending_messages")?;
            let age = parse_metric(&body, "outbox_oldest_pending_age_seconds")?;
            (pending == 2.0 && age > 0.0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_named_without_its_schema_is_labelled_with_it() {
    let mut env = TestEnv::bare(&common::database_url()).await;
    // On the search path: the table lands in `public`.
    let bare = unique_name("bare_outbox");
    env.table = bare.clone();
    let migrate = env.command(&["migrate"]).output().expect("migrate");
    common::assert_success(&migrate, "migrate");
    let mut relay = env.start_relay(&[]);
    relay.wait_ready().await;
    let (_, body) = relay.get("/metrics").await.expect("scrape");
    let label = format!("outbox_relay_role{{table=\"public.{bare}\"}}");
    assert!(body.contains(&label), "no {label} in:\n{body}");
    drop(relay);
    env.client
        .batch_execute(&format!(
            "DROP TABLE public.{bare} CASCADE; DROP FUNCTION public.{bare}_enqueue"
        ))
        .await
        .expect("drop");
}
