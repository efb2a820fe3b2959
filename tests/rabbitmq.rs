//! RabbitMQ beyond the conformance suite, against a real RabbitMQ 3.10:
//! topic and fanout exchanges route as their bindings say, unroutable rows
//! wait while the rest flow, a quorum queue, a connection blocked by a
//! resource alarm, amqps with a CA and with the wrong one, and an outage
//! under load.

mod common;

use std::time::Duration;

use common::load::{committed_rows, verify, Load};
use common::rabbitmq::{self, PrivateRabbitMq};
use common::{wait_for, Count, NewRow, TestEnv};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::ExchangeKind;
use serde_json::json;

/// Declare `exchange` of `kind` with a fresh durable queue per binding key;
/// returns the queues, in the order of `bindings`.
async fn exchange_with_queues(
    url: &str,
    exchange: &str,
    kind: ExchangeKind,
    bindings: &[&str],
) -> Vec<String> {
    let connection = rabbitmq::connect(url).await;
    let channel = connection.create_channel().await.expect("channel");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(exchange.into(), kind, durable, FieldTable::default())
        .await
        .expect("declare the exchange");
    let mut queues = Vec::new();
    for binding in bindings {
        let queue = common::unique_name("queue");
        rabbitmq::declare_queue(url, &queue, FieldTable::default()).await;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                (*binding).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind the queue");
        queues.push(queue);
    }
    let _ = connection.close(200, "".into()).await;
    queues
}

fn order_rows(routing_key: &str, n: usize) -> Vec<NewRow> {
    order_rows_from(routing_key, 0, n)
}

fn ids(inserted: &[(i64, String)]) -> Vec<String> {
    inserted.iter().map(|(_, e)| e.clone()).collect()
}

/// `n` rows over three keys; `seq` (a row's place in its key) starts at `from`.
fn order_rows_from(routing_key: &str, from: usize, n: usize) -> Vec<NewRow> {
    (from..from + n)
        .map(|i| {
            NewRow::new(
                routing_key,
                Some(&format!("order-{}", i % 3)),
                json!({ "seq": i }),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_exchange_delivers_to_each_queue_what_its_binding_matches() {
    let env = TestEnv::new().await;
    let url = rabbitmq::url();
    let exchange = common::unique_name("orders");
    let queues = exchange_with_queues(
        &url,
        &exchange,
        ExchangeKind::Topic,
        &["order.created", "order.*"],
    )
    .await;
    let created = env.insert(&order_rows("order.created", 20)).await;
    let shipped = env.insert(&order_rows_from("order.shipped", 20, 10)).await;
    let _relay = env.start_relay_args(&rabbitmq::relay_args(&url, Some(&exchange)));
    env.wait_for_status("published", Count::Exactly(30), Duration::from_secs(30))
        .await;

    let exact =
        rabbitmq::read_queue(&url, &queues[0], &ids(&created), Duration::from_secs(20)).await;
    let mut all = created.clone();
    all.extend(shipped.iter().cloned());
    let wildcard =
        rabbitmq::read_queue(&url, &queues[1], &ids(&all), Duration::from_secs(20)).await;
    verify(&exact, &created, &all);
    verify(&wildcard, &all, &all);
    assert_eq!(exact.len(), 20, "order.created gets only created orders");
    assert_eq!(wildcard.len(), 30, "order.* gets both");
    let first = &exact[0];
    assert_eq!(first.header("id"), Some(created[0].1.as_str()));
    assert_eq!(first.key.as_deref(), Some("order-0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_exchange_delivers_every_row_to_every_queue() {
    let env = TestEnv::new().await;
    let url = rabbitmq::url();
    let exchange = common::unique_name("events");
    let queues = exchange_with_queues(&url, &exchange, ExchangeKind::Fanout, &["", ""]).await;
    let inserted = env.insert(&order_rows("anything", 25)).await;
    let _relay = env.start_relay_args(&rabbitmq::relay_args(&url, Some(&exchange)));
    env.wait_for_status("published", Count::Exactly(25), Duration::from_secs(30))
        .await;
    for queue in &queues {
        let received =
            rabbitmq::read_queue(&url, queue, &ids(&inserted), Duration::from_secs(20)).await;
        verify(&received, &inserted, &inserted);
        assert_eq!(received.len(), 25);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_rows_wait_with_the_routing_key_named_while_the_rest_flow() {
    let env = TestEnv::new().await;
    let url = rabbitmq::url();
    let exchange = common::unique_name("orders");
    let queues = exchange_with_queues(&url, &exchange, ExchangeKind::Topic, &["order.*"]).await;
    let lost = env
        .insert(&[NewRow::new(
            "refund.created",
            Some("order-0"),
            json!({ "seq": -1 }),
        )])
        .await;
    let routed = env.insert(&order_rows("order.created", 30)).await;
    let mut relay = env.start_relay_args(&{
        let mut args = rabbitmq::relay_args(&url, Some(&exchange));
        args.extend(["--retry-backoff-max-secs".into(), "1".into()]);
        args
    });
    relay.wait_ready().await;
    // Keys other than the unroutable row's flow; its own key waits behind it.
    env.wait_for_status("published", Count::Exactly(20), Duration::from_secs(30))
        .await;
    let (status, attempts, error) = env.row_state(lost[0].0).await;
    assert_eq!(status, "pending");
    assert!(attempts >= 1);
    let error = error.unwrap_or_default();
    assert!(
        error.contains("routing key refund.created") && error.contains(&exchange),
        "{error}"
    );
    let held: Vec<_> = routed.iter().step_by(3).collect();
    assert_eq!(env.row_state(held[0].0).await.0, "pending", "its key waits");
    wait_for(
        "the unroutable failure counted",
        Duration::from_secs(10),
        || async {
            let count = relay
                .metric("outbox_publish_failures_total{reason=\"unroutable\"}")
                .await?;
            (count >= 1.0).then_some(())
        },
    )
    .await;
    let received = rabbitmq::read_queue(&url, &queues[0], &[], Duration::from_secs(3)).await;
    assert!(received
        .iter()
        .all(|r| r.header("id") != Some(lost[0].1.as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_gets_every_row_in_key_order() {
    let env = TestEnv::new().await;
    let url = rabbitmq::url();
    let queue = common::unique_name("quorum");
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    rabbitmq::declare_queue(&url, &queue, arguments).await;
    let inserted = env.insert(&order_rows(&queue, 60)).await;
    let _relay = env.start_relay_args(&rabbitmq::relay_args(&url, None));
    env.wait_for_status("published", Count::Exactly(60), Duration::from_secs(30))
        .await;
    let received =
        rabbitmq::read_queue(&url, &queue, &ids(&inserted), Duration::from_secs(20)).await;
    let verdict = verify(&received, &inserted, &inserted);
    assert_eq!(verdict.distinct, 60, "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_blocked_by_a_memory_alarm_is_an_outage_not_a_failure() {
    let node = PrivateRabbitMq::start().await;
    let env = TestEnv::new().await;
    let queue = common::unique_name("queue");
    rabbitmq::declare_queue(&node.url(), &queue, FieldTable::default()).await;
    let mut relay = env.start_relay_args(&{
        let mut args = rabbitmq::relay_args(&node.url(), None);
        args.extend([
            "--max-attempts".into(),
            "2".into(),
            "--claim-timeout-secs".into(),
            "5".into(),
        ]);
        args
    });
    relay.wait_ready().await;
    node.ctl(&["set_vm_memory_high_watermark", "0.0000001"])
        .await;
    let inserted = env.insert(&order_rows(&queue, 50)).await;
    wait_for(
        "/readyz to report the block",
        Duration::from_secs(30),
        || async { (relay.get("/readyz").await?.0 == 503).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(env.count("dead").await, 0, "{}", relay.log_text());
    assert!(
        relay.log_text().contains("blocked the connection"),
        "{}",
        relay.log_text()
    );

    node.ctl(&["set_vm_memory_high_watermark", "0.4"]).await;
    env.wait_for_status("published", Count::Exactly(50), Duration::from_secs(90))
        .await;
    assert_eq!(env.count("dead").await, 0);
    let received = rabbitmq::read_queue(
        &node.url(),
        &queue,
        &ids(&inserted),
        Duration::from_secs(20),
    )
    .await;
    verify(&received, &inserted, &inserted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_the_servers_ca_a_server_name_or_verify_none_delivers_and_a_wrong_ca_fails_at_start_in_one_line(
) {
    let env = TestEnv::new().await;
    let queue = common::unique_name("queue");
    rabbitmq::declare_queue(&rabbitmq::url(), &queue, FieldTable::default()).await;
    let amqps = |ca: &str| {
        format!(
            "amqps://relay@{}/outbox?cacertfile={ca}&verify=verify_peer",
            std::env::var("OUTBOX_TEST_RABBITMQ_AMQPS").expect("OUTBOX_TEST_RABBITMQ_AMQPS")
        )
    };
    let ca = std::env::var("OUTBOX_TEST_CA").expect("OUTBOX_TEST_CA");
    let inserted = env.insert(&order_rows(&queue, 10)).await;
    let relay = env.start_relay_args(&rabbitmq::relay_args(&amqps(&ca), None));
    env.wait_for_status("published", Count::Exactly(10), Duration::from_secs(30))
        .await;
    drop(relay);
    let received = rabbitmq::read_queue(
        &rabbitmq::url(),
        &queue,
        &ids(&inserted),
        Duration::from_secs(20),
    )
    .await;
    verify(&received, &inserted, &inserted);

    // The name checked can differ from the host connected to.
    let by_name = format!("{}&server_name_indication=localhost", amqps(&ca));
    let more = env.insert(&order_rows_from(&queue, 10, 5)).await;
    let relay = env.start_relay_args(&rabbitmq::relay_args(&by_name, None));
    env.wait_for_status("published", Count::Exactly(15), Duration::from_secs(30))
        .await;
    drop(relay);
    let received = rabbitmq::read_queue(
        &rabbitmq::url(),
        &queue,
        &ids(&more),
        Duration::from_secs(20),
    )
    .await;
    verify(&received, &more, &more);

    let certs = common::certs::Certificates::generate();
    let wrong = certs.path("ca.pem");
    // verify_none: encrypted, the certificate unchecked.
    let unchecked = amqps(&wrong).replace("verify_peer", "verify_none");
    let last = env.insert(&order_rows_from(&queue, 15, 5)).await;
    let relay = env.start_relay_args(&rabbitmq::relay_args(&unchecked, None));
    env.wait_for_status("published", Count::Exactly(20), Duration::from_secs(30))
        .await;
    drop(relay);
    let received = rabbitmq::read_queue(
        &rabbitmq::url(),
        &queue,
        &ids(&last),
        Duration::from_secs(20),
    )
    .await;
    verify(&received, &last, &last);

    let mut args = rabbitmq::relay_args(&amqps(&wrong), None);
    args.extend(["--kafka-startup-timeout-secs".into(), "3".into()]);
    let mut refused = env.start_relay_args(&args);
    let status = refused.wait_exit(Duration::from_secs(30)).await;
    let log = refused.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains("RabbitMQ at amqps://relay:***@"),
        "{}",
        errors[0]
    );
    assert!(!log.contains(&rabbitmq::password()), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_stopped_for_15_s_under_load_loses_and_burns_nothing() {
    let node = PrivateRabbitMq::start().await;
    let env = TestEnv::new().await;
    let queue = common::unique_name("queue");
    rabbitmq::declare_queue(&node.url(), &queue, FieldTable::default()).await;
    let load = Load::start(&env.database_url, &env.table, &queue, 5, 20).await;
    // A batch whose confirms the dead node never sends is rolled back at
    // the claim timeout; keep that short of the waits below.
    let mut args = rabbitmq::relay_args(&node.url(), None);
    args.extend(["--claim-timeout-secs".into(), "20".into()]);
    let mut relay = env.start_relay_args(&args);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::AtLeast(200), Duration::from_secs(60))
        .await;
    node.kill().await;
    wait_for(
        "/readyz to report the outage",
        Duration::from_secs(30),
        || async { (relay.get("/readyz").await?.0 == 503).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(env.count("dead").await, 0, "{}", relay.log_text());
    node.restart().await;
    load.stop().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while env.count("pending").await > 0 {
        if std::time::Instant::now() >= deadline {
            let why = env
                .client
                .query(
                    &format!(
                        "SELECT coalesce(last_error, '(none)'), count(*) FROM {} WHERE status = 'pending' GROUP BY 1 ORDER BY 2 DESC LIMIT 5",
                        env.table
                    ),
                    &[],
                )
                .await
                .expect("last errors");
            let why: Vec<String> = why
                .iter()
                .map(|r| format!("{} × {}", r.get::<_, i64>(1), r.get::<_, String>(0)))
                .collect();
            panic!(
                "rows still pending 120 s after the restart; their last errors: {why:?}\n{}",
                relay.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(env.count("dead").await, 0, "{}", relay.log_text());
    let committed = committed_rows(&env.client, &env.table).await;
    let received = rabbitmq::read_queue(
        &node.url(),
        &queue,
        &ids(&committed),
        Duration::from_secs(60),
    )
    .await;
    let verdict = verify(&received, &committed, &committed);
    println!("RabbitMQ stopped 15 s under load: {verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_for_rabbitmq_accepts_any_routing_key_and_refuses_what_amqp_cannot_carry() {
    let env = TestEnv::new().await;
    let output = env
        .command(&["migrate", "--sink", "rabbitmq"])
        .output()
        .expect("migrate");
    common::assert_success(&output, "migrate --sink rabbitmq");
    let url = rabbitmq::url();
    let queue = format!("{}/orders:eu", common::unique_name("q"));
    rabbitmq::declare_queue(&url, &queue, FieldTable::default()).await;
    let inserted = env.insert(&order_rows(&queue, 5)).await;
    let insert = format!("INSERT INTO {} (topic) VALUES ($1)", env.table);
    let too_long = "k".repeat(256);
    let refused = env.client.execute(&insert, &[&too_long]).await;
    assert!(
        refused.is_err(),
        "a 256-byte routing key is refused at INSERT"
    );
    assert!(env.client.execute(&insert, &[&""]).await.is_err());

    let _relay = env.start_relay_args(&rabbitmq::relay_args(&url, None));
    env.wait_for_status("published", Count::Exactly(5), Duration::from_secs(30))
        .await;
    let received =
        rabbitmq::read_queue(&url, &queue, &ids(&inserted), Duration::from_secs(20)).await;
    verify(&received, &inserted, &inserted);

    // Back to Kafka's rule: the same name is refused again.
    let output = env.command(&["migrate"]).output().expect("migrate");
    common::assert_success(&output, "migrate");
    assert!(env.client.execute(&insert, &[&queue]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_and_its_settings_can_come_from_the_config_file() {
    let env = TestEnv::new().await;
    let url = rabbitmq::url();
    let queue = common::unique_name("queue");
    rabbitmq::declare_queue(&url, &queue, FieldTable::default()).await;
    let inserted = env.insert(&order_rows(&queue, 5)).await;
    let file = env.dir.path().join("relay.toml");
    std::fs::write(
        &file,
        format!(
            "sink = \"rabbitmq\"\n[rabbitmq]\nurl = \"{url}\"\npassword_file = \"{}\"\n[[source]]\ndatabase_url = \"{}\"\n[[source.table]]\nname = \"{}\"\n",
            rabbitmq::password_file().display(),
            env.database_url,
            env.table
        ),
    )
    .unwrap();
    let _relay = env.start_relay_bare(&["--config", file.to_str().unwrap()]);
    env.wait_for_status("published", Count::Exactly(5), Duration::from_secs(30))
        .await;
    let received =
        rabbitmq::read_queue(&url, &queue, &ids(&inserted), Duration::from_secs(20)).await;
    verify(&received, &inserted, &inserted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_exchange_and_an_unreachable_server_each_fail_at_start_in_one_line() {
    let env = TestEnv::new().await;
    let closed = format!("amqp://relay@127.0.0.1:{}/outbox", common::free_port());
    let cases = [
        (
            rabbitmq::relay_args(&rabbitmq::url(), Some("no-such-exchange")),
            "has no exchange no-such-exchange: declare it, or fix --rabbitmq-exchange",
        ),
        (rabbitmq::relay_args(&closed, None), "did not answer"),
    ];
    for (mut args, says) in cases {
        args.extend(["--startup-timeout-secs".into(), "2".into()]);
        let mut relay = env.start_relay_args(&args);
        let status = relay.wait_exit(Duration::from_secs(30)).await;
        let log = relay.log_text();
        assert_eq!(status.code(), Some(1), "{log}");
        let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{log}");
        assert!(
            errors[0].contains("RabbitMQ at amqp://relay:***@"),
            "{}",
            errors[0]
        );
        assert!(errors[0].contains(says), "{}", errors[0]);
        assert!(!log.contains(&rabbitmq::password()), "{log}");
    }
}
