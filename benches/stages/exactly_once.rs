//! Stage 16, exactly once (`OUTBOX_BENCH_ONLY=exactly-once`): on the shared
//! Apache Kafka 2.3 broker (its log on disk):
//! - the one-relay drain with `--exactly-once` beside the at-least-once
//!   drain, interleaved rounds, medians;
//! - the Kafka transactions per second the exactly-once drain commits (one
//!   per batch: a drain's batches are full);
//! - commit → receipt at 1,000 rows/s by a consumer with
//!   `isolation.level=read_committed`, beside the at-least-once relay's
//!   on the same broker (what the broker's own tail adds).

use serde_json::json;

use super::common;
use super::{compare_drains, ratio, round, sustained_latency_on, Cluster, LatencySetup, Quantiles};

pub async fn exactly_once_stage(rows: i64, batch: usize, repeat: u64) -> serde_json::Value {
    let at_least_once = Cluster {
        brokers: common::apache_kafka::plaintext(),
        ..Cluster::shared()
    };
    let exactly_once = Cluster {
        relay_args: vec!["--exactly-once".into()],
        ..at_least_once.clone()
    };
    let labels = ("at least once", "exactly once");
    let (plain, once) =
        compare_drains((&at_least_once, &exactly_once), labels, rows, batch, repeat).await;
    let setup = LatencySetup {
        brokers: Some(common::apache_kafka::plaintext()),
        relay_args: vec!["--exactly-once".into()],
        read_committed: true,
    };
    let latency = sustained_latency_on(&setup, 1_000, 10, batch).await;
    let plain_setup = LatencySetup {
        brokers: Some(common::apache_kafka::plaintext()),
        ..LatencySetup::default()
    };
    let plain_latency = sustained_latency_on(&plain_setup, 1_000, 10, batch).await;
    let transactions_per_sec = once / batch as f64;
    let Quantiles { p50_ms, p99_ms, .. } = latency.from_commit;
    let plain_quantiles = plain_latency.from_commit;
    eprintln!(
        "bench: exactly once on Apache Kafka 2.3: drain {once:.0} rows/s = {:.2} of at least once ({plain:.0}); {transactions_per_sec:.0} transactions/s at batch {batch}; commit → read_committed receipt at 1,000 rows/s p50 {p50_ms:.1} ms, p99 {p99_ms:.1} ms (at least once: p50 {:.1} ms, p99 {:.1} ms)",
        once / plain,
        plain_quantiles.p50_ms,
        plain_quantiles.p99_ms
    );
    json!({
        "drain_at_least_once_rows_per_sec": round(plain),
        "drain_exactly_once_rows_per_sec": round(once),
        "exactly_once_vs_at_least_once": ratio(once, plain),
        "transactions_per_sec": round(transactions_per_sec),
        "latency_1000_per_sec_read_committed": {
            "p50_ms": round(p50_ms),
            "p99_ms": round(p99_ms),
            "samples": latency.samples,
        },
        "latency_1000_per_sec_at_least_once": {
            "p50_ms": round(plain_quantiles.p50_ms),
            "p99_ms": round(plain_quantiles.p99_ms),
            "samples": plain_latency.samples,
        },
    })
}
