//! The pipeline's agent table: finding an agent by its (tenant, agent)
//! ids, admitting a new one under the agent and tenant limits (reusing
//! the slot of an evicted agent), and the index by id hash. An agent's
//! slot number is part of its series' detector uids, so slots never move.

use std::sync::Arc;

use super::{AgentState, Pipeline};
use crate::decode::BatchError;
use crate::dedup::AgentDedup;
use crate::detect::Liveness;
use crate::model::AgentKey;
use crate::reject::RejectReason;
use crate::window::AgentWindows;

/// Hash of an agent's (tenant, agent) ids, for the agent index: xxh3 of
/// the agent id seeded with xxh3 of the tenant id.
#[inline]
pub(super) fn agent_hash(tenant: &str, agent: &str) -> u64 {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
    xxh3_64_with_seed(agent.as_bytes(), xxh3_64(tenant.as_bytes()))
}

impl Pipeline {
    /// Index of an existing agent (allocates nothing).
    pub(super) fn find_agent(&self, tenant: &str, agent: &str) -> Option<usize> {
        self.find_agent_hashed(tenant, agent, agent_hash(tenant, agent))
    }

    /// [`Pipeline::find_agent`] with the ids' [`agent_hash`] known.
    fn find_agent_hashed(&self, tenant: &str, agent: &str, hash: u64) -> Option<usize> {
        self.agent_index
            .find(hash, |&i| {
                let k = &self.agents[i as usize].key;
                *k.tenant == *tenant && *k.agent == *agent
            })
            .map(|&i| i as usize)
    }

    /// Index of the agent, created when new; refused (`agent_limit`) when
    /// the partition holds `limits.max_agents` agents, or a new tenant's
    /// agent when it holds `limits.max_tenants` tenants.
    pub(super) fn agent_slot(&mut self, tenant: &str, agent: &str) -> Result<usize, BatchError> {
        self.agent_slot_hashed(tenant, agent, agent_hash(tenant, agent))
    }

    /// [`Pipeline::agent_slot`] with the ids' [`agent_hash`] known (the
    /// ids of an accepted batch are hashed once).
    pub(super) fn agent_slot_hashed(
        &mut self,
        tenant: &str,
        agent: &str,
        hash: u64,
    ) -> Result<usize, BatchError> {
        // The agent is looked up to change it: it goes into the next
        // delta checkpoint.
        if let Some(i) = self.find_agent_hashed(tenant, agent, hash) {
            self.changed.mark(i);
            return Ok(i);
        }
        let limits = &self.cfg.limits;
        let held = self.agents.len() - self.free_agents.len();
        if held >= limits.max_agents {
            return Err(BatchError {
                reason: RejectReason::AgentLimit,
                detail: format!(
                    "new agent over the limit: the partition holds {held} agents (limits.max_agents {}); \
                     agents silent for pipeline.state_ttl are evicted",
                    limits.max_agents
                ),
            });
        }
        if !self.tenant_agents.contains_key(tenant)
            && self.tenant_agents.len() >= limits.max_tenants
        {
            return Err(BatchError {
                reason: RejectReason::AgentLimit,
                detail: format!(
                    "new tenant over the limit: the partition holds {} tenants (limits.max_tenants {})",
                    self.tenant_agents.len(),
                    limits.max_tenants
                ),
            });
        }
        // One tenant id allocation per tenant, shared by its agents.
        if !self.tenant_series.contains_key(tenant) {
            self.tenant_series.insert(tenant.into(), 0);
        }
        let (tenant, _) = self
            .tenant_series
            .get_key_value(tenant)
            .expect("inserted above");
        let tenant = tenant.clone();
        *self.tenant_agents.entry(tenant.clone()).or_insert(0) += 1;
        let state = AgentState {
            key: Arc::new(AgentKey {
                tenant,
                agent: agent.into(),
            }),
            hostname: None,
            live: Liveness::default(),
            dedup: AgentDedup::new(self.cfg.dedup_window),
            windows: AgentWindows::new(self.spec),
        };
        let i = match self.free_agents.pop() {
            Some(i) => {
                self.agents[i as usize] = state;
                i as usize
            }
            None => {
                crate::intern::grow_gently(&mut self.agents);
                self.agents.push(state);
                self.agents.len() - 1
            }
        };
        self.index_agent(i);
        self.changed.mark(i);
        self.stats.agents += 1;
        Ok(i)
    }

    /// Adds `agents[i]` to the agent index.
    pub(super) fn index_agent(&mut self, i: usize) {
        let agents = &self.agents;
        let k = &agents[i].key;
        self.agent_index
            .insert_unique(agent_hash(&k.tenant, &k.agent), i as u32, |&j| {
                let k = &agents[j as usize].key;
                agent_hash(&k.tenant, &k.agent)
            });
    }
}
