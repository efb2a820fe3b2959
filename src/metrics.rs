//! The relay's Prometheus metrics, owned by one struct and registered into
//! its own registry (no global state), so tests can build as many as needed.
//!
//! Names carry the `outbox_` prefix and base units; label values come from
//! bounded sets (topics the application writes, [`FailureReason`]s). Every
//! series carries `table`: the outbox table, schema-qualified (a
//! registry-wide label: one process serves one table).

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::db::Backlog;
use crate::kafka::FailureReason;
use crate::open_claims::OpenClaims;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const BATCH_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

pub struct Metrics {
    registry: Registry,
    pub pending: IntGauge,
    pub oldest_pending_age: Gauge,
    pub dead: IntGauge,
    pub published: IntCounterVec,
    pub failures: IntCounterVec,
    pub dead_lettered: IntCounter,
    pub retries_scheduled: IntCounter,
    pub delivery_latency: Histogram,
    pub batch_duration: Histogram,
    pub batch_rows: Histogram,
    pub database_up: IntGauge,
    pub kafka_up: IntGauge,
    pub pruned: IntCounter,
    pub table_size: IntGauge,
    pub in_flight: IntGauge,
    pub role: IntGauge,
    pub claims_released: IntCounter,
    pub default_partition_rows: IntGauge,
    pub partitions_dropped: IntCounter,
    pub partitions_kept: IntGauge,
    /// Set from `open_claims` at every scrape: a batch stuck waiting for acks
    /// reports nothing itself.
    oldest_open_claim: Gauge,
    pub open_claims: Arc<OpenClaims>,
}

fn int_gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}

fn counter_vec(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid metric")
}

impl Metrics {
    /// The metrics of the relay for `table`, each series labelled with it.
    pub fn new(table: &str) -> Self {
        let labels = HashMap::from([("table".to_owned(), table.to_owned())]);
        let metrics = Metrics {
            registry: Registry::new_custom(None, Some(labels)).expect("a valid label"),
            pending: int_gauge("outbox_pending_messages", "Rows waiting to be published."),
            oldest_pending_age: Gauge::new(
                "outbox_oldest_pending_age_seconds",
                "Age of the oldest pending row (0 when nothing is pending).",
            )
            .expect("valid metric"),
            dead: int_gauge(
                "outbox_dead_messages",
                "Rows in the dead state, waiting for an operator (`requeue`).",
            ),
            published: counter_vec(
                "outbox_published_messages_total",
                "Rows published to Kafka and marked published.",
                "topic",
            ),
            failures: counter_vec(
                "outbox_publish_failures_total",
                "Failed publish attempts, by reason.",
                "reason",
            ),
            dead_lettered: counter(
                "outbox_dead_lettered_messages_total",
                "Rows this relay moved to the dead state.",
            ),
            retries_scheduled: counter(
                "outbox_retries_scheduled_total",
                "Failed rows scheduled for another attempt.",
            ),
            delivery_latency: histogram(
                "outbox_delivery_latency_seconds",
                "Time from a row's created_at to Kafka's acknowledgement.",
                LATENCY_BUCKETS,
            ),
            batch_duration: histogram(
                "outbox_batch_duration_seconds",
                "Time to claim, publish and record one batch.",
                BATCH_DURATION_BUCKETS,
            ),
            batch_rows: histogram(
                "outbox_batch_rows",
                "Rows claimed per non-empty batch.",
                BATCH_SIZE_BUCKETS,
            ),
            database_up: int_gauge(
                "outbox_database_up",
                "1 when the last PostgreSQL round trip succeeded.",
            ),
            kafka_up: int_gauge(
                "outbox_kafka_up",
                "1 when a Kafka broker answered the last probe or delivery.",
            ),
            pruned: counter(
                "outbox_pruned_messages_total",
                "Published rows deleted by retention.",
            ),
            table_size: int_gauge(
                "outbox_table_size_bytes",
                "Total size of the outbox table with its indexes and TOAST.",
            ),
            in_flight: int_gauge(
                "outbox_in_flight_messages",
                "Rows handed to the producer and not yet recorded.",
            ),
            role: int_gauge(
                "outbox_relay_role",
                "1 while this replica leads its table (claims), 0 while it stands by.",
            ),
            claims_released: counter(
                "outbox_claims_released_total",
                "Batches rolled back unrecorded because their acks took longer than --claim-timeout-secs (their rows stay pending).",
            ),
            default_partition_rows: int_gauge(
                "outbox_default_partition_rows",
                "Rows in the default partition of a partitioned outbox table (up to 10000): rows whose created_at had no range partition.",
            ),
            partitions_dropped: counter(
                "outbox_partitions_dropped_total",
                "Partitions dropped by retention (every row published and older than --retention).",
            ),
            partitions_kept: int_gauge(
                "outbox_partitions_kept",
                "Partitions past --retention kept because they hold pending or dead rows.",
            ),
            oldest_open_claim: Gauge::new(
                "outbox_oldest_open_claim_seconds",
                "Age of this relay's oldest open claim transaction (0 when none is open).",
            )
            .expect("valid metric"),
            open_claims: Arc::default(),
        };
        metrics.register_all();
        metrics.register_process_and_build();
        for reason in FailureReason::ALL {
            metrics.failures.with_label_values(&[reason.as_str()]);
        }
        metrics
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 21] = [
            Box::new(self.role.clone()),
            Box::new(self.claims_released.clone()),
            Box::new(self.default_partition_rows.clone()),
            Box::new(self.partitions_dropped.clone()),
            Box::new(self.partitions_kept.clone()),
            Box::new(self.oldest_open_claim.clone()),
            Box::new(self.in_flight.clone()),
            Box::new(self.pending.clone()),
            Box::new(self.oldest_pending_age.clone()),
            Box::new(self.dead.clone()),
            Box::new(self.published.clone()),
            Box::new(self.failures.clone()),
            Box::new(self.dead_lettered.clone()),
            Box::new(self.retries_scheduled.clone()),
            Box::new(self.delivery_latency.clone()),
            Box::new(self.batch_duration.clone()),
            Box::new(self.batch_rows.clone()),
            Box::new(self.database_up.clone()),
            Box::new(self.kafka_up.clone()),
            Box::new(self.pruned.clone()),
            Box::new(self.table_size.clone()),
        ];
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("metric names are unique");
        }
    }

    /// `outbox_relay_build_info{version} 1`, and the `process_*` metrics
    /// (CPU seconds, resident memory, open file descriptors, start time).
    fn register_process_and_build(&self) {
        let build = IntGaugeVec::new(
            Opts::new(
                "outbox_relay_build_info",
                "Always 1; the labels say which build is running.",
            ),
            &["version", "rdkafka_version"],
        )
        .expect("valid metric");
        let (_, rdkafka_version) = rdkafka::util::get_rdkafka_version();
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), &rdkafka_version])
            .set(1);
        self.registry
            .register(Box::new(build))
            .expect("metric names are unique");
        let process = prometheus::process_collector::ProcessCollector::for_self();
        self.registry
            .register(Box::new(process))
            .expect("metric names are unique");
    }

    pub fn observe_backlog(&self, backlog: &Backlog) {
        self.pending.set(backlog.pending);
        self.dead.set(backlog.dead);
        self.oldest_pending_age
            .set(backlog.oldest_pending_age_seconds.unwrap_or(0.0));
    }

    pub fn record_failure(&self, reason: FailureReason) {
        self.failures.with_label_values(&[reason.as_str()]).inc();
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let oldest = self.open_claims.oldest_age(Instant::now());
        self.oldest_open_claim.set(oldest.as_secs_f64());
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding into memory cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_reason_is_exported_from_the_start() {
        let text = Metrics::new("outbox").render();
        for reason in FailureReason::ALL {
            let line = format!(
                "outbox_publish_failures_total{{reason=\"{}\",table=\"outbox\"}} 0",
                reason.as_str()
            );
            assert!(text.contains(&line), "missing {line}");
        }
    }

    #[test]
    fn build_info_and_process_metrics_are_exported() {
        let text = Metrics::new("outbox").render();
        assert!(
            text.contains("outbox_relay_build_info{rdkafka_version="),
            "{text}"
        );
        let build = text
            .lines()
            .find(|l| l.starts_with("outbox_relay_build_info{"))
            .expect("build info");
        assert!(build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));
        assert!(
            build.contains("table=\"outbox\"") && build.ends_with(" 1"),
            "{build}"
        );
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }

    #[test]
    fn backlog_gauges_follow_the_backlog() {
        let metrics = Metrics::new("app.outbox");
        metrics.observe_backlog(&Backlog {
            pending: 7,
            oldest_pending_age_seconds: Some(1.5),
            dead: 2,
            topics: Vec::new(),
        });
        let text = metrics.render();
        assert!(text.contains("outbox_pending_messages{table=\"app.outbox\"} 7"));
        assert!(text.contains("outbox_oldest_pending_age_seconds{table=\"app.outbox\"} 1.5"));
        assert!(text.contains("outbox_dead_messages{table=\"app.outbox\"} 2"));
    }
}
