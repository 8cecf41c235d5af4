//! Detectors (threshold, trend, offline, invalid input) and the alert
//! lifecycle that
//! turns their conditions into one firing and one resolved event per
//! incident.
//!
//! ```text
//!  closed WindowAggregate ──▶ threshold rules (per rule × series) ──┐
//!                        └──▶ trend rules     (per rule × series) ──┼──▶ lifecycle ──▶ AlertEvent
//!  agent seen / tick ───────▶ offline         (per tenant × agent) ─┤   (ids, fingerprints,
//!  batch verdict ───────────▶ invalid input   (per tenant × agent) ─┘    maintenance)
//! ```
//!
//! [`DetectorEngine`] owns all detector state of one partition. It is pure:
//! time comes in only through window bounds and the `now_ms` arguments.
//! Contracts:
//!
//! * Each incident MUST produce one `firing` event, then at most one
//!   `resolved` event with the same id (`incident_id(fingerprint,
//!   started_at_ms)`), so a replay of the same input yields the same ids.
//! * Events MUST come out in a deterministic order for a given input
//!   (rules in file order per window; agents in (tenant, agent) order per
//!   tick).
//! * Every incident's `started_at_ms` MUST be derived from state (a
//!   window, the agent's last batch plus `after`, the first refused batch
//!   of a run), never from the time of the tick that noticed it.
//! * The engine's serde form is its checkpoint, and records the definition
//!   of every rule its state was built under. Restoring it and calling
//!   [`DetectorEngine::attach_rules`] with the same rules MUST produce
//!   exactly the output the uninterrupted engine would have produced.
//!   Under edited rules, a rule keeps its state only if its name and
//!   definition are unchanged; open incidents of edited and removed rules
//!   are resolved (`rule_changed`, `rule_removed`), and every known series
//!   is matched against the new rules (see
//!   [`DetectorEngine::attach_rules_with`]).
//!
//! Memory: per-series state lives in two arenas (threshold, trend), one
//! slot per (series, rule watching it), contiguous per series and in rule
//! order. A series finds its slots through a [`DetHandle`] (8 bytes) that
//! the pipeline keeps next to the series' windows: no per-rule hash map.
//! [`DetectorEngine::on_window`] serves callers without handles (tests,
//! benchmarks) through a map from series id to handle.
//!
//! Submodules: [`threshold`], [`trend`], [`offline`], [`invalid_input`]
//! (one detector each) and [`lifecycle`] (event construction shared by
//! all).

pub mod invalid_input;
pub mod lifecycle;
pub mod offline;
pub mod threshold;
pub mod trend;

use std::sync::Arc;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::intern::grow_gently;
use crate::model::{
    AlertEvent, DetectorKind, OptMs, ResolveReason, SeriesId, SeriesMeta, Severity, WindowAggregate,
};
use crate::rules::{
    labels_match, InvalidInputRule, OfflineRule, RuleSet, ThresholdRule, TrendRule,
};

use invalid_input::InputVerdict;
use lifecycle::Subject;
use offline::{Liveness, OfflineState};
use threshold::ThresholdState;
use trend::TrendState;

/// Where one series' detector state is (8 bytes, kept by the caller next
/// to the series' windows): its watch set, which of its threshold rules
/// hold state, and its first trend slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetHandle {
    /// Index of the series' [`WatchSet`] (`u16::MAX`: not registered).
    set: u16,
    /// Bit `k`: the `k`-th threshold rule of the watch set has state in
    /// the sparse map. The top bit also stands for every rule after it.
    thr_active: u16,
    /// First of the series' trend slots, one per trend rule of the watch
    /// set (`u32::MAX`: none).
    trend: u32,
}

impl DetHandle {
    /// A series no rule watches (yet).
    pub const NONE: DetHandle = DetHandle {
        set: u16::MAX,
        thr_active: 0,
        trend: u32::MAX,
    };
}

impl Default for DetHandle {
    fn default() -> Self {
        DetHandle::NONE
    }
}

/// Bit of [`DetHandle::thr_active`] for the `k`-th threshold rule.
#[inline]
fn active_bit(k: usize) -> u16 {
    1 << k.min(15)
}

/// The rules watching a series, as indexes into the attached rule set's
/// families, in rule order. Series with the same metric and labels share
/// one; a handful cover a whole fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct WatchSet {
    thr: Vec<u16>,
    trend: Vec<u16>,
}

/// What the detector engine needs of a rule: which series it watches.
trait Watcher {
    fn watches(&self, s: &SeriesMeta) -> bool;
}

impl Watcher for ThresholdRule {
    fn watches(&self, s: &SeriesMeta) -> bool {
        self.metric == s.metric() && labels_match(&self.labels, s.labels())
    }
}

impl Watcher for TrendRule {
    fn watches(&self, s: &SeriesMeta) -> bool {
        self.metric == s.metric() && labels_match(&self.labels, s.labels())
    }
}

/// Indexes of the rules of `rules` watching `meta`.
fn watching<R: Watcher>(rules: &[R], meta: &SeriesMeta) -> Vec<u16> {
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.watches(meta))
        .map(|(i, _)| i as u16)
        .collect()
}

/// The rule definitions a checkpointed state was built under: the
/// checkpoint's link to the rules, which are configuration. Restoring
/// compares them with the rules attached (see
/// [`DetectorEngine::attach_rules_with`]); the watch sets and the sparse
/// map index into `threshold` and `trend`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Bound {
    threshold: Vec<ThresholdRule>,
    trend: Vec<TrendRule>,
    offline: Option<OfflineRule>,
    invalid_input: Option<InvalidInputRule>,
}

impl Bound {
    fn of(rules: &RuleSet) -> Self {
        Bound {
            threshold: rules.threshold.clone(),
            trend: rules.trend.clone(),
            offline: rules.offline.clone(),
            invalid_input: rules.invalid_input.clone(),
        }
    }
}

/// Old rule index → new one, for each old rule whose name *and*
/// definition are in the new rules; `None` for rules edited or removed.
fn carry_map<R>(
    old: &[R],
    new: &[R],
    name: impl Fn(&R) -> &str,
    same: impl Fn(&R, &R) -> bool,
) -> Vec<Option<u16>> {
    old.iter()
        .map(|o| {
            new.iter()
                .position(|n| name(n) == name(o) && same(o, n))
                .map(|i| i as u16)
        })
        .collect()
}

/// Whether a carry map keeps every rule at its index, with `new_len`
/// rules in the new set (so no state has to move).
fn is_identity(map: &[Option<u16>], new_len: usize) -> bool {
    map.len() == new_len && map.iter().enumerate().all(|(i, m)| *m == Some(i as u16))
}

/// Why an incident of the old rule `name` ends on a rebind.
fn retire_reason<'a>(name: &str, mut new_names: impl Iterator<Item = &'a str>) -> ResolveReason {
    if new_names.any(|n| n == name) {
        ResolveReason::RuleChanged
    } else {
        ResolveReason::RuleRemoved
    }
}

/// The alert subject of `rule` on the series `meta`.
fn series_subject<'a>(
    meta: &'a SeriesMeta,
    rule: &'a str,
    kind: DetectorKind,
    severity: Severity,
) -> Subject<'a> {
    Subject {
        rule,
        kind,
        severity,
        tenant: meta.tenant(),
        agent: meta.agent(),
        metric: Some(meta.metric()),
        labels: meta.labels(),
    }
}

/// The `resolved` event, for `reason`, of the incident a series'
/// threshold state holds (none unless firing): at the end of the last
/// window the rule saw.
fn close_threshold(
    meta: &SeriesMeta,
    rule: &ThresholdRule,
    st: &ThresholdState,
    rules: &RuleSet,
    reason: ResolveReason,
) -> Option<AlertEvent> {
    let started = st.firing_since.get()?;
    Some(
        series_subject(meta, &rule.name, DetectorKind::Threshold, rule.severity).retired(
            rules,
            started,
            st.last_end_ms.get().unwrap_or(started),
            reason,
            Some(rule.value),
        ),
    )
}

/// As [`close_threshold`], for a series' trend state.
fn close_trend(
    meta: &SeriesMeta,
    rule: &TrendRule,
    st: &TrendState,
    rules: &RuleSet,
    reason: ResolveReason,
) -> Option<AlertEvent> {
    let started = st.firing_since.get()?;
    Some(
        series_subject(meta, &rule.name, DetectorKind::Trend, rule.severity).retired(
            rules,
            started,
            st.last_end_ms.get().unwrap_or(started),
            reason,
            Some(rule.limit),
        ),
    )
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

/// Runs every rule over closed windows and agent liveness.
///
/// State: trend slots in an arena (contiguous per series, in the order of
/// its watch set), and threshold state in a sparse map keyed by (series,
/// rule) that holds only runs in progress and firing incidents: an idle
/// threshold rule (no breach run, not firing) has no state at all, which
/// is what almost every (series, rule) is at any time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorEngine {
    #[serde(skip)]
    rules: Arc<RuleSet>,
    /// The rule definitions the state below was built under.
    bound: Bound,
    /// Latest processing time the engine was told (ticks, batches): the
    /// time at which a rule change closes offline and invalid-input
    /// incidents (a pure engine reads no clock).
    #[serde(default)]
    latest_ms: OptMs,
    /// Distinct watch sets, addressed by [`DetHandle`]s.
    sets: Vec<WatchSet>,
    #[serde(skip)]
    set_index: HashMap<WatchSet, u16>,
    /// Threshold state by (series uid, rule index), only where not idle.
    #[serde(with = "sorted_map")]
    threshold: HashMap<(u64, u16), ThresholdState>,
    trend: Vec<TrendState>,
    /// Runs of trend slots freed by evicted series, by run length (the
    /// number of trend rules of the series' watch set), reused by new
    /// series with as many trend rules. Emptied by a rebind, which lays
    /// the arena out afresh.
    #[serde(default, with = "sorted_map")]
    free_trend: HashMap<u16, Vec<u32>>,
    offline: OfflineState,
    /// Series fed through [`DetectorEngine::on_window`]: identity and
    /// handle, by series id (which is also their uid). A pipeline keeps
    /// its handles itself and leaves this empty.
    #[serde(with = "sorted_map")]
    standalone: HashMap<SeriesId, (SeriesMeta, DetHandle)>,
}

/// A rebind in progress: the state being carried over to a new rule set.
struct Rebind<'a> {
    /// The rules the current state was built under.
    old: &'a Bound,
    sets: Vec<WatchSet>,
    set_index: HashMap<WatchSet, u16>,
    threshold: HashMap<(u64, u16), ThresholdState>,
    trend: Vec<TrendState>,
    /// Old threshold rule index → new one (same name and definition).
    thr_map: Vec<Option<u16>>,
    /// Old trend rule index → new one (same name and definition).
    trend_map: Vec<Option<u16>>,
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
            sets: Vec::new(),
            set_index: HashMap::new(),
            threshold: HashMap::new(),
            trend: Vec::new(),
            free_trend: HashMap::new(),
            offline: OfflineState::default(),
            standalone: HashMap::new(),
        };
        // Empty state: nothing to carry over, nothing to resolve.
        e.attach_rules(rules, &mut Vec::new());
        e
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
    /// order. A threshold or trend incident resolves at the end of the
    /// last window its rule saw; an offline or invalid-input incident at
    /// the latest processing time the engine was told (never before the
    /// incident's start).
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
        let thr_map = carry_map(
            &old.threshold,
            &self.rules.threshold,
            |r| &r.name,
            ThresholdRule::same_definition,
        );
        let trend_map = carry_map(
            &old.trend,
            &self.rules.trend,
            |r| &r.name,
            TrendRule::same_definition,
        );
        if !(is_identity(&thr_map, self.rules.threshold.len())
            && is_identity(&trend_map, self.rules.trend.len()))
        {
            let mut next = Rebind {
                old: &old,
                sets: Vec::new(),
                set_index: HashMap::new(),
                threshold: HashMap::new(),
                trend: Vec::new(),
                thr_map,
                trend_map,
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
            self.threshold = next.threshold;
            self.trend = next.trend;
            self.free_trend.clear();
            retired.append(&mut next.retired);
        }
        sort_by_subject(&mut retired);
        out.append(&mut retired);
    }

    /// Resolves the open offline and invalid-input incidents of rules
    /// (`old`) that were edited or removed.
    fn retire_agent_rules(
        &mut self,
        old: &Bound,
        held: &mut dyn Holdings,
        out: &mut Vec<AlertEvent>,
    ) {
        let rules = &*self.rules;
        let off = old.offline.as_ref().filter(|o| {
            !rules
                .offline
                .as_ref()
                .is_some_and(|n| n.name == o.name && n.same_definition(o))
        });
        let inv = old.invalid_input.as_ref().filter(|o| {
            !rules
                .invalid_input
                .as_ref()
                .is_some_and(|n| n.name == o.name && n.same_definition(o))
        });
        if off.is_none() && inv.is_none() {
            return;
        }
        let at = self.latest_ms.get().unwrap_or(i64::MIN);
        let mut each = |tenant: &str, agent: &str, live: &mut Liveness| {
            if let Some(o) = off {
                out.extend(offline::retire(
                    o,
                    rules.offline.as_ref(),
                    rules,
                    at,
                    tenant,
                    agent,
                    live,
                ));
            }
            if let Some(o) = inv {
                out.extend(invalid_input::retire(
                    o,
                    rules.invalid_input.as_ref(),
                    rules,
                    at,
                    tenant,
                    agent,
                    &mut live.input,
                ));
            }
        };
        for (tenant, agent, live) in self.offline.iter_mut() {
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
        let set = WatchSet {
            thr: watching(&self.rules.threshold, meta),
            trend: watching(&self.rules.trend, meta),
        };
        let old = self.sets.get(h.set as usize);
        let mut nh = DetHandle::NONE;
        // Threshold: move the series' non-idle states to the new rule
        // indexes; retire the firing ones of edited or removed rules.
        if let Some(old) = old {
            for (k, &r) in old.thr.iter().enumerate() {
                if h.thr_active & active_bit(k) == 0 {
                    continue;
                }
                let Some(st) = self.threshold.get(&(uid, r)) else {
                    continue;
                };
                let carried = next.thr_map.get(r as usize).copied().flatten();
                if let Some(nr) = carried {
                    if let Some(nk) = set.thr.iter().position(|x| *x == nr) {
                        next.threshold.insert((uid, nr), st.clone());
                        nh.thr_active |= active_bit(nk);
                        continue;
                    }
                }
                let Some(rule) = next.old.threshold.get(r as usize) else {
                    continue;
                };
                if st.firing_since.is_none() {
                    continue;
                }
                let reason = retire_reason(
                    &rule.name,
                    self.rules.threshold.iter().map(|n| n.name.as_str()),
                );
                next.retired
                    .extend(close_threshold(meta, rule, st, &self.rules, reason));
            }
        }
        // Trend: new slots, each with the old state of its rule when that
        // rule is unchanged; retire the firing ones of the others.
        let old_trend = |k: usize| self.trend.get((h.trend as usize).checked_add(k)?);
        let mut carried = vec![None; set.trend.len()];
        if let Some(old) = old {
            for (k, &r) in old.trend.iter().enumerate() {
                let Some(st) = old_trend(k) else { continue };
                let to = next.trend_map.get(r as usize).copied().flatten();
                if let Some(nk) = to.and_then(|nr| set.trend.iter().position(|x| *x == nr)) {
                    carried[nk] = Some(st);
                    continue;
                }
                let Some(rule) = next.old.trend.get(r as usize) else {
                    continue;
                };
                if st.firing_since.is_none() {
                    continue;
                }
                let reason =
                    retire_reason(&rule.name, self.rules.trend.iter().map(|n| n.name.as_str()));
                next.retired
                    .extend(close_trend(meta, rule, st, &self.rules, reason));
            }
        }
        if !set.trend.is_empty() {
            let base = next.trend.len();
            for st in carried {
                grow_gently(&mut next.trend);
                next.trend.push(st.cloned().unwrap_or_default());
            }
            nh.trend = u32::try_from(base).expect("at most 4 billion trend states");
        }
        nh.set = intern_set(&mut next.sets, &mut next.set_index, set);
        nh
    }

    /// Creates the (empty) state of a new series for every rule watching
    /// it and returns where it is.
    pub fn register(&mut self, meta: &SeriesMeta) -> DetHandle {
        let set = WatchSet {
            thr: watching(&self.rules.threshold, meta),
            trend: watching(&self.rules.trend, meta),
        };
        let mut h = DetHandle::NONE;
        if !set.trend.is_empty() {
            let n = set.trend.len();
            let reused = u16::try_from(n)
                .ok()
                .and_then(|n| self.free_trend.get_mut(&n))
                .and_then(Vec::pop);
            match reused {
                Some(at) => {
                    // Freed slots were reset when their series was evicted.
                    h.trend = at;
                }
                None => {
                    h.trend =
                        u32::try_from(self.trend.len()).expect("at most 4 billion trend states");
                    for _ in &set.trend {
                        grow_gently(&mut self.trend);
                        self.trend.push(TrendState::default());
                    }
                }
            }
        }
        h.set = intern_set(&mut self.sets, &mut self.set_index, set);
        h
    }

    /// Drops the detector state of the series `uid` at `h` (the series is
    /// evicted: it sent no point for the state TTL), resolving its open
    /// threshold and trend incidents with reason `stale` at the end of the
    /// last window each rule saw. Its trend slots are reset and kept for
    /// the next new series with as many trend rules. Returns how many
    /// incidents it resolved.
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
        let rules = &*self.rules;
        for (k, &r) in set.thr.iter().enumerate() {
            if h.thr_active & active_bit(k) == 0 {
                continue;
            }
            let Some(st) = self.threshold.remove(&(uid, r)) else {
                continue;
            };
            if let Some(rule) = rules.threshold.get(r as usize) {
                out.extend(close_threshold(
                    meta,
                    rule,
                    &st,
                    rules,
                    ResolveReason::Stale,
                ));
            }
        }
        if !set.trend.is_empty() {
            let at = h.trend as usize;
            if let Some(states) = self.trend.get_mut(at..at + set.trend.len()) {
                for (&r, st) in set.trend.iter().zip(states.iter_mut()) {
                    let old = std::mem::take(st);
                    if let Some(rule) = rules.trend.get(r as usize) {
                        out.extend(close_trend(meta, rule, &old, rules, ResolveReason::Stale));
                    }
                }
                if let Ok(n) = u16::try_from(set.trend.len()) {
                    self.free_trend.entry(n).or_default().push(h.trend);
                }
            }
        }
        out.len() - before
    }

    /// Resolves the open offline and invalid-input incidents of an agent
    /// whose state is evicted (no batch for the state TTL), with reason
    /// `stale` at `now_ms`. Returns how many it resolved.
    pub fn evict_agent(
        &mut self,
        live: &mut Liveness,
        tenant: &str,
        agent: &str,
        now_ms: i64,
        out: &mut Vec<AlertEvent>,
    ) -> usize {
        self.note_time(now_ms);
        let rules = &*self.rules;
        let before = out.len();
        if let Some(rule) = rules.offline.as_ref() {
            out.extend(offline::expire(rule, rules, now_ms, tenant, agent, live));
        }
        if let Some(rule) = rules.invalid_input.as_ref() {
            out.extend(invalid_input::expire(
                rule,
                rules,
                now_ms,
                tenant,
                agent,
                &mut live.input,
            ));
        }
        out.len() - before
    }

    /// Trend slots held for reuse (freed by evicted series), for metrics
    /// and tests.
    pub fn free_trend_slots(&self) -> usize {
        self.free_trend
            .iter()
            .map(|(n, v)| usize::from(*n) * v.len())
            .sum()
    }

    /// The attached rule set.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Number of (rule, series) states held, for metrics: every trend
    /// state of a series held, and the threshold states that are not idle.
    pub fn series_states(&self) -> usize {
        self.threshold.len() + self.trend.len() - self.free_trend_slots()
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
        let rules = &*self.rules;
        for (k, &r) in set.thr.iter().enumerate() {
            let rule = &rules.threshold[r as usize];
            let bit = active_bit(k);
            let key = (uid, r);
            // No bit: idle. A set bit may be shared (rules 15 and up), so
            // the map decides.
            let stored = if h.thr_active & bit == 0 {
                None
            } else {
                self.threshold.get_mut(&key)
            };
            match stored {
                Some(st) => {
                    st.on_window(rule, rules, w, out);
                    if st.is_idle() {
                        self.threshold.remove(&key);
                        if k < 15 {
                            h.thr_active &= !bit;
                        }
                    }
                }
                None => {
                    if let Some(st) = ThresholdState::from_idle(rule, rules, w, out) {
                        self.threshold.insert(key, st);
                        h.thr_active |= bit;
                    }
                }
            }
        }
        if let Some(states) = self.trend.get_mut(h.trend as usize..) {
            for (&r, st) in set.trend.iter().zip(states) {
                let _ = st.on_window(&rules.trend[r as usize], rules, w, out);
            }
        }
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
        self.offline.with_agent(tenant, agent, |live| {
            live.seen(rules.offline.as_ref(), rules, tenant, agent, now_ms, out)
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
        self.offline.with_agent(tenant, agent, |live| {
            live.input.on_batch(
                rules.invalid_input.as_ref(),
                rules,
                tenant,
                agent,
                now_ms,
                verdict,
                out,
            )
        });
    }

    /// An agent whose liveness the caller keeps delivered a batch, see
    /// [`Liveness::seen`].
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
        live.seen(
            self.rules.offline.as_ref(),
            &self.rules,
            tenant,
            agent,
            now_ms,
            out,
        );
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
        live.input.on_batch(
            self.rules.invalid_input.as_ref(),
            &self.rules,
            tenant,
            agent,
            now_ms,
            verdict,
            out,
        );
    }

    /// Remembers the latest processing time told.
    #[inline]
    fn note_time(&mut self, now_ms: i64) {
        if self.latest_ms.get().is_none_or(|t| t < now_ms) {
            self.latest_ms = now_ms.into();
        }
    }

    /// Moves every agent's last-seen time `ms` later (see
    /// [`crate::pipeline::Pipeline::skip_processing_time`]).
    pub fn skip_processing_time(&mut self, ms: i64) {
        for (_, _, st) in self.offline.iter_mut() {
            st.skip(ms);
        }
    }

    /// Processing-time housekeeping: fires offline alerts for the agents
    /// the engine keeps (see [`DetectorEngine::on_agent_seen`]).
    pub fn on_tick(&mut self, now_ms: i64, out: &mut Vec<AlertEvent>) {
        self.note_time(now_ms);
        let agents = self.offline.iter_mut();
        tick_offline(&self.rules, now_ms, agents, out);
    }

    /// Processing-time housekeeping for agents whose liveness the caller
    /// keeps: fires offline alerts, in (tenant, agent) order.
    pub fn on_tick_agents<'a>(
        &mut self,
        now_ms: i64,
        agents: impl Iterator<Item = (&'a str, &'a str, &'a mut Liveness)>,
        out: &mut Vec<AlertEvent>,
    ) {
        self.note_time(now_ms);
        tick_offline(&self.rules, now_ms, agents, out);
    }
}

/// Declares the agents silent for longer than the offline rule's `after`
/// offline, with their events in (tenant, agent) order.
fn tick_offline<'a>(
    rules: &RuleSet,
    now_ms: i64,
    agents: impl Iterator<Item = (&'a str, &'a str, &'a mut Liveness)>,
    out: &mut Vec<AlertEvent>,
) {
    let Some(rule) = rules.offline.as_ref() else {
        return;
    };
    let from = out.len();
    for (tenant, agent, st) in agents {
        out.extend(offline::check(rule, rules, now_ms, tenant, agent, st));
    }
    out[from..].sort_unstable_by(|a, b| (&a.tenant, &a.agent).cmp(&(&b.tenant, &b.agent)));
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
    if set.thr.is_empty() && set.trend.is_empty() {
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
    assert_eq!(std::mem::size_of::<ThresholdState>(), 24);
    assert_eq!(std::mem::size_of::<TrendState>(), 264);
    assert_eq!(std::mem::size_of::<Liveness>(), 40);
}

/// Serializes a `HashMap<K, S>` as a list of pairs sorted by key, so
/// checkpoints are deterministic and JSON-friendly.
mod sorted_map {
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
mod tests;
#[cfg(test)]
mod trend_eval;
