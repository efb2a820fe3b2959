//! The NATS JetStream sink: each row published to the subject its `topic`
//! names, with `Nats-Msg-Id` = the event id so the stream drops a second
//! copy within its duplicate window, and marked published only on its own
//! PubAck. Publishes are pipelined: many in flight, each awaited.

mod failure;
mod message;
mod sink;
mod url;

pub use sink::{Nats, NatsSettings};
pub use url::NatsUrl;
