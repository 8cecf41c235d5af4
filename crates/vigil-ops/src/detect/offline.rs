//! Offline detector: per (tenant, agent) last-seen processing time. A tick
//! fires `agent_offline` when an agent sent nothing for longer than
//! `after`; the agent's next batch resolves it.
//!
//! Agents are kept in `BTreeMap`s so a tick visits them in a stable order
//! and replays emit events in the same order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::lifecycle::Subject;
use crate::model::{AlertEvent, AlertStatus, DetectorKind};
use crate::rules::{OfflineRule, RuleSet};

/// Liveness of one agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// Processing time of the agent's latest batch.
    pub last_seen_ms: i64,
    /// `started_at_ms` of the open offline incident, if any.
    pub offline_since: Option<i64>,
}

/// Liveness of every agent seen, by tenant then agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineState {
    /// tenant → agent → state.
    pub agents: BTreeMap<String, BTreeMap<String, AgentState>>,
}

impl OfflineState {
    /// Records a batch from `tenant`/`agent` at `now_ms`; resolves an open
    /// offline incident of that agent.
    pub fn on_agent_seen(
        &mut self,
        rule: Option<&OfflineRule>,
        rules: &RuleSet,
        tenant: &str,
        agent: &str,
        now_ms: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        let per_tenant = match self.agents.get_mut(tenant) {
            Some(m) => m,
            None => self.agents.entry(tenant.to_string()).or_default(),
        };
        let st = match per_tenant.get_mut(agent) {
            Some(s) => s,
            None => per_tenant.entry(agent.to_string()).or_insert(AgentState {
                last_seen_ms: now_ms,
                offline_since: None,
            }),
        };
        st.last_seen_ms = st.last_seen_ms.max(now_ms);
        if let Some(started) = st.offline_since.take() {
            if let Some(rule) = rule {
                let mut e = subject(rule, tenant, agent).event(
                    rules,
                    AlertStatus::Resolved,
                    started,
                    now_ms,
                    format!("agent {agent} is sending again"),
                );
                e.threshold = Some(rule.after.as_secs_f64());
                out.push(e);
            }
        }
    }

    /// Declares agents silent for longer than `rule.after` offline.
    pub fn on_tick(
        &mut self,
        rule: Option<&OfflineRule>,
        rules: &RuleSet,
        now_ms: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        let Some(rule) = rule else { return };
        let after_ms = i64::try_from(rule.after.as_millis()).unwrap_or(i64::MAX);
        for (tenant, agents) in self.agents.iter_mut() {
            for (agent, st) in agents.iter_mut() {
                let silent = now_ms.saturating_sub(st.last_seen_ms);
                if st.offline_since.is_none() && silent > after_ms {
                    st.offline_since = Some(now_ms);
                    let mut e = subject(rule, tenant, agent).event(
                        rules,
                        AlertStatus::Firing,
                        now_ms,
                        now_ms,
                        format!(
                            "agent {agent} sent nothing for {} (offline after {})",
                            humantime::format_duration(std::time::Duration::from_secs(
                                (silent / 1000).max(0) as u64
                            )),
                            humantime::format_duration(rule.after)
                        ),
                    );
                    e.value = Some(silent as f64 / 1000.0);
                    e.threshold = Some(rule.after.as_secs_f64());
                    out.push(e);
                }
            }
        }
    }
}

fn subject<'a>(rule: &'a OfflineRule, tenant: &'a str, agent: &'a str) -> Subject<'a> {
    Subject {
        rule: &rule.name,
        kind: DetectorKind::Offline,
        severity: rule.severity,
        tenant,
        agent,
        metric: None,
        labels: "",
    }
}
