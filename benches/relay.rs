//! The benchmark: `cargo bench --bench relay`.
//!
//! Uses the services `tests/services.sh` runs (starting its own when
//! `OUTBOX_TEST_DATABASE_URL` is unset) and measures, in one run so the
//! ratios mean something:
//! 1. ceilings, no Kafka, same batch size: `db_ceiling_rows_per_sec`, the
//!    relay's own claim (per-key rule included) + mark SQL; and
//!    `plain_ceiling_rows_per_sec`, the database's own limit for the table:
//!    `ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED` + mark by id;
//! 2. `drain_rows_per_sec`: N pre-inserted rows (≈200-byte JSON, 1,000 keys)
//!    drained by one relay process, from the first batch recorded to the
//!    last (start-up is not counted: the ceilings have none), with every row
//!    read back from Kafka and per-key order checked; its ratio to both
//!    ceilings, and the machine's and the broker's CPU during it;
//! 3. replicas: the drain with one, two and three relays (one leads), and
//!    failover: the leader SIGKILLed under 1,000 rows/s, time until a standby
//!    records rows;
//! 4. sustained load with NOTIFY wake-ups: a writer inserts at a fixed rate
//!    and a consumer measures latency from the moment the writer's COMMIT
//!    returned (the headline) and from the insert timestamp each payload
//!    carries, to receipt;
//! 5. relay cost: peak RSS and CPU seconds per 100k rows while draining;
//! 6. TLS: the one-relay drain with TLS to PostgreSQL (`verify-full`) and to
//!    Kafka (`security.protocol=SSL`, through a TLS-terminating proxy in front
//!    of Tansu) against the same drain without, on private services;
//! 7. poolers: the drain through PgBouncer in transaction mode with
//!    `--pooler transaction` against the direct drain;
//! 8. `--on-publish delete` against `mark`: both ceilings and the drain in
//!    both modes;
//! 9. layouts: the drain with a bytea payload and on an adopted Debezium
//!    table (`--layout debezium`) beside the default table;
//! 10. `wal_level`: the plain ceiling and the drain on two private servers,
//!     `wal_level=replica` and `wal_level=logical`;
//! 11. many tables (`stages/many_tables.rs`): fairness, a quiet table's
//!     commit → publish latency while another drains a backlog
//!     (OUTBOX_BENCH_FAIR_BACKLOG, 1,000,000 rows); and tenants,
//!     OUTBOX_BENCH_TENANTS (1,000) tenant tables served through one
//!     pattern: start-up, connections, idle CPU and memory, metric series,
//!     and the latency of a row in a random tenant;
//! 12. brokers: the one-relay drain on Tansu beside the drain on the real
//!     Apache Kafka 2.3 of the test services, plaintext and over SASL_SSL
//!     (SCRAM-SHA-512), interleaved rounds.
//!
//! 13. RabbitMQ (`stages/rabbitmq.rs`): the drain into a durable queue with
//!     confirms beside a bare publisher of the same crate, the plain ceiling,
//!     and commit → consumer latency at 1,000 rows/s.
//!
//! 14. Redis (`stages/redis.rs`): per mode (stream, list), the drain with
//!     and without dedup beside a bare pipelined writer of the same crate,
//!     the plain ceiling, commit → consumer latency at 1,000 rows/s, and
//!     what the dedup records cost in memory.
//!
//! 15. NATS JetStream (`stages/nats.rs`): the drain into a file stream
//!     beside a bare publisher of the same crate, the plain ceiling, and
//!     commit → consumer latency at 1,000 rows/s.
//!
//! 16. Exactly once (`stages/exactly_once.rs`): on the real Apache Kafka,
//!     the drain with `--exactly-once` beside the at-least-once drain,
//!     commit → read-committed consumer latency at 1,000 rows/s, and the
//!     transactions per second the drain commits.
//!
//! `OUTBOX_BENCH_ONLY=drain` (stages 1–2), `=replicas`, `=tls`, `=pooler`,
//! `=delete`, `=layouts`, `=wal-level`, `=fairness`, `=tenants`, `=brokers`,
//! `=rabbitmq`, `=redis`, `=nats` or `=exactly-once` runs one stage alone.
//!
//! Knobs (environment): OUTBOX_BENCH_ROWS (200000; 0 runs only the
//! sustained-load stages), OUTBOX_BENCH_BATCH
//! (1000), OUTBOX_BENCH_RATES (1000,10000), OUTBOX_BENCH_SECONDS (10),
//! OUTBOX_BENCH_RELAY_ARGS (extra `run` flags, space-separated, e.g.
//! `--kafka-option linger.ms=5`; one of the benchmark's own flags given
//! there replaces it), OUTBOX_BENCH_FETCH_WAIT_MS (the latency
//! consumer's fetch.wait.max.ms, 1), OUTBOX_RELAY_BINARY (another build of
//! the relay to measure, for side-by-side comparisons).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "stages/exactly_once.rs"]
mod exactly_once_stage;
#[path = "stages/many_tables.rs"]
mod many_tables;
#[path = "stages/nats.rs"]
mod nats_stage;
#[path = "stages/rabbitmq.rs"]
mod rabbitmq_stage;
#[path = "stages/redis.rs"]
mod redis_stage;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::certs::Certificates;
use common::pgbouncer::PgBouncer;
use common::private_broker::{PrivateBroker, TlsProxy};
use common::private_pg::{PrivatePostgres, Tls};
use common::{load, TestEnv, TopicReader};
use outbox_relay::source::{Database, Results};
use serde_json::json;

const KEYS: i64 = 1_000;
const PARTITIONS: i32 = 6;

/// `run` flags for every relay the benchmark starts: the relay's default
/// timers (the test harness shortens them), then `extra` and
/// OUTBOX_BENCH_RELAY_ARGS, which may override a default.
fn relay_args(batch: usize, extra: &[&str]) -> Vec<String> {
    let batch = batch.to_string();
    let defaults = [
        ("--batch-size", batch.as_str()),
        ("--log-level", "warn"),
        ("--poll-interval-ms", "500"),
        ("--stats-interval-ms", "5000"),
    ];
    let mut given: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    if let Ok(more) = std::env::var("OUTBOX_BENCH_RELAY_ARGS") {
        given.extend(more.split_whitespace().map(str::to_owned));
    }
    let mut args: Vec<String> = defaults
        .iter()
        .filter(|(flag, _)| !given.iter().any(|g| g == flag))
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect();
    args.extend(given);
    args
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let services = Services::ensure();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(run());
    drop(services);
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

async fn run() -> serde_json::Value {
    let rows = env_number("OUTBOX_BENCH_ROWS", 200_000) as i64;
    let batch = env_number("OUTBOX_BENCH_BATCH", 1_000) as usize;
    let seconds = env_number("OUTBOX_BENCH_SECONDS", 10);
    let rates: Vec<u64> = std::env::var("OUTBOX_BENCH_RATES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();

    let repeat = env_number("OUTBOX_BENCH_REPEAT", 3).max(1);
    // `OUTBOX_BENCH_ONLY=tls` or `=pooler`: one comparison stage alone.
    match std::env::var("OUTBOX_BENCH_ONLY").as_deref() {
        Ok("tls") => return json!({ "rows": rows, "tls": tls_stage(rows, batch, repeat).await }),
        Ok("pooler") => {
            return json!({ "rows": rows, "pooler": pooler_stage(rows, batch, repeat).await })
        }
        Ok("replicas") => {
            return json!({ "rows": rows, "replicas": replicas_stage(rows, batch, repeat).await })
        }
        Ok("drain") => {
            let (ceiling, plain, one) = throughput_rounds(rows, batch, repeat).await;
            return json!({
                "rows": rows,
                "plain_ceiling_rows_per_sec": round(plain),
                "db_ceiling_rows_per_sec": round(ceiling),
                "drain_rows_per_sec": round(one.rows_per_sec),
                "drain_vs_plain_ceiling": ratio(one.rows_per_sec, plain),
                "drain_machine_cpu_busy": ratio(one.machine_busy, 1.0),
                "drain_broker_cpu_seconds": one.broker_cpu_seconds,
                "drain_relay_cpu_seconds": one.cpu_seconds,
                "drain_relay_peak_rss_mib": round(one.peak_rss_mib),
            });
        }
        Ok("wal-level") => {
            return json!({ "rows": rows, "wal_level": wal_level_stage(rows, batch, repeat).await })
        }
        Ok("layouts") => {
            return json!({ "rows": rows, "layouts": layouts_stage(rows, batch, repeat).await })
        }
        Ok("delete") => {
            return json!({ "rows": rows, "on_publish_delete": delete_stage(rows, batch, repeat).await })
        }
        Ok("fairness") => return json!({ "fairness": fairness(batch).await }),
        Ok("brokers") => {
            return json!({ "rows": rows, "brokers": brokers_stage(rows, batch, repeat).await })
        }
        Ok("tenants") => return json!({ "tenants": tenants(batch).await }),
        Ok("rabbitmq") => {
            return json!({ "rows": rows, "rabbitmq": rabbitmq_stage::rabbitmq_stage(rows, batch, repeat).await })
        }
        Ok("redis") => {
            return json!({ "rows": rows, "redis": redis_stage::redis_stage(rows, batch, repeat).await })
        }
        Ok("nats") => {
            return json!({ "rows": rows, "nats": nats_stage::nats_stage(rows, batch, repeat).await })
        }
        Ok("exactly-once") => {
            return json!({ "rows": rows, "exactly_once": exactly_once_stage::exactly_once_stage(rows, batch, repeat).await })
        }
        _ => {}
    }
    if rows == 0 {
        // Latency only: `OUTBOX_BENCH_ROWS=0` skips the throughput stages.
        return json!({ "sustained": sustained_stages(&rates, seconds, batch).await });
    }
    eprintln!("bench: {rows} rows, batch {batch}, {KEYS} keys, throughput stages {repeat} times (medians)");
    let (ceiling, plain_ceiling, one) = throughput_rounds(rows, batch, repeat).await;
    let replicas = replicas_stage(rows, batch, repeat).await;
    let sustained = sustained_stages(&rates, seconds, batch).await;
    let tls = tls_stage(rows, batch, repeat).await;
    let pooler = pooler_stage(rows, batch, repeat).await;
    let on_publish_delete = delete_stage(rows, batch, repeat).await;
    let layouts = layouts_stage(rows, batch, repeat).await;
    let wal_level = wal_level_stage(rows, batch, repeat).await;
    let fairness = fairness(batch).await;
    let tenants = tenants(batch).await;
    let brokers = brokers_stage(rows, batch, repeat).await;
    let rabbitmq = rabbitmq_stage::rabbitmq_stage(rows, batch, repeat).await;
    let redis = redis_stage::redis_stage(rows, batch, repeat).await;
    let nats = nats_stage::nats_stage(rows, batch, repeat).await;
    let exactly_once = exactly_once_stage::exactly_once_stage(rows, batch, repeat).await;

    let cpu_per_100k = one.cpu_seconds / rows as f64 * 100_000.0;
    eprintln!(
        "\nsummary: plain ceiling {plain_ceiling:.0}/s | relay-SQL ceiling {ceiling:.0}/s | drain {:.0}/s ({:.2} of plain) | 3 replicas {}/s | relay peak RSS {:.1} MiB, {:.2} CPU s per 100k rows",
        one.rows_per_sec,
        one.rows_per_sec / plain_ceiling,
        replicas["drain_3_relays_rows_per_sec"],
        one.peak_rss_mib,
        cpu_per_100k
    );
    json!({
        "rows": rows,
        "batch_size": batch,
        "keys": KEYS,
        "partitions": PARTITIONS,
        "throughput_rounds": repeat,
        "plain_ceiling_rows_per_sec": round(plain_ceiling),
        "db_ceiling_rows_per_sec": round(ceiling),
        "drain_rows_per_sec": round(one.rows_per_sec),
        "drain_vs_plain_ceiling": ratio(one.rows_per_sec, plain_ceiling),
        "drain_vs_ceiling": ratio(one.rows_per_sec, ceiling),
        "replicas": replicas,
        "sustained": sustained,
        "tls": tls,
        "pooler": pooler,
        "on_publish_delete": on_publish_delete,
        "layouts": layouts,
        "wal_level": wal_level,
        "fairness": fairness,
        "tenants": tenants,
        "brokers": brokers,
        "rabbitmq": rabbitmq,
        "redis": redis,
        "nats": nats,
        "exactly_once": exactly_once,
        "drain_machine_cpu_busy": ratio(one.machine_busy, 1.0),
        "drain_broker_cpu_seconds_per_100k_rows": one
            .broker_cpu_seconds
            .map(|cpu| ratio(cpu / rows as f64 * 100_000.0, 1.0)),
        "relay_peak_rss_mib": round(one.peak_rss_mib),
        "relay_cpu_seconds_per_100k_rows": (cpu_per_100k * 100.0).round() / 100.0,
    })
}

async fn fairness(batch: usize) -> serde_json::Value {
    let backlog = env_number("OUTBOX_BENCH_FAIR_BACKLOG", 1_000_000) as i64;
    many_tables::fairness_stage(backlog, batch).await
}

async fn tenants(batch: usize) -> serde_json::Value {
    let count = env_number("OUTBOX_BENCH_TENANTS", 1_000) as usize;
    many_tables::tenants_stage(count, batch).await
}

/// The relay-SQL ceiling, the plain ceiling and the one-relay drain, in
/// interleaved rounds so slow phases of a noisy machine hit all alike;
/// medians (the drain's median round whole).
async fn throughput_rounds(rows: i64, batch: usize, repeat: u64) -> (f64, f64, Drain) {
    let (mut ceilings, mut plain_ceilings, mut drains) = (Vec::new(), Vec::new(), Vec::new());
    let url = common::database_url();
    for round in 1..=repeat {
        let ceiling = db_ceiling_on(&url, rows, batch, false).await;
        let plain = plain_ceiling_on(&url, rows, batch, false).await;
        let one = drain(rows, batch, 1).await;
        eprintln!(
            "bench: round {round}: relay-SQL ceiling {ceiling:.0} rows/s, plain ceiling {plain:.0} rows/s, drain {:.0} rows/s (machine CPU {:.0} % busy, broker {:.2} CPU s)",
            one.rows_per_sec,
            one.machine_busy * 100.0,
            one.broker_cpu_seconds.unwrap_or(f64::NAN)
        );
        ceilings.push(ceiling);
        plain_ceilings.push(plain);
        drains.push(one);
    }
    let ceiling = median(ceilings);
    let plain_ceiling = median(plain_ceilings);
    drains.sort_by(|a, b| a.rows_per_sec.total_cmp(&b.rows_per_sec));
    let one = drains.swap_remove(drains.len() / 2);
    (ceiling, plain_ceiling, one)
}

/// `a / b`, to two places.
fn ratio(a: f64, b: f64) -> f64 {
    (a / b * 100.0).round() / 100.0
}

/// The drain with one, two and three replicas (the default leader
/// election), interleaved rounds, medians; then failover: SIGKILL the leader
/// under about 1,000 rows/s, `repeat` times.
async fn replicas_stage(rows: i64, batch: usize, repeat: u64) -> serde_json::Value {
    let mut rates: [Vec<f64>; 3] = Default::default();
    for round in 1..=repeat {
        for (relays, rates) in (1..=3).zip(rates.iter_mut()) {
            let rate = drain(rows, batch, relays).await.rows_per_sec;
            eprintln!("bench: round {round}: drain with {relays} replica(s): {rate:.0} rows/s");
            rates.push(rate);
        }
    }
    let [one, two, three] = rates.map(median);
    let failovers = failovers(batch, repeat).await;
    let max = failovers.iter().copied().fold(0.0, f64::max);
    json!({
        "drain_1_relay_rows_per_sec": round(one),
        "drain_2_relays_rows_per_sec": round(two),
        "drain_3_relays_rows_per_sec": round(three),
        "three_vs_one": ratio(three, one),
        "failover_ms": failovers.iter().map(|f| round(f * 1000.0)).collect::<Vec<_>>(),
        "failover_median_ms": round(median(failovers) * 1000.0),
        "failover_max_ms": round(max * 1000.0),
    })
}

/// Two replicas under about 1,000 rows/s; `times` times, SIGKILL the leader
/// and measure, on the database's clock, from the kill to the first row a
/// standby marks published; a new standby replaces the killed one. Then
/// everything committed must have arrived, in order per key.
async fn failovers(batch: usize, times: u64) -> Vec<f64> {
    let env = fresh_env().await;
    let topic = common::unique_name("failover");
    common::kafka::create_topic(&env.brokers, &topic, PARTITIONS).await;
    let load = load::Load::start(&env.database_url, &env.table, &topic, 10, KEYS).await;
    let args = relay_args(batch, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut relays = Vec::new();
    for _ in 0..2 {
        let mut relay = env.start_relay(&args);
        relay.wait_ready().await;
        relays.push(relay);
    }
    let first_published_after = format!(
        "SELECT extract(epoch FROM min(published_at))::float8 FROM {} WHERE published_at > to_timestamp($1)",
        env.table
    );
    let mut failovers = Vec::new();
    for round in 1..=times {
        let leader = common::wait_for("one leader", Duration::from_secs(30), || async {
            for (i, relay) in relays.iter().enumerate() {
                if relay.metric("outbox_relay_role").await == Some(1.0) {
                    return Some(i);
                }
            }
            None
        })
        .await;
        let killed_at = db_epoch(&env, "clock_timestamp()").await;
        relays.remove(leader).signal("KILL");
        let resumed = common::wait_for_every(
            "a standby to publish",
            Duration::from_secs(30),
            Duration::from_millis(10),
            || async {
                let row = env
                    .client
                    .query_one(&first_published_after, &[&killed_at])
                    .await
                    .expect("first row after the kill");
                row.get::<_, Option<f64>>(0)
            },
        )
        .await;
        let failover = resumed - killed_at;
        eprintln!(
            "bench: failover {round}: rows flow again {:.0} ms after the SIGKILL",
            failover * 1000.0
        );
        failovers.push(failover);
        let mut replacement = env.start_relay(&args);
        replacement.wait_ready().await;
        relays.push(replacement);
    }
    load::stop_drain_and_verify(&env, load, &topic).await;
    drop(relays);
    clean_up(env, Some(&topic)).await;
    failovers
}

/// `--on-publish delete` against `mark`: the relay-SQL and plain ceilings
/// and the one-relay drain in both modes, interleaved rounds, medians.
async fn delete_stage(rows: i64, batch: usize, repeat: u64) -> serde_json::Value {
    let deleting = Cluster {
        relay_args: vec!["--on-publish".into(), "delete".into()],
        ..Cluster::shared()
    };
    let url = common::database_url();
    // [relay mark, relay delete, plain mark, plain delete, drain mark, drain delete]
    let mut samples: [Vec<f64>; 6] = Default::default();
    for round in 1..=repeat {
        let measured = [
            db_ceiling_on(&url, rows, batch, false).await,
            db_ceiling_on(&url, rows, batch, true).await,
            plain_ceiling_on(&url, rows, batch, false).await,
            plain_ceiling_on(&url, rows, batch, true).await,
            drain(rows, batch, 1).await.rows_per_sec,
            drain_on(&deleting, rows, batch, 1).await.rows_per_sec,
        ];
        let [rm, rd, pm, pd, dm, dd] = measured;
        eprintln!(
            "bench: round {round}: relay-SQL ceiling mark {rm:.0} / delete {rd:.0}; plain ceiling mark {pm:.0} / delete {pd:.0}; drain mark {dm:.0} / delete {dd:.0} rows/s"
        );
        for (sample, value) in samples.iter_mut().zip(measured) {
            sample.push(value);
        }
    }
    let [rm, rd, pm, pd, dm, dd] = samples.map(median);
    json!({
        "db_ceiling_mark_rows_per_sec": round(rm),
        "db_ceiling_delete_rows_per_sec": round(rd),
        "plain_ceiling_mark_rows_per_sec": round(pm),
        "plain_ceiling_delete_rows_per_sec": round(pd),
        "drain_mark_rows_per_sec": round(dm),
        "drain_delete_rows_per_sec": round(dd),
        "delete_vs_mark": ratio(dd, dm),
        "plain_ceiling_delete_vs_mark": ratio(pd, pm),
    })
}

/// The plain ceiling and the one-relay drain on two private servers that
/// differ only in `wal_level` (`replica`, the default, and `logical`, as on
/// databases that also feed CDC); interleaved rounds, medians.
async fn wal_level_stage(rows: i64, batch: usize, repeat: u64) -> serde_json::Value {
    let mut report = serde_json::Map::new();
    let servers: Vec<(&str, PrivatePostgres)> = ["replica", "logical"]
        .into_iter()
        .map(|level| {
            let settings = format!("wal_level = {level}\nmax_wal_senders = 4");
            let pg = PrivatePostgres::start_configured(50, None, &settings);
            pg.psql("GRANT pg_checkpoint TO relay");
            (level, pg)
        })
        .collect();
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); servers.len()];
    for round in 1..=repeat {
        for ((level, pg), (plains, drains)) in servers.iter().zip(samples.iter_mut()) {
            let cluster = Cluster {
                database_url: pg.relay_url(),
                ..Cluster::shared()
            };
            let plain = plain_ceiling_on(&cluster.database_url, rows, batch, false).await;
            let drained = drain_on(&cluster, rows, batch, 1).await.rows_per_sec;
            eprintln!("bench: round {round}: wal_level={level}: plain ceiling {plain:.0} rows/s, drain {drained:.0} rows/s");
            plains.push(plain);
            drains.push(drained);
        }
    }
    for ((level, _), (plains, drains)) in servers.iter().zip(samples) {
        let (plain, drained) = (median(plains), median(drains));
        report.insert(
            format!("wal_level_{level}"),
            json!({
                "plain_ceiling_rows_per_sec": round(plain),
                "drain_rows_per_sec": round(drained),
                "drain_vs_plain_ceiling": ratio(drained, plain),
            }),
        );
    }
    serde_json::Value::Object(report)
}

/// TLS on both sides against plain, on the same private PostgreSQL (which
/// takes both) and two private brokers of the same build, one behind a
/// TLS-terminating proxy; interleaved rounds, medians.
async fn tls_stage(rows: i64, batch: usize, repeat: u64) -> serde_json::Value {
    let certs = Certificates::generate();
    let tls = Tls {
        certs: &certs,
        required: false,
    };
    let pg = PrivatePostgres::start_with(50, Some(tls));
    pg.psql("GRANT pg_checkpoint TO relay");
    let plain_broker = PrivateBroker::start().await;
    let (tls_port, proxy_port) = (common::free_port(), common::free_port());
    let _tls_broker = PrivateBroker::start_advertising(tls_port, proxy_port).await;
    let (cert, key) = (certs.path("kafka.pem"), certs.path("kafka.key"));
    let proxy = TlsProxy::start(proxy_port, tls_port, &cert, &key).await;
    let plain = Cluster {
        database_url: pg.relay_url(),
        relay_database_url: None,
        brokers: plain_broker.address(),
        kafka_settings: Vec::new(),
        delete_topics: false,
        relay_args: Vec::new(),
        shape: Shape::Relay,
    };
    let ca = certs.path("ca.pem");
    let secure = Cluster {
        relay_database_url: Some(format!(
            "postgres://relay:relay@localhost:{}/app?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}",
            pg.port
        )),
        brokers: proxy.address(),
        kafka_settings: vec![
            ("security.protocol".into(), "SSL".into()),
            ("ssl.ca.location".into(), ca.clone()),
        ],
        ..plain.clone()
    };
    let labels = ("plain", "TLS on both sides");
    let (without, with) = compare_drains((&plain, &secure), labels, rows, batch, repeat).await;
    eprintln!(
        "bench: TLS costs {:.0} % of drain throughput",
        (1.0 - with / without) * 100.0
    );
    json!({
        "drain_plain_rows_per_sec": round(without),
        "drain_tls_rows_per_sec": round(with),
        "tls_vs_plain": (with / without * 100.0).round() / 100.0,
    })
}

/// The drain on Tansu beside the drain on the real Apache Kafka (plaintext,
/// then SASL_SSL with SCRAM-SHA-512), same PostgreSQL; interleaved rounds,
/// medians.
async fn brokers_stage(rows: i64, batch: usize, repeat: u64) -> serde_json::Value {
    let tansu = Cluster::shared();
    let apache = Cluster {
        brokers: common::apache_kafka::plaintext(),
        ..Cluster::shared()
    };
    let labels = ("Tansu 0.6", "Apache Kafka 2.3");
    let (on_tansu, on_apache) =
        compare_drains((&tansu, &apache), labels, rows, batch, repeat).await;
    let ca = common::apache_kafka::ca().display().to_string();
    let sasl_ssl = Cluster {
        brokers: common::apache_kafka::sasl_ssl(),
        kafka_settings: vec![
            ("security.protocol".into(), "SASL_SSL".into()),
            ("sasl.mechanism".into(), "SCRAM-SHA-512".into()),
            ("sasl.username".into(), "relay".into()),
            (
                "sasl.password".into(),
                common::apache_kafka::relay_password(),
            ),
            ("ssl.ca.location".into(), ca),
        ],
        // The topic admin client speaks plaintext; the broker's data goes
        // with the benchmark's services.
        delete_topics: false,
        ..apache.clone()
    };
    let labels = ("Apache Kafka 2.3", "Apache Kafka 2.3 over SASL_SSL");
    let (plain, secure) = compare_drains((&apache, &sasl_ssl), labels, rows, batch, repeat).await;
    json!({
        "drain_tansu_rows_per_sec": round(on_tansu),
        "drain_apache_kafka_rows_per_sec": round(on_apache),
        "apache_kafka_vs_tansu": ratio(on_apache, on_tansu),
        "drain_apache_kafka_plaintext_rows_per_sec": round(plain),
        "drain_apache_kafka_sasl_ssl_rows_per_sec": round(secure),
        "sasl_ssl_vs_plaintext": ratio(secure, plain),
    })
}

/// The one-relay drain on two clusters, in interleaved rounds so slow phases
/// of a noisy machine hit both alike; the medians.
async fn compare_drains(
    clusters: (&Cluster, &Cluster),
    labels: (&str, &str),
    rows: i64,
    batch: usize,
    repeat: u64,
) -> (f64, f64) {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for round in 1..=repeat {
        let a = drain_on(clusters.0, rows, batch, 1).await.rows_per_sec;
        let b = drain_on(clusters.1, rows, batch, 1).await.rows_per_sec;
        eprintln!(
            "bench: round {round}: drain {} {a:.0} rows/s, {} {b:.0} rows/s",
            labels.0, labels.1
        );
        first.push(a);
        second.push(b);
    }
    (median(first), median(second))
}

/// The drain through PgBouncer (transaction mode, pool of 5, default
/// settings) with `--pooler transaction`, against the direct drain with the
/// default (prepared) statements; interleaved rounds, medians.
async fn pooler_stage(rows: i64, batch: usize, repeat: u64) -> serde_json::Value {
    let database_url = common::database_url();
    let pg_port: u16 = database_url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
        .expect("port in the database URL");
    let bouncer = PgBouncer::start(pg_port, 5, &[("postgres", "")]).await;
    let direct = Cluster::shared();
    let pooled = Cluster {
        relay_database_url: Some(bouncer.url("postgres", "postgres")),
        relay_args: vec!["--pooler".into(), "transaction".into()],
        ..Cluster::shared()
    };
    let labels = ("direct", "through PgBouncer (--pooler transaction)");
    let (without, with) = compare_drains((&direct, &pooled), labels, rows, batch, repeat).await;
    json!({
        "drain_direct_rows_per_sec": round(without),
        "drain_pgbouncer_rows_per_sec": round(with),
        "pgbouncer_vs_direct": (with / without * 100.0).round() / 100.0,
    })
}

/// Scenario 4 at each offered rate.
async fn sustained_stages(rates: &[u64], seconds: u64, batch: usize) -> Vec<serde_json::Value> {
    let mut sustained = Vec::new();
    for &rate in rates {
        let latency = sustained_latency(rate, seconds, batch).await;
        let (commit, insert, marked) = (
            &latency.from_commit,
            &latency.from_insert,
            &latency.commit_to_marked,
        );
        eprintln!(
            "bench: {rate} rows/s offered: commit → receipt p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
             insert → receipt p50 {:.1} ms; commit → marked published p50 {:.1} ms, p99 {:.1} ms \
             ({} messages; writer's insert+commit p50 {:.1} ms; relay acked {:.0}% within 5 ms of created_at)",
            commit.p50_ms, commit.p99_ms, commit.max_ms, insert.p50_ms, marked.p50_ms, marked.p99_ms,
            latency.samples, latency.writer_commit_p50_ms, latency.relay_acked_within_5ms * 100.0
        );
        sustained.push(json!({
            "offered_rows_per_sec": rate,
            "seconds": seconds,
            "messages": latency.samples,
            "latency_p50_ms": round(commit.p50_ms),
            "latency_p99_ms": round(commit.p99_ms),
            "latency_max_ms": round(commit.max_ms),
            "from_insert": insert.json(),
            "commit_to_marked_published": marked.json(),
            "writer_insert_commit_p50_ms": round(latency.writer_commit_p50_ms),
            "relay_acked_within_2_5ms_share": (latency.relay_acked_within_2_5ms * 1000.0).round() / 1000.0,
            "relay_acked_within_5ms_share": (latency.relay_acked_within_5ms * 1000.0).round() / 1000.0,
            "relay_acked_within_10ms_share": (latency.relay_acked_within_10ms * 1000.0).round() / 1000.0,
        }));
    }
    sustained
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Drop a finished stage's schema (the test kit does so when `env` drops)
/// and topic, so neither autovacuum of its churned table nor a broker
/// holding its messages (Tansu's in-memory store slows down as it fills)
/// weighs on the next stage.
async fn clean_up(env: TestEnv, topic: Option<&str>) {
    if let Some(topic) = topic {
        common::delete_topic(&env.brokers, topic).await;
    }
    drop(env);
}

/// A fresh table, with a checkpoint first so none lands mid-measurement.
async fn fresh_env() -> TestEnv {
    fresh_env_on(&common::database_url()).await
}

async fn fresh_env_on(database_url: &str) -> TestEnv {
    let env = TestEnv::on(database_url).await;
    env.client
        .batch_execute("CHECKPOINT")
        .await
        .expect("checkpoint");
    env
}

/// Fill a fresh table with `rows` rows of about 200 bytes over `KEYS` keys.
async fn fill(env: &TestEnv, topic: &str, rows: i64) {
    let sql = format!(
        "INSERT INTO {} (topic, message_key, payload)
         SELECT $1, 'key-' || (i % $3), jsonb_build_object(
             'seq', i, 'type', 'OrderPlaced', 'customer', 'customer-' || (i % 5000),
             'items', jsonb_build_array(jsonb_build_object('sku', 'SKU-12345', 'qty', 2, 'price', 19.99)),
             'note', 'lorem ipsum dolor sit amet consectetur adipiscing')
         FROM generate_series(1, $2::bigint) AS i",
        env.table
    );
    env.client
        .execute(&sql, &[&topic, &rows, &KEYS])
        .await
        .expect("fill");
    env.client
        .batch_execute(&format!("VACUUM ANALYZE {}", env.table))
        .await
        .expect("vacuum");
}

/// The relay's own claim and record statements, back to back, no Kafka:
/// published rows marked, or (`delete`) deleted.
async fn db_ceiling_on(database_url: &str, rows: i64, batch: usize, delete: bool) -> f64 {
    let env = fresh_env_on(database_url).await;
    fill(&env, "ceiling", rows).await;
    let table = env.table.parse().expect("table name");
    let database = Database::new(&env.database_url, &table, 2)
        .expect("pool")
        .delete_on_publish(delete);
    let started = Instant::now();
    let mut marked = 0;
    loop {
        let mut claim = database.claim(batch, &[], &[], None).await.expect("claim");
        let ids: Vec<i64> = claim.rows.drain(..).map(|r| r.id).collect();
        if ids.is_empty() {
            claim.abandon().await;
            break;
        }
        marked += claim
            .record(Results {
                published: &ids,
                failures: &[],
                max_attempts: 10,
            })
            .await
            .expect("mark")
            .published;
    }
    assert_eq!(marked as i64, rows);
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    clean_up(env, None).await;
    rate
}

/// The database's own limit for this table, without the relay's design: claim
/// the same columns with `ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED` (no
/// per-key rule), then mark (or delete) by id and commit, back to back, with
/// the relay's `synchronous_commit = off`. Measurement SQL, not the product's.
async fn plain_ceiling_on(database_url: &str, rows: i64, batch: usize, delete: bool) -> f64 {
    let env = fresh_env_on(database_url).await;
    fill(&env, "ceiling", rows).await;
    let claim = format!(
        "SELECT id, event_id, topic, message_key, payload, headers, attempts, created_at
         FROM {} WHERE status = 'pending' AND next_attempt_at <= now()
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        env.table
    );
    let record = if delete {
        format!("DELETE FROM {} WHERE id = ANY($1)", env.table)
    } else {
        format!(
            "UPDATE {} SET status = 'published', published_at = statement_timestamp()
             WHERE id = ANY($1)",
            env.table
        )
    };
    let client = common::connect(&env.database_url).await;
    let (claim, record) = (
        client.prepare(&claim).await.expect("prepare claim"),
        client.prepare(&record).await.expect("prepare record"),
    );
    let limit = batch as i64;
    let started = Instant::now();
    let mut recorded = 0;
    loop {
        client
            .batch_execute("BEGIN; SET LOCAL synchronous_commit = off")
            .await
            .expect("begin");
        let claimed = client.query(&claim, &[&limit]).await.expect("claim");
        let ids: Vec<i64> = claimed.iter().map(|row| row.get(0)).collect();
        if ids.is_empty() {
            client.batch_execute("ROLLBACK").await.expect("rollback");
            break;
        }
        recorded += client.execute(&record, &[&ids]).await.expect("record");
        client.batch_execute("COMMIT").await.expect("commit");
    }
    assert_eq!(recorded as i64, rows);
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    drop(client);
    clean_up(env, None).await;
    rate
}

struct Drain {
    rows_per_sec: f64,
    peak_rss_mib: f64,
    cpu_seconds: f64,
    /// Where the time goes: the share of the machine's CPU time in use during
    /// the drain, and the shared broker's CPU seconds (when it is ours to see).
    machine_busy: f64,
    broker_cpu_seconds: Option<f64>,
}

/// (busy, total) jiffies of all CPUs so far, from `/proc/stat`.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The shared broker's pid, when `tests/services.sh` started it.
fn shared_broker_pid() -> Option<u32> {
    let dir = std::env::var("OUTBOX_TEST_SERVICES_DIR").ok()?;
    std::fs::read_to_string(format!("{dir}/tansu.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Where a drain runs: the database and brokers, and how the relay reaches
/// them (the benchmark's own client always connects without TLS).
#[derive(Clone)]
struct Cluster {
    database_url: String,
    /// The relay's `--database-url`, when it differs (TLS).
    relay_database_url: Option<String>,
    brokers: String,
    /// librdkafka settings for the relay, the admin client and the reader.
    kafka_settings: Vec<(String, String)>,
    /// Topics are deleted after a stage on a broker that outlives it.
    delete_topics: bool,
    /// More `run` flags (e.g. `--pooler transaction`).
    relay_args: Vec<String>,
    /// The table's shape.
    shape: Shape,
}

/// The outbox table a drain runs on: the same rows in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// The relay's own table (jsonb payload).
    Relay,
    /// The relay's own table with a bytea payload.
    Bytea,
    /// Debezium's outbox table, adopted, run with `--layout debezium`.
    Debezium,
    /// The relay's own table made by `migrate --partition-by day`.
    Partitioned,
}

impl Cluster {
    /// The services `tests/services.sh` runs (or the benchmark started).
    fn shared() -> Self {
        Cluster {
            database_url: common::database_url(),
            relay_database_url: None,
            brokers: common::brokers(),
            kafka_settings: Vec::new(),
            delete_topics: true,
            relay_args: Vec::new(),
            shape: Shape::Relay,
        }
    }

    fn settings(&self) -> Vec<(&str, &str)> {
        self.kafka_settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn relay_extra_args(&self) -> Vec<String> {
        let kafka = self
            .kafka_settings
            .iter()
            .flat_map(|(k, v)| ["--kafka-option".to_owned(), format!("{k}={v}")]);
        kafka.chain(self.relay_args.iter().cloned()).collect()
    }
}

async fn drain(rows: i64, batch: usize, relays: usize) -> Drain {
    drain_on(&Cluster::shared(), rows, batch, relays).await
}

async fn drain_on(cluster: &Cluster, rows: i64, batch: usize, relays: usize) -> Drain {
    let mut env = fresh_env_on(&cluster.database_url).await;
    env.brokers = cluster.brokers.clone();
    if let Some(url) = &cluster.relay_database_url {
        env.relay_database_url = url.clone();
    }
    let topic = match cluster.shape {
        Shape::Debezium => format!("outbox.event.{}", common::unique_name("order")),
        Shape::Relay | Shape::Bytea | Shape::Partitioned => common::unique_name("topic"),
    };
    common::kafka::create_topic_with(&env.brokers, &topic, PARTITIONS, &cluster.settings()).await;
    fill(&env, &topic, rows).await;
    reshape(&mut env, cluster.shape, &topic).await;
    // Read before the relays start, outside the measurement: with
    // `--on-publish delete` the rows will be gone.
    let committed = match cluster.shape {
        Shape::Debezium => debezium_rows(&env).await,
        Shape::Relay | Shape::Bytea | Shape::Partitioned => {
            load::committed_rows(&env.client, &env.table).await
        }
    };
    assert_eq!(committed.len() as i64, rows);
    let broker_pid = (cluster.brokers == common::brokers())
        .then(shared_broker_pid)
        .flatten();
    let broker_cpu_before = broker_pid.map(cpu_seconds);
    let jiffies_before = machine_jiffies();
    let extra = cluster.relay_extra_args();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let args = relay_args(batch, &extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let processes: Vec<_> = (0..relays).map(|_| env.start_relay(&args)).collect();
    let mut peak_rss_kib = 0;
    // The drain runs from the first batch recorded to the last, so start-up
    // (process, connections, checks, election) is not counted: the ceilings
    // have none. Deleted rows leave no published_at: then the first row's
    // disappearance and the last probe time the drain, so probe often.
    let deletes = cluster.relay_args.iter().any(|a| a == "delete");
    let probe_every = Duration::from_millis(if deletes { 20 } else { 250 });
    let first_deleted = format!(
        "SELECT NOT EXISTS (SELECT 1 FROM {} WHERE id = $1), extract(epoch FROM clock_timestamp())::float8",
        env.table
    );
    let first_id = committed[0].0;
    let first_gone_at = std::cell::Cell::new(None::<f64>);
    common::wait_for_every(
        "the drain to finish",
        Duration::from_secs(600),
        probe_every,
        || {
            for process in &processes {
                peak_rss_kib = peak_rss_kib.max(proc_status_kib(process.child.id(), "VmHWM"));
            }
            let (client, table) = (&env.client, env.table.as_str());
            let (first_deleted, first_gone_at) = (&first_deleted, &first_gone_at);
            async move {
                if deletes && first_gone_at.get().is_none() {
                    let row = client
                        .query_one(first_deleted, &[&first_id])
                        .await
                        .expect("first row probe");
                    if row.get::<_, bool>(0) {
                        first_gone_at.set(Some(row.get(1)));
                    }
                }
                nothing_pending(client, table).await.then_some(())
            }
        },
    )
    .await;
    let jiffies_after = machine_jiffies();
    let broker_cpu_seconds = broker_pid
        .map(cpu_seconds)
        .zip(broker_cpu_before)
        .map(|(after, before)| after - before);
    let end = db_epoch(
        &env,
        &format!(
            "coalesce((SELECT max(published_at) FROM {}), clock_timestamp())",
            env.table
        ),
    )
    .await;
    let start = match first_gone_at.get() {
        Some(at) => at,
        None => {
            let first = format!("(SELECT min(published_at) FROM {})", env.table);
            db_epoch(&env, &first).await
        }
    };
    // Read the topic back: "in Kafka" means a consumer sees every row.
    // (Tansu's reported high watermarks can lag what it serves.)
    let event_ids: Vec<String> = committed.iter().map(|(_, e)| e.clone()).collect();
    let received = common::kafka::consume_event_ids_with(
        &env.brokers,
        &cluster.kafka_settings,
        &topic,
        &event_ids,
        Duration::from_secs(60),
    )
    .await;
    // Every row arrived, and the first arrivals of each key are in order.
    load::verify(&received, &committed, &committed);
    let cpu_seconds = processes
        .iter()
        .map(|p| cpu_seconds(p.child.id()))
        .sum::<f64>()
        / relays as f64;
    drop(processes);
    clean_up(env, cluster.delete_topics.then_some(topic.as_str())).await;
    Drain {
        // The first batch was recorded at `start`: the rest took the time.
        rows_per_sec: (rows - batch as i64) as f64 / (end - start),
        peak_rss_mib: peak_rss_kib as f64 / 1024.0,
        cpu_seconds,
        machine_busy: (jiffies_after.0 - jiffies_before.0) as f64
            / (jiffies_after.1 - jiffies_before.1).max(1) as f64,
        broker_cpu_seconds,
    }
}

/// Whether no row of `table` is pending. An existence probe: counting 200k
/// pending rows every poll would load the database the relay is being
/// measured on.
async fn nothing_pending(client: &tokio_postgres::Client, table: &str) -> bool {
    let probe = format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE status = 'pending')");
    let row = client.query_one(&probe, &[]).await.expect("probe");
    !row.get::<_, bool>(0)
}

/// Turn the filled relay table into `shape`, outside the measurement: the
/// same rows, with a bytea payload, moved into Debezium's outbox table
/// (topic `outbox.event.<aggregatetype>`) and adopted, or moved into a table
/// partitioned by day.
async fn reshape(env: &mut TestEnv, shape: Shape, topic: &str) {
    let sql = match shape {
        Shape::Relay => return,
        Shape::Bytea => {
            let alter = format!(
                "ALTER TABLE {} ALTER COLUMN payload TYPE bytea USING convert_to(payload::text, 'UTF8')",
                env.table
            );
            env.client
                .batch_execute(&alter)
                .await
                .expect("bytea payload");
            format!("VACUUM ANALYZE {}", env.table)
        }
        Shape::Debezium => {
            let debezium = format!("{}_debezium", env.table);
            let aggregate = topic.trim_start_matches("outbox.event.");
            let sql = format!(
                "CREATE TABLE {debezium} (
                     id uuid NOT NULL PRIMARY KEY, aggregatetype varchar(255) NOT NULL,
                     aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload jsonb);
                 INSERT INTO {debezium}
                     SELECT event_id, '{aggregate}', message_key, 'OrderPlaced', payload
                     FROM {t} ORDER BY id;",
                t = env.table
            );
            env.client
                .batch_execute(&sql)
                .await
                .expect("debezium table");
            env.table = debezium;
            let adopt = env
                .command(&["migrate", "--adopt", "--layout", "debezium"])
                .output()
                .expect("adopt");
            common::assert_success(&adopt, "migrate --adopt --layout debezium");
            format!("VACUUM ANALYZE {}", env.table)
        }
        Shape::Partitioned => {
            let by_day = format!("{}_by_day", env.table);
            let plain = std::mem::replace(&mut env.table, by_day);
            let migrate = env
                .command(&["migrate", "--partition-by", "day"])
                .output()
                .expect("migrate");
            common::assert_success(&migrate, "migrate --partition-by day");
            let copy = format!(
                "INSERT INTO {} (topic, message_key, payload, headers)
                 SELECT topic, message_key, payload, headers FROM {plain} ORDER BY id",
                env.table
            );
            env.client.batch_execute(&copy).await.expect("copy rows");
            format!("VACUUM ANALYZE {}", env.table)
        }
    };
    env.client.batch_execute(&sql).await.expect("reshape");
}

/// (sequence, event id) of every row of an adopted Debezium table.
async fn debezium_rows(env: &TestEnv) -> Vec<(i64, String)> {
    let sql = format!(
        "SELECT outbox_sequence, id::text FROM {} ORDER BY outbox_sequence",
        env.table
    );
    let rows = env.client.query(&sql, &[]).await.expect("rows");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// The drain on the default table, with a bytea payload, and on an adopted
/// Debezium table with `--layout debezium`: interleaved rounds, medians.
async fn layouts_stage(rows: i64, batch: usize, repeat: u64) -> serde_json::Value {
    let relay = Cluster::shared();
    let bytea = Cluster {
        shape: Shape::Bytea,
        ..Cluster::shared()
    };
    let debezium = Cluster {
        shape: Shape::Debezium,
        relay_args: vec!["--layout".into(), "debezium".into()],
        ..Cluster::shared()
    };
    let partitioned = Cluster {
        shape: Shape::Partitioned,
        ..Cluster::shared()
    };
    let shapes = [&relay, &bytea, &debezium, &partitioned];
    let mut samples: [Vec<f64>; 4] = Default::default();
    for round in 1..=repeat {
        for (cluster, sample) in shapes.iter().zip(samples.iter_mut()) {
            sample.push(drain_on(cluster, rows, batch, 1).await.rows_per_sec);
        }
        let [p, b, d, t] = [0, 1, 2, 3].map(|i| samples[i][samples[i].len() - 1]);
        eprintln!(
            "bench: round {round}: drain jsonb {p:.0}, bytea {b:.0}, debezium layout {d:.0}, partitioned by day {t:.0} rows/s"
        );
    }
    let [p, b, d, t] = samples.map(median);
    json!({
        "drain_default_rows_per_sec": round(p),
        "drain_bytea_rows_per_sec": round(b),
        "drain_debezium_rows_per_sec": round(d),
        "drain_partitioned_rows_per_sec": round(t),
        "bytea_vs_default": ratio(b, p),
        "debezium_vs_default": ratio(d, p),
        "partitioned_vs_default": ratio(t, p),
    })
}

async fn db_epoch(env: &TestEnv, expression: &str) -> f64 {
    let sql = format!("SELECT extract(epoch FROM {expression})::float8");
    env.client.query_one(&sql, &[]).await.expect("epoch").get(0)
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is parenthesised and may hold spaces.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    let ticks_per_sec = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    ticks / ticks_per_sec
}

struct Latency {
    relay_acked_within_2_5ms: f64,
    relay_acked_within_5ms: f64,
    relay_acked_within_10ms: f64,
    samples: usize,
    /// Writer's COMMIT returned → consumer received, the definition.
    from_commit: Quantiles,
    /// Row built inside the INSERT → consumer received: adds the writer's own
    /// insert and commit (WAL flush) time.
    from_insert: Quantiles,
    /// Writer's COMMIT returned → `published_at`, which the relay sets after
    /// the batch's acks: commit → ack without the consumer's fetch cycle.
    commit_to_marked: Quantiles,
    writer_commit_p50_ms: f64,
}

struct Quantiles {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Quantiles {
    fn of(mut seconds: Vec<f64>) -> Self {
        seconds.sort_by(f64::total_cmp);
        let at = |q: f64| {
            seconds
                .get(((seconds.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
                * 1000.0
        };
        Quantiles {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({"p50_ms": round(self.p50_ms), "p99_ms": round(self.p99_ms), "max_ms": round(self.max_ms)})
    }
}

/// One message as the latency consumer saw it (times in seconds since the
/// epoch, all from this machine's clock).
struct Receipt {
    tick: usize,
    inserted: f64,
    received: f64,
}

fn epoch_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn now_epoch() -> f64 {
    epoch_seconds(SystemTime::now())
}

/// Writers insert `rate` rows/s for `seconds`; a consumer measures latency.
///
/// Each row carries the time it was built and the number of the writer's
/// transaction ("tick"); the writer notes when each COMMIT returned. So the
/// consumer's receipt time gives both commit → receipt (the delivery latency
/// as the issue defines it) and insert → receipt.
async fn sustained_latency(rate: u64, seconds: u64, batch: usize) -> Latency {
    sustained_latency_on(&LatencySetup::default(), rate, seconds, batch).await
}

/// Where [`sustained_latency_on`] runs: the brokers (the shared ones when
/// empty), more `run` flags, and whether the consumer reads committed only.
#[derive(Default)]
struct LatencySetup {
    brokers: Option<String>,
    relay_args: Vec<String>,
    read_committed: bool,
}

async fn sustained_latency_on(
    setup: &LatencySetup,
    rate: u64,
    seconds: u64,
    batch: usize,
) -> Latency {
    let mut env = fresh_env().await;
    if let Some(brokers) = &setup.brokers {
        env.brokers = brokers.clone();
    }
    let output = env
        .command(&["migrate", "--notify-trigger"])
        .output()
        .expect("migrate");
    common::assert_success(&output, "migrate --notify-trigger");
    let topic = env.create_topic(PARTITIONS).await;
    let extra: Vec<&str> = setup.relay_args.iter().map(String::as_str).collect();
    let args = relay_args(batch, &extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut relay = env.start_relay(&args);
    relay.wait_ready().await;

    let expected = (rate * seconds) as usize;
    let consumer = {
        let (brokers, topic) = (env.brokers.clone(), topic.clone());
        let isolation = if setup.read_committed {
            "read_committed"
        } else {
            "read_uncommitted"
        };
        std::thread::spawn(move || {
            consume_receipts(&brokers, &topic, expected, seconds + 30, isolation)
        })
    };
    // Let the consumer join before the first row.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let ticks_per_sec = 100u64.min(rate);
    let per_tick = (rate / ticks_per_sec) as i64;
    let insert = format!(
        "INSERT INTO {} (topic, message_key, payload)
         SELECT $1, 'key-' || (i % 1000), jsonb_build_object(
             'ts', extract(epoch FROM clock_timestamp()), 'tick', $3::bigint, 'seq', i)
         FROM generate_series(1, $2::bigint) AS i",
        env.table
    );
    let writer = common::connect(&env.database_url).await;
    let statement = writer.prepare(&insert).await.expect("prepare insert");
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / ticks_per_sec as u32);
    let ticks = (ticks_per_sec * seconds) as usize;
    let mut committed_at = Vec::with_capacity(ticks);
    let mut commit_seconds = Vec::with_capacity(ticks);
    for tick in 0..ticks {
        ticker.tick().await;
        let started = Instant::now();
        writer
            .execute(&statement, &[&topic, &per_tick, &(tick as i64)])
            .await
            .expect("insert");
        committed_at.push(now_epoch());
        commit_seconds.push(started.elapsed().as_secs_f64());
    }
    let receipts = consumer.join().expect("consumer thread");
    // The relay's own view (created_at → ack), to tell relay from consumer time.
    let metric = |name: &str| {
        let relay = &relay;
        let name = name.to_owned();
        async move { relay.metric(&name).await.unwrap_or(0.0) }
    };
    let acked = metric("outbox_delivery_latency_seconds_count").await;
    let within_2_5ms = metric("outbox_delivery_latency_seconds_bucket{le=\"0.0025\"}").await;
    let within_5ms = metric("outbox_delivery_latency_seconds_bucket{le=\"0.005\"}").await;
    let within_10ms = metric("outbox_delivery_latency_seconds_bucket{le=\"0.01\"}").await;
    drop(relay);
    let marked = format!(
        "SELECT (payload->>'tick')::bigint, extract(epoch FROM published_at)::float8
         FROM {} WHERE status = 'published'",
        env.table
    );
    let commit_to_marked = env
        .client
        .query(&marked, &[])
        .await
        .expect("published rows")
        .iter()
        .map(|row| {
            let tick: i64 = row.get(0);
            let published: f64 = row.get(1);
            (published - committed_at[tick as usize]).max(0.0)
        })
        .collect();
    clean_up(env, Some(&topic)).await;

    let from_commit = receipts
        .iter()
        .map(|r| (r.received - committed_at[r.tick]).max(0.0))
        .collect();
    let from_insert = receipts
        .iter()
        .map(|r| (r.received - r.inserted).max(0.0))
        .collect();
    Latency {
        relay_acked_within_2_5ms: within_2_5ms / acked.max(1.0),
        relay_acked_within_5ms: within_5ms / acked.max(1.0),
        relay_acked_within_10ms: within_10ms / acked.max(1.0),
        samples: receipts.len(),
        from_commit: Quantiles::of(from_commit),
        from_insert: Quantiles::of(from_insert),
        commit_to_marked: Quantiles::of(commit_to_marked),
        writer_commit_p50_ms: Quantiles::of(commit_seconds).p50_ms,
    }
}

/// Read `expected` benchmark messages (or until the timeout) and note when
/// each arrived.
fn consume_receipts(
    brokers: &str,
    topic: &str,
    expected: usize,
    timeout_secs: u64,
    isolation: &str,
) -> Vec<Receipt> {
    let fetch_wait = std::env::var("OUTBOX_BENCH_FETCH_WAIT_MS").unwrap_or_else(|_| "1".into());
    let settings = [
        ("isolation.level", isolation),
        ("fetch.wait.max.ms", fetch_wait.as_str()),
        ("socket.nagle.disable", "true"),
        ("fetch.min.bytes", "1"),
    ];
    let reader = TopicReader::open(brokers, topic, &settings).expect("consumer");
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut receipts = Vec::with_capacity(expected);
    while receipts.len() < expected && Instant::now() < deadline {
        let Ok(Some(message)) = reader.next(Duration::from_millis(50)) else {
            continue;
        };
        let payload = message
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .expect("benchmark payload");
        receipts.push(Receipt {
            tick: payload["tick"].as_u64().expect("tick") as usize,
            inserted: payload["ts"].as_f64().expect("ts"),
            received: epoch_seconds(message.received_at),
        });
    }
    receipts
}

/// PostgreSQL and Tansu for the benchmark: the ones the caller started, or
/// our own, stopped on drop.
struct Services {
    owned: bool,
}

impl Services {
    fn ensure() -> Self {
        if std::env::var("OUTBOX_TEST_DATABASE_URL").is_ok() {
            return Services { owned: false };
        }
        let root = env!("CARGO_MANIFEST_DIR");
        let script = format!("{root}/tests/services.sh");
        let status = Command::new("bash")
            .args([&script, "install"])
            .status()
            .expect("install");
        assert!(status.success(), "tests/services.sh install failed");
        let output = Command::new("bash")
            .args([&script, "start"])
            .env("OUTBOX_SERVICES_DIR", "/tmp/outbox-relay-bench")
            .output()
            .expect("start services");
        common::assert_success(&output, "tests/services.sh start");
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Some((name, value)) =
                line.strip_prefix("export ").and_then(|l| l.split_once('='))
            {
                std::env::set_var(name, value);
            }
        }
        Services { owned: true }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        if self.owned {
            let script = format!("{}/tests/services.sh", env!("CARGO_MANIFEST_DIR"));
            let _ = Command::new("bash")
                .args([&script, "stop"])
                .env("OUTBOX_SERVICES_DIR", "/tmp/outbox-relay-bench")
                .status();
        }
    }
}
