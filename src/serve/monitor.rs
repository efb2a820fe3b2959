//! Background monitors for `run`: the backlog gauges, refreshed on a timer,
//! the readiness probes of PostgreSQL and Kafka, retention, and the upkeep
//! of a partitioned table's partitions.

use std::sync::Arc;
use std::time::Duration;

use crate::observe::health::Health;
use crate::serve::context::TableContext;
use crate::serve::shutdown::Shutdown;
use crate::sinks::Sink;
use crate::source::{Database, PartitionUnit};

/// How often a standby looks whether it leads now (and should refresh).
const STANDBY_CHECK: Duration = Duration::from_millis(250);

/// Refresh pending / oldest age / dead (and table size) every `interval`,
/// on the replica that claims only: the refresh scans the pending rows, and
/// a standby should cost the database nothing. A standby reports zeros, so
/// the `max` over replicas that dashboards and alerts take is always the
/// leader's view and never a stale one from a former leader.
pub async fn watch_backlog(database: Database, context: TableContext, interval: Duration) {
    let TableContext {
        metrics,
        health,
        leadership,
        mut shutdown,
        ..
    } = context;
    loop {
        if !leadership.is_leader() {
            metrics.observe_backlog(&crate::source::Backlog::default());
            metrics.table_size.set(0);
            tokio::select! {
                () = shutdown.requested() => return,
                () = tokio::time::sleep(STANDBY_CHECK) => {}
            }
            continue;
        }
        match database.backlog().await {
            Ok(backlog) => {
                metrics.observe_backlog(&backlog);
                health.database_ok();
            }
            // Dropped while served: the relay loop reports (or releases) it.
            Err(error @ crate::error::Error::TableGone { .. }) => {
                tracing::debug!(%error, "cannot refresh the backlog");
            }
            Err(error) => health.database_failed(&error),
        }
        if let Ok(bytes) = database.table_size_bytes().await {
            metrics.table_size.set(bytes);
        }
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Probe the sink every `interval`, so readiness recovers (or fails) even
/// when the relay has nothing to send.
pub async fn watch_sink(
    sink: Arc<dyn Sink>,
    health: Arc<crate::observe::health::HealthBoard>,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match sink.probe(interval.max(Duration::from_secs(1))).await {
            Ok(()) => health.each(Health::sink_ok),
            Err(error) => health.each(|table| table.sink_failed(&error)),
        }
    }
}

/// Rows deleted per second at most by automatic retention.
const RETENTION_MAX_ROWS_PER_SEC: u32 = 5_000;
/// Pause between retention passes.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// Delete published rows older than `retention`, once a minute, rate-limited.
pub async fn enforce_retention(database: Database, context: TableContext, retention: Duration) {
    let TableContext {
        metrics,
        mut shutdown,
        ..
    } = context;
    loop {
        // Counted as batches commit, so a long pass shows in the metric.
        let mut reported = 0;
        let result = {
            let pass =
                database.prune_published(retention, Some(RETENTION_MAX_ROWS_PER_SEC), |total| {
                    metrics.pruned.inc_by(total - reported);
                    reported = total;
                });
            tokio::select! {
                () = shutdown.requested() => return,
                result = pass => result,
            }
        };
        match result {
            Ok(deleted) => {
                metrics.pruned.inc_by(deleted - reported);
                if deleted > 0 {
                    tracing::info!(deleted, "retention deleted old published rows");
                }
            }
            Err(error) => tracing::warn!(%error, "retention pass failed; will retry"),
        }
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(RETENTION_INTERVAL) => {}
        }
    }
}

/// Pause between two passes over a partitioned table's partitions.
const PARTITION_INTERVAL: Duration = Duration::from_secs(60);

/// What the partition upkeep works with.
/// Drops run between this relay's claims (the context's gate), and only on
/// the replica that claims (its claims are the ones it can hold back);
/// every replica creates partitions ahead.
pub struct PartitionUpkeep {
    pub database: Database,
    pub context: TableContext,
    pub unit: PartitionUnit,
    /// Drop whole partitions older than this (`--retention`).
    pub retention: Option<Duration>,
}

/// Once a minute: create the partitions ahead, count the rows in the
/// default partition, and with a retention drop the old partitions that are
/// fully published.
pub async fn maintain_partitions(upkeep: PartitionUpkeep) {
    let mut shutdown = upkeep.context.shutdown.clone();
    tracing::info!(
        unit = %upkeep.unit,
        ahead = crate::source::PARTITIONS_AHEAD,
        drop_after = ?upkeep.retention,
        "the table is partitioned: keeping partitions ahead{}",
        if upkeep.retention.is_some() { " and dropping fully published ones past the retention" } else { "" }
    );
    let mut said = Said::default();
    loop {
        let pass = upkeep.pass(&mut said);
        tokio::select! {
            () = shutdown.requested() => return,
            () = pass => {}
        }
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(PARTITION_INTERVAL) => {}
        }
    }
}

/// What the upkeep last warned about, so a condition that lasts is said
/// once, not every minute.
#[derive(Default)]
struct Said {
    kept: Vec<String>,
    create_error: Option<String>,
}

impl PartitionUpkeep {
    async fn pass(&self, said: &mut Said) {
        let database = &self.database;
        match database.create_partitions(self.unit).await {
            Ok(created) => {
                if !created.is_empty() {
                    tracing::info!(partitions = ?created, "created partitions ahead");
                }
                if said.create_error.take().is_some() {
                    tracing::info!("partitions ahead can be created again");
                }
            }
            Err(error) => {
                let text = error.to_string();
                if said.create_error.as_ref() != Some(&text) {
                    tracing::warn!(%error, "could not create partitions ahead; rows without one go to the default partition (said once while it lasts)");
                }
                said.create_error = Some(text);
            }
        }
        match database.default_partition_rows().await {
            Ok(rows) => {
                if rows > 0 && self.context.metrics.default_partition_rows.get() == 0 {
                    tracing::warn!(rows, "rows landed in the default partition: their created_at has no partition; see outbox_default_partition_rows");
                }
                self.context.metrics.default_partition_rows.set(rows);
            }
            Err(error) => tracing::warn!(%error, "could not count the default partition's rows"),
        }
        let Some(retention) = self.retention else {
            return;
        };
        if !self.context.leadership.is_leader() {
            return;
        }
        let closed = self.context.gate.close().await;
        let retired = database.drop_retired_partitions(self.unit, retention).await;
        drop(closed);
        match retired {
            Ok(retired) => {
                let metrics = &self.context.metrics;
                metrics
                    .partitions_dropped
                    .inc_by(retired.dropped.len() as u64);
                metrics.partitions_kept.set(retired.kept.len() as i64);
                if !retired.dropped.is_empty() {
                    tracing::info!(partitions = ?retired.dropped, "retention dropped partitions whose rows were all published");
                }
                let kept: Vec<String> = retired.kept.iter().map(|(name, _)| name.clone()).collect();
                if kept != said.kept && !kept.is_empty() {
                    tracing::warn!(partitions = ?retired.kept, "partitions past the retention still hold pending or dead rows; kept until every row is published (requeue or delete the dead ones)");
                }
                said.kept = kept;
            }
            Err(error) => {
                tracing::warn!(%error, "retention could not drop old partitions; will retry")
            }
        }
    }
}
