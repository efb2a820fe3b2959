//! NATS JetStream runs the conformance suite against the server of the test
//! services (one file stream per destination subject), and against a
//! private server for the outage.

use std::time::Duration;

use crate::common::nats::{self, PrivateNats};
use crate::common::{unique_name, Received};
use crate::conformance;
use crate::suite::{PrivateTarget, SecuredTarget, Target};

pub struct Nats {
    url: String,
    private: Option<PrivateNats>,
}

impl Nats {
    pub fn shared() -> Self {
        Nats {
            url: nats::url(),
            private: None,
        }
    }
}

impl Target for Nats {
    fn relay_args(&self) -> Vec<String> {
        nats::relay_args(&self.url, &[])
    }

    async fn create_destination(&self) -> String {
        let subject = format!("{}.events", unique_name("orders"));
        self.create_named(&subject).await;
        subject
    }

    async fn create_named(&self, name: &str) {
        nats::create_stream(&self.url, &[name], |_| {}).await;
    }

    async fn read(&self, destination: &str, ids: &[String], timeout: Duration) -> Vec<Received> {
        nats::read(&self.url, destination, ids, timeout).await
    }

    fn sink(&self) -> &'static str {
        "nats"
    }

    fn service(&self) -> &'static str {
        "NATS"
    }
}

impl PrivateTarget for Nats {
    async fn start() -> Self {
        let server = PrivateNats::start("password").await;
        Nats {
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

impl SecuredTarget for Nats {
    fn wrong_password_args(
        &self,
        _dir: &std::path::Path,
        password_file: &std::path::Path,
    ) -> Vec<String> {
        // NATS takes the password in the URL: the suite's wrong one goes
        // there.
        let wrong = std::fs::read_to_string(password_file).expect("the wrong password");
        let url = self.url.replacen(&nats::password(), wrong.trim(), 1);
        nats::relay_args(&url, &[])
    }
}

conformance!(
    jetstream,
    super::Nats,
    shared: [
        end_to_end_with_two_relays,
        rolled_back_transactions_never_appear,
        a_relay_killed_mid_drain_loses_nothing,
        a_missing_destination_does_not_hold_up_the_others,
        a_wrong_password_gets_one_clear_line_and_no_secret,
    ],
    private: [an_outage_loses_nothing_and_the_relay_resumes_by_itself],
);
