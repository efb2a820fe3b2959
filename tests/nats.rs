//! NATS JetStream beyond the conformance suite, against a real nats-server
//! 2.9: no duplicate in the stream after relay SIGKILLs, `no_stream`, the
//! short-window warning, a stream at its limits with `discard new`, TLS with
//! the right CA and a wrong one, a token and a creds file, two servers with
//! one down, a 15 s outage under load, the config file and the subject
//! CHECK.

mod common;

use std::time::Duration;

use async_nats::jetstream::stream::DiscardPolicy;
use common::load::{committed_rows, verify, Load};
use common::nats::{self, PrivateNats};
use common::{wait_for, Count, NewRow, TestEnv};
use serde_json::json;

fn ids(rows: &[(i64, String)]) -> Vec<String> {
    rows.iter().map(|(_, id)| id.clone()).collect()
}

/// `n` rows to `subject` over three keys of its own (a key's rows wait
/// behind its failing row, whatever their subject), `seq` their order per
/// key.
fn rows(subject: &str, from: usize, n: usize) -> Vec<NewRow> {
    (from..from + n)
        .map(|i| {
            let key = format!("{subject}-{}", i % 3);
            NewRow::new(subject, Some(&key), json!({ "seq": i }))
        })
        .collect()
}

/// One `error:` line naming NATS, exit 1, and `secret` nowhere.
async fn fails_at_start_in_one_line(relay: &mut common::RelayProcess, secret: &str) -> String {
    let status = relay.wait_exit(Duration::from_secs(30)).await;
    let log = relay.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains("NATS"), "{}", errors[0]);
    assert!(!log.contains(secret), "{log}");
    errors[0].to_owned()
}

/// A relay SIGKILLed mid-drain, again and again, until kills land after
/// PubAcks and before their rows were marked: restarted, it loses nothing
/// and the stream holds no second copy (the stream's dedup on
/// `Nats-Msg-Id`). A trigger slows the marks (1 ms a row) to widen the
/// window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_killed_between_the_ack_and_the_mark_leave_no_duplicate_in_the_stream() {
    let env = TestEnv::for_sink("nats").await;
    env.add_update_trigger(
        "slow_mark",
        "IF NEW.status = 'published' THEN PERFORM pg_sleep(0.001); END IF; RETURN NEW;",
    )
    .await;
    let url = nats::url();
    let (subject, stream) = nats::subject_with_stream(&url).await;
    let load = Load::start(&env.database_url, &env.table, &subject, 2, 20).await;
    let args = nats::relay_args(&url, &["--batch-size", "200"]);
    let acked_not_marked = || async {
        let published = env.count("published").await as u64;
        (nats::stream_messages(&url, &stream).await > published).then_some(())
    };
    let mut landed = 0;
    for _ in 0..10 {
        let mut relay = env.start_relay_args(&args);
        relay.wait_ready().await;
        wait_for(
            "an ack not yet marked",
            Duration::from_secs(30),
            acked_not_marked,
        )
        .await;
        relay.signal("KILL");
        relay.wait_exit(Duration::from_secs(10)).await;
        if acked_not_marked().await.is_some() {
            landed += 1;
            if landed == 3 {
                break;
            }
        }
    }
    assert!(landed > 0, "no kill landed between an ack and its mark");
    let _relay = env.start_relay_args(&args);
    load.stop().await;
    env.wait_for_status("pending", Count::Exactly(0), Duration::from_secs(120))
        .await;
    assert_eq!(env.count("dead").await, 0);
    let committed = committed_rows(&env.client, &env.table).await;
    let received = nats::read(&url, &subject, &ids(&committed), Duration::from_secs(30)).await;
    let verdict = verify(&received, &committed, &committed);
    assert_eq!(verdict.duplicates, 0, "{verdict}");
    assert_eq!(
        nats::stream_messages(&url, &stream).await,
        committed.len() as u64
    );
    println!("NATS, {landed} kills between ack and mark: {verdict}");
}

/// A subject no stream captures waits as `no_stream`, its key behind it,
/// while other subjects flow; it goes out once a stream captures it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_no_stream_captures_waits_as_no_stream_and_the_others_flow() {
    let env = TestEnv::for_sink("nats").await;
    let url = nats::url();
    let (present, _) = nats::subject_with_stream(&url).await;
    let missing = format!("{}.events", common::unique_name("nostream"));
    let mut batch = rows(&missing, 0, 3);
    batch.extend(rows(&present, 0, 20));
    let inserted = env.insert(&batch).await;
    let relay = env.start_relay_args(&nats::relay_args(
        &url,
        &[
            "--retry-backoff-base-ms",
            "200",
            "--retry-backoff-max-secs",
            "1",
            "--max-attempts",
            "1000",
        ],
    ));
    env.wait_for_status("published", Count::Exactly(20), Duration::from_secs(30))
        .await;
    let (status, _, error) = env.row_state(inserted[0].0).await;
    assert_eq!(status, "pending");
    let error = error.unwrap_or_default();
    assert!(
        error.contains(&missing) && error.contains("no stream captures it"),
        "{error}"
    );
    assert!(
        relay
            .metric("outbox_publish_failures_total{reason=\"no_stream\"}")
            .await
            .unwrap_or_default()
            >= 1.0
    );
    nats::create_stream(&url, &[&missing], |_| {}).await;
    env.wait_for_status("published", Count::Exactly(23), Duration::from_secs(60))
        .await;
    let received = nats::read(
        &url,
        &missing,
        &ids(&inserted[..3]),
        Duration::from_secs(10),
    )
    .await;
    verify(&received, &inserted[..3], &inserted[..3]);
}

/// A stream whose duplicate window is shorter than a retry can take is
/// said once, naming the stream; rows still flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_window_shorter_than_a_retry_is_warned_about_once() {
    let env = TestEnv::for_sink("nats").await;
    let url = nats::url();
    let subject = format!("{}.events", common::unique_name("short"));
    let stream = nats::create_stream(&url, &[&subject], |config| {
        config.duplicate_window = Duration::from_secs(5);
    })
    .await;
    env.insert(&rows(&subject, 0, 10)).await;
    let relay = env.start_relay_args(&nats::relay_args(&url, &[]));
    env.wait_for_status("published", Count::Exactly(10), Duration::from_secs(30))
        .await;
    env.insert(&rows(&subject, 10, 10)).await;
    env.wait_for_status("published", Count::Exactly(20), Duration::from_secs(30))
        .await;
    let log = relay.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("duplicate window") && l.contains(&stream))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("5s"), "{}", warnings[0]);
}

/// A stream at its limits with `discard new` refuses a publish: retried
/// as `stream_full`, its key waiting; other subjects flow; once there is
/// room, the rest go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_with_discard_new_holds_its_rows_and_the_others_flow() {
    let env = TestEnv::for_sink("nats").await;
    let url = nats::url();
    let full = format!("{}.events", common::unique_name("full"));
    let stream = nats::create_stream(&url, &[&full], |config| {
        config.max_messages = 5;
        config.discard = DiscardPolicy::New;
    })
    .await;
    let (other, _) = nats::subject_with_stream(&url).await;
    let mut batch = rows(&full, 0, 8);
    batch.extend(rows(&other, 0, 20));
    env.insert(&batch).await;
    let relay = env.start_relay_args(&nats::relay_args(
        &url,
        &[
            "--retry-backoff-base-ms",
            "200",
            "--retry-backoff-max-secs",
            "1",
            "--max-attempts",
            "1000",
        ],
    ));
    env.wait_for_status("published", Count::Exactly(25), Duration::from_secs(30))
        .await;
    wait_for("a stream_full failure", Duration::from_secs(30), || async {
        let failures = relay
            .metric("outbox_publish_failures_total{reason=\"stream_full\"}")
            .await?;
        (failures >= 1.0).then_some(())
    })
    .await;
    assert_eq!(env.count("dead").await, 0);
    assert_eq!(nats::stream_messages(&url, &stream).await, 5);
    let pending = format!(
        "SELECT last_error FROM {} WHERE status = 'pending' AND attempts > 0 LIMIT 1",
        env.table
    );
    let error: Option<String> = env.client.query_one(&pending, &[]).await.unwrap().get(0);
    assert!(
        error
            .as_deref()
            .unwrap_or_default()
            .contains("maximum messages"),
        "{error:?}"
    );
    let context = nats::jetstream(&url).await;
    context
        .get_stream(&stream)
        .await
        .unwrap()
        .purge()
        .await
        .expect("purge");
    env.wait_for_status("published", Count::Exactly(28), Duration::from_secs(60))
        .await;
}

/// `tls://` with the servers' CA delivers; with a CA that did not sign the
/// server's certificate, start-up fails in one line naming NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_servers_ca_delivers_and_a_wrong_ca_fails_at_start_in_one_line() {
    let server = PrivateNats::start("tls").await;
    let env = TestEnv::for_sink("nats").await;
    let ca = std::env::var("OUTBOX_TEST_CA").expect("OUTBOX_TEST_CA");
    let subject = format!("{}.events", common::unique_name("tls"));
    nats::create_stream(&server.url(), &[&subject], |_| {}).await;
    let inserted = env.insert(&rows(&subject, 0, 10)).await;
    let _relay = env.start_relay_args(&nats::relay_args(&server.url(), &["--nats-ca", &ca]));
    env.wait_for_status("published", Count::Exactly(10), Duration::from_secs(30))
        .await;
    assert_eq!(inserted.len(), 10);

    let certs = common::certs::Certificates::generate();
    let mut wrong = env.start_relay_args(&nats::relay_args(
        &server.url(),
        &[
            "--nats-ca",
            &certs.path("other-ca.pem"),
            "--startup-timeout-secs",
            "2",
        ],
    ));
    let password = server.url();
    let password = password
        .split(':')
        .nth(2)
        .unwrap()
        .split('@')
        .next()
        .unwrap();
    fails_at_start_in_one_line(&mut wrong, password).await;
}

/// A token server: the right token file delivers, a wrong one fails at
/// start in one line; a creds file that is not one fails the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_or_creds_file_gets_one_clear_line_and_no_secret() {
    let server = PrivateNats::start("token").await;
    let env = TestEnv::for_sink("nats").await;
    let url = format!("nats://{}", server.address());
    let token = std::fs::read_to_string(server.token_file()).unwrap();
    let subject = format!("{}.events", common::unique_name("token"));
    let client = async_nats::ConnectOptions::with_token(token.trim().to_owned())
        .connect(url.as_str())
        .await
        .expect("connect with the token");
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: common::unique_name("token"),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .expect("create the stream");
    env.insert(&rows(&subject, 0, 5)).await;
    let token_file = server.token_file().display().to_string();
    let mut relay =
        env.start_relay_args(&nats::relay_args(&url, &["--nats-token-file", &token_file]));
    env.wait_for_status("published", Count::Exactly(5), Duration::from_secs(30))
        .await;
    relay.signal("TERM");
    relay.wait_exit(Duration::from_secs(30)).await;

    let wrong = env.dir.path().join("wrong.token");
    let wrong_token = common::unique_name("wrongtoken");
    std::fs::write(&wrong, &wrong_token).unwrap();
    let mut refused = env.start_relay_args(&nats::relay_args(
        &url,
        &["--nats-token-file", wrong.to_str().unwrap()],
    ));
    let line = fails_at_start_in_one_line(&mut refused, &wrong_token).await;
    assert!(line.contains("--nats-token-file"), "{line}");

    let creds = env.dir.path().join("relay.creds");
    std::fs::write(&creds, "not a credentials file").unwrap();
    let mut refused = env.start_relay_args(&nats::relay_args(
        &url,
        &["--nats-creds", creds.to_str().unwrap()],
    ));
    let line = fails_at_start_in_one_line(&mut refused, token.trim()).await;
    assert!(line.contains("--nats-creds"), "{line}");
}

/// Two servers in the URL, the first one down: the relay connects to the
/// other and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_with_one_down_deliver_through_the_other() {
    let env = TestEnv::for_sink("nats").await;
    let url = nats::url();
    let (subject, _) = nats::subject_with_stream(&url).await;
    let inserted = env.insert(&rows(&subject, 0, 20)).await;
    let down = format!("nats://127.0.0.1:{}", common::free_port());
    let both = format!("{down},{url}");
    let _relay = env.start_relay_args(&nats::relay_args(&both, &[]));
    env.wait_for_status("published", Count::Exactly(20), Duration::from_secs(30))
        .await;
    let received = nats::read(&url, &subject, &ids(&inserted), Duration::from_secs(10)).await;
    verify(&received, &inserted, &inserted);
}

/// nats-server SIGKILLed for 15 s under load: readiness turns before an
/// in-flight publish waits out its ack timeout, nothing is lost or dead,
/// and the relay reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_for_15_s_under_load_loses_and_burns_nothing() {
    let server = PrivateNats::start("password").await;
    let env = TestEnv::for_sink("nats").await;
    let (subject, _) = nats::subject_with_stream(&server.url()).await;
    let load = Load::start(&env.database_url, &env.table, &subject, 5, 20).await;
    let mut relay = env.start_relay_args(&nats::relay_args(&server.url(), &[]));
    relay.wait_ready().await;
    env.wait_for_status("published", Count::AtLeast(200), Duration::from_secs(60))
        .await;
    server.kill().await;
    wait_for(
        "/readyz to report the outage",
        Duration::from_secs(30),
        || async { (relay.get("/readyz").await?.0 == 503).then_some(()) },
    )
    .await;
    let timeouts = relay
        .metric("outbox_publish_failures_total{reason=\"timeout\"}")
        .await
        .unwrap_or_default();
    assert_eq!(
        timeouts, 0.0,
        "/readyz turned only after publishes timed out"
    );
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(env.count("dead").await, 0, "{}", relay.log_text());
    server.restart().await;
    load.stop().await;
    env.wait_for_status("pending", Count::Exactly(0), Duration::from_secs(120))
        .await;
    relay.wait_ready().await;
    assert_eq!(env.count("dead").await, 0, "{}", relay.log_text());
    let committed = committed_rows(&env.client, &env.table).await;
    let received = nats::read(
        &server.url(),
        &subject,
        &ids(&committed),
        Duration::from_secs(30),
    )
    .await;
    let verdict = verify(&received, &committed, &committed);
    println!("NATS stopped 15 s under load: {verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_and_its_settings_can_come_from_the_config_file() {
    let env = TestEnv::for_sink("nats").await;
    let url = nats::url();
    let (subject, _) = nats::subject_with_stream(&url).await;
    let inserted = env.insert(&rows(&subject, 0, 5)).await;
    let file = env.dir.path().join("relay.toml");
    std::fs::write(
        &file,
        format!(
            "sink = \"nats\"\n[nats]\nurl = \"{url}\"\n[[source]]\ndatabase_url = \"{}\"\n[[source.table]]\nname = \"{}\"\n",
            env.database_url, env.table
        ),
    )
    .unwrap();
    let _relay = env.start_relay_bare(&["--config", file.to_str().unwrap()]);
    env.wait_for_status("published", Count::Exactly(5), Duration::from_secs(30))
        .await;
    let received = nats::read(&url, &subject, &ids(&inserted), Duration::from_secs(10)).await;
    verify(&received, &inserted, &inserted);
}

/// `migrate --sink nats` holds `topic` to what NATS can publish to:
/// dot-separated tokens, no whitespace, no wildcard; Kafka's rule again
/// after `migrate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_for_nats_accepts_subjects_and_refuses_wildcards_at_insert() {
    let env = TestEnv::for_sink("nats").await;
    let insert = format!("INSERT INTO {} (topic) VALUES ($1)", env.table);
    for subject in ["orders.created", "orders.eu-west.v1", "a:b"] {
        env.client
            .execute(&insert, &[&subject])
            .await
            .unwrap_or_else(|e| panic!("{subject}: {e}"));
    }
    for subject in [
        "orders.*",
        ">",
        "orders.>",
        "a..b",
        ".a",
        "a.",
        "has space",
        "",
    ] {
        assert!(
            env.client.execute(&insert, &[&subject]).await.is_err(),
            "{subject:?} was accepted"
        );
    }
    for sink in ["redis", "nats", "kafka"] {
        let output = env
            .command(&["migrate", "--sink", sink])
            .output()
            .expect("migrate");
        common::assert_success(&output, "migrate");
    }
    assert!(env.client.execute(&insert, &[&"a:b"]).await.is_err());
}
