//! Everything the relay loop reports, in one place: metrics and log lines for
//! each recorded batch, the rate-limited warning for rows that went dead, and
//! the health effect of each kind of failure.
//!
//! Guarantees: the loop decides, this module reports; each failure path has
//! its own log line and its own health effect (a sink failure never touches
//! `outbox_database_up`, a rejected statement is never called "unreachable");
//! a flood of dead rows of one topic and reason is a few lines with counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorPath};
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::serve::open_claims::OpenClaim;
use crate::sinks::FailureReason;
use crate::source::RecordedBatch;

/// At most one "row is dead" line per topic and reason in this window.
const DEAD_WARNING_WINDOW: Duration = Duration::from_secs(10);

/// A row that went dead in a recorded batch.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadRow {
    pub id: i64,
    pub topic: String,
    pub key: Option<String>,
    /// Attempts including the one that just failed.
    pub attempts: i32,
    pub reason: FailureReason,
    pub error: String,
}

/// What one recorded batch did, for metrics and logs.
#[derive(Debug, Default)]
pub struct BatchReport {
    pub claimed: usize,
    pub published_per_topic: HashMap<String, u64>,
    pub failure_reasons: Vec<FailureReason>,
    pub recorded: RecordedBatch,
    pub dead: Vec<DeadRow>,
    pub left_pending: usize,
    /// `created_at` → ack, per delivered row.
    pub delivery_latencies: Vec<Duration>,
    pub claim_time: Duration,
    pub delivered_after: Duration,
    pub elapsed: Duration,
}

pub struct Telemetry {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    dead_warnings: Mutex<DeadRowWarnings>,
}

impl Telemetry {
    pub fn new(metrics: Arc<Metrics>, health: Arc<Health>) -> Self {
        Telemetry {
            metrics,
            health,
            dead_warnings: Mutex::new(DeadRowWarnings::new(DEAD_WARNING_WINDOW)),
        }
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn batch_recorded(&self, report: &BatchReport) {
        let metrics = &self.metrics;
        for latency in &report.delivery_latencies {
            metrics.delivery_latency.observe(latency.as_secs_f64());
        }
        for (topic, count) in &report.published_per_topic {
            metrics.published(topic).inc_by(*count);
        }
        for reason in &report.failure_reasons {
            metrics.record_failure(*reason);
        }
        let recorded = &report.recorded;
        metrics.dead_lettered.inc_by(recorded.dead.len() as u64);
        metrics.retries_scheduled.inc_by(recorded.retrying);
        metrics.batch_rows.observe(report.claimed as f64);
        metrics.batch_duration.observe(report.elapsed.as_secs_f64());
        tracing::debug!(
            claimed = report.claimed,
            published = recorded.published,
            retrying = recorded.retrying,
            dead = recorded.dead.len(),
            left_pending = report.left_pending,
            claim_ms = report.claim_time.as_millis() as u64,
            delivered_ms = report.delivered_after.as_millis() as u64,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "batch recorded"
        );
        let mut warnings = self
            .dead_warnings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        for row in &report.dead {
            if let Some(suppressed) = warnings.admit(&row.topic, row.reason, now) {
                tracing::warn!(
                    id = row.id,
                    topic = %row.topic,
                    key = row.key.as_deref().unwrap_or(""),
                    attempts = row.attempts,
                    reason = row.reason.as_str(),
                    error = %row.error,
                    more_since_last_line = suppressed,
                    "row is dead; fix the cause, then `outbox-relay requeue`"
                );
            }
        }
    }

    /// Report a failure of a turn along its own path.
    pub fn failure(&self, error: &Error) {
        match error.path() {
            ErrorPath::DatabaseUnreachable => self.health.database_failed(error),
            ErrorPath::DatabaseRejected => self.health.database_rejected(error),
            ErrorPath::Sink => self.health.sink_failed(error),
            ErrorPath::Internal => {
                tracing::error!(%error, "internal error in the relay loop; retrying with backoff")
            }
        }
    }

    /// PostgreSQL refused every update of row `id`, even to make it dead.
    pub fn row_unrecordable(&self, id: i64, reason: &str, skipped_for: Duration) {
        tracing::error!(
            id,
            error = %reason,
            skipped_secs = skipped_for.as_secs(),
            "PostgreSQL refuses every update of this row, even to make it dead; it stays pending and is skipped (later rows of its key wait); fix the row, or the trigger or constraint that refuses it"
        );
    }

    /// Rows skipped because PostgreSQL refuses to update them.
    pub fn skipped(&self, rows: usize) {
        self.metrics.skipped.set(rows as i64);
    }

    /// Rows handed to the producer and not yet recorded.
    pub fn in_flight(&self, rows: usize) {
        self.metrics.in_flight.set(rows as i64);
    }

    /// A claim transaction opened at `at`; it counts as open until the
    /// returned guard is dropped.
    pub fn claim_opened(&self, at: Instant) -> OpenClaim {
        self.metrics.open_claims.open(at)
    }

    pub fn claim_released(&self, rows: usize, waited: Duration) {
        self.metrics.claims_released.inc();
        tracing::warn!(
            rows,
            waited_ms = waited.as_millis() as u64,
            "a batch waited longer than --claim-timeout-secs for its acks; rolled it back, its rows stay pending and will be sent again"
        );
    }

    /// Rows the `--exactly-once` checkpoint named, `marked` of them still
    /// pending (Kafka had them; PostgreSQL had not marked them yet).
    pub fn checkpoint_recovered(&self, marked: u64, named: usize) {
        self.metrics.checkpoint_recovered.inc_by(marked);
        if marked > 0 {
            tracing::info!(
                marked,
                named,
                "marked {marked} rows published from the Kafka checkpoint without sending them: Kafka had committed them before PostgreSQL marked them"
            );
        }
    }

    pub fn transaction_ended(&self, commit: &crate::sinks::kafka::Commit, took: Duration) {
        use crate::sinks::kafka::Commit;
        self.metrics
            .transaction_duration
            .observe(took.as_secs_f64());
        match commit {
            Commit::Committed => self.metrics.transactions_committed.inc(),
            Commit::Aborted(reason) => {
                self.metrics.transactions_aborted.inc();
                tracing::debug!(%reason, "aborted a Kafka transaction; its delivered rows go out again");
            }
            Commit::Fenced(_) => self.metrics.transactions_fenced.inc(),
            Commit::Unknown(_) => self.metrics.transactions_aborted.inc(),
        }
    }

    pub fn producer_replaced(&self, reason: &str) {
        let profile = self.health.profile();
        tracing::info!(
            reason,
            "started a new {} {}",
            profile.service,
            profile.connection
        );
    }
}

/// Rate limit for "row is dead" lines: per topic and reason, the first row in
/// each window is logged, with how many were left unlogged before it.
#[derive(Debug)]
pub struct DeadRowWarnings {
    window: Duration,
    last: HashMap<(String, FailureReason), (Instant, u64)>,
}

impl DeadRowWarnings {
    pub fn new(window: Duration) -> Self {
        DeadRowWarnings {
            window,
            last: HashMap::new(),
        }
    }

    /// `Some(rows left unlogged since the last line)` if this row is to be
    /// logged now, `None` if it is only counted.
    pub fn admit(&mut self, topic: &str, reason: FailureReason, now: Instant) -> Option<u64> {
        match self.last.get_mut(&(topic.to_owned(), reason)) {
            Some((logged_at, suppressed)) if now.duration_since(*logged_at) < self.window => {
                *suppressed += 1;
                None
            }
            Some((logged_at, suppressed)) => {
                *logged_at = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                self.last.insert((topic.to_owned(), reason), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_dead_rows_is_one_line_per_window_with_a_count() {
        let mut warnings = DeadRowWarnings::new(Duration::from_secs(10));
        let start = Instant::now();
        let reason = FailureReason::MessageTooLarge;
        assert_eq!(warnings.admit("orders", reason, start), Some(0));
        for i in 1..=99 {
            let at = start + Duration::from_millis(i * 10);
            assert_eq!(warnings.admit("orders", reason, at), None);
        }
        let later = start + Duration::from_secs(11);
        assert_eq!(warnings.admit("orders", reason, later), Some(99));
        assert_eq!(warnings.admit("orders", reason, later), None);
    }

    #[test]
    fn topics_and_reasons_are_limited_separately() {
        let mut warnings = DeadRowWarnings::new(Duration::from_secs(10));
        let now = Instant::now();
        assert!(warnings
            .admit("orders", FailureReason::InvalidHeaders, now)
            .is_some());
        assert!(warnings
            .admit("orders", FailureReason::MessageTooLarge, now)
            .is_some());
        assert!(warnings
            .admit("payments", FailureReason::InvalidHeaders, now)
            .is_some());
    }

    #[test]
    fn a_kafka_failure_does_not_touch_the_database_gauge() {
        let metrics = Arc::new(Metrics::new("outbox"));
        let telemetry = Telemetry::new(
            Arc::clone(&metrics),
            Arc::new(Health::new(Arc::clone(&metrics))),
        );
        telemetry.failure(&Error::KafkaConfig("fatal idempotence error".into()));
        assert_eq!(metrics.database_up.get(), 1);
        assert_eq!(metrics.kafka_up.get(), 0);
    }

    #[test]
    fn a_rejected_statement_keeps_the_database_up_but_not_ready() {
        let metrics = Arc::new(Metrics::new("outbox"));
        let health = Arc::new(Health::new(Arc::clone(&metrics)));
        let telemetry = Telemetry::new(Arc::clone(&metrics), Arc::clone(&health));
        telemetry.failure(&Error::DatabaseRejected {
            action: "recording results",
            reason: "violates check constraint (SQLSTATE 23514)".into(),
        });
        assert_eq!(metrics.database_up.get(), 1);
        assert_eq!(
            health.not_ready_reason(),
            Some("PostgreSQL rejects the relay's statements")
        );
        health.database_ok();
        assert!(
            health.not_ready_reason().is_some(),
            "reachable is not enough"
        );
        health.database_accepts();
        assert_eq!(health.not_ready_reason(), None);
    }
}
