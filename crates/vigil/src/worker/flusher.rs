//! Double-buffered output: each member publishes its flushes on a
//! publishing thread of its own while it consumes on.
//!
//! At a flush point the member seals each dirty partition: it swaps the
//! partition's output stage (the buffered Parquet rows and dead-letter
//! files) for its spare, takes the checkpoint's state
//! ([`chain::Chain::snapshot`]: the changed agents, or a copy of the
//! whole pipeline for a new base), and notes the producer's mark (every
//! alert and dead letter sent so far). The [`Job`] goes to the publishing
//! thread, which runs steps 1 to 3 of the worker's protocol for it (intent
//! record and files, the acknowledgement of the messages before the mark,
//! the checkpoints), and the member goes on consuming into the other
//! stage. The member takes the outcome after its polls and only then
//! hands the offsets to the committer, so the order publish → ack →
//! checkpoint → commit holds for every offset.
//!
//! At most one job is in flight per member: the next flush point waits
//! for it (the member stops consuming only then, and while it seals).
//! A rebalance that revokes partitions waits inside its callback until
//! the job in flight is finished or handed back ([`Gate`]), so nothing of
//! a partition is published or checkpointed after its next owner may have
//! restored it; past a bound it gives up, and the job leaves those
//! partitions at its next step.
//! Before each partition's files and each checkpoint the publishing
//! thread checks librdkafka's lost-assignment flag and its own stall
//! clock (since it took the job, or its last file or checkpoint: the wait
//! for acknowledgements counts);
//! when either says the member may not own its partitions any more, it
//! hands the job back unfinished ([`Outcome::Unconfirmed`]) and the member
//! proves its membership (or is fenced) before the job goes on.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use vigil_kafka::consumer::WorkerContext;
use vigil_kafka::rdkafka::consumer::{BaseConsumer, Consumer as _};
use vigil_sink::OutputStage;
use vigil_store::intent::Intent;
use vigil_store::{failpoint, CheckpointStore, SourceRange};

use super::chain::{Chain, Snapshot};
use super::{write_checkpoint, CheckpointHook, DeadLetters, WorkerProgress};
use crate::obs;

/// The records (or the processing-time output) a sealed partition covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Span {
    /// Records `first..=last`.
    Records { first: i64, last: i64 },
    /// The `n`-th tick file after record `after`.
    Ticks { after: i64, n: u32 },
}

impl Span {
    fn range<'a>(&self, topic: &'a str, partition: i32) -> SourceRange<'a> {
        match *self {
            Span::Records { first, last } => SourceRange::records(topic, partition, first, last),
            Span::Ticks { after, n } => SourceRange::ticks(topic, partition, after, n),
        }
    }

    fn tick(&self) -> bool {
        matches!(self, Span::Ticks { .. })
    }
}

/// One partition of a flush, sealed by the member.
pub(super) struct Part {
    pub(super) partition: i32,
    /// The assignment that sealed it (unique per assignment within the
    /// member): an outcome applies to that assignment's task only (the
    /// partition may have been revoked and assigned again meanwhile, with
    /// the same epoch when no checkpoint came in between).
    pub(super) owner: u64,
    /// The owner's epoch, written into the checkpoint.
    pub(super) epoch: u64,
    pub(super) span: Span,
    /// The stage whose buffers hold this flush's rows; handed back empty
    /// as the partition's spare.
    pub(super) stage: OutputStage,
    pub(super) intent: Intent,
    pub(super) snapshot: Snapshot,
    pub(super) chain: Chain,
    /// The checkpoint's next offset and tick count.
    pub(super) next: i64,
    pub(super) ticks: u32,
    published: bool,
    checkpointed: bool,
}

impl Part {
    /// A sealed partition, nothing of it done yet.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        partition: i32,
        (owner, epoch): (u64, u64),
        span: Span,
        stage: OutputStage,
        intent: Intent,
        snapshot: Snapshot,
        chain: Chain,
        (next, ticks): (i64, u32),
    ) -> Part {
        Part {
            partition,
            owner,
            epoch,
            span,
            stage,
            intent,
            snapshot,
            chain,
            next,
            ticks,
            published: false,
            checkpointed: false,
        }
    }

    /// The first record the part covers (for a tick file, the next
    /// record: it covers none): the group's offset must not pass it
    /// before the part is done.
    pub(super) fn first_offset(&self) -> i64 {
        match self.span {
            Span::Records { first, .. } => first,
            Span::Ticks { after, .. } => after + 1,
        }
    }

    /// Whether the part is published and checkpointed.
    pub(super) fn done(&self) -> bool {
        self.checkpointed
    }

    /// Whether the part is processing-time output alone (a tick file; it
    /// does not move the offset).
    pub(super) fn tick(&self) -> bool {
        self.span.tick()
    }
}

/// One flush of a member: its sealed partitions and the producer's mark.
pub(super) struct Job {
    pub(super) parts: Vec<Part>,
    /// Every alert and dead letter sent before the seal.
    pub(super) mark: u64,
    pub(super) delivery_timeout: Duration,
    /// When the member sealed it.
    pub(super) sealed: Instant,
    /// When its last step ended (the member's stall clock goes on from
    /// there, not from when it took the outcome).
    pub(super) finished: Instant,
    acked: bool,
}

impl Job {
    /// A job of `parts`, sealed now at the producer's `mark`.
    pub(super) fn new(parts: Vec<Part>, mark: u64, delivery_timeout: Duration) -> Job {
        Job {
            parts,
            mark,
            delivery_timeout,
            sealed: Instant::now(),
            finished: Instant::now(),
            acked: false,
        }
    }
}

/// What the publishing thread did with a job.
pub(super) enum Outcome {
    /// Every part is published and checkpointed: its offsets may be
    /// committed.
    Done(Job),
    /// Stopped before a step, because the member may not own its
    /// partitions any more (lost assignment, or a stall): the member
    /// confirms and sends it again, or drops it with the partitions.
    Unconfirmed(Job, &'static str),
    /// A step failed: the member fails (nothing after the last checkpoint
    /// is lost; the next owner re-reads it).
    Failed(anyhow::Error),
}

/// Whether a member's publishing thread has a job; a revoke waits on it.
#[derive(Debug, Default)]
pub(super) struct Gate {
    busy: Mutex<bool>,
    idle: Condvar,
    /// Partitions whose revoke stopped waiting for the job in flight: the
    /// job does no further step for them.
    given_up: Mutex<Vec<i32>>,
}

impl Gate {
    fn set(&self, busy: bool) {
        let mut b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        *b = busy;
        if !busy {
            self.given_up
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            self.idle.notify_all();
        }
    }

    /// The revoke of `partitions` stopped waiting: the job in flight
    /// leaves them at its next step.
    pub(super) fn give_up(&self, partitions: &[i32]) {
        let busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if *busy {
            self.given_up
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(partitions);
        }
    }

    /// Whether the revoke of `partition` gave up waiting for this job.
    fn gave_up(&self, partition: i32) -> bool {
        self.given_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&partition)
    }

    /// Waits at most `timeout` until no job is in flight; whether none is.
    pub(super) fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *b {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            b = self
                .idle
                .wait_timeout(b, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }
}

/// Opens the gate when the publishing thread's job ends, also by a panic
/// (a revoke must not wait for a thread that is gone).
struct OpenOnDrop<'a>(&'a Gate);

impl Drop for OpenOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// What the publishing thread works with.
pub(super) struct Context {
    pub(super) topic: String,
    pub(super) store: CheckpointStore,
    pub(super) letters: DeadLetters,
    pub(super) consumer: Arc<BaseConsumer<WorkerContext<CheckpointHook>>>,
    pub(super) stall_limit: Duration,
    pub(super) progress: Arc<WorkerProgress>,
}

/// The publishing thread's own clock of when it last ran: a process
/// paused between two of its steps shows as a gap here, whatever the
/// member did after it resumed.
struct Clock {
    cx: Context,
    last: Instant,
}

/// A member's publishing thread and the channels to it.
pub(super) struct Flusher {
    jobs: Option<mpsc::Sender<Job>>,
    outcomes: mpsc::Receiver<Outcome>,
    gate: Arc<Gate>,
    in_flight: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    /// Starts the publishing thread of member `member`; `gate` is the one
    /// its revokes wait on.
    pub(super) fn start(member: usize, cx: Context, gate: Arc<Gate>) -> Result<Flusher> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tx, outcomes) = mpsc::channel::<Outcome>();
        let span = tracing::Span::current();
        let g = gate.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vigil-publish-{member}"))
            .spawn(move || {
                let _g = span.enter();
                let mut cx = Clock {
                    cx,
                    last: Instant::now(),
                };
                while let Ok(job) = rx.recv() {
                    let open = OpenOnDrop(&g);
                    cx.last = Instant::now();
                    let outcome = cx.run(job, &g);
                    // Sent before the gate opens: a revoke that waited
                    // finds the outcome there.
                    let stop = tx.send(outcome).is_err();
                    drop(open);
                    if stop {
                        break;
                    }
                }
            })
            .context("starting the publishing thread")?;
        Ok(Flusher {
            jobs: Some(jobs),
            outcomes,
            gate,
            in_flight: false,
            thread: Some(thread),
        })
    }

    /// Whether a job is in flight (its outcome not taken yet).
    pub(super) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Hands `job` to the publishing thread. At most one job is in flight.
    pub(super) fn submit(&mut self, job: Job) -> Result<()> {
        debug_assert!(!self.in_flight, "one flush in flight at most");
        self.gate.set(true);
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(job).is_ok());
        if !sent {
            self.gate.set(false);
            return Err(stopped());
        }
        self.in_flight = true;
        Ok(())
    }

    /// The outcome of the job in flight: at once if it is there, else
    /// waiting for it until `until` (not at all when `None`); `None` when
    /// there is no job or it is not done yet (it stays in flight), an
    /// error when the thread is gone.
    pub(super) fn outcome(&mut self, until: Option<Instant>) -> Result<Option<Outcome>> {
        if !self.in_flight {
            return Ok(None);
        }
        let left = until.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(Instant::now())
        });
        let o = match self.outcomes.recv_timeout(left) {
            Ok(o) => o,
            Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(stopped()),
        };
        self.in_flight = false;
        Ok(Some(o))
    }
}

/// The error when the publishing thread is gone (it panicked or ended).
fn stopped() -> anyhow::Error {
    anyhow!("the publishing thread stopped")
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // The thread ends after its current job. An idle one is joined;
        // one still publishing (a drain that ran out of time) is left to
        // end by itself: its member must not wait past its deadline.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            if !self.in_flight {
                let _ = t.join();
            }
        }
    }
}

impl Clock {
    /// Whether the member may still own its partitions (cheap checks; the
    /// member proves it when not): `None`, or the reason to stop. Stalled:
    /// more than half the session timeout since this thread's last step
    /// (a paused VM or process, or a very slow step).
    fn unconfirmed(&self) -> Option<&'static str> {
        if self.cx.consumer.assignment_lost() {
            Some("assignment_lost")
        } else if self.last.elapsed() > self.cx.stall_limit {
            Some("stalled")
        } else {
            None
        }
    }

    fn run(&mut self, job: Job, gate: &Gate) -> Outcome {
        let span = tracing::info_span!("publish", partitions = job.parts.len());
        let _g = span.enter();
        match self.steps(job, gate) {
            Ok(o) => o,
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Steps 1 to 3 of the worker's protocol for `job`, skipping what an
    /// earlier, unconfirmed run of it did.
    fn steps(&mut self, mut job: Job, gate: &Gate) -> Result<Outcome> {
        let started = Instant::now();
        let topic = self.cx.topic.clone();
        failpoint::hit("flush.before_publish");
        for part in job.parts.iter_mut().filter(|p| !p.published) {
            if let Some(why) = self.unconfirmed() {
                return Ok(Outcome::Unconfirmed(job, why));
            }
            if gate.gave_up(part.partition) {
                continue;
            }
            let p = part.partition;
            // Where this flush and the one before it write, durable
            // before the first file: a restart sweeps only there.
            self.cx
                .store
                .save_intent(&topic, p, &part.intent)
                .with_context(|| format!("writing the intent record of partition {p}"))?;
            failpoint::hit("flush.after_intent");
            let published = part.stage.publish(part.span.range(&topic, p))?;
            obs::published(&published);
            tracing::debug!(
                partition = p,
                span = ?part.span,
                aggregates = published.aggregates.rows,
                alerts = published.alerts.rows,
                "published"
            );
            part.published = true;
            self.last = Instant::now();
            failpoint::hit("flush.after_publish");
            if part.tick() {
                metrics::counter!(obs::TICK_FLUSHES).increment(1);
                failpoint::hit("flush.after_tick_publish");
            }
        }
        if !job.acked {
            let acked = Instant::now();
            // One budget for the whole wait: the acknowledgements and any
            // redelivery of dead letters together take at most
            // `delivery_timeout`.
            let deadline = acked + job.delivery_timeout;
            self.cx
                .letters
                .producer
                .flush_to(job.mark, job.delivery_timeout)
                .context("waiting for the broker to acknowledge alerts and dead letters")?;
            self.cx.letters.settle(deadline)?;
            metrics::histogram!(obs::DELIVERY_WAIT_SECONDS).record(acked.elapsed().as_secs_f64());
            job.acked = true;
            failpoint::hit("flush.after_acks");
        }
        let ck = Instant::now();
        for part in job.parts.iter_mut().filter(|p| !p.checkpointed) {
            if let Some(why) = self.unconfirmed() {
                return Ok(Outcome::Unconfirmed(job, why));
            }
            if gate.gave_up(part.partition) || !part.published {
                continue;
            }
            let (bytes, delta) = write_checkpoint(
                &self.cx.store,
                &topic,
                part.partition,
                (part.next, part.ticks, part.epoch),
                &mut part.chain,
                &part.snapshot,
            )?;
            let pr = &self.cx.progress;
            pr.checkpoints.fetch_add(1, Ordering::Relaxed);
            pr.checkpoint_bytes.fetch_add(bytes, Ordering::Relaxed);
            if !delta {
                pr.checkpoint_bases.fetch_add(1, Ordering::Relaxed);
                pr.checkpoint_base_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            part.checkpointed = true;
            self.last = Instant::now();
            failpoint::hit("flush.after_checkpoint");
        }
        failpoint::hit("flush.before_commit");
        metrics::histogram!(obs::CHECKPOINT_SECONDS).record(ck.elapsed().as_secs_f64());
        metrics::histogram!(obs::FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
        self.cx
            .progress
            .publishing_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            since_sealed_ms = job.sealed.elapsed().as_millis() as u64,
            "flush published and checkpointed; offsets pending commit"
        );
        job.finished = self.last;
        Ok(Outcome::Done(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_opens_when_the_job_ends() {
        let g = Arc::new(Gate::default());
        assert!(g.wait_idle(Duration::ZERO));
        g.set(true);
        assert!(!g.wait_idle(Duration::from_millis(20)));
        let opened = std::thread::scope(|sc| {
            let h = sc.spawn(|| g.wait_idle(Duration::from_secs(30)));
            std::thread::sleep(Duration::from_millis(20));
            g.set(false);
            h.join().unwrap()
        });
        assert!(opened);
    }
}
