//! The Kafka sink: outbox messages as Kafka records, produced by
//! librdkafka's idempotent producer with `acks=all`, failures classified
//! into the sink-neutral dispositions, SASL and TLS checked at start-up.

mod admin;
pub mod checkpoint;
mod defaults;
mod failure;
mod message;
mod options;
mod publisher;
mod security;
mod sink;
mod transactional;

pub use defaults::producer_defaults_help;
pub use message::RecordTimestamp;
pub use options::{read_properties, KafkaOption, OptionOrigin};
pub use publisher::Publisher;
#[cfg(test)]
pub use sink::KAFKA;
pub use transactional::{
    probe_transactions, Commit, TransactionChannel, Transactional, TransactionalSettings,
};
