//! The relay loop: claim a batch, hand every row to the producer, wait for
//! each row's own delivery report, record the results, commit.
//!
//! Guarantees:
//! - at least once: a row is marked published only after its delivery report
//!   succeeded at a known offset, inside the transaction that holds its lock;
//!   anything else (crash, lost connection, outage, an ack without an offset)
//!   leaves it pending for a later claim;
//! - order per key: see `sql/queries/outbox_claim_due.sql`, [`outcome`] and
//!   [`step`];
//! - outages: while no broker answers, attempts are not counted and the loop
//!   backs off as a whole; while PostgreSQL is unreachable it retries with
//!   backoff. Database, Kafka and internal failures each take their own path
//!   ([`telemetry`]);
//! - shutdown: once requested, no new batch is claimed; the batches in
//!   flight are finished and recorded, then the producer is flushed.
//!
//! The loop itself only moves data: [`step`] decides, [`telemetry`] reports.

pub mod backoff;
mod batch;
mod exactly_once;
mod outcome;
mod skipped;
mod step;
mod telemetry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::RelayConfig;
use crate::error::{Error, ErrorPath, Result};
use crate::serve::claim_gate::ClaimGate;
use crate::serve::context::TableContext;
use crate::serve::leader::Leadership;
use crate::serve::shutdown::Shutdown;
use crate::sinks::{KnownDestinations, MessageFormat, Sink};
use crate::source::Database;
use backoff::{OutageBackoff, RetryBackoff};
use batch::{Finished, InFlight, PROBE_TIMEOUT};
use step::{LoopState, Next, Turn};
use telemetry::Telemetry;

fn is_database_failure(error: &Error) -> bool {
    error.path() != ErrorPath::Sink
}

const OUTAGE_BACKOFF_MIN: Duration = Duration::from_millis(100);
const OUTAGE_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How the batch before this turn's claim ended.
#[derive(Default)]
struct Previous {
    /// Its results were recorded and committed.
    recorded: bool,
    /// It was rolled back at the claim timeout.
    released: bool,
    failure: Option<Error>,
}

pub struct Relay {
    config: RelayConfig,
    database: Database,
    sink: Arc<dyn Sink>,
    telemetry: Telemetry,
    wakeup: Arc<Notify>,
    retry_backoff: RetryBackoff,
    destinations: KnownDestinations,
    leadership: Leadership,
    gate: ClaimGate,
    format: MessageFormat,
    /// Told when the table is gone, for a table found by a pattern: its
    /// release is then expected, not an error to report.
    table_gone: Option<Arc<Notify>>,
    /// The longest an idle loop waits between polls: the poll interval, or
    /// with a NOTIFY trigger that wakes it, [`IDLE_POLL_GROWTH`] times it.
    idle_poll_max: Duration,
    /// `--exactly-once`: the table's transactional producer and checkpoint.
    exactly_once: Option<exactly_once::ExactlyOnce>,
}

/// With the NOTIFY trigger, an idle table's backstop poll grows to this
/// many poll intervals (rows wake it at once; retries that come due and
/// rows a lost notification missed wait at most this long).
pub const IDLE_POLL_GROWTH: u32 = 10;

impl Relay {
    pub fn new(
        config: RelayConfig,
        database: Database,
        sink: Arc<dyn Sink>,
        context: TableContext,
    ) -> Self {
        let TableContext {
            metrics,
            health,
            wakeup,
            leadership,
            gate,
            ..
        } = context;
        let retry_backoff = RetryBackoff {
            base: config.retry_backoff_base,
            max: config.retry_backoff_max,
        };
        let format = config.message_format(database.payload_kind());
        Relay {
            format,
            config,
            database,
            sink,
            telemetry: Telemetry::new(metrics, health),
            wakeup,
            retry_backoff,
            destinations: KnownDestinations::default(),
            leadership,
            gate,
            table_gone: None,
            idle_poll_max: Duration::ZERO,
            exactly_once: None,
        }
    }

    /// Publish through the table's own transactional producer, one Kafka
    /// transaction per batch (`--exactly-once`).
    pub fn exactly_once(mut self, sink: Arc<crate::sinks::kafka::Transactional>) -> Self {
        self.sink = Arc::clone(&sink) as Arc<dyn Sink>;
        let batch_size = self.config.batch_size as usize;
        self.exactly_once = Some(exactly_once::ExactlyOnce::new(sink, batch_size));
        self
    }

    /// The table's NOTIFY trigger wakes this loop: while idle, poll less
    /// often (up to [`IDLE_POLL_GROWTH`] poll intervals).
    pub fn woken_by_trigger(mut self) -> Self {
        self.idle_poll_max = self.config.poll_interval * IDLE_POLL_GROWTH;
        self
    }

    /// On finding the table dropped, tell `discovery` (which releases it)
    /// instead of reporting a failure.
    pub fn release_when_gone(mut self, discovery: Arc<Notify>) -> Self {
        self.table_gone = Some(discovery);
        self
    }

    /// Run until `shutdown` is requested and the batches in flight are
    /// recorded. (The producer is shared by every table: `run` flushes it
    /// once all of them stopped.)
    ///
    /// Two batches overlap: the next one is claimed and handed to the
    /// producer while the previous one waits for its delivery reports, then
    /// the previous one is recorded. Batches are recorded in the order they
    /// were sent, and keys the earlier batch held back stay held in the later.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<()> {
        let mut state = LoopState::default();
        let mut in_flight: Option<InFlight> = None;
        let mut backoff = OutageBackoff::new(OUTAGE_BACKOFF_MIN, OUTAGE_BACKOFF_MAX);
        // Polls in a row that found nothing and were not woken.
        let mut idle_polls = 0;
        loop {
            let turn = self
                .turn(&mut state, &mut in_flight, shutdown.is_requested())
                .await;
            if turn.failure.is_none() {
                backoff.reset();
            }
            let decision = state.step(turn, Instant::now());
            if decision.replace_producer {
                self.replace_producer(
                    "every delivery of a batch failed while the cluster answers",
                    state.failed_generation,
                );
            }
            if decision.next != Next::AwaitWork {
                idle_polls = 0;
            }
            match decision.next {
                Next::Continue | Next::ClaimAgain => {}
                Next::Stop => break,
                Next::AwaitWork => {
                    let woken = self
                        .wait_for_work(&mut shutdown, self.idle_poll(idle_polls))
                        .await;
                    idle_polls = if woken { 0 } else { idle_polls + 1 };
                }
                Next::BackOff(_) => {
                    tokio::select! {
                        () = shutdown.requested() => {}
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
                Next::AwaitBrokers => {
                    self.wait_for_brokers(&mut shutdown).await;
                    state.brokers_back(Instant::now());
                    self.replace_producer(
                        "the cluster is back after an outage",
                        state.failed_generation,
                    );
                }
            }
        }
        Ok(())
    }

    /// One turn: finish the batch in flight while the next one is claimed
    /// and sent (each on its own connection), then check the producer.
    async fn turn(
        &self,
        state: &mut LoopState,
        in_flight: &mut Option<InFlight>,
        shutdown_requested: bool,
    ) -> Turn {
        // Standbys stay connected and ready, and claim nothing.
        let may_claim = state.may_claim(shutdown_requested) && self.leadership.is_leader();
        let previous = in_flight.take();
        // An idle standby touches no table: it says nothing about the database.
        let touched_database = may_claim || previous.is_some();
        let ours = previous.as_ref().map(InFlight::ids).unwrap_or_default();
        let unsent_keys = previous
            .as_ref()
            .map(|p| p.unsent_keys().clone())
            .unwrap_or_default();
        let skipped = state.skipped.ids(Instant::now());
        let held_before = std::mem::take(&mut state.held_keys);
        let (claimed, finished) = if self.one_transaction_at_a_time() {
            // One transaction at a time: the next batch is claimed while
            // this one finishes, and sent once this one committed in Kafka
            // (while it is recorded), its checkpoint naming this one's rows
            // too. Not sent at all if this one did not commit.
            let (committed, commit_seen) = match previous {
                Some(_) => {
                    let (tell, hear) = tokio::sync::oneshot::channel();
                    (Some(tell), Some(hear))
                }
                None => (None, None),
            };
            let claim = async {
                if !may_claim {
                    return None;
                }
                let next = match self.claim_batch(&ours, &skipped).await {
                    Ok(Some(next)) => next,
                    Ok(None) => return Some(Ok(None)),
                    Err(error) => return Some(Err(error)),
                };
                let carried = match commit_seen {
                    None => Vec::new(),
                    Some(hear) => match hear.await {
                        Ok(carried) => carried,
                        Err(_) => {
                            next.abandon().await;
                            return Some(Ok(None));
                        }
                    },
                };
                Some(Ok(Some(
                    self.send_claimed(next, unsent_keys, carried).await,
                )))
            };
            let finish = async {
                match previous {
                    Some(previous) => Some(self.finish(previous, &held_before, committed).await),
                    None => None,
                }
            };
            tokio::join!(claim, finish)
        } else {
            tokio::join!(
                async {
                    if may_claim {
                        Some(self.claim_and_send(&ours, &skipped, unsent_keys).await)
                    } else {
                        None
                    }
                },
                async {
                    match previous {
                        Some(previous) => Some(self.finish(previous, &held_before, None).await),
                        None => None,
                    }
                }
            )
        };
        let previous = self.take_in(state, finished);
        let mut failure = previous.failure;
        // A producer that hit a fatal error refuses every later message.
        if let Err(error) = self.replace_if_fatal() {
            failure.get_or_insert(error);
        }
        let claimed_nothing = self
            .keep_claimed(claimed, &mut failure, previous.released, in_flight)
            .await;
        self.telemetry
            .in_flight(in_flight.as_ref().map_or(0, InFlight::len));
        // A claim alone proves little: the statement that failed may be the
        // record that follows it.
        let statements_done = previous.recorded || (may_claim && claimed_nothing);
        self.report(failure.as_ref(), touched_database, statements_done);
        Turn {
            in_flight: in_flight.is_some(),
            claimed_nothing,
            failure: failure.as_ref().map(Error::path),
            shutdown_requested,
        }
    }

    /// Take in how the previous batch finished, if one did: report a
    /// recorded batch and skip the rows the database refused to write.
    fn take_in(&self, state: &mut LoopState, finished: Option<Result<Finished>>) -> Previous {
        match finished {
            Some(Ok(finished)) => {
                let released = finished.released;
                if !released {
                    self.telemetry.batch_recorded(&finished.report);
                    self.skip_unrecordable(state, &finished.report.recorded.unrecordable);
                }
                state.absorb(finished);
                Previous {
                    recorded: !released,
                    released,
                    failure: None,
                }
            }
            Some(Err(error)) => Previous {
                failure: Some(error),
                ..Previous::default()
            },
            None => Previous::default(),
        }
    }

    /// Keep a newly claimed batch in flight, unless the database failed this
    /// turn or the batch before it was released. Returns whether the claim
    /// came back empty (or was dropped).
    async fn keep_claimed(
        &self,
        claimed: Option<Result<Option<InFlight>>>,
        failure: &mut Option<Error>,
        previous_released: bool,
        in_flight: &mut Option<InFlight>,
    ) -> bool {
        let database_failed = failure.as_ref().is_some_and(is_database_failure);
        match claimed {
            // Its rows were sent after rows that are now pending again:
            // record nothing, so all of them go out again in order.
            // (Under --exactly-once a batch is sent only after the one
            // before it committed in Kafka, and its checkpoint names both.)
            Some(Ok(Some(next)))
                if (database_failed && !self.one_transaction_at_a_time()) || previous_released =>
            {
                next.abandon().await;
                true
            }
            Some(Ok(Some(next))) => {
                *in_flight = Some(next);
                false
            }
            Some(Ok(None)) | None => true,
            Some(Err(error)) => {
                failure.get_or_insert(error);
                true
            }
        }
    }

    /// Skip the rows the database refused to update at all, each for
    /// `--retry-backoff-max-secs`, and say so once per skip.
    fn skip_unrecordable(&self, state: &mut LoopState, rows: &[(i64, String)]) {
        let period = self.config.retry_backoff_max;
        for (id, reason) in rows {
            if state.skipped.add(*id, Instant::now(), period) {
                self.telemetry.row_unrecordable(*id, reason, period);
            }
        }
        self.telemetry.skipped(state.skipped.len());
    }

    fn report(&self, failure: Option<&Error>, touched_database: bool, statements_done: bool) {
        if let (Some(error @ Error::TableGone { .. }), Some(discovery)) =
            (failure, &self.table_gone)
        {
            tracing::debug!(%error, "the table is gone; asking discovery to release it");
            discovery.notify_one();
            return;
        }
        let health = self.telemetry.health();
        if touched_database && !failure.is_some_and(is_database_failure) {
            health.database_ok();
        }
        match failure {
            Some(error) => self.telemetry.failure(error),
            None if statements_done => health.database_accepts(),
            None => {}
        }
    }

    fn replace_if_fatal(&self) -> Result<()> {
        if let Some(fatal) = self.sink.replace_if_fatal()? {
            let connection = self.sink.profile().connection;
            tracing::warn!(error = %fatal, "the {connection} hit a fatal error and was replaced");
        }
        Ok(())
    }

    /// Replace the producer of `generation`, unless another table's loop
    /// already did.
    fn replace_producer(&self, reason: &str, generation: u64) {
        match self.sink.reconnect(generation) {
            Ok(true) => self.telemetry.producer_replaced(reason),
            Ok(false) => tracing::debug!(reason, "the producer was already replaced"),
            Err(error) => self.telemetry.failure(&error),
        }
    }

    /// How long to wait for work after `idle_polls` polls that found
    /// nothing: the poll interval, doubling up to [`Relay::idle_poll_max`].
    fn idle_poll(&self, idle_polls: u32) -> Duration {
        let poll = self.config.poll_interval;
        poll.saturating_mul(1 << idle_polls.min(16))
            .min(self.idle_poll_max.max(poll))
    }

    /// Sleep until notified, `poll` passes, or shutdown; whether notified.
    async fn wait_for_work(&self, shutdown: &mut Shutdown, poll: Duration) -> bool {
        // ±10 %, so replicas (and tables) started together do not poll in step.
        let poll = poll.mul_f64(0.9 + 0.2 * fastrand::f64());
        tokio::select! {
            () = shutdown.requested() => false,
            () = self.wakeup.notified() => true,
            () = tokio::time::sleep(poll) => false,
        }
    }

    /// Back off until a broker answers a metadata request again.
    async fn wait_for_brokers(&self, shutdown: &mut Shutdown) {
        let health = self.telemetry.health();
        let mut backoff = OutageBackoff::new(OUTAGE_BACKOFF_MIN, OUTAGE_BACKOFF_MAX);
        loop {
            tokio::select! {
                () = shutdown.requested() => return,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
            match self.sink.probe(PROBE_TIMEOUT).await {
                Ok(()) => {
                    health.sink_ok();
                    return;
                }
                Err(error) => health.sink_failed(&error),
            }
        }
    }
}
