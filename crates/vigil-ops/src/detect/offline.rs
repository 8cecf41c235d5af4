//! Offline detector: per (tenant, agent) last-seen processing time. A tick
//! fires `agent_offline` when an agent sent nothing for longer than
//! `after`; the agent's next batch resolves it.
//!
//! The state of one agent is a [`Liveness`] (16 bytes), kept by whoever
//! owns the agent: the pipeline keeps it with the agent's other state (no
//! second copy of the agent's ids), [`OfflineState`] keeps it for callers
//! without their own agent table. A tick emits its events in (tenant,
//! agent) order whatever order the agents are visited in, so replays emit
//! the same events in the same order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::lifecycle::Subject;
use crate::model::{AlertEvent, AlertStatus, DetectorKind, OptMs};
use crate::rules::{OfflineRule, RuleSet};

/// Liveness of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// Processing time of the agent's latest batch (`i64::MIN`: none yet;
    /// such an agent is never declared offline).
    pub last_seen_ms: i64,
    /// `started_at_ms` of the open offline incident, if any.
    #[serde(default)]
    pub offline_since: OptMs,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            last_seen_ms: i64::MIN,
            offline_since: OptMs::NONE,
        }
    }
}

impl Liveness {
    /// Records a batch from `tenant`/`agent` at `now_ms`; resolves an open
    /// offline incident of that agent.
    pub fn seen(
        &mut self,
        rule: Option<&OfflineRule>,
        rules: &RuleSet,
        tenant: &str,
        agent: &str,
        now_ms: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
        let Some(started) = self.offline_since.get() else {
            return;
        };
        self.offline_since = OptMs::NONE;
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

    /// Moves the last-seen time `ms` later (time that is not the agent's
    /// silence, see [`crate::pipeline::Pipeline::skip_processing_time`]).
    pub fn skip(&mut self, ms: i64) {
        if self.last_seen_ms != i64::MIN {
            self.last_seen_ms = self.last_seen_ms.saturating_add(ms);
        }
    }
}

/// Declares the agents silent for longer than `rule.after` offline, with
/// their events in (tenant, agent) order.
pub fn tick<'a>(
    rule: Option<&OfflineRule>,
    rules: &RuleSet,
    now_ms: i64,
    agents: impl Iterator<Item = (&'a str, &'a str, &'a mut Liveness)>,
    out: &mut Vec<AlertEvent>,
) {
    let Some(rule) = rule else { return };
    let after_ms = i64::try_from(rule.after.as_millis()).unwrap_or(i64::MAX);
    let mut fired: Vec<(&str, &str, i64)> = Vec::new();
    for (tenant, agent, st) in agents {
        if st.last_seen_ms == i64::MIN || st.offline_since.is_some() {
            continue;
        }
        let silent = now_ms.saturating_sub(st.last_seen_ms);
        if silent > after_ms {
            st.offline_since = now_ms.into();
            fired.push((tenant, agent, silent));
        }
    }
    fired.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (tenant, agent, silent) in fired {
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

/// Liveness of every agent seen, by tenant then agent, for callers that
/// keep no agent table of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineState {
    /// tenant → agent → state.
    pub agents: BTreeMap<String, BTreeMap<String, Liveness>>,
}

impl OfflineState {
    /// Records a batch from `tenant`/`agent` at `now_ms`, see
    /// [`Liveness::seen`].
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
            None => per_tenant.entry(agent.to_string()).or_default(),
        };
        st.seen(rule, rules, tenant, agent, now_ms, out);
    }

    /// Declares agents silent for longer than `rule.after` offline, see
    /// [`tick`].
    pub fn on_tick(
        &mut self,
        rule: Option<&OfflineRule>,
        rules: &RuleSet,
        now_ms: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        let agents = self.agents.iter_mut().flat_map(|(t, m)| {
            m.iter_mut()
                .map(move |(a, st)| (t.as_str(), a.as_str(), st))
        });
        tick(rule, rules, now_ms, agents, out);
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
