//! Claiming a batch of outbox rows and recording what happened to them.
//!
//! A claim is one open transaction holding `FOR UPDATE` locks on its rows, so
//! no other relay can publish them at the same time, and a relay that dies
//! releases them at once (the server rolls the transaction back). The
//! transaction ends with [`ClaimedBatch::record`], which marks and commits, or
//! with [`ClaimedBatch::abandon`]. Dropping a batch without either discards
//! its connection, so an unfinished transaction never returns to the pool.

use std::collections::HashSet;
use std::sync::Arc;

use deadpool_postgres::Object;

use super::queries::{
    self, FailureRecord, Fence, OutboxClaimDueParams, OutboxHoldBackKeysParams,
    OutboxMarkPublishedParams, OutboxRecordFailuresParams, OutboxRow,
};
use super::Database;
use crate::error::{Error, Result};
use crate::sql::Sql;

/// What [`ClaimedBatch::record`] wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordedBatch {
    pub published: u64,
    pub retrying: u64,
    /// Ids of rows that went dead: final errors and used-up attempts.
    pub dead: Vec<i64>,
}

/// Opens a claim's transaction. Losing a commit in a server crash only
/// un-marks rows that Kafka already has: they are sent again (a duplicate),
/// never lost, so the relay need not wait for each commit's WAL flush. `SET
/// LOCAL`, not a session setting, so nothing outlives the transaction (a
/// pooler hands the server connection to another client afterwards).
const BEGIN_CLAIM: &str = "BEGIN; SET LOCAL synchronous_commit = off";

/// Rows claimed inside an open transaction.
pub struct ClaimedBatch {
    connection: Option<Object>,
    sql: Arc<Sql>,
    /// `--on-publish delete`: published rows are deleted, not marked.
    delete_published: bool,
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
        fence: Option<Fence>,
    ) -> Result<ClaimedBatch> {
        let connection = self.connection().await?;
        let fail = |e: tokio_postgres::Error| Error::database("claiming rows", &e);
        let mut batch = ClaimedBatch {
            connection: Some(connection),
            sql: Arc::clone(self.sql()),
            delete_published: self.deletes_published(),
            rows: Vec::new(),
        };
        let params = OutboxClaimDueParams {
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            in_flight,
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

    /// Mark `published` rows, record `failures`, hold back the keys of rows
    /// that will retry, and commit. `max_attempts` decides when a row that
    /// keeps failing becomes dead.
    pub async fn record(
        mut self,
        published: &[i64],
        failures: &[FailureRecord],
        max_attempts: u32,
    ) -> Result<RecordedBatch> {
        let fail = |e: tokio_postgres::Error| Error::database("recording results", &e);
        let sql = Arc::clone(&self.sql);
        let client = self.client();
        let delete = self.delete_published;
        let mut recorded = RecordedBatch::default();

        if failures.is_empty() {
            // The common case in one round trip. Should the UPDATE fail, the
            // server turns the COMMIT into a rollback; its error is returned.
            let statement = if delete {
                &sql.outbox_delete_published
            } else {
                &sql.outbox_mark_published
            };
            queries::prepare(client, &sql, statement)
                .await
                .map_err(fail)?;
            let (marked, committed) = tokio::join!(
                publish(client, &sql, delete, published),
                client.batch_execute("COMMIT")
            );
            recorded.published = marked.map_err(fail)?;
            committed.map_err(fail)?;
        } else {
            if !published.is_empty() {
                recorded.published = publish(client, &sql, delete, published)
                    .await
                    .map_err(fail)?;
            }
            record_failures(client, &sql, failures, max_attempts, &mut recorded)
                .await
                .map_err(fail)?;
            client.batch_execute("COMMIT").await.map_err(fail)?;
        }
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
