//! What a failed JetStream publish means for the row.
//!
//! Guarantees: every error maps to one disposition and one reason of the
//! sink-neutral set. No stream capturing the subject ("no responders") is
//! `no_stream`, retried like a missing Kafka topic (the key waits, other
//! subjects flow); a stream at its limits with `discard new` is
//! `stream_full`, retried with backoff; a timeout or a lost connection is
//! the service's (an outage, confirmed by the probe); a message over the
//! server's `max_payload` is final.

use std::error::Error as _;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::ErrorCode;

use crate::sinks::outcome::{Delivery, Disposition, FailureReason};

/// The outcome of a publish that failed, to `subject`.
pub fn failed(error: &PublishError, subject: &str) -> Delivery {
    let (disposition, reason, message) = match error.kind() {
        PublishErrorKind::StreamNotFound => {
            return super::sink::NATS.missing(subject);
        }
        PublishErrorKind::TimedOut => (
            Disposition::Unavailable,
            FailureReason::Timeout,
            "nats: no acknowledgement from JetStream in time".to_owned(),
        ),
        PublishErrorKind::BrokenPipe => (
            Disposition::Unavailable,
            FailureReason::BrokerUnavailable,
            "nats: the connection was lost before the acknowledgement".to_owned(),
        ),
        PublishErrorKind::MaxPayloadExceeded => (
            Disposition::Final,
            FailureReason::MessageTooLarge,
            format!("nats: {error}"),
        ),
        _ => classify_refusal(error),
    };
    Delivery::Failed {
        disposition,
        reason,
        message,
    }
}

/// A publish the stream answered with an error.
fn classify_refusal(error: &PublishError) -> (Disposition, FailureReason, String) {
    let refusal = error
        .source()
        .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>());
    let text = refusal.map_or_else(|| error.to_string(), ToString::to_string);
    let message = format!("nats: {text}");
    match refusal.map(async_nats::jetstream::Error::error_code) {
        Some(ErrorCode::STREAM_STORE_FAILED) if text.contains("maximum") => (
            Disposition::Retry,
            FailureReason::StreamFull,
            format!("{message}; the stream is at its limits with discard new: raise them, or let consumers make room"),
        ),
        Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM | ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM) => {
            (Disposition::Final, FailureReason::MessageTooLarge, message)
        }
        _ if error.kind() == PublishErrorKind::Other && refusal.is_none() => {
            (Disposition::Unavailable, FailureReason::BrokerUnavailable, message)
        }
        _ => (Disposition::Retry, FailureReason::Other, message),
    }
}
