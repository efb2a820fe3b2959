//! The typed query layer: one function per statement in `sql/queries/`,
//! named after its file (entity first), taking a parameters struct with named
//! fields and returning typed rows.
//!
//! Guarantees: this is the only module that binds parameters or reads
//! columns, so the SQL contract lives in two places that sit side by side:
//! the `.sql` file and the function here. Statements are prepared once per
//! connection (and all of them at start-up by [`prepare_all`], which also
//! checks the columns each statement returns), so a table that drifted from
//! this version fails at once with the statement's name.

use std::time::{Duration, SystemTime};

use deadpool_postgres::ClientWrapper;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use crate::source::sql::{Sql, Statement};

/// A pooled connection: it caches prepared statements.
pub type Client = ClientWrapper;
type PgResult<T> = Result<T, tokio_postgres::Error>;
/// Bind parameters with their types: the types are what the unnamed
/// statements of pooler mode need (prepared statements learn them from the
/// server).
type Params<'a, const N: usize> = [(&'a (dyn ToSql + Sync), Type); N];

async fn prepared(client: &Client, statement: &Statement) -> PgResult<tokio_postgres::Statement> {
    client.prepare_cached(&statement.text).await
}

/// Run a statement that returns rows: prepared once per connection, or, in
/// pooler mode, as the unnamed statement (Parse, Bind and Execute in one
/// round trip, so nothing outlives it and no name can collide).
async fn query(
    client: &Client,
    sql: &Sql,
    statement: &Statement,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> PgResult<Vec<Row>> {
    if sql.pooler_safe {
        return client.query_typed(&statement.text, params).await;
    }
    let prepared = prepared(client, statement).await?;
    let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(value, _)| *value).collect();
    client.query(&prepared, &values).await
}

/// [`query`] for a statement that returns a row count.
async fn execute(
    client: &Client,
    sql: &Sql,
    statement: &Statement,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> PgResult<u64> {
    if sql.pooler_safe {
        return client.execute_typed(&statement.text, params).await;
    }
    let prepared = prepared(client, statement).await?;
    let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(value, _)| *value).collect();
    client.execute(&prepared, &values).await
}

/// Prepare `statement` on `client` now. A query function pipelined with
/// another request (`BEGIN`, `COMMIT`) must find its statement prepared:
/// otherwise its Parse goes out first and the other request overtakes it
/// (an UPDATE meant for the transaction would run after its COMMIT).
pub async fn prepare(client: &Client, sql: &Sql, statement: &Statement) -> PgResult<()> {
    if sql.pooler_safe {
        // Unnamed statements are parsed with their execution, in order.
        return Ok(());
    }
    prepared(client, statement).await.map(drop)
}

/// A statement that did not prepare against the table, or returned other
/// columns than this version reads.
#[derive(Debug)]
pub struct Drift {
    pub statement: &'static str,
    pub reason: String,
}

/// Check every statement that touches the table against it: prepare each
/// and check the columns of those that return rows; in pooler mode, where
/// nothing may be prepared, run each once with empty inputs in a
/// transaction that is rolled back.
pub async fn prepare_all(client: &Client, sql: &Sql, quoted_table: &str) -> Result<(), Drift> {
    if sql.pooler_safe {
        return dry_run_all(client, sql, quoted_table).await;
    }
    for statement in sql.table_statements() {
        let prepared = prepared(client, statement).await.map_err(|e| Drift {
            statement: statement.name,
            reason: crate::error::describe_pg_error(&e),
        })?;
        let columns: Vec<&str> = prepared.columns().iter().map(|c| c.name()).collect();
        let expected = expected_columns(statement.name);
        if !expected.is_empty() && columns != expected {
            return Err(Drift {
                statement: statement.name,
                reason: format!("it returns columns {columns:?}, expected {expected:?}"),
            });
        }
    }
    Ok(())
}

async fn dry_run_all(client: &Client, sql: &Sql, quoted_table: &str) -> Result<(), Drift> {
    let transaction = |e: tokio_postgres::Error| Drift {
        statement: "BEGIN/ROLLBACK",
        reason: crate::error::describe_pg_error(&e),
    };
    client.batch_execute("BEGIN").await.map_err(transaction)?;
    let outcome = dry_run_statements(client, sql, quoted_table).await;
    client
        .batch_execute("ROLLBACK")
        .await
        .map_err(transaction)?;
    outcome
}

/// Each table statement once, with inputs that touch no row.
async fn dry_run_statements(client: &Client, sql: &Sql, quoted_table: &str) -> Result<(), Drift> {
    let drift = |statement: &Statement| {
        let name = statement.name;
        move |e: tokio_postgres::Error| Drift {
            statement: name,
            reason: crate::error::describe_pg_error(&e),
        }
    };
    let claim = OutboxClaimDueParams {
        limit: 0,
        in_flight: &[],
        skipped: &[],
        fence: None,
    };
    outbox_claim_due(client, sql, claim)
        .await
        .map_err(drift(&sql.outbox_claim_due))?;
    let mark = OutboxMarkPublishedParams { ids: &[] };
    outbox_mark_published(client, sql, mark)
        .await
        .map_err(drift(&sql.outbox_mark_published))?;
    let record = OutboxRecordFailuresParams {
        failures: &[],
        max_attempts: 1,
    };
    outbox_record_failures(client, sql, record)
        .await
        .map_err(drift(&sql.outbox_record_failures))?;
    let hold = OutboxHoldBackKeysParams { head_ids: &[] };
    outbox_hold_back_keys(client, sql, hold)
        .await
        .map_err(drift(&sql.outbox_hold_back_keys))?;
    outbox_stats_by_topic(client, sql)
        .await
        .map_err(drift(&sql.outbox_stats_by_topic))?;
    let requeue = OutboxRequeueDeadParams {
        ids: None,
        topic: None,
        limit: 0,
    };
    outbox_requeue_dead(client, sql, requeue)
        .await
        .map_err(drift(&sql.outbox_requeue_dead))?;
    let prune = OutboxPrunePublishedParams {
        older_than: Duration::ZERO,
        limit: 0,
    };
    outbox_prune_published(client, sql, prune)
        .await
        .map_err(drift(&sql.outbox_prune_published))?;
    outbox_table_size(client, sql, OutboxTableSizeParams { quoted_table })
        .await
        .map_err(drift(&sql.outbox_table_size))?;
    Ok(())
}

fn expected_columns(statement: &str) -> &'static [&'static str] {
    match statement {
        "outbox_claim_due" => OutboxRow::COLUMNS,
        "outbox_record_failures" => &["id", "status"],
        "outbox_stats_by_topic" => TopicBacklog::COLUMNS,
        "outbox_requeue_dead" => &["id"],
        _ => &[],
    }
}

// --- migration_lock -------------------------------------------------------

pub struct MigrationLockParams {
    pub key: i64,
}

/// Take the transaction-scoped advisory lock that serialises `migrate` runs.
pub async fn migration_lock(
    client: &Client,
    sql: &Sql,
    params: MigrationLockParams,
) -> PgResult<()> {
    let bound: Params<1> = [(&params.key, Type::INT8)];
    execute(client, sql, &sql.migration_lock, &bound)
        .await
        .map(drop)
}

// --- outbox_table_exists --------------------------------------------------

pub struct OutboxTableExistsParams<'a> {
    /// The quoted, possibly schema-qualified name.
    pub quoted_table: &'a str,
}

pub async fn outbox_table_exists(
    client: &Client,
    sql: &Sql,
    params: OutboxTableExistsParams<'_>,
) -> PgResult<Option<String>> {
    let bound: Params<1> = [(&params.quoted_table, Type::TEXT)];
    let rows = query(client, sql, &sql.outbox_table_exists, &bound).await?;
    let qualified = rows.first().map(|row| row.try_get::<_, Option<String>>(0));
    Ok(qualified.transpose()?.flatten())
}

// --- outbox_columns -------------------------------------------------------

pub struct OutboxColumnsParams<'a> {
    /// The quoted, possibly schema-qualified name.
    pub quoted_table: &'a str,
}

/// Column name -> type name of the table.
pub async fn outbox_columns(
    client: &Client,
    sql: &Sql,
    params: OutboxColumnsParams<'_>,
) -> PgResult<crate::source::layout::ColumnTypes> {
    let bound: Params<1> = [(&params.quoted_table, Type::TEXT)];
    let rows = query(client, sql, &sql.outbox_columns, &bound).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

// --- outbox_claim_due -----------------------------------------------------

/// One claimed row, as the publisher needs it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: String,
    /// Empty when a topic template met a NULL column.
    pub topic: String,
    /// The key's bytes: see [`crate::source::layout::ColumnSql::key_bytes`].
    pub message_key: Option<Vec<u8>>,
    /// The payload column's bytes (JSON text for json and jsonb); `None`
    /// means a tombstone.
    pub payload: Option<Vec<u8>>,
    pub headers: serde_json::Value,
    /// The mapped `event_type` column, for CloudEvents' `ce_type`.
    pub event_type: Option<String>,
    /// Failed attempts so far.
    pub attempts: i32,
    pub created_at: SystemTime,
}

impl OutboxRow {
    /// The claim's select list, in order.
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "event_id",
        "topic",
        "message_key",
        "payload",
        "headers",
        "event_type",
        "attempts",
        "created_at",
    ];

    fn decode(row: &Row) -> PgResult<Self> {
        Ok(OutboxRow {
            id: row.try_get(0)?,
            event_id: row.try_get(1)?,
            topic: row.try_get::<_, Option<String>>(2)?.unwrap_or_default(),
            message_key: row.try_get::<_, Option<RawBytes>>(3)?.map(|k| k.0),
            payload: row.try_get::<_, Option<RawBytes>>(4)?.map(|p| p.0),
            headers: row.try_get(5)?,
            event_type: row.try_get(6)?,
            attempts: row.try_get(7)?,
            created_at: row.try_get(8)?,
        })
    }
}

pub struct OutboxClaimDueParams<'a> {
    /// Most rows to lock.
    pub limit: i64,
    /// Ids this relay has handed to the producer and not yet recorded.
    pub in_flight: &'a [i64],
    /// Ids of rows the database refused to record at all: never claimed,
    /// but still ahead of the later rows of their key.
    pub skipped: &'a [i64],
    /// The leader's lock session (pid, lock key); `None` without election.
    pub fence: Option<Fence>,
}

/// What a leader's claim proves it still leads by: the pid of its lock
/// session and the advisory lock's key (see `outbox_claim_due.sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub pid: i32,
    pub lock_key: i64,
}

/// Lock due rows and return those that may be published now (see the file).
/// Must run inside a transaction: the locks are the claim.
pub async fn outbox_claim_due(
    client: &Client,
    sql: &Sql,
    params: OutboxClaimDueParams<'_>,
) -> PgResult<Vec<OutboxRow>> {
    let (pid, lock_key) = match params.fence {
        Some(fence) => (Some(fence.pid), Some(fence.lock_key)),
        None => (None, None),
    };
    let bound: Params<5> = [
        (&params.limit, Type::INT8),
        (&params.in_flight, Type::INT8_ARRAY),
        (&pid, Type::INT4),
        (&lock_key, Type::INT8),
        (&params.skipped, Type::INT8_ARRAY),
    ];
    let rows = query(client, sql, &sql.outbox_claim_due, &bound).await?;
    rows.iter().map(OutboxRow::decode).collect()
}

/// A column's bytes as sent: bytea as stored, text types as UTF-8, json as
/// its text and jsonb as its text after the binary format's version byte.
struct RawBytes(Vec<u8>);

impl<'a> tokio_postgres::types::FromSql<'a> for RawBytes {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            return match raw.split_first() {
                Some((1, text)) => Ok(RawBytes(text.to_vec())),
                _ => Err("unsupported jsonb binary version".into()),
            };
        }
        Ok(RawBytes(raw.to_vec()))
    }

    fn accepts(ty: &Type) -> bool {
        [
            Type::BYTEA,
            Type::TEXT,
            Type::VARCHAR,
            Type::BPCHAR,
            Type::JSON,
            Type::JSONB,
        ]
        .contains(ty)
    }
}

// --- outbox_mark_published ------------------------------------------------

pub struct OutboxMarkPublishedParams<'a> {
    pub ids: &'a [i64],
}

/// Mark pending rows published; returns how many were.
pub async fn outbox_mark_published(
    client: &Client,
    sql: &Sql,
    params: OutboxMarkPublishedParams<'_>,
) -> PgResult<u64> {
    let bound: Params<1> = [(&params.ids, Type::INT8_ARRAY)];
    execute(client, sql, &sql.outbox_mark_published, &bound).await
}

// --- outbox_delete_published ----------------------------------------------

/// Delete pending rows (`--on-publish delete`); returns how many were.
pub async fn outbox_delete_published(
    client: &Client,
    sql: &Sql,
    params: OutboxMarkPublishedParams<'_>,
) -> PgResult<u64> {
    let bound: Params<1> = [(&params.ids, Type::INT8_ARRAY)];
    execute(client, sql, &sql.outbox_delete_published, &bound).await
}

// --- outbox_record_failures -----------------------------------------------

/// A failed attempt to record for one row.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureRecord {
    pub id: i64,
    pub message_key: Option<Vec<u8>>,
    pub error: String,
    /// No retry can fix it: the row goes dead now.
    pub is_final: bool,
    /// Wait before the next attempt, if the row stays pending.
    pub retry_in: Duration,
}

pub struct OutboxRecordFailuresParams<'a> {
    pub failures: &'a [FailureRecord],
    /// Attempts after which a row that keeps failing is dead.
    pub max_attempts: i32,
}

/// What recording one failure did to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedFailure {
    pub id: i64,
    pub dead: bool,
}

pub async fn outbox_record_failures(
    client: &Client,
    sql: &Sql,
    params: OutboxRecordFailuresParams<'_>,
) -> PgResult<Vec<RecordedFailure>> {
    let failures = params.failures;
    let ids: Vec<i64> = failures.iter().map(|f| f.id).collect();
    let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
    let finals: Vec<bool> = failures.iter().map(|f| f.is_final).collect();
    let delays: Vec<f64> = failures.iter().map(|f| f.retry_in.as_secs_f64()).collect();
    let bound: Params<5> = [
        (&ids, Type::INT8_ARRAY),
        (&errors, Type::TEXT_ARRAY),
        (&finals, Type::BOOL_ARRAY),
        (&delays, Type::FLOAT8_ARRAY),
        (&params.max_attempts, Type::INT4),
    ];
    let rows = query(client, sql, &sql.outbox_record_failures, &bound).await?;
    rows.iter()
        .map(|row| {
            Ok(RecordedFailure {
                id: row.try_get(0)?,
                dead: row.try_get::<_, &str>(1)? == "dead",
            })
        })
        .collect()
}

// --- outbox_hold_back_keys ------------------------------------------------

pub struct OutboxHoldBackKeysParams<'a> {
    /// The rows that wait for a retry at the head of their key, one per key.
    pub head_ids: &'a [i64],
}

/// Give the later pending rows of each key their head's retry time; returns
/// how many rows were pushed back.
pub async fn outbox_hold_back_keys(
    client: &Client,
    sql: &Sql,
    params: OutboxHoldBackKeysParams<'_>,
) -> PgResult<u64> {
    let bound: Params<1> = [(&params.head_ids, Type::INT8_ARRAY)];
    execute(client, sql, &sql.outbox_hold_back_keys, &bound).await
}

// --- outbox_stats_by_topic ------------------------------------------------

/// Backlog of one topic.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TopicBacklog {
    pub topic: String,
    pub pending: i64,
    /// `None` when nothing is pending.
    pub oldest_pending_age_seconds: Option<f64>,
    pub dead: i64,
}

impl TopicBacklog {
    const COLUMNS: &'static [&'static str] =
        &["topic", "pending", "oldest_pending_age_seconds", "dead"];

    fn decode(row: &Row) -> PgResult<Self> {
        Ok(TopicBacklog {
            topic: row.try_get(0)?,
            pending: row.try_get(1)?,
            oldest_pending_age_seconds: row.try_get::<_, Option<f64>>(2)?.map(|age| age.max(0.0)),
            dead: row.try_get(3)?,
        })
    }
}

pub async fn outbox_stats_by_topic(client: &Client, sql: &Sql) -> PgResult<Vec<TopicBacklog>> {
    let rows = query(client, sql, &sql.outbox_stats_by_topic, &[]).await?;
    rows.iter().map(TopicBacklog::decode).collect()
}

// --- outbox_requeue_dead --------------------------------------------------

pub struct OutboxRequeueDeadParams<'a> {
    /// Only these ids (`None`: any).
    pub ids: Option<&'a [i64]>,
    /// Only this topic (`None`: any).
    pub topic: Option<&'a str>,
    pub limit: i64,
}

/// Move up to `limit` selected dead rows back to pending; returns how many.
pub async fn outbox_requeue_dead(
    client: &Client,
    sql: &Sql,
    params: OutboxRequeueDeadParams<'_>,
) -> PgResult<u64> {
    let bound: Params<3> = [
        (&params.ids, Type::INT8_ARRAY),
        (&params.topic, Type::TEXT),
        (&params.limit, Type::INT8),
    ];
    execute(client, sql, &sql.outbox_requeue_dead, &bound).await
}

// --- outbox_prune_published -----------------------------------------------

pub struct OutboxPrunePublishedParams {
    /// Only rows published longer ago than this.
    pub older_than: Duration,
    pub limit: i64,
}

/// Delete up to `limit` old published rows; returns how many.
pub async fn outbox_prune_published(
    client: &Client,
    sql: &Sql,
    params: OutboxPrunePublishedParams,
) -> PgResult<u64> {
    let age_secs = params.older_than.as_secs_f64();
    let bound: Params<2> = [(&age_secs, Type::FLOAT8), (&params.limit, Type::INT8)];
    execute(client, sql, &sql.outbox_prune_published, &bound).await
}

// --- outbox_table_size ----------------------------------------------------

pub struct OutboxTableSizeParams<'a> {
    pub quoted_table: &'a str,
}

/// Bytes on disk: table, indexes and TOAST.
pub async fn outbox_table_size(
    client: &Client,
    sql: &Sql,
    params: OutboxTableSizeParams<'_>,
) -> PgResult<i64> {
    let bound: Params<1> = [(&params.quoted_table, Type::TEXT)];
    let rows = query(client, sql, &sql.outbox_table_size, &bound).await?;
    rows.first().map_or(Ok(0), |row| row.try_get(0))
}

// --- outbox_privileges ----------------------------------------------------

pub struct OutboxPrivilegesParams<'a> {
    pub quoted_table: &'a str,
    /// Privileges to check, e.g. `SELECT`, `UPDATE`.
    pub privileges: &'a [&'a str],
}

/// The current role and the privileges of `privileges` it lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingPrivileges {
    pub role: String,
    pub missing: Vec<String>,
}

pub async fn outbox_privileges(
    client: &Client,
    sql: &Sql,
    params: OutboxPrivilegesParams<'_>,
) -> PgResult<MissingPrivileges> {
    let bound: Params<2> = [
        (&params.quoted_table, Type::TEXT),
        (&params.privileges, Type::TEXT_ARRAY),
    ];
    let rows = query(client, sql, &sql.outbox_privileges, &bound).await?;
    // A SELECT without FROM returns exactly one row.
    let Some(row) = rows.first() else {
        return Ok(MissingPrivileges {
            role: String::new(),
            missing: Vec::new(),
        });
    };
    Ok(MissingPrivileges {
        role: row.try_get(0)?,
        missing: row.try_get(1)?,
    })
}

// --- outbox_list_dead -----------------------------------------------------

/// A dead row, as `outbox-relay dead` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeadRowView {
    pub id: i64,
    pub topic: String,
    pub key: Option<String>,
    pub attempts: i32,
    /// Seconds since the epoch.
    pub last_attempt_at: Option<f64>,
    pub last_error: Option<String>,
}

pub struct OutboxListDeadParams<'a> {
    pub topic: Option<&'a str>,
    pub limit: i64,
}

pub async fn outbox_list_dead(
    client: &Client,
    sql: &Sql,
    params: OutboxListDeadParams<'_>,
) -> PgResult<Vec<DeadRowView>> {
    let bound: Params<2> = [(&params.topic, Type::TEXT), (&params.limit, Type::INT8)];
    let rows = query(client, sql, &sql.outbox_list_dead, &bound).await?;
    rows.iter()
        .map(|row| {
            let at: Option<SystemTime> = row.try_get(4)?;
            Ok(DeadRowView {
                id: row.try_get(0)?,
                topic: row.try_get(1)?,
                key: row.try_get(2)?,
                attempts: row.try_get(3)?,
                last_attempt_at: at.map(epoch_seconds),
                last_error: row.try_get(5)?,
            })
        })
        .collect()
}

fn epoch_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// --- outbox_count_requeueable / outbox_count_prunable ---------------------

pub async fn outbox_count_requeueable(
    client: &Client,
    sql: &Sql,
    params: OutboxRequeueDeadParams<'_>,
) -> PgResult<i64> {
    let bound: Params<2> = [(&params.ids, Type::INT8_ARRAY), (&params.topic, Type::TEXT)];
    let rows = query(client, sql, &sql.outbox_count_requeueable, &bound).await?;
    rows.first().map_or(Ok(0), |row| row.try_get(0))
}

pub async fn outbox_count_prunable(
    client: &Client,
    sql: &Sql,
    older_than: Duration,
) -> PgResult<i64> {
    let age_secs = older_than.as_secs_f64();
    let bound: Params<1> = [(&age_secs, Type::FLOAT8)];
    let rows = query(client, sql, &sql.outbox_count_prunable, &bound).await?;
    rows.first().map_or(Ok(0), |row| row.try_get(0))
}

// --- outbox_status_of -----------------------------------------------------

/// (id, status) of those of `ids` that exist.
pub async fn outbox_status_of(
    client: &Client,
    sql: &Sql,
    ids: &[i64],
) -> PgResult<Vec<(i64, String)>> {
    let bound: Params<1> = [(&ids, Type::INT8_ARRAY)];
    let rows = query(client, sql, &sql.outbox_status_of, &bound).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

// --- outbox_published_summary ---------------------------------------------

/// Published rows, and when the last was published (seconds since epoch).
pub async fn outbox_published_summary(client: &Client, sql: &Sql) -> PgResult<(i64, Option<f64>)> {
    let rows = query(client, sql, &sql.outbox_published_summary, &[]).await?;
    let Some(row) = rows.first() else {
        return Ok((0, None));
    };
    let last: Option<SystemTime> = row.try_get(1)?;
    Ok((row.try_get(0)?, last.map(epoch_seconds)))
}

// --- outbox_objects -------------------------------------------------------

pub struct OutboxObjectsParams<'a> {
    pub relations: &'a [String],
    pub functions: &'a [String],
    pub quoted_table: &'a str,
    pub triggers: &'a [String],
    pub constraints: &'a [String],
}

/// The names (as given) of those objects that exist.
pub async fn outbox_objects(
    client: &Client,
    sql: &Sql,
    params: OutboxObjectsParams<'_>,
) -> PgResult<Vec<String>> {
    let bound: Params<5> = [
        (&params.relations, Type::TEXT_ARRAY),
        (&params.functions, Type::TEXT_ARRAY),
        (&params.quoted_table, Type::TEXT),
        (&params.triggers, Type::TEXT_ARRAY),
        (&params.constraints, Type::TEXT_ARRAY),
    ];
    let rows = query(client, sql, &sql.outbox_objects, &bound).await?;
    rows.iter().map(|row| row.try_get(0)).collect()
}

// --- discover_tables ------------------------------------------------------

pub struct DiscoverTablesParams<'a> {
    /// The schema as a `LIKE` pattern; `None`: the search path's schemas.
    pub schema_like: Option<&'a str>,
    pub name_like: &'a str,
}

/// `(schema, name)` of every table the patterns match, sorted.
pub async fn discover_tables(
    client: &Client,
    sql: &Sql,
    params: DiscoverTablesParams<'_>,
) -> PgResult<Vec<(String, String)>> {
    let bound: Params<2> = [
        (&params.schema_like, Type::TEXT),
        (&params.name_like, Type::TEXT),
    ];
    let rows = query(client, sql, &sql.discover_tables, &bound).await?;
    rows.iter()
        .map(|row| Ok((row.try_get("schema")?, row.try_get("name")?)))
        .collect()
}

// --- announce_tables ------------------------------------------------------

/// NOTIFY running relays that `table` was created or changed.
pub async fn announce_tables(client: &Client, sql: &Sql, table: &str) -> PgResult<()> {
    let bound: Params<1> = [(&table, Type::TEXT)];
    query(client, sql, &sql.announce_tables, &bound)
        .await
        .map(drop)
}

// --- outbox_notify_trigger ------------------------------------------------

/// Whether the table has the relay's NOTIFY trigger.
pub async fn outbox_notify_trigger(
    client: &Client,
    sql: &Sql,
    quoted_table: &str,
    trigger: &str,
) -> PgResult<bool> {
    let bound: Params<2> = [(&quoted_table, Type::TEXT), (&trigger, Type::TEXT)];
    let rows = query(client, sql, &sql.outbox_notify_trigger, &bound).await?;
    match rows.first() {
        Some(row) => row.try_get("installed"),
        None => Ok(false),
    }
}
