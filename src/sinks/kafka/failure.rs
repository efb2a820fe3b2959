//! What a failed Kafka send means for the row.
//!
//! Guarantees: every librdkafka error maps to exactly one [`Disposition`]
//! and one [`FailureReason`] of the sink-neutral set.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::sinks::outcome::{Delivery, Disposition, FailureReason};

/// The outcome of a message librdkafka refused or failed.
pub fn failed(error: &KafkaError) -> Delivery {
    let (disposition, reason) = classify(error);
    Delivery::Failed {
        disposition,
        reason,
        message: format!("kafka: {error}"),
    }
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
            (Missing, FailureReason::UnknownTopic)
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
            (Disposition::Missing, FailureReason::UnknownTopic)
        );
    }
}
