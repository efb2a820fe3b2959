//! Each kind of failure takes its own path: a statement PostgreSQL rejects is
//! not an outage. (The Kafka and internal paths are unit-tested beside the
//! code: `relay::telemetry` and `commands`.)

mod common;

use std::time::Duration;

use common::{wait_for, Count, NewRow, TestEnv};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_the_database_rejects_is_not_called_unreachable() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(1).await;
    env.add_update_trigger(
        "refuse",
        "RAISE EXCEPTION 'publishing is frozen' USING ERRCODE = 'check_violation';",
    )
    .await;
    env.insert(&[NewRow::new(&topic, Some("k"), json!({"n": 1}))])
        .await;
    // Not `wait_ready`: the relay is rightly not ready for long.
    let relay = env.start_relay(&[]);

    wait_for(
        "the rejection to be logged",
        Duration::from_secs(30),
        || async {
            relay
                .log_text()
                .contains("rejects the relay's statement")
                .then_some(())
        },
    )
    .await;
    let log = relay.log_text();
    assert!(
        log.contains("publishing is frozen") && log.contains("23514"),
        "{log}"
    );
    assert!(!log.contains("unreachable"), "{log}");
    assert_eq!(relay.metric("outbox_database_up").await, Some(1.0));
    let (status, body) = relay.get("/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("rejects"), "{body}");
    assert_eq!(env.count("pending").await, 1, "nothing was lost");

    env.client
        .batch_execute(&format!("DROP TRIGGER refuse ON {}", env.table))
        .await
        .unwrap();
    env.wait_for_status("published", Count::Exactly(1), Duration::from_secs(30))
        .await;
    wait_for("readiness to return", Duration::from_secs(10), || async {
        (relay.get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
}
