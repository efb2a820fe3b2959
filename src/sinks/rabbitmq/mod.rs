//! The RabbitMQ sink: rows published with AMQP 0-9-1 to an exchange (the
//! default exchange unless `--rabbitmq-exchange` names one), routing key =
//! the row's `topic`, `mandatory` and with publisher confirms, so a row is
//! published only on its own ack and a message no queue takes is caught.

mod failure;
mod message;
mod publisher;
mod sink;
mod url;

pub use publisher::RabbitMq;
pub use url::RabbitUrl;
