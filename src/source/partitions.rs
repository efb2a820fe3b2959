//! Partitioned outbox tables (`migrate --partition-by day|hour`): a table
//! range-partitioned on `created_at` (UTC), a default partition as the
//! safety net, and range partitions created ahead of time; retention drops
//! whole partitions instead of deleting rows.
//!
//! Guarantees:
//! - an insert never fails for want of a partition: the default partition
//!   takes any row whose range has none, and rows there are counted
//!   ([`Database::default_partition_rows`]);
//! - partitions exist from the current unit to [`PARTITIONS_AHEAD`] units
//!   ahead whenever `migrate` or a maintenance pass of `run` last ran;
//!   creation runs under `migrate`'s advisory lock, so replicas do not race;
//! - a partition is dropped only when its whole range is older than the
//!   retention and it holds no pending or dead row, checked under the lock
//!   that the drop takes (so no row can change in between); the current
//!   and future partitions, the default partition and partitions named
//!   otherwise than the relay names them are never dropped.
//!
//! SQL lives in `sql/partitions/`; partition names and bounds reach DDL only
//! through the server's `format()` (`%I`, `%L`) or as quoted identifiers
//! the relay built itself. Statements run unnamed (`query_typed`), so they
//! work behind a transaction-mode pooler too.

use std::time::{Duration, SystemTime};

use deadpool_postgres::Object;
use tokio_postgres::types::Type;

use super::Database;
use crate::error::{Error, Result};

const DEFAULT: &str = include_str!("../../sql/partitions/default.sql");
const CREATE_AHEAD: &str = include_str!("../../sql/partitions/create_ahead.sql");
const LIST: &str = include_str!("../../sql/partitions/list.sql");
const KEY: &str = include_str!("../../sql/partitions/key.sql");
const UNFINISHED: &str = include_str!("../../sql/partitions/unfinished.sql");
const DEFAULT_ROWS: &str = include_str!("../../sql/partitions/default_rows.sql");
const DROP: &str = include_str!("../../sql/partitions/drop.sql");

/// Range partitions kept ready beyond the current one.
pub const PARTITIONS_AHEAD: u32 = 3;

/// The partition key `migrate --partition-by` creates.
pub(super) const PARTITION_KEY: &str = "RANGE (created_at)";

/// The range of one partition: `migrate --partition-by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PartitionUnit {
    Day,
    Hour,
}

impl PartitionUnit {
    fn sql_name(self) -> &'static str {
        match self {
            PartitionUnit::Day => "day",
            PartitionUnit::Hour => "hour",
        }
    }

    /// `to_char` format of a partition's start, after `<name>_p`.
    fn suffix_format(self) -> &'static str {
        match self {
            PartitionUnit::Day => "YYYYMMDD",
            PartitionUnit::Hour => "YYYYMMDDHH24",
        }
    }

    fn suffix_len(self) -> usize {
        match self {
            PartitionUnit::Day => 8,
            PartitionUnit::Hour => 10,
        }
    }

    /// The unit of a partition the relay named (`<stem>_p` + digits).
    fn of_name(stem: &str, name: &str) -> Option<Self> {
        let digits = name.strip_prefix(stem)?.strip_prefix("_p")?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        [PartitionUnit::Day, PartitionUnit::Hour]
            .into_iter()
            .find(|unit| unit.suffix_len() == digits.len())
    }
}

impl std::fmt::Display for PartitionUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.sql_name())
    }
}

/// One partition of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub oid: u32,
    /// The range, `[starts, ends)`; `None` for the default partition.
    pub starts: Option<SystemTime>,
    pub ends: Option<SystemTime>,
    pub is_default: bool,
}

/// What a retention pass over the partitions did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetiredPartitions {
    pub dropped: Vec<String>,
    /// Past the retention but holding rows that are not published: (name,
    /// how many).
    pub kept: Vec<(String, i64)>,
    /// Could not be locked at once (busy): tried again next pass.
    pub busy: Vec<String>,
}

/// The DDL that makes the default partition and the partitions ahead.
pub fn partition_sql(table: &crate::source::table::TableName, unit: PartitionUnit) -> String {
    format!(
        "{};\n{};\n",
        render(table, DEFAULT),
        render_ahead(table, unit)
    )
}

fn render(table: &crate::source::table::TableName, template: &str) -> String {
    template
        .replace("{{table_text}}", &table.quoted())
        .replace("{{table}}", &table.quoted())
        .replace("{{name}}", &table.stem())
        .replace("{{default_partition}}", &table.quoted_sibling("default"))
}

fn render_ahead(table: &crate::source::table::TableName, unit: PartitionUnit) -> String {
    render(table, CREATE_AHEAD)
        .replace("{{unit}}", unit.sql_name())
        .replace("{{suffix_format}}", unit.suffix_format())
        .replace("{{ahead}}", &PARTITIONS_AHEAD.to_string())
}

fn failed(action: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| Error::database(action, &e)
}

/// How `table` is partitioned (`pg_get_partkeydef`); `None` when it is not.
pub(super) async fn partition_key(
    connection: &Object,
    table: &crate::source::table::TableName,
) -> Result<Option<String>> {
    let quoted = table.quoted();
    let rows = connection
        .query_typed(KEY, &[(&quoted, Type::TEXT)])
        .await
        .map_err(failed("reading the partition key"))?;
    Ok(rows.first().and_then(|row| row.get(0)))
}

impl Database {
    /// The unit of the partitions the relay manages for this table: the
    /// table is partitioned as `migrate --partition-by` makes it and has
    /// partitions named as the relay names them. `None` otherwise (not
    /// partitioned, or partitioned by someone else's scheme: then the relay
    /// reads and writes it like any table and leaves its partitions alone).
    pub async fn partitioning(&self) -> Result<Option<PartitionUnit>> {
        let connection = self.connection().await?;
        self.partitioning_on(&connection).await
    }

    async fn partitioning_on(&self, connection: &Object) -> Result<Option<PartitionUnit>> {
        if partition_key(connection, self.table()).await?.as_deref() != Some(PARTITION_KEY) {
            return Ok(None);
        }
        self.managed_unit_on(connection).await
    }

    /// The unit of the partitions named as the relay names them, on a table
    /// already known to be partitioned by created_at.
    pub(super) async fn managed_unit_on(
        &self,
        connection: &Object,
    ) -> Result<Option<PartitionUnit>> {
        let stem = self.table().stem();
        Ok(self
            .partitions_on(connection)
            .await?
            .iter()
            .rev()
            .find_map(|p| PartitionUnit::of_name(&stem, &p.name)))
    }

    pub async fn partitions(&self) -> Result<Vec<Partition>> {
        let connection = self.connection().await?;
        self.partitions_on(&connection).await
    }

    async fn partitions_on(&self, connection: &Object) -> Result<Vec<Partition>> {
        let quoted = self.table().quoted();
        let rows = connection
            .query_typed(LIST, &[(&quoted, Type::TEXT)])
            .await
            .map_err(failed("listing the partitions"))?;
        Ok(rows
            .iter()
            .map(|row| Partition {
                name: row.get("name"),
                oid: row.get("oid"),
                starts: row.get("starts"),
                ends: row.get("ends"),
                is_default: row.get("is_default"),
            })
            .collect())
    }

    /// Create the default partition and the range partitions from now to
    /// [`PARTITIONS_AHEAD`] units ahead that are missing, under `migrate`'s
    /// lock. Returns the names created.
    pub async fn create_partitions(&self, unit: PartitionUnit) -> Result<Vec<String>> {
        let connection = self.connection().await?;
        let before = self.partitions_on(&connection).await?;
        let fail = failed("creating partitions");
        connection.batch_execute("BEGIN").await.map_err(&fail)?;
        let created = self.create_partitions_in(&connection, unit).await;
        let ended = match &created {
            Ok(()) => connection.batch_execute("COMMIT").await,
            Err(_) => connection.batch_execute("ROLLBACK").await,
        };
        created?;
        ended.map_err(&fail)?;
        let after = self.partitions_on(&connection).await?;
        Ok(after
            .into_iter()
            .filter(|p| !before.iter().any(|b| b.oid == p.oid))
            .map(|p| p.name)
            .collect())
    }

    /// The same inside a transaction the caller opened (`migrate`'s).
    pub(super) async fn create_partitions_in(
        &self,
        connection: &Object,
        unit: PartitionUnit,
    ) -> Result<()> {
        let fail = failed("creating partitions");
        super::migration_lock::lock_migrations(connection, self.sql()).await?;
        connection
            .batch_execute(&render(self.table(), DEFAULT))
            .await
            .map_err(&fail)?;
        connection
            .batch_execute(&render_ahead(self.table(), unit))
            .await
            .map_err(&fail)
    }

    /// Rows in the default partition (up to 10,000).
    pub async fn default_partition_rows(&self) -> Result<i64> {
        let connection = self.connection().await?;
        let rows = connection
            .query_typed(&render(self.table(), DEFAULT_ROWS), &[])
            .await
            .map_err(failed("counting rows in the default partition"))?;
        Ok(rows.first().map_or(0, |row| row.get(0)))
    }

    /// Drop the partitions whose whole range is older than `retention` and
    /// whose rows are all published; report the ones kept.
    pub async fn drop_retired_partitions(
        &self,
        unit: PartitionUnit,
        retention: Duration,
    ) -> Result<RetiredPartitions> {
        let connection = self.connection().await?;
        let cutoff = SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let stem = self.table().stem();
        let retired: Vec<Partition> = self
            .partitions_on(&connection)
            .await?
            .into_iter()
            .filter(|p| !p.is_default && p.ends.is_some_and(|ends| ends <= cutoff))
            .filter(|p| PartitionUnit::of_name(&stem, &p.name) == Some(unit))
            .collect();
        let mut report = RetiredPartitions::default();
        if retired.is_empty() {
            return Ok(report);
        }
        let unfinished = connection
            .query_typed(
                &render(self.table(), UNFINISHED),
                &[(&cutoff, Type::TIMESTAMPTZ)],
            )
            .await
            .map_err(failed("looking for unpublished rows in old partitions"))?;
        let unfinished_in = |oid: u32| {
            unfinished
                .iter()
                .find(|row| row.get::<_, u32>("partition") == oid)
                .map(|row| row.get::<_, i64>("rows"))
        };
        for partition in retired {
            if let Some(rows) = unfinished_in(partition.oid) {
                report.kept.push((partition.name, rows));
                continue;
            }
            let suffix = partition.name[stem.len() + 1..].to_owned();
            let drop = DROP.replace("{{partition}}", &self.table().quoted_sibling(&suffix));
            match drop_partition(&connection, &drop).await? {
                true => report.dropped.push(partition.name),
                false => report.busy.push(partition.name),
            }
        }
        Ok(report)
    }
}

/// Run one partition's `drop`: whether it was dropped (`false`: it was busy,
/// for the next pass).
async fn drop_partition(connection: &tokio_postgres::Client, drop: &str) -> Result<bool> {
    use tokio_postgres::error::SqlState;
    match connection.batch_execute(drop).await {
        Ok(()) => Ok(true),
        Err(error) => {
            let _ = connection.batch_execute("ROLLBACK").await;
            match error.code() {
                // Locked by a reader (lock_timeout), or a row became
                // unpublished since the look above: next pass.
                Some(code)
                    if *code == SqlState::LOCK_NOT_AVAILABLE
                        || *code == SqlState::OBJECT_IN_USE =>
                {
                    Ok(false)
                }
                _ => Err(Error::database("dropping an old partition", &error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_the_relay_gives_have_a_unit() {
        let day = PartitionUnit::of_name("outbox", "outbox_p20261128");
        let hour = PartitionUnit::of_name("outbox", "outbox_p2026112813");
        assert_eq!(day, Some(PartitionUnit::Day));
        assert_eq!(hour, Some(PartitionUnit::Hour));
        for other in [
            "outbox_default",
            "outbox_p2026",
            "outbox_pabcdefgh",
            "outbox2_p20261128",
            "archive_p20261128",
        ] {
            assert_eq!(PartitionUnit::of_name("outbox", other), None, "{other}");
        }
    }

    #[test]
    fn the_partition_ddl_names_the_unit_and_quotes_the_table() {
        let table = "app.events".parse().unwrap();
        let sql = partition_sql(&table, PartitionUnit::Hour);
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS \"app\".\"events_default\" PARTITION OF \"app\".\"events\" DEFAULT"));
        assert!(sql.contains("interval '1 hour'"));
        assert!(sql.contains("'YYYYMMDDHH24'"));
        assert!(sql.contains("FOR k IN 0..3 LOOP"));
        assert!(!sql.contains("{{"), "{sql}");
    }
}
