//! Claiming a batch of outbox rows and recording what happened to them.
//!
//! A claim is one open transaction holding `FOR UPDATE` locks on its rows, so
//! no other relay can publish them at the same time, and a relay that dies
//! releases them at once (the server rolls the transaction back). The
//! transaction ends with [`ClaimedBatch::record`], which marks and commits, or
//! with [`ClaimedBatch::abandon`]. Dropping a batch without either discards
//! its connection, so an unfinished transaction never returns to the pool.
//!
//! One row never stalls the table: when the database refuses to record a
//! batch because of a row (a constraint, a trigger, bad data), the batch is
//! recorded again row by row. A row it refuses goes dead with the database's
//! reason; a row it refuses even that is returned as unrecordable, for the
//! relay to skip (see `outbox_claim_due.sql`). The rest are recorded. When
//! not one row of the batch can be written, the refusal is the table's: the
//! error is returned and every row stays pending.

use std::collections::HashSet;
use std::sync::Arc;

use deadpool_postgres::Object;

use super::queries::{
    self, FailureRecord, Fence, OutboxClaimDueParams, OutboxHoldBackKeysParams,
    OutboxMarkPublishedParams, OutboxRecordFailuresParams, OutboxRow,
};
use super::Database;
use crate::error::{Error, Result};
use crate::source::sql::Sql;

/// What [`ClaimedBatch::record`] wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordedBatch {
    pub published: u64,
    pub retrying: u64,
    /// Ids of rows that went dead: final errors and used-up attempts.
    pub dead: Vec<i64>,
    /// Rows the database refused to record and then made dead instead, with
    /// its reason (also in `dead`).
    pub refused: Vec<(i64, String)>,
    /// Rows the database refused to write at all, not even as dead, with its
    /// reason: still pending, untouched.
    pub unrecordable: Vec<(i64, String)>,
}

impl RecordedBatch {
    /// The database refused to write any row of the batch.
    fn refused_whole(&self) -> bool {
        self.published == 0
            && self.retrying == 0
            && self.dead.is_empty()
            && !self.unrecordable.is_empty()
    }
}

/// What to record for a batch: which rows to mark published, which failed.
#[derive(Debug, Clone, Copy)]
pub struct Results<'a> {
    pub published: &'a [i64],
    pub failures: &'a [FailureRecord],
    /// When a row that keeps failing becomes dead.
    pub max_attempts: u32,
}

/// An error that the row, not the connection or the table, caused: data
/// exceptions (22), integrity constraint violations (23: a CHECK, a foreign
/// key, NOT NULL) and errors raised by a trigger (P0).
fn is_row_refusal(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("22") || code.starts_with("23") || code.starts_with("P0")
    })
}

/// Opens a claim's transaction. Losing a commit in a server crash only
/// un-marks rows that Kafka already has: they are sent again (a duplicate),
/// never lost, so the relay need not wait for each commit's WAL flush. `SET
/// LOCAL`, not a session setting, so nothing outlives the transaction (a
/// pooler hands the server connection to another client afterwards).
const BEGIN_CLAIM: &str = "BEGIN; SET LOCAL synchronous_commit = off";

/// Before recording an `--exactly-once` batch: its COMMIT waits for the WAL
/// flush, like any default transaction.
const DURABLE_COMMIT: &str = "SET LOCAL synchronous_commit = on";

/// Rows claimed inside an open transaction.
pub struct ClaimedBatch {
    connection: Option<Object>,
    sql: Arc<Sql>,
    /// `--on-publish delete`: published rows are deleted, not marked.
    delete_published: bool,
    /// Commit with `synchronous_commit = on` (`--exactly-once`).
    durable: bool,
    pub rows: Vec<OutboxRow>,
}

impl Database {
    /// Lock up to `limit` due rows and return those that may be published
    /// now without overtaking an earlier row of the same key. `in_flight`
    /// are rows this relay already handed to the producer (and so are ahead
    /// of anything it sends now). With a `fence`, nothing is claimed unless
    /// that lock session still holds the leadership.
    pub async fn claim(
        &self,
        limit: usize,
        in_flight: &[i64],
        skipped: &[i64],
        fence: Option<Fence>,
    ) -> Result<ClaimedBatch> {
        let connection = self.connection().await?;
        let fail = |e: tokio_postgres::Error| Error::database("claiming rows", &e);
        let mut batch = ClaimedBatch {
            connection: Some(connection),
            sql: Arc::clone(self.sql()),
            delete_published: self.deletes_published(),
            durable: self.durable_marks,
            rows: Vec::new(),
        };
        let params = OutboxClaimDueParams {
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            in_flight,
            skipped,
            fence,
        };
        // Both go out in one round trip: tokio-postgres pipelines requests
        // issued together, in order (BEGIN first, so even a first Parse of
        // the claim runs inside the transaction).
        let client = batch.client();
        let (begun, rows) = tokio::join!(
            client.batch_execute(BEGIN_CLAIM),
            queries::outbox_claim_due(client, self.sql(), params)
        );
        begun.map_err(fail)?;
        batch.rows = rows.map_err(fail)?;
        // The statement leaves the order to us: rows go out in id order.
        batch.rows.sort_unstable_by_key(|row| row.id);
        Ok(batch)
    }
}

impl ClaimedBatch {
    fn client(&self) -> &Object {
        self.connection
            .as_ref()
            .expect("a claimed batch holds its connection until it ends")
    }

    /// Mark the published rows, record the failures, hold back the keys of
    /// rows that will retry, and commit. Should the database refuse a row,
    /// the batch is recorded again row by row (see the module's docs).
    pub async fn record(mut self, results: Results<'_>) -> Result<RecordedBatch> {
        let fail = |e: tokio_postgres::Error| Error::database("recording results", &e);
        let sql = Arc::clone(&self.sql);
        let delete = self.delete_published;
        let client = self.client();
        if self.durable {
            client.batch_execute(DURABLE_COMMIT).await.map_err(fail)?;
        }
        let recorded = match record_batch(client, &sql, delete, results).await {
            Err(error) if is_row_refusal(&error) => {
                // The claim's transaction is aborted (or rolled back by its
                // COMMIT): end it, and record each row in a new one.
                client.batch_execute("ROLLBACK").await.map_err(fail)?;
                let recorded = record_row_by_row(client, &sql, delete, results)
                    .await
                    .map_err(fail)?;
                if recorded.refused_whole() {
                    // Not one row could be written: the refusal is the
                    // table's (a trigger that freezes it, say), not a row's.
                    return Err(fail(error));
                }
                recorded
            }
            other => other.map_err(fail)?,
        };
        self.connection.take();
        Ok(recorded)
    }

    /// Roll back: every row stays as it was and is claimed again later.
    pub async fn abandon(mut self) {
        if let Some(connection) = self.connection.take() {
            if connection.batch_execute("ROLLBACK").await.is_err() {
                // The connection is unusable; keep it out of the pool.
                let _ = Object::take(connection);
            }
        }
    }
}

/// The whole batch in the claim's transaction, committed. The common case,
/// no failure, goes in one round trip: should the UPDATE fail, the server
/// turns the COMMIT into a rollback and the UPDATE's error is returned.
async fn record_batch(
    client: &Object,
    sql: &Sql,
    delete: bool,
    results: Results<'_>,
) -> std::result::Result<RecordedBatch, tokio_postgres::Error> {
    let mut recorded = RecordedBatch::default();
    if results.failures.is_empty() {
        let statement = if delete {
            &sql.outbox_delete_published
        } else {
            &sql.outbox_mark_published
        };
        queries::prepare(client, sql, statement).await?;
        let (marked, committed) = tokio::join!(
            publish(client, sql, delete, results.published),
            client.batch_execute("COMMIT")
        );
        recorded.published = marked?;
        committed?;
        return Ok(recorded);
    }
    if !results.published.is_empty() {
        recorded.published = publish(client, sql, delete, results.published).await?;
    }
    record_failures(
        client,
        sql,
        results.failures,
        results.max_attempts,
        &mut recorded,
    )
    .await?;
    client.batch_execute("COMMIT").await?;
    Ok(recorded)
}

/// Record each row on its own, under a savepoint, in a new transaction (the
/// rows are locked again as they are updated; a row another relay recorded
/// meanwhile is no longer pending and is left alone). A row the database
/// refuses goes dead with its reason; a row it refuses that too is left
/// pending and reported as unrecordable.
async fn record_row_by_row(
    client: &Object,
    sql: &Sql,
    delete: bool,
    results: Results<'_>,
) -> std::result::Result<RecordedBatch, tokio_postgres::Error> {
    let mut recorded = RecordedBatch::default();
    client.batch_execute(BEGIN_CLAIM).await?;
    for &id in results.published {
        let marked = in_savepoint(client, publish(client, sql, delete, &[id])).await?;
        match marked {
            Ok(count) => recorded.published += count,
            Err(reason) => {
                let why =
                    format!("delivered, but PostgreSQL refused to mark it published: {reason}");
                make_dead(client, sql, id, why, &mut recorded).await?;
            }
        }
    }
    for failure in results.failures {
        let one = std::slice::from_ref(failure);
        let mut alone = RecordedBatch::default();
        let attempt = record_failures(client, sql, one, results.max_attempts, &mut alone);
        match in_savepoint(client, attempt).await? {
            Ok(()) => {
                recorded.retrying += alone.retrying;
                recorded.dead.extend(alone.dead);
            }
            Err(reason) => {
                let why = format!(
                    "PostgreSQL refused to record this row's failure ({}): {reason}",
                    failure.error
                );
                make_dead(client, sql, failure.id, why, &mut recorded).await?;
            }
        }
    }
    client.batch_execute("COMMIT").await?;
    Ok(recorded)
}

/// Make row `id` dead with `reason` as its error, or, should the database
/// refuse that too, report it as unrecordable.
async fn make_dead(
    client: &Object,
    sql: &Sql,
    id: i64,
    reason: String,
    recorded: &mut RecordedBatch,
) -> std::result::Result<(), tokio_postgres::Error> {
    let failure = FailureRecord {
        id,
        message_key: None,
        error: reason.clone(),
        is_final: true,
        retry_in: std::time::Duration::ZERO,
    };
    let params = OutboxRecordFailuresParams {
        failures: std::slice::from_ref(&failure),
        max_attempts: 1,
    };
    let attempt = queries::outbox_record_failures(client, sql, params);
    match in_savepoint(client, attempt).await? {
        Ok(outcomes) => {
            if outcomes.iter().any(|o| o.dead) {
                recorded.dead.push(id);
                recorded.refused.push((id, reason));
            }
        }
        Err(refused_again) => recorded.unrecordable.push((id, refused_again)),
    }
    Ok(())
}

/// Run `statement` under a savepoint: a row refusal rolls back to it and
/// comes back as `Ok(Err(reason))`; any other error is returned as is.
async fn in_savepoint<T>(
    client: &Object,
    statement: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> std::result::Result<std::result::Result<T, String>, tokio_postgres::Error> {
    client.batch_execute("SAVEPOINT one_row").await?;
    match statement.await {
        Ok(value) => {
            client.batch_execute("RELEASE SAVEPOINT one_row").await?;
            Ok(Ok(value))
        }
        Err(error) if is_row_refusal(&error) => {
            client
                .batch_execute("ROLLBACK TO SAVEPOINT one_row")
                .await?;
            Ok(Err(crate::error::describe_pg_error(&error)))
        }
        Err(error) => Err(error),
    }
}

/// Mark the published rows, or delete them (`--on-publish delete`).
async fn publish(
    client: &Object,
    sql: &Sql,
    delete: bool,
    ids: &[i64],
) -> std::result::Result<u64, tokio_postgres::Error> {
    let params = OutboxMarkPublishedParams { ids };
    if delete {
        queries::outbox_delete_published(client, sql, params).await
    } else {
        queries::outbox_mark_published(client, sql, params).await
    }
}

impl Database {
    /// The table's default `transactional.id` under `--exactly-once`:
    /// `outbox-relay/<system identifier>/<database>/<schema.table>`, the
    /// same for every process that serves the table, and different for a
    /// table of the same name in another database or cluster.
    pub async fn transactional_id(&self) -> Result<String> {
        let client = self.connection().await?;
        let row = client
            .query_one(&self.sql().database_identity, &[])
            .await
            .map_err(|e| Error::database("reading the database's identity", &e))?;
        let system: String = row.get("system_identifier");
        let database: String = row.get("database");
        Ok(format!(
            "outbox-relay/{system}/{database}/{}",
            self.qualified_name()
        ))
    }

    /// Mark (or with `--on-publish delete`, delete) the rows `ids` that are
    /// still pending, in a transaction of their own, durably; how many.
    /// For rows Kafka already committed (the `--exactly-once` checkpoint).
    pub async fn publish_ids(&self, ids: &[i64]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let client = self.connection().await?;
        publish(&client, self.sql(), self.delete_published, ids)
            .await
            .map_err(|e| Error::database("marking rows from the checkpoint", &e))
    }
}

/// Count failed attempts (dead or retrying) and, for each key whose row will
/// retry, push its later pending rows back to the same retry time.
async fn record_failures(
    client: &Object,
    sql: &Sql,
    failures: &[FailureRecord],
    max_attempts: u32,
    recorded: &mut RecordedBatch,
) -> std::result::Result<(), tokio_postgres::Error> {
    let params = OutboxRecordFailuresParams {
        failures,
        max_attempts: i32::try_from(max_attempts).unwrap_or(i32::MAX),
    };
    let outcomes = queries::outbox_record_failures(client, sql, params).await?;
    let keyed: HashSet<i64> = failures
        .iter()
        .filter(|f| f.message_key.is_some())
        .map(|f| f.id)
        .collect();
    let mut head_ids: Vec<i64> = Vec::new();
    for outcome in outcomes {
        if outcome.dead {
            recorded.dead.push(outcome.id);
            continue;
        }
        recorded.retrying += 1;
        if keyed.contains(&outcome.id) {
            head_ids.push(outcome.id);
        }
    }
    if !head_ids.is_empty() {
        let params = OutboxHoldBackKeysParams {
            head_ids: &head_ids,
        };
        queries::outbox_hold_back_keys(client, sql, params).await?;
    }
    Ok(())
}

impl Drop for ClaimedBatch {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            // Closing the connection makes the server roll the claim back.
            let _ = Object::take(connection);
        }
    }
}
