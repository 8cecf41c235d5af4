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

use offline::OfflineState;
use threshold::ThresholdState;
use trend::TrendState;

/// Where one series' detector states are: the first of its threshold and
/// trend slots in the engine's arenas (`u32::MAX`: none). A series' slots
/// are contiguous and end at the one marked `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetHandle {
    thr: u32,
    trend: u32,
}

impl DetHandle {
    /// A series no rule watches.
    pub const NONE: DetHandle = DetHandle {
        thr: u32::MAX,
        trend: u32::MAX,
    };
}

impl Default for DetHandle {
    fn default() -> Self {
        DetHandle::NONE
    }
}

/// One (series, rule) state in an arena.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Slot<S> {
    /// Index of the rule in its family of the attached rule set.
    rule: u32,
    /// The series' last slot in this arena.
    last: bool,
    state: S,
}

/// The slots of one series starting at `base`.
fn slots_of<S>(arena: &[Slot<S>], base: u32) -> &[Slot<S>] {
    let Some(rest) = arena.get(base as usize..) else {
        return &[];
    };
    let n = rest
        .iter()
        .position(|s| s.last)
        .map_or(rest.len(), |i| i + 1);
    &rest[..n]
}

/// What the arenas need of a rule: its name (the key its state is kept
/// under) and which series it watches.
trait Watcher {
    fn name(&self) -> &str;
    fn watches(&self, s: &SeriesMeta) -> bool;
}

impl Watcher for ThresholdRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn watches(&self, s: &SeriesMeta) -> bool {
        self.metric == s.metric() && labels_match(&self.labels, s.labels())
    }
}

impl Watcher for TrendRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn watches(&self, s: &SeriesMeta) -> bool {
        self.metric == s.metric() && labels_match(&self.labels, s.labels())
    }
}

/// Runs every rule over closed windows and agent liveness.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorEngine {
    #[serde(skip)]
    rules: Arc<RuleSet>,
    /// Names of the threshold and trend rules that the slots' `rule`
    /// indexes refer to: the checkpoint's link to the rules, which are
    /// configuration and not serialised.
    threshold_rules: Vec<String>,
    trend_rules: Vec<String>,
    threshold: Vec<Slot<ThresholdState>>,
    trend: Vec<Slot<TrendState>>,
    offline: OfflineState,
    /// Series fed through [`DetectorEngine::on_window`]: identity and
    /// handle. A pipeline keeps its handles itself and leaves this empty.
    #[serde(with = "sorted_map")]
    standalone: HashMap<SeriesId, (SeriesMeta, DetHandle)>,
}

/// New arenas being filled by a rebind.
type Arenas = (Vec<Slot<ThresholdState>>, Vec<Slot<TrendState>>);

impl DetectorEngine {
    /// Creates an engine with empty state.
    pub fn new(rules: Arc<RuleSet>) -> Self {
        let mut e = DetectorEngine {
            rules: Arc::default(),
            threshold_rules: Vec::new(),
            trend_rules: Vec::new(),
            threshold: Vec::new(),
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
    /// that the caller applies to every series it holds (identity and
    /// handle, which is updated in place).
    pub fn attach_rules_with(
        &mut self,
        rules: Arc<RuleSet>,
        visit: impl FnOnce(&mut dyn FnMut(&SeriesMeta, &mut DetHandle)),
    ) {
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
        let mut next: Arenas = (Vec::new(), Vec::new());
        let mut standalone = std::mem::take(&mut self.standalone);
        for (meta, h) in standalone.values_mut() {
            *h = self.rebind(&mut next, *h, meta);
        }
        visit(&mut |meta, h| *h = self.rebind(&mut next, *h, meta));
        self.standalone = standalone;
        (self.threshold, self.trend) = next;
        self.threshold_rules = self
            .rules
            .threshold
            .iter()
            .map(|r| r.name.clone())
            .collect();
        self.trend_rules = self.rules.trend.iter().map(|r| r.name.clone()).collect();
    }

    /// Slots of `meta` under the attached rules in new arenas, carrying
    /// over the state of rules that kept their name.
    fn rebind(&self, next: &mut Arenas, h: DetHandle, meta: &SeriesMeta) -> DetHandle {
        DetHandle {
            thr: place(
                &mut next.0,
                &self.rules.threshold,
                meta,
                slots_of(&self.threshold, h.thr),
                &self.threshold_rules,
            ),
            trend: place(
                &mut next.1,
                &self.rules.trend,
                meta,
                slots_of(&self.trend, h.trend),
                &self.trend_rules,
            ),
        }
    }

    /// Creates the (empty) state of a new series for every rule watching
    /// it and returns where it is.
    pub fn register(&mut self, meta: &SeriesMeta) -> DetHandle {
        DetHandle {
            thr: place(&mut self.threshold, &self.rules.threshold, meta, &[], &[]),
            trend: place(&mut self.trend, &self.rules.trend, meta, &[], &[]),
        }
    }

    /// The attached rule set.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Number of (rule, series) states held, for metrics.
    pub fn series_states(&self) -> usize {
        self.threshold.len() + self.trend.len()
    }

    /// Feeds one closed window of the series at `h`; windows of one series
    /// arrive in start order (gaps allowed). Appends the events it causes
    /// to `out`.
    #[inline]
    pub fn on_series_window(
        &mut self,
        h: DetHandle,
        w: &WindowAggregate,
        out: &mut Vec<AlertEvent>,
    ) {
        let rules = &*self.rules;
        if let Some(slots) = self.threshold.get_mut(h.thr as usize..) {
            for slot in slots {
                slot.state
                    .on_window(&rules.threshold[slot.rule as usize], rules, w, out);
                if slot.last {
                    break;
                }
            }
        }
        if let Some(slots) = self.trend.get_mut(h.trend as usize..) {
            for slot in slots {
                let _ = slot
                    .state
                    .on_window(&rules.trend[slot.rule as usize], rules, w, out);
                if slot.last {
                    break;
                }
            }
        }
    }

    /// Feeds one closed window, finding the series by its id (for callers
    /// that keep no handles); otherwise as
    /// [`DetectorEngine::on_series_window`].
    pub fn on_window(&mut self, w: &WindowAggregate, out: &mut Vec<AlertEvent>) {
        let h = match self.standalone.get(&w.series.id) {
            Some((_, h)) => *h,
            None => {
                let h = self.register(&w.series);
                self.standalone.insert(w.series.id, (w.series.clone(), h));
                h
            }
        };
        self.on_series_window(h, w, out);
    }

    /// An agent delivered a batch at processing time `now_ms`; resolves its
    /// offline incident, if any.
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

    /// Processing-time tick: declares silent agents offline.
    /// Moves every agent's last-seen time `ms` later (see
    /// [`crate::pipeline::Pipeline::skip_processing_time`]).
    pub fn skip_processing_time(&mut self, ms: i64) {
        for agents in self.offline.agents.values_mut() {
            for st in agents.values_mut() {
                st.last_seen_ms = st.last_seen_ms.saturating_add(ms);
            }
        }
    }

    /// Processing-time housekeeping: fires offline alerts.
    pub fn on_tick(&mut self, now_ms: i64, out: &mut Vec<AlertEvent>) {
        self.offline
            .on_tick(self.rules.offline.as_ref(), &self.rules, now_ms, out);
    }
}

/// Appends to `arena` one slot per rule of `rules` watching `meta`, in
/// rule order, each with the state that `old` (slots indexing `old_names`)
/// holds for a rule of that name, else a fresh one; marks the last and
/// returns the first slot's index (`u32::MAX` when there is none).
fn place<R: Watcher, S: Clone + Default>(
    arena: &mut Vec<Slot<S>>,
    rules: &[R],
    meta: &SeriesMeta,
    old: &[Slot<S>],
    old_names: &[String],
) -> u32 {
    let base = arena.len();
    for (i, r) in rules.iter().enumerate().filter(|(_, r)| r.watches(meta)) {
        let state = old
            .iter()
            .find(|s| old_names.get(s.rule as usize).map(String::as_str) == Some(r.name()))
            .map(|s| s.state.clone())
            .unwrap_or_default();
        grow_gently(arena);
        arena.push(Slot {
            rule: i as u32,
            last: false,
            state,
        });
    }
    if arena.len() == base {
        return u32::MAX;
    }
    if let Some(s) = arena.last_mut() {
        s.last = true;
    }
    u32::try_from(base).expect("at most 4 billion detector states")
}

/// Serializes a `HashMap<SeriesId, S>` as a list of pairs sorted by key, so
/// checkpoints are deterministic and JSON-friendly.
mod sorted_map {
    use hashbrown::HashMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::model::SeriesId;

    pub fn serialize<S: Serialize, Z: Serializer>(
        m: &HashMap<SeriesId, S>,
        z: Z,
    ) -> Result<Z::Ok, Z::Error> {
        let mut v: Vec<(&SeriesId, &S)> = m.iter().collect();
        v.sort_by_key(|(k, _)| **k);
        v.serialize(z)
    }

    pub fn deserialize<'de, S: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<HashMap<SeriesId, S>, D::Error> {
        let v: Vec<(SeriesId, S)> = Vec::deserialize(d)?;
        Ok(v.into_iter().collect())
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod trend_eval;
