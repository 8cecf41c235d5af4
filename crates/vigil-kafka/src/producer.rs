//! The acknowledged producer: alerts, dead letters and simulated telemetry
//! go out through one idempotent librdkafka producer, and
//! [`AckedProducer::flush`] tells whether every message sent since the last
//! flush was acknowledged by the broker. The worker commits its input
//! offsets only after such a flush succeeded.
//!
//! Sending never blocks the caller forever and never drops: when
//! librdkafka's queue is full, `send` serves delivery reports and retries
//! (counted in `vigil_kafka_produce_retries_total`) until `queue_timeout`.
//!
//! [`AckedProducer::send_timed`] also measures how long the broker took to
//! acknowledge a message, from an instant the caller gives (the worker
//! gives the moment the pipeline emitted the alert): the delivery report
//! records it in `vigil_kafka_produce_ack_latency_seconds` and in the
//! producer's [`LatencyHistogram`] ([`AckedProducer::ack_latency`]).
//!
//! Every message gets a sequence number, its delivery opaque (no
//! allocation), and a slot in the producer's ledger (the instant it is
//! timed from, whether a failed delivery is kept) until librdkafka settles
//! it. [`AckedProducer::mark`] and [`AckedProducer::flush_to`] wait for the
//! messages sent before a mark only, while other threads go on sending
//! through clones of the producer (they share the librdkafka client and the
//! ledger): the worker publishes a flush on one thread while its member
//! sends the next flush's alerts.
//!
//! Dead letters ([`AckedProducer::send_dead_letter`]) must never stop the
//! worker: a send refused for a transient reason (queue full, timeouts,
//! broker transport) is retried with backoff, a bounded number of times
//! (counted in `vigil_kafka_produce_retries_total`); a message whose
//! delivery fails is not an error of [`AckedProducer::flush`] but is kept,
//! whole, for the caller ([`AckedProducer::take_undelivered`]), which
//! retries it or stores it elsewhere before it commits past it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, NoCustomPartitioner, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientContext, Message};

use crate::config::{create_client, KafkaSettings, Redactor, Role};
use crate::error::{Error, Result};
use crate::latency::LatencyHistogram;
use crate::metric_names;

/// Delivery counters, the ledger of unsettled messages and the
/// acknowledgement latencies, updated by librdkafka's delivery reports.
#[derive(Debug)]
pub struct DeliveryTracker {
    acked: AtomicU64,
    failed: AtomicU64,
    /// Messages queued (handed to librdkafka).
    sent: AtomicU64,
    /// Failed messages not reported by a flush yet: sequence number and
    /// error.
    failures: Mutex<Vec<(u64, String)>>,
    /// Dead letters whose delivery failed, kept for the caller.
    undelivered: Mutex<Vec<Undelivered>>,
    ledger: Mutex<Ledger>,
    /// Notified when the ledger's oldest unsettled message settles.
    settled: Condvar,
    ack_latency: Arc<LatencyHistogram>,
}

/// The messages not settled yet, by sequence number: `slots[i]` is
/// message `base + i`; every message before `base` is settled.
#[derive(Debug, Default)]
struct Ledger {
    base: u64,
    slots: VecDeque<Slot>,
}

/// One message of the ledger.
#[derive(Debug, Clone, Copy)]
struct Slot {
    settled: bool,
    /// The instant its acknowledgement latency is measured from.
    since: Option<Instant>,
    /// A failed delivery is kept for [`AckedProducer::take_undelivered`]
    /// (dead letters), not counted as a flush error.
    keep: bool,
}

impl Default for DeliveryTracker {
    fn default() -> Self {
        DeliveryTracker::new(Arc::default())
    }
}

impl DeliveryTracker {
    /// Messages acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Messages that failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// A tracker that records acknowledgement latencies into `ack_latency`.
    fn new(ack_latency: Arc<LatencyHistogram>) -> DeliveryTracker {
        DeliveryTracker {
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            failures: Mutex::new(Vec::new()),
            undelivered: Mutex::new(Vec::new()),
            ledger: Mutex::new(Ledger::default()),
            settled: Condvar::new(),
            ack_latency,
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters a message into the ledger; returns its sequence number.
    fn reserve(&self, since: Option<Instant>, keep: bool) -> u64 {
        let mut l = self.ledger();
        let seq = l.base + l.slots.len() as u64;
        l.slots.push_back(Slot {
            settled: false,
            since,
            keep,
        });
        seq
    }

    /// Message `seq`'s slot, if it is not settled yet.
    fn slot(&self, seq: u64) -> Option<Slot> {
        let l = self.ledger();
        let i = usize::try_from(seq.checked_sub(l.base)?).ok()?;
        l.slots.get(i).copied().filter(|s| !s.settled)
    }

    /// Settles message `seq` (delivered, failed, or never queued) and
    /// returns its slot (`None`: not in the ledger).
    fn settle(&self, seq: u64) -> Option<Slot> {
        let mut l = self.ledger();
        let i = usize::try_from(seq.checked_sub(l.base)?).ok()?;
        let slot = l.slots.get_mut(i)?;
        if slot.settled {
            return None;
        }
        slot.settled = true;
        let out = *slot;
        let mut advanced = false;
        while l.slots.front().is_some_and(|s| s.settled) {
            l.slots.pop_front();
            l.base += 1;
            advanced = true;
        }
        drop(l);
        if advanced {
            self.settled.notify_all();
        }
        Some(out)
    }

    /// The sequence number the next message gets.
    fn next_seq(&self) -> u64 {
        let l = self.ledger();
        l.base + l.slots.len() as u64
    }

    /// Takes the unreported failures of the messages `mine` picks.
    fn take_failures(&self, mine: impl Fn(u64) -> bool) -> Vec<(u64, String)> {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (picked, rest) = std::mem::take(&mut *f)
            .into_iter()
            .partition(|(seq, _)| mine(*seq));
        *f = rest;
        picked
    }

    /// Waits until each message of `seqs` is settled; `Err` with the
    /// number still unsettled after `timeout`.
    fn wait_each(&self, seqs: &[u64], timeout: Duration) -> std::result::Result<(), u64> {
        self.wait_until(timeout, |l| {
            seqs.iter().filter(|&&q| l.is_open(q)).count() as u64
        })
    }

    /// Waits until every message before `mark` is settled; `Err` with the
    /// number still unsettled after `timeout`.
    fn wait_settled(&self, mark: u64, timeout: Duration) -> std::result::Result<(), u64> {
        self.wait_until(timeout, |l| l.open_before(mark))
    }

    /// Waits until `open` (messages of interest still unsettled) is 0;
    /// `Err` with its count after `timeout`. The condvar wakes when the
    /// oldest message settles; a later one settling does not notify, so
    /// the wait is in short slices.
    fn wait_until(
        &self,
        timeout: Duration,
        open: impl Fn(&Ledger) -> u64,
    ) -> std::result::Result<(), u64> {
        let deadline = Instant::now() + timeout;
        let mut l = self.ledger();
        loop {
            let n = open(&l);
            if n == 0 {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(n);
            }
            l = self
                .settled
                .wait_timeout(l, left.min(Duration::from_millis(10)))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

impl Ledger {
    /// Whether message `seq` is in the ledger and not settled.
    fn is_open(&self, seq: u64) -> bool {
        seq.checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.slots.get(i))
            .is_some_and(|s| !s.settled)
    }

    /// Messages before `mark` not settled yet (0 at once when every
    /// message before it is).
    fn open_before(&self, mark: u64) -> u64 {
        if self.base >= mark {
            return 0;
        }
        let pending = (mark - self.base).min(self.slots.len() as u64);
        self.slots
            .iter()
            .take(pending as usize)
            .filter(|s| !s.settled)
            .count() as u64
    }
}

/// The producer's librdkafka context: counts deliveries, logs client
/// errors through `tracing`.
#[derive(Debug, Clone, Default)]
pub struct TrackingContext {
    tracker: Arc<DeliveryTracker>,
    /// Cuts the client's secret values out of librdkafka's log lines.
    redactor: Redactor,
}

impl ClientContext for TrackingContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::log_client(level, fac, &self.redactor.text(log_message));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let error = self.redactor.kafka_error(error);
        tracing::warn!(error = %error, reason = %self.redactor.text(reason), "kafka producer error");
    }
}

impl ProducerContext for TrackingContext {
    /// The message's sequence number in the producer's ledger.
    type DeliveryOpaque = usize;

    fn delivery(&self, r: &DeliveryResult<'_>, opaque: usize) {
        let seq = opaque as u64;
        let slot = self.tracker.slot(seq);
        let keep = slot.is_some_and(|s| s.keep);
        match r {
            Ok(m) => {
                self.tracker.acked.fetch_add(1, Ordering::Relaxed);
                if let Some(sent) = slot.and_then(|s| s.since) {
                    let waited = sent.elapsed();
                    self.tracker.ack_latency.record(waited);
                    metrics::histogram!(metric_names::ACK_LATENCY, "topic" => m.topic().to_string())
                        .record(waited.as_secs_f64());
                }
            }
            Err((e, m)) if keep => {
                metrics::counter!(metric_names::PRODUCE_FAILURES, "topic" => m.topic().to_string())
                    .increment(1);
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                let u = Undelivered {
                    topic: m.topic().to_string(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                    error: e.to_string(),
                    transient: e.rdkafka_error_code().is_some_and(is_transient),
                };
                if let Ok(mut kept) = self.tracker.undelivered.lock() {
                    kept.push(u);
                }
            }
            Err((e, m)) => {
                self.tracker.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(metric_names::PRODUCE_FAILURES, "topic" => m.topic().to_string())
                    .increment(1);
                if let Ok(mut f) = self.tracker.failures.lock() {
                    f.push((seq, format!("{} (topic {})", e, m.topic())));
                }
            }
        }
        // Settled last: whoever waits for it then sees its failure.
        self.tracker.settle(seq);
    }
}

/// One header of an outgoing message.
pub type HeaderPair<'a> = (&'a str, &'a [u8]);

/// Attempts of one dead-letter send refused for a transient reason.
pub const DEAD_LETTER_SEND_ATTEMPTS: u32 = 4;
/// Wait before the first retry of a dead-letter send; doubled each time.
pub const DEAD_LETTER_BACKOFF: Duration = Duration::from_millis(100);

/// Errors that may pass if the same message is sent again: a full queue,
/// timeouts, transport failures, leader elections, too few replicas.
pub fn is_transient(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::QueueFull
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::PreferredLeaderNotAvailable
            | RDKafkaErrorCode::NotEnoughReplicas
            | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
            | RDKafkaErrorCode::KafkaStorageError
    )
}

/// A dead letter the broker did not acknowledge, whole, as it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    /// Its topic.
    pub topic: String,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub payload: Vec<u8>,
    /// Its headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Why it failed.
    pub error: String,
    /// Whether sending it again may succeed ([`is_transient`]).
    pub transient: bool,
}

impl Undelivered {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// An idempotent producer whose deliveries are checked at each flush. See
/// the module docs. Clones share the client and the ledger.
#[derive(Clone)]
pub struct AckedProducer {
    producer: Arc<ThreadedProducer<TrackingContext, NoCustomPartitioner>>,
    tracker: Arc<DeliveryTracker>,
    queue_timeout: Duration,
}

impl AckedProducer {
    /// A producer for `settings` (producer role: idempotent, acks=all,
    /// zstd). `queue_timeout` bounds how long `send` waits for room in a
    /// full queue.
    pub fn new(settings: &KafkaSettings, queue_timeout: Duration) -> Result<AckedProducer> {
        AckedProducer::with_ack_latency(settings, queue_timeout, Arc::default())
    }

    /// Like [`AckedProducer::new`], recording the acknowledgement latency
    /// of [`AckedProducer::send_timed`] messages into `ack_latency` (which
    /// the caller may read while the producer runs).
    pub fn with_ack_latency(
        settings: &KafkaSettings,
        queue_timeout: Duration,
        ack_latency: Arc<LatencyHistogram>,
    ) -> Result<AckedProducer> {
        let config = settings.client_config(Role::Producer)?;
        let ctx = TrackingContext {
            tracker: Arc::new(DeliveryTracker::new(ack_latency)),
            redactor: Redactor::of(&config),
        };
        let tracker = ctx.tracker.clone();
        let producer = create_client(&config, ctx, "producer")?;
        Ok(AckedProducer {
            producer: Arc::new(producer),
            tracker,
            queue_timeout,
        })
    }

    /// Queues one message. Retries while librdkafka's queue is full, up to
    /// the queue timeout.
    pub fn send(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[HeaderPair<'_>],
    ) -> Result<()> {
        self.send_with_opaque(topic, key, payload, headers, None, false)
            .map(drop)
    }

    /// Like [`AckedProducer::send`], and when the broker acknowledges the
    /// message, records the time from `since` to the acknowledgement (see
    /// the module docs). Failed deliveries record nothing.
    pub fn send_timed(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[HeaderPair<'_>],
        since: Instant,
    ) -> Result<()> {
        self.send_with_opaque(topic, key, payload, headers, Some(since), false)
            .map(drop)
    }

    /// Queues one dead letter and returns its sequence number (see
    /// [`Self::flush_each`]). A send refused for a transient reason
    /// ([`is_transient`], after the queue-full wait of `send`) is tried
    /// again after [`DEAD_LETTER_BACKOFF`], doubling, up to
    /// [`DEAD_LETTER_SEND_ATTEMPTS`] attempts in all. If its delivery
    /// fails later, the message is kept for [`Self::take_undelivered`]
    /// instead of failing [`Self::flush`]. An error here means the message
    /// was not queued: the caller keeps the dead letter some other way.
    pub fn send_dead_letter(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[HeaderPair<'_>],
    ) -> Result<u64> {
        let mut wait = DEAD_LETTER_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.send_with_opaque(topic, key, payload, headers, None, true) {
                Err(Error::Kafka { source, .. })
                    if attempt < DEAD_LETTER_SEND_ATTEMPTS
                        && source.rdkafka_error_code().is_some_and(is_transient) =>
                {
                    tracing::warn!(topic, attempt, error = %source, "dead letter not queued; retrying");
                    metrics::counter!(metric_names::PRODUCE_RETRIES, "topic" => topic.to_string())
                        .increment(1);
                    // Serves delivery reports while it waits.
                    self.producer.poll(wait);
                    wait *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends a kept dead letter again (as [`Self::send_dead_letter`]);
    /// returns its sequence number (see [`Self::flush_each`]).
    pub fn resend(&mut self, u: &Undelivered) -> Result<u64> {
        let headers: Vec<HeaderPair<'_>> = u
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        self.send_dead_letter(&u.topic, u.key.as_deref(), &u.payload, &headers)
    }

    /// The dead letters whose delivery failed since the last call (see
    /// [`Self::send_dead_letter`]). Complete after a [`Self::flush`].
    pub fn take_undelivered(&mut self) -> Vec<Undelivered> {
        self.tracker
            .undelivered
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    fn send_with_opaque(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[HeaderPair<'_>],
        since: Option<Instant>,
        keep: bool,
    ) -> Result<u64> {
        let mut hs = OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let seq = self.tracker.reserve(since, keep);
        // A message that is not queued settles at once (nothing waits for
        // its delivery report).
        let unqueued = |e: Error| {
            self.tracker.settle(seq);
            Err(e)
        };
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, seq as usize).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if !headers.is_empty() {
            record = record.headers(hs);
        }
        let started = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.tracker.sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(seq);
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if started.elapsed() < self.queue_timeout =>
                {
                    metrics::counter!(metric_names::PRODUCE_RETRIES, "topic" => topic.to_string())
                        .increment(1);
                    record = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                    return unqueued(Error::TooLarge {
                        topic: topic.to_string(),
                        bytes: payload.len(),
                    })
                }
                Err((e, _)) => {
                    return unqueued(Error::Kafka {
                        context: format!("producing to {topic}"),
                        source: e,
                    })
                }
            }
        }
    }

    /// Connects and reads the metadata of `topics` now, so that the first
    /// message to each does not wait for the connection and the topic's
    /// leader lookup.
    pub fn prepare(&self, topics: &[&str], timeout: Duration) -> Result<()> {
        for t in topics {
            self.producer
                .client()
                .fetch_metadata(Some(t), timeout)
                .map_err(Error::kafka(format!("reading metadata of {t}")))?;
        }
        Ok(())
    }

    /// Messages queued since the producer was created.
    pub fn sent(&self) -> u64 {
        self.tracker.sent.load(Ordering::Relaxed)
    }

    /// A mark after every message sent so far (through this producer or
    /// a clone), for [`AckedProducer::flush_to`].
    pub fn mark(&self) -> u64 {
        self.tracker.next_seq()
    }

    /// Waits until every message sent before `mark` is acknowledged (or
    /// failed), ignoring those sent after it, then reports failures since
    /// the previous flush as an error (as [`AckedProducer::flush`]).
    pub fn flush_to(&mut self, mark: u64, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        if let Err(in_flight) = self.tracker.wait_settled(mark, timeout) {
            return Err(Error::FlushTimeout {
                in_flight: i32::try_from(in_flight).unwrap_or(i32::MAX),
                waited: started.elapsed(),
            });
        }
        self.failures(|seq| seq < mark)
    }

    /// Waits until each message of `seqs` (sequence numbers that
    /// [`Self::send_dead_letter`] or [`Self::resend`] returned) is
    /// acknowledged or failed, ignoring every other.
    pub fn flush_each(&mut self, seqs: &[u64], timeout: Duration) -> Result<()> {
        let started = Instant::now();
        if let Err(in_flight) = self.tracker.wait_each(seqs, timeout) {
            return Err(Error::FlushTimeout {
                in_flight: i32::try_from(in_flight).unwrap_or(i32::MAX),
                waited: started.elapsed(),
            });
        }
        self.failures(|seq| seqs.contains(&seq))
    }

    /// Messages acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.tracker.acked()
    }

    /// The acknowledgement latencies of timed sends so far.
    pub fn ack_latency(&self) -> Arc<LatencyHistogram> {
        self.tracker.ack_latency.clone()
    }

    /// Waits until every queued message is acknowledged (or failed), then
    /// reports failures since the previous flush as an error.
    pub fn flush(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        if let Err(e) = self.producer.flush(timeout) {
            return match e {
                KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut) => {
                    Err(Error::FlushTimeout {
                        in_flight: self.producer.in_flight_count(),
                        waited: started.elapsed(),
                    })
                }
                e => Err(Error::Kafka {
                    context: "flushing the producer".into(),
                    source: e,
                }),
            };
        }
        self.failures(|_| true)
    }

    /// The delivery failures of the messages `mine` picks that no flush
    /// reported yet, as an error (each is reported once; the others wait
    /// for the flush they belong to).
    fn failures(&mut self, mine: impl Fn(u64) -> bool) -> Result<()> {
        let picked = self.tracker.take_failures(mine);
        match picked.first() {
            None => Ok(()),
            Some((_, first)) => Err(Error::Delivery {
                failed: picked.len() as u64,
                first: first.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::RDKafkaRespErr;

    use super::*;

    fn settings(
        cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    ) -> KafkaSettings {
        let mut s = KafkaSettings {
            brokers: cluster.bootstrap_servers(),
            ..KafkaSettings::default()
        };
        // Bound retries below the default five minutes, but leave a loaded
        // CI machine (2 cores, other tests running) ample time to deliver:
        // a 1 s bound made the first, healthy send time out there. The
        // failure case below uses a non-retriable error, which fails at once.
        s.producer_properties
            .insert("message.timeout.ms".into(), "30000".into());
        s
    }

    #[test]
    fn flush_reports_acks_and_failures() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("alerts", 1, 1).unwrap();
        let mut p = AckedProducer::new(&settings(&cluster), Duration::from_secs(5)).unwrap();
        p.send("alerts", Some(b"fp"), b"{}", &[("h", b"v")])
            .unwrap();
        p.flush(Duration::from_secs(40)).unwrap();
        assert_eq!((p.sent(), p.acked()), (1, 1));

        // Every produce request now fails: the flush must say so.
        cluster.request_errors(
            rdkafka::types::RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 64],
        );
        p.send("alerts", Some(b"fp"), b"{}", &[]).unwrap();
        let e = p.flush(Duration::from_secs(40)).unwrap_err();
        assert!(matches!(e, Error::Delivery { failed: 1, .. }), "{e}");
        // Failures are reported once, by the flush that saw them.
        p.flush(Duration::from_secs(10)).unwrap();
    }

    /// A full queue is backpressure, not an error: with room for two
    /// messages and a slow broker, fifty sends all succeed and are all
    /// acknowledged.
    #[test]
    fn a_full_queue_makes_sends_wait_not_fail() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("alerts", 1, 1).unwrap();
        cluster
            .broker_round_trip_time(1, Duration::from_millis(20))
            .unwrap();
        let mut s = settings(&cluster);
        s.producer_properties
            .insert("queue.buffering.max.messages".into(), "2".into());
        let mut p = AckedProducer::new(&s, Duration::from_secs(30)).unwrap();
        for i in 0..50u8 {
            p.send("alerts", None, &[i], &[]).unwrap();
        }
        p.flush(Duration::from_secs(40)).unwrap();
        assert_eq!((p.sent(), p.acked()), (50, 50));
    }

    /// Vigil's producer queue bounds apply unless the user sets them.
    #[test]
    fn the_producer_queue_is_bounded_by_default() {
        let mut s = KafkaSettings::default();
        let c = s.client_config(Role::Producer).unwrap();
        assert_eq!(c.get("queue.buffering.max.kbytes"), Some("65536"));
        assert_eq!(c.get("queue.buffering.max.messages"), Some("100000"));
        s.producer_properties
            .insert("queue.buffering.max.kbytes".into(), "1024".into());
        let c = s.client_config(Role::Producer).unwrap();
        assert_eq!(c.get("queue.buffering.max.kbytes"), Some("1024"));
        assert_eq!(
            s.client_config(Role::Consumer)
                .unwrap()
                .get("queue.buffering.max.kbytes"),
            None
        );
    }

    #[test]
    fn timed_sends_record_their_ack_latency() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("alerts", 1, 1).unwrap();
        let hist = Arc::new(LatencyHistogram::default());
        let mut p = AckedProducer::with_ack_latency(
            &settings(&cluster),
            Duration::from_secs(5),
            hist.clone(),
        )
        .unwrap();
        p.prepare(&["alerts"], Duration::from_secs(10)).unwrap();
        // Untimed sends record nothing.
        p.send("alerts", None, b"{}", &[]).unwrap();
        let before = Instant::now();
        // An instant from before the producer existed still encodes.
        let earlier = before.checked_sub(Duration::from_millis(50)).unwrap();
        p.send_timed("alerts", None, b"{}", &[], earlier).unwrap();
        p.send_timed("alerts", Some(b"k"), b"{}", &[], Instant::now())
            .unwrap();
        p.flush(Duration::from_secs(40)).unwrap();
        let waited = before.elapsed();
        assert_eq!(p.acked(), 3);
        let s = p.ack_latency().summary().unwrap();
        assert_eq!(s.count, 2);
        assert!(s.max >= Duration::from_millis(50), "{s:?}");
        assert!(s.max <= waited + Duration::from_millis(51), "{s:?}");
    }

    /// The ledger: a mark waits for the messages before it, settled in
    /// any order, and for none after it.
    #[test]
    fn a_mark_waits_for_the_messages_before_it_only() {
        let t = DeliveryTracker::default();
        let seqs: Vec<u64> = (0..4).map(|_| t.reserve(None, false)).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        let mark = t.next_seq();
        let later = t.reserve(None, false);
        // Settled out of order: the mark is not reached while 0 is open.
        for s in [3, 1, 2] {
            assert!(t.settle(s).is_some());
        }
        assert_eq!(t.wait_settled(mark, Duration::from_millis(20)), Err(1));
        // Settling twice, or a number never given, changes nothing.
        assert!(t.settle(3).is_none());
        assert!(t.settle(99).is_none());
        let waiter = std::thread::scope(|sc| {
            let h = sc.spawn(|| t.wait_settled(mark, Duration::from_secs(30)));
            std::thread::sleep(Duration::from_millis(20));
            t.settle(0);
            h.join().unwrap()
        });
        // Message `later` is still open: it does not hold the mark.
        assert_eq!(waiter, Ok(()));
        assert!(t.slot(later).is_some());
        assert_eq!(
            t.wait_settled(t.next_seq(), Duration::from_millis(10)),
            Err(1)
        );
        t.settle(later);
        assert_eq!(t.wait_settled(t.next_seq(), Duration::ZERO), Ok(()));
        // Specific messages: only those are waited for.
        let (a, b) = (t.reserve(None, true), t.reserve(None, false));
        assert_eq!(t.wait_each(&[b], Duration::from_millis(10)), Err(1));
        t.settle(b);
        assert_eq!(t.wait_each(&[b, 2], Duration::ZERO), Ok(()));
        assert_eq!(t.wait_each(&[a, b], Duration::from_millis(10)), Err(1));
    }

    /// A failure is reported by the flush its message belongs to, once.
    #[test]
    fn failures_are_reported_by_the_flush_they_belong_to() {
        let t = DeliveryTracker::default();
        if let Ok(mut f) = t.failures.lock() {
            f.extend([(1, "one".to_string()), (7, "seven".to_string())]);
        }
        let before_mark = t.take_failures(|s| s < 5);
        assert_eq!(before_mark, [(1, "one".to_string())]);
        assert!(t.take_failures(|s| s < 5).is_empty());
        assert_eq!(t.take_failures(|_| true), [(7, "seven".to_string())]);
    }

    /// While a clone sends on, a flush to a mark returns with every
    /// message before the mark acknowledged (the ledger test above shows
    /// that later ones do not hold it).
    #[test]
    fn flush_to_a_mark_acknowledges_the_messages_before_it() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("alerts", 1, 1).unwrap();
        let mut p = AckedProducer::new(&settings(&cluster), Duration::from_secs(5)).unwrap();
        p.prepare(&["alerts"], Duration::from_secs(10)).unwrap();
        for i in 0..20u8 {
            p.send("alerts", None, &[i], &[]).unwrap();
        }
        let mark = p.mark();
        // The broker slows down: what the clone sends now is acknowledged
        // later than the flush needs.
        cluster
            .broker_round_trip_time(1, Duration::from_millis(300))
            .unwrap();
        let mut other = p.clone();
        for i in 0..20u8 {
            other.send("alerts", None, &[i], &[]).unwrap();
        }
        p.flush_to(mark, Duration::from_secs(40)).unwrap();
        assert!(p.acked() >= 20, "{} acknowledged", p.acked());
        other.flush(Duration::from_secs(40)).unwrap();
        assert_eq!((p.sent(), p.acked()), (40, 40));
    }

    #[test]
    fn failed_dead_letters_are_kept_whole_not_flush_errors() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("dlq", 1, 1).unwrap();
        cluster.create_topic("alerts", 1, 1).unwrap();
        let mut p = AckedProducer::new(&settings(&cluster), Duration::from_secs(5)).unwrap();
        p.prepare(&["dlq", "alerts"], Duration::from_secs(10))
            .unwrap();
        p.send_dead_letter("dlq", Some(b"a1"), b"ok", &[("vigil.reason", b"late")])
            .unwrap();
        p.flush(Duration::from_secs(40)).unwrap();
        assert!(p.take_undelivered().is_empty());

        cluster.request_errors(
            rdkafka::types::RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 64],
        );
        p.send_dead_letter("dlq", Some(b"a1"), b"lost?", &[("vigil.reason", b"late")])
            .unwrap();
        // Not an error of the flush: the caller gets the message back.
        p.flush(Duration::from_secs(40)).unwrap();
        let kept = p.take_undelivered();
        assert_eq!(kept.len(), 1);
        let u = &kept[0];
        assert_eq!(
            (u.topic.as_str(), u.key.as_deref(), u.payload.as_slice()),
            ("dlq", Some(&b"a1"[..]), &b"lost?"[..])
        );
        assert_eq!(u.header("vigil.reason"), Some(&b"late"[..]));
        assert!(!u.transient, "{}", u.error);
        assert!(p.take_undelivered().is_empty());
        // Other messages' failures still fail the flush.
        p.send("alerts", None, b"{}", &[]).unwrap();
        assert!(p.flush(Duration::from_secs(40)).is_err());
    }

    #[test]
    fn transient_errors_are_the_retriable_ones() {
        assert!(is_transient(RDKafkaErrorCode::QueueFull));
        assert!(is_transient(RDKafkaErrorCode::MessageTimedOut));
        assert!(!is_transient(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(!is_transient(RDKafkaErrorCode::TopicAuthorizationFailed));
    }

    #[test]
    fn oversized_messages_are_a_typed_error() {
        let cluster = MockCluster::new(1).unwrap();
        let mut p = AckedProducer::new(&settings(&cluster), Duration::from_secs(5)).unwrap();
        let big = vec![0u8; 2 << 20];
        let e = p.send("t", None, &big, &[]).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    }
}
