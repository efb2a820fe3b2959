//! Summary log lines, in the spirit of Debezium's "N records sent during
//! previous 00:01:00": one info line per interval when anything changed
//! (published per topic, retried, dead, pending, oldest pending age), and one
//! at exit, over every table the process serves.
//!
//! Guarantees: read from the metrics the loop already keeps, so the lines
//! and `/metrics` always agree; a quiet relay logs nothing.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::observe::metrics::MetricFamilies;
use crate::serve::shutdown::Shutdown;

/// Counter totals at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub published: BTreeMap<String, u64>,
    pub retried: u64,
    pub dead: u64,
}

impl Totals {
    /// The totals of every table the process served.
    pub fn read_all(families: &MetricFamilies) -> Self {
        let (published, retried, dead) = families.totals();
        Totals {
            published,
            retried,
            dead,
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Totals) -> Totals {
        let published = self
            .published
            .iter()
            .map(|(topic, n)| {
                (
                    topic.clone(),
                    n - earlier.published.get(topic).copied().unwrap_or(0),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        Totals {
            published,
            retried: self.retried - earlier.retried,
            dead: self.dead - earlier.dead,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.published.is_empty() && self.retried == 0 && self.dead == 0
    }

    pub fn published_total(&self) -> u64 {
        self.published.values().sum()
    }
}

/// "1,200 published (orders 1,000, payments 200), 3 retried, 0 dead".
pub fn describe(totals: &Totals) -> String {
    let mut text = format!("{} published", totals.published_total());
    if !totals.published.is_empty() {
        let topics: Vec<String> = totals
            .published
            .iter()
            .map(|(topic, n)| format!("{topic} {n}"))
            .collect();
        let _ = write!(text, " ({})", topics.join(", "));
    }
    let _ = write!(text, ", {} retried, {} dead", totals.retried, totals.dead);
    text
}

/// Every `interval`, log what changed since the last line (nothing if
/// nothing did), over every table the process serves: one line, not one per
/// table.
pub async fn log_periodically(
    families: Arc<MetricFamilies>,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    let mut last = Totals::read_all(&families);
    loop {
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let now = Totals::read_all(&families);
        let delta = now.since(&last);
        if !delta.is_empty() {
            let (pending, oldest) = families.backlog_total();
            tracing::info!(
                pending,
                oldest_pending_age_seconds = oldest,
                "during the last {}s: {}",
                interval.as_secs(),
                describe(&delta)
            );
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_names_topics_and_counts_only_what_changed() {
        let before = Totals {
            published: [("orders".into(), 10), ("payments".into(), 5)].into(),
            retried: 1,
            dead: 0,
        };
        let after = Totals {
            published: [("orders".into(), 1_010), ("payments".into(), 5)].into(),
            retried: 4,
            dead: 2,
        };
        let delta = after.since(&before);
        assert_eq!(
            describe(&delta),
            "1000 published (orders 1000), 3 retried, 2 dead"
        );
        assert!(after.since(&after).is_empty());
    }

    #[test]
    fn totals_come_from_the_metrics_of_every_table() {
        let families = MetricFamilies::new(crate::observe::metrics::TableSeries::PerTable);
        let (orders, billing) = (
            families.for_table("a.outbox"),
            families.for_table("b.outbox"),
        );
        orders.published("orders").inc_by(7);
        billing.published("orders").inc_by(3);
        billing.published("invoices").inc();
        orders.dead_lettered.inc();
        billing.retries_scheduled.inc_by(2);
        let totals = Totals::read_all(&families);
        assert_eq!(totals.published["orders"], 10);
        assert_eq!(totals.published_total(), 11);
        assert_eq!((totals.retried, totals.dead), (2, 1));
    }
}
