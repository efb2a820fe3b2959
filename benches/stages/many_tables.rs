//! The benchmark's many-tables stages: `tenants` (1,000 tenant tables in
//! one database served by one relay through a pattern: start-up, idle CPU
//! and memory, connections, and the latency of a row in a random tenant)
//! and `fairness` (a quiet table's commit → publish latency while another
//! table drains a large backlog).

use std::time::{Duration, Instant, SystemTime};

use outbox_relay::source::{Database, MigrateOptions};
use serde_json::json;

use super::common::{self, TestEnv};
use super::{cpu_seconds, machine_jiffies, proc_status_kib, relay_args, round, Quantiles};

/// Connections the relay holds in `database` (its application name).
async fn relay_connections(env: &TestEnv) -> i64 {
    env.client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outbox-relay' AND datname = current_database()",
            &[],
        )
        .await
        .expect("count connections")
        .get(0)
}

/// Create `count` tenant tables `<prefix>_<n>.outbox` (with the NOTIFY
/// trigger), four at a time.
async fn create_tenants(url: &str, prefix: &str, count: usize) {
    let options = MigrateOptions {
        notify_trigger: true,
        ..MigrateOptions::default()
    };
    let mut next = 0;
    while next < count {
        let wave: Vec<_> = (next..(next + 4).min(count))
            .map(|n| {
                let table = format!("{prefix}_{n:04}.outbox").parse().expect("a name");
                async move {
                    let database = Database::new(url, &table, 1).expect("pool");
                    database.migrate(options).await.expect("migrate tenant");
                }
            })
            .collect();
        futures_util::future::join_all(wave).await;
        next += 4;
    }
}

async fn drop_tenants(env: &TestEnv, prefix: &str, count: usize) {
    for n in 0..count {
        let _ = env
            .client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {prefix}_{n:04} CASCADE"))
            .await;
    }
}

pub async fn tenants_stage(count: usize, batch: usize) -> serde_json::Value {
    let env = TestEnv::new().await;
    let prefix = common::unique_name("bt");
    let created = Instant::now();
    create_tenants(&env.database_url, &prefix, count).await;
    eprintln!(
        "bench: tenants: {count} tables created in {:.0}s",
        created.elapsed().as_secs_f64()
    );
    let topic = env.create_topic(1).await;
    let pattern = format!("{prefix}_*.outbox");
    let args = relay_args(batch, &["--table-metrics", "aggregate"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut relay = env.start_relay_for(&pattern, &args);
    let pid = relay.child.id();
    relay.wait_ready().await;
    let start_up = started.elapsed().as_secs_f64();
    // Settle: every table's first backlog refresh, leadership, LISTEN.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let connections = relay_connections(&env).await;
    let window = 20.0;
    let (cpu_before, jiffies_before) = (cpu_seconds(pid), machine_jiffies());
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let (cpu_after, jiffies_after) = (cpu_seconds(pid), machine_jiffies());
    let idle_cpu = (cpu_after - cpu_before) / window;
    let machine_busy = (jiffies_after.0 - jiffies_before.0) as f64
        / (jiffies_after.1 - jiffies_before.1).max(1) as f64;
    let rss_mib = proc_status_kib(pid, "VmRSS") as f64 / 1024.0;
    let (_, body) = relay.get("/metrics").await.expect("scrape");
    let series = body.lines().filter(|l| !l.starts_with('#')).count();

    // A row in a random tenant, one at a time.
    let mut latencies = Vec::new();
    for _ in 0..30 {
        let n = fastrand::usize(..count);
        let table = format!("{prefix}_{n:04}.outbox");
        let id: i64 = env
            .client
            .query_one(
                &format!("INSERT INTO {table} (topic, payload) VALUES ($1, '{{}}') RETURNING id"),
                &[&topic],
            )
            .await
            .expect("insert")
            .get(0);
        let committed = SystemTime::now();
        let published: SystemTime = common::wait_for(
            "the row to be published",
            Duration::from_secs(30),
            || async {
                env.client
                    .query_one(
                        &format!("SELECT published_at FROM {table} WHERE id = $1"),
                        &[&id],
                    )
                    .await
                    .ok()?
                    .get::<_, Option<SystemTime>>(0)
            },
        )
        .await;
        let seconds = published
            .duration_since(committed)
            .map_or(0.0, |d| d.as_secs_f64());
        latencies.push(seconds);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let latency = Quantiles::of(latencies);
    drop(relay);
    drop_tenants(&env, &prefix, count).await;
    common::delete_topic(&env.brokers, &topic).await;
    eprintln!(
        "bench: tenants: {count} tables: ready in {start_up:.1}s, {connections} connections, idle relay CPU {:.1}% of a core, machine {:.1}% busy, RSS {rss_mib:.0} MiB, {series} series, row in a random tenant p50 {:.1} ms p99 {:.1} ms",
        idle_cpu * 100.0,
        machine_busy * 100.0,
        latency.p50_ms,
        latency.p99_ms
    );
    json!({
        "tables": count,
        "ready_after_secs": round(start_up),
        "relay_connections": connections,
        "idle_relay_cpu_percent_of_a_core": round(idle_cpu * 100.0),
        "idle_machine_cpu_busy_percent": round(machine_busy * 100.0),
        "relay_rss_mib": round(rss_mib),
        "metric_series_aggregate": series,
        "random_tenant_row_commit_to_published": latency.json(),
    })
}

pub async fn fairness_stage(backlog: i64, batch: usize) -> serde_json::Value {
    let env = TestEnv::new().await;
    let quiet_schema = common::unique_name("q");
    let quiet = format!("{quiet_schema}.outbox");
    let options = MigrateOptions {
        notify_trigger: true,
        ..MigrateOptions::default()
    };
    Database::new(&env.database_url, &quiet.parse().expect("a name"), 1)
        .expect("pool")
        .migrate(options)
        .await
        .expect("migrate quiet table");
    let topic = env.create_topic(super::PARTITIONS).await;
    super::fill(&env, &topic, backlog).await;
    let config = env.dir.path().join("fairness.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\n[[source]]\ndatabase_url = \"{}\"\n[[source.table]]\nname = \"{}\"\n[[source.table]]\nname = \"{quiet}\"\n",
            env.brokers, env.database_url, env.table
        ),
    )
    .expect("write config");
    let args = relay_args(batch, &["--config", config.to_str().expect("UTF-8")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut relay = env.start_relay_bare(&args);
    relay.wait_ready().await;
    // The quiet table gets 100 rows/s, one per transaction, while the
    // backlog drains.
    let writer = common::connect(&env.database_url).await;
    let insert = format!("INSERT INTO {quiet} (topic, payload) VALUES ($1, '{{}}') RETURNING id");
    let mut committed = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let began = Instant::now();
    loop {
        ticker.tick().await;
        let id: i64 = writer
            .query_one(&insert, &[&topic])
            .await
            .expect("insert")
            .get(0);
        committed.push((id, SystemTime::now()));
        if committed.len() % 100 == 0 {
            let pending = env.count("pending").await;
            if pending == 0 || began.elapsed() > Duration::from_secs(300) {
                break;
            }
        }
    }
    let drained_in = began.elapsed().as_secs_f64();
    let expected = committed.len() as i64;
    common::env::wait_for_status_in(
        &writer,
        &quiet,
        "published",
        common::Count::Exactly(expected),
        Duration::from_secs(60),
    )
    .await;
    let published: std::collections::HashMap<i64, SystemTime> = writer
        .query(&format!("SELECT id, published_at FROM {quiet}"), &[])
        .await
        .expect("quiet rows")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let latencies: Vec<f64> = committed
        .iter()
        .map(|(id, at)| {
            published[id]
                .duration_since(*at)
                .map_or(0.0, |d| d.as_secs_f64())
        })
        .collect();
    let latency = Quantiles::of(latencies);
    drop(relay);
    let _ = writer
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {quiet_schema} CASCADE"))
        .await;
    common::delete_topic(&env.brokers, &topic).await;
    eprintln!(
        "bench: fairness: {backlog}-row backlog drained in {drained_in:.1}s ({:.0} rows/s) while a quiet table took 100 rows/s: quiet commit -> published p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} rows)",
        backlog as f64 / drained_in,
        latency.p50_ms,
        latency.p99_ms,
        latency.max_ms,
        expected
    );
    json!({
        "backlog_rows": backlog,
        "backlog_drained_in_secs": round(drained_in),
        "quiet_rows": expected,
        "quiet_commit_to_published": latency.json(),
    })
}
