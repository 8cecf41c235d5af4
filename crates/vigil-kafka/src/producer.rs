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
//! producer's [`LatencyHistogram`] ([`AckedProducer::ack_latency`]). The
//! instant travels with the message as its delivery opaque, encoded as
//! nanoseconds since a base instant of the producer (no allocation).
//!
//! Dead letters ([`AckedProducer::send_dead_letter`]) must never stop the
//! worker: a send refused for a transient reason (queue full, timeouts,
//! broker transport) is retried with backoff, a bounded number of times
//! (counted in `vigil_kafka_produce_retries_total`); a message whose
//! delivery fails is not an error of [`AckedProducer::flush`] but is kept,
//! whole, for the caller ([`AckedProducer::take_undelivered`]), which
//! retries it or stores it elsewhere before it commits past it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// Delivery counters and acknowledgement latencies, updated by
/// librdkafka's delivery reports.
#[derive(Debug)]
pub struct DeliveryTracker {
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Dead letters whose delivery failed, kept for the caller.
    undelivered: Mutex<Vec<Undelivered>>,
    /// Instant that timed sends are encoded against (see [`Self::opaque`]).
    base: Instant,
    ack_latency: Arc<LatencyHistogram>,
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
        let now = Instant::now();
        DeliveryTracker {
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
            undelivered: Mutex::new(Vec::new()),
            // A day before creation, so that instants taken shortly before
            // the producer existed still encode.
            base: now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now),
            ack_latency,
        }
    }

    /// The delivery opaque of a message timed from `since`: 1 + nanoseconds
    /// since `base`; 0 (not timed) when it does not fit.
    fn opaque(&self, since: Instant) -> usize {
        since
            .checked_duration_since(self.base)
            .and_then(|d| usize::try_from(d.as_nanos()).ok())
            .and_then(|n| n.checked_add(1))
            .filter(|o| *o != KEEP_ON_FAILURE)
            .unwrap_or(0)
    }

    /// The instant a delivery opaque encodes (`None` for untimed messages).
    fn sent_at(&self, opaque: usize) -> Option<Instant> {
        if opaque == KEEP_ON_FAILURE {
            return None;
        }
        let n = opaque.checked_sub(1)?;
        self.base
            .checked_add(Duration::from_nanos(u64::try_from(n).ok()?))
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
    /// 0 for untimed messages, else when the message was handed over (see
    /// `DeliveryTracker::opaque`).
    type DeliveryOpaque = usize;

    fn delivery(&self, r: &DeliveryResult<'_>, opaque: usize) {
        match r {
            Ok(m) => {
                self.tracker.acked.fetch_add(1, Ordering::Relaxed);
                if let Some(sent) = self.tracker.sent_at(opaque) {
                    let waited = sent.elapsed();
                    self.tracker.ack_latency.record(waited);
                    metrics::histogram!(metric_names::ACK_LATENCY, "topic" => m.topic().to_string())
                        .record(waited.as_secs_f64());
                }
            }
            Err((e, m)) if opaque == KEEP_ON_FAILURE => {
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
                if let Ok(mut first) = self.tracker.first_error.lock() {
                    first.get_or_insert_with(|| format!("{} (topic {})", e, m.topic()));
                }
            }
        }
    }
}

/// One header of an outgoing message.
pub type HeaderPair<'a> = (&'a str, &'a [u8]);

/// Delivery opaque of dead letters: never a timed opaque (see
/// [`DeliveryTracker::opaque`]); a failed delivery is kept, not counted
/// as a flush error.
const KEEP_ON_FAILURE: usize = usize::MAX;

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
/// the module docs.
pub struct AckedProducer {
    producer: ThreadedProducer<TrackingContext, NoCustomPartitioner>,
    tracker: Arc<DeliveryTracker>,
    failed_seen: u64,
    sent: u64,
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
            producer,
            tracker,
            failed_seen: 0,
            sent: 0,
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
        self.send_with_opaque(topic, key, payload, headers, 0)
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
        let opaque = self.tracker.opaque(since);
        self.send_with_opaque(topic, key, payload, headers, opaque)
    }

    /// Queues one dead letter. A send refused for a transient reason
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
    ) -> Result<()> {
        let mut wait = DEAD_LETTER_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.send_with_opaque(topic, key, payload, headers, KEEP_ON_FAILURE) {
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

    /// Sends a kept dead letter again (as [`Self::send_dead_letter`]).
    pub fn resend(&mut self, u: &Undelivered) -> Result<()> {
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
        opaque: usize,
    ) -> Result<()> {
        let mut hs = OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, opaque).payload(payload);
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
                    self.sent += 1;
                    return Ok(());
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
                    return Err(Error::TooLarge {
                        topic: topic.to_string(),
                        bytes: payload.len(),
                    })
                }
                Err((e, _)) => {
                    return Err(Error::Kafka {
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
        self.sent
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
        let failed = self.tracker.failed();
        if failed > self.failed_seen {
            let n = failed - self.failed_seen;
            self.failed_seen = failed;
            let first = self
                .tracker
                .first_error
                .lock()
                .ok()
                .and_then(|mut f| f.take())
                .unwrap_or_else(|| "unknown".into());
            return Err(Error::Delivery { failed: n, first });
        }
        Ok(())
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

    #[test]
    fn delivery_opaques_encode_instants_and_zero_is_untimed() {
        let t = DeliveryTracker::default();
        assert_eq!(t.sent_at(0), None);
        let now = Instant::now();
        let o = t.opaque(now);
        assert_ne!(o, 0);
        assert_eq!(t.sent_at(o), Some(now));
        // Before the base: not timed rather than wrong.
        let long_ago = t.base.checked_sub(Duration::from_secs(1));
        if let Some(i) = long_ago {
            assert_eq!(t.opaque(i), 0);
        }
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
