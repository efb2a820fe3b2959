//! What the relay tells its operators: the Prometheus metrics, liveness and
//! readiness, the HTTP server for both, the `status` and `dead` renderings,
//! and the periodic summary log line.

pub(crate) mod definitions;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod status;
pub(crate) mod summary;
