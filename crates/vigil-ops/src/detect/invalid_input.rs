//! Invalid-input detector: an agent that keeps sending, but whose every
//! batch is refused, is alive and broken, not offline. After
//! `batches` consecutive refused batches spanning at least `after` of
//! processing time, `agent_invalid_input` fires; the agent's next good
//! batch resolves it.
//!
//! The caller classifies each batch of an identified agent (see
//! `docs/rules.md`, "`[invalid_input]`"): *good* (accepted with at least
//! one point merged, or with no points), *refused* (refused whole, or
//! every point refused for a reason other than `late`) or neither
//! (duplicates; batches whose points were all late). A batch that does not
//! decode, or whose ids are missing or invalid, names no agent that can be
//! trusted and is not attributed to any.
//!
//! The state of one agent is an [`InputHealth`] (16 bytes) inside its
//! [`super::offline::Liveness`]. The incident starts at the first refused
//! batch of the run, which is checkpointed, so a restart or replay yields
//! the same id.

use serde::{Deserialize, Serialize};

use super::lifecycle::Subject;
use crate::model::{AlertEvent, AlertStatus, DetectorKind, OptMs, ResolveReason};
use crate::reject::RejectReason;
use crate::rules::{InvalidInputRule, RuleSet};

/// What one batch of an identified agent was, for this detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputVerdict {
    /// Accepted with at least one point merged, or with no points at all.
    Good,
    /// Refused whole, or every point refused; the reason of the (first)
    /// refusal.
    Refused(RejectReason),
}

/// Invalid-input state of one agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputHealth {
    /// Processing time of the first batch of the current run of refused
    /// batches (none: the latest classified batch was good).
    #[serde(default)]
    pub refused_since: OptMs,
    /// Refused batches in the current run.
    #[serde(default)]
    pub refused_run: u32,
    /// An invalid-input incident is open; it started at `refused_since`.
    #[serde(default)]
    pub firing: bool,
}

impl InputHealth {
    /// Applies the verdict on a batch of `tenant`/`agent` processed at
    /// `now_ms`: a good batch ends the run and resolves an open incident, a
    /// refused one extends the run and fires once it is long enough.
    #[allow(clippy::too_many_arguments)]
    pub fn on_batch(
        &mut self,
        rule: Option<&InvalidInputRule>,
        rules: &RuleSet,
        tenant: &str,
        agent: &str,
        now_ms: i64,
        verdict: InputVerdict,
        out: &mut Vec<AlertEvent>,
    ) {
        match verdict {
            InputVerdict::Good => {
                let since = self.refused_since;
                self.refused_since = OptMs::NONE;
                self.refused_run = 0;
                if !std::mem::take(&mut self.firing) {
                    return;
                }
                if let (Some(rule), Some(started)) = (rule, since.get()) {
                    let mut e = subject(rule, tenant, agent).event(
                        rules,
                        AlertStatus::Resolved,
                        started,
                        now_ms.max(started),
                        format!("agent {agent} sends valid input again"),
                    );
                    e.threshold = Some(f64::from(rule.batches));
                    out.push(e);
                }
            }
            InputVerdict::Refused(reason) => {
                let started = match self.refused_since.get() {
                    Some(s) => s,
                    None => {
                        self.refused_since = now_ms.into();
                        now_ms
                    }
                };
                self.refused_run = self.refused_run.saturating_add(1);
                let Some(rule) = rule else { return };
                let after = i64::try_from(rule.after.as_millis()).unwrap_or(i64::MAX);
                let span = now_ms.saturating_sub(started);
                if self.firing || self.refused_run < rule.batches || span < after {
                    return;
                }
                self.firing = true;
                let mut e = subject(rule, tenant, agent).event(
                    rules,
                    AlertStatus::Firing,
                    started,
                    now_ms.max(started),
                    format!(
                        "agent {agent} is alive but its last {} batches over {} were all refused \
                         (latest: {}); see the dead-letter topic",
                        self.refused_run,
                        humantime::format_duration(std::time::Duration::from_secs(
                            (span / 1000).max(0) as u64
                        )),
                        reason.as_str()
                    ),
                );
                e.value = Some(f64::from(self.refused_run));
                e.threshold = Some(f64::from(rule.batches));
                out.push(e);
            }
        }
    }
}

/// Closes the open invalid-input incident of one agent raised by `old`, a
/// rule that was edited or removed (`current` is the rule now in force),
/// at `at_ms`, and restarts the agent's run so that a new incident gets a
/// new start (and id).
pub(crate) fn retire(
    old: &InvalidInputRule,
    current: Option<&InvalidInputRule>,
    rules: &RuleSet,
    at_ms: i64,
    tenant: &str,
    agent: &str,
    st: &mut InputHealth,
) -> Option<AlertEvent> {
    let reason = match current {
        Some(c) if c.name == old.name => ResolveReason::RuleChanged,
        _ => ResolveReason::RuleRemoved,
    };
    close(old, rules, at_ms, reason, tenant, agent, st)
}

/// Closes the open invalid-input incident of one agent whose state is
/// evicted (silent for the state TTL), with reason `stale`.
pub(crate) fn expire(
    rule: &InvalidInputRule,
    rules: &RuleSet,
    at_ms: i64,
    tenant: &str,
    agent: &str,
    st: &mut InputHealth,
) -> Option<AlertEvent> {
    close(rule, rules, at_ms, ResolveReason::Stale, tenant, agent, st)
}

/// Closes the open incident raised by `rule` with `reason`.
fn close(
    rule: &InvalidInputRule,
    rules: &RuleSet,
    at_ms: i64,
    reason: ResolveReason,
    tenant: &str,
    agent: &str,
    st: &mut InputHealth,
) -> Option<AlertEvent> {
    if !std::mem::take(&mut st.firing) {
        return None;
    }
    let started = st.refused_since.get()?;
    st.refused_since = OptMs::NONE;
    st.refused_run = 0;
    Some(subject(rule, tenant, agent).retired(
        rules,
        started,
        at_ms,
        reason,
        Some(f64::from(rule.batches)),
    ))
}

fn subject<'a>(rule: &'a InvalidInputRule, tenant: &'a str, agent: &'a str) -> Subject<'a> {
    Subject {
        rule: &rule.name,
        kind: DetectorKind::InvalidInput,
        severity: rule.severity,
        tenant,
        agent,
        metric: None,
        labels: "",
    }
}
