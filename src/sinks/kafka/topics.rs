//! Which topics exist, so that a row for a missing topic fails at once
//! instead of waiting in librdkafka for the topic to appear (up to
//! `topic.metadata.propagation.max.ms`) while every other row of its batch
//! waits with it.
//!
//! Guarantees: a topic is looked up (one metadata request) only until it is
//! seen to exist; a missing topic is looked up again each time one of its
//! rows comes up, so creating it is noticed on the row's next attempt. When
//! the cluster does not answer, topics count as existing: the send then
//! fails or succeeds as librdkafka decides, and outages are handled there.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use super::Publisher;

/// How long one topic's metadata request may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer for one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    Exists,
    Missing,
}

/// Topics seen to exist, topics already reported missing, and topics the
/// relay's user was refused writes to (an ACL), each reported once.
#[derive(Default)]
pub struct KnownTopics {
    existing: Mutex<HashSet<String>>,
    reported_missing: Mutex<HashSet<String>>,
    reported_denied: Mutex<HashSet<String>>,
}

impl KnownTopics {
    /// Whether each of `topics` exists, asking the cluster about those not
    /// yet seen. Logs a missing topic once (and once more if it comes back
    /// and goes again).
    pub async fn check(
        &self,
        publisher: &Publisher,
        topics: &HashSet<&str>,
    ) -> Vec<(String, TopicState)> {
        let mut states = Vec::with_capacity(topics.len());
        for topic in topics {
            if lock(&self.existing).contains(*topic) {
                states.push((topic.to_string(), TopicState::Exists));
                continue;
            }
            let state = match publisher.topic_exists(topic, LOOKUP_TIMEOUT).await {
                Some(false) => TopicState::Missing,
                Some(true) | None => TopicState::Exists,
            };
            self.note(topic, state);
            states.push((topic.to_string(), state));
        }
        states
    }

    fn note(&self, topic: &str, state: TopicState) {
        let mut reported = lock(&self.reported_missing);
        match state {
            TopicState::Exists => {
                lock(&self.existing).insert(topic.to_owned());
                if reported.remove(topic) {
                    tracing::info!(
                        topic,
                        "topic exists now; its rows go out on their next attempt"
                    );
                }
            }
            TopicState::Missing => {
                if reported.insert(topic.to_owned()) {
                    tracing::warn!(
                        topic,
                        "topic does not exist; its rows wait (other topics flow): create it, then `outbox-relay requeue --topic {topic}` for rows already dead"
                    );
                }
            }
        }
    }

    /// Forget that `topic` exists (a send found it gone).
    pub fn forget(&self, topic: &str) {
        lock(&self.existing).remove(topic);
    }

    /// The brokers refused the relay's writes to `topic`: say so once.
    pub fn write_denied(&self, topic: &str) {
        if lock(&self.reported_denied).insert(topic.to_owned()) {
            tracing::warn!(
                topic,
                "the relay's Kafka user may not write to this topic; its rows wait and retry (other topics flow): grant the user WRITE on it (an ACL)"
            );
        }
    }

    /// Rows of `topics` were published: a refusal reported for one of them
    /// is over.
    pub fn writes_allowed<'a>(&self, topics: impl Iterator<Item = &'a String>) {
        let mut reported = lock(&self.reported_denied);
        if reported.is_empty() {
            return;
        }
        for topic in topics {
            if reported.remove(topic) {
                tracing::info!(topic, "the relay may write to this topic now");
            }
        }
    }
}

/// The `last_error` of a row whose topic the relay's user may not write.
pub fn not_authorized_error(topic: &str, cause: &str) -> String {
    format!("the relay's Kafka user may not write to topic {topic} ({cause}); grant it WRITE on the topic (an ACL)")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `last_error` of a row whose topic does not exist.
pub fn missing_topic_error(topic: &str) -> String {
    format!("topic {topic} does not exist; create it, then `outbox-relay requeue --topic {topic}`")
}
