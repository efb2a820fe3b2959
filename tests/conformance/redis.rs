//! Redis runs the conformance suite in both modes against the server of
//! the test services, and against a private server for the outage.
//!
//! The missing-destination scenario does not apply: a stream or list is
//! created by its first entry, so no destination is ever missing.

use std::time::Duration;

use crate::common::redis::{self, PrivateRedis};
use crate::common::{unique_name, Received};
use crate::conformance;
use crate::suite::{PrivateTarget, SecuredTarget, Target};

/// A Redis server, and the mode the relay adds in.
pub struct Redis<const LIST: bool> {
    url: String,
    private: Option<PrivateRedis>,
}

impl<const LIST: bool> Redis<LIST> {
    pub fn shared() -> Self {
        Redis {
            url: redis::url(),
            private: None,
        }
    }

    fn mode(&self) -> &'static str {
        if LIST {
            "list"
        } else {
            "stream"
        }
    }
}

impl<const LIST: bool> Target for Redis<LIST> {
    fn relay_args(&self) -> Vec<String> {
        redis::relay_args(&self.url, &["--redis-mode", self.mode()])
    }

    async fn create_destination(&self) -> String {
        // A colon, as Redis keys conventionally have.
        format!("{}:events", unique_name(self.mode()))
    }

    async fn create_named(&self, _name: &str) {}

    async fn read(&self, destination: &str, ids: &[String], timeout: Duration) -> Vec<Received> {
        if LIST {
            redis::read_list(&self.url, destination, ids, timeout).await
        } else {
            redis::read_stream(&self.url, destination, ids, timeout).await
        }
    }

    fn sink(&self) -> &'static str {
        "redis"
    }

    fn service(&self) -> &'static str {
        "Redis"
    }
}

impl<const LIST: bool> PrivateTarget for Redis<LIST> {
    async fn start() -> Self {
        let server = PrivateRedis::start().await;
        Redis {
            url: server.url(),
            private: Some(server),
        }
    }

    async fn stop(&mut self) {
        if let Some(server) = &self.private {
            server.kill().await;
        }
    }

    async fn restart(&mut self) {
        if let Some(server) = &self.private {
            server.restart().await;
        }
    }
}

impl<const LIST: bool> SecuredTarget for Redis<LIST> {
    fn wrong_password_args(
        &self,
        _dir: &std::path::Path,
        password_file: &std::path::Path,
    ) -> Vec<String> {
        redis::relay_args_with(&self.url, password_file, &["--redis-mode", self.mode()])
    }
}

conformance!(
    stream,
    super::Redis<false>,
    shared: [
        end_to_end_with_two_relays,
        rolled_back_transactions_never_appear,
        a_relay_killed_mid_drain_loses_nothing,
        a_wrong_password_gets_one_clear_line_and_no_secret,
    ],
    private: [an_outage_loses_nothing_and_the_relay_resumes_by_itself],
);

conformance!(
    list,
    super::Redis<true>,
    shared: [
        end_to_end_with_two_relays,
        rolled_back_transactions_never_appear,
        a_relay_killed_mid_drain_loses_nothing,
        a_wrong_password_gets_one_clear_line_and_no_secret,
    ],
    private: [an_outage_loses_nothing_and_the_relay_resumes_by_itself],
);
