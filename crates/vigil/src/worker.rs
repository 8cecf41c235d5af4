//! The Kafka worker (`vigil run`): consumer-group members that run the
//! operator chain on each assigned partition and make its output durable
//! before they commit.
//!
//! ## Threads
//! A worker runs `worker.threads` members (one per core by default), each
//! on a thread of its own with its own consumer, producer, committer and
//! partitions ([`Worker`] is one member): nothing on the hot path is
//! shared, and one member's flush does not stop another's partitions.
//! What the members share is read-only or atomic ([`WorkerProgress`],
//! the health facts). A member that fails stops the others, which drain.
//! Each member publishes its flushes on a publishing thread of its own
//! (below). docs/kafka.md "Threads".
//!
//! ```text
//!  poll batch ──▶ rebalance events ──▶ PartitionTask (one per partition, single owner)
//!                                        Pipeline.process ─▶ OutputStage (vigil-sink):
//!                                                            windows ─▶ AggregatesWriter ┐
//!                                                            alerts  ─▶ AlertsWriter     │ buffered
//!                                                                    └▶ each matching route's topic, in its encoding (sent now)
//!                                                            refused ─▶ DLQ topic (sent now) / dlq files
//!  every flush_interval (and on shutdown), for partitions with new records:
//!    0. sealed on the member's thread: output stage swapped for its spare,
//!       checkpoint state taken, producer mark noted; then, on the member's
//!       publishing thread while the member consumes on:
//!    1. Parquet + dead-letter files of the range [first, last] published (tmp + rename)
//!    2. every alert and dead letter sent before the mark acknowledged by the
//!       broker (a dead letter the topic does not take is sent again, then
//!       stored under dlq/undelivered/; see "Dead letters")
//!    3. checkpoint: operator state + next offset, atomically replaced
//!    4. back on the member's thread: offsets committed to the group
//!       (asynchronously; see below)
//! ```
//!
//! ## Double-buffered output
//! Each partition has two output stages. At a flush point the member
//! seals its dirty partitions (step 0): it swaps each one's stage (the
//! rows since the last flush) for the empty spare, takes the checkpoint's
//! state (the agents changed since the last checkpoint, or a copy of the
//! whole pipeline when a new base is due; `worker/chain.rs`) and notes the
//! producer's mark, and hands the flush to its publishing thread
//! (`worker/flusher.rs`), which runs steps 1 to 3 while the member goes on
//! consuming into the other stage. The member takes the outcome after its
//! polls and only then commits its offsets, so publish → ack →
//! checkpoint → commit holds for every offset. At most one flush is in
//! flight per member: the next flush point waits for it. A partition is
//! therefore not consumed only while its member seals, or waits for the
//! previous flush at the next flush point
//! (`vigil_worker_flush_stall_seconds`). A revoke waits, inside the
//! rebalance callback, until the flush in flight is done (or handed back;
//! bounded, docs/kafka.md), so the next owner restores from its
//! checkpoint. Outcomes apply to the assignment that sealed them only. Memory: a flush's rows are held
//! while the next ones buffer, and a new base holds a copy of the
//! partition's state until it is written.
//!
//! ## Commits
//! A checkpointed offset stays pending until the group coordinator has
//! acknowledged its commit. Commits are made by a thread of their own
//! ([`Committer`], at most one unanswered at a time), so the loop never
//! waits for the coordinator; their answers are read after each poll. A commit refused for a retriable cause (a rebalance, the
//! coordinator moving or away, the network) is counted
//! (`vigil_worker_commit_failures_total{reason}`) and sent again at the
//! next flush; one refused for another cause (authorization, ...) stops
//! the worker. A revoked partition's pending commit is dropped: its next
//! owner restores from the checkpoint. A partition restored from a
//! checkpoint has its offset pending from the start, so a checkpoint that
//! got ahead of the group's commit (a crash between steps 3 and 4) is
//! committed even when no new record arrives, and the lag reads true.
//!
//! ## Shutdown
//! On SIGTERM the worker drains within `worker.shutdown_timeout`: the
//! flush being published, then a last flush (waiting at most the smaller
//! of `worker.delivery_timeout` and the time left), then the pending
//! commits, retried until acknowledged or the time is up, then it leaves
//! the group (within 5 s). No wait for a flush passes the deadline: a
//! flush not done by then is abandoned, the drain fails, and its
//! partitions resume from their last checkpoint. It logs how long the
//! drain took.
//!
//! ## Recovery
//! On assignment the partition's checkpoint is loaded inside the rebalance
//! callback and consumption starts at its offset, with its state. Two
//! generations are kept, each with a checksum; a newest one that is
//! missing, torn or corrupt falls back to the previous one (counted,
//! logged; docs/storage.md "Checkpoints"), and half-written checkpoint
//! files of the partition are removed. Before
//! the first record is processed, output files of that partition whose
//! range starts at or after that offset are removed: they were published
//! after the checkpoint by a worker that then died, and processing the
//! records again publishes them again (possibly cut into other ranges);
//! so are half-written (`.tmp-`) files of the partition. The sweep lists
//! only the `date=` directories named by the partition's intent record
//! ([`vigil_store::intent`]), which each flush writes before its first
//! file: the days of that flush and of the one before it. Without one
//! (first start after an upgrade, a damaged record) it lists every day.
//! A revoked partition's unflushed work is dropped; the next owner resumes
//! from the checkpoint. Parquet rows are therefore exactly-once; alerts and
//! dead letters sent after the last checkpoint are sent again with the same
//! content (alert ids are deterministic), i.e. at least once.
//!
//! Output produced by processing-time ticks alone (windows closed by the
//! idle timeout, offline alerts) on a partition that receives no record is
//! published on the flush cadence as a tick file, named after the last
//! record and its number among the tick files after it
//! ([`vigil_store::SourceRange::ticks`]), and checkpointed with that
//! number: a restart neither loses it nor fires it again. The restart's
//! sweep removes the tick files past the checkpoint's number like the
//! ranges past its offset.
//!
//! ## Fencing
//! When it seals a flush, `Worker::confirm_owner` checks that this worker
//! still owns its partitions: librdkafka's lost-assignment flag, and after
//! a stall longer than half the session timeout (a paused VM or process) a
//! commit the coordinator takes only from a current member. Before each
//! partition's files and each checkpoint, the publishing thread checks
//! the flag and its own stall clock; when either fails it hands the flush
//! back unfinished and the member proves its membership before it goes
//! on. A fenced worker drops its partitions unpublished. Each checkpoint carries its owner's epoch,
//! and a restore prefers a generation not behind the group's committed
//! offset, then the later owner's (`restore_order`): a zombie's late
//! checkpoint is passed over. docs/kafka.md "Fencing".
//!
//! ## Dead letters
//! No refused record can stop a partition. Each dead letter is bounded to
//! the producer's `message.max.bytes` ([`vigil_store::bound`],
//! [`vigil_kafka::headers::dead_letter_value_budget`]); a truncated one
//! names the full record, written under `dlq/full/` before it is sent.
//! Sends refused for transient reasons are retried with backoff by the
//! producer; dead letters whose delivery fails are sent again after the
//! flush, and those the topic still does not take are stored under
//! `dlq/undelivered/` (logged, counted). The offset is committed past a
//! dead letter only once it is acknowledged by the broker or stored
//! locally; if even the local write fails, the flush fails and nothing is
//! committed (as for a Parquet write).
//!
//! ## Measured
//! Each alert is timed from the moment the pipeline emitted it (right
//! after `process` or `tick` returned it) to the broker's acknowledgement:
//! `vigil_kafka_produce_ack_latency_seconds{topic=<alert topic>}`, also in
//! [`WorkerProgress::ack_latency`] with the records and points processed,
//! which `vigil bench --brokers` reads while the worker runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use vigil_kafka::consumer::{
    AssignHook, CommitFailure, Committed, Committer, PartitionEvent, WorkerContext,
};
use vigil_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use vigil_kafka::rdkafka::{Message, Offset, TopicPartitionList};
use vigil_kafka::{headers, AckedProducer, LatencyHistogram, Undelivered};
use vigil_ops::config::{ClockMode, PipelineConfig};
use vigil_ops::otlp::{InputFormat, OtlpStats};
use vigil_ops::pipeline::{Outputs, Pipeline, PipelineStats};
use vigil_ops::rules::RuleSet;
use vigil_ops::{Position, RejectReason, Rejected};
use vigil_sink::{AlertRouter, DestinationError, Destinations, OutputStage, Route};
use vigil_store::checkpoint::{Generation, Opened};
use vigil_store::intent::{DatasetDays, Intent};
use vigil_store::{failpoint, CheckpointStore, DlqWriter, LetterBudget, LetterForm, Root};

use crate::health::WorkerHealth;
use crate::obs;
use crate::settings::Settings;

mod chain;
#[cfg(test)]
mod chain_tests;
mod flusher;

/// Pause between commit attempts while the shutdown drain retries.
const DRAIN_COMMIT_RETRY: Duration = Duration::from_millis(200);

/// How long a membership proof waits for one answer before it looks at
/// the assignment again.
const PROOF_WAIT: Duration = Duration::from_millis(200);

/// How long the member waits for the flush in flight between two looks
/// at its stop flag.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// How long [`Worker::finish_flush`] waits for the flush in flight.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// Not at all: its outcome if it is there.
    No,
    /// Until it is done (a flush point: the flush's own steps are
    /// bounded), or until the worker is asked to stop (the drain then
    /// waits, within its deadline).
    Done,
    /// Until it is done or the instant passed (the shutdown drain), which
    /// is an error.
    Until(Instant),
}

/// Longest wait for the consumer to leave its group once the drain is
/// over (the final revoke, the LeaveGroup): `worker.shutdown_timeout` and
/// this stay within a pod's termination grace period.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Time a membership proof gives librdkafka past the session timeout to
/// declare a lost assignment by itself.
const PROOF_MARGIN: Duration = Duration::from_secs(5);

/// What the coordinator's answer to a commit says of this member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    /// Accepted, or refused for a rebalance in progress (the coordinator
    /// checks the member and its generation first): a member.
    Member,
    /// The coordinator does not know this member or its generation, or
    /// librdkafka lost the assignment: fenced.
    Fenced,
    /// No verdict (coordinator or network trouble).
    Unknown,
}

/// Reads a commit's answer as a membership verdict.
fn membership_of(o: &vigil_kafka::consumer::CommitOutcome) -> Membership {
    use vigil_kafka::rdkafka::error::RDKafkaErrorCode as C;
    let codes = o
        .error
        .into_iter()
        .chain(o.partitions.iter().filter_map(|p| p.3.err()));
    let mut verdict = Membership::Member;
    for code in codes {
        match code {
            C::UnknownMemberId
            | C::IllegalGeneration
            | C::FencedInstanceId
            | C::AssignmentLost
            | C::StaleMemberEpoch
            | C::FencedMemberEpoch => return Membership::Fenced,
            C::RebalanceInProgress => {}
            _ => verdict = Membership::Unknown,
        }
    }
    verdict
}

/// Version of the checkpoint file layout. 2: compact per-series state
/// (series slots with detector handles, detector arenas). 3: no series
/// ids (computed from the key), agent liveness kept with the agent.
/// 4: the rule definitions the detector state was built under (not just
/// their names), skipped time and invalid-input state per agent, alert
/// events pending after a rule change; exact window sums (each open window
/// carries its exact sum; aggregates carry their exact mean) and the
/// replay clock's per-agent votes; per-boot dedup windows and content tags.
/// 5: state that ends (free agent slots, vacant series slots, each idle
/// series' last window, the series sweep time, eviction counters), the
/// `agent_limit` counter, slow-collector frontiers (idle floor, greatest
/// timestamp at the last advance). Format 4 restores too: every added
/// field has a default (docs/semantics.md "State that ends").
/// 6: detector state by family (issue 24, `docs/detectors.md`): each
/// series family's state under `detectors.series.<family>`, each agent's
/// under `live.families.<family>`, and every family's state form version
/// in `detectors.versions`. Formats 4 and 5 restore into it
/// (`vigil_ops::detect::legacy`).
/// 7: dedup windows of agents without boot id keep tags for the numbers
/// `0..64` only (`low_tags`, three words) instead of a tag byte per slot;
/// a format-6 window restores into it (`vigil_ops::dedup`), and a build
/// that reads at most format 6 refuses format 7 by number.
/// 8: the checkpoint names its state instead of holding it: `state` lists
/// a base state file (the whole pipeline, in the form `pipeline` had) and
/// the delta state files written after it ([`chain`]). Formats 4 to 7,
/// with the state inline, restore as before.
const CHECKPOINT_FORMAT: u32 = 8;

/// Checkpoint formats this Vigil restores.
const READS_FORMATS: std::ops::RangeInclusive<u32> = 4..=CHECKPOINT_FORMAT;

/// A partition checkpoint as written (borrows the pipeline).
#[derive(Serialize)]
struct CheckpointOut<'a> {
    format: u32,
    topic: &'a str,
    partition: i32,
    next_offset: i64,
    /// Tick files published after record `next_offset - 1` whose output
    /// the state holds (see [`PartitionTask::ticks`]).
    ticks: u32,
    /// The writer's owner epoch (see [`CheckpointHeader::epoch`]).
    epoch: u64,
    written_at_ms: i64,
    /// The state files holding the state (see [`chain`]).
    state: &'a chain::ChainRef,
}

/// The fields of a checkpoint that say what it is, read before the state
/// so that a checkpoint of another format gets a clear error, and so that
/// the generation to restore is chosen before either is decoded.
#[derive(Deserialize)]
struct CheckpointHeader {
    format: u32,
    topic: String,
    partition: i32,
    next_offset: i64,
    /// The owner epoch of the worker that wrote it: one more than the
    /// greatest epoch among the checkpoints it restored from (0: written
    /// before epochs existed). Of two checkpoints, the one with the
    /// greater epoch comes from the later owner, whichever was written
    /// last: a fenced zombie's late write has the smaller one.
    #[serde(default)]
    epoch: u64,
}

/// The offset a restart of the partition could continue from, read from
/// the checkpoints in `store` (a directory or an object store) of the
/// source named `source` in file
/// names (the sanitized topic), or `None` when the partition has no
/// checkpoint: the smaller `next_offset` of its two generations that
/// decode, because a worker falls back to the previous one when the newest
/// is damaged. `vigil compact` merges only the files of ranges before it:
/// the files a restarted worker's sweep never removes.
pub fn checkpoint_next_offset(
    store: &vigil_store::CheckpointStore,
    source: &str,
    partition: i32,
) -> Result<Option<i64>> {
    let mut least: Option<i64> = None;
    let mut damaged = Vec::new();
    for g in Generation::BOTH {
        let o = match store.open_source(source, partition, g) {
            Ok(Some(o)) => o,
            Ok(None) => continue,
            Err(e @ vigil_store::StoreError::Corrupt { .. }) => {
                damaged.push(e.to_string());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let path = &o.path;
        let h = match header_of(&o)? {
            Ok(h) => h,
            Err(e) => {
                damaged.push(format!(
                    "checkpoint {} does not decode: {e}",
                    path.display()
                ));
                continue;
            }
        };
        if !READS_FORMATS.contains(&h.format) {
            bail!(
                "checkpoint {} has format {}, this Vigil reads formats {} to {}",
                path.display(),
                h.format,
                READS_FORMATS.start(),
                READS_FORMATS.end()
            );
        }
        if vigil_store::sanitize_source(&h.topic) != source || h.partition != partition {
            bail!(
                "checkpoint {} is for {}/{}, expected {source}/{partition}",
                path.display(),
                h.topic,
                h.partition
            );
        }
        least = Some(least.map_or(h.next_offset, |l| l.min(h.next_offset)));
    }
    if least.is_none() && !damaged.is_empty() {
        bail!("{}", damaged.join("; "));
    }
    Ok(least)
}

/// Reads a checkpoint's header: the fields before its state (`pipeline`,
/// written last), stopping where the state begins. Choosing between two
/// generations, and `vigil compact` finding a partition's offset, then
/// read a few hundred bytes of each instead of parsing the whole JSON of a
/// partition of a million series. A file whose state is damaged still
/// has a readable header; its state fails to decode later
/// ([`CheckpointHook::state`]), and the restore falls back as for any
/// damage.
fn read_header(r: impl std::io::Read) -> serde_json::Result<CheckpointHeader> {
    use serde::de::{Deserializer as _, Error as _, MapAccess, Visitor};

    /// The error that stops the parse at the state.
    const AT_STATE: &str = "vigil: the checkpoint's state begins here";

    struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

    impl<'de> Visitor<'de> for Fields<'_> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a checkpoint object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            while let Some(k) = m.next_key::<String>()? {
                if k == "pipeline" {
                    return Err(A::Error::custom(AT_STATE));
                }
                let v: serde_json::Value = m.next_value()?;
                self.0.insert(k, v);
            }
            Ok(())
        }
    }

    let mut fields = serde_json::Map::new();
    let mut de = serde_json::Deserializer::from_reader(r);
    match de.deserialize_map(Fields(&mut fields)) {
        Ok(()) => {}
        Err(e) if e.to_string().starts_with(AT_STATE) => {}
        Err(e) => return Err(e),
    }
    serde_json::from_value(serde_json::Value::Object(fields))
}

/// The header of an opened checkpoint. A checkpoint whose checksum was
/// verified has an intact body, so its header is read alone
/// ([`read_header`]) when its fields precede the state, as Vigil writes
/// them; otherwise (a file whose keys were reordered by a tool, or one
/// written before checksums, format 6 and before, which may be torn) the
/// whole file is parsed.
fn header_of(o: &Opened) -> Result<serde_json::Result<CheckpointHeader>> {
    if o.verified {
        if let Ok(h) = read_header(o.reader()?) {
            return Ok(Ok(h));
        }
    }
    Ok(serde_json::from_reader(o.reader()?))
}

/// A partition checkpoint as read (after its [`CheckpointHeader`]).
#[derive(Deserialize)]
struct CheckpointIn {
    next_offset: i64,
    /// 0 in checkpoints written before tick files existed.
    #[serde(default)]
    ticks: u32,
    written_at_ms: i64,
    /// The state, inline (formats 4 to 7).
    #[serde(default)]
    pipeline: Option<Pipeline>,
    /// The state files holding the state (format 8).
    #[serde(default)]
    state: Option<chain::ChainRef>,
}

/// Restored state of a newly assigned partition.
pub struct Restored {
    next_offset: i64,
    ticks: u32,
    pipeline: Pipeline,
    /// The partition's intent record (`None`: missing or unreadable, a
    /// full sweep).
    intent: Option<Intent>,
}

/// What a newly assigned partition starts with: its restored state (if it
/// had a checkpoint) and the owner epoch its checkpoints will carry.
pub struct Assignment {
    restored: Option<Restored>,
    epoch: u64,
}

/// Why a checkpoint generation that decodes was not the one restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Passed {
    /// Its offset is behind the group's committed offset: written after
    /// the commit of a later state, by a worker that no longer owned the
    /// partition.
    BehindCommit,
    /// The other generation comes from a later owner (greater epoch).
    EarlierOwner,
}

impl Passed {
    fn as_str(self) -> &'static str {
        match self {
            Passed::BehindCommit => "behind_commit",
            Passed::EarlierOwner => "earlier_owner",
        }
    }
}

/// The order in which a partition's checkpoint generations (as `(is
/// newest, next offset, epoch)`) are tried: first those consistent with
/// the group's committed offset `committed` (a checkpoint is written
/// before its offset is committed, so the owner's latest one is never
/// behind the commit), then the later owner's (greater epoch), then the
/// newest file. Returns indices into `found`.
fn restore_order(found: &[(bool, i64, u64)], committed: Option<i64>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..found.len()).collect();
    order.sort_by_key(|&i| {
        let (newest, next, epoch) = found[i];
        let consistent = committed.is_none_or(|c| next >= c);
        std::cmp::Reverse((consistent, epoch, newest))
    });
    order
}

/// Why `found[chosen]` was preferred to the newest generation `found[0]`
/// (when it was and both decode), for the log and the counter.
fn passed_over(
    found: &[(bool, i64, u64)],
    chosen: usize,
    committed: Option<i64>,
) -> Option<Passed> {
    let newest = found.iter().position(|f| f.0)?;
    if newest == chosen {
        return None;
    }
    let behind = committed.is_some_and(|c| found[newest].1 < c);
    Some(if behind {
        Passed::BehindCommit
    } else {
        Passed::EarlierOwner
    })
}

/// Loads checkpoints inside the rebalance callback.
struct CheckpointHook {
    store: CheckpointStore,
    cfg: PipelineConfig,
    rules: Arc<RuleSet>,
    /// The member's publishing thread: a revoke waits until it is idle.
    gate: Arc<flusher::Gate>,
    /// How long a revoke waits for it at most.
    revoke_wait: Duration,
}

impl CheckpointHook {
    /// A hook over the checkpoints under `dir` (tests).
    #[cfg(test)]
    fn at(dir: &std::path::Path, rules: Arc<RuleSet>) -> CheckpointHook {
        CheckpointHook {
            store: CheckpointStore::new(dir),
            cfg: PipelineConfig::default(),
            rules,
            gate: Arc::default(),
            revoke_wait: Duration::ZERO,
        }
    }

    /// Restores the partition from one of its two checkpoint generations:
    /// the newest, unless it is missing, torn, corrupt or does not decode
    /// (a fallback, counted in `vigil_checkpoint_fallbacks_total`), or a
    /// fenced worker wrote it late: behind the group's committed offset
    /// `committed`, or with a smaller owner epoch than the previous one
    /// (counted in `vigil_checkpoint_generations_passed_total{reason}`);
    /// see [`restore_order`]. A checkpoint of another format, of another
    /// partition or that cannot continue under this configuration is an
    /// error whichever generation it is: an older one would not be
    /// better. The partition's new owner epoch is one more than the
    /// greatest found.
    fn load(&self, topic: &str, partition: i32, committed: Committed) -> Result<Assignment> {
        let orphans = self.store.remove_orphans(topic, partition)?;
        if orphans > 0 {
            tracing::info!(
                partition,
                removed = orphans,
                "removed checkpoint files a crashed writer left half written"
            );
        }
        let mut damage: Option<anyhow::Error> = None;
        let mut found: Vec<(Generation, Opened, CheckpointHeader)> = Vec::new();
        for g in Generation::BOTH {
            let opened = match self.store.open(topic, partition, g) {
                Ok(Some(o)) => o,
                Ok(None) => continue,
                Err(e @ vigil_store::StoreError::Corrupt { .. }) => {
                    damage.get_or_insert(e.into());
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match self.header(topic, partition, &opened)? {
                Ok(h) => found.push((g, opened, h)),
                Err(torn) => {
                    damage.get_or_insert(torn);
                }
            }
        }
        let epoch = found.iter().map(|f| f.2.epoch).max().unwrap_or(0) + 1;
        let facts: Vec<(bool, i64, u64)> = found
            .iter()
            .map(|(g, _, h)| (*g == Generation::Newest, h.next_offset, h.epoch))
            .collect();
        let committed_at = committed.offset();
        for i in restore_order(&facts, committed_at) {
            let (g, opened, h) = &found[i];
            let c = match self.state(topic, partition, opened) {
                Ok(c) => c,
                Err(torn) => {
                    damage.get_or_insert(torn);
                    continue;
                }
            };
            if let Some(why) = passed_over(&facts, i, committed_at) {
                tracing::warn!(
                    restored = %opened.path.display(),
                    restored_offset = h.next_offset,
                    restored_epoch = h.epoch,
                    newest_offset = facts.iter().find(|f| f.0).map(|f| f.1),
                    newest_epoch = facts.iter().find(|f| f.0).map(|f| f.2),
                    committed = ?committed_at,
                    reason = why.as_str(),
                    "the newest checkpoint was written late by a worker that no longer owned the \
                     partition; restoring the previous one"
                );
                metrics::counter!(obs::CHECKPOINT_PASSED, "reason" => why.as_str()).increment(1);
            } else if *g == Generation::Previous {
                let why = damage.as_ref().map_or_else(
                    || "the newest is missing (a crash while it was replaced)".to_string(),
                    |e| format!("{e:#}"),
                );
                tracing::warn!(
                    previous = %opened.path.display(),
                    reason = %why,
                    "falling back to the previous checkpoint: the records after it are read again"
                );
                metrics::counter!(obs::CHECKPOINT_FALLBACKS).increment(1);
            }
            if let Some(at) = committed_at.filter(|&at| h.next_offset < at) {
                tracing::warn!(
                    next_offset = h.next_offset,
                    committed = at,
                    "no checkpoint of the partition reaches the group's committed offset: the \
                     records from the checkpoint on are read again"
                );
            }
            return self.resume(c, opened, epoch).map(|mut r| {
                r.intent = self.intent(topic, partition);
                Assignment {
                    restored: Some(r),
                    epoch,
                }
            });
        }
        match damage {
            Some(e) => Err(e.context(format!(
                "no checkpoint of {topic}/{partition} can be restored (newest and previous); \
                 delete them to restart the partition from the group's committed offset with \
                 empty state"
            ))),
            None => Ok(Assignment {
                restored: None,
                epoch,
            }),
        }
    }

    /// Reads one checkpoint's header: an error for another format, topic
    /// or partition (no generation would be better), `Ok(Err)` when it
    /// does not decode (torn or corrupt: the caller may fall back).
    fn header(
        &self,
        topic: &str,
        partition: i32,
        o: &Opened,
    ) -> Result<std::result::Result<CheckpointHeader, anyhow::Error>> {
        let path = &o.path;
        let h = match header_of(o)? {
            Ok(h) => h,
            Err(e) => {
                return Ok(Err(anyhow!(e).context(format!(
                    "checkpoint {} does not decode",
                    path.display()
                ))))
            }
        };
        if !READS_FORMATS.contains(&h.format) {
            bail!(
                "checkpoint {} has format {}, this Vigil reads formats {} to {}: \
                 finish the partition with the Vigil that wrote it, or delete the file to \
                 restart the partition from the group's committed offset with empty state \
                 (windows open at that offset lose their earlier points)",
                path.display(),
                h.format,
                READS_FORMATS.start(),
                READS_FORMATS.end()
            );
        }
        if h.topic != topic || h.partition != partition {
            bail!(
                "checkpoint {} is for {}/{}, expected {topic}/{partition}",
                path.display(),
                h.topic,
                h.partition
            );
        }
        Ok(Ok(h))
    }

    /// Decodes one checkpoint's state (its header was read by
    /// [`CheckpointHook::header`]); an error when it does not decode.
    /// Decoded from the file again rather than from its bytes in memory:
    /// a large partition's checkpoint is never held whole next to the
    /// state it decodes into.
    /// From format 8 the checkpoint names its state files, which are read
    /// here: a missing or damaged one is damage of this generation.
    fn state(&self, topic: &str, partition: i32, o: &Opened) -> Result<CheckpointIn> {
        let mut c: CheckpointIn = serde_json::from_reader(o.reader()?)
            .with_context(|| format!("checkpoint {} does not decode", o.path.display()))?;
        if c.pipeline.is_none() {
            let Some(named) = &c.state else {
                bail!(
                    "checkpoint {} holds no state and names no state file",
                    o.path.display()
                );
            };
            let p = chain::load(&self.store, topic, partition, named)
                .with_context(|| format!("checkpoint {}", o.path.display()))?;
            c.pipeline = Some(p);
        }
        Ok(c)
    }

    /// The partition's intent record, `None` (a full sweep, logged) when
    /// it is missing or cannot be read.
    fn intent(&self, topic: &str, partition: i32) -> Option<Intent> {
        match self.store.load_intent(topic, partition) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(
                    partition,
                    error = %e,
                    "the partition's intent record cannot be read: its restart sweep lists every \
                     day of every dataset"
                );
                None
            }
        }
    }

    /// The partition's state from a decoded checkpoint, resumed under
    /// this configuration.
    fn resume(&self, c: CheckpointIn, o: &Opened, epoch: u64) -> Result<Restored> {
        let mut pipeline = c
            .pipeline
            .expect("CheckpointHook::state gives the pipeline")
            .resume(self.cfg.clone(), self.rules.clone())
            .map_err(|p| {
                anyhow!(
                    "checkpoint {} cannot continue under this configuration: {}",
                    o.path.display(),
                    p.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?;
        // The time no worker owned the partition is not the agents'
        // silence (no false `agent_offline` storm after an outage).
        let gap = wall_ms().saturating_sub(c.written_at_ms);
        pipeline.skip_processing_time(gap);
        tracing::info!(
            next_offset = c.next_offset,
            ticks = c.ticks,
            gap_ms = gap,
            generation = o.generation.as_str(),
            verified = o.verified,
            epoch,
            "restored the partition's checkpoint"
        );
        Ok(Restored {
            next_offset: c.next_offset,
            ticks: c.ticks,
            pipeline,
            intent: None,
        })
    }
}

impl AssignHook for CheckpointHook {
    type State = Result<Assignment>;

    /// Waits until the member's flush in flight, if any, is published and
    /// checkpointed (or stopped): nothing of the revoked partitions is
    /// written after the rebalance goes on and their next owner restores
    /// them.
    fn revoke(&self, _topic: &str, partitions: &[i32], lost: bool) {
        let started = Instant::now();
        if !self.gate.wait_idle(self.revoke_wait) {
            // The flush does no further step for them; a step under way
            // (one file, one checkpoint) may still end after the next
            // owner restored (an older epoch's checkpoint is passed over).
            self.gate.give_up(partitions);
            tracing::error!(
                ?partitions,
                lost,
                waited_ms = self.revoke_wait.as_millis() as u64,
                "a flush was still being published when its partitions were revoked; it leaves \
                 them at its next step"
            );
        }
        let waited = started.elapsed();
        if waited >= Duration::from_millis(1) {
            tracing::info!(
                ?partitions,
                lost,
                waited_ms = waited.as_millis() as u64,
                "revoke waited for the flush being published"
            );
        }
        metrics::histogram!(obs::REVOKE_WAIT_SECONDS).record(waited.as_secs_f64());
    }

    fn assign(
        &self,
        topic: &str,
        partition: i32,
        committed: Committed,
    ) -> (Option<i64>, Self::State) {
        let started = Instant::now();
        let r = self.load(topic, partition, committed);
        metrics::histogram!(obs::CHECKPOINT_RESTORE_SECONDS)
            .record(started.elapsed().as_secs_f64());
        let start = match &r {
            Ok(Assignment {
                restored: Some(r), ..
            }) => Some(r.next_offset),
            _ => None,
        };
        (start, r)
    }
}

/// Where outputs go as they are produced: the producer and the topics
/// (the alert topics are the routes', see [`Worker::router`]).
struct Sinks {
    producer: AckedProducer,
    source_topic: String,
    dlq_topic: Option<String>,
    buf: Vec<u8>,
    /// Most bytes of a dead letter's value on the DLQ topic (from the
    /// producer's `message.max.bytes`).
    dlq_budget: LetterBudget,
    /// Root of `dlq/full/` and `dlq/undelivered/`.
    data_dir: Root,
    sync: bool,
}

impl Destinations for Sinks {
    /// Produces the alert event on the route's topic, with its encoding in
    /// the `content-type` and `vigil.encoding` headers; the
    /// acknowledgement is awaited at the next flush.
    fn send_alert(
        &mut self,
        route: &Route,
        key: &[u8],
        payload: &[u8],
        emitted: Instant,
    ) -> Result<(), DestinationError> {
        let e = route.encoding();
        let hs = [
            (headers::CONTENT_TYPE, e.content_type().as_bytes()),
            (headers::ENCODING, e.name().as_bytes()),
        ];
        self.producer
            .send_timed(route.topic(), Some(key), payload, &hs, emitted)
            .context("producing an alert")?;
        Ok(())
    }

    fn send_dead_letter(&mut self, r: &Rejected, ordinal: u32) -> Result<bool, DestinationError> {
        if self.dlq_topic.is_none() {
            return Ok(false);
        }
        self.send_to_dlq_topic(r, ordinal)?;
        Ok(true)
    }
}

/// Rounds of sending dead letters again after their delivery failed for
/// a transient reason, before they are stored under `dlq/undelivered/`.
const REDELIVERY_ROUNDS: u32 = 2;

impl Sinks {
    /// Sends one dead letter to the DLQ topic, bounded to the topic's
    /// budget (the full record kept under `dlq/full/` first when the
    /// letter is truncated). A send the producer refuses even after its
    /// retries stores the letter under `dlq/undelivered/` instead; only a
    /// failure to write locally is an error (the flush, and so the commit,
    /// does not happen).
    fn send_to_dlq_topic(&mut self, r: &Rejected, ordinal: u32) -> Result<()> {
        let Some(topic) = self.dlq_topic.as_deref() else {
            return Ok(());
        };
        self.buf.clear();
        let b = vigil_store::bound_letter(
            r,
            &self.source_topic,
            ordinal,
            LetterForm::Record,
            true,
            self.dlq_budget,
            &mut self.buf,
        )
        .context("encoding a dead letter")?;
        if let Some(full) = &b.full {
            vigil_store::write_full_copy(&self.data_dir, full, self.sync)
                .context("keeping the full record of a truncated dead letter")?;
        }
        if b.truncated {
            metrics::counter!(obs::DLQ_TRUNCATED, "sink" => "topic").increment(1);
        }
        let (payload, content_type): (&[u8], &str) = match (b.is_record, r.raw.as_deref()) {
            (true, Some(raw)) => (raw, headers::PROTOBUF),
            _ => (&self.buf, headers::JSON),
        };
        let part = r.position.partition.to_string();
        let off = r.position.offset.to_string();
        let mut hs: Vec<(&str, &[u8])> = vec![
            (headers::REASON, r.reason.as_str().as_bytes()),
            (
                headers::DETAIL,
                headers::cap_bytes(r.detail.as_bytes(), headers::DETAIL_MAX_BYTES),
            ),
            (headers::SOURCE_TOPIC, self.source_topic.as_bytes()),
            (headers::SOURCE_PARTITION, part.as_bytes()),
            (headers::SOURCE_OFFSET, off.as_bytes()),
            (headers::CONTENT_TYPE, content_type.as_bytes()),
        ];
        if b.truncated {
            hs.push((headers::TRUNCATED, b"true"));
        }
        let key = r
            .agent
            .as_deref()
            .map(|a| headers::cap_bytes(a.as_bytes(), headers::KEY_MAX_BYTES));
        if let Err(e) = self.producer.send_dead_letter(topic, key, payload, &hs) {
            let letter = vigil_store::UndeliveredLetter {
                source: &self.source_topic,
                position: r.position,
                topic,
                key,
                headers: &hs,
                value: payload,
                error: &e.to_string(),
            };
            store_undelivered(&self.data_dir, self.sync, r.reason.as_str(), &letter)?;
        }
        Ok(())
    }

    /// What the publishing thread needs to settle dead letters: a clone
    /// of the producer and where undelivered letters go.
    fn dead_letters(&self) -> DeadLetters {
        DeadLetters {
            producer: self.producer.clone(),
            data_dir: self.data_dir.clone(),
            sync: self.sync,
            source_topic: self.source_topic.clone(),
        }
    }
}

/// Dead letters after a flush's acknowledgements: sent again, or stored
/// locally (on the member's publishing thread).
pub(crate) struct DeadLetters {
    producer: AckedProducer,
    data_dir: Root,
    sync: bool,
    source_topic: String,
}

impl DeadLetters {
    /// After a producer flush: dead letters whose delivery failed for a
    /// transient reason are sent again (up to [`REDELIVERY_ROUNDS`] rounds,
    /// with backoff); the others, and those still failing, are stored
    /// under `dlq/undelivered/`. When this returns, every dead letter sent
    /// before the flush's mark (whose acknowledgement the caller awaited)
    /// is acknowledged by the broker or stored locally.
    fn settle(&mut self, deadline: Instant) -> Result<()> {
        let mut pending = self.producer.take_undelivered();
        let mut wait = vigil_kafka::producer::DEAD_LETTER_BACKOFF;
        let mut round = 0;
        while !pending.is_empty() {
            // Past the flush's deadline nothing is sent again: what is
            // left is stored locally, so a flush never outlasts its budget.
            let time_left = deadline.saturating_duration_since(Instant::now()) > wait;
            let (again, give_up): (Vec<Undelivered>, Vec<Undelivered>) = pending
                .into_iter()
                .partition(|u| u.transient && round < REDELIVERY_ROUNDS && time_left);
            for u in &give_up {
                self.store_kept(u, &u.error)?;
            }
            if again.is_empty() {
                break;
            }
            round += 1;
            std::thread::sleep(wait);
            wait *= 2;
            let mut resent = Vec::with_capacity(again.len());
            for u in &again {
                metrics::counter!(obs::DLQ_REDELIVERIES).increment(1);
                match self.producer.resend(u) {
                    Ok(seq) => resent.push(seq),
                    Err(e) => self.store_kept(u, &e.to_string())?,
                }
            }
            // Only the letters sent again: the member sends on meanwhile.
            self.producer
                .flush_each(&resent, deadline.saturating_duration_since(Instant::now()))
                .context("waiting for the broker to acknowledge dead letters sent again")?;
            pending = self.producer.take_undelivered();
        }
        Ok(())
    }

    /// Stores a dead letter the producer gave back.
    fn store_kept(&self, u: &Undelivered, error: &str) -> Result<()> {
        let header = |name| {
            u.header(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .unwrap_or("")
        };
        let position = Position {
            partition: header(headers::SOURCE_PARTITION).parse().unwrap_or(-1),
            offset: header(headers::SOURCE_OFFSET).parse().unwrap_or(-1),
        };
        let hs: Vec<(&str, &[u8])> = u
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let letter = vigil_store::UndeliveredLetter {
            source: &self.source_topic,
            position,
            topic: &u.topic,
            key: u.key.as_deref(),
            headers: &hs,
            value: &u.payload,
            error,
        };
        let reason = RejectReason::ALL
            .iter()
            .map(|r| r.as_str())
            .find(|r| *r == header(headers::REASON))
            .unwrap_or("unknown");
        store_undelivered(&self.data_dir, self.sync, reason, &letter)
    }
}

/// Writes an undelivered dead letter under `dlq/undelivered/`, logged and
/// counted (`reason` is a [`RejectReason`] string).
fn store_undelivered(
    data_dir: &Root,
    sync: bool,
    reason: &'static str,
    letter: &vigil_store::UndeliveredLetter<'_>,
) -> Result<()> {
    let path = vigil_store::write_undelivered(data_dir, sync, letter)
        .context("storing a dead letter the DLQ topic did not take")?;
    metrics::counter!(obs::DLQ_STORED_LOCALLY, "reason" => reason).increment(1);
    tracing::warn!(
        reason,
        partition = letter.position.partition,
        offset = letter.position.offset,
        error = letter.error,
        path = %path.display(),
        "dead letter not delivered to the DLQ topic; stored locally"
    );
    Ok(())
}

/// One assigned partition: its operator chain, buffered output and the
/// offsets of the range not yet flushed. Owned by its member's thread
/// alone.
struct PartitionTask {
    partition: i32,
    pipeline: Pipeline,
    out: Outputs,
    /// The partition's writers (Parquet, and `dlq/` files when there is no
    /// DLQ topic), buffering the output of the records since the last
    /// flush point.
    stage: OutputStage,
    /// The other stage: `None` while it is being published (it holds the
    /// last flush's rows), back empty once that flush is done.
    spare: Option<OutputStage>,
    /// First offset of the unflushed range.
    range_start: Option<i64>,
    /// Offset of the next record to process (from the checkpoint, then
    /// the last processed record + 1).
    next_offset: Option<i64>,
    /// Tick files published (and checkpointed) after record
    /// `next_offset - 1`: from the checkpoint, one more at each flush of
    /// output that processing time alone produced while no record came,
    /// 0 again at each flush of records.
    ticks: u32,
    /// Whether stale output after the checkpoint was removed.
    swept: bool,
    /// The days the restart sweep lists: those of the restored intent
    /// record (`None`: every day, see [`vigil_store::intent`]).
    sweep_days: Option<DatasetDays>,
    /// The days the partition's last flush wrote (`None`: unknown, for an
    /// owner restored without an intent record): the next intent record
    /// names them with its own.
    last_days: Option<DatasetDays>,
    /// Whether skipping records below the checkpoint was logged.
    warned_skip: bool,
    published: PipelineStats,
    /// OTLP conversion counters at the last publish.
    published_otlp: OtlpStats,
    /// Processing time during which the partition could not be fetched
    /// (its leader unknown or down), since it stopped being fetchable:
    /// `Some` while its idle and offline clocks are paused.
    paused_ms: Option<i64>,
    /// This owner's epoch, written into its checkpoints.
    epoch: u64,
    /// This assignment, unique within the member (epochs repeat when a
    /// partition comes back before a checkpoint): see [`flusher::Part`].
    owner: u64,
    /// The state files this owner's checkpoints name (`None` while a
    /// flush of the partition is being published: the flush has it).
    chain: Option<chain::Chain>,
    /// The offset of the last checkpoint (restored or written): the
    /// offset a membership proof commits (see [`Worker::confirm_owner`]).
    durable: Option<i64>,
}

/// What a worker run did.
#[derive(Debug, Default, Clone)]
pub struct WorkerSummary {
    /// Records processed.
    pub records: u64,
    /// Flushes completed (each: files, acks, checkpoints, commit sent).
    pub flushes: u64,
    /// Partitions assigned over the run.
    pub assignments: u64,
}

impl WorkerSummary {
    /// Adds another member's summary.
    fn add(&mut self, o: &WorkerSummary) {
        self.records += o.records;
        self.flushes += o.flushes;
        self.assignments += o.assignments;
    }
}

/// Live counters of a running worker, readable from any thread while it
/// runs: relaxed atomics the members' threads add to, and the offsets each
/// member has reached, written once per poll batch under a lock. `vigil bench
/// --brokers` reads them to measure the worker's rate and lag; `vigil run`
/// does not look at them.
#[derive(Debug, Default)]
pub struct WorkerProgress {
    records: AtomicU64,
    points: AtomicU64,
    /// Per owned partition, the offset after the last record its owner
    /// processed (written once per poll batch by each member).
    reached: std::sync::Mutex<HashMap<i32, i64>>,
    partitions: AtomicU64,
    flushes: AtomicU64,
    commits: AtomicU64,
    commit_failures: AtomicU64,
    flushing_ns: AtomicU64,
    /// Time the members' publishing threads spent on flushes.
    publishing_ns: AtomicU64,
    busy_members: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_bytes: AtomicU64,
    /// Of the checkpoints, those that wrote a new base, and their bytes.
    checkpoint_bases: AtomicU64,
    checkpoint_base_bytes: AtomicU64,
    first_record: OnceLock<Instant>,
    ack_latency: Arc<LatencyHistogram>,
    health: Arc<WorkerHealth>,
}

impl WorkerProgress {
    /// Records processed by the pipeline.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Points in the batches the pipeline accepted.
    pub fn points(&self) -> u64 {
        self.points.load(Ordering::Relaxed)
    }

    /// Partitions owned now.
    pub fn partitions(&self) -> u64 {
        self.partitions.load(Ordering::Relaxed)
    }

    /// Flushes completed (files published, acks received, checkpoints
    /// written, offsets sent to the group).
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Offset commits the group coordinator acknowledged.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Offset commits the group coordinator refused (or that could not be
    /// sent), retriable or not.
    pub fn commit_failures(&self) -> u64 {
        self.commit_failures.load(Ordering::Relaxed)
    }

    /// Records of the topic processed and still held by their owner:
    /// per owned partition the offset after the last record processed,
    /// summed (a topic whose offsets start at 0), as of each member's last
    /// poll batch. Records read again after a partition moved (its
    /// unflushed work is dropped, the next owner resumes from the
    /// checkpoint) count once.
    pub fn offsets_reached(&self) -> u64 {
        self.reached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|&n| n.max(0) as u64)
            .sum()
    }

    /// Where each of `tasks` (one member's partitions) is: called after
    /// each poll batch, not per record.
    fn reach(&self, tasks: &HashMap<i32, PartitionTask>) {
        let mut reached = self
            .reached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for t in tasks.values() {
            if let Some(next) = t.next_offset {
                reached.insert(t.partition, next);
            }
        }
    }

    /// `partition` is no longer owned here: what its owner processed after
    /// the checkpoint is dropped, and its next owner reports where it is.
    fn unreach(&self, partition: i32) {
        self.reached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&partition);
    }

    /// Checkpoints written (one per partition and flush) and their bytes.
    pub fn checkpoints(&self) -> (u64, u64) {
        (
            self.checkpoints.load(Ordering::Relaxed),
            self.checkpoint_bytes.load(Ordering::Relaxed),
        )
    }

    /// Of [`WorkerProgress::checkpoints`], those that wrote a new base
    /// (the whole state) rather than a delta, and their bytes.
    pub fn checkpoint_bases(&self) -> (u64, u64) {
        (
            self.checkpoint_bases.load(Ordering::Relaxed),
            self.checkpoint_base_bytes.load(Ordering::Relaxed),
        )
    }

    /// Members that own at least one partition now.
    pub fn busy_members(&self) -> u64 {
        self.busy_members.load(Ordering::Relaxed)
    }

    /// Time the members stopped consuming for flushes, summed over them:
    /// sealing a flush, and waiting for the one before it to be published
    /// when it was not yet (module docs, "Double-buffered output").
    pub fn flushing(&self) -> Duration {
        Duration::from_nanos(self.flushing_ns.load(Ordering::Relaxed))
    }

    /// Time the members' publishing threads spent publishing,
    /// acknowledging and checkpointing flushes, summed over them (while
    /// their members consumed on).
    pub fn publishing(&self) -> Duration {
        Duration::from_nanos(self.publishing_ns.load(Ordering::Relaxed))
    }

    /// When the first record was processed.
    pub fn first_record(&self) -> Option<Instant> {
        self.first_record.get().copied()
    }

    /// Time from the pipeline emitting each alert to the broker
    /// acknowledging it (also `vigil_kafka_produce_ack_latency_seconds`).
    pub fn ack_latency(&self) -> &LatencyHistogram {
        &self.ack_latency
    }

    /// Liveness and readiness facts (served on `/healthz` and `/readyz`).
    pub fn health(&self) -> &Arc<WorkerHealth> {
        &self.health
    }
}

/// What every member of a worker shares (read-only, or atomics).
struct Shared {
    settings: Settings,
    rules: Arc<RuleSet>,
    /// The pipeline configuration (wall clock).
    cfg: PipelineConfig,
    data_dir: Root,
    store: CheckpointStore,
    progress: Arc<WorkerProgress>,
    /// Members this worker runs.
    members: usize,
    /// Each member's liveness facts, registered before any starts.
    health: Vec<Arc<crate::health::MemberHealth>>,
    stop: Stop,
}

/// When the members stop: SIGTERM (or the caller's flag), or another
/// member failed.
#[derive(Clone)]
struct Stop {
    shutdown: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
}

impl Stop {
    fn requested(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed) || self.failed.load(Ordering::Relaxed)
    }
}

/// Counters a dashboard rates on exist from the start (at 0), not from
/// their first event; so do those the alerts on Vigil itself rate on
/// (deploy/base/prometheusrule.yaml): `increase()` misses the first event
/// of a series that appears with it.
fn register_metrics() {
    metrics::counter!(obs::COMMITS).increment(0);
    metrics::counter!(obs::COMMITS_DROPPED).increment(0);
    metrics::counter!(obs::RECORDS_PROCESSED).increment(0);
    for cause in CommitFailure::ALL {
        metrics::counter!(obs::COMMIT_FAILURES, "reason" => cause.as_str()).increment(0);
    }
    metrics::counter!(obs::CONSUMER_ERRORS).increment(0);
    metrics::counter!(obs::PARTITIONS_ASSIGNED).increment(0);
    for lost in ["true", "false"] {
        metrics::counter!(obs::PARTITIONS_REVOKED, "lost" => lost).increment(0);
    }
    metrics::counter!(obs::LEAVE_TIMEOUTS).increment(0);
    metrics::counter!(obs::DRAIN_TIMEOUTS).increment(0);
    metrics::counter!(obs::DLQ_REDELIVERIES).increment(0);
    for reason in ["assignment_lost", "stalled"] {
        metrics::counter!(obs::FLUSH_UNCONFIRMED, "reason" => reason).increment(0);
    }
    metrics::gauge!(obs::PARTITIONS_OWNED).set(0.0);
}

/// One member's share of a bound `total` that holds for all `n` members
/// of a worker (rounded up, at least 1).
fn member_share(total: u64, n: usize) -> u64 {
    total.div_ceil(n as u64).max(1)
}

/// The Kafka settings of member `k` of `n`: its own `client.id` and, under
/// static membership, its own `group.instance.id` (two members with one
/// id would fence each other); and its share of the queues that bound the
/// worker's memory (the consumer's prefetch queue, the producer's queue),
/// so `n` members hold no more than one would.
fn member_kafka(
    kafka: &vigil_kafka::KafkaSettings,
    k: usize,
    n: usize,
) -> vigil_kafka::KafkaSettings {
    let mut kafka = kafka.clone();
    if n > 1 {
        let message_max = kafka.producer_message_max_bytes();
        let shares: [(&str, Option<&str>, bool); 4] = [
            ("queued.max.messages.kbytes", None, true),
            ("queued.min.messages", None, true),
            (
                "queue.buffering.max.kbytes",
                Some(vigil_kafka::config::PRODUCER_QUEUE_KBYTES),
                false,
            ),
            (
                "queue.buffering.max.messages",
                Some(vigil_kafka::config::PRODUCER_QUEUE_MESSAGES),
                false,
            ),
        ];
        for (key, default, consumer) in shares {
            let own = if consumer {
                &kafka.consumer_properties
            } else {
                &kafka.producer_properties
            };
            let Some(total) = own
                .get(key)
                .or_else(|| kafka.properties.get(key))
                .map(String::as_str)
                .or(default)
                .and_then(|v| v.trim().parse::<u64>().ok())
            else {
                continue;
            };
            let mut share = member_share(total, n);
            if key == "queue.buffering.max.kbytes" {
                // One message of the largest size must still fit.
                let floor = message_max.map_or(1, |m| (m as u64).div_ceil(1024) + 1);
                share = share.max(floor);
            }
            let props = if consumer {
                &mut kafka.consumer_properties
            } else {
                &mut kafka.producer_properties
            };
            props.insert(key.to_owned(), share.to_string());
        }
        let id = |props: &BTreeMap<String, String>, key: &str| props.get(key).cloned();
        let client = id(&kafka.consumer_properties, "client.id")
            .or_else(|| id(&kafka.properties, "client.id"))
            .unwrap_or_else(|| "vigil-consumer".to_owned());
        kafka
            .consumer_properties
            .insert("client.id".to_owned(), format!("{client}-{k}"));
        if let Some(instance) = id(&kafka.consumer_properties, "group.instance.id")
            .or_else(|| id(&kafka.properties, "group.instance.id"))
        {
            kafka
                .consumer_properties
                .insert("group.instance.id".to_owned(), format!("{instance}-{k}"));
        }
    }
    kafka
}

impl Shared {
    /// Runs member `k` on this thread until the worker stops: joins the
    /// group with a consumer of its own, owns what it is assigned, drains
    /// and leaves. Its error also stops the other members.
    fn run_member(&self, k: usize) -> Result<WorkerSummary> {
        let span = tracing::info_span!("member", member = k);
        let _g = span.enter();
        // A member that panics stops the others too (they would otherwise
        // run on without its partitions' owner until SIGTERM).
        struct StopOnPanic<'a>(&'a AtomicBool);
        impl Drop for StopOnPanic<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
        }
        let _stop_on_panic = StopOnPanic(&self.stop.failed);
        let r = self.member(k);
        if let Err(e) = &r {
            self.failed(e);
        }
        r
    }

    /// Stops the other members after this one failed with `e`.
    fn failed(&self, e: &anyhow::Error) {
        if !self.stop.failed.swap(true, Ordering::Relaxed) && self.members > 1 {
            tracing::error!(error = %format!("{e:#}"), "member failed; stopping the worker's other members");
        }
    }

    fn member(&self, k: usize) -> Result<WorkerSummary> {
        let n = self.members;
        let mut settings = self.settings.clone();
        settings.kafka = member_kafka(&settings.kafka, k, n);
        // The buffer bounds hold for the whole worker: each member gets
        // its share.
        settings.storage.flush_rows = member_share(settings.storage.flush_rows, n);
        settings.storage.dlq_flush_bytes = member_share(settings.storage.dlq_flush_bytes, n);
        let kafka = &settings.kafka;
        let progress = self.progress.clone();
        let router = settings
            .alerts
            .router(&kafka.alert_topic)
            .map_err(|p| anyhow!("invalid alert routes:\n  {}", p.join("\n  ")))?;
        let gate = Arc::new(flusher::Gate::default());
        let hook = CheckpointHook {
            store: self.store.clone(),
            cfg: self.cfg.clone(),
            rules: self.rules.clone(),
            gate: gate.clone(),
            revoke_wait: settings.revoke_wait(),
        };
        let producer = AckedProducer::with_ack_latency(
            kafka,
            settings.worker.delivery_timeout,
            progress.ack_latency.clone(),
        )
        .context("creating the alert and dead-letter producer")?;
        // Route counters a dashboard rates on exist from the start.
        router.register_metrics();
        let outputs: Vec<&str> = router
            .routes()
            .map(Route::topic)
            .chain([kafka.dlq_topic.as_str()])
            .filter(|t| !t.is_empty())
            .collect();
        // Without this, the first alerts wait for the producer to look the
        // topic up (about half a second on a fresh producer).
        if let Err(e) = producer.prepare(&outputs, Duration::from_secs(10)) {
            tracing::warn!(error = %e, "could not read the output topics' metadata yet");
        }
        for topic in &outputs {
            metrics::counter!(vigil_kafka::metric_names::PRODUCE_FAILURES, "topic" => topic.to_string())
                .increment(0);
        }
        let message_max = kafka
            .producer_message_max_bytes()
            .context("kafka message.max.bytes is not a positive integer")?;
        let dlq_budget =
            LetterBudget::new(vigil_kafka::headers::dead_letter_value_budget(message_max))
                .with_context(|| format!("dead letters under message.max.bytes = {message_max}"))?;
        let consumer = Arc::new(
            vigil_kafka::consumer::subscribe(kafka, hook).context("joining the consumer group")?,
        );
        let committer = Committer::start(consumer.clone())?;
        let session_timeout = kafka
            .consumer_session_timeout()
            .context("kafka session.timeout.ms is not a positive integer")?;
        let health = self.health[k].clone();
        health.attach_consumer(consumer.context().health().clone());
        let stall_limit = session_timeout / 2;
        let sinks = Sinks {
            producer,
            source_topic: kafka.telemetry_topic.clone(),
            dlq_topic: (!kafka.dlq_topic.is_empty()).then(|| kafka.dlq_topic.clone()),
            buf: Vec::new(),
            dlq_budget,
            data_dir: self.data_dir.clone(),
            sync: settings.storage.parquet.sync,
        };
        let flusher = flusher::Flusher::start(
            k,
            flusher::Context {
                topic: kafka.telemetry_topic.clone(),
                store: self.store.clone(),
                letters: sinks.dead_letters(),
                consumer: consumer.clone(),
                stall_limit,
                progress: progress.clone(),
            },
            gate,
        )?;
        let mut w = Worker {
            data_dir: self.data_dir.clone(),
            sinks,
            router,
            settings,
            tasks: HashMap::new(),
            owned: 0,
            summary: WorkerSummary::default(),
            progress,
            health,
            uncommitted: BTreeMap::new(),
            committer,
            commit_in_flight: false,
            commit_sent_at: None,
            consumer: consumer.clone(),
            beat: Instant::now(),
            flusher,
            stall_limit,
            stop: self.stop.clone(),
        };
        let result = w.run_loop(&consumer, &self.cfg, &self.rules);
        if let Err(e) = &result {
            // At once, not after this member has left the group.
            self.failed(e);
        }
        w.progress.health.set_stopping();
        let mut summary = WorkerSummary::default();
        let mut drain_error: Option<anyhow::Error> = None;
        match &result {
            Ok(()) => {
                // Graceful: publish, acknowledge, checkpoint and commit
                // everything processed, then leave the group.
                let drain = Instant::now();
                let budget = w.settings.worker.shutdown_timeout;
                if let Err(e) = w.drain(drain + budget) {
                    // Leave the group all the same (below), then report.
                    drain_error = Some(e.context("final flush"));
                }
                let drained = drain_error.is_none();
                tracing::info!(
                    records = w.summary.records,
                    flushes = w.summary.flushes,
                    drain_ms = drain.elapsed().as_millis() as u64,
                    budget_ms = budget.as_millis() as u64,
                    uncommitted_partitions = w.uncommitted.len(),
                    drained,
                    "{}",
                    if drained {
                        "worker stopped"
                    } else {
                        "worker stopped; the final flush failed (its records are re-read by the next owner)"
                    }
                );
                summary = w.summary.clone();
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "worker failed; nothing after the last commit is lost")
            }
        }
        let leaving = Instant::now();
        consumer.unsubscribe();
        // The committer holds the consumer too: once it has stopped, this
        // handle is the last one and dropping it leaves the group. A
        // commit that still hangs keeps the consumer until it returns.
        if !w.committer.stop(Duration::from_secs(1)) {
            tracing::warn!("an offset commit is still hanging; the group may only notice this member left at its session timeout");
        }
        w.tasks.clear();
        w.count_owned();
        drop(w);
        // Bounded: a broker that does not answer must not hold the process
        // past its termination grace period.
        let left = match last_handle(consumer, Duration::from_secs(1)) {
            Some(c) => vigil_kafka::consumer::close(c, LEAVE_TIMEOUT),
            // A hanging commit's thread holds the other handle.
            None => false,
        };
        if left {
            tracing::info!(
                elapsed_ms = leaving.elapsed().as_millis() as u64,
                "left the consumer group"
            );
        } else {
            metrics::counter!(obs::LEAVE_TIMEOUTS).increment(1);
            tracing::warn!(
                elapsed_ms = leaving.elapsed().as_millis() as u64,
                "could not leave the consumer group in time; the group notices at its session \
                 timeout that this member is gone"
            );
        }
        if let Some(e) = drain_error {
            return Err(e);
        }
        result.map(|()| summary)
    }
}

/// `handle` once it is the last one (the threads holding the others end
/// on their own), waiting at most `timeout`; `None` (and the handle
/// dropped) if another is still held then.
fn last_handle<T>(mut handle: Arc<T>, timeout: Duration) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match Arc::try_unwrap(handle) {
            Ok(t) => return Some(t),
            Err(h) if Instant::now() < deadline => {
                handle = h;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return None,
        }
    }
}

/// One member of the worker: a consumer, its partitions and their
/// output, on one thread. See the module docs.
pub struct Worker {
    settings: Settings,
    /// Root of the datasets and dead letters.
    data_dir: Root,
    tasks: HashMap<i32, PartitionTask>,
    /// Partitions counted as owned in the gauge and the progress (this
    /// member's share of them).
    owned: usize,
    sinks: Sinks,
    /// Which topics (and encodings) each alert event goes to.
    router: AlertRouter,
    summary: WorkerSummary,
    progress: Arc<WorkerProgress>,
    /// This member's liveness facts.
    health: Arc<crate::health::MemberHealth>,
    /// Checkpointed offsets (the next offset to process) of owned
    /// partitions that the group has not acknowledged yet.
    uncommitted: BTreeMap<i32, i64>,
    /// Makes the commits, off the loop's thread.
    committer: Committer,
    /// Whether a commit is waiting for its answer.
    commit_in_flight: bool,
    /// When the last commit was sent.
    commit_sent_at: Option<Instant>,
    /// The consumer (for the fencing checks of a flush).
    consumer: Arc<BaseConsumer<WorkerContext<CheckpointHook>>>,
    /// When this worker last ran (its loop, a finished flush) or proved
    /// its membership; see [`Worker::confirm_owner`]. (The publishing
    /// thread keeps its own.)
    beat: Instant,
    /// The member's publishing thread (module docs, "Double-buffered
    /// output").
    flusher: flusher::Flusher,
    /// Half the group session timeout: a longer stall asks for a proof.
    stall_limit: Duration,
    /// When to stop consuming and drain.
    stop: Stop,
}

/// An output stage under `data_dir` for partitions of `topic`: the
/// dataset writers and, without a DLQ topic (`dlq_topic` false), the
/// dead-letter files.
fn stage_for(
    settings: &Settings,
    data_dir: &Root,
    dlq_topic: bool,
    topic: &str,
) -> Result<OutputStage> {
    let w = settings.storage.parquet.clone();
    let dlq = if dlq_topic {
        None
    } else {
        Some(DlqWriter::at(data_dir, topic, w.sync).with_budget(settings.storage.dlq_budget()?))
    };
    Ok(OutputStage::at(data_dir, w, dlq)?)
}

/// The offset a membership proof commits for a partition: its pending
/// checkpointed offset (`uncommitted`), else its last checkpoint's
/// (`durable`), else the first offset it processed since (`range_start`,
/// where the group's offset already is). For a partition of a flush not
/// done yet whose first record is `sealed`, never past that record: its
/// last checkpoint, else that record.
fn proof_offset(
    uncommitted: Option<i64>,
    durable: Option<i64>,
    range_start: Option<i64>,
    sealed: Option<i64>,
) -> Option<i64> {
    match sealed {
        Some(first) => durable.or(Some(first)),
        None => uncommitted.or(durable).or(range_start),
    }
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Worker {
    /// Runs until `shutdown` is set, then flushes and leaves the group.
    pub fn run(
        settings: Settings,
        rules: Arc<RuleSet>,
        shutdown: Arc<AtomicBool>,
    ) -> Result<WorkerSummary> {
        Worker::run_with_progress(settings, rules, shutdown, Arc::default())
    }

    /// [`Worker::run`], updating `progress` as it goes.
    ///
    /// Runs `worker.threads` consumer-group members, each on a thread of
    /// its own with its own consumer, producer and partitions (the module
    /// docs, "Threads"). A member that fails stops the others (each
    /// drains as on SIGTERM) and its error is returned.
    pub fn run_with_progress(
        settings: Settings,
        rules: Arc<RuleSet>,
        shutdown: Arc<AtomicBool>,
        progress: Arc<WorkerProgress>,
    ) -> Result<WorkerSummary> {
        let kafka = &settings.kafka;
        // Checked once here; each member builds its own.
        settings
            .alerts
            .router(&kafka.alert_topic)
            .map_err(|p| anyhow!("invalid alert routes:\n  {}", p.join("\n  ")))?;
        if kafka.create_topics {
            crate::cmd::topics::create_all(kafka, &settings.alerts, kafka.partitions)?;
        }
        let mut cfg = settings.pipeline.clone();
        cfg.clock = ClockMode::Wall;
        Pipeline::new(cfg.clone(), rules.clone()).map_err(crate::settings::invalid_pipeline)?;
        // A directory or an object store each (docs/storage.md "Object
        // stores"); an s3:// client takes its credentials from AWS_*.
        let store_opts = settings.storage.object_store.options();
        let data_dir = settings
            .data_dir
            .open_with(&store_opts)
            .with_context(|| format!("opening data_dir {}", settings.data_dir))?;
        let state_root = settings
            .worker
            .state_dir
            .open_with(&store_opts)
            .with_context(|| format!("opening worker.state_dir {}", settings.worker.state_dir))?;
        let store = CheckpointStore::at(&state_root);
        register_metrics();
        let members = settings.worker.member_threads();
        tracing::info!(
            brokers = %kafka.brokers,
            topic = %kafka.telemetry_topic,
            input_format = ?settings.worker.input_format,
            group = %kafka.group_id,
            data_dir = %settings.data_dir,
            state_dir = %settings.worker.state_dir,
            members,
            "worker started"
        );
        let health = progress.health.members(members);
        let shared = Shared {
            health,
            settings,
            rules,
            cfg,
            data_dir,
            store,
            progress,
            members,
            stop: Stop {
                shutdown,
                failed: Arc::default(),
            },
        };
        if members == 1 {
            return shared.run_member(0);
        }
        std::thread::scope(|sc| {
            let mut handles = Vec::with_capacity(members);
            let mut spawn_error = None;
            for k in 0..members {
                let shared = &shared;
                match std::thread::Builder::new()
                    .name(format!("vigil-member-{k}"))
                    .spawn_scoped(sc, move || shared.run_member(k))
                {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        shared.stop.failed.store(true, Ordering::Relaxed);
                        spawn_error =
                            Some(anyhow!(e).context(format!("starting member thread {k}")));
                        break;
                    }
                }
            }
            let mut summary = WorkerSummary::default();
            let mut first_error = spawn_error;
            for (k, h) in handles.into_iter().enumerate() {
                match h.join() {
                    Ok(Ok(s)) => summary.add(&s),
                    Ok(Err(e)) => {
                        first_error.get_or_insert(e.context(format!("member {k}")));
                    }
                    Err(_) => {
                        first_error.get_or_insert(anyhow!("member {k} panicked"));
                    }
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(summary),
            }
        })
    }

    /// The shutdown drain: a last flush, then the pending commits, all by
    /// `deadline` (see the module docs).
    fn drain(&mut self, deadline: Instant) -> Result<()> {
        // The flush in flight first, then the last one within what is
        // left; neither waits past the deadline.
        self.finish_flush(Wait::Until(deadline))?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.flush_all(
            self.settings.worker.delivery_timeout.min(left),
            Some(deadline),
        )?;
        while !self.uncommitted.is_empty() && Instant::now() < deadline {
            let retry_due = self
                .commit_sent_at
                .is_none_or(|t| t.elapsed() >= DRAIN_COMMIT_RETRY);
            if !self.commit_in_flight && retry_due {
                self.commit_pending()?;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(o) = self.committer.wait(left.min(Duration::from_millis(50))) {
                self.apply_commit(o)?;
            }
        }
        if !self.uncommitted.is_empty() {
            tracing::warn!(
                partitions = ?self.uncommitted.keys().collect::<Vec<_>>(),
                "offsets not committed by the end of the shutdown drain; \
                 their checkpoints hold them, the next owner resumes there"
            );
        }
        Ok(())
    }

    fn run_loop(
        &mut self,
        consumer: &BaseConsumer<WorkerContext<CheckpointHook>>,
        cfg: &PipelineConfig,
        rules: &Arc<RuleSet>,
    ) -> Result<()> {
        let flush_every = self.settings.worker.flush_interval;
        let tick_every = cfg.tick_interval;
        let max_batch = self.settings.worker.max_poll_records;
        let mut last_flush = Instant::now();
        let mut last_tick = Instant::now();
        while !self.stop.requested() {
            self.health.beat(wall_ms());
            self.beat = Instant::now();
            let processed_before = self.summary.records;
            let mut handled = 0usize;
            let mut timeout = Duration::from_millis(100);
            let span = tracing::debug_span!("poll_batch");
            let _g = span.enter();
            while handled < max_batch {
                let polled = consumer.poll(timeout);
                timeout = Duration::ZERO;
                self.apply_events(consumer, cfg, rules)?;
                let Some(m) = polled else { break };
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        metrics::counter!(obs::CONSUMER_ERRORS).increment(1);
                        tracing::warn!(error = %e, "consumer error");
                        break;
                    }
                };
                handled += 1;
                let now = wall_ms();
                self.process(m.partition(), m.offset(), m.payload().unwrap_or(&[]), now)?;
            }
            drop(_g);
            metrics::counter!(obs::RECORDS_PROCESSED)
                .increment(self.summary.records - processed_before);
            self.progress.reach(&self.tasks);
            // A flush published meanwhile: its offsets go to the committer
            // now, not at the next flush point.
            if self.flusher.in_flight() {
                self.finish_flush(Wait::No)?;
                self.commit_pending()?;
            }
            if self.stop.requested() {
                // The drain flushes, within its own budget.
                break;
            }
            if last_tick.elapsed() >= tick_every {
                let since = last_tick.elapsed().as_millis() as i64;
                last_tick = Instant::now();
                let now = wall_ms();
                let health = consumer.context().health();
                let topic = self.sinks.source_topic.clone();
                for t in self.tasks.values_mut() {
                    if !t.clocks_run(health.fetchable(&topic, t.partition), since) {
                        continue;
                    }
                    t.pipeline.tick(now, &mut t.out);
                    t.stage.route(&mut t.out, &self.router, &mut self.sinks)?;
                }
            }
            let storage = &self.settings.storage;
            // Rows of partitions a flush covers (those with records since
            // their last flush); a silent partition's rows wait for its
            // next record, as its range needs one.
            let rows: usize = self
                .tasks
                .values()
                .filter(|t| t.range_start.is_some())
                .map(|t| t.stage.aggregate_rows())
                .sum();
            let dlq_bytes: usize = self
                .tasks
                .values()
                .map(|t| t.stage.dlq_buffered_bytes())
                .sum();
            let full = rows as u64 >= storage.flush_rows
                || dlq_bytes as u64 >= storage.dlq_flush_bytes
                || self
                    .tasks
                    .values()
                    .any(|t| t.pending_records() >= storage.flush_records);
            if full || last_flush.elapsed() >= flush_every {
                self.flush_all(self.settings.worker.delivery_timeout, None)?;
                last_flush = Instant::now();
            }
        }
        Ok(())
    }

    fn apply_events(
        &mut self,
        consumer: &BaseConsumer<WorkerContext<CheckpointHook>>,
        cfg: &PipelineConfig,
        rules: &Arc<RuleSet>,
    ) -> Result<()> {
        for e in consumer.context().take_events() {
            match e {
                PartitionEvent::Assigned {
                    partition, state, ..
                } => {
                    let Assignment { restored, epoch } =
                        state.with_context(|| format!("restoring partition {partition}"))?;
                    if let Some(r) = &restored {
                        // Committed at the next flush even if nothing new
                        // arrives: the group may be behind the checkpoint.
                        self.uncommitted.insert(partition, r.next_offset);
                    }
                    let durable = restored.as_ref().map(|r| r.next_offset);
                    let ticks = restored.as_ref().map_or(0, |r| r.ticks);
                    // Without a checkpoint the sweep lists everything
                    // (output may be left from a state directory that is
                    // gone), but nothing was flushed before this owner.
                    let (sweep_days, last_days) = match &restored {
                        None => (None, Some(DatasetDays::new())),
                        Some(Restored {
                            intent: Some(i), ..
                        }) if !i.full => (Some(i.days.clone()), Some(i.days.clone())),
                        Some(_) => (None, None),
                    };
                    let (pipeline, next) = match restored {
                        Some(r) => (r.pipeline, Some(r.next_offset)),
                        None => (
                            Pipeline::new(cfg.clone(), rules.clone())
                                .map_err(crate::settings::invalid_pipeline)?,
                            None,
                        ),
                    };
                    let task = PartitionTask {
                        partition,
                        published: pipeline.stats().clone(),
                        published_otlp: pipeline.otlp_stats().clone(),
                        pipeline,
                        out: Outputs::default(),
                        stage: self.new_stage()?,
                        spare: Some(self.new_stage()?),
                        range_start: None,
                        paused_ms: None,
                        epoch,
                        owner: self.summary.assignments,
                        chain: Some(chain::Chain::new(epoch)),
                        durable,
                        next_offset: next,
                        ticks,
                        swept: false,
                        sweep_days,
                        last_days,
                        warned_skip: false,
                    };
                    self.summary.assignments += 1;
                    metrics::counter!(obs::PARTITIONS_ASSIGNED).increment(1);
                    self.tasks.insert(partition, task);
                }
                PartitionEvent::Revoked {
                    partition, lost, ..
                } => {
                    if let Some(t) = self.release(partition) {
                        let dropped = t.pending_records();
                        tracing::info!(
                            partition,
                            lost,
                            dropped,
                            "partition revoked; unflushed work dropped"
                        );
                    }
                    let lost = if lost { "true" } else { "false" };
                    metrics::counter!(obs::PARTITIONS_REVOKED, "lost" => lost).increment(1);
                }
            }
        }
        self.count_owned();
        for o in self.committer.take() {
            self.apply_commit(o)?;
        }
        Ok(())
    }

    /// An output stage for a partition (its writers and, without a DLQ
    /// topic, its dead-letter files).
    fn new_stage(&self) -> Result<OutputStage> {
        stage_for(
            &self.settings,
            &self.data_dir,
            self.sinks.dlq_topic.is_some(),
            &self.sinks.source_topic,
        )
    }

    /// Stops owning `partition`: its task (returned) and its pending
    /// commit are dropped; its next owner restores from the checkpoint.
    fn release(&mut self, partition: i32) -> Option<PartitionTask> {
        let t = self.tasks.remove(&partition);
        self.progress.unreach(partition);
        if let Some(offset) = self.uncommitted.remove(&partition) {
            tracing::info!(
                partition,
                offset,
                "pending offset commit dropped with the partition; its next owner restores from the checkpoint"
            );
            metrics::counter!(obs::COMMITS_DROPPED).increment(1);
        }
        obs::publish_state(partition, None);
        metrics::gauge!(obs::PARTITION_CLOCKS_PAUSED, "partition" => partition.to_string())
            .set(0.0);
        t
    }

    /// Updates the owned-partitions gauge and progress counter.
    /// (Both sum over the worker's members: each adds what changed in its
    /// own count.)
    fn count_owned(&mut self) {
        let (was, now) = (self.owned, self.tasks.len());
        if (was == 0) != (now == 0) {
            if now > 0 {
                self.progress.busy_members.fetch_add(1, Ordering::Relaxed);
            } else {
                self.progress.busy_members.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if now > was {
            metrics::gauge!(obs::PARTITIONS_OWNED).increment((now - was) as f64);
            self.progress
                .partitions
                .fetch_add((now - was) as u64, Ordering::Relaxed);
        } else if now < was {
            metrics::gauge!(obs::PARTITIONS_OWNED).decrement((was - now) as f64);
            self.progress
                .partitions
                .fetch_sub((was - now) as u64, Ordering::Relaxed);
        }
        self.owned = now;
    }

    /// Whether this worker still owns its partitions, asked before each
    /// partition's files are published and before each checkpoint is
    /// written (module docs, "Fencing"). Cheap unless librdkafka says the
    /// assignment is lost or the worker did not run for more than half the
    /// session timeout (a paused VM or process, a long stall): then a
    /// membership proof decides ([`Worker::prove_membership`]). When it is
    /// not the owner, every partition is dropped unflushed
    /// ([`Worker::fence`]) and `false` returned: nothing more of this
    /// flush may be published or checkpointed.
    fn confirm_owner(&mut self) -> Result<bool> {
        let verdict = if self.consumer.assignment_lost() {
            Some("assignment_lost")
        } else if self.beat.elapsed() > self.stall_limit {
            self.prove_membership()?
        } else {
            return Ok(true);
        };
        match verdict {
            None => {
                self.beat = Instant::now();
                Ok(true)
            }
            Some(reason) => {
                self.fence(reason);
                Ok(false)
            }
        }
    }

    /// After a stall: commits the owned partitions' checkpointed offsets
    /// (the coordinator takes a commit only from a member of its current
    /// generation) and reads the answer, again while the coordinator
    /// cannot be reached, until the membership is proven (`None`),
    /// refused (`Some(reason)`), or librdkafka declares the assignment
    /// lost, which it does by itself once a session timeout passes without
    /// the coordinator. An error if none of these happens within the
    /// session timeout and a margin.
    fn prove_membership(&mut self) -> Result<Option<&'static str>> {
        self.prove_membership_with(None)
    }

    /// [`Worker::prove_membership`] while `pending`, a flush handed back
    /// unfinished, is not published and checkpointed yet: the proof must
    /// not commit past its records ([`Worker::proof_offsets`]).
    fn prove_membership_with(
        &mut self,
        pending: Option<&flusher::Job>,
    ) -> Result<Option<&'static str>> {
        let stalled = self.beat.elapsed();
        tracing::warn!(
            stalled_ms = stalled.as_millis() as u64,
            limit_ms = self.stall_limit.as_millis() as u64,
            "the worker did not run for more than half the group session timeout (a paused \
             VM or process?): confirming it still owns its partitions before publishing"
        );
        let deadline = Instant::now() + self.stall_limit * 2 + PROOF_MARGIN;
        let verdict = loop {
            if self.consumer.assignment_lost() {
                break Some("assignment_lost");
            }
            if Instant::now() >= deadline {
                bail!(
                    "could not confirm within {:?} that this worker is still a member of the \
                     consumer group (no answer from the coordinator, no lost assignment from \
                     librdkafka)",
                    self.stall_limit * 2 + PROOF_MARGIN
                );
            }
            if !self.commit_in_flight {
                let tpl = self.proof_offsets(pending)?;
                if tpl.count() == 0 {
                    // No owned partition has an offset: nothing of this
                    // flush can be published.
                    break None;
                }
                self.commit_sent_at = Some(Instant::now());
                if !self.committer.commit(tpl) {
                    bail!("the offset commit thread stopped");
                }
                self.commit_in_flight = true;
            }
            // The answer to this commit, or to one sent before the stall
            // (whose refusal is as good a proof).
            let Some(o) = self.committer.wait(PROOF_WAIT) else {
                continue;
            };
            let v = membership_of(&o);
            self.apply_commit(o)?;
            match v {
                Membership::Member => break None,
                Membership::Fenced => break Some("commit_refused"),
                Membership::Unknown => std::thread::sleep(PROOF_WAIT),
            }
        };
        let result = if verdict.is_none() {
            "member"
        } else {
            "fenced"
        };
        metrics::counter!(obs::MEMBERSHIP_PROOFS, "result" => result).increment(1);
        Ok(verdict)
    }

    /// The offsets a membership proof commits, per owned partition
    /// ([`proof_offset`]; `pending`: a flush handed back unfinished).
    fn proof_offsets(&self, pending: Option<&flusher::Job>) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for t in self.tasks.values() {
            let sealed = pending.and_then(|j| {
                j.parts
                    .iter()
                    .find(|p| p.partition == t.partition && p.owner == t.owner)
            });
            let at = proof_offset(
                self.uncommitted.get(&t.partition).copied(),
                t.durable,
                t.range_start,
                sealed.map(flusher::Part::first_offset),
            );
            if let Some(at) = at {
                tpl.add_partition_offset(&self.sinks.source_topic, t.partition, Offset::Offset(at))
                    .context("building the membership proof commit")?;
            }
        }
        Ok(tpl)
    }

    /// This worker is not the owner of its partitions any more (their
    /// group session ended while it did not run): every partition is
    /// dropped with its unflushed work, without publishing or
    /// checkpointing; librdkafka revokes them and rejoins the group, and
    /// whoever owns them next restores from the checkpoints.
    fn fence(&mut self, reason: &'static str) {
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        let dropped: u64 = self.tasks.values().map(|t| t.pending_records()).sum();
        tracing::warn!(
            reason,
            ?partitions,
            dropped,
            "fenced: this worker no longer owns its partitions; their unflushed work is dropped \
             unpublished, and nothing more is checkpointed or committed for them"
        );
        metrics::counter!(obs::FENCED, "reason" => reason).increment(1);
        for p in partitions {
            self.release(p);
        }
        self.count_owned();
    }

    /// Reads the answer to an earlier commit: acknowledged offsets stop
    /// being pending; a refusal is counted and, when retriable, left for
    /// the next flush, else returned.
    fn apply_commit(&mut self, o: vigil_kafka::consumer::CommitOutcome) -> Result<()> {
        {
            self.commit_in_flight = false;
            let mut refused = o.error;
            for (_, partition, offset, result) in &o.partitions {
                match result {
                    Ok(()) => {
                        if offset.is_some() && self.uncommitted.get(partition) == offset.as_ref() {
                            self.uncommitted.remove(partition);
                        }
                    }
                    Err(code) => {
                        refused.get_or_insert(*code);
                    }
                }
            }
            match refused {
                None => {
                    metrics::counter!(obs::COMMITS).increment(1);
                    self.progress.commits.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(partitions = o.partitions.len(), "offsets committed");
                }
                Some(code) => self.commit_refused(code)?,
            }
        }
        Ok(())
    }

    /// Counts a refused commit; an error unless the cause is retriable.
    fn commit_refused(
        &mut self,
        code: vigil_kafka::rdkafka::error::RDKafkaErrorCode,
    ) -> Result<()> {
        let cause = CommitFailure::of(code);
        metrics::counter!(obs::COMMIT_FAILURES, "reason" => cause.as_str()).increment(1);
        self.progress
            .commit_failures
            .fetch_add(1, Ordering::Relaxed);
        if !cause.is_retriable() {
            bail!(
                "committing offsets: {code} ({}): not retriable; the checkpoints hold every \
                 processed offset",
                cause.as_str()
            );
        }
        tracing::warn!(
            reason = cause.as_str(),
            error = %code,
            pending = self.uncommitted.len(),
            "offset commit refused; retried at the next flush"
        );
        Ok(())
    }

    /// Sends the pending offsets to the group, unless a commit is still
    /// waiting for its answer (a commit that hangs, up to librdkafka's
    /// `session.timeout.ms` when no coordinator is known, is not doubled).
    fn commit_pending(&mut self) -> Result<()> {
        if self.uncommitted.is_empty() || self.commit_in_flight {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, next) in &self.uncommitted {
            tpl.add_partition_offset(&self.sinks.source_topic, *p, Offset::Offset(*next))
                .context("building the offset commit")?;
        }
        self.commit_sent_at = Some(Instant::now());
        if !self.committer.commit(tpl) {
            bail!("the offset commit thread stopped");
        }
        self.commit_in_flight = true;
        Ok(())
    }

    fn process(&mut self, partition: i32, offset: i64, payload: &[u8], now: i64) -> Result<()> {
        let Some(t) = self.tasks.get_mut(&partition) else {
            metrics::counter!(obs::RECORDS_SKIPPED, "reason" => "not_assigned").increment(1);
            return Ok(());
        };
        if let Some(next) = t.next_offset {
            if offset < next {
                // Normal only for a moment (the group's commit lags the
                // checkpoint after a crash between the two). A long run of
                // these means the topic was recreated under the checkpoint.
                if !t.warned_skip {
                    t.warned_skip = true;
                    tracing::warn!(
                        partition,
                        offset,
                        checkpoint_offset = next,
                        "skipping records the checkpoint already holds"
                    );
                }
                metrics::counter!(obs::RECORDS_SKIPPED, "reason" => "before_checkpoint")
                    .increment(1);
                return Ok(());
            }
        }
        // A record is proof the partition can be fetched: a pause the
        // statistics have not caught up with ends here.
        t.clocks_run(true, 0);
        t.sweep(&self.data_dir, &self.sinks.source_topic, offset)?;
        t.range_start.get_or_insert(offset);
        t.next_offset = Some(offset + 1);
        let points_before = t.pipeline.stats().points_in;
        let pos = Position { partition, offset };
        match self.settings.worker.input_format {
            InputFormat::Vigil => t.pipeline.process(pos, payload, now, &mut t.out),
            InputFormat::Otlp => t.pipeline.process_otlp(pos, payload, now, &mut t.out),
        }
        self.summary.records += 1;
        let p = &self.progress;
        p.first_record.get_or_init(Instant::now);
        let points = t.pipeline.stats().points_in.saturating_sub(points_before);
        p.records.fetch_add(1, Ordering::Relaxed);
        p.points.fetch_add(points, Ordering::Relaxed);
        t.stage.route(&mut t.out, &self.router, &mut self.sinks)?;
        Ok(())
    }

    /// A flush point: waits for the flush in flight, if any, to be done
    /// (at most one is), then seals every partition with records (or
    /// processing-time output) since its last flush and hands them to the
    /// publishing thread, which publishes, acknowledges and checkpoints
    /// them while this member consumes on (module docs, "Double-buffered
    /// output"); `drain`: waits for that flush too, and for no flush past
    /// that instant (the shutdown drain). Offsets of finished flushes go to
    /// the committer.
    fn flush_all(&mut self, delivery_timeout: Duration, drain: Option<Instant>) -> Result<()> {
        let stalled = Instant::now();
        self.finish_flush(drain.map_or(Wait::Done, Wait::Until))?;
        if self.flusher.in_flight() {
            // Asked to stop meanwhile: the drain waits for it, by its
            // deadline, and seals what is left.
            return Ok(());
        }
        let dirty: Vec<i32> = self
            .tasks
            .values()
            .filter(|t| t.range_start.is_some() || t.tick_output())
            .map(|t| t.partition)
            .collect();
        if !dirty.is_empty() {
            let sealed = self.seal(&dirty, delivery_timeout);
            let took = stalled.elapsed();
            self.progress
                .flushing_ns
                .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
            metrics::histogram!(obs::FLUSH_STALL_SECONDS).record(took.as_secs_f64());
            sealed?;
            if let Some(deadline) = drain {
                self.finish_flush(Wait::Until(deadline))?;
            }
        }
        self.commit_pending()
    }

    /// Takes the outcome of the flush in flight (waiting for it as `wait`
    /// says) and applies it: a finished flush's offsets become pending
    /// commits; one handed back unconfirmed goes on once this member
    /// proved it still owns its partitions (and is waited for again), or
    /// is dropped with them; a failed one is this member's error.
    fn finish_flush(&mut self, wait: Wait) -> Result<()> {
        loop {
            let until = match wait {
                Wait::No => None,
                Wait::Done => Some(Instant::now() + WAIT_SLICE),
                Wait::Until(deadline) => Some(deadline.min(Instant::now() + WAIT_SLICE)),
            };
            let Some(o) = self.flusher.outcome(until)? else {
                if !self.flusher.in_flight() {
                    return Ok(());
                }
                match wait {
                    Wait::No => return Ok(()),
                    // The drain takes over, with its own deadline.
                    Wait::Done if self.stop.requested() => return Ok(()),
                    Wait::Until(deadline) if Instant::now() >= deadline => {
                        metrics::counter!(obs::DRAIN_TIMEOUTS).increment(1);
                        bail!(
                            "the flush being published was not done by the end of the shutdown \
                             drain; its partitions resume from their last checkpoint"
                        );
                    }
                    _ => continue,
                }
            };
            match o {
                flusher::Outcome::Done(job) => {
                    // When its last step ended: a pause since then (while
                    // this thread waited for the outcome) still shows.
                    self.beat = self.beat.max(job.finished);
                    self.flushed(job);
                    return Ok(());
                }
                flusher::Outcome::Failed(e) => return Err(e),
                flusher::Outcome::Unconfirmed(mut job, reason) => {
                    metrics::counter!(obs::FLUSH_UNCONFIRMED, "reason" => reason).increment(1);
                    // A proof whatever this thread's own beat says: it may
                    // have run since the process resumed.
                    let verdict = if self.consumer.assignment_lost() {
                        Some("assignment_lost")
                    } else {
                        self.prove_membership_with(Some(&job))?
                    };
                    if let Some(why) = verdict {
                        // Fenced: the partitions and the flush are dropped.
                        self.fence(why);
                        return Ok(());
                    }
                    self.beat = Instant::now();
                    // Partitions revoked meanwhile are not published on.
                    job.parts.retain(|p| {
                        self.tasks
                            .get(&p.partition)
                            .is_some_and(|t| t.owner == p.owner)
                    });
                    if job.parts.is_empty() {
                        return Ok(());
                    }
                    self.flusher.submit(job)?;
                    if matches!(wait, Wait::No) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// A flush is published and checkpointed: each partition (still owned
    /// by the owner that sealed it) gets its chain and spare stage back,
    /// and its offset becomes a pending commit.
    fn flushed(&mut self, job: flusher::Job) {
        for part in job.parts {
            let Some(t) = self.tasks.get_mut(&part.partition) else {
                continue;
            };
            if t.owner != part.owner || !part.done() {
                continue;
            }
            let tick = part.tick();
            t.durable = Some(part.next);
            t.chain = Some(part.chain);
            t.spare = Some(part.stage);
            if !tick {
                // A tick file does not move the offset.
                self.uncommitted.insert(part.partition, part.next);
            }
        }
        self.summary.flushes += 1;
        self.progress.flushes.fetch_add(1, Ordering::Relaxed);
    }

    /// Seals the partitions `dirty` at this flush point and hands them to
    /// the publishing thread as one flush.
    fn seal(&mut self, dirty: &[i32], delivery_timeout: Duration) -> Result<()> {
        let span = tracing::info_span!("seal", partitions = dirty.len());
        let _g = span.enter();
        let topic = self.sinks.source_topic.clone();
        if failpoint::fails("flush.error") {
            bail!("failpoint flush.error: the flush failed");
        }
        if !self.confirm_owner()? {
            return Ok(());
        }
        let mut parts = Vec::with_capacity(dirty.len());
        for p in dirty {
            let Some(t) = self.tasks.get_mut(p) else {
                continue;
            };
            let Some(next) = t.next_offset else { continue };
            let span = match t.range_start {
                Some(first) => flusher::Span::Records {
                    first,
                    last: next - 1,
                },
                None if next >= 1 => {
                    // The files after the checkpoint go before a tick file
                    // takes its place in the sequence.
                    t.sweep(&self.data_dir, &topic, next)?;
                    flusher::Span::Ticks {
                        after: next - 1,
                        n: t.ticks + 1,
                    }
                }
                None => continue,
            };
            let spare = match t.spare.take() {
                Some(s) => s,
                None => stage_for(
                    &self.settings,
                    &self.data_dir,
                    self.sinks.dlq_topic.is_some(),
                    &topic,
                )?,
            };
            let chain = t.chain.take().unwrap_or_else(|| chain::Chain::new(t.epoch));
            // Where this flush and the one before it write: the intent
            // record the publishing thread writes before the first file.
            let days = t.stage.days();
            let mut named = days.clone();
            if let Some(last) = &t.last_days {
                named.extend(last);
            }
            let intent = Intent {
                days: named,
                full: t.last_days.is_none(),
            };
            t.last_days = Some(days);
            let stage = std::mem::replace(&mut t.stage, spare);
            let snapshot = chain.snapshot(&t.pipeline);
            t.pipeline.checkpointed();
            let ticks = match span {
                flusher::Span::Ticks { n, .. } => n,
                flusher::Span::Records { .. } => 0,
            };
            t.ticks = ticks;
            t.range_start = None;
            t.sealed();
            parts.push(flusher::Part::new(
                *p,
                (t.owner, t.epoch),
                span,
                stage,
                intent,
                snapshot,
                chain,
                (next, ticks),
            ));
        }
        if parts.is_empty() {
            return Ok(());
        }
        let mark = self.sinks.producer.mark();
        self.flusher
            .submit(flusher::Job::new(parts, mark, delivery_timeout))
    }
}

/// Writes the checkpoint of `topic`/`partition` at (next offset, ticks,
/// owner epoch) `at`: the state taken at the flush point (`snapshot`, a
/// delta of what changed since the last checkpoint or a new base, see
/// [`chain`]) goes into a state file, streamed, so a partition of a
/// million series is never held in memory as JSON; the checkpoint naming
/// it is written once it is durable. Returns the bytes written and
/// whether the state file was a delta.
fn write_checkpoint(
    store: &CheckpointStore,
    topic: &str,
    partition: i32,
    at: (i64, u32, u64),
    chain: &mut chain::Chain,
    snapshot: &chain::Snapshot,
) -> Result<(u64, bool)> {
    let (next_offset, ticks, epoch) = at;
    let (named, state) = chain.write(store, topic, partition, snapshot)?;
    let ckpt = CheckpointOut {
        format: CHECKPOINT_FORMAT,
        topic,
        partition,
        next_offset,
        ticks,
        epoch,
        written_at_ms: wall_ms(),
        state: &named,
    };
    let (_, head) = store
        .save_with(topic, partition, |w| {
            serde_json::to_writer(w, &ckpt).map_err(std::io::Error::other)
        })
        .with_context(|| format!("writing the checkpoint of partition {partition}"))?;
    chain.committed(store, topic, partition, named, &state);
    let bytes = head + state.bytes;
    tracing::trace!(
        partition,
        delta = state.delta,
        agents = state.agents,
        bytes,
        "checkpoint written"
    );
    metrics::histogram!(obs::CHECKPOINT_BYTES).record(bytes as f64);
    Ok((bytes, state.delta))
}

impl PartitionTask {
    /// Whether the partition's processing-time clocks run at this tick.
    /// While it cannot be fetched (`fetchable` false, from the consumer's
    /// last statistics), the silence of its agents is the broker's, not
    /// theirs: the clocks pause (no idle close, no `agent_offline`), and
    /// when it can be fetched again the pause (`since` ms per tick) is
    /// skipped, as for the time no worker owned the partition.
    fn clocks_run(&mut self, fetchable: bool, since: i64) -> bool {
        match (fetchable, self.paused_ms) {
            (false, paused) => {
                if paused.is_none() {
                    tracing::warn!(
                        partition = self.partition,
                        "partition cannot be fetched (leader unknown or down): its idle and \
                         offline clocks pause"
                    );
                    metrics::gauge!(obs::PARTITION_CLOCKS_PAUSED, "partition" => self.partition.to_string())
                        .set(1.0);
                }
                self.paused_ms = Some(paused.unwrap_or(0) + since);
                metrics::counter!(obs::CLOCKS_PAUSED_MS).increment(since.max(0) as u64);
                false
            }
            (true, Some(paused)) => {
                self.paused_ms = None;
                self.pipeline.skip_processing_time(paused);
                tracing::info!(
                    partition = self.partition,
                    paused_ms = paused,
                    "partition can be fetched again: its clocks resume, the pause skipped"
                );
                metrics::gauge!(obs::PARTITION_CLOCKS_PAUSED, "partition" => self.partition.to_string())
                    .set(0.0);
                true
            }
            (true, None) => true,
        }
    }

    /// Whether the partition has output of processing time alone to
    /// publish as a tick file: nothing received since its last flush,
    /// rows buffered, and a record it follows (always true once it has
    /// state: the state came from records).
    fn tick_output(&self) -> bool {
        self.range_start.is_none()
            && self.next_offset.is_some_and(|n| n >= 1)
            && self.stage.has_buffered()
    }

    /// Before the partition publishes anything for the first time, removes
    /// the output published after its checkpoint (or from `first`, the
    /// first offset it processes, when it has none): files of records from
    /// the checkpoint's offset on and tick files past its count (see
    /// [`vigil_store::replace::SourceFile::after`]).
    fn sweep(&mut self, root: &Root, topic: &str, first: i64) -> Result<()> {
        if self.swept {
            return Ok(());
        }
        let partition = self.partition;
        let from = self.next_offset.unwrap_or(first).min(first);
        let days = self.sweep_days.take();
        let scope = if days.is_some() { "intent" } else { "full" };
        let removed = vigil_store::remove_partition_files_at(
            root,
            topic,
            partition,
            from,
            self.ticks,
            days.as_ref(),
        )
        .with_context(|| {
            format!("removing output of partition {partition} published after its checkpoint")
        })?;
        metrics::counter!(obs::SWEEPS, "scope" => scope).increment(1);
        tracing::debug!(
            partition,
            scope,
            directories = days.as_ref().map(DatasetDays::directories),
            "swept the output after the checkpoint"
        );
        if removed > 0 {
            tracing::info!(
                partition,
                from,
                ticks = self.ticks,
                removed,
                scope,
                "removed output published after the last checkpoint"
            );
        }
        self.swept = true;
        Ok(())
    }

    fn pending_records(&self) -> u64 {
        match (self.range_start, self.next_offset) {
            (Some(a), Some(n)) => (n - a) as u64,
            _ => 0,
        }
    }

    /// The partition was sealed for a flush: its counters and state
    /// gauges as of now are published.
    fn sealed(&mut self) {
        let now = self.pipeline.stats().clone();
        obs::publish(&self.published, &now);
        let otlp = self.pipeline.otlp_stats().clone();
        obs::publish_otlp(&self.published_otlp, &otlp);
        self.published_otlp = otlp;
        obs::publish_state(self.partition, Some(&self.pipeline));
        self.published = now;
    }
}

/// Installs SIGTERM and SIGINT handlers that set the returned flag.
pub fn shutdown_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, flag.clone()).context("installing a signal handler")?;
    }
    Ok(flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint with its state inline, as formats 4 to 7 were
    /// written (they still restore).
    #[derive(Serialize)]
    struct CheckpointInline<'a> {
        format: u32,
        topic: &'a str,
        partition: i32,
        next_offset: i64,
        ticks: u32,
        epoch: u64,
        written_at_ms: i64,
        pipeline: &'a Pipeline,
    }

    fn hook(dir: &std::path::Path) -> CheckpointHook {
        CheckpointHook::at(dir, Arc::new(RuleSet::default()))
    }

    /// A proof never commits past a flush that is not done: after a seal
    /// the partition's next records start a new range, and a first flush
    /// has no checkpoint to fall back on.
    #[test]
    fn a_proof_never_commits_past_a_flush_not_done() {
        // A first flush (records 0-99) handed back, records 100+ since.
        assert_eq!(proof_offset(None, None, Some(100), Some(0)), Some(0));
        // With a checkpoint at 40 before it.
        assert_eq!(proof_offset(None, Some(40), Some(100), Some(40)), Some(40));
        // No flush in flight: the pending commit, the checkpoint, the range.
        assert_eq!(proof_offset(Some(60), Some(60), Some(70), None), Some(60));
        assert_eq!(proof_offset(None, None, Some(70), None), Some(70));
        assert_eq!(proof_offset(None, None, None, None), None);
    }

    #[test]
    fn checkpoint_of_another_format_or_partition_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let h = hook(d.path());
        assert!(h
            .load("t", 0, Committed::Unknown)
            .unwrap()
            .restored
            .is_none());
        let old = br#"{"format":2,"topic":"t","partition":0,"next_offset":5,"written_at_ms":0,"pipeline":{"old":"layout"}}"#;
        h.store.save("t", 0, old).unwrap();
        let e = format!("{:#}", h.load("t", 0, Committed::Unknown).err().unwrap());
        assert!(
            e.contains("format 2")
                && e.contains(&format!("reads formats 4 to {CHECKPOINT_FORMAT}")),
            "{e}"
        );

        let p = Pipeline::new(PipelineConfig::default(), Arc::new(RuleSet::default())).unwrap();
        let out = CheckpointInline {
            ticks: 0,
            format: 7,
            topic: "t",
            partition: 1,
            next_offset: 7,
            epoch: 1,
            written_at_ms: 0,
            pipeline: &p,
        };
        h.store
            .save("t", 0, &serde_json::to_vec(&out).unwrap())
            .unwrap();
        let e = format!("{:#}", h.load("t", 0, Committed::Unknown).err().unwrap());
        assert!(e.contains("is for t/1, expected t/0"), "{e}");
        h.store
            .save("t", 1, &serde_json::to_vec(&out).unwrap())
            .unwrap();
        let r = h
            .load("t", 1, Committed::Unknown)
            .unwrap()
            .restored
            .unwrap();
        assert_eq!(r.next_offset, 7);
        // The previous format restores too (its added fields default).
        let mut v = serde_json::to_value(&out).unwrap();
        v["format"] = 4.into();
        h.store
            .save("t", 1, &serde_json::to_vec(&v).unwrap())
            .unwrap();
        assert_eq!(
            h.load("t", 1, Committed::Unknown)
                .unwrap()
                .restored
                .unwrap()
                .next_offset,
            7
        );
    }

    /// A checkpoint of format 5 (written before the detector-family
    /// registry, with detector state of every family) restores.
    #[test]
    fn format_5_checkpoint_restores() {
        let d = tempfile::tempdir().unwrap();
        let mut h = hook(d.path());
        // As the pipeline that wrote it.
        h.cfg.clock = ClockMode::Wall;
        let pipeline = include_str!("../../vigil-ops/src/pipeline/testdata/pipeline_v5.json");
        let text = format!(
            r#"{{"format":5,"topic":"t","partition":0,"next_offset":9,"written_at_ms":0,"pipeline":{pipeline}}}"#
        );
        h.store.save("t", 0, text.as_bytes()).unwrap();
        let r = h
            .load("t", 0, Committed::Unknown)
            .unwrap()
            .restored
            .unwrap();
        assert_eq!(r.next_offset, 9);
        assert_eq!(r.pipeline.agents_held(), 4);
    }

    /// `vigil compact` reads the offset a checkpoint continues from (by
    /// the sanitized topic of file names), and refuses another partition's.
    #[test]
    fn compaction_reads_the_checkpoint_offset() {
        let d = tempfile::tempdir().unwrap();
        let h = hook(d.path());
        let topic = "rmm/odd topic";
        let source = vigil_store::sanitize_source(topic);
        assert_eq!(checkpoint_next_offset(&h.store, &source, 3).unwrap(), None);
        let p = Pipeline::new(PipelineConfig::default(), Arc::new(RuleSet::default())).unwrap();
        let out = CheckpointInline {
            ticks: 0,
            format: 7,
            topic,
            partition: 3,
            next_offset: 1234,
            epoch: 1,
            written_at_ms: 0,
            pipeline: &p,
        };
        h.store
            .save(topic, 3, &serde_json::to_vec(&out).unwrap())
            .unwrap();
        assert_eq!(
            checkpoint_next_offset(&h.store, &source, 3).unwrap(),
            Some(1234)
        );
        h.store
            .save(topic, 4, &serde_json::to_vec(&out).unwrap())
            .unwrap();
        let e = format!(
            "{:#}",
            checkpoint_next_offset(&h.store, &source, 4).unwrap_err()
        );
        assert!(e.contains("expected"), "{e}");
    }

    fn ckpt_at(p: &Pipeline, partition: i32, next_offset: i64) -> Vec<u8> {
        ckpt_by(p, partition, next_offset, 1)
    }

    /// A checkpoint written by an owner of `epoch`.
    fn ckpt_by(p: &Pipeline, partition: i32, next_offset: i64, epoch: u64) -> Vec<u8> {
        serde_json::to_vec(&CheckpointInline {
            ticks: 0,
            format: 7,
            topic: "t",
            partition,
            next_offset,
            epoch,
            written_at_ms: 0,
            pipeline: p,
        })
        .unwrap()
    }

    /// A fenced worker's late checkpoint (written after the new owner's,
    /// so the new owner's is the previous generation) is passed over when
    /// it is behind the group's committed offset or comes from an earlier
    /// owner (smaller epoch); the restoring owner's epoch is one more than
    /// the greatest found.
    #[test]
    fn a_fenced_workers_late_checkpoint_is_passed_over() {
        let d = tempfile::tempdir().unwrap();
        let h = hook(d.path());
        let p = Pipeline::new(PipelineConfig::default(), Arc::new(RuleSet::default())).unwrap();
        let prev = h.store.path_of("t", 0, Generation::Previous);
        let write = |first: (i64, u64), second: (i64, u64)| {
            let _ = std::fs::remove_file(&prev);
            h.store
                .save("t", 0, &ckpt_by(&p, 0, first.0, first.1))
                .unwrap();
            h.store
                .save("t", 0, &ckpt_by(&p, 0, second.0, second.1))
                .unwrap();
        };
        let restored = |c: Committed| {
            let a = h.load("t", 0, c).unwrap();
            (a.restored.unwrap().next_offset, a.epoch)
        };
        // The owner of epoch 3 checkpointed 200, then the zombie of epoch 2
        // wrote 150 over it.
        write((200, 3), (150, 2));
        for c in [
            Committed::Offset(200),
            Committed::Offset(150),
            Committed::Offset(100),
            Committed::None,
            Committed::Unknown,
        ] {
            assert_eq!(restored(c), (200, 4), "{c:?}");
        }
        // Checkpoints from before epochs: the commit alone decides.
        write((200, 0), (150, 0));
        assert_eq!(restored(Committed::Offset(200)), (200, 1));
        assert_eq!(
            restored(Committed::Offset(201)),
            (150, 1),
            "none reaches it: newest"
        );
        assert_eq!(restored(Committed::Offset(150)), (150, 1));
        assert_eq!(restored(Committed::Unknown), (150, 1));
        // The usual order (the newest is the later one) is kept.
        write((150, 3), (200, 3));
        assert_eq!(restored(Committed::Offset(150)), (200, 4));
        write((150, 2), (200, 3));
        assert_eq!(restored(Committed::Offset(200)), (200, 4));
        // A damaged preferred generation falls back to the other.
        write((200, 3), (150, 2));
        std::fs::write(&prev, b"torn").unwrap();
        assert_eq!(restored(Committed::Offset(200)), (150, 3));
        // A partition without checkpoints starts at epoch 1.
        let a = h.load("t", 5, Committed::None).unwrap();
        assert!(a.restored.is_none());
        assert_eq!(a.epoch, 1);
    }

    /// A commit's answer as a membership verdict: refusals that name this
    /// member or its generation fence it; a rebalance in progress does not
    /// (the coordinator checked both first); coordinator and network
    /// trouble say nothing.
    /// Members of one worker join as consumers of their own: each gets a
    /// `client.id` of its own, and under static membership a
    /// `group.instance.id` of its own (one id for two members would fence
    /// one of them at every join). One member keeps the settings as given.
    #[test]
    fn each_member_has_its_own_client_and_instance_id() {
        let mut kafka = vigil_kafka::KafkaSettings::default();
        let one = member_kafka(&kafka, 0, 1);
        assert_eq!(one, kafka);
        let m1 = member_kafka(&kafka, 1, 2);
        assert_eq!(
            m1.consumer_properties.get("client.id").map(String::as_str),
            Some("vigil-consumer-1")
        );
        assert!(!m1.consumer_properties.contains_key("group.instance.id"));
        kafka
            .properties
            .insert("group.instance.id".into(), "pod-7".into());
        kafka
            .consumer_properties
            .insert("client.id".into(), "edge".into());
        let m0 = member_kafka(&kafka, 0, 3);
        let m2 = member_kafka(&kafka, 2, 3);
        let get = |k: &vigil_kafka::KafkaSettings, key: &str| {
            k.consumer_properties.get(key).cloned().unwrap_or_default()
        };
        assert_eq!(get(&m0, "group.instance.id"), "pod-7-0");
        assert_eq!(get(&m2, "group.instance.id"), "pod-7-2");
        assert_eq!(get(&m2, "client.id"), "edge-2");
        // The members' consumer configurations really differ.
        let id = |k: &vigil_kafka::KafkaSettings| {
            let c = k
                .client_config(vigil_kafka::config::Role::Consumer)
                .unwrap();
            (
                c.get("client.id").map(str::to_owned),
                c.get("group.instance.id").map(str::to_owned),
            )
        };
        assert_ne!(id(&m0), id(&m2));
    }

    /// The queues that bound memory are shared out: the consumer's
    /// prefetch queue as configured (default.toml: 16384 KB, 20000
    /// messages) and the producer's (Vigil's defaults, 65536 KB and
    /// 100000 messages) are split between the members, rounding up, and
    /// the producer's queue still holds one message of the largest size.
    #[test]
    fn members_share_the_queues_that_bound_memory() {
        use vigil_kafka::config::Role::{Consumer, Producer};
        let mut kafka = vigil_kafka::KafkaSettings::default();
        kafka
            .consumer_properties
            .insert("queued.max.messages.kbytes".into(), "16384".into());
        kafka
            .consumer_properties
            .insert("queued.min.messages".into(), "20001".into());
        let get = |k: &vigil_kafka::KafkaSettings, role, key: &str| {
            k.client_config(role).unwrap().get(key).map(str::to_owned)
        };
        let one = member_kafka(&kafka, 0, 1);
        let two = member_kafka(&kafka, 1, 2);
        // 256 members: 256 KB each, but a message of message.max.bytes
        // (librdkafka's default, 1,000,000 bytes) must fit: 977 KB + 1.
        let many = member_kafka(&kafka, 3, 256);
        for (k, role, key, want) in [
            (&one, Consumer, "queued.max.messages.kbytes", "16384"),
            (&one, Producer, "queue.buffering.max.kbytes", "65536"),
            (&two, Consumer, "queued.max.messages.kbytes", "8192"),
            (&two, Consumer, "queued.min.messages", "10001"),
            (&two, Producer, "queue.buffering.max.kbytes", "32768"),
            (&two, Producer, "queue.buffering.max.messages", "50000"),
            (&many, Producer, "queue.buffering.max.kbytes", "978"),
            (&many, Consumer, "queued.max.messages.kbytes", "64"),
        ] {
            assert_eq!(get(k, role, key).as_deref(), Some(want), "{key}");
        }
    }

    #[test]
    fn commit_answers_read_as_membership() {
        use vigil_kafka::consumer::CommitOutcome;
        use vigil_kafka::rdkafka::error::RDKafkaErrorCode as C;
        let answer = |error: Option<C>, part: Result<(), C>| CommitOutcome {
            partitions: vec![("t".into(), 0, Some(5), part)],
            error,
        };
        assert_eq!(membership_of(&answer(None, Ok(()))), Membership::Member);
        for c in [
            C::UnknownMemberId,
            C::IllegalGeneration,
            C::FencedInstanceId,
            C::AssignmentLost,
        ] {
            assert_eq!(
                membership_of(&answer(Some(c), Ok(()))),
                Membership::Fenced,
                "{c:?}"
            );
            assert_eq!(
                membership_of(&answer(None, Err(c))),
                Membership::Fenced,
                "{c:?}"
            );
        }
        assert_eq!(
            membership_of(&answer(Some(C::RebalanceInProgress), Ok(()))),
            Membership::Member
        );
        for c in [
            C::CoordinatorNotAvailable,
            C::RequestTimedOut,
            C::NotCoordinator,
        ] {
            assert_eq!(
                membership_of(&answer(Some(c), Ok(()))),
                Membership::Unknown,
                "{c:?}"
            );
        }
        // A fencing code wins over an unknown one.
        assert_eq!(
            membership_of(&answer(Some(C::RequestTimedOut), Err(C::IllegalGeneration))),
            Membership::Fenced
        );
    }

    /// The header is read without the state: what follows `"pipeline":`
    /// is never parsed (here it is not even JSON), and a real checkpoint's
    /// header reads the same as its full decode.
    #[test]
    fn the_header_is_read_without_the_state() {
        let head = br#"{"format":7,"topic":"t","partition":3,"next_offset":42,"ticks":1,"epoch":9,"written_at_ms":5,"pipeline":"#;
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(b"\xff\xfe not json at all");
        let h = read_header(&bytes[..]).unwrap();
        assert_eq!(
            (
                h.format,
                h.topic.as_str(),
                h.partition,
                h.next_offset,
                h.epoch
            ),
            (7, "t", 3, 42, 9)
        );
        // Fields missing before the state are an error, not a default.
        assert!(read_header(&br#"{"format":7,"pipeline":"#[..]).is_err());
        assert!(read_header(&b"[1,2]"[..]).is_err());
        assert!(read_header(&br#"{"format":7,"topic":"t""#[..]).is_err());
        let p = Pipeline::new(
            PipelineConfig::default(),
            Arc::new(RuleSet::default_rules()),
        )
        .unwrap();
        let full = ckpt_by(&p, 2, 77, 4);
        let h = read_header(&full[..]).unwrap();
        assert_eq!((h.partition, h.next_offset, h.epoch), (2, 77, 4));
    }

    /// A newest checkpoint that is corrupt (checksum), torn (no trailer,
    /// cut JSON), does not decode, or is missing falls back to the
    /// previous generation; both damaged is an error that names the
    /// newest's damage; compaction's bound is the older generation's
    /// offset, which a fallback could resume from.
    #[test]
    fn a_damaged_newest_checkpoint_falls_back_to_the_previous() {
        let d = tempfile::tempdir().unwrap();
        let h = hook(d.path());
        let p = Pipeline::new(PipelineConfig::default(), Arc::new(RuleSet::default())).unwrap();
        let newest = h.store.path("t", 0);
        let prev = h.store.path_of("t", 0, Generation::Previous);
        let fresh = |h: &CheckpointHook| {
            let _ = std::fs::remove_file(&prev);
            h.store.save("t", 0, &ckpt_at(&p, 0, 100)).unwrap();
            h.store.save("t", 0, &ckpt_at(&p, 0, 200)).unwrap();
        };
        fresh(&h);
        assert_eq!(
            h.load("t", 0, Committed::Unknown)
                .unwrap()
                .restored
                .unwrap()
                .next_offset,
            200
        );
        assert_eq!(checkpoint_next_offset(&h.store, "t", 0).unwrap(), Some(100));
        let good = std::fs::read(&newest).unwrap();
        let damaged: [(&str, Vec<u8>); 4] = [
            ("a flipped byte", {
                let mut b = good.clone();
                b[good.len() / 2] ^= 0x20;
                b
            }),
            ("torn", good[..good.len() / 2].to_vec()),
            ("valid trailer, not JSON", {
                h.store.save("t", 9, b"{\"format\": ").unwrap();
                std::fs::read(h.store.path("t", 9)).unwrap()
            }),
            ("empty", Vec::new()),
        ];
        for (what, bytes) in &damaged {
            fresh(&h);
            std::fs::write(&newest, bytes).unwrap();
            let r = h
                .load("t", 0, Committed::Unknown)
                .unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert_eq!(r.restored.unwrap().next_offset, 100, "{what}");
            assert_eq!(
                checkpoint_next_offset(&h.store, "t", 0).unwrap(),
                Some(100),
                "{what}"
            );
        }
        fresh(&h);
        std::fs::remove_file(&newest).unwrap();
        assert_eq!(
            h.load("t", 0, Committed::Unknown)
                .unwrap()
                .restored
                .unwrap()
                .next_offset,
            100,
            "missing"
        );
        // Both damaged: an error, naming what is wrong.
        fresh(&h);
        std::fs::write(&newest, &damaged[0].1).unwrap();
        std::fs::write(&prev, &damaged[1].1).unwrap();
        let e = format!("{:#}", h.load("t", 0, Committed::Unknown).err().unwrap());
        assert!(
            e.contains("no checkpoint of t/0 can be restored") && e.contains("corrupt"),
            "{e}"
        );
        assert!(checkpoint_next_offset(&h.store, "t", 0).is_err());
        // Another format is not damage: no fallback past it.
        fresh(&h);
        let mut v: serde_json::Value = serde_json::from_slice(&ckpt_at(&p, 0, 300)).unwrap();
        v["format"] = 99.into();
        h.store
            .save("t", 0, &serde_json::to_vec(&v).unwrap())
            .unwrap();
        let e = format!("{:#}", h.load("t", 0, Committed::Unknown).err().unwrap());
        assert!(e.contains("format 99"), "{e}");
    }

    /// Worker tests against librdkafka's mock cluster (in process, no
    /// broker): the commit path under injected coordinator errors.
    mod mock {
        use std::thread::JoinHandle;

        use vigil_kafka::rdkafka::mocking::MockCluster;
        use vigil_kafka::rdkafka::producer::DefaultProducerContext;
        use vigil_kafka::rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        use vigil_kafka::Role;

        use super::*;

        const RECORDS: usize = 20;

        fn settings(
            cluster: &MockCluster<'_, DefaultProducerContext>,
            dir: &std::path::Path,
        ) -> Settings {
            let mut s = Settings::load(None).unwrap();
            s.kafka.brokers = cluster.bootstrap_servers();
            s.kafka.telemetry_topic = "telemetry".into();
            s.kafka.alert_topic = "alerts".into();
            s.kafka.dlq_topic = String::new();
            s.kafka.group_id = "g".into();
            s.data_dir = dir.join("data").into();
            s.worker.state_dir = dir.join("state").into();
            s.worker.flush_interval = Duration::from_millis(200);
            s.worker.shutdown_timeout = Duration::from_secs(2);
            s.worker.metrics_listen = String::new();
            s.storage.parquet.sync = false;
            // One member: these tests choreograph one member's commits on
            // librdkafka's mock cluster, whose group handling is not a
            // broker's; several members are tested against the broker
            // (tests/integration/kafka.rs, kafka/chaos.rs).
            s.worker.threads = 1;
            s
        }

        /// A cluster with the topics and `RECORDS` telemetry records in
        /// partition 0.
        fn cluster_with_records() -> MockCluster<'static, DefaultProducerContext> {
            let cluster = MockCluster::new(1).unwrap();
            cluster.create_topic("telemetry", 1, 1).unwrap();
            cluster.create_topic("alerts", 1, 1).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let s = settings(&cluster, dir.path());
            let mut p = AckedProducer::new(&s.kafka, Duration::from_secs(10)).unwrap();
            let fleet = vigil_sim::Fleet::new(vigil_sim::FleetConfig {
                agents: 4,
                tenants: 1,
                duration_ms: 3_600_000,
                seed: 7,
                ..vigil_sim::FleetConfig::default()
            });
            for r in fleet.take(RECORDS) {
                p.send("telemetry", Some(r.key.as_bytes()), &r.payload, &[])
                    .unwrap();
            }
            p.flush(Duration::from_secs(30)).unwrap();
            cluster
        }

        struct Running {
            handle: JoinHandle<Result<WorkerSummary>>,
            shutdown: Arc<AtomicBool>,
            progress: Arc<WorkerProgress>,
        }

        fn start(settings: Settings) -> Running {
            let shutdown = Arc::new(AtomicBool::new(false));
            let progress = Arc::new(WorkerProgress::default());
            let (sd, pr) = (shutdown.clone(), progress.clone());
            let handle = std::thread::spawn(move || {
                Worker::run_with_progress(settings, Arc::new(RuleSet::default_rules()), sd, pr)
            });
            Running {
                handle,
                shutdown,
                progress,
            }
        }

        impl Running {
            fn stop(self) -> Result<WorkerSummary> {
                self.shutdown.store(true, Ordering::Relaxed);
                self.handle.join().unwrap()
            }
        }

        /// The group's committed offset of partition 0, through a client
        /// that does not join the group.
        fn committed(settings: &Settings) -> Option<i64> {
            let mut c = settings.kafka.client_config(Role::Consumer).unwrap();
            c.set("statistics.interval.ms", "0");
            let c: BaseConsumer = c.create().unwrap();
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition("telemetry", 0);
            let got = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
            got.find_partition("telemetry", 0)?
                .offset()
                .to_raw()
                .filter(|o| *o >= 0)
        }

        fn wait_until(what: &str, running: &Running, mut done: impl FnMut() -> bool) {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !done() {
                assert!(
                    !running.handle.is_finished(),
                    "the worker exited while waiting for {what}"
                );
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }

        /// Regression: a refused offset commit (`commit(Sync)?`) stopped
        /// the worker. Now a commit refused with REBALANCE_IN_PROGRESS and
        /// then ILLEGAL_GENERATION (which makes librdkafka drop the
        /// assignment and rejoin) is counted, the worker keeps running,
        /// and a later flush commits every processed offset.
        #[test]
        fn a_refused_commit_is_retried_at_the_next_flush() {
            let cluster = cluster_with_records();
            cluster.request_errors(
                RDKafkaApiKey::OffsetCommit,
                &[
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
                ],
            );
            let dir = tempfile::tempdir().unwrap();
            let s = settings(&cluster, dir.path());
            let w = start(s.clone());
            // The group shows the commit before the worker has read its
            // answer and counted it: wait for both.
            wait_until("the commit after two refusals", &w, || {
                w.progress.commit_failures() >= 2
                    && committed(&s) == Some(RECORDS as i64)
                    && w.progress.commits() >= 1
            });
            assert!(w.progress.commits() >= 1);
            assert!(w.progress.records() >= RECORDS as u64);
            w.stop().unwrap();
        }

        /// The aggregate rows under the data directory: (row count,
        /// distinct (agent, metric, labels, window) keys).
        fn aggregate_rows(dir: &std::path::Path) -> (usize, usize) {
            let dir = dir.join("data");
            if !dir.join("aggregates").exists() {
                return (0, 0);
            }
            let session = vigil_query::QuerySession::open(&dir).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let q =
                "SELECT COUNT(*) AS n, COUNT(DISTINCT (agent, metric, labels, window_start)) AS k \
                     FROM aggregates";
            let b = rt.block_on(session.sql(q)).unwrap();
            use datafusion::arrow::array::AsArray;
            use datafusion::arrow::datatypes::Int64Type;
            let col = |c: usize| b[0].column(c).as_primitive::<Int64Type>().value(0) as usize;
            (col(0), col(1))
        }

        /// The tick files (see [`SourceRange::ticks`]) of `aggregates/`.
        fn tick_files(dir: &std::path::Path) -> Vec<String> {
            let dir = dir.join("data").join("aggregates");
            let mut out = Vec::new();
            for day in std::fs::read_dir(dir).into_iter().flatten() {
                for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
                    let name = f.unwrap().file_name().into_string().unwrap();
                    let parsed = vigil_store::replace::parse_source_file(
                        &name,
                        "part",
                        "telemetry",
                        "parquet",
                    );
                    if parsed.is_some_and(|f| f.tick > 0) {
                        out.push(name);
                    }
                }
            }
            // One file per day of its rows, all with one name.
            out.sort();
            out.dedup();
            out
        }

        /// The `ticks` field of the partition's newest checkpoint.
        fn checkpointed_ticks(dir: &std::path::Path) -> Option<u64> {
            let store = CheckpointStore::new(dir.join("state"));
            let o = store.open("telemetry", 0, Generation::Newest).unwrap()?;
            let v: serde_json::Value = serde_json::from_reader(o.reader().unwrap()).unwrap();
            v["ticks"].as_u64()
        }

        /// Regression (issue 19 item 6): windows closed by the idle timeout
        /// on a partition that receives no more records stayed buffered
        /// until its next record: never published, and after a restart
        /// closed again. Now they are published on the flush cadence as a
        /// tick file and checkpointed with its number: a second worker
        /// restored from that checkpoint publishes nothing again, and its
        /// sweep keeps the tick file.
        #[test]
        fn a_silent_partitions_idle_windows_are_published_once() {
            let cluster = cluster_with_records();
            let dir = tempfile::tempdir().unwrap();
            let mut s = settings(&cluster, dir.path());
            s.pipeline.idle_timeout = Duration::from_secs(1);
            s.pipeline.tick_interval = Duration::from_millis(100);
            let first = start(s.clone());
            wait_until("a tick file and its checkpoint", &first, || {
                first.progress.records() >= RECORDS as u64
                    && !tick_files(dir.path()).is_empty()
                    && checkpointed_ticks(dir.path()) == Some(1)
            });
            // Every window is closed: the records' windows all went idle.
            let (rows, keys) = aggregate_rows(dir.path());
            assert!(rows > 0);
            assert_eq!(rows, keys, "a window published twice");
            first.stop().unwrap();
            let ticks = tick_files(dir.path());
            assert_eq!(ticks.len(), 1, "{ticks:?}");
            assert_eq!(aggregate_rows(dir.path()), (rows, keys));

            let second = start(s.clone());
            // Past the idle timeout, with flushes: had the state not held
            // the closes, they would be published again now.
            wait_until("the restored offset's commit", &second, || {
                second.progress.commits() >= 1
            });
            std::thread::sleep(s.pipeline.idle_timeout * 3);
            assert!(!second.handle.is_finished());
            assert_eq!(second.progress.records(), 0);
            assert_eq!(second.progress.flushes(), 0, "nothing to publish again");
            second.stop().unwrap();
            assert_eq!(
                tick_files(dir.path()),
                ticks,
                "the checkpointed tick file was kept"
            );
            assert_eq!(aggregate_rows(dir.path()), (rows, keys));
            assert_eq!(checkpointed_ticks(dir.path()), Some(1));
        }

        /// A worker restored from a checkpoint that is ahead of the group's
        /// commit (here: every commit of the first run was refused) commits
        /// the checkpoint's offset although no new record arrives, so the
        /// lag reads 0; it processes nothing again.
        #[test]
        fn a_restored_partition_commits_its_unmoved_offset() {
            let cluster = cluster_with_records();
            cluster.request_errors(
                RDKafkaApiKey::OffsetCommit,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS; 10_000],
            );
            let dir = tempfile::tempdir().unwrap();
            let s = settings(&cluster, dir.path());
            let first = start(s.clone());
            wait_until("the first run's checkpoint", &first, || {
                first.progress.records() >= RECORDS as u64
                    && first.progress.flushes() >= 1
                    && first.progress.commit_failures() >= 1
            });
            let started = Instant::now();
            first.stop().unwrap();
            // The drain retried for its whole budget, and not much longer.
            assert!(started.elapsed() < s.worker.shutdown_timeout + Duration::from_secs(8));
            assert_eq!(committed(&s), None);

            cluster.clear_request_errors(RDKafkaApiKey::OffsetCommit);
            let second = start(s.clone());
            wait_until("the restored offset's commit", &second, || {
                committed(&s) == Some(RECORDS as i64)
            });
            assert_eq!(second.progress.records(), 0);
            second.stop().unwrap();
        }
    }
}
