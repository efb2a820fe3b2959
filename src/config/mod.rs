//! The relay's one configuration type, parsed by clap straight from flags and
//! environment, and the parsers for values that need more than a type check.
//!
//! Guarantees: a `RelayConfig` that passed `validate` has a non-empty,
//! well-formed broker list, sane batch and timing bounds, and Kafka options
//! that are at least `key=value` shaped (librdkafka checks the keys). No
//! password reaches `Debug` or `Display` output: the database URL and secret
//! Kafka options are redacted.

pub mod cli;
pub mod file;
pub mod nats;
pub mod redis;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::Args;

use crate::error::{Error, Result};
use crate::sinks::kafka::producer_defaults_help;
use crate::sinks::kafka::RecordTimestamp;
pub use crate::sinks::kafka::{KafkaOption, OptionOrigin};
use crate::sinks::{CloudEvents, MessageFormat};
use crate::source::layout::{Layout, PayloadKind, Preset};
use crate::source::table::TableName;
use crate::source::table_pattern::TableSelector;
pub use nats::NatsArgs;
pub use redis::RedisArgs;

/// Where the outbox table lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection string: a URL (postgres://relay@db:5432/app?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem)
    /// or libpq key=value pairs, with libpq's sslmode, sslrootcert, sslcert, sslkey,
    /// connect_timeout, application_name and target_session_attrs.
    /// (Required by every command that connects; `migrate --print-sql` does not.)
    #[arg(long, env = "OUTBOX_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,

    /// File holding the database password, used when the connection string has none. It is
    /// read again for every new connection, so a rotated secret is picked up without a restart.
    #[arg(long, env = "OUTBOX_DATABASE_PASSWORD_FILE", value_name = "FILE")]
    pub database_password_file: Option<PathBuf>,

    /// The outbox table, optionally schema-qualified (`schema.table`); names are case-sensitive.
    /// `run`, `migrate` and `status` also take a pattern, e.g. 'tenant_*.outbox' (`*` any run of
    /// characters, `?` one): every table it matches, including tables created later. [default:
    /// outbox]
    #[arg(long, env = "OUTBOX_TABLE")]
    pub table: Option<TableSelector>,

    /// `transaction` when a transaction-mode pooler (PgBouncer, RDS Proxy, Supavisor) is between
    /// the relay and PostgreSQL: no prepared statement or session setting outlives a transaction,
    /// and LISTEN is off (polling instead).
    #[arg(long, env = "OUTBOX_POOLER", value_enum, default_value_t = Pooler::None)]
    pub pooler: Pooler,

    #[command(flatten)]
    pub layout: LayoutArgs,
}

/// Which columns of the table make up a message.
#[derive(Debug, Clone, Default, Args)]
pub struct LayoutArgs {
    /// The table's layout: `relay` (the table `migrate` creates) or `debezium` (Debezium's
    /// outbox table: topic outbox.event.<aggregatetype>, key aggregateid, value payload, header
    /// id = the row's id).
    #[arg(long, env = "OUTBOX_LAYOUT", value_enum, default_value_t = Preset::Relay)]
    pub layout: Preset,

    /// Map a role to an existing column, ROLE=COLUMN; repeatable. Roles: topic, key, payload,
    /// headers, event_id, event_type (CloudEvents ce_type), sequence (the bigint that orders
    /// rows).
    #[arg(
        long = "column",
        value_name = "ROLE=COLUMN",
        value_delimiter = ',',
        env = "OUTBOX_COLUMNS"
    )]
    pub columns: Vec<String>,

    /// Send a column as a Kafka header, HEADER=COLUMN; repeatable (NULL sends no header).
    #[arg(
        long = "header-column",
        value_name = "HEADER=COLUMN",
        value_delimiter = ',',
        env = "OUTBOX_HEADER_COLUMNS"
    )]
    pub header_columns: Vec<String>,

    /// Derive the topic from columns, e.g. 'outbox.event.{aggregatetype}'. A row whose template
    /// yields no valid topic goes dead with the reason.
    #[arg(long, env = "OUTBOX_TOPIC_TEMPLATE", value_name = "TEMPLATE")]
    pub topic_template: Option<String>,
}

impl LayoutArgs {
    pub fn layout(&self) -> Result<Layout> {
        Ok(Layout::from_flags(
            self.layout,
            &self.columns,
            &self.header_columns,
            self.topic_template.as_deref(),
        )?)
    }
}

/// The table `--table` names when it is not given.
pub(crate) fn default_table() -> TableName {
    "outbox".parse().expect("a valid name")
}

/// Which broker the relay publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    #[default]
    Kafka,
    #[value(name = "rabbitmq")]
    #[serde(rename = "rabbitmq")]
    RabbitMq,
    Redis,
    Nats,
}

/// How replicas on one table share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Election {
    /// One replica leads (holds a session advisory lock), the others wait.
    AdvisoryLock,
    /// Every replica claims; rows are shared by row locks.
    None,
}

/// What happens to a row once Kafka acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnPublish {
    /// Set status `published` and `published_at`.
    Mark,
    /// Delete the row.
    Delete,
}

/// What sits between the relay and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooler {
    /// Direct connections, or a session-mode pooler.
    None,
    /// A transaction-mode pooler.
    Transaction,
}

impl DatabaseArgs {
    /// `--table`, or `outbox` when it was not given.
    pub fn selector(&self) -> TableSelector {
        self.table
            .clone()
            .unwrap_or_else(|| TableSelector::Name(default_table()))
    }

    /// The one table a command works on: refuses a pattern.
    pub fn single_table(&self) -> Result<TableName> {
        self.selector().single().cloned()
    }
}

/// Connections per database unless `--pool-size` (or the file's
/// `pool_size`) says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 10;

/// Everything `outbox-relay run` needs: the command line is this type, so
/// each setting is described once, here. Precedence is flag, then
/// environment variable, then default; [`RelayConfig::validate`] holds every
/// check clap cannot express.
#[derive(Debug, Clone, Args)]
pub struct RelayConfig {
    /// A configuration file (TOML) listing the databases and tables to serve, with per-table
    /// overrides and the Kafka settings; instead of --database-url and --table. The other flags
    /// apply to every table. `outbox-relay config check FILE` checks one.
    #[arg(long, env = "OUTBOX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The broker the relay publishes to: `kafka`, `rabbitmq`, `redis` or `nats` (or `sink` in
    /// the config file).
    /// [default: kafka]
    #[arg(long, env = "OUTBOX_SINK", value_enum)]
    pub sink: Option<SinkKind>,

    /// RabbitMQ: amqp://user:pass@host:5672/vhost or amqps://…, TLS set with RabbitMQ's URI
    /// parameters (cacertfile, certfile, keyfile, verify=verify_peer|verify_none,
    /// server_name_indication). Required with --sink rabbitmq (or `url` in the config file's
    /// [rabbitmq]).
    #[arg(
        long,
        env = "OUTBOX_RABBITMQ_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub rabbitmq_url: Option<crate::sinks::rabbitmq::RabbitUrl>,

    /// File holding the RabbitMQ password, when the URL has none; read again for every new
    /// connection.
    #[arg(long, env = "OUTBOX_RABBITMQ_PASSWORD_FILE", value_name = "FILE")]
    pub rabbitmq_password_file: Option<PathBuf>,

    /// The exchange rows are published to, with the row's topic as the routing key. The
    /// default exchange ("") routes to the queue the topic names. [default: ""]
    #[arg(long, env = "OUTBOX_RABBITMQ_EXCHANGE", value_name = "NAME")]
    pub rabbitmq_exchange: Option<String>,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub nats: NatsArgs,

    /// Kafka bootstrap brokers, comma-separated host:port (or `brokers` in the config file's
    /// [kafka]).
    #[arg(long, env = "OUTBOX_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Connections per database, shared by every table served there (at least 2).
    #[arg(long, env = "OUTBOX_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE, value_parser = parse_pool_size)]
    pub pool_size: usize,

    /// How often table patterns are looked up again (new tables served, dropped ones released);
    /// `migrate` also announces new tables at once.
    #[arg(long, env = "OUTBOX_DISCOVERY_INTERVAL", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub discovery_interval: Duration,

    /// Series per table: `per-table` (every metric for every table) or `aggregate` (summed over
    /// the tables as table="*", plus pending and oldest age of the 10 tables furthest behind):
    /// for relays serving many tables.
    #[arg(long, env = "OUTBOX_TABLE_METRICS", value_enum, default_value_t = crate::observe::metrics::TableSeries::PerTable)]
    pub table_metrics: crate::observe::metrics::TableSeries,

    /// A librdkafka client.properties file: key=value lines, # comments. Its settings override
    /// the relay's defaults; --kafka-option overrides both.
    #[arg(long, env = "OUTBOX_KAFKA_CONFIG", value_name = "FILE")]
    pub kafka_config: Option<PathBuf>,

    /// A librdkafka producer setting, KEY=VALUE; repeatable. Overrides the relay's defaults.
    #[arg(
        long = "kafka-option",
        value_name = "KEY=VALUE",
        value_parser = parse_kafka_option,
        long_help = producer_defaults_help()
    )]
    pub kafka_options: Vec<KafkaOption>,

    /// Address for /metrics, /healthz and /readyz: HOST:PORT, or :PORT for every interface.
    #[arg(long, env = "OUTBOX_METRICS_ADDR", default_value = "0.0.0.0:9874")]
    pub metrics_addr: MetricsAddr,

    /// Rows claimed per transaction (1 to 50000). Larger batches amortise
    /// round trips; every row of a batch stays locked until it is recorded.
    #[arg(long, env = "OUTBOX_BATCH_SIZE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub batch_size: u32,

    /// Backstop poll interval when idle, in milliseconds. With the NOTIFY trigger installed
    /// (`migrate --notify-trigger`) wake-ups come at once, and an idle table's poll doubles up to
    /// ten times this.
    #[arg(long = "poll-interval-ms", visible_alias = "poll-interval", env = "OUTBOX_POLL_INTERVAL_MS", value_name = "DURATION", default_value = "500", value_parser = parse_millis)]
    pub poll_interval: Duration,

    /// Attempts (the first included, at least 1) before a row that keeps failing becomes dead.
    /// Broker outages do not count.
    #[arg(long, env = "OUTBOX_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,

    /// First retry delay in milliseconds; it doubles per failed attempt, with jitter.
    #[arg(long = "retry-backoff-base-ms", visible_alias = "retry-backoff-base", env = "OUTBOX_RETRY_BACKOFF_BASE_MS", value_name = "DURATION", default_value = "1000", value_parser = parse_millis)]
    pub retry_backoff_base: Duration,

    /// Longest retry delay, in seconds.
    #[arg(long = "retry-backoff-max-secs", visible_alias = "retry-backoff-max", env = "OUTBOX_RETRY_BACKOFF_MAX_SECS", value_name = "DURATION", default_value = "300", value_parser = parse_secs)]
    pub retry_backoff_max: Duration,

    /// Upper bound on a graceful stop (finish the batch in flight, flush, record), in seconds.
    #[arg(long = "shutdown-timeout-secs", visible_alias = "shutdown-timeout", env = "OUTBOX_SHUTDOWN_TIMEOUT_SECS", value_name = "DURATION", default_value = "30", value_parser = parse_secs)]
    pub shutdown_timeout: Duration,

    /// Longest a claimed batch may wait for its Kafka acks, in seconds. Past it
    /// the claim transaction is rolled back and its rows stay pending (they go
    /// out again: duplicates, never losses). Bounds how long the relay holds a
    /// transaction open, which holds back vacuum on the whole database.
    #[arg(long = "claim-timeout-secs", visible_alias = "claim-timeout", env = "OUTBOX_CLAIM_TIMEOUT_SECS", value_name = "DURATION", default_value = "60", value_parser = parse_secs)]
    pub claim_timeout: Duration,

    /// How long start-up waits for the sink (a Kafka broker, RabbitMQ) to answer before giving
    /// up, in seconds.
    #[arg(long = "kafka-startup-timeout-secs", visible_aliases = ["kafka-startup-timeout", "startup-timeout-secs"], env = "OUTBOX_KAFKA_STARTUP_TIMEOUT_SECS", value_name = "DURATION", default_value = "15", value_parser = parse_secs)]
    pub kafka_startup_timeout: Duration,

    /// How often the backlog gauges are refreshed from the table, in milliseconds (at least 100).
    #[arg(long = "stats-interval-ms", visible_alias = "stats-interval", env = "OUTBOX_STATS_INTERVAL_MS", value_name = "DURATION", default_value = "5000", value_parser = parse_stats_interval)]
    pub stats_interval: Duration,

    /// Do not LISTEN for the NOTIFY trigger; rely on polling alone.
    #[arg(long, env = "OUTBOX_NO_LISTEN", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub no_listen: bool,

    /// How replicas on one table share it: `advisory-lock` (one leads and claims, the others
    /// stand by and take over within moments when it dies), or `none` (all claim). Off behind a
    /// transaction-mode pooler, where session locks do not hold.
    #[arg(long, env = "OUTBOX_ELECTION", value_enum, default_value_t = Election::AdvisoryLock)]
    pub election: Election,

    /// What recording a published row does: `mark` keeps it (status published, an audit trail
    /// that allows replays; delete it later with --retention or prune), `delete` removes it in
    /// the same transaction (faster, the table stays small; dead rows stay either way).
    #[arg(long, env = "OUTBOX_ON_PUBLISH", value_enum, default_value_t = OnPublish::Mark)]
    pub on_publish: OnPublish,

    /// How often to log a summary line (published per topic, retried, dead, pending, oldest age)
    /// when anything changed; 0 turns it off.
    #[arg(long, env = "OUTBOX_SUMMARY_INTERVAL", value_name = "DURATION", default_value = "60s", value_parser = parse_duration_or_zero)]
    pub summary_interval: Duration,

    /// Add CloudEvents binary-mode headers (ce_specversion, ce_id, ce_source, ce_type, ce_time,
    /// content-type) to every message; needs --cloudevents-source.
    #[arg(long, env = "OUTBOX_CLOUDEVENTS", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true", requires = "cloudevents_source")]
    pub cloudevents: bool,

    /// CloudEvents `source` (a URI reference, e.g. /orders-service).
    #[arg(long, env = "OUTBOX_CLOUDEVENTS_SOURCE", value_name = "URI")]
    pub cloudevents_source: Option<String>,

    /// CloudEvents `content-type` for bytea and text payloads (JSON payloads say
    /// application/json), e.g. application/protobuf.
    #[arg(
        long,
        env = "OUTBOX_CLOUDEVENTS_CONTENT_TYPE",
        value_name = "MEDIA_TYPE"
    )]
    pub cloudevents_content_type: Option<String>,

    /// The Kafka record timestamp: `send-time` (when the relay sends it) or `created-at` (the
    /// row's created_at, so consumers can measure end-to-end delay).
    #[arg(long, env = "OUTBOX_RECORD_TIMESTAMP", value_enum, default_value_t = RecordTimestamp::SendTime)]
    pub record_timestamp: RecordTimestamp,

    /// Delete published rows older than this (e.g. 24h, 7d). Off unless set. Dead rows are never deleted.
    #[arg(long, env = "OUTBOX_RETENTION", value_parser = parse_duration)]
    pub retention: Option<Duration>,

    /// Kafka only: publish each batch in one Kafka transaction with a checkpoint record, so
    /// consumers with isolation.level=read_committed see every row exactly once. Needs leader
    /// election (no --pooler transaction, no --election none). Also `exactly_once` in the
    /// configuration file, per table.
    #[arg(long, env = "OUTBOX_EXACTLY_ONCE", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub exactly_once: bool,

    /// The compacted topic --exactly-once commits each batch's checkpoint to (created, compacted,
    /// when missing).
    #[arg(long, env = "OUTBOX_CHECKPOINT_TOPIC", value_name = "TOPIC", default_value = crate::sinks::kafka::checkpoint::DEFAULT_CHECKPOINT_TOPIC)]
    pub checkpoint_topic: String,

    /// The table's `transactional.id`, from the configuration file's `transactional_id`;
    /// derived from the database and the table when not given.
    #[arg(skip)]
    pub transactional_id: Option<String>,
}

/// What `transaction.timeout.ms` adds to the claim timeout under
/// `--exactly-once`: time for the commit after the last ack.
pub const EXACTLY_ONCE_COMMIT_MARGIN: Duration = Duration::from_secs(10);

/// Shortest backlog refresh interval: the refresh scans the pending rows.
const MIN_STATS_INTERVAL: Duration = Duration::from_millis(100);

impl RelayConfig {
    /// The librdkafka options in force over the defaults: the
    /// `--kafka-config` file's, then the flags'. References (`${file:…}`,
    /// `${env:…}`) are left for the producer to resolve.
    pub fn kafka_settings(&self) -> Result<Vec<KafkaOption>> {
        let mut options = match &self.kafka_config {
            Some(path) => crate::sinks::kafka::read_properties(path)?,
            None => Vec::new(),
        };
        options.extend(self.kafka_options.iter().cloned());
        Ok(options)
    }

    /// How rows become messages, for a table whose payload is `payload`.
    pub fn message_format(&self, payload: PayloadKind) -> MessageFormat {
        let cloudevents = self.cloudevents.then(|| CloudEvents {
            source: self.cloudevents_source.clone().unwrap_or_default(),
            content_type: self.cloudevents_content_type.clone().or_else(|| {
                (payload == PayloadKind::Text).then(|| "text/plain; charset=utf-8".to_owned())
            }),
        });
        MessageFormat {
            payload,
            cloudevents,
        }
    }

    /// Range checks clap cannot express (the Kafka settings are checked
    /// with the plan, once the configuration file's are known).
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: &str| Err(Error::InvalidConfig(message.to_owned()));
        if self.poll_interval.is_zero() {
            return invalid("--poll-interval-ms must be at least 1");
        }
        if self.claim_timeout < Duration::from_millis(100) {
            return invalid(
                "--claim-timeout-secs must be at least 100ms: a batch needs time for its acks",
            );
        }
        if self.retry_backoff_base > self.retry_backoff_max {
            return invalid("--retry-backoff-base-ms must not exceed --retry-backoff-max-secs");
        }
        Ok(())
    }

    /// Why `--exactly-once` cannot be had with these settings, if it cannot:
    /// one Kafka producer per table needs exactly one writer, which only
    /// leader election ensures.
    pub fn exactly_once_refusal(&self, sink: SinkKind) -> Option<String> {
        if !self.exactly_once {
            return None;
        }
        if sink != SinkKind::Kafka {
            return Some(format!(
                "it is for Kafka only (the sink is {}); drop --exactly-once, or use --sink kafka",
                format!("{sink:?}").to_lowercase()
            ));
        }
        if self.database.pooler == Pooler::Transaction {
            return Some("it needs leader election, which needs session advisory locks, and --pooler transaction has none; connect the relay to PostgreSQL directly (or through a session-mode pooler), or drop --exactly-once".to_owned());
        }
        if self.election != Election::AdvisoryLock {
            return Some("it needs leader election (one transactional producer per table has exactly one writer), and --election none turns it off; use --election advisory-lock, or drop --exactly-once".to_owned());
        }
        None
    }

    /// How long a batch's Kafka transaction may stay open: a batch is
    /// recorded or released within the claim timeout, and the margin covers
    /// the commit itself.
    pub fn transaction_timeout(&self) -> Duration {
        self.claim_timeout + EXACTLY_ONCE_COMMIT_MARGIN
    }

    /// Whether replicas elect a leader: asked for, and possible (not behind a
    /// transaction-mode pooler).
    pub fn elects_leader(&self) -> bool {
        self.election == Election::AdvisoryLock && self.database.pooler == Pooler::None
    }

    /// LISTEN for wake-ups: not asked to stay off, and no transaction-mode
    /// pooler in the way (a LISTEN there would be lost with its server
    /// connection).
    pub fn listen(&self) -> bool {
        !self.no_listen && self.database.pooler == Pooler::None
    }
}

/// A PostgreSQL connection string. It usually holds a password, so its
/// `Debug` and `Display` show it with the password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The string itself, with its password: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        DatabaseUrl(url)
    }
}

impl FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    /// Any string: the driver parses it when connecting, with an error that
    /// names the flag.
    fn from_str(value: &str) -> std::result::Result<Self, Self::Err> {
        Ok(DatabaseUrl(value.to_owned()))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_password(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", redact_password(&self.0))
    }
}

/// Replace the password in a `postgres://user:password@host` URL or a
/// `password=…` key-value pair with `***`.
pub(crate) fn redact_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let query = redact_query(tail);
        let Some(at) = authority.rfind('@') else {
            return format!("{scheme}://{authority}{query}");
        };
        let (userinfo, host) = authority.split_at(at);
        let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
        let password = if userinfo.contains(':') { ":***" } else { "" };
        return format!("{scheme}://{user}{password}{host}{query}");
    }
    // A libpq key=value string, read as libpq reads it: a quoted password
    // may hold spaces. One that cannot be read is not shown at all.
    match crate::source::connect::key_value_pairs(url) {
        Ok(pairs) => pairs
            .iter()
            .map(|(key, value)| match key.as_str() {
                "password" => format!("{key}=***"),
                _ => format!("{key}={value}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "(a connection string that cannot be read; not shown)".to_owned(),
    }
}

/// `password=…` becomes `password=***` in the `a=b&password=c` query of a
/// URL.
fn redact_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (index, part) in text.split('&').enumerate() {
        if index > 0 {
            out.push('&');
        }
        let key = part.split('=').next().unwrap_or("");
        let bare_key = key.trim_start_matches('?').trim();
        if bare_key == "password" && part.contains('=') {
            out.push_str(key);
            out.push_str("=***");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// Parser for `--kafka-option`: `key=value`, key non-empty, value may be empty
/// or contain `=`.
pub fn parse_kafka_option(raw: &str) -> std::result::Result<KafkaOption, String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok(KafkaOption {
            key: key.trim().to_owned(),
            value: value.to_owned(),
            origin: OptionOrigin::Flag,
        }),
        _ => Err("expected KEY=VALUE, e.g. --kafka-option linger.ms=5".to_owned()),
    }
}

/// Refuse `acks=0`: without acknowledgements no row could be marked.
pub fn check_acks(options: &[KafkaOption]) -> Result<()> {
    let acks = options
        .iter()
        .rev()
        .find(|o| matches!(o.key.as_str(), "acks" | "request.required.acks"));
    if acks.is_some_and(|o| o.value.trim() == "0") {
        return Err(Error::InvalidConfig("--kafka-option acks=0 gives no acknowledgement to mark rows by; use acks=all (the default) or acks=1".to_owned()));
    }
    Ok(())
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

/// Parser for the `_ms` flags: a duration (`500ms`, `2s`), or a bare number
/// of milliseconds as these flags always took.
pub fn parse_millis(raw: &str) -> std::result::Result<Duration, String> {
    match raw.trim().parse() {
        Ok(millis) => Ok(Duration::from_millis(millis)),
        Err(_) => parse_duration(raw),
    }
}

/// Parser for the `_secs` flags: a duration (`30s`, `5m`), or a bare number
/// of seconds as these flags always took.
pub fn parse_secs(raw: &str) -> std::result::Result<Duration, String> {
    match raw.trim().parse() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => parse_duration(raw),
    }
}

/// [`parse_duration`], also accepting `0` (off).
fn parse_duration_or_zero(raw: &str) -> std::result::Result<Duration, String> {
    if raw.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(raw)
}

fn parse_pool_size(raw: &str) -> std::result::Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(size) if (2..=100).contains(&size) => Ok(size),
        _ => Err("expected 2 to 100 connections (a table uses two while it sends)".to_owned()),
    }
}

fn parse_stats_interval(raw: &str) -> std::result::Result<Duration, String> {
    parse_millis(raw).map(|interval| interval.max(MIN_STATS_INTERVAL))
}

/// Parse a duration: one or more number-unit pairs, units `ms`, `s`, `m`,
/// `h`, `d` — `30s`, `1h30m`, `7d`, `250ms`.
pub fn parse_duration(raw: &str) -> std::result::Result<Duration, String> {
    let usage = || format!("expected a duration such as 30s, 1h30m, 7d or 250ms; got {raw:?}");
    let mut rest = raw.trim();
    if rest.is_empty() {
        return Err(usage());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let amount: u64 = rest[..digits].parse().map_err(|_| usage())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(usage()),
        };
        total += unit * u32::try_from(amount).map_err(|_| usage())?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// `--metrics-addr`: `HOST:PORT` (a name or an address) or `:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsAddr(String);

impl FromStr for MetricsAddr {
    type Err = String;

    fn from_str(raw: &str) -> std::result::Result<Self, Self::Err> {
        let raw = raw.trim();
        let usage =
            || format!("expected HOST:PORT or :PORT, e.g. 127.0.0.1:9874 or :9874; got {raw:?}");
        let (host, port) = raw.rsplit_once(':').ok_or_else(usage)?;
        port.parse::<u16>().map_err(|_| usage())?;
        let host = match host {
            "" => "0.0.0.0",
            host => host,
        };
        Ok(MetricsAddr(format!("{host}:{port}")))
    }
}

impl fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
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
    fn no_password_reaches_debug_or_display() {
        for (url, shown) in [
            (
                "postgres://relay:s3cret@db:5432/app?sslmode=require",
                "postgres://relay:***@db:5432/app?sslmode=require",
            ),
            ("postgresql://relay@db/app", "postgresql://relay@db/app"),
            (
                "postgres://db/app?user=relay&password=s3cret",
                "postgres://db/app?user=relay&password=***",
            ),
            (
                "host=db user=relay password=s3cret dbname=app",
                "host=db user=relay password=*** dbname=app",
            ),
            (
                r"host=db password = 'has s3cret spaces\' too' dbname=app",
                "host=db password=*** dbname=app",
            ),
            (
                "host=db password='unclosed s3cret",
                "(a connection string that cannot be read; not shown)",
            ),
            (
                "postgres://relay:p@ss@w0rd@db/app",
                "postgres://relay:***@db/app",
            ),
        ] {
            let url: DatabaseUrl = url.parse().unwrap();
            assert_eq!(url.to_string(), shown);
            assert!(!format!("{url:?}").contains("s3cret"));
            assert!(!format!("{url:?}").contains("w0rd"));
        }
        let option = parse_kafka_option("sasl.password=s3cret").unwrap();
        assert_eq!(format!("{option:?}"), "sasl.password=\"***\"");
        let option = parse_kafka_option("linger.ms=5").unwrap();
        assert_eq!(format!("{option:?}"), "linger.ms=\"5\"");
    }

    #[test]
    fn millisecond_and_second_flags_become_durations() {
        assert_eq!(parse_millis("250").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_secs("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_stats_interval("5").unwrap(), MIN_STATS_INTERVAL);
        assert!(parse_millis("1x").is_err());
    }

    #[test]
    fn durations_take_units_and_combine() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        for bad in ["", "h", "10", "10w", "-1h", "1h30", "5 s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        // The old flags keep their bare numbers.
        assert_eq!(parse_millis("500").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_millis("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_secs("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_secs("1m").unwrap(), Duration::from_secs(60));
    }

    #[test]
    fn metrics_addresses_take_names_and_a_bare_port() {
        assert_eq!(
            ":9874".parse::<MetricsAddr>().unwrap().to_string(),
            "0.0.0.0:9874"
        );
        assert_eq!(
            "localhost:9874".parse::<MetricsAddr>().unwrap().to_string(),
            "localhost:9874"
        );
        for bad in ["9874", "localhost", ":x", "host:70000"] {
            assert!(bad.parse::<MetricsAddr>().is_err(), "{bad:?} was accepted");
        }
    }
}
