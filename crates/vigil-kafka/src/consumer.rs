//! The worker's consumer: a librdkafka consumer-group member whose
//! rebalance callback asks an [`AssignHook`] where each newly assigned
//! partition starts (the offset of its checkpoint) and hands the hook's
//! result to the processing loop as a [`PartitionEvent`].
//!
//! ```text
//!  poll() ──rebalance──▶ WorkerContext::rebalance
//!                          assign: the group's committed offsets read (one request),
//!                                  hook.assign(topic, p, committed) → (start offset, state)
//!                                  set the offset in the assignment, assign
//!                          revoke: unassign (incremental under cooperative-sticky),
//!                                  lag gauge of the partition set to 0
//!                          error:  drop the whole assignment, reported as revoked
//!                          all:    queue PartitionEvent for take_events()
//!  Committer::commit(offsets) ──▶ commit thread: commit(Sync) ──▶ CommitOutcome for take()
//! ```
//!
//! Callbacks run on the thread that calls `poll`, so the loop that owns
//! the partitions' state sees every event right after the `poll` that
//! caused it, before it handles any record of a new assignment.
//!
//! Offset commits are asynchronous for the loop: a [`Committer`] thread
//! makes each commit synchronously and hands back the answer as a
//! [`CommitOutcome`], so a coordinator that is slow or away never stalls
//! processing. (librdkafka reports the result of an application's
//! `CommitMode::Async` commit only to an `offset_commit_cb`, which rdkafka's
//! event-based consumer does not set: such a result would be lost.) [`CommitFailure`] sorts a failed
//! commit into retriable (rebalance, coordinator, network) and fatal
//! (authorization, anything else) causes; see `docs/kafka.md`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::{create_client, KafkaSettings, Redactor, Role};
use crate::error::{Error, Result};
use crate::health::ConsumerHealth;

/// Decides where a newly assigned partition starts.
pub trait AssignHook: Send + Sync + 'static {
    /// What the processing loop receives with an assignment (for example
    /// the restored operator state, or the error that prevented it).
    type State: Send + 'static;

    /// Called inside the rebalance callback for each newly assigned
    /// partition, with the group's committed offset of the partition
    /// (`Committed::None`: the group has none; `Unknown`: it could not be
    /// read within [`COMMITTED_READ_TIMEOUT`]). Returns the offset to start
    /// from (`None`: the group's committed offset, else the earliest) and
    /// the value handed to the processing loop. It MUST return quickly
    /// relative to `max.poll.interval.ms` and MUST NOT call the consumer.
    fn assign(
        &self,
        topic: &str,
        partition: i32,
        committed: Committed,
    ) -> (Option<i64>, Self::State);

    /// Called inside the rebalance callback before `partitions` are
    /// revoked (`lost`: the assignment was lost, not handed over), before
    /// the rebalance may go on: the last moment this member may finish
    /// work on them (the worker waits here for a flush of theirs that is
    /// being published). It MUST return within `max.poll.interval.ms` and
    /// MUST NOT call the consumer.
    fn revoke(&self, topic: &str, partitions: &[i32], lost: bool) {
        let _ = (topic, partitions, lost);
    }
}

/// How long the rebalance callback waits for the group's committed
/// offsets of a new assignment before it hands the hook
/// [`Committed::Unknown`].
pub const COMMITTED_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The group's committed offset of a partition, as read when it was
/// assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The next offset to read, as committed.
    Offset(i64),
    /// The group has committed nothing for the partition.
    None,
    /// The coordinator did not answer in time (or refused): unknown.
    Unknown,
}

impl Committed {
    /// The committed offset, if known and there is one.
    pub fn offset(self) -> Option<i64> {
        match self {
            Committed::Offset(o) => Some(o),
            _ => None,
        }
    }
}

/// Reads the group's committed offsets of `tpl`'s partitions (one
/// request); every partition is [`Committed::Unknown`] when it fails.
fn read_committed<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
) -> impl Fn(&str, i32) -> Committed {
    let got = match consumer.committed_offsets(tpl.clone(), COMMITTED_READ_TIMEOUT) {
        Ok(got) => Some(got),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the group's committed offsets of the new assignment");
            None
        }
    };
    move |topic, partition| match &got {
        None => Committed::Unknown,
        Some(got) => match got.find_partition(topic, partition) {
            None => Committed::Unknown,
            Some(e) if e.error().is_err() => Committed::Unknown,
            Some(e) => match e.offset() {
                Offset::Offset(o) => Committed::Offset(o),
                _ => Committed::None,
            },
        },
    }
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

/// Why an offset commit failed, as a closed set (the `reason` label of
/// the worker's commit-failure counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitFailure {
    /// The group is rebalancing or this member's generation is gone
    /// (`REBALANCE_IN_PROGRESS`, `ILLEGAL_GENERATION`, `UNKNOWN_MEMBER_ID`,
    /// assignment lost, no group state yet). Retriable.
    Rebalance,
    /// The group coordinator is moving, loading or unknown. Retriable.
    Coordinator,
    /// The request did not get an answer in time or the connection
    /// failed. Retriable.
    Network,
    /// The member may not commit for this group or topic, or could not
    /// authenticate. Fatal: retrying does not help.
    Authorization,
    /// Anything else (fenced static member, topic gone, malformed
    /// commit, a fatal client error). Fatal.
    Other,
}

impl CommitFailure {
    /// Every cause.
    pub const ALL: [CommitFailure; 5] = [
        CommitFailure::Rebalance,
        CommitFailure::Coordinator,
        CommitFailure::Network,
        CommitFailure::Authorization,
        CommitFailure::Other,
    ];

    /// Sorts an error code of a failed commit.
    pub fn of(code: RDKafkaErrorCode) -> CommitFailure {
        use RDKafkaErrorCode as C;
        match code {
            C::RebalanceInProgress
            | C::IllegalGeneration
            | C::UnknownMemberId
            | C::AssignmentLost
            | C::State
            | C::StaleMemberEpoch
            | C::FencedMemberEpoch => CommitFailure::Rebalance,
            C::CoordinatorNotAvailable
            | C::NotCoordinator
            | C::CoordinatorLoadInProgress
            | C::WaitingForCoordinator => CommitFailure::Coordinator,
            C::RequestTimedOut
            | C::OperationTimedOut
            | C::TimedOutQueue
            | C::BrokerTransportFailure
            | C::NetworkException
            | C::AllBrokersDown => CommitFailure::Network,
            C::GroupAuthorizationFailed
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication => CommitFailure::Authorization,
            _ => CommitFailure::Other,
        }
    }

    /// Whether the same offsets may be committed again later: the cause
    /// passes by itself (a rebalance ends, a coordinator is elected, a
    /// connection comes back). Nothing is lost meanwhile: the checkpoint
    /// holds the offset, only the group's view (and the lag) lags.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            CommitFailure::Rebalance | CommitFailure::Coordinator | CommitFailure::Network
        )
    }

    /// The metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            CommitFailure::Rebalance => "rebalance",
            CommitFailure::Coordinator => "coordinator",
            CommitFailure::Network => "network",
            CommitFailure::Authorization => "authorization",
            CommitFailure::Other => "other",
        }
    }
}

/// One partition of a commit: topic, partition, the offset it carried
/// and its result (`Err`: the code of the request's or the partition's
/// error).
pub type PartitionCommit = (String, i32, Option<i64>, Result<(), RDKafkaErrorCode>);

/// The answer to one offset commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Each partition of the commit (see [`PartitionCommit`]).
    pub partitions: Vec<PartitionCommit>,
    /// The request's error, if the whole commit failed.
    pub error: Option<RDKafkaErrorCode>,
}

/// Commits offsets on a thread of its own. See the module docs.
pub struct Committer {
    requests: Option<mpsc::Sender<TopicPartitionList>>,
    answers: mpsc::Receiver<CommitOutcome>,
}

impl Committer {
    /// Starts the commit thread for `consumer` (which it keeps alive until
    /// the committer is dropped and its last commit returned).
    pub fn start<C: ConsumerContext + 'static>(
        consumer: Arc<BaseConsumer<C>>,
    ) -> Result<Committer> {
        let (requests, jobs) = mpsc::channel::<TopicPartitionList>();
        let (done, answers) = mpsc::channel();
        std::thread::Builder::new()
            .name("vigil-commit".into())
            .spawn(move || {
                for offsets in jobs {
                    let r = consumer.commit(&offsets, CommitMode::Sync);
                    if done.send(CommitOutcome::of(&offsets, r)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Kafka {
                context: format!("starting the commit thread: {e}"),
                source: KafkaError::Canceled,
            })?;
        Ok(Committer {
            requests: Some(requests),
            answers,
        })
    }

    /// Queues a commit of `offsets`; its answer comes from [`Committer::take`]
    /// or [`Committer::wait`]. False if the commit thread is gone.
    pub fn commit(&self, offsets: TopicPartitionList) -> bool {
        self.requests
            .as_ref()
            .is_some_and(|r| r.send(offsets).is_ok())
    }

    /// The answers that arrived since the last call, without waiting.
    pub fn take(&self) -> Vec<CommitOutcome> {
        self.answers.try_iter().collect()
    }

    /// Stops the commit thread: it finishes the commit it is making (its
    /// answer is dropped) and releases the consumer. Waits at most
    /// `timeout` for that; true if the thread ended, so that the caller's
    /// consumer handle is the last one (and its drop leaves the group).
    pub fn stop(&mut self, timeout: Duration) -> bool {
        self.requests = None;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.answers.recv_timeout(left) {
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    /// The next answer, waiting at most `timeout`.
    pub fn wait(&self, timeout: Duration) -> Option<CommitOutcome> {
        self.answers.recv_timeout(timeout).ok()
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Ends the thread after its current commit; not joined, so a
        // commit that hangs does not hold up the process.
        self.requests = None;
    }
}

impl CommitOutcome {
    /// The outcome of a commit of `offsets` that returned `result`.
    pub fn of(offsets: &TopicPartitionList, result: KafkaResult<()>) -> CommitOutcome {
        let error = match result {
            Ok(()) => None,
            Err(e) => Some(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
        };
        let partitions = offsets
            .elements()
            .iter()
            .map(|e| {
                let r = match error {
                    Some(code) => Err(code),
                    None => Ok(()),
                };
                (e.topic().to_string(), e.partition(), e.offset().to_raw(), r)
            })
            .collect();
        CommitOutcome { partitions, error }
    }
}

/// The consumer's librdkafka context. See the module docs.
pub struct WorkerContext<H: AssignHook> {
    hook: H,
    events: Mutex<Vec<PartitionEvent<H::State>>>,
    /// Set when `events` is not empty, so the loop checks a flag per poll
    /// instead of taking the lock.
    pending: AtomicBool,
    health: Arc<ConsumerHealth>,
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
            health: Arc::default(),
            redactor: Redactor::default(),
        }
    }

    /// Group membership, broker reachability and lag, as the callbacks
    /// last saw them (for the worker's readiness probe).
    pub fn health(&self) -> &Arc<ConsumerHealth> {
        &self.health
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

    /// Lets the hook finish its work on the partitions
    /// ([`AssignHook::revoke`], once per topic), then queues a `Revoked`
    /// event for each and zeroes their lag gauges.
    fn revoke(&self, parts: Vec<(String, i32)>, lost: bool) {
        let mut topics: Vec<&str> = parts.iter().map(|(t, _)| t.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        for topic in topics {
            let ps: Vec<i32> = parts
                .iter()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| *p)
                .collect();
            self.hook.revoke(topic, &ps, lost);
        }
        for (topic, partition) in parts {
            tracing::info!(%topic, partition, lost, "partition revoked");
            forget_lag(partition);
            self.push(PartitionEvent::Revoked {
                topic,
                partition,
                lost,
            });
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

/// Sets the lag gauge of a partition this member no longer consumes to 0.
/// The `metrics` facade cannot remove a series, and a frozen last value
/// would be counted twice once the next owner reports the partition: a
/// sum over workers (what autoscalers use) stays right with 0.
pub fn forget_lag(partition: i32) {
    metrics::gauge!(crate::metric_names::CONSUMER_LAG, "partition" => partition.to_string())
        .set(0.0);
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
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            self.health.mark_all_down();
        }
        let error = self.redactor.kafka_error(error);
        tracing::warn!(error = %error, reason = %self.redactor.text(reason), "kafka consumer error");
    }

    /// librdkafka statistics (every `statistics.interval.ms`): the
    /// consumer lag of each partition this member fetches, from the high
    /// watermark and the group's committed offset, and the facts the
    /// readiness probe reads ([`ConsumerHealth`]).
    fn stats(&self, stats: rdkafka::Statistics) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.health.record(crate::health::summarize(&stats), now_ms);
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
                self.health.mark_joined();
                let committed = read_committed(consumer, tpl);
                for (topic, partition) in parts {
                    let _span = tracing::info_span!("assign", %topic, partition).entered();
                    let c = committed(&topic, partition);
                    let (start, state) = self.hook.assign(&topic, partition, c);
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
                self.revoke(parts, consumer.assignment_lost());
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                // librdkafka asks the application to drop its whole
                // assignment (`assign(NULL)` in its API docs). Under a
                // cooperative protocol `unassign` is refused (`__STATE`):
                // the owned partitions are unassigned incrementally.
                let owned = consumer.assignment().unwrap_or_default();
                let revoked: Vec<(String, i32)> = owned
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                tracing::error!(error = ?other, partitions = revoked.len(), "rebalance error; dropping the assignment");
                self.revoke(revoked, true);
                if !cooperative {
                    consumer.unassign()
                } else if owned.count() > 0 {
                    consumer.incremental_unassign(&owned)
                } else {
                    Ok(())
                }
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "applying the rebalance failed");
        }
    }
}

/// Leaves the consumer group and closes `consumer`, within `timeout`.
///
/// What dropping a [`BaseConsumer`] does (the final revoke, the
/// LeaveGroup), but bounded: a broker that does not answer cannot hold a
/// stopping process past its termination grace period. When the close
/// does not finish in time the consumer is leaked, not destroyed (its
/// librdkafka threads end with the process), the group notices the member
/// left at its session timeout, and `false` is returned.
pub fn close<C: ConsumerContext>(consumer: BaseConsumer<C>, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    if let Err(e) = consumer.close_queue() {
        tracing::warn!(error = %e, "closing the consumer failed; destroying it");
        return true;
    }
    while !consumer.closed() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            std::mem::forget(consumer);
            return false;
        }
        // Serves the final revoke; any message still fetched is dropped.
        let _ = consumer.poll(left.min(Duration::from_millis(100)));
    }
    true
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

    /// Starts partition 0 at offset 5, partition 1 where the group is;
    /// hands on the group's committed offset it was given.
    struct FixedStart;

    impl AssignHook for FixedStart {
        type State = (&'static str, Committed);
        fn assign(
            &self,
            _topic: &str,
            partition: i32,
            committed: Committed,
        ) -> (Option<i64>, Self::State) {
            if partition == 0 {
                (Some(5), ("restored", committed))
            } else {
                (None, ("fresh", committed))
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
        crate::test_util::send_bytes(&settings, "t", 1, 4);
        // The group committed 3 on partition 1 before this member joined
        // (a simple commit, outside any generation).
        {
            let mut c = settings.client_config(Role::Consumer).unwrap();
            c.set("group.id", "g");
            let plain: BaseConsumer = c.create().unwrap();
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("t", 1, Offset::Offset(3)).unwrap();
            plain.commit(&tpl, CommitMode::Sync).unwrap();
        }

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
        // The hook saw the group's committed offsets.
        assert!(
            assigned.contains(&(0, ("restored", Committed::None), Some(5))),
            "{assigned:?}"
        );
        assert!(
            assigned.contains(&(1, ("fresh", Committed::Offset(3)), None)),
            "{assigned:?}"
        );
        // The hook started partition 0 at 5; partition 1 starts at 3.
        assert!(matches!(first, Some((0, 5)) | Some((1, 3))), "{first:?}");
        assert!(c.context().take_events().is_empty());
    }

    fn settings(
        cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    ) -> KafkaSettings {
        KafkaSettings {
            brokers: cluster.bootstrap_servers(),
            telemetry_topic: "t".into(),
            group_id: "g".into(),
            ..KafkaSettings::default()
        }
    }

    /// Polls until `done` holds for the events seen so far.
    fn poll_until(
        c: &BaseConsumer<WorkerContext<FixedStart>>,
        events: &mut Vec<PartitionEvent<(&'static str, Committed)>>,
        done: impl Fn(&[PartitionEvent<(&'static str, Committed)>]) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(events) {
            assert!(Instant::now() < deadline, "timed out: {events:?}");
            let _ = c.poll(Duration::from_millis(50));
            events.extend(c.context().take_events());
        }
    }

    fn assigned(events: &[PartitionEvent<(&'static str, Committed)>]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, PartitionEvent::Assigned { .. }))
            .count()
    }

    /// Regression: a rebalance error under cooperative-sticky called
    /// `unassign()`, which librdkafka refuses for a cooperative protocol,
    /// so the member kept consuming partitions the worker thought it had
    /// dropped. Now the owned partitions are unassigned incrementally,
    /// reported as revoked, and their lag gauges read 0.
    #[test]
    fn rebalance_error_under_cooperative_sticky_drops_the_assignment() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 2, 1).unwrap();
        let mut s = settings(&cluster);
        s.consumer_properties.insert(
            "partition.assignment.strategy".into(),
            "cooperative-sticky".into(),
        );
        let c = subscribe(&s, FixedStart).unwrap();
        let mut events = Vec::new();
        poll_until(&c, &mut events, |e| assigned(e) == 2);
        assert!(matches!(
            c.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        ));
        assert_eq!(c.assignment().unwrap().count(), 2);

        let gauges = crate::test_util::Gauges::default();
        let lag = |p: i32| format!("{}{{partition={p}}}", crate::metric_names::CONSUMER_LAG);
        metrics::with_local_recorder(&gauges, || {
            for p in [0, 1] {
                metrics::gauge!(crate::metric_names::CONSUMER_LAG, "partition" => p.to_string())
                    .set(42.0);
            }
            let mut tpl = TopicPartitionList::new();
            c.context()
                .rebalance(&c, RDKafkaRespErr::RD_KAFKA_RESP_ERR__FAIL, &mut tpl);
        });
        assert_eq!(c.assignment().unwrap().count(), 0);
        let mut revoked: Vec<i32> = c
            .context()
            .take_events()
            .into_iter()
            .filter_map(|e| match e {
                PartitionEvent::Revoked { partition, .. } => Some(partition),
                _ => None,
            })
            .collect();
        revoked.sort();
        assert_eq!(revoked, [0, 1]);
        assert_eq!(
            (gauges.get(&lag(0)), gauges.get(&lag(1))),
            (Some(0.0), Some(0.0))
        );
    }

    /// A revoked partition's lag gauge reads 0 (the eager protocol).
    #[test]
    fn revoked_partitions_read_zero_lag() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 2, 1).unwrap();
        let c = subscribe(&settings(&cluster), FixedStart).unwrap();
        let mut events = Vec::new();
        poll_until(&c, &mut events, |e| assigned(e) == 2);
        let gauges = crate::test_util::Gauges::default();
        let key = format!("{}{{partition=1}}", crate::metric_names::CONSUMER_LAG);
        metrics::with_local_recorder(&gauges, || {
            metrics::gauge!(crate::metric_names::CONSUMER_LAG, "partition" => "1").set(7.0);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition("t", 1);
            c.context().rebalance(
                &c,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS,
                &mut tpl,
            );
        });
        assert_eq!(gauges.get(&key), Some(0.0));
        assert!(c
            .context()
            .take_events()
            .iter()
            .any(|e| matches!(e, PartitionEvent::Revoked { partition: 1, .. })));
    }

    /// A close leaves the group (the final revoke reaches the hook) and
    /// returns true; with a coordinator that answers only after 10 s it
    /// returns false once its timeout passed, not when the broker answers.
    #[test]
    fn a_close_leaves_the_group_or_gives_up_at_its_timeout() {
        /// Counts the partitions revoked from it.
        struct Revokes(Arc<std::sync::atomic::AtomicUsize>);
        impl AssignHook for Revokes {
            type State = ();
            fn assign(&self, _: &str, _: i32, _: Committed) -> (Option<i64>, ()) {
                (None, ())
            }
            fn revoke(&self, _: &str, partitions: &[i32], _: bool) {
                self.0.fetch_add(partitions.len(), Ordering::Relaxed);
            }
        }
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 2, 1).unwrap();
        let joined = |group: &str, revoked: &Arc<std::sync::atomic::AtomicUsize>| {
            let s = KafkaSettings {
                group_id: group.into(),
                ..settings(&cluster)
            };
            let c = subscribe(&s, Revokes(revoked.clone())).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut assigned = 0;
            while assigned < 2 {
                assert!(Instant::now() < deadline, "not assigned");
                let _ = c.poll(Duration::from_millis(50));
                assigned += c.context().take_events().len();
            }
            c
        };
        let revoked = Arc::default();
        let c = joined("g", &revoked);
        let started = Instant::now();
        assert!(close(c, Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(revoked.load(Ordering::Relaxed), 2);

        let c = joined("g2", &revoked);
        cluster
            .broker_round_trip_time(1, Duration::from_secs(10))
            .unwrap();
        let started = Instant::now();
        assert!(!close(c, Duration::from_secs(1)));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(5),
            "{took:?}"
        );
        cluster
            .broker_round_trip_time(1, Duration::from_millis(0))
            .unwrap();
    }

    /// A commit the coordinator refuses with a retriable error comes back
    /// from the committer with its cause, without blocking the caller;
    /// the same offsets commit afterwards.
    #[test]
    fn commit_answers_carry_their_cause_and_a_retry_commits() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 2, 1).unwrap();
        let s = settings(&cluster);
        crate::test_util::send_bytes(&s, "t", 0, 10);
        let c = Arc::new(subscribe(&s, FixedStart).unwrap());
        let mut events = Vec::new();
        poll_until(&c, &mut events, |e| assigned(e) == 2);
        let committer = Committer::start(c.clone()).unwrap();

        cluster.request_errors(
            rdkafka::types::RDKafkaApiKey::OffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS],
        );
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Offset(7)).unwrap();
        assert!(committer.commit(tpl.clone()));
        let failed = committer.wait(Duration::from_secs(30)).unwrap();
        let code = failed.partitions[0].3.unwrap_err();
        assert_eq!(
            (failed.partitions[0].1, failed.partitions[0].2),
            (0, Some(7))
        );
        assert_eq!(CommitFailure::of(code), CommitFailure::Rebalance);
        assert!(CommitFailure::of(code).is_retriable());

        assert!(committer.commit(tpl.clone()));
        let ok = committer.wait(Duration::from_secs(30)).unwrap();
        assert_eq!(ok.error, None, "{ok:?}");
        assert!(committer.take().is_empty());
        let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        assert_eq!(
            committed.find_partition("t", 0).unwrap().offset(),
            Offset::Offset(7)
        );
    }

    /// The documented sorting of commit errors (docs/kafka.md).
    #[test]
    fn commit_failures_are_sorted_into_retriable_and_fatal() {
        use RDKafkaErrorCode as C;
        for (code, cause, retriable) in [
            (C::RebalanceInProgress, "rebalance", true),
            (C::IllegalGeneration, "rebalance", true),
            (C::UnknownMemberId, "rebalance", true),
            (C::CoordinatorNotAvailable, "coordinator", true),
            (C::NotCoordinator, "coordinator", true),
            (C::WaitingForCoordinator, "coordinator", true),
            (C::RequestTimedOut, "network", true),
            (C::BrokerTransportFailure, "network", true),
            (C::GroupAuthorizationFailed, "authorization", false),
            (C::TopicAuthorizationFailed, "authorization", false),
            (C::SaslAuthenticationFailed, "authorization", false),
            (C::FencedInstanceId, "other", false),
            (C::OffsetMetadataTooLarge, "other", false),
            (C::Fatal, "other", false),
        ] {
            let f = CommitFailure::of(code);
            assert_eq!(
                (f.as_str(), f.is_retriable()),
                (cause, retriable),
                "{code:?}"
            );
        }
        let labels: Vec<&str> = CommitFailure::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(labels.len(), 5);
    }
}
