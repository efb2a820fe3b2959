//! The Kafka producer: configured for at-least-once, idempotent, `acks=all`
//! delivery by default, with raw librdkafka options layered on top.
//!
//! Guarantees: `send` hands a message to librdkafka (waiting while its queue
//! is full) and returns a future for that message's own delivery report;
//! `flush` waits for every queued message before the producer is dropped
//! (dropping it would purge them).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientContext;

use super::defaults::PRODUCER_DEFAULTS;
use super::failure::failed;
use super::message::{headers, timestamp, RecordTimestamp};
use super::options::resolve;
use super::options::KafkaOption;
use super::security::{check_files, security_failure, GivenOptions, SecurityFailure};
use crate::error::{Error, Result};
use crate::sinks::message::Message;
use crate::sinks::outcome::{Delivery, Disposition, FailureReason, Pending};

/// Pause between attempts to enqueue while librdkafka's queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(2);

/// Routes librdkafka's logs and error events into `tracing`, and keeps the
/// last error event: a failed metadata request only says "transport
/// failure", the event says why (refused, TLS handshake, authentication).
pub struct LoggingContext {
    last_error: LastError,
}

/// What the producers' error events said, shared by their contexts and the
/// publisher (across replacements).
#[derive(Debug, Default)]
struct ErrorEvents {
    /// The last error's reason, taken by the next failed probe.
    reason: Option<String>,
    /// When the cluster was last seen with no broker up: librdkafka said
    /// so, or a metadata probe got no answer.
    all_brokers_down_at: Option<Instant>,
    /// The last authentication or TLS failure, with librdkafka's reason.
    security: Option<(SecurityFailure, String)>,
}

type LastError = Arc<Mutex<ErrorEvents>>;

impl ClientContext for LoggingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            // Connection errors are logged by librdkafka at "error" level on
            // every retry; the relay reports outages itself, once.
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::warn!(facility, "librdkafka: {message}")
            }
            _ => tracing::debug!(facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Connection errors repeat for as long as a broker is down; the relay
        // reports the outage itself, once, so these stay at debug.
        tracing::debug!(%error, "librdkafka error: {reason}");
        let mut events = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        // "n/n brokers are down" follows the error that says why; keep that.
        let generic = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        if generic {
            events.all_brokers_down_at = Some(Instant::now());
        }
        if !generic || events.reason.is_none() {
            events.reason = Some(reason.to_owned());
        }
        if let Some(failure) = security_failure(&error, reason) {
            events.security = Some((failure, reason.to_owned()));
        }
    }
}

pub(super) type RelayProducer = FutureProducer<LoggingContext>;

/// The producer one batch sends every message with, and its generation.
/// Holding it keeps that producer alive: a replacement (asked for by another
/// table) never splits a batch across two producers, which could reorder a
/// key, nor destroys messages still in flight.
#[derive(Clone)]
pub struct ProducerLease {
    producer: RelayProducer,
    pub(super) generation: u64,
    record_timestamp: RecordTimestamp,
}

impl ProducerLease {
    pub(super) fn producer(&self) -> &RelayProducer {
        &self.producer
    }
}

/// Shared by every table's relay loop and the readiness probe.
pub struct Publisher {
    /// Behind a lock only so a producer that hit a fatal error can be replaced.
    producer: RwLock<ProducerLease>,
    brokers: String,
    /// As the user gave them: references are resolved for each new producer.
    options: Vec<KafkaOption>,
    last_error: LastError,
    record_timestamp: RecordTimestamp,
}

/// How often the start-up check looks for an authentication or TLS failure
/// while it waits for a broker to answer: the length of each probe.
const SECURITY_CHECK_INTERVAL: Duration = Duration::from_millis(250);

impl Publisher {
    /// Create the producer. Fails on options librdkafka rejects; makes no
    /// connection yet.
    pub fn new(
        brokers: &str,
        options: &[KafkaOption],
        record_timestamp: RecordTimestamp,
    ) -> Result<Self> {
        let last_error = LastError::default();
        Ok(Publisher {
            producer: RwLock::new(ProducerLease {
                producer: create_producer(brokers, options, &last_error)?,
                generation: 0,
                record_timestamp,
            }),
            brokers: brokers.to_owned(),
            options: options.to_vec(),
            last_error,
            record_timestamp,
        })
    }

    /// The current producer, for one batch's messages.
    pub fn lease(&self) -> ProducerLease {
        self.producer
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Hand one message to `lease`'s librdkafka and return its pending
    /// delivery report. Waits (up to `queue_wait`) while librdkafka's queue
    /// is full.
    pub async fn send(lease: &ProducerLease, message: Message, queue_wait: Duration) -> Pending {
        let deadline = Instant::now() + queue_wait;
        let mut record =
            FutureRecord::<[u8], [u8]>::to(&message.destination).headers(headers(&message));
        if let Some(timestamp) = timestamp(&message, lease.record_timestamp) {
            record = record.timestamp(timestamp);
        }
        if let Some(key) = message.key.as_deref() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload.as_deref() {
            record = record.payload(payload);
        }
        loop {
            match lease.producer.send_result(record) {
                Ok(future) => return Pending::Sent(Box::pin(report(future))),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((error, _)) => return Pending::Refused(failed(&error)),
            }
        }
    }

    /// Whether the cluster was seen with no broker up (librdkafka said so,
    /// or a probe of any table got no answer) at some moment since `since`:
    /// failures of a batch sent then are the outage's, even if the cluster
    /// answers again by the time they are reported.
    pub fn all_brokers_down_since(&self, since: Instant) -> bool {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .all_brokers_down_at
            .is_some_and(|at| at >= since)
    }

    /// Ask the cluster for metadata: succeeds only if a broker answers.
    pub async fn probe(&self, timeout: Duration) -> std::result::Result<(), String> {
        let producer = self.current();
        let asked = producer.clone();
        let answer =
            tokio::task::spawn_blocking(move || asked.client().fetch_metadata(None, timeout)).await;
        match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => {
                let mut events = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
                events.all_brokers_down_at = Some(Instant::now());
                Err(match events.reason.take() {
                    Some(cause) => format!("{error}; last broker error: {cause}"),
                    None => error.to_string(),
                })
            }
            Err(join_error) => Err(join_error.to_string()),
        }
    }

    /// Whether `topic` exists: `None` when the cluster did not answer.
    pub async fn topic_exists(&self, topic: &str, timeout: Duration) -> Option<bool> {
        let producer = self.current();
        let topic = topic.to_owned();
        let answer = tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .ok()?;
            let found = metadata.topics().iter().find(|t| t.name() == topic)?;
            Some(match found.error() {
                None => !found.partitions().is_empty(),
                Some(code) => !matches!(
                    RDKafkaErrorCode::from(code),
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
                ),
            })
        })
        .await;
        answer.ok().flatten()
    }

    /// Fail with a clear error unless a broker answers within `timeout`.
    /// An authentication or TLS failure fails at once: waiting cannot fix it.
    ///
    /// Probes in short slices, checking for such a failure between them,
    /// rather than abandoning a long probe: an abandoned probe keeps the
    /// producer alive on its thread past the process's exit, where
    /// librdkafka's threads race OpenSSL's clean-up.
    pub async fn check_reachable(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let slice = deadline
                .saturating_duration_since(Instant::now())
                .min(SECURITY_CHECK_INTERVAL);
            let answer = self.probe(slice).await;
            if let Some(error) = self.security_error() {
                return Err(error);
            }
            match answer {
                Ok(()) => return Ok(()),
                Err(reason) if Instant::now() >= deadline => {
                    return Err(Error::KafkaUnreachable {
                        brokers: self.brokers.clone(),
                        waited: timeout,
                        reason,
                    })
                }
                Err(_) => {}
            }
        }
    }

    /// The authentication or TLS failure librdkafka reported, as an error
    /// that names what to fix.
    fn security_error(&self) -> Option<Error> {
        let events = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        let (failure, reason) = events.security.as_ref()?;
        Some(GivenOptions::new(&self.options).error(*failure, &self.brokers, reason))
    }

    /// Wait for every queued message's delivery report, up to `timeout`.
    pub async fn flush(&self, timeout: Duration) -> std::result::Result<(), String> {
        let producer = self.current();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// An idempotent producer that hit a fatal error (for example after a
    /// sequence gap) refuses all further messages: replace it. Returns the
    /// error that made the replacement necessary.
    pub fn replace_if_fatal(&self) -> Result<Option<String>> {
        let current = self.lease();
        let Some((code, reason)) = current.producer.client().fatal_error() else {
            return Ok(None);
        };
        self.replace(current.generation)?;
        Ok(Some(format!("{code:?}: {reason}")))
    }

    /// Start afresh with a new producer (and so a new producer id), unless
    /// the producer of `generation` was already replaced (by another
    /// table's loop that saw the same failure). Returns whether it replaced.
    /// Batches still holding a lease of the old producer finish on it.
    pub fn replace(&self, generation: u64) -> Result<bool> {
        let mut current = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if current.generation != generation {
            return Ok(false);
        }
        *current = ProducerLease {
            producer: create_producer(&self.brokers, &self.options, &self.last_error)?,
            generation: generation + 1,
            record_timestamp: self.record_timestamp,
        };
        Ok(true)
    }

    fn current(&self) -> RelayProducer {
        self.lease().producer
    }
}

/// A delivery report as the message's outcome.
async fn report(future: rdkafka::producer::DeliveryFuture) -> Delivery {
    match future.await {
        Ok(Ok(delivery)) if delivery.offset >= 0 => Delivery::Delivered,
        // librdkafka's idempotent producer infers "persisted" for a batch
        // whose fate it never learned once a later batch succeeds: no offset,
        // not proof enough to mark the row published.
        Ok(Ok(_)) => Delivery::Unconfirmed,
        Ok(Err((error, _))) => failed(&error),
        Err(_canceled) => Delivery::Failed {
            disposition: Disposition::Unavailable,
            reason: FailureReason::BrokerUnavailable,
            message: "kafka: the producer was shut down before delivery".to_owned(),
        },
    }
}

fn create_producer(
    brokers: &str,
    options: &[KafkaOption],
    last_error: &LastError,
) -> Result<RelayProducer> {
    let options = resolve(options)?;
    check_files(&options)?;
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in PRODUCER_DEFAULTS {
        config.set(*key, *value);
    }
    for option in &options {
        config.set(&option.key, &option.value);
    }
    // rust-rdkafka applies its own log level after creation; keep the
    // user's `log_level` option, if any, in charge.
    let level = options
        .iter()
        .rev()
        .find(|o| o.key == "log_level")
        .map_or(RDKafkaLogLevel::Critical, |o| syslog_level(&o.value));
    config
        .set_log_level(level)
        .create_with_context(LoggingContext {
            last_error: Arc::clone(last_error),
        })
        .map_err(|e| Error::KafkaConfig(describe_config_error(&e, &options)))
}

/// librdkafka's description of a rejected option, naming the option and
/// where it was given (`options` keep their origins when resolved) but not
/// its value (which may be a secret), without rust-rdkafka's dangling "key
/// value" suffix.
fn describe_config_error(error: &KafkaError, options: &[KafkaOption]) -> String {
    match error {
        KafkaError::ClientConfig(_, description, key, _value) => {
            let place = GivenOptions::new(options).origin_of(&[key.as_str()]);
            format!("option {key}: {}; fix it {place}", description.trim())
        }
        other => format!("{other}; check the options in --kafka-option and --kafka-config"),
    }
}

fn syslog_level(value: &str) -> RDKafkaLogLevel {
    match value.trim().parse::<u8>().unwrap_or(2) {
        0 => RDKafkaLogLevel::Emerg,
        1 => RDKafkaLogLevel::Alert,
        2 => RDKafkaLogLevel::Critical,
        3 => RDKafkaLogLevel::Error,
        4 => RDKafkaLogLevel::Warning,
        5 => RDKafkaLogLevel::Notice,
        6 => RDKafkaLogLevel::Info,
        _ => RDKafkaLogLevel::Debug,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> Vec<KafkaOption> {
        pairs
            .iter()
            .map(|(key, value)| KafkaOption {
                key: key.to_string(),
                value: value.to_string(),
                origin: crate::sinks::kafka::OptionOrigin::Flag,
            })
            .collect()
    }

    fn sasl(mechanism: &'static str) -> Vec<(&'static str, &'static str)> {
        vec![
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", mechanism),
            ("sasl.username", "relay"),
            ("sasl.password", "secret"),
        ]
    }

    #[test]
    fn the_build_has_tls_sasl_oidc_and_every_compression() {
        let last_error = LastError::default();
        let cases = [
            vec![("security.protocol", "SSL")],
            sasl("PLAIN"),
            sasl("SCRAM-SHA-256"),
            sasl("SCRAM-SHA-512"),
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "OAUTHBEARER"),
                ("sasl.oauthbearer.method", "oidc"),
                ("sasl.oauthbearer.client.id", "relay"),
                ("sasl.oauthbearer.client.secret", "secret"),
                (
                    "sasl.oauthbearer.token.endpoint.url",
                    "https://127.0.0.1:1/token",
                ),
            ],
            vec![("compression.type", "zstd")],
            vec![("compression.type", "lz4")],
            vec![("compression.type", "snappy")],
            vec![("compression.type", "gzip")],
        ];
        for case in cases {
            let result = create_producer("127.0.0.1:1", &options(&case), &last_error);
            assert!(result.is_ok(), "{case:?}: {:?}", result.err());
        }
    }
}
