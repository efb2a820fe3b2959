//! Everything through PgBouncer 1.18 in transaction mode with its default
//! settings (`ignore_startup_parameters` empty, no prepared-statement
//! support), with `--pooler transaction`, while another client of the same
//! pool leaves named prepared statements on the server connections.

mod common;

use std::collections::HashMap;
use std::process::Output;
use std::time::Duration;

use common::pgbouncer::{PgBouncer, StatementChurner};
use common::{
    assert_key_order, assert_success, consume_event_ids, database_url, Count, NewRow, Order,
    TestEnv,
};
use serde_json::json;

/// A test table whose relay commands go through a PgBouncer in front of the
/// shared PostgreSQL (the test's own client connects directly).
async fn behind_pgbouncer() -> (TestEnv, PgBouncer, StatementChurner) {
    let pg_port: u16 = database_url()
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
        .expect("port in OUTBOX_TEST_DATABASE_URL");
    let bouncer = PgBouncer::start(pg_port, 5, &[("postgres", "")]).await;
    let mut env = TestEnv::new().await;
    env.relay_database_url = bouncer.url("postgres", "postgres");
    let churner = StatementChurner::start(&bouncer.url("postgres", "postgres")).await;
    (env, bouncer, churner)
}

fn pooled(env: &TestEnv, args: &[&str]) -> Output {
    let mut command = env.command(args);
    command.args(["--pooler", "transaction"]);
    command.output().expect("run outbox-relay")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_every_row_in_key_order_through_pgbouncer() {
    let (env, _bouncer, churner) = behind_pgbouncer().await;
    let topic = env.create_topic(3).await;
    let rows: Vec<NewRow> = (0..2_000)
        .map(|i| NewRow::new(&topic, Some(&format!("key-{}", i % 20)), json!({ "n": i })))
        .collect();
    let inserted = env.insert(&rows).await;
    let args = ["--pooler", "transaction", "--batch-size", "50"];
    let mut relays = [env.start_relay(&args), env.start_relay(&args)];
    for relay in &mut relays {
        relay.wait_ready().await;
    }
    env.wait_for_status("published", Count::Exactly(2_000), Duration::from_secs(120))
        .await;
    let expected: Vec<String> = inserted.iter().map(|(_, e)| e.clone()).collect();
    let received =
        consume_event_ids(&env.brokers, &topic, &expected, Duration::from_secs(60)).await;
    let id_of: HashMap<String, i64> = inserted.iter().map(|(id, e)| (e.clone(), *id)).collect();
    assert_key_order(&received, Order::FirstArrivals, |m| id_of[m.event_id()]);
    // Rows are marked in the transaction that locked them: at most the
    // batches in flight when a relay stops can repeat, and none stopped.
    assert_eq!(received.len(), 2_000, "no duplicates");
    for relay in &relays {
        let log = relay.log_text();
        assert!(
            log.contains("LISTEN is off behind a transaction-mode pooler"),
            "{log}"
        );
        assert!(!log.contains("prepared statement"), "{log}");
        assert!(!log.contains("unreachable"), "{log}");
    }
    assert!(
        churner.stop().await > 0,
        "the other client prepared statements"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_and_concurrent_migrations_work_through_pgbouncer() {
    let (env, _bouncer, churner) = behind_pgbouncer().await;
    let (first, second) = tokio::join!(
        tokio::task::spawn_blocking({
            let mut command = env.command(&["migrate", "--notify-trigger"]);
            command.args(["--pooler", "transaction"]);
            move || command.output().unwrap()
        }),
        tokio::task::spawn_blocking({
            let mut command = env.command(&["migrate"]);
            command.args(["--pooler", "transaction"]);
            move || command.output().unwrap()
        })
    );
    assert_success(&first.unwrap(), "migrate");
    assert_success(&second.unwrap(), "concurrent migrate");

    let ids = env
        .insert(&[
            NewRow::new("t", None, json!({})),
            NewRow::new("t", None, json!({})),
        ])
        .await;
    let sql = format!(
        "UPDATE {} SET status = CASE WHEN id = $1 THEN 'dead' ELSE 'published' END,
                published_at = now() - interval '2 days'",
        env.table
    );
    env.client.execute(&sql, &[&ids[0].0]).await.unwrap();
    let status = assert_success(&pooled(&env, &["status", "--json"]), "status");
    assert!(status.contains("\"dead\": 1"), "{status}");
    let requeued = assert_success(&pooled(&env, &["requeue", "--all"]), "requeue");
    assert!(requeued.contains("requeued 1"), "{requeued}");
    let pruned = assert_success(&pooled(&env, &["prune", "--older-than", "1d"]), "prune");
    assert!(pruned.contains("deleted 1"), "{pruned}");
    assert_eq!(env.count("pending").await, 1);
    churner.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_dead_rows_are_recorded_through_pgbouncer() {
    let (env, _bouncer, churner) = behind_pgbouncer().await;
    let topic = env.create_topic(1).await;
    let missing = common::unique_name("missing");
    let mut bad_headers = NewRow::new(&topic, Some("b"), json!({}));
    bad_headers.headers = json!({ "n": 1 });
    let ids = env
        .insert(&[
            // Retried (unknown topic), then dead after 2 attempts; its key's
            // next row waits for it.
            NewRow::new(&missing, Some("a"), json!({})),
            NewRow::new(&topic, Some("a"), json!({ "after": "retries" })),
            bad_headers,
            NewRow::new(&topic, Some("b"), json!({ "after": "dead" })),
        ])
        .await;
    let mut relay = env.start_relay(&[
        "--pooler",
        "transaction",
        "--max-attempts",
        "2",
        "--retry-backoff-base-ms",
        "200",
        "--kafka-option",
        "topic.metadata.propagation.max.ms=500",
        "--kafka-option",
        "message.timeout.ms=1000",
    ]);
    relay.wait_ready().await;
    env.wait_for_status("dead", Count::Exactly(2), Duration::from_secs(60))
        .await;
    env.wait_for_status("published", Count::Exactly(2), Duration::from_secs(60))
        .await;
    let (status, attempts, _) = env.row_state(ids[0].0).await;
    assert_eq!((status.as_str(), attempts), ("dead", 2));
    let (status, attempts, error) = env.row_state(ids[2].0).await;
    assert_eq!((status.as_str(), attempts), ("dead", 1), "{error:?}");
    let log = relay.log_text();
    assert!(!log.contains("prepared statement"), "{log}");
    churner.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_pooler_flag_a_statement_name_collision_names_the_flag() {
    let (env, _bouncer, churner) = behind_pgbouncer().await;
    // Let the other client leave `s0`, `s1`, … on every server connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut failures = Vec::new();
    for _ in 0..5 {
        let output = env.command(&["status"]).output().unwrap();
        if !output.status.success() {
            failures.push(String::from_utf8_lossy(&output.stderr).into_owned());
        }
    }
    assert!(!failures.is_empty(), "no collision happened");
    for stderr in failures {
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("--pooler transaction"), "{stderr}");
        assert!(!stderr.contains("unreachable"), "{stderr}");
    }
    churner.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_and_partitioned_tables_work_through_pgbouncer() {
    let (mut env, _bouncer, churner) = behind_pgbouncer().await;
    let schema = env.table.split('.').next().unwrap().to_owned();
    // An existing Debezium-style table, adopted through the pooler.
    let debezium = format!("{schema}.events");
    env.client
        .batch_execute(&format!(
            "CREATE TABLE {debezium} (id uuid PRIMARY KEY, aggregatetype text NOT NULL,
                 aggregateid text NOT NULL, type text NOT NULL, payload jsonb);
             INSERT INTO {debezium}
                 SELECT gen_random_uuid(), 'order', 'k' || (i % 5), 'Placed', jsonb_build_object('i', i)
                 FROM generate_series(1, 300) AS i;"
        ))
        .await
        .expect("debezium table");
    env.table = debezium;
    let adopted = pooled(&env, &["migrate", "--adopt", "--layout", "debezium"]);
    let adopted = assert_success(&adopted, "migrate --adopt through PgBouncer");
    assert!(
        adopted.contains("existing rows backfilled: 300"),
        "{adopted}"
    );

    // A partitioned table, made and relayed through the pooler.
    env.table = format!("{schema}.by_day");
    let made = pooled(&env, &["migrate", "--partition-by", "day"]);
    assert_success(&made, "migrate --partition-by through PgBouncer");
    let topic = env.create_topic(1).await;
    let rows: Vec<NewRow> = (0..200)
        .map(|i| NewRow::new(&topic, Some(&format!("key-{}", i % 4)), json!({ "n": i })))
        .collect();
    let inserted = env.insert(&rows).await;
    let mut relay = env.start_relay(&["--pooler", "transaction"]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(200), Duration::from_secs(60))
        .await;
    let expected: Vec<String> = inserted.iter().map(|(_, e)| e.clone()).collect();
    let received =
        consume_event_ids(&env.brokers, &topic, &expected, Duration::from_secs(30)).await;
    let id_of: HashMap<String, i64> = inserted.iter().map(|(id, e)| (e.clone(), *id)).collect();
    assert_key_order(&received, Order::FirstArrivals, |m| id_of[m.event_id()]);
    let log = relay.log_text();
    assert!(log.contains("the table is partitioned"), "{log}");
    assert!(!log.contains("prepared statement"), "{log}");
    assert!(
        churner.stop().await > 0,
        "the other client prepared statements"
    );
}
