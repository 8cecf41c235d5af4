//! Reading the detector state of checkpoints written before the
//! detector-family registry (worker checkpoint format 5, and 4, whose
//! detector state has the same form).
//!
//! What changed: the engine kept the threshold and trend state at its top
//! level (`threshold`, `trend`, `free_trend`) and the standalone agents
//! under `offline`; it now keeps every series family's state under
//! `series.<family>`, the agents under `agents`, and writes the families'
//! state form versions (`versions`). An agent's [`Liveness`] had the
//! offline and invalid-input state as `offline_since` and `input`; it now
//! has `families.<family>`. Watch sets and handles named the threshold
//! family `thr` and `thr_active` (read as aliases, see
//! [`super::registry`]). Both forms are read here; only the new one is
//! written. This module is frozen: a new family never appears in it (its
//! state is absent from older checkpoints and starts empty).

use std::collections::BTreeMap;

use hashbrown::HashMap;
use serde::Deserialize;

use super::invalid_input::InputHealth;
use super::offline::OfflineAgent;
use super::registry::{AgentStates, Bound, ReportStores, SeriesStores, WatchSet};
use super::threshold::{ThresholdState, ThresholdStore};
use super::trend::{TrendState, TrendStore};
use super::{sorted_map, AgentTable, DetHandle, DetectorEngine, Liveness};
use crate::model::{OptMs, SeriesId, SeriesMeta};

/// Serde form of a [`Liveness`], either form.
#[derive(Deserialize)]
pub struct LivenessRepr {
    last_seen_ms: i64,
    #[serde(default)]
    skipped_ms: i64,
    #[serde(default)]
    families: Option<AgentStates>,
    /// Format 5: the offline family's state.
    #[serde(default)]
    offline_since: OptMs,
    /// Format 5: the invalid-input family's state.
    #[serde(default)]
    input: InputHealth,
}

// Fields are set one by one on a default value, not in a struct literal:
// a family added later (absent from these forms) then needs no edit here.
#[allow(clippy::field_reassign_with_default)]
impl From<LivenessRepr> for Liveness {
    fn from(r: LivenessRepr) -> Self {
        let families = r.families.unwrap_or_else(|| {
            let mut f = AgentStates::default();
            f.offline = OfflineAgent {
                offline_since: r.offline_since,
            };
            f.invalid_input = r.input;
            f
        });
        Liveness {
            last_seen_ms: r.last_seen_ms,
            skipped_ms: r.skipped_ms,
            families,
        }
    }
}

/// Serde form of a [`DetectorEngine`], either form.
#[derive(Deserialize)]
pub struct EngineRepr {
    bound: Bound,
    #[serde(default)]
    latest_ms: OptMs,
    /// Absent before the registry: every family's first form.
    #[serde(default)]
    versions: BTreeMap<String, u32>,
    sets: Vec<WatchSet>,
    #[serde(default)]
    series: Option<SeriesStores>,
    #[serde(default, alias = "offline")]
    agents: AgentTable,
    /// Absent before report families, and when they hold nothing.
    #[serde(default)]
    reports: ReportStores,
    #[serde(with = "sorted_map")]
    standalone: HashMap<SeriesId, (SeriesMeta, DetHandle)>,
    /// Format 5: the threshold family's state.
    #[serde(default, with = "sorted_map")]
    threshold: HashMap<(u64, u16), ThresholdState>,
    /// Format 5: the trend family's arena.
    #[serde(default)]
    trend: Vec<TrendState>,
    /// Format 5: the trend family's free slots.
    #[serde(default, with = "sorted_map")]
    free_trend: HashMap<u16, Vec<u32>>,
}

// As for `Liveness`: a family added later needs no edit here.
#[allow(clippy::field_reassign_with_default)]
impl TryFrom<EngineRepr> for DetectorEngine {
    type Error = String;

    fn try_from(r: EngineRepr) -> Result<Self, String> {
        let series = match r.series {
            Some(s) => s,
            None => {
                let mut s = SeriesStores::default();
                s.threshold = ThresholdStore::from_states(r.threshold);
                s.trend = TrendStore::from_parts(r.trend, r.free_trend);
                s
            }
        };
        DetectorEngine::restored(
            r.bound,
            r.latest_ms,
            &r.versions,
            r.sets,
            series,
            r.agents,
            r.reports,
            r.standalone,
        )
    }
}
