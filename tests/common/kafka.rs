//! Topics for a test, and reading them back with the one consumer
//! ([`super::TopicReader`]).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use super::{Received, TopicReader};

pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    create_topic_with(brokers, topic, partitions, &[]).await;
}

/// [`create_topic`] with extra client settings (e.g. TLS).
pub async fn create_topic_with(
    brokers: &str,
    topic: &str,
    partitions: i32,
    settings: &[(&str, &str)],
) {
    let results = admin_client(brokers, settings)
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &admin_options(),
        )
        .await
        .expect("create topic");
    for result in results {
        result.expect("topic created");
    }
}

pub async fn delete_topic(brokers: &str, topic: &str) {
    let results = admin_client(brokers, &[])
        .delete_topics(&[topic], &admin_options())
        .await
        .expect("delete topic");
    for result in results {
        result.expect("topic deleted");
    }
}

fn admin_client(brokers: &str, settings: &[(&str, &str)]) -> AdminClient<DefaultClientContext> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in settings {
        config.set(*key, *value);
    }
    config.create().expect("admin client")
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

/// Read `topic` from the beginning until `done` says enough, or `timeout`.
pub async fn consume_until(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    done: impl FnMut(&[Received]) -> bool + Send + 'static,
) -> Vec<Received> {
    consume_until_with(brokers, &[], topic, timeout, done).await
}

/// [`consume_until`] with extra consumer settings (e.g. TLS).
pub async fn consume_until_with(
    brokers: &str,
    settings: &[(String, String)],
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Received]) -> bool + Send + 'static,
) -> Vec<Received> {
    let brokers = brokers.to_owned();
    let topic = topic.to_owned();
    let settings = settings.to_vec();
    tokio::task::spawn_blocking(move || {
        let settings: Vec<(&str, &str)> = settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let reader = TopicReader::open(&brokers, &topic, &settings).expect("consumer");
        let deadline = Instant::now() + timeout;
        let mut received = Vec::new();
        while !done(&received) && Instant::now() < deadline {
            if let Some(message) = reader.next(Duration::from_millis(100)).expect("consume") {
                received.push(message);
            }
        }
        received
    })
    .await
    .expect("consumer thread")
}

/// Read until every id in `expected` was seen at least once.
pub async fn consume_event_ids(
    brokers: &str,
    topic: &str,
    expected: &[String],
    timeout: Duration,
) -> Vec<Received> {
    consume_event_ids_with(brokers, &[], topic, expected, timeout).await
}

/// [`consume_event_ids`] with extra consumer settings (e.g. TLS).
pub async fn consume_event_ids_with(
    brokers: &str,
    settings: &[(String, String)],
    topic: &str,
    expected: &[String],
    timeout: Duration,
) -> Vec<Received> {
    let mut missing: HashSet<String> = expected.iter().cloned().collect();
    let mut checked = 0;
    consume_until_with(brokers, settings, topic, timeout, move |received| {
        for message in &received[checked..] {
            missing.remove(message.event_id());
        }
        checked = received.len();
        missing.is_empty()
    })
    .await
}
