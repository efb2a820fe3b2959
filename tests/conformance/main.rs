//! The sink conformance suite: one set of behavioural scenarios
//! ([`suite`]), run by every sink against its real server. A new sink adds
//! a module here that implements [`suite::Target`] and lists the scenarios
//! with [`conformance!`].

#[path = "../common/mod.rs"]
mod common;
mod kafka;
mod nats;
mod rabbitmq;
mod redis;
mod suite;
