//! LISTEN wake-ups: a dedicated connection subscribed to the optional NOTIFY
//! trigger, turning each notification into a wake-up of the relay loop.
//!
//! Guarantees: a lost connection is re-established with backoff, and every
//! (re)subscription is followed by a wake-up, so rows committed while no one
//! was listening are claimed at once rather than at the next poll.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::poll_fn;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::AsyncMessage;

use crate::db::Database;
use crate::error::{Error, Result};
use crate::relay::backoff::OutageBackoff;
use crate::shutdown::Shutdown;

/// Keep a LISTEN session open until shutdown, reconnecting as needed.
pub async fn listen_for_inserts(database: Database, wakeup: Arc<Notify>, mut shutdown: Shutdown) {
    let mut backoff = OutageBackoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut connected_before = false;
    loop {
        let session = listen_once(&database, &wakeup, &mut backoff, &mut connected_before);
        tokio::select! {
            () = shutdown.requested() => return,
            ended = session => {
                if let Err(error) = ended {
                    if connected_before {
                        tracing::warn!(%error, "LISTEN connection lost; reconnecting");
                        connected_before = false;
                    } else {
                        tracing::debug!(%error, "LISTEN connection failed");
                    }
                }
            }
        }
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

async fn listen_once(
    database: &Database,
    wakeup: &Notify,
    backoff: &mut OutageBackoff,
    connected_before: &mut bool,
) -> Result<()> {
    let (client, mut connection) = database.connect_dedicated().await?;
    let (notified, mut notifications) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if notified.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    let outcome = async {
        client
            .batch_execute(&database.sql().listen_for_inserts)
            .await
            .map_err(|e| Error::database("subscribing with LISTEN", &e))?;
        if !*connected_before {
            tracing::info!(channel = %database.table().notify_channel(), "listening for insert notifications");
        }
        *connected_before = true;
        backoff.reset();
        wakeup.notify_one();
        while notifications.recv().await.is_some() {
            wakeup.notify_one();
        }
        Ok(())
    }
    .await;
    if outcome.is_err() {
        driver.abort();
        return outcome;
    }
    match driver.await {
        Ok(Ok(())) => Err(Error::Database {
            action: "listening for notifications",
            reason: "the server closed the connection".to_owned(),
        }),
        Ok(Err(e)) => Err(Error::database("listening for notifications", &e)),
        Err(e) => Err(Error::Database {
            action: "listening for notifications",
            reason: e.to_string(),
        }),
    }
}
