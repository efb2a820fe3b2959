//! Operator actions on the table: `requeue` dead rows and `prune` old
//! published ones. Both work in small batches, each its own transaction, so
//! a long run never holds many locks and reports progress as it goes.

use std::time::Duration;

use super::queries::{self, OutboxPrunePublishedParams, OutboxRequeueDeadParams};
use super::Database;
use crate::error::{Error, Result};

/// Rows changed per transaction by `requeue` and `prune`.
pub const MAINTENANCE_BATCH: i64 = 1_000;

/// Which dead rows `requeue` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequeueSelection {
    Ids(Vec<i64>),
    Topic(String),
    All,
}

impl RequeueSelection {
    /// The ids it is restricted to, if any.
    pub fn ids(&self) -> Option<&[i64]> {
        match self {
            RequeueSelection::Ids(ids) => Some(ids),
            _ => None,
        }
    }

    /// The topic it is restricted to, if any.
    pub fn topic(&self) -> Option<&str> {
        match self {
            RequeueSelection::Topic(topic) => Some(topic),
            _ => None,
        }
    }
}

impl Database {
    /// Move selected dead rows back to pending with attempts reset, calling
    /// `progress` with the running total after each full batch.
    pub async fn requeue_dead(
        &self,
        selection: &RequeueSelection,
        mut progress: impl FnMut(u64),
    ) -> Result<u64> {
        let fail = |e: tokio_postgres::Error| Error::database("requeueing dead rows", &e);
        let connection = self.connection().await?;
        let mut total = 0;
        loop {
            let params = OutboxRequeueDeadParams {
                ids: selection.ids(),
                topic: selection.topic(),
                limit: MAINTENANCE_BATCH,
            };
            let moved = queries::outbox_requeue_dead(&connection, self.sql(), params)
                .await
                .map_err(fail)?;
            total += moved;
            if moved < MAINTENANCE_BATCH as u64 {
                return Ok(total);
            }
            progress(total);
        }
    }

    /// Delete published rows older than `older_than`, at most `max_rows_per_sec`
    /// (when set), calling `progress` with the running total after each full
    /// batch.
    pub async fn prune_published(
        &self,
        older_than: Duration,
        max_rows_per_sec: Option<u32>,
        mut progress: impl FnMut(u64),
    ) -> Result<u64> {
        let fail = |e: tokio_postgres::Error| Error::database("pruning published rows", &e);
        let connection = self.connection().await?;
        let mut total = 0;
        loop {
            let started = tokio::time::Instant::now();
            let params = OutboxPrunePublishedParams {
                older_than,
                limit: MAINTENANCE_BATCH,
            };
            let deleted = queries::outbox_prune_published(&connection, self.sql(), params)
                .await
                .map_err(fail)?;
            total += deleted;
            if deleted < MAINTENANCE_BATCH as u64 {
                return Ok(total);
            }
            progress(total);
            if let Some(rate) = max_rows_per_sec.filter(|r| *r > 0) {
                let budget = Duration::from_secs_f64(deleted as f64 / f64::from(rate));
                tokio::time::sleep_until(started + budget).await;
            }
        }
    }
}
