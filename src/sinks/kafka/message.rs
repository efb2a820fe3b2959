//! Building the Kafka message for an outbox row.
//!
//! Guarantees: key = the key column's bytes; value = compact JSON text of a
//! json/jsonb payload, the bytes of a bytea or text payload, or no value (a
//! tombstone) for a NULL payload; headers = the row's headers plus `id` = the
//! event id, and with CloudEvents the binary-mode `ce_*` headers. A row that
//! can never become a valid message (bad topic name, headers that are not an
//! object of strings) is rejected here with a reason, before anything is
//! sent.

use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};

use super::FailureReason;
use crate::source::layout::PayloadKind;
use crate::source::OutboxRow;

/// Header carrying the stable event id (the Debezium outbox convention).
pub const EVENT_ID_HEADER: &str = "id";

/// Longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// A row ready to hand to the producer.
#[derive(Debug)]
pub struct PreparedMessage {
    pub payload: Option<Vec<u8>>,
    pub headers: OwnedHeaders,
    /// The record timestamp (ms since the epoch); `None` lets the producer
    /// stamp the send time.
    pub timestamp: Option<i64>,
}

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

/// CloudEvents' Kafka protocol binding, binary mode: the attributes travel as
/// `ce_*` headers and the value is the event data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvents {
    pub source: String,
    /// `content-type` for bytea and text payloads (JSON payloads always
    /// say application/json).
    pub content_type: Option<String>,
}

/// How rows become messages, beyond the row itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFormat {
    pub payload: PayloadKind,
    pub cloudevents: Option<CloudEvents>,
    pub record_timestamp: RecordTimestamp,
}

impl Default for MessageFormat {
    fn default() -> Self {
        MessageFormat {
            payload: PayloadKind::Json,
            cloudevents: None,
            record_timestamp: RecordTimestamp::SendTime,
        }
    }
}

/// Why a row can never be sent, with a message for `last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: FailureReason,
    pub message: String,
}

/// Validate a row and build its payload and headers.
pub fn prepare(row: &OutboxRow, format: &MessageFormat) -> Result<PreparedMessage, Rejected> {
    check_topic(&row.topic)?;
    let mut headers = build_headers(&row.headers, &row.event_id)?;
    if let Some(cloudevents) = &format.cloudevents {
        headers = cloudevents_headers(headers, row, cloudevents, format.payload);
    }
    let payload = match (format.payload, row.payload.as_deref()) {
        (PayloadKind::Json, Some(json)) => Some(compact_json_bytes(json)),
        (_, payload) => payload.map(<[u8]>::to_vec),
    };
    let timestamp = match format.record_timestamp {
        RecordTimestamp::SendTime => None,
        RecordTimestamp::CreatedAt => row
            .created_at
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok()),
    };
    Ok(PreparedMessage {
        payload,
        headers,
        timestamp,
    })
}

fn cloudevents_headers(
    headers: OwnedHeaders,
    row: &OutboxRow,
    cloudevents: &CloudEvents,
    payload: PayloadKind,
) -> OwnedHeaders {
    let content_type = match payload {
        PayloadKind::Json => Some("application/json"),
        PayloadKind::Text | PayloadKind::Bytes => cloudevents.content_type.as_deref(),
    };
    // ce_type is required: without a mapped event_type column (or when it is
    // NULL) the topic names the kind of event.
    let event_type = row.event_type.as_deref().unwrap_or(&row.topic);
    let time = rfc3339(row.created_at);
    let mut headers = headers
        .insert(header("ce_specversion", "1.0"))
        .insert(header("ce_id", &row.event_id))
        .insert(header("ce_source", &cloudevents.source))
        .insert(header("ce_type", event_type))
        .insert(header("ce_time", &time));
    if let Some(content_type) = content_type {
        headers = headers.insert(header("content-type", content_type));
    }
    headers
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
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

fn check_topic(topic: &str) -> Result<(), Rejected> {
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
            message_key: Some(b"k".to_vec()),
            payload: Some(br#"{"a": 1, "b": [1, 2]}"#.to_vec()),
            headers,
            event_type: None,
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
        let prepared = prepare(
            &row("orders", json!({"trace": "t-1", "id": "spoofed"})),
            &MessageFormat::default(),
        )
        .unwrap();
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
        assert_eq!(
            prepared.payload.as_deref(),
            Some(br#"{"a":1,"b":[1,2]}"#.as_slice())
        );
        assert_eq!(prepared.timestamp, None);
    }

    #[test]
    fn a_null_payload_is_a_tombstone() {
        let mut tombstone = row("orders", json!({}));
        tombstone.payload = None;
        assert_eq!(
            prepare(&tombstone, &MessageFormat::default())
                .unwrap()
                .payload,
            None
        );
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
    fn invalid_topic_names_are_rejected() {
        for topic in ["", ".", "..", "has space", "ümlaut", &"t".repeat(250)] {
            let rejected = prepare(&row(topic, json!({})), &MessageFormat::default()).unwrap_err();
            assert_eq!(rejected.reason, FailureReason::InvalidTopic, "{topic:?}");
        }
        assert!(prepare(&row("a.b_c-1", json!({})), &MessageFormat::default()).is_ok());
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
        assert_eq!(prepare(&framed, &format).unwrap().payload, Some(bytes));
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
    fn cloudevents_attributes_travel_as_ce_headers() {
        let mut event = row("orders", json!({}));
        event.event_type = Some("OrderCreated".into());
        event.created_at = UNIX_EPOCH + std::time::Duration::from_micros(1_764_312_243_123_456);
        let format = MessageFormat {
            cloudevents: Some(CloudEvents {
                source: "/shop".into(),
                content_type: None,
            }),
            record_timestamp: RecordTimestamp::CreatedAt,
            ..MessageFormat::default()
        };
        let prepared = prepare(&event, &format).unwrap();
        let pairs = header_pairs(&prepared.headers);
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
        assert_eq!(prepared.timestamp, Some(1_764_312_243_123));
    }

    #[test]
    fn rfc3339_handles_leap_days_and_the_epoch() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }
}
