//! LISTEN wake-ups: one dedicated connection per database, subscribed to the
//! optional NOTIFY trigger of every table the relay serves there (and to
//! `migrate`'s announcements of new tables), turning each notification into
//! a wake-up of that table's loop.
//!
//! Guarantees: a lost connection is re-established with backoff, and every
//! (re)subscription is followed by a wake-up of the tables subscribed, so
//! rows committed while no one was listening are claimed at once rather
//! than at the next poll. Tables join and leave while the session lives.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::poll_fn;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::AsyncMessage;

use crate::error::{Error, Result};
use crate::relay::backoff::OutageBackoff;
use crate::serve::shutdown::Shutdown;
use crate::source::Database;

/// The channel `migrate` announces tables on (`sql/queries/announce_tables.sql`).
const TABLES_CHANNEL: &str = "outbox_relay_tables";

/// One table's subscription.
#[derive(Clone)]
struct Subscription {
    wakeup: Arc<Notify>,
    listen: String,
    unlisten: String,
}

/// The channels of one database's tables, and whom each wakes.
#[derive(Default)]
pub struct Channels {
    subscriptions: Mutex<BTreeMap<String, Subscription>>,
    changed: Notify,
    /// Woken by `migrate`'s announcements.
    pub tables_announced: Arc<Notify>,
}

impl Channels {
    /// Wake `wakeup` on the NOTIFYs of `database`'s table.
    pub fn subscribe(&self, database: &Database, wakeup: Arc<Notify>) {
        let subscription = Subscription {
            wakeup,
            listen: database.sql().listen_for_inserts.clone(),
            unlisten: database.sql().unlisten_for_inserts.clone(),
        };
        lock(&self.subscriptions).insert(database.table().notify_channel(), subscription);
        self.changed.notify_one();
    }

    pub fn unsubscribe(&self, database: &Database) {
        lock(&self.subscriptions).remove(&database.table().notify_channel());
        self.changed.notify_one();
    }

    fn wake(&self, channel: &str) {
        if channel == TABLES_CHANNEL {
            self.tables_announced.notify_one();
        } else if let Some(subscription) = lock(&self.subscriptions).get(channel) {
            subscription.wakeup.notify_one();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The tables that joined since (to LISTEN to) and the channels of those
/// that left (to UNLISTEN).
fn changes(
    channels: &Channels,
    listening: &BTreeMap<String, String>,
) -> (Vec<(String, Subscription)>, Vec<String>) {
    let subscriptions = lock(&channels.subscriptions);
    let joined = subscriptions
        .iter()
        .filter(|(channel, _)| !listening.contains_key(*channel))
        .map(|(channel, s)| (channel.clone(), s.clone()))
        .collect();
    let left = listening
        .keys()
        .filter(|channel| !subscriptions.contains_key(*channel))
        .cloned()
        .collect();
    (joined, left)
}

/// Keep a LISTEN session open until shutdown, reconnecting as needed.
pub async fn listen_for_inserts(
    database: Database,
    channels: Arc<Channels>,
    mut shutdown: Shutdown,
) {
    let mut backoff = OutageBackoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut connected_before = false;
    loop {
        let session = listen_once(&database, &channels, &mut backoff, &mut connected_before);
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
    channels: &Channels,
    backoff: &mut OutageBackoff,
    connected_before: &mut bool,
) -> Result<()> {
    let (client, connection) = database.connect_dedicated().await?;
    let (driver, mut notifications) = drive(connection);
    let session = Session {
        client: &client,
        channels,
        listening: BTreeMap::new(),
    };
    let outcome = session
        .follow(database, &mut notifications, backoff, connected_before)
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

type Driver = tokio::task::JoinHandle<std::result::Result<(), tokio_postgres::Error>>;

/// Drive the dedicated connection on a task of its own, passing on the
/// channel of every notification; the task ends when the connection does.
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
) -> (Driver, mpsc::UnboundedReceiver<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (notified, notifications) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if notified.send(notification.channel().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    (driver, notifications)
}

/// One LISTEN session: the channels it listens on follow the subscribed
/// tables.
struct Session<'a> {
    client: &'a tokio_postgres::Client,
    channels: &'a Channels,
    /// Channel -> its UNLISTEN, for the tables subscribed on this session.
    listening: BTreeMap<String, String>,
}

fn subscribe_error(e: tokio_postgres::Error) -> Error {
    Error::database("subscribing with LISTEN", &e)
}

impl Session<'_> {
    /// Listen, and wake each table its notifications name, until the
    /// connection ends (`Ok`) or a statement fails.
    async fn follow(
        mut self,
        database: &Database,
        notifications: &mut mpsc::UnboundedReceiver<String>,
        backoff: &mut OutageBackoff,
        connected_before: &mut bool,
    ) -> Result<()> {
        self.client
            .batch_execute(&database.sql().listen_for_tables)
            .await
            .map_err(subscribe_error)?;
        loop {
            let changed = self.channels.changed.notified();
            self.apply_changes().await?;
            if !*connected_before {
                tracing::info!(
                    channels = self.listening.len(),
                    "listening for insert notifications"
                );
            }
            *connected_before = true;
            backoff.reset();
            tokio::select! {
                () = changed => {}
                channel = notifications.recv() => match channel {
                    Some(channel) => self.channels.wake(&channel),
                    None => return Ok(()),
                },
            }
            while let Ok(channel) = notifications.try_recv() {
                self.channels.wake(&channel);
            }
        }
    }

    /// LISTEN to the tables subscribed since, UNLISTEN the ones gone.
    async fn apply_changes(&mut self) -> Result<()> {
        let (listen, unlisten) = changes(self.channels, &self.listening);
        for channel in unlisten {
            if let Some(statement) = self.listening.remove(&channel) {
                self.client
                    .batch_execute(&statement)
                    .await
                    .map_err(subscribe_error)?;
            }
        }
        for (channel, subscription) in listen {
            self.client
                .batch_execute(&subscription.listen)
                .await
                .map_err(subscribe_error)?;
            self.listening.insert(channel, subscription.unlisten);
            subscription.wakeup.notify_one();
        }
        Ok(())
    }
}
