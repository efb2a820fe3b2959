//! Query-level tests: the database layer against real PostgreSQL, without the
//! binary. The per-key ordering rules live in `outbox_claim_due.sql` and
//! `outbox_hold_back_keys.sql`; these tests pin them down directly.

mod common;

use std::time::Duration;

use common::{NewRow, TestEnv};
use outbox_relay::source::queries::{self, OutboxPrunePublishedParams, OutboxRequeueDeadParams};
use outbox_relay::source::{Database, FailureRecord, Fence, Results};
use outbox_relay::Error;
use serde_json::json;

async fn setup() -> (TestEnv, Database) {
    let env = TestEnv::new().await;
    let table = env.table.parse().expect("table name");
    let database = Database::new(&env.database_url, &table, 2).expect("pool");
    (env, database)
}

/// Insert one row per key (`None`: keyless), in order; returns their ids.
async fn insert(env: &TestEnv, keys: &[Option<&str>]) -> Vec<i64> {
    let rows: Vec<NewRow> = keys
        .iter()
        .map(|key| NewRow::new("t", *key, json!({})))
        .collect();
    env.insert(&rows)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

async fn exec(env: &TestEnv, sql: &str, ids: &[i64]) {
    let sql = sql.replace("{table}", &env.table);
    env.client.execute(&sql, &[&ids]).await.expect(&sql);
}

fn results<'a>(
    published: &'a [i64],
    failures: &'a [FailureRecord],
    max_attempts: u32,
) -> Results<'a> {
    Results {
        published,
        failures,
        max_attempts,
    }
}

/// Ids a fresh claim returns (rolled back afterwards).
async fn claimable(database: &Database, limit: usize, in_flight: &[i64]) -> Vec<i64> {
    fenced_claimable(database, limit, in_flight, None).await
}

async fn fenced_claimable(
    database: &Database,
    limit: usize,
    in_flight: &[i64],
    fence: Option<Fence>,
) -> Vec<i64> {
    let mut batch = database
        .claim(limit, in_flight, &[], fence)
        .await
        .expect("claim");
    let ids = batch.rows.drain(..).map(|row| row.id).collect();
    batch.abandon().await;
    ids
}

#[tokio::test]
async fn a_claim_returns_due_rows_in_id_order_up_to_its_limit() {
    let (env, database) = setup().await;
    let ids = insert(&env, &[None, None, None, None, None, None]).await;
    exec(
        &env,
        "UPDATE {table} SET next_attempt_at = now() + interval '1 hour' WHERE id = ANY($1)",
        &ids[1..2],
    )
    .await;
    assert_eq!(
        claimable(&database, 3, &[]).await,
        vec![ids[0], ids[2], ids[3]]
    );
    let due: Vec<i64> = ids.iter().copied().filter(|&id| id != ids[1]).collect();
    assert_eq!(claimable(&database, 100, &[]).await, due);
}

#[tokio::test]
async fn a_row_locked_by_another_transaction_holds_its_key_back() {
    let (env, database) = setup().await;
    let ids = insert(&env, &[Some("a"), Some("a"), Some("b")]).await;
    let other = common::connect(&env.database_url).await;
    other.batch_execute("BEGIN").await.unwrap();
    let lock = format!("SELECT 1 FROM {} WHERE id = $1 FOR UPDATE", env.table);
    other.execute(&lock, &[&ids[0]]).await.unwrap();

    assert_eq!(claimable(&database, 10, &[]).await, vec![ids[2]]);
    // The same row in flight at this relay is "ours": the key may go on.
    assert_eq!(
        claimable(&database, 10, &ids[..1]).await,
        vec![ids[1], ids[2]]
    );
    other.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(claimable(&database, 10, &[]).await, ids);
}

#[tokio::test]
async fn a_passed_over_row_holds_back_only_the_later_rows_of_its_own_key() {
    let (env, database) = setup().await;
    let keys = [Some("a"), Some("b"), Some("a"), Some("a"), Some("b"), None];
    let ids = insert(&env, &keys).await;
    let other = common::connect(&env.database_url).await;
    other.batch_execute("BEGIN").await.unwrap();
    let lock = format!("SELECT 1 FROM {} WHERE id = $1 FOR UPDATE", env.table);
    other.execute(&lock, &[&ids[2]]).await.unwrap();
    // a's first row is before the locked one; its last is after it.
    assert_eq!(
        claimable(&database, 10, &[]).await,
        vec![ids[0], ids[1], ids[4], ids[5]]
    );
    // With a limit that stops before the locked row, nothing is held.
    assert_eq!(claimable(&database, 2, &[]).await, vec![ids[0], ids[1]]);
    other.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn a_row_waiting_for_its_retry_holds_its_key_back() {
    let (env, database) = setup().await;
    let ids = insert(&env, &[Some("a"), Some("a"), None]).await;
    exec(
        &env,
        "UPDATE {table} SET next_attempt_at = now() + interval '1 hour' WHERE id = ANY($1)",
        &ids[..1],
    )
    .await;
    assert_eq!(claimable(&database, 10, &[]).await, vec![ids[2]]);
}

#[tokio::test]
async fn a_dead_row_releases_its_key() {
    let (env, database) = setup().await;
    let ids = insert(&env, &[Some("a"), Some("a")]).await;
    exec(
        &env,
        "UPDATE {table} SET status = 'dead' WHERE id = ANY($1)",
        &ids[..1],
    )
    .await;
    assert_eq!(claimable(&database, 10, &[]).await, vec![ids[1]]);
}

#[tokio::test]
async fn a_fenced_claim_takes_rows_only_while_its_lock_session_holds_the_lock() {
    let (env, database) = setup().await;
    let ids = insert(&env, &[Some("a"), None]).await;
    let session = common::connect(&env.database_url).await;
    let row = session
        .query_one(
            "SELECT pg_backend_pid(), 4242::int8, pg_try_advisory_lock(4242::int8)",
            &[],
        )
        .await
        .expect("lock");
    let fence = Fence {
        pid: row.get(0),
        lock_key: row.get(1),
    };
    assert!(row.get::<_, bool>(2));
    assert_eq!(fenced_claimable(&database, 10, &[], Some(fence)).await, ids);
    // A key whose high half has its top bit set (the lock's classid above
    // 2^31) is matched too.
    let high = Fence {
        lock_key: -4242,
        ..fence
    };
    assert!(fenced_claimable(&database, 10, &[], Some(high))
        .await
        .is_empty());
    session
        .query_one("SELECT pg_try_advisory_lock(-4242::int8)", &[])
        .await
        .expect("lock");
    assert_eq!(fenced_claimable(&database, 10, &[], Some(high)).await, ids);
    let other_session = Fence {
        pid: fence.pid + 1_000_000,
        ..fence
    };
    assert!(fenced_claimable(&database, 10, &[], Some(other_session))
        .await
        .is_empty());
    // The lock session ends: the fence stops every claim at once.
    drop(session);
    common::wait_for(
        "the lock to be released",
        Duration::from_secs(10),
        || async {
            fenced_claimable(&database, 10, &[], Some(fence))
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        claimable(&database, 10, &[]).await,
        ids,
        "unfenced claims go on"
    );
}

#[tokio::test]
async fn a_retrying_row_holds_back_the_later_rows_of_its_key_only() {
    let (env, database) = setup().await;
    let ids = insert(&env, &[Some("a"), Some("a"), Some("b"), Some("a")]).await;
    let batch = database.claim(1, &[], &[], None).await.expect("claim");
    let failure = FailureRecord {
        id: ids[0],
        message_key: Some("a".into()),
        error: "kafka: boom".into(),
        is_final: false,
        retry_in: Duration::from_secs(3600),
    };
    let recorded = batch
        .record(results(&[], &[failure], 10))
        .await
        .expect("record");
    assert_eq!((recorded.retrying, recorded.dead.len()), (1, 0));

    let sql = format!(
        "SELECT id, next_attempt_at > now() FROM {} ORDER BY id",
        env.table
    );
    let waiting: Vec<(i64, bool)> = env
        .client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let expected = vec![
        (ids[0], true),
        (ids[1], true),
        (ids[2], false),
        (ids[3], true),
    ];
    assert_eq!(waiting, expected);
    assert_eq!(claimable(&database, 10, &[]).await, vec![ids[2]]);
}

#[tokio::test]
async fn used_up_attempts_and_final_errors_make_a_row_dead() {
    let (env, database) = setup().await;
    let ids = insert(&env, &[Some("a"), Some("b"), None]).await;
    exec(
        &env,
        "UPDATE {table} SET attempts = 2 WHERE id = ANY($1)",
        &ids[..1],
    )
    .await;
    let batch = database.claim(10, &[], &[], None).await.expect("claim");
    let failure = |id, is_final| FailureRecord {
        id,
        message_key: None,
        error: "kafka: boom".into(),
        is_final,
        retry_in: Duration::from_secs(1),
    };
    let failures = [
        failure(ids[0], false),
        failure(ids[1], true),
        failure(ids[2], false),
    ];
    let recorded = batch
        .record(results(&[], &failures, 3))
        .await
        .expect("record");
    assert_eq!(recorded.dead, vec![ids[0], ids[1]]);
    assert_eq!(recorded.retrying, 1);
    let (status, attempts, error) = env.row_state(ids[0]).await;
    assert_eq!((status.as_str(), attempts), ("dead", 3));
    assert_eq!(error.as_deref(), Some("kafka: boom"));
}

#[tokio::test]
async fn requeue_and_prune_take_at_most_their_limit() {
    let (env, database) = setup().await;
    let ids = insert(&env, &[None, None, None, None, None, None]).await;
    exec(
        &env,
        "UPDATE {table} SET status = 'dead' WHERE id = ANY($1)",
        &ids[..4],
    )
    .await;
    exec(
        &env,
        "UPDATE {table} SET status = 'published', published_at = now() - interval '2 hours' WHERE id = ANY($1)",
        &ids[4..],
    )
    .await;
    let client = database.connection().await.expect("connection");
    let sql = database.sql();
    let requeue = |ids, topic, limit| OutboxRequeueDeadParams { ids, topic, limit };
    let moved = |params| queries::outbox_requeue_dead(&client, sql, params);
    assert_eq!(moved(requeue(None, None, 2)).await.unwrap(), 2);
    assert_eq!(
        moved(requeue(Some(&ids[..1]), None, 10)).await.unwrap(),
        0,
        "already pending"
    );
    assert_eq!(moved(requeue(None, Some("other"), 10)).await.unwrap(), 0);
    assert_eq!(
        moved(requeue(Some(&ids[2..4]), Some("t"), 1))
            .await
            .unwrap(),
        1
    );
    assert_eq!(env.count("dead").await, 1);

    let prune = |hours: u64, limit| OutboxPrunePublishedParams {
        older_than: Duration::from_secs(hours * 3600),
        limit,
    };
    let pruned = |params| queries::outbox_prune_published(&client, sql, params);
    assert_eq!(pruned(prune(3, 10)).await.unwrap(), 0, "not old enough");
    assert_eq!(pruned(prune(1, 1)).await.unwrap(), 1);
    assert_eq!(pruned(prune(1, 10)).await.unwrap(), 1);
    assert_eq!(env.count("published").await, 0);
}

#[tokio::test]
async fn a_table_that_drifted_from_this_version_fails_at_start_up_naming_the_statement() {
    let (env, mut database) = setup().await;
    database.check_statements().await.expect("a migrated table");
    // A column of the wrong type: present (so the layout check passes) but
    // unusable by the statement that writes it.
    let drop = format!(
        "ALTER TABLE {} ALTER COLUMN last_error TYPE integer USING NULL",
        env.table
    );
    env.client.batch_execute(&drop).await.unwrap();
    let mut fresh = Database::new(&env.database_url, database.table(), 1).unwrap();
    let error = fresh.check_statements().await.unwrap_err();
    assert!(
        matches!(
            &error,
            Error::SchemaDrift {
                statement: "outbox_record_failures",
                ..
            }
        ),
        "{error:?}"
    );
    let line = error.to_string();
    assert!(
        line.contains("last_error") && line.contains("outbox-relay migrate"),
        "{line}"
    );
}

#[tokio::test]
async fn marking_runs_inside_the_claiming_transaction_on_a_fresh_connection() {
    let (env, _) = setup().await;
    let ids = insert(&env, &[Some("a"), None]).await;
    // Each marked row notes how long its transaction had been open.
    let schema = env.table.split_once('.').unwrap().0;
    env.client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.marks (id bigint, tx_age interval);
             CREATE FUNCTION {schema}.note_mark() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO {schema}.marks VALUES (NEW.id, statement_timestamp() - transaction_timestamp());
                 RETURN NULL;
             END $$;
             CREATE TRIGGER note_mark AFTER UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {schema}.note_mark();",
            env.table
        ))
        .await
        .unwrap();
    // A new pool: the mark statement was never prepared on its connection.
    let database = Database::new(&env.database_url, &env.table.parse().unwrap(), 1).unwrap();
    let batch = database.claim(10, &[], &[], None).await.expect("claim");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let recorded = batch.record(results(&ids, &[], 10)).await.expect("record");
    assert_eq!(recorded.published, 2);
    let sql = format!("SELECT count(*) FROM {schema}.marks WHERE tx_age >= interval '200 ms'");
    let inside: i64 = env.client.query_one(&sql, &[]).await.unwrap().get(0);
    assert_eq!(inside, 2, "the UPDATE ran after the claim's COMMIT");
}
