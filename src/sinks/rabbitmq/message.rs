//! A sink-neutral [`Message`] as an AMQP 0-9-1 publish: routing key, body
//! and properties.
//!
//! Guarantees: routing key = the row's `topic`; body = the payload bytes
//! (empty for a NULL payload); `message_id` = the event id; `delivery_mode`
//! = 2 (persistent); `content_type` = `application/json` for json and jsonb
//! payloads, the configured CloudEvents content type or
//! `text/plain; charset=utf-8` for text, `application/octet-stream` for
//! bytea; `timestamp` = `created_at` in seconds; headers = the row's headers
//! plus `id` (the event id) and `key` (the message key, when not null), and
//! with CloudEvents the `cloudEvents:*` headers of the CloudEvents AMQP
//! binding. A routing key longer than 255 bytes is rejected before sending.

use std::time::UNIX_EPOCH;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

use crate::sinks::message::{Message, EVENT_ID_HEADER};
use crate::sinks::outcome::{FailureReason, Rejected};
use crate::source::layout::PayloadKind;

/// Longest routing key AMQP 0-9-1 carries (a short string).
const MAX_ROUTING_KEY_LEN: usize = 255;

/// Header carrying the message key (AMQP has no key of its own).
pub const KEY_HEADER: &str = "key";

/// The publish properties of `message`.
pub fn properties(message: &Message) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in &message.headers {
        headers.insert(name.as_str().into(), text(value));
    }
    headers.insert(EVENT_ID_HEADER.into(), text(&message.id));
    if let Some(key) = &message.key {
        let bytes = LongString::from(key.clone());
        headers.insert(KEY_HEADER.into(), AMQPValue::LongString(bytes));
    }
    if let Some(attributes) = &message.cloudevents {
        for (name, value) in [
            ("cloudEvents:specversion", "1.0"),
            ("cloudEvents:id", message.id.as_str()),
            ("cloudEvents:source", attributes.source.as_str()),
            ("cloudEvents:type", attributes.event_type.as_str()),
            ("cloudEvents:time", attributes.time.as_str()),
        ] {
            headers.insert(name.into(), text(value));
        }
    }
    let content_type = match (&message.content_type, message.kind) {
        (Some(content_type), _) => content_type.as_ref(),
        (None, PayloadKind::Json) => "application/json",
        (None, PayloadKind::Text) => "text/plain; charset=utf-8",
        (None, PayloadKind::Bytes) => "application/octet-stream",
    };
    let seconds = message
        .created_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    BasicProperties::default()
        .with_message_id(ShortString::from(message.id.as_str()))
        .with_delivery_mode(2)
        .with_content_type(ShortString::from(content_type))
        .with_timestamp(seconds)
        .with_headers(headers)
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Refuse a routing key AMQP cannot carry.
pub fn check_routing_key(routing_key: &str) -> Result<(), Rejected> {
    if routing_key.len() > MAX_ROUTING_KEY_LEN {
        return Err(Rejected {
            reason: FailureReason::InvalidTopic,
            message: format!(
                "invalid routing key {routing_key:?}: an AMQP routing key holds at most 255 bytes"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use serde_json::json;

    use super::*;
    use crate::sinks::message::{prepare, test_row, CloudEvents, MessageFormat};
    use crate::source::OutboxRow;

    fn row() -> OutboxRow {
        let mut row = test_row("order.created", json!({"trace": "t-1"}));
        row.message_key = Some(b"order-42".to_vec());
        row.event_type = Some("OrderCreated".into());
        row.created_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_312_243);
        row
    }

    fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
        properties
            .headers()
            .as_ref()?
            .inner()
            .get(&ShortString::from(name))
    }

    #[test]
    fn properties_carry_the_id_key_headers_type_and_time() {
        let message = prepare(&row(), &MessageFormat::default()).unwrap();
        let properties = properties(&message);
        assert_eq!(
            properties.message_id().as_ref().map(|s| s.as_str()),
            Some("3f1c0a7e-0000-4000-8000-000000000001")
        );
        assert_eq!(*properties.delivery_mode(), Some(2));
        assert_eq!(
            properties.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(*properties.timestamp(), Some(1_764_312_243));
        assert_eq!(header(&properties, "trace"), Some(&text("t-1")));
        assert_eq!(
            header(&properties, "id"),
            Some(&text("3f1c0a7e-0000-4000-8000-000000000001"))
        );
        assert_eq!(header(&properties, "key"), Some(&text("order-42")));
        assert_eq!(header(&properties, "cloudEvents:id"), None);
    }

    #[test]
    fn cloudevents_use_the_amqp_bindings_prefix() {
        let format = MessageFormat {
            cloudevents: Some(CloudEvents {
                source: "/shop".into(),
                content_type: None,
            }),
            ..MessageFormat::default()
        };
        let message = prepare(&row(), &format).unwrap();
        let properties = properties(&message);
        assert_eq!(
            header(&properties, "cloudEvents:type"),
            Some(&text("OrderCreated"))
        );
        assert_eq!(
            header(&properties, "cloudEvents:source"),
            Some(&text("/shop"))
        );
        assert_eq!(
            header(&properties, "cloudEvents:specversion"),
            Some(&text("1.0"))
        );
    }

    #[test]
    fn routing_keys_are_any_utf8_up_to_255_bytes() {
        assert!(check_routing_key("order/created:eu").is_ok());
        assert!(check_routing_key(&"é".repeat(127)).is_ok());
        assert!(check_routing_key(&"k".repeat(256)).is_err());
    }
}
