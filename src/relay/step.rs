//! The relay loop's state, and the pure step that decides what the loop does
//! after each turn: go on with the batch in flight, claim again, wait for
//! work, wait for the brokers, back off, or stop.
//!
//! Guarantees:
//! - no new batch is claimed while a key is held back behind a failed row,
//!   while the cluster is down, while the producer is suspect, or once
//!   shutdown is requested: the pipeline drains first, so a hold never passes
//!   on from batch to batch for ever;
//! - a suspect producer is replaced at most once per
//!   [`PRODUCER_REPLACEMENT_INTERVAL`].

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::batch::Finished;
use super::skipped::Skipped;
use crate::error::ErrorPath;

/// Least time between two replacements of a suspect producer.
pub const PRODUCER_REPLACEMENT_INTERVAL: Duration = Duration::from_secs(30);

/// What the loop carries from one turn to the next.
#[derive(Debug, Default)]
pub struct LoopState {
    /// Keys the last recorded batch held back: the batch after it must not
    /// publish them either.
    pub held_keys: HashSet<Vec<u8>>,
    /// A probe confirmed that no broker answers.
    pub cluster_down: bool,
    /// Every delivery of a batch failed as if the cluster were gone, yet the
    /// cluster answers: the producer itself is suspect (e.g. a broker that
    /// lost its state no longer knows the producer id).
    pub producer_suspect: bool,
    pub last_replacement: Option<Instant>,
    /// The generation of the producer the last batch that found the cluster
    /// down or the producer suspect was sent with: the one to replace.
    pub failed_generation: u64,
    /// Rows the database refuses to update at all: not claimed for a while.
    pub skipped: Skipped,
}

/// What one turn (a claim, the finish of the previous batch, or both) left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// A batch is in flight and waits to be finished next turn.
    pub in_flight: bool,
    /// A claim ran and found nothing to send.
    pub claimed_nothing: bool,
    pub failure: Option<ErrorPath>,
    pub shutdown_requested: bool,
}

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Finish the batch in flight (and maybe claim the next) at once.
    Continue,
    /// Claim again at once: the last claim was not empty.
    ClaimAgain,
    /// Sleep until a NOTIFY, the poll interval or shutdown.
    AwaitWork,
    /// Probe the cluster with backoff until a broker answers.
    AwaitBrokers,
    /// Sleep with the outage backoff after a failure.
    BackOff(ErrorPath),
    Stop,
}

/// The step's decision: what to do, and whether to replace the producer
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub next: Next,
    pub replace_producer: bool,
}

impl LoopState {
    /// May this turn claim a new batch?
    pub fn may_claim(&self, shutdown_requested: bool) -> bool {
        !shutdown_requested
            && !self.cluster_down
            && !self.producer_suspect
            && self.held_keys.is_empty()
    }

    /// Decide what follows `turn`. Pure but for the state it updates; `now`
    /// is passed in so tests control time.
    pub fn step(&mut self, turn: Turn, now: Instant) -> Decision {
        let proceed = |next| Decision {
            next,
            replace_producer: false,
        };
        if turn.in_flight {
            return proceed(Next::Continue);
        }
        // The pipeline is empty: holds end with it.
        self.held_keys.clear();
        let replacement_due = self
            .last_replacement
            .is_none_or(|at| now.duration_since(at) >= PRODUCER_REPLACEMENT_INTERVAL);
        let replace_producer = std::mem::take(&mut self.producer_suspect) && replacement_due;
        if replace_producer {
            self.last_replacement = Some(now);
        }
        let next = if turn.shutdown_requested {
            Next::Stop
        } else if let Some(path) = turn.failure {
            Next::BackOff(path)
        } else if self.cluster_down {
            Next::AwaitBrokers
        } else if turn.claimed_nothing {
            Next::AwaitWork
        } else {
            Next::ClaimAgain
        };
        Decision {
            next,
            replace_producer,
        }
    }

    /// Take in what finishing a batch found.
    pub fn absorb(&mut self, finished: Finished) {
        self.held_keys = finished.held_keys;
        if finished.cluster_down || finished.producer_suspect {
            self.failed_generation = finished.producer_generation;
        }
        self.cluster_down |= finished.cluster_down;
        self.producer_suspect |= finished.producer_suspect;
    }

    /// The brokers answer again after an outage. The caller replaces the
    /// producer: a broker that was gone may have lost its producer state.
    pub fn brokers_back(&mut self, now: Instant) {
        self.cluster_down = false;
        self.last_replacement = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Turn = Turn {
        in_flight: false,
        claimed_nothing: true,
        failure: None,
        shutdown_requested: false,
    };

    fn held(keys: &[&str]) -> LoopState {
        LoopState {
            held_keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            ..LoopState::default()
        }
    }

    #[test]
    fn a_batch_in_flight_is_finished_before_anything_else() {
        let mut state = held(&["a"]);
        let turn = Turn {
            in_flight: true,
            shutdown_requested: true,
            ..QUIET
        };
        assert_eq!(state.step(turn, Instant::now()).next, Next::Continue);
        assert!(
            state.held_keys.contains(b"a".as_slice()),
            "the hold stays while in flight"
        );
    }

    #[test]
    fn a_held_key_stops_claiming_until_the_pipeline_is_empty() {
        let mut state = held(&["a"]);
        assert!(!state.may_claim(false));
        state.step(QUIET, Instant::now());
        assert!(state.held_keys.is_empty());
        assert!(state.may_claim(false));
    }

    #[test]
    fn nothing_is_claimed_during_an_outage_a_suspect_producer_or_shutdown() {
        let down = LoopState {
            cluster_down: true,
            ..LoopState::default()
        };
        let suspect = LoopState {
            producer_suspect: true,
            ..LoopState::default()
        };
        assert!(!down.may_claim(false));
        assert!(!suspect.may_claim(false));
        assert!(!LoopState::default().may_claim(true));
        assert!(LoopState::default().may_claim(false));
    }

    #[test]
    fn an_empty_claim_waits_for_work_and_a_full_one_claims_again() {
        let mut state = LoopState::default();
        assert_eq!(state.step(QUIET, Instant::now()).next, Next::AwaitWork);
        let busy = Turn {
            claimed_nothing: false,
            ..QUIET
        };
        assert_eq!(state.step(busy, Instant::now()).next, Next::ClaimAgain);
    }

    #[test]
    fn shutdown_wins_over_failures_and_failures_over_outages() {
        let mut state = LoopState {
            cluster_down: true,
            ..LoopState::default()
        };
        let failed = Turn {
            failure: Some(ErrorPath::DatabaseUnreachable),
            ..QUIET
        };
        let stopping = Turn {
            shutdown_requested: true,
            ..failed
        };
        assert_eq!(state.step(stopping, Instant::now()).next, Next::Stop);
        assert_eq!(
            state.step(failed, Instant::now()).next,
            Next::BackOff(ErrorPath::DatabaseUnreachable)
        );
        assert_eq!(state.step(QUIET, Instant::now()).next, Next::AwaitBrokers);
        state.brokers_back(Instant::now());
        assert_eq!(state.step(QUIET, Instant::now()).next, Next::AwaitWork);
    }

    #[test]
    fn a_suspect_producer_is_replaced_at_most_once_per_interval() {
        let start = Instant::now();
        let mut state = LoopState {
            producer_suspect: true,
            ..LoopState::default()
        };
        assert!(state.step(QUIET, start).replace_producer);
        assert!(!state.producer_suspect, "suspicion ends with the pipeline");
        state.producer_suspect = true;
        assert!(
            !state
                .step(QUIET, start + Duration::from_secs(1))
                .replace_producer
        );
        state.producer_suspect = true;
        let later = start + PRODUCER_REPLACEMENT_INTERVAL;
        assert!(state.step(QUIET, later).replace_producer);
    }

    #[test]
    fn a_replacement_after_an_outage_counts_against_the_interval() {
        let start = Instant::now();
        let mut state = LoopState {
            producer_suspect: true,
            ..LoopState::default()
        };
        state.brokers_back(start);
        assert!(
            !state
                .step(QUIET, start + Duration::from_secs(5))
                .replace_producer
        );
    }
}
