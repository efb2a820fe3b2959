//! One table's transactional producer, for `--exactly-once`: every batch is
//! one Kafka transaction holding its messages and a checkpoint record (see
//! [`super::checkpoint`]); [`Transactional`] is the table's sink, and the
//! channel a batch sends on has begun its transaction.
//!
//! Guarantees: nothing is sent on a producer before `init_transactions`
//! with the table's `transactional.id` returned, which fences every older
//! producer with that id and completes (commits or aborts) its last
//! transaction; the checkpoint read after it, with `read_committed`, names
//! the rows of the last transaction Kafka committed for the table; a commit
//! is reported [`Commit::Fenced`] when a newer producer took the id over,
//! and nothing is ever committed after that.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::checkpoint::{partition_of, Checkpoint};
use super::options::{resolve, KafkaOption, OptionOrigin};
use super::publisher::{ProducerLease, Publisher};
use super::sink::KAFKA;
use crate::error::{Error, Result};
use crate::sinks::message::Message;
use crate::sinks::outcome::{BoxFuture, Delivery, Disposition, FailureReason, Pending, Rejected};
use crate::sinks::{Channel, Profile, Sink};

/// What `--exactly-once` needs for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionalSettings {
    pub transactional_id: String,
    pub checkpoint_topic: String,
    /// The table, for the checkpoint's readers.
    pub table: String,
    /// How long one transactional call (init, commit, abort) may take.
    pub call_timeout: Duration,
}

/// How a batch's transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    Committed,
    /// Aborted: none of its messages is visible to read-committed consumers.
    Aborted(String),
    /// A newer producer holds the `transactional.id`: this one must stop.
    Fenced(String),
    /// Neither committed nor cleanly aborted: the producer is replaced, and
    /// the next one's `init_transactions` settles the transaction.
    Unknown(String),
}

/// Where this table's producer stands.
#[derive(Debug, Default)]
struct State {
    /// The producer generation that `init_transactions` succeeded on.
    ready: Option<u64>,
    /// The checkpoint topic's partition count, once read.
    partitions: Option<i32>,
}

/// One table's transactional producer.
pub struct Transactional {
    publisher: Publisher,
    brokers: String,
    options: Vec<KafkaOption>,
    settings: TransactionalSettings,
    state: Mutex<State>,
}

/// Whether a transactional error says a newer producer took the id over.
fn is_fenced(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::TransactionCoordinatorFenced
        )
    )
}

fn transaction_error(error: &KafkaError) -> Option<&rdkafka::error::RDKafkaError> {
    match error {
        KafkaError::Transaction(inner) => Some(inner),
        _ => None,
    }
}

/// The options of a transactional producer: the user's, with
/// `transactional.id` set and `transaction.timeout.ms` defaulted.
pub fn transactional_options(
    options: &[KafkaOption],
    transactional_id: &str,
    transaction_timeout: Duration,
) -> Vec<KafkaOption> {
    let mut all = Vec::with_capacity(options.len() + 2);
    if !options.iter().any(|o| o.key == "transaction.timeout.ms") {
        all.push(KafkaOption {
            key: "transaction.timeout.ms".into(),
            value: transaction_timeout.as_millis().to_string(),
            origin: OptionOrigin::Flag,
        });
    }
    all.extend(options.iter().cloned());
    all.push(KafkaOption {
        key: "transactional.id".into(),
        value: transactional_id.to_owned(),
        origin: OptionOrigin::Flag,
    });
    all
}

impl Transactional {
    /// Create the table's producer; connects to nothing yet.
    pub fn new(
        brokers: &str,
        options: &[KafkaOption],
        record_timestamp: super::RecordTimestamp,
        settings: TransactionalSettings,
        transaction_timeout: Duration,
    ) -> Result<Self> {
        let producer_options =
            transactional_options(options, &settings.transactional_id, transaction_timeout);
        Ok(Transactional {
            publisher: Publisher::new(brokers, &producer_options, record_timestamp)?,
            brokers: brokers.to_owned(),
            options: options.to_vec(),
            settings,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn transactional_id(&self) -> &str {
        &self.settings.transactional_id
    }

    /// Whether the current producer is initialised (and so may send).
    pub fn is_ready(&self) -> bool {
        self.state().ready == Some(self.publisher.lease().generation)
    }

    /// Initialise the current producer (fencing older ones with the same
    /// id) and read the table's last committed checkpoint: the row ids a
    /// new leader marks published without sending them.
    pub async fn start(&self) -> std::result::Result<Vec<i64>, String> {
        let lease = self.publisher.lease();
        let timeout = self.settings.call_timeout;
        let producer = lease.producer().clone();
        tokio::task::spawn_blocking(move || producer.init_transactions(timeout))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| {
                if transaction_error(&e).is_some_and(|t| t.is_fatal()) {
                    let _ = self.publisher.replace(lease.generation);
                }
                format!("init_transactions failed: {e}")
            })?;
        let ids = self.read_checkpoint().await?;
        self.state().ready = Some(lease.generation);
        Ok(ids)
    }

    /// The last committed checkpoint of this table, read with
    /// `read_committed` up to the partition's end as it stands now.
    pub async fn read_checkpoint(&self) -> std::result::Result<Vec<i64>, String> {
        let partitions = self.partitions().await?;
        let partition = partition_of(&self.settings.transactional_id, partitions);
        let consumer = self.consumer()?;
        let topic = self.settings.checkpoint_topic.clone();
        let key = self.settings.transactional_id.clone();
        // An open transaction of another table on the same partition holds
        // the read back until it ends: at most its transaction timeout.
        let deadline = Instant::now() + self.settings.call_timeout * 4;
        let found = tokio::task::spawn_blocking(move || {
            read_latest(&consumer, &topic, partition, key.as_bytes(), deadline)
        })
        .await
        .map_err(|e| e.to_string())??;
        Ok(found.map(|c| c.row_ids()).unwrap_or_default())
    }

    async fn partitions(&self) -> std::result::Result<i32, String> {
        if let Some(known) = self.state().partitions {
            return Ok(known);
        }
        let producer = self.publisher.lease().producer().clone();
        let topic = self.settings.checkpoint_topic.clone();
        let timeout = self.settings.call_timeout;
        let count = tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map_err(|e| e.to_string())?;
            let found = metadata.topics().iter().find(|t| t.name() == topic);
            match found {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    Ok(t.partitions().len() as i32)
                }
                _ => Err(format!("the checkpoint topic {topic} does not exist")),
            }
        })
        .await
        .map_err(|e| e.to_string())??;
        self.state().partitions = Some(count);
        Ok(count)
    }

    fn consumer(&self) -> std::result::Result<BaseConsumer, String> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for option in resolve(&self.options).map_err(|e| e.to_string())? {
            if is_consumer_option(&option.key) {
                config.set(&option.key, &option.value);
            }
        }
        config
            .set("group.id", "outbox-relay-checkpoint-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("log_level", "2")
            .create()
            .map_err(|e| format!("cannot create the checkpoint reader: {e}"))
    }

    /// Produce, in `channel`'s transaction, the checkpoint naming `ids`:
    /// the rows sent in it. It goes out with them (one registration of the
    /// transaction's partitions); the transaction commits only if every one
    /// of them is delivered, so the checkpoint is then exactly true.
    pub async fn stage_checkpoint(&self, channel: &TransactionChannel, ids: &[i64]) {
        if !channel.began() || ids.is_empty() {
            return;
        }
        let checkpoint = Checkpoint::new(&self.settings.table, ids).encode();
        let staged = match self.partitions().await {
            Ok(count) => {
                let record = FutureRecord::<[u8], [u8]>::to(&self.settings.checkpoint_topic)
                    .partition(partition_of(&self.settings.transactional_id, count))
                    .key(self.settings.transactional_id.as_bytes())
                    .payload(&checkpoint);
                channel
                    .lease
                    .producer()
                    .send_result(record)
                    .map_err(|(error, _)| format!("the checkpoint record was refused: {error}"))
            }
            Err(reason) => Err(reason),
        };
        *channel.staged.lock().unwrap_or_else(|p| p.into_inner()) = Some(staged);
    }

    /// Commit `channel`'s transaction, its checkpoint staged.
    pub async fn commit(&self, channel: &TransactionChannel) -> Commit {
        let lease = &channel.lease;
        let staged = channel
            .staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let delivery = match staged {
            Some(Ok(delivery)) => delivery,
            Some(Err(reason)) => return self.abort(lease, reason).await,
            None => return self.abort(lease, "no checkpoint was staged".into()).await,
        };
        match tokio::time::timeout(self.settings.call_timeout, delivery).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err((error, _)))) => {
                return self
                    .abort(lease, format!("the checkpoint record failed: {error}"))
                    .await
            }
            Ok(Err(_)) | Err(_) => {
                return self.lost(lease, "the checkpoint record got no report".into())
            }
        }
        // rust-rdkafka's commit flushes first, and a flush that finds
        // anything still queued (a report or an event the client's thread
        // has not served yet) sleeps 100 ms before it looks again: wait for
        // the queue to empty here, a millisecond at a time.
        let deadline = Instant::now() + self.settings.call_timeout;
        while lease.producer().in_flight_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let producer = lease.producer().clone();
        let timeout = self.settings.call_timeout;
        let committed = tokio::task::spawn_blocking(move || producer.commit_transaction(timeout))
            .await
            .map_err(|e| KafkaError::Canceled.to_string() + &e.to_string());
        match committed {
            Ok(Ok(())) => Commit::Committed,
            Ok(Err(error)) if is_fenced(&error) => Commit::Fenced(error.to_string()),
            Ok(Err(error)) if transaction_error(&error).is_some_and(|t| t.txn_requires_abort()) => {
                self.abort(lease, format!("the commit failed: {error}"))
                    .await
            }
            Ok(Err(error)) => self.lost(lease, format!("the commit failed: {error}")),
            Err(reason) => self.lost(lease, reason),
        }
    }

    /// Abort the batch's transaction; `why` says what went wrong.
    pub async fn abort(&self, lease: &ProducerLease, why: String) -> Commit {
        let producer = lease.producer().clone();
        let timeout = self.settings.call_timeout;
        let aborted =
            tokio::task::spawn_blocking(move || producer.abort_transaction(timeout)).await;
        match aborted {
            Ok(Ok(())) => Commit::Aborted(why),
            Ok(Err(error)) if is_fenced(&error) => Commit::Fenced(error.to_string()),
            Ok(Err(error)) => self.lost(lease, format!("{why}; the abort failed too: {error}")),
            Err(error) => self.lost(lease, format!("{why}; the abort failed too: {error}")),
        }
    }

    /// A transaction neither committed nor aborted: replace the producer.
    /// (Kafka before 2.5 cannot bump the epoch after a timed-out message, so
    /// only a new producer's `init_transactions` settles the transaction.)
    fn lost(&self, lease: &ProducerLease, reason: String) -> Commit {
        self.forget(lease.generation);
        Commit::Unknown(reason)
    }

    /// The channel of one batch, its transaction begun on the current
    /// producer (or, if that cannot be, a channel that refuses every send
    /// as an outage).
    pub fn begin(&self) -> Arc<TransactionChannel> {
        let lease = self.publisher.lease();
        let broken = if self.state().ready != Some(lease.generation) {
            Some("kafka: the transactional producer is not initialised".to_owned())
        } else {
            match lease.producer().begin_transaction() {
                Ok(()) => None,
                Err(error) => {
                    self.forget(lease.generation);
                    Some(format!("kafka: cannot begin a transaction: {error}"))
                }
            }
        };
        Arc::new(TransactionChannel {
            lease,
            broken,
            staged: Mutex::default(),
            began_at: Instant::now(),
        })
    }

    /// Give up the current producer: the next batch starts a new one.
    pub fn forget_current(&self) {
        self.forget(self.publisher.lease().generation);
    }

    /// Give up the producer of `generation`: the next batch starts a new
    /// one (and reads the checkpoint again).
    pub fn forget(&self, generation: u64) {
        let _ = self.publisher.replace(generation);
        self.state().ready = None;
    }
}

/// librdkafka consumer properties worth passing on from the producer's:
/// the connection's security and addressing, not producer tuning.
fn is_consumer_option(key: &str) -> bool {
    key.starts_with("security.")
        || key.starts_with("ssl.")
        || key.starts_with("ssl_")
        || key.starts_with("sasl.")
        || key.starts_with("socket.")
        || key.starts_with("broker.")
        || key.starts_with("client.")
        || key.starts_with("reconnect.")
        || key.starts_with("enable.ssl")
        || key == "log_level"
}

/// Read `partition` of `topic` from the start up to its end as it is now,
/// with `read_committed`: the last record whose key is `key`.
fn read_latest(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    key: &[u8],
    deadline: Instant,
) -> std::result::Result<Option<Checkpoint>, String> {
    let timeout = deadline.saturating_duration_since(Instant::now());
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, timeout)
        .map_err(|e| format!("cannot read the checkpoint topic {topic}: {e}"))?;
    if high <= low {
        return Ok(None);
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(|e| e.to_string())?;
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    let mut latest = None;
    loop {
        if Instant::now() >= deadline {
            return Err(format!(
                "the checkpoint topic {topic} partition {partition} could not be read to offset {high} in time (an open transaction holds read_committed readers back)"
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                if message.key() == Some(key) {
                    if let Some(checkpoint) = message.payload().and_then(Checkpoint::decode) {
                        latest = Some(checkpoint);
                    }
                }
                if message.offset() + 1 >= high {
                    return Ok(latest);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                let position = consumer.position().ok().and_then(|list| {
                    list.find_partition(topic, partition)
                        .and_then(|p| p.offset().to_raw())
                });
                if position.is_some_and(|at| at >= high) {
                    return Ok(latest);
                }
            }
            Some(Err(error)) => return Err(format!("reading the checkpoint topic: {error}")),
            None => {}
        }
    }
}

/// The channel of one transactional batch: its transaction has begun.
pub struct TransactionChannel {
    lease: ProducerLease,
    /// Why no transaction could begin, if none did.
    broken: Option<String>,
    /// The checkpoint record produced in the transaction, if it could be.
    staged: Mutex<Option<std::result::Result<DeliveryFuture, String>>>,
    /// When the transaction began.
    began_at: Instant,
}

impl TransactionChannel {
    pub fn lease(&self) -> &ProducerLease {
        &self.lease
    }

    /// When its transaction began.
    pub fn began_at(&self) -> Instant {
        self.began_at
    }

    /// Whether a transaction is open on this channel.
    pub fn began(&self) -> bool {
        self.broken.is_none()
    }
}

impl Channel for TransactionChannel {
    fn generation(&self) -> u64 {
        self.lease.generation
    }

    fn send(&self, message: Message, queue_wait: Duration) -> BoxFuture<'_, Pending> {
        if let Some(broken) = &self.broken {
            let refused = Pending::Refused(Delivery::Failed {
                disposition: Disposition::Unavailable,
                reason: FailureReason::BrokerUnavailable,
                message: broken.clone(),
            });
            return Box::pin(std::future::ready(refused));
        }
        Box::pin(Publisher::send(&self.lease, message, queue_wait))
    }
}

impl Sink for Transactional {
    fn profile(&self) -> &'static Profile {
        &KAFKA
    }

    fn check(&self, message: &Message) -> std::result::Result<(), Rejected> {
        self.publisher.check(message)
    }

    /// Begins the batch's transaction on the current producer.
    /// Begins the batch's transaction ([`Transactional::begin`]).
    fn channel(&self) -> BoxFuture<'_, Arc<dyn Channel>> {
        let channel: Arc<dyn Channel> = self.begin();
        Box::pin(std::future::ready(channel))
    }

    fn destination_exists<'a>(
        &'a self,
        destination: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Option<bool>> {
        self.publisher.destination_exists(destination, timeout)
    }

    fn probe(&self, timeout: Duration) -> BoxFuture<'_, std::result::Result<(), String>> {
        Sink::probe(&self.publisher, timeout)
    }

    fn unavailable_since(&self, since: Instant) -> bool {
        self.publisher.unavailable_since(since)
    }

    fn check_reachable(&self, timeout: Duration) -> BoxFuture<'_, Result<()>> {
        Sink::check_reachable(&self.publisher, timeout)
    }

    /// A fatal error ends the producer; the next one starts afresh.
    fn replace_if_fatal(&self) -> Result<Option<String>> {
        let replaced = Sink::replace_if_fatal(&self.publisher)?;
        if replaced.is_some() {
            self.state().ready = None;
        }
        Ok(replaced)
    }

    fn reconnect(&self, generation: u64) -> Result<bool> {
        let replaced = self.publisher.replace(generation)?;
        if replaced {
            self.state().ready = None;
        }
        Ok(replaced)
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, std::result::Result<(), String>> {
        Sink::flush(&self.publisher, timeout)
    }
}

/// At start-up: whether the cluster at `brokers` can commit a transaction
/// holding a record, tried with a producer of its own (a fresh
/// `transactional.id`, so no relay is fenced). Creates the checkpoint topic
/// (compacted) when it is missing.
pub async fn probe_transactions(
    brokers: &str,
    options: &[KafkaOption],
    checkpoint_topic: &str,
    timeout: Duration,
    transaction_timeout: Duration,
) -> Result<()> {
    let refused = |reason: String| Error::KafkaTransactions {
        brokers: brokers.to_owned(),
        reason,
    };
    super::admin::ensure_checkpoint_topic(brokers, options, checkpoint_topic, timeout)
        .await
        .map_err(refused)?;
    let id = format!("outbox-relay-probe-{:016x}", fastrand::u64(..));
    let probe = Publisher::new(
        brokers,
        &transactional_options(options, &id, transaction_timeout),
        super::RecordTimestamp::SendTime,
    )?;
    let producer = probe.lease().producer().clone();
    let topic = checkpoint_topic.to_owned();
    tokio::task::spawn_blocking(move || {
        producer.init_transactions(timeout)?;
        producer.begin_transaction()?;
        let record = FutureRecord::<[u8], [u8]>::to(&topic)
            .key(b"outbox-relay-probe")
            .payload(b"{}");
        producer.send_result(record).map_err(|(error, _)| error)?;
        producer.commit_transaction(timeout)
    })
    .await
    .map_err(|e| refused(e.to_string()))?
    .map_err(|e| refused(e.to_string()))
}
