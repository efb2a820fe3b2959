//! Which destinations exist, so that a row for a missing one fails at once
//! instead of waiting in the client for it to appear (Kafka: up to
//! `topic.metadata.propagation.max.ms`) while every other row of its batch
//! waits with it.
//!
//! Guarantees: a destination is looked up (one request) only until it is
//! seen to exist; a missing one is looked up again each time one of its
//! rows comes up, so creating it is noticed on the row's next attempt. When
//! the service does not answer, destinations count as existing: the send
//! then fails or succeeds as the sink decides, and outages are handled
//! there. A missing destination, and one the relay's user was refused, are
//! each said once.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use super::Sink;

/// How long one destination's lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationState {
    Exists,
    Missing,
}

/// Destinations seen to exist, those already reported missing, and those
/// the relay's user was refused writes to, each reported once.
#[derive(Default)]
pub struct KnownDestinations {
    existing: Mutex<HashSet<String>>,
    reported_missing: Mutex<HashSet<String>>,
    reported_denied: Mutex<HashSet<String>>,
}

impl KnownDestinations {
    /// Whether each of `destinations` exists, asking the sink about those
    /// not yet seen. Logs a missing one once (and once more if it comes back
    /// and goes again).
    pub async fn check(
        &self,
        sink: &dyn Sink,
        destinations: &HashSet<&str>,
    ) -> Vec<(String, DestinationState)> {
        let mut states = Vec::with_capacity(destinations.len());
        for destination in destinations {
            if lock(&self.existing).contains(*destination) {
                states.push((destination.to_string(), DestinationState::Exists));
                continue;
            }
            let state = match sink.destination_exists(destination, LOOKUP_TIMEOUT).await {
                Some(false) => DestinationState::Missing,
                Some(true) | None => DestinationState::Exists,
            };
            self.note(sink, destination, state);
            states.push((destination.to_string(), state));
        }
        states
    }

    fn note(&self, sink: &dyn Sink, topic: &str, state: DestinationState) {
        let noun = sink.profile().destination;
        let mut reported = lock(&self.reported_missing);
        match state {
            DestinationState::Exists => {
                lock(&self.existing).insert(topic.to_owned());
                if reported.remove(topic) {
                    tracing::info!(
                        topic,
                        "{noun} exists now; its rows go out on their next attempt"
                    );
                }
            }
            DestinationState::Missing => {
                if reported.insert(topic.to_owned()) {
                    tracing::warn!(
                        topic,
                        "{noun} does not exist; its rows wait (other {noun}s flow): {create}, then `outbox-relay requeue --topic {topic}` for rows already dead",
                        create = sink.profile().create
                    );
                }
            }
        }
    }

    /// Forget that `destination` exists (a send found it gone).
    pub fn forget(&self, destination: &str) {
        lock(&self.existing).remove(destination);
    }

    /// The service refused the relay's writes to `topic`: say so once.
    pub fn write_denied(&self, sink: &dyn Sink, topic: &str) {
        let profile = sink.profile();
        if lock(&self.reported_denied).insert(topic.to_owned()) {
            tracing::warn!(
                topic,
                "the relay's {} user may not write to this {}; its rows wait and retry (other {}s flow): {}",
                profile.service,
                profile.destination,
                profile.destination,
                profile.grant_write,
            );
        }
    }

    /// Rows of `destinations` were published: a refusal reported for one of
    /// them is over.
    pub fn writes_allowed<'a>(&self, destinations: impl Iterator<Item = &'a String>) {
        let mut reported = lock(&self.reported_denied);
        if reported.is_empty() {
            return;
        }
        for topic in destinations {
            if reported.remove(topic) {
                tracing::info!(topic, "the relay may write to this destination now");
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
