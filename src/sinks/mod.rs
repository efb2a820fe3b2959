//! The brokers the relay publishes to, behind one seam.
//!
//! The relay loop, the outcome rules, the telemetry and the outage logic
//! talk to a sink only through [`Sink`] and the [`Channel`] a batch sends
//! on, with sink-neutral [`Message`]s in and [`Delivery`] outcomes out. Each
//! sink is a folder here that maps them to its own protocol:
//!
//! - `kafka/`: librdkafka's idempotent producer, `acks=all`;
//! - `rabbitmq/`: AMQP 0-9-1 with publisher confirms and `mandatory`;
//! - `redis/`: an atomic add-unless-added script, to a stream or a list;
//! - `nats/`: JetStream publishes with `Nats-Msg-Id`, each on its PubAck.
//!
//! A new sink implements [`Sink`] and [`Channel`], adds its
//! [`SinkSettings`] variant, and joins the conformance suite
//! (`tests/conformance/`).

pub(crate) mod destinations;
pub(crate) mod kafka;
pub(crate) mod message;
pub(crate) mod nats;
pub(crate) mod outcome;
pub(crate) mod rabbitmq;
pub(crate) mod redis;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
pub use destinations::{DestinationState, KnownDestinations};
use kafka::KafkaOption;
pub use message::{prepare, CloudEvents, Message, MessageFormat};
pub use outcome::{BoxFuture, Delivery, Disposition, FailureReason, Pending, Rejected};

/// How a sink names things in the relay's logs, errors and `last_error`.
#[derive(Debug)]
pub struct Profile {
    /// The service, as a user calls it: "Kafka".
    pub service: &'static str,
    /// What the row's `topic` names there: "topic".
    pub destination: &'static str,
    /// How to make a missing destination exist: "create it".
    pub create: &'static str,
    /// The client object replaced after an outage: "producer".
    pub connection: &'static str,
    /// Readiness's reason while the service does not answer.
    pub unreachable: &'static str,
    /// The line logged once when an outage begins.
    pub outage: &'static str,
    /// The reason counted for a row whose destination does not exist.
    pub missing_reason: FailureReason,
    /// How to let the relay write to a destination it was refused.
    pub grant_write: &'static str,
}

impl Profile {
    /// The `last_error` of a row whose destination does not exist.
    pub fn missing_error(&self, destination: &str) -> String {
        format!(
            "{noun} {destination} does not exist; {create}, then `outbox-relay requeue --topic {destination}`",
            noun = self.destination,
            create = self.create
        )
    }

    /// The failure of a row whose destination does not exist: retried, and
    /// its destination looked up again before its next send.
    pub fn missing(&self, destination: &str) -> Delivery {
        Delivery::Failed {
            disposition: Disposition::Missing,
            reason: self.missing_reason,
            message: self.missing_error(destination),
        }
    }

    /// The `last_error` of a row the service refused the relay's user.
    pub fn denied_error(&self, destination: &str, cause: &str) -> String {
        format!(
            "the relay's {service} user may not write to {noun} {destination} ({cause}); {grant}",
            service = self.service,
            noun = self.destination,
            grant = self.grant_write
        )
    }
}

/// One broker the relay publishes to. Shared by every table's loop and the
/// monitors; object-safe, so the sink is chosen at start-up.
pub trait Sink: Send + Sync {
    /// How this sink names things.
    fn profile(&self) -> &'static Profile;

    /// This sink's own rules for a message: refuse one it can never take
    /// (a name the service would refuse), before anything is sent.
    fn check(&self, message: &Message) -> std::result::Result<(), Rejected>;

    /// The channel one batch sends all its messages on, kept until the batch
    /// is recorded: a reconnect never splits a batch across two
    /// connections, which could reorder a key.
    fn channel(&self) -> BoxFuture<'_, Arc<dyn Channel>>;

    /// Whether `destination` exists: `None` when the service did not answer.
    fn destination_exists<'a>(
        &'a self,
        destination: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Option<bool>>;

    /// Whether the service answers at all, so an outage is told apart from
    /// a row's failure. The error says why not.
    fn probe(&self, timeout: Duration) -> BoxFuture<'_, std::result::Result<(), String>>;

    /// Whether the service was seen down at some moment since `since`:
    /// failures of a batch sent then are the outage's.
    fn unavailable_since(&self, since: Instant) -> bool;

    /// At start-up: fail with one clear error unless the service answers
    /// within `timeout` and accepts the relay's credentials.
    fn check_reachable(&self, timeout: Duration) -> BoxFuture<'_, Result<()>>;

    /// Replace a connection that can send nothing more (a fatal error);
    /// returns that error.
    fn replace_if_fatal(&self) -> Result<Option<String>>;

    /// Start afresh with a new connection, unless the one of `generation`
    /// was already replaced (by another table's loop). Whether it replaced.
    fn reconnect(&self, generation: u64) -> Result<bool>;

    /// Wait for every message handed over to have its outcome, up to
    /// `timeout`. Dropping the sink afterwards closes it.
    fn flush(&self, timeout: Duration) -> BoxFuture<'_, std::result::Result<(), String>>;
}

/// The connection one batch's messages go out on.
pub trait Channel: Send + Sync {
    /// Which connection this is: each reconnect starts a new generation.
    fn generation(&self) -> u64;

    /// Hand one message to the service and return its pending outcome.
    /// Waits (up to `queue_wait`) while the client's queue is full.
    fn send(&self, message: Message, queue_wait: Duration) -> BoxFuture<'_, Pending>;
}

/// What opening a sink needs, one variant per sink.
#[derive(Debug, Clone)]
pub enum SinkSettings {
    Kafka {
        brokers: String,
        options: Vec<KafkaOption>,
        record_timestamp: kafka::RecordTimestamp,
    },
    RabbitMq {
        url: Box<rabbitmq::RabbitUrl>,
        exchange: String,
    },
    Redis(Box<redis::RedisSettings>),
    Nats(Box<nats::NatsSettings>),
}

/// Open the sink `settings` describe. Makes no connection yet.
pub fn open(settings: &SinkSettings) -> Result<Arc<dyn Sink>> {
    match settings {
        SinkSettings::Kafka {
            brokers,
            options,
            record_timestamp,
        } => Ok(Arc::new(kafka::Publisher::new(
            brokers,
            options,
            *record_timestamp,
        )?)),
        SinkSettings::RabbitMq { url, exchange } => Ok(Arc::new(rabbitmq::RabbitMq::new(
            (**url).clone(),
            exchange,
        )?)),
        SinkSettings::Redis(settings) => Ok(Arc::new(redis::Redis::new((**settings).clone())?)),
        SinkSettings::Nats(settings) => Ok(Arc::new(nats::Nats::new((**settings).clone())?)),
    }
}
