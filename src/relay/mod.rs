//! The relay loop: claim a batch, hand every row to the producer, wait for
//! each row's own delivery report, record the results, commit.
//!
//! Guarantees:
//! - at least once: a row is marked published only after its delivery report
//!   succeeded at a known offset, inside the transaction that holds its lock;
//!   anything else (crash, lost connection, outage, an ack without an offset)
//!   leaves it pending for a later claim;
//! - order per key: see `sql/queries/outbox_claim_due.sql` and [`outcome`];
//! - outages: while no broker answers, attempts are not counted and the loop
//!   backs off as a whole; while PostgreSQL is unreachable it retries with
//!   backoff. Readiness follows both;
//! - shutdown: once requested, no new batch is claimed; the batches in
//!   flight are finished and recorded, then the producer is flushed.

pub mod backoff;
mod outcome;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use crate::config::RelayConfig;
use crate::db::{ClaimedBatch, Database, OutboxRow};
use crate::error::Result;
use crate::health::Health;
use crate::kafka::{prepare, Delivery, Disposition, PendingDelivery, Publisher};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use backoff::{OutageBackoff, RetryBackoff};
use outcome::decide;

/// How long one metadata request may take when checking for an outage.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const OUTAGE_BACKOFF_MIN: Duration = Duration::from_millis(100);
const OUTAGE_BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct Relay {
    config: RelayConfig,
    database: Database,
    publisher: Arc<Publisher>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    wakeup: Arc<Notify>,
    retry_backoff: RetryBackoff,
}

/// A batch handed to the producer whose results are not yet recorded. Its
/// transaction stays open (and its rows locked) until it is finished.
struct InFlight {
    started: Instant,
    claim_time: Duration,
    batch: ClaimedBatch,
    rows: Vec<OutboxRow>,
    deliveries: Vec<PendingDelivery>,
}

/// What finishing a batch found.
#[derive(Debug, Default)]
struct FinishReport {
    cluster_down: bool,
    /// Every delivery failed as if the cluster were gone, yet the cluster
    /// answers: the producer itself is suspect (e.g. a broker that lost its
    /// state no longer knows the producer id).
    producer_suspect: bool,
}

/// Least time between two replacements of a suspect producer.
const PRODUCER_REPLACEMENT_INTERVAL: Duration = Duration::from_secs(30);

impl Relay {
    pub fn new(
        config: RelayConfig,
        database: Database,
        publisher: Arc<Publisher>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        wakeup: Arc<Notify>,
    ) -> Self {
        let retry_backoff = RetryBackoff {
            base: config.retry_backoff_base,
            max: config.retry_backoff_max,
        };
        Relay {
            config,
            database,
            publisher,
            metrics,
            health,
            wakeup,
            retry_backoff,
        }
    }

    /// Run until `shutdown` is requested, then flush the producer.
    ///
    /// Two batches overlap: the next one is claimed and handed to the
    /// producer while the previous one waits for its delivery reports, then
    /// the previous one is recorded. Batches are recorded in the order they
    /// were sent, and keys the earlier batch held back stay held in the later.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<()> {
        let mut database_backoff = OutageBackoff::new(OUTAGE_BACKOFF_MIN, OUTAGE_BACKOFF_MAX);
        let mut in_flight: Option<InFlight> = None;
        let mut held_keys: HashSet<String> = HashSet::new();
        let mut cluster_down = false;
        let mut producer_suspect = false;
        let mut last_replacement: Option<Instant> = None;
        loop {
            // Keys held back behind a failed row pass to the batch in flight
            // after it; claiming no more until that one is finished keeps the
            // hold from passing on for ever. A suspect producer waits too.
            let draining = !held_keys.is_empty() || producer_suspect;
            let may_claim = !shutdown.is_requested() && !cluster_down && !draining;
            let ours: Vec<i64> = in_flight
                .as_ref()
                .map(|f| f.rows.iter().map(|r| r.id).collect())
                .unwrap_or_default();
            let previous = in_flight.take();
            // The next claim (one connection) runs while the previous batch
            // waits for its reports and is recorded (another connection).
            let (claimed, finished) = tokio::join!(
                async {
                    if may_claim {
                        Some(self.claim_and_send(&ours).await)
                    } else {
                        None
                    }
                },
                async {
                    match previous {
                        Some(previous) => Some(self.finish(previous, &mut held_keys).await),
                        None => None,
                    }
                }
            );

            let mut failed = false;
            match finished {
                Some(Ok(report)) => {
                    cluster_down |= report.cluster_down;
                    producer_suspect |= report.producer_suspect;
                }
                Some(Err(error)) => {
                    failed = true;
                    self.health.database_failed(&error);
                }
                None => {}
            }
            let mut claimed_nothing = true;
            match claimed {
                Some(Ok(Some(next))) if failed => {
                    // Its rows were sent after rows that are now pending again:
                    // record nothing, so all of them go out again in order.
                    next.batch.abandon().await;
                }
                Some(Ok(Some(next))) => {
                    claimed_nothing = false;
                    in_flight = Some(next);
                }
                Some(Ok(None)) | None => {}
                Some(Err(error)) => {
                    failed = true;
                    self.health.database_failed(&error);
                }
            }
            if !failed {
                self.health.database_ok();
                database_backoff.reset();
            }
            if in_flight.is_some() {
                continue;
            }
            held_keys.clear();
            let replacement_due =
                last_replacement.is_none_or(|at| at.elapsed() >= PRODUCER_REPLACEMENT_INTERVAL);
            if producer_suspect && replacement_due {
                self.replace_producer("every delivery of a batch failed while the cluster answers");
                last_replacement = Some(Instant::now());
            }
            producer_suspect = false;
            if shutdown.is_requested() {
                break;
            }
            if failed {
                tokio::select! {
                    () = shutdown.requested() => {}
                    () = tokio::time::sleep(database_backoff.next_delay()) => {}
                }
            } else if cluster_down {
                self.wait_for_brokers(&mut shutdown).await;
                cluster_down = false;
                // A broker that was gone may have lost its producer state.
                self.replace_producer("the cluster is back after an outage");
                last_replacement = Some(Instant::now());
            } else if claimed_nothing {
                self.wait_for_work(&mut shutdown).await;
            }
        }
        tracing::info!("stopped claiming; flushing the producer");
        if let Err(error) = self.publisher.flush(self.config.shutdown_timeout).await {
            tracing::warn!(%error, "producer flush did not complete");
        }
        Ok(())
    }

    fn replace_producer(&self, reason: &str) {
        match self.publisher.replace() {
            Ok(()) => tracing::info!(reason, "started a new Kafka producer"),
            Err(error) => tracing::warn!(%error, "could not start a new Kafka producer"),
        }
    }

    /// Sleep until notified, the poll interval passes, or shutdown.
    async fn wait_for_work(&self, shutdown: &mut Shutdown) {
        // ±10 %, so replicas started together do not poll in step.
        let poll = self
            .config
            .poll_interval
            .mul_f64(0.9 + 0.2 * fastrand::f64());
        tokio::select! {
            () = shutdown.requested() => {}
            () = self.wakeup.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }

    /// Back off until a broker answers a metadata request again.
    async fn wait_for_brokers(&self, shutdown: &mut Shutdown) {
        let mut backoff = OutageBackoff::new(OUTAGE_BACKOFF_MIN, OUTAGE_BACKOFF_MAX);
        loop {
            tokio::select! {
                () = shutdown.requested() => return,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
            match self.publisher.probe(PROBE_TIMEOUT).await {
                Ok(()) => {
                    self.health.kafka_ok();
                    return;
                }
                Err(error) => self.health.kafka_failed(&error),
            }
        }
    }

    /// Claim a batch and hand every row to the producer. `None` when nothing
    /// could be claimed.
    async fn claim_and_send(&self, ours: &[i64]) -> Result<Option<InFlight>> {
        let started = Instant::now();
        let mut batch = self.database.claim(self.config.batch_size, ours).await?;
        let claim_time = started.elapsed();
        let rows = std::mem::take(&mut batch.rows);
        if rows.is_empty() {
            batch.abandon().await;
            return Ok(None);
        }
        let queue_wait = self.config.shutdown_timeout;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            deliveries.push(match prepare(row) {
                Ok(message) => {
                    self.publisher
                        .send(&row.topic, row.message_key.as_deref(), message, queue_wait)
                        .await
                }
                Err(rejected) => PendingDelivery::Refused(Delivery::Failed {
                    disposition: Disposition::Final,
                    reason: rejected.reason,
                    message: rejected.message,
                }),
            });
        }
        Ok(Some(InFlight {
            started,
            claim_time,
            batch,
            rows,
            deliveries,
        }))
    }

    /// Wait for every delivery report of a batch, then record the results
    /// and commit. `held_keys` comes in as the keys the previous batch held
    /// back and goes out as this batch's.
    async fn finish(
        &self,
        flight: InFlight,
        held_keys: &mut HashSet<String>,
    ) -> Result<FinishReport> {
        let InFlight {
            started,
            claim_time,
            batch,
            rows,
            deliveries: pending,
        } = flight;
        let mut deliveries = Vec::with_capacity(rows.len());
        for (row, pending) in rows.iter().zip(pending) {
            let delivery = pending.outcome().await;
            if delivery == Delivery::Delivered {
                let latency = SystemTime::now()
                    .duration_since(row.created_at)
                    .unwrap_or_default();
                self.metrics.delivery_latency.observe(latency.as_secs_f64());
            }
            deliveries.push(delivery);
        }
        let delivered_after = started.elapsed();

        let cluster_down = self.confirm_outage(&deliveries).await;
        let decision = decide(
            &rows,
            &deliveries,
            cluster_down,
            held_keys,
            &self.retry_backoff,
            fastrand::f64,
        );
        let published_ids: Vec<i64> = decision.published.iter().map(|&i| rows[i].id).collect();
        let recorded = batch
            .record(&published_ids, &decision.failures, self.config.max_attempts)
            .await?;
        held_keys.clone_from(&decision.held_keys);

        let mut per_topic: HashMap<&str, u64> = HashMap::new();
        for &index in &decision.published {
            *per_topic.entry(rows[index].topic.as_str()).or_default() += 1;
        }
        for (topic, count) in per_topic {
            self.metrics
                .published
                .with_label_values(&[topic])
                .inc_by(count);
        }
        for reason in &decision.failure_reasons {
            self.metrics.record_failure(*reason);
        }
        self.metrics.dead_lettered.inc_by(recorded.dead);
        self.metrics.retries_scheduled.inc_by(recorded.retrying);
        self.metrics.batch_rows.observe(rows.len() as f64);
        self.metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            claimed = rows.len(),
            published = recorded.published,
            retrying = recorded.retrying,
            dead = recorded.dead,
            left_pending = decision.left_pending,
            claim_ms = claim_time.as_millis() as u64,
            delivered_ms = delivered_after.as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "batch recorded"
        );
        for failure in decision.failures.iter().filter(|f| f.is_final) {
            tracing::warn!(id = failure.id, error = %failure.error, "row is dead");
        }

        if let Some(fatal) = self.publisher.replace_if_fatal()? {
            tracing::warn!(error = %fatal, "the producer hit a fatal error and was replaced");
        }
        let all_unavailable = deliveries.iter().all(Delivery::is_unavailable);
        Ok(FinishReport {
            cluster_down,
            producer_suspect: all_unavailable && !cluster_down,
        })
    }

    /// When some deliveries failed in a way that may mean "no broker at all",
    /// ask the cluster. Returns true if no broker answers.
    async fn confirm_outage(&self, deliveries: &[Delivery]) -> bool {
        if !deliveries.iter().any(Delivery::is_unavailable) {
            if deliveries.contains(&Delivery::Delivered) {
                self.health.kafka_ok();
            }
            return false;
        }
        match self.publisher.probe(PROBE_TIMEOUT).await {
            Ok(()) => {
                self.health.kafka_ok();
                false
            }
            Err(error) => {
                self.health.kafka_failed(&error);
                true
            }
        }
    }
}
