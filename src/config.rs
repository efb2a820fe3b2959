//! Validated settings for the relay, and the parsers for flag values that
//! need more than a type check.
//!
//! Guarantees: a `RelayConfig` that passed `validate` has a non-empty,
//! well-formed broker list, sane batch and timing bounds, and Kafka options
//! that are at least `key=value` shaped (librdkafka checks the keys).

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::table::TableName;

/// Everything `outbox-relay run` needs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub database_url: String,
    pub table: TableName,
    /// Comma-separated `host:port` list, checked by [`validate_brokers`].
    pub kafka_brokers: String,
    /// Raw librdkafka settings, applied after (and so over) the relay's defaults.
    pub kafka_options: Vec<KafkaOption>,
    pub metrics_addr: SocketAddr,
    /// Rows claimed per transaction. Larger batches amortise round trips;
    /// every row of a batch is held locked until the batch is recorded.
    pub batch_size: usize,
    /// Backstop poll when idle. NOTIFY wake-ups (when the trigger is
    /// installed) make new rows go out sooner than this.
    pub poll_interval: Duration,
    /// Attempts, the first included, before a row that keeps failing is dead.
    /// Broker outages do not count.
    pub max_attempts: u32,
    pub retry_backoff_base: Duration,
    pub retry_backoff_max: Duration,
    /// Bound on a graceful stop: finish in-flight work, flush, record.
    pub shutdown_timeout: Duration,
    /// How long start-up waits for a first answer from the brokers.
    pub kafka_startup_timeout: Duration,
    /// How often the backlog gauges (pending, oldest age, dead) are refreshed.
    pub stats_interval: Duration,
    /// Listen for the optional NOTIFY trigger's wake-ups.
    pub listen: bool,
    /// Delete published rows older than this; `None` keeps them.
    pub retention: Option<Duration>,
}

impl RelayConfig {
    /// Cross-field and range checks that clap cannot express.
    pub fn validate(&self) -> Result<()> {
        validate_brokers(&self.kafka_brokers)?;
        if !(1..=50_000).contains(&self.batch_size) {
            return Err(Error::InvalidConfig(format!(
                "--batch-size {} is out of range; use 1 to 50000",
                self.batch_size
            )));
        }
        if self.max_attempts == 0 {
            return Err(Error::InvalidConfig(
                "--max-attempts must be at least 1".to_owned(),
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::InvalidConfig(
                "--poll-interval-ms must be at least 1".to_owned(),
            ));
        }
        if self.kafka_options.iter().any(|o| {
            matches!(o.key.as_str(), "acks" | "request.required.acks") && o.value.trim() == "0"
        }) {
            return Err(Error::InvalidConfig(
                "--kafka-option acks=0 gives no acknowledgement to mark rows by; use acks=all (the default) or acks=1".to_owned(),
            ));
        }
        if self.retry_backoff_base > self.retry_backoff_max {
            return Err(Error::InvalidConfig(
                "--retry-backoff-base-ms must not exceed --retry-backoff-max-secs".to_owned(),
            ));
        }
        Ok(())
    }
}

/// One `--kafka-option key=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOption {
    pub key: String,
    pub value: String,
}

/// Parser for `--kafka-option`: `key=value`, key non-empty, value may be empty
/// or contain `=`.
pub fn parse_kafka_option(raw: &str) -> std::result::Result<KafkaOption, String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok(KafkaOption {
            key: key.trim().to_owned(),
            value: value.to_owned(),
        }),
        _ => Err("expected KEY=VALUE, e.g. --kafka-option linger.ms=5".to_owned()),
    }
}

/// Check a bootstrap list: `host:port` entries separated by commas.
pub fn validate_brokers(value: &str) -> Result<()> {
    let invalid = |reason: String| Error::InvalidBrokers {
        value: value.to_owned(),
        reason,
    };
    if value.trim().is_empty() {
        return Err(invalid("the list is empty".to_owned()));
    }
    for entry in value.split(',').map(str::trim) {
        let entry = entry
            .strip_prefix("PLAINTEXT://")
            .or_else(|| entry.strip_prefix("SSL://"))
            .unwrap_or(entry);
        let Some((host, port)) = entry.rsplit_once(':') else {
            return Err(invalid(format!("entry {entry:?} has no :port")));
        };
        if host.is_empty() {
            return Err(invalid(format!("entry {entry:?} has no host")));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(invalid(format!("entry {entry:?} has an invalid port"))),
        }
    }
    Ok(())
}

/// Parse a duration such as `24h`, `90m`, `30s` or `7d`.
pub fn parse_duration(raw: &str) -> std::result::Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let amount: u64 = digits
        .parse()
        .map_err(|_| format!("expected a number and a unit (s, m, h, d), e.g. 24h; got {raw:?}"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?}; use s, m, h or d, e.g. 24h")),
    };
    Ok(Duration::from_secs(amount * seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_options_split_at_the_first_equals_sign() {
        let option = parse_kafka_option("sasl.password=a=b").unwrap();
        assert_eq!(option.key, "sasl.password");
        assert_eq!(option.value, "a=b");
        assert_eq!(parse_kafka_option("linger.ms=").unwrap().value, "");
    }

    #[test]
    fn kafka_options_without_a_key_or_equals_sign_are_rejected() {
        for bad in ["linger.ms", "=5", "", " =x"] {
            assert!(parse_kafka_option(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn broker_lists_need_host_and_port_in_every_entry() {
        assert!(validate_brokers("localhost:9092").is_ok());
        assert!(validate_brokers("a:1, b:2,PLAINTEXT://c:3").is_ok());
        for bad in [
            "",
            "  ",
            "localhost",
            "a:1,,b:2",
            ":9092",
            "host:0",
            "host:x",
            "host:70000",
        ] {
            assert!(validate_brokers(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        for bad in ["", "h", "10", "10w", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
