//! The Redis sink: each row added, by an atomic script, to the stream
//! (`XADD`) or list (`LPUSH`) its `topic` names, unless its event was added
//! there within the dedup window, so a row sent again after a crash or a
//! lost reply is not added twice. Many adds go per round trip, in order.

mod entry;
mod failure;
mod sink;
mod url;
mod writer;

pub use entry::RedisMode;
pub use sink::{Redis, RedisSettings};
pub use url::{RedisTls, RedisUrl};
