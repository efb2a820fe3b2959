//! One source: a database, its pool (shared by every table served there),
//! its one LISTEN session and one election session, and the tables it
//! serves, named or found by a pattern.
//!
//! Guarantees: connections to a database are bounded by its pool size plus
//! two (LISTEN, election), whatever the number of tables. A pattern is
//! looked up again every discovery interval, when `migrate` announces a
//! table and when a served table is found dropped: a new table is served
//! from then on, a dropped one released (said once). A table two entries
//! name is served once, by the first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::file::{Source, TableEntry};
use crate::config::{Election, OnPublish, Pooler};
use crate::error::{Error, Result};
use crate::serve::leader::{self, Elector};
use crate::serve::listener::{self, Channels};
use crate::source::table::TableName;
use crate::source::table_pattern::TableSelector;
use crate::source::Database;

use super::plan::table_config;
use super::table::{Checked, SourceParts, TableRelay};
use super::Shared;

pub(crate) struct SourceRuntime {
    pub source: Source,
    database: Database,
    pub parts: SourceParts,
    /// Statements run unnamed: the source serves a pattern.
    unnamed: bool,
    tables: BTreeMap<String, TableRelay>,
    /// Checked at start-up, served from [`launch`](Self::launch) on.
    checked: Vec<Checked>,
    /// Tables found that could not be served, with what was last said.
    refused: BTreeMap<String, String>,
    tasks: Vec<JoinHandle<()>>,
}

impl SourceRuntime {
    /// Open the pool (the LISTEN and election sessions open at
    /// [`launch`](Self::launch)).
    pub fn open(source: Source, shared: &Shared) -> Result<Self> {
        let config = &shared.config;
        let database = source
            .open_pool(source.pool_size)?
            .delete_on_publish(config.on_publish == OnPublish::Delete);
        let direct = source.database.pooler == Pooler::None;
        let elector = (config.election == Election::AdvisoryLock && direct)
            .then(|| Arc::new(Elector::default()));
        let channels = (!config.no_listen && direct).then(|| Arc::new(Channels::default()));
        let rediscover = channels.as_ref().map_or_else(
            || Arc::new(Notify::new()),
            |c| Arc::clone(&c.tables_announced),
        );
        let unnamed = source.tables.iter().any(|t| t.selector.is_pattern());
        Ok(SourceRuntime {
            source,
            database,
            parts: SourceParts {
                elector,
                channels,
                rediscover,
                database_outage: Arc::default(),
            },
            unnamed,
            tables: BTreeMap::new(),
            checked: Vec::new(),
            refused: BTreeMap::new(),
            tasks: Vec::new(),
        })
    }

    /// `(database, table, where it was named)` of the tables checked at
    /// start-up.
    pub fn checked_tables(&self) -> Vec<(String, String, String)> {
        self.checked
            .iter()
            .map(|checked| {
                (
                    self.database.target().to_owned(),
                    checked.qualified(),
                    format!("source {}", self.source.name),
                )
            })
            .collect()
    }

    /// Serve the tables checked at start-up and open the LISTEN and
    /// election sessions, once every source checked out (nothing runs for a
    /// relay that fails its start-up checks).
    pub fn launch(&mut self, shared: &Shared) {
        for checked in std::mem::take(&mut self.checked) {
            self.launch_table(shared, checked);
        }
        if let Some(elector) = &self.parts.elector {
            self.tasks.push(tokio::spawn(leader::contend(
                self.database.clone(),
                Arc::clone(elector),
                shared.shutdown.clone(),
            )));
        }
        if let Some(channels) = &self.parts.channels {
            self.tasks.push(tokio::spawn(listener::listen_for_inserts(
                self.database.clone(),
                Arc::clone(channels),
                shared.shutdown.clone(),
            )));
        }
    }

    pub fn has_patterns(&self) -> bool {
        self.unnamed
    }

    pub fn table_count(&self) -> usize {
        self.tables.len()
    }

    /// Check the named tables and what the patterns match now. At start-up,
    /// any table that cannot be served is an error, and so is a table two
    /// entries name.
    pub async fn check(&mut self, shared: &Shared) -> Result<()> {
        let found = self.resolve(true).await?;
        for found in found.into_values() {
            let entry = self.source.tables[found.entry].clone();
            let checked = self
                .check_table(shared, &entry, &found.table, found.from_pattern)
                .await?;
            self.checked.push(checked);
        }
        Ok(())
    }

    /// Every table the entries name now, with the entry that serves it.
    /// `strict`: a table two entries name is an error (else the first wins,
    /// said once).
    async fn resolve(&mut self, strict: bool) -> Result<BTreeMap<String, Found>> {
        let resolved = resolve(&self.database, &self.source, strict).await?;
        for pattern in resolved.empty_patterns.iter().filter(|_| strict) {
            tracing::warn!(pattern = %pattern, source = %self.source.name, "the pattern matches no table yet; tables created later are served within the discovery interval");
        }
        for (table, reason) in resolved.refused {
            self.say_refused(&table, &reason);
        }
        Ok(resolved.found)
    }

    async fn check_table(
        &self,
        shared: &Shared,
        entry: &TableEntry,
        table: &TableName,
        from_pattern: bool,
    ) -> Result<Checked> {
        let config = table_config(&shared.config, &self.source, entry, table);
        let layout = entry.layout.layout()?;
        let database = self
            .database
            .for_table(table, layout, self.unnamed)
            .delete_on_publish(self.database.deletes_published());
        TableRelay::check(config, database, from_pattern, &shared.sink_settings).await
    }

    /// Serve a table found while running.
    async fn serve(
        &mut self,
        shared: &Shared,
        entry: &TableEntry,
        table: &TableName,
    ) -> Result<()> {
        let checked = self.check_table(shared, entry, table, true).await?;
        tracing::info!(table = %checked.qualified(), source = %self.source.name, "serving a new table the pattern {} found", entry.selector);
        self.launch_table(shared, checked);
        Ok(())
    }

    fn launch_table(&mut self, shared: &Shared, checked: Checked) {
        let relay = TableRelay::launch(shared, &self.parts, checked);
        self.refused.remove(&relay.qualified);
        self.tables.insert(relay.qualified.clone(), relay);
    }

    /// Look the patterns up again: serve the new tables, release the
    /// dropped ones.
    pub async fn rediscover(&mut self, shared: &Shared) {
        let found = match self.resolve(false).await {
            Ok(found) => found,
            Err(error) => {
                tracing::debug!(%error, source = %self.source.name, "cannot look the table patterns up; trying again later");
                return;
            }
        };
        let present: BTreeSet<&String> = found.keys().collect();
        let gone: Vec<String> = self
            .tables
            .iter()
            .filter(|(name, relay)| relay.from_pattern && !present.contains(*name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(relay) = self.tables.remove(&name) {
                let outcome = relay
                    .stop(shared, &self.parts, shared.config.shutdown_timeout)
                    .await;
                tracing::info!(table = %name, source = %self.source.name, "the table is gone; released it");
                if let Err(error) = outcome {
                    tracing::debug!(%error, table = %name, "the released table's loop ended with an error");
                }
            }
        }
        for (name, found) in found {
            if !found.from_pattern || self.tables.contains_key(&name) {
                continue;
            }
            let entry = self.source.tables[found.entry].clone();
            if let Err(error) = self.serve(shared, &entry, &found.table).await {
                self.say_refused(&name, &error.to_string());
            }
        }
    }

    /// Say once (while it lasts) why a table found is not served.
    fn say_refused(&mut self, table: &str, reason: &str) {
        if self.refused.get(table).map(String::as_str) != Some(reason) {
            tracing::error!(table, source = %self.source.name, reason, "a table the pattern found is not served (said once while it lasts)");
            self.refused.insert(table.to_owned(), reason.to_owned());
        }
    }

    /// Stop every table (their batches get up to `timeout`) and the
    /// source's sessions. Returns the first loop's error.
    pub async fn stop(mut self, shared: &Shared, timeout: Duration) -> Result<()> {
        let tables = std::mem::take(&mut self.tables);
        let parts = &self.parts;
        let stops = tables
            .into_values()
            .map(|relay| relay.stop(shared, parts, timeout));
        let outcomes = futures_util::future::join_all(stops).await;
        for task in &self.tasks {
            task.abort();
        }
        outcomes.into_iter().collect()
    }
}

/// A table an entry names now.
pub(crate) struct Found {
    pub table: TableName,
    /// Index of the entry in the source.
    pub entry: usize,
    pub from_pattern: bool,
}

/// What a source's entries name now.
pub(crate) struct Resolved {
    /// By name (schema-qualified for a pattern's tables).
    pub found: BTreeMap<String, Found>,
    /// Patterns that match no table yet.
    pub empty_patterns: Vec<String>,
    /// Tables found that cannot be served, and why.
    pub refused: Vec<(String, String)>,
}

/// The tables `source`'s entries name now in `database`. `strict`: a table
/// two entries name is an error (otherwise the first entry keeps it and
/// the second's claim is refused).
pub(crate) async fn resolve(
    database: &Database,
    source: &Source,
    strict: bool,
) -> Result<Resolved> {
    let mut resolved = Resolved {
        found: BTreeMap::new(),
        empty_patterns: Vec::new(),
        refused: Vec::new(),
    };
    for (index, entry) in source.tables.iter().enumerate() {
        let (tables, from_pattern) = match &entry.selector {
            TableSelector::Name(name) => (vec![name.clone()], false),
            TableSelector::Pattern(pattern) => {
                let mut tables = Vec::new();
                for table in database.discover(pattern).await? {
                    match table {
                        Ok(table) => tables.push(table),
                        Err(name) => resolved.refused.push((
                            name,
                            "its name needs quoting the relay does not do (letters, digits and underscores only)".to_owned(),
                        )),
                    }
                }
                if tables.is_empty() {
                    resolved.empty_patterns.push(describe_entry(entry));
                }
                (tables, true)
            }
        };
        for table in tables {
            let name = table.to_string();
            if let Some(first) = resolved.found.get(&name) {
                let message = format!(
                    "table {name} is named by two entries of source {} ({} and {}); name each table once",
                    source.name,
                    describe_entry(&source.tables[first.entry]),
                    describe_entry(entry)
                );
                if strict {
                    return Err(Error::InvalidConfig(message));
                }
                resolved.refused.push((name, message));
                continue;
            }
            resolved.found.insert(
                name,
                Found {
                    table,
                    entry: index,
                    from_pattern,
                },
            );
        }
    }
    Ok(resolved)
}

/// Refuse a table of one database that two sources name: `tables` holds
/// `(database, table, where it was named)`.
pub(crate) fn refuse_shared_tables(tables: Vec<(String, String, String)>) -> Result<()> {
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    for (database, table, named) in tables {
        if let Some(first) = seen.get(&(database.clone(), table.clone())) {
            if *first != named {
                return Err(Error::InvalidConfig(format!(
                    "table {table} in {database} is named by two sources ({first} and {named}); name each table once"
                )));
            }
        }
        seen.insert((database, table), named);
    }
    Ok(())
}

/// An entry for messages: where it was written.
fn describe_entry(entry: &TableEntry) -> String {
    match entry.line {
        0 => format!("--table {}", entry.selector),
        line => format!("{} at line {line}", entry.selector),
    }
}
