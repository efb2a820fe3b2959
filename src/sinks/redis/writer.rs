//! One Redis connection's writer: the adds handed to it go out in the order
//! they came, many per round trip.
//!
//! Guarantees:
//! - order: one task writes a connection's adds, in arrival order, each
//!   group as one `MULTI` … `EXEC` of the add script; a key's entries land
//!   in the order of its rows;
//! - `EVALSHA` with a fallback: inside `MULTI`, nothing runs between the
//!   adds, so a flushed script cache fails every add of a group and none
//!   runs; the writer loads the script again and sends the same group once
//!   more, so a `SCRIPT FLUSH` neither loses, repeats nor reorders an add;
//! - with `--redis-wait-replicas N`, a group counts as delivered only once
//!   `WAIT N` saw that many replicas take it;
//! - a connection that failed or timed out is marked broken: the sink opens
//!   a new one for the next batch.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::sync::{mpsc, oneshot};

use super::failure::{lost, refused};
use crate::sinks::outcome::{Delivery, Disposition, FailureReason};

/// The add script (see `add.lua`).
pub const ADD_SCRIPT: &str = include_str!("add.lua");

/// The most adds one `MULTI` … `EXEC` holds: Redis runs a transaction
/// without serving anyone else, so a group stays a few milliseconds long.
const MAX_GROUP: usize = 512;

/// How long `WAIT` waits for the replicas.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// One row to add: the stream or list, the dedup key, the script's
/// arguments after the keys, and where its outcome goes.
pub struct Add {
    pub destination: Vec<u8>,
    pub dedup_key: Vec<u8>,
    pub args: Vec<Vec<u8>>,
    pub done: oneshot::Sender<Delivery>,
}

/// A connection's writer, as the sink and its channels see it.
pub struct Writer {
    queue: mpsc::UnboundedSender<Add>,
    state: Arc<State>,
}

/// What the writer task shares with the sink.
#[derive(Default)]
struct State {
    /// The connection failed: the sink replaces it.
    broken: AtomicBool,
    /// Adds handed over whose outcome is not yet out.
    in_flight: AtomicUsize,
}

impl Writer {
    /// Start the writer of `connection`; `sha` is the loaded add script's.
    pub fn start(connection: MultiplexedConnection, sha: String, wait_replicas: u32) -> Writer {
        let (queue, adds) = mpsc::unbounded_channel();
        let state = Arc::new(State::default());
        let task = Task {
            connection,
            sha,
            wait_replicas,
            state: Arc::clone(&state),
        };
        tokio::spawn(task.run(adds));
        Writer { queue, state }
    }

    /// Hand `add` to the writer; gives it back when the writer is gone.
    pub fn submit(&self, add: Add) -> Result<(), Add> {
        self.state.in_flight.fetch_add(1, Ordering::SeqCst);
        self.queue.send(add).map_err(|unsent| {
            self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
            unsent.0
        })
    }

    /// Adds handed over whose outcome is not yet out.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    pub fn is_broken(&self) -> bool {
        self.state.broken.load(Ordering::SeqCst) || self.queue.is_closed()
    }

    /// The connection failed outside the writer (the probe saw it).
    pub fn mark_broken(&self) {
        self.state.broken.store(true, Ordering::SeqCst);
    }
}

struct Task {
    connection: MultiplexedConnection,
    sha: String,
    wait_replicas: u32,
    state: Arc<State>,
}

impl Task {
    async fn run(mut self, mut adds: mpsc::UnboundedReceiver<Add>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while adds.recv_many(&mut group, MAX_GROUP).await > 0 {
            let outcomes = self.write(&group).await;
            for (add, outcome) in group.drain(..).zip(outcomes) {
                let _ = add.done.send(outcome);
                self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Each add's outcome, in order.
    async fn write(&mut self, group: &[Add]) -> Vec<Delivery> {
        let mut sent = self.transaction(group).await;
        if matches!(&sent, Ok((replies, _)) if replies.iter().all(Reply::is_noscript)) {
            // The script cache was flushed (a restart, `SCRIPT FLUSH`, a
            // failover to a replica that never saw it): none of the group
            // ran.
            match self.load_script().await {
                Ok(()) => sent = self.transaction(group).await,
                Err(error) => sent = Err(error),
            }
        }
        let (replies, replicas) = match sent {
            Ok(sent) => sent,
            Err(error) => {
                if error.code().is_none() {
                    self.state.broken.store(true, Ordering::SeqCst);
                }
                return vec![lost(&error); group.len()];
            }
        };
        let short = replicas
            .filter(|acked| *acked < i64::from(self.wait_replicas))
            .map(|acked| self.too_few_replicas(acked));
        replies
            .into_iter()
            .zip(group)
            .map(|(reply, add)| match (reply, &short) {
                (Reply::Added, Some(short)) => short.clone(),
                (reply, _) => reply.delivery(&add.destination),
            })
            .collect()
    }

    async fn load_script(&mut self) -> redis::RedisResult<()> {
        self.sha = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(ADD_SCRIPT)
            .query_async(&mut self.connection)
            .await?;
        tracing::info!("Redis had lost the relay's add script; loaded it again");
        Ok(())
    }

    /// One `MULTI` … `EXEC` of the group's adds (and `WAIT`): each add's
    /// reply, and how many replicas took the writes.
    async fn transaction(
        &mut self,
        group: &[Add],
    ) -> redis::RedisResult<(Vec<Reply>, Option<i64>)> {
        let mut pipe = redis::pipe();
        pipe.cmd("MULTI");
        for add in group {
            pipe.cmd("EVALSHA")
                .arg(&self.sha)
                .arg(2)
                .arg(&add.destination)
                .arg(&add.dedup_key)
                .arg(&add.args);
        }
        pipe.cmd("EXEC");
        if self.wait_replicas > 0 {
            pipe.cmd("WAIT")
                .arg(self.wait_replicas)
                .arg(WAIT_TIMEOUT.as_millis() as u64);
        }
        pipe.ignore_errors();
        let replies = pipe.query_async::<Vec<Value>>(&mut self.connection).await?;
        let replicas = match replies.get(group.len() + 2) {
            Some(Value::Int(acked)) => Some(*acked),
            _ => None,
        };
        Ok((replies_of(group.len(), &replies), replicas))
    }

    fn too_few_replicas(&self, acked: i64) -> Delivery {
        Delivery::Failed {
            disposition: Disposition::Unavailable,
            reason: FailureReason::BrokerUnavailable,
            message: format!(
                "redis: only {acked} of the {} replicas --redis-wait-replicas asks for took the write within {} s",
                self.wait_replicas,
                WAIT_TIMEOUT.as_secs()
            ),
        }
    }
}

/// What Redis answered for one add.
#[derive(Debug)]
enum Reply {
    /// Added, or found added already.
    Added,
    Refused {
        code: String,
        text: String,
    },
    Unexpected(String),
}

impl Reply {
    fn is_noscript(&self) -> bool {
        matches!(self, Reply::Refused { code, .. } if code == "NOSCRIPT")
    }

    fn delivery(self, destination: &[u8]) -> Delivery {
        match self {
            Reply::Added => Delivery::Delivered,
            Reply::Refused { code, text } => {
                refused(&code, &text, &String::from_utf8_lossy(destination))
            }
            Reply::Unexpected(reply) => Delivery::Failed {
                disposition: Disposition::Retry,
                reason: FailureReason::Other,
                message: format!("redis: an unexpected reply to the add: {reply}"),
            },
        }
    }
}

/// Each add's reply, from the replies to `MULTI`, the `count` queued adds
/// and `EXEC`.
fn replies_of(count: usize, replies: &[Value]) -> Vec<Reply> {
    let exec = replies.get(count + 1);
    (0..count)
        .map(|i| {
            // An add refused while queued (an ACL, OOM) fails the EXEC too:
            // its own reason is the more telling one.
            let error = match (replies.get(i + 1), exec) {
                (Some(Value::ServerError(error)), _) | (_, Some(Value::ServerError(error))) => {
                    error
                }
                (_, Some(Value::Array(results))) => match results.get(i) {
                    Some(Value::ServerError(error)) => error,
                    Some(Value::Int(_)) => return Reply::Added,
                    other => return Reply::Unexpected(format!("{other:?}")),
                },
                (_, other) => return Reply::Unexpected(format!("{other:?}")),
            };
            Reply::Refused {
                code: error.code().to_owned(),
                text: error.details().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}
