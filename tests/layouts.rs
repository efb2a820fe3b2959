//! Payloads as they are and tables as they already exist: bytea, text, json
//! and jsonb payloads read back byte for byte by a consumer outside the
//! project; a Debezium outbox table adopted and relayed unchanged; adoption
//! under load; CloudEvents headers parsed by the CloudEvents SDK.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::outside::read_topic;
use common::{
    assert_key_order, assert_success, connect, consume_until, create_topic, unique_name, Count,
    NewRow, Order, TestEnv,
};

const WAIT: Duration = Duration::from_secs(60);

/// A message's key and value bytes.
type KeyAndValue = (Option<Vec<u8>>, Option<Vec<u8>>);

#[tokio::test]
async fn bytea_payloads_and_keys_arrive_byte_for_byte() {
    let env = TestEnv::bare(&common::database_url()).await;
    let migrate = env
        .command(&["migrate", "--payload-type", "bytea", "--key-type", "bytea"])
        .output()
        .unwrap();
    assert_success(&migrate, "migrate --payload-type bytea --key-type bytea");
    let topic = env.create_topic(1).await;
    // Zero bytes and invalid UTF-8; a Confluent-framed Protobuf message
    // (magic byte 0, schema id 42, then field 1 = 150); and a tombstone.
    let payloads: Vec<Option<Vec<u8>>> = vec![
        Some(vec![0, 0xff, 0xfe, 0, b'a', 0xc3, 0x28]),
        Some(vec![0, 0, 0, 0, 42, 0x08, 0x96, 0x01]),
        None,
    ];
    let keys: Vec<Vec<u8>> = vec![vec![0xff, 0, 1], vec![0xff, 0, 1], b"plain".to_vec()];
    env.client
        .execute(
            &format!(
                "INSERT INTO {} (topic, message_key, payload)
                 SELECT $1, k, p FROM unnest($2::bytea[], $3::bytea[]) AS u(k, p)",
                env.table
            ),
            &[&topic, &keys, &payloads],
        )
        .await
        .unwrap();
    let mut relay = env.start_relay(&[]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(3), WAIT)
        .await;
    let messages = read_topic(&env.brokers, &topic, 3, false);
    let got: Vec<KeyAndValue> = messages
        .iter()
        .map(|m| (m.key.clone(), m.value.clone()))
        .collect();
    let expected: Vec<KeyAndValue> = keys.into_iter().map(Some).zip(payloads).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn text_json_and_jsonb_payloads_arrive_as_written() {
    // text: spaces and non-ASCII kept exactly.
    let text_env = TestEnv::bare(&common::database_url()).await;
    let migrate = text_env
        .command(&["migrate", "--payload-type", "text"])
        .output()
        .unwrap();
    assert_success(&migrate, "migrate --payload-type text");
    let topic = text_env.create_topic(1).await;
    text_env
        .client
        .execute(
            &format!(
                "INSERT INTO {} (topic, message_key, payload) VALUES ($1, 'k', $2)",
                text_env.table
            ),
            &[&topic, &"héllo  {not json}"],
        )
        .await
        .unwrap();
    let mut relay = text_env.start_relay(&[]);
    relay.wait_ready().await;
    let messages = read_topic(&text_env.brokers, &topic, 1, false);
    assert_eq!(
        messages[0].value.as_deref(),
        Some("héllo  {not json}".as_bytes())
    );

    // jsonb: the relay's default table, sent as compact JSON.
    let jsonb_env = TestEnv::new().await;
    let topic = jsonb_env.create_topic(1).await;
    let payload = serde_json::json!({"order": 7, "lines": [1, 2], "note": "a  b"});
    jsonb_env
        .insert(&[NewRow::new(&topic, Some("k"), payload.clone())])
        .await;
    let mut relay = jsonb_env.start_relay(&[]);
    relay.wait_ready().await;
    let messages = read_topic(&jsonb_env.brokers, &topic, 1, false);
    assert_eq!(messages[0].value_json(), payload);
}

/// An application's own table: json payload, uuid key, a topic template and
/// a header column, adopted with `--column` mapping.
#[tokio::test]
async fn a_mapped_table_with_a_template_sends_its_columns_and_kills_rows_without_a_topic() {
    let env = TestEnv::bare(&common::database_url()).await;
    let prefix = unique_name("tenant");
    let topic = format!("{prefix}.events");
    create_topic(&env.brokers, &topic, 1).await;
    env.client
        .batch_execute(&format!(
            "CREATE TABLE {} (tenant text, customer uuid, body json, kind text)",
            env.table
        ))
        .await
        .unwrap();
    let customer = uuid_text(&env).await;
    let insert = format!(
        "INSERT INTO {} (tenant, customer, body, kind) VALUES ($1, $2::text::uuid, $3::text::json, $4)",
        env.table
    );
    let body = r#"{"b": 1,  "a": [2]}"#;
    for tenant in [Some(prefix.as_str()), None] {
        env.client
            .execute(&insert, &[&tenant, &customer, &body, &"Created"])
            .await
            .unwrap();
    }
    // No headers column: `headers=` maps the role to nothing.
    let layout = [
        "--column",
        "key=customer",
        "--column",
        "payload=body",
        "--column",
        "headers=",
        "--topic-template",
        "{tenant}.events",
        "--header-column",
        "kind=kind",
    ];
    let adopt: Vec<&str> = ["migrate", "--adopt"].into_iter().chain(layout).collect();
    let output = env.command(&adopt).output().unwrap();
    let report = assert_success(&output, "migrate --adopt with a mapping");
    assert!(report.contains("existing rows backfilled: 2"), "{report}");
    let mut relay = env.start_relay(&layout);
    relay.wait_ready().await;
    env.wait_for_status("dead", Count::Exactly(1), WAIT).await;
    env.wait_for_status("published", Count::Exactly(1), WAIT)
        .await;
    let messages = read_topic(&env.brokers, &topic, 1, false);
    assert_eq!(messages[0].key.as_deref(), Some(customer.as_bytes()));
    assert_eq!(
        messages[0].value.as_deref(),
        Some(br#"{"b":1,"a":[2]}"#.as_slice())
    );
    assert_eq!(messages[0].header("kind"), Some("Created"));
    assert!(messages[0].header("id").is_some_and(|id| id.len() == 36));
    let error: String = env
        .client
        .query_one(
            &format!("SELECT last_error FROM {} WHERE status = 'dead'", env.table),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("topic-template"), "{error}");
}

async fn uuid_text(env: &TestEnv) -> String {
    env.client
        .query_one("SELECT gen_random_uuid()::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// Debezium's documented outbox table, written by Debezium's documented
/// INSERT, unchanged.
fn debezium_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE {table} (
            id uuid NOT NULL,
            aggregatetype varchar(255) NOT NULL,
            aggregateid varchar(255) NOT NULL,
            type varchar(255) NOT NULL,
            payload jsonb,
            PRIMARY KEY (id)
        )"
    )
}

fn debezium_insert(table: &str) -> String {
    format!(
        "INSERT INTO {table} (id, aggregatetype, aggregateid, type, payload)
         SELECT gen_random_uuid(), $1, 'order-' || (n % $2), 'OrderCreated',
                jsonb_build_object('n', n, 'key', 'order-' || (n % $2))
         FROM generate_series($3::int, $4::int) AS n"
    )
}

/// A Debezium table holding `rows` rows over `keys` aggregate ids of a new
/// aggregate type; returns the env, the aggregate type and the INSERT.
async fn debezium_table(prefix: &str, keys: i32, rows: i32) -> (TestEnv, String, String) {
    let env = TestEnv::bare(&common::database_url()).await;
    let aggregate = unique_name(prefix);
    env.client
        .batch_execute(&debezium_ddl(&env.table))
        .await
        .unwrap();
    let insert = debezium_insert(&env.table);
    env.client
        .execute(&insert, &[&aggregate, &keys, &0, &(rows - 1)])
        .await
        .unwrap();
    (env, aggregate, insert)
}

#[tokio::test]
async fn a_debezium_table_is_adopted_and_relayed_as_debeziums_router_would() {
    // Rows from before the switch-over, then the adoption (twice: the
    // second finds everything in place), then rows after it.
    let (env, aggregate, insert) = debezium_table("order", 20, 200).await;
    let topic = format!("outbox.event.{aggregate}");
    create_topic(&env.brokers, &topic, 3).await;
    let adopt = [
        "migrate",
        "--adopt",
        "--layout",
        "debezium",
        "--notify-trigger",
    ];
    let first = assert_success(&env.command(&adopt).output().unwrap(), "adopt");
    assert!(first.contains("existing rows backfilled: 200"), "{first}");
    let second = assert_success(&env.command(&adopt).output().unwrap(), "adopt again");
    assert!(second.contains("columns added: none"), "{second}");
    assert!(second.contains("existing rows backfilled: 0"), "{second}");
    env.client
        .execute(&insert, &[&aggregate, &20, &200, &999])
        .await
        .unwrap();

    // The enqueue function adopt made takes the mapped columns (and the id
    // gets a default); the NOTIFY trigger is in place.
    let schema = env.table.split('.').next().unwrap().to_owned();
    let enqueued: String = env
        .client
        .query_one(
            &format!(
                "SELECT {schema}.outbox_enqueue($1, 'order-0', '{{\"n\": 1000, \"key\": \"order-0\"}}'::jsonb, 'OrderCreated')::text"
            ),
            &[&aggregate],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(enqueued.len(), 36);
    let trigger: i64 = env
        .client
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'outbox_notify' AND tgrelid = $1::text::regclass",
            &[&env.table],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(trigger, 1);

    let run = ["--layout", "debezium", "--header-column", "type=type"];
    let mut relays = [env.start_relay(&run), env.start_relay(&run)];
    for relay in &mut relays {
        relay.wait_ready().await;
    }
    env.wait_for_status("published", Count::Exactly(1001), WAIT)
        .await;
    let received = consume_until(&env.brokers, &topic, WAIT, |r| r.len() >= 1001).await;
    let rows = env
        .client
        .query(
            &format!(
                "SELECT id::text, outbox_sequence, aggregateid, payload FROM {}",
                env.table
            ),
            &[],
        )
        .await
        .unwrap();
    let by_id: HashMap<String, (i64, String, serde_json::Value)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    for message in &received {
        let (_, aggregate_id, payload) = &by_id[message.event_id()];
        assert_eq!(message.key.as_deref(), Some(aggregate_id.as_str()));
        assert_eq!(message.header("type"), Some("OrderCreated"));
        let value: serde_json::Value =
            serde_json::from_str(message.payload.as_deref().unwrap()).unwrap();
        assert_eq!(&value, payload);
    }
    assert_key_order(&received, Order::FirstArrivals, |m| by_id[m.event_id()].0);
}

#[tokio::test]
async fn adopting_a_busy_table_blocks_no_writer_loses_no_row_and_is_idempotent() {
    // OUTBOX_ADOPT_ROWS=1000000 gives the measurement in docs/table-contract.md.
    let old_rows: i32 = std::env::var("OUTBOX_ADOPT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let (env, aggregate, insert) = debezium_table("busy", 100, old_rows).await;

    // Writers insert one row per transaction for as long as the adoption
    // runs.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let longest_wait_us = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..2 {
        let client = connect(&env.database_url).await;
        let (stop, written, longest) = (stop.clone(), written.clone(), longest_wait_us.clone());
        let (insert, aggregate) = (insert.clone(), aggregate.clone());
        writers.push(tokio::spawn(async move {
            let mut n = i32::MAX / 2 + w * 100_000_000;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                client
                    .execute(&insert, &[&aggregate, &100, &n, &n])
                    .await
                    .unwrap();
                let waited = started.elapsed().as_micros() as u64;
                longest.fetch_max(waited, Ordering::Relaxed);
                written.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    let before = written.load(Ordering::Relaxed);
    let adopt = ["migrate", "--adopt", "--layout", "debezium"];
    let output = tokio::task::spawn_blocking({
        let mut command = env.command(&adopt);
        move || command.output().unwrap()
    })
    .await
    .unwrap();
    let during = written.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let report = assert_success(&output, "adopt under load");
    assert!(report.contains("existing rows backfilled: "), "{report}");
    println!(
        "adopt under load: {during} rows written during it, longest insert {} ms\n{report}",
        longest_wait_us.load(Ordering::Relaxed) / 1000
    );
    assert!(during > 0, "no writer got through while adopt ran");

    // Every row, old or written during the adoption, is pending with a
    // sequence, and the old rows come first.
    let check = env
        .client
        .query_one(
            &format!(
                "SELECT count(*), count(*) FILTER (WHERE status = 'pending' AND outbox_sequence IS NOT NULL
                                                   AND created_at IS NOT NULL),
                        count(*) FILTER (WHERE (payload->>'n')::int < $1 AND outbox_sequence >= 0)
                 FROM {}",
                env.table
            ),
            &[&old_rows],
        )
        .await
        .unwrap();
    let (total, ready, old_after_new): (i64, i64, i64) = (check.get(0), check.get(1), check.get(2));
    assert_eq!(
        total,
        i64::from(old_rows) + written.load(Ordering::Relaxed) as i64
    );
    assert_eq!(ready, total);
    assert_eq!(old_after_new, 0);

    let again = assert_success(&env.command(&adopt).output().unwrap(), "adopt again");
    assert!(again.contains("columns added: none"), "{again}");
    assert!(again.contains("existing rows backfilled: 0"), "{again}");
}

#[tokio::test]
async fn cloudevents_headers_parse_with_the_cloudevents_sdk() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(1).await;
    let payload = serde_json::json!({"order": 1});
    let ids = env
        .insert(&[NewRow::new(&topic, Some("k"), payload.clone())])
        .await;
    let created_ms: f64 = env
        .client
        .query_one(
            &format!(
                "SELECT (extract(epoch FROM created_at) * 1000)::float8 FROM {} WHERE id = $1",
                env.table
            ),
            &[&ids[0].0],
        )
        .await
        .unwrap()
        .get(0);
    let mut relay = env.start_relay(&[
        "--cloudevents",
        "--cloudevents-source",
        "/orders-service",
        "--record-timestamp",
        "created-at",
    ]);
    relay.wait_ready().await;
    let messages = read_topic(&env.brokers, &topic, 1, true);
    let event = messages[0].cloudevent.as_ref().expect("parsed by the SDK");
    assert_eq!(event["id"], ids[0].1.as_str());
    assert_eq!(event["source"], "/orders-service");
    assert_eq!(event["type"], topic.as_str());
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(event["data"], payload);
    assert!(
        event["time"].as_str().is_some_and(|t| t.starts_with("20")),
        "{event}"
    );
    assert_eq!(messages[0].timestamp, Some(created_ms.floor() as i64));
}

/// A 63-byte table name (the longest PostgreSQL allows): every derived
/// object fits, and migrate finds them all in place the second time.
#[tokio::test]
async fn the_longest_table_name_gets_objects_that_fit() {
    let mut env = TestEnv::bare(&common::database_url()).await;
    let schema = env.table.split('.').next().unwrap().to_owned();
    env.table = format!("{schema}.{}", "a".repeat(63));
    let first = assert_success(
        &env.command(&["migrate", "--notify-trigger"])
            .output()
            .unwrap(),
        "migrate",
    );
    assert!(first.contains("already in place: nothing"), "{first}");
    let second = assert_success(
        &env.command(&["migrate", "--notify-trigger"])
            .output()
            .unwrap(),
        "migrate again",
    );
    assert!(second.contains("created: nothing"), "{second}");
    let topic = env.create_topic(1).await;
    env.insert(&[NewRow::new(&topic, Some("k"), serde_json::json!({"a": 1}))])
        .await;
    let mut relay = env.start_relay(&[]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(1), WAIT)
        .await;
}
