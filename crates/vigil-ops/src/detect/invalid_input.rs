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
//! An agent family (see [`super::registry`]): it owns the
//! `[invalid_input]` rule ([`InvalidInputRule`], read by `parse`), and
//! the state of one agent is an [`InputHealth`] (16 bytes) inside its
//! [`super::Liveness`]. The incident starts at the first refused batch of
//! the run, which is checkpointed, so a restart or replay yields the same
//! id.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::lifecycle::Subject;
use super::registry::{AgentCx, AgentFamily, FamilyRule, RuleSet};
use crate::model::{AlertEvent, AlertStatus, DetectorKind, OptMs, ResolveReason, Severity};
use crate::reject::RejectReason;
use crate::rules::read::{Cx, Val};

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
                        humantime::format_duration(
                            Duration::from_secs((span / 1000).max(0) as u64)
                        ),
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

/// The invalid-input rule (`[invalid_input]`): an agent that is alive but
/// whose every batch is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidInputRule {
    /// Rule name (default `agent_invalid_input`).
    pub name: String,
    /// Consecutive refused batches (with no good batch between them)
    /// needed to fire (>= 1).
    pub batches: u32,
    /// ... that also span at least this much processing time, from the
    /// first of them to the one that fires (zero: no time condition).
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Severity of the alert.
    pub severity: Severity,
}

impl FamilyRule for InvalidInputRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn same_definition(&self, other: &InvalidInputRule) -> bool {
        self.batches == other.batches && self.after == other.after
    }
}

/// Default name of the invalid-input rule.
pub const DEFAULT_INVALID_INPUT_NAME: &str = "agent_invalid_input";
/// Default number of consecutive refused batches before an agent's input
/// counts as invalid.
pub const DEFAULT_INVALID_BATCHES: u32 = 3;

/// Reads the `[invalid_input]` section, reporting every problem into
/// `cx`.
pub(crate) fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<InvalidInputRule> {
    const KEYS: &[&str] = &["name", "batches", "after", "severity"];
    let t = cx.fields(path, val, KEYS)?;
    let span = val.span();
    let name = cx.name_or(t, &span, path, DEFAULT_INVALID_INPUT_NAME);
    let batches = if t.contains_key("batches") {
        cx.integer(t, path, "batches", 1)
    } else {
        Some(DEFAULT_INVALID_BATCHES)
    };
    let after = if t.contains_key("after") {
        cx.duration(t, path, "after")
    } else {
        Some(Duration::ZERO)
    };
    let severity = cx.severity(t, &span, path);
    Some(InvalidInputRule {
        name: name?,
        batches: batches?,
        after: after?,
        severity: severity?,
    })
}

/// The invalid-input family (see the module docs).
pub struct InvalidInput;

impl AgentFamily for InvalidInput {
    type Rule = InvalidInputRule;
    type State = InputHealth;

    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<InvalidInputRule> {
        parse(cx, path, val)
    }

    #[inline]
    fn on_input(
        rule: Option<&InvalidInputRule>,
        rules: &RuleSet,
        a: &AgentCx<'_>,
        verdict: InputVerdict,
        st: &mut InputHealth,
        out: &mut Vec<AlertEvent>,
    ) {
        st.on_batch(rule, rules, a.tenant, a.agent, a.now_ms, verdict, out);
    }

    fn close(
        rule: &InvalidInputRule,
        rules: &RuleSet,
        a: &AgentCx<'_>,
        reason: ResolveReason,
        st: &mut InputHealth,
    ) -> Option<AlertEvent> {
        close(rule, rules, a.now_ms, reason, a.tenant, a.agent, st)
    }
}
