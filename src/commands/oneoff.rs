//! The one-off operator commands: `migrate`, `status`, `dead`, `requeue`,
//! `prune`, `completions` and `man`.
//!
//! Guarantees: each prints what it did (or, with `--dry-run`, what it would
//! do) on stdout, progress on stderr; none prints a secret.

use std::io::IsTerminal;

use clap::CommandFactory;

use crate::config::cli::{
    Cli, ConfigCommand, DeadArgs, MigrateArgs, PruneArgs, RequeueArgs, StatusArgs,
};
use crate::config::DatabaseArgs;
use crate::config::SinkKind;
use crate::error::{Error, Result};
use crate::observe::status;
use crate::source::layout::{Layout, Preset};
use crate::source::queries::{self, OutboxListDeadParams, OutboxRequeueDeadParams};
use crate::source::{migration_sql, Database, MigrateOptions, RequeueSelection, TopicRule};

const TOOL_POOL_SIZE: usize = 1;

pub async fn migrate(args: MigrateArgs) -> Result<()> {
    let options = MigrateOptions {
        notify_trigger: args.notify_trigger,
        payload_type: args.payload_type,
        key_type: args.key_type,
        partition_by: args.partition_by,
        topic_rule: match args.sink {
            SinkKind::Kafka => TopicRule::Kafka,
            SinkKind::RabbitMq | SinkKind::Redis => TopicRule::RoutingKey,
            SinkKind::Nats => TopicRule::Subject,
        },
    };
    if args.adopt {
        return adopt(&args).await;
    }
    if args.config.is_some() || args.database.selector().is_pattern() {
        return super::tables::migrate(&args, options).await;
    }
    if args.database.layout.layout()? != Layout::preset(Preset::Relay) {
        return Err(Error::InvalidConfig(
            "--layout, --column, --header-column and --topic-template describe an existing table: add --adopt to adopt it".to_owned(),
        ));
    }
    if args.print_sql {
        let table = args.database.single_table()?;
        print!("{}", migration_sql(&table, options));
        return Ok(());
    }
    let database = args.database.open(TOOL_POOL_SIZE)?;
    let report = database.migrate(options).await?;
    database.announce().await?;
    let list = |items: &[String]| match items {
        [] => "nothing".to_owned(),
        items => items.join(", "),
    };
    if report.created.is_empty() {
        println!("outbox table {} is up to date", database.table());
    } else {
        println!("outbox table {} is migrated", database.table());
    }
    println!("created: {}", list(&report.created));
    println!("already in place: {}", list(&report.in_place));
    Ok(())
}

async fn adopt(args: &MigrateArgs) -> Result<()> {
    let database = args.database.open(TOOL_POOL_SIZE)?;
    let started = std::time::Instant::now();
    let report = database
        .adopt(args.notify_trigger, |step| eprintln!("adopt: {step}"))
        .await?;
    // The table must now read as the layout describes.
    let mut check = database.clone();
    check.check_statements().await?;
    let list = |items: &[String]| match items {
        [] => "none".to_owned(),
        items => items.join(", "),
    };
    println!(
        "outbox table {} adopted in {:.1}s",
        database.table(),
        started.elapsed().as_secs_f64()
    );
    println!("columns added: {}", list(&report.added_columns));
    println!("existing rows backfilled: {}", report.backfilled);
    println!("lock waits given way to writers: {}", report.lock_retries);
    Ok(())
}

/// Connect for a one-off command and check that the table exists.
async fn open_table(args: &DatabaseArgs) -> Result<Database> {
    let mut database = args.open(TOOL_POOL_SIZE)?;
    database.check().await?;
    Ok(database)
}

pub async fn status(args: StatusArgs) -> Result<()> {
    if args.config.is_some() || args.database.selector().is_pattern() {
        return super::tables::status(&args).await;
    }
    let database = open_table(&args.database).await?;
    let mut view = super::tables::view_of(&database).await?;
    view.table = database.table().to_string();
    if args.json {
        println!("{}", status::render_json(&view));
    } else {
        print!(
            "{}",
            status::render_text(&view, std::io::stdout().is_terminal())
        );
    }
    if args.check {
        if let Some(problem) = status::check(&view.backlog, args.max_lag) {
            return Err(Error::CheckFailed(problem));
        }
    }
    Ok(())
}

pub async fn dead(args: DeadArgs) -> Result<()> {
    let database = open_table(&args.database).await?;
    let client = database.connection().await?;
    let params = OutboxListDeadParams {
        topic: args.topic.as_deref(),
        limit: args.limit,
    };
    let rows = queries::outbox_list_dead(&client, database.sql(), params)
        .await
        .map_err(|e| Error::database("listing dead rows", &e))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("plain data serialises")
        );
    } else {
        print!("{}", status::render_dead(&rows));
    }
    Ok(())
}

pub async fn requeue(args: RequeueArgs) -> Result<()> {
    let database = open_table(&args.database).await?;
    let selection = if args.all {
        RequeueSelection::All
    } else if let Some(topic) = args.topic {
        RequeueSelection::Topic(topic)
    } else {
        RequeueSelection::Ids(args.ids)
    };
    if args.dry_run {
        let client = database.connection().await?;
        let params = OutboxRequeueDeadParams {
            ids: selection.ids(),
            topic: selection.topic(),
            limit: 0,
        };
        let count = queries::outbox_count_requeueable(&client, database.sql(), params)
            .await
            .map_err(|e| Error::database("counting dead rows", &e))?;
        println!("would requeue {count} dead rows to pending (dry run: nothing changed)");
        return Ok(());
    }
    let total = database
        .requeue_dead(&selection, |so_far| {
            eprintln!("requeued {so_far} rows so far…")
        })
        .await?;
    if total > 0 {
        println!("requeued {total} dead rows to pending");
        return Ok(());
    }
    println!(
        "requeued 0 dead rows: {}",
        why_none(&database, &selection).await?
    );
    Ok(())
}

/// Why `requeue` moved nothing: per id, or for the topic, or overall.
async fn why_none(database: &Database, selection: &RequeueSelection) -> Result<String> {
    let ids = match selection {
        RequeueSelection::All => return Ok("there are no dead rows".to_owned()),
        RequeueSelection::Topic(topic) => {
            return Ok(format!("topic {topic} has no dead rows"));
        }
        RequeueSelection::Ids(ids) => ids,
    };
    let client = database.connection().await?;
    let found = queries::outbox_status_of(&client, database.sql(), ids)
        .await
        .map_err(|e| Error::database("looking up rows", &e))?;
    let reasons: Vec<String> = ids
        .iter()
        .map(|id| match found.iter().find(|(found, _)| found == id) {
            None => format!("id {id}: no such row"),
            Some((_, status)) if status == "published" => format!("id {id}: already published"),
            Some((_, status)) => format!("id {id}: not dead ({status})"),
        })
        .collect();
    Ok(reasons.join("; "))
}

pub async fn prune(args: PruneArgs) -> Result<()> {
    let database = open_table(&args.database).await?;
    if args.dry_run {
        let client = database.connection().await?;
        let count = queries::outbox_count_prunable(&client, database.sql(), args.older_than)
            .await
            .map_err(|e| Error::database("counting published rows", &e))?;
        println!("would delete {count} published rows (dry run: nothing deleted)");
        return Ok(());
    }
    let rate = Some(args.max_rows_per_sec).filter(|r| *r > 0);
    let total = database
        .prune_published(args.older_than, rate, |so_far| {
            eprintln!("deleted {so_far} rows so far…")
        })
        .await?;
    println!("deleted {total} published rows");
    Ok(())
}

pub async fn config(command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Check { file, offline } => super::tables::check(&file, offline).await,
    }
}

pub fn completions(shell: clap_complete::Shell) {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "outbox-relay", &mut std::io::stdout());
}

pub fn man() -> Result<()> {
    clap_mangen::Man::new(Cli::command())
        .render(&mut std::io::stdout())
        .map_err(|e| Error::Internal(format!("cannot write the manual page: {e}")))
}
