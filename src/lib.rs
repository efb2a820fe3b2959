//! outbox-relay: moves committed rows of a PostgreSQL outbox table to a
//! message broker, at least once and in order per key.
//!
//! # Map
//!
//! The data path is claim → send → record, each batch in one transaction.
//! Each folder is one part of the design:
//!
//! | folder | owns |
//! |---|---|
//! | [`source`] | PostgreSQL: the typed queries (one per file in `sql/queries/`), the claim and its record, migrate and adopt, partitions, the table layout, table names and patterns |
//! | `sinks` | the brokers, behind one seam: `sinks::Sink` and `sinks::Channel`, the sink-neutral message and outcome, and one folder per sink (`sinks/kafka/`, `sinks/rabbitmq/`) |
//! | `relay` | the loop of one table: `step` decides (claim, wait, back off, stop), `outcome` decides each row's fate, `batch` claims, sends and records, `telemetry` reports |
//! | [`serve`] | `run`: the plan, the sources and their tables, leader election, LISTEN wake-ups, the claim gate, open claims, the background monitors and shutdown |
//! | `observe` | what operators see: metric definitions and families, health and readiness, the HTTP server, the `status` rendering and the summary line |
//! | [`config`] | the one configuration type, its command line (`config::cli`) and its file (`config::file`) |
//! | [`commands`] | one function per subcommand |
//!
//! A new sink is a folder under `sinks/` that implements the seam and joins
//! the conformance suite (`tests/conformance/`); a new statement is a file
//! in `sql/queries/` with its function in `source::queries`; a new metric is
//! a definition in `observe/definitions.rs`.
//!
//! The data path's imports go one way, `commands` → `serve` → `relay` →
//! `sinks`, `source` and `observe`, and no module imports one that imports
//! it back. The binary is a thin
//! shell over [`commands::execute`]; [`source`] is public so the query-level
//! tests and the benchmark can drive the database layer directly.

pub mod commands;
pub mod config;
pub mod error;
pub(crate) mod observe;
pub(crate) mod relay;
pub mod serve;
pub(crate) mod sinks;
pub mod source;

pub use error::{Error, Result};
