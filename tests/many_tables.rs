//! One relay process serving several tables: from a configuration file
//! (tables in two schemas and two databases), from a pattern whose tenants
//! come and go while it runs, and a quiet table beside a draining one.

mod common;

use std::time::Duration;

use common::databases::SpareDatabase;
use common::env::wait_for_status_in;
use common::{
    assert_key_order, assert_success, connect, consume_event_ids, parse_metric, unique_name,
    wait_for, Count, Order, Received, TestEnv, BINARY,
};

/// Insert `rows` (key, n) into `table` in one transaction; returns the event
/// ids.
async fn insert(
    client: &tokio_postgres::Client,
    table: &str,
    topic: &str,
    rows: &[(String, i64)],
) -> Vec<String> {
    let mut ids = Vec::new();
    for (key, n) in rows {
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO {table} (topic, message_key, payload) VALUES ($1, $2, jsonb_build_object('n', $3::bigint)) RETURNING event_id::text"
                ),
                &[&topic, key, n],
            )
            .await
            .expect("insert");
        ids.push(row.get(0));
    }
    ids
}

/// `outbox-relay migrate` of one table (its schema is created if missing).
fn migrate(url: &str, table: &str) {
    let output = std::process::Command::new(BINARY)
        .args(["migrate", "--database-url", url, "--table", table])
        .env_remove("OUTBOX_CONFIG")
        .output()
        .expect("run migrate");
    assert_success(&output, "migrate");
}

fn position(message: &Received) -> i64 {
    let payload: serde_json::Value =
        serde_json::from_str(message.payload.as_deref().expect("a payload")).expect("json");
    payload["n"].as_i64().expect("n")
}

async fn drop_schema(url: &str, schema: &str) {
    connect(url)
        .await
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .expect("drop schema");
}

#[tokio::test]
async fn three_tables_in_two_schemas_and_two_databases_from_one_config_file() {
    let env = TestEnv::new().await;
    let spare = SpareDatabase::create().await;
    let second_schema = unique_name("t");
    let table_b = format!("{second_schema}.outbox");
    migrate(&env.database_url, &table_b);
    migrate(&spare.url, "app.outbox");
    let tables = [
        (env.database_url.clone(), env.table.clone()),
        (env.database_url.clone(), table_b.clone()),
        (spare.url.clone(), "app.outbox".to_owned()),
    ];
    let config = env.dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
options = {{ "linger.ms" = 1 }}

[[source]]
name = "main"
database_url = "{main}"

[[source.table]]
name = "{a}"

[[source.table]]
name = "{b}"
batch_size = 7

[[source]]
name = "spare"
database_url = "{spare}"

[[source.table]]
name = "app.outbox"
max_attempts = 3
"#,
            brokers = env.brokers,
            main = env.database_url,
            a = env.table,
            b = table_b,
            spare = spare.url,
        ),
    )
    .expect("write config");
    let config = config.to_str().expect("a UTF-8 path");
    let mut relay = env.start_relay_bare(&["--config", config]);
    relay.wait_ready().await;

    let mut expected = Vec::new();
    for (url, table) in &tables {
        let client = connect(url).await;
        let topic = env.create_topic(3).await;
        let mut ids = Vec::new();
        for batch in 0..3 {
            let rows: Vec<(String, i64)> = (0..20)
                .map(|i| (format!("key-{}", i % 3), batch * 20 + i))
                .collect();
            ids.extend(insert(&client, table, &topic, &rows).await);
        }
        expected.push((table.clone(), topic, ids));
    }
    for (table, topic, ids) in &expected {
        let received = consume_event_ids(&env.brokers, topic, ids, Duration::from_secs(60)).await;
        let seen: std::collections::HashSet<&str> =
            received.iter().map(Received::event_id).collect();
        for id in ids {
            assert!(
                seen.contains(id.as_str()),
                "{table}: event {id} never arrived"
            );
        }
        assert_key_order(&received, Order::FirstArrivals, position);
    }
    // Each table's series carry its name; the spare database's table is
    // schema-qualified as the catalog says.
    let (_, body) = relay.get("/metrics").await.expect("scrape");
    for (table, topic, ids) in &expected {
        let series =
            format!("outbox_published_messages_total{{table=\"{table}\",topic=\"{topic}\"}}");
        let published = wait_for(&series, Duration::from_secs(20), || async {
            let (_, body) = relay.get("/metrics").await?;
            parse_metric(&body, &series).filter(|n| *n >= ids.len() as f64)
        })
        .await;
        assert_eq!(published, ids.len() as f64, "{series}");
    }
    assert!(
        body.contains(&format!("outbox_relay_role{{table=\"{table_b}\"}} 1")),
        "{body}"
    );

    // `status --config` shows a line per table.
    let output = std::process::Command::new(BINARY)
        .args(["status", "--config", config])
        .output()
        .expect("run status");
    let text = assert_success(&output, "status --config");
    for (_, table) in &tables {
        assert!(
            text.contains(table.as_str()),
            "{table} missing from:\n{text}"
        );
    }
    assert!(text.contains("3 tables: 0 pending"), "{text}");
    drop(relay);
    drop_schema(&env.database_url, &second_schema).await;
}

#[tokio::test]
async fn tenants_that_arrive_are_served_and_those_dropped_are_released_once() {
    let env = TestEnv::new().await;
    let prefix = unique_name("ten");
    let tenant = |n: u32| format!("{prefix}_{n}.outbox");
    for n in 1..=5 {
        migrate(&env.database_url, &tenant(n));
    }
    let topic = env.create_topic(1).await;
    let pattern = format!("{prefix}_*.outbox");
    let mut relay = env.start_relay_for(&pattern, &["--discovery-interval", "2s"]);
    relay.wait_ready().await;
    let send = |from: u32, to: u32| {
        let (url, topic) = (env.database_url.clone(), topic.clone());
        let tenant = &tenant;
        async move {
            let client = connect(&url).await;
            let mut ids = Vec::new();
            for n in from..=to {
                ids.extend(insert(&client, &tenant(n), &topic, &[(format!("k{n}"), 1)]).await);
            }
            ids
        }
    };
    let first = send(1, 5).await;
    consume_event_ids(&env.brokers, &topic, &first, Duration::from_secs(30)).await;
    assert_eq!(count_seen(&env, &topic, &first).await, first.len());

    // Five new tenants: `migrate` announces them; the relay serves them
    // without a restart.
    for n in 6..=10 {
        migrate(&env.database_url, &tenant(n));
    }
    let second = send(6, 10).await;
    consume_event_ids(&env.brokers, &topic, &second, Duration::from_secs(30)).await;
    assert_eq!(count_seen(&env, &topic, &second).await, second.len());

    // A tenant created without `migrate` announcing it (a DBA applied the
    // printed DDL) is found by the periodic discovery.
    let quiet_tenant = tenant(12);
    let output = std::process::Command::new(BINARY)
        .args(["migrate", "--print-sql", "--table", &quiet_tenant])
        .output()
        .expect("migrate --print-sql");
    let ddl = assert_success(&output, "migrate --print-sql");
    env.client
        .batch_execute(&ddl)
        .await
        .expect("apply the printed DDL");
    let fourth = send(12, 12).await;
    consume_event_ids(&env.brokers, &topic, &fourth, Duration::from_secs(30)).await;
    assert_eq!(count_seen(&env, &topic, &fourth).await, 1);

    // A tenant leaves: released, said once, no error loop.
    let gone = format!("{prefix}_3");
    drop_schema(&env.database_url, &gone).await;
    let released = format!("{gone}.outbox");
    wait_for("the release line", Duration::from_secs(30), || async {
        let log = relay.log_text();
        (log.contains("the table is gone; released it") && log.contains(&released)).then_some(())
    })
    .await;
    // The relay goes on: a later tenant is still served.
    migrate(&env.database_url, &tenant(11));
    let third = send(11, 11).await;
    consume_event_ids(&env.brokers, &topic, &third, Duration::from_secs(30)).await;
    assert_eq!(count_seen(&env, &topic, &third).await, 1);
    let log = relay.log_text();
    let release_lines = log
        .lines()
        .filter(|l| l.contains("the table is gone") && l.contains(&released))
        .count();
    assert_eq!(release_lines, 1, "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    let (_, body) = relay.get("/metrics").await.expect("scrape");
    assert!(
        !body.contains(&format!("outbox_pending_messages{{table=\"{released}\"}}")),
        "the released table still reports a backlog"
    );
    assert_eq!(relay.get("/readyz").await.map(|r| r.0), Some(200));
    drop(relay);
    for n in (1..=12).filter(|n| *n != 3) {
        drop_schema(&env.database_url, &format!("{prefix}_{n}")).await;
    }
}

/// How many of `ids` the topic holds.
async fn count_seen(env: &TestEnv, topic: &str, ids: &[String]) -> usize {
    let received = consume_event_ids(&env.brokers, topic, ids, Duration::from_secs(10)).await;
    let seen: std::collections::HashSet<&str> = received.iter().map(Received::event_id).collect();
    ids.iter().filter(|id| seen.contains(id.as_str())).count()
}

/// One table drains a 200,000-row backlog while another receives a row
/// every 10 ms: the quiet table's rows go out while the backlog drains, not
/// after it. Prints the quiet rows' commit → publish p99 (the benchmark
/// measures it on a release build).
#[tokio::test]
async fn a_quiet_table_is_not_starved_by_a_draining_one() {
    let env = TestEnv::new().await;
    let quiet_schema = unique_name("t");
    let quiet = format!("{quiet_schema}.outbox");
    migrate(&env.database_url, &quiet);
    let topic = env.create_topic(1).await;
    env.client
        .execute(
            &format!(
                "INSERT INTO {} (topic, message_key, payload) SELECT $1, 'k' || (n % 100), '{{}}'::jsonb FROM generate_series(1, 200000) AS n",
                env.table
            ),
            &[&topic],
        )
        .await
        .expect("backlog");
    let config = env.dir.path().join("fair.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\n[[source]]\ndatabase_url = \"{}\"\n[[source.table]]\nname = \"{}\"\n[[source.table]]\nname = \"{}\"\n",
            env.brokers, env.database_url, env.table, quiet
        ),
    )
    .expect("write config");
    let mut relay = env.start_relay_bare(&["--config", config.to_str().expect("UTF-8")]);
    relay.wait_ready().await;
    wait_for("the drain to start", Duration::from_secs(30), || async {
        let published: i64 = env
            .client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} WHERE status = 'published'",
                    env.table
                ),
                &[],
            )
            .await
            .ok()?
            .get(0);
        (published > 0).then_some(())
    })
    .await;
    let quiet_client = connect(&env.database_url).await;
    let mut ids = Vec::new();
    for n in 0..50 {
        ids.extend(insert(&quiet_client, &quiet, &topic, &[("quiet".to_owned(), n)]).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_for_status_in(
        &quiet_client,
        &quiet,
        "published",
        Count::Exactly(50),
        Duration::from_secs(60),
    )
    .await;
    env.wait_for_status(
        "pending",
        common::Count::Exactly(0),
        Duration::from_secs(180),
    )
    .await;
    let busy_end: std::time::SystemTime = env
        .client
        .query_one(&format!("SELECT max(published_at) FROM {}", env.table), &[])
        .await
        .expect("busy end")
        .get(0);
    let rows = quiet_client
        .query(
            &format!("SELECT published_at, extract(epoch FROM published_at - created_at)::float8 FROM {quiet}"),
            &[],
        )
        .await
        .expect("quiet rows");
    let mut latencies: Vec<f64> = rows.iter().map(|r| r.get(1)).collect();
    latencies.sort_by(f64::total_cmp);
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    println!(
        "quiet table beside a 200,000-row drain: p99 commit -> publish {:.1} ms (debug build)",
        p99 * 1000.0
    );
    for row in &rows {
        let published: std::time::SystemTime = row.get(0);
        assert!(
            published < busy_end,
            "a quiet row waited for the backlog to drain"
        );
    }
    drop(relay);
    drop_schema(&env.database_url, &quiet_schema).await;
}

#[tokio::test]
async fn migrate_with_a_config_file_serves_every_match_and_a_new_tenant_on_demand() {
    let env = TestEnv::new().await;
    let prefix = unique_name("ten");
    for n in 1..=2 {
        migrate(&env.database_url, &format!("{prefix}_{n}.outbox"));
    }
    let config = env.dir.path().join("tenants.toml");
    std::fs::write(
        &config,
        format!(
            "[[source]]\ndatabase_url = \"{}\"\n[[source.table]]\nname = \"{prefix}_*.outbox\"\n",
            env.database_url
        ),
    )
    .expect("write config");
    let config = config.to_str().expect("UTF-8");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(BINARY)
            .args(args)
            .env_remove("OUTBOX_DATABASE_URL")
            .env_remove("OUTBOX_TABLE")
            .output()
            .expect("run outbox-relay");
        assert_success(&output, &args.join(" "))
    };
    // A new tenant on demand: its schema is created.
    let new = format!("{prefix}_3.outbox");
    let text = run(&["migrate", "--config", config, "--table", &new]);
    assert!(text.contains(&format!("outbox table {new}")), "{text}");
    // Every match of the pattern, idempotently.
    let text = run(&["migrate", "--config", config, "--notify-trigger"]);
    assert!(text.contains("3 tables migrated"), "{text}");
    let triggers: i64 = env
        .client
        .query_one(
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname LIKE $1 AND NOT t.tgisinternal",
            &[&format!("{prefix}\\_%")],
        )
        .await
        .expect("count triggers")
        .get(0);
    assert_eq!(triggers, 3, "every tenant got the NOTIFY trigger");
    // A table no entry names is refused.
    let output = std::process::Command::new(BINARY)
        .args(["migrate", "--config", config, "--table", "other.outbox"])
        .output()
        .expect("run migrate");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("no entry of the config file names table other.outbox"));
    for n in 1..=3 {
        drop_schema(&env.database_url, &format!("{prefix}_{n}")).await;
    }
}

/// `outbox_relay_role` of `table` on `relay`.
async fn role(relay: &common::RelayProcess, table: &str) -> Option<f64> {
    relay
        .metric(&format!("outbox_relay_role{{table=\"{table}\"}}"))
        .await
}

/// Two replicas serving the same tenants: each table has one leader (one
/// election session per database holds all of a replica's locks); when that
/// replica is killed, the other takes every table over.
#[tokio::test]
async fn a_standby_takes_over_every_table_of_a_killed_replica() {
    let env = TestEnv::new().await;
    let prefix = unique_name("ten");
    let tables: Vec<String> = (1..=3).map(|n| format!("{prefix}_{n}.outbox")).collect();
    for table in &tables {
        migrate(&env.database_url, table);
    }
    let topic = env.create_topic(1).await;
    let pattern = format!("{prefix}_*.outbox");
    let mut first = env.start_relay_for(&pattern, &[]);
    first.wait_ready().await;
    for table in &tables {
        wait_for(
            "the first replica to lead",
            Duration::from_secs(30),
            || async { (role(&first, table).await? == 1.0).then_some(()) },
        )
        .await;
    }
    let mut second = env.start_relay_for(&pattern, &[]);
    second.wait_ready().await;
    for table in &tables {
        wait_for("one leader per table", Duration::from_secs(30), || async {
            let leaders = role(&first, table).await? + role(&second, table).await?;
            (leaders == 1.0).then_some(())
        })
        .await;
    }
    // The second stands by for every table.
    for table in &tables {
        assert_eq!(role(&second, table).await, Some(0.0), "{table}");
    }
    first.signal("KILL");
    for table in &tables {
        wait_for("the standby to lead", Duration::from_secs(30), || async {
            (role(&second, table).await? == 1.0).then_some(())
        })
        .await;
    }
    let client = connect(&env.database_url).await;
    let mut ids = Vec::new();
    for table in &tables {
        ids.extend(insert(&client, table, &topic, &[("k".to_owned(), 1)]).await);
    }
    consume_event_ids(&env.brokers, &topic, &ids, Duration::from_secs(30)).await;
    assert_eq!(count_seen(&env, &topic, &ids).await, ids.len());
    assert!(
        second.log_text().contains("this relay leads 3 tables"),
        "{}",
        second.log_text()
    );
    drop(second);
    for n in 1..=3 {
        drop_schema(&env.database_url, &format!("{prefix}_{n}")).await;
    }
}

/// Several tables share one producer through a broker outage: it is
/// replaced once when the brokers are back (not once per table, which would
/// destroy other tables' batches in flight), no row goes dead or has an
/// attempt counted, and every row arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_sharing_a_producer_ride_out_a_broker_outage_together() {
    let env = TestEnv::new().await;
    let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let topic = unique_name("outage");
    mock.create_topic(&topic, 3, 1).expect("mock topic");
    let brokers = mock.bootstrap_servers();
    let prefix = unique_name("ten");
    let tables: Vec<String> = (1..=4).map(|n| format!("{prefix}_{n}.outbox")).collect();
    for table in &tables {
        migrate(&env.database_url, table);
    }
    let pattern = format!("{prefix}_*.outbox");
    let mut args = vec![
        "--database-url",
        env.database_url.as_str(),
        "--table",
        pattern.as_str(),
        "--kafka-brokers",
        brokers.as_str(),
    ];
    args.extend(common::process::OUTAGE_FLAGS);
    let mut relay = env.start_relay_bare(&args);
    relay.wait_ready().await;
    let client = connect(&env.database_url).await;
    let send = |from: i64| {
        let (client, tables, topic) = (&client, &tables, &topic);
        async move {
            let mut ids = Vec::new();
            for table in tables {
                let rows: Vec<(String, i64)> = (from..from + 25)
                    .map(|n| (format!("k{}", n % 5), n))
                    .collect();
                ids.extend(insert(client, table, topic, &rows).await);
            }
            ids
        }
    };
    let mut ids = send(0).await;
    for table in &tables {
        wait_for_status_in(
            &client,
            table,
            "published",
            Count::Exactly(25),
            Duration::from_secs(30),
        )
        .await;
    }
    mock.broker_down(1).expect("broker down");
    ids.extend(send(25).await);
    relay.wait_into_outage().await;
    mock.broker_up(1).expect("broker up");
    for table in &tables {
        wait_for_status_in(
            &client,
            table,
            "published",
            Count::Exactly(50),
            Duration::from_secs(60),
        )
        .await;
        let (dead, attempts): (i64, i32) = {
            let row = client
                .query_one(
                    &format!("SELECT count(*) FILTER (WHERE status = 'dead'), coalesce(max(attempts), 0) FROM {table}"),
                    &[],
                )
                .await
                .expect("dead and attempts");
            (row.get(0), row.get(1))
        };
        assert_eq!((dead, attempts), (0, 0), "{table}:\n{}", relay.log_text());
    }
    let received = consume_event_ids(&brokers, &topic, &ids, Duration::from_secs(30)).await;
    let seen: std::collections::HashSet<&str> = received.iter().map(Received::event_id).collect();
    assert_eq!(seen.len(), ids.len());
    let log = relay.log_text();
    let replaced = log.matches("started a new Kafka producer").count();
    assert_eq!(replaced, 1, "{log}");
    for n in 1..=4 {
        drop_schema(&env.database_url, &format!("{prefix}_{n}")).await;
    }
}

/// Twenty tables in one database: the relay holds at most its pool plus
/// the LISTEN and election sessions, however many tables it serves.
#[tokio::test]
async fn connections_stay_bounded_by_the_pool_whatever_the_number_of_tables() {
    let env = TestEnv::new().await;
    let prefix = unique_name("ten");
    for n in 1..=20 {
        migrate(&env.database_url, &format!("{prefix}_{n}.outbox"));
    }
    let topic = env.create_topic(1).await;
    let name = unique_name("bounded");
    let separator = if env.database_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{separator}application_name={name}", env.database_url);
    let pattern = format!("{prefix}_*.outbox");
    let mut relay = env.start_relay_bare(&[
        "--database-url",
        &url,
        "--table",
        &pattern,
        "--kafka-brokers",
        &env.brokers,
        "--pool-size",
        "3",
    ]);
    relay.wait_ready().await;
    let client = connect(&env.database_url).await;
    let mut ids = Vec::new();
    for n in 1..=20 {
        let table = format!("{prefix}_{n}.outbox");
        ids.extend(insert(&client, &table, &topic, &[("k".to_owned(), n)]).await);
    }
    consume_event_ids(&env.brokers, &topic, &ids, Duration::from_secs(60)).await;
    assert_eq!(count_seen(&env, &topic, &ids).await, 20);
    let connections: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .expect("count connections")
        .get(0);
    assert!(
        (1..=5).contains(&connections),
        "{connections} connections for a pool of 3"
    );
    drop(relay);
    for n in 1..=20 {
        drop_schema(&env.database_url, &format!("{prefix}_{n}")).await;
    }
}
