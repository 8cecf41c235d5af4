//! The acknowledged producer: alerts, dead letters and simulated telemetry
//! go out through one idempotent librdkafka producer, and
//! [`AckedProducer::flush`] tells whether every message sent since the last
//! flush was acknowledged by the broker. The worker commits its input
//! offsets only after such a flush succeeded.
//!
//! Sending never blocks the caller forever and never drops: when
//! librdkafka's queue is full, `send` serves delivery reports and retries
//! (counted in `vigil_kafka_produce_retries_total`) until `queue_timeout`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, NoCustomPartitioner, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientContext, Message};

use crate::config::{KafkaSettings, Role};
use crate::error::{Error, Result};
use crate::metric_names;

/// Delivery counters, updated by librdkafka's delivery reports.
#[derive(Debug, Default)]
pub struct DeliveryTracker {
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
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
}

/// The producer's librdkafka context: counts deliveries, logs client
/// errors through `tracing`.
#[derive(Debug, Clone, Default)]
pub struct TrackingContext {
    tracker: Arc<DeliveryTracker>,
}

impl ClientContext for TrackingContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::log_client(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka producer error");
    }
}

impl ProducerContext for TrackingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => {
                self.tracker.acked.fetch_add(1, Ordering::Relaxed);
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
        let ctx = TrackingContext::default();
        let tracker = ctx.tracker.clone();
        let producer = settings
            .client_config(Role::Producer)?
            .create_with_context(ctx)
            .map_err(Error::kafka("creating the producer"))?;
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
        let mut hs = OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(payload);
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

    /// Messages queued since the producer was created.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Messages acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.tracker.acked()
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

    #[test]
    fn oversized_messages_are_a_typed_error() {
        let cluster = MockCluster::new(1).unwrap();
        let mut p = AckedProducer::new(&settings(&cluster), Duration::from_secs(5)).unwrap();
        let big = vec![0u8; 2 << 20];
        let e = p.send("t", None, &big, &[]).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    }
}
