//! The behaviour every sink must show, written once against [`Target`]: a
//! sink's folder here says how to point the relay at its server, create a
//! destination and read one back, and instantiates these scenarios with
//! [`conformance!`](crate::conformance).
//!
//! Each scenario runs the real relay binary against the real server.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::load::{committed_rows, verify, Load, Verdict};
use crate::common::{Count, NewRow, Received, RelayProcess, TestEnv};

/// A server a sink publishes to, as the scenarios use it.
#[allow(async_fn_in_trait)]
pub trait Target {
    /// The flags that point `outbox-relay run` at this server.
    fn relay_args(&self) -> Vec<String>;

    /// A new destination of this test's own.
    async fn create_destination(&self) -> String;

    /// Create the destination `name` (which the relay already has rows for).
    async fn create_named(&self, name: &str);

    /// Read `destination` until every one of `ids` arrived, or `timeout`.
    async fn read(&self, destination: &str, ids: &[String], timeout: Duration) -> Vec<Received>;

    /// The service's name as the relay's messages say it.
    fn service(&self) -> &'static str;

    /// The `--sink` whose topic rule `migrate` gives the table.
    fn sink(&self) -> &'static str;
}

/// A server of the test's own, which the outage scenario stops and starts.
#[allow(async_fn_in_trait)]
pub trait PrivateTarget: Target + Sized {
    async fn start() -> Self;
    /// Stop the server (its clients see it gone).
    async fn stop(&mut self);
    /// Start it again on the same address, with the destinations it had.
    async fn restart(&mut self);
}

/// A server with credentials, for the wrong-password scenario.
pub trait SecuredTarget: Target {
    /// The flags that point the relay at this server with the (wrong)
    /// password in `password_file`; `dir` takes any other file they need.
    fn wrong_password_args(
        &self,
        dir: &std::path::Path,
        password_file: &std::path::Path,
    ) -> Vec<String>;
}

/// A fresh table for `target`'s sink.
async fn env_for(target: &impl Target) -> TestEnv {
    TestEnv::for_sink(target.sink()).await
}

pub fn start_relay(env: &TestEnv, target: &impl Target, extra: &[&str]) -> RelayProcess {
    let mut args: Vec<String> = target.relay_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    env.start_relay_args(&args)
}

/// `n` rows over `keys` keys; payload `seq` is each row's place in its key.
fn keyed_rows(destination: &str, from: usize, n: usize, keys: usize) -> Vec<NewRow> {
    (from..from + n)
        .map(|i| {
            let mut row = NewRow::new(
                destination,
                Some(&format!("key-{}", i % keys)),
                json!({ "seq": i, "text": format!("row {i} \u{e9}") }),
            );
            row.headers = json!({ "trace": format!("t-{i}") });
            row
        })
        .collect()
}

fn ids_of(inserted: &[(i64, String)]) -> Vec<String> {
    inserted.iter().map(|(_, e)| e.clone()).collect()
}

async fn read_and_verify(env: &TestEnv, target: &impl Target, destination: &str) -> Verdict {
    let committed = committed_rows(&env.client, &env.table).await;
    let received = target
        .read(destination, &ids_of(&committed), Duration::from_secs(60))
        .await;
    verify(&received, &committed, &committed)
}

/// Every committed row arrives once or more with its event id, key, payload
/// bytes and headers, in order per key, with two relays on the table.
pub async fn end_to_end_with_two_relays(target: impl Target) {
    let env = env_for(&target).await;
    let destination = target.create_destination().await;
    let mut relays = [
        start_relay(&env, &target, &[]),
        start_relay(&env, &target, &[]),
    ];
    for relay in &mut relays {
        relay.wait_ready().await;
    }
    let mut inserted = Vec::new();
    for chunk in 0..6 {
        inserted.extend(
            env.insert(&keyed_rows(&destination, chunk * 50, 50, 7))
                .await,
        );
    }
    env.wait_for_status("published", Count::Exactly(300), Duration::from_secs(60))
        .await;
    let received = target
        .read(&destination, &ids_of(&inserted), Duration::from_secs(60))
        .await;
    let verdict = verify(&received, &inserted, &inserted);
    assert_eq!(verdict.distinct, 300, "{verdict}");
    let first = received
        .iter()
        .find(|r| r.event_id() == inserted[0].1)
        .expect("the first row arrived");
    assert_eq!(first.key.as_deref(), Some("key-0"));
    assert_eq!(
        first.payload.as_deref(),
        Some(r#"{"seq":0,"text":"row 0 é"}"#),
        "the payload bytes are the compact JSON"
    );
    assert_eq!(first.header("trace"), Some("t-0"));
}

/// Rows of a transaction that rolled back never reach the sink.
pub async fn rolled_back_transactions_never_appear(target: impl Target) {
    let env = env_for(&target).await;
    let destination = target.create_destination().await;
    let before = env.insert(&keyed_rows(&destination, 0, 1, 1)).await;
    let insert = format!(
        "INSERT INTO {} (topic, message_key, payload) VALUES ($1, 'key-0', $2)",
        env.table
    );
    let doomed = json!({ "seq": -1, "marker": "rolled_back" });
    env.client.batch_execute("BEGIN").await.unwrap();
    env.client
        .execute(&insert, &[&destination, &doomed])
        .await
        .unwrap();
    env.client.batch_execute("ROLLBACK").await.unwrap();
    let after = env.insert(&keyed_rows(&destination, 1, 1, 1)).await;
    let _relay = start_relay(&env, &target, &[]);
    env.wait_for_status("published", Count::Exactly(2), Duration::from_secs(30))
        .await;
    let ids = ids_of(&[before[0].clone(), after[0].clone()]);
    let received = target
        .read(&destination, &ids, Duration::from_secs(30))
        .await;
    let seen: HashSet<&str> = received.iter().map(Received::event_id).collect();
    assert_eq!(seen.len(), 2, "{received:?}");
    assert!(
        received
            .iter()
            .all(|r| !r.payload.as_deref().unwrap_or("").contains("rolled_back")),
        "{received:?}"
    );
}

/// The service stopped under load: no row lost or dead, readiness says
/// so, and the relay resumes by itself once the service is back.
pub async fn an_outage_loses_nothing_and_the_relay_resumes_by_itself<T: PrivateTarget>() {
    let mut target = T::start().await;
    let env = env_for(&target).await;
    let destination = target.create_destination().await;
    let flags = ["--max-attempts", "2", "--retry-backoff-max-secs", "1"];
    let mut relay = start_relay(&env, &target, &flags);
    relay.wait_ready().await;
    let before = env.insert(&keyed_rows(&destination, 0, 100, 10)).await;
    env.wait_for_status("published", Count::Exactly(100), Duration::from_secs(30))
        .await;
    let arrived = target
        .read(&destination, &ids_of(&before), Duration::from_secs(30))
        .await;
    verify(&arrived, &before, &before);

    target.stop().await;
    let during = env.insert(&keyed_rows(&destination, 100, 200, 10)).await;
    // Long enough in the outage for rows to burn attempts, if it counted.
    relay.wait_into_outage().await;
    assert_eq!(env.count("dead").await, 0, "{}", relay.log_text());

    target.restart().await;
    env.wait_for_status("published", Count::Exactly(300), Duration::from_secs(90))
        .await;
    relay.wait_ready().await;
    assert_eq!(env.count("dead").await, 0, "{}", relay.log_text());
    let received = target
        .read(&destination, &ids_of(&during), Duration::from_secs(60))
        .await;
    let all = committed_rows(&env.client, &env.table).await;
    let verdict = verify(&received, &during, &all);
    eprintln!("CONFORMANCE outage: {verdict}");
}

/// A relay SIGKILLed mid-drain loses nothing; duplicates stay within the
/// rows in flight (two batches).
pub async fn a_relay_killed_mid_drain_loses_nothing(target: impl Target) {
    let env = env_for(&target).await;
    let destination = target.create_destination().await;
    let load = Load::start(&env.database_url, &env.table, &destination, 10, 50).await;
    let flags = ["--batch-size", "100"];
    let mut relay = start_relay(&env, &target, &flags);
    relay.wait_ready().await;
    env.wait_for_status("published", Count::AtLeast(300), Duration::from_secs(60))
        .await;
    relay.signal("KILL");
    relay.wait_exit(Duration::from_secs(10)).await;
    let mut again = start_relay(&env, &target, &flags);
    again.wait_ready().await;
    let restarted = Instant::now();
    env.wait_for_status("published", Count::AtLeast(600), Duration::from_secs(60))
        .await;
    load.stop().await;
    env.wait_for_status("pending", Count::Exactly(0), Duration::from_secs(60))
        .await;
    assert_eq!(env.count("dead").await, 0);
    let verdict = read_and_verify(&env, &target, &destination).await;
    assert!(verdict.duplicates <= 200, "{verdict}");
    eprintln!(
        "CONFORMANCE relay SIGKILL: {verdict}; publishing {:?} after restart",
        restarted.elapsed()
    );
}

/// A row for a destination that does not exist fails at once, saying what
/// to do, while the other destinations flow; it goes out once created.
pub async fn a_missing_destination_does_not_hold_up_the_others(target: impl Target) {
    let env = env_for(&target).await;
    let present = target.create_destination().await;
    let missing = crate::common::unique_name("missing");
    let mut rows = vec![NewRow::new(&missing, Some("m"), json!({ "seq": 0 }))];
    rows.extend(keyed_rows(&present, 0, 50, 5));
    let inserted = env.insert(&rows).await;
    let _relay = start_relay(
        &env,
        &target,
        &[
            "--retry-backoff-base-ms",
            "200",
            "--retry-backoff-max-secs",
            "1",
        ],
    );
    env.wait_for_status("published", Count::Exactly(50), Duration::from_secs(30))
        .await;
    let (status, attempts, error) = env.row_state(inserted[0].0).await;
    assert_eq!(status, "pending");
    assert!(attempts >= 1);
    let error = error.unwrap_or_default();
    assert!(
        error.contains(&missing) && error.contains("does not exist"),
        "{error}"
    );
    target.create_named(&missing).await;
    env.wait_for_status("published", Count::Exactly(51), Duration::from_secs(60))
        .await;
    let received = target
        .read(&missing, &ids_of(&inserted[..1]), Duration::from_secs(30))
        .await;
    assert_eq!(received.len(), 1, "{received:?}");
}

/// A wrong password: one clear line naming the service, exit 1, and the
/// password nowhere in the output.
pub async fn a_wrong_password_gets_one_clear_line_and_no_secret(target: impl SecuredTarget) {
    let env = env_for(&target).await;
    let password = format!("wrong-{}", crate::common::unique_name("pw"));
    let password_file = env.dir.path().join("wrong.password");
    std::fs::write(&password_file, &password).expect("write the password file");
    let args = target.wrong_password_args(env.dir.path(), &password_file);
    let mut relay = env.start_relay_args(&args);
    let status = relay.wait_exit(Duration::from_secs(60)).await;
    let log = relay.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains(target.service()), "{}", errors[0]);
    assert!(!log.contains(&password), "{log}");
}

/// One test per scenario for a target: `conformance!(module, Target, [...])`.
#[macro_export]
macro_rules! conformance {
    ($module:ident, $target:ty, shared: [$($shared:ident),* $(,)?], private: [$($private:ident),* $(,)?] $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $shared() {
                    $crate::suite::$shared(<$target>::shared()).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $private() {
                    $crate::suite::$private::<$target>().await
                }
            )*
        }
    };
}
