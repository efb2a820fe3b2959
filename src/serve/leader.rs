//! Leadership among the replicas that serve a table: the one that holds the
//! table's session-level advisory lock claims it; the others, connected and
//! ready, try for the same lock every 200 ms, and one of them takes over once
//! the server released it (the leader's session ended). One [`Elector`] per
//! database holds the locks of all its tables on one session, so the
//! connections stay bounded however many tables a relay serves.
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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::types::Type;

use crate::error::{Error, ErrorPath, Result};
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::relay::backoff::OutageBackoff;
use crate::serve::shutdown::Shutdown;
use crate::source::{Database, Fence};

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

    pub(crate) fn set(&self, leading: Option<Fence>, metrics: &Metrics) {
        let role = leading.map_or(Role::StandingBy, Role::Leading);
        *self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = role;
        metrics.role.set(i64::from(leading.is_some()));
    }
}

/// One table's stake in the election.
pub struct Candidate {
    pub leadership: Leadership,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Notified on winning, so an idle loop claims at once.
    pub wakeup: Arc<Notify>,
}

/// The tables of one database that elect a leader, and the session that
/// holds the locks this relay won.
#[derive(Default)]
pub struct Elector {
    /// By quoted table name: the lock's name.
    candidates: Mutex<BTreeMap<String, Candidate>>,
    /// Tables left while leading: their locks are given back on the session.
    released: Mutex<Vec<String>>,
    changed: Notify,
}

impl Elector {
    /// Stand for the leadership of `quoted_table` from now on.
    pub fn join(&self, quoted_table: String, candidate: Candidate) {
        lock(&self.candidates).insert(quoted_table, candidate);
        self.changed.notify_one();
    }

    /// Stop standing (the table is no longer served); a lock held for it is
    /// given back.
    pub fn leave(&self, quoted_table: &str) {
        if let Some(candidate) = lock(&self.candidates).remove(quoted_table) {
            if candidate.leadership.fence().is_some() {
                lock(&self.released).push(quoted_table.to_owned());
            }
            candidate.leadership.set(None, &candidate.metrics);
        }
        self.changed.notify_one();
    }

    /// The tables still standing by.
    fn standing_by(&self) -> Vec<String> {
        lock(&self.candidates)
            .iter()
            .filter(|(_, c)| !c.leadership.is_leader())
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn each(&self, mut visit: impl FnMut(&str, &Candidate)) {
        for (name, candidate) in lock(&self.candidates).iter() {
            visit(name, candidate);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Hold or wait for the locks of the elector's tables until shutdown,
/// reconnecting as needed.
pub async fn contend(database: Database, elector: Arc<Elector>, mut shutdown: Shutdown) {
    let mut backoff = OutageBackoff::new(Duration::from_millis(100), Duration::from_millis(500));
    loop {
        let held = hold(&database, &elector, &mut backoff);
        let ended = tokio::select! {
            () = shutdown.requested() => return,
            ended = held => ended,
        };
        let reason = ended.err().map(|e| {
            // A standby that cannot reach the database is not ready either:
            // its loop, claiming nothing, would never find out.
            if e.path() == ErrorPath::DatabaseUnreachable {
                elector.each(|_, c| c.health.database_failed(&e));
            }
            e.to_string()
        });
        let mut lost = Vec::new();
        elector.each(|name, candidate| {
            if candidate.leadership.fence().is_some() {
                lost.push(name.to_owned());
            }
            candidate.leadership.set(None, &candidate.metrics);
        });
        lock(&elector.released).clear();
        let reason = reason.unwrap_or_default();
        if lost.is_empty() {
            tracing::debug!(error = %reason, "cannot wait for the leadership");
        } else {
            let which = match lost.len() {
                1 => "this table".to_owned(),
                n => format!("{n} tables"),
            };
            tracing::warn!(error = %reason, tables = %describe(&lost), "lost the leadership of {which}; claiming stops until it is won again");
        }
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// One session: try for the locks not yet held every [`STANDBY_RETRY`] (or
/// at once when a table joins), give back those of tables left, until the
/// session ends. Always ends in an error (the session ended).
async fn hold(database: &Database, elector: &Elector, backoff: &mut OutageBackoff) -> Result<()> {
    let (client, connection) = database.connect_dedicated().await?;
    elector.each(|_, c| c.health.database_ok());
    let mut driver = tokio::spawn(connection);
    let lost = |action| move |e: tokio_postgres::Error| Error::database(action, &e);
    let sql = database.sql();
    client
        .batch_execute(&sql.leader_session)
        .await
        .map_err(lost("preparing the leader session"))?;
    backoff.reset();
    loop {
        let released = std::mem::take(&mut *lock(&elector.released));
        for name in released {
            let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] =
                [(&name, Type::TEXT)];
            let unlocked = client.query_typed(&sql.leader_unlock.text, &params);
            tokio::select! {
                unlocked = unlocked => { unlocked.map_err(lost("giving up a table's leadership"))?; }
                _ = &mut driver => return Err(session_ended()),
            }
        }
        let names = elector.standing_by();
        if !names.is_empty() {
            let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] =
                [(&names, Type::TEXT_ARRAY)];
            let tried = client.query_typed(&sql.leader_lock.text, &params);
            let rows = tokio::select! {
                tried = tried => tried.map_err(lost("trying for the leadership"))?,
                _ = &mut driver => return Err(session_ended()),
            };
            won(elector, &rows);
        }
        tokio::select! {
            () = tokio::time::sleep(STANDBY_RETRY) => {}
            () = elector.changed.notified() => {}
            _ = &mut driver => return Err(session_ended()),
        }
    }
}

/// Take up the tables whose locks this session just won.
fn won(elector: &Elector, rows: &[tokio_postgres::Row]) {
    let mut taken = Vec::new();
    let candidates = lock(&elector.candidates);
    for row in rows.iter().filter(|row| row.get::<_, bool>("won")) {
        let name: String = row.get("name");
        let fence = Fence {
            pid: row.get("pid"),
            lock_key: row.get("key"),
        };
        match candidates.get(&name) {
            Some(candidate) => {
                candidate.leadership.set(Some(fence), &candidate.metrics);
                candidate.wakeup.notify_one();
                taken.push(name);
            }
            // Left while the lock was tried for: give it back.
            None => lock(&elector.released).push(name),
        }
    }
    drop(candidates);
    if !taken.is_empty() {
        let which = match taken.len() {
            1 => "the table".to_owned(),
            n => format!("{n} tables"),
        };
        tracing::info!(tables = %describe(&taken), "this relay leads {which}; other replicas stand by");
    }
}

/// A list of tables for a log line: all of a few, the count of many.
fn describe(tables: &[String]) -> String {
    const LISTED: usize = 5;
    if tables.len() <= LISTED {
        tables.join(", ")
    } else {
        format!(
            "{} and {} more",
            tables[..LISTED].join(", "),
            tables.len() - LISTED
        )
    }
}

fn session_ended() -> Error {
    Error::Database {
        action: "holding the leadership",
        reason: "the session ended".to_owned(),
    }
}
