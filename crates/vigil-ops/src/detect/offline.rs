//! Offline detector: per (tenant, agent) last-seen processing time. A tick
//! fires `agent_offline` when an agent sent nothing for longer than
//! `after`; the agent's next batch resolves it.
//!
//! An agent family (see [`super::registry`]): it owns the `[offline]`
//! rule ([`OfflineRule`], read by `parse`) and keeps, in every agent's
//! [`super::Liveness`], the start of its open incident ([`OfflineAgent`],
//! 8 bytes). The last-seen time itself is the agent table's (the pipeline
//! also closes idle windows by it). A tick emits its events in (tenant,
//! agent) order whatever order the agents are visited in, so replays emit
//! the same events in the same order.
//!
//! An incident starts at the agent's last batch plus `after` (the moment it
//! became offline), not at the tick that noticed it: the start, and with it
//! the incident id, is a function of checkpointed state, so a worker that
//! restarts and notices the same silence again (at another tick, after
//! skipping its own outage, see [`super::Liveness::skip`]) re-emits the
//! same id.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::lifecycle::Subject;
use super::registry::{AgentCx, AgentFamily, FamilyRule, RuleSet};
use crate::model::{AlertEvent, AlertStatus, DetectorKind, OptMs, ResolveReason, Severity};
use crate::rules::read::{Cx, Val};

/// The offline rule (`[offline]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRule {
    /// Rule name (default `agent_offline`).
    pub name: String,
    /// An agent that sent nothing for longer than this is offline.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Severity of the alert.
    pub severity: Severity,
}

impl FamilyRule for OfflineRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn same_definition(&self, other: &OfflineRule) -> bool {
        self.after == other.after
    }
}

/// Default name of the offline rule.
pub const DEFAULT_OFFLINE_NAME: &str = "agent_offline";

/// Reads the `[offline]` section, reporting every problem into `cx`.
pub(crate) fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<OfflineRule> {
    const KEYS: &[&str] = &["name", "after", "severity"];
    let t = cx.fields(path, val, KEYS)?;
    let span = val.span();
    let name = cx.name_or(t, &span, path, DEFAULT_OFFLINE_NAME);
    let after = if t.contains_key("after") {
        cx.duration(t, path, "after")
    } else {
        cx.missing(span.clone(), path, "after");
        None
    };
    let severity = cx.severity(t, &span, path);
    Some(OfflineRule {
        name: name?,
        after: after?,
        severity: severity?,
    })
}

/// The offline family (see the module docs).
pub struct Offline;

/// Offline state of one agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineAgent {
    /// `started_at_ms` of the open offline incident, if any.
    #[serde(default)]
    pub offline_since: OptMs,
}

/// `after` in milliseconds.
fn after_ms(rule: &OfflineRule) -> i64 {
    i64::try_from(rule.after.as_millis()).unwrap_or(i64::MAX)
}

impl AgentFamily for Offline {
    type Rule = OfflineRule;
    type State = OfflineAgent;

    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<OfflineRule> {
        parse(cx, path, val)
    }

    /// Resolves the agent's open offline incident. `rule` is the rule its
    /// open incident belongs to.
    fn on_seen(
        rule: Option<&OfflineRule>,
        rules: &RuleSet,
        a: &AgentCx<'_>,
        st: &mut OfflineAgent,
        out: &mut Vec<AlertEvent>,
    ) {
        let Some(started) = st.offline_since.get() else {
            return;
        };
        st.offline_since = OptMs::NONE;
        if let Some(rule) = rule {
            let mut e = subject(rule, a.tenant, a.agent).event(
                rules,
                AlertStatus::Resolved,
                started,
                a.now_ms.max(started),
                format!("agent {} is sending again", a.agent),
            );
            e.threshold = Some(rule.after.as_secs_f64());
            out.push(e);
        }
    }

    /// Declares the agent offline when it has been silent for longer than
    /// `rule.after`: the incident starts at its last batch plus `after`.
    fn on_tick(
        rule: &OfflineRule,
        rules: &RuleSet,
        a: &AgentCx<'_>,
        st: &mut OfflineAgent,
        out: &mut Vec<AlertEvent>,
    ) {
        if st.offline_since.is_some() {
            return;
        }
        let Some(arrived) = a.arrived_ms else {
            return;
        };
        let after = after_ms(rule);
        if a.now_ms.saturating_sub(a.last_seen_ms) <= after {
            return;
        }
        let started = arrived.saturating_add(after);
        st.offline_since = started.into();
        let silent = a.now_ms.saturating_sub(arrived);
        let mut e = subject(rule, a.tenant, a.agent).event(
            rules,
            AlertStatus::Firing,
            started,
            a.now_ms,
            format!(
                "agent {} sent nothing for {} (offline after {})",
                a.agent,
                humantime::format_duration(Duration::from_secs((silent / 1000).max(0) as u64)),
                humantime::format_duration(rule.after)
            ),
        );
        e.value = Some(silent as f64 / 1000.0);
        e.threshold = Some(rule.after.as_secs_f64());
        out.push(e);
    }

    fn close(
        rule: &OfflineRule,
        rules: &RuleSet,
        a: &AgentCx<'_>,
        reason: ResolveReason,
        st: &mut OfflineAgent,
    ) -> Option<AlertEvent> {
        let started = st.offline_since.get()?;
        st.offline_since = OptMs::NONE;
        Some(subject(rule, a.tenant, a.agent).retired(
            rules,
            started,
            a.now_ms,
            reason,
            Some(rule.after.as_secs_f64()),
        ))
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
