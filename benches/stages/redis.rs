//! Stage 14, Redis (`OUTBOX_BENCH_ONLY=redis`): on a private Redis 7.0
//! (AOF on, `appendfsync everysec`), for each mode (stream, list):
//! - the one-relay drain, with dedup and without (`--redis-dedup-secs 0`),
//!   every entry read back and per-key order checked;
//! - a bare pipelined writer: the same entries added with the same crate
//!   (`XADD` / `LPUSH`) in pipelines of the batch size, no database;
//! - the plain claim + mark ceiling of the same database;
//! - commit → consumer receipt at 1,000 rows/s (`XREAD BLOCK` / `BRPOP`);
//! - what the dedup records cost in memory, per 1M rows.
//!
//! Rounds are interleaved; medians are reported.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde_json::json;

use super::common::redis::{self as kit, PrivateRedis};
use super::common::{self, load};
use super::{
    fill, fresh_env, median, nothing_pending, now_epoch, plain_ceiling_on, ratio, relay_args,
    round, Quantiles,
};

const MODES: [&str; 2] = ["stream", "list"];

pub async fn redis_stage(rows: i64, batch: usize, repeat: u64) -> serde_json::Value {
    let server = PrivateRedis::start().await;
    let url = server.url();
    let mut report = serde_json::Map::new();
    let mut ceilings = Vec::new();
    let mut results: HashMap<&str, [Vec<f64>; 3]> = HashMap::new();
    let mut memory = HashMap::new();
    for round in 1..=repeat {
        let ceiling = plain_ceiling_on(&common::database_url(), rows, batch, false).await;
        ceilings.push(ceiling);
        for mode in MODES {
            let (with_dedup, bytes) = drain(&url, mode, rows, batch, true).await;
            let (without, _) = drain(&url, mode, rows, batch, false).await;
            let bare = bare_writer(&url, mode, rows, batch).await;
            eprintln!(
                "bench: redis {mode} round {round}: drain {with_dedup:.0} rows/s (no dedup {without:.0}), bare writer {bare:.0}/s, plain ceiling {ceiling:.0} rows/s, dedup records {:.0} MiB per 1M rows",
                bytes / 1_048_576.0
            );
            let entry = results.entry(mode).or_default();
            entry[0].push(with_dedup);
            entry[1].push(without);
            entry[2].push(bare);
            memory.insert(mode, bytes);
        }
    }
    let ceiling = median(ceilings);
    for mode in MODES {
        let [with_dedup, without, bare] = results.remove(mode).expect("measured");
        let (drain, without, bare) = (median(with_dedup), median(without), median(bare));
        let latency = latency(&url, mode, 1_000, 10, batch).await;
        eprintln!(
            "bench: redis {mode}: drain {drain:.0} rows/s = {:.2} of the lower of the bare writer ({bare:.0}) and the plain ceiling ({ceiling:.0}); dedup costs {:.0} % of the drain; commit → receipt at 1,000 rows/s p50 {:.1} ms, p99 {:.1} ms",
            drain / bare.min(ceiling),
            (1.0 - drain / without) * 100.0,
            latency.p50_ms,
            latency.p99_ms
        );
        report.insert(
            mode.to_owned(),
            json!({
                "drain_rows_per_sec": round(drain),
                "drain_without_dedup_rows_per_sec": round(without),
                "dedup_cost": ratio(1.0 - drain / without, 1.0),
                "bare_writer_per_sec": round(bare),
                "drain_vs_bare_writer": ratio(drain, bare),
                "plain_ceiling_rows_per_sec": round(ceiling),
                "drain_vs_plain_ceiling": ratio(drain, ceiling),
                "dedup_records_mib_per_million_rows": round(memory[mode] / 1_048_576.0),
                "latency_1000_per_sec": latency.json(),
            }),
        );
    }
    serde_json::Value::Object(report)
}

fn args_for(url: &str, mode: &str, batch: usize, dedup: bool) -> Vec<String> {
    let dedup = if dedup { "86400" } else { "0" };
    let mut args = kit::relay_args(url, &["--redis-mode", mode, "--redis-dedup-secs", dedup]);
    args.extend(relay_args(batch, &[]));
    args
}

async fn used_memory(connection: &mut MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(connection)
        .await
        .expect("INFO memory");
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("used_memory")
}

/// One relay drains `rows` pre-inserted rows; from the first row marked
/// published to the last, then every entry read back. With dedup, also
/// the memory its records take, per 1M rows (freed by `FLUSHALL` after).
async fn drain(url: &str, mode: &str, rows: i64, batch: usize, dedup: bool) -> (f64, f64) {
    let env = fresh_env().await;
    let key = common::unique_name("bench");
    fill(&env, &key, rows).await;
    let committed = load::committed_rows(&env.client, &env.table).await;
    let mut connection = kit::connect(url).await;
    let before = used_memory(&mut connection).await;
    let relay = env.start_relay_args(&args_for(url, mode, batch, dedup));
    common::wait_for_every(
        "the Redis drain to finish",
        Duration::from_secs(600),
        Duration::from_millis(250),
        || async { nothing_pending(&env.client, &env.table).await.then_some(()) },
    )
    .await;
    drop(relay);
    let span = format!(
        "SELECT extract(epoch FROM max(published_at) - min(published_at))::float8 FROM {}",
        env.table
    );
    let seconds: f64 = env.client.query_one(&span, &[]).await.expect("span").get(0);
    let ids: Vec<String> = committed.iter().map(|(_, e)| e.clone()).collect();
    let received = match mode {
        "list" => kit::read_list(url, &key, &ids, Duration::from_secs(60)).await,
        _ => kit::read_stream(url, &key, &ids, Duration::from_secs(60)).await,
    };
    load::verify(&received, &committed, &committed);
    let records = if dedup {
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("DEL");
        let entries_gone = used_memory(&mut connection).await;
        let _: () = redis::cmd("FLUSHALL")
            .arg("SYNC")
            .query_async(&mut connection)
            .await
            .expect("FLUSHALL");
        (entries_gone - before).max(0.0) / rows as f64 * 1_000_000.0
    } else {
        let _: () = redis::cmd("FLUSHALL")
            .arg("SYNC")
            .query_async(&mut connection)
            .await
            .expect("FLUSHALL");
        0.0
    };
    // The first batch was recorded at the start: the rest took the time.
    ((rows - batch as i64) as f64 / seconds, records)
}

/// The same entries, added with the same crate in pipelines of `batch`
/// (the relay waits for a batch's replies too), no database and no dedup.
async fn bare_writer(url: &str, mode: &str, rows: i64, batch: usize) -> f64 {
    let key = common::unique_name("bare");
    let mut connection = kit::connect(url).await;
    let payload = br#"{"seq":1,"type":"OrderPlaced","customer":"customer-1","items":[{"sku":"SKU-12345","qty":2,"price":19.99}],"note":"lorem ipsum dolor sit amet consectetur adipiscing"}"#;
    let started = Instant::now();
    let mut sent = 0;
    while sent < rows {
        let window = (rows - sent).min(batch as i64);
        let mut pipe = redis::pipe();
        for i in 0..window {
            let id = format!("bare-{}", sent + i);
            match mode {
                "list" => {
                    let envelope = json!({"id": id, "key": "key-1", "payload": serde_json::from_slice::<serde_json::Value>(payload).unwrap(), "headers": {}});
                    pipe.cmd("LPUSH").arg(&key).arg(envelope.to_string());
                }
                _ => {
                    pipe.cmd("XADD")
                        .arg(&key)
                        .arg("*")
                        .arg("id")
                        .arg(&id)
                        .arg("key")
                        .arg("key-1")
                        .arg("payload")
                        .arg(&payload[..]);
                }
            }
        }
        let _: Vec<redis::Value> = pipe.query_async(&mut connection).await.expect("pipeline");
        sent += window;
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    let _: () = redis::cmd("FLUSHALL")
        .arg("SYNC")
        .query_async(&mut connection)
        .await
        .expect("FLUSHALL");
    rate
}

/// Writers insert `rate` rows/s for `seconds` (NOTIFY on); a consumer
/// (`XREAD BLOCK`, or `BRPOP`) notes when each arrives; latency from the
/// writer's COMMIT.
async fn latency(url: &str, mode: &str, rate: u64, seconds: u64, batch: usize) -> Quantiles {
    let env = fresh_env().await;
    let output = env
        .command(&["migrate", "--notify-trigger"])
        .output()
        .expect("migrate");
    common::assert_success(&output, "migrate --notify-trigger");
    let key = common::unique_name("latency");
    let mut relay = env.start_relay_args(&args_for(url, mode, batch, true));
    relay.wait_ready().await;
    let expected = (rate * seconds) as usize;
    let receipts = tokio::spawn(receipts(
        url.to_owned(),
        mode == "list",
        key.clone(),
        expected,
        seconds + 30,
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ticks_per_sec = 100u64.min(rate);
    let per_tick = (rate / ticks_per_sec) as i64;
    let insert = format!(
        "INSERT INTO {} (topic, message_key, payload)
         SELECT $1, 'key-' || (i % 1000), jsonb_build_object('tick', $3::bigint, 'seq', i)
         FROM generate_series(1, $2::bigint) AS i",
        env.table
    );
    let writer = common::connect(&env.database_url).await;
    let statement = writer.prepare(&insert).await.expect("prepare insert");
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / ticks_per_sec as u32);
    let mut committed_at = Vec::new();
    for tick in 0..ticks_per_sec * seconds {
        ticker.tick().await;
        writer
            .execute(&statement, &[&key, &per_tick, &(tick as i64)])
            .await
            .expect("insert");
        committed_at.push(now_epoch());
    }
    let receipts = receipts.await.expect("consumer");
    drop(relay);
    Quantiles::of(
        receipts
            .iter()
            .map(|(tick, at)| (at - committed_at[*tick]).max(0.0))
            .collect(),
    )
}

/// (tick, receipt time) of each row, until `expected` arrived.
async fn receipts(
    url: String,
    list: bool,
    key: String,
    expected: usize,
    timeout_secs: u64,
) -> Vec<(usize, f64)> {
    let mut connection = kit::connect(&url).await;
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut seen = HashMap::new();
    let mut last_id = "0-0".to_owned();
    while seen.len() < expected && Instant::now() < deadline {
        let payloads: Vec<Vec<u8>> = if list {
            let popped: Option<(String, Vec<u8>)> = redis::cmd("BRPOP")
                .arg(&key)
                .arg(1)
                .query_async(&mut connection)
                .await
                .expect("BRPOP");
            popped.into_iter().map(|(_, element)| element).collect()
        } else {
            type Entries = Vec<(String, Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>)>;
            let read: Option<Entries> = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(&key)
                .arg(&last_id)
                .query_async(&mut connection)
                .await
                .expect("XREAD");
            let mut payloads = Vec::new();
            for (_, entries) in read.unwrap_or_default() {
                for (id, fields) in entries {
                    last_id = id;
                    payloads.extend(
                        fields
                            .into_iter()
                            .filter(|(name, _)| name == b"payload")
                            .map(|(_, value)| value),
                    );
                }
            }
            payloads
        };
        let at = now_epoch();
        for payload in payloads {
            let value: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
            // A list element is the envelope; its payload is inline.
            let row = if list { &value["payload"] } else { &value };
            let tick = row["tick"].as_u64().expect("tick") as usize;
            let seq = row["seq"].as_u64().expect("seq");
            seen.entry((tick, seq)).or_insert((tick, at));
        }
    }
    seen.into_values().collect()
}
