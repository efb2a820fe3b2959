//! The library's error type.
//!
//! Every variant that a user can cause renders as one line that names what is
//! wrong and how to fix it; `main` prints exactly that line.

use std::time::Duration;

use crate::table::InvalidTableName;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidTable(#[from] InvalidTableName),

    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    #[error(
        "invalid --database-url: {0}; expected e.g. postgres://user:password@localhost:5432/app"
    )]
    InvalidDatabaseUrl(String),

    #[error("cannot connect to PostgreSQL at {target}: {reason}; check --database-url (OUTBOX_DATABASE_URL) and that the server is running")]
    DatabaseUnreachable { target: String, reason: String },

    #[error("PostgreSQL at {target} refused the login: {reason}; check the user, password and database name in --database-url")]
    DatabaseLoginRefused { target: String, reason: String },

    #[error("table {table} does not exist; run `outbox-relay migrate` with the same --database-url and --table first")]
    MissingTable { table: String },

    #[error("PostgreSQL failed while {action}: {reason}")]
    Database {
        action: &'static str,
        reason: String,
    },

    #[error("invalid --kafka-brokers {value:?}: {reason}; expected host:port[,host:port…], e.g. localhost:9092")]
    InvalidBrokers { value: String, reason: String },

    #[error(
        "librdkafka rejected the producer configuration: {0}; check the --kafka-option values"
    )]
    KafkaConfig(String),

    #[error("no Kafka broker answered at {brokers} within {}s: {reason}; check --kafka-brokers (OUTBOX_KAFKA_BROKERS) and that the brokers are running", .waited.as_secs())]
    KafkaUnreachable {
        brokers: String,
        waited: Duration,
        reason: String,
    },

    #[error("cannot serve metrics on --metrics-addr {addr}: {reason}; pick a free address, e.g. 127.0.0.1:9874")]
    MetricsBind { addr: String, reason: String },
}

impl Error {
    /// Wrap a PostgreSQL error met while doing `action`, keeping the server's
    /// own message (and SQLSTATE) rather than the driver's generic text.
    pub fn database(action: &'static str, error: &tokio_postgres::Error) -> Self {
        Error::Database {
            action,
            reason: describe_pg_error(error),
        }
    }
}

/// One line for a PostgreSQL error: the server's message with its SQLSTATE
/// when there is one, otherwise the driver's error and its cause.
pub fn describe_pg_error(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}
