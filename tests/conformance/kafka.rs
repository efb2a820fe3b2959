//! Kafka runs the conformance suite against both brokers of the test
//! services: Tansu, and the real Apache Kafka. Tansu cannot do SASL end to
//! end, so the wrong-password scenario runs against Apache Kafka only.

use std::sync::Mutex;
use std::time::Duration;

use crate::common::apache_kafka::{self, PrivateApacheKafka};
use crate::common::private_broker::PrivateBroker;
use crate::common::{brokers, consume_event_ids, create_topic, unique_name, Received};
use crate::conformance;
use crate::suite::{PrivateTarget, SecuredTarget, Target};

/// What both brokers share: topics made with the admin API and read back by
/// the test kit's consumer.
struct Cluster {
    brokers: String,
    /// Topics created here: a Tansu restarted with memory storage forgets
    /// them, so they are made again.
    created: Mutex<Vec<String>>,
}

impl Cluster {
    fn new(brokers: String) -> Self {
        Cluster {
            brokers,
            created: Mutex::default(),
        }
    }

    async fn create(&self, topic: &str) {
        create_topic(&self.brokers, topic, 3).await;
        self.created.lock().unwrap().push(topic.to_owned());
    }

    async fn create_again(&self) {
        let topics = self.created.lock().unwrap().clone();
        for topic in topics {
            create_topic(&self.brokers, &topic, 3).await;
        }
    }
}

macro_rules! kafka_target {
    ($name:ident) => {
        impl Target for $name {
            fn relay_args(&self) -> Vec<String> {
                vec!["--kafka-brokers".to_owned(), self.cluster.brokers.clone()]
            }

            async fn create_destination(&self) -> String {
                let topic = unique_name("topic");
                self.cluster.create(&topic).await;
                topic
            }

            async fn create_named(&self, name: &str) {
                self.cluster.create(name).await;
            }

            async fn read(
                &self,
                destination: &str,
                ids: &[String],
                timeout: Duration,
            ) -> Vec<Received> {
                consume_event_ids(&self.cluster.brokers, destination, ids, timeout).await
            }

            fn sink(&self) -> &'static str {
                "kafka"
            }

            fn service(&self) -> &'static str {
                "Kafka"
            }
        }
    };
}

/// Tansu: the shared broker, or a private one to stop and start.
pub struct Tansu {
    cluster: Cluster,
    private: Option<PrivateBroker>,
}

impl Tansu {
    pub fn shared() -> Self {
        Tansu {
            cluster: Cluster::new(brokers()),
            private: None,
        }
    }
}

kafka_target!(Tansu);

impl PrivateTarget for Tansu {
    async fn start() -> Self {
        let broker = PrivateBroker::start().await;
        Tansu {
            cluster: Cluster::new(broker.address()),
            private: Some(broker),
        }
    }

    async fn stop(&mut self) {
        if let Some(broker) = &mut self.private {
            broker.kill();
        }
    }

    async fn restart(&mut self) {
        if let Some(broker) = &mut self.private {
            broker.restart().await;
        }
        // Memory storage: the topics are gone with the process.
        self.cluster.create_again().await;
    }
}

/// Apache Kafka 2.3: the shared broker (with SASL and TLS listeners), or a
/// private one on the shared ZooKeeper, which keeps its data across a stop.
pub struct ApacheKafka {
    cluster: Cluster,
    private: Option<PrivateApacheKafka>,
}

impl ApacheKafka {
    pub fn shared() -> Self {
        ApacheKafka {
            cluster: Cluster::new(apache_kafka::plaintext()),
            private: None,
        }
    }
}

kafka_target!(ApacheKafka);

impl PrivateTarget for ApacheKafka {
    async fn start() -> Self {
        let broker = PrivateApacheKafka::start().await;
        ApacheKafka {
            cluster: Cluster::new(broker.address()),
            private: Some(broker),
        }
    }

    async fn stop(&mut self) {
        if let Some(broker) = &self.private {
            broker.stop().await;
        }
    }

    async fn restart(&mut self) {
        if let Some(broker) = &self.private {
            broker.restart().await;
        }
    }
}

impl SecuredTarget for ApacheKafka {
    fn wrong_password_args(
        &self,
        dir: &std::path::Path,
        password_file: &std::path::Path,
    ) -> Vec<String> {
        let lines = apache_kafka::sasl_ssl_lines("SCRAM-SHA-512", "relay", password_file);
        let properties = apache_kafka::client_properties(dir, "wrong.properties", &lines);
        let args = [
            "--kafka-brokers",
            &apache_kafka::sasl_ssl(),
            "--kafka-config",
            properties.to_str().unwrap(),
            "--kafka-startup-timeout-secs",
            "60",
        ];
        args.map(str::to_owned).to_vec()
    }
}

conformance!(
    tansu,
    super::Tansu,
    shared: [
        end_to_end_with_two_relays,
        rolled_back_transactions_never_appear,
        a_relay_killed_mid_drain_loses_nothing,
        a_missing_destination_does_not_hold_up_the_others,
    ],
    private: [an_outage_loses_nothing_and_the_relay_resumes_by_itself],
);

conformance!(
    apache,
    super::ApacheKafka,
    shared: [
        end_to_end_with_two_relays,
        rolled_back_transactions_never_appear,
        a_relay_killed_mid_drain_loses_nothing,
        a_missing_destination_does_not_hold_up_the_others,
        a_wrong_password_gets_one_clear_line_and_no_secret,
    ],
    private: [an_outage_loses_nothing_and_the_relay_resumes_by_itself],
);
