//! NATS JetStream behind the sink seam: [`Nats`] is the sink (one client,
//! which reconnects by itself), a [`NatsChannel`] the channel one batch
//! publishes on.
//!
//! Guarantees: every publish carries `Nats-Msg-Id` = the event id and goes
//! out at once, its PubAck awaited separately (many in flight); a row
//! counts as delivered only on its own PubAck, `duplicate: true` included;
//! a client that is not connected, or does not answer a PING, is an outage;
//! each stream's duplicate window is read when the stream is first seen,
//! and one shorter than a retry can take is said once.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::GetStreamByNameErrorKind;
use async_nats::{ConnectErrorKind, ConnectOptions, Event};

use super::failure::failed;
use super::message::{check_subject, headers};
use super::url::NatsUrl;
use crate::error::{Error, Result};
use crate::sinks::message::Message;
use crate::sinks::outcome::{BoxFuture, Delivery, Disposition, FailureReason, Pending, Rejected};
use crate::sinks::{Channel, Profile, Sink};

/// How NATS names things.
pub static NATS: Profile = Profile {
    service: "NATS",
    destination: "subject",
    create: "no stream captures it: add it to a stream's subjects",
    connection: "connection",
    unreachable: "nats unreachable",
    outage: "no NATS server answers; rows stay pending until one does",
    missing_reason: FailureReason::NoStream,
    grant_write: "allow the relay's NATS user to publish to the subject and to $JS.API.>",
};

/// The longest one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a publish may wait for its PubAck.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What `--sink nats` is opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    pub url: NatsUrl,
    pub creds: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The longest a row may take between two sends: a stream's duplicate
    /// window shorter than this is warned about.
    pub longest_retry: Duration,
}

/// One connected client and its JetStream context.
struct Session {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    channel: Arc<NatsChannel>,
}

/// What the client's events said, shared with its callback.
#[derive(Debug, Default)]
struct Events {
    /// When the client was last seen disconnected.
    down_at: Option<Instant>,
}

/// The NATS sink: shared by every table's loop.
pub struct Nats {
    settings: NatsSettings,
    session: tokio::sync::Mutex<Option<Session>>,
    generation: AtomicU64,
    events: Arc<Mutex<Events>>,
    /// Streams whose duplicate window was checked.
    checked: Mutex<HashSet<String>>,
}

/// The channel one batch publishes on.
pub struct NatsChannel {
    /// The JetStream context, or why there is none (no connection).
    jetstream: std::result::Result<async_nats::jetstream::Context, String>,
    generation: u64,
}

impl Nats {
    /// Check the settings; makes no connection yet.
    pub fn new(settings: NatsSettings) -> Result<Self> {
        if settings.client_cert.is_some() != settings.client_key.is_some() {
            return Err(Error::InvalidConfig(
                "--nats-client-cert and --nats-client-key go together: give both".into(),
            ));
        }
        if settings.creds.is_some() && settings.token_file.is_some() {
            return Err(Error::InvalidConfig(
                "--nats-creds and --nats-token-file are two ways to log in: give one".into(),
            ));
        }
        Ok(Nats {
            settings,
            session: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            events: Arc::default(),
            checked: Mutex::default(),
        })
    }

    fn events(&self) -> std::sync::MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seen_down(&self) {
        self.events().down_at = Some(Instant::now());
    }

    /// The client's options: credentials (read now) and TLS.
    async fn options(&self) -> Result<ConnectOptions> {
        let settings = &self.settings;
        let events = Arc::clone(&self.events);
        let mut options = ConnectOptions::new()
            .name(format!("outbox-relay {}", env!("CARGO_PKG_VERSION")))
            .connection_timeout(CONNECT_TIMEOUT)
            .event_callback(move |event| {
                let events = Arc::clone(&events);
                async move {
                    if matches!(event, Event::Disconnected | Event::Closed) {
                        events.lock().unwrap_or_else(|p| p.into_inner()).down_at =
                            Some(Instant::now());
                    }
                }
            });
        if let Some((user, password)) = settings.url.user_and_password() {
            options = options.user_and_password(user.to_owned(), password.to_owned());
        }
        if let Some(path) = &settings.token_file {
            let token = std::fs::read_to_string(path).map_err(|e| {
                Error::InvalidConfig(format!(
                    "--nats-token-file {}: cannot read it ({e})",
                    path.display()
                ))
            })?;
            options = options.token(token.trim_end_matches(['\n', '\r']).to_owned());
        }
        if let Some(path) = &settings.creds {
            options = options.credentials_file(path).await.map_err(|e| {
                Error::InvalidConfig(format!(
                    "--nats-creds {}: not a NATS credentials file ({e}); give the .creds file nsc writes for the relay's user",
                    path.display()
                ))
            })?;
        }
        if settings.url.tls() || settings.ca.is_some() {
            options = options.require_tls(true);
        }
        if let Some(ca) = &settings.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&settings.client_cert, &settings.client_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options)
    }

    async fn connect(&self) -> Result<Session> {
        let options = self.options().await?;
        let servers: Vec<async_nats::ServerAddr> = self
            .settings
            .url
            .servers()
            .iter()
            .map(|s| s.parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::InvalidConfig(format!("--nats-url {}: {e}", self.settings.url)))?;
        let client = options
            .connect(servers)
            .await
            .map_err(|e| self.connect_error(&e))?;
        let mut jetstream = async_nats::jetstream::new(client.clone());
        jetstream.set_timeout(ACK_TIMEOUT);
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Session {
            client,
            channel: Arc::new(NatsChannel {
                jetstream: Ok(jetstream.clone()),
                generation,
            }),
            jetstream,
        })
    }

    fn connect_error(&self, error: &async_nats::ConnectError) -> Error {
        let url = self.settings.url.to_string();
        match error.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                let login = match (&self.settings.creds, &self.settings.token_file) {
                    (Some(path), _) => format!("the credentials in --nats-creds {}", path.display()),
                    (_, Some(path)) => format!("the token in --nats-token-file {}", path.display()),
                    _ => match self.settings.url.user() {
                        Some(user) => format!("user {user}: check the user and password in --nats-url"),
                        None => "an anonymous client: give a user in --nats-url, --nats-token-file or --nats-creds".to_owned(),
                    },
                };
                Error::NatsLoginRefused { url, login }
            }
            _ => Error::NatsUnreachable {
                url,
                reason: error.to_string(),
            },
        }
    }

    /// The session's channel, connecting first if there is none.
    async fn channel(&self) -> Arc<NatsChannel> {
        let mut session = self.session.lock().await;
        if let Some(open) = session.as_ref() {
            return Arc::clone(&open.channel);
        }
        match self.connect().await {
            Ok(open) => {
                let channel = Arc::clone(&open.channel);
                *session = Some(open);
                channel
            }
            Err(error) => {
                self.seen_down();
                Arc::new(NatsChannel {
                    jetstream: Err(error.to_string()),
                    generation: self.generation.load(Ordering::SeqCst),
                })
            }
        }
    }

    async fn client(&self) -> Option<(async_nats::Client, async_nats::jetstream::Context)> {
        let session = self.session.lock().await;
        session
            .as_ref()
            .map(|open| (open.client.clone(), open.jetstream.clone()))
    }

    /// Whether the client is connected and the server answers a PING.
    async fn probe(&self, timeout: Duration) -> std::result::Result<(), String> {
        if let Err(broken) = &self.channel().await.jetstream {
            return Err(broken.clone());
        }
        let Some((client, _)) = self.client().await else {
            return Err("not connected".into());
        };
        let state = client.connection_state();
        if state != async_nats::connection::State::Connected {
            self.seen_down();
            return Err(format!("the NATS client is {state}"));
        }
        match tokio::time::timeout(timeout, client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                self.seen_down();
                Err(format!("nats: {error}"))
            }
            Err(_) => {
                self.seen_down();
                Err(format!("nats: no answer to a PING within {timeout:?}"))
            }
        }
    }

    /// At start-up: connect within `timeout` (failing at once on a refused
    /// login), and check that the account has JetStream.
    async fn check_reachable(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let open = loop {
            match self.connect().await {
                Ok(open) => break open,
                Err(error @ (Error::NatsLoginRefused { .. } | Error::InvalidConfig(_))) => {
                    return Err(error)
                }
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        };
        if let Err(reason) = jetstream_enabled(&open.client).await {
            return Err(Error::NatsNoJetStream {
                url: self.settings.url.to_string(),
                reason,
            });
        }
        *self.session.lock().await = Some(open);
        Ok(())
    }

    /// Whether a stream captures `subject`; the first time a stream is
    /// seen, its duplicate window is checked.
    async fn stream_exists(&self, subject: &str, timeout: Duration) -> Option<bool> {
        let (_, jetstream) = self.client().await?;
        let found = tokio::time::timeout(timeout, jetstream.stream_by_subject(subject)).await;
        match found.ok()? {
            Ok(stream) => {
                self.check_window(&jetstream, &stream, timeout).await;
                Some(true)
            }
            Err(error) if error.kind() == GetStreamByNameErrorKind::NotFound => Some(false),
            Err(_) => None,
        }
    }

    async fn check_window(
        &self,
        jetstream: &async_nats::jetstream::Context,
        stream: &str,
        timeout: Duration,
    ) {
        if !self
            .checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(stream.to_owned())
        {
            return;
        }
        let Ok(Ok(info)) = tokio::time::timeout(timeout, jetstream.get_stream(stream)).await else {
            return;
        };
        let window = info.cached_info().config.duplicate_window;
        let longest = self.settings.longest_retry;
        if window < longest {
            tracing::warn!(
                stream,
                duplicate_window_secs = window.as_secs(),
                longest_retry_secs = longest.as_secs(),
                "stream {stream} drops a second copy only within its duplicate window ({}s), shorter than a row may take to be sent again (the longest retry backoff plus --claim-timeout-secs, {}s): a copy sent after the window is kept; raise the stream's duplicate_window",
                window.as_secs(),
                longest.as_secs()
            );
        }
    }

    fn unavailable_since(&self, since: Instant) -> bool {
        self.events().down_at.is_some_and(|at| at >= since)
    }

    /// Wait for what was handed over to be written, then close.
    async fn flush(&self, timeout: Duration) -> std::result::Result<(), String> {
        let Some(open) = self.session.lock().await.take() else {
            return Ok(());
        };
        match tokio::time::timeout(timeout, open.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("publishes still outstanding at the timeout".into()),
        }
    }
}

/// Whether the account has JetStream: `$JS.API.INFO` answers without an
/// error. (Read as plain JSON: servers of every version answer it.)
async fn jetstream_enabled(client: &async_nats::Client) -> std::result::Result<(), String> {
    let asked = client.request("$JS.API.INFO", "".into());
    let answer = match tokio::time::timeout(CONNECT_TIMEOUT, asked).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => return Err("the JetStream API did not answer".into()),
    };
    let info: serde_json::Value = serde_json::from_slice(&answer.payload)
        .map_err(|e| format!("an answer that is not JSON ({e})"))?;
    match info.get("error") {
        None => Ok(()),
        Some(error) => Err(error
            .get("description")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("an error")
            .to_owned()),
    }
}

impl NatsChannel {
    /// Publish one message and return its pending PubAck.
    async fn send(&self, message: Message) -> Pending {
        let jetstream = match &self.jetstream {
            Ok(jetstream) => jetstream,
            Err(broken) => {
                return Pending::Refused(Delivery::Failed {
                    disposition: Disposition::Unavailable,
                    reason: FailureReason::BrokerUnavailable,
                    message: broken.clone(),
                })
            }
        };
        let subject = message.destination.clone();
        let payload = message.payload.clone().unwrap_or_default();
        let headers = headers(&message);
        match jetstream
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
        {
            Ok(ack) => Pending::Sent(Box::pin(async move {
                match ack.await {
                    // A duplicate was stored before: the row is published.
                    Ok(_) => Delivery::Delivered,
                    Err(error) => failed(&error, &subject),
                }
            })),
            Err(error) => Pending::Refused(failed(&error, &subject)),
        }
    }
}

impl Sink for Nats {
    fn profile(&self) -> &'static Profile {
        &NATS
    }

    fn check(&self, message: &Message) -> std::result::Result<(), Rejected> {
        check_subject(&message.destination)
    }

    fn channel(&self) -> BoxFuture<'_, Arc<dyn Channel>> {
        Box::pin(async move { Nats::channel(self).await as Arc<dyn Channel> })
    }

    fn destination_exists<'a>(
        &'a self,
        destination: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Option<bool>> {
        Box::pin(self.stream_exists(destination, timeout))
    }

    fn probe(&self, timeout: Duration) -> BoxFuture<'_, std::result::Result<(), String>> {
        Box::pin(Nats::probe(self, timeout))
    }

    fn unavailable_since(&self, since: Instant) -> bool {
        Nats::unavailable_since(self, since)
    }

    fn check_reachable(&self, timeout: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(Nats::check_reachable(self, timeout))
    }

    fn replace_if_fatal(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// The client reconnects by itself; there is nothing to replace.
    fn reconnect(&self, _generation: u64) -> Result<bool> {
        Ok(false)
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, std::result::Result<(), String>> {
        Box::pin(Nats::flush(self, timeout))
    }
}

impl Channel for NatsChannel {
    fn generation(&self) -> u64 {
        self.generation
    }

    fn send(&self, message: Message, _queue_wait: Duration) -> BoxFuture<'_, Pending> {
        Box::pin(NatsChannel::send(self, message))
    }
}
