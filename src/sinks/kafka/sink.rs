//! Kafka behind the sink seam: the [`Publisher`] is the sink, and a
//! [`ProducerLease`] is the channel one batch sends on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::message::check_topic;
use super::publisher::{ProducerLease, Publisher};
use crate::error::Result;
use crate::sinks::{BoxFuture, Channel, FailureReason, Message, Pending, Profile, Rejected, Sink};

/// How Kafka names things.
pub static KAFKA: Profile = Profile {
    service: "Kafka",
    destination: "topic",
    create: "create it",
    connection: "producer",
    unreachable: "kafka unreachable",
    outage: "no Kafka broker answers; rows stay pending until one does",
    missing_reason: FailureReason::UnknownTopic,
    grant_write: "grant it WRITE on the topic (an ACL)",
};

impl Sink for Publisher {
    fn profile(&self) -> &'static Profile {
        &KAFKA
    }

    fn check(&self, message: &Message) -> std::result::Result<(), Rejected> {
        check_topic(&message.destination)
    }

    fn channel(&self) -> BoxFuture<'_, Arc<dyn Channel>> {
        let lease: Arc<dyn Channel> = Arc::new(self.lease());
        Box::pin(std::future::ready(lease))
    }

    fn destination_exists<'a>(
        &'a self,
        destination: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Option<bool>> {
        Box::pin(self.topic_exists(destination, timeout))
    }

    fn probe(&self, timeout: Duration) -> BoxFuture<'_, std::result::Result<(), String>> {
        Box::pin(Publisher::probe(self, timeout))
    }

    fn unavailable_since(&self, since: Instant) -> bool {
        self.all_brokers_down_since(since)
    }

    fn check_reachable(&self, timeout: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(Publisher::check_reachable(self, timeout))
    }

    fn replace_if_fatal(&self) -> Result<Option<String>> {
        Publisher::replace_if_fatal(self)
    }

    fn reconnect(&self, generation: u64) -> Result<bool> {
        self.replace(generation)
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, std::result::Result<(), String>> {
        Box::pin(Publisher::flush(self, timeout))
    }
}

impl Channel for ProducerLease {
    fn generation(&self) -> u64 {
        self.generation
    }

    fn send(&self, message: Message, queue_wait: Duration) -> BoxFuture<'_, Pending> {
        Box::pin(Publisher::send(self, message, queue_wait))
    }
}
