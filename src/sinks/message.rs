//! The message every sink is handed, built from an outbox row: sink-neutral
//! (id, destination, key, payload bytes, content type, headers, time and
//! the CloudEvents attributes); each sink maps it to its own protocol.
//!
//! Guarantees: payload = compact JSON text of a json/jsonb payload, the
//! bytes of a bytea or text payload, or none for a NULL payload; headers =
//! the row's headers, which must be a JSON object of strings, less any `id`
//! (the relay's event id is the one consumers dedup on). A row whose headers
//! are not such an object is rejected here, before anything is sent.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use super::outcome::{FailureReason, Rejected};
use crate::source::layout::PayloadKind;
use crate::source::OutboxRow;

/// Header (or property) carrying the stable event id (the Debezium outbox
/// convention).
pub const EVENT_ID_HEADER: &str = "id";

/// One outbox row as a sink-neutral message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The event id consumers dedup on.
    pub id: String,
    /// The row's `topic`: a Kafka topic, a routing key, a subject.
    pub destination: String,
    pub key: Option<Vec<u8>>,
    /// `None` for a NULL payload (a Kafka tombstone).
    pub payload: Option<Vec<u8>>,
    /// `application/json` for json and jsonb payloads; for bytea and text,
    /// the configured CloudEvents content type, if any.
    pub content_type: Option<Cow<'static, str>>,
    /// The row's headers, in the order stored, without `id`.
    pub headers: Vec<(String, String)>,
    /// The row's `created_at`.
    pub created_at: SystemTime,
    /// What the payload column holds.
    pub kind: PayloadKind,
    /// Set when CloudEvents are on: each sink writes them as its protocol
    /// binding says.
    pub cloudevents: Option<CloudEventAttributes>,
}

/// The CloudEvents attributes of one message (`id` is [`Message::id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEventAttributes {
    pub source: String,
    /// The row's event type, or its destination when it has none.
    pub event_type: String,
    /// `created_at` in RFC 3339.
    pub time: String,
}

/// CloudEvents in binary mode: the attributes travel as headers (named as
/// each sink's protocol binding says) and the body is the event data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvents {
    pub source: String,
    /// `content-type` for bytea and text payloads (JSON payloads always
    /// say application/json).
    pub content_type: Option<String>,
}

/// How a table's rows become messages, beyond the row itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFormat {
    pub payload: PayloadKind,
    pub cloudevents: Option<CloudEvents>,
}

impl Default for MessageFormat {
    fn default() -> Self {
        MessageFormat {
            payload: PayloadKind::Json,
            cloudevents: None,
        }
    }
}

impl Message {
    /// The CloudEvents attributes as binary-mode headers named as the Kafka
    /// protocol binding names them (`ce_*`, and `content-type`), for sinks
    /// whose messages carry string headers; empty without CloudEvents.
    pub fn ce_headers(&self) -> Vec<(&'static str, &str)> {
        let Some(attributes) = &self.cloudevents else {
            return Vec::new();
        };
        let mut pairs = vec![
            ("ce_specversion", "1.0"),
            ("ce_id", self.id.as_str()),
            ("ce_source", attributes.source.as_str()),
            ("ce_type", attributes.event_type.as_str()),
            ("ce_time", attributes.time.as_str()),
        ];
        if let Some(content_type) = &self.content_type {
            pairs.push(("content-type", content_type));
        }
        pairs
    }
}

/// Build the message for `row`, or say why it can never be sent.
pub fn prepare(row: &OutboxRow, format: &MessageFormat) -> Result<Message, Rejected> {
    let headers = row_headers(&row.headers)?;
    let payload = match (format.payload, row.payload.as_deref()) {
        (PayloadKind::Json, Some(json)) => Some(compact_json_bytes(json)),
        (_, payload) => payload.map(<[u8]>::to_vec),
    };
    let cloudevents = format.cloudevents.as_ref();
    let content_type = match format.payload {
        PayloadKind::Json => Some(Cow::Borrowed("application/json")),
        PayloadKind::Text | PayloadKind::Bytes => cloudevents
            .and_then(|c| c.content_type.clone())
            .map(Cow::Owned),
    };
    Ok(Message {
        id: row.event_id.clone(),
        destination: row.topic.clone(),
        key: row.message_key.clone(),
        payload,
        content_type,
        headers,
        created_at: row.created_at,
        kind: format.payload,
        cloudevents: cloudevents.map(|c| CloudEventAttributes {
            source: c.source.clone(),
            // ce_type is required: without a mapped event_type column (or
            // when it is NULL) the destination names the kind of event.
            event_type: row.event_type.clone().unwrap_or_else(|| row.topic.clone()),
            time: rfc3339(row.created_at),
        }),
    })
}

fn row_headers(headers: &serde_json::Value) -> Result<Vec<(String, String)>, Rejected> {
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
    let mut pairs = Vec::with_capacity(object.len());
    for (name, value) in object {
        if name == EVENT_ID_HEADER {
            continue;
        }
        let value = value.as_str().ok_or_else(|| {
            invalid(format!(
                "invalid headers: header {name:?} is {}, but header values must be strings",
                json_kind(value)
            ))
        })?;
        pairs.push((name.clone(), value.to_owned()));
    }
    Ok(pairs)
}

/// `2026-11-28T06:44:03.123456Z`: RFC 3339 in UTC with microseconds (what
/// PostgreSQL stores).
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        since.subsec_micros()
    )
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

/// [`compact_json`] of JSON text as PostgreSQL sends it (always UTF-8; any
/// other bytes are passed through as they are).
fn compact_json_bytes(json: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(json) {
        Ok(text) => compact_json(text).into_bytes(),
        Err(_) => json.to_vec(),
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

/// The outbox row the message tests of every sink start from.
#[cfg(test)]
pub(crate) fn test_row(topic: &str, headers: serde_json::Value) -> OutboxRow {
    OutboxRow {
        id: 1,
        event_id: "3f1c0a7e-0000-4000-8000-000000000001".into(),
        topic: topic.into(),
        message_key: Some(b"k".to_vec()),
        payload: Some(br#"{"a": 1, "b": [1, 2]}"#.to_vec()),
        headers,
        event_type: None,
        attempts: 0,
        created_at: SystemTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(topic: &str, headers: serde_json::Value) -> OutboxRow {
        test_row(topic, headers)
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
    fn the_message_carries_the_row_headers_but_not_a_spoofed_id() {
        let message = prepare(
            &row("orders", json!({"trace": "t-1", "id": "spoofed"})),
            &MessageFormat::default(),
        )
        .unwrap();
        assert_eq!(
            message.headers,
            vec![("trace".to_owned(), "t-1".to_owned())]
        );
        assert_eq!(message.id, "3f1c0a7e-0000-4000-8000-000000000001");
        assert_eq!(message.destination, "orders");
        assert_eq!(message.key.as_deref(), Some(b"k".as_slice()));
        assert_eq!(message.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            message.payload.as_deref(),
            Some(br#"{"a":1,"b":[1,2]}"#.as_slice())
        );
    }

    #[test]
    fn a_null_payload_stays_none() {
        let mut tombstone = row("orders", json!({}));
        tombstone.payload = None;
        let message = prepare(&tombstone, &MessageFormat::default()).unwrap();
        assert_eq!(message.payload, None);
    }

    #[test]
    fn headers_that_are_not_an_object_of_strings_are_rejected() {
        for headers in [
            json!([1]),
            json!({"n": 1}),
            json!({"o": {"x": "y"}}),
            json!("s"),
        ] {
            let rejected =
                prepare(&row("orders", headers.clone()), &MessageFormat::default()).unwrap_err();
            assert_eq!(rejected.reason, FailureReason::InvalidHeaders, "{headers}");
            assert!(
                rejected.message.starts_with("invalid headers"),
                "{}",
                rejected.message
            );
        }
    }

    #[test]
    fn bytes_and_text_payloads_are_sent_as_they_are() {
        let mut framed = row("orders", json!({}));
        // Confluent framing: magic byte 0, schema id, then Protobuf bytes.
        let bytes = vec![0, 0, 0, 0, 7, 0x08, 0x96, 0x01, 0xff, b' ', 0];
        framed.payload = Some(bytes.clone());
        let format = MessageFormat {
            payload: PayloadKind::Bytes,
            ..MessageFormat::default()
        };
        let message = prepare(&framed, &format).unwrap();
        assert_eq!(message.payload, Some(bytes));
        assert_eq!(message.content_type, None);
        let mut text = row("orders", json!({}));
        text.payload = Some(b"a  b".to_vec());
        let format = MessageFormat {
            payload: PayloadKind::Text,
            ..MessageFormat::default()
        };
        assert_eq!(
            prepare(&text, &format).unwrap().payload,
            Some(b"a  b".to_vec())
        );
    }

    #[test]
    fn cloudevents_attributes_default_their_type_to_the_destination() {
        let mut event = row("orders", json!({}));
        event.created_at = UNIX_EPOCH + std::time::Duration::from_micros(1_764_312_243_123_456);
        let format = MessageFormat {
            cloudevents: Some(CloudEvents {
                source: "/shop".into(),
                content_type: None,
            }),
            ..MessageFormat::default()
        };
        let attributes = prepare(&event, &format).unwrap().cloudevents.unwrap();
        assert_eq!(attributes.event_type, "orders");
        assert_eq!(attributes.source, "/shop");
        assert_eq!(attributes.time, "2025-11-28T06:44:03.123456Z");
    }

    #[test]
    fn rfc3339_handles_leap_days_and_the_epoch() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }
}
