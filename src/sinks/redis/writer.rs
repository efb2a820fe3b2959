//! One Redis connection's writer: the adds handed to it go out in the order
//! they came, many per round trip.
//!
//! Guarantees:
//! - order: one task writes a connection's adds, in arrival order, each
//!   group as one call of the add script, which adds its rows in order; a
//!   key's entries land in the order of its rows;
//! - `EVALSHA` with a fallback: a group is one script call, so a flushed
//!   script cache fails the whole group and none of it runs; the writer
//!   loads the script again and sends the same group once more, so a
//!   `SCRIPT FLUSH` neither loses, repeats nor reorders an add;
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

/// The most adds one script call holds: Redis runs a script without
/// serving anyone else, so a group stays a few milliseconds long.
const MAX_GROUP: usize = 1_000;

/// How long `WAIT` waits for the replicas.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// One row to add: the stream or list, the dedup record, the values (a
/// stream entry's fields and values, or the list's envelope), and where
/// its outcome goes.
pub struct Add {
    pub destination: Vec<u8>,
    pub dedup_key: Vec<u8>,
    pub values: Vec<Vec<u8>>,
    pub done: oneshot::Sender<Delivery>,
}

/// What every add of a connection shares: the script's first arguments.
#[derive(Debug, Clone)]
pub struct Shared {
    pub dedup_secs: u64,
    pub mode: &'static str,
    pub maxlen: u64,
    pub wait_replicas: u32,
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
    pub fn start(connection: MultiplexedConnection, sha: String, shared: Shared) -> Writer {
        let (queue, adds) = mpsc::unbounded_channel();
        let state = Arc::new(State::default());
        let task = Task {
            connection,
            sha,
            shared,
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
    shared: Shared,
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
            .filter(|acked| *acked < i64::from(self.shared.wait_replicas))
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

    /// One script call with the group's adds (and `WAIT`): each add's
    /// reply, and how many replicas took the writes.
    async fn transaction(
        &mut self,
        group: &[Add],
    ) -> redis::RedisResult<(Vec<Reply>, Option<i64>)> {
        let shared = &self.shared;
        let mut script = redis::cmd("EVALSHA");
        script.arg(&self.sha).arg(group.len() * 2);
        for add in group {
            script.arg(&add.destination).arg(&add.dedup_key);
        }
        script
            .arg(shared.dedup_secs)
            .arg(shared.mode)
            .arg(shared.maxlen);
        for add in group {
            script.arg(add.values.len()).arg(&add.values);
        }
        let mut pipe = redis::pipe();
        pipe.add_command(script);
        if shared.wait_replicas > 0 {
            pipe.cmd("WAIT")
                .arg(shared.wait_replicas)
                .arg(WAIT_TIMEOUT.as_millis() as u64);
        }
        pipe.ignore_errors();
        let replies = pipe.query_async::<Vec<Value>>(&mut self.connection).await?;
        let replicas = match replies.get(1) {
            Some(Value::Int(acked)) => Some(*acked),
            _ => None,
        };
        Ok((replies_of(group.len(), replies.first()), replicas))
    }

    fn too_few_replicas(&self, acked: i64) -> Delivery {
        Delivery::Failed {
            disposition: Disposition::Unavailable,
            reason: FailureReason::BrokerUnavailable,
            message: format!(
                "redis: only {acked} of the {} replicas --redis-wait-replicas asks for took the write within {} s",
                self.shared.wait_replicas,
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

/// Each add's reply, from the script's reply: one per add (1 or 0 added,
/// or the text of the error Redis gave the add), or one error for all.
fn replies_of(count: usize, reply: Option<&Value>) -> Vec<Reply> {
    let per_add = match reply {
        Some(Value::Array(replies)) if replies.len() == count => replies,
        Some(Value::ServerError(error)) => {
            let refused = || Reply::Refused {
                code: error.code().to_owned(),
                text: error.details().unwrap_or_default().to_owned(),
            };
            return (0..count).map(|_| refused()).collect();
        }
        other => {
            let unexpected = format!("{other:?}");
            return (0..count)
                .map(|_| Reply::Unexpected(unexpected.clone()))
                .collect();
        }
    };
    per_add
        .iter()
        .map(|reply| match reply {
            Value::Int(_) => Reply::Added,
            Value::BulkString(text) => error_text(&String::from_utf8_lossy(text)),
            Value::SimpleString(text) => error_text(text),
            Value::ServerError(error) => Reply::Refused {
                code: error.code().to_owned(),
                text: error.details().unwrap_or_default().to_owned(),
            },
            other => Reply::Unexpected(format!("{other:?}")),
        })
        .collect()
}

/// An error as the script returns it: `CODE the rest`.
fn error_text(text: &str) -> Reply {
    let (code, rest) = text.split_once(' ').unwrap_or((text, ""));
    Reply::Refused {
        code: code.to_owned(),
        text: rest.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_add_gets_its_own_reply_or_the_scripts_error() {
        let replies = Value::Array(vec![
            Value::Int(1),
            Value::Int(0),
            Value::BulkString(b"WRONGTYPE Operation against a key".to_vec()),
        ]);
        let replies = replies_of(3, Some(&replies));
        assert!(matches!(replies[0], Reply::Added));
        assert!(matches!(replies[1], Reply::Added));
        assert!(
            matches!(&replies[2], Reply::Refused { code, text } if code == "WRONGTYPE" && text.starts_with("Operation"))
        );
        let short = replies_of(2, Some(&Value::Array(vec![Value::Int(1)])));
        assert!(short.iter().all(|r| matches!(r, Reply::Unexpected(_))));
    }
}
