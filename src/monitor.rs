//! Background monitors for `run`: the backlog gauges, refreshed on a timer,
//! and the readiness probes of PostgreSQL and Kafka.

use std::sync::Arc;
use std::time::Duration;

use crate::db::Database;
use crate::health::Health;
use crate::kafka::Publisher;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Refresh pending / oldest age / dead (and table size) every `interval`.
pub async fn watch_backlog(
    database: Database,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    loop {
        match database.backlog().await {
            Ok(backlog) => {
                metrics.observe_backlog(&backlog);
                health.database_ok();
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

/// Probe Kafka every `interval`, so readiness recovers (or fails) even when
/// the relay has nothing to send.
pub async fn watch_kafka(
    publisher: Arc<Publisher>,
    health: Arc<Health>,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match publisher.probe(interval.max(Duration::from_secs(1))).await {
            Ok(()) => health.kafka_ok(),
            Err(error) => health.kafka_failed(&error),
        }
    }
}

/// Rows deleted per second at most by automatic retention.
const RETENTION_MAX_ROWS_PER_SEC: u32 = 5_000;
/// Pause between retention passes.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// Delete published rows older than `retention`, once a minute, rate-limited.
pub async fn enforce_retention(
    database: Database,
    metrics: Arc<Metrics>,
    retention: Duration,
    mut shutdown: Shutdown,
) {
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
