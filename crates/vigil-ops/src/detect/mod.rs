//! Detectors and the alert lifecycle that turns their conditions into
//! one firing and one resolved event per incident.
//!
//! ```text
//!  closed WindowAggregate ──▶ series families (threshold, trend, …) ──┐
//!  batch arrived / verdict ─▶ agent families  (offline, invalid input) ┼──▶ lifecycle ──▶ AlertEvent
//!  tick ────────────────────▶ agent families                          ─┘   (ids, fingerprints,
//!                                                                           maintenance)
//! ```
//!
//! Detectors come in *families*, each one module that owns its rule type,
//! its rules-file section, its state and its hooks; [`registry`] lists
//! them and generates the per-family fields and calls (static dispatch:
//! no trait objects per window or per batch). See [`registry`] for how to
//! add a family, and `docs/detectors.md`.
//!
//! [`DetectorEngine`] owns all detector state of one partition. It is pure:
//! time comes in only through window bounds and the `now_ms` arguments.
//! Contracts:
//!
//! * Each incident MUST produce one `firing` event, then at most one
//!   `resolved` event with the same id (`incident_id(fingerprint,
//!   started_at_ms)`), so a replay of the same input yields the same ids.
//! * Events MUST come out in a deterministic order for a given input
//!   (families in registry order and rules in file order per window;
//!   agents in (tenant, agent) order per tick).
//! * Every incident's `started_at_ms` MUST be derived from state (a
//!   window, the agent's last batch plus `after`, the first refused batch
//!   of a run), never from the time of the tick that noticed it.
//! * The engine's serde form is its checkpoint, and records the definition
//!   of every rule its state was built under and the state form version
//!   of every family. Restoring it and calling
//!   [`DetectorEngine::attach_rules`] with the same rules MUST produce
//!   exactly the output the uninterrupted engine would have produced.
//!   Under edited rules, a rule keeps its state only if its name and
//!   definition are unchanged; open incidents of edited and removed rules
//!   are resolved (`rule_changed`, `rule_removed`), and every known series
//!   is matched against the new rules (see
//!   [`DetectorEngine::attach_rules_with`]). Checkpoints written before
//!   the registry (worker format 5 and 4) restore too ([`legacy`]).
//!
//! Memory: a series finds its state through a [`DetHandle`] (8 bytes with
//! today's families: a watch set index and one slot per series family)
//! that the pipeline keeps next to the series' windows: no per-rule hash
//! map. Watch sets (which rules watch a series) are shared by every series
//! with the same metric and labels. Each series family keeps its state its
//! own way: sparse for threshold (idle rules hold nothing), an arena for
//! trend. An agent's state is a [`Liveness`] (40 bytes) that the pipeline
//! keeps with the agent. [`DetectorEngine::on_window`] serves callers
//! without handles (tests, benchmarks) through a map from series id to
//! handle, and [`DetectorEngine::on_agent_seen`] callers without an agent
//! table.
//!
//! Submodules: [`registry`] (the family list and contracts), one per
//! family ([`threshold`], [`trend`], [`offline`], [`invalid_input`],
//! [`patch_sla`], [`antivirus`], [`backup`], [`agent_version`],
//! [`brute_force`], [`off_hours_session`]), [`condition`] (the lifecycle
//! of the status families: one condition per report), [`security`]
//! (what the security families share), [`lifecycle`] (event construction
//! shared by all) and [`legacy`] (reading older checkpoints).

pub mod agent_version;
pub mod anomaly;
pub mod antivirus;
pub mod backup;
pub mod brute_force;
pub mod condition;
pub mod invalid_input;
pub mod legacy;
pub mod lifecycle;
pub mod off_hours_session;
pub mod offline;
pub mod patch_sla;
pub mod registry;
pub mod security;
pub mod threshold;
pub mod trend;

use std::collections::BTreeMap;
use std::sync::Arc;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::model::{AlertEvent, OptMs, SeriesId, SeriesMeta, WindowAggregate};
use crate::rules::RuleSet;

use invalid_input::InputVerdict;
use registry::{
    AgentCx, Bound, CarryMaps, Registry, ReportCx, ReportStores, SeriesCx, SeriesStores, WatchSet,
};
pub use registry::{AgentStates, DetHandle};
use vigil_proto::v1::{AgentInfo, SecurityEvent, StatusReport};

impl Default for DetHandle {
    fn default() -> Self {
        DetHandle::NONE
    }
}

/// Liveness of one agent: when it last sent a batch (for the idle
/// timeout and the offline family) and every agent family's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "legacy::LivenessRepr")]
pub struct Liveness {
    /// Processing time of the agent's latest batch, moved later by
    /// skipped time (`i64::MIN`: none yet; such an agent is never declared
    /// offline). Silence is measured from here.
    pub last_seen_ms: i64,
    /// Skipped processing time included in `last_seen_ms` (see
    /// [`Liveness::skip`]): the latest batch arrived at `last_seen_ms -
    /// skipped_ms`.
    pub skipped_ms: i64,
    /// Every agent family's state of this agent.
    pub families: AgentStates,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            last_seen_ms: i64::MIN,
            skipped_ms: 0,
            families: AgentStates::default(),
        }
    }
}

impl Liveness {
    /// Records a batch of the agent at `now_ms`.
    #[inline]
    pub fn seen(&mut self, now_ms: i64) {
        let arrived = match self.arrived_ms() {
            Some(a) => a.max(now_ms),
            None => now_ms,
        };
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
        self.skipped_ms = self.last_seen_ms.saturating_sub(arrived);
    }

    /// Processing time of the agent's latest batch (without skipped time),
    /// if it sent one.
    pub fn arrived_ms(&self) -> Option<i64> {
        (self.last_seen_ms != i64::MIN).then(|| self.last_seen_ms.saturating_sub(self.skipped_ms))
    }

    /// Moves the last-seen time `ms` later (time that is not the agent's
    /// silence, see [`crate::pipeline::Pipeline::skip_processing_time`]).
    /// Incident starts stay anchored at the real last batch.
    pub fn skip(&mut self, ms: i64) {
        if self.last_seen_ms != i64::MIN {
            self.last_seen_ms = self.last_seen_ms.saturating_add(ms);
            self.skipped_ms = self.skipped_ms.saturating_add(ms);
        }
    }

    /// What the agent families' hooks know of the agent at `now_ms`.
    #[inline]
    fn cx<'a>(&self, tenant: &'a str, agent: &'a str, now_ms: i64) -> AgentCx<'a> {
        AgentCx {
            tenant,
            agent,
            now_ms,
            last_seen_ms: self.last_seen_ms,
            arrived_ms: self.arrived_ms(),
        }
    }
}

/// Liveness of every agent seen, by tenant then agent, for callers that
/// keep no agent table of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTable {
    /// tenant → agent → state.
    pub agents: BTreeMap<String, BTreeMap<String, Liveness>>,
}

impl AgentTable {
    /// Runs `f` on the state of `tenant`/`agent`, created when new.
    pub fn with_agent<R>(
        &mut self,
        tenant: &str,
        agent: &str,
        f: impl FnOnce(&mut Liveness) -> R,
    ) -> R {
        let per_tenant = match self.agents.get_mut(tenant) {
            Some(m) => m,
            None => self.agents.entry(tenant.to_string()).or_default(),
        };
        let st = match per_tenant.get_mut(agent) {
            Some(s) => s,
            None => per_tenant.entry(agent.to_string()).or_default(),
        };
        f(st)
    }

    /// Every agent's state, in (tenant, agent) order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &str, &mut Liveness)> {
        self.agents.iter_mut().flat_map(|(t, m)| {
            m.iter_mut()
                .map(move |(a, st)| (t.as_str(), a.as_str(), st))
        })
    }
}

/// What a caller that keeps its own series handles and agent liveness
/// (a pipeline) lends to [`DetectorEngine::attach_rules_with`].
pub trait Holdings {
    /// Calls `f` on every series held: identity, uid and handle (updated
    /// in place).
    fn each_series(&mut self, f: &mut dyn FnMut(&SeriesMeta, u64, &mut DetHandle));
    /// Calls `f` on every agent held: tenant, agent and liveness.
    fn each_agent(&mut self, f: &mut dyn FnMut(&str, &str, &mut Liveness));
}

/// A caller holding nothing (the engine keeps everything itself).
struct NoHoldings;

impl Holdings for NoHoldings {
    fn each_series(&mut self, _: &mut dyn FnMut(&SeriesMeta, u64, &mut DetHandle)) {}
    fn each_agent(&mut self, _: &mut dyn FnMut(&str, &str, &mut Liveness)) {}
}

/// Runs every family's rules over closed windows and agent liveness. See
/// the module docs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "legacy::EngineRepr")]
pub struct DetectorEngine {
    #[serde(skip)]
    rules: Arc<RuleSet>,
    /// The rule definitions the state below was built under.
    bound: Bound,
    /// Latest processing time the engine was told (ticks, batches): the
    /// time at which a rule change closes agent families' incidents (a
    /// pure engine reads no clock).
    latest_ms: OptMs,
    /// The checkpoint form version of every family's state (written for
    /// the restore to check, see [`registry`]).
    versions: BTreeMap<String, u32>,
    /// Distinct watch sets, addressed by [`DetHandle`]s.
    sets: Vec<WatchSet>,
    #[serde(skip)]
    set_index: HashMap<WatchSet, u16>,
    /// Every series family's state.
    series: SeriesStores,
    /// Agents fed through [`DetectorEngine::on_agent_seen`]; a pipeline
    /// keeps its agents' liveness itself and leaves this empty.
    agents: AgentTable,
    /// Every report family's state (left out of the checkpoint when
    /// empty, so checkpoints without it read as before).
    #[serde(default, skip_serializing_if = "ReportStores::is_empty")]
    reports: ReportStores,
    /// Series fed through [`DetectorEngine::on_window`]: identity and
    /// handle, by series id (which is also their uid). A pipeline keeps
    /// its handles itself and leaves this empty.
    #[serde(with = "sorted_map")]
    standalone: HashMap<SeriesId, (SeriesMeta, DetHandle)>,
}

/// The engine's part of a delta checkpoint (see
/// [`crate::pipeline::PipelineDelta`]): the engine's own fields whole,
/// and of the series only those of the agents that changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EngineDelta {
    bound: Bound,
    latest_ms: OptMs,
    versions: BTreeMap<String, u32>,
    sets: Vec<WatchSet>,
    series: SeriesStores,
    agents: AgentTable,
    /// The report families' states of the agents `report_agents`.
    #[serde(default, skip_serializing_if = "ReportStores::is_empty")]
    reports: ReportStores,
    /// The agents (tenant, agent) whose report families' states the delta
    /// replaces: those that changed, evicted ones included (they have
    /// none any more).
    #[serde(default)]
    report_agents: Vec<(String, String)>,
    #[serde(with = "sorted_map")]
    standalone: HashMap<SeriesId, (SeriesMeta, DetHandle)>,
}

/// Copies one series' state from `from` to `to` under the watch sets
/// `sets`; a series no rule watches has nothing to copy.
fn copy_series(
    sets: &[WatchSet],
    from: &SeriesStores,
    to: &mut SeriesStores,
    h: DetHandle,
    uid: u64,
) -> DetHandle {
    match sets.get(h.set as usize) {
        Some(set) => Registry::copy(from, to, set, h, uid),
        None => h,
    }
}

/// Whether this build reads state of every family in `versions` (family
/// → state form version): it knows the family, in that form or a newer.
fn readable(versions: &BTreeMap<String, u32>) -> Result<(), String> {
    let known = Registry::versions();
    for (family, v) in versions {
        match known.get(family) {
            None => {
                return Err(format!(
                    "the checkpoint holds state of detector family {family:?}, \
                     which this Vigil does not know"
                ))
            }
            Some(k) if v > k => {
                return Err(format!(
                    "the checkpoint holds state of detector family {family:?} in form \
                     version {v}, this Vigil reads up to version {k}"
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Whether `later`, a delta written after a state built under `bound`
/// with watch sets `sets`, continues it: the same rule definitions, and
/// watch sets that only grew (a rule change lays them out again, after
/// which a whole checkpoint comes first).
fn extends(bound: &Bound, sets: &[WatchSet], later: &EngineDelta) -> Result<(), String> {
    readable(&later.versions)?;
    let json = |b: &Bound| serde_json::to_string(b).unwrap_or_default();
    if json(bound) != json(&later.bound) {
        return Err("it was written under other rule definitions than the state before it".into());
    }
    if later.sets.len() < sets.len() || later.sets[..sets.len()] != *sets {
        return Err("its watch sets do not extend those of the state before it".into());
    }
    Ok(())
}

impl EngineDelta {
    /// Whether this delta continues `earlier` (see [`extends`]).
    pub(crate) fn continues(&self, earlier: &EngineDelta) -> Result<(), String> {
        extends(&earlier.bound, &earlier.sets, self)
    }

    /// Its series states, taken out (a restore holds them only while it
    /// copies them into the engine).
    pub(crate) fn take_series(&mut self) -> SeriesStores {
        std::mem::take(&mut self.series)
    }
}

/// A rebind in progress: the state being carried over to a new rule set.
struct Rebind<'a> {
    /// The rules the current state was built under.
    old: &'a Bound,
    sets: Vec<WatchSet>,
    set_index: HashMap<WatchSet, u16>,
    stores: SeriesStores,
    maps: CarryMaps,
    /// `resolved` events of incidents whose rule was edited or removed.
    retired: Vec<AlertEvent>,
}

impl DetectorEngine {
    /// Creates an engine with empty state.
    pub fn new(rules: Arc<RuleSet>) -> Self {
        let mut e = DetectorEngine {
            rules: Arc::default(),
            bound: Bound::default(),
            latest_ms: OptMs::NONE,
            versions: Registry::versions(),
            sets: Vec::new(),
            set_index: HashMap::new(),
            series: SeriesStores::default(),
            agents: AgentTable::default(),
            reports: ReportStores::default(),
            standalone: HashMap::new(),
        };
        // Empty state: nothing to carry over, nothing to resolve.
        e.attach_rules(rules, &mut Vec::new());
        e
    }

    /// The engine restored from its serde form (see [`legacy`]); refuses
    /// state of a family this build does not know, or in a newer form.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn restored(
        bound: Bound,
        latest_ms: OptMs,
        versions: &BTreeMap<String, u32>,
        sets: Vec<WatchSet>,
        series: SeriesStores,
        agents: AgentTable,
        reports: ReportStores,
        standalone: HashMap<SeriesId, (SeriesMeta, DetHandle)>,
    ) -> Result<Self, String> {
        readable(versions)?;
        let known = Registry::versions();
        Ok(DetectorEngine {
            rules: Arc::default(),
            bound,
            latest_ms,
            versions: known,
            sets,
            set_index: HashMap::new(),
            series,
            agents,
            reports,
            standalone,
        })
    }

    /// Attaches a rule set, e.g. after restoring the engine from a
    /// checkpoint (the rules are not part of the serde form), see
    /// [`DetectorEngine::attach_rules_with`]. For callers without handles
    /// (tests, benchmarks); a pipeline uses
    /// [`DetectorEngine::attach_rules_with`].
    pub fn attach_rules(&mut self, rules: Arc<RuleSet>, out: &mut Vec<AlertEvent>) {
        self.attach_rules_with(rules, &mut NoHoldings, out);
    }

    /// Attaches a rule set for a caller that keeps series handles and agent
    /// liveness itself (`held`), comparing each rule with the definition
    /// the state was built under (name, and every field that shapes
    /// detection; severity and summary only shape events):
    ///
    /// * an unchanged rule keeps its state exactly (identical rules change
    ///   nothing at all, so a restore continues bit for bit);
    /// * an edited rule (same name, another definition) and a removed rule
    ///   lose their state, and their open incidents are resolved into
    ///   `out` with reason `rule_changed` or `rule_removed`; an edited rule
    ///   then starts afresh on every series it now matches;
    /// * every known series is matched again, so a rule whose metric or
    ///   labels changed (or a new rule) watches the known series that now
    ///   match, and stops watching those that no longer do.
    ///
    /// The resolved events are in (tenant, agent, metric, labels, rule)
    /// order. A series family's incident resolves at the end of the last
    /// window its rule saw; an agent family's at the latest processing
    /// time the engine was told (never before the incident's start).
    pub fn attach_rules_with(
        &mut self,
        rules: Arc<RuleSet>,
        held: &mut dyn Holdings,
        out: &mut Vec<AlertEvent>,
    ) {
        if self.set_index.len() != self.sets.len() {
            self.set_index = self
                .sets
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), i as u16))
                .collect();
        }
        let old = std::mem::replace(&mut self.bound, Bound::of(&rules));
        self.rules = rules;
        let mut retired = Vec::new();
        self.retire_agent_rules(&old, held, &mut retired);
        let at = self.latest_ms.get().unwrap_or(i64::MIN);
        Registry::rebind_reports(&mut self.reports, &old, &self.rules, at, &mut retired);
        if let Some(maps) = Registry::carry_maps(&old, &self.rules) {
            let mut next = Rebind {
                old: &old,
                sets: Vec::new(),
                set_index: HashMap::new(),
                stores: SeriesStores::default(),
                maps,
                retired: Vec::new(),
            };
            let mut standalone = std::mem::take(&mut self.standalone);
            for (id, (meta, h)) in standalone.iter_mut() {
                *h = self.rebind(&mut next, *h, meta, id.0);
            }
            held.each_series(&mut |meta, uid, h| *h = self.rebind(&mut next, *h, meta, uid));
            self.standalone = standalone;
            self.sets = next.sets;
            self.set_index = next.set_index;
            self.series = next.stores;
            retired.append(&mut next.retired);
        }
        sort_by_subject(&mut retired);
        out.append(&mut retired);
    }

    /// Resolves the open incidents of agent families' rules (`old`) that
    /// were edited or removed.
    fn retire_agent_rules(
        &mut self,
        old: &Bound,
        held: &mut dyn Holdings,
        out: &mut Vec<AlertEvent>,
    ) {
        let rules = &*self.rules;
        if !Registry::agent_rules_changed(old, rules) {
            return;
        }
        let at = self.latest_ms.get().unwrap_or(i64::MIN);
        let mut each = |tenant: &str, agent: &str, live: &mut Liveness| {
            let a = live.cx(tenant, agent, at);
            Registry::retire_agent(old, rules, &a, &mut live.families, out);
        };
        for (tenant, agent, live) in self.agents.iter_mut() {
            each(tenant, agent, live);
        }
        held.each_agent(&mut each);
    }

    /// The handle of `meta` under the attached rules in `next`, carrying
    /// over the state of rules whose definition is unchanged and retiring
    /// the open incidents of the others.
    fn rebind(
        &self,
        next: &mut Rebind<'_>,
        h: DetHandle,
        meta: &SeriesMeta,
        uid: u64,
    ) -> DetHandle {
        let set = WatchSet::of(&self.rules, meta);
        let mut nh = Registry::rebind(
            &self.series,
            &mut next.stores,
            h,
            self.sets.get(h.set as usize),
            &set,
            &next.maps,
            next.old,
            &self.rules,
            SeriesCx { uid, meta },
            &mut next.retired,
        );
        nh.set = intern_set(&mut next.sets, &mut next.set_index, set);
        nh
    }

    /// Creates the (empty) state of a new series for every rule watching
    /// it and returns where it is.
    pub fn register(&mut self, meta: &SeriesMeta) -> DetHandle {
        let set = WatchSet::of(&self.rules, meta);
        let mut h = DetHandle::NONE;
        Registry::register(&mut self.series, &set, &mut h);
        h.set = intern_set(&mut self.sets, &mut self.set_index, set);
        h
    }

    /// Drops the detector state of the series `uid` at `h` (the series is
    /// evicted: it sent no point for the state TTL), resolving its open
    /// incidents with reason `stale` at the end of the last window each
    /// rule saw. Returns how many incidents it resolved.
    pub fn evict_series(
        &mut self,
        h: DetHandle,
        uid: u64,
        meta: &SeriesMeta,
        out: &mut Vec<AlertEvent>,
    ) -> usize {
        let before = out.len();
        let Some(set) = self.sets.get(h.set as usize) else {
            return 0;
        };
        Registry::evict(
            &mut self.series,
            set,
            h,
            &self.rules,
            SeriesCx { uid, meta },
            out,
        );
        out.len() - before
    }

    /// Resolves the open incidents of the agent families of an agent whose
    /// state is evicted (no batch for the state TTL), with reason `stale`
    /// at `now_ms`. Returns how many it resolved.
    pub fn evict_agent(
        &mut self,
        live: &mut Liveness,
        tenant: &str,
        agent: &str,
        now_ms: i64,
        out: &mut Vec<AlertEvent>,
    ) -> usize {
        self.note_time(now_ms);
        let before = out.len();
        let a = live.cx(tenant, agent, now_ms);
        Registry::expire_agent(&self.rules, &a, &mut live.families, out);
        let r = ReportCx {
            tenant,
            agent,
            now_ms,
        };
        Registry::expire_reports(&mut self.reports, &self.rules, &r, out);
        out.len() - before
    }

    /// One status report of an agent (validated, not in the future), to
    /// the report families (see [`registry::ReportFamily`]), at
    /// processing time `now_ms`.
    pub fn on_status(
        &mut self,
        tenant: &str,
        agent: &str,
        now_ms: i64,
        report: &StatusReport,
        out: &mut Vec<AlertEvent>,
    ) {
        let a = self.report_cx(tenant, agent, now_ms);
        Registry::on_status(&mut self.reports, &self.rules, &a, report, out);
    }

    /// One security event of an agent (validated, not in the future), to
    /// the report families, at processing time `now_ms`.
    pub fn on_security(
        &mut self,
        tenant: &str,
        agent: &str,
        now_ms: i64,
        event: &SecurityEvent,
        out: &mut Vec<AlertEvent>,
    ) {
        let a = self.report_cx(tenant, agent, now_ms);
        Registry::on_security(&mut self.reports, &self.rules, &a, event, out);
    }

    /// The `AgentInfo` of an accepted batch of an agent whose status
    /// reports carry no agent version, as of the batch's send time `at_ms`
    /// (not in the future), to the report families, at processing time
    /// `now_ms`.
    pub fn on_agent_info(
        &mut self,
        tenant: &str,
        agent: &str,
        now_ms: i64,
        info: &AgentInfo,
        at_ms: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        let a = self.report_cx(tenant, agent, now_ms);
        Registry::on_agent_info(&mut self.reports, &self.rules, &a, info, at_ms, out);
    }

    /// Notes processing time `now_ms` and returns the report families'
    /// view of the agent.
    fn report_cx<'a>(&mut self, tenant: &'a str, agent: &'a str, now_ms: i64) -> ReportCx<'a> {
        self.note_time(now_ms);
        ReportCx {
            tenant,
            agent,
            now_ms,
        }
    }

    /// (agent, rule) states held by the report families, for metrics.
    pub fn report_states(&self) -> usize {
        Registry::report_states(&self.reports)
    }

    /// Trend slots held for reuse (freed by evicted series), for metrics
    /// and tests.
    pub fn free_trend_slots(&self) -> usize {
        self.series.trend.free_slots()
    }

    /// The attached rule set.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Number of (rule, series) states held, for metrics: every trend
    /// state of a series held, and the threshold states that are not idle.
    pub fn series_states(&self) -> usize {
        Registry::states(&self.series)
    }

    /// Feeds one closed window of the series `uid` (a number the caller
    /// gives each series, stable for its life and across checkpoints) at
    /// `h`, which is updated; windows of one series arrive in start order
    /// (gaps allowed) and are all of one size (the detectors derive run
    /// starts and time steps from it). Appends the events it causes to
    /// `out`.
    #[inline]
    pub fn on_series_window(
        &mut self,
        h: &mut DetHandle,
        uid: u64,
        w: &WindowAggregate,
        out: &mut Vec<AlertEvent>,
    ) {
        let Some(set) = self.sets.get(h.set as usize) else {
            return;
        };
        Registry::on_window(&mut self.series, set, h, &self.rules, uid, w, out);
    }

    /// Feeds one closed window, finding the series by its id (for callers
    /// that keep no handles); otherwise as
    /// [`DetectorEngine::on_series_window`].
    pub fn on_window(&mut self, w: &WindowAggregate, out: &mut Vec<AlertEvent>) {
        let id = w.series.id();
        let mut h = match self.standalone.get(&id) {
            Some((_, h)) => *h,
            None => {
                let h = self.register(&w.series);
                self.standalone.insert(id, (w.series.clone(), h));
                h
            }
        };
        self.on_series_window(&mut h, id.0, w, out);
        if let Some((_, stored)) = self.standalone.get_mut(&id) {
            *stored = h;
        }
    }

    /// An agent delivered a batch at processing time `now_ms`; resolves its
    /// offline incident, if any. For callers without their own agent
    /// table (the engine keeps the agent's [`Liveness`]); a pipeline uses
    /// [`DetectorEngine::on_seen`].
    pub fn on_agent_seen(
        &mut self,
        tenant: &str,
        agent: &str,
        now_ms: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        self.note_time(now_ms);
        let rules = &*self.rules;
        self.agents.with_agent(tenant, agent, |live| {
            live.seen(now_ms);
            Registry::on_seen(
                rules,
                &live.cx(tenant, agent, now_ms),
                &mut live.families,
                out,
            )
        });
    }

    /// The verdict on a batch of an agent the engine keeps (see
    /// [`DetectorEngine::on_agent_seen`]), for the invalid-input rule, see
    /// [`invalid_input`].
    pub fn on_agent_input(
        &mut self,
        tenant: &str,
        agent: &str,
        now_ms: i64,
        verdict: InputVerdict,
        out: &mut Vec<AlertEvent>,
    ) {
        self.note_time(now_ms);
        let rules = &*self.rules;
        self.agents.with_agent(tenant, agent, |live| {
            let a = live.cx(tenant, agent, now_ms);
            Registry::on_input(rules, &a, verdict, &mut live.families, out)
        });
    }

    /// An agent whose liveness the caller keeps delivered a batch: records
    /// it in `live` and lets the agent families see it.
    #[inline]
    pub fn on_seen(
        &mut self,
        live: &mut Liveness,
        tenant: &str,
        agent: &str,
        now_ms: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        self.note_time(now_ms);
        live.seen(now_ms);
        let a = live.cx(tenant, agent, now_ms);
        Registry::on_seen(&self.rules, &a, &mut live.families, out);
    }

    /// The verdict on a batch of an agent whose liveness the caller keeps,
    /// see [`invalid_input::InputHealth::on_batch`].
    #[inline]
    pub fn on_input(
        &mut self,
        live: &mut Liveness,
        tenant: &str,
        agent: &str,
        now_ms: i64,
        verdict: InputVerdict,
        out: &mut Vec<AlertEvent>,
    ) {
        self.note_time(now_ms);
        let a = live.cx(tenant, agent, now_ms);
        Registry::on_input(&self.rules, &a, verdict, &mut live.families, out);
    }

    /// Remembers the latest processing time told.
    #[inline]
    fn note_time(&mut self, now_ms: i64) {
        if self.latest_ms.get().is_none_or(|t| t < now_ms) {
            self.latest_ms = now_ms.into();
        }
    }

    /// The engine's part of a delta checkpoint: everything but the
    /// caller's series, whose states [`DetectorEngine::copy_series`] adds
    /// one by one (the engine's own standalone series are copied here).
    /// Rules, watch sets and report states are small and go whole.
    pub(crate) fn delta_head(&self, report_agents: Vec<(String, String)>) -> EngineDelta {
        let mut series = SeriesStores::default();
        let standalone = self
            .standalone
            .iter()
            .map(|(id, (meta, h))| {
                let nh = copy_series(&self.sets, &self.series, &mut series, *h, id.0);
                (*id, (meta.clone(), nh))
            })
            .collect();
        EngineDelta {
            bound: self.bound.clone(),
            latest_ms: self.latest_ms,
            versions: self.versions.clone(),
            sets: self.sets.clone(),
            series,
            agents: self.agents.clone(),
            reports: self.reports.subset(&report_agents),
            report_agents,
            standalone,
        }
    }

    /// Copies the state of the series with handle `h` and uid `uid` into
    /// the delta `into`; returns its handle there.
    pub(crate) fn copy_series(&self, h: DetHandle, uid: u64, into: &mut EngineDelta) -> DetHandle {
        copy_series(&self.sets, &self.series, &mut into.series, h, uid)
    }

    /// Whether `later`, a delta written after this engine's state (a
    /// base checkpoint), continues it (see [`extends`]).
    pub(crate) fn continued_by(&self, later: &EngineDelta) -> Result<(), String> {
        extends(&self.bound, &self.sets, later)
    }

    /// Applies the report families' states of a delta written after this
    /// engine's state (each delta of a chain in order, before
    /// [`DetectorEngine::adopt_head`]).
    pub(crate) fn apply_reports(&mut self, d: &mut EngineDelta) {
        for (t, a) in &d.report_agents {
            self.reports.forget(t, a);
        }
        self.reports.merge(std::mem::take(&mut d.reports));
    }

    /// Takes the engine state of `head`, the last delta of a chain whose
    /// series states are `head_series` (taken out of it), and returns
    /// this engine's series stores; the caller then copies every series
    /// into the engine with [`DetectorEngine::restore_series`].
    pub(crate) fn adopt_head(
        &mut self,
        head: EngineDelta,
        head_series: &SeriesStores,
    ) -> SeriesStores {
        let EngineDelta {
            bound,
            latest_ms,
            versions: _,
            sets,
            series: _,
            agents,
            reports: _,
            report_agents: _,
            standalone,
        } = head;
        self.bound = bound;
        self.latest_ms = latest_ms;
        self.sets = sets;
        self.set_index.clear();
        self.agents = agents;
        let mut fresh = SeriesStores::default();
        let mut own = HashMap::with_capacity(standalone.len());
        for (id, (meta, h)) in standalone {
            let nh = copy_series(&self.sets, head_series, &mut fresh, h, id.0);
            own.insert(id, (meta, nh));
        }
        self.standalone = own;
        std::mem::replace(&mut self.series, fresh)
    }

    /// Copies one series of a restored chain from the store it was
    /// checkpointed in (`from`) into the engine's store; returns its new
    /// handle.
    pub(crate) fn restore_series(
        &mut self,
        from: &SeriesStores,
        h: DetHandle,
        uid: u64,
    ) -> DetHandle {
        copy_series(&self.sets, from, &mut self.series, h, uid)
    }

    /// Moves every agent's last-seen time `ms` later (see
    /// [`crate::pipeline::Pipeline::skip_processing_time`]).
    pub fn skip_processing_time(&mut self, ms: i64) {
        for (_, _, st) in self.agents.iter_mut() {
            st.skip(ms);
        }
    }

    /// Processing-time housekeeping: runs the agent families' tick hooks
    /// (offline alerts) for the agents the engine keeps (see
    /// [`DetectorEngine::on_agent_seen`]).
    pub fn on_tick(&mut self, now_ms: i64, out: &mut Vec<AlertEvent>) {
        self.note_time(now_ms);
        let agents = self.agents.iter_mut();
        let unused = &mut |_: &str, _: &str| {};
        tick_agents(&self.rules, now_ms, agents, out, unused);
        Registry::tick_reports(&mut self.reports, &self.rules, now_ms, out, unused);
    }

    /// Processing-time housekeeping for agents whose liveness the caller
    /// keeps: runs the agent families' tick hooks, events in (tenant,
    /// agent) order. Calls `changed` on every agent whose agent or report
    /// families' state the tick changed (an agent may be named twice).
    pub fn on_tick_agents<'a>(
        &mut self,
        now_ms: i64,
        agents: impl Iterator<Item = (&'a str, &'a str, &'a mut Liveness)>,
        out: &mut Vec<AlertEvent>,
        changed: &mut dyn FnMut(&str, &str),
    ) {
        self.note_time(now_ms);
        tick_agents(&self.rules, now_ms, agents, out, changed);
        Registry::tick_reports(&mut self.reports, &self.rules, now_ms, out, changed);
    }
}

/// Runs every agent family's tick hook on `agents`, with the events in
/// (tenant, agent) order (families in registry order per agent); calls
/// `changed` on every agent whose families' state a hook changed.
fn tick_agents<'a>(
    rules: &RuleSet,
    now_ms: i64,
    agents: impl Iterator<Item = (&'a str, &'a str, &'a mut Liveness)>,
    out: &mut Vec<AlertEvent>,
    changed: &mut dyn FnMut(&str, &str),
) {
    let from = out.len();
    for (tenant, agent, st) in agents {
        let a = st.cx(tenant, agent, now_ms);
        let before = st.families;
        Registry::on_tick(rules, &a, &mut st.families, out);
        if st.families != before {
            changed(tenant, agent);
        }
    }
    out[from..].sort_by(|a, b| (&a.tenant, &a.agent).cmp(&(&b.tenant, &b.agent)));
}

/// Orders events by subject: (tenant, agent, metric, labels, rule), the
/// order of the events a rule change or an eviction closes.
pub(crate) fn sort_by_subject(events: &mut [AlertEvent]) {
    events.sort_by(|a, b| {
        (&a.tenant, &a.agent, &a.metric, &a.labels, &a.rule)
            .cmp(&(&b.tenant, &b.agent, &b.metric, &b.labels, &b.rule))
    });
}

/// The index of `set` in `sets`, adding it when new.
fn intern_set(sets: &mut Vec<WatchSet>, index: &mut HashMap<WatchSet, u16>, set: WatchSet) -> u16 {
    if set.is_empty() {
        return u16::MAX;
    }
    if let Some(&i) = index.get(&set) {
        return i;
    }
    // More distinct watch sets than a u16 holds would take tens of
    // thousands of rules with distinct label matchers; such a series is
    // left unwatched rather than corrupting another's state.
    let Ok(i) = u16::try_from(sets.len()) else {
        return u16::MAX;
    };
    if i == u16::MAX {
        return u16::MAX;
    }
    sets.push(set.clone());
    index.insert(set, i);
    i
}

#[cfg(test)]
#[test]
fn slot_sizes() {
    // The per-series memory budget (BENCHMARKS.md "Memory").
    assert_eq!(std::mem::size_of::<DetHandle>(), 8);
    assert_eq!(std::mem::size_of::<threshold::ThresholdState>(), 24);
    assert_eq!(std::mem::size_of::<trend::TrendState>(), 576);
    assert_eq!(std::mem::size_of::<Liveness>(), 40);
}

/// Serializes a `HashMap<K, S>` as a list of pairs sorted by key, so
/// checkpoints are deterministic and JSON-friendly.
pub(crate) mod sorted_map {
    use std::hash::Hash;

    use hashbrown::HashMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Ord + Serialize, S: Serialize, Z: Serializer>(
        m: &HashMap<K, S>,
        z: Z,
    ) -> Result<Z::Ok, Z::Error> {
        let mut v: Vec<(&K, &S)> = m.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.serialize(z)
    }

    pub fn deserialize<'de, K, S, D>(d: D) -> Result<HashMap<K, S>, D::Error>
    where
        K: Deserialize<'de> + Eq + Hash,
        S: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let v: Vec<(K, S)> = Vec::deserialize(d)?;
        Ok(v.into_iter().collect())
    }
}

#[cfg(test)]
mod report_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trend_eval;
