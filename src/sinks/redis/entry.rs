//! What one message becomes in Redis: the fields of a stream entry, or the
//! JSON envelope a list holds.
//!
//! Guarantees:
//! - stream: fields `id` (the event id), `key` (when not null), `payload`
//!   (the bytes as they are; absent for a NULL payload) and `headers` (a
//!   JSON object as text, when there are any), in that order;
//! - list: `{"id", "key", "payload", "headers"}`, the payload inline as
//!   JSON for a json/jsonb table and base64 for bytea and text, the key as
//!   text (base64 when it is not UTF-8), `null` for NULLs;
//! - headers are the row's, then the CloudEvents ones (`ce_*`) when on.

use base64::Engine;
use serde_json::{Map, Value};

use crate::sinks::message::{Message, EVENT_ID_HEADER};
use crate::source::layout::PayloadKind;

/// `--redis-mode`: how rows are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// `XADD` to the stream the row's topic names.
    #[default]
    Stream,
    /// `LPUSH` a JSON envelope to the list the row's topic names; consumers
    /// `BRPOP`.
    List,
}

impl RedisMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Stream => "stream",
            RedisMode::List => "list",
        }
    }
}

/// The row's headers and the CloudEvents ones, as one JSON object.
fn headers(message: &Message) -> Map<String, Value> {
    let mut object = Map::new();
    for (name, value) in &message.headers {
        object.insert(name.clone(), Value::String(value.clone()));
    }
    for (name, value) in message.ce_headers() {
        object.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    object
}

/// A stream entry's field/value pairs, flattened.
pub fn stream_fields(message: &Message) -> Vec<Vec<u8>> {
    let mut fields = Vec::with_capacity(8);
    let mut field = |name: &str, value: Vec<u8>| {
        fields.push(name.as_bytes().to_vec());
        fields.push(value);
    };
    field(EVENT_ID_HEADER, message.id.as_bytes().to_vec());
    if let Some(key) = &message.key {
        field("key", key.clone());
    }
    if let Some(payload) = &message.payload {
        field("payload", payload.clone());
    }
    let headers = headers(message);
    if !headers.is_empty() {
        field("headers", Value::Object(headers).to_string().into_bytes());
    }
    fields
}

/// A list element: the JSON envelope.
pub fn list_envelope(message: &Message) -> Vec<u8> {
    let base64 =
        |bytes: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    let key = match &message.key {
        None => Value::Null,
        Some(key) => match std::str::from_utf8(key) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => base64(key),
        },
    };
    let payload = match (&message.payload, message.kind) {
        (None, _) => Value::Null,
        (Some(json), PayloadKind::Json) => {
            serde_json::from_slice(json).unwrap_or_else(|_| base64(json))
        }
        (Some(bytes), PayloadKind::Text | PayloadKind::Bytes) => base64(bytes),
    };
    let mut envelope = Map::new();
    envelope.insert("id".into(), Value::String(message.id.clone()));
    envelope.insert("key".into(), key);
    envelope.insert("payload".into(), payload);
    envelope.insert("headers".into(), Value::Object(headers(message)));
    Value::Object(envelope).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sinks::message::{prepare, test_row, CloudEvents, MessageFormat};

    fn message(kind: PayloadKind, headers: Value) -> Message {
        let mut row = test_row("orders:created", headers);
        if kind != PayloadKind::Json {
            row.payload = Some(vec![0, 159, 146, 150]);
        }
        let format = MessageFormat {
            payload: kind,
            cloudevents: None,
        };
        prepare(&row, &format).unwrap()
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn a_stream_entry_has_id_key_payload_and_headers() {
        let fields = stream_fields(&message(PayloadKind::Json, json!({"trace": "t1"})));
        let fields: Vec<String> = fields.iter().map(|f| text(f)).collect();
        assert_eq!(
            fields,
            [
                "id",
                "3f1c0a7e-0000-4000-8000-000000000001",
                "key",
                "k",
                "payload",
                r#"{"a":1,"b":[1,2]}"#,
                "headers",
                r#"{"trace":"t1"}"#
            ]
        );
    }

    #[test]
    fn empty_headers_and_nulls_leave_their_fields_out() {
        let mut message = message(PayloadKind::Json, json!({}));
        message.key = None;
        message.payload = None;
        let fields = stream_fields(&message);
        assert_eq!(fields.len(), 2, "only the id: {fields:?}");
        let envelope: Value = serde_json::from_slice(&list_envelope(&message)).unwrap();
        assert_eq!(
            envelope,
            json!({"id": message.id, "key": null, "payload": null, "headers": {}})
        );
    }

    #[test]
    fn a_list_envelope_inlines_json_and_base64_encodes_bytes() {
        let json_row = message(PayloadKind::Json, json!({"h": "v"}));
        let envelope: Value = serde_json::from_slice(&list_envelope(&json_row)).unwrap();
        assert_eq!(envelope["payload"], json!({"a": 1, "b": [1, 2]}));
        assert_eq!(envelope["key"], json!("k"));
        assert_eq!(envelope["headers"], json!({"h": "v"}));
        let bytes_row = message(PayloadKind::Bytes, json!({}));
        let envelope: Value = serde_json::from_slice(&list_envelope(&bytes_row)).unwrap();
        assert_eq!(envelope["payload"], json!("AJ+Slg=="));
    }

    #[test]
    fn cloudevents_attributes_join_the_headers() {
        let row = test_row("orders", json!({"h": "v"}));
        let format = MessageFormat {
            payload: PayloadKind::Json,
            cloudevents: Some(CloudEvents {
                source: "/shop".into(),
                content_type: None,
            }),
        };
        let message = prepare(&row, &format).unwrap();
        let envelope: Value = serde_json::from_slice(&list_envelope(&message)).unwrap();
        assert_eq!(envelope["headers"]["ce_source"], json!("/shop"));
        assert_eq!(envelope["headers"]["ce_type"], json!("orders"));
        assert_eq!(envelope["headers"]["h"], json!("v"));
    }
}
