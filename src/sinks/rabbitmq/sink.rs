//! RabbitMQ behind the sink seam: [`RabbitMq`] is the sink, a
//! [`RabbitChannel`] the channel one batch publishes on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::message::check_routing_key;
use super::publisher::{RabbitChannel, RabbitMq};
use crate::error::Result;
use crate::sinks::{BoxFuture, Channel, FailureReason, Message, Pending, Profile, Rejected, Sink};

/// How RabbitMQ names things when rows go to the default exchange, whose
/// routing keys are queue names.
pub static RABBITMQ_QUEUES: Profile = Profile {
    service: "RabbitMQ",
    destination: "queue",
    create: "create it",
    connection: "connection",
    unreachable: "rabbitmq unreachable",
    outage: "no RabbitMQ broker answers; rows stay pending until one does",
    missing_reason: FailureReason::Unroutable,
    grant_write: "grant the user write permission on the exchange (rabbitmqctl set_permissions)",
};

/// How RabbitMQ names things with a named exchange.
pub static RABBITMQ_ROUTING_KEYS: Profile = Profile {
    destination: "routing key",
    ..RABBITMQ_QUEUES
};

impl Sink for RabbitMq {
    fn profile(&self) -> &'static Profile {
        if self.exchange().is_empty() {
            &RABBITMQ_QUEUES
        } else {
            &RABBITMQ_ROUTING_KEYS
        }
    }

    fn check(&self, message: &Message) -> std::result::Result<(), Rejected> {
        check_routing_key(&message.destination)
    }

    fn channel(&self) -> BoxFuture<'_, Arc<dyn Channel>> {
        Box::pin(async move { RabbitMq::channel(self).await as Arc<dyn Channel> })
    }

    fn destination_exists<'a>(
        &'a self,
        destination: &'a str,
        _timeout: Duration,
    ) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async move {
            // A named exchange routes by its bindings: an unroutable key is
            // found by its returned message, not looked up.
            if self.exchange().is_empty() {
                self.queue_exists(destination).await
            } else {
                Some(true)
            }
        })
    }

    fn probe(&self, _timeout: Duration) -> BoxFuture<'_, std::result::Result<(), String>> {
        Box::pin(RabbitMq::probe(self))
    }

    fn unavailable_since(&self, since: Instant) -> bool {
        RabbitMq::unavailable_since(self, since)
    }

    fn check_reachable(&self, timeout: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(RabbitMq::check_reachable(self, timeout))
    }

    fn replace_if_fatal(&self) -> Result<Option<String>> {
        Ok(None)
    }

    fn reconnect(&self, generation: u64) -> Result<bool> {
        Ok(RabbitMq::reconnect(self, generation))
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, std::result::Result<(), String>> {
        Box::pin(RabbitMq::flush(self, timeout))
    }
}

impl Channel for RabbitChannel {
    fn generation(&self) -> u64 {
        RabbitChannel::generation(self)
    }

    fn send(&self, message: Message, _queue_wait: Duration) -> BoxFuture<'_, Pending> {
        Box::pin(RabbitChannel::send(self, message))
    }
}
