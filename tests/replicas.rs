//! Replicas on one table with an elected leader (the default): one claims,
//! the others stand by connected; when the leader is killed under load a
//! standby takes over, nothing is lost and per-key order holds.

mod common;

use std::time::{Duration, Instant};

use common::load::{stop_drain_and_verify, Load};
use common::{wait_for, Count, RelayProcess, TestEnv};
use outbox_relay::source::table::TableName;

/// The index of the replica that reports `outbox_relay_role 1`.
async fn leader(relays: &[RelayProcess]) -> usize {
    wait_for("one leader", Duration::from_secs(30), || async {
        let mut leaders = Vec::new();
        for (i, relay) in relays.iter().enumerate() {
            if relay.metric("outbox_relay_role").await? == 1.0 {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

/// `count` replicas, ready, under about 1,000 rows/s (10 rows every 10 ms),
/// once `published` rows went out.
async fn replicas_under_load(
    env: &TestEnv,
    count: usize,
    published: i64,
) -> (String, Load, Vec<RelayProcess>) {
    let topic = env.create_topic(3).await;
    let load = Load::start(&env.database_url, &env.table, &topic, 10, 50).await;
    let mut relays: Vec<RelayProcess> = (0..count)
        .map(|_| env.start_relay(&["--batch-size", "100"]))
        .collect();
    for relay in &mut relays {
        relay.wait_ready().await;
    }
    env.wait_for_status(
        "published",
        Count::AtLeast(published),
        Duration::from_secs(60),
    )
    .await;
    (topic, load, relays)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_standby_takes_over_when_it_is_killed() {
    let env = TestEnv::new().await;
    let (topic, load, mut relays) = replicas_under_load(&env, 3, 500).await;
    let first = leader(&relays).await;
    for (i, relay) in relays.iter().enumerate() {
        let sample = format!("outbox_published_messages_total{{topic=\"{topic}\"}}");
        let published = relay.metric(&sample).await.unwrap_or(0.0);
        assert_eq!(
            published > 0.0,
            i == first,
            "only the leader publishes: replica {i}"
        );
    }

    let killed = relays.remove(first);
    killed.signal("KILL");
    let since = Instant::now();
    let before = env.count("published").await;
    wait_for("a standby to publish", Duration::from_secs(30), || async {
        (env.count("published").await > before).then_some(())
    })
    .await;
    let failover = since.elapsed();
    let second = leader(&relays).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let verdict = stop_drain_and_verify(&env, load, &topic).await;
    assert!(relays[second]
        .log_text()
        .contains("this relay leads the table"));
    eprintln!("FAILOVER leader SIGKILL under ~1,000 rows/s: publishing again {failover:?} after the kill; {verdict}");
}

/// End the leader's lock session on the server (as a lost connection or
/// `idle_session_timeout` would). Returns whether one was found.
async fn terminate_lock_session(env: &TestEnv) -> bool {
    let table: TableName = env.table.parse().expect("table name");
    let row = env
        .client
        .query_one(
            "SELECT count(pg_terminate_backend(pid))
             FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND objsubid = 1
               AND ((classid::int8 << 32) | objid::int8) = hashtextextended($1, 0)",
            &[&table.quoted()],
        )
        .await
        .expect("terminate the lock session");
    row.get::<_, i64>(0) > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lock_session_ends_stops_claiming_and_a_standby_takes_over() {
    let env = TestEnv::new().await;
    let (topic, load, relays) = replicas_under_load(&env, 2, 300).await;
    let first = leader(&relays).await;
    // The old leader's connection for claims stays up: only its lock session
    // ends. It may win the lock back before the standby does; end it again
    // until the standby leads.
    let mut terminations = 0;
    let second = loop {
        assert!(terminate_lock_session(&env).await, "no lock session to end");
        terminations += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = leader(&relays).await;
        if now != first {
            break now;
        }
        assert!(terminations < 20, "the standby never won the lock");
    };
    let old = &relays[first];
    wait_for(
        "the old leader to finish its batches",
        Duration::from_secs(30),
        || async { (old.metric("outbox_in_flight_messages").await? == 0.0).then_some(()) },
    )
    .await;
    let sample = format!("outbox_published_messages_total{{topic=\"{topic}\"}}");
    let published_by_old = old.metric(&sample).await.unwrap_or(0.0);
    let before = env.count("published").await;
    wait_for(
        "the new leader to publish",
        Duration::from_secs(30),
        || async { (env.count("published").await > before + 200).then_some(()) },
    )
    .await;
    let verdict = stop_drain_and_verify(&env, load, &topic).await;
    // The old leader claimed nothing after it lost the lock.
    assert_eq!(old.metric(&sample).await.unwrap_or(0.0), published_by_old);
    assert!(old.log_text().contains("lost the leadership of this table"));
    assert_eq!(relays[second].metric("outbox_relay_role").await, Some(1.0));
    eprintln!("LOCK SESSION ENDED {terminations} time(s): {verdict}");
}
