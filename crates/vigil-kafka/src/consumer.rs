//! The worker's consumer: a librdkafka consumer-group member whose
//! rebalance callback asks an [`AssignHook`] where each newly assigned
//! partition starts (the offset of its checkpoint) and hands the hook's
//! result to the processing loop as a [`PartitionEvent`].
//!
//! ```text
//!  poll() ──rebalance──▶ WorkerContext::rebalance
//!                          assign: hook.assign(topic, p) → (start offset, state)
//!                                  set the offset in the assignment, assign
//!                          revoke: unassign
//!                          both:   queue PartitionEvent for take_events()
//! ```
//!
//! Callbacks run on the thread that calls `poll`, so the loop that owns
//! the partitions' state sees every event right after the `poll` that
//! caused it, before it handles any record of a new assignment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::{create_client, KafkaSettings, Redactor, Role};
use crate::error::{Error, Result};

/// Decides where a newly assigned partition starts.
pub trait AssignHook: Send + Sync + 'static {
    /// What the processing loop receives with an assignment (for example
    /// the restored operator state, or the error that prevented it).
    type State: Send + 'static;

    /// Called inside the rebalance callback for each newly assigned
    /// partition. Returns the offset to start from (`None`: the group's
    /// committed offset, else the earliest) and the value handed to the
    /// processing loop. It MUST return quickly relative to
    /// `max.poll.interval.ms` and MUST NOT call the consumer.
    fn assign(&self, topic: &str, partition: i32) -> (Option<i64>, Self::State);
}

/// A change of the consumer's assignment, in the order it happened.
#[derive(Debug)]
pub enum PartitionEvent<S> {
    /// The partition is ours from `start_offset` on (`None`: committed
    /// offset or earliest).
    Assigned {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Where consumption starts.
        start_offset: Option<i64>,
        /// The hook's value.
        state: S,
    },
    /// The partition is no longer ours: its uncommitted work must be
    /// dropped (the next owner resumes from the last commit).
    Revoked {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// True when the assignment was lost (session timeout) rather
        /// than handed over.
        lost: bool,
    },
}

/// The consumer's librdkafka context. See the module docs.
pub struct WorkerContext<H: AssignHook> {
    hook: H,
    events: Mutex<Vec<PartitionEvent<H::State>>>,
    /// Set when `events` is not empty, so the loop checks a flag per poll
    /// instead of taking the lock.
    pending: AtomicBool,
    /// Cuts the client's secret values out of librdkafka's log lines.
    redactor: Redactor,
}

impl<H: AssignHook> WorkerContext<H> {
    /// A context around `hook`.
    pub fn new(hook: H) -> Self {
        WorkerContext {
            hook,
            events: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            redactor: Redactor::default(),
        }
    }

    /// The same context, cutting the secret values of `redactor` out of
    /// the client's log lines and errors.
    pub fn redacting(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// Takes the events queued since the last call (without locking when
    /// there are none).
    pub fn take_events(&self) -> Vec<PartitionEvent<H::State>> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        match self.events.lock() {
            Ok(mut e) => std::mem::take(&mut *e),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    fn push(&self, e: PartitionEvent<H::State>) {
        match self.events.lock() {
            Ok(mut v) => v.push(e),
            Err(poisoned) => poisoned.into_inner().push(e),
        }
        self.pending.store(true, Ordering::Release);
    }
}

/// Routes librdkafka's log lines to `tracing`.
pub(crate) fn log_client(level: RDKafkaLogLevel, fac: &str, msg: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{msg}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{msg}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", fac, "{msg}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{msg}"),
    }
}

impl<H: AssignHook> ClientContext for WorkerContext<H> {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        log_client(level, fac, &self.redactor.text(msg));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let error = self.redactor.kafka_error(error);
        tracing::warn!(error = %error, reason = %self.redactor.text(reason), "kafka consumer error");
    }

    /// librdkafka statistics (every `statistics.interval.ms`): the
    /// consumer lag of each partition this member fetches, from the high
    /// watermark and the group's committed offset.
    fn stats(&self, stats: rdkafka::Statistics) {
        for t in stats.topics.values() {
            for p in t.partitions.values() {
                // Partition -1 is librdkafka's internal UA partition;
                // negative lags mean "not known yet".
                if p.partition < 0 || !p.desired || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(crate::metric_names::CONSUMER_LAG, "partition" => p.partition.to_string())
                    .set(p.consumer_lag as f64);
            }
        }
    }
}

impl<H: AssignHook> ConsumerContext for WorkerContext<H> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                for (topic, partition) in parts {
                    let _span = tracing::info_span!("assign", %topic, partition).entered();
                    let (start, state) = self.hook.assign(&topic, partition);
                    if let Some(o) = start {
                        if let Err(e) =
                            tpl.set_partition_offset(&topic, partition, Offset::Offset(o))
                        {
                            tracing::error!(error = %e, "cannot set the start offset");
                        }
                    }
                    tracing::info!(start_offset = ?start, "partition assigned");
                    self.push(PartitionEvent::Assigned {
                        topic,
                        partition,
                        start_offset: start,
                        state,
                    });
                }
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                for (topic, partition) in parts {
                    tracing::info!(%topic, partition, lost, "partition revoked");
                    self.push(PartitionEvent::Revoked {
                        topic,
                        partition,
                        lost,
                    });
                }
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                // librdkafka asks the application to drop its assignment.
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "applying the rebalance failed");
        }
    }
}

/// Creates the worker's consumer for `settings` (consumer role) and
/// subscribes it to the telemetry topic.
pub fn subscribe<H: AssignHook>(
    settings: &KafkaSettings,
    hook: H,
) -> Result<BaseConsumer<WorkerContext<H>>> {
    let config = settings.client_config(Role::Consumer)?;
    tracing::info!(config = ?crate::config::redacted(&config), "consumer configuration");
    let context = WorkerContext::new(hook).redacting(Redactor::of(&config));
    let consumer: BaseConsumer<WorkerContext<H>> = create_client(&config, context, "consumer")?;
    consumer
        .subscribe(&[settings.telemetry_topic.as_str()])
        .map_err(Error::kafka(format!(
            "subscribing to {}",
            settings.telemetry_topic
        )))?;
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use rdkafka::mocking::MockCluster;
    use rdkafka::Message;

    use super::*;

    /// Starts partition 0 at offset 5, partition 1 where the group is.
    struct FixedStart;

    impl AssignHook for FixedStart {
        type State = &'static str;
        fn assign(&self, _topic: &str, partition: i32) -> (Option<i64>, &'static str) {
            if partition == 0 {
                (Some(5), "restored")
            } else {
                (None, "fresh")
            }
        }
    }

    #[test]
    fn assignment_starts_where_the_hook_says_and_is_reported() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 2, 1).unwrap();
        let settings = KafkaSettings {
            brokers: cluster.bootstrap_servers(),
            telemetry_topic: "t".into(),
            group_id: "g".into(),
            ..KafkaSettings::default()
        };
        crate::test_util::send_bytes(&settings, "t", 0, 10);

        let c = subscribe(&settings, FixedStart).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut first: Option<(i32, i64)> = None;
        let mut events = Vec::new();
        while first.is_none() && Instant::now() < deadline {
            let m = c.poll(Duration::from_millis(100));
            events.extend(c.context().take_events());
            if let Some(Ok(m)) = m {
                first = Some((m.partition(), m.offset()));
            }
        }
        let assigned: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                PartitionEvent::Assigned {
                    partition,
                    state,
                    start_offset,
                    ..
                } => Some((*partition, *state, *start_offset)),
                _ => None,
            })
            .collect();
        assert!(assigned.contains(&(0, "restored", Some(5))), "{assigned:?}");
        // Partition 0 holds all ten records; the hook started it at 5.
        assert_eq!(first, Some((0, 5)));
        assert!(assigned.contains(&(1, "fresh", None)), "{assigned:?}");
        assert!(c.context().take_events().is_empty());
    }
}
