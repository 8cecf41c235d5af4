//! The operator chain for one partition: decode → validate → dedup →
//! windows → detectors → alert lifecycle.
//!
//! A [`Pipeline`] is owned by exactly one thread (one per Kafka partition, or
//! one for a replay); it takes no locks. Its state is plain serde data, so a
//! checkpoint is a serialisation of the whole value and a restore continues
//! with identical output (see the tests).
//!
//! Every record ends in exactly one of: accepted (its points merged into
//! windows, minus refused points), dropped as a duplicate, or refused whole
//! with a [`RejectReason`]. Refused points and records come out as
//! [`Rejected`] values for the dead-letter sink, and [`PipelineStats`] counts
//! every outcome.

use std::sync::Arc;

use hashbrown::{HashMap, HashTable};
use serde::{Deserialize, Serialize};
use vigil_proto::v1::TelemetryBatch;

use crate::clock::ReplayClock;
use crate::config::{ClockMode, ConfigProblem, PipelineConfig};
use crate::decode::{decode_into, BatchError};
use crate::dedup::{AntiReplay, Verdict};
use crate::detect::offline::Liveness;
use crate::detect::DetectorEngine;
use crate::intern::KeyInterner;
use crate::model::{canonical_labels, AgentKey, AlertEvent, AlertStatus, WindowAggregate};
use crate::reject::{Position, RejectReason, Rejected};
use crate::rules::RuleSet;
use crate::window::{AgentWindows, WindowSpec};

/// What one call to the pipeline produced. The caller drains (or clears)
/// the vectors; their capacity is reused.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Windows closed by this call, per series in start order.
    pub windows: Vec<WindowAggregate>,
    /// Alert events raised by this call.
    pub alerts: Vec<AlertEvent>,
    /// Refused records and points.
    pub rejected: Vec<Rejected>,
}

impl Outputs {
    /// Empties all vectors, keeping capacity.
    pub fn clear(&mut self) {
        self.windows.clear();
        self.alerts.clear();
        self.rejected.clear();
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.alerts.is_empty() && self.rejected.is_empty()
    }
}

/// Counters of every outcome. Monotonic; exported as metrics by the binary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStats {
    /// Records offered to [`Pipeline::process`].
    pub records: u64,
    /// Bytes offered.
    pub bytes: u64,
    /// Batches accepted (decoded, valid, not duplicate).
    pub batches_accepted: u64,
    /// Batches dropped because their (agent, seq) was already processed.
    pub duplicates: u64,
    /// Points in accepted batches.
    pub points_in: u64,
    /// Points merged into windows.
    pub points_accepted: u64,
    /// Records refused whole, by [`RejectReason::index`].
    pub rejected_records: [u64; RejectReason::ALL.len()],
    /// Points refused, by [`RejectReason::index`] (for record-level reasons:
    /// the points of records that decoded).
    pub rejected_points: [u64; RejectReason::ALL.len()],
    /// Agents whose sequence numbering restarted (see [`crate::dedup`]).
    #[serde(default)]
    pub seq_resyncs: u64,
    /// Windows closed by watermark.
    pub windows_closed: u64,
    /// Windows closed by idle timeout or end of input.
    pub windows_closed_idle: u64,
    /// Alert events with status firing.
    pub alerts_firing: u64,
    /// Alert events with status resolved.
    pub alerts_resolved: u64,
    /// Agents seen.
    pub agents: u64,
    /// Series seen.
    pub series: u64,
}

impl PipelineStats {
    /// Records refused for `reason`.
    pub fn rejected_records(&self, reason: RejectReason) -> u64 {
        self.rejected_records[reason.index()]
    }

    /// Points refused for `reason`.
    pub fn rejected_points(&self, reason: RejectReason) -> u64 {
        self.rejected_points[reason.index()]
    }
}

/// Per-agent state: identity, liveness (for the idle timeout and the
/// offline detector), dedup window and open windows.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgentState {
    /// Tenant and agent ids, shared with the agent's closed windows.
    key: Arc<AgentKey>,
    hostname: Option<Box<str>>,
    live: Liveness,
    dedup: AntiReplay,
    windows: AgentWindows,
}

/// Reusable buffers (not part of the state).
#[derive(Debug, Default, Clone)]
struct Scratch {
    batch: TelemetryBatch,
    /// (agent, slot) of the series of each window being closed, in step
    /// with them.
    closed: Vec<(u32, u32)>,
    /// Next agent for [`Pipeline::finish_some`].
    finish_next: usize,
    labels: String,
    refused: [Vec<(i64, f64)>; 5],
    /// The batch being accepted came from OTLP input (no sequence).
    otlp_input: bool,
    /// Converted resources of the OTLP record being processed.
    converted: Vec<crate::otlp::Converted>,
}

/// Hash of an agent's (tenant, agent) ids, for the agent index: xxh3 of
/// the agent id seeded with xxh3 of the tenant id.
#[inline]
fn agent_hash(tenant: &str, agent: &str) -> u64 {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
    xxh3_64_with_seed(agent.as_bytes(), xxh3_64(tenant.as_bytes()))
}

/// The detector engine's number for the series in `slot` of agent `ai`:
/// stable for the life of the pipeline and across checkpoints (agents and
/// their series keep their order).
#[inline]
fn series_uid(ai: u32, slot: u32) -> u64 {
    (u64::from(ai) << 32) | u64::from(slot)
}

/// Series capacity of the decode buffer kept between batches; a larger
/// batch's buffer is released after use.
const SCRATCH_KEEP_SERIES: usize = 256;

/// Point-level refusal reasons, in the order of `Scratch::refused`.
const POINT_REASONS: [RejectReason; 5] = [
    RejectReason::NonFinite,
    RejectReason::OutOfRange,
    RejectReason::Future,
    RejectReason::Late,
    RejectReason::SeriesLimit,
];

/// Timestamps the pipeline accepts: 1970-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999Z (what Parquet readers and date partitions can
/// represent). Anything else is refused as `out_of_range`.
pub const VALID_TS: std::ops::RangeInclusive<i64> = 0..=253_402_300_799_999;

/// The operator chain of one partition. See the module docs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pipeline {
    cfg: PipelineConfig,
    spec: WindowSpec,
    agents: Vec<AgentState>,
    /// Index into `agents` by [`agent_hash`] (rebuilt on restore).
    #[serde(skip)]
    agent_index: HashTable<u32>,
    detectors: DetectorEngine,
    /// Series per tenant in this pipeline (the cardinality guard); its
    /// keys are also the one shared copy of each tenant id.
    #[serde(default)]
    tenant_series: HashMap<Arc<str>, u32>,
    /// The distinct (metric, labels) keys, shared by all agents' series
    /// (rebuilt on restore by [`Pipeline::attach_rules`]).
    #[serde(skip)]
    keys: KeyInterner,
    clock: ReplayClock,
    last_tick_ms: Option<i64>,
    stats: PipelineStats,
    /// OTLP input state (dedup timestamps, cumulative values); empty for
    /// Vigil input, absent from older checkpoints.
    #[serde(default)]
    otlp: crate::otlp::OtlpState,
    #[serde(skip)]
    scratch: Scratch,
}

impl Pipeline {
    /// Builds a pipeline, or returns every configuration problem.
    pub fn new(cfg: PipelineConfig, rules: Arc<RuleSet>) -> Result<Self, Vec<ConfigProblem>> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Pipeline {
            spec: WindowSpec {
                size_ms: cfg.window_ms(),
                lateness_ms: cfg.allowed_lateness.as_millis() as i64,
            },
            clock: ReplayClock::new(cfg.max_clock_skew.as_millis() as i64),
            cfg,
            agents: Vec::new(),
            agent_index: HashTable::new(),
            detectors: DetectorEngine::new(rules),
            tenant_series: HashMap::new(),
            keys: KeyInterner::default(),
            last_tick_ms: None,
            stats: PipelineStats::default(),
            otlp: crate::otlp::OtlpState::default(),
            scratch: Scratch::default(),
        })
    }

    /// Re-attaches the rules after a restore from a checkpoint (rules are
    /// configuration, not state, and are not serialised), and shares the
    /// restored series keys and tenant ids again.
    pub fn attach_rules(&mut self, rules: Arc<RuleSet>) {
        if self.agent_index.len() != self.agents.len() {
            self.agent_index.clear();
            for i in 0..self.agents.len() {
                self.index_agent(i);
            }
        }
        let agents = &mut self.agents;
        self.detectors.attach_rules_with(rules, |f| {
            for (ai, a) in agents.iter_mut().enumerate() {
                a.windows.for_each_handle(&a.key, &mut |meta, slot, h| {
                    f(meta, series_uid(ai as u32, slot), h)
                });
            }
        });
        for a in &mut self.agents {
            a.windows.intern_keys(&mut self.keys);
            if let Some((t, _)) = self.tenant_series.get_key_value(&*a.key.tenant) {
                if !Arc::ptr_eq(t, &a.key.tenant) {
                    a.key = Arc::new(AgentKey {
                        tenant: t.clone(),
                        agent: a.key.agent.clone(),
                    });
                }
            }
        }
    }

    /// Continues a pipeline restored from a checkpoint under the current
    /// configuration and rules. Settings that shape the state (window size,
    /// allowed lateness, dedup window, clock mode) must equal those the
    /// checkpoint was written with; every other setting (limits, idle
    /// timeout, clock skew, tick interval) takes its new value (the replay
    /// clock keeps the skew it was built with). Returns the
    /// problems when the configuration cannot continue this state.
    pub fn resume(
        mut self,
        cfg: PipelineConfig,
        rules: Arc<RuleSet>,
    ) -> Result<Self, Vec<ConfigProblem>> {
        let mut problems = cfg.validate();
        let old = &self.cfg;
        let mut changed = |field: &'static str, was: String, now: String| {
            if was != now {
                problems.push(ConfigProblem {
                    field,
                    message: format!(
                        "the checkpoint was written with {was}, the configuration says {now}; \
                         a checkpoint cannot change it (drain the partition or delete its checkpoint)"
                    ),
                });
            }
        };
        changed(
            "window",
            format!("{:?}", old.window),
            format!("{:?}", cfg.window),
        );
        changed(
            "allowed_lateness",
            format!("{:?}", old.allowed_lateness),
            format!("{:?}", cfg.allowed_lateness),
        );
        changed(
            "dedup_window",
            old.dedup_window.to_string(),
            cfg.dedup_window.to_string(),
        );
        changed(
            "clock",
            format!("{:?}", old.clock),
            format!("{:?}", cfg.clock),
        );
        if !problems.is_empty() {
            return Err(problems);
        }
        self.cfg = cfg;
        self.attach_rules(rules);
        Ok(self)
    }

    /// Makes `ms` of processing time not count as silence: every agent's
    /// last-seen time moves `ms` later, for the idle timeout and the
    /// offline detector alike. A worker calls it when it restores a
    /// checkpoint, with the time since the checkpoint was written, so an
    /// outage of Vigil itself neither declares the whole fleet offline nor
    /// closes every open window before the backlog is read.
    pub fn skip_processing_time(&mut self, ms: i64) {
        if ms <= 0 {
            return;
        }
        for a in &mut self.agents {
            a.live.skip(ms);
        }
        self.detectors.skip_processing_time(ms);
    }

    /// Counters so far.
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Open windows over all agents.
    pub fn open_windows(&self) -> usize {
        self.agents.iter().map(|a| a.windows.open_windows()).sum()
    }

    /// Current processing time in replay mode (`None` in wall mode or
    /// before the first batch).
    pub fn replay_now_ms(&self) -> Option<i64> {
        match self.cfg.clock {
            ClockMode::Replay => self.clock.now_ms(),
            ClockMode::Wall => None,
        }
    }

    /// Processes one record. `wall_now_ms` is the processing time in
    /// [`ClockMode::Wall`] and ignored in [`ClockMode::Replay`].
    pub fn process(&mut self, pos: Position, payload: &[u8], wall_now_ms: i64, out: &mut Outputs) {
        self.stats.records += 1;
        self.stats.bytes += payload.len() as u64;
        let mut batch = std::mem::take(&mut self.scratch.batch);
        match decode_into(payload, &self.cfg.limits, &mut batch) {
            Ok(()) => {
                let now = match self.cfg.clock {
                    ClockMode::Wall => wall_now_ms,
                    // Without any valid send time yet, the batch's own newest
                    // point stands in (nothing of it is then `future`).
                    ClockMode::Replay => {
                        self.clock.observe(batch.sent_at_ms).unwrap_or_else(|| {
                            batch
                                .series
                                .iter()
                                .flat_map(|s| s.timestamps_ms.iter().copied())
                                .max()
                                .unwrap_or(0)
                        })
                    }
                };
                self.accept(pos, payload, &batch, now, out);
                self.maybe_tick(now, out);
            }
            Err(e) => {
                self.refuse_batch(pos, payload, &batch, e, out);
                let now = match self.cfg.clock {
                    ClockMode::Wall => Some(wall_now_ms),
                    ClockMode::Replay => self.clock.now_ms(),
                };
                if let Some(now) = now {
                    self.maybe_tick(now, out);
                }
            }
        }
        // One huge (or hostile) batch must not pin its buffers for the
        // life of the partition: keep the capacity of ordinary batches only.
        if batch.series.capacity() > SCRATCH_KEEP_SERIES {
            batch.series = Vec::new();
        }
        self.scratch.batch = batch;
    }

    /// Counters of the OTLP conversion.
    pub fn otlp_stats(&self) -> &crate::otlp::OtlpStats {
        self.otlp.stats()
    }

    /// Processes one OTLP record (an `ExportMetricsServiceRequest`; see
    /// [`crate::otlp`] and docs/otlp.md): each resource becomes a batch of
    /// its agent, duplicates found by (series, timestamp) instead of a
    /// sequence number. `wall_now_ms` as in [`Pipeline::process`].
    pub fn process_otlp(
        &mut self,
        pos: Position,
        payload: &[u8],
        wall_now_ms: i64,
        out: &mut Outputs,
    ) {
        self.stats.records += 1;
        self.stats.bytes += payload.len() as u64;
        let mut converted = std::mem::take(&mut self.scratch.converted);
        converted.clear();
        let from = out.rejected.len();
        self.otlp
            .convert(&self.cfg, pos, payload, &mut converted, &mut out.rejected);
        for r in &out.rejected[from..] {
            if r.reason.is_batch_level() {
                self.stats.rejected_records[r.reason.index()] += 1;
            }
            self.stats.rejected_points[r.reason.index()] += r.point_count;
        }
        for c in converted.iter_mut() {
            let mut batch = std::mem::take(&mut c.batch);
            let now = match self.cfg.clock {
                ClockMode::Wall => wall_now_ms,
                ClockMode::Replay => self
                    .clock
                    .observe(batch.sent_at_ms)
                    .unwrap_or(batch.sent_at_ms),
            };
            if c.points_in > 0 && c.duplicates == c.points_in {
                // A resent request: nothing new, but the agent is alive.
                self.stats.duplicates += 1;
                if let Some(ai) = self.find_agent(&batch.tenant_id, &batch.agent_id) {
                    self.seen(ai, now, out);
                }
            } else if let Err(e) = crate::decode::validate(&mut batch, &self.cfg.limits) {
                self.refuse_batch(pos, payload, &batch, e, out);
            } else {
                self.scratch.otlp_input = true;
                self.accept(pos, payload, &batch, now, out);
                self.scratch.otlp_input = false;
            }
            self.maybe_tick(now, out);
        }
        if converted.is_empty() {
            // Nothing to accept (refused, or no resources): time still passes.
            let now = match self.cfg.clock {
                ClockMode::Wall => Some(wall_now_ms),
                ClockMode::Replay => self.clock.now_ms(),
            };
            if let Some(now) = now {
                self.maybe_tick(now, out);
            }
        }
        converted.clear();
        self.scratch.converted = converted;
    }

    fn refuse_batch(
        &mut self,
        pos: Position,
        payload: &[u8],
        batch: &TelemetryBatch,
        e: BatchError,
        out: &mut Outputs,
    ) {
        // A batch that failed after decoding still tells us who sent it.
        let decoded = e.reason != RejectReason::Decode && e.reason != RejectReason::TooLarge;
        let points: u64 = if decoded {
            batch
                .series
                .iter()
                .map(|s| s.timestamps_ms.len() as u64)
                .sum()
        } else {
            0
        };
        self.stats.rejected_records[e.reason.index()] += 1;
        self.stats.rejected_points[e.reason.index()] += points;
        let some = |s: &String| (decoded && !s.is_empty()).then(|| s.clone());
        out.rejected.push(Rejected {
            reason: e.reason,
            detail: e.detail,
            position: pos,
            tenant: some(&batch.tenant_id),
            agent: some(&batch.agent_id),
            seq: decoded.then_some(batch.seq),
            metric: None,
            labels: None,
            points: Vec::new(),
            point_count: points,
            raw: Some(payload.to_vec()),
        });
    }

    /// Index of an existing agent (allocates nothing).
    fn find_agent(&self, tenant: &str, agent: &str) -> Option<usize> {
        self.agent_index
            .find(agent_hash(tenant, agent), |&i| {
                let k = &self.agents[i as usize].key;
                *k.tenant == *tenant && *k.agent == *agent
            })
            .map(|&i| i as usize)
    }

    fn agent_slot(&mut self, tenant: &str, agent: &str) -> usize {
        if let Some(i) = self.find_agent(tenant, agent) {
            return i;
        }
        // One tenant id allocation per tenant, shared by its agents.
        if !self.tenant_series.contains_key(tenant) {
            self.tenant_series.insert(tenant.into(), 0);
        }
        let (tenant, _) = self
            .tenant_series
            .get_key_value(tenant)
            .expect("inserted above");
        let i = self.agents.len();
        crate::intern::grow_gently(&mut self.agents);
        self.agents.push(AgentState {
            key: Arc::new(AgentKey {
                tenant: tenant.clone(),
                agent: agent.into(),
            }),
            hostname: None,
            live: Liveness::default(),
            dedup: AntiReplay::new(self.cfg.dedup_window),
            windows: AgentWindows::new(self.spec),
        });
        self.index_agent(i);
        self.stats.agents += 1;
        i
    }

    /// Adds `agents[i]` to the agent index.
    fn index_agent(&mut self, i: usize) {
        let agents = &self.agents;
        let k = &agents[i].key;
        self.agent_index
            .insert_unique(agent_hash(&k.tenant, &k.agent), i as u32, |&j| {
                let k = &agents[j as usize].key;
                agent_hash(&k.tenant, &k.agent)
            });
    }

    fn accept(
        &mut self,
        pos: Position,
        payload: &[u8],
        batch: &TelemetryBatch,
        now: i64,
        out: &mut Outputs,
    ) {
        let ai = self.agent_slot(&batch.tenant_id, &batch.agent_id);
        let points: u64 = batch
            .series
            .iter()
            .map(|s| s.timestamps_ms.len() as u64)
            .sum();
        // OTLP input has no sequence: its duplicates were dropped by
        // (series, timestamp) in `crate::otlp`.
        let verdict = if self.scratch.otlp_input {
            Verdict::New
        } else {
            self.agents[ai].dedup.check(batch.seq)
        };
        match verdict {
            Verdict::New => {}
            Verdict::Duplicate => {
                self.stats.duplicates += 1;
                self.seen(ai, now, out);
                return;
            }
            Verdict::TooOld if self.agents[ai].dedup.note_too_old(batch.seq) => {
                self.stats.seq_resyncs += 1;
            }
            Verdict::TooOld => {
                let highest = self.agents[ai].dedup.highest().unwrap_or(0);
                let e = BatchError {
                    reason: RejectReason::SeqTooOld,
                    detail: format!(
                        "seq {} is more than {} below the agent's highest seq {highest}; cannot tell a resend from new data \
                         ({} consecutive such batches restart the agent's numbering)",
                        batch.seq,
                        self.cfg.dedup_window,
                        crate::dedup::RESYNC_AFTER
                    ),
                };
                self.refuse_batch(pos, payload, batch, e, out);
                return;
            }
        }
        if !self.scratch.otlp_input {
            self.agents[ai].dedup.record(batch.seq);
        }
        self.stats.batches_accepted += 1;
        self.stats.points_in += points;
        if let Some(info) = &batch.agent {
            if !info.hostname.is_empty()
                && self.agents[ai].hostname.as_deref() != Some(info.hostname.as_str())
            {
                self.agents[ai].hostname = Some(info.hostname.as_str().into());
            }
        }
        self.seen(ai, now, out);

        let skew = self.cfg.max_clock_skew.as_millis() as i64;
        let future_after = now.saturating_add(skew);
        let windows_before = out.windows.len();
        let Scratch {
            labels,
            refused,
            closed,
            ..
        } = &mut self.scratch;
        let st = &mut self.agents[ai];
        if st.windows.series_count() == 0 {
            // Room for the series of the agent's first batch, exactly (at
            // most the per-agent limit).
            st.windows
                .reserve_series(batch.series.len().min(self.cfg.limits.max_series_per_agent));
        }
        let tenant_series = &mut self.tenant_series;
        let keys = &mut self.keys;
        let detectors = &mut self.detectors;
        let limits = &self.cfg.limits;
        let mut accepted = 0u64;
        let mut new_series = 0u64;
        for s in &batch.series {
            let mut slot = None;
            let mut any_refused = false;
            for (&ts, &v) in s.timestamps_ms.iter().zip(&s.values) {
                let r = if !v.is_finite() {
                    0
                } else if !VALID_TS.contains(&ts) {
                    1
                } else if ts > future_after {
                    2
                } else if st.windows.is_late(ts) {
                    3
                } else {
                    let admitted = *slot.get_or_insert_with(|| {
                        canonical_labels(
                            s.labels.iter().map(|l| (l.key.as_str(), l.value.as_str())),
                            labels,
                        );
                        if let Some(i) = keys
                            .find(&s.metric, labels)
                            .and_then(|k| st.windows.find_key(k))
                        {
                            return Some(i);
                        }
                        // A new series: the cardinality guard decides.
                        let per_tenant = tenant_series.get(&*st.key.tenant).copied().unwrap_or(0);
                        if st.windows.series_count() >= limits.max_series_per_agent
                            || per_tenant as usize >= limits.max_series_per_tenant
                        {
                            return None;
                        }
                        *tenant_series.entry(st.key.tenant.clone()).or_insert(0) += 1;
                        new_series += 1;
                        let i = st.windows.add(keys.get(&s.metric, labels));
                        let h = detectors.register(&st.windows.meta(&st.key, i));
                        st.windows.set_handle(i, h);
                        Some(i)
                    });
                    match admitted {
                        Some(i) => {
                            st.windows.push(i, ts, v);
                            accepted += 1;
                            continue;
                        }
                        None => 4,
                    }
                };
                refused[r].push((ts, v));
                any_refused = true;
            }
            if any_refused {
                canonical_labels(
                    s.labels.iter().map(|l| (l.key.as_str(), l.value.as_str())),
                    labels,
                );
                for (r, pts) in refused.iter_mut().enumerate() {
                    if pts.is_empty() {
                        continue;
                    }
                    let reason = POINT_REASONS[r];
                    self.stats.rejected_points[reason.index()] += pts.len() as u64;
                    let detail = match reason {
                        RejectReason::NonFinite => "value is NaN or infinite".to_string(),
                        RejectReason::OutOfRange => {
                            "timestamp outside 1970-01-01 ..= 9999-12-31 (ms since epoch)"
                                .to_string()
                        }
                        RejectReason::Future => {
                            format!("timestamp more than {skew} ms ahead of processing time {now}")
                        }
                        RejectReason::SeriesLimit => format!(
                            "new series over the limit: the agent has {} series (max {}), \
                             the tenant {} (max {})",
                            st.windows.series_count(),
                            limits.max_series_per_agent,
                            tenant_series.get(&*st.key.tenant).copied().unwrap_or(0),
                            limits.max_series_per_tenant
                        ),
                        _ => format!(
                            "window already closed (agent frontier {})",
                            st.windows.frontier()
                        ),
                    };
                    out.rejected.push(Rejected {
                        reason,
                        detail,
                        position: pos,
                        tenant: Some(batch.tenant_id.clone()),
                        agent: Some(batch.agent_id.clone()),
                        seq: Some(batch.seq),
                        metric: Some(s.metric.clone()),
                        labels: Some(labels.clone()),
                        point_count: pts.len() as u64,
                        points: std::mem::take(pts),
                        raw: None,
                    });
                }
            }
        }
        self.stats.points_accepted += accepted;
        self.stats.series += new_series;
        closed.clear();
        let n = st
            .windows
            .advance(&st.key, &mut out.windows, ai as u32, closed);
        self.stats.windows_closed += n as u64;
        self.detect(windows_before, out);
    }

    /// Marks an agent alive and lets the offline detector resolve.
    fn seen(&mut self, ai: usize, now: i64, out: &mut Outputs) {
        let st = &mut self.agents[ai];
        let before = out.alerts.len();
        self.detectors.on_seen(
            &mut st.live,
            &st.key.tenant,
            &st.key.agent,
            now,
            &mut out.alerts,
        );
        self.finish_alerts(before, out);
    }

    /// Runs detectors on windows closed since `from`, whose series are in
    /// `scratch.closed`.
    fn detect(&mut self, from: usize, out: &mut Outputs) {
        let before = out.alerts.len();
        debug_assert_eq!(self.scratch.closed.len(), out.windows.len() - from);
        for (w, &(ai, slot)) in out.windows[from..].iter().zip(&self.scratch.closed) {
            let h = self.agents[ai as usize].windows.handle_mut(slot as usize);
            self.detectors
                .on_series_window(h, series_uid(ai, slot), w, &mut out.alerts);
        }
        self.finish_alerts(before, out);
    }

    /// Fills hostnames and counts events raised since `from`.
    fn finish_alerts(&mut self, from: usize, out: &mut Outputs) {
        for a in &mut out.alerts[from..] {
            match a.status {
                AlertStatus::Firing => self.stats.alerts_firing += 1,
                AlertStatus::Resolved => self.stats.alerts_resolved += 1,
            }
            if a.hostname.is_none() {
                if let Some(i) = self.find_agent(&a.tenant, &a.agent) {
                    a.hostname = self.agents[i].hostname.as_deref().map(str::to_string);
                }
            }
        }
    }

    fn maybe_tick(&mut self, now: i64, out: &mut Outputs) {
        match self.last_tick_ms {
            None => self.last_tick_ms = Some(now),
            Some(t) if now - t >= self.cfg.tick_interval.as_millis() as i64 => self.tick(now, out),
            Some(_) => {}
        }
    }

    /// Processing-time housekeeping: closes the windows of agents idle for
    /// `idle_timeout` and runs the offline detector. Called by `process`
    /// every `tick_interval`; a live worker also calls it on a timer so
    /// that a silent partition still closes windows.
    pub fn tick(&mut self, now_ms: i64, out: &mut Outputs) {
        self.last_tick_ms = Some(now_ms);
        let idle = self.cfg.idle_timeout.as_millis() as i64;
        let from = out.windows.len();
        self.scratch.closed.clear();
        for ai in 0..self.agents.len() {
            let st = &self.agents[ai];
            if st.windows.open_windows() > 0 && now_ms.saturating_sub(st.live.last_seen_ms) >= idle
            {
                self.close_agent(ai, out);
            }
        }
        self.detect(from, out);
        let before = out.alerts.len();
        let agents = self.agents.iter_mut().map(|a| {
            let AgentState { key, live, .. } = a;
            (&*key.tenant, &*key.agent, live)
        });
        self.detectors
            .on_tick_agents(now_ms, agents, &mut out.alerts);
        self.finish_alerts(before, out);
    }

    /// Closes every open window of agent `ai` (idle timeout, end of
    /// input), noting each window's series for [`Pipeline::detect`].
    fn close_agent(&mut self, ai: usize, out: &mut Outputs) {
        let st = &mut self.agents[ai];
        self.stats.windows_closed_idle += st.windows.close_all(
            &st.key,
            &mut out.windows,
            ai as u32,
            &mut self.scratch.closed,
        ) as u64;
    }

    /// End of input (a replay reached the end of its file): closes every
    /// open window as if each agent went idle, and runs the detectors on
    /// them. Offline detection is not run: the input ended, not the agents.
    pub fn finish(&mut self, out: &mut Outputs) {
        while !self.finish_some(out, usize::MAX) {}
    }

    /// [`Pipeline::finish`] in steps, so the caller can drain the outputs
    /// between them instead of holding every window of the partition at
    /// once: closes the windows of the next agents (at least one) until at
    /// least `max_windows` windows were closed, runs the detectors on them
    /// and returns whether every agent is done (the next call then starts
    /// over).
    pub fn finish_some(&mut self, out: &mut Outputs, max_windows: usize) -> bool {
        let from = out.windows.len();
        self.scratch.closed.clear();
        let first = self.scratch.finish_next;
        let mut ai = first;
        // At least one agent per call, so every call makes progress.
        while ai < self.agents.len() && (ai == first || out.windows.len() - from < max_windows) {
            self.close_agent(ai, out);
            ai += 1;
        }
        self.detect(from, out);
        let done = ai >= self.agents.len();
        self.scratch.finish_next = if done { 0 } else { ai };
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;
    use vigil_proto::v1::{Label, Series};

    fn cfg() -> PipelineConfig {
        PipelineConfig {
            clock: ClockMode::Wall,
            ..PipelineConfig::default()
        }
    }

    fn pipeline() -> Pipeline {
        Pipeline::new(cfg(), Arc::new(RuleSet::default())).unwrap()
    }

    fn batch(agent: &str, seq: u64, pts: &[(i64, f64)]) -> Vec<u8> {
        TelemetryBatch {
            tenant_id: "t1".into(),
            agent_id: agent.into(),
            seq,
            sent_at_ms: pts.iter().map(|p| p.0).max().unwrap_or(0),
            agent: None,
            series: vec![Series {
                metric: "cpu_pct".into(),
                labels: vec![Label {
                    key: "core".into(),
                    value: "all".into(),
                }],
                timestamps_ms: pts.iter().map(|p| p.0).collect(),
                values: pts.iter().map(|p| p.1).collect(),
            }],
        }
        .encode_to_vec()
    }

    /// A window-aligned start time.
    const T0: i64 = 1_800_000_000_000;
    /// (agent, seq, points) of one test batch.
    type TestBatch = (String, u64, Vec<(i64, f64)>);

    const POS: Position = Position {
        partition: 0,
        offset: 0,
    };

    #[test]
    fn duplicates_dropped_and_point_reasons_counted() {
        let mut p = pipeline();
        let mut out = Outputs::default();
        let now = T0 + 200_000;
        p.process(
            POS,
            &batch("a", 1, &[(T0, 1.0), (T0 + 10_000, 3.0)]),
            now,
            &mut out,
        );
        p.process(
            POS,
            &batch("a", 1, &[(T0, 1.0), (T0 + 10_000, 3.0)]),
            now,
            &mut out,
        );
        assert_eq!(p.stats().duplicates, 1);
        p.process(
            POS,
            &batch(
                "a",
                2,
                &[
                    (T0 + 100_000, 5.0),
                    (T0 + 20_000, f64::NAN),
                    (now + 600_000, 1.0),
                ],
            ),
            now,
            &mut out,
        );
        assert_eq!(out.windows.len(), 1, "watermark 70s closed [T0, T0+60s)");
        assert_eq!(out.windows[0].agg.count, 2);
        p.process(POS, &batch("a", 3, &[(T0 + 5_000, 9.0)]), now, &mut out);
        let reasons: Vec<_> = out
            .rejected
            .iter()
            .map(|r| (r.reason, r.point_count))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (RejectReason::NonFinite, 1),
                (RejectReason::Future, 1),
                (RejectReason::Late, 1)
            ]
        );
        assert_eq!(p.stats().rejected_points(RejectReason::Late), 1);
        assert_eq!(p.stats().points_accepted, 3);
        p.process(POS, b"\xff\xff garbage", now, &mut out);
        assert_eq!(out.rejected.last().unwrap().reason, RejectReason::Decode);
        assert_eq!(p.stats().rejected_records(RejectReason::Decode), 1);
        p.finish(&mut out);
        assert_eq!(out.windows.len(), 2);
        assert_eq!(p.open_windows(), 0);
    }

    #[test]
    fn seq_below_window_is_refused_with_its_reason() {
        let mut p = pipeline();
        let mut out = Outputs::default();
        p.process(POS, &batch("a", 5000, &[(T0, 1.0)]), T0, &mut out);
        p.process(POS, &batch("a", 10, &[(T0, 1.0)]), T0, &mut out);
        assert_eq!(out.rejected[0].reason, RejectReason::SeqTooOld);
        assert_eq!(out.rejected[0].seq, Some(10));
    }

    /// One batch of agent `agent` (tenant `tenant`) with one point in
    /// each of the series `cpu_pct{core=<n>}` for `n` in `cores`.
    fn multi(tenant: &str, agent: &str, seq: u64, cores: std::ops::Range<u32>) -> Vec<u8> {
        TelemetryBatch {
            tenant_id: tenant.into(),
            agent_id: agent.into(),
            seq,
            sent_at_ms: T0,
            agent: None,
            series: cores
                .map(|c| Series {
                    metric: "cpu_pct".into(),
                    labels: vec![Label {
                        key: "core".into(),
                        value: c.to_string(),
                    }],
                    timestamps_ms: vec![T0 + seq as i64],
                    values: vec![1.0],
                })
                .collect(),
        }
        .encode_to_vec()
    }

    #[test]
    fn cardinality_guard_refuses_new_series_over_the_limits() {
        let mut c = cfg();
        c.limits.max_series_per_agent = 3;
        c.limits.max_series_per_tenant = 5;
        let mut p = Pipeline::new(c, Arc::new(RuleSet::default())).unwrap();
        let mut out = Outputs::default();
        p.process(POS, &multi("t", "a", 1, 0..5), T0, &mut out);
        assert_eq!(p.stats().points_accepted, 3);
        assert_eq!(p.stats().rejected_points(RejectReason::SeriesLimit), 2);
        let r: Vec<_> = out
            .rejected
            .iter()
            .map(|r| (r.reason, r.labels.clone()))
            .collect();
        assert_eq!(
            r,
            vec![
                (RejectReason::SeriesLimit, Some("core=3".to_string())),
                (RejectReason::SeriesLimit, Some("core=4".to_string()))
            ]
        );
        // Known series keep flowing; the tenant has 2 series left.
        p.process(POS, &multi("t", "a", 2, 0..3), T0, &mut out);
        p.process(POS, &multi("t", "b", 1, 0..3), T0, &mut out);
        assert_eq!(p.stats().points_accepted, 3 + 3 + 2);
        assert_eq!(p.stats().rejected_points(RejectReason::SeriesLimit), 3);
        // Another tenant is not affected.
        p.process(POS, &multi("u", "a", 1, 0..3), T0, &mut out);
        assert_eq!(p.stats().points_accepted, 11);
        assert_eq!(p.stats().series, 8);
        // The guard's state survives a checkpoint.
        let mut back: Pipeline = serde_json::from_slice(&serde_json::to_vec(&p).unwrap()).unwrap();
        back.attach_rules(Arc::new(RuleSet::default()));
        back.process(POS, &multi("t", "c", 1, 0..1), T0, &mut out);
        assert_eq!(back.stats().rejected_points(RejectReason::SeriesLimit), 4);
    }

    #[test]
    fn skipped_processing_time_is_not_silence() {
        let rules = RuleSet::from_toml(
            "[offline]\nname = \"agent_offline\"\nafter = \"10m\"\nseverity = \"warning\"\n",
            "t.toml",
        )
        .unwrap();
        let mut p = Pipeline::new(cfg(), Arc::new(rules)).unwrap();
        let mut out = Outputs::default();
        p.process(POS, &batch("a", 1, &[(T0, 1.0)]), T0, &mut out);
        // Vigil was down for an hour: restore with the gap skipped.
        p.skip_processing_time(3_600_000);
        p.tick(T0 + 3_600_000 + 60_000, &mut out);
        assert!(out.windows.is_empty() && out.alerts.is_empty(), "{out:?}");
        // Real silence after the gap still counts.
        p.tick(T0 + 3_600_000 + 700_000, &mut out);
        assert_eq!(out.windows.len(), 1);
        assert_eq!(out.alerts.len(), 1, "agent_offline");
    }

    /// Finishing in steps of any size closes the same windows, in the
    /// same order, with the same alerts, as finishing at once; and every
    /// agent's frontier moves (its late points stay refused).
    #[test]
    fn finish_in_steps_equals_finish_at_once() {
        let rules = cpu_rules(
            "[[threshold]]\nname = \"cpu_any\"\nmetric = \"cpu_pct\"\naggregate = \"max\"\n\
             op = \">\"\nvalue = 90\nseverity = \"info\"\n",
        );
        let mut p = Pipeline::new(cfg(), rules).unwrap();
        let mut out = Outputs::default();
        let now = T0 + 10_000_000;
        for a in 0..7 {
            let pts: Vec<(i64, f64)> = (0..5)
                .map(|k| {
                    (
                        T0 + k * 60_000 + a * 1_000,
                        if k == 4 { 95.0 } else { 50.0 },
                    )
                })
                .collect();
            p.process(POS, &batch(&format!("a{a}"), 1, &pts), now, &mut out);
        }
        let key = |o: &Outputs| {
            let w: Vec<_> = o
                .windows
                .iter()
                .map(|w| (w.series.agent().to_string(), w.start_ms, w.agg.count))
                .collect();
            let a: Vec<_> = o.alerts.iter().map(|a| a.id.clone()).collect();
            (w, a)
        };
        out.clear();
        let mut once = p.clone();
        once.finish(&mut out);
        let want = key(&out);
        assert!(!want.0.is_empty() && !want.1.is_empty());
        for step in [0, 1, 2, 5] {
            let mut q = p.clone();
            let mut got = Outputs::default();
            let mut calls = 1;
            while !q.finish_some(&mut got, step) {
                calls += 1;
            }
            assert_eq!(key(&got), want, "step {step}");
            assert!(calls > 1);
            let mut late = Outputs::default();
            q.process(
                POS,
                &batch("a0", 2, &[(T0 + 4 * 60_000, 1.0)]),
                now,
                &mut late,
            );
            assert_eq!(q.stats().rejected_points(RejectReason::Late), 1);
        }
    }

    #[test]
    fn idle_agent_windows_close_on_tick() {
        let mut p = pipeline();
        let mut out = Outputs::default();
        p.process(POS, &batch("a", 1, &[(T0, 1.0)]), T0, &mut out);
        p.tick(T0 + 299_000, &mut out);
        assert!(out.windows.is_empty());
        p.tick(T0 + 300_000, &mut out);
        assert_eq!(out.windows.len(), 1);
        assert_eq!(p.stats().windows_closed_idle, 1);
    }

    fn cpu_rules(extra_before: &str) -> Arc<RuleSet> {
        let text = format!(
            "{extra_before}\n[[threshold]]\nname = \"cpu_high\"\nmetric = \"cpu_pct\"\n\
             aggregate = \"mean\"\nop = \">\"\nvalue = 90\nfor = 3\nclear = 80\nseverity = \"warning\"\n"
        );
        Arc::new(RuleSet::from_toml(&text, "t.toml").unwrap())
    }

    /// Detector state is addressed from the series' slots: a
    /// restore under an edited rule set keeps the state of rules that kept
    /// their name, drops removed rules and starts added ones on the
    /// series already known.
    #[test]
    fn restore_under_edited_rules_keeps_state_by_name() {
        let mut p = Pipeline::new(cfg(), cpu_rules("")).unwrap();
        let mut out = Outputs::default();
        let now = T0 + 10_000_000;
        let vals = [95.0, 95.0, 100.0, 100.0, 50.0, 50.0, 50.0];
        let mut seq = 0;
        let mut feed = |p: &mut Pipeline, out: &mut Outputs, k: usize| {
            seq += 1;
            p.process(
                POS,
                &batch("a", seq, &[(T0 + k as i64 * 60_000, vals[k])]),
                now,
                out,
            );
        };
        // Windows 0 and 1 close breaching (for = 3); then a checkpoint.
        for k in 0..4 {
            feed(&mut p, &mut out, k);
        }
        assert_eq!(out.windows.len(), 2);
        assert!(out.alerts.is_empty());
        let json = serde_json::to_vec(&p).unwrap();
        let mut back: Pipeline = serde_json::from_slice(&json).unwrap();
        // An added rule before it (watching the same series) and one for
        // another metric.
        back.attach_rules(cpu_rules(
            "[[threshold]]\nname = \"cpu_any\"\nmetric = \"cpu_pct\"\naggregate = \"max\"\n\
             op = \">\"\nvalue = 99\nseverity = \"info\"\n\
             [[threshold]]\nname = \"mem\"\nmetric = \"mem_pct\"\naggregate = \"max\"\n\
             op = \">\"\nvalue = 99\nseverity = \"info\"\n",
        ));
        out.clear();
        feed(&mut back, &mut out, 4);
        let fired: Vec<&str> = out.alerts.iter().map(|a| a.rule.as_str()).collect();
        assert_eq!(
            fired,
            vec!["cpu_any", "cpu_high"],
            "the added rule watches the known series; cpu_high kept its run of 2"
        );
        assert_eq!(back.detectors.series_states(), 2);
        // Back under the original rules: cpu_any's state is dropped,
        // cpu_high is still firing and resolves.
        let json = serde_json::to_vec(&back).unwrap();
        let mut again: Pipeline = serde_json::from_slice(&json).unwrap();
        again.attach_rules(cpu_rules(""));
        out.clear();
        feed(&mut again, &mut out, 5);
        assert!(out.alerts.is_empty(), "{:?}", out.alerts);
        feed(&mut again, &mut out, 6);
        let got: Vec<(&str, AlertStatus)> = out
            .alerts
            .iter()
            .map(|a| (a.rule.as_str(), a.status))
            .collect();
        assert_eq!(got, vec![("cpu_high", AlertStatus::Resolved)]);
        assert_eq!(
            again.detectors.series_states(),
            0,
            "a resolved rule with no run in progress holds no state"
        );
    }

    /// Runs batches through a pipeline, optionally checkpointing (serde
    /// round trip) after `restore_at` records; returns closed windows.
    fn run(batches: &[TestBatch], restore_at: Option<usize>) -> Vec<(String, i64, u64, u64)> {
        let mut p = pipeline();
        let mut out = Outputs::default();
        // A fixed processing time well after every point: resends and
        // interleavings must not change which points count as future.
        let now = T0 + 10_000_000;
        for (i, (agent, seq, pts)) in batches.iter().enumerate() {
            if Some(i) == restore_at {
                let snap = serde_json::to_vec(&p).unwrap();
                p = serde_json::from_slice(&snap).unwrap();
                p.attach_rules(Arc::new(RuleSet::default()));
            }
            p.process(POS, &batch(agent, *seq, pts), now, &mut out);
        }
        p.finish(&mut out);
        let mut w: Vec<_> = out
            .windows
            .iter()
            .map(|w| {
                (
                    w.series.agent().to_string(),
                    w.start_ms,
                    w.agg.count,
                    w.agg.sum.to_bits(),
                )
            })
            .collect();
        w.sort();
        w
    }

    fn fleet() -> impl Strategy<Value = Vec<TestBatch>> {
        // Two agents; agent "b" has a clock up to 4 minutes ahead.
        proptest::collection::vec(
            (
                0u8..2,
                proptest::collection::vec((0i64..20, 0i64..100), 1..6),
            ),
            1..60,
        )
        .prop_map(|bs| {
            let mut seq = [0u64; 2];
            let mut t = [T0; 2];
            bs.into_iter()
                .map(|(a, pts)| {
                    seq[a as usize] += 1;
                    t[a as usize] += 10_000;
                    let skew = if a == 1 { 240_000 } else { 0 };
                    let pts = pts
                        .into_iter()
                        .map(|(dt, v)| (t[a as usize] + skew - dt * 1_000, v as f64))
                        .collect();
                    (
                        if a == 0 {
                            "a".to_string()
                        } else {
                            "b".to_string()
                        },
                        seq[a as usize],
                        pts,
                    )
                })
                .collect()
        })
    }

    proptest! {
        /// Resending any batch again (anywhere later in the stream) changes
        /// nothing in the output.
        #[test]
        fn resent_batches_change_nothing(bs in fleet(), resend in proptest::collection::vec((0usize..60, 0usize..60), 0..10)) {
            let straight = run(&bs, None);
            let mut with_dups = bs.clone();
            for (i, j) in resend {
                let i = i % bs.len();
                let at = (i + 1 + j % bs.len()).min(with_dups.len());
                with_dups.insert(at, bs[i].clone());
            }
            prop_assert_eq!(run(&with_dups, None), straight);
        }

        /// A checkpoint/restore at any point gives the same output.
        #[test]
        fn checkpoint_restore_is_invisible(bs in fleet(), at in 0usize..60) {
            prop_assert_eq!(run(&bs, Some(at % bs.len())), run(&bs, None));
        }

        /// An agent with a clock far ahead does not close another agent's
        /// windows: agent a's windows equal those it gets when alone.
        #[test]
        fn skewed_agent_does_not_close_others(bs in fleet()) {
            let alone: Vec<_> = bs.iter().filter(|b| b.0 == "a").cloned().collect();
            let a_mixed: Vec<_> = run(&bs, None).into_iter().filter(|w| w.0 == "a").collect();
            prop_assert_eq!(a_mixed, run(&alone, None));
        }
    }
}

/// Regression tests for bugs found in review: extreme timestamps, clock
/// edge cases, ambiguous ids, non-finite sums in checkpoints.
#[cfg(test)]
mod review_tests {
    use super::*;
    use prost::Message;
    use vigil_proto::v1::Series;

    const T0: i64 = 1_800_000_000_000;
    const POS: Position = Position {
        partition: 0,
        offset: 0,
    };

    fn pipe(clock: ClockMode) -> Pipeline {
        let cfg = PipelineConfig {
            clock,
            ..PipelineConfig::default()
        };
        Pipeline::new(cfg, Arc::new(RuleSet::default())).unwrap()
    }

    fn rec(tenant: &str, agent: &str, seq: u64, sent_at_ms: i64, pts: &[(i64, f64)]) -> Vec<u8> {
        TelemetryBatch {
            tenant_id: tenant.into(),
            agent_id: agent.into(),
            seq,
            sent_at_ms,
            agent: None,
            series: vec![Series {
                metric: "cpu_pct".into(),
                labels: vec![],
                timestamps_ms: pts.iter().map(|p| p.0).collect(),
                values: pts.iter().map(|p| p.1).collect(),
            }],
        }
        .encode_to_vec()
    }

    /// window.rs:43 `div_euclid(W) * W` overflows for ts < -9223372036854720000.
    #[test]
    fn review_min_timestamp_does_not_panic() {
        let mut p = pipe(ClockMode::Wall);
        let mut out = Outputs::default();
        p.process(POS, &rec("t", "a", 1, T0, &[(i64::MIN, 1.0)]), T0, &mut out);
        p.finish(&mut out);
    }

    /// window.rs:206 `end_ms: start + size` overflows for the last window
    /// (reachable in replay mode when the clock is near i64::MAX).
    #[test]
    fn review_max_timestamp_does_not_panic() {
        let mut p = pipe(ClockMode::Replay);
        let mut out = Outputs::default();
        p.process(
            POS,
            &rec("t", "a", 1, i64::MAX, &[(i64::MAX, 1.0)]),
            0,
            &mut out,
        );
        p.finish(&mut out);
    }

    /// clock.rs:44 `sent_at_ms - now` overflows.
    #[test]
    fn review_replay_clock_sub_does_not_panic() {
        let mut p = pipe(ClockMode::Replay);
        let mut out = Outputs::default();
        p.process(POS, &rec("t", "a", 1, -1, &[(T0, 1.0)]), 0, &mut out);
        p.process(POS, &rec("t", "a", 2, i64::MAX, &[(T0, 1.0)]), 0, &mut out);
    }

    /// Regression: once every agent was silent longer than max_clock_skew,
    /// the replay clock never moved again and every later point was refused
    /// as `future`. Now only the first batch after the gap is refused (the
    /// recent batches outvote it as soon as a second one agrees).
    #[test]
    fn review_replay_clock_survives_a_fleet_gap() {
        let mut p = pipe(ClockMode::Replay);
        let mut out = Outputs::default();
        p.process(POS, &rec("t", "a", 1, T0, &[(T0, 1.0)]), 0, &mut out);
        // the whole fleet is silent for 6 minutes, then resumes
        let t = T0 + 360_000;
        p.process(POS, &rec("t", "a", 2, t, &[(t, 1.0)]), 0, &mut out);
        p.process(POS, &rec("t", "b", 1, t, &[(t, 1.0)]), 0, &mut out);
        p.process(
            POS,
            &rec("t", "a", 3, t + 60_000, &[(t + 60_000, 1.0)]),
            0,
            &mut out,
        );
        assert_eq!(p.stats().rejected_points(RejectReason::Future), 1);
        assert_eq!(p.replay_now_ms(), Some(t + 60_000));
    }

    /// pipeline.rs:266-270 (and model.rs:22): the agent key `tenant \0 agent`
    /// is ambiguous when an id contains NUL; two tenants share one agent state.
    #[test]
    fn review_nul_in_ids_does_not_merge_agents() {
        let mut p = pipe(ClockMode::Wall);
        let mut out = Outputs::default();
        p.process(POS, &rec("x\0y", "z", 1, T0, &[(T0, 1.0)]), T0, &mut out);
        p.process(POS, &rec("x", "y\0z", 1, T0, &[(T0, 2.0)]), T0, &mut out);
        p.finish(&mut out);
        let mut tenants: Vec<_> = out
            .windows
            .iter()
            .map(|w| w.series.tenant().to_string())
            .collect();
        tenants.sort();
        // Either both refused (missing_id) or two separate series.
        assert!(
            out.windows.is_empty() || tenants == vec!["x".to_string(), "x\0y".to_string()],
            "windows: {tenants:?}, duplicates: {}",
            p.stats().duplicates
        );
    }

    /// Finite values can overflow the window sum to +inf; serde_json writes
    /// it as `null` and the checkpoint no longer restores.
    #[test]
    fn review_checkpoint_with_infinite_sum_restores() {
        let mut p = pipe(ClockMode::Wall);
        let mut out = Outputs::default();
        p.process(
            POS,
            &rec("t", "a", 1, T0, &[(T0, 1e308), (T0 + 1, 1e308)]),
            T0,
            &mut out,
        );
        let snap = serde_json::to_vec(&p).unwrap();
        let back: Result<Pipeline, _> = serde_json::from_slice(&snap);
        assert!(back.is_ok(), "{:?}", back.err());
    }
}
