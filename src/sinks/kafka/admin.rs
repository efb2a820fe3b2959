//! The one topic the relay creates itself: `--exactly-once`'s checkpoint
//! topic, compacted, when it is missing.
//!
//! Guarantees: an existing topic is left exactly as it is; a new one is
//! compacted, with [`CHECKPOINT_PARTITIONS`] partitions and as many
//! replicas as the cluster has brokers, up to three.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use super::checkpoint::CHECKPOINT_PARTITIONS;
use super::options::{resolve, KafkaOption};

/// Create `topic` (compacted) unless it exists.
pub async fn ensure_checkpoint_topic(
    brokers: &str,
    options: &[KafkaOption],
    topic: &str,
    timeout: Duration,
) -> Result<(), String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("log_level", "2");
    for option in resolve(options).map_err(|e| e.to_string())? {
        if option.key.starts_with("security.")
            || option.key.starts_with("ssl.")
            || option.key.starts_with("sasl.")
        {
            config.set(&option.key, &option.value);
        }
    }
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|e| format!("cannot create an admin client: {e}"))?;
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| format!("cannot read the cluster's metadata: {e}"))?;
    let exists = metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    if exists {
        return Ok(());
    }
    let replicas = metadata.brokers().len().clamp(1, 3) as i32;
    let new = NewTopic::new(
        topic,
        CHECKPOINT_PARTITIONS,
        TopicReplication::Fixed(replicas),
    )
    .set("cleanup.policy", "compact")
    .set("segment.bytes", "10485760");
    let created = admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(timeout)),
        )
        .await
        .map_err(|e| format!("cannot create the checkpoint topic {topic}: {e}"))?;
    for result in created {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(format!(
                    "cannot create the checkpoint topic {name}: {code}; create it (compacted) or grant the relay CREATE on it"
                ))
            }
        }
    }
    Ok(())
}
