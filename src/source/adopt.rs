//! `migrate --adopt`: give an existing table (Debezium's outbox table, or any
//! table mapped with `--column`) the relay's columns, checks and indexes.
//!
//! Guarantees: safe on a large, busy table. No statement rewrites the table;
//! every statement that needs a lock stronger than writers' runs with a short
//! `lock_timeout` and is retried, so writers never queue behind it for
//! longer than that; old rows are backfilled in page ranges, each its own
//! short transaction; indexes are built CONCURRENTLY. Old rows keep their
//! order before every new row. Running it again finds everything in place
//! and changes nothing.

use std::time::{Duration, Instant};

use deadpool_postgres::Object;
use tokio_postgres::types::{ToSql, Type};

use super::Database;
use crate::error::{Error, Result};
use crate::source::layout::{quote, ColumnTypes, Layout, Role};

/// How long a DDL statement may wait for its lock before it gives up and
/// tries again: writers queue behind a waiting ACCESS EXCLUSIVE request, so
/// this is the longest a writer can be held up by `--adopt`.
const LOCK_TIMEOUT: &str = "50ms";
/// Give up on a DDL statement after this long of failing to get its lock.
const LOCK_PATIENCE: Duration = Duration::from_secs(300);
/// Pages per backfill transaction (about 5,000 rows of a typical outbox row).
const BACKFILL_PAGES: i64 = 64;

const ADD_COLUMNS: &str = include_str!("../../sql/adopt/01_add_columns.sql");
const SEQUENCE_DEFAULT: &str = include_str!("../../sql/adopt/02_sequence_default.sql");
const CREATED_AT_DEFAULT: &str = include_str!("../../sql/adopt/02_created_at_default.sql");
const EVENT_ID_DEFAULT: &str = include_str!("../../sql/adopt/02_event_id_default.sql");
const DEFAULTS: &str = include_str!("../../sql/adopt/02_defaults.sql");
const BACKFILL_DONE: &str = include_str!("../../sql/adopt/03_backfill_done.sql");
const BACKFILL_PREPARE: &str = include_str!("../../sql/adopt/03_backfill_prepare.sql");
const BACKFILL: &str = include_str!("../../sql/adopt/03_backfill.sql");
const PAGES: &str = include_str!("../../sql/adopt/03_pages.sql");
const CONSTRAINTS: &str = include_str!("../../sql/adopt/04_constraints.sql");
const VALIDATE: &str = include_str!("../../sql/adopt/04_validate.sql");
const INDEXES: &str = include_str!("../../sql/adopt/05_indexes.sql");
const INVALID_INDEXES: &str = include_str!("../../sql/adopt/05_invalid_indexes.sql");
const ENQUEUE: &str = include_str!("../../sql/adopt/06_enqueue.sql");

/// What `--adopt` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AdoptReport {
    /// Relay columns the table did not have.
    pub added_columns: Vec<String>,
    /// Rows that existed before and were given their values.
    pub backfilled: u64,
    /// Times a DDL statement gave way to writers and tried again.
    pub lock_retries: u32,
}

/// The SQL of the adoption, rendered for one table and layout.
struct AdoptSql<'a> {
    table: &'a crate::source::table::TableName,
    layout: &'a Layout,
    types: &'a ColumnTypes,
}

impl AdoptSql<'_> {
    fn sequence(&self) -> &str {
        self.layout.column(Role::Sequence).unwrap_or("id")
    }

    fn event_id(&self) -> &str {
        self.layout.column(Role::EventId).unwrap_or("event_id")
    }

    fn render(&self, template: &str) -> String {
        let table = self.table;
        let unquoted = |quoted: String| quoted.replace('\'', "''");
        let new_event_id = match self.types.get(self.event_id()).map(String::as_str) {
            Some("uuid") | None => "gen_random_uuid()",
            Some(_) => "gen_random_uuid()::text",
        };
        template
            .replace("{{table_text}}", &unquoted(table.quoted()))
            .replace("{{table}}", &table.quoted())
            .replace("{{name}}", &table.stem())
            .replace(
                "{{sequence_seq_text}}",
                &unquoted(table.quoted_sibling("sequence_seq")),
            )
            .replace("{{sequence_seq}}", &table.quoted_sibling("sequence_seq"))
            .replace(
                "{{backfill_seq_text}}",
                &unquoted(table.quoted_sibling("backfill_seq")),
            )
            .replace("{{backfill_seq}}", &table.quoted_sibling("backfill_seq"))
            .replace("{{sequence}}", &quote(self.sequence()))
            .replace("{{event_id_column}}", &quote(self.event_id()))
            .replace("{{new_event_id}}", new_event_id)
            .replace(
                "{{key}}",
                &quote(self.layout.column(Role::Key).unwrap_or("message_key")),
            )
            .replace("{{enqueue_function}}", &table.quoted_sibling("enqueue"))
    }

    /// The enqueue function: one parameter per application column the
    /// layout reads, typed as the column (type names from the catalog).
    fn enqueue(&self, types: &ColumnTypes) -> String {
        let columns = self.layout.application_columns();
        let parameters: Vec<String> = columns
            .iter()
            .map(|c| format!("{} {}", quote(&format!("p_{c}")), types[*c]))
            .collect();
        let arguments: Vec<String> = columns.iter().map(|c| quote(&format!("p_{c}"))).collect();
        let quoted: Vec<String> = columns.iter().map(|c| quote(c)).collect();
        self.render(ENQUEUE)
            .replace("{{parameters}}", &parameters.join(", "))
            .replace("{{columns}}", &quoted.join(", "))
            .replace("{{arguments}}", &arguments.join(", "))
            .replace(
                "{{event_id_type}}",
                types.get(self.event_id()).map_or("uuid", String::as_str),
            )
    }
}

impl Database {
    /// Adopt the table in place; see the module documentation. `progress`
    /// hears about each step and the backfill's progress.
    pub async fn adopt(
        &self,
        notify_trigger: bool,
        progress: impl Fn(&str),
    ) -> Result<AdoptReport> {
        let connection = self.connection().await?;
        let fail = |e: tokio_postgres::Error| Error::database("adopting the table", &e);
        let before = self.column_types_on(&connection).await?;
        if before.is_empty() {
            return Err(Error::MissingTable {
                table: self.table().to_string(),
            });
        }
        check_application_columns(self, &before)?;
        let mut report = AdoptReport::default();
        let plain = AdoptSql {
            table: self.table(),
            layout: self.layout(),
            types: &before,
        };
        report.lock_retries += ddl(&connection, &plain.render(ADD_COLUMNS)).await?;
        let after = self.column_types_on(&connection).await?;
        report.added_columns = after
            .keys()
            .filter(|c| !before.contains_key(*c))
            .cloned()
            .collect();
        let sql = AdoptSql {
            types: &after,
            ..plain
        };
        let defaults = self.column_defaults(&connection, &sql).await?;
        if !defaults.sequence {
            report.lock_retries += ddl(&connection, &sql.render(SEQUENCE_DEFAULT)).await?;
        }
        if !defaults.created_at {
            report.lock_retries += ddl(&connection, &sql.render(CREATED_AT_DEFAULT)).await?;
        }
        if !defaults.event_id && after.get(sql.event_id()).map(String::as_str) == Some("uuid") {
            report.lock_retries += ddl(&connection, &sql.render(EVENT_ID_DEFAULT)).await?;
        }
        report.backfilled = backfill(&connection, &sql, &progress).await?;
        progress("adding the relay's checks");
        report.lock_retries += ddl(&connection, &sql.render(CONSTRAINTS)).await?;
        connection
            .batch_execute(&sql.render(VALIDATE))
            .await
            .map_err(fail)?;
        progress("building the relay's indexes (CONCURRENTLY)");
        build_indexes(&connection, &sql).await?;
        report.lock_retries += ddl(&connection, &sql.enqueue(&after)).await?;
        if notify_trigger {
            report.lock_retries += ddl(&connection, &self.sql().notify_trigger).await?;
        }
        Ok(report)
    }

    async fn column_defaults(&self, connection: &Object, sql: &AdoptSql<'_>) -> Result<Defaults> {
        let rows = connection
            .query_typed(DEFAULTS, &[(&self.table().quoted(), Type::TEXT)])
            .await
            .map_err(|e| Error::database("reading column defaults", &e))?;
        let with_default: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let has = |c: &str| with_default.iter().any(|d| d == c);
        Ok(Defaults {
            sequence: has(sql.sequence()),
            created_at: has("created_at"),
            event_id: has(sql.event_id()),
        })
    }
}

struct Defaults {
    sequence: bool,
    created_at: bool,
    event_id: bool,
}

/// The layout's own columns must exist before anything is added: adopting
/// a table that lacks its payload would only add columns nobody reads.
/// Adopt adds an `event_id` column when the layout keeps the default name.
fn check_application_columns(database: &Database, types: &ColumnTypes) -> Result<()> {
    let layout = database.layout();
    let event_id = layout.column(Role::EventId).filter(|c| *c != "event_id");
    let table = database.table().to_string();
    Ok(layout.check_application_columns(&table, types, event_id, &[])?)
}

/// Run one DDL statement with a short lock timeout, retrying while it cannot
/// get its lock; returns how many times it retried.
async fn ddl(connection: &Object, text: &str) -> Result<u32> {
    let started = Instant::now();
    let mut retries = 0;
    loop {
        let attempt = format!("BEGIN; SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; {text}; COMMIT");
        match connection.batch_execute(&attempt).await {
            Ok(()) => return Ok(retries),
            Err(e) => {
                let _ = connection.batch_execute("ROLLBACK").await;
                let lock_not_available = e
                    .code()
                    .is_some_and(|c| *c == tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE);
                if !lock_not_available || started.elapsed() > LOCK_PATIENCE {
                    return Err(Error::database("adopting the table", &e));
                }
                retries += 1;
                // Let the writers queued behind the attempt through.
                tokio::time::sleep(Duration::from_millis(20 * u64::from(retries.min(25)))).await;
            }
        }
    }
}

/// Fill the rows that existed before the defaults, page range by page range;
/// returns how many rows it filled.
async fn backfill(
    connection: &Object,
    sql: &AdoptSql<'_>,
    progress: &impl Fn(&str),
) -> Result<u64> {
    let fail = |e: tokio_postgres::Error| Error::database("backfilling old rows", &e);
    let pages = sql.render(PAGES);
    let (mut total_pages, unfilled) = count_pages(connection, &pages).await?;
    if !unfilled {
        return Ok(0);
    }
    connection
        .batch_execute(&sql.render(BACKFILL_PREPARE))
        .await
        .map_err(fail)?;
    let statement = sql.render(BACKFILL);
    let mut filled = 0;
    let mut reported = 0;
    let mut page = 0;
    // Rows moved by their own update land on later pages already filled;
    // the second pass finds nothing left unless the table grew before the
    // defaults were in place.
    loop {
        while page < total_pages {
            let end = page + BACKFILL_PAGES;
            let params: [(&(dyn ToSql + Sync), Type); 2] =
                [(&page, Type::INT8), (&end, Type::INT8)];
            let updated = connection
                .query_typed(&statement, &params)
                .await
                .map_err(fail)?;
            filled += updated.len() as u64;
            page = end;
            let percent = page * 100 / total_pages.max(1);
            if percent >= reported + 10 {
                reported = percent;
                progress(&format!(
                    "backfilled {filled} rows ({}% of pages)",
                    percent.min(100)
                ));
            }
        }
        let (now_pages, unfilled) = count_pages(connection, &pages).await?;
        if !unfilled {
            break;
        }
        page = 0;
        total_pages = now_pages;
    }
    connection
        .batch_execute(&sql.render(BACKFILL_DONE))
        .await
        .map_err(fail)?;
    Ok(filled)
}

/// The table's pages, and whether any row still lacks a relay value.
async fn count_pages(connection: &Object, pages: &str) -> Result<(i64, bool)> {
    let rows = connection
        .query_typed(pages, &[])
        .await
        .map_err(|e| Error::database("backfilling old rows", &e))?;
    let row = rows
        .first()
        .ok_or_else(|| Error::Internal("the page count returned no row".to_owned()))?;
    Ok((row.get(0), row.get(1)))
}

async fn build_indexes(connection: &Object, sql: &AdoptSql<'_>) -> Result<()> {
    let fail = |e: tokio_postgres::Error| Error::database("building indexes", &e);
    let invalid = connection
        .query_typed(&sql.render(INVALID_INDEXES), &[])
        .await
        .map_err(fail)?;
    for row in invalid {
        let name: String = row.get(0);
        connection
            .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
            .await
            .map_err(fail)?;
    }
    for statement in sql.render(INDEXES).split(";\n\n") {
        connection.batch_execute(statement).await.map_err(fail)?;
    }
    Ok(())
}
