//! A served table's runtime handles, as one value: its relay loop and the
//! monitors beside it each hold a clone (every handle in it is shared).

use std::sync::Arc;

use tokio::sync::Notify;

use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::serve::claim_gate::ClaimGate;
use crate::serve::leader::Leadership;
use crate::serve::shutdown::Shutdown;

#[derive(Clone)]
pub struct TableContext {
    /// The table's series.
    pub metrics: Arc<Metrics>,
    /// The table's part of `/readyz`.
    pub health: Arc<Health>,
    /// Notified when rows may be waiting (NOTIFY, a new leader).
    pub wakeup: Arc<Notify>,
    /// Whether this replica claims the table.
    pub leadership: Leadership,
    /// Lets a partition drop run between claims.
    pub gate: ClaimGate,
    /// Requested when the table stops being served.
    pub shutdown: Shutdown,
}
