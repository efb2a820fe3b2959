//! outbox-relay: moves committed rows of a PostgreSQL outbox table to Kafka,
//! at least once and in order per key.
//!
//! # Layout
//!
//! The data path is claim → publish → record, each batch in one transaction:
//!
//! - [`db`] claims due rows (`FOR UPDATE SKIP LOCKED`, per-key rule in the
//!   SQL) and records results; [`db::queries`] is the typed query layer, one
//!   function per file in `sql/queries/`, rendered for the table by `sql`;
//! - `kafka` turns rows into messages, produces them and classifies
//!   failures; its producer defaults are defined once, in `kafka::defaults`;
//! - `relay` is the loop: `relay::step` decides (claim, drain, wait, back
//!   off, stop), `relay::outcome` decides each row's fate from its delivery
//!   report, `relay::telemetry` reports (metrics, logs, health);
//! - [`config`] is the one configuration type, parsed by clap ([`cli`]);
//!   [`commands`] runs each subcommand; `listener` wakes the loop on NOTIFY;
//!   `monitor` keeps the backlog gauges, probes, retention and a
//!   partitioned table's partitions (`db::partitions`); `leader` elects the
//!   replica that claims; `http`, `health` and `metrics` serve `/metrics`,
//!   `/healthz` and `/readyz`; `open_claims` times the claim transactions
//!   held open, and `claim_gate` lets a partition drop run between claims.
//!
//! The binary is a thin shell over [`commands::execute`]; [`db`] is public so
//! the query-level tests and the benchmark can drive the database layer
//! directly.

pub mod commands;
pub mod config;
pub mod error;
pub(crate) mod observe;
pub(crate) mod relay;
pub mod serve;
pub(crate) mod sinks;
pub mod source;

pub use error::{Error, Result};
