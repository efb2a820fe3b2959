//! Redis behind the sink seam: [`Redis`] is the sink (one connection,
//! opened when first needed and again after it broke), a [`RedisChannel`]
//! the channel one batch adds on.
//!
//! Guarantees: a row counts as delivered only on its own reply (added, or
//! found added within the dedup window); a Redis that does not answer or
//! takes no writes (the probe writes a key) is an outage, never a row's
//! failure; the password never appears in an error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::oneshot;

use super::entry::{list_envelope, stream_fields, RedisMode};
use super::failure::{describe, refuses_writes};
use super::url::{RedisTls, RedisUrl};
use super::writer::{Add, Shared, Writer, ADD_SCRIPT, WAIT_TIMEOUT};
use crate::error::{Error, Result};
use crate::sinks::message::Message;
use crate::sinks::outcome::{BoxFuture, Delivery, Disposition, FailureReason, Pending, Rejected};
use crate::sinks::{Channel, Profile, Sink};

/// How to let the relay write to a key it was refused.
pub const GRANT_WRITE: &str = "give the relay's ACL user the keys and commands docs/redis.md lists (ACL SETUSER … ~<topic pattern> ~outbox-relay:*)";

/// How Redis names things.
pub static REDIS: Profile = Profile {
    service: "Redis",
    destination: "key",
    create: "create it",
    connection: "connection",
    unreachable: "redis unreachable",
    outage: "Redis does not answer or takes no writes; rows stay pending until it does",
    missing_reason: FailureReason::Other,
    grant_write: GRANT_WRITE,
};

/// Where the relay's own keys live: the dedup records and the probe's key.
const KEY_PREFIX: &str = "outbox-relay:";

/// The longest one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a reply may take; `WAIT` is within it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);

/// What `--sink redis` is opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: RedisUrl,
    pub tls: RedisTls,
    pub mode: RedisMode,
    /// `MAXLEN ~` for streams; `None` trims nothing.
    pub maxlen: Option<u64>,
    /// The dedup window; 0 turns dedup off.
    pub dedup_secs: u64,
    /// `WAIT` for this many replicas after each group; 0 waits for none.
    pub wait_replicas: u32,
}

/// One open connection and its writer.
struct Session {
    connection: MultiplexedConnection,
    writer: Arc<Writer>,
    generation: u64,
}

/// The Redis sink: shared by every table's loop.
pub struct Redis {
    settings: RedisSettings,
    session: tokio::sync::Mutex<Option<Session>>,
    generation: AtomicU64,
    down_at: Mutex<Option<Instant>>,
}

/// The channel one batch adds on.
pub struct RedisChannel {
    /// The connection's writer, or why there is none (no connection).
    writer: std::result::Result<Arc<Writer>, String>,
    mode: RedisMode,
    generation: u64,
}

impl Redis {
    /// Check the settings and read the TLS files; makes no connection yet.
    pub fn new(settings: RedisSettings) -> Result<Self> {
        if !settings.url.tls() && !settings.tls.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "--redis-ca, --redis-client-cert and --redis-client-key are for TLS: use rediss:// in --redis-url {}",
                settings.url
            )));
        }
        client(&settings)?
            .map_err(|e| Error::InvalidConfig(format!("--redis-url {}: {e}", settings.url)))?;
        Ok(Redis {
            settings,
            session: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            down_at: Mutex::new(None),
        })
    }

    fn seen_down(&self) {
        *self.down_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Connect (the password file read now), and load the add script.
    async fn connect(&self) -> Result<Session> {
        let client = client(&self.settings)?.map_err(|e| self.unreachable(&e))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.connect_error(&e))?;
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(ADD_SCRIPT)
            .query_async(&mut connection)
            .await
            .map_err(|e| self.connect_error(&e))?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let settings = &self.settings;
        let shared = Shared {
            dedup_secs: settings.dedup_secs,
            mode: settings.mode.as_str(),
            maxlen: settings.maxlen.unwrap_or(0),
            wait_replicas: settings.wait_replicas,
        };
        let writer = Arc::new(Writer::start(connection.clone(), sha, shared));
        Ok(Session {
            connection,
            writer,
            generation,
        })
    }

    fn connect_error(&self, error: &redis::RedisError) -> Error {
        let refused = matches!(error.kind(), redis::ErrorKind::AuthenticationFailed)
            || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"));
        match (refused, error.code()) {
            (true, _) => Error::RedisLoginRefused {
                url: self.settings.url.to_string(),
                user: self.settings.url.user().to_owned(),
            },
            (false, Some("NOPERM")) => Error::RedisNotPermitted {
                url: self.settings.url.to_string(),
                user: self.settings.url.user().to_owned(),
                reason: error.detail().unwrap_or_default().to_owned(),
            },
            _ => self.unreachable(error),
        }
    }

    fn unreachable(&self, reason: &dyn std::fmt::Display) -> Error {
        Error::RedisUnreachable {
            url: self.settings.url.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The session's writer queue, connecting first if there is none or it
    /// broke.
    async fn channel(&self) -> RedisChannel {
        let mut session = self.session.lock().await;
        if session.as_ref().is_some_and(|s| s.writer.is_broken()) {
            *session = None;
        }
        if session.is_none() {
            match self.connect().await {
                Ok(open) => *session = Some(open),
                Err(error) => {
                    self.seen_down();
                    return RedisChannel {
                        writer: Err(error.to_string()),
                        mode: self.settings.mode,
                        generation: self.generation.load(Ordering::SeqCst),
                    };
                }
            }
        }
        let open = session.as_ref().expect("connected above");
        RedisChannel {
            writer: Ok(Arc::clone(&open.writer)),
            mode: self.settings.mode,
            generation: open.generation,
        }
    }

    /// Whether Redis answers and takes a write (and, with
    /// `--redis-wait-replicas`, whether enough replicas take it).
    async fn probe(&self) -> std::result::Result<(), String> {
        let result = self.probe_write().await;
        if result.is_err() {
            self.seen_down();
        }
        result
    }

    async fn probe_write(&self) -> std::result::Result<(), String> {
        self.channel().await.writer?;
        let (mut connection, writer) = match self.session.lock().await.as_ref() {
            Some(open) => (open.connection.clone(), Arc::clone(&open.writer)),
            None => return Err("not connected".into()),
        };
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(format!("{KEY_PREFIX}probe"))
            .arg(1)
            .arg("PX")
            .arg(60_000);
        let wait = self.settings.wait_replicas;
        if wait > 0 {
            pipe.cmd("WAIT")
                .arg(wait)
                .arg(WAIT_TIMEOUT.as_millis() as u64);
        }
        let replies: Vec<redis::Value> = match pipe.query_async(&mut connection).await {
            Ok(replies) => replies,
            Err(error) if error.code().is_some_and(refuses_writes) => {
                return Err(format!("Redis takes no writes: {}", describe(&error)))
            }
            Err(error) => {
                if error.code().is_none() {
                    writer.mark_broken();
                }
                return Err(format!("redis: {}", describe(&error)));
            }
        };
        match replies.get(1) {
            Some(redis::Value::Int(acked)) if *acked < i64::from(wait) => Err(format!(
                "only {acked} of the {wait} replicas --redis-wait-replicas asks for are connected"
            )),
            _ => Ok(()),
        }
    }

    /// At start-up: connect within `timeout`, failing at once on a refused
    /// login or a missing permission.
    async fn check_reachable(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.connect().await {
                Ok(open) => {
                    *self.session.lock().await = Some(open);
                    return Ok(());
                }
                Err(
                    error @ (Error::RedisLoginRefused { .. } | Error::RedisNotPermitted { .. }),
                ) => return Err(error),
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    fn unavailable_since(&self, since: Instant) -> bool {
        self.down_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at >= since)
    }

    /// Drop the session of `generation` (unless another loop already did).
    fn reconnect(&self, generation: u64) -> bool {
        let Ok(mut session) = self.session.try_lock() else {
            return false;
        };
        match session.as_ref() {
            Some(open) if open.generation == generation => {
                *session = None;
                true
            }
            _ => false,
        }
    }

    /// Wait for every add handed over to have its outcome, then close.
    async fn flush(&self, timeout: Duration) -> std::result::Result<(), String> {
        let Some(open) = self.session.lock().await.take() else {
            return Ok(());
        };
        let drained = async {
            while open.writer.in_flight() > 0 && !open.writer.is_broken() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(timeout, drained)
            .await
            .map_err(|_| "adds still outstanding at the timeout".to_owned())
    }
}

impl RedisChannel {
    /// What `message` becomes in this sink's mode.
    fn add(&self, message: &Message, done: oneshot::Sender<Delivery>) -> Add {
        let values = match self.mode {
            RedisMode::Stream => stream_fields(message),
            RedisMode::List => vec![list_envelope(message)],
        };
        Add {
            destination: message.destination.as_bytes().to_vec(),
            dedup_key: dedup_key(&message.destination, &message.id).into_bytes(),
            values,
            done,
        }
    }

    /// Hand one message to the writer and return its pending reply.
    fn send(&self, message: Message) -> Pending {
        let writer = match &self.writer {
            Ok(writer) => writer,
            Err(broken) => return Pending::Refused(unavailable(broken.clone())),
        };
        let (done, outcome) = oneshot::channel();
        if writer.submit(self.add(&message, done)).is_err() {
            return Pending::Refused(unavailable("redis: the connection is closed".into()));
        }
        Pending::Sent(Box::pin(async move {
            outcome
                .await
                .unwrap_or_else(|_| unavailable("redis: the connection is closed".into()))
        }))
    }
}

/// A client for `settings`, the password file and TLS files read now; the
/// outer error is the settings', the inner one the client's.
fn client(settings: &RedisSettings) -> Result<redis::RedisResult<redis::Client>> {
    let info = settings.url.connection_info()?;
    Ok(match settings.url.tls() {
        true => redis::Client::build_with_tls(info, settings.tls.certificates()?),
        false => redis::Client::open(info),
    })
}

/// The key recording that event `id` was added to `destination`.
fn dedup_key(destination: &str, id: &str) -> String {
    format!("{KEY_PREFIX}dedup:{destination}:{id}")
}

fn unavailable(message: String) -> Delivery {
    Delivery::Failed {
        disposition: Disposition::Unavailable,
        reason: FailureReason::BrokerUnavailable,
        message,
    }
}

impl Sink for Redis {
    fn profile(&self) -> &'static Profile {
        &REDIS
    }

    fn check(&self, message: &Message) -> std::result::Result<(), Rejected> {
        if message.destination.is_empty() {
            return Err(Rejected {
                reason: FailureReason::InvalidTopic,
                message: "invalid key: the topic is empty".into(),
            });
        }
        Ok(())
    }

    fn channel(&self) -> BoxFuture<'_, Arc<dyn Channel>> {
        Box::pin(async move { Arc::new(Redis::channel(self).await) as Arc<dyn Channel> })
    }

    fn destination_exists<'a>(
        &'a self,
        _destination: &'a str,
        _timeout: Duration,
    ) -> BoxFuture<'a, Option<bool>> {
        // A stream or list is created by its first entry.
        Box::pin(async { Some(true) })
    }

    fn probe(&self, _timeout: Duration) -> BoxFuture<'_, std::result::Result<(), String>> {
        Box::pin(Redis::probe(self))
    }

    fn unavailable_since(&self, since: Instant) -> bool {
        Redis::unavailable_since(self, since)
    }

    fn check_reachable(&self, timeout: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(Redis::check_reachable(self, timeout))
    }

    fn replace_if_fatal(&self) -> Result<Option<String>> {
        Ok(None)
    }

    fn reconnect(&self, generation: u64) -> Result<bool> {
        Ok(Redis::reconnect(self, generation))
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, std::result::Result<(), String>> {
        Box::pin(Redis::flush(self, timeout))
    }
}

impl Channel for RedisChannel {
    fn generation(&self) -> u64 {
        self.generation
    }

    fn send(&self, message: Message, _queue_wait: Duration) -> BoxFuture<'_, Pending> {
        let pending = RedisChannel::send(self, message);
        Box::pin(async move { pending })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keys_are_per_destination_and_event() {
        assert_eq!(
            dedup_key("orders:created", "e1"),
            "outbox-relay:dedup:orders:created:e1"
        );
        assert_ne!(dedup_key("a", "e1"), dedup_key("b", "e1"));
    }
}
