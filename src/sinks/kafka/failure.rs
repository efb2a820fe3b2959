//! What a failed send means for the row, and the bounded set of reasons
//! reported in metrics.
//!
//! Guarantees: every error maps to exactly one [`Disposition`] and one
//! [`FailureReason`]; reasons are a closed set, so they are safe as metric
//! label values.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

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
    Other,
}

impl FailureReason {
    pub const ALL: [FailureReason; 9] = [
        FailureReason::MessageTooLarge,
        FailureReason::InvalidTopic,
        FailureReason::InvalidHeaders,
        FailureReason::UnknownTopic,
        FailureReason::NotAuthorized,
        FailureReason::BrokerUnavailable,
        FailureReason::Timeout,
        FailureReason::Unconfirmed,
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
    /// Possibly the whole cluster is unreachable. If a probe confirms it, the
    /// attempt does not count and the relay backs off as a whole; if the
    /// cluster answers, it is treated as [`Disposition::Retry`].
    Unavailable,
}

/// Classify an error from `produce` or from a delivery report.
pub fn classify(error: &KafkaError) -> (Disposition, FailureReason) {
    use Disposition::*;
    use RDKafkaErrorCode as Code;
    let Some(code) = error.rdkafka_error_code() else {
        return (Retry, FailureReason::Other);
    };
    match code {
        Code::MessageSizeTooLarge | Code::MessageBatchTooLarge => {
            (Final, FailureReason::MessageTooLarge)
        }
        Code::InvalidTopic => (Final, FailureReason::InvalidTopic),
        Code::UnknownTopicOrPartition | Code::UnknownTopic | Code::UnknownPartition => {
            (Retry, FailureReason::UnknownTopic)
        }
        Code::TopicAuthorizationFailed
        | Code::ClusterAuthorizationFailed
        | Code::TransactionalIdAuthorizationFailed => (Retry, FailureReason::NotAuthorized),
        Code::MessageTimedOut | Code::RequestTimedOut | Code::OperationTimedOut => {
            (Unavailable, FailureReason::Timeout)
        }
        Code::AllBrokersDown
        | Code::BrokerTransportFailure
        | Code::NetworkException
        | Code::BrokerNotAvailable
        | Code::LeaderNotAvailable
        | Code::NotLeaderForPartition
        | Code::NotEnoughReplicas
        | Code::NotEnoughReplicasAfterAppend
        | Code::Resolve
        | Code::PurgeQueue
        | Code::PurgeInflight => (Unavailable, FailureReason::BrokerUnavailable),
        _ => (Retry, FailureReason::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn production(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    #[test]
    fn errors_no_retry_can_fix_are_final() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidTopic,
        ] {
            assert_eq!(
                classify(&production(code)).0,
                Disposition::Final,
                "{code:?}"
            );
        }
    }

    #[test]
    fn outage_errors_do_not_count_as_attempts_until_confirmed() {
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
        ] {
            assert_eq!(
                classify(&production(code)).0,
                Disposition::Unavailable,
                "{code:?}"
            );
        }
    }

    #[test]
    fn a_missing_topic_is_retried_because_it_can_be_created() {
        assert_eq!(
            classify(&production(RDKafkaErrorCode::UnknownTopicOrPartition)),
            (Disposition::Retry, FailureReason::UnknownTopic)
        );
    }

    #[test]
    fn reason_labels_are_distinct() {
        let mut labels: Vec<_> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), FailureReason::ALL.len());
    }
}
