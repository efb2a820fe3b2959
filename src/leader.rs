//! Leadership among the replicas that serve one table: the one that holds a
//! session-level advisory lock claims; the others, connected and ready, try
//! for the same lock every 200 ms, and one of them takes over once the server
//! released it (the leader's session ended).
//!
//! Guarantees: a relay claims only while it believes it leads, and stops
//! believing the moment it sees its lock session end. Its claims also carry a
//! [`Fence`] (the lock session's pid and the lock's key) that the claim
//! checks on the server, so once that session is gone (and another replica
//! may hold the lock) it claims nothing, even before it notices. Batches it
//! claimed just before keep their row locks, and the claim's own per-key rule
//! — a row locked elsewhere holds its key back — keeps order through that
//! overlap. Behind a transaction-mode pooler session
//! locks do not hold, so election is off there and every replica claims.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::types::Type;

use crate::db::{Database, Fence};
use crate::error::{Error, ErrorPath, Result};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::relay::backoff::OutageBackoff;
use crate::shutdown::Shutdown;

/// How often a standby tries for the lock: the bound on failover after the
/// leader's session ended.
const STANDBY_RETRY: Duration = Duration::from_millis(200);

/// Whether this relay may claim, and the fence its claims carry. Shared by
/// the loop and the election.
#[derive(Clone)]
pub struct Leadership {
    state: Arc<Mutex<Role>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Election is off: claim, unfenced.
    Always,
    StandingBy,
    Leading(Fence),
}

impl Leadership {
    /// Every replica claims (election off).
    pub fn always() -> Self {
        Self::with(Role::Always)
    }

    /// Claims only once [`contend`] won the lock.
    pub fn elected() -> Self {
        Self::with(Role::StandingBy)
    }

    fn with(role: Role) -> Self {
        Leadership {
            state: Arc::new(Mutex::new(role)),
        }
    }

    fn role(&self) -> Role {
        *self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn is_leader(&self) -> bool {
        self.role() != Role::StandingBy
    }

    /// What this relay's claims must prove on the server; `None` when
    /// election is off.
    pub fn fence(&self) -> Option<Fence> {
        match self.role() {
            Role::Leading(fence) => Some(fence),
            Role::Always | Role::StandingBy => None,
        }
    }

    fn set(&self, leading: Option<Fence>, metrics: &Metrics) {
        let role = leading.map_or(Role::StandingBy, Role::Leading);
        *self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = role;
        metrics.role.set(i64::from(leading.is_some()));
    }
}

/// Hold or wait for the table's lock until shutdown, reconnecting as needed.
/// `wakeup` is notified on winning, so an idle loop claims at once.
pub async fn contend(
    database: Database,
    leadership: Leadership,
    observers: (Arc<Metrics>, Arc<Health>),
    wakeup: Arc<Notify>,
    mut shutdown: Shutdown,
) {
    let (metrics, health) = observers;
    let mut backoff = OutageBackoff::new(Duration::from_millis(100), Duration::from_millis(500));
    loop {
        let held = hold(
            &database,
            &leadership,
            (&metrics, &health),
            &wakeup,
            &mut backoff,
        );
        let ended = tokio::select! {
            () = shutdown.requested() => return,
            ended = held => ended,
        };
        // A standby that cannot reach the database is not ready either: its
        // loop, claiming nothing, would never find out.
        if let Err(error) = &ended {
            if error.path() == ErrorPath::DatabaseUnreachable {
                health.database_failed(error);
            }
        }
        let reason = ended.err().map(|e| e.to_string()).unwrap_or_default();
        if leadership.is_leader() {
            tracing::warn!(error = %reason, "lost the leadership of this table; claiming stops until it is won again");
        } else {
            tracing::debug!(error = %reason, "cannot wait for the leadership");
        }
        leadership.set(None, &metrics);
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// One session: wait for the lock, then hold it until the session ends.
/// Always ends in an error (the session ended).
async fn hold(
    database: &Database,
    leadership: &Leadership,
    observers: (&Metrics, &Health),
    wakeup: &Notify,
    backoff: &mut OutageBackoff,
) -> Result<()> {
    let (metrics, health) = observers;
    let (client, connection) = database.connect_dedicated().await?;
    health.database_ok();
    let mut driver = tokio::spawn(connection);
    let lost = |action| move |e: tokio_postgres::Error| Error::database(action, &e);
    let sql = database.sql();
    client
        .batch_execute(&sql.leader_session)
        .await
        .map_err(lost("preparing the leader session"))?;
    backoff.reset();
    let quoted = database.table().quoted();
    let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] = [(&quoted, Type::TEXT)];
    let fence = loop {
        let tried = client.query_typed(&sql.leader_lock.text, &params);
        let tried = tokio::select! {
            tried = tried => tried.map_err(lost("trying for the leadership"))?,
            _ = &mut driver => return Err(session_ended()),
        };
        if let Some(row) = tried.first().filter(|row| row.get::<_, bool>("won")) {
            break Fence {
                pid: row.get("pid"),
                lock_key: row.get("key"),
            };
        }
        tokio::select! {
            () = tokio::time::sleep(STANDBY_RETRY) => {}
            _ = &mut driver => return Err(session_ended()),
        }
    };
    leadership.set(Some(fence), metrics);
    wakeup.notify_one();
    tracing::info!(table = %database.table(), "this relay leads the table; other replicas stand by");
    let _ = (&mut driver).await;
    drop(client);
    Err(session_ended())
}

fn session_ended() -> Error {
    Error::Database {
        action: "holding the leadership",
        reason: "the session ended".to_owned(),
    }
}
