//! `migrate`: create or update the outbox schema.
//!
//! Guarantees: idempotent, and safe when several replicas run it at once:
//! everything happens in one transaction behind an advisory lock, and every
//! migration only creates what is missing.

use deadpool_postgres::Object;

use super::migration_lock::lock_migrations;
use super::partitions::{partition_key, partition_sql, PartitionUnit, PARTITION_KEY};
use super::queries;
use super::Database;
use crate::error::{Error, Result};
use crate::source::layout::ColumnSql;
use crate::source::sql::Sql;
use crate::source::table::TableName;

/// What `migrate` should install beyond the table itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct MigrateOptions {
    /// Install the optional NOTIFY-on-insert trigger.
    pub notify_trigger: bool,
    /// The payload column's type in a new table.
    pub payload_type: PayloadType,
    /// The key column's type in a new table.
    pub key_type: KeyType,
    /// Make a new table range-partitioned on `created_at` by this unit.
    pub partition_by: Option<PartitionUnit>,
    /// Which rule the `topic` CHECK holds rows to.
    pub topic_rule: TopicRule,
}

/// The rule of the `topic` CHECK: the names the sink accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopicRule {
    /// Kafka topic names: 1 to 249 of `[A-Za-z0-9._-]`.
    #[default]
    Kafka,
    /// RabbitMQ routing keys and Redis keys: any UTF-8 of 1 to 255 bytes.
    RoutingKey,
    /// NATS subjects: dot-separated tokens, no whitespace, no wildcard
    /// token (`*`, `>`), at most 255 bytes.
    Subject,
}

impl Sql {
    /// The migrations to apply, in order, with the topic rule `rule` asks for.
    fn migrations_for(&self, rule: TopicRule) -> Vec<(&'static str, &str)> {
        self.migrations
            .iter()
            .map(|(name, text)| match (rule, *name) {
                (TopicRule::RoutingKey, "002_topic_name_check") => {
                    (self.routing_key_check.0, self.routing_key_check.1.as_str())
                }
                (TopicRule::Subject, "002_topic_name_check") => {
                    (self.subject_check.0, self.subject_check.1.as_str())
                }
                _ => (*name, text.as_str()),
            })
            .collect()
    }
}

/// `migrate --payload-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PayloadType {
    /// JSON, sent as compact JSON text.
    #[default]
    Jsonb,
    /// Bytes sent as they are (Protobuf, Avro, Schema Registry framing).
    Bytea,
    /// Text sent as UTF-8.
    Text,
}

/// `migrate --key-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeyType {
    #[default]
    Text,
    Bytea,
}

impl MigrateOptions {
    /// The statements for the relay's own table with these column types.
    fn sql(&self, table: &TableName, pooler_safe: bool) -> Sql {
        let columns = ColumnSql {
            payload_type: match self.payload_type {
                PayloadType::Jsonb => "jsonb",
                PayloadType::Bytea => "bytea",
                PayloadType::Text => "text",
            },
            key_type: match self.key_type {
                KeyType::Text => "text",
                KeyType::Bytea => "bytea",
            },
            partitioned: self.partition_by.is_some(),
            ..ColumnSql::default()
        };
        Sql::for_table(table, &columns, pooler_safe)
    }
}

/// What `migrate` found and did, object by object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub created: Vec<String>,
    pub in_place: Vec<String>,
}

/// The DDL `migrate` runs, for DBAs who apply migrations themselves.
pub fn migration_sql(table: &TableName, options: MigrateOptions) -> String {
    let sql = options.sql(table, false);
    let mut text = String::from("BEGIN;\n\n");
    if let Some(create_schema) = &sql.create_schema {
        text.push_str(&format!("-- schema\n{}\n\n", create_schema.trim_end()));
    }
    for (name, migration) in sql.migrations_for(options.topic_rule) {
        text.push_str(&format!("-- migration {name}\n{}\n", migration.trim_end()));
        text.push('\n');
    }
    if options.notify_trigger {
        text.push_str(&format!(
            "-- notify_trigger\n{}\n\n",
            sql.notify_trigger.trim_end()
        ));
    }
    if let Some(unit) = options.partition_by {
        text.push_str(&format!(
            "-- partitions (the relay keeps creating them ahead while it runs)\n{}\n",
            partition_sql(table, unit)
        ));
    }
    text.push_str("COMMIT;\n");
    text
}

/// The relay's objects for `table`: (what to call it, the name to look up).
struct Objects {
    relations: Vec<(String, String)>,
    functions: Vec<(String, String)>,
    triggers: Vec<(String, String)>,
    constraints: Vec<(String, String)>,
}

impl Objects {
    fn of(table: &TableName, options: MigrateOptions) -> Self {
        let name = table.stem();
        let sql = options.sql(table, false);
        let mut relations = vec![(format!("table {table}"), table.quoted())];
        for index in ["pending_id_idx", "pending_key_idx", "dead_id_idx"] {
            relations.push((format!("index {name}_{index}"), table.quoted_sibling(index)));
        }
        if options.partition_by.is_some() {
            relations.push((
                format!("partition {name}_default"),
                table.quoted_sibling("default"),
            ));
        }
        let mut functions = vec![(
            format!("function {name}_enqueue"),
            format!(
                "{}(text,{},{},jsonb)",
                table.quoted_sibling("enqueue"),
                sql.key_type(),
                sql.payload_type()
            ),
        )];
        let mut triggers = Vec::new();
        if options.notify_trigger {
            functions.push((
                format!("function {name}_notify"),
                format!("{}()", table.quoted_sibling("notify")),
            ));
            triggers.push((format!("trigger {name}_notify"), format!("{name}_notify")));
        }
        let constraint = format!("{name}_topic_valid");
        let constraints = vec![(format!("constraint {constraint}"), constraint)];
        Objects {
            relations,
            functions,
            triggers,
            constraints,
        }
    }

    fn all(&self) -> impl Iterator<Item = &(String, String)> {
        self.relations
            .iter()
            .chain(&self.functions)
            .chain(&self.triggers)
            .chain(&self.constraints)
    }
}

fn names(pairs: &[(String, String)]) -> Vec<String> {
    pairs.iter().map(|(_, name)| name.clone()).collect()
}

impl Database {
    /// Apply every migration (and the optional trigger) in one transaction,
    /// and say which objects it created and which were already in place.
    pub async fn migrate(&self, options: MigrateOptions) -> Result<MigrationReport> {
        let connection = self.connection().await?;
        let objects = Objects::of(self.table(), options);
        let before = self.existing(&connection, &objects).await?;
        if let Some(unit) = options.partition_by {
            if before.contains(&self.table().quoted()) {
                self.check_partitioned(&connection, unit).await?;
            }
        }
        let applied = self.migrate_on(&connection, options).await;
        if applied.is_err() {
            // Its transaction may still be open: keep it out of the pool.
            let _ = Object::take(connection);
            return applied.map(|_| MigrationReport::default());
        }
        let mut report = MigrationReport::default();
        for (label, name) in objects.all() {
            if before.contains(name) {
                report.in_place.push(label.clone());
            } else {
                report.created.push(label.clone());
            }
        }
        Ok(report)
    }

    /// `--partition-by` on a table that exists: it must already be
    /// partitioned that way (an existing table is never rebuilt).
    async fn check_partitioned(&self, connection: &Object, unit: PartitionUnit) -> Result<()> {
        let key = partition_key(connection, self.table()).await?;
        if key.as_deref() == Some(PARTITION_KEY) {
            return match self.managed_unit_on(connection).await? {
                Some(existing) if existing != unit => Err(Error::InvalidConfig(format!(
                    "table {} is partitioned by {existing}, not by {unit}; run migrate with --partition-by {existing}",
                    self.table()
                ))),
                _ => Ok(()),
            };
        }
        Err(Error::InvalidConfig(format!(
            "table {} already exists and is not partitioned by created_at; --partition-by only creates a new table: migrate a new table with --partition-by and move the rows, or leave --partition-by off",
            self.table()
        )))
    }

    async fn existing(&self, connection: &Object, objects: &Objects) -> Result<Vec<String>> {
        let params = queries::OutboxObjectsParams {
            relations: &names(&objects.relations),
            functions: &names(&objects.functions),
            quoted_table: &self.table().quoted(),
            triggers: &names(&objects.triggers),
            constraints: &names(&objects.constraints),
        };
        queries::outbox_objects(connection, self.sql(), params)
            .await
            .map_err(|e| Error::database("looking up the relay's objects", &e))
    }

    async fn migrate_on(
        &self,
        connection: &Object,
        options: MigrateOptions,
    ) -> Result<Vec<&'static str>> {
        let fail = |e: tokio_postgres::Error| Error::database("migrating the schema", &e);
        let sql = &options.sql(self.table(), self.pooler_safe());
        connection.batch_execute("BEGIN").await.map_err(fail)?;
        lock_migrations(connection, sql).await?;
        let mut applied = Vec::new();
        if let Some(create_schema) = &sql.create_schema {
            connection
                .batch_execute(create_schema)
                .await
                .map_err(fail)?;
        }
        for (name, text) in sql.migrations_for(options.topic_rule) {
            connection.batch_execute(text).await.map_err(fail)?;
            applied.push(name);
        }
        if options.notify_trigger {
            connection
                .batch_execute(&sql.notify_trigger)
                .await
                .map_err(fail)?;
            applied.push("notify_trigger");
        }
        if let Some(unit) = options.partition_by {
            self.create_partitions_in(connection, unit).await?;
            applied.push("partitions");
        }
        connection.batch_execute("COMMIT").await.map_err(fail)?;
        Ok(applied)
    }
}
