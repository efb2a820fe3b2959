//! The one lock the relay's schema changes take: `migrate`, and the upkeep
//! of a partitioned table's partitions.
//!
//! Guarantees: a transaction-level advisory lock, so schema changes run one
//! at a time across every process and replica, and the lock ends with the
//! transaction that took it.

use deadpool_postgres::Object;

use super::queries::{self, MigrationLockParams};
use crate::error::{Error, Result};
use crate::source::sql::Sql;

/// The advisory lock key shared by every schema change ("outbox" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6f75_7462_6f78;

/// Take the lock (inside a transaction).
pub(super) async fn lock_migrations(connection: &Object, sql: &Sql) -> Result<()> {
    let lock = MigrationLockParams {
        key: MIGRATION_LOCK_KEY,
    };
    queries::migration_lock(connection, sql, lock)
        .await
        .map_err(|e| Error::database("taking the migration lock", &e))?;
    Ok(())
}
