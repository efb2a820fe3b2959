//! `migrate`: create or update the outbox schema.
//!
//! Guarantees: idempotent, and safe when several replicas run it at once:
//! everything happens in one transaction behind an advisory lock, and every
//! migration only creates what is missing.

use deadpool_postgres::Object;

use super::queries::{self, MigrationLockParams};
use super::Database;
use crate::error::{Error, Result};

/// Advisory lock key shared by every `migrate` run ("outbox" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6f75_7462_6f78;

/// What `migrate` should install beyond the table itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct MigrateOptions {
    /// Install the optional NOTIFY-on-insert trigger.
    pub notify_trigger: bool,
}

impl Database {
    /// Apply every migration (and the optional trigger) in one transaction.
    pub async fn migrate(&self, options: MigrateOptions) -> Result<Vec<&'static str>> {
        let connection = self.connection().await?;
        let applied = self.migrate_on(&connection, options).await;
        if applied.is_err() {
            // Its transaction may still be open: keep it out of the pool.
            let _ = Object::take(connection);
        }
        applied
    }

    async fn migrate_on(
        &self,
        connection: &Object,
        options: MigrateOptions,
    ) -> Result<Vec<&'static str>> {
        let fail = |e: tokio_postgres::Error| Error::database("migrating the schema", &e);
        let sql = self.sql();
        connection.batch_execute("BEGIN").await.map_err(fail)?;
        let lock = MigrationLockParams {
            key: MIGRATION_LOCK_KEY,
        };
        queries::migration_lock(connection, sql, lock)
            .await
            .map_err(fail)?;
        let mut applied = Vec::new();
        for (name, text) in &sql.migrations {
            connection.batch_execute(text).await.map_err(fail)?;
            applied.push(*name);
        }
        if options.notify_trigger {
            connection
                .batch_execute(&sql.notify_trigger)
                .await
                .map_err(fail)?;
            applied.push("notify_trigger");
        }
        connection.batch_execute("COMMIT").await.map_err(fail)?;
        Ok(applied)
    }
}
