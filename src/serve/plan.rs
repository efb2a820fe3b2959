//! What `run` serves: the sources (databases and their tables or patterns)
//! and the Kafka settings, from the configuration file or from the
//! single-table flags, which are the same as a file with one source.
//!
//! Guarantees: a plan has a valid broker list and Kafka options without
//! `acks=0`; every table a plan serves gets a [`RelayConfig`] of its own,
//! the process-wide flags with the table's overrides.

use crate::config::file::{ConfigFile, Source, TableEntry};
use crate::config::{check_acks, validate_brokers, KafkaOption, RelayConfig, SinkKind};
use crate::error::{Error, Result};
use crate::sinks::SinkSettings;
use crate::source::table::TableName;
use crate::source::table_pattern::TableSelector;

#[derive(Debug, Clone)]
pub struct Plan {
    /// The sink and what opening it needs.
    pub sink: SinkSettings,
    pub sources: Vec<Source>,
    /// The file it came from, for messages.
    pub file: Option<std::path::PathBuf>,
    /// Some table is served `--exactly-once`.
    pub exactly_once: bool,
}

/// Whether some table is served `--exactly-once`; an error naming why not,
/// when one asks for it where it cannot be had.
fn exactly_once_tables(
    config: &RelayConfig,
    sources: &[Source],
    sink: &SinkSettings,
) -> Result<bool> {
    let kind = match sink {
        SinkSettings::Kafka { .. } => SinkKind::Kafka,
        SinkSettings::RabbitMq { .. } => SinkKind::RabbitMq,
        SinkSettings::Redis(_) => SinkKind::Redis,
        SinkSettings::Nats(_) => SinkKind::Nats,
    };
    let mut any = false;
    for source in sources {
        for entry in &source.tables {
            let mut table = config.clone();
            table.database = source.database.clone();
            table.exactly_once = entry.exactly_once.unwrap_or(config.exactly_once);
            if let Some(reason) = table.exactly_once_refusal(kind) {
                return Err(Error::ExactlyOnce(reason));
            }
            any |= table.exactly_once;
        }
    }
    Ok(any)
}

impl Plan {
    pub fn build(config: &RelayConfig) -> Result<Plan> {
        config.validate()?;
        let file = match &config.config {
            Some(path) => {
                if config.database.database_url.is_some() || config.database.table.is_some() {
                    return Err(Error::InvalidConfig(format!(
                        "--config {} lists the databases and tables: drop --database-url and --table (and OUTBOX_DATABASE_URL, OUTBOX_TABLE)",
                        path.display()
                    )));
                }
                Some(ConfigFile::load(path)?)
            }
            None => None,
        };
        let sources = match &file {
            Some(file) => file.sources.clone(),
            None => vec![flags_source(config)?],
        };
        let file_sink = file.as_ref().and_then(|f| f.sink);
        let sink = match config.sink.or(file_sink).unwrap_or_default() {
            SinkKind::Kafka => kafka_settings(config, file.as_ref())?,
            SinkKind::RabbitMq => rabbitmq_settings(config, file.as_ref())?,
            SinkKind::Redis => SinkSettings::Redis(Box::new(
                config
                    .redis
                    .settings(file.as_ref().and_then(|f| f.redis.as_ref()))?,
            )),
            SinkKind::Nats => SinkSettings::Nats(Box::new(config.nats.settings(
                file.as_ref().and_then(|f| f.nats.as_ref()),
                config.retry_backoff_max + config.claim_timeout,
            )?)),
        };
        let exactly_once = exactly_once_tables(config, &sources, &sink)?;
        Ok(Plan {
            exactly_once,
            sink,
            sources,
            file: file.map(|f| f.path),
        })
    }
}

/// Kafka's settings: the brokers (the flag's, else the file's), and the
/// file's options under the flags'.
fn kafka_settings(config: &RelayConfig, file: Option<&ConfigFile>) -> Result<SinkSettings> {
    let file_brokers = file.and_then(|f| f.kafka_brokers.clone());
    let brokers = config.kafka_brokers.clone().or(file_brokers).ok_or_else(|| {
        Error::InvalidConfig(
            "no Kafka brokers: give --kafka-brokers (OUTBOX_KAFKA_BROKERS) or brokers in the config file's [kafka]".to_owned(),
        )
    })?;
    validate_brokers(&brokers)?;
    let mut options: Vec<KafkaOption> = file.map(|f| f.kafka_settings.clone()).unwrap_or_default();
    options.extend(config.kafka_settings()?);
    check_acks(&options)?;
    Ok(SinkSettings::Kafka {
        brokers,
        options,
        record_timestamp: config.record_timestamp,
    })
}

/// RabbitMQ's settings: the URL (with its password file) and the exchange,
/// each from its flag, else from the file's `[rabbitmq]`.
fn rabbitmq_settings(config: &RelayConfig, file: Option<&ConfigFile>) -> Result<SinkSettings> {
    let section = file.map(|f| f.rabbitmq.clone()).unwrap_or_default();
    let url = config.rabbitmq_url.clone().or(section.url).ok_or_else(|| {
        Error::InvalidConfig(
            "--sink rabbitmq needs --rabbitmq-url (OUTBOX_RABBITMQ_URL) or url in the config file's [rabbitmq], e.g. amqp://relay@localhost:5672/%2f".to_owned(),
        )
    })?;
    let password_file = config
        .rabbitmq_password_file
        .clone()
        .or(section.password_file);
    let url = url.with_password_file(password_file.as_deref())?;
    let exchange = config.rabbitmq_exchange.clone().or(section.exchange);
    Ok(SinkSettings::RabbitMq {
        url: Box::new(url),
        exchange: exchange.unwrap_or_default(),
    })
}

/// The single-table flags as a source.
fn flags_source(config: &RelayConfig) -> Result<Source> {
    let Some(url) = &config.database.database_url else {
        use clap::CommandFactory;
        crate::config::cli::Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "the following required argument was not provided: --database-url <DATABASE_URL> (or OUTBOX_DATABASE_URL), or --config FILE",
            )
            .exit();
    };
    config.database.layout.layout()?;
    Source::from_flags(&config.database, url, config.pool_size)
}

/// `config` for one table of `source`: its database, its layout and
/// overrides.
pub fn table_config(
    config: &RelayConfig,
    source: &Source,
    entry: &TableEntry,
    table: &TableName,
) -> RelayConfig {
    let mut config = config.clone();
    config.database = source.database.clone();
    config.database.table = Some(TableSelector::Name(table.clone()));
    config.database.layout = entry.layout.clone();
    if let Some(batch_size) = entry.batch_size {
        config.batch_size = batch_size;
    }
    if let Some(max_attempts) = entry.max_attempts {
        config.max_attempts = max_attempts;
    }
    if let Some(exactly_once) = entry.exactly_once {
        config.exactly_once = exactly_once;
    }
    config.transactional_id = entry.transactional_id.clone();
    config
}
