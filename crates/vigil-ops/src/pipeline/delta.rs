//! Delta checkpoints: what changed in a pipeline since its last
//! checkpoint, so a checkpoint's size follows the change, not the state.
//!
//! A pipeline notes which agents changed since it was last checkpointed
//! (a batch, a window closed by idleness, an eviction, its liveness or a
//! report family's state changed by a tick). [`Pipeline::delta`] holds those agents whole (open
//! windows, dedup, liveness, and the detector state of their series) and
//! their report families' state, the partition-wide fields that are
//! small (counters, clock, rules, watch sets), and of the OTLP
//! converter's memory the series that changed. A restore reads a base
//! (a whole [`Pipeline`]) and the deltas written after it, in order
//! ([`Pipeline::restore_chain`]): each agent comes from the last of them
//! that holds it.
//!
//! A delta cannot be written (the next checkpoint is whole) after a
//! restore, a rule change (the watch sets are laid out again) or skipped
//! processing time (every agent's liveness moved).

use std::sync::Arc;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use super::{series_uid, vacant_agent_key, AgentState, Pipeline, PipelineStats};
use crate::clock::ReplayClock;
use crate::config::PipelineConfig;
use crate::dedup::AgentDedup;
use crate::detect::{EngineDelta, Liveness};
use crate::model::{AgentKey, AlertEvent};
use crate::otlp::OtlpDelta;
use crate::window::{AgentWindows, WindowSpec};

/// The agents changed since the last checkpoint: a bit per agent slot
/// and the list of those set. Not state: a new or restored pipeline
/// counts every agent as changed.
#[derive(Debug, Clone)]
pub(super) struct Changed {
    /// Every agent changed (no delta can be written).
    all: bool,
    bits: Vec<u64>,
    list: Vec<u32>,
    /// Agents evicted since (their slots may hold another agent now):
    /// their report families' states go.
    gone: Vec<Arc<AgentKey>>,
}

impl Default for Changed {
    fn default() -> Self {
        Changed {
            all: true,
            bits: Vec::new(),
            list: Vec::new(),
            gone: Vec::new(),
        }
    }
}

impl Changed {
    /// Notes that agent `ai` changed.
    #[inline]
    pub(super) fn mark(&mut self, ai: usize) {
        if self.all {
            return;
        }
        let (w, b) = (ai / 64, 1u64 << (ai % 64));
        if w >= self.bits.len() {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & b == 0 {
            self.bits[w] |= b;
            self.list.push(ai as u32);
        }
    }

    /// Notes that agent `key` was evicted.
    pub(super) fn gone(&mut self, key: &Arc<AgentKey>) {
        if !self.all {
            self.gone.push(key.clone());
        }
    }

    /// Notes that every agent changed.
    pub(super) fn mark_all(&mut self) {
        self.all = true;
        self.bits.clear();
        self.list.clear();
        self.gone.clear();
    }

    /// Nothing changed since now (a checkpoint was written).
    fn clear(&mut self) {
        for &ai in &self.list {
            self.bits[ai as usize / 64] = 0;
        }
        self.list.clear();
        self.gone.clear();
        self.all = false;
    }
}

/// What changed in a pipeline since its previous checkpoint (see the
/// module docs). Its serde form is a checkpoint's state, like a
/// [`Pipeline`]'s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineDelta {
    cfg: PipelineConfig,
    spec: WindowSpec,
    /// Agent slots of the pipeline (changed or not).
    agents_len: u32,
    /// The changed agents by slot, in slot order; their series' detector
    /// handles point into `detectors`' series stores.
    agents: Vec<(u32, AgentState)>,
    detectors: EngineDelta,
    tenant_series: HashMap<Arc<str>, u32>,
    clock: ReplayClock,
    last_tick_ms: Option<i64>,
    stats: PipelineStats,
    pending_alerts: Vec<AlertEvent>,
    /// The OTLP series whose memory changed.
    otlp: OtlpDelta,
    free_agents: Vec<u32>,
    last_sweep_ms: Option<i64>,
}

impl PipelineDelta {
    /// Number of agents it holds (those that changed).
    pub fn agents(&self) -> usize {
        self.agents.len()
    }
}

impl Pipeline {
    /// Agents changed since the last checkpoint, or `None` when the next
    /// checkpoint must be whole (see the module docs).
    pub fn changed_agents(&self) -> Option<usize> {
        (!self.changed.all).then_some(self.changed.list.len())
    }

    /// Agent slots held (evicted ones included): what
    /// [`Pipeline::changed_agents`] compares with.
    pub fn agent_slots(&self) -> usize {
        self.agents.len()
    }

    /// What changed since the last checkpoint, or `None` when the next
    /// checkpoint must be whole. The caller calls
    /// [`Pipeline::checkpointed`] once it took it (or a copy of the whole
    /// pipeline) for a checkpoint.
    pub fn delta(&self) -> Option<PipelineDelta> {
        if self.changed.all {
            return None;
        }
        let mut list = self.changed.list.clone();
        list.sort_unstable();
        let mut report_agents: Vec<(String, String)> = list
            .iter()
            .map(|&ai| &self.agents[ai as usize].key)
            .chain(&self.changed.gone)
            .filter(|k| !k.agent.is_empty())
            .map(|k| (k.tenant.to_string(), k.agent.to_string()))
            .collect();
        report_agents.sort_unstable();
        report_agents.dedup();
        let mut detectors = self.detectors.delta_head(report_agents);
        let agents = list
            .into_iter()
            .map(|ai| {
                let mut st = self.agents[ai as usize].clone();
                st.windows.for_each_det(&mut |slot, h| {
                    *h = self
                        .detectors
                        .copy_series(*h, series_uid(ai, slot), &mut detectors)
                });
                (ai, st)
            })
            .collect();
        Some(PipelineDelta {
            cfg: self.cfg.clone(),
            spec: self.spec,
            agents_len: self.agents.len() as u32,
            agents,
            detectors,
            tenant_series: self.tenant_series.clone(),
            clock: self.clock.clone(),
            last_tick_ms: self.last_tick_ms,
            stats: self.stats.clone(),
            pending_alerts: self.pending_alerts.clone(),
            otlp: self.otlp.delta(),
            free_agents: self.free_agents.clone(),
            last_sweep_ms: self.last_sweep_ms,
        })
    }

    /// The pipeline's state as of now is taken for a checkpoint (a
    /// delta or a copy of the whole, written by the caller, who drops the
    /// pipeline if the write fails): the next delta holds what changes
    /// from here.
    pub fn checkpointed(&mut self) {
        self.changed.clear();
        self.otlp.checkpointed();
    }

    /// The pipeline a base checkpoint (`base`, as restored) and the
    /// deltas written after it (in order) describe; each agent comes from
    /// the last that holds it. An error when a delta does not continue
    /// its predecessor (other rules, other window spec, fewer agents). As
    /// after any restore, call [`Pipeline::resume`] next.
    pub fn restore_chain(
        base: Pipeline,
        mut deltas: Vec<PipelineDelta>,
    ) -> Result<Pipeline, String> {
        let Some(last) = deltas.last() else {
            return Ok(base);
        };
        let mut p = base;
        let n = last.agents_len as usize;
        let mut len = p.agents.len();
        for (k, d) in deltas.iter().enumerate() {
            let which = format!("delta {} of the chain", k + 1);
            if k == 0 {
                p.detectors.continued_by(&d.detectors)
            } else {
                d.detectors.continues(&deltas[k - 1].detectors)
            }
            .map_err(|e| format!("{which}: {e}"))?;
            if d.spec != p.spec {
                return Err(format!("{which} has another window size or lateness"));
            }
            if (d.agents_len as usize) < len {
                return Err(format!(
                    "{which} holds {} agent slots, fewer than the {len} before it",
                    d.agents_len
                ));
            }
            len = d.agents_len as usize;
            if let Some((ai, _)) = d.agents.iter().find(|(ai, _)| *ai as usize >= len) {
                return Err(format!("{which} holds agent slot {ai} of {len}"));
            }
        }
        let (spec, window) = (p.spec, p.cfg.dedup_window);
        p.agents.resize_with(n, || AgentState {
            key: vacant_agent_key(),
            hostname: None,
            live: Liveness::default(),
            dedup: AgentDedup::new(window),
            windows: AgentWindows::new(spec),
        });
        // Where each agent's series states are: 0 the base, k delta k.
        let mut from = vec![0u32; n];
        let mut stores = Vec::with_capacity(deltas.len() + 1);
        for (k, d) in deltas.iter_mut().enumerate() {
            p.otlp.apply(std::mem::take(&mut d.otlp));
            p.detectors.apply_reports(&mut d.detectors);
            stores.push(d.detectors.take_series());
            for (ai, st) in std::mem::take(&mut d.agents) {
                p.agents[ai as usize] = st;
                from[ai as usize] = k as u32 + 1;
            }
        }
        let last = deltas.pop().expect("not empty");
        let base_series = p
            .detectors
            .adopt_head(last.detectors, stores.last().expect("not empty"));
        stores.insert(0, base_series);
        let det = &mut p.detectors;
        for (ai, a) in p.agents.iter_mut().enumerate() {
            let src = &stores[from[ai] as usize];
            a.windows.for_each_det(&mut |slot, h| {
                *h = det.restore_series(src, *h, series_uid(ai as u32, slot))
            });
        }
        p.cfg = last.cfg;
        p.tenant_series = last.tenant_series;
        p.clock = last.clock;
        p.last_tick_ms = last.last_tick_ms;
        p.stats = last.stats;
        p.pending_alerts = last.pending_alerts;
        p.free_agents = last.free_agents;
        p.last_sweep_ms = last.last_sweep_ms;
        p.agent_index.clear();
        p.tenant_agents.clear();
        p.changed.mark_all();
        Ok(p)
    }
}

/// A checkpoint chain kept in memory, for tests that checkpoint a
/// pipeline as a worker does and restore it anywhere.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::Pipeline;
    use crate::rules::RuleSet;

    /// The serde forms of a base and the deltas after it, with counts.
    #[derive(Default)]
    pub(crate) struct TestChain {
        base: Option<Vec<u8>>,
        deltas: Vec<Vec<u8>>,
        /// Whole checkpoints (bases) written.
        pub(crate) wholes: usize,
        /// Deltas written.
        pub(crate) delta_count: usize,
        /// Agents the deltas held, in all.
        pub(crate) delta_agents: usize,
    }

    impl TestChain {
        /// Checkpoints `p`: a delta when it has one, else a new base.
        pub(crate) fn checkpoint(&mut self, p: &mut Pipeline) {
            match p.delta() {
                Some(d) => {
                    self.delta_count += 1;
                    self.delta_agents += d.agents();
                    self.deltas.push(serde_json::to_vec(&d).unwrap());
                }
                None => {
                    self.wholes += 1;
                    self.base = Some(serde_json::to_vec(&*p).unwrap());
                    self.deltas.clear();
                }
            }
            p.checkpointed();
        }

        /// The pipeline the chain restores to, resumed under its own
        /// configuration and `rules` (`None` before the first base).
        pub(crate) fn restore(&self, rules: Arc<RuleSet>) -> Option<Pipeline> {
            let base: Pipeline = serde_json::from_slice(self.base.as_ref()?).unwrap();
            let cfg = base.config().clone();
            let deltas = self
                .deltas
                .iter()
                .map(|d| serde_json::from_slice(d).unwrap())
                .collect();
            Some(
                Pipeline::restore_chain(base, deltas)
                    .unwrap()
                    .resume(cfg, rules)
                    .unwrap(),
            )
        }
    }
}
