//! outbox-relay: moves committed rows of a PostgreSQL outbox table to Kafka,
//! at least once and in order per key.
//!
//! The binary is a thin shell over [`commands::execute`]; everything else is
//! here so tests can drive it.

pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod error;
pub mod health;
pub mod http;
pub mod kafka;
pub mod listener;
pub mod metrics;
pub mod monitor;
pub mod relay;
pub mod shutdown;
pub mod sql;
pub mod status;
pub mod table;

pub use error::{Error, Result};
