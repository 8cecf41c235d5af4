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
//! Submodules: [`threshold`], [`trend`], [`offline`] (one detector each)
//! and [`lifecycle`] (event construction shared by all).

pub mod lifecycle;
pub mod offline;
pub mod threshold;
pub mod trend;

use std::sync::Arc;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::model::{AlertEvent, SeriesId, WindowAggregate};
use crate::rules::{labels_match, RuleSet};

use offline::OfflineState;
use threshold::ThresholdState;
use trend::TrendState;

/// Per-series state of one rule, tagged with the rule's name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "S: Serialize", deserialize = "S: Deserialize<'de>"))]
struct RuleStates<S> {
    /// Rule name (the key used to re-attach state to rules).
    rule: String,
    /// State per series, serialized sorted by series id.
    #[serde(with = "sorted_map")]
    series: HashMap<SeriesId, S>,
}

/// Runs every rule over closed windows and agent liveness.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorEngine {
    #[serde(skip)]
    rules: Arc<RuleSet>,
    threshold: Vec<RuleStates<ThresholdState>>,
    trend: Vec<RuleStates<TrendState>>,
    offline: OfflineState,
}

impl DetectorEngine {
    /// Creates an engine with empty state.
    pub fn new(rules: Arc<RuleSet>) -> Self {
        let mut e = DetectorEngine {
            rules: Arc::default(),
            threshold: Vec::new(),
            trend: Vec::new(),
            offline: OfflineState::default(),
        };
        e.attach_rules(rules);
        e
    }

    /// Attaches a rule set, e.g. after restoring the engine from a
    /// checkpoint (the rules are not part of the serde form). State of
    /// rules that kept their name is kept; state of rules no longer
    /// present is dropped.
    pub fn attach_rules(&mut self, rules: Arc<RuleSet>) {
        self.threshold = realign(
            std::mem::take(&mut self.threshold),
            rules.threshold.iter().map(|r| r.name.as_str()),
        );
        self.trend = realign(
            std::mem::take(&mut self.trend),
            rules.trend.iter().map(|r| r.name.as_str()),
        );
        self.rules = rules;
    }

    /// The attached rule set.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Number of (rule, series) states held, for metrics.
    pub fn series_states(&self) -> usize {
        self.threshold.iter().map(|r| r.series.len()).sum::<usize>()
            + self.trend.iter().map(|r| r.series.len()).sum::<usize>()
    }

    /// Feeds one closed window; windows of one series arrive in start order
    /// (gaps allowed). Appends the events it causes to `out`.
    pub fn on_window(&mut self, w: &WindowAggregate, out: &mut Vec<AlertEvent>) {
        let rules = &*self.rules;
        let s = &w.series;
        for (rule, st) in rules.threshold.iter().zip(self.threshold.iter_mut()) {
            if *s.metric != *rule.metric {
                continue;
            }
            let state = match st.series.get_mut(&s.id) {
                Some(x) => x,
                None if labels_match(&rule.labels, &s.labels) => st.series.entry(s.id).or_default(),
                None => continue,
            };
            state.on_window(rule, rules, w, out);
        }
        for (rule, st) in rules.trend.iter().zip(self.trend.iter_mut()) {
            if *s.metric != *rule.metric {
                continue;
            }
            let state = match st.series.get_mut(&s.id) {
                Some(x) => x,
                None if labels_match(&rule.labels, &s.labels) => st.series.entry(s.id).or_default(),
                None => continue,
            };
            let _ = state.on_window(rule, rules, w, out);
        }
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

fn realign<S>(
    old: Vec<RuleStates<S>>,
    names: impl Iterator<Item = impl AsRef<str>>,
) -> Vec<RuleStates<S>> {
    let mut old: Vec<Option<RuleStates<S>>> = old.into_iter().map(Some).collect();
    names
        .map(|n| {
            let n = n.as_ref();
            old.iter_mut()
                .find(|o| o.as_ref().is_some_and(|o| o.rule == n))
                .and_then(Option::take)
                .unwrap_or_else(|| RuleStates {
                    rule: n.to_string(),
                    series: HashMap::new(),
                })
        })
        .collect()
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
