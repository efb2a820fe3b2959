//! Liveness and readiness state: is PostgreSQL reachable, is Kafka reachable,
//! is the relay stopping. State changes are logged once, at info or warn,
//! rather than on every failed attempt.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::metrics::Metrics;

pub struct Health {
    database: AtomicBool,
    /// The server answers but refuses the relay's statements.
    database_rejecting: AtomicBool,
    kafka: AtomicBool,
    stopping: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Health {
    /// Starts as reachable: `run` only starts serving after both checks passed.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        metrics.database_up.set(1);
        metrics.kafka_up.set(1);
        Health {
            database: AtomicBool::new(true),
            database_rejecting: AtomicBool::new(false),
            kafka: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            metrics,
        }
    }

    pub fn database_ok(&self) {
        if !self.database.swap(true, Ordering::SeqCst) {
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
        if self.database.swap(false, Ordering::SeqCst) {
            tracing::warn!(%error, "PostgreSQL is unreachable; retrying with backoff");
        } else {
            tracing::debug!(%error, "PostgreSQL still unreachable");
        }
        self.metrics.database_up.set(0);
    }

    pub fn kafka_ok(&self) {
        if !self.kafka.swap(true, Ordering::SeqCst) {
            tracing::info!("Kafka is reachable again");
        }
        self.metrics.kafka_up.set(1);
    }

    pub fn kafka_failed(&self, error: &dyn std::fmt::Display) {
        if self.kafka.swap(false, Ordering::SeqCst) {
            tracing::warn!(%error, "no Kafka broker answers; rows stay pending until one does");
        } else {
            tracing::debug!(%error, "Kafka still unreachable");
        }
        self.metrics.kafka_up.set(0);
    }

    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// `None` when ready, otherwise what is wrong.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.stopping.load(Ordering::SeqCst) {
            Some("shutting down")
        } else if !self.database.load(Ordering::SeqCst) {
            Some("database unreachable")
        } else if self.database_rejecting.load(Ordering::SeqCst) {
            Some("PostgreSQL rejects the relay's statements")
        } else if !self.kafka.load(Ordering::SeqCst) {
            Some("kafka unreachable")
        } else {
            None
        }
    }
}

/// The health of every table the process serves, for `/readyz`: ready when
/// each table is, and the process is not stopping.
#[derive(Default)]
pub struct HealthBoard {
    tables: std::sync::Mutex<std::collections::BTreeMap<String, Arc<Health>>>,
    stopping: AtomicBool,
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
        for health in self.lock().values() {
            health.stopping();
        }
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
