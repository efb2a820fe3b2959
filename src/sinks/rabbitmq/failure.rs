//! What a failed publish means for the row.
//!
//! Guarantees: every lapin error maps to one disposition and one reason of
//! the sink-neutral set: a connection or channel that is gone is the
//! service's (an outage, confirmed by a probe), a 404 on publish is a
//! missing exchange (the probe then fails too, so no attempt counts), a 403
//! is `not_authorized`, a returned message is `unroutable`.

use lapin::message::BasicReturnMessage;
use lapin::ErrorKind;

use crate::sinks::outcome::{Delivery, Disposition, FailureReason};

/// AMQP reply codes the relay tells apart.
const ACCESS_REFUSED: u16 = 403;
const NOT_FOUND: u16 = 404;

fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

/// The server closed with 404 (no such exchange or queue).
pub fn not_found(error: &lapin::Error) -> bool {
    reply_code(error) == Some(NOT_FOUND)
}

/// The server refused the login (403 while connecting).
pub fn login_refused(error: &lapin::Error) -> bool {
    reply_code(error) == Some(ACCESS_REFUSED) || error.to_string().contains("ACCESS_REFUSED")
}

/// The outcome of a publish that failed.
pub fn failed(error: &lapin::Error) -> Delivery {
    let (disposition, reason) = match reply_code(error) {
        Some(NOT_FOUND) => (Disposition::Unavailable, FailureReason::UnknownExchange),
        Some(ACCESS_REFUSED) => (Disposition::Retry, FailureReason::NotAuthorized),
        Some(_) => (Disposition::Retry, FailureReason::Other),
        None => (Disposition::Unavailable, FailureReason::BrokerUnavailable),
    };
    Delivery::Failed {
        disposition,
        reason,
        message: format!("rabbitmq: {error}"),
    }
}

/// The outcome of a message the broker returned: no queue took it.
pub fn returned(exchange: &str, routing_key: &str, back: &BasicReturnMessage) -> Delivery {
    let exchange = if exchange.is_empty() {
        "the default exchange".to_owned()
    } else {
        format!("exchange {exchange}")
    };
    Delivery::Failed {
        disposition: Disposition::Retry,
        reason: FailureReason::Unroutable,
        message: format!(
            "unroutable: no queue is bound to routing key {routing_key} on {exchange} ({} {}); declare and bind a queue for it",
            back.reply_code, back.reply_text
        ),
    }
}
