//! Every metric family the relay exports, as data: name (with the
//! `outbox_` prefix and base unit), help text, labels and buckets.
//! The metrics module builds its families from these.

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const BATCH_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Most families carry the table only.
const TABLE: &[&str] = &["table"];

/// One metric family.
pub struct Definition {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    /// Histograms only.
    pub buckets: &'static [f64],
}

// The definitions are fixed at compile time: a failure to build one is a
// bug, caught by every test that builds the metrics.
impl Definition {
    pub fn int_gauges(&self) -> IntGaugeVec {
        IntGaugeVec::new(self.opts(), self.labels).expect("valid metric")
    }

    pub fn gauges(&self) -> GaugeVec {
        GaugeVec::new(self.opts(), self.labels).expect("valid metric")
    }

    pub fn counters(&self) -> IntCounterVec {
        IntCounterVec::new(self.opts(), self.labels).expect("valid metric")
    }

    pub fn histograms(&self) -> HistogramVec {
        let opts = HistogramOpts::new(self.name, self.help).buckets(self.buckets.to_vec());
        HistogramVec::new(opts, self.labels).expect("valid metric")
    }

    fn opts(&self) -> Opts {
        Opts::new(self.name, self.help)
    }
}

pub const PENDING: Definition = Definition {
    name: "outbox_pending_messages",
    help: "Rows waiting to be published.",
    labels: TABLE,
    buckets: &[],
};

pub const OLDEST_PENDING_AGE: Definition = Definition {
    name: "outbox_oldest_pending_age_seconds",
    help: "Age of the oldest pending row (0 when nothing is pending).",
    labels: TABLE,
    buckets: &[],
};

pub const DEAD: Definition = Definition {
    name: "outbox_dead_messages",
    help: "Rows in the dead state, waiting for an operator (`requeue`).",
    labels: TABLE,
    buckets: &[],
};

pub const PUBLISHED: Definition = Definition {
    name: "outbox_published_messages_total",
    help: "Rows published to Kafka and marked published.",
    labels: &["table", "topic"],
    buckets: &[],
};

pub const FAILURES: Definition = Definition {
    name: "outbox_publish_failures_total",
    help: "Failed publish attempts, by reason.",
    labels: &["table", "reason"],
    buckets: &[],
};

pub const DEAD_LETTERED: Definition = Definition {
    name: "outbox_dead_lettered_messages_total",
    help: "Rows this relay moved to the dead state.",
    labels: TABLE,
    buckets: &[],
};

pub const RETRIES_SCHEDULED: Definition = Definition {
    name: "outbox_retries_scheduled_total",
    help: "Failed rows scheduled for another attempt.",
    labels: TABLE,
    buckets: &[],
};

pub const DELIVERY_LATENCY: Definition = Definition {
    name: "outbox_delivery_latency_seconds",
    help: "Time from a row's created_at to Kafka's acknowledgement.",
    labels: TABLE,
    buckets: LATENCY_BUCKETS,
};

pub const BATCH_DURATION: Definition = Definition {
    name: "outbox_batch_duration_seconds",
    help: "Time to claim, publish and record one batch.",
    labels: TABLE,
    buckets: BATCH_DURATION_BUCKETS,
};

pub const BATCH_ROWS: Definition = Definition {
    name: "outbox_batch_rows",
    help: "Rows claimed per non-empty batch.",
    labels: TABLE,
    buckets: BATCH_SIZE_BUCKETS,
};

pub const DATABASE_UP: Definition = Definition {
    name: "outbox_database_up",
    help: "1 when the last PostgreSQL round trip succeeded.",
    labels: TABLE,
    buckets: &[],
};

pub const KAFKA_UP: Definition = Definition {
    name: "outbox_kafka_up",
    help: "1 when a Kafka broker answered the last probe or delivery.",
    labels: TABLE,
    buckets: &[],
};

pub const PRUNED: Definition = Definition {
    name: "outbox_pruned_messages_total",
    help: "Published rows deleted by retention.",
    labels: TABLE,
    buckets: &[],
};

pub const TABLE_SIZE: Definition = Definition {
    name: "outbox_table_size_bytes",
    help: "Total size of the outbox table with its indexes and TOAST.",
    labels: TABLE,
    buckets: &[],
};

pub const IN_FLIGHT: Definition = Definition {
    name: "outbox_in_flight_messages",
    help: "Rows handed to the producer and not yet recorded.",
    labels: TABLE,
    buckets: &[],
};

pub const SKIPPED: Definition = Definition {
    name: "outbox_skipped_messages",
    help: "Pending rows PostgreSQL refuses to update at all (not even to dead): skipped, their keys held, retried every --retry-backoff-max-secs.",
    labels: TABLE,
    buckets: &[],
};

pub const ROLE: Definition = Definition {
    name: "outbox_relay_role",
    help: "1 while this replica leads its table (claims), 0 while it stands by.",
    labels: TABLE,
    buckets: &[],
};

pub const CLAIMS_RELEASED: Definition = Definition {
    name: "outbox_claims_released_total",
    help: "Batches rolled back unrecorded because their acks took longer than --claim-timeout-secs (their rows stay pending).",
    labels: TABLE,
    buckets: &[],
};

pub const TRANSACTIONS: Definition = Definition {
    name: "outbox_transactions_total",
    help: "Kafka transactions of --exactly-once batches, by outcome: committed, aborted (a row failed, or the broker did; nothing of it is visible to read_committed consumers) or fenced (a newer producer took the table's transactional.id over).",
    labels: &["table", "outcome"],
    buckets: &[],
};

pub const CHECKPOINT_RECOVERED: Definition = Definition {
    name: "outbox_checkpoint_recovered_rows_total",
    help: "Rows marked published from the --exactly-once checkpoint without being sent: Kafka had committed them before PostgreSQL marked them (a crash, a lost connection).",
    labels: TABLE,
    buckets: &[],
};

pub const TRANSACTION_DURATION: Definition = Definition {
    name: "outbox_transaction_duration_seconds",
    help: "Time from a --exactly-once batch's begin_transaction to its commit or abort.",
    labels: TABLE,
    buckets: BATCH_DURATION_BUCKETS,
};

pub const DEFAULT_PARTITION_ROWS: Definition = Definition {
    name: "outbox_default_partition_rows",
    help: "Rows in the default partition of a partitioned outbox table (up to 10000): rows whose created_at had no range partition.",
    labels: TABLE,
    buckets: &[],
};

pub const PARTITIONS_DROPPED: Definition = Definition {
    name: "outbox_partitions_dropped_total",
    help: "Partitions dropped by retention (every row published and older than --retention).",
    labels: TABLE,
    buckets: &[],
};

pub const PARTITIONS_KEPT: Definition = Definition {
    name: "outbox_partitions_kept",
    help: "Partitions past --retention kept because they hold pending or dead rows.",
    labels: TABLE,
    buckets: &[],
};

pub const OLDEST_OPEN_CLAIM: Definition = Definition {
    name: "outbox_oldest_open_claim_seconds",
    help: "Age of this relay's oldest open claim transaction (0 when none is open).",
    labels: TABLE,
    buckets: &[],
};
