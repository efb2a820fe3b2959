//! The command line: subcommands, flags and their environment fallbacks.
//! Precedence is flag, then environment variable, then default. `run`'s
//! flags are the fields of [`RelayConfig`].

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{parse_duration, DatabaseArgs, RelayConfig};

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
    Run(Box<RelayConfig>),
    /// Show the backlog: pending rows, oldest pending age and dead rows, overall and per topic.
    Status(StatusArgs),
    /// Move dead rows back to pending (attempts reset) so the relay retries them.
    Requeue(RequeueArgs),
    /// Delete published rows older than a given age, in small batches.
    Prune(PruneArgs),
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
