//! One served table: its checks, its relay loop and the monitors beside it
//! (backlog gauges, retention or partition upkeep), started and
//! stopped as a unit, so tables can come and go while the process runs.
//!
//! Guarantees: a table is served only after the same checks as at start-up
//! passed (it exists, reads as its layout says, every statement prepares,
//! the role holds its privileges); a stopped table stops claiming, finishes
//! its batches within the shutdown timeout, and leaves no series, health
//! entry, subscription or election behind.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::{OnPublish, RelayConfig};
use crate::error::Result;
use crate::observe::health::Health;
use crate::relay::Relay;
use crate::serve::claim_gate::ClaimGate;
use crate::serve::context::TableContext;
use crate::serve::leader::{Candidate, Elector, Leadership};
use crate::serve::listener::Channels;
use crate::serve::monitor;
use crate::serve::shutdown::{Shutdown, ShutdownTrigger};
use crate::source::{Database, PartitionUnit};

use super::Shared;

/// The table's transactional producer: its `transactional.id` is the
/// configuration file's, or derived from the database and the table.
async fn transactional_producer(
    config: &RelayConfig,
    database: &Database,
    brokers: &str,
    options: &[crate::sinks::kafka::KafkaOption],
    record_timestamp: crate::sinks::kafka::RecordTimestamp,
) -> Result<crate::sinks::kafka::Transactional> {
    let bound = config.transaction_timeout();
    if let Some(given) = options
        .iter()
        .rev()
        .find(|o| o.key == "transaction.timeout.ms")
    {
        let ms: u64 = given.value.trim().parse().unwrap_or(0);
        if std::time::Duration::from_millis(ms) <= config.claim_timeout {
            return Err(crate::error::Error::ExactlyOnce(format!(
                "transaction.timeout.ms={ms} is not above --claim-timeout-secs ({}s): a batch's transaction must outlive its claim; raise it (the default is the claim timeout plus 10 s, {} ms) or lower the claim timeout",
                config.claim_timeout.as_secs(),
                bound.as_millis()
            )));
        }
    }
    let transactional_id = match &config.transactional_id {
        Some(id) => id.clone(),
        None => database.transactional_id().await?,
    };
    let settings = crate::sinks::kafka::TransactionalSettings {
        transactional_id,
        checkpoint_topic: config.checkpoint_topic.clone(),
        table: database.qualified_name(),
        call_timeout: config
            .kafka_startup_timeout
            .max(std::time::Duration::from_secs(10)),
    };
    crate::sinks::kafka::Transactional::new(
        brokers,
        options,
        record_timestamp,
        settings,
        config.transaction_timeout(),
    )
}

/// What the tables of one database share.
pub(crate) struct SourceParts {
    pub elector: Option<Arc<Elector>>,
    pub channels: Option<Arc<Channels>>,
    /// Look the patterns up again now.
    pub rediscover: Arc<Notify>,
    /// The database is one service for every table in it.
    pub database_outage: Arc<crate::observe::health::Outage>,
}

pub(crate) struct TableRelay {
    pub qualified: String,
    /// Found by a pattern: released when it is gone.
    pub from_pattern: bool,
    database: Database,
    trigger: ShutdownTrigger,
    relay: JoinHandle<Result<()>>,
    tasks: Vec<JoinHandle<()>>,
}

/// A table that passed its checks, ready to be served.
pub(crate) struct Checked {
    config: RelayConfig,
    database: Database,
    partitions: Option<PartitionUnit>,
    from_pattern: bool,
    /// The table has the NOTIFY trigger.
    notify_trigger: bool,
    /// `--exactly-once`: the table's own transactional producer.
    transactional: Option<Arc<crate::sinks::kafka::Transactional>>,
}

impl Checked {
    pub fn qualified(&self) -> String {
        self.database.qualified_name()
    }
}

impl TableRelay {
    /// Check `database`'s table for serving it with `config`.
    pub async fn check(
        config: RelayConfig,
        mut database: Database,
        from_pattern: bool,
        sink: &crate::sinks::SinkSettings,
    ) -> Result<Checked> {
        database.check_statements().await?;
        let transactional = match (config.exactly_once, sink) {
            (
                true,
                crate::sinks::SinkSettings::Kafka {
                    brokers,
                    options,
                    record_timestamp,
                },
            ) => {
                database = database.durable_marks(true);
                Some(Arc::new(
                    transactional_producer(&config, &database, brokers, options, *record_timestamp)
                        .await?,
                ))
            }
            _ => None,
        };
        let deletes = config.retention.is_some() || config.on_publish == OnPublish::Delete;
        database.check_privileges(deletes).await?;
        let partitions = database.partitioning().await?;
        let notify_trigger = database.has_notify_trigger().await?;
        Ok(Checked {
            config,
            database,
            partitions,
            from_pattern,
            notify_trigger,
            transactional,
        })
    }

    /// Start serving a checked table.
    pub fn launch(shared: &Shared, parts: &SourceParts, checked: Checked) -> Self {
        let Checked {
            config,
            database,
            partitions,
            from_pattern,
            notify_trigger,
            transactional,
        } = checked;
        let qualified = database.qualified_name();
        let (trigger, context) = table_context(shared, parts, &database);
        shared.board.add(&qualified, Arc::clone(&context.health));
        let span = tracing::info_span!("table", table = %qualified);
        let tasks = spawn_monitors(&database, &config, partitions, &context, &span);
        let shutdown = context.shutdown.clone();
        let mut relay = Relay::new(config, database.clone(), Arc::clone(&shared.sink), context);
        if let Some(transactional) = transactional {
            relay = relay.exactly_once(transactional);
        }
        if from_pattern {
            relay = relay.release_when_gone(Arc::clone(&parts.rediscover));
        }
        if notify_trigger && parts.channels.is_some() {
            relay = relay.woken_by_trigger();
        }
        let relay = tokio::spawn(relay.run(shutdown).instrument(span));
        TableRelay {
            qualified,
            from_pattern,
            database,
            trigger,
            relay,
            tasks,
        }
    }

    /// Stop claiming, give the batches in flight up to `timeout`, then
    /// forget the table. Returns the loop's own result.
    pub async fn stop(
        mut self,
        shared: &Shared,
        parts: &SourceParts,
        timeout: Duration,
    ) -> Result<()> {
        self.trigger.trigger();
        let ended = tokio::time::timeout(timeout, &mut self.relay).await;
        for task in &self.tasks {
            task.abort();
        }
        if let Some(elector) = &parts.elector {
            elector.leave(&self.database.table().quoted());
        }
        if let Some(channels) = &parts.channels {
            channels.unsubscribe(&self.database);
        }
        shared.board.remove(&self.qualified);
        shared.families.forget(&self.qualified);
        match ended {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => Err(super::internal_error(join_error)),
            Err(_) => {
                self.relay.abort();
                tracing::warn!(
                    table = %self.qualified,
                    timeout_secs = timeout.as_secs(),
                    "stopped before the rows in flight were recorded; they stay pending and will be sent again"
                );
                Ok(())
            }
        }
    }
}

/// A new table's handles: its series, its health, its wake-ups (subscribed
/// to its NOTIFY channel), its place in the election, and its shutdown.
fn table_context(
    shared: &Shared,
    parts: &SourceParts,
    database: &Database,
) -> (ShutdownTrigger, TableContext) {
    let metrics = Arc::new(shared.families.for_table(&database.qualified_name()));
    let health = Arc::new(Health::sharing(
        Arc::clone(&metrics),
        Arc::clone(&parts.database_outage),
        Arc::clone(&shared.board.sink_outage),
        shared.sink.profile(),
    ));
    let wakeup = Arc::new(Notify::new());
    if let Some(channels) = &parts.channels {
        channels.subscribe(database, Arc::clone(&wakeup));
    }
    let (trigger, shutdown) = Shutdown::new();
    let mut context = TableContext {
        metrics,
        health,
        wakeup,
        leadership: Leadership::always(),
        gate: ClaimGate::default(),
        shutdown,
    };
    match &parts.elector {
        Some(elector) => {
            context.leadership = Leadership::elected();
            let candidate = Candidate {
                leadership: context.leadership.clone(),
                metrics: Arc::clone(&context.metrics),
                health: Arc::clone(&context.health),
                wakeup: Arc::clone(&context.wakeup),
            };
            elector.join(database.table().quoted(), candidate);
        }
        None => context.metrics.role.set(1),
    }
    (trigger, context)
}

/// The monitors beside a table's loop: the backlog gauges, and partition
/// upkeep or retention.
fn spawn_monitors(
    database: &Database,
    config: &RelayConfig,
    partitions: Option<PartitionUnit>,
    context: &TableContext,
    span: &tracing::Span,
) -> Vec<JoinHandle<()>> {
    let backlog = monitor::watch_backlog(database.clone(), context.clone(), config.stats_interval);
    let mut tasks = vec![tokio::spawn(backlog.instrument(span.clone()))];
    if let Some(unit) = partitions {
        let upkeep = monitor::PartitionUpkeep {
            database: database.clone(),
            context: context.clone(),
            unit,
            retention: config.retention,
        };
        let upkeep = monitor::maintain_partitions(upkeep);
        tasks.push(tokio::spawn(upkeep.instrument(span.clone())));
    } else if let Some(retention) = config.retention {
        let retention = monitor::enforce_retention(database.clone(), context.clone(), retention);
        tasks.push(tokio::spawn(retention.instrument(span.clone())));
    }
    tasks
}
