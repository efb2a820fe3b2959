//! The brokers the relay publishes to.

pub(crate) mod kafka;
