//! A message's outcome, in words every sink shares: delivered, unconfirmed,
//! held back, or failed with a disposition and a reason.
//!
//! Guarantees: every failure has exactly one [`Disposition`] and one
//! [`FailureReason`]; reasons are one closed set over every sink, so they
//! are safe as metric label values and are all exported at 0.

use std::future::Future;
use std::pin::Pin;

/// A boxed future a sink hands back: the seam is object-safe, so the sink is
/// chosen at start-up.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a row was not published, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    MessageTooLarge,
    InvalidTopic,
    InvalidHeaders,
    UnknownTopic,
    NotAuthorized,
    BrokerUnavailable,
    Timeout,
    Unconfirmed,
    UnknownExchange,
    Unroutable,
    WrongType,
    NoStream,
    StreamFull,
    Other,
}

impl FailureReason {
    pub const ALL: [FailureReason; 14] = [
        FailureReason::MessageTooLarge,
        FailureReason::InvalidTopic,
        FailureReason::InvalidHeaders,
        FailureReason::UnknownTopic,
        FailureReason::NotAuthorized,
        FailureReason::BrokerUnavailable,
        FailureReason::Timeout,
        FailureReason::Unconfirmed,
        FailureReason::UnknownExchange,
        FailureReason::Unroutable,
        FailureReason::WrongType,
        FailureReason::NoStream,
        FailureReason::StreamFull,
        FailureReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::MessageTooLarge => "message_too_large",
            FailureReason::InvalidTopic => "invalid_topic",
            FailureReason::InvalidHeaders => "invalid_headers",
            FailureReason::UnknownTopic => "unknown_topic",
            FailureReason::NotAuthorized => "not_authorized",
            FailureReason::BrokerUnavailable => "broker_unavailable",
            FailureReason::Timeout => "timeout",
            FailureReason::Unconfirmed => "unconfirmed",
            FailureReason::UnknownExchange => "unknown_exchange",
            FailureReason::Unroutable => "unroutable",
            FailureReason::WrongType => "wrong_type",
            FailureReason::NoStream => "no_stream",
            FailureReason::StreamFull => "stream_full",
            FailureReason::Other => "other",
        }
    }
}

/// What a failure does to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// No retry can fix it: the row goes dead at once.
    Final,
    /// Count the attempt and retry after a backoff.
    Retry,
    /// The destination does not exist: retried like [`Disposition::Retry`],
    /// and the destination is looked up again before the row's next send.
    Missing,
    /// Possibly the whole service is unreachable. If a probe confirms it,
    /// the attempt does not count and the relay backs off as a whole; if the
    /// service answers, it is treated as [`Disposition::Retry`].
    Unavailable,
}

/// The outcome of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Acknowledged by the service: the row may be marked published.
    Delivered,
    /// Reported as persisted without proof enough to mark the row published
    /// (Kafka: an ack without an offset). Sent again, with its key behind it.
    Unconfirmed,
    /// Never sent: an earlier row of its key was refused before it was sent
    /// (in this batch, or in the batch in flight before it). It goes out
    /// with its key's next batch, behind that row; no attempt counts.
    HeldBack,
    Failed {
        disposition: Disposition,
        reason: FailureReason,
        message: String,
    },
}

impl Delivery {
    /// Failed in a way that may mean the service does not answer at all.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Delivery::Failed {
                disposition: Disposition::Unavailable,
                ..
            }
        )
    }
}

/// A message handed to a sink, or refused by it at once.
pub enum Pending {
    Sent(BoxFuture<'static, Delivery>),
    Refused(Delivery),
}

impl Pending {
    /// Wait for the message's own outcome.
    pub async fn outcome(self) -> Delivery {
        match self {
            Pending::Refused(failed) => failed,
            Pending::Sent(future) => future.await,
        }
    }
}

/// Why a message can never be sent, with the text for `last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: FailureReason,
    pub message: String,
}

impl From<Rejected> for Delivery {
    fn from(rejected: Rejected) -> Self {
        Delivery::Failed {
            disposition: Disposition::Final,
            reason: rejected.reason,
            message: rejected.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_labels_are_distinct() {
        let mut labels: Vec<_> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), FailureReason::ALL.len());
    }
}
