//! Kafka: turning outbox rows into messages, producing them, and deciding
//! what a failure means.

mod defaults;
mod failure;
mod message;
mod options;
mod publisher;
mod security;
mod topics;

pub use defaults::producer_defaults_help;
pub use failure::{Disposition, FailureReason};
pub use message::{prepare, CloudEvents, MessageFormat, RecordTimestamp};
pub use options::read_properties;
pub use publisher::{Delivery, PendingDelivery, ProducerLease, Publisher};
pub use topics::{missing_topic_error, not_authorized_error, KnownTopics, TopicState};
