//! A sink-neutral [`Message`] as a Kafka record.
//!
//! Guarantees: key = the message key's bytes; value = the payload, or no
//! value (a tombstone) for a NULL payload; headers = the row's headers plus
//! `id` = the event id, and with CloudEvents the binary-mode `ce_*` headers
//! of CloudEvents' Kafka protocol binding, with `content-type`. A topic name
//! Kafka would refuse is rejected here, before anything is sent.

use std::time::UNIX_EPOCH;

use rdkafka::message::{Header, OwnedHeaders};

use crate::sinks::message::{Message, EVENT_ID_HEADER};
use crate::sinks::outcome::{FailureReason, Rejected};

/// Longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// Which time the Kafka record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RecordTimestamp {
    /// When the relay sends it (Kafka's default).
    #[default]
    #[value(alias = "send_time")]
    SendTime,
    /// The row's created_at, so consumers can measure end-to-end delay.
    #[value(alias = "created_at")]
    CreatedAt,
}

/// The record's headers.
pub fn headers(message: &Message) -> OwnedHeaders {
    let extra = if message.cloudevents.is_some() { 7 } else { 1 };
    let mut headers = OwnedHeaders::new_with_capacity(message.headers.len() + extra);
    for (key, value) in &message.headers {
        headers = headers.insert(header(key, value));
    }
    headers = headers.insert(header(EVENT_ID_HEADER, &message.id));
    for (key, value) in message.ce_headers() {
        headers = headers.insert(header(key, value));
    }
    headers
}

/// The record timestamp (ms since the epoch); `None` lets the producer
/// stamp the send time.
pub fn timestamp(message: &Message, which: RecordTimestamp) -> Option<i64> {
    match which {
        RecordTimestamp::SendTime => None,
        RecordTimestamp::CreatedAt => message
            .created_at
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok()),
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// Refuse a topic name Kafka would refuse.
pub fn check_topic(topic: &str) -> Result<(), Rejected> {
    let problem = if topic.is_empty() {
        Some("is empty (with --topic-template: a column it names is NULL)")
    } else if topic.len() > MAX_TOPIC_LEN {
        Some("is longer than 249 characters")
    } else if topic == "." || topic == ".." {
        Some("may not be \".\" or \"..\"")
    } else if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("may hold only ASCII letters, digits, '.', '_' and '-'")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Rejected {
            reason: FailureReason::InvalidTopic,
            message: format!("invalid topic name {topic:?}: a Kafka topic name {problem}"),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;
    use serde_json::json;

    use super::*;
    use crate::sinks::message::{prepare, test_row as row, CloudEvents, MessageFormat};

    fn header_pairs(headers: &OwnedHeaders) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn headers_carry_the_row_headers_and_the_event_id() {
        let message = prepare(
            &row("orders", json!({"trace": "t-1", "id": "spoofed"})),
            &MessageFormat::default(),
        )
        .unwrap();
        assert_eq!(
            header_pairs(&headers(&message)),
            vec![
                ("trace".to_owned(), "t-1".to_owned()),
                (
                    "id".to_owned(),
                    "3f1c0a7e-0000-4000-8000-000000000001".to_owned()
                ),
            ]
        );
        assert_eq!(timestamp(&message, RecordTimestamp::SendTime), None);
    }

    #[test]
    fn invalid_topic_names_are_rejected() {
        for topic in ["", ".", "..", "has space", "ümlaut", &"t".repeat(250)] {
            let rejected = check_topic(topic).unwrap_err();
            assert_eq!(rejected.reason, FailureReason::InvalidTopic, "{topic:?}");
        }
        assert!(check_topic("a.b_c-1").is_ok());
    }

    #[test]
    fn cloudevents_attributes_travel_as_ce_headers() {
        let mut event = row("orders", json!({}));
        event.event_type = Some("OrderCreated".into());
        event.created_at = UNIX_EPOCH + std::time::Duration::from_micros(1_764_312_243_123_456);
        let format = MessageFormat {
            cloudevents: Some(CloudEvents {
                source: "/shop".into(),
                content_type: None,
            }),
            ..MessageFormat::default()
        };
        let message = prepare(&event, &format).unwrap();
        let pairs = header_pairs(&headers(&message));
        for expected in [
            ("ce_specversion", "1.0"),
            ("ce_id", "3f1c0a7e-0000-4000-8000-000000000001"),
            ("ce_source", "/shop"),
            ("ce_type", "OrderCreated"),
            ("ce_time", "2025-11-28T06:44:03.123456Z"),
            ("content-type", "application/json"),
        ] {
            assert!(
                pairs.contains(&(expected.0.to_owned(), expected.1.to_owned())),
                "{expected:?} not in {pairs:?}"
            );
        }
        assert_eq!(
            timestamp(&message, RecordTimestamp::CreatedAt),
            Some(1_764_312_243_123)
        );
    }

    #[test]
    fn without_cloudevents_no_content_type_header_is_added() {
        let message = prepare(&row("orders", json!({})), &MessageFormat::default()).unwrap();
        let pairs = header_pairs(&headers(&message));
        assert!(pairs.iter().all(|(k, _)| k != "content-type"), "{pairs:?}");
    }
}
