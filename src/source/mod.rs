//! PostgreSQL access: the connection pool and the outbox queries.
//!
//! Guarantees: every statement comes from `sql/` (rendered for the configured
//! table) and runs through the typed functions of [`queries`]; connection
//! failures are turned into errors that say how to fix them.

mod adopt;
mod claim;
pub mod connect;
pub mod layout;
mod maintenance;
mod migrate;
mod migration_lock;
mod partitions;
pub mod queries;
pub(crate) mod sql;
mod stats;
pub mod table;
pub mod table_pattern;

use std::path::Path;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use postgres_openssl::TlsStream;

pub use adopt::AdoptReport;
pub use claim::{ClaimedBatch, RecordedBatch, Results};
pub use maintenance::{RequeueSelection, MAINTENANCE_BATCH};
pub use migrate::{
    migration_sql, KeyType, MigrateOptions, MigrationReport, PayloadType, TopicRule,
};
pub use partitions::{Partition, PartitionUnit, RetiredPartitions, PARTITIONS_AHEAD};
pub use queries::{FailureRecord, Fence, OutboxRow, TopicBacklog};
pub use stats::Backlog;

use crate::error::{Error, Result};
use crate::source::layout::{ColumnSql, ColumnTypes, Layout, PayloadKind, Preset};
use crate::source::sql::Sql;
use crate::source::table::TableName;
use connect::{ConnectFailure, ConnectSettings, Connector};

/// How to connect, beyond the connection string.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOptions<'a> {
    /// Read the password from this file for each new connection when the
    /// connection string has none.
    pub password_file: Option<&'a Path>,
    /// A transaction-mode pooler (PgBouncer) is in the way: nothing prepared
    /// or set may outlive a transaction.
    pub pooler_safe: bool,
}

/// A pool of connections to the database that holds the outbox table.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    /// `--on-publish delete`: batches delete their published rows.
    delete_published: bool,
    /// `--exactly-once`: batches commit their marks durably.
    durable_marks: bool,
    connector: Connector,
    sql: Arc<Sql>,
    table: TableName,
    /// Which columns play which part; checked against the table by
    /// [`Database::check`].
    layout: Layout,
    payload: PayloadKind,
    target: String,
    /// `schema.table`, as [`Database::check`] found it.
    qualified: Option<String>,
}

impl Database {
    /// Build the pool. No connection is made until [`Database::check`] or
    /// the first query.
    pub fn new(url: &str, table: &TableName, pool_size: usize) -> Result<Self> {
        Self::open(url, &ConnectOptions::default(), table, pool_size)
    }

    /// [`Database::new`], with the password file and pooler mode of
    /// `options`.
    pub fn open(
        url: &str,
        options: &ConnectOptions<'_>,
        table: &TableName,
        pool_size: usize,
    ) -> Result<Self> {
        let settings = ConnectSettings::parse(url)?;
        let config = settings.config.clone();
        let password_file = options.password_file.map(Path::to_path_buf);
        let connector = Connector::new(settings, password_file)?;
        let target = describe_target(&config);
        let manager = Manager::from_connect(
            config,
            connector.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .build()
            .map_err(|e| Error::InvalidConfig(format!("cannot build the connection pool: {e}")))?;
        Ok(Database {
            pool,
            delete_published: false,
            durable_marks: false,
            connector,
            sql: Arc::new(Sql::for_table(
                table,
                &ColumnSql::default(),
                options.pooler_safe,
            )),
            table: table.clone(),
            layout: Layout::preset(Preset::Relay),
            payload: PayloadKind::Json,
            target,
            qualified: None,
        })
    }

    /// The same pool (and connections), for another table of the same
    /// database, read through `layout`; [`check_statements`] it before use.
    /// `unnamed` runs its statements unnamed, as behind a pooler: a relay
    /// serving a pattern may serve a thousand tables, and prepared
    /// statements per table and connection would grow without bound.
    ///
    /// [`check_statements`]: Self::check_statements
    pub fn for_table(&self, table: &TableName, layout: Layout, unnamed: bool) -> Database {
        Database {
            pool: self.pool.clone(),
            delete_published: self.delete_published,
            durable_marks: self.durable_marks,
            connector: self.connector.clone(),
            sql: Arc::new(Sql::for_table(
                table,
                &ColumnSql::default(),
                self.sql.pooler_safe || unnamed,
            )),
            table: table.clone(),
            layout,
            payload: PayloadKind::Json,
            target: self.target.clone(),
            qualified: None,
        }
    }

    /// The tables `pattern` matches now, schema-qualified. Names the relay
    /// cannot quote safely are left out, and said once by the caller.
    pub async fn discover(
        &self,
        pattern: &crate::source::table_pattern::TablePattern,
    ) -> Result<Vec<std::result::Result<TableName, String>>> {
        let client = self.connection().await?;
        let (schema_like, name_like) = pattern.like();
        let params = queries::DiscoverTablesParams {
            schema_like: schema_like.as_deref(),
            name_like: &name_like,
        };
        let found = queries::discover_tables(&client, &self.sql, params)
            .await
            .map_err(|e| Error::database("looking for the tables of a pattern", &e))?;
        Ok(found
            .into_iter()
            .map(|(schema, name)| {
                TableName::qualified(&schema, &name).map_err(|_| format!("{schema}.{name}"))
            })
            .collect())
    }

    /// Whether the table has the optional NOTIFY trigger (`migrate
    /// --notify-trigger`).
    pub async fn has_notify_trigger(&self) -> Result<bool> {
        let client = self.connection().await?;
        let trigger = format!("{}_notify", self.table.stem());
        queries::outbox_notify_trigger(&client, &self.sql, &self.table.quoted(), &trigger)
            .await
            .map_err(|e| Error::database("looking for the NOTIFY trigger", &e))
    }

    /// NOTIFY running relays that this table was created or changed.
    pub async fn announce(&self) -> Result<()> {
        let client = self.connection().await?;
        queries::announce_tables(&client, &self.sql, &self.table.to_string())
            .await
            .map_err(|e| Error::database("announcing the table to running relays", &e))
    }

    /// Batches claimed from now on delete their published rows instead of
    /// marking them (`--on-publish delete`).
    pub fn delete_on_publish(mut self, delete: bool) -> Self {
        self.delete_published = delete;
        self
    }

    /// Batches claimed from now on commit with `synchronous_commit = on`
    /// (`--exactly-once`): a mark PostgreSQL acknowledged survives its
    /// crash, since only the last batch's rows are in Kafka's checkpoint.
    pub fn durable_marks(mut self, durable: bool) -> Self {
        self.durable_marks = durable;
        self
    }

    /// Read the table through `layout` once [`Database::check`] has checked
    /// it against the table's columns.
    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// How the payload column's bytes become the message value.
    pub fn payload_kind(&self) -> PayloadKind {
        self.payload
    }

    pub fn deletes_published(&self) -> bool {
        self.delete_published
    }

    /// Whether statements run pooler-safe (unnamed, nothing kept between
    /// transactions).
    pub fn pooler_safe(&self) -> bool {
        self.sql.pooler_safe
    }

    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// `host:port/dbname`, without credentials, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The statements rendered for this table, for [`queries`].
    pub fn sql(&self) -> &Arc<Sql> {
        &self.sql
    }

    /// Take a connection, turning pool failures into actionable errors.
    pub async fn connection(&self) -> Result<Object> {
        self.pool.get().await.map_err(|e| self.connect_error(e))
    }

    /// A connection outside the pool, for LISTEN: pooled connections would
    /// lose notifications between uses.
    pub async fn connect_dedicated(
        &self,
    ) -> Result<(
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, TlsStream<tokio_postgres::Socket>>,
    )> {
        self.connector
            .connect()
            .await
            .map_err(|e| self.connect_error(PoolError::Backend(e)))
    }

    /// Connect, confirm that the outbox table exists, and check the layout
    /// against its columns: from now on the statements read the columns it
    /// maps.
    pub async fn check(&mut self) -> Result<()> {
        self.qualified = Some(self.check_exists().await?);
        let types = self.column_types().await?;
        let resolved = self
            .layout
            .resolve(&self.table.to_string(), &types)
            .map_err(Error::Layout)?;
        self.payload = resolved.payload;
        self.sql = Arc::new(Sql::for_table(
            &self.table,
            &resolved.sql,
            self.sql.pooler_safe,
        ));
        Ok(())
    }

    /// The table's columns and their types (empty if it does not exist).
    pub async fn column_types(&self) -> Result<ColumnTypes> {
        let client = self.connection().await?;
        self.column_types_on(&client).await
    }

    /// [`column_types`](Self::column_types) on a connection already held
    /// (one-off commands have a pool of one).
    pub async fn column_types_on(&self, client: &Object) -> Result<ColumnTypes> {
        let params = queries::OutboxColumnsParams {
            quoted_table: &self.table.quoted(),
        };
        queries::outbox_columns(client, &self.sql, params)
            .await
            .map_err(|e| Error::database("reading the table's columns", &e))
    }

    /// The table's schema-qualified name once [`check`](Self::check) ran
    /// (the name as given before).
    pub fn qualified_name(&self) -> String {
        self.qualified
            .clone()
            .unwrap_or_else(|| self.table.to_string())
    }

    async fn check_exists(&self) -> Result<String> {
        let client = self.connection().await?;
        let exists = queries::outbox_table_exists(
            &client,
            &self.sql,
            queries::OutboxTableExistsParams {
                quoted_table: &self.table.quoted(),
            },
        )
        .await
        .map_err(|e| Error::database("checking the outbox table", &e))?;
        exists.ok_or_else(|| Error::MissingTable {
            table: self.table.to_string(),
        })
    }

    /// [`check`](Self::check), then prepare every statement the relay runs,
    /// so a table that drifted from this version fails now, naming the
    /// statement, instead of looping later.
    pub async fn check_statements(&mut self) -> Result<()> {
        self.check().await?;
        let client = self.connection().await?;
        queries::prepare_all(&client, &self.sql, &self.table.quoted())
            .await
            .map_err(|drift| Error::SchemaDrift {
                table: self.table.to_string(),
                statement: drift.statement,
                reason: drift.reason,
            })
    }

    /// Fail unless the role may read and update the table (and delete from
    /// it, when `deletes`): PostgreSQL checks privileges only when a
    /// statement runs, so a missing grant would otherwise look like an
    /// outage on every batch.
    pub async fn check_privileges(&self, deletes: bool) -> Result<()> {
        let client = self.connection().await?;
        let wanted: &[&str] = if deletes {
            &["SELECT", "UPDATE", "DELETE"]
        } else {
            &["SELECT", "UPDATE"]
        };
        let params = queries::OutboxPrivilegesParams {
            quoted_table: &self.table.quoted(),
            privileges: wanted,
        };
        let found = queries::outbox_privileges(&client, &self.sql, params)
            .await
            .map_err(|e| Error::database("checking privileges", &e))?;
        if found.missing.is_empty() {
            return Ok(());
        }
        Err(Error::MissingPrivileges {
            table: self.table.to_string(),
            role: found.role,
            missing: found.missing.join(", "),
            grant: wanted.join(", "),
        })
    }

    fn connect_error(&self, error: PoolError) -> Error {
        let target = self.target.clone();
        match error {
            PoolError::Backend(e) => match self.connector.explain(&e) {
                ConnectFailure::Tls(reason) => Error::DatabaseTls { target, reason },
                ConnectFailure::Login(reason) => Error::DatabaseLoginRefused { target, reason },
                ConnectFailure::Unreachable(reason) => {
                    Error::DatabaseUnreachable { target, reason }
                }
            },
            other => Error::DatabaseUnreachable {
                target,
                reason: other.to_string(),
            },
        }
    }
}

fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config.get_dbname().unwrap_or("(default database)");
    format!("{host}:{port}/{dbname}")
}

/// `host:port/dbname` of a connection string, without credentials: two
/// strings that reach the same database say the same (for the configuration
/// file's check that no table is listed twice).
pub fn target_of(url: &str) -> Result<String> {
    Ok(describe_target(&ConnectSettings::parse(url)?.config))
}
