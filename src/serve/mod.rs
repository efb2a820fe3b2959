//! `outbox-relay run`: serve every table of the plan from one process. One
//! producer, one metrics endpoint and one registry for the process; per
//! database one pool, one LISTEN session and one election session; per
//! table its own relay loop, monitors, series and health.
//!
//! Guarantees: start-up checks everything the plan names before any table
//! is served (a mistake is one line and a non-zero exit); a stop stops
//! claiming everywhere, finishes the batches in flight within
//! `--shutdown-timeout-secs` (at once on a second signal) and flushes.

pub(crate) mod claim_gate;
pub(crate) mod context;
pub(crate) mod leader;
pub(crate) mod listener;
pub(crate) mod monitor;
pub(crate) mod open_claims;
mod plan;
pub(crate) mod shutdown;
mod source;
mod table;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinError, JoinHandle};

use crate::config::{Election, RelayConfig};
use crate::error::{Error, Result};
use crate::observe::health::HealthBoard;
use crate::observe::http;
use crate::observe::metrics::MetricFamilies;
use crate::serve::shutdown::Shutdown;
use crate::sinks::Sink;

pub use plan::Plan;
use source::SourceRuntime;
pub(crate) use source::{refuse_shared_tables, resolve, Resolved};

/// How often readiness asks the brokers for metadata when the loop is idle.
const SINK_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// What every table of the process shares.
pub(crate) struct Shared {
    /// The process-wide settings (each table gets a copy with its own).
    pub config: RelayConfig,
    pub sink: Arc<dyn Sink>,
    /// What the sink was opened with: `--exactly-once` tables open their
    /// own Kafka producers with the same settings.
    pub sink_settings: crate::sinks::SinkSettings,
    pub families: Arc<MetricFamilies>,
    pub board: Arc<HealthBoard>,
    pub shutdown: Shutdown,
}

/// What stops `run`: the first future starts a graceful stop; the second
/// (created only after the first resolved) cuts it short.
pub struct Stops<G, F> {
    pub graceful: G,
    pub forced: F,
}

/// Check the plan, the databases, every table and the sink, then relay until a
/// stop is requested; then stop claiming, finish, flush and return within
/// `shutdown_timeout` (at once on a second request).
pub async fn run<G, F, FF>(config: RelayConfig, stops: Stops<G, F>) -> Result<()>
where
    G: Future<Output = ()>,
    F: FnOnce() -> FF,
    FF: Future<Output = ()>,
{
    let plan = Plan::build(&config)?;
    let (trigger, shutdown) = Shutdown::new();
    let shared = Arc::new(Shared {
        sink: crate::sinks::open(&plan.sink)?,
        sink_settings: plan.sink.clone(),
        families: MetricFamilies::new(config.table_metrics),
        board: Arc::new(HealthBoard::default()),
        shutdown,
        config,
    });
    let mut sources = check_sources(&plan, &shared).await?;
    let listener_socket = http::bind(&shared.config.metrics_addr).await?;
    let bound = listener_socket.local_addr().map_or_else(
        |_| shared.config.metrics_addr.to_string(),
        |a| a.to_string(),
    );
    let server = tokio::spawn(http::serve(
        listener_socket,
        Arc::clone(&shared.families),
        Arc::clone(&shared.board),
    ));
    let watchers = spawn_watchers(&shared);
    for source in &mut sources {
        source.launch(&shared);
    }
    log_start(&shared.config, &plan, &sources, &bound);
    let started = std::time::Instant::now();
    let timeout = shared.config.shutdown_timeout;
    let supervisor = tokio::spawn(supervise(sources, Arc::clone(&shared)));
    let begin_stop = || {
        trigger.trigger();
        shared.board.stopping();
        let in_flight = shared.families.in_flight_total();
        tracing::info!(
            in_flight,
            timeout_secs = timeout.as_secs(),
            "stopped claiming; waiting for {in_flight} rows in flight (up to {}s; a second signal exits at once)",
            timeout.as_secs()
        );
    };
    let outcome = stop_relay(supervisor, stops, begin_stop, timeout).await;
    for watcher in watchers {
        watcher.abort();
    }
    server.abort();
    tracing::info!(
        uptime_secs = started.elapsed().as_secs(),
        "relay stopped: {}",
        crate::observe::summary::describe(&crate::observe::summary::Totals::read_all(
            &shared.families
        ))
    );
    outcome
}

/// Open and check every source and its tables, then the sink: nothing is
/// served until all of them passed.
async fn check_sources(plan: &Plan, shared: &Arc<Shared>) -> Result<Vec<SourceRuntime>> {
    let mut sources = Vec::new();
    for source in plan.sources.clone() {
        let mut runtime = SourceRuntime::open(source, shared)?;
        runtime.check(shared).await?;
        sources.push(runtime);
    }
    source::refuse_shared_tables(sources.iter().flat_map(|s| s.checked_tables()).collect())?;
    shared
        .sink
        .check_reachable(shared.config.kafka_startup_timeout)
        .await?;
    if let (
        true,
        crate::sinks::SinkSettings::Kafka {
            brokers, options, ..
        },
    ) = (plan.exactly_once, &plan.sink)
    {
        crate::sinks::kafka::probe_transactions(
            brokers,
            options,
            &shared.config.checkpoint_topic,
            shared.config.kafka_startup_timeout,
            shared.config.transaction_timeout(),
        )
        .await?;
    }
    Ok(sources)
}

/// The process-wide watchers: the sink's readiness probe, and the periodic
/// summary line.
fn spawn_watchers(shared: &Shared) -> Vec<tokio::task::JoinHandle<()>> {
    let mut watchers = vec![tokio::spawn(monitor::watch_sink(
        Arc::clone(&shared.sink),
        Arc::clone(&shared.board),
        SINK_PROBE_INTERVAL,
        shared.shutdown.clone(),
    ))];
    if !shared.config.summary_interval.is_zero() {
        watchers.push(tokio::spawn(crate::observe::summary::log_periodically(
            Arc::clone(&shared.families),
            shared.config.summary_interval,
            shared.shutdown.clone(),
        )));
    }
    watchers
}

/// Look the patterns up again on their schedule until the stop; then stop
/// every table and flush.
async fn supervise(mut sources: Vec<SourceRuntime>, shared: Arc<Shared>) -> Result<()> {
    let mut shutdown = shared.shutdown.clone();
    let interval = shared.config.discovery_interval;
    if sources.iter().any(SourceRuntime::has_patterns) {
        loop {
            let wakeups = sources
                .iter()
                .map(|s| Box::pin(s.parts.rediscover.notified()))
                .collect::<Vec<_>>();
            let announced = futures_util::future::select_all(wakeups);
            tokio::select! {
                () = shutdown.requested() => break,
                () = tokio::time::sleep(interval) => {}
                _ = announced => {}
            }
            for source in sources.iter_mut().filter(|s| s.has_patterns()) {
                source.rediscover(&shared).await;
            }
        }
    } else {
        shutdown.requested().await;
    }
    let timeout = shared.config.shutdown_timeout;
    let stops = sources.into_iter().map(|s| s.stop(&shared, timeout));
    let outcomes: Vec<Result<()>> = futures_util::future::join_all(stops).await;
    let connection = shared.sink.profile().connection;
    tracing::info!("stopped claiming; flushing the {connection}");
    if let Err(error) = shared.sink.flush(timeout).await {
        tracing::warn!(%error, "{connection} flush did not complete");
    }
    outcomes.into_iter().collect()
}

/// The start-up line: version, where it reads and writes, the metrics
/// address actually bound (the real port for `:0`), and the effective
/// configuration with its secrets redacted.
fn log_start(config: &RelayConfig, plan: &Plan, sources: &[SourceRuntime], bound: &str) {
    let transaction_pooler = plan
        .sources
        .iter()
        .any(|s| s.database.pooler == crate::config::Pooler::Transaction);
    if transaction_pooler && !config.no_listen {
        tracing::info!(
            poll_interval_ms = config.poll_interval.as_millis() as u64,
            "LISTEN is off behind a transaction-mode pooler (--pooler transaction); polling instead"
        );
    }
    if transaction_pooler && config.election == Election::AdvisoryLock {
        tracing::info!("leader election is off behind a transaction-mode pooler (session locks do not hold there): every replica claims, and row locks keep them apart");
    }
    let tables: usize = sources.iter().map(SourceRuntime::table_count).sum();
    let (table, database) = match plan.sources.as_slice() {
        [one] => (
            one.tables
                .iter()
                .map(|t| t.selector.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            one.name.clone(),
        ),
        many => (
            format!("{tables} tables"),
            format!("{} databases", many.len()),
        ),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        table = %table,
        tables,
        database = %database,
        config_file = ?plan.file,
        sink = ?plan.sink,
        metrics = bound,
        batch_size = config.batch_size,
        poll_interval_ms = config.poll_interval.as_millis() as u64,
        max_attempts = config.max_attempts,
        claim_timeout_secs = config.claim_timeout.as_secs(),
        election = ?config.election,
        on_publish = ?config.on_publish,
        cloudevents = config.cloudevents,
        "relay started"
    );
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
pub(crate) fn internal_error(join_error: JoinError) -> Error {
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
