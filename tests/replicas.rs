//! Replicas on one table with an elected leader (the default): one claims,
//! the others stand by connected; when the leader is killed under load a
//! standby takes over, nothing is lost and per-key order holds.

mod common;

use std::time::{Duration, Instant};

use common::load::{committed_rows, verify, Load};
use common::{wait_for, Count, RelayProcess, TestEnv};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_standby_takes_over_when_it_is_killed() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(3).await;
    // About 1,000 rows/s: 10 rows every 10 ms.
    let load = Load::start(&env.database_url, &env.table, &topic, 10, 50).await;
    let mut relays = vec![
        env.start_relay(&["--batch-size", "100"]),
        env.start_relay(&["--batch-size", "100"]),
        env.start_relay(&["--batch-size", "100"]),
    ];
    for relay in &mut relays {
        relay.wait_ready().await;
    }
    env.wait_for_status("published", Count::AtLeast(500), Duration::from_secs(60))
        .await;
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
    load.stop().await;
    env.wait_for_status("pending", Count::Exactly(0), Duration::from_secs(60))
        .await;
    let committed = committed_rows(&env.client, &env.table).await;
    let ids: Vec<String> = committed.iter().map(|(_, e)| e.clone()).collect();
    let received =
        common::consume_event_ids(&env.brokers, &topic, &ids, Duration::from_secs(60)).await;
    let verdict = verify(&received, &committed, &committed);
    assert!(relays[second]
        .log_text()
        .contains("this relay leads the table"));
    eprintln!("FAILOVER leader SIGKILL under ~1,000 rows/s: publishing again {failover:?} after the kill; {verdict}");
}
