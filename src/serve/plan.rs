//! What `run` serves: the sources (databases and their tables or patterns)
//! and the Kafka settings, from the configuration file or from the
//! single-table flags, which are the same as a file with one source.
//!
//! Guarantees: a plan has a valid broker list and Kafka options without
//! `acks=0`; every table a plan serves gets a [`RelayConfig`] of its own,
//! the process-wide flags with the table's overrides.

use crate::config::file::{ConfigFile, Source, TableEntry};
use crate::config::{check_acks, validate_brokers, KafkaOption, RelayConfig};
use crate::error::{Error, Result};
use crate::sinks::SinkSettings;
use crate::source::table::TableName;
use crate::source::table_pattern::TableSelector;

#[derive(Debug, Clone)]
pub struct Plan {
    pub brokers: String,
    pub kafka_settings: Vec<KafkaOption>,
    pub sources: Vec<Source>,
    /// The file it came from, for messages.
    pub file: Option<std::path::PathBuf>,
}

impl Plan {
    /// What opening the sink needs.
    pub fn sink_settings(&self, config: &RelayConfig) -> SinkSettings {
        SinkSettings::Kafka {
            brokers: self.brokers.clone(),
            options: self.kafka_settings.clone(),
            record_timestamp: config.record_timestamp,
        }
    }

    pub fn build(config: &RelayConfig) -> Result<Plan> {
        config.validate()?;
        let (file_brokers, mut kafka_settings, sources, file) = match &config.config {
            Some(path) => {
                if config.database.database_url.is_some() || config.database.table.is_some() {
                    return Err(Error::InvalidConfig(format!(
                        "--config {} lists the databases and tables: drop --database-url and --table (and OUTBOX_DATABASE_URL, OUTBOX_TABLE)",
                        path.display()
                    )));
                }
                let file = ConfigFile::load(path)?;
                (
                    file.kafka_brokers,
                    file.kafka_settings,
                    file.sources,
                    Some(file.path),
                )
            }
            None => (None, Vec::new(), vec![flags_source(config)?], None),
        };
        let brokers = config.kafka_brokers.clone().or(file_brokers).ok_or_else(|| {
            Error::InvalidConfig(
                "no Kafka brokers: give --kafka-brokers (OUTBOX_KAFKA_BROKERS) or brokers in the config file's [kafka]".to_owned(),
            )
        })?;
        validate_brokers(&brokers)?;
        kafka_settings.extend(config.kafka_settings()?);
        check_acks(&kafka_settings)?;
        Ok(Plan {
            brokers,
            kafka_settings,
            sources,
            file,
        })
    }
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
    config
}
