//! What a Redis error means for the row.
//!
//! Guarantees: every error maps to one disposition and one reason of the
//! sink-neutral set. A Redis that does not answer or refuses writes as a
//! whole (`OOM`, `READONLY` on a replica, `MASTERDOWN`, `LOADING`, `BUSY`)
//! is the service's: an outage the probe confirms, which counts no attempt.
//! `WRONGTYPE` (the key holds another type) is the row's and final; `NOPERM`
//! (an ACL) is retried as `not_authorized`.

use crate::sinks::outcome::{Delivery, Disposition, FailureReason};

/// Error codes that mean "this Redis takes no writes now", whatever the row.
const REFUSES_WRITES: [&str; 6] = [
    "OOM",
    "READONLY",
    "MASTERDOWN",
    "LOADING",
    "BUSY",
    "NOREPLICAS",
];

/// The outcome of a command Redis answered with error `code` and `text`.
pub fn refused(code: &str, text: &str, destination: &str) -> Delivery {
    let message = format!("redis: {code} {text}");
    let (disposition, reason, message) = match code {
        "WRONGTYPE" => (
            Disposition::Final,
            FailureReason::WrongType,
            format!("{message}; key {destination} holds another type: delete or rename it, then `outbox-relay requeue --topic {destination}`"),
        ),
        "NOPERM" => (
            Disposition::Retry,
            FailureReason::NotAuthorized,
            format!("{message}; {}", super::sink::GRANT_WRITE),
        ),
        code if REFUSES_WRITES.contains(&code) => (
            Disposition::Unavailable,
            FailureReason::BrokerUnavailable,
            message,
        ),
        _ => (Disposition::Retry, FailureReason::Other, message),
    };
    Delivery::Failed {
        disposition,
        reason,
        message,
    }
}

/// Whether an error code means Redis takes no writes now.
pub fn refuses_writes(code: &str) -> bool {
    REFUSES_WRITES.contains(&code)
}

/// One line for a Redis error: `CODE detail` as the server said it, or the
/// client's error.
pub fn describe(error: &redis::RedisError) -> String {
    match error.code() {
        Some(code) => format!("{code} {}", error.detail().unwrap_or_default()),
        None => error.to_string(),
    }
}

/// The outcome of a send whose connection failed or timed out.
pub fn lost(error: &redis::RedisError) -> Delivery {
    if let Some(code) = error.code() {
        return refused(code, error.detail().unwrap_or_default(), "");
    }
    let reason = if error.is_timeout() {
        FailureReason::Timeout
    } else {
        FailureReason::BrokerUnavailable
    };
    Delivery::Failed {
        disposition: Disposition::Unavailable,
        reason,
        message: format!("redis: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disposition(delivery: &Delivery) -> (Disposition, FailureReason) {
        match delivery {
            Delivery::Failed {
                disposition,
                reason,
                ..
            } => (*disposition, *reason),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_of_another_type_is_the_rows_and_final() {
        let delivery = refused("WRONGTYPE", "Operation against a key", "orders");
        assert_eq!(
            disposition(&delivery),
            (Disposition::Final, FailureReason::WrongType)
        );
        let Delivery::Failed { message, .. } = delivery else {
            unreachable!()
        };
        assert!(message.starts_with("redis: WRONGTYPE"), "{message}");
        assert!(message.contains("requeue --topic orders"), "{message}");
    }

    #[test]
    fn a_redis_refusing_writes_is_an_outage() {
        for code in ["OOM", "READONLY", "MASTERDOWN", "LOADING", "BUSY"] {
            assert_eq!(
                disposition(&refused(code, "x", "t")).0,
                Disposition::Unavailable,
                "{code}"
            );
        }
        assert_eq!(
            disposition(&refused("NOPERM", "x", "t")),
            (Disposition::Retry, FailureReason::NotAuthorized)
        );
        assert_eq!(
            disposition(&refused("ERR", "x", "t")),
            (Disposition::Retry, FailureReason::Other)
        );
    }
}
