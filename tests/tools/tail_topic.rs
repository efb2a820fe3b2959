//! `cargo run --example tail-topic -- BROKERS TOPIC [SECONDS]`: print every
//! message of TOPIC from the beginning (partition, offset, key, headers,
//! value), stopping after SECONDS (default 3) without a new message.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

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
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tail-topic")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut last = Instant::now();
    while last.elapsed() < idle {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        last = Instant::now();
        let text = |bytes: Option<&[u8]>| {
            bytes.map_or("null".to_owned(), |b| {
                String::from_utf8_lossy(b).into_owned()
            })
        };
        let headers: Vec<String> = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| format!("{}={}", h.key, text(h.value)))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "partition={} offset={} key={} headers=[{}] value={}",
            message.partition(),
            message.offset(),
            text(message.key()),
            headers.join(" "),
            text(message.payload())
        );
    }
    Ok(())
}
