//! Deciding what to write back for a batch, given each row's delivery report.
//!
//! Guarantees:
//! - a row is marked published only if its own delivery succeeded;
//! - once a row of a key is not published (and not dead), every later row of
//!   that key in the batch is left pending too, even if Kafka took it, so the
//!   key's rows are sent again in order after it; the same holds for keys
//!   held back by the batch sent before this one;
//! - while the whole cluster is down, attempts are not counted.

use std::collections::HashSet;
use std::time::Duration;

use super::backoff::RetryBackoff;
use crate::sinks::{Delivery, Disposition, FailureReason};
use crate::source::{FailureRecord, OutboxRow};

/// Longest `last_error` stored, in bytes.
const MAX_ERROR_LEN: usize = 1_000;

#[derive(Debug, Default, PartialEq)]
pub struct BatchDecision {
    /// Indexes into the batch's rows of the rows to mark published.
    pub published: Vec<usize>,
    pub failures: Vec<FailureRecord>,
    /// One entry per failed delivery report, for metrics.
    pub failure_reasons: Vec<FailureReason>,
    /// Rows left untouched: held behind an earlier row of their key, or
    /// caught in a cluster outage.
    pub left_pending: usize,
    /// Keys with a row left pending: the batch sent after this one must not
    /// publish rows of these keys either.
    pub held_keys: HashSet<Vec<u8>>,
}

/// Decide the fate of each row. `rows` and `deliveries` are parallel and in
/// id order; `cluster_down` says a probe confirmed that no broker answers;
/// `held_before` are the keys the previous batch held back.
pub fn decide(
    rows: &[OutboxRow],
    deliveries: &[Delivery],
    cluster_down: bool,
    held_before: &HashSet<Vec<u8>>,
    backoff: &RetryBackoff,
    mut jitter: impl FnMut() -> f64,
) -> BatchDecision {
    let mut decision = BatchDecision::default();
    let mut held_keys: HashSet<&[u8]> = held_before.iter().map(Vec::as_slice).collect();
    for (index, (row, delivery)) in rows.iter().zip(deliveries).enumerate() {
        let key = row.message_key.as_deref();
        match delivery {
            Delivery::Failed { reason, .. } => decision.failure_reasons.push(*reason),
            Delivery::Unconfirmed => decision.failure_reasons.push(FailureReason::Unconfirmed),
            Delivery::Delivered | Delivery::HeldBack => {}
        }
        if key.is_some_and(|k| held_keys.contains(k)) {
            decision.left_pending += 1;
            continue;
        }
        let (disposition, message) = match delivery {
            Delivery::Delivered => {
                decision.published.push(index);
                continue;
            }
            Delivery::Unconfirmed | Delivery::HeldBack => {
                // Sent (again) later, with its key held behind it; no
                // attempt is counted against the row.
                decision.left_pending += 1;
                held_keys.extend(key);
                continue;
            }
            Delivery::Failed {
                disposition,
                message,
                ..
            } => (*disposition, message),
        };
        let is_final = match disposition {
            Disposition::Unavailable if cluster_down => {
                decision.left_pending += 1;
                held_keys.extend(key);
                continue;
            }
            Disposition::Final => true,
            Disposition::Retry | Disposition::Missing | Disposition::Unavailable => false,
        };
        if !is_final {
            held_keys.extend(key);
        }
        decision
            .failures
            .push(failure_record(row, message, is_final, backoff, &mut jitter));
    }
    decision.held_keys = held_keys.into_iter().map(<[u8]>::to_vec).collect();
    decision
}

/// The failed attempt to record for `row`: its error, and when it may be
/// tried again (never, if the failure is final).
fn failure_record(
    row: &OutboxRow,
    message: &str,
    is_final: bool,
    backoff: &RetryBackoff,
    jitter: &mut impl FnMut() -> f64,
) -> FailureRecord {
    let failed_attempts = u32::try_from(row.attempts).unwrap_or(0).saturating_add(1);
    FailureRecord {
        id: row.id,
        message_key: row.message_key.clone(),
        error: truncate(message, MAX_ERROR_LEN),
        is_final,
        retry_in: if is_final {
            Duration::ZERO
        } else {
            backoff.delay(failed_attempts, jitter())
        },
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    const BACKOFF: RetryBackoff = RetryBackoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    fn row(id: i64, key: Option<&str>) -> OutboxRow {
        OutboxRow {
            id,
            event_id: format!("e{id}"),
            topic: "t".into(),
            message_key: key.map(|k| k.as_bytes().to_vec()),
            payload: None,
            headers: serde_json::json!({}),
            event_type: None,
            attempts: 0,
            created_at: SystemTime::now(),
        }
    }

    fn failed(disposition: Disposition) -> Delivery {
        Delivery::Failed {
            disposition,
            reason: FailureReason::Other,
            message: "boom".into(),
        }
    }

    fn ids(decision: &BatchDecision, rows: &[OutboxRow]) -> Vec<i64> {
        decision.published.iter().map(|&i| rows[i].id).collect()
    }

    #[test]
    fn delivered_rows_are_published() {
        let rows = [row(1, Some("a")), row(2, None)];
        let decision = decide(
            &rows,
            &[Delivery::Delivered, Delivery::Delivered],
            false,
            &HashSet::new(),
            &BACKOFF,
            || 0.0,
        );
        assert_eq!(ids(&decision, &rows), vec![1, 2]);
        assert!(decision.failures.is_empty());
    }

    #[test]
    fn a_retrying_row_holds_back_later_rows_of_its_key_only() {
        let rows = [
            row(1, Some("a")),
            row(2, Some("b")),
            row(3, Some("a")),
            row(4, None),
        ];
        let deliveries = [
            failed(Disposition::Retry),
            Delivery::Delivered,
            Delivery::Delivered,
            Delivery::Delivered,
        ];
        let decision = decide(&rows, &deliveries, false, &HashSet::new(), &BACKOFF, || 0.0);
        assert_eq!(ids(&decision, &rows), vec![2, 4]);
        assert_eq!(decision.failures.len(), 1);
        assert_eq!(decision.failures[0].id, 1);
        assert!(!decision.failures[0].is_final);
        assert_eq!(decision.failures[0].retry_in, Duration::from_millis(500));
        assert_eq!(decision.left_pending, 1);
    }

    #[test]
    fn a_final_failure_does_not_hold_its_key_back() {
        let rows = [row(1, Some("a")), row(2, Some("a"))];
        let decision = decide(
            &rows,
            &[failed(Disposition::Final), Delivery::Delivered],
            false,
            &HashSet::new(),
            &BACKOFF,
            || 0.0,
        );
        assert_eq!(ids(&decision, &rows), vec![2]);
        assert!(decision.failures[0].is_final);
    }

    #[test]
    fn a_cluster_outage_counts_no_attempt_and_holds_keys() {
        let rows = [row(1, Some("a")), row(2, Some("a")), row(3, None)];
        let deliveries = [
            failed(Disposition::Unavailable),
            Delivery::Delivered,
            failed(Disposition::Unavailable),
        ];
        let decision = decide(&rows, &deliveries, true, &HashSet::new(), &BACKOFF, || 0.0);
        assert!(decision.published.is_empty());
        assert!(decision.failures.is_empty());
        assert_eq!(decision.left_pending, 3);
        assert_eq!(decision.failure_reasons.len(), 2);
    }

    #[test]
    fn a_timeout_while_the_cluster_answers_counts_as_a_retry() {
        let rows = [row(1, Some("a"))];
        let decision = decide(
            &rows,
            &[failed(Disposition::Unavailable)],
            false,
            &HashSet::new(),
            &BACKOFF,
            || 1.0,
        );
        assert_eq!(decision.failures.len(), 1);
        assert!(!decision.failures[0].is_final);
        assert_eq!(decision.failures[0].retry_in, Duration::from_secs(1));
    }

    #[test]
    fn keys_held_by_the_previous_batch_stay_held() {
        let rows = [row(1, Some("a")), row(2, Some("b"))];
        let held: HashSet<Vec<u8>> = [b"a".to_vec()].into();
        let decision = decide(
            &rows,
            &[Delivery::Delivered, Delivery::Delivered],
            false,
            &held,
            &BACKOFF,
            || 0.0,
        );
        assert_eq!(ids(&decision, &rows), vec![2]);
        assert_eq!(decision.left_pending, 1);
        assert!(decision.held_keys.contains(b"a".as_slice()));
        assert!(!decision.held_keys.contains(b"b".as_slice()));
    }

    #[test]
    fn a_retrying_row_passes_its_key_on_to_the_next_batch() {
        let rows = [row(1, Some("a"))];
        let decision = decide(
            &rows,
            &[failed(Disposition::Retry)],
            false,
            &HashSet::new(),
            &BACKOFF,
            || 0.0,
        );
        assert!(decision.held_keys.contains(b"a".as_slice()));
    }

    #[test]
    fn an_unconfirmed_delivery_is_sent_again_and_holds_its_key() {
        let rows = [row(1, Some("a")), row(2, Some("a")), row(3, Some("b"))];
        let deliveries = [
            Delivery::Unconfirmed,
            Delivery::Delivered,
            Delivery::Delivered,
        ];
        let decision = decide(&rows, &deliveries, false, &HashSet::new(), &BACKOFF, || 0.0);
        assert_eq!(ids(&decision, &rows), vec![3]);
        assert!(decision.failures.is_empty(), "no attempt is counted");
        assert_eq!(decision.left_pending, 2);
        assert_eq!(decision.failure_reasons, vec![FailureReason::Unconfirmed]);
    }

    #[test]
    fn a_row_held_back_before_sending_stays_pending_and_holds_its_key() {
        // Row 1 was refused as final (invalid headers) before sending, so
        // rows 2 and 3 of its key were never sent.
        let rows = [row(1, Some("a")), row(2, Some("a")), row(3, Some("a"))];
        let deliveries = [
            failed(Disposition::Final),
            Delivery::HeldBack,
            Delivery::HeldBack,
        ];
        let decision = decide(&rows, &deliveries, false, &HashSet::new(), &BACKOFF, || 0.0);
        assert!(decision.published.is_empty());
        assert_eq!(
            decision.failures.len(),
            1,
            "only the refused row counts an attempt"
        );
        assert!(decision.failures[0].is_final);
        assert_eq!(decision.left_pending, 2);
        assert_eq!(decision.failure_reasons, vec![FailureReason::Other]);
        assert!(decision.held_keys.contains(b"a".as_slice()));
    }

    #[test]
    fn long_errors_are_truncated_on_a_character_boundary() {
        let text = "é".repeat(600);
        let short = truncate(&text, 1_001);
        assert!(short.len() <= 1_004);
        assert!(short.ends_with('…'));
    }
}
