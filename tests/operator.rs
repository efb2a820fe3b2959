//! The operator's commands and their output: `migrate` (what it created,
//! `--print-sql`), the topic-name CHECK, `dead`, `--dry-run`, `requeue`
//! explaining a zero, `status --check`, completions and the man page.

mod common;

use std::process::Command;

use common::{assert_success, NewRow, TestEnv, BINARY};
use serde_json::json;

fn stdout(env: &TestEnv, args: &[&str]) -> String {
    assert_success(&env.command(args).output().unwrap(), &format!("{args:?}"))
}

#[tokio::test]
async fn migrate_says_what_it_created_and_what_was_in_place() {
    let fresh = TestEnv::bare(&common::database_url()).await;
    let first = stdout(&fresh, &["migrate"]);
    let first_line = first.lines().next().unwrap_or_default();
    assert_eq!(
        first_line,
        format!("outbox table {} is migrated", fresh.table),
        "{first}"
    );
    assert!(!first.contains("up to date"), "{first}");

    let env = TestEnv::new().await;
    // TestEnv ran `migrate` once already: everything is in place.
    let again = stdout(&env, &["migrate"]);
    assert!(again.contains("is up to date"), "{again}");
    assert!(again.contains("created: nothing"), "{again}");
    assert!(again.contains("already in place: table"), "{again}");
    let with_trigger = stdout(&env, &["migrate", "--notify-trigger"]);
    let name = env.table.rsplit('.').next().unwrap();
    assert!(
        with_trigger.contains(&format!(
            "created: function {name}_notify, trigger {name}_notify"
        )),
        "{with_trigger}"
    );
}

#[test]
fn migrate_print_sql_needs_no_database() {
    let output = Command::new(BINARY)
        .args([
            "migrate",
            "--print-sql",
            "--notify-trigger",
            "--table",
            "app.events",
        ])
        .env_remove("OUTBOX_DATABASE_URL")
        .output()
        .unwrap();
    let sql = assert_success(&output, "migrate --print-sql");
    assert!(sql.starts_with("BEGIN;"), "{sql}");
    assert!(
        sql.contains("CREATE TABLE IF NOT EXISTS \"app\".\"events\""),
        "{sql}"
    );
    assert!(
        sql.contains("events_topic_valid") && sql.contains("events_notify"),
        "{sql}"
    );
    assert!(sql.trim_end().ends_with("COMMIT;"), "{sql}");
}

#[tokio::test]
async fn an_invalid_topic_fails_in_the_applications_own_transaction() {
    let env = TestEnv::new().await;
    let sql = format!(
        "INSERT INTO {} (topic, payload) VALUES ($1, '{{}}')",
        env.table
    );
    for bad in ["has spaces", "", "..", &"x".repeat(250)] {
        let error = env.client.execute(&sql, &[&bad]).await.unwrap_err();
        let code = error.as_db_error().map(|db| db.code().code().to_owned());
        assert_eq!(code.as_deref(), Some("23514"), "{bad:?}");
    }
    env.client
        .execute(&sql, &[&"orders.v1_created-2"])
        .await
        .unwrap();
}

#[tokio::test]
async fn dead_lists_dead_rows_as_text_and_json() {
    let env = TestEnv::new().await;
    let ids = env
        .insert(&[
            NewRow::new("orders", Some("k1"), json!({})),
            NewRow::new("payments", None, json!({})),
            NewRow::new("orders", Some("k2"), json!({})),
        ])
        .await;
    let sql = format!(
        "UPDATE {} SET status = 'dead', attempts = 3, last_attempt_at = now(), last_error = 'kafka: boom' WHERE id <> $1",
        env.table
    );
    env.client.execute(&sql, &[&ids[1].0]).await.unwrap();
    let text = stdout(&env, &["dead"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("ID") && lines[0].contains("ERROR"),
        "{text}"
    );
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].contains("orders") && lines[1].contains("k1") && lines[1].ends_with("kafka: boom")
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(
        &env,
        &["dead", "--topic", "orders", "--limit", "1", "--json"],
    ))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["id"], ids[0].0);
    assert_eq!(json[0]["attempts"], 3);
    assert_eq!(json[0]["last_error"], "kafka: boom");
}

#[tokio::test]
async fn dry_runs_count_and_change_nothing_and_requeue_explains_a_zero() {
    let env = TestEnv::new().await;
    let ids = env
        .insert(&[
            NewRow::new("t", None, json!({})),
            NewRow::new("t", None, json!({})),
            NewRow::new("t", None, json!({})),
        ])
        .await;
    let sql = format!(
        "UPDATE {} SET status = CASE WHEN id = $1 THEN 'dead' ELSE 'published' END,
                published_at = now() - interval '2 days' WHERE id <> $2",
        env.table
    );
    env.client
        .execute(&sql, &[&ids[0].0, &ids[2].0])
        .await
        .unwrap();
    let would = stdout(&env, &["requeue", "--all", "--dry-run"]);
    assert!(would.starts_with("would requeue 1 dead rows"), "{would}");
    let would = stdout(&env, &["prune", "--older-than", "1d", "--dry-run"]);
    assert!(
        would.starts_with("would delete 1 published rows"),
        "{would}"
    );
    assert_eq!(env.count("dead").await, 1);
    assert_eq!(env.count("published").await, 1);

    let id = |i: usize| ids[i].0.to_string();
    let missing = (ids[2].0 + 1000).to_string();
    let list = format!("{},{},{}", id(1), id(2), missing);
    let none = stdout(&env, &["requeue", "--id", &list]);
    assert_eq!(
        none.trim(),
        format!(
            "requeued 0 dead rows: id {}: already published; id {}: not dead (pending); id {missing}: no such row",
            id(1),
            id(2)
        )
    );
    let none = stdout(&env, &["requeue", "--topic", "elsewhere"]);
    assert!(none.contains("topic elsewhere has no dead rows"), "{none}");
}

#[tokio::test]
async fn status_check_exits_1_on_dead_rows_or_lag_and_0_when_healthy() {
    let env = TestEnv::new().await;
    let healthy = env.command(&["status", "--check"]).output().unwrap();
    assert_eq!(healthy.status.code(), Some(0));
    let ids = env.insert(&[NewRow::new("t", None, json!({}))]).await;
    let sql = format!(
        "UPDATE {} SET created_at = now() - interval '10 minutes' WHERE id = $1",
        env.table
    );
    env.client.execute(&sql, &[&ids[0].0]).await.unwrap();
    let lagging = env
        .command(&["status", "--check", "--max-lag", "5m"])
        .output()
        .unwrap();
    assert_eq!(lagging.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&lagging.stderr);
    assert!(
        stderr.contains("check failed: the oldest pending row is"),
        "{stderr}"
    );
    let relaxed = env
        .command(&["status", "--check", "--max-lag", "1h"])
        .output()
        .unwrap();
    assert_eq!(relaxed.status.code(), Some(0));
    let dead = format!("UPDATE {} SET status = 'dead'", env.table);
    env.client.batch_execute(&dead).await.unwrap();
    let unhealthy = env
        .command(&["status", "--check", "--max-lag", "1h"])
        .output()
        .unwrap();
    assert_eq!(unhealthy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unhealthy.stderr).contains("1 dead rows"));
}

#[test]
fn completions_and_the_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let output = Command::new(BINARY)
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = assert_success(&output, shell);
        assert!(
            script.contains("outbox-relay") && script.contains("requeue"),
            "{shell}"
        );
    }
    let output = Command::new(BINARY).arg("man").output().unwrap();
    let page = assert_success(&output, "man");
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains("outbox\\-relay"), "{page}");
}
