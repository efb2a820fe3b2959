//! TLS to Kafka: the relay publishes through a TLS-terminating proxy in front
//! of Tansu with `security.protocol=SSL` (and zstd compression, both of which
//! need librdkafka features the build turns on), and a CA that did not sign
//! the broker's certificate fails start-up with a clear TLS error.

mod common;

use std::time::Duration;

use common::certs::Certificates;
use common::private_broker::{PrivateBroker, TlsProxy};
use common::{free_port, Count, NewRow, TestEnv};
use serde_json::json;

struct TlsKafka {
    certs: Certificates,
    _broker: PrivateBroker,
    proxy: TlsProxy,
}

impl TlsKafka {
    async fn start() -> Self {
        let certs = Certificates::generate();
        let (broker_port, proxy_port) = (free_port(), free_port());
        let broker = PrivateBroker::start_advertising(broker_port, proxy_port).await;
        let (cert, key) = (certs.path("kafka.pem"), certs.path("kafka.key"));
        let proxy = TlsProxy::start(proxy_port, broker_port, &cert, &key).await;
        TlsKafka {
            certs,
            _broker: broker,
            proxy,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_over_tls_with_zstd() {
    let kafka = TlsKafka::start().await;
    let ca = kafka.certs.path("ca.pem");
    let tls = [
        ("security.protocol", "SSL"),
        ("ssl.ca.location", ca.as_str()),
    ];
    let topic = common::unique_name("tls");
    common::kafka::create_topic_with(&kafka.proxy.address(), &topic, 1, &tls).await;

    let env = TestEnv::new().await;
    let rows: Vec<NewRow> = (0..20)
        .map(|i| NewRow::new(&topic, Some("k"), json!({ "n": i })))
        .collect();
    env.insert(&rows).await;
    let mut relay = env.start_relay_with_brokers(
        &kafka.proxy.address(),
        &[
            "--kafka-option",
            "security.protocol=SSL",
            "--kafka-option",
            &format!("ssl.ca.location={ca}"),
            "--kafka-option",
            "compression.type=zstd",
        ],
    );
    relay.wait_ready().await;
    env.wait_for_status("published", Count::Exactly(20), Duration::from_secs(30))
        .await;

    let settings: Vec<(String, String)> = tls.map(|(k, v)| (k.to_owned(), v.to_owned())).into();
    let received = common::kafka::consume_until_with(
        &kafka.proxy.address(),
        &settings,
        &topic,
        Duration::from_secs(30),
        |received| received.len() >= 20,
    )
    .await;
    let payloads: Vec<String> = received.into_iter().filter_map(|m| m.payload).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert_eq!(payloads, expected, "read back through TLS, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_did_not_sign_the_broker_fails_start_up_with_a_tls_error() {
    let kafka = TlsKafka::start().await;
    let env = TestEnv::new().await;
    let mut relay = env.start_relay_with_brokers(
        &kafka.proxy.address(),
        &[
            "--kafka-option",
            "security.protocol=SSL",
            "--kafka-option",
            &format!("ssl.ca.location={}", kafka.certs.path("other-ca.pem")),
            // An untrusted certificate fails at once, not after this wait.
            "--kafka-startup-timeout-secs",
            "120",
        ],
    );
    let status = relay.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(1));
    let log = relay.log_text();
    let line = log.lines().last().unwrap_or_default();
    let expected = format!("error: TLS to Kafka at {} failed", kafka.proxy.address());
    assert!(line.starts_with(&expected), "{log}");
    assert!(line.contains("ssl.ca.location in --kafka-option"), "{line}");
    assert!(
        line.contains("SSL handshake failed") && line.contains("certificate verify failed"),
        "{line}"
    );
}
