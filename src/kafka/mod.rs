//! Kafka: turning outbox rows into messages, producing them, and deciding
//! what a failure means.

mod failure;
mod message;
mod publisher;

pub use failure::{classify, Disposition, FailureReason};
pub use message::{compact_json, prepare, PreparedMessage, Rejected, EVENT_ID_HEADER};
pub use publisher::{Delivery, PendingDelivery, Publisher};
