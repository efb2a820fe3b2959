//! What each subcommand does, from parsed arguments to printed output:
//! `run` here (it takes its stop triggers as futures so tests can stop it),
//! the one-off operator commands in [`oneoff`].

mod oneoff;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::{JoinError, JoinHandle};

use crate::claim_gate::ClaimGate;
use crate::cli::Command;
use crate::config::{Election, KafkaOption, OnPublish, RelayConfig};
use crate::db::{Database, PartitionUnit};
use crate::error::{Error, Result};
use crate::health::Health;
use crate::kafka::Publisher;
use crate::leader::{self, Leadership};
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::summary::{describe, Totals};
use crate::{http, listener, monitor, shutdown, summary};

/// Connections: claims, backlog gauges, retention, spare for readiness.
const RELAY_POOL_SIZE: usize = 4;
/// How often readiness asks the brokers for metadata when the loop is idle.
const KAFKA_PROBE_INTERVAL: Duration = Duration::from_secs(5);

pub async fn execute(command: Command) -> Result<()> {
    match command {
        Command::Migrate(args) => oneoff::migrate(args).await,
        Command::Run(args) => {
            let signal = |which: &'static str| async move {
                match shutdown::signal().await {
                    Ok(name) => tracing::info!(signal = name, "{which}"),
                    Err(error) => tracing::error!(%error, "cannot listen for signals"),
                }
            };
            // The second signal is listened for only once the first came.
            let stops = Stops {
                graceful: signal("shutdown requested"),
                forced: || signal("second signal: exiting now"),
            };
            run_relay(*args, stops).await
        }
        Command::Status(args) => oneoff::status(args).await,
        Command::Dead(args) => oneoff::dead(args).await,
        Command::Requeue(args) => oneoff::requeue(args).await,
        Command::Prune(args) => oneoff::prune(args).await,
        Command::Completions { shell } => {
            oneoff::completions(shell);
            Ok(())
        }
        Command::Man => oneoff::man(),
    }
}

/// What stops `run`: the first future starts a graceful stop; the second
/// (created only after the first resolved) cuts it short.
pub struct Stops<G, F> {
    pub graceful: G,
    pub forced: F,
}

/// Check the configuration and both services, then relay until a stop is
/// requested; then stop claiming, finish, flush and return within
/// `shutdown_timeout` (at once on a second request).
pub async fn run_relay<G, F, FF>(config: RelayConfig, stops: Stops<G, F>) -> Result<()>
where
    G: Future<Output = ()>,
    F: FnOnce() -> FF,
    FF: Future<Output = ()>,
{
    let Checked {
        database,
        publisher,
        kafka_settings,
        listener_socket,
        partitions,
    } = check_everything(&config).await?;
    let bound = listener_socket
        .local_addr()
        .map_or_else(|_| config.metrics_addr.to_string(), |a| a.to_string());
    let metrics = Arc::new(Metrics::new(&database.qualified_name()));
    let health = Arc::new(Health::new(Arc::clone(&metrics)));
    let wakeup = Arc::new(Notify::new());
    let (trigger, shutdown) = Shutdown::new();
    let server = tokio::spawn(http::serve(
        listener_socket,
        Arc::clone(&metrics),
        Arc::clone(&health),
    ));
    let leadership = if config.elects_leader() {
        Leadership::elected()
    } else {
        metrics.role.set(1);
        Leadership::always()
    };
    let gate = ClaimGate::default();
    let background = Background {
        database: &database,
        publisher: &publisher,
        metrics: &metrics,
        health: &health,
        shutdown: &shutdown,
        partitions,
    }
    .spawn(&config, &wakeup, (&leadership, &gate));
    log_start(&config, &database, &kafka_settings, &bound);
    let started = std::time::Instant::now();
    let shutdown_timeout = config.shutdown_timeout;
    let relay = Relay::new(
        config,
        database,
        publisher,
        (Arc::clone(&metrics), Arc::clone(&health)),
        wakeup,
        leadership,
        gate,
    );
    let relay_task = tokio::spawn(relay.run(shutdown));
    let begin_stop = begin_stop(&trigger, &health, &metrics, shutdown_timeout);
    let outcome = stop_relay(relay_task, stops, begin_stop, shutdown_timeout).await;
    for task in background {
        task.abort();
    }
    server.abort();
    tracing::info!(
        uptime_secs = started.elapsed().as_secs(),
        "relay stopped: {}",
        describe(&Totals::read(&metrics))
    );
    outcome
}

/// Stop claiming, turn not-ready, and say at once what the stop waits for.
fn begin_stop<'a>(
    trigger: &'a ShutdownTrigger,
    health: &'a Health,
    metrics: &'a Metrics,
    timeout: Duration,
) -> impl FnOnce() + 'a {
    move || {
        trigger.trigger();
        health.stopping();
        let in_flight = metrics.in_flight.get();
        tracing::info!(
            in_flight,
            timeout_secs = timeout.as_secs(),
            "stopped claiming; waiting for {in_flight} rows in flight (up to {}s; a second signal exits at once)",
            timeout.as_secs()
        );
    }
}

/// What `run` checked and opened before it starts.
struct Checked {
    database: Database,
    publisher: Arc<Publisher>,
    kafka_settings: Vec<KafkaOption>,
    listener_socket: tokio::net::TcpListener,
    /// The unit of the partitions the relay keeps, for a partitioned table.
    partitions: Option<PartitionUnit>,
}

/// The start-up checks, in order: the flags; the database, the table, its
/// statements and the role's privileges; librdkafka's options and a broker;
/// the metrics address. Each failure is one line naming the fix.
async fn check_everything(config: &RelayConfig) -> Result<Checked> {
    config.validate()?;
    let database = config
        .database
        .open(RELAY_POOL_SIZE)?
        .delete_on_publish(config.on_publish == OnPublish::Delete);
    let mut database = database;
    database.check_statements().await?;
    let deletes = config.retention.is_some() || config.on_publish == OnPublish::Delete;
    database.check_privileges(deletes).await?;
    let partitions = database.partitioning().await?;
    let kafka_settings = config.kafka_settings()?;
    let publisher = Arc::new(Publisher::new(&config.kafka_brokers, &kafka_settings)?);
    publisher
        .check_reachable(config.kafka_startup_timeout)
        .await?;
    let listener_socket = http::bind(&config.metrics_addr).await?;
    Ok(Checked {
        database,
        publisher,
        kafka_settings,
        listener_socket,
        partitions,
    })
}

/// The start-up line: version, where it reads and writes, the metrics
/// address actually bound (the real port for `:0`), and the effective
/// configuration with its secrets redacted.
fn log_start(config: &RelayConfig, database: &Database, kafka: &[KafkaOption], bound: &str) {
    if !config.listen() && !config.no_listen {
        tracing::info!(
            poll_interval_ms = config.poll_interval.as_millis() as u64,
            "LISTEN is off behind a transaction-mode pooler (--pooler transaction); polling instead"
        );
    }
    if !config.elects_leader() && config.election == Election::AdvisoryLock {
        tracing::info!("leader election is off behind a transaction-mode pooler (session locks do not hold there): every replica claims, and row locks keep them apart");
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        table = %config.database.table,
        database = database.target(),
        brokers = %config.kafka_brokers,
        metrics = bound,
        kafka_options = ?kafka,
        config = ?config,
        "relay started"
    );
}

/// The tasks that run beside the relay loop, all stopped by `shutdown`.
struct Background<'a> {
    database: &'a Database,
    publisher: &'a Arc<Publisher>,
    metrics: &'a Arc<Metrics>,
    health: &'a Arc<Health>,
    shutdown: &'a Shutdown,
    partitions: Option<PartitionUnit>,
}

impl Background<'_> {
    fn spawn(
        self,
        config: &RelayConfig,
        wakeup: &Arc<Notify>,
        (leadership, gate): (&Leadership, &ClaimGate),
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![
            tokio::spawn(monitor::watch_backlog(
                self.database.clone(),
                (Arc::clone(self.metrics), Arc::clone(self.health)),
                config.stats_interval,
                leadership.clone(),
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
        if config.elects_leader() {
            tasks.push(tokio::spawn(leader::contend(
                self.database.clone(),
                leadership.clone(),
                (Arc::clone(self.metrics), Arc::clone(self.health)),
                Arc::clone(wakeup),
                self.shutdown.clone(),
            )));
        }
        if !config.summary_interval.is_zero() {
            tasks.push(tokio::spawn(summary::log_periodically(
                Arc::clone(self.metrics),
                config.summary_interval,
                self.shutdown.clone(),
            )));
        }
        if let Some(unit) = self.partitions {
            let upkeep = monitor::PartitionUpkeep {
                database: self.database.clone(),
                metrics: Arc::clone(self.metrics),
                unit,
                retention: config.retention,
                gate: gate.clone(),
                leadership: leadership.clone(),
            };
            tasks.push(tokio::spawn(monitor::maintain_partitions(
                upkeep,
                self.shutdown.clone(),
            )));
        } else if let Some(retention) = config.retention {
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

/// Wait for the relay task to end by itself or for the graceful stop; then
/// `begin_stop` and give the task up to `timeout` (or until the forced stop)
/// to finish its batches.
async fn stop_relay<G, F, FF>(
    mut relay_task: JoinHandle<Result<()>>,
    stops: Stops<G, F>,
    begin_stop: impl FnOnce(),
    timeout: Duration,
) -> Result<()>
where
    G: Future<Output = ()>,
    F: FnOnce() -> FF,
    FF: Future<Output = ()>,
{
    let ended = tokio::select! {
        ended = &mut relay_task => Some(ended),
        () = stops.graceful => None,
    };
    begin_stop();
    let ended = match ended {
        Some(ended) => ended,
        None => {
            let cut_short = tokio::select! {
                ended = tokio::time::timeout(timeout, &mut relay_task) => ended.ok(),
                () = (stops.forced)() => None,
            };
            match cut_short {
                Some(ended) => ended,
                None => {
                    relay_task.abort();
                    tracing::warn!(
                        timeout_secs = timeout.as_secs(),
                        "stopped before the rows in flight were recorded; they stay pending and will be sent again"
                    );
                    return Ok(());
                }
            }
        }
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
        let error = stop_relay(task, never(), || {}, Duration::from_secs(1))
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
        let error = stop_relay(task, never(), || {}, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::KafkaConfig(_)));
    }

    fn never() -> Stops<std::future::Pending<()>, fn() -> std::future::Pending<()>> {
        Stops {
            graceful: std::future::pending(),
            forced: std::future::pending,
        }
    }

    #[tokio::test]
    async fn a_second_stop_ends_the_wait_for_the_batches_in_flight() {
        let task = tokio::spawn(async {
            std::future::pending::<()>().await;
            Ok(())
        });
        let stops = Stops {
            graceful: std::future::ready(()),
            forced: || std::future::ready(()),
        };
        let stopped = stop_relay(task, stops, || {}, Duration::from_secs(3600));
        let stopped = tokio::time::timeout(Duration::from_secs(10), stopped).await;
        assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    }
}
