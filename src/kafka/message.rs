//! Building the Kafka message for an outbox row.
//!
//! Guarantees: key = `message_key` bytes; value = compact JSON text of the
//! payload, or no value (a tombstone) for a NULL payload; headers = the row's
//! headers plus `id` = the event id. A row that can never become a valid
//! message (bad topic name, headers that are not an object of strings) is
//! rejected here with a reason, before anything is sent.

use rdkafka::message::{Header, OwnedHeaders};

use super::FailureReason;
use crate::db::OutboxRow;

/// Header carrying the stable event id (the Debezium outbox convention).
pub const EVENT_ID_HEADER: &str = "id";

/// Longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// A row ready to hand to the producer.
#[derive(Debug)]
pub struct PreparedMessage {
    pub payload: Option<String>,
    pub headers: OwnedHeaders,
}

/// Why a row can never be sent, with a message for `last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: FailureReason,
    pub message: String,
}

/// Validate a row and build its payload and headers.
pub fn prepare(row: &OutboxRow) -> Result<PreparedMessage, Rejected> {
    check_topic(&row.topic)?;
    let headers = build_headers(&row.headers, &row.event_id)?;
    Ok(PreparedMessage {
        payload: row.payload.as_deref().map(compact_json),
        headers,
    })
}

fn check_topic(topic: &str) -> Result<(), Rejected> {
    let problem = if topic.is_empty() {
        Some("is empty")
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

fn build_headers(headers: &serde_json::Value, event_id: &str) -> Result<OwnedHeaders, Rejected> {
    let invalid = |message: String| Rejected {
        reason: FailureReason::InvalidHeaders,
        message,
    };
    let object = headers.as_object().ok_or_else(|| {
        invalid(format!(
            "invalid headers: expected a JSON object of string values, got {}",
            json_kind(headers)
        ))
    })?;
    let mut owned = OwnedHeaders::new_with_capacity(object.len() + 1);
    for (name, value) in object {
        if name == EVENT_ID_HEADER {
            // The relay's own `id` is the one consumers dedup on.
            continue;
        }
        let value = value.as_str().ok_or_else(|| {
            invalid(format!(
                "invalid headers: header {name:?} is {}, but header values must be strings",
                json_kind(value)
            ))
        })?;
        owned = owned.insert(Header {
            key: name,
            value: Some(value),
        });
    }
    Ok(owned.insert(Header {
        key: EVENT_ID_HEADER,
        value: Some(event_id),
    }))
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Remove the whitespace PostgreSQL puts between jsonb tokens, keeping key
/// order and string contents exactly as stored.
pub fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use rdkafka::message::Headers;
    use serde_json::json;

    use super::*;

    fn row(topic: &str, headers: serde_json::Value) -> OutboxRow {
        OutboxRow {
            id: 1,
            event_id: "3f1c0a7e-0000-4000-8000-000000000001".into(),
            topic: topic.into(),
            message_key: Some("k".into()),
            payload: Some(r#"{"a": 1, "b": [1, 2]}"#.into()),
            headers,
            attempts: 0,
            created_at: SystemTime::now(),
        }
    }

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
    fn compacting_keeps_strings_and_key_order() {
        assert_eq!(
            compact_json(r#"{"z": "a b", "a": [1, 2], "q": "say \"hi\" , ok"}"#),
            r#"{"z":"a b","a":[1,2],"q":"say \"hi\" , ok"}"#
        );
        assert_eq!(compact_json(r#""trailing \\" "#), r#""trailing \\""#);
        assert_eq!(compact_json("null"), "null");
    }

    #[test]
    fn headers_carry_the_row_headers_and_the_event_id() {
        let prepared = prepare(&row("orders", json!({"trace": "t-1", "id": "spoofed"}))).unwrap();
        assert_eq!(
            header_pairs(&prepared.headers),
            vec![
                ("trace".to_owned(), "t-1".to_owned()),
                (
                    "id".to_owned(),
                    "3f1c0a7e-0000-4000-8000-000000000001".to_owned()
                ),
            ]
        );
        assert_eq!(prepared.payload.as_deref(), Some(r#"{"a":1,"b":[1,2]}"#));
    }

    #[test]
    fn a_null_payload_is_a_tombstone() {
        let mut tombstone = row("orders", json!({}));
        tombstone.payload = None;
        assert_eq!(prepare(&tombstone).unwrap().payload, None);
    }

    #[test]
    fn headers_that_are_not_an_object_of_strings_are_rejected() {
        for headers in [
            json!([1]),
            json!({"n": 1}),
            json!({"o": {"x": "y"}}),
            json!("s"),
        ] {
            let rejected = prepare(&row("orders", headers.clone())).unwrap_err();
            assert_eq!(rejected.reason, FailureReason::InvalidHeaders, "{headers}");
            assert!(
                rejected.message.starts_with("invalid headers"),
                "{}",
                rejected.message
            );
        }
    }

    #[test]
    fn invalid_topic_names_are_rejected() {
        for topic in ["", ".", "..", "has space", "ümlaut", &"t".repeat(250)] {
            let rejected = prepare(&row(topic, json!({}))).unwrap_err();
            assert_eq!(rejected.reason, FailureReason::InvalidTopic, "{topic:?}");
        }
        assert!(prepare(&row("a.b_c-1", json!({}))).is_ok());
    }
}
