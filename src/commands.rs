//! What each subcommand does, from parsed arguments to printed output.
//! `run_relay` takes its shutdown trigger as a future so tests can stop it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::cli::{Command, DatabaseArgs, MigrateArgs, PruneArgs, RequeueArgs, StatusArgs};
use crate::config::RelayConfig;
use crate::db::{Database, MigrateOptions, RequeueSelection};
use crate::error::Result;
use crate::health::Health;
use crate::kafka::Publisher;
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::shutdown::Shutdown;
use crate::{http, listener, monitor, shutdown, status};

/// Connections: claims, backlog gauges, retention, spare for readiness.
const RELAY_POOL_SIZE: usize = 4;
const TOOL_POOL_SIZE: usize = 1;

pub async fn execute(command: Command) -> Result<()> {
    match command {
        Command::Migrate(args) => migrate(args).await,
        Command::Run(args) => {
            run_relay(args.into_config(), async {
                match shutdown::signal().await {
                    Ok(name) => tracing::info!(signal = name, "shutdown requested"),
                    Err(error) => tracing::error!(%error, "cannot listen for signals"),
                }
            })
            .await
        }
        Command::Status(args) => print_status(args).await,
        Command::Requeue(args) => requeue(args).await,
        Command::Prune(args) => prune(args).await,
    }
}

async fn migrate(args: MigrateArgs) -> Result<()> {
    let database = Database::new(
        &args.database.database_url,
        &args.database.table,
        TOOL_POOL_SIZE,
    )?;
    let applied = database
        .migrate(MigrateOptions {
            notify_trigger: args.notify_trigger,
        })
        .await?;
    println!(
        "outbox table {} is up to date ({})",
        database.table(),
        applied.join(", ")
    );
    Ok(())
}

/// Connect for a one-off command and check that the table exists.
async fn open_table(args: &DatabaseArgs) -> Result<Database> {
    let database = Database::new(&args.database_url, &args.table, TOOL_POOL_SIZE)?;
    database.check().await?;
    Ok(database)
}

async fn print_status(args: StatusArgs) -> Result<()> {
    let database = open_table(&args.database).await?;
    let backlog = database.backlog().await?;
    let table = database.table().to_string();
    if args.json {
        println!("{}", status::render_json(&table, &backlog));
    } else {
        print!("{}", status::render_text(&table, &backlog));
    }
    Ok(())
}

async fn requeue(args: RequeueArgs) -> Result<()> {
    let database = open_table(&args.database).await?;
    let selection = if args.all {
        RequeueSelection::All
    } else if let Some(topic) = args.topic {
        RequeueSelection::Topic(topic)
    } else {
        RequeueSelection::Ids(args.ids)
    };
    let total = database
        .requeue_dead(&selection, |so_far| {
            eprintln!("requeued {so_far} rows so far…")
        })
        .await?;
    println!("requeued {total} dead rows to pending");
    Ok(())
}

async fn prune(args: PruneArgs) -> Result<()> {
    let database = open_table(&args.database).await?;
    let rate = Some(args.max_rows_per_sec).filter(|r| *r > 0);
    let total = database
        .prune_published(args.older_than, rate, |so_far| {
            eprintln!("deleted {so_far} rows so far…")
        })
        .await?;
    println!("deleted {total} published rows");
    Ok(())
}

/// Check the configuration and both services, then relay until `stop`
/// resolves; then stop claiming, finish, flush and return within
/// `shutdown_timeout`.
pub async fn run_relay(config: RelayConfig, stop: impl Future<Output = ()>) -> Result<()> {
    config.validate()?;
    let database = Database::new(&config.database_url, &config.table, RELAY_POOL_SIZE)?;
    database.check().await?;
    let publisher = Arc::new(Publisher::new(
        &config.kafka_brokers,
        &config.kafka_options,
    )?);
    publisher
        .check_reachable(config.kafka_startup_timeout)
        .await?;
    let listener_socket = http::bind(config.metrics_addr).await?;

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(Arc::clone(&metrics)));
    let wakeup = Arc::new(Notify::new());
    let (trigger, shutdown) = Shutdown::new();

    let server = tokio::spawn(http::serve(
        listener_socket,
        Arc::clone(&metrics),
        Arc::clone(&health),
    ));
    let mut background = vec![
        tokio::spawn(monitor::watch_backlog(
            database.clone(),
            Arc::clone(&metrics),
            Arc::clone(&health),
            config.stats_interval,
            shutdown.clone(),
        )),
        tokio::spawn(monitor::watch_kafka(
            Arc::clone(&publisher),
            Arc::clone(&health),
            Duration::from_secs(5),
            shutdown.clone(),
        )),
    ];
    if config.listen {
        background.push(tokio::spawn(listener::listen_for_inserts(
            database.clone(),
            Arc::clone(&wakeup),
            shutdown.clone(),
        )));
    }
    if let Some(retention) = config.retention {
        background.push(tokio::spawn(monitor::enforce_retention(
            database.clone(),
            Arc::clone(&metrics),
            retention,
            shutdown.clone(),
        )));
    }

    tracing::info!(
        table = %config.table,
        database = database.target(),
        brokers = %config.kafka_brokers,
        metrics = %config.metrics_addr,
        batch_size = config.batch_size,
        "relay started"
    );
    let shutdown_timeout = config.shutdown_timeout;
    let relay = Relay::new(
        config,
        database,
        publisher,
        metrics,
        Arc::clone(&health),
        wakeup,
    );
    let mut relay_task = tokio::spawn(relay.run(shutdown));

    let outcome = tokio::select! {
        finished = &mut relay_task => Some(finished),
        () = stop => None,
    };
    trigger.trigger();
    health.stopping();
    let outcome = match outcome {
        Some(finished) => finished,
        None => match tokio::time::timeout(shutdown_timeout, &mut relay_task).await {
            Ok(finished) => finished,
            Err(_) => {
                relay_task.abort();
                tracing::warn!(
                    timeout_secs = shutdown_timeout.as_secs(),
                    "shutdown timeout reached; rows still in flight stay pending and will be sent again"
                );
                Ok(Ok(()))
            }
        },
    };
    for task in background {
        task.abort();
    }
    server.abort();
    match outcome {
        Ok(result) => {
            tracing::info!("relay stopped");
            result
        }
        Err(join_error) => Err(crate::error::Error::InvalidConfig(format!(
            "the relay task failed: {join_error}"
        ))),
    }
}
