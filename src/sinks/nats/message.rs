//! What one message becomes in NATS: a JetStream publish to the subject the
//! row's `topic` names, with the event id as `Nats-Msg-Id` (so the stream
//! drops a second copy within its duplicate window) and as `id`.
//!
//! Guarantees: headers are `Nats-Msg-Id`, `id`, `key` (when not null), the
//! row's headers, then the CloudEvents ones (`ce_*`, Kafka's binding names)
//! when on; a subject NATS would refuse, or one with a wildcard (which
//! cannot be published to), is rejected before anything is sent.

use async_nats::HeaderMap;

use crate::sinks::message::{Message, EVENT_ID_HEADER};
use crate::sinks::outcome::{FailureReason, Rejected};

/// The header JetStream deduplicates on.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// The publish's headers.
pub fn headers(message: &Message) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID_HEADER, message.id.as_str());
    headers.insert(EVENT_ID_HEADER, message.id.as_str());
    if let Some(key) = &message.key {
        headers.insert("key", String::from_utf8_lossy(key).as_ref());
    }
    for (name, value) in &message.headers {
        headers.append(name.as_str(), value.as_str());
    }
    for (name, value) in message.ce_headers() {
        headers.insert(name, value);
    }
    headers
}

/// Refuse a subject NATS would refuse: dot-separated tokens, none empty,
/// no whitespace, and no `*` or `>` token (wildcards subscribe; they cannot
/// be published to).
pub fn check_subject(subject: &str) -> Result<(), Rejected> {
    let invalid = |why: &str| {
        Err(Rejected {
            reason: FailureReason::InvalidTopic,
            message: format!("invalid subject {subject:?}: {why}"),
        })
    };
    if subject.is_empty() {
        return invalid("it is empty");
    }
    if subject.chars().any(char::is_whitespace) {
        return invalid("a subject has no whitespace");
    }
    for token in subject.split('.') {
        match token {
            "" => return invalid("a subject is tokens separated by single dots, none empty"),
            "*" | ">" => return invalid("a wildcard token cannot be published to"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sinks::message::{prepare, test_row, MessageFormat};

    #[test]
    fn the_event_id_is_the_message_id_and_the_id_header() {
        let message = prepare(
            &test_row("orders.created", json!({"trace": "t1"})),
            &MessageFormat::default(),
        )
        .unwrap();
        let headers = headers(&message);
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(get(MSG_ID_HEADER).as_deref(), Some(message.id.as_str()));
        assert_eq!(get("id").as_deref(), Some(message.id.as_str()));
        assert_eq!(get("key").as_deref(), Some("k"));
        assert_eq!(get("trace").as_deref(), Some("t1"));
    }

    #[test]
    fn subjects_nats_would_refuse_are_rejected() {
        for subject in ["", "a..b", ".a", "a.", "has space", "a.*", "a.>", ">"] {
            assert!(check_subject(subject).is_err(), "{subject:?}");
        }
        for subject in ["orders", "orders.created", "orders.eu-west.v1", "a_b:c"] {
            assert!(check_subject(subject).is_ok(), "{subject:?}");
        }
    }
}
