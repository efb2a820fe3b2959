//! `cargo run --example tail-topic -- BROKERS TOPIC [SECONDS]`: print every
//! message of TOPIC from the beginning (partition, offset, key, headers,
//! value), stopping after SECONDS (default 3) without a new message. It reads
//! with the test kit's consumer.

#[path = "../tests/common/reader.rs"]
#[allow(dead_code)]
mod reader;

use std::time::{Duration, Instant};

use reader::TopicReader;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(brokers), Some(topic)) = (args.first(), args.get(1)) else {
        eprintln!("usage: tail-topic BROKERS TOPIC [SECONDS]");
        std::process::exit(2);
    };
    let idle = Duration::from_secs(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3));
    if let Err(error) = tail(brokers, topic, idle) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn tail(brokers: &str, topic: &str, idle: Duration) -> Result<(), rdkafka::error::KafkaError> {
    let reader = TopicReader::open(brokers, topic, &[])?;
    let mut last = Instant::now();
    while last.elapsed() < idle {
        let Some(message) = reader.next(Duration::from_millis(100))? else {
            continue;
        };
        last = Instant::now();
        let headers: Vec<String> = message
            .headers
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        println!(
            "partition={} offset={} key={} headers=[{}] value={}",
            message.partition,
            message.offset,
            message.key.as_deref().unwrap_or("null"),
            headers.join(" "),
            message.payload.as_deref().unwrap_or("null")
        );
    }
    Ok(())
}
