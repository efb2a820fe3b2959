//! Stage 15, NATS JetStream (`OUTBOX_BENCH_ONLY=nats`): on a private
//! nats-server 2.9 with JetStream (a file stream per run):
//! - the one-relay drain, every message read back and per-key order
//!   checked;
//! - a bare publisher: the same messages published with the same crate,
//!   `Nats-Msg-Id` set, PubAcks awaited per window of the batch size, no
//!   database;
//! - the plain claim + mark ceiling of the same database;
//! - commit → consumer receipt at 1,000 rows/s with the NOTIFY trigger;
//! - where the CPU goes: per 1,000 rows, the relay's and nats-server's CPU
//!   time during the drain and the bare publisher, and how busy the machine
//!   was in each (the rest of the busy time is PostgreSQL's and the
//!   benchmark's).
//!
//! Rounds are interleaved; medians are reported.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer;
use futures_util::StreamExt;
use serde_json::json;

use super::common::nats::{self as kit, PrivateNats};
use super::common::{self, load};
use super::{
    cpu_seconds, fill, fresh_env, machine_jiffies, median, nothing_pending, now_epoch,
    plain_ceiling_on, ratio, relay_args, round, Quantiles,
};

/// CPU time spent while something ran: the machine's busy share, and the
/// CPU milliseconds per 1,000 rows of the relay and of nats-server.
#[derive(Default, Clone, Copy)]
struct Cpu {
    machine_busy: f64,
    relay_ms_per_1k: f64,
    server_ms_per_1k: f64,
}

impl Cpu {
    fn json(&self) -> serde_json::Value {
        json!({
            "machine_busy": ratio(self.machine_busy, 1.0),
            "relay_cpu_ms_per_1000_rows": round(self.relay_ms_per_1k),
            "nats_server_cpu_ms_per_1000_rows": round(self.server_ms_per_1k),
        })
    }
}

/// Counts CPU time from its creation: the machine's, nats-server's and
/// (when given) the relay's.
struct CpuMeter {
    jiffies: (u64, u64),
    server: Option<(u32, f64)>,
    relay: Option<(u32, f64)>,
}

impl CpuMeter {
    fn start(server: Option<u32>, relay: Option<u32>) -> Self {
        let at = |pid: Option<u32>| pid.map(|pid| (pid, cpu_seconds(pid)));
        CpuMeter {
            jiffies: machine_jiffies(),
            server: at(server),
            relay: at(relay),
        }
    }

    fn stop(&self, rows: i64) -> Cpu {
        let (busy, total) = machine_jiffies();
        let per_1k = |process: Option<(u32, f64)>| {
            process.map_or(0.0, |(pid, before)| {
                (cpu_seconds(pid) - before) * 1000.0 * 1000.0 / rows as f64
            })
        };
        Cpu {
            machine_busy: (busy - self.jiffies.0) as f64 / (total - self.jiffies.1).max(1) as f64,
            relay_ms_per_1k: per_1k(self.relay),
            server_ms_per_1k: per_1k(self.server),
        }
    }
}

pub async fn nats_stage(rows: i64, batch: usize, repeat: u64) -> serde_json::Value {
    let server = PrivateNats::start("password").await;
    let url = server.url();
    let (mut drains, mut bare, mut ceilings) = (Vec::new(), Vec::new(), Vec::new());
    let (mut drain_cpu, mut bare_cpu) = (Cpu::default(), Cpu::default());
    for round in 1..=repeat {
        let (drain, cpu) = drain(&server, rows, batch).await;
        drain_cpu = cpu;
        let (publisher, cpu) = bare_publisher(&server, rows, batch).await;
        bare_cpu = cpu;
        let ceiling = plain_ceiling_on(&common::database_url(), rows, batch, false).await;
        eprintln!(
            "bench: nats round {round}: drain {drain:.0} rows/s, bare publisher {publisher:.0} msg/s, plain ceiling {ceiling:.0} rows/s"
        );
        drains.push(drain);
        bare.push(publisher);
        ceilings.push(ceiling);
    }
    let (drain, bare, ceiling) = (median(drains), median(bare), median(ceilings));
    let latency = latency(&url, 1_000, 10, batch).await;
    eprintln!(
        "bench: nats: drain {drain:.0} rows/s = {:.2} of the lower of the bare publisher ({bare:.0}) and the plain ceiling ({ceiling:.0}); commit → receipt at 1,000 rows/s p50 {:.1} ms, p99 {:.1} ms",
        drain / bare.min(ceiling),
        latency.p50_ms,
        latency.p99_ms
    );
    eprintln!(
        "bench: nats: CPU per 1,000 rows in the last round: drain: relay {:.2} ms, nats-server {:.2} ms, machine {:.0} % busy; bare publisher: nats-server {:.2} ms, machine {:.0} % busy",
        drain_cpu.relay_ms_per_1k,
        drain_cpu.server_ms_per_1k,
        drain_cpu.machine_busy * 100.0,
        bare_cpu.server_ms_per_1k,
        bare_cpu.machine_busy * 100.0
    );
    json!({
        "drain_rows_per_sec": round(drain),
        "bare_publisher_msgs_per_sec": round(bare),
        "drain_vs_bare_publisher": ratio(drain, bare),
        "plain_ceiling_rows_per_sec": round(ceiling),
        "drain_vs_plain_ceiling": ratio(drain, ceiling),
        "drain_vs_lower_bound": ratio(drain, bare.min(ceiling)),
        "latency_1000_per_sec": latency.json(),
        "drain_cpu": drain_cpu.json(),
        "bare_publisher_cpu": bare_cpu.json(),
    })
}

/// A subject of the run's own, and a file stream capturing it.
async fn subject(url: &str, prefix: &str) -> (String, String) {
    let subject = format!("{}.events", common::unique_name(prefix));
    let stream = kit::create_stream(url, &[&subject], |_| {}).await;
    (subject, stream)
}

async fn delete_stream(url: &str, stream: &str) {
    let _ = kit::jetstream(url).await.delete_stream(stream).await;
}

/// One relay drains `rows` pre-inserted rows; from the first row marked
/// published to the last, then every message read back.
async fn drain(server: &PrivateNats, rows: i64, batch: usize) -> (f64, Cpu) {
    let url = &server.url();
    let env = fresh_env().await;
    let (subject, stream) = subject(url, "bench").await;
    fill(&env, &subject, rows).await;
    let committed = load::committed_rows(&env.client, &env.table).await;
    let mut args = kit::relay_args(url, &[]);
    args.extend(relay_args(batch, &[]));
    let relay = env.start_relay_args(&args);
    let meter = CpuMeter::start(server.pid(), Some(relay.child.id()));
    common::wait_for_every(
        "the NATS drain to finish",
        Duration::from_secs(600),
        Duration::from_millis(250),
        || async { nothing_pending(&env.client, &env.table).await.then_some(()) },
    )
    .await;
    let cpu = meter.stop(rows);
    drop(relay);
    let span = format!(
        "SELECT extract(epoch FROM max(published_at) - min(published_at))::float8 FROM {}",
        env.table
    );
    let seconds: f64 = env.client.query_one(&span, &[]).await.expect("span").get(0);
    let ids: Vec<String> = committed.iter().map(|(_, e)| e.clone()).collect();
    let received = kit::read(url, &subject, &ids, Duration::from_secs(120)).await;
    load::verify(&received, &committed, &committed);
    delete_stream(url, &stream).await;
    // The first batch was recorded at the start: the rest took the time.
    ((rows - batch as i64) as f64 / seconds, cpu)
}

/// The same messages, `Nats-Msg-Id` set, PubAcks awaited per window of
/// `batch` (the relay waits for a batch's acks too), no database.
async fn bare_publisher(server: &PrivateNats, rows: i64, batch: usize) -> (f64, Cpu) {
    let url = &server.url();
    let (subject, stream) = subject(url, "bare").await;
    let context = kit::jetstream(url).await;
    let payload = br#"{"seq":1,"type":"OrderPlaced","customer":"customer-1","items":[{"sku":"SKU-12345","qty":2,"price":19.99}],"note":"lorem ipsum dolor sit amet consectetur adipiscing"}"#;
    let meter = CpuMeter::start(server.pid(), None);
    let started = Instant::now();
    let mut sent = 0;
    while sent < rows {
        let window = (rows - sent).min(batch as i64);
        let mut acks = Vec::with_capacity(window as usize);
        for i in 0..window {
            let id = format!("bare-{}", sent + i);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            headers.insert("id", id.as_str());
            headers.insert("key", "key-1");
            let ack = context
                .publish_with_headers(subject.clone(), headers, payload.to_vec().into())
                .await
                .expect("publish");
            acks.push(ack);
        }
        for ack in acks {
            ack.await.expect("PubAck");
        }
        sent += window;
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    let cpu = meter.stop(rows);
    delete_stream(url, &stream).await;
    (rate, cpu)
}

/// Writers insert `rate` rows/s for `seconds` (NOTIFY on); a consumer of
/// the stream notes when each arrives; latency from the writer's COMMIT.
async fn latency(url: &str, rate: u64, seconds: u64, batch: usize) -> Quantiles {
    let env = fresh_env().await;
    let output = env
        .command(&["migrate", "--notify-trigger"])
        .output()
        .expect("migrate");
    common::assert_success(&output, "migrate --notify-trigger");
    let (subject, stream) = subject(url, "latency").await;
    let mut args = kit::relay_args(url, &[]);
    args.extend(relay_args(batch, &[]));
    let mut relay = env.start_relay_args(&args);
    relay.wait_ready().await;
    let expected = (rate * seconds) as usize;
    let receipts = tokio::spawn(receipts(
        url.to_owned(),
        stream.clone(),
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
            .execute(&statement, &[&subject, &per_tick, &(tick as i64)])
            .await
            .expect("insert");
        committed_at.push(now_epoch());
    }
    let receipts = receipts.await.expect("consumer");
    drop(relay);
    delete_stream(url, &stream).await;
    Quantiles::of(
        receipts
            .iter()
            .map(|(tick, at)| (at - committed_at[*tick]).max(0.0))
            .collect(),
    )
}

/// (tick, receipt time) of each message, until `expected` arrived.
async fn receipts(
    url: String,
    stream: String,
    expected: usize,
    timeout_secs: u64,
) -> Vec<(usize, f64)> {
    let context = kit::jetstream(&url).await;
    let stream = context.get_stream(&stream).await.expect("the stream");
    let reader = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .expect("an ordered consumer");
    let mut messages = reader.messages().await.expect("messages");
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut seen = HashMap::new();
    while seen.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(Ok(message))) = tokio::time::timeout(left, messages.next()).await else {
            break;
        };
        let at = now_epoch();
        let payload: serde_json::Value =
            serde_json::from_slice(&message.payload).expect("benchmark payload");
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("id"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let tick = payload["tick"].as_u64().expect("tick") as usize;
        seen.entry(id).or_insert((tick, at));
    }
    seen.into_values().collect()
}
