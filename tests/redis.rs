//! Redis beyond the conformance suite, against a real Redis 7.0: no
//! duplicate entries after relay SIGKILLs or a `SCRIPT FLUSH`, `MAXLEN ~`
//! trimming, a list read with `BRPOP`, `WRONGTYPE`, a replica's `READONLY`
//! and `OOM` as outages, `WAIT` for replicas, rediss with the right CA and
//! a wrong one, a 15 s outage under load, and the config file.

mod common;

use std::time::Duration;

use common::load::{committed_rows, verify, Load};
use common::redis::{self, PrivateRedis};
use common::{wait_for, Count, NewRow, TestEnv};
use redis_crate::Value;
use serde_json::json;

extern crate redis as redis_crate;

fn ids(rows: &[(i64, String)]) -> Vec<String> {
    rows.iter().map(|(_, id)| id.clone()).collect()
}

/// `n` rows to `key` over three message keys, `seq` their order per key.
fn rows(key: &str, from: usize, n: usize) -> Vec<NewRow> {
    (from..from + n)
        .map(|i| NewRow::new(key, Some(&format!("key-{}", i % 3)), json!({ "seq": i })))
        .collect()
}

fn stream_key() -> String {
    format!("{}:events", common::unique_name("orders"))
}

async fn xlen(url: &str, key: &str) -> i64 {
    match redis::command(url, &["XLEN", key]).await.expect("XLEN") {
        Value::Int(n) => n,
        other => panic!("XLEN answered {other:?}"),
    }
}

/// A relay SIGKILLed mid-drain, again and again, until kills land after
/// entries were added and before their rows were marked: restarted, it
/// loses nothing and adds no entry twice. A trigger slows the marks down
/// (1 ms a row), so that the window is wide enough for a kill to land in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_killed_between_the_add_and_the_mark_add_no_entry_twice() {
    let env = TestEnv::for_sink("redis").await;
    env.add_update_trigger(
        "slow_mark",
        "IF NEW.status = 'published' THEN PERFORM pg_sleep(0.001); END IF; RETURN NEW;",
    )
    .await;
    let url = redis::url();
    let key = stream_key();
    let load = Load::start(&env.database_url, &env.table, &key, 2, 20).await;
    let args = redis::relay_args(&url, &["--batch-size", "200"]);
    let added_not_marked = || async {
        let published = env.count("published").await;
        (xlen(&url, &key).await > published).then_some(())
    };
    let mut landed = 0;
    for _ in 0..10 {
        let mut relay = env.start_relay_args(&args);
        relay.wait_ready().await;
        wait_for(
            "an add not yet marked",
            Duration::from_secs(30),
            added_not_marked,
        )
        .await;
        relay.signal("KILL");
        relay.wait_exit(Duration::from_secs(10)).await;
        if added_not_marked().await.is_some() {
            landed += 1;
            if landed == 3 {
                break;
            }
        }
    }
    assert!(landed > 0, "no kill landed between an add and its mark");
    let _relay = env.start_relay_args(&args);
    load.stop().await;
    env.wait_for_status("pending", Count::Exactly(0), Duration::from_secs(120))
        .await;
    assert_eq!(env.count("dead").await, 0);
    let committed = committed_rows(&env.client, &env.table).await;
    let received = redis::read_stream(&url, &key, &ids(&committed), Duration::from_secs(30)).await;
    let verdict = verify(&received, &committed, &committed);
    assert_eq!(verdict.duplicates, 0, "{verdict}");
    assert_eq!(received.len(), committed.len());
    println!("Redis, {landed} kills between add and mark: {verdict}");
}

/// Rows sent again after a `SCRIPT FLUSH` are still recognised (the dedup
/// record is a key, not the script), the script is loaded again, and new
/// rows keep flowing. A private server: the script cache is server-wide, so
/// another test's relay on the shared one could load the script first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_sent_again_across_a_script_flush_are_not_added_twice() {
    let env = TestEnv::for_sink("redis").await;
    let server = PrivateRedis::start().await;
    let url = server.url();
    let key = stream_key();
    let relay = env.start_relay_args(&redis::relay_args(&url, &[]));
    let first = env.insert(&rows(&key, 0, 50)).await;
    env.wait_for_status("published", Count::Exactly(50), Duration::from_secs(30))
        .await;
    redis::command(&url, &["SCRIPT", "FLUSH"])
        .await
        .expect("SCRIPT FLUSH");
    // As if their marks had been lost: the same rows go out again.
    env.client
        .execute(&format!("UPDATE {} SET status = 'pending'", env.table), &[])
        .await
        .expect("make the rows pending again");
    let second = env.insert(&rows(&key, 50, 50)).await;
    env.wait_for_status("published", Count::Exactly(100), Duration::from_secs(30))
        .await;
    let mut all = first.clone();
    all.extend(second);
    let received = redis::read_stream(&url, &key, &ids(&all), Duration::from_secs(10)).await;
    let verdict = verify(&received, &all, &all);
    assert_eq!(verdict.duplicates, 0, "{verdict}");
    assert_eq!(xlen(&url, &key).await, 100);
    assert!(
        relay.log_text().contains("loaded it again"),
        "{}",
        relay.log_text()
    );
}

/// `--redis-dedup-secs 0` turns dedup off: the same rows sent again are
/// added again, and no dedup record is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_off_adds_rows_sent_again_a_second_time() {
    let env = TestEnv::for_sink("redis").await;
    let url = redis::url();
    let key = stream_key();
    let _relay = env.start_relay_args(&redis::relay_args(&url, &["--redis-dedup-secs", "0"]));
    let inserted = env.insert(&rows(&key, 0, 10)).await;
    env.wait_for_status("published", Count::Exactly(10), Duration::from_secs(30))
        .await;
    env.client
        .execute(&format!("UPDATE {} SET status = 'pending'", env.table), &[])
        .await
        .expect("make the rows pending again");
    env.wait_for_status("published", Count::Exactly(10), Duration::from_secs(30))
        .await;
    wait_for("the second copies", Duration::from_secs(10), || async {
        (xlen(&url, &key).await == 20).then_some(())
    })
    .await;
    let record = format!("outbox-relay:dedup:{key}:{}", inserted[0].1);
    let exists = redis::command(&url, &["EXISTS", &record]).await.unwrap();
    assert_eq!(exists, Value::Int(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxlen_trims_each_stream_to_about_its_length() {
    let env = TestEnv::for_sink("redis").await;
    let url = redis::url();
    let key = stream_key();
    let _relay = env.start_relay_args(&redis::relay_args(&url, &["--redis-maxlen", "100"]));
    for chunk in 0..10 {
        env.insert(&rows(&key, chunk * 200, 200)).await;
    }
    env.wait_for_status("published", Count::Exactly(2000), Duration::from_secs(60))
        .await;
    let length = xlen(&url, &key).await;
    // `~` trims whole macro nodes (100 entries each by default).
    assert!((100..=300).contains(&length), "XLEN {length}");
    let received = redis::read_stream(&url, &key, &[], Duration::ZERO).await;
    let last = received.last().expect("entries");
    assert_eq!(last.payload.as_deref(), Some(r#"{"seq":1999}"#));
}

/// List mode is a queue: `BRPOP` takes the envelopes oldest first, in key
/// order, each with its id, key, inline JSON payload and headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_consumer_takes_every_row_with_brpop_in_order() {
    let env = TestEnv::for_sink("redis").await;
    let url = redis::url();
    let key = format!("{}:queue", common::unique_name("jobs"));
    let mut batch = rows(&key, 0, 30);
    batch[0].headers = json!({ "trace": "t-0" });
    let inserted = env.insert(&batch).await;
    let _relay = env.start_relay_args(&redis::relay_args(&url, &["--redis-mode", "list"]));
    env.wait_for_status("published", Count::Exactly(30), Duration::from_secs(30))
        .await;
    let mut connection = redis::connect(&url).await;
    let mut received = Vec::new();
    for offset in 0..30 {
        let (_, element): (String, Vec<u8>) = redis_crate::cmd("BRPOP")
            .arg(&key)
            .arg(5)
            .query_async(&mut connection)
            .await
            .expect("BRPOP");
        received.push(redis::from_envelope(offset, &element));
    }
    let verdict = verify(&received, &inserted, &inserted);
    assert_eq!(verdict.duplicates, 0, "{verdict}");
    assert_eq!(received[0].event_id(), inserted[0].1);
    assert_eq!(received[0].payload.as_deref(), Some(r#"{"seq":0}"#));
    assert_eq!(received[0].key.as_deref(), Some("key-0"));
    assert_eq!(received[0].header("trace"), Some("t-0"));
}

/// A key holding another type makes its row dead with Redis's reason; the
/// rows of other keys flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_another_type_makes_its_row_dead_and_the_others_flow() {
    let env = TestEnv::for_sink("redis").await;
    let url = redis::url();
    let taken = format!("{}:string", common::unique_name("taken"));
    redis::command(&url, &["SET", &taken, "not a stream"])
        .await
        .expect("SET");
    let good = stream_key();
    let mut batch = vec![NewRow::new(&taken, Some("k"), json!({ "seq": 0 }))];
    batch.extend(rows(&good, 0, 20));
    let inserted = env.insert(&batch).await;
    let relay = env.start_relay_args(&redis::relay_args(&url, &[]));
    env.wait_for_status("published", Count::Exactly(20), Duration::from_secs(30))
        .await;
    env.wait_for_status("dead", Count::Exactly(1), Duration::from_secs(30))
        .await;
    let (status, _, error) = env.row_state(inserted[0].0).await;
    assert_eq!(status, "dead");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("WRONGTYPE") && error.contains(&taken),
        "{error}"
    );
    let failures = relay
        .metric("outbox_publish_failures_total{reason=\"wrong_type\"}")
        .await;
    assert_eq!(failures, Some(1.0));
}

/// A replica refuses writes (`READONLY`), as does a server out of memory
/// (`OOM`): each is an outage, said once, with no attempt counted; rows
/// flow once writes are taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_and_a_full_server_are_outages_not_failures() {
    let primary = PrivateRedis::start().await;
    let replica = primary.replica().await;
    let env = TestEnv::for_sink("redis").await;
    let key = stream_key();
    let flags = ["--max-attempts", "2", "--retry-backoff-max-secs", "1"];
    let mut relay = env.start_relay_args(&redis::relay_args(&replica.url(), &flags));
    env.insert(&rows(&key, 0, 20)).await;
    relay.wait_into_outage().await;
    assert_eq!(env.count("dead").await, 0, "{}", relay.log_text());
    assert_eq!(env.count("published").await, 0);
    let log = relay.log_text();
    assert_eq!(
        log.matches("Redis does not answer or takes no writes")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains("READONLY"), "{log}");
    // A failover: the replica becomes the primary.
    redis::command(&replica.url(), &["REPLICAOF", "NO", "ONE"])
        .await
        .expect("promote the replica");
    env.wait_for_status("published", Count::Exactly(20), Duration::from_secs(60))
        .await;
    relay.wait_ready().await;

    redis::command(&replica.url(), &["CONFIG", "SET", "maxmemory", "1"])
        .await
        .expect("CONFIG SET maxmemory");
    env.insert(&rows(&key, 20, 20)).await;
    relay.wait_into_outage().await;
    assert_eq!(env.count("dead").await, 0, "{}", relay.log_text());
    assert!(relay.log_text().contains("OOM"), "{}", relay.log_text());
    redis::command(&replica.url(), &["CONFIG", "SET", "maxmemory", "0"])
        .await
        .expect("CONFIG SET maxmemory");
    env.wait_for_status("published", Count::Exactly(40), Duration::from_secs(60))
        .await;
    assert_eq!(env.count("dead").await, 0);
    assert_eq!(xlen(&replica.url(), &key).await, 40);
}

/// `--redis-wait-replicas 1`: rows are published once a replica has them;
/// with the replica gone they wait as in an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_replica_publishes_only_what_a_replica_took() {
    let primary = PrivateRedis::start().await;
    let replica = primary.replica().await;
    let env = TestEnv::for_sink("redis").await;
    let key = stream_key();
    let flags = ["--redis-wait-replicas", "1", "--max-attempts", "2"];
    let mut relay = env.start_relay_args(&redis::relay_args(&primary.url(), &flags));
    relay.wait_ready().await;
    env.insert(&rows(&key, 0, 20)).await;
    env.wait_for_status("published", Count::Exactly(20), Duration::from_secs(30))
        .await;
    wait_for(
        "the replica to have them",
        Duration::from_secs(10),
        || async { (xlen(&replica.url(), &key).await == 20).then_some(()) },
    )
    .await;
    drop(replica);
    env.insert(&rows(&key, 20, 20)).await;
    relay.wait_into_outage().await;
    assert_eq!(env.count("dead").await, 0, "{}", relay.log_text());
    assert_eq!(env.count("published").await, 20);
    assert!(
        relay.log_text().contains("replicas"),
        "{}",
        relay.log_text()
    );
}

/// rediss with the server's CA (and a client certificate) delivers; with
/// a CA that did not sign the server's certificate, start-up fails in one
/// line naming Redis, with no secret shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_the_servers_ca_delivers_and_a_wrong_ca_fails_at_start_in_one_line() {
    let env = TestEnv::for_sink("redis").await;
    let rediss = format!("rediss://relay@{}/0", redis::tls_address());
    let ca = std::env::var("OUTBOX_TEST_CA").expect("OUTBOX_TEST_CA");
    let secrets = std::path::Path::new(&ca).parent().unwrap().to_owned();
    let cert = secrets.join("broker.pem").display().to_string();
    let key_file = secrets.join("broker.key").display().to_string();
    let key = stream_key();
    let inserted = env.insert(&rows(&key, 0, 10)).await;
    let _relay = env.start_relay_args(&redis::relay_args(
        &rediss,
        &[
            "--redis-ca",
            &ca,
            "--redis-client-cert",
            &cert,
            "--redis-client-key",
            &key_file,
        ],
    ));
    env.wait_for_status("published", Count::Exactly(10), Duration::from_secs(30))
        .await;
    let received = redis::read_stream(
        &redis::url(),
        &key,
        &ids(&inserted),
        Duration::from_secs(10),
    )
    .await;
    verify(&received, &inserted, &inserted);

    let certs = common::certs::Certificates::generate();
    let mut wrong = env.start_relay_args(&redis::relay_args(
        &rediss,
        &[
            "--redis-ca",
            &certs.path("other-ca.pem"),
            "--startup-timeout-secs",
            "2",
        ],
    ));
    let status = wrong.wait_exit(Duration::from_secs(30)).await;
    let log = wrong.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains("Redis") && errors[0].contains("rediss://relay@"),
        "{}",
        errors[0]
    );
    let password = std::fs::read_to_string(redis::password_file()).unwrap();
    assert!(!log.contains(password.trim()), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_for_15_s_under_load_loses_and_burns_nothing() {
    let server = PrivateRedis::start().await;
    let env = TestEnv::for_sink("redis").await;
    let key = stream_key();
    let load = Load::start(&env.database_url, &env.table, &key, 5, 20).await;
    let mut relay = env.start_relay_args(&redis::relay_args(&server.url(), &[]));
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
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(env.count("dead").await, 0, "{}", relay.log_text());
    server.restart().await;
    load.stop().await;
    env.wait_for_status("pending", Count::Exactly(0), Duration::from_secs(120))
        .await;
    relay.wait_ready().await;
    assert_eq!(env.count("dead").await, 0, "{}", relay.log_text());
    let committed = committed_rows(&env.client, &env.table).await;
    let received = redis::read_stream(
        &server.url(),
        &key,
        &ids(&committed),
        Duration::from_secs(30),
    )
    .await;
    let verdict = verify(&received, &committed, &committed);
    println!("Redis stopped 15 s under load: {verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_and_its_settings_can_come_from_the_config_file() {
    let env = TestEnv::for_sink("redis").await;
    let url = redis::url();
    let key = format!("{}:queue", common::unique_name("jobs"));
    let inserted = env.insert(&rows(&key, 0, 5)).await;
    let file = env.dir.path().join("relay.toml");
    std::fs::write(
        &file,
        format!(
            "sink = \"redis\"\n[redis]\nurl = \"{url}\"\npassword_file = \"{}\"\nmode = \"list\"\n[[source]]\ndatabase_url = \"{}\"\n[[source.table]]\nname = \"{}\"\n",
            redis::password_file().display(),
            env.database_url,
            env.table
        ),
    )
    .unwrap();
    let _relay = env.start_relay_bare(&["--config", file.to_str().unwrap()]);
    env.wait_for_status("published", Count::Exactly(5), Duration::from_secs(30))
        .await;
    let received = redis::read_list(&url, &key, &ids(&inserted), Duration::from_secs(10)).await;
    verify(&received, &inserted, &inserted);
}

/// `migrate --sink redis` lets a table take Redis's conventional
/// `:`-separated keys, which Kafka's rule refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_for_redis_accepts_colon_separated_keys() {
    let env = TestEnv::new().await;
    let insert = format!("INSERT INTO {} (topic) VALUES ($1)", env.table);
    assert!(env
        .client
        .execute(&insert, &[&"orders:created"])
        .await
        .is_err());
    let output = env
        .command(&["migrate", "--sink", "redis"])
        .output()
        .expect("migrate");
    common::assert_success(&output, "migrate --sink redis");
    env.client
        .execute(&insert, &[&"orders:created"])
        .await
        .expect("a colon-separated key");
    assert!(env.client.execute(&insert, &[&""]).await.is_err());
}

/// The ACL docs/redis.md gives is enough: rows to the keys it covers flow,
/// a row to a key it does not cover waits as `not_authorized` with Redis's
/// NOPERM; a user who may not load the script fails at start in one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_is_enough_and_what_it_lacks_is_named() {
    let env = TestEnv::for_sink("redis").await;
    let url = redis::url();
    let prefix = common::unique_name("acl");
    let (narrow, bare) = (format!("{prefix}_narrow"), format!("{prefix}_bare"));
    let password = common::unique_name("pw");
    let password_file = env.dir.path().join("narrow.password");
    std::fs::write(&password_file, &password).unwrap();
    let documented = "+evalsha +script|load +exists +xadd +lpush +set +wait +ping";
    for (user, commands) in [(&narrow, documented), (&bare, "+evalsha +ping")] {
        let mut args = vec!["ACL", "SETUSER", user, "on"];
        let secret = format!(">{password}");
        let keys = format!("~{prefix}:*");
        args.extend([secret.as_str(), keys.as_str(), "~outbox-relay:*"]);
        args.extend(commands.split(' '));
        redis::command(&url, &args).await.expect("ACL SETUSER");
    }
    let user_url = |user: &str| url.replacen("relay@", &format!("{user}@"), 1);
    let allowed = format!("{prefix}:events");
    let denied = format!("{}:events", common::unique_name("other"));
    let mut batch = vec![NewRow::new(&denied, Some("d"), json!({ "seq": 0 }))];
    batch.extend(rows(&allowed, 0, 10));
    let inserted = env.insert(&batch).await;
    let relay = env.start_relay_args(&redis::relay_args_with(
        &user_url(&narrow),
        &password_file,
        &["--retry-backoff-max-secs", "1"],
    ));
    env.wait_for_status("published", Count::Exactly(10), Duration::from_secs(30))
        .await;
    wait_for(
        "the denied row's error",
        Duration::from_secs(30),
        || async {
            let (status, _, error) = env.row_state(inserted[0].0).await;
            (status == "pending" && error.is_some_and(|e| e.contains("NOPERM"))).then_some(())
        },
    )
    .await;
    assert!(
        relay
            .metric("outbox_publish_failures_total{reason=\"not_authorized\"}")
            .await
            .unwrap_or_default()
            >= 1.0
    );
    drop(relay);

    let mut refused = env.start_relay_args(&redis::relay_args_with(
        &user_url(&bare),
        &password_file,
        &[],
    ));
    let status = refused.wait_exit(Duration::from_secs(30)).await;
    let log = refused.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains("Redis") && errors[0].contains(&bare) && errors[0].contains("ACL"),
        "{}",
        errors[0]
    );
    assert!(!log.contains(&password), "{log}");
    for user in [&narrow, &bare] {
        let _ = redis::command(&url, &["ACL", "DELUSER", user]).await;
    }
}
