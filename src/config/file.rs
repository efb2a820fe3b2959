//! The configuration file (`--config FILE`, `OUTBOX_CONFIG`): the sources a
//! relay serves (databases, each with its tables or table patterns and their
//! overrides) and the Kafka settings, given once.
//!
//! TOML, because it has comments, no significant indentation, and a parser
//! that reports the line of every mistake (and it is what Rust tools use).
//! Guarantees: a file that loads is well-formed in every field the relay
//! reads; each mistake is one line, `FILE:LINE: field: what is wrong`. No
//! table is listed twice for one database. The database URL's password
//! never reaches any output (it is a [`DatabaseUrl`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::config::{
    parse_kafka_option, validate_brokers, DatabaseArgs, DatabaseUrl, KafkaOption, LayoutArgs,
    Pooler, SinkKind, DEFAULT_POOL_SIZE,
};
use crate::error::{Error, Result};
use crate::source::layout::Preset;
use crate::source::table_pattern::TableSelector;

/// Connections per database when the file does not say.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    sink: Option<SinkKind>,
    kafka: Option<RawKafka>,
    rabbitmq: Option<RawRabbitMq>,
    redis: Option<super::redis::RedisSection>,
    nats: Option<super::nats::NatsSection>,
    #[serde(default, rename = "source")]
    sources: Vec<Spanned<RawSource>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    brokers: Option<Spanned<String>>,
    config: Option<PathBuf>,
    #[serde(default)]
    options: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRabbitMq {
    url: Option<Spanned<String>>,
    password_file: Option<PathBuf>,
    exchange: Option<String>,
}

/// The file's `[rabbitmq]`: what the flags of the same names say.
#[derive(Debug, Clone, Default)]
pub struct RabbitMqSection {
    pub url: Option<crate::sinks::rabbitmq::RabbitUrl>,
    pub password_file: Option<PathBuf>,
    pub exchange: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Option<String>,
    database_url: Spanned<String>,
    database_password_file: Option<PathBuf>,
    #[serde(default)]
    pooler: Option<Pooler>,
    pool_size: Option<Spanned<usize>>,
    #[serde(default, rename = "table")]
    tables: Vec<Spanned<RawTable>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: Spanned<String>,
    layout: Option<Preset>,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    header_columns: Vec<String>,
    topic_template: Option<String>,
    batch_size: Option<Spanned<u32>>,
    max_attempts: Option<Spanned<u32>>,
    exactly_once: Option<bool>,
    transactional_id: Option<String>,
}

/// A loaded configuration file.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub kafka_brokers: Option<String>,
    pub kafka_settings: Vec<KafkaOption>,
    /// `sink = "kafka" | "rabbitmq" | "redis" | "nats"`.
    pub sink: Option<SinkKind>,
    pub rabbitmq: RabbitMqSection,
    /// `[redis]`, checked when the sink opens.
    pub redis: Option<super::redis::RedisSection>,
    /// `[nats]`, checked when the sink opens.
    pub nats: Option<super::nats::NatsSection>,
    pub sources: Vec<Source>,
}

/// One database and the tables the relay serves in it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The source's `name`, or its database's `host:port/dbname`.
    pub name: String,
    pub line: usize,
    pub database: DatabaseArgs,
    pub pool_size: usize,
    pub tables: Vec<TableEntry>,
}

impl Source {
    /// The single-table flags as a source: `database` (whose URL is `url`)
    /// and its `--table`, with no overrides.
    pub fn from_flags(
        database: &DatabaseArgs,
        url: &DatabaseUrl,
        pool_size: usize,
    ) -> Result<Self> {
        Ok(Source {
            name: crate::source::target_of(url.expose())?,
            line: 0,
            database: database.clone(),
            pool_size,
            tables: vec![TableEntry {
                line: 0,
                selector: database.selector(),
                layout: database.layout.clone(),
                batch_size: None,
                max_attempts: None,
                exactly_once: None,
                transactional_id: None,
            }],
        })
    }

    /// A pool of `pool_size` connections to the source's database; its
    /// tables are opened on it ([`crate::source::Database::for_table`]).
    pub fn open_pool(&self, pool_size: usize) -> Result<crate::source::Database> {
        self.database
            .open_for(&crate::config::default_table(), pool_size)
    }
}

/// A table or pattern, with what it overrides.
#[derive(Debug, Clone)]
pub struct TableEntry {
    /// The line of its `name` (0: from the command line).
    pub line: usize,
    pub selector: TableSelector,
    pub layout: LayoutArgs,
    pub batch_size: Option<u32>,
    pub max_attempts: Option<u32>,
    /// `exactly_once`: overrides `--exactly-once` for this table.
    pub exactly_once: Option<bool>,
    /// `transactional_id`: the table's own, instead of the derived one.
    pub transactional_id: Option<String>,
}

/// One mistake in a file: where and what.
struct Mistake<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Mistake<'_> {
    fn at(&self, offset: usize, field: &str, message: impl std::fmt::Display) -> Error {
        Error::ConfigFile(format!(
            "{}:{}: {field}: {message}",
            self.path.display(),
            line_of(self.text, offset)
        ))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The key of the `key = value` line holding `offset`, if it is one.
fn key_at(text: &str, offset: usize) -> Option<&str> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let (key, _) = text[start..end].split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then_some(key)
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::ConfigFile(format!(
                "{}: cannot read the configuration file: {e}",
                path.display()
            ))
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let mistake = Mistake { path, text };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |span| span.start);
            let message = e.message().trim_end().replace('\n', " ");
            let field = key_at(text, offset).map_or(String::new(), |key| format!("{key}: "));
            Error::ConfigFile(format!(
                "{}:{}: {field}{message}",
                path.display(),
                line_of(text, offset)
            ))
        })?;
        let (kafka_brokers, kafka_settings) = match raw.kafka {
            Some(kafka) => kafka_section(kafka, &mistake)?,
            None => (None, Vec::new()),
        };
        let rabbitmq = match raw.rabbitmq {
            Some(section) => rabbitmq_section(section, &mistake)?,
            None => RabbitMqSection::default(),
        };
        if raw.sources.is_empty() {
            return Err(Error::ConfigFile(format!(
                "{}: source: the file lists no source; add a [[source]] with a database_url and a [[source.table]]",
                path.display()
            )));
        }
        let mut sources = Vec::new();
        for source in raw.sources {
            sources.push(source_entry(source, &mistake)?);
        }
        refuse_duplicates(&sources, &mistake)?;
        Ok(ConfigFile {
            path: path.to_owned(),
            kafka_brokers,
            kafka_settings,
            sink: raw.sink,
            rabbitmq,
            redis: raw.redis,
            nats: raw.nats,
            sources,
        })
    }
}

/// The `[rabbitmq]` section: a URL that parses, the password file and the
/// exchange.
fn rabbitmq_section(raw: RawRabbitMq, mistake: &Mistake) -> Result<RabbitMqSection> {
    let url = match raw.url {
        Some(url) => Some(
            crate::sinks::rabbitmq::RabbitUrl::parse(url.get_ref())
                .map_err(|e| mistake.at(url.span().start, "rabbitmq.url", e))?,
        ),
        None => None,
    };
    Ok(RabbitMqSection {
        url,
        password_file: raw.password_file,
        exchange: raw.exchange,
    })
}

fn kafka_section(
    kafka: RawKafka,
    mistake: &Mistake<'_>,
) -> Result<(Option<String>, Vec<KafkaOption>)> {
    if let Some(brokers) = &kafka.brokers {
        validate_brokers(brokers.get_ref())
            .map_err(|e| mistake.at(brokers.span().start, "kafka.brokers", e))?;
    }
    let mut settings = match &kafka.config {
        Some(path) => crate::sinks::kafka::read_properties(path)?,
        None => Vec::new(),
    };
    for (key, value) in kafka.options {
        let text = match value.get_ref() {
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(mistake.at(
                    value.span().start,
                    &format!("kafka.options.{key}"),
                    "expected a string, number or boolean",
                ))
            }
        };
        let mut option = parse_kafka_option(&format!("{key}={text}"))
            .map_err(|e| mistake.at(value.span().start, &format!("kafka.options.{key}"), e))?;
        option.origin = crate::config::OptionOrigin::File(mistake.path.to_owned());
        settings.push(option);
    }
    Ok((kafka.brokers.map(Spanned::into_inner), settings))
}

fn source_entry(source: Spanned<RawSource>, mistake: &Mistake<'_>) -> Result<Source> {
    let line = line_of(mistake.text, source.span().start);
    let source = source.into_inner();
    let url = source.database_url.get_ref();
    let target = crate::source::target_of(url).map_err(|e| {
        mistake.at(
            source.database_url.span().start,
            "source.database_url",
            e.to_string().trim_start_matches("invalid --database-url: "),
        )
    })?;
    let pool_size = match &source.pool_size {
        Some(size) if !(2..=100).contains(size.get_ref()) => {
            return Err(mistake.at(
                size.span().start,
                "source.pool_size",
                "must be between 2 and 100 (a table uses two connections while it sends)",
            ))
        }
        Some(size) => *size.get_ref(),
        None => DEFAULT_POOL_SIZE,
    };
    if source.tables.is_empty() {
        return Err(mistake.at(
            source.database_url.span().start,
            "source.table",
            "this source lists no table; add a [[source.table]] with a name (or a pattern such as tenant_*.outbox)",
        ));
    }
    let mut tables = Vec::new();
    for table in source.tables {
        tables.push(table_entry(table, mistake)?);
    }
    Ok(Source {
        name: source.name.unwrap_or(target),
        line,
        database: DatabaseArgs {
            database_url: Some(DatabaseUrl::from(source.database_url.into_inner())),
            database_password_file: source.database_password_file,
            table: None,
            pooler: source.pooler.unwrap_or(Pooler::None),
            layout: LayoutArgs::default(),
        },
        pool_size,
        tables,
    })
}

fn table_entry(table: Spanned<RawTable>, mistake: &Mistake<'_>) -> Result<TableEntry> {
    let table = table.into_inner();
    let name_at = table.name.span().start;
    let line = line_of(mistake.text, name_at);
    let selector: TableSelector = table
        .name
        .get_ref()
        .parse()
        .map_err(|e| mistake.at(name_at, "source.table.name", e))?;
    let layout = LayoutArgs {
        layout: table.layout.unwrap_or_default(),
        columns: table.columns,
        header_columns: table.header_columns,
        topic_template: table.topic_template,
    };
    layout
        .layout()
        .map_err(|e| mistake.at(name_at, "source.table", e))?;
    if let Some(size) = &table.batch_size {
        if !(1..=50_000).contains(size.get_ref()) {
            return Err(mistake.at(
                size.span().start,
                "source.table.batch_size",
                "must be between 1 and 50000",
            ));
        }
    }
    if let Some(attempts) = &table.max_attempts {
        if *attempts.get_ref() == 0 {
            return Err(mistake.at(
                attempts.span().start,
                "source.table.max_attempts",
                "must be at least 1 (the first attempt counts)",
            ));
        }
    }
    Ok(TableEntry {
        line,
        selector,
        layout,
        batch_size: table.batch_size.map(Spanned::into_inner),
        max_attempts: table.max_attempts.map(Spanned::into_inner),
        exactly_once: table.exactly_once,
        transactional_id: table.transactional_id,
    })
}

/// The same table named twice for one database (by the same URL or two that
/// reach the same `host:port/dbname`). Patterns that overlap are found when
/// the tables are (`config check`, `run`).
fn refuse_duplicates(sources: &[Source], mistake: &Mistake<'_>) -> Result<()> {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for source in sources {
        let url = source
            .database
            .database_url
            .as_ref()
            .expect("sources have a URL");
        let target = crate::source::target_of(url.expose())?;
        for table in &source.tables {
            let TableSelector::Name(name) = &table.selector else {
                continue;
            };
            let qualified = name.to_string();
            if let Some(first) = seen.insert((target.clone(), qualified.clone()), table.line) {
                return Err(Error::ConfigFile(format!(
                    "{}:{}: source.table.name: table {qualified} in {target} is already listed at line {first}; list each table once",
                    mistake.path.display(),
                    table.line
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile> {
        ConfigFile::parse(Path::new("relay.toml"), text)
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const GOOD: &str = r#"
[kafka]
brokers = "localhost:9092"
options = { "linger.ms" = 5, "compression.type" = "zstd" }

[[source]]
name = "orders"
database_url = "postgres://relay:s3cret@db:5432/orders"

[[source.table]]
name = "public.outbox"

[[source.table]]
name = "billing.outbox"
layout = "debezium"
batch_size = 500
max_attempts = 3

[[source]]
database_url = "postgres://relay@db2/tenants"
pool_size = 8

[[source.table]]
name = "tenant_*.outbox"
"#;

    #[test]
    fn a_table_may_ask_for_exactly_once_with_its_own_transactional_id() {
        let text = GOOD.replace(
            "max_attempts = 3",
            "max_attempts = 3\nexactly_once = true\ntransactional_id = \"billing-outbox\"",
        );
        let file = parse(&text).unwrap();
        let billing = &file.sources[0].tables[1];
        assert_eq!(billing.exactly_once, Some(true));
        assert_eq!(billing.transactional_id.as_deref(), Some("billing-outbox"));
        assert_eq!(file.sources[0].tables[0].exactly_once, None);
    }

    #[test]
    fn a_good_file_loads_with_its_overrides() {
        let file = parse(GOOD).unwrap();
        assert_eq!(file.kafka_brokers.as_deref(), Some("localhost:9092"));
        assert_eq!(file.kafka_settings.len(), 2);
        assert_eq!(file.sources.len(), 2);
        let orders = &file.sources[0];
        assert_eq!(orders.name, "orders");
        assert_eq!(orders.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(orders.tables[1].batch_size, Some(500));
        assert_eq!(orders.tables[1].layout.layout, Preset::Debezium);
        assert_eq!(orders.tables[1].line, 14);
        assert_eq!(file.sources[1].name, "db2:5432/tenants");
        assert!(file.sources[1].tables[0].selector.is_pattern());
        assert!(!format!("{file:?}").contains("s3cret"));
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let text = GOOD.replace("batch_size = 500", "batch_sise = 500");
        let line = error(&text);
        assert!(line.starts_with("relay.toml:16:"), "{line}");
        assert!(line.contains("batch_sise"), "{line}");
    }

    #[test]
    fn a_table_listed_twice_for_one_database_is_refused() {
        let text = format!(
            "{GOOD}\n[[source]]\ndatabase_url = \"host=db port=5432 dbname=orders user=other\"\n[[source.table]]\nname = \"billing.outbox\"\n"
        );
        let line = error(&text);
        assert!(line.starts_with("relay.toml:29:"), "{line}");
        assert!(line.contains("already listed at line 14"), "{line}");
    }

    #[test]
    fn bad_values_name_their_field() {
        for (from, to, field) in [
            (
                "batch_size = 500",
                "batch_size = 0",
                "source.table.batch_size",
            ),
            ("pool_size = 8", "pool_size = 1", "source.pool_size"),
            (
                "\"tenant_*.outbox\"",
                "\"tenant-*.outbox\"",
                "source.table.name",
            ),
            ("\"localhost:9092\"", "\"localhost\"", "kafka.brokers"),
            ("layout = \"debezium\"", "layout = \"other\"", "layout"),
        ] {
            let line = error(&GOOD.replace(from, to));
            assert!(line.starts_with("relay.toml:"), "{line}");
            assert!(line.contains(field), "{to}: {line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn a_file_without_sources_or_tables_says_what_to_add() {
        assert!(error("[kafka]\nbrokers = \"k:9092\"\n").contains("[[source]]"));
        assert!(error("[[source]]\ndatabase_url = \"postgres://db/app\"\n")
            .contains("[[source.table]]"));
    }

    #[test]
    fn an_unreadable_file_is_one_line_naming_it() {
        let line = ConfigFile::load(Path::new("/nonexistent/relay.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            line.contains("/nonexistent/relay.toml: cannot read"),
            "{line}"
        );
    }
}
