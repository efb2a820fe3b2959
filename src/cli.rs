//! The command line: subcommands, flags and their environment fallbacks.
//! Precedence is flag, then environment variable, then default.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{parse_duration, parse_kafka_option, KafkaOption, RelayConfig};
use crate::table::TableName;

#[derive(Debug, Parser)]
#[command(
    name = "outbox-relay",
    version,
    about = "Moves committed rows of a PostgreSQL outbox table to Kafka: at least once, in order per key.",
    long_about = "Moves committed rows of a PostgreSQL outbox table to Kafka: at least once, in order per key.\n\n\
                  Typical use: `outbox-relay migrate` once, then `outbox-relay run` beside the database. \
                  `status` shows the backlog, `requeue` retries dead rows, `prune` deletes old published rows."
)]
pub struct Cli {
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "OUTBOX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info`, `debug` (one line per batch) or `outbox_relay=debug,warn`.
    #[arg(long, env = "OUTBOX_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update the outbox table, its indexes and the `<table>_enqueue` function. Idempotent.
    Migrate(MigrateArgs),
    /// Run the relay until SIGTERM or SIGINT.
    Run(Box<RunArgs>),
    /// Show the backlog: pending rows, oldest pending age and dead rows, overall and per topic.
    Status(StatusArgs),
    /// Move dead rows back to pending (attempts reset) so the relay retries them.
    Requeue(RequeueArgs),
    /// Delete published rows older than a given age, in small batches.
    Prune(PruneArgs),
}

/// Where the outbox table lives.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL, e.g. postgres://relay:secret@localhost:5432/app.
    #[arg(long, env = "OUTBOX_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// The outbox table, optionally schema-qualified (`schema.table`). Names are case-sensitive.
    #[arg(long, env = "OUTBOX_TABLE", default_value = "outbox")]
    pub table: TableName,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Also install the trigger that NOTIFYs the relay on insert (lower latency when idle).
    #[arg(long, env = "OUTBOX_NOTIFY_TRIGGER")]
    pub notify_trigger: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Kafka bootstrap brokers, comma-separated host:port.
    #[arg(long, env = "OUTBOX_KAFKA_BROKERS")]
    pub kafka_brokers: String,

    /// A librdkafka producer setting, KEY=VALUE; repeatable. Overrides the relay's defaults
    /// (enable.idempotence=true, acks=all, linger.ms=0, message.timeout.ms=30000).
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_kafka_option)]
    pub kafka_options: Vec<KafkaOption>,

    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "OUTBOX_METRICS_ADDR", default_value = "0.0.0.0:9874")]
    pub metrics_addr: SocketAddr,

    /// Rows claimed per transaction (1 to 50000).
    #[arg(long, env = "OUTBOX_BATCH_SIZE", default_value_t = 1000)]
    pub batch_size: usize,

    /// Backstop poll interval when idle; NOTIFY wake-ups (if the trigger is installed) come sooner.
    #[arg(long, env = "OUTBOX_POLL_INTERVAL_MS", default_value_t = 500)]
    pub poll_interval_ms: u64,

    /// Attempts (the first included) before a row that keeps failing becomes dead.
    /// Broker outages do not count.
    #[arg(long, env = "OUTBOX_MAX_ATTEMPTS", default_value_t = 10)]
    pub max_attempts: u32,

    /// First retry delay; it doubles per failed attempt, with jitter.
    #[arg(long, env = "OUTBOX_RETRY_BACKOFF_BASE_MS", default_value_t = 1000)]
    pub retry_backoff_base_ms: u64,

    /// Longest retry delay.
    #[arg(long, env = "OUTBOX_RETRY_BACKOFF_MAX_SECS", default_value_t = 300)]
    pub retry_backoff_max_secs: u64,

    /// Upper bound on a graceful stop (finish the batch in flight, flush, record).
    #[arg(long, env = "OUTBOX_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,

    /// How long start-up waits for a Kafka broker to answer before giving up.
    #[arg(long, env = "OUTBOX_KAFKA_STARTUP_TIMEOUT_SECS", default_value_t = 15)]
    pub kafka_startup_timeout_secs: u64,

    /// How often the backlog gauges are refreshed from the table.
    #[arg(long, env = "OUTBOX_STATS_INTERVAL_MS", default_value_t = 5000)]
    pub stats_interval_ms: u64,

    /// Do not LISTEN for the NOTIFY trigger; rely on polling alone (e.g. behind PgBouncer in transaction mode).
    #[arg(long, env = "OUTBOX_NO_LISTEN")]
    pub no_listen: bool,

    /// Delete published rows older than this (e.g. 24h, 7d). Off unless set. Dead rows are never deleted.
    #[arg(long, env = "OUTBOX_RETENTION", value_parser = parse_duration)]
    pub retention: Option<Duration>,
}

impl RunArgs {
    pub fn into_config(self) -> RelayConfig {
        RelayConfig {
            database_url: self.database.database_url,
            table: self.database.table,
            kafka_brokers: self.kafka_brokers,
            kafka_options: self.kafka_options,
            metrics_addr: self.metrics_addr,
            batch_size: self.batch_size,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            max_attempts: self.max_attempts,
            retry_backoff_base: Duration::from_millis(self.retry_backoff_base_ms),
            retry_backoff_max: Duration::from_secs(self.retry_backoff_max_secs),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            kafka_startup_timeout: Duration::from_secs(self.kafka_startup_timeout_secs),
            stats_interval: Duration::from_millis(self.stats_interval_ms.max(100)),
            listen: !self.no_listen,
            retention: self.retention,
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[group(id = "selection", required = true, multiple = false)]
pub struct RequeueArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Requeue these dead rows by id (comma-separated or repeated).
    #[arg(long = "id", value_delimiter = ',', group = "selection")]
    pub ids: Vec<i64>,

    /// Requeue every dead row of this topic.
    #[arg(long, group = "selection")]
    pub topic: Option<String>,

    /// Requeue every dead row.
    #[arg(long, group = "selection")]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Delete published rows published longer ago than this, e.g. 24h or 7d.
    #[arg(long, value_parser = parse_duration)]
    pub older_than: Duration,

    /// Rate limit in deleted rows per second (0: no limit).
    #[arg(long, default_value_t = 5000)]
    pub max_rows_per_sec: u32,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn requeue_needs_exactly_one_selection() {
        let base = ["outbox-relay", "requeue", "--database-url", "postgres://x"];
        assert!(Cli::try_parse_from(base).is_err());
        assert!(Cli::try_parse_from([&base[..], &["--all"]].concat()).is_ok());
        assert!(Cli::try_parse_from([&base[..], &["--all", "--topic", "t"]].concat()).is_err());
        let parsed =
            Cli::try_parse_from([&base[..], &["--id", "1,2", "--id", "3"]].concat()).unwrap();
        match parsed.command {
            Command::Requeue(args) => assert_eq!(args.ids, vec![1, 2, 3]),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn a_malformed_kafka_option_is_a_usage_error() {
        let result = Cli::try_parse_from([
            "outbox-relay",
            "run",
            "--database-url",
            "postgres://x",
            "--kafka-brokers",
            "localhost:9092",
            "--kafka-option",
            "linger.ms",
        ]);
        let error = result.unwrap_err().to_string();
        assert!(error.contains("KEY=VALUE"), "{error}");
    }
}
