//! Partitioned outbox tables (`migrate --partition-by`): rows at partition
//! boundaries arrive, in key order; retries, holds and requeue work across
//! partitions; the relay keeps partitions ahead and
//! counts rows that fell into the default partition; retention drops a
//! partition only when every row in it is published; an existing plain
//! table is never turned into a partitioned one.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{assert_success, consume_event_ids, wait_for, Count, TestEnv};

/// A fresh schema with `<schema>.outbox` made by `migrate --partition-by`.
async fn partitioned(unit: &str) -> TestEnv {
    let env = TestEnv::bare(&common::database_url()).await;
    let output = env
        .command(&["migrate", "--partition-by", unit])
        .output()
        .expect("migrate");
    let stdout = assert_success(&output, "migrate --partition-by");
    assert!(stdout.contains("partition outbox_default"), "{stdout}");
    env
}

/// The table's partitions: (name, is the default).
async fn partitions(env: &TestEnv) -> Vec<(String, bool)> {
    env.client
        .query(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = $1::text::regclass ORDER BY 1",
            &[&env.table],
        )
        .await
        .expect("partitions")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Insert rows of key `k` with these `created_at` expressions (SQL,
/// evaluated in order) and `seq` 0, 1, …; returns (id, event id).
async fn insert_at(env: &TestEnv, topic: &str, created_at: &[&str]) -> Vec<(i64, String)> {
    let mut rows = Vec::new();
    for (seq, at) in created_at.iter().enumerate() {
        let sql = format!(
            "INSERT INTO {} (topic, message_key, payload, created_at)
             VALUES ($1, 'k', jsonb_build_object('seq', $2::int), {at})
             RETURNING id, event_id::text",
            env.table
        );
        let row = env
            .client
            .query_one(&sql, &[&topic, &(seq as i32)])
            .await
            .expect("insert");
        rows.push((row.get(0), row.get(1)));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_partitioned_by_day_relays_rows_at_partition_boundaries_in_order() {
    let env = partitioned("day").await;
    // Again: nothing new.
    let again = env
        .command(&["migrate", "--partition-by", "day"])
        .output()
        .expect("migrate");
    let again = assert_success(&again, "second migrate");
    assert!(again.contains("created: nothing"), "{again}");
    let print = env
        .command(&["migrate", "--partition-by", "day", "--print-sql"])
        .output()
        .expect("print-sql");
    let print = assert_success(&print, "migrate --print-sql");
    assert!(print.contains("PARTITION BY RANGE (created_at)"), "{print}");
    assert!(print.contains("PARTITION OF"), "{print}");

    let names = partitions(&env).await;
    let ranged: Vec<&String> = names.iter().filter(|(_, d)| !d).map(|(n, _)| n).collect();
    assert_eq!(ranged.len(), 4, "today and 3 ahead: {names:?}");
    assert!(ranged
        .iter()
        .all(|n| n.starts_with("outbox_p") && n.len() == 16));
    assert!(names.contains(&("outbox_default".to_owned(), true)));

    let topic = env.create_topic(3).await;
    // Around midnight UTC between today's partition and tomorrow's.
    let midnight = "date_trunc('day', now(), 'UTC') + interval '1 day'";
    let rows = insert_at(
        &env,
        &topic,
        &[
            "now()",
            &format!("{midnight} - interval '1 microsecond'"),
            midnight,
            &format!("{midnight} + interval '1 microsecond'"),
            "now() + interval '1 second'",
        ],
    )
    .await;
    let placed: Vec<(String, i64)> = env
        .client
        .query(
            &format!(
                "SELECT tableoid::regclass::text, count(*) FROM {} GROUP BY 1 ORDER BY 1",
                env.table
            ),
            &[],
        )
        .await
        .expect("placement")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        placed.len(),
        2,
        "today's and tomorrow's partitions: {placed:?}"
    );
    assert!(placed.iter().all(|(p, _)| !p.ends_with("outbox_default")));

    let mut relay = env.start_relay(&[]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(5), Duration::from_secs(30))
        .await;
    let ids: Vec<String> = rows.iter().map(|(_, e)| e.clone()).collect();
    let received = consume_event_ids(&env.brokers, &topic, &ids, Duration::from_secs(30)).await;
    let unique: HashSet<&str> = received.iter().map(|r| r.event_id()).collect();
    assert_eq!(unique.len(), 5);
    // Key `k` in insert order: ids ascend across the partitions.
    let order: Vec<&str> = received.iter().map(|r| r.event_id()).collect();
    let expected: Vec<&str> = rows.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(order, expected);
    assert!(relay.log_text().contains("the table is partitioned"));
    // The parent has no storage of its own: the size is its partitions'.
    wait_for("the table size", Duration::from_secs(30), || async {
        (relay.metric("outbox_table_size_bytes").await? > 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_keeps_hour_partitions_ahead_and_counts_rows_in_the_default_partition() {
    let env = partitioned("hour").await;
    let by_day = env
        .command(&["migrate", "--partition-by", "day"])
        .output()
        .expect("migrate");
    assert_eq!(by_day.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&by_day.stderr);
    assert!(
        stderr.contains("is partitioned by hour, not by day; run migrate with --partition-by hour"),
        "{stderr}"
    );
    let names = partitions(&env).await;
    let mut ranged: Vec<String> = names
        .iter()
        .filter(|(_, d)| !d)
        .map(|(n, _)| n.clone())
        .collect();
    ranged.sort();
    assert_eq!(ranged.len(), 4, "{names:?}");
    assert!(ranged.iter().all(|n| n.len() == 18), "{ranged:?}");
    // The furthest one goes; the relay makes it again.
    let furthest = ranged.last().unwrap().clone();
    let schema = env.table.split('.').next().unwrap().to_owned();
    env.client
        .batch_execute(&format!("DROP TABLE {schema}.{furthest}"))
        .await
        .expect("drop");
    let topic = env.create_topic(1).await;
    // No partition that far ahead: the default partition takes it.
    let rows = insert_at(&env, &topic, &["now() + interval '30 days'"]).await;

    let mut relay = env.start_relay(&[]);
    relay.wait_ready().await;
    let exists = format!("SELECT to_regclass('{schema}.{furthest}') IS NOT NULL");
    wait_for(
        "the partition ahead again",
        Duration::from_secs(30),
        || async {
            let row = env.client.query_one(&exists, &[]).await.ok()?;
            row.get::<_, bool>(0).then_some(())
        },
    )
    .await;
    wait_for(
        "the default partition's row counted",
        Duration::from_secs(30),
        || async { (relay.metric("outbox_default_partition_rows").await? == 1.0).then_some(()) },
    )
    .await;
    // The row is relayed like any other.
    env.wait_for_status("published", Count::Exactly(1), Duration::from_secs(30))
        .await;
    let ids = vec![rows[0].1.clone()];
    consume_event_ids(&env.brokers, &topic, &ids, Duration::from_secs(30)).await;
    assert!(relay
        .log_text()
        .contains("rows landed in the default partition"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_a_partition_only_when_all_its_rows_are_published() {
    let env = partitioned("day").await;
    let schema = env.table.split('.').next().unwrap().to_owned();
    // Three partitions of ten, nine and eight days ago, named as the relay
    // names them.
    env.client
        .batch_execute(&format!(
            "DO $$
             DECLARE starts timestamptz;
             BEGIN
                 FOR k IN 8..10 LOOP
                     starts := date_trunc('day', now(), 'UTC') - k * interval '1 day';
                     EXECUTE format('CREATE TABLE {schema}.%I PARTITION OF {table} FOR VALUES FROM (%L) TO (%L)',
                                    'outbox_p' || to_char(starts AT TIME ZONE 'UTC', 'YYYYMMDD'), starts, starts + interval '1 day');
                 END LOOP;
             END $$;",
            table = env.table
        ))
        .await
        .expect("old partitions");
    let day = |k: i32| {
        format!("date_trunc('day', now(), 'UTC') - interval '{k} days' + interval '1 hour'")
    };
    let env = &env;
    let name_of = |k: i32| async move {
        let sql = format!(
            "SELECT 'outbox_p' || to_char((date_trunc('day', now(), 'UTC') - interval '{k} days') AT TIME ZONE 'UTC', 'YYYYMMDD')"
        );
        env.client
            .query_one(&sql, &[])
            .await
            .expect("name")
            .get::<_, String>(0)
    };
    let (all_published, one_dead, one_waiting) =
        (name_of(10).await, name_of(9).await, name_of(8).await);
    let old = [day(10), day(10), day(9), day(9), day(8)];
    let old: Vec<&str> = old.iter().map(String::as_str).collect();
    let rows = insert_at(env, "t", &old).await;
    let ids = |range: std::ops::Range<usize>| -> Vec<i64> {
        rows[range].iter().map(|(id, _)| *id).collect()
    };
    let set = |sql: &str, ids: Vec<i64>| {
        let sql = format!("UPDATE {} SET {sql} WHERE id = ANY($1)", env.table);
        async move { env.client.execute(&sql, &[&ids]).await.expect("update") }
    };
    set("status = 'published', published_at = now()", ids(0..3)).await;
    set("status = 'dead', last_error = 'test'", ids(3..4)).await;
    // Pending, but not due: it stays pending while the relay runs.
    set("next_attempt_at = now() + interval '1 day'", ids(4..5)).await;

    let mut relay = env.start_relay(&["--retention", "1d", "--election", "none"]);
    relay.wait_ready().await;
    wait_for("a partition dropped", Duration::from_secs(30), || async {
        (relay.metric("outbox_partitions_dropped_total").await? == 1.0).then_some(())
    })
    .await;
    assert_eq!(relay.metric("outbox_partitions_kept").await, Some(2.0));
    let left: Vec<String> = partitions(env).await.into_iter().map(|(n, _)| n).collect();
    assert!(!left.contains(&all_published), "{left:?}");
    assert!(left.contains(&one_dead), "{left:?}");
    assert!(left.contains(&one_waiting), "{left:?}");
    // Today's, the ones ahead and the default partition stay.
    assert_eq!(left.len(), 2 + 4 + 1, "{left:?}");
    assert_eq!(env.count("dead").await, 1);
    assert_eq!(env.count("pending").await, 1);
    let log = relay.log_text();
    assert!(log.contains("retention dropped partitions"), "{log}");
    assert!(log.contains("still hold pending or dead rows"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_holds_and_requeue_work_across_partitions() {
    let env = partitioned("hour").await;
    // A topic that does not exist yet: the key's rows retry, held in order.
    let topic = common::unique_name("later");
    let an_hour = "date_trunc('hour', now(), 'UTC') + interval '1 hour'";
    let rows = insert_at(
        &env,
        &topic,
        &[
            &format!("{an_hour} - interval '1 millisecond'"),
            an_hour,
            &format!("{an_hour} + interval '1 millisecond'"),
        ],
    )
    .await;
    let mut relay = env.start_relay(&["--retry-backoff-base-ms", "100"]);
    relay.wait_ready().await;
    wait_for(
        "a failed attempt recorded",
        Duration::from_secs(30),
        || async {
            let (status, attempts, error) = env.row_state(rows[0].0).await;
            (status == "pending" && attempts > 0 && error.is_some()).then_some(())
        },
    )
    .await;
    assert_eq!(env.count("published").await, 0);
    common::kafka::create_topic(&env.brokers, &topic, 1).await;
    env.wait_for_status("published", Count::Exactly(3), Duration::from_secs(60))
        .await;
    // A dead row in the later partition goes back to pending and out again.
    let dead = format!(
        "UPDATE {} SET status = 'dead', last_error = 'test' WHERE id = $1",
        env.table
    );
    env.client
        .execute(&dead, &[&rows[2].0])
        .await
        .expect("make dead");
    let requeue = env
        .command(&["requeue", "--id", &rows[2].0.to_string()])
        .output()
        .expect("requeue");
    assert_success(&requeue, "requeue");
    env.wait_for_status("published", Count::Exactly(3), Duration::from_secs(30))
        .await;
    // Four messages: the requeued row went out again.
    let received = common::consume_until(&env.brokers, &topic, Duration::from_secs(30), |r| {
        r.len() >= 4
    })
    .await;
    // In key order on first arrival.
    let mut first: Vec<&str> = Vec::new();
    for message in &received {
        if !first.contains(&message.event_id()) {
            first.push(message.event_id());
        }
    }
    let expected: Vec<&str> = rows.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(first, expected);
    assert_eq!(received.len(), 4, "{received:?}");
    assert_eq!(received[3].event_id(), rows[2].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_cannot_create_partitions_says_so_and_keeps_relaying() {
    let mut env = partitioned("hour").await;
    let schema = env.table.split('.').next().unwrap().to_owned();
    // A role that may relay but does not own the table.
    let role = common::unique_name("relayer");
    env.client
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN;
             GRANT USAGE ON SCHEMA {schema} TO {role};
             GRANT SELECT, INSERT, UPDATE ON {table} TO {role};",
            table = env.table
        ))
        .await
        .expect("role");
    let furthest = partitions(&env)
        .await
        .into_iter()
        .filter(|(_, default)| !default)
        .map(|(name, _)| name)
        .max()
        .unwrap();
    env.client
        .batch_execute(&format!("DROP TABLE {schema}.{furthest}"))
        .await
        .expect("drop");
    env.relay_database_url = env
        .database_url
        .replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(
        env.relay_database_url, env.database_url,
        "the URL names its user"
    );
    let topic = env.create_topic(1).await;
    let rows: Vec<common::NewRow> = (0..10)
        .map(|i| common::NewRow::new(&topic, Some("k"), serde_json::json!({ "i": i })))
        .collect();
    env.insert(&rows).await;
    let mut relay = env.start_relay(&[]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(10), Duration::from_secs(30))
        .await;
    wait_for("the warning", Duration::from_secs(30), || async {
        relay
            .log_text()
            .contains("could not create partitions ahead")
            .then_some(())
    })
    .await;
    let exists = format!("SELECT to_regclass('{schema}.{furthest}') IS NOT NULL");
    let row = env.client.query_one(&exists, &[]).await.expect("exists");
    assert!(!row.get::<_, bool>(0), "a non-owner created a partition");
    drop(relay);
    env.client
        .batch_execute(&format!(
            "DROP OWNED BY {role}; REVOKE ALL ON SCHEMA {schema} FROM {role}; DROP ROLE {role}"
        ))
        .await
        .ok();
}

#[tokio::test]
async fn partition_by_refuses_an_existing_plain_table() {
    let env = TestEnv::new().await;
    let output = env
        .command(&["migrate", "--partition-by", "day"])
        .output()
        .expect("migrate");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("already exists and is not partitioned by created_at"),
        "{stderr}"
    );
}
