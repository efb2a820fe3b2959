//! One batch's life: claim it and hand every row to the producer; later,
//! await each row's own delivery report, decide, record and commit.
//!
//! Guarantees: a batch's transaction (and so its row locks) stays open from
//! the claim until [`Relay::finish`] records it, and never longer than
//! `--claim-timeout-secs`: a batch whose acks take longer is rolled back
//! unrecorded (released), its rows still pending; a row is marked published
//! only on its own successful delivery report (see [`super::outcome`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::exactly_once;
use super::outcome::{decide, BatchDecision};
use super::telemetry::{BatchReport, DeadRow};
use super::Relay;
use crate::error::Result;
use crate::serve::claim_gate::Pass;
use crate::serve::open_claims::OpenClaim;
use crate::sinks::kafka::TransactionChannel;
use crate::sinks::{
    prepare, Channel, Delivery, DestinationState, Disposition, FailureReason, Pending, Rejected,
};
use crate::source::{ClaimedBatch, OutboxRow, RecordedBatch, Results};

/// How long one metadata request may take when checking for an outage.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A batch handed to the producer whose results are not yet recorded. Its
/// transaction stays open (and its rows locked) until it is finished.
pub struct InFlight {
    started: Instant,
    claim_time: Duration,
    batch: ClaimedBatch,
    rows: Vec<OutboxRow>,
    deliveries: Vec<Pending>,
    /// Keys with a row refused before it was sent: none of their later rows
    /// was sent, in this batch or the next one claimed while this one flies.
    unsent_keys: HashSet<Vec<u8>>,
    /// The channel every message of the batch went out on, kept alive
    /// until the batch is finished.
    channel: Arc<dyn Channel>,
    /// `--exactly-once`: the same channel, whose transaction is open.
    transaction: Option<Arc<TransactionChannel>>,
    /// Counts towards `outbox_oldest_open_claim_seconds` until dropped.
    _open: OpenClaim,
    /// Keeps maintenance that needs no open claim waiting until dropped.
    _pass: Pass,
}

impl InFlight {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn ids(&self) -> Vec<i64> {
        self.rows.iter().map(|r| r.id).collect()
    }

    pub fn unsent_keys(&self) -> &HashSet<Vec<u8>> {
        &self.unsent_keys
    }

    /// Roll back: its rows stay pending and go out again, in order.
    pub async fn abandon(self) {
        self.batch.abandon().await;
    }
}

/// A batch claimed and not yet sent.
pub struct Claimed {
    started: Instant,
    claim_time: Duration,
    batch: ClaimedBatch,
    rows: Vec<OutboxRow>,
    open: OpenClaim,
    pass: Pass,
}

impl Claimed {
    /// Roll back: its rows stay pending.
    pub async fn abandon(self) {
        self.batch.abandon().await;
    }
}

/// What finishing a batch found, beyond what telemetry reports.
#[derive(Debug, Default)]
pub struct Finished {
    pub report: BatchReport,
    /// Keys this batch held back: the batch after it must hold them too.
    pub held_keys: HashSet<Vec<u8>>,
    pub cluster_down: bool,
    pub producer_suspect: bool,
    /// The generation of the producer the batch was sent with: the one to
    /// replace if it is suspect or outlived an outage.
    pub producer_generation: u64,
    /// Rolled back at the claim timeout: every row is pending again, so the
    /// batch sent after it must not be recorded either.
    pub released: bool,
}

impl Relay {
    /// Claim a batch and hand its rows to the producer. `None` when nothing
    /// could be claimed. `ours` are the ids still in flight here, `skipped`
    /// the rows not to claim, and `unsent_keys` the keys of the batch in
    /// flight whose rows were not sent.
    ///
    /// A row refused before it is sent (its topic is missing, its headers
    /// are invalid, librdkafka refuses it) holds its key: no later row of
    /// that key is sent, so none is sent again and again while it retries.
    pub(super) async fn claim_and_send(
        &self,
        ours: &[i64],
        skipped: &[i64],
        unsent_keys: HashSet<Vec<u8>>,
    ) -> Result<Option<InFlight>> {
        let Some(claimed) = self.claim_batch(ours, skipped).await? else {
            return Ok(None);
        };
        Ok(Some(
            self.send_claimed(claimed, unsent_keys, Vec::new()).await,
        ))
    }

    /// Claim a batch; `None` when nothing could be claimed. Nothing is sent.
    pub(super) async fn claim_batch(
        &self,
        ours: &[i64],
        skipped: &[i64],
    ) -> Result<Option<Claimed>> {
        if !self.ready_to_claim().await? {
            return Ok(None);
        }
        let pass = self.gate.enter().await;
        let started = Instant::now();
        let open = self.telemetry.claim_opened(started);
        let mut batch = self
            .database
            .claim(self.claim_limit(), ours, skipped, self.leadership.fence())
            .await?;
        let claim_time = started.elapsed();
        let rows = std::mem::take(&mut batch.rows);
        if rows.is_empty() {
            batch.abandon().await;
            return Ok(None);
        }
        Ok(Some(Claimed {
            started,
            claim_time,
            batch,
            rows,
            open,
            pass,
        }))
    }

    /// Hand a claimed batch's rows to the sink: the batch is in flight.
    ///
    /// Under `--exactly-once`, the batch's checkpoint also names `carried`:
    /// the rows of the batch before it, committed in Kafka and perhaps not
    /// yet marked (it is being recorded while this one is sent).
    pub(super) async fn send_claimed(
        &self,
        claimed: Claimed,
        mut unsent_keys: HashSet<Vec<u8>>,
        carried: Vec<i64>,
    ) -> InFlight {
        let Claimed {
            started,
            claim_time,
            batch,
            rows,
            open,
            pass,
        } = claimed;
        let transaction = self.exactly_once.as_ref().map(|once| once.begin());
        let channel = match &transaction {
            Some(transaction) => Arc::clone(transaction) as Arc<dyn Channel>,
            None => self.sink.channel().await,
        };
        let deliveries = self
            .send_rows(&rows, channel.as_ref(), &mut unsent_keys)
            .await;
        if let (Some(once), Some(transaction)) = (&self.exactly_once, &transaction) {
            let sent = rows
                .iter()
                .zip(&deliveries)
                .filter(|(_, pending)| matches!(pending, Pending::Sent(_)))
                .map(|(row, _)| row.id);
            let named: Vec<i64> = sent.chain(carried).collect();
            once.stage_checkpoint(transaction, &named).await;
        }
        InFlight {
            started,
            claim_time,
            batch,
            rows,
            deliveries,
            unsent_keys,
            channel,
            transaction,
            _open: open,
            _pass: pass,
        }
    }

    /// Hand `rows` to `channel`, in order: each row's pending outcome, or
    /// its refusal. A row refused before it is sent adds its key to
    /// `unsent_keys`, and no later row of a key there is sent.
    async fn send_rows(
        &self,
        rows: &[OutboxRow],
        channel: &dyn Channel,
        unsent_keys: &mut HashSet<Vec<u8>>,
    ) -> Vec<Pending> {
        let queue_wait = self.config.shutdown_timeout;
        let prepared: Vec<_> = rows
            .iter()
            .map(|row| {
                let message = prepare(row, &self.format)?;
                self.sink.check(&message)?;
                Ok::<_, Rejected>(message)
            })
            .collect();
        let valid = rows.iter().zip(&prepared).filter(|(_, p)| p.is_ok());
        let missing = self.missing_destinations(valid.map(|(row, _)| row)).await;
        let mut deliveries = Vec::with_capacity(rows.len());
        for (row, prepared) in rows.iter().zip(prepared) {
            let key = row.message_key.as_deref();
            if key.is_some_and(|k| unsent_keys.contains(k)) {
                deliveries.push(Pending::Refused(Delivery::HeldBack));
                continue;
            }
            let pending = match prepared {
                // Fails now instead of waiting in the client for the
                // destination (and holding up the whole batch); retried like
                // any send.
                Ok(_) if missing.contains(row.topic.as_str()) => {
                    Pending::Refused(self.sink.profile().missing(&row.topic))
                }
                Ok(message) => channel.send(message, queue_wait).await,
                Err(rejected) => Pending::Refused(rejected.into()),
            };
            if let (Pending::Refused(_), Some(key)) = (&pending, key) {
                unsent_keys.insert(key.to_vec());
            }
            deliveries.push(pending);
        }
        deliveries
    }

    /// The destinations of `rows` that the sink says do not exist.
    async fn missing_destinations<'a>(
        &self,
        rows: impl Iterator<Item = &'a OutboxRow>,
    ) -> HashSet<String> {
        let destinations: HashSet<&str> = rows.map(|row| row.topic.as_str()).collect();
        self.destinations
            .check(self.sink.as_ref(), &destinations)
            .await
            .into_iter()
            .filter(|(_, state)| *state == DestinationState::Missing)
            .map(|(destination, _)| destination)
            .collect()
    }

    /// Wait for every delivery report of a batch, then record the results
    /// and commit. `held_before` are the keys the previous batch held back.
    ///
    /// Under `--exactly-once`, `committed` is told the batch's published
    /// rows as soon as its Kafka transaction committed (the next batch may
    /// then be sent while this one is recorded); dropped unsaid otherwise.
    pub(super) async fn finish(
        &self,
        flight: InFlight,
        held_before: &HashSet<Vec<u8>>,
        committed: Option<tokio::sync::oneshot::Sender<Vec<i64>>>,
    ) -> Result<Finished> {
        let InFlight {
            started,
            claim_time,
            batch,
            rows,
            deliveries: pending,
            unsent_keys: _,
            channel,
            transaction,
            _open,
            _pass,
        } = flight;
        let budget = self.config.claim_timeout.saturating_sub(started.elapsed());
        let sent = exactly_once::sent(&pending);
        let awaited = tokio::time::timeout(budget, self.await_deliveries(&rows, pending)).await;
        let Ok((mut deliveries, delivery_latencies)) = awaited else {
            self.transaction_lost(channel.as_ref());
            return Ok(self
                .release(batch, rows.len(), started, channel.generation())
                .await);
        };
        let delivered_after = started.elapsed();

        let cluster_down = self.confirm_outage(&deliveries, started).await;
        if let Some(transaction) = &transaction {
            // What the outcome rules would do: a delivered row they leave
            // pending (its key held back) must not be committed.
            let trial = decide(
                &rows,
                &deliveries,
                cluster_down,
                held_before,
                &self.retry_backoff,
                || 0.0,
            );
            let delivered = deliveries.iter().filter(|d| **d == Delivery::Delivered);
            let would_hold_delivered = trial.published.len() < delivered.count();
            let settled = self
                .settle(
                    transaction,
                    &sent,
                    &mut deliveries,
                    cluster_down,
                    would_hold_delivered,
                )
                .await;
            if let (exactly_once::Settled::Committed, Some(committed)) = (&settled, committed) {
                let published = rows.iter().zip(&deliveries);
                let published = published.filter(|(_, d)| **d == Delivery::Delivered);
                let _ = committed.send(published.map(|(row, _)| row.id).collect());
            }
            if let exactly_once::Settled::RolledBack = settled {
                batch.abandon().await;
                return Ok(Finished {
                    report: BatchReport {
                        claimed: rows.len(),
                        left_pending: rows.len(),
                        elapsed: started.elapsed(),
                        ..BatchReport::default()
                    },
                    producer_generation: channel.generation(),
                    released: true,
                    ..Finished::default()
                });
            }
        }
        let decision = decide(
            &rows,
            &deliveries,
            cluster_down,
            held_before,
            &self.retry_backoff,
            fastrand::f64,
        );
        let recorded = match self.record(batch, &rows, &decision).await {
            Ok(recorded) => recorded,
            Err(error) => {
                self.recheck_checkpoint();
                return Err(error);
            }
        };
        let dead = dead_rows(&rows, &deliveries, &decision, &recorded);
        let report = BatchReport {
            claimed: rows.len(),
            published_per_topic: published_per_topic(&rows, &decision, &recorded.dead),
            failure_reasons: decision.failure_reasons,
            recorded,
            dead,
            left_pending: decision.left_pending,
            delivery_latencies,
            claim_time,
            delivered_after,
            elapsed: started.elapsed(),
        };
        self.destinations
            .writes_allowed(report.published_per_topic.keys());
        let all_unavailable = deliveries.iter().all(Delivery::is_unavailable);
        Ok(Finished {
            report,
            held_keys: decision.held_keys,
            cluster_down,
            producer_suspect: all_unavailable && !cluster_down,
            producer_generation: channel.generation(),
            released: false,
        })
    }

    /// Write `decision` back for the claimed `rows` and commit.
    async fn record(
        &self,
        batch: ClaimedBatch,
        rows: &[OutboxRow],
        decision: &BatchDecision,
    ) -> Result<RecordedBatch> {
        let published: Vec<i64> = decision.published.iter().map(|&i| rows[i].id).collect();
        let results = Results {
            published: &published,
            failures: &decision.failures,
            max_attempts: self.config.max_attempts,
        };
        batch.record(results).await
    }

    /// Roll back a batch whose acks outlasted the claim timeout: its rows stay
    /// pending and go out again (their first copies may still arrive, ahead
    /// of the second, since both sit in the same producer in order). Asks the
    /// cluster whether it is gone, so an outage is waited out, not re-sent.
    async fn release(
        &self,
        batch: ClaimedBatch,
        rows: usize,
        started: Instant,
        producer_generation: u64,
    ) -> Finished {
        batch.abandon().await;
        self.telemetry.claim_released(rows, started.elapsed());
        let cluster_down = self.cluster_is_down().await;
        Finished {
            report: BatchReport {
                claimed: rows,
                left_pending: rows,
                elapsed: started.elapsed(),
                ..BatchReport::default()
            },
            cluster_down,
            producer_generation,
            released: true,
            ..Finished::default()
        }
    }

    /// Each row's own delivery report, in order, and `created_at` → ack for
    /// the delivered ones. A row whose topic turned out missing gets the
    /// error that says what to do, and its topic is looked up again next time.
    async fn await_deliveries(
        &self,
        rows: &[OutboxRow],
        pending: Vec<Pending>,
    ) -> (Vec<Delivery>, Vec<Duration>) {
        let mut deliveries = Vec::with_capacity(rows.len());
        let mut delivery_latencies = Vec::with_capacity(rows.len());
        let profile = self.sink.profile();
        for (row, pending) in rows.iter().zip(pending) {
            let mut delivery = pending.outcome().await;
            match &mut delivery {
                Delivery::Failed {
                    disposition: Disposition::Missing,
                    message,
                    ..
                } => {
                    // Deleted since it was seen, or never there: look again next time.
                    self.destinations.forget(&row.topic);
                    *message = profile.missing_error(&row.topic);
                }
                Delivery::Failed {
                    reason: FailureReason::NotAuthorized,
                    message,
                    ..
                } => {
                    self.destinations
                        .write_denied(self.sink.as_ref(), &row.topic);
                    *message = profile.denied_error(&row.topic, message);
                }
                _ => {}
            }
            if delivery == Delivery::Delivered {
                let latency = SystemTime::now().duration_since(row.created_at);
                delivery_latencies.push(latency.unwrap_or_default());
            }
            deliveries.push(delivery);
        }
        (deliveries, delivery_latencies)
    }

    /// When some deliveries failed in a way that may mean "no broker at all",
    /// ask the cluster. Returns true if no broker answers, or if every
    /// broker was down at some point since the batch was sent (`sent`): the
    /// failures are the outage's, even when it ended before they were
    /// reported, and count no attempt.
    async fn confirm_outage(&self, deliveries: &[Delivery], sent: Instant) -> bool {
        let health = self.telemetry.health();
        if !deliveries.iter().any(Delivery::is_unavailable) {
            if deliveries.contains(&Delivery::Delivered) {
                health.sink_ok();
            }
            return false;
        }
        self.cluster_is_down().await || self.sink.unavailable_since(sent)
    }

    /// Ask the cluster for metadata and report the answer to readiness.
    /// Returns true if no broker answers.
    async fn cluster_is_down(&self) -> bool {
        let health = self.telemetry.health();
        match self.sink.probe(PROBE_TIMEOUT).await {
            Ok(()) => {
                health.sink_ok();
                false
            }
            Err(error) => {
                health.sink_failed(&error);
                true
            }
        }
    }
}

/// Rows marked published, per topic: delivered rows, less those the
/// database refused to mark (and made dead instead).
fn published_per_topic(
    rows: &[OutboxRow],
    decision: &BatchDecision,
    dead: &[i64],
) -> HashMap<String, u64> {
    let mut per_topic: HashMap<String, u64> = HashMap::new();
    for &index in &decision.published {
        if !dead.contains(&rows[index].id) {
            *per_topic.entry(rows[index].topic.clone()).or_default() += 1;
        }
    }
    per_topic
}

/// The rows that went dead (final errors, used-up attempts, and rows the
/// database refused to record otherwise), with what the warning about them
/// says.
fn dead_rows(
    rows: &[OutboxRow],
    deliveries: &[Delivery],
    decision: &BatchDecision,
    recorded: &RecordedBatch,
) -> Vec<DeadRow> {
    let dead_ids = &recorded.dead;
    if dead_ids.is_empty() {
        return Vec::new();
    }
    let index_of: HashMap<i64, usize> = rows.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    let mut error_of: HashMap<i64, &str> = decision
        .failures
        .iter()
        .map(|f| (f.id, f.error.as_str()))
        .collect();
    error_of.extend(recorded.refused.iter().map(|(id, why)| (*id, why.as_str())));
    dead_ids
        .iter()
        .filter_map(|id| {
            let index = *index_of.get(id)?;
            let row = &rows[index];
            let reason = match &deliveries[index] {
                Delivery::Failed { reason, .. } => *reason,
                _ => FailureReason::Other,
            };
            Some(DeadRow {
                id: *id,
                topic: row.topic.clone(),
                key: row
                    .message_key
                    .as_deref()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                attempts: row.attempts.saturating_add(1),
                reason,
                error: error_of.get(id).copied().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}
