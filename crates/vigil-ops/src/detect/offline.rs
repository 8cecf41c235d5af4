//! Offline detector: per (tenant, agent) last-seen processing time. A tick
//! fires `agent_offline` when an agent sent nothing for longer than
//! `after`; the agent's next batch resolves it.
//!
//! The state of one agent is a [`Liveness`] (40 bytes, with the
//! invalid-input state of [`super::invalid_input`]), kept by whoever owns
//! the agent: the pipeline keeps it with the agent's other state (no
//! second copy of the agent's ids), [`OfflineState`] keeps it for callers
//! without their own agent table. A tick emits its events in (tenant,
//! agent) order whatever order the agents are visited in, so replays emit
//! the same events in the same order.
//!
//! An incident starts at the agent's last batch plus `after` (the moment it
//! became offline), not at the tick that noticed it: the start, and with it
//! the incident id, is a function of checkpointed state, so a worker that
//! restarts and notices the same silence again (at another tick, after
//! skipping its own outage, see [`Liveness::skip`]) re-emits the same id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::invalid_input::InputHealth;
use super::lifecycle::Subject;
use crate::model::{AlertEvent, AlertStatus, DetectorKind, OptMs, ResolveReason};
use crate::rules::{OfflineRule, RuleSet};

/// Liveness of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// Processing time of the agent's latest batch, moved later by
    /// skipped time (`i64::MIN`: none yet; such an agent is never declared
    /// offline). Silence is measured from here.
    pub last_seen_ms: i64,
    /// Skipped processing time included in `last_seen_ms` (see
    /// [`Liveness::skip`]): the latest batch arrived at `last_seen_ms -
    /// skipped_ms`.
    #[serde(default)]
    pub skipped_ms: i64,
    /// `started_at_ms` of the open offline incident, if any.
    #[serde(default)]
    pub offline_since: OptMs,
    /// Whether the agent's input is refused, see
    /// [`super::invalid_input`].
    #[serde(default)]
    pub input: InputHealth,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            last_seen_ms: i64::MIN,
            skipped_ms: 0,
            offline_since: OptMs::NONE,
            input: InputHealth::default(),
        }
    }
}

impl Liveness {
    /// Records a batch from `tenant`/`agent` at `now_ms`; resolves an open
    /// offline incident of that agent. `rule` is the rule its open
    /// incident belongs to (the retired one after a rule change, see
    /// [`super::DetectorEngine::attach_rules`]).
    pub fn seen(
        &mut self,
        rule: Option<&OfflineRule>,
        rules: &RuleSet,
        tenant: &str,
        agent: &str,
        now_ms: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        let arrived = match self.arrived_ms() {
            Some(a) => a.max(now_ms),
            None => now_ms,
        };
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
        self.skipped_ms = self.last_seen_ms.saturating_sub(arrived);
        let Some(started) = self.offline_since.get() else {
            return;
        };
        self.offline_since = OptMs::NONE;
        if let Some(rule) = rule {
            let mut e = subject(rule, tenant, agent).event(
                rules,
                AlertStatus::Resolved,
                started,
                now_ms.max(started),
                format!("agent {agent} is sending again"),
            );
            e.threshold = Some(rule.after.as_secs_f64());
            out.push(e);
        }
    }

    /// Processing time of the agent's latest batch (without skipped time),
    /// if it sent one.
    pub fn arrived_ms(&self) -> Option<i64> {
        (self.last_seen_ms != i64::MIN).then(|| self.last_seen_ms.saturating_sub(self.skipped_ms))
    }

    /// Moves the last-seen time `ms` later (time that is not the agent's
    /// silence, see [`crate::pipeline::Pipeline::skip_processing_time`]).
    /// The incident start stays anchored at the real last batch.
    pub fn skip(&mut self, ms: i64) {
        if self.last_seen_ms != i64::MIN {
            self.last_seen_ms = self.last_seen_ms.saturating_add(ms);
            self.skipped_ms = self.skipped_ms.saturating_add(ms);
        }
    }
}

/// `after` in milliseconds.
fn after_ms(rule: &OfflineRule) -> i64 {
    i64::try_from(rule.after.as_millis()).unwrap_or(i64::MAX)
}

/// Declares one agent offline when it has been silent for longer than
/// `rule.after` at `now_ms`: returns the `firing` event. The incident
/// starts at the agent's last batch plus `after`.
pub(crate) fn check(
    rule: &OfflineRule,
    rules: &RuleSet,
    now_ms: i64,
    tenant: &str,
    agent: &str,
    st: &mut Liveness,
) -> Option<AlertEvent> {
    if st.offline_since.is_some() {
        return None;
    }
    let arrived = st.arrived_ms()?;
    let after = after_ms(rule);
    if now_ms.saturating_sub(st.last_seen_ms) <= after {
        return None;
    }
    let started = arrived.saturating_add(after);
    st.offline_since = started.into();
    let silent = now_ms.saturating_sub(arrived);
    let mut e = subject(rule, tenant, agent).event(
        rules,
        AlertStatus::Firing,
        started,
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
    Some(e)
}

/// Closes the open offline incident of one agent raised by `old`, a rule
/// that was edited or removed (`current` is the offline rule now in
/// force): returns the `resolved` event at `now_ms` with reason
/// `rule_changed` or `rule_removed`.
pub(crate) fn retire(
    old: &OfflineRule,
    current: Option<&OfflineRule>,
    rules: &RuleSet,
    now_ms: i64,
    tenant: &str,
    agent: &str,
    st: &mut Liveness,
) -> Option<AlertEvent> {
    let reason = match current {
        Some(c) if c.name == old.name => ResolveReason::RuleChanged,
        _ => ResolveReason::RuleRemoved,
    };
    close(old, rules, now_ms, reason, tenant, agent, st)
}

/// Closes the open offline incident of one agent whose state is evicted
/// (silent for the state TTL): the `resolved` event at `now_ms` with
/// reason `stale`.
pub(crate) fn expire(
    rule: &OfflineRule,
    rules: &RuleSet,
    now_ms: i64,
    tenant: &str,
    agent: &str,
    st: &mut Liveness,
) -> Option<AlertEvent> {
    close(rule, rules, now_ms, ResolveReason::Stale, tenant, agent, st)
}

/// Closes the open offline incident raised by `rule` with `reason`.
fn close(
    rule: &OfflineRule,
    rules: &RuleSet,
    now_ms: i64,
    reason: ResolveReason,
    tenant: &str,
    agent: &str,
    st: &mut Liveness,
) -> Option<AlertEvent> {
    let started = st.offline_since.get()?;
    st.offline_since = OptMs::NONE;
    Some(subject(rule, tenant, agent).retired(
        rules,
        started,
        now_ms,
        reason,
        Some(rule.after.as_secs_f64()),
    ))
}

/// Liveness of every agent seen, by tenant then agent, for callers that
/// keep no agent table of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineState {
    /// tenant → agent → state.
    pub agents: BTreeMap<String, BTreeMap<String, Liveness>>,
}

impl OfflineState {
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
