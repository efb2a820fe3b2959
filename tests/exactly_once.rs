//! `--exactly-once` against a real Apache Kafka (2.3, `tests/services.sh`):
//! a consumer with `isolation.level=read_committed` counts every message by
//! its `id` header and must find every committed row once, and none twice,
//! in per-key order — after SIGKILLs, a failover, a zombie leader, a broker
//! restart, a PostgreSQL restart and the crash window forced open; a poison
//! row and a missing topic; and the mistakes refused at start-up.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::apache_kafka::{self, PrivateApacheKafka};
use common::load::{committed_rows, verify, Load, Verdict};
use common::private_pg::PrivatePostgres;
use common::{wait_for, Count, NewRow, Received, RelayProcess, TestEnv};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde_json::json;

const READ_COMMITTED: &[(&str, &str)] = &[("isolation.level", "read_committed")];

/// A test table whose relay and topics are on `brokers` (Apache Kafka).
async fn env_on(brokers: &str) -> TestEnv {
    let mut env = TestEnv::new().await;
    env.brokers = brokers.to_owned();
    env
}

/// A topic with its own settings (`max.message.bytes`, …).
async fn create_topic_configured(
    brokers: &str,
    partitions: i32,
    config: &[(&str, &str)],
) -> String {
    let topic = common::unique_name("topic");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let mut new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in config {
        new = new.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&new], &options).await.expect("create") {
        result.expect("topic created");
    }
    topic
}

/// A relay with `--exactly-once`, in batches of 200 unless `extra` says.
fn start(env: &TestEnv, extra: &[&str]) -> RelayProcess {
    let mut args = vec!["--exactly-once"];
    if !extra.contains(&"--batch-size") {
        args.extend(["--batch-size", "200"]);
    }
    args.extend_from_slice(extra);
    env.start_relay(&args)
}

/// Read `topic` with `read_committed` until every row of `committed` was
/// seen and nothing more arrived for two seconds, then check: each one
/// arrived, in per-key order, and (returned) how many arrived twice.
async fn read_committed(brokers: &str, topic: &str, committed: &[(i64, String)]) -> Verdict {
    let mut missing: std::collections::HashSet<String> =
        committed.iter().map(|(_, e)| e.clone()).collect();
    let (mut checked, mut last_growth) = (0, Instant::now());
    let settings: Vec<(String, String)> = READ_COMMITTED
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let received = common::kafka::consume_until_with(
        brokers,
        &settings,
        topic,
        Duration::from_secs(90),
        move |received: &[Received]| {
            if received.len() > checked {
                last_growth = Instant::now();
            }
            for message in &received[checked..] {
                missing.remove(message.event_id());
            }
            checked = received.len();
            missing.is_empty() && last_growth.elapsed() > Duration::from_secs(2)
        },
    )
    .await;
    verify(&received, committed, committed)
}

/// Stop the load, drain, and read back with `read_committed`: 0 lost, 0
/// duplicates, per-key order, no row dead.
async fn drain_exactly_once(env: &TestEnv, load: Load, topic: &str) -> Verdict {
    load.stop().await;
    env.wait_for_status("pending", Count::Exactly(0), Duration::from_secs(120))
        .await;
    assert_eq!(env.count("dead").await, 0, "a row went dead");
    let committed = committed_rows(&env.client, &env.table).await;
    let verdict = read_committed(&env.brokers, topic, &committed).await;
    assert_eq!(verdict.duplicates, 0, "{verdict}");
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_consumers_see_every_row_once_in_key_order() {
    let env = env_on(&apache_kafka::plaintext()).await;
    let topic = env.create_topic(3).await;
    let rows: Vec<NewRow> = (0..1_000)
        .map(|i| {
            NewRow::new(
                &topic,
                Some(&format!("k{}", i % 13)),
                json!({ "seq": i / 13 }),
            )
        })
        .collect();
    env.insert(&rows).await;
    let mut relay = start(&env, &[]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(1_000), Duration::from_secs(60))
        .await;
    let committed = committed_rows(&env.client, &env.table).await;
    let verdict = read_committed(&env.brokers, &topic, &committed).await;
    assert_eq!(verdict.duplicates, 0, "{verdict}");
    let committed_txns = relay
        .metric("outbox_transactions_total{outcome=\"committed\"}")
        .await
        .unwrap_or(0.0);
    assert!(
        committed_txns >= 5.0,
        "1,000 rows in batches of 200: {committed_txns}"
    );
    let log = relay.log_text();
    assert!(log.contains("publishing exactly once"), "{log}");
    assert!(log.contains("transactional.id outbox-relay/"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crash_window_forced_open_sends_nothing_twice_and_marks_the_rows() {
    let env = env_on(&apache_kafka::plaintext()).await;
    let topic = env.create_topic(3).await;
    let rows: Vec<NewRow> = (0..600)
        .map(|i| {
            NewRow::new(
                &topic,
                Some(&format!("k{}", i % 7)),
                json!({ "seq": i / 7 }),
            )
        })
        .collect();
    env.insert(&rows).await;
    // The fault point: exit right after the first Kafka commit, before
    // PostgreSQL marks the batch.
    let mut command = env.command(&["run"]);
    command
        .args([
            "--kafka-brokers",
            &env.brokers,
            "--exactly-once",
            "--batch-size",
            "200",
        ])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("OUTBOX_TEST_FAULT", "exit-after-kafka-commit");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("relay");
    assert_eq!(output.status.code(), Some(86), "{output:?}");
    assert_eq!(
        env.count("published").await,
        0,
        "the crash came before the mark"
    );

    let mut relay = start(&env, &[]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(600), Duration::from_secs(60))
        .await;
    let recovered = relay
        .metric("outbox_checkpoint_recovered_rows_total")
        .await
        .unwrap_or(0.0);
    assert_eq!(recovered, 200.0, "{}", relay.log_text());
    let committed = committed_rows(&env.client, &env.table).await;
    let verdict = read_committed(&env.brokers, &topic, &committed).await;
    assert_eq!(verdict.duplicates, 0, "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_sigkills_during_a_drain_under_load_lose_and_duplicate_nothing() {
    let env = env_on(&apache_kafka::plaintext()).await;
    let topic = env.create_topic(3).await;
    let backlog = format!(
        "INSERT INTO {} (topic, message_key, payload)
         SELECT $1, 'key-' || (i % 20), jsonb_build_object('seq', -50000 + i / 20)
         FROM generate_series(0, 49999) AS i",
        env.table
    );
    env.client
        .execute(&backlog, &[&topic])
        .await
        .expect("backlog");
    let load = Load::start(&env.database_url, &env.table, &topic, 5, 20).await;
    for kill in 1..=5 {
        let mut relay = start(&env, &["--batch-size", "1000"]);
        relay.wait_ready().await;
        let before = env.count("published").await;
        wait_for("the relay to publish", Duration::from_secs(60), || async {
            (env.count("published").await > before).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(150 * kill)).await;
        relay.signal("KILL");
    }
    let _relay = start(&env, &[]);
    let verdict = drain_exactly_once(&env, load, &topic).await;
    eprintln!("EXACTLY ONCE 5 SIGKILLs during a 50,000-row drain under load: {verdict}");
}

/// The index of the replica that reports `outbox_relay_role 1`.
async fn leader(relays: &[RelayProcess]) -> usize {
    wait_for("one leader", Duration::from_secs(30), || async {
        let mut leaders = Vec::new();
        for (i, relay) in relays.iter().enumerate() {
            if relay.metric("outbox_relay_role").await? == 1.0 {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_sigkilled_three_times_beside_two_standbys_duplicates_nothing() {
    let env = env_on(&apache_kafka::plaintext()).await;
    let topic = env.create_topic(3).await;
    let load = Load::start(&env.database_url, &env.table, &topic, 10, 50).await;
    let mut relays: Vec<RelayProcess> = (0..3).map(|_| start(&env, &[])).collect();
    for relay in &mut relays {
        relay.wait_ready().await;
    }
    for _ in 0..3 {
        let before = env.count("published").await;
        wait_for("the leader to publish", Duration::from_secs(60), || async {
            (env.count("published").await > before + 100).then_some(())
        })
        .await;
        let killed = relays.remove(leader(&relays).await);
        killed.signal("KILL");
        let mut standby = start(&env, &[]);
        standby.wait_ready().await;
        relays.push(standby);
    }
    let verdict = drain_exactly_once(&env, load, &topic).await;
    eprintln!("EXACTLY ONCE leader SIGKILLed 3 times beside 2 standbys: {verdict}");
}

/// End the leader's lock session on the server, leaving its process (and
/// its claim connections) running. Whether one was found.
async fn terminate_lock_session(env: &TestEnv) -> bool {
    let table: outbox_relay::source::table::TableName = env.table.parse().expect("table");
    let row = env
        .client
        .query_one(
            "SELECT count(pg_terminate_backend(pid))
             FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND objsubid = 1
               AND ((classid::int8 << 32) | objid::int8) = hashtextextended($1, 0)",
            &[&table.quoted()],
        )
        .await
        .expect("terminate the lock session");
    row.get::<_, i64>(0) > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_leader_is_fenced_and_what_it_sent_arrives_once() {
    let env = env_on(&apache_kafka::plaintext()).await;
    let topic = env.create_topic(3).await;
    let load = Load::start(&env.database_url, &env.table, &topic, 10, 50).await;
    let mut relays: Vec<RelayProcess> = (0..2).map(|_| start(&env, &[])).collect();
    for relay in &mut relays {
        relay.wait_ready().await;
    }
    let first = leader(&relays).await;
    env.wait_for_status("published", Count::AtLeast(300), Duration::from_secs(60))
        .await;
    let mut terminations = 0;
    loop {
        assert!(terminate_lock_session(&env).await, "no lock session to end");
        terminations += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if leader(&relays).await != first {
            break;
        }
        assert!(terminations < 20, "the standby never won the lock");
    }
    let before = env.count("published").await;
    wait_for(
        "the new leader to publish",
        Duration::from_secs(30),
        || async { (env.count("published").await > before + 200).then_some(()) },
    )
    .await;
    let verdict = drain_exactly_once(&env, load, &topic).await;
    // The zombie's producer was fenced by the new leader's: any commit it
    // tried after that failed, and it said so at most once per takeover.
    let zombie = relays[first].log_text();
    assert!(
        zombie.contains("lost the leadership of this table"),
        "{zombie}"
    );
    assert!(
        zombie.matches("was fenced").count() <= terminations,
        "{zombie}"
    );
    eprintln!(
        "EXACTLY ONCE zombie leader (lock session terminated {terminations} times): {verdict}; fenced commits: {}",
        zombie.matches("was fenced").count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_load_duplicates_nothing() {
    let broker = PrivateApacheKafka::start().await;
    let env = env_on(&broker.address()).await;
    let topic = env.create_topic(3).await;
    let load = Load::start(&env.database_url, &env.table, &topic, 5, 20).await;
    let mut relay = start(&env, &[]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::AtLeast(200), Duration::from_secs(60))
        .await;
    broker.kill().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart().await;
    let verdict = drain_exactly_once(&env, load, &topic).await;
    eprintln!("EXACTLY ONCE broker SIGKILL and restart under load: {verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_duplicates_nothing() {
    let pg = PrivatePostgres::start(20);
    let mut env = TestEnv::on(&pg.relay_url()).await;
    env.brokers = apache_kafka::plaintext();
    let topic = env.create_topic(3).await;
    let load = Load::start(&env.database_url, &env.table, &topic, 5, 20).await;
    let mut relay = start(&env, &[]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::AtLeast(300), Duration::from_secs(60))
        .await;
    pg.restart_immediate();
    env.reconnect().await;
    let before = env.count("published").await;
    wait_for("publishing to resume", Duration::from_secs(60), || async {
        (env.count("published").await > before).then_some(())
    })
    .await;
    let verdict = drain_exactly_once(&env, load, &topic).await;
    eprintln!("EXACTLY ONCE PostgreSQL restart -m immediate under load: {verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_row_goes_dead_alone_and_the_rest_arrive_once() {
    let brokers = apache_kafka::plaintext();
    let env = env_on(&brokers).await;
    let topic = create_topic_configured(&brokers, 1, &[("max.message.bytes", "50000")]).await;
    let mut rows: Vec<NewRow> = (0..300)
        .map(|i| {
            NewRow::new(
                &topic,
                Some(&format!("k{}", i % 5)),
                json!({ "seq": i / 5 }),
            )
        })
        .collect();
    // Accepted by the client, refused by the broker: inside the transaction.
    rows.insert(
        150,
        NewRow::new(
            &topic,
            Some("poison"),
            json!({ "seq": 0, "pad": "x".repeat(100_000) }),
        ),
    );
    let inserted = env.insert(&rows).await;
    let poison = inserted[150].0;
    let mut relay = start(&env, &[]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(300), Duration::from_secs(60))
        .await;
    let (status, _, error) = env.row_state(poison).await;
    assert_eq!(status, "dead", "{error:?}");
    let aborted = relay
        .metric("outbox_transactions_total{outcome=\"aborted\"}")
        .await
        .unwrap_or(0.0);
    assert!(aborted >= 1.0, "the poison row's transaction aborted");
    let committed: Vec<(i64, String)> = inserted
        .into_iter()
        .filter(|(id, _)| *id != poison)
        .collect();
    let verdict = read_committed(&brokers, &topic, &committed).await;
    assert_eq!(verdict.duplicates, 0, "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_for_a_missing_topic_wait_and_the_rest_flow_once() {
    let env = env_on(&apache_kafka::plaintext()).await;
    let topic = env.create_topic(3).await;
    let missing = common::unique_name("missing");
    let mut rows: Vec<NewRow> = (0..200)
        .map(|i| {
            NewRow::new(
                &topic,
                Some(&format!("k{}", i % 5)),
                json!({ "seq": i / 5 }),
            )
        })
        .collect();
    rows.extend((0..10).map(|i| NewRow::new(&missing, Some("m"), json!({ "seq": i }))));
    let inserted = env.insert(&rows).await;
    let mut relay = start(&env, &[]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(200), Duration::from_secs(60))
        .await;
    wait_for(
        "the missing topic's rows to be tried",
        Duration::from_secs(30),
        || async {
            let sample = "outbox_publish_failures_total{reason=\"unknown_topic\"}";
            (relay.metric(sample).await? >= 1.0).then_some(())
        },
    )
    .await;
    assert_eq!(env.count("pending").await, 10);
    assert_eq!(env.count("dead").await, 0);
    let flowing: Vec<(i64, String)> = inserted.into_iter().take(200).collect();
    let verdict = read_committed(&env.brokers, &topic, &flowing).await;
    assert_eq!(verdict.duplicates, 0, "{verdict}");
}

/// `run` with `args` exits non-zero at once with one line on stderr.
async fn refused(env: &TestEnv, args: &[&str]) -> String {
    let mut command: Command = env.command(&["run"]);
    command.args(args).args(["--metrics-addr", "127.0.0.1:0"]);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("relay");
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_where_it_cannot_be_had_is_refused_in_one_line() {
    let env = env_on(&apache_kafka::plaintext()).await;
    let brokers = env.brokers.clone();
    let pooler = refused(
        &env,
        &[
            "--kafka-brokers",
            &brokers,
            "--exactly-once",
            "--pooler",
            "transaction",
        ],
    )
    .await;
    assert!(
        pooler.contains("--pooler transaction") && pooler.contains("leader election"),
        "{pooler}"
    );
    let election = refused(
        &env,
        &[
            "--kafka-brokers",
            &brokers,
            "--exactly-once",
            "--election",
            "none",
        ],
    )
    .await;
    assert!(election.contains("--election none"), "{election}");
    let redis = refused(
        &env,
        &[
            "--sink",
            "redis",
            "--redis-url",
            "redis://127.0.0.1:1",
            "--exactly-once",
        ],
    )
    .await;
    assert!(redis.contains("Kafka only"), "{redis}");
    let short = refused(
        &env,
        &[
            "--kafka-brokers",
            &brokers,
            "--exactly-once",
            "--kafka-option",
            "transaction.timeout.ms=30000",
        ],
    )
    .await;
    assert!(
        short.contains("transaction.timeout.ms=30000") && short.contains("--claim-timeout-secs"),
        "{short}"
    );
    let tansu = common::brokers();
    let started = Instant::now();
    let no_transactions = refused(&env, &["--kafka-brokers", &tansu, "--exactly-once"]).await;
    assert!(
        no_transactions.contains("cannot commit a transaction"),
        "{no_transactions}"
    );
    eprintln!(
        "EXACTLY ONCE refused on Tansu in {:?}: {no_transactions}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_id_from_the_configuration_file_is_used() {
    let env = env_on(&apache_kafka::plaintext()).await;
    let topic = env.create_topic(1).await;
    env.insert(&[NewRow::new(&topic, Some("k"), json!({ "seq": 0 }))])
        .await;
    let id = common::unique_name("orders-relay");
    let file = exactly_once_config(&env, &id);
    let mut relay = env.start_relay_bare(&["--config", file.to_str().unwrap()]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(1), Duration::from_secs(60))
        .await;
    let log = relay.log_text();
    assert!(log.contains(&format!("transactional.id {id}")), "{log}");
}

/// A configuration file serving the test's table exactly once with the
/// transactional.id `id`.
fn exactly_once_config(env: &TestEnv, id: &str) -> std::path::PathBuf {
    let file = env
        .dir
        .path()
        .join(format!("{}.toml", common::unique_name("relay")));
    std::fs::write(
        &file,
        format!(
            "[kafka]\nbrokers = \"{}\"\n\n[[source]]\ndatabase_url = \"{}\"\n\n[[source.table]]\nname = \"{}\"\nexactly_once = true\ntransactional_id = \"{id}\"\n",
            env.brokers, env.relay_database_url, env.table
        ),
    )
    .unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_fenced_by_a_newer_producer_rolls_back_stops_and_says_so_once() {
    let env = env_on(&apache_kafka::plaintext()).await;
    let topic = env.create_topic(3).await;
    let id = common::unique_name("fenced");
    let config = exactly_once_config(&env, &id);
    let config = config.to_str().unwrap();
    let load = Load::start(&env.database_url, &env.table, &topic, 5, 20).await;
    let mut relay = env.start_relay_bare(&["--config", config, "--batch-size", "50"]);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::AtLeast(200), Duration::from_secs(60))
        .await;

    // Another producer takes the transactional.id over.
    let brokers = env.brokers.clone();
    let fencer_id = id.clone();
    let fencer = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::{BaseProducer, Producer};
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("transactional.id", &fencer_id)
            .create()
            .expect("producer");
        producer
            .init_transactions(Duration::from_secs(30))
            .expect("init_transactions");
        producer
    })
    .await
    .unwrap();
    wait_for(
        "the relay to be fenced",
        Duration::from_secs(30),
        || async { relay.log_text().contains("was fenced").then_some(()) },
    )
    .await;
    // It claims nothing more: the rows stay pending while it runs.
    let published = env.count("published").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.count("published").await,
        published,
        "{}",
        relay.log_text()
    );
    assert_eq!(
        relay
            .metric("outbox_transactions_total{outcome=\"fenced\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(relay.log_text().matches("was fenced").count(), 1);
    relay.signal("KILL");
    drop(fencer);

    let _next = env.start_relay_bare(&["--config", config]);
    let verdict = drain_exactly_once(&env, load, &topic).await;
    eprintln!("EXACTLY ONCE fenced by a newer producer, then taken over: {verdict}");
}
