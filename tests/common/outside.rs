//! Reading messages back with code that is not the relay's: confluent-kafka
//! and the CloudEvents SDK for Python (`tests/outside/read_topic.py`, from
//! the venv `tests/services.sh install` makes).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// One message as the outside consumer saw it.
#[derive(Debug, Clone)]
pub struct OutsideMessage {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: serde_json::Map<String, Value>,
    pub timestamp: Option<i64>,
    /// The event the CloudEvents SDK parsed, with `cloudevents`.
    pub cloudevent: Option<Value>,
}

impl OutsideMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(Value::as_str)
    }

    pub fn value_json(&self) -> Value {
        serde_json::from_slice(self.value.as_deref().expect("a value")).expect("JSON value")
    }
}

/// Read `count` messages of `topic` from the beginning.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    count: usize,
    cloudevents: bool,
) -> Vec<OutsideMessage> {
    let venv = std::env::var("OUTBOX_TEST_TOOLS_BIN")
        .unwrap_or_else(|_| "/var/cache/outbox-relay/venv/bin".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/outside/read_topic.py");
    let mut command = Command::new(Path::new(&venv).join("python"));
    command
        .arg(script)
        .args([brokers, topic, &count.to_string()]);
    if cloudevents {
        command.arg("--cloudevents");
    }
    let output = command.output().expect("run the outside consumer");
    assert!(
        output.status.success(),
        "the outside consumer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("one JSON object per line");
            let hex = |field: &str| v[field].as_str().map(decode_hex);
            OutsideMessage {
                key: hex("key_hex"),
                value: hex("value_hex"),
                headers: v["headers"].as_object().cloned().unwrap_or_default(),
                timestamp: v["timestamp"].as_i64(),
                cloudevent: v.get("cloudevent").cloned(),
            }
        })
        .collect()
}

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}
