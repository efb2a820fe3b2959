//! The one-off commands over several tables: `config check`, `migrate
//! --config` (or a pattern) and `status --config` (or a pattern). They find
//! the tables as `run` does ([`crate::serve::resolve`]).
//!
//! Guarantees: a mistake in the file is one line naming its line, exit 1; a
//! pattern that matches nothing is a warning (tenants may come later), not
//! an error; nothing printed holds a password.

use std::path::Path;

use crate::config::cli::{MigrateArgs, StatusArgs};
use crate::config::file::{ConfigFile, Source};
use crate::config::DatabaseArgs;
use crate::error::{Error, Result};
use crate::observe::status::{self, StatusView};
use crate::serve::{refuse_shared_tables, resolve, Resolved};
use crate::source::layout::{Layout, Preset};
use crate::source::queries;
use crate::source::table::TableName;
use crate::source::table_pattern::TableSelector;
use crate::source::{Database, MigrateOptions};

/// Connections per database for these commands.
const POOL_SIZE: usize = 2;

/// The sources a command works on: the file's, or the flags' one.
fn sources(config: Option<&Path>, database: &DatabaseArgs) -> Result<Vec<Source>> {
    match config {
        Some(path) => Ok(ConfigFile::load(path)?.sources),
        None => {
            let url = database.database_url.as_ref().ok_or_else(|| {
                Error::InvalidConfig(
                    "give --database-url (OUTBOX_DATABASE_URL) or --config FILE".to_owned(),
                )
            })?;
            Ok(vec![Source::from_flags(database, url, POOL_SIZE)?])
        }
    }
}

/// `config check FILE`.
pub async fn check(file: &Path, offline: bool) -> Result<()> {
    let loaded = ConfigFile::load(file)?;
    println!(
        "{}: {} sources; kafka brokers {}",
        file.display(),
        loaded.sources.len(),
        loaded
            .kafka_brokers
            .as_deref()
            .unwrap_or("(from --kafka-brokers)")
    );
    let mut report = CheckReport {
        file,
        problems: Vec::new(),
        named: Vec::new(),
    };
    for source in &loaded.sources {
        println!(
            "source {} (line {}, pool of {})",
            source.name, source.line, source.pool_size
        );
        if offline {
            for entry in &source.tables {
                println!("  {}  line {}", entry.selector, entry.line);
            }
            continue;
        }
        report.check_source(source).await?;
    }
    if let Err(error) = refuse_shared_tables(std::mem::take(&mut report.named)) {
        report.problems.push(format!("{}: {error}", file.display()));
    }
    match report.problems.as_slice() {
        [] => Ok(()),
        [one] => Err(Error::ConfigFile(one.clone())),
        [first, rest @ ..] => Err(Error::ConfigFile(format!(
            "{first} (and {} more problems)",
            rest.len()
        ))),
    }
}

/// What `tables check` found so far.
struct CheckReport<'a> {
    file: &'a Path,
    problems: Vec<String>,
    /// (database, table, where it is named), to find a table named twice.
    named: Vec<(String, String, String)>,
}

impl CheckReport<'_> {
    /// Check one source's tables against its database: names are found,
    /// patterns count their matches now.
    async fn check_source(&mut self, source: &Source) -> Result<()> {
        let file = self.file.display();
        let database = source.open_pool(POOL_SIZE)?;
        let resolved = match resolve(&database, source, true).await {
            Ok(resolved) => resolved,
            Err(error) => {
                self.problems
                    .push(format!("{file}:{}: {error}", source.line));
                return Ok(());
            }
        };
        for (index, entry) in source.tables.iter().enumerate() {
            let count = resolved.found.values().filter(|f| f.entry == index).count();
            match &entry.selector {
                TableSelector::Pattern(pattern) => {
                    println!("  {pattern}  line {}: {count} tables match now", entry.line);
                    if count == 0 {
                        eprintln!("warning: {file}:{}: pattern {pattern} matches no table yet; tables created later are served within the discovery interval", entry.line);
                    }
                }
                TableSelector::Name(name) => {
                    let layout = entry.layout.layout()?;
                    let mut table = database.for_table(name, layout, true);
                    match table.check().await {
                        Ok(()) => {
                            println!("  {}  line {}: found", table.qualified_name(), entry.line)
                        }
                        Err(error) => self
                            .problems
                            .push(format!("{file}:{}: {error}", entry.line)),
                    }
                }
            }
        }
        for (table, reason) in resolved.refused {
            eprintln!("warning: {file}: table {table} is not served: {reason}");
        }
        for (name, found) in &resolved.found {
            self.named.push((
                database.target().to_owned(),
                name.clone(),
                format!("line {}", source.tables[found.entry].line),
            ));
        }
        Ok(())
    }
}

/// `migrate --config FILE` (every table it names, every match of its
/// patterns), `migrate --config FILE --table NAME` (that table, in the
/// source whose entry names it), or `migrate --table PATTERN`.
pub async fn migrate(args: &MigrateArgs, options: MigrateOptions) -> Result<()> {
    let mut sources = sources(args.config.as_deref(), &args.database)?;
    if args.config.is_some() {
        if let Some(TableSelector::Name(table)) = &args.database.table {
            sources = source_naming(sources, table)?;
        }
    }
    let mut migrated = 0;
    for source in &sources {
        let database = source.open_pool(POOL_SIZE)?;
        let Resolved {
            found,
            empty_patterns,
            ..
        } = resolve(&database, source, false).await?;
        for pattern in empty_patterns {
            eprintln!(
                "warning: {pattern} matches no table in {}; nothing to migrate there",
                source.name
            );
        }
        for found in found.values() {
            let entry = &source.tables[found.entry];
            if entry.layout.layout()? != Layout::preset(Preset::Relay) {
                eprintln!(
                    "skipped {}: its entry describes an existing layout; adopt it with `outbox-relay migrate --adopt --table {}`",
                    found.table, found.table
                );
                continue;
            }
            let table = database.for_table(&found.table, Layout::preset(Preset::Relay), true);
            let report = table.migrate(options).await?;
            table.announce().await?;
            if report.created.is_empty() {
                println!(
                    "outbox table {} ({}) is up to date",
                    found.table, source.name
                );
            } else {
                println!(
                    "outbox table {} ({}) is migrated; created: {}",
                    found.table,
                    source.name,
                    report.created.join(", ")
                );
            }
            migrated += 1;
        }
    }
    println!("{migrated} tables migrated");
    Ok(())
}

/// The source (with only that entry) whose entry names `table`, for
/// `migrate --config FILE --table NAME`.
fn source_naming(sources: Vec<Source>, table: &TableName) -> Result<Vec<Source>> {
    let mut naming: Vec<Source> = sources
        .into_iter()
        .filter_map(|mut source| {
            let entry = source.tables.iter().find(|entry| match &entry.selector {
                TableSelector::Name(named) => named == table,
                TableSelector::Pattern(pattern) => {
                    pattern.matches(table.schema().unwrap_or_default(), table.name())
                }
            })?;
            let mut entry = entry.clone();
            entry.selector = TableSelector::Name(table.clone());
            source.tables = vec![entry];
            Some(source)
        })
        .collect();
    match naming.len() {
        1 => Ok(naming),
        0 => Err(Error::InvalidConfig(format!(
            "no entry of the config file names table {table} (by name or pattern); add it, or check the name"
        ))),
        _ => Err(Error::InvalidConfig(format!(
            "{} sources of the config file name table {table}: {}; keep it in one",
            naming.len(),
            naming
                .drain(..)
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `status --config FILE` or `status --table PATTERN`: a line per table,
/// the furthest behind first.
pub async fn status(args: &StatusArgs) -> Result<()> {
    let mut views = Vec::new();
    let sources = sources(args.config.as_deref(), &args.database)?;
    let several = sources.len() > 1;
    for source in sources {
        let database = source.open_pool(POOL_SIZE)?;
        let resolved = resolve(&database, &source, false).await?;
        for found in resolved.found.values() {
            let layout = source.tables[found.entry].layout.layout()?;
            let mut table = database.for_table(&found.table, layout, true);
            table.check().await?;
            let mut view = view_of(&table).await?;
            view.source = several.then(|| source.name.clone());
            views.push(view);
        }
    }
    status::sort_by_lag(&mut views);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&views).expect("plain data serialises")
        );
    } else {
        print!("{}", status::render_tables(&views));
    }
    if args.check {
        let problems: Vec<String> = views
            .iter()
            .filter_map(|v| {
                status::check(&v.backlog, args.max_lag).map(|p| format!("{}: {p}", v.table))
            })
            .collect();
        if !problems.is_empty() {
            return Err(Error::CheckFailed(problems.join("; ")));
        }
    }
    Ok(())
}

/// What `status` shows of one table.
pub async fn view_of(database: &Database) -> Result<StatusView> {
    let backlog = database.backlog().await?;
    let client = database.connection().await?;
    let (published, last_published_at) = queries::outbox_published_summary(&client, database.sql())
        .await
        .map_err(|e| Error::database("counting published rows", &e))?;
    Ok(StatusView {
        source: None,
        table: database.qualified_name(),
        backlog,
        published,
        last_published_at,
    })
}
