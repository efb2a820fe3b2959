//! The command line: subcommands, flags and their environment fallbacks.
//! Precedence is flag, then environment variable, then default. `run`'s
//! flags are the fields of [`RelayConfig`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::{parse_duration, DatabaseArgs, Pooler, RelayConfig};
use crate::error::Result;
use crate::source::table::TableName;
use crate::source::{KeyType, PartitionUnit, PayloadType};

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

impl Cli {
    /// Parse the command line (and environment); exit 2 on a usage error.
    /// A bad value that came from an environment variable is reported as
    /// that variable's, not the flag's: the user never typed the flag.
    pub fn parse_or_exit() -> Self {
        match Cli::try_parse() {
            Ok(cli) => cli,
            Err(error) => match env_source(&error) {
                Some(line) => {
                    eprintln!("error: {line}");
                    std::process::exit(2);
                }
                None => error.exit(),
            },
        }
    }
}

/// For a bad value that was read from an environment variable: one line
/// naming the variable, the value and what the flag accepts.
fn env_source(error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let text = |kind| match error.get(kind) {
        Some(ContextValue::String(value)) => Some(value.clone()),
        _ => None,
    };
    let flag = text(ContextKind::InvalidArg)?;
    let value = text(ContextKind::InvalidValue)?;
    let long = flag
        .split_whitespace()
        .next()?
        .trim_start_matches("--")
        .to_owned();
    let command = Cli::command();
    let arg = std::iter::once(&command)
        .chain(command.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long.as_str()))?;
    let variable = arg.get_env()?.to_string_lossy().into_owned();
    let typed_on_command_line = std::env::args().any(|a| a.starts_with(&format!("--{long}")));
    if typed_on_command_line || std::env::var(&variable).ok()? != value {
        return None;
    }
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    // "invalid value 'x' for '--flag <X>': why" → "why"
    let reason = first
        .rsplit_once("': ")
        .map_or(first, |(_, why)| why)
        .to_owned();
    let accepted = match error.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(values)) => format!("; use one of {}", values.join(", ")),
        _ => String::new(),
    };
    Some(format!(
        "invalid value {value:?} in environment variable {variable} (for --{long}): {reason}{accepted}"
    ))
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
    /// Show the backlog: pending rows, oldest pending age and dead rows, overall and per topic
    /// (for several tables: a line per table, the furthest behind first).
    Status(StatusArgs),
    /// Work with a configuration file: `config check FILE` validates it and shows the tables it
    /// names now.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List dead rows: id, topic, key, attempts, last attempt and last error.
    Dead(DeadArgs),
    /// Move dead rows back to pending (attempts reset) so the relay retries them.
    Requeue(RequeueArgs),
    /// Delete published rows older than a given age, in small batches.
    Prune(PruneArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `outbox-relay man > outbox-relay.1`.
    Man,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate FILE (exit 1 on a mistake, naming its line) and print what it resolves to: each
    /// source, its tables, and how many tables each pattern matches now.
    Check {
        /// The configuration file (TOML).
        file: PathBuf,
        /// Check the file only; do not connect to the databases.
        #[arg(long)]
        offline: bool,
    },
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Migrate every table a configuration file names (every match of its patterns), or with
    /// --table only that table (e.g. a new tenant: its schema is created if missing).
    #[arg(long, env = "OUTBOX_CONFIG", value_name = "FILE", conflicts_with_all = ["print_sql", "adopt"])]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Also install the trigger that NOTIFYs the relay on insert (lower latency when idle).
    #[arg(long, env = "OUTBOX_NOTIFY_TRIGGER", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub notify_trigger: bool,

    /// Print the DDL instead of running it (no connection is made), for DBAs who apply
    /// migrations themselves.
    #[arg(long, conflicts_with = "adopt")]
    pub print_sql: bool,

    /// The sink the table's rows go to, which decides the rule of its `topic` CHECK: `kafka`
    /// (topic names: 1 to 249 of letters, digits, '.', '_', '-'), or `rabbitmq` and `redis` (routing
    /// keys and Redis keys such as orders:created: any UTF-8 of 1 to 255 bytes), or `nats`
    /// (subjects: dot-separated tokens, no whitespace, no wildcard). Running it again with another
    /// sink replaces the rule.
    #[arg(long, env = "OUTBOX_SINK", value_enum, default_value_t = crate::config::SinkKind::Kafka)]
    pub sink: crate::config::SinkKind,

    /// Adopt an existing table (with --layout, --column, ...): add the relay's columns, checks
    /// and indexes without rewriting or blocking it; existing rows become pending.
    #[arg(long)]
    pub adopt: bool,

    /// The payload column's type in a new table: jsonb (sent as JSON), bytea (sent byte for
    /// byte: Protobuf, Avro) or text.
    #[arg(long, value_enum, default_value_t = PayloadType::Jsonb, conflicts_with = "adopt")]
    pub payload_type: PayloadType,

    /// The key column's type in a new table: text or bytea.
    #[arg(long, value_enum, default_value_t = KeyType::Text, conflicts_with = "adopt")]
    pub key_type: KeyType,

    /// Make a new table range-partitioned on created_at (UTC) by day or hour, with a default
    /// partition and partitions 3 ahead; `run` keeps creating them and `--retention` drops
    /// whole partitions.
    #[arg(long, value_enum, value_name = "UNIT", conflicts_with = "adopt")]
    pub partition_by: Option<PartitionUnit>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show every table a configuration file names.
    #[arg(long, env = "OUTBOX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Exit 1 when rows are dead or the oldest pending row is older than --max-lag
    /// (for scripts and cron); 0 otherwise.
    #[arg(long)]
    pub check: bool,

    /// With --check: the oldest pending age still healthy, e.g. 5m, 30s.
    #[arg(long, default_value = "5m", value_parser = parse_duration, requires = "check")]
    pub max_lag: Duration,
}

#[derive(Debug, Args)]
pub struct DeadArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Only dead rows of this topic.
    #[arg(long)]
    pub topic: Option<String>,

    /// At most this many rows (oldest first).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..))]
    pub limit: i64,

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

    /// Say how many rows would be requeued, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
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

    /// Say how many rows would be deleted, and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Opening the database of a command that works on one table. Here, not
/// beside [`DatabaseArgs`], because a missing `--database-url` is reported
/// as this command line's usage error.
impl DatabaseArgs {
    /// A pool of `pool_size` connections to the outbox table's database,
    /// for a command that works on one table. Exits 2, as a usage error, if
    /// no `--database-url` was given.
    pub fn open(&self, pool_size: usize) -> Result<crate::source::Database> {
        let table = self.single_table()?;
        self.open_for(&table, pool_size)
    }

    /// [`open`](Self::open), for `table`.
    pub fn open_for(&self, table: &TableName, pool_size: usize) -> Result<crate::source::Database> {
        let Some(url) = &self.database_url else {
            use clap::CommandFactory;
            Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "the following required argument was not provided: --database-url <DATABASE_URL> (or OUTBOX_DATABASE_URL)",
                )
                .exit();
        };
        let options = crate::source::ConnectOptions {
            password_file: self.database_password_file.as_deref(),
            pooler_safe: self.pooler == Pooler::Transaction,
        };
        let layout = self.layout.layout()?;
        Ok(
            crate::source::Database::open(url.expose(), &options, table, pool_size)?
                .with_layout(layout),
        )
    }
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

    fn run_config(extra: &[&str]) -> RelayConfig {
        let base = ["outbox-relay", "run", "--database-url", "postgres://x"];
        match Cli::try_parse_from([&base[..], extra].concat())
            .unwrap()
            .command
        {
            Command::Run(config) => *config,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn exactly_once_is_refused_where_one_writer_per_table_is_not_assured() {
        use crate::config::SinkKind;
        let fine = run_config(&["--exactly-once"]);
        assert_eq!(fine.exactly_once_refusal(SinkKind::Kafka), None);
        assert_eq!(run_config(&[]).exactly_once_refusal(SinkKind::Redis), None);
        let pooler = run_config(&["--exactly-once", "--pooler", "transaction"]);
        let reason = pooler.exactly_once_refusal(SinkKind::Kafka).unwrap();
        assert!(reason.contains("--pooler transaction"), "{reason}");
        let election = run_config(&["--exactly-once", "--election", "none"]);
        let reason = election.exactly_once_refusal(SinkKind::Kafka).unwrap();
        assert!(reason.contains("--election none"), "{reason}");
        let reason = fine.exactly_once_refusal(SinkKind::Nats).unwrap();
        assert!(
            reason.contains("Kafka only") && reason.contains("nats"),
            "{reason}"
        );
        assert_eq!(
            fine.transaction_timeout(),
            fine.claim_timeout + crate::config::EXACTLY_ONCE_COMMIT_MARGIN
        );
    }
}
