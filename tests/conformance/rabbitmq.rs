//! RabbitMQ runs the conformance suite against the node of the test
//! services (the default exchange: each destination is a durable queue),
//! and against a private node for the outage.

use std::time::Duration;

use lapin::types::FieldTable;

use crate::common::rabbitmq::{self, PrivateRabbitMq};
use crate::common::{unique_name, Received};
use crate::conformance;
use crate::suite::{PrivateTarget, SecuredTarget, Target};

pub struct RabbitMq {
    url: String,
    private: Option<PrivateRabbitMq>,
}

impl RabbitMq {
    pub fn shared() -> Self {
        RabbitMq {
            url: rabbitmq::url(),
            private: None,
        }
    }
}

impl Target for RabbitMq {
    fn relay_args(&self) -> Vec<String> {
        rabbitmq::relay_args(&self.url, None)
    }

    async fn create_destination(&self) -> String {
        let queue = unique_name("queue");
        self.create_named(&queue).await;
        queue
    }

    async fn create_named(&self, name: &str) {
        rabbitmq::declare_queue(&self.url, name, FieldTable::default()).await;
    }

    async fn read(&self, destination: &str, ids: &[String], timeout: Duration) -> Vec<Received> {
        rabbitmq::read_queue(&self.url, destination, ids, timeout).await
    }

    fn sink(&self) -> &'static str {
        "rabbitmq"
    }

    fn service(&self) -> &'static str {
        "RabbitMQ"
    }
}

impl PrivateTarget for RabbitMq {
    async fn start() -> Self {
        let node = PrivateRabbitMq::start().await;
        RabbitMq {
            url: node.url(),
            private: Some(node),
        }
    }

    async fn stop(&mut self) {
        if let Some(node) = &self.private {
            node.kill().await;
        }
    }

    async fn restart(&mut self) {
        if let Some(node) = &self.private {
            node.restart().await;
        }
    }
}

impl SecuredTarget for RabbitMq {
    fn wrong_password_args(
        &self,
        _dir: &std::path::Path,
        password_file: &std::path::Path,
    ) -> Vec<String> {
        rabbitmq::relay_args_with(&self.url, None, password_file)
    }
}

conformance!(
    default_exchange,
    super::RabbitMq,
    shared: [
        end_to_end_with_two_relays,
        rolled_back_transactions_never_appear,
        a_relay_killed_mid_drain_loses_nothing,
        a_missing_destination_does_not_hold_up_the_others,
        a_wrong_password_gets_one_clear_line_and_no_secret,
    ],
    private: [an_outage_loses_nothing_and_the_relay_resumes_by_itself],
);
