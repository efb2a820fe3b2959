//! What each subcommand does, from parsed arguments to printed output.
//! `run_relay` takes its shutdown trigger as a future so tests can stop it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::{JoinError, JoinHandle};

use crate::cli::{Command, MigrateArgs, PruneArgs, RequeueArgs, StatusArgs};
use crate::config::{DatabaseArgs, RelayConfig};
use crate::db::{Database, MigrateOptions, RequeueSelection};
use crate::error::{Error, Result};
use crate::health::Health;
use crate::kafka::Publisher;
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::shutdown::Shutdown;
use crate::{http, listener, monitor, shutdown, status};

/// Connections: claims, backlog gauges, retention, spare for readiness.
const RELAY_POOL_SIZE: usize = 4;
const TOOL_POOL_SIZE: usize = 1;
/// How often readiness asks the brokers for metadata when the loop is idle.
const KAFKA_PROBE_INTERVAL: Duration = Duration::from_secs(5);

pub async fn execute(command: Command) -> Result<()> {
    match command {
        Command::Migrate(args) => migrate(args).await,
        Command::Run(args) => {
            run_relay(*args, async {
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
    let database = args.database.open(TOOL_POOL_SIZE)?;
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
    let database = args.open(TOOL_POOL_SIZE)?;
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
    let database = config.database.open(RELAY_POOL_SIZE)?;
    database.check_statements().await?;
    let publisher = Arc::new(Publisher::new(
        &config.kafka_brokers,
        &config.kafka_settings()?,
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
    let background = Background {
        database: &database,
        publisher: &publisher,
        metrics: &metrics,
        health: &health,
        shutdown: &shutdown,
    }
    .spawn(&config, &wakeup);

    if !config.listen() && !config.no_listen {
        tracing::info!(
            poll_interval_ms = config.poll_interval.as_millis() as u64,
            "LISTEN is off behind a transaction-mode pooler (--pooler transaction); polling instead"
        );
    }
    tracing::info!(
        table = %config.database.table,
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
    let relay_task = tokio::spawn(relay.run(shutdown));
    let outcome = stop_relay(
        relay_task,
        stop,
        || {
            trigger.trigger();
            health.stopping();
        },
        shutdown_timeout,
    )
    .await;
    for task in background {
        task.abort();
    }
    server.abort();
    if outcome.is_ok() {
        tracing::info!("relay stopped");
    }
    outcome
}

/// The tasks that run beside the relay loop, all stopped by `shutdown`.
struct Background<'a> {
    database: &'a Database,
    publisher: &'a Arc<Publisher>,
    metrics: &'a Arc<Metrics>,
    health: &'a Arc<Health>,
    shutdown: &'a Shutdown,
}

impl Background<'_> {
    fn spawn(self, config: &RelayConfig, wakeup: &Arc<Notify>) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![
            tokio::spawn(monitor::watch_backlog(
                self.database.clone(),
                Arc::clone(self.metrics),
                Arc::clone(self.health),
                config.stats_interval,
                self.shutdown.clone(),
            )),
            tokio::spawn(monitor::watch_kafka(
                Arc::clone(self.publisher),
                Arc::clone(self.health),
                KAFKA_PROBE_INTERVAL,
                self.shutdown.clone(),
            )),
        ];
        if config.listen() {
            tasks.push(tokio::spawn(listener::listen_for_inserts(
                self.database.clone(),
                Arc::clone(wakeup),
                self.shutdown.clone(),
            )));
        }
        if let Some(retention) = config.retention {
            tasks.push(tokio::spawn(monitor::enforce_retention(
                self.database.clone(),
                Arc::clone(self.metrics),
                retention,
                self.shutdown.clone(),
            )));
        }
        tasks
    }
}

/// Wait for the relay task to end by itself or for `stop`; then `begin_stop`
/// and give the task up to `timeout` to finish its batches.
async fn stop_relay(
    mut relay_task: JoinHandle<Result<()>>,
    stop: impl Future<Output = ()>,
    begin_stop: impl FnOnce(),
    timeout: Duration,
) -> Result<()> {
    let ended = tokio::select! {
        ended = &mut relay_task => Some(ended),
        () = stop => None,
    };
    begin_stop();
    let ended = match ended {
        Some(ended) => ended,
        None => match tokio::time::timeout(timeout, &mut relay_task).await {
            Ok(ended) => ended,
            Err(_) => {
                relay_task.abort();
                tracing::warn!(
                    timeout_secs = timeout.as_secs(),
                    "shutdown timeout reached; rows still in flight stay pending and will be sent again"
                );
                return Ok(());
            }
        },
    };
    ended.map_err(internal_error)?
}

/// A relay task that panicked (or was cancelled) is a bug, not a
/// configuration problem.
fn internal_error(join_error: JoinError) -> Error {
    if join_error.is_panic() {
        let panic = join_error.into_panic();
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        Error::Internal(format!("the relay task panicked: {message}"))
    } else {
        Error::Internal(format!("the relay task ended unexpectedly: {join_error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_the_relay_task_is_reported_as_an_internal_error() {
        let task = tokio::spawn(async { panic!("invariant broken") });
        let error = stop_relay(task, std::future::pending(), || {}, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Internal(_)), "{error:?}");
        let line = error.to_string();
        assert!(line.starts_with("internal error"), "{line}");
        assert!(line.contains("invariant broken"), "{line}");
    }

    #[tokio::test]
    async fn a_relay_that_ends_by_itself_returns_its_own_result() {
        let task = tokio::spawn(async { Err(Error::KafkaConfig("boom".into())) });
        let error = stop_relay(task, std::future::pending(), || {}, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::KafkaConfig(_)));
    }
}
