//! Detectors (threshold, trend, offline) and the alert lifecycle that
//! turns their conditions into one firing and one resolved event per
//! incident.
//!
//! ```text
//!  closed WindowAggregate ──▶ threshold rules (per rule × series) ──┐
//!                        └──▶ trend rules     (per rule × series) ──┼──▶ lifecycle ──▶ AlertEvent
//!  agent seen / tick ───────▶ offline         (per tenant × agent) ─┘   (ids, fingerprints,
//!                                                                        maintenance)
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
//! * The engine's serde form is its checkpoint. Restoring it and calling
//!   [`DetectorEngine::attach_rules`] MUST produce exactly the output the
//!   uninterrupted engine would have produced. State is keyed by rule
//!   *name*, so attaching an edited rule set keeps the state of rules that
//!   kept their name and drops the rest.
//!
//! Memory: per-series state lives in two arenas (threshold, trend), one
//! slot per (series, rule watching it), contiguous per series and in rule
//! order. A series finds its slots through a [`DetHandle`] (8 bytes) that
//! the pipeline keeps next to the series' windows: no per-rule hash map.
//! [`DetectorEngine::on_window`] serves callers without handles (tests,
//! benchmarks) through a map from series id to handle.
//!
//! Submodules: [`threshold`], [`trend`], [`offline`] (one detector each)
//! and [`lifecycle`] (event construction shared by all).

pub mod lifecycle;
pub mod offline;
pub mod threshold;
pub mod trend;

use std::sync::Arc;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::intern::grow_gently;
use crate::model::{AlertEvent, SeriesId, SeriesMeta, WindowAggregate};
use crate::rules::{labels_match, RuleSet, ThresholdRule, TrendRule};

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
    /// Names of the threshold and trend rules that the watch sets and the
    /// sparse map index: the checkpoint's link to the rules, which are
    /// configuration and not serialised.
    threshold_rules: Vec<String>,
    trend_rules: Vec<String>,
    /// Distinct watch sets, addressed by [`DetHandle`]s.
    sets: Vec<WatchSet>,
    #[serde(skip)]
    set_index: HashMap<WatchSet, u16>,
    /// Threshold state by (series uid, rule index), only where not idle.
    #[serde(with = "sorted_map")]
    threshold: HashMap<(u64, u16), ThresholdState>,
    trend: Vec<TrendState>,
    offline: OfflineState,
    /// Series fed through [`DetectorEngine::on_window`]: identity and
    /// handle, by series id (which is also their uid). A pipeline keeps
    /// its handles itself and leaves this empty.
    #[serde(with = "sorted_map")]
    standalone: HashMap<SeriesId, (SeriesMeta, DetHandle)>,
}

/// A rebind in progress: the state being carried over to a new rule set.
struct Rebind {
    sets: Vec<WatchSet>,
    set_index: HashMap<WatchSet, u16>,
    threshold: HashMap<(u64, u16), ThresholdState>,
    trend: Vec<TrendState>,
    /// Old threshold rule index → new one, by name.
    thr_map: Vec<Option<u16>>,
}

impl DetectorEngine {
    /// Creates an engine with empty state.
    pub fn new(rules: Arc<RuleSet>) -> Self {
        let mut e = DetectorEngine {
            rules: Arc::default(),
            threshold_rules: Vec::new(),
            trend_rules: Vec::new(),
            sets: Vec::new(),
            set_index: HashMap::new(),
            threshold: HashMap::new(),
            trend: Vec::new(),
            offline: OfflineState::default(),
            standalone: HashMap::new(),
        };
        e.attach_rules(rules);
        e
    }

    /// Attaches a rule set, e.g. after restoring the engine from a
    /// checkpoint (the rules are not part of the serde form). State of
    /// rules that kept their name is kept; state of rules no longer
    /// present is dropped. For callers without handles (tests,
    /// benchmarks); a pipeline uses [`DetectorEngine::attach_rules_with`].
    pub fn attach_rules(&mut self, rules: Arc<RuleSet>) {
        self.attach_rules_with(rules, |_| {});
    }

    /// [`DetectorEngine::attach_rules`] for a caller holding handles:
    /// when the rule names changed, `visit` is called once with a function
    /// that the caller applies to every series it holds (identity, uid and
    /// handle, which is updated in place).
    pub fn attach_rules_with(
        &mut self,
        rules: Arc<RuleSet>,
        visit: impl FnOnce(&mut dyn FnMut(&SeriesMeta, u64, &mut DetHandle)),
    ) {
        if self.set_index.len() != self.sets.len() {
            self.set_index = self
                .sets
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), i as u16))
                .collect();
        }
        let same = self
            .threshold_rules
            .iter()
            .map(String::as_str)
            .eq(rules.threshold.iter().map(|r| r.name.as_str()))
            && self
                .trend_rules
                .iter()
                .map(String::as_str)
                .eq(rules.trend.iter().map(|r| r.name.as_str()));
        self.rules = rules;
        if same {
            return;
        }
        let name_to_new = |names: &[String], new: &[String]| -> Vec<Option<u16>> {
            names
                .iter()
                .map(|n| new.iter().position(|m| m == n).map(|i| i as u16))
                .collect()
        };
        let new_thr: Vec<String> = self
            .rules
            .threshold
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let new_trend: Vec<String> = self.rules.trend.iter().map(|r| r.name.clone()).collect();
        let mut next = Rebind {
            sets: Vec::new(),
            set_index: HashMap::new(),
            threshold: HashMap::new(),
            trend: Vec::new(),
            thr_map: name_to_new(&self.threshold_rules, &new_thr),
        };
        let mut standalone = std::mem::take(&mut self.standalone);
        for (id, (meta, h)) in standalone.iter_mut() {
            *h = self.rebind(&mut next, *h, meta, id.0);
        }
        visit(&mut |meta, uid, h| *h = self.rebind(&mut next, *h, meta, uid));
        self.standalone = standalone;
        self.sets = next.sets;
        self.set_index = next.set_index;
        self.threshold = next.threshold;
        self.trend = next.trend;
        self.threshold_rules = new_thr;
        self.trend_rules = new_trend;
    }

    /// The handle of `meta` under the attached rules in `next`, carrying
    /// over the state of rules that kept their name.
    fn rebind(&self, next: &mut Rebind, h: DetHandle, meta: &SeriesMeta, uid: u64) -> DetHandle {
        let set = WatchSet {
            thr: watching(&self.rules.threshold, meta),
            trend: watching(&self.rules.trend, meta),
        };
        let old = self.sets.get(h.set as usize);
        let mut nh = DetHandle::NONE;
        // Threshold: move the series' non-idle states to the new rule
        // indexes.
        if let Some(old) = old {
            for (k, &r) in old.thr.iter().enumerate() {
                if h.thr_active & active_bit(k) == 0 {
                    continue;
                }
                let Some(st) = self.threshold.get(&(uid, r)) else {
                    continue;
                };
                let Some(Some(nr)) = next.thr_map.get(r as usize) else {
                    continue;
                };
                if let Some(nk) = set.thr.iter().position(|x| x == nr) {
                    next.threshold.insert((uid, *nr), st.clone());
                    nh.thr_active |= active_bit(nk);
                }
            }
        }
        // Trend: new slots, each with the old state of a rule of that name.
        if !set.trend.is_empty() {
            let base = next.trend.len();
            for &r in &set.trend {
                let name = &self.rules.trend[r as usize].name;
                let state = old
                    .and_then(|o| {
                        let k = o
                            .trend
                            .iter()
                            .position(|&x| self.trend_rules.get(x as usize) == Some(name))?;
                        self.trend.get(h.trend as usize + k)
                    })
                    .cloned()
                    .unwrap_or_default();
                grow_gently(&mut next.trend);
                next.trend.push(state);
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
            h.trend = u32::try_from(self.trend.len()).expect("at most 4 billion trend states");
            for _ in &set.trend {
                grow_gently(&mut self.trend);
                self.trend.push(TrendState::default());
            }
        }
        h.set = intern_set(&mut self.sets, &mut self.set_index, set);
        h
    }

    /// The attached rule set.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Number of (rule, series) states held, for metrics: every trend
    /// state, and the threshold states that are not idle.
    pub fn series_states(&self) -> usize {
        self.threshold.len() + self.trend.len()
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
        self.offline.on_agent_seen(
            self.rules.offline.as_ref(),
            &self.rules,
            tenant,
            agent,
            now_ms,
            out,
        );
    }

    /// An agent whose liveness the caller keeps delivered a batch, see
    /// [`Liveness::seen`].
    #[inline]
    pub fn on_seen(
        &self,
        live: &mut Liveness,
        tenant: &str,
        agent: &str,
        now_ms: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        live.seen(
            self.rules.offline.as_ref(),
            &self.rules,
            tenant,
            agent,
            now_ms,
            out,
        );
    }

    /// Moves every agent's last-seen time `ms` later (see
    /// [`crate::pipeline::Pipeline::skip_processing_time`]).
    pub fn skip_processing_time(&mut self, ms: i64) {
        for agents in self.offline.agents.values_mut() {
            for st in agents.values_mut() {
                st.skip(ms);
            }
        }
    }

    /// Processing-time housekeeping: fires offline alerts for the agents
    /// the engine keeps (see [`DetectorEngine::on_agent_seen`]).
    pub fn on_tick(&mut self, now_ms: i64, out: &mut Vec<AlertEvent>) {
        self.offline
            .on_tick(self.rules.offline.as_ref(), &self.rules, now_ms, out);
    }

    /// Processing-time housekeeping for agents whose liveness the caller
    /// keeps: fires offline alerts, in (tenant, agent) order.
    pub fn on_tick_agents<'a>(
        &self,
        now_ms: i64,
        agents: impl Iterator<Item = (&'a str, &'a str, &'a mut Liveness)>,
        out: &mut Vec<AlertEvent>,
    ) {
        offline::tick(
            self.rules.offline.as_ref(),
            &self.rules,
            now_ms,
            agents,
            out,
        );
    }
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
    assert_eq!(std::mem::size_of::<Liveness>(), 16);
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
