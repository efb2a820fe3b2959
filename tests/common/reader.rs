//! The one Kafka consumer of the tests, the benchmark and `tail-topic`: reads
//! every partition of a topic from the beginning, as a consumer outside the
//! relay sees it. Self-contained (rdkafka only), so `examples/` can include
//! it too.

use std::time::{Duration, SystemTime};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// A message as a consumer outside the relay sees it.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// The value as text (lossy for bytes that are not UTF-8).
    pub payload: Option<String>,
    pub headers: Vec<(String, String)>,
    /// When the consumer got it.
    pub received_at: SystemTime,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The event id the relay attaches as header `id`.
    pub fn event_id(&self) -> &str {
        self.header("id")
            .expect("every message carries an id header")
    }
}

/// Reads one topic from the beginning of every partition.
pub struct TopicReader {
    consumer: BaseConsumer,
}

impl TopicReader {
    /// `settings` are extra librdkafka consumer settings (e.g. fetch timing).
    pub fn open(brokers: &str, topic: &str, settings: &[(&str, &str)]) -> Result<Self, KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("reader-{}", fastrand::u64(..)))
            .set("enable.auto.commit", "false");
        for (key, value) in settings {
            config.set(*key, *value);
        }
        let consumer: BaseConsumer = config.create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut assignment = TopicPartitionList::new();
        for partition in metadata.topics()[0].partitions() {
            assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        Ok(TopicReader { consumer })
    }

    /// The next message, or `None` if none came within `wait`.
    pub fn next(&self, wait: Duration) -> Result<Option<Received>, KafkaError> {
        let Some(result) = self.consumer.poll(wait) else {
            return Ok(None);
        };
        let message = result?;
        let received_at = SystemTime::now();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), text(h.value.unwrap_or_default())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Received {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(text),
            payload: message.payload().map(text),
            headers,
            received_at,
        }))
    }
}
