//! A steady load of application transactions, and the outside check of what
//! reached Kafka: every committed row, no rolled-back row, per-key order,
//! duplicates counted.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;

use super::{assert_key_order, try_connect, Order, Received};

/// Marker in the payload of rows whose transaction rolls back.
pub const ROLLED_BACK: &str = "rolled_back";

/// The `seq` the load wrote into a row's payload: its place in its key.
fn seq_of(message: &Received) -> i64 {
    message
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .and_then(|v| v["seq"].as_i64())
        .expect("load payloads carry seq")
}

/// What a [`Load`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadReport {
    pub committed_transactions: u64,
    pub rolled_back_transactions: u64,
}

/// Inserts `per_tick` rows every 10 ms over `keys` keys, in one transaction
/// per tick; every tenth tick also writes a transaction that rolls back. It
/// reconnects when the database goes away, like an application would.
pub struct Load {
    stop: Arc<AtomicBool>,
    task: JoinHandle<LoadReport>,
}

impl Load {
    pub async fn start(
        database_url: &str,
        table: &str,
        topic: &str,
        per_tick: i64,
        keys: i64,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let insert = format!(
            "INSERT INTO {table} (topic, message_key, payload)
             SELECT $1, 'key-' || ((s.seq + i) % $3), jsonb_build_object('seq', s.seq + i)
             FROM (SELECT $2::bigint AS seq) s, generate_series(0, $4::bigint - 1) AS i"
        );
        let doomed = format!("INSERT INTO {table} (topic, payload) VALUES ($1, $2)");
        let (topic, url) = (topic.to_owned(), database_url.to_owned());
        let task = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut report = LoadReport::default();
                let mut client: Option<tokio_postgres::Client> = None;
                let mut ticker = tokio::time::interval(Duration::from_millis(10));
                let mut seq: i64 = 0;
                let mut tick = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    ticker.tick().await;
                    tick += 1;
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        client = try_connect(&url).await;
                    }
                    let Some(db) = client.as_ref() else { continue };
                    // A failed transaction commits nothing; the seq is only
                    // advanced past rows that may have committed.
                    let _ = db.execute(&insert, &[&topic, &seq, &keys, &per_tick]).await;
                    seq += per_tick;
                    report.committed_transactions += 1;
                    if tick.is_multiple_of(10) && db.batch_execute("BEGIN").await.is_ok() {
                        let _ = db
                            .execute(&doomed, &[&topic, &json!({ ROLLED_BACK: true })])
                            .await;
                        if db.batch_execute("ROLLBACK").await.is_ok() {
                            report.rolled_back_transactions += 1;
                        }
                    }
                }
                report
            })
        };
        Load { stop, task }
    }

    /// Stop writing. Asserts that the load did what the checks rely on:
    /// transactions committed, and rolled-back ones (whose rows
    /// [`verify`] asserts never arrive) happened.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let report = self.task.await.expect("load task");
        assert!(report.committed_transactions > 0, "{report:?}");
        assert!(
            report.rolled_back_transactions > 0,
            "no rolled-back transaction ran, so none was checked: {report:?}"
        );
        report
    }
}

/// Every row in the table: (id, event_id). Only committed rows are there.
pub async fn committed_rows(client: &tokio_postgres::Client, table: &str) -> Vec<(i64, String)> {
    client
        .query(
            &format!("SELECT id, event_id::text FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .expect("committed rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Stop the load, wait for the backlog to drain, read the topic back and
/// check that every committed row arrived, in key order.
pub async fn stop_drain_and_verify(env: &super::TestEnv, load: Load, topic: &str) -> Verdict {
    load.stop().await;
    env.wait_for_status("pending", super::Count::Exactly(0), Duration::from_secs(60))
        .await;
    let committed = committed_rows(&env.client, &env.table).await;
    let ids: Vec<String> = committed.iter().map(|(_, e)| e.clone()).collect();
    let received =
        super::consume_event_ids(&env.brokers, topic, &ids, Duration::from_secs(60)).await;
    verify(&received, &committed, &committed)
}

/// What a consumer saw, checked against what was committed.
#[derive(Debug)]
pub struct Verdict {
    pub committed: usize,
    pub distinct: usize,
    pub duplicates: usize,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "all {} rows checked arrived ({} distinct messages read), {} duplicates",
            self.committed, self.distinct, self.duplicates
        )
    }
}

/// Every row of `must_arrive` arrived, nothing that is not a committed row
/// arrived (so no rolled-back row), and per-key order held (first arrivals,
/// by the `seq` the load wrote per key).
pub fn verify(
    received: &[Received],
    must_arrive: &[(i64, String)],
    committed: &[(i64, String)],
) -> Verdict {
    verify_with(received, must_arrive, committed, Order::FirstArrivals)
}

pub fn verify_with(
    received: &[Received],
    must_arrive: &[(i64, String)],
    committed: &[(i64, String)],
    order: Order,
) -> Verdict {
    let expected: HashSet<&str> = must_arrive.iter().map(|(_, e)| e.as_str()).collect();
    let known: HashSet<&str> = committed.iter().map(|(_, e)| e.as_str()).collect();
    let mut seen = HashSet::new();
    for message in received {
        let payload = message.payload.as_deref().unwrap_or("null");
        assert!(
            !payload.contains(ROLLED_BACK),
            "a rolled-back row reached Kafka"
        );
        let id = message.event_id();
        assert!(
            known.contains(id),
            "a message no committed row explains: {message:?}"
        );
        assert!(message.key.is_some(), "load rows are keyed: {message:?}");
        seen.insert(id.to_owned());
    }
    assert_key_order(received, order, seq_of);
    let missing: Vec<&&str> = expected
        .iter()
        .filter(|id| !seen.contains(**id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} committed rows never arrived, e.g. {missing:?}",
        expected.len() - seen.len()
    );
    Verdict {
        committed: expected.len(),
        distinct: seen.len(),
        duplicates: received.len() - seen.len(),
    }
}
