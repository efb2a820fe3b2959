//! The library's error type.
//!
//! Every variant that a user can cause renders as one line that names what is
//! wrong and how to fix it; `main` prints exactly that line. [`Error::path`]
//! sorts errors by what the relay loop does about them: database, Kafka and
//! internal failures each take their own path, with their own log line and
//! health effect.

use std::time::Duration;

use crate::source::table::InvalidTableName;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidTable(#[from] InvalidTableName),

    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A mistake in the configuration file: `FILE:LINE: field: what`.
    #[error("{0}")]
    ConfigFile(String),

    #[error(
        "invalid --database-url: {0}; expected e.g. postgres://user:password@localhost:5432/app"
    )]
    InvalidDatabaseUrl(String),

    #[error("cannot connect to PostgreSQL at {target}: {reason}; check --database-url (OUTBOX_DATABASE_URL) and that the server is running")]
    DatabaseUnreachable { target: String, reason: String },

    #[error("TLS to PostgreSQL at {target} failed: {reason}")]
    DatabaseTls { target: String, reason: String },

    #[error("PostgreSQL at {target} refused the login: {reason}; check the user, password and database name in --database-url (and --database-password-file)")]
    DatabaseLoginRefused { target: String, reason: String },

    #[error("invalid layout: {0}")]
    Layout(#[from] crate::source::layout::LayoutError),

    #[error("table {table} does not exist; run `outbox-relay migrate` with the same --database-url and --table first")]
    MissingTable { table: String },

    #[error("table {table} does not match this relay version: statement {statement} fails: {reason}; run `outbox-relay migrate` with the same --database-url and --table")]
    SchemaDrift {
        table: String,
        statement: &'static str,
        reason: String,
    },

    #[error("role {role} lacks {missing} on table {table}; grant it: GRANT {grant} ON {table} TO {role}")]
    MissingPrivileges {
        table: String,
        role: String,
        missing: String,
        grant: String,
    },

    /// The connection failed mid-way (closed, reset, server shutting down).
    #[error("PostgreSQL failed while {action}: {reason}")]
    Database {
        action: &'static str,
        reason: String,
    },

    /// The server answered, but refused the statement (a constraint, a
    /// permission, a changed table): retrying as if it were an outage would
    /// not help, and calling it "unreachable" would mislead.
    #[error("PostgreSQL rejected a statement while {action}: {reason}")]
    DatabaseRejected {
        action: &'static str,
        reason: String,
    },

    /// The statement's table does not exist (any more): dropped while the
    /// relay served it.
    #[error("PostgreSQL rejected a statement while {action}: {reason}")]
    TableGone {
        action: &'static str,
        reason: String,
    },

    #[error("invalid --kafka-brokers {value:?}: {reason}; expected host:port[,host:port…], e.g. localhost:9092")]
    InvalidBrokers { value: String, reason: String },

    /// The message names the option and where it was given.
    #[error("librdkafka rejected the producer configuration: {0}")]
    KafkaConfig(String),

    #[error("Kafka rejected the SASL login for user {user} ({mechanism}): {fix} ({reason})")]
    KafkaLoginRefused {
        user: String,
        mechanism: String,
        fix: String,
        reason: String,
    },

    #[error("TLS to Kafka at {brokers} failed: {fix} ({reason})")]
    KafkaTls {
        brokers: String,
        fix: String,
        reason: String,
    },

    #[error("no Kafka broker answered at {brokers} within {}s: {reason}; check --kafka-brokers (OUTBOX_KAFKA_BROKERS) and that the brokers are running", .waited.as_secs())]
    KafkaUnreachable {
        brokers: String,
        waited: Duration,
        reason: String,
    },

    #[error("the Kafka cluster at {brokers} cannot commit a transaction ({reason}): --exactly-once needs brokers that support transactions (Apache Kafka 0.11 or later); run without --exactly-once, or point it at such a cluster")]
    KafkaTransactions { brokers: String, reason: String },

    #[error("--exactly-once: {0}")]
    ExactlyOnce(String),

    /// A transactional producer could not start or read its checkpoint; the
    /// table waits and tries again.
    #[error("kafka transactions: {0}")]
    KafkaTransaction(String),

    #[error("RabbitMQ at {url} did not answer: {reason}; check --rabbitmq-url (OUTBOX_RABBITMQ_URL) and that the server is running")]
    RabbitMqUnreachable { url: String, reason: String },

    #[error("RabbitMQ at {url} refused the login of user {user}: check the user name and password in --rabbitmq-url or --rabbitmq-password-file")]
    RabbitMqLoginRefused { url: String, user: String },

    #[error("RabbitMQ at {url} has no exchange {exchange}: declare it, or fix --rabbitmq-exchange (OUTBOX_RABBITMQ_EXCHANGE)")]
    RabbitMqExchangeMissing { exchange: String, url: String },

    #[error("Redis at {url} did not answer: {reason}; check --redis-url (OUTBOX_REDIS_URL), its TLS options, and that the server is running")]
    RedisUnreachable { url: String, reason: String },

    #[error("Redis at {url} refused the login of user {user}: check the user name and password in --redis-url or --redis-password-file")]
    RedisLoginRefused { url: String, user: String },

    #[error("Redis at {url} does not let user {user} run the relay's commands ({reason}): grant them as docs/redis.md shows (ACL SETUSER)")]
    RedisNotPermitted {
        url: String,
        user: String,
        reason: String,
    },

    #[error("NATS at {url} did not answer: {reason}; check --nats-url (OUTBOX_NATS_URL), its TLS options, and that a server is running")]
    NatsUnreachable { url: String, reason: String },

    #[error("NATS at {url} refused the login of {login}")]
    NatsLoginRefused { url: String, login: String },

    #[error("NATS at {url} has no JetStream for the relay's account ({reason}): start nats-server with -js, or enable JetStream for the account")]
    NatsNoJetStream { url: String, reason: String },

    #[error("cannot serve metrics on --metrics-addr {addr}: {reason}; pick a free address (OUTBOX_METRICS_ADDR), e.g. {free}")]
    MetricsBind {
        addr: String,
        reason: String,
        /// An address free when the error was made.
        free: String,
    },

    /// `status --check` found the outbox unhealthy.
    #[error("check failed: {0}")]
    CheckFailed(String),

    /// A bug: a task panicked or an invariant broke.
    #[error("internal error (a bug; please report it): {0}")]
    Internal(String),
}

/// Which path an error takes through the relay loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPath {
    /// No connection, or it broke: PostgreSQL is down for us.
    DatabaseUnreachable,
    /// The server answered with an error for the statement.
    DatabaseRejected,
    /// The sink's client could not be used or replaced.
    Sink,
    /// Configuration or a bug: retrying cannot help.
    Internal,
}

/// What named prepared statements meet behind a transaction-mode pooler:
/// invalid_sql_statement_name and duplicate_prepared_statement, or a Bind
/// to another client's statement of the same name (a protocol violation).
fn is_pooler_symptom(code: &str, message: &str) -> bool {
    matches!(code, "26000" | "42P05")
        || (code == "08P01" && message.contains("prepared statement \"s"))
}
/// What the client itself meets when a pooler ran another client's
/// statement of the same name but another shape: rows it cannot decode.
fn is_client_side_pooler_symptom(description: &str) -> bool {
    description.contains("DataRow field count does not match")
        || description.contains("error deserializing column")
}
const POOLER_HINT: &str = "; a transaction-mode pooler (e.g. PgBouncer) is probably between the relay and PostgreSQL: run with --pooler transaction (OUTBOX_POOLER=transaction)";

/// SQLSTATE classes and codes that mean the connection, not the statement,
/// failed: connection exceptions, operator intervention (shutdown, crash
/// recovery), too many connections.
fn is_connection_sqlstate(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P") || code == "53300"
}

impl Error {
    /// Wrap a PostgreSQL error met while doing `action`, keeping the server's
    /// own message (and SQLSTATE) rather than the driver's generic text.
    pub fn database(action: &'static str, error: &tokio_postgres::Error) -> Self {
        let mut reason = describe_pg_error(error);
        let Some(db) = error.as_db_error() else {
            if is_client_side_pooler_symptom(&reason) {
                reason.push_str(POOLER_HINT);
                return Error::DatabaseRejected { action, reason };
            }
            return Error::Database { action, reason };
        };
        let code = db.code().code();
        if is_pooler_symptom(code, db.message()) {
            reason.push_str(POOLER_HINT);
            return Error::DatabaseRejected { action, reason };
        }
        if code == "42P01" {
            Error::TableGone { action, reason }
        } else if is_connection_sqlstate(code) {
            Error::Database { action, reason }
        } else {
            Error::DatabaseRejected { action, reason }
        }
    }

    pub fn path(&self) -> ErrorPath {
        match self {
            Error::DatabaseUnreachable { .. }
            | Error::DatabaseTls { .. }
            | Error::DatabaseLoginRefused { .. }
            | Error::Database { .. } => ErrorPath::DatabaseUnreachable,
            Error::DatabaseRejected { .. }
            | Error::TableGone { .. }
            | Error::MissingTable { .. }
            | Error::SchemaDrift { .. }
            | Error::MissingPrivileges { .. } => ErrorPath::DatabaseRejected,
            Error::KafkaConfig(_)
            | Error::KafkaUnreachable { .. }
            | Error::KafkaLoginRefused { .. }
            | Error::KafkaTls { .. }
            | Error::KafkaTransactions { .. }
            | Error::KafkaTransaction(_)
            | Error::RabbitMqUnreachable { .. }
            | Error::RabbitMqLoginRefused { .. }
            | Error::RabbitMqExchangeMissing { .. }
            | Error::RedisUnreachable { .. }
            | Error::RedisLoginRefused { .. }
            | Error::RedisNotPermitted { .. }
            | Error::NatsUnreachable { .. }
            | Error::NatsLoginRefused { .. }
            | Error::NatsNoJetStream { .. } => ErrorPath::Sink,
            Error::InvalidTable(_)
            | Error::InvalidConfig(_)
            | Error::ExactlyOnce(_)
            | Error::ConfigFile(_)
            | Error::Layout(_)
            | Error::InvalidDatabaseUrl(_)
            | Error::InvalidBrokers { .. }
            | Error::MetricsBind { .. }
            | Error::CheckFailed(_)
            | Error::Internal(_) => ErrorPath::Internal,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_and_rejected_statements_are_told_apart() {
        for code in ["08006", "08001", "57P01", "57P03", "53300"] {
            assert!(is_connection_sqlstate(code), "{code}");
        }
        // unique_violation, check_violation, undefined_column, insufficient_privilege
        for code in ["23505", "23514", "42703", "42501"] {
            assert!(!is_connection_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn prepared_statement_collisions_point_to_the_pooler_flag() {
        assert!(is_pooler_symptom(
            "42P05",
            "prepared statement \"s0\" already exists"
        ));
        assert!(is_pooler_symptom(
            "26000",
            "prepared statement \"s2\" does not exist"
        ));
        assert!(is_pooler_symptom(
            "08P01",
            "bind message supplies 1 parameters, but prepared statement \"s0\" requires 0"
        ));
        assert!(!is_pooler_symptom("08P01", "invalid message format"));
        assert!(is_client_side_pooler_symptom(
            "error parsing response from server: DataRow field count does not match the number of columns"
        ));
        assert!(is_client_side_pooler_symptom(
            "error deserializing column 0: cannot convert between the Rust type `i64` and the Postgres type `text`"
        ));
        assert!(!is_client_side_pooler_symptom("connection closed"));
        assert!(!is_pooler_symptom("23505", "duplicate key"));
    }

    #[test]
    fn each_error_takes_its_own_path() {
        let rejected = Error::DatabaseRejected {
            action: "recording results",
            reason: "new row violates check constraint (SQLSTATE 23514)".into(),
        };
        assert_eq!(rejected.path(), ErrorPath::DatabaseRejected);
        assert!(!rejected.to_string().contains("unreachable"));
        assert_eq!(Error::KafkaConfig("boom".into()).path(), ErrorPath::Sink);
        assert_eq!(
            Error::Database {
                action: "claiming rows",
                reason: "connection closed".into()
            }
            .path(),
            ErrorPath::DatabaseUnreachable
        );
        assert_eq!(Error::Internal("panic".into()).path(), ErrorPath::Internal);
    }
}
