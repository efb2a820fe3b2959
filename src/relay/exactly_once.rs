//! `--exactly-once`: each batch is one Kafka transaction, committed with a
//! checkpoint naming its rows before PostgreSQL marks them.
//!
//! Guarantees:
//! - one transaction at a time: the next batch is claimed while one
//!   commits, sent once it committed (while its rows are recorded), and
//!   committed only after that record ended; its checkpoint names its own
//!   rows and the batch before it, so the latest checkpoint names every
//!   row Kafka may hold unmarked;
//! - a transaction commits only when every row it holds will be marked
//!   published: a delivered row the outcome rules would leave pending (its
//!   key held back) aborts it instead;
//! - before the first claim of a producer, and after a batch could not be
//!   recorded, the table's checkpoint is read
//!   (read_committed, after `init_transactions` settled the previous
//!   producer's transaction) and its rows still pending are marked
//!   published without being sent;
//! - a batch whose transaction aborts records no row published. When one
//!   of its rows failed, the batch is claimed again in halves until the
//!   failing row is alone in its transaction (a record batch the broker
//!   refuses fails every row in it, so a row's failure is its own only when
//!   it went alone); only then is its failure recorded (dead at once when
//!   final). An outage aborts the batch and counts no attempt;
//! - a fenced producer's batch is rolled back unrecorded, and the relay
//!   claims nothing more until it leads again (under a new lock session);
//!   a relay that leads again starts a new producer, since another leader
//!   may have fenced its old one meanwhile.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::Relay;
use crate::error::{Error, Result};
use crate::sinks::kafka::{Commit, TransactionChannel, Transactional};
use crate::sinks::{Channel, Delivery, Pending};
use crate::source::Fence;

/// The test-only fault point: with `OUTBOX_TEST_FAULT=exit-after-kafka-commit`
/// the process exits right after its first Kafka commit, before
/// PostgreSQL marks the batch — the crash window, forced.
const FAULT_ENV: &str = "OUTBOX_TEST_FAULT";
const FAULT_EXIT_AFTER_COMMIT: &str = "exit-after-kafka-commit";

/// One table's exactly-once state, beside its relay loop.
pub struct ExactlyOnce {
    sink: Arc<Transactional>,
    /// The leadership under which this relay's producer was fenced: it
    /// claims nothing while it still holds that one.
    fenced_under: Mutex<Option<Option<Fence>>>,
    /// The leadership under which the current producer was started: one
    /// started under an earlier one may have been fenced by another
    /// leader since, so it is started again.
    started_under: Mutex<Option<Option<Fence>>>,
    /// Kafka may hold a committed batch PostgreSQL has not marked: read
    /// the checkpoint before the next claim.
    recheck: AtomicBool,
    /// Rows the next claim may take: the batch size, halved after each
    /// transaction a row's failure aborted, doubled back after each commit.
    limit: AtomicUsize,
    batch_size: usize,
    exit_after_commit: bool,
}

/// How a batch's transaction was settled.
pub enum Settled {
    /// Committed: record the deliveries as they are.
    Committed,
    /// Aborted: nothing of it was published.
    Aborted,
    /// Fenced or lost: roll the claim back, record nothing.
    RolledBack,
}

impl ExactlyOnce {
    pub fn new(sink: Arc<Transactional>, batch_size: usize) -> Self {
        ExactlyOnce {
            sink,
            fenced_under: Mutex::default(),
            started_under: Mutex::default(),
            recheck: AtomicBool::new(false),
            limit: AtomicUsize::new(batch_size),
            batch_size,
            exit_after_commit: std::env::var(FAULT_ENV).as_deref() == Ok(FAULT_EXIT_AFTER_COMMIT),
        }
    }

    fn fenced_under(&self) -> std::sync::MutexGuard<'_, Option<Option<Fence>>> {
        self.fenced_under.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn started_under(&self) -> std::sync::MutexGuard<'_, Option<Option<Fence>>> {
        self.started_under.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The channel of the next batch, its transaction begun.
    pub fn begin(&self) -> Arc<TransactionChannel> {
        self.sink.begin()
    }

    /// After the batch's rows went out: its checkpoint, naming the rows
    /// `sent`.
    pub async fn stage_checkpoint(&self, channel: &TransactionChannel, sent: &[i64]) {
        self.sink.stage_checkpoint(channel, sent).await;
    }
}

/// Whether every row that went into the transaction was delivered (rows
/// refused before sending never joined it).
fn all_sent_delivered(sent: &[bool], deliveries: &[Delivery]) -> bool {
    sent.iter()
        .zip(deliveries)
        .all(|(&sent, delivery)| !sent || *delivery == Delivery::Delivered)
}

/// Which rows joined the transaction: those handed to the producer.
pub fn sent(pending: &[Pending]) -> Vec<bool> {
    pending
        .iter()
        .map(|p| matches!(p, Pending::Sent(_)))
        .collect()
}

impl Relay {
    /// Before a claim: start the producer (fencing older ones) and recover
    /// from the checkpoint when needed. Whether this relay may claim.
    pub(super) async fn ready_to_claim(&self) -> Result<bool> {
        let Some(once) = &self.exactly_once else {
            return Ok(true);
        };
        let leading = self.leadership.fence();
        if let Some(fenced) = *once.fenced_under() {
            if fenced == leading {
                return Ok(false);
            }
        }
        if once.sink.is_ready() && *once.started_under() != Some(leading) {
            once.sink.forget_current();
        }
        let ids = if !once.sink.is_ready() {
            let ids = once.sink.start().await.map_err(Error::KafkaTransaction)?;
            *once.started_under() = Some(leading);
            tracing::info!(
                transactional_id = once.sink.transactional_id(),
                "publishing exactly once with transactional.id {}: older producers with this id are fenced; the checkpoint names {} rows",
                once.sink.transactional_id(),
                ids.len()
            );
            ids
        } else if once.recheck.load(Ordering::SeqCst) {
            once.sink
                .read_checkpoint()
                .await
                .map_err(Error::KafkaTransaction)?
        } else {
            return Ok(true);
        };
        let marked = self.database.publish_ids(&ids).await?;
        once.recheck.store(false, Ordering::SeqCst);
        *once.fenced_under() = None;
        self.telemetry.checkpoint_recovered(marked, ids.len());
        Ok(true)
    }

    /// Commit the batch's transaction with its checkpoint, or abort it.
    /// On an abort, the rows that were delivered (and, when the batch is
    /// claimed again in halves, every row sent) become held back: they go
    /// out again, no attempt counted.
    pub(super) async fn settle(
        &self,
        channel: &TransactionChannel,
        sent: &[bool],
        deliveries: &mut [Delivery],
        cluster_down: bool,
        would_hold_delivered: bool,
    ) -> Settled {
        let Some(once) = &self.exactly_once else {
            return Settled::Committed;
        };
        if !channel.began() {
            return Settled::Aborted;
        }
        let lease = channel.lease();
        let nothing_delivered = !deliveries.contains(&Delivery::Delivered);
        let rows_sent = sent.iter().filter(|&&s| s).count();
        let row_failed = !all_sent_delivered(sent, deliveries);
        let commit = if nothing_delivered {
            once.sink.abort(lease, "no row was delivered".into()).await
        } else if row_failed {
            once.sink
                .abort(lease, "a row of the batch failed".into())
                .await
        } else if would_hold_delivered {
            once.sink
                .abort(lease, "a delivered row would be left pending".into())
                .await
        } else {
            once.sink.commit(channel).await
        };
        self.telemetry
            .transaction_ended(&commit, channel.began_at().elapsed());
        match commit {
            Commit::Committed => {
                let grown = (once.limit.load(Ordering::SeqCst) * 2).min(once.batch_size);
                once.limit.store(grown, Ordering::SeqCst);
                if once.exit_after_commit {
                    tracing::warn!("{FAULT_ENV}={FAULT_EXIT_AFTER_COMMIT}: exiting between the Kafka commit and the PostgreSQL commit");
                    std::process::exit(86);
                }
                Settled::Committed
            }
            Commit::Aborted(_) => {
                // A row's failure is its own only when it went alone, and
                // never an outage's: otherwise every row goes out again,
                // in a smaller batch.
                let bisect = row_failed && rows_sent > 1 && !cluster_down;
                if bisect {
                    let half = (rows_sent / 2).max(1);
                    once.limit.store(half, Ordering::SeqCst);
                }
                for (delivery, &sent) in deliveries.iter_mut().zip(sent) {
                    if *delivery == Delivery::Delivered || (bisect && sent) {
                        *delivery = Delivery::HeldBack;
                    }
                }
                Settled::Aborted
            }
            Commit::Fenced(reason) => {
                once.sink.forget(channel.generation());
                *once.fenced_under() = Some(self.leadership.fence());
                tracing::warn!(
                    transactional_id = once.sink.transactional_id(),
                    %reason,
                    "this relay's Kafka producer was fenced: another relay now publishes this table with transactional.id {}; its batch was rolled back, and it claims nothing more until it leads the table again",
                    once.sink.transactional_id()
                );
                Settled::RolledBack
            }
            Commit::Unknown(reason) => {
                tracing::warn!(%reason, "a Kafka transaction neither committed nor aborted; its batch was rolled back, and a new producer settles it before the next claim");
                Settled::RolledBack
            }
        }
    }

    /// A batch whose deliveries outlasted the claim timeout left its
    /// transaction open: only a new producer's `init_transactions` settles
    /// it (Kafka before 2.5 cannot abort after a message timed out).
    pub(super) fn transaction_lost(&self, channel: &dyn Channel) {
        if let Some(once) = &self.exactly_once {
            once.sink.forget(channel.generation());
        }
    }

    /// How many rows the next claim may take.
    pub(super) fn claim_limit(&self) -> usize {
        match &self.exactly_once {
            Some(once) => once.limit.load(Ordering::SeqCst),
            None => self.config.batch_size as usize,
        }
    }

    /// Whether one Kafka transaction is open at a time (`--exactly-once`):
    /// a batch is sent only once the one before it committed.
    pub(super) fn one_transaction_at_a_time(&self) -> bool {
        self.exactly_once.is_some()
    }

    /// A batch could not be recorded: Kafka may hold it committed, so read
    /// the checkpoint before the next claim.
    pub(super) fn recheck_checkpoint(&self) {
        if let Some(once) = &self.exactly_once {
            once.recheck.store(true, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::{Disposition, FailureReason};

    fn failed() -> Delivery {
        Delivery::Failed {
            disposition: Disposition::Final,
            reason: FailureReason::MessageTooLarge,
            message: "too large".into(),
        }
    }

    #[test]
    fn a_failed_row_that_joined_the_transaction_aborts_it() {
        let deliveries = [Delivery::Delivered, failed(), Delivery::Delivered];
        assert!(!all_sent_delivered(&[true, true, true], &deliveries));
    }

    #[test]
    fn a_row_refused_before_sending_never_joined_the_transaction() {
        let deliveries = [Delivery::Delivered, failed(), Delivery::HeldBack];
        assert!(all_sent_delivered(&[true, false, false], &deliveries));
    }
}
