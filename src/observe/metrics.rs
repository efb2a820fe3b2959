//! The relay's Prometheus metrics: one registry per process
//! ([`MetricFamilies`], no global state, so tests can build as many as
//! needed) and one [`Metrics`] handle per outbox table, whose series carry
//! that table's schema-qualified name in the `table` label.
//!
//! Names carry the `outbox_` prefix and base units; label values come from
//! bounded sets (tables the relay serves, topics the application writes,
//! [`FailureReason`]s). With [`TableSeries::Aggregate`] the exposition folds
//! the tables together (`table="*"`) and keeps per-table series only for the
//! few tables furthest behind, so a relay serving 1,000 tenant tables
//! exports a bounded number of series; the handles are per table either way.

use prometheus::core::Collector;
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::definitions::*;
use crate::serve::open_claims::OpenClaims;
use crate::sinks::FailureReason;
use crate::source::Backlog;

/// The `table` label value of series that fold every table together.
pub const ALL_TABLES: &str = "*";

/// With [`TableSeries::Aggregate`], how many of the tables furthest behind
/// keep their own pending and oldest-age series.
pub const TOP_TABLES: usize = 10;

/// Which series the relay exports per table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableSeries {
    /// Every metric for every table (about 80 series per table, plus one per
    /// topic): for a handful of tables.
    #[default]
    PerTable,
    /// Every metric summed (or maxed) over the tables, as `table="*"`, plus
    /// pending and oldest age for the tables furthest behind: for many.
    Aggregate,
}

/// How a family's series fold into `table="*"`.
#[derive(Debug, Clone, Copy)]
enum Fold {
    Sum,
    Max,
    Min,
}

/// The process's registry and every metric family, labelled by table.
pub struct MetricFamilies {
    registry: Registry,
    pending: IntGaugeVec,
    oldest_pending_age: GaugeVec,
    dead: IntGaugeVec,
    published: IntCounterVec,
    failures: IntCounterVec,
    dead_lettered: IntCounterVec,
    retries_scheduled: IntCounterVec,
    delivery_latency: HistogramVec,
    batch_duration: HistogramVec,
    batch_rows: HistogramVec,
    database_up: IntGaugeVec,
    kafka_up: IntGaugeVec,
    pruned: IntCounterVec,
    table_size: IntGaugeVec,
    in_flight: IntGaugeVec,
    skipped: IntGaugeVec,
    role: IntGaugeVec,
    claims_released: IntCounterVec,
    transactions: IntCounterVec,
    checkpoint_recovered: IntCounterVec,
    transaction_duration: HistogramVec,
    default_partition_rows: IntGaugeVec,
    partitions_dropped: IntCounterVec,
    partitions_kept: IntGaugeVec,
    oldest_open_claim: GaugeVec,
    /// Each table's open claims, read at every scrape: a batch stuck waiting
    /// for acks reports nothing itself.
    open_claims: Mutex<BTreeMap<String, Arc<OpenClaims>>>,
}

impl MetricFamilies {
    pub fn new(series: TableSeries) -> Arc<Self> {
        let families = MetricFamilies {
            registry: Registry::new(),
            pending: PENDING.int_gauges(),
            oldest_pending_age: OLDEST_PENDING_AGE.gauges(),
            dead: DEAD.int_gauges(),
            published: PUBLISHED.counters(),
            failures: FAILURES.counters(),
            dead_lettered: DEAD_LETTERED.counters(),
            retries_scheduled: RETRIES_SCHEDULED.counters(),
            delivery_latency: DELIVERY_LATENCY.histograms(),
            batch_duration: BATCH_DURATION.histograms(),
            batch_rows: BATCH_ROWS.histograms(),
            database_up: DATABASE_UP.int_gauges(),
            kafka_up: KAFKA_UP.int_gauges(),
            pruned: PRUNED.counters(),
            table_size: TABLE_SIZE.int_gauges(),
            in_flight: IN_FLIGHT.int_gauges(),
            skipped: SKIPPED.int_gauges(),
            role: ROLE.int_gauges(),
            claims_released: CLAIMS_RELEASED.counters(),
            transactions: TRANSACTIONS.counters(),
            checkpoint_recovered: CHECKPOINT_RECOVERED.counters(),
            transaction_duration: TRANSACTION_DURATION.histograms(),
            default_partition_rows: DEFAULT_PARTITION_ROWS.int_gauges(),
            partitions_dropped: PARTITIONS_DROPPED.counters(),
            partitions_kept: PARTITIONS_KEPT.int_gauges(),
            oldest_open_claim: OLDEST_OPEN_CLAIM.gauges(),
            open_claims: Mutex::default(),
        };
        families.register(series);
        families.register_process_and_build();
        Arc::new(families)
    }

    fn register(&self, series: TableSeries) {
        use Fold::{Max, Min, Sum};
        let families: [(Box<dyn Collector>, Fold, bool); 25] = [
            (Box::new(self.role.clone()), Sum, false),
            (Box::new(self.claims_released.clone()), Sum, false),
            (Box::new(self.transactions.clone()), Sum, false),
            (Box::new(self.checkpoint_recovered.clone()), Sum, false),
            (Box::new(self.transaction_duration.clone()), Sum, false),
            (Box::new(self.default_partition_rows.clone()), Sum, false),
            (Box::new(self.partitions_dropped.clone()), Sum, false),
            (Box::new(self.partitions_kept.clone()), Sum, false),
            (Box::new(self.oldest_open_claim.clone()), Max, false),
            (Box::new(self.in_flight.clone()), Sum, false),
            (Box::new(self.skipped.clone()), Sum, false),
            (Box::new(self.pending.clone()), Sum, true),
            (Box::new(self.oldest_pending_age.clone()), Max, true),
            (Box::new(self.dead.clone()), Sum, true),
            (Box::new(self.published.clone()), Sum, false),
            (Box::new(self.failures.clone()), Sum, false),
            (Box::new(self.dead_lettered.clone()), Sum, false),
            (Box::new(self.retries_scheduled.clone()), Sum, false),
            (Box::new(self.delivery_latency.clone()), Sum, false),
            (Box::new(self.batch_duration.clone()), Sum, false),
            (Box::new(self.batch_rows.clone()), Sum, false),
            (Box::new(self.database_up.clone()), Min, false),
            (Box::new(self.kafka_up.clone()), Min, false),
            (Box::new(self.pruned.clone()), Sum, false),
            (Box::new(self.table_size.clone()), Sum, false),
        ];
        for (family, fold, top) in families {
            let collector: Box<dyn Collector> = match series {
                TableSeries::PerTable => family,
                TableSeries::Aggregate => Box::new(Folded {
                    inner: family,
                    fold,
                    top: if top { TOP_TABLES } else { 0 },
                }),
            };
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

    /// The handle of one table's series (created at zero).
    pub fn for_table(self: &Arc<Self>, table: &str) -> Metrics {
        let t = [table];
        let open_claims = Arc::<OpenClaims>::default();
        self.open_claims
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(table.to_owned(), Arc::clone(&open_claims));
        for reason in FailureReason::ALL {
            self.failures.with_label_values(&[table, reason.as_str()]);
        }
        Metrics {
            table: table.to_owned(),
            families: Arc::clone(self),
            pending: self.pending.with_label_values(&t),
            oldest_pending_age: self.oldest_pending_age.with_label_values(&t),
            dead: self.dead.with_label_values(&t),
            dead_lettered: self.dead_lettered.with_label_values(&t),
            retries_scheduled: self.retries_scheduled.with_label_values(&t),
            delivery_latency: self.delivery_latency.with_label_values(&t),
            batch_duration: self.batch_duration.with_label_values(&t),
            batch_rows: self.batch_rows.with_label_values(&t),
            database_up: self.database_up.with_label_values(&t),
            kafka_up: self.kafka_up.with_label_values(&t),
            pruned: self.pruned.with_label_values(&t),
            table_size: self.table_size.with_label_values(&t),
            in_flight: self.in_flight.with_label_values(&t),
            skipped: self.skipped.with_label_values(&t),
            role: self.role.with_label_values(&t),
            claims_released: self.claims_released.with_label_values(&t),
            transactions_committed: self.transactions.with_label_values(&[table, "committed"]),
            transactions_aborted: self.transactions.with_label_values(&[table, "aborted"]),
            transactions_fenced: self.transactions.with_label_values(&[table, "fenced"]),
            checkpoint_recovered: self.checkpoint_recovered.with_label_values(&t),
            transaction_duration: self.transaction_duration.with_label_values(&t),
            default_partition_rows: self.default_partition_rows.with_label_values(&t),
            partitions_dropped: self.partitions_dropped.with_label_values(&t),
            partitions_kept: self.partitions_kept.with_label_values(&t),
            open_claims,
        }
    }

    /// Remove a table the relay no longer serves: its gauges would otherwise
    /// keep reporting (and alerting on) a backlog nobody is draining.
    pub fn forget(&self, table: &str) {
        let t = [table];
        for gauge in [
            &self.pending,
            &self.dead,
            &self.database_up,
            &self.kafka_up,
            &self.table_size,
            &self.in_flight,
            &self.skipped,
            &self.role,
            &self.default_partition_rows,
            &self.partitions_kept,
        ] {
            let _ = gauge.remove_label_values(&t);
        }
        for gauge in [&self.oldest_pending_age, &self.oldest_open_claim] {
            let _ = gauge.remove_label_values(&t);
        }
        self.open_claims
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(table);
    }

    /// Over every table: published rows by topic, retries scheduled, rows
    /// moved to dead.
    pub fn totals(&self) -> (BTreeMap<String, u64>, u64, u64) {
        let mut published = BTreeMap::new();
        for family in self.published.collect() {
            for metric in family.get_metric() {
                let topic = label(metric, "topic").unwrap_or_default().to_owned();
                *published.entry(topic).or_default() += metric.get_counter().get_value() as u64;
            }
        }
        let sum = |vec: &IntCounterVec| -> u64 {
            vec.collect()
                .iter()
                .flat_map(|family| family.get_metric())
                .map(|metric| metric.get_counter().get_value() as u64)
                .sum()
        };
        (
            published,
            sum(&self.retries_scheduled),
            sum(&self.dead_lettered),
        )
    }

    /// Pending rows over every table, and the oldest pending age of any.
    pub fn backlog_total(&self) -> (i64, f64) {
        let values = |family: &dyn Collector| -> Vec<f64> {
            family
                .collect()
                .iter()
                .flat_map(|f| f.get_metric())
                .map(|m| m.get_gauge().get_value())
                .collect()
        };
        let pending = values(&self.pending).iter().sum::<f64>() as i64;
        let oldest = values(&self.oldest_pending_age)
            .into_iter()
            .fold(0.0, f64::max);
        (pending, oldest)
    }

    /// Rows in flight over every table.
    pub fn in_flight_total(&self) -> i64 {
        self.in_flight
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_gauge().get_value() as i64)
            .sum()
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let now = Instant::now();
        for (table, claims) in self
            .open_claims
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
        {
            self.oldest_open_claim
                .with_label_values(&[table])
                .set(claims.oldest_age(now).as_secs_f64());
        }
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding into memory cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

/// One table's series.
pub struct Metrics {
    table: String,
    families: Arc<MetricFamilies>,
    pub pending: IntGauge,
    pub oldest_pending_age: Gauge,
    pub dead: IntGauge,
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
    pub skipped: IntGauge,
    pub role: IntGauge,
    pub claims_released: IntCounter,
    pub transactions_committed: IntCounter,
    pub transactions_aborted: IntCounter,
    pub transactions_fenced: IntCounter,
    pub checkpoint_recovered: IntCounter,
    pub transaction_duration: Histogram,
    pub default_partition_rows: IntGauge,
    pub partitions_dropped: IntCounter,
    pub partitions_kept: IntGauge,
    pub open_claims: Arc<OpenClaims>,
}

impl Metrics {
    /// The series of `table` in a registry of its own.
    #[cfg(test)]
    pub fn new(table: &str) -> Self {
        MetricFamilies::new(TableSeries::PerTable).for_table(table)
    }

    pub fn observe_backlog(&self, backlog: &Backlog) {
        self.pending.set(backlog.pending);
        self.dead.set(backlog.dead);
        self.oldest_pending_age
            .set(backlog.oldest_pending_age_seconds.unwrap_or(0.0));
    }

    pub fn record_failure(&self, reason: FailureReason) {
        self.families
            .failures
            .with_label_values(&[&self.table, reason.as_str()])
            .inc();
    }

    /// The counter of rows this table published to `topic`.
    pub fn published(&self, topic: &str) -> IntCounter {
        self.families
            .published
            .with_label_values(&[&self.table, topic])
    }

    /// The whole registry (every table) in Prometheus text format.
    #[cfg(test)]
    pub fn render(&self) -> String {
        self.families.render()
    }
}

fn label<'a>(metric: &'a Metric, name: &str) -> Option<&'a str> {
    metric
        .get_label()
        .iter()
        .find(|pair| pair.get_name() == name)
        .map(LabelPair::get_value)
}

/// A family exported folded over its tables: `table="*"` per remaining
/// label set, and, for `top` > 0, the `top` tables with the highest values
/// as they are.
struct Folded {
    inner: Box<dyn Collector>,
    fold: Fold,
    top: usize,
}

impl Collector for Folded {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.inner
            .collect()
            .into_iter()
            .map(|mut family| {
                let kind = family.get_field_type();
                let metrics = family.take_metric();
                let mut folded = fold(&metrics, kind, self.fold);
                folded.extend(top_tables(metrics, self.top));
                family.set_metric(folded);
                family
            })
            .collect()
    }
}

/// The label set of `metric` with `table` replaced by [`ALL_TABLES`].
fn folded_labels(metric: &Metric) -> Vec<(String, String)> {
    metric
        .get_label()
        .iter()
        .map(|pair| {
            let value = if pair.get_name() == "table" {
                ALL_TABLES
            } else {
                pair.get_value()
            };
            (pair.get_name().to_owned(), value.to_owned())
        })
        .collect()
}

fn fold(metrics: &[Metric], kind: MetricType, rule: Fold) -> Vec<Metric> {
    let mut groups: BTreeMap<Vec<(String, String)>, Metric> = BTreeMap::new();
    for metric in metrics {
        let key = folded_labels(metric);
        match groups.get_mut(&key) {
            None => {
                let mut first = metric.clone();
                let labels: Vec<LabelPair> = key
                    .iter()
                    .map(|(name, value)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(name.clone());
                        pair.set_value(value.clone());
                        pair
                    })
                    .collect();
                first.set_label(labels);
                groups.insert(key, first);
            }
            Some(into) => merge(into, metric, kind, rule),
        }
    }
    groups.into_values().collect()
}

fn merge(into: &mut Metric, metric: &Metric, kind: MetricType, rule: Fold) {
    let combine = |a: f64, b: f64| match rule {
        Fold::Sum => a + b,
        Fold::Max => a.max(b),
        Fold::Min => a.min(b),
    };
    match kind {
        MetricType::COUNTER => {
            let mut counter = into.get_counter().clone();
            counter.set_value(counter.get_value() + metric.get_counter().get_value());
            into.set_counter(counter);
        }
        MetricType::GAUGE => {
            let mut gauge = into.get_gauge().clone();
            gauge.set_value(combine(gauge.get_value(), metric.get_gauge().get_value()));
            into.set_gauge(gauge);
        }
        MetricType::HISTOGRAM => {
            let from = metric.get_histogram();
            let mut histogram = into.get_histogram().clone();
            histogram.set_sample_count(histogram.get_sample_count() + from.get_sample_count());
            histogram.set_sample_sum(histogram.get_sample_sum() + from.get_sample_sum());
            let buckets = histogram
                .get_bucket()
                .iter()
                .zip(from.get_bucket())
                .map(|(bucket, other)| {
                    let mut bucket = bucket.clone();
                    bucket.set_cumulative_count(
                        bucket.get_cumulative_count() + other.get_cumulative_count(),
                    );
                    bucket
                })
                .collect();
            histogram.set_bucket(buckets);
            into.set_histogram(histogram);
        }
        _ => {}
    }
}

/// The `top` gauges with the highest non-zero values, labelled as they are.
fn top_tables(mut metrics: Vec<Metric>, top: usize) -> Vec<Metric> {
    if top == 0 {
        return Vec::new();
    }
    metrics.retain(|m| m.get_gauge().get_value() > 0.0);
    metrics.sort_by(|a, b| {
        b.get_gauge()
            .get_value()
            .total_cmp(&a.get_gauge().get_value())
    });
    metrics.truncate(top);
    metrics
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
        assert!(build.ends_with(" 1"), "{build}");
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

    #[test]
    fn aggregate_series_fold_the_tables_and_keep_the_furthest_behind() {
        let families = MetricFamilies::new(TableSeries::Aggregate);
        let tables: Vec<Metrics> = (0..12)
            .map(|n| families.for_table(&format!("tenant_{n:02}.outbox")))
            .collect();
        for (n, table) in tables.iter().enumerate() {
            table.pending.set(n as i64);
            table.oldest_pending_age.set(n as f64);
            table.published("orders").inc_by(2);
            table.delivery_latency.observe(0.002);
            table.database_up.set(1);
        }
        tables[4].database_up.set(0);
        let text = families.render();
        assert!(
            text.contains("outbox_pending_messages{table=\"*\"} 66"),
            "{text}"
        );
        assert!(
            text.contains("outbox_oldest_pending_age_seconds{table=\"*\"} 11"),
            "{text}"
        );
        assert!(text.contains("outbox_database_up{table=\"*\"} 0"), "{text}");
        assert!(text.contains("outbox_published_messages_total{table=\"*\",topic=\"orders\"} 24"));
        assert!(text.contains("outbox_delivery_latency_seconds_count{table=\"*\"} 12"));
        // The ten tables furthest behind keep their own backlog series.
        assert!(text.contains("outbox_oldest_pending_age_seconds{table=\"tenant_11.outbox\"} 11"));
        assert!(text.contains("outbox_pending_messages{table=\"tenant_02.outbox\"} 2"));
        assert!(!text.contains("table=\"tenant_01.outbox\""), "{text}");
        assert!(!text.contains("outbox_delivery_latency_seconds_count{table=\"tenant_"));
    }

    #[test]
    fn a_forgotten_table_leaves_no_backlog_behind() {
        let families = MetricFamilies::new(TableSeries::PerTable);
        let gone = families.for_table("gone.outbox");
        let kept = families.for_table("kept.outbox");
        gone.pending.set(5);
        kept.pending.set(1);
        families.forget("gone.outbox");
        let text = families.render();
        assert!(!text.contains("outbox_pending_messages{table=\"gone.outbox\"}"));
        assert!(text.contains("outbox_pending_messages{table=\"kept.outbox\"} 1"));
    }
}
