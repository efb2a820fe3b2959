//! The RabbitMQ connection: one connection and one channel in confirm mode,
//! opened when first needed and again after it broke.
//!
//! Guarantees: every publish is `mandatory`, and a row counts as delivered
//! only on its own `basic.ack` without a `basic.return` before it (lapin
//! matches acks to publishes by delivery tag, `multiple` included); a
//! `basic.nack` and a return are failures of that row. A connection the
//! server blocked (`connection.blocked`, a resource alarm) or that is gone
//! makes the probe fail, so the relay waits it out as an outage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::tcp::AsyncTcpStream;
use lapin::types::{FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{Confirmation, Connection, ConnectionProperties, Event, ExchangeKind};
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};

use super::failure::{failed, login_refused, returned};
use super::message::properties;
use super::url::{RabbitUrl, Verify};
use crate::error::{Error, Result};
use crate::sinks::message::Message;
use crate::sinks::outcome::{Delivery, Disposition, FailureReason, Pending};

/// The longest one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the connection's events said, shared with its listener task.
#[derive(Debug, Default)]
struct Events {
    /// Set while the server blocks the connection, with its reason.
    blocked: Option<String>,
    /// When the service was last seen down.
    down_at: Option<Instant>,
}

/// One open connection and its confirm-mode channel.
struct Session {
    connection: Connection,
    channel: Arc<RabbitChannel>,
}

/// The channel one batch publishes on.
pub struct RabbitChannel {
    /// The confirm-mode channel, or why there is none (the connection could
    /// not be opened).
    channel: std::result::Result<lapin::Channel, String>,
    exchange: ShortString,
    generation: u64,
}

/// The RabbitMQ sink: shared by every table's loop.
pub struct RabbitMq {
    url: RabbitUrl,
    exchange: String,
    tls: Option<Arc<TlsConnect>>,
    session: tokio::sync::Mutex<Option<Session>>,
    generation: AtomicU64,
    events: Arc<Mutex<Events>>,
}

impl RabbitMq {
    /// Check the settings; makes no connection yet.
    pub fn new(url: RabbitUrl, exchange: &str) -> Result<Self> {
        let tls = tls_connect(&url)?;
        Ok(RabbitMq {
            url,
            exchange: exchange.to_owned(),
            tls,
            session: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            events: Arc::default(),
        })
    }

    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    fn events(&self) -> std::sync::MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seen_down(&self) {
        self.events().down_at = Some(Instant::now());
    }

    /// Open a connection and a confirm-mode channel on it.
    async fn connect(&self) -> Result<Session> {
        let uri = self.url.connect_uri()?;
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("outbox-relay {}", env!("CARGO_PKG_VERSION")).into());
        let connecting = open_connection(uri, self.tls.clone(), properties);
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(self.connect_error(&error)),
            Err(_) => {
                return Err(
                    self.unreachable(&format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))
                )
            }
        };
        // A block belongs to the connection it was sent on.
        self.events().blocked = None;
        self.listen(&connection);
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| self.unreachable(&e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.unreachable(&e))?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Session {
            connection,
            channel: Arc::new(RabbitChannel {
                channel: Ok(channel),
                exchange: ShortString::from(self.exchange.as_str()),
                generation,
            }),
        })
    }

    /// Follow the connection's blocked / unblocked events.
    fn listen(&self, connection: &Connection) {
        let events = Arc::clone(&self.events);
        let mut stream = Box::pin(connection.events_listener());
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let mut events = events.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    Event::ConnectionBlocked(reason) => {
                        tracing::warn!(reason, "RabbitMQ blocked the connection (a resource alarm); rows stay pending until it unblocks");
                        events.blocked = Some(reason);
                        events.down_at = Some(Instant::now());
                    }
                    Event::ConnectionUnblocked => {
                        tracing::info!("RabbitMQ unblocked the connection");
                        events.blocked = None;
                    }
                    _ => {}
                }
            }
        });
    }

    fn connect_error(&self, error: &lapin::Error) -> Error {
        match login_refused(error) {
            true => Error::RabbitMqLoginRefused {
                url: self.url.to_string(),
                user: self.url.user().to_owned(),
            },
            false => self.unreachable(error),
        }
    }

    fn unreachable(&self, reason: &dyn std::fmt::Display) -> Error {
        Error::RabbitMqUnreachable {
            url: self.url.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The session's channel, connecting first if there is none or it broke.
    pub async fn channel(&self) -> Arc<RabbitChannel> {
        let mut session = self.session.lock().await;
        if let Some(open) = session.as_ref() {
            if open.connection.status().connected() && open.channel.is_open() {
                return Arc::clone(&open.channel);
            }
        }
        *session = None;
        match self.connect().await {
            Ok(open) => {
                let channel = Arc::clone(&open.channel);
                *session = Some(open);
                channel
            }
            Err(error) => {
                self.seen_down();
                Arc::new(RabbitChannel {
                    channel: Err(error.to_string()),
                    exchange: ShortString::from(self.exchange.as_str()),
                    generation: self.generation.load(Ordering::SeqCst),
                })
            }
        }
    }

    /// Whether the server answers, accepts the relay and does not block
    /// it, and the exchange exists.
    pub async fn probe(&self) -> std::result::Result<(), String> {
        if let Some(reason) = self.events().blocked.clone() {
            return Err(format!("RabbitMQ blocks the connection: {reason}"));
        }
        let channel = self.channel().await;
        if let Err(broken) = &channel.channel {
            return Err(broken.clone());
        }
        if self.exchange.is_empty() {
            return Ok(());
        }
        match self.exchange_exists().await {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.seen_down();
                Err(missing_exchange(&self.exchange))
            }
            Err(error) => {
                self.seen_down();
                Err(error)
            }
        }
    }

    /// A passive declare on a channel of its own (a 404 closes it).
    async fn exchange_exists(&self) -> std::result::Result<bool, String> {
        let channel = self.side_channel().await?;
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let declared = channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Direct,
                passive,
                FieldTable::default(),
            )
            .await;
        finish_side(channel, declared).await
    }

    /// Whether queue `name` exists (the default exchange routes to queues
    /// by name): `None` when the server did not answer.
    pub async fn queue_exists(&self, name: &str) -> Option<bool> {
        let channel = self.side_channel().await.ok()?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(name.into(), passive, FieldTable::default())
            .await;
        finish_side(channel, declared).await.ok()
    }

    async fn side_channel(&self) -> std::result::Result<lapin::Channel, String> {
        let session = self.session.lock().await;
        let open = session.as_ref().ok_or("not connected")?;
        open.connection
            .create_channel()
            .await
            .map_err(|e| e.to_string())
    }

    /// At start-up: connect within `timeout`, failing at once on a refused
    /// login, and check the exchange.
    pub async fn check_reachable(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.connect().await {
                Ok(open) => {
                    *self.session.lock().await = Some(open);
                    break;
                }
                Err(error @ Error::RabbitMqLoginRefused { .. }) => return Err(error),
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        if !self.exchange.is_empty() && self.exchange_exists().await == Ok(false) {
            return Err(Error::RabbitMqExchangeMissing {
                exchange: self.exchange.clone(),
                url: self.url.to_string(),
            });
        }
        Ok(())
    }

    pub fn unavailable_since(&self, since: Instant) -> bool {
        let events = self.events();
        events.blocked.is_some() || events.down_at.is_some_and(|at| at >= since)
    }

    /// Drop the session of `generation` (unless another loop already did);
    /// the next batch connects afresh.
    pub fn reconnect(&self, generation: u64) -> bool {
        let Ok(mut session) = self.session.try_lock() else {
            return false;
        };
        match session.as_ref() {
            Some(open) if open.channel.generation == generation => {
                *session = None;
                true
            }
            _ => false,
        }
    }

    /// Wait for every outstanding confirm, then close the connection.
    pub async fn flush(&self, timeout: Duration) -> std::result::Result<(), String> {
        let session = self.session.lock().await.take();
        let Some(open) = session else { return Ok(()) };
        if let Ok(channel) = &open.channel.channel {
            let confirms = channel.wait_for_confirms();
            match tokio::time::timeout(timeout, confirms).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(error.to_string()),
                Err(_) => return Err("confirms still outstanding at the timeout".into()),
            }
        }
        let _ = open
            .connection
            .close(200, "outbox-relay stopping".into())
            .await;
        Ok(())
    }
}

impl RabbitChannel {
    fn is_open(&self) -> bool {
        self.channel
            .as_ref()
            .is_ok_and(|channel| channel.status().connected())
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Publish one message, `mandatory`, and return its pending confirm.
    pub async fn send(&self, message: Message) -> Pending {
        let channel = match &self.channel {
            Ok(channel) => channel,
            Err(broken) => {
                return Pending::Refused(Delivery::Failed {
                    disposition: Disposition::Unavailable,
                    reason: FailureReason::BrokerUnavailable,
                    message: broken.clone(),
                })
            }
        };
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let routing_key = ShortString::from(message.destination.as_str());
        let payload = message.payload.as_deref().unwrap_or_default();
        let published = channel
            .basic_publish(
                self.exchange.clone(),
                routing_key,
                options,
                payload,
                properties(&message),
            )
            .await;
        let confirm = match published {
            Ok(confirm) => confirm,
            Err(error) => return Pending::Refused(failed(&error)),
        };
        let exchange = self.exchange.to_string();
        Pending::Sent(Box::pin(async move {
            match confirm.await {
                Ok(Confirmation::Ack(None)) => Delivery::Delivered,
                Ok(Confirmation::Ack(Some(back)) | Confirmation::Nack(Some(back))) => {
                    returned(&exchange, &message.destination, &back)
                }
                Ok(Confirmation::Nack(None)) => Delivery::Failed {
                    disposition: Disposition::Retry,
                    reason: FailureReason::Other,
                    message: "rabbitmq: the broker refused the message (basic.nack)".into(),
                },
                Ok(Confirmation::NotRequested) => Delivery::Unconfirmed,
                Err(error) => failed(&error),
            }
        }))
    }
}

/// Finish a side channel's passive declare: whether the object exists.
async fn finish_side<T>(
    channel: lapin::Channel,
    declared: lapin::Result<T>,
) -> std::result::Result<bool, String> {
    match declared {
        Ok(_) => {
            let _ = channel.close(200, "".into()).await;
            Ok(true)
        }
        Err(error) if super::failure::not_found(&error) => Ok(false),
        Err(error) => Err(error.to_string()),
    }
}

/// The error of an exchange that does not exist.
pub fn missing_exchange(exchange: &str) -> String {
    format!("exchange {exchange} does not exist; declare it (or fix --rabbitmq-exchange)")
}

/// TLS for `amqps://`: an OpenSSL connector set as the URL's `cacertfile`,
/// `certfile`, `keyfile` and `verify` say, and the name sent and checked
/// (`server_name_indication`, else the URL's host).
pub struct TlsConnect {
    connector: SslConnector,
    name: String,
}

fn tls_connect(url: &RabbitUrl) -> Result<Option<Arc<TlsConnect>>> {
    let Some(tls) = &url.tls else {
        return Ok(None);
    };
    let fail = |what: &str, path: &std::path::Path, e: openssl::error::ErrorStack| {
        Error::InvalidConfig(format!(
            "--rabbitmq-url {what}={}: cannot use it ({e})",
            path.display()
        ))
    };
    let mut builder = SslConnector::builder(SslMethod::tls())
        .map_err(|e| Error::InvalidConfig(format!("TLS for RabbitMQ: {e}")))?;
    if let Some(ca) = &tls.cacertfile {
        builder
            .set_ca_file(ca)
            .map_err(|e| fail("cacertfile", ca, e))?;
    }
    if let (Some(cert), Some(key)) = (&tls.certfile, &tls.keyfile) {
        builder
            .set_certificate_chain_file(cert)
            .map_err(|e| fail("certfile", cert, e))?;
        builder
            .set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| fail("keyfile", key, e))?;
    }
    if tls.verify == Verify::None {
        builder.set_verify(SslVerifyMode::NONE);
    }
    let name = tls
        .server_name_indication
        .clone()
        .unwrap_or_else(|| url.host().to_owned());
    Ok(Some(Arc::new(TlsConnect {
        connector: builder.build(),
        name,
    })))
}

/// Open a connection to `uri`, over `tls` when given.
async fn open_connection(
    uri: AMQPUri,
    tls: Option<Arc<TlsConnect>>,
    properties: ConnectionProperties,
) -> lapin::Result<Connection> {
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, runtime| {
            let host = uri.authority.host.clone();
            let address = tokio::net::lookup_host((host.as_str(), uri.authority.port))
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("{host}: no address")))?;
            let stream = AsyncTcpStream::connect(&runtime, address).await?;
            match &tls {
                None => Ok(stream),
                Some(tls) => Ok(stream.into_openssl(&tls.connector, &tls.name).await?),
            }
        },
        properties,
    )
    .await
}
