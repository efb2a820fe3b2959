//! Claiming a batch of outbox rows and recording what happened to them.
//!
//! A claim is one open transaction holding `FOR UPDATE` locks on its rows, so
//! no other relay can publish them at the same time, and a relay that dies
//! releases them at once (the server rolls the transaction back). The
//! transaction ends with [`ClaimedBatch::record`], which marks and commits, or
//! with [`ClaimedBatch::abandon`]. Dropping a batch without either discards
//! its connection, so an unfinished transaction never returns to the pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Object;

use super::Database;
use crate::error::{Error, Result};
use crate::sql::Sql;

/// One claimed row, as the publisher needs it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: String,
    pub topic: String,
    pub message_key: Option<String>,
    /// The payload as PostgreSQL renders jsonb; `None` means a tombstone.
    pub payload: Option<String>,
    pub headers: serde_json::Value,
    /// Failed attempts so far.
    pub attempts: i32,
    pub created_at: SystemTime,
}

/// A failed attempt to record for one row.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureRecord {
    pub id: i64,
    pub message_key: Option<String>,
    pub error: String,
    /// No retry can fix it: the row goes dead now.
    pub is_final: bool,
    /// Wait before the next attempt, if the row stays pending.
    pub retry_in: Duration,
}

/// What [`ClaimedBatch::record`] wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordedBatch {
    pub published: u64,
    pub retrying: u64,
    pub dead: u64,
}

/// Rows claimed inside an open transaction.
pub struct ClaimedBatch {
    connection: Option<Object>,
    sql: Arc<Sql>,
    pub rows: Vec<OutboxRow>,
}

impl Database {
    /// Lock up to `limit` due rows and return those that may be published
    /// now without overtaking an earlier row of the same key. `in_flight`
    /// are rows this relay already handed to the producer (and so are ahead
    /// of anything it sends now).
    pub async fn claim(&self, limit: usize, in_flight: &[i64]) -> Result<ClaimedBatch> {
        let connection = self.connection().await?;
        let fail = |e: tokio_postgres::Error| Error::database("claiming rows", &e);
        let statement = connection
            .prepare_cached(&self.sql().claim_due)
            .await
            .map_err(fail)?;
        let mut batch = ClaimedBatch {
            connection: Some(connection),
            sql: Arc::clone(self.sql()),
            rows: Vec::new(),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Both go out in one round trip: tokio-postgres pipelines requests
        // issued together, in order.
        let client = batch.client();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&limit, &in_flight];
        let (begun, rows) = tokio::join!(
            client.batch_execute("BEGIN"),
            client.query(&statement, &params)
        );
        begun.map_err(fail)?;
        let rows = rows.map_err(fail)?;
        batch.rows = rows
            .iter()
            .map(|row| OutboxRow {
                id: row.get("id"),
                event_id: row.get("event_id"),
                topic: row.get("topic"),
                message_key: row.get("message_key"),
                payload: row.get("payload"),
                headers: row.get("headers"),
                attempts: row.get("attempts"),
                created_at: row.get("created_at"),
            })
            .collect();
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
        let mark = client
            .prepare_cached(&sql.mark_published)
            .await
            .map_err(fail)?;
        let mut recorded = RecordedBatch::default();

        if failures.is_empty() {
            // The common case in one round trip. Should the UPDATE fail, the
            // server turns the COMMIT into a rollback; its error is returned.
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&published];
            let (marked, committed) = tokio::join!(
                client.execute(&mark, &params),
                client.batch_execute("COMMIT")
            );
            recorded.published = marked.map_err(fail)?;
            committed.map_err(fail)?;
        } else {
            if !published.is_empty() {
                recorded.published = client.execute(&mark, &[&published]).await.map_err(fail)?;
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

/// Count failed attempts (dead or retrying) and, for each key whose row will
/// retry, push its later pending rows back to the same retry time.
async fn record_failures(
    client: &Object,
    sql: &Sql,
    failures: &[FailureRecord],
    max_attempts: u32,
    recorded: &mut RecordedBatch,
) -> std::result::Result<(), tokio_postgres::Error> {
    let ids: Vec<i64> = failures.iter().map(|f| f.id).collect();
    let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
    let finals: Vec<bool> = failures.iter().map(|f| f.is_final).collect();
    let delays: Vec<f64> = failures.iter().map(|f| f.retry_in.as_secs_f64()).collect();
    let max_attempts = i32::try_from(max_attempts).unwrap_or(i32::MAX);
    let statement = client.prepare_cached(&sql.record_failures).await?;
    let rows = client
        .query(
            &statement,
            &[&ids, &errors, &finals, &delays, &max_attempts],
        )
        .await?;

    let key_of: HashMap<i64, Option<&str>> = failures
        .iter()
        .map(|f| (f.id, f.message_key.as_deref()))
        .collect();
    let mut waiting_keys: Vec<&str> = Vec::new();
    let mut waiting_heads: Vec<i64> = Vec::new();
    for row in &rows {
        let id: i64 = row.get(0);
        let status: &str = row.get(1);
        if status == "dead" {
            recorded.dead += 1;
            continue;
        }
        recorded.retrying += 1;
        if let Some(Some(key)) = key_of.get(&id) {
            waiting_keys.push(key);
            waiting_heads.push(id);
        }
    }
    if !waiting_keys.is_empty() {
        let statement = client.prepare_cached(&sql.hold_back_keys).await?;
        client
            .execute(&statement, &[&waiting_keys, &waiting_heads])
            .await?;
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
