//! Liveness and readiness state: is PostgreSQL reachable, is the sink reachable,
//! is the relay stopping, per table, and for `/readyz` over every table
//! ([`HealthBoard`]). State changes are logged once, at info or warn,
//! rather than on every failed attempt, and once for all the tables that
//! share the database (or the sink), not once per table.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::observe::metrics::Metrics;
use crate::sinks::Profile;

/// How many of the tables sharing a service see it down: the first to see
/// it go down says so, the last to see it back says that.
#[derive(Debug, Default)]
pub struct Outage {
    down: AtomicUsize,
}

impl Outage {
    fn went_down(&self) -> bool {
        self.down.fetch_add(1, Ordering::SeqCst) == 0
    }

    fn came_back(&self) -> bool {
        self.down.fetch_sub(1, Ordering::SeqCst) == 1
    }
}

/// A batch waiting longer than this for its acks means nothing is being
/// sent, whatever a metadata probe says. Acks normally take milliseconds.
const ACKS_OVERDUE: Duration = Duration::from_secs(5);

pub struct Health {
    database: AtomicBool,
    /// The server answers but refuses the relay's statements.
    database_rejecting: AtomicBool,
    sink: AtomicBool,
    metrics: Arc<Metrics>,
    database_outage: Arc<Outage>,
    sink_outage: Arc<Outage>,
    /// How the sink is named in what readiness and the logs say.
    profile: &'static Profile,
}

impl Health {
    /// A table's health sharing no outage with another.
    #[cfg(test)]
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self::sharing(
            metrics,
            Arc::default(),
            Arc::default(),
            &crate::sinks::kafka::KAFKA,
        )
    }

    /// A table's health, whose outages of the database and of the sink
    /// (named by `profile`) are said once with the other tables that share
    /// them. Starts as reachable: a table is only served after its checks
    /// passed.
    pub fn sharing(
        metrics: Arc<Metrics>,
        database: Arc<Outage>,
        sink: Arc<Outage>,
        profile: &'static Profile,
    ) -> Self {
        metrics.database_up.set(1);
        metrics.kafka_up.set(1);
        Health {
            database: AtomicBool::new(true),
            database_rejecting: AtomicBool::new(false),
            sink: AtomicBool::new(true),
            metrics,
            database_outage: database,
            sink_outage: sink,
            profile,
        }
    }

    pub fn database_ok(&self) {
        if !self.database.swap(true, Ordering::SeqCst) && self.database_outage.came_back() {
            tracing::info!("PostgreSQL is reachable again");
        }
        self.metrics.database_up.set(1);
    }

    /// The relay's statements ran through a whole turn of the loop.
    pub fn database_accepts(&self) {
        if self.database_rejecting.swap(false, Ordering::SeqCst) {
            tracing::info!("PostgreSQL accepts the relay's statements again");
        }
    }

    /// The server answered with an error for a statement: it is reachable,
    /// so `outbox_database_up` stays 1, but the relay cannot make progress.
    pub fn database_rejected(&self, error: &dyn std::fmt::Display) {
        if !self.database_rejecting.swap(true, Ordering::SeqCst) {
            tracing::error!(%error, "PostgreSQL rejects the relay's statement; rows stay pending; retrying with backoff");
        } else {
            tracing::debug!(%error, "PostgreSQL still rejects the relay's statement");
        }
    }

    pub fn database_failed(&self, error: &dyn std::fmt::Display) {
        if self.database.swap(false, Ordering::SeqCst) && self.database_outage.went_down() {
            tracing::warn!(%error, "PostgreSQL is unreachable; retrying with backoff");
        } else {
            tracing::debug!(%error, "PostgreSQL still unreachable");
        }
        self.metrics.database_up.set(0);
    }

    /// How the sink is named.
    pub fn profile(&self) -> &'static Profile {
        self.profile
    }

    pub fn sink_ok(&self) {
        if !self.sink.swap(true, Ordering::SeqCst) && self.sink_outage.came_back() {
            tracing::info!("{} is reachable again", self.profile.service);
        }
        self.metrics.kafka_up.set(1);
    }

    pub fn sink_failed(&self, error: &dyn std::fmt::Display) {
        let service = self.profile.service;
        if self.sink.swap(false, Ordering::SeqCst) && self.sink_outage.went_down() {
            tracing::warn!(%error, "{}", self.profile.outage);
        } else {
            tracing::debug!(%error, "{service} still unreachable");
        }
        self.metrics.kafka_up.set(0);
    }

    /// `None` when ready, otherwise what is wrong. (Stopping is the
    /// process's: [`HealthBoard::stopping`].)
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if !self.database.load(Ordering::SeqCst) {
            Some("database unreachable")
        } else if self.database_rejecting.load(Ordering::SeqCst) {
            Some("PostgreSQL rejects the relay's statements")
        } else if !self.sink.load(Ordering::SeqCst) {
            Some(self.profile.unreachable)
        } else if self.metrics.open_claims.oldest_age(Instant::now()) > ACKS_OVERDUE {
            // A metadata probe can succeed on one connection while sends
            // wait on another (e.g. in reconnect backoff after a broker
            // restart): readiness follows the data path too.
            Some("the sink answers, but a batch has waited over 5 s for its acks")
        } else {
            None
        }
    }
}

impl Drop for Health {
    /// A table released while it saw an outage no longer counts towards it.
    fn drop(&mut self) {
        if !self.database.load(Ordering::SeqCst) {
            self.database_outage.came_back();
        }
        if !self.sink.load(Ordering::SeqCst) {
            self.sink_outage.came_back();
        }
    }
}

/// The health of every table the process serves, for `/readyz`: ready when
/// each table is, and the process is not stopping.
#[derive(Default)]
pub struct HealthBoard {
    tables: std::sync::Mutex<std::collections::BTreeMap<String, Arc<Health>>>,
    stopping: AtomicBool,
    /// The sink is one service for every table.
    pub sink_outage: Arc<Outage>,
}

impl HealthBoard {
    pub fn add(&self, table: &str, health: Arc<Health>) {
        self.lock().insert(table.to_owned(), health);
    }

    pub fn remove(&self, table: &str) {
        self.lock().remove(table);
    }

    /// Apply `visit` to every table's health.
    pub fn each(&self, visit: impl Fn(&Health)) {
        for health in self.lock().values() {
            visit(health);
        }
    }

    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// `None` when ready, otherwise what is wrong (and with which table).
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.stopping.load(Ordering::SeqCst) {
            return Some("shutting down".to_owned());
        }
        let tables = self.lock();
        let mut reasons = tables
            .iter()
            .filter_map(|(table, health)| Some((table, health.not_ready_reason()?)));
        let (table, reason) = reasons.next()?;
        let more = reasons.count();
        Some(match (tables.len(), more) {
            (1, _) => reason.to_owned(),
            (_, 0) => format!("{reason} (table {table})"),
            (_, more) => format!("{reason} (table {table} and {more} more)"),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Arc<Health>>> {
        self.tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_waiting_long_for_its_acks_makes_the_table_not_ready() {
        let metrics = Arc::new(Metrics::new("t"));
        let health = Health::new(Arc::clone(&metrics));
        let recent = metrics.open_claims.open(Instant::now());
        assert_eq!(health.not_ready_reason(), None);
        let stuck = metrics
            .open_claims
            .open(Instant::now() - ACKS_OVERDUE - Duration::from_secs(1));
        let reason = health.not_ready_reason().unwrap_or_default();
        assert!(reason.contains("waited over 5 s for its acks"), "{reason}");
        drop((recent, stuck));
        assert_eq!(health.not_ready_reason(), None);
    }
}
