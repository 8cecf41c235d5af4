//! A condition judged on each status report, shared by the status
//! families ([`super::patch_sla`], [`super::antivirus`], [`super::backup`],
//! [`super::agent_version`]): it fires when a report shows the breach,
//! and resolves on the first later report that shows it gone.
//!
//! Such a family implements [`ConditionFamily`] (its rule type, its
//! rules-file section, what a report says under a rule, the limit put on
//! its events) and gets its [`ReportFamily`] from the blanket
//! implementation here: one [`ConditionState`] per (agent, rule), the
//! report hook and the close hook. The family's module keeps only what
//! differs.
//!
//! Contracts:
//!
//! * Reports are judged in event time (`observed_at_ms`). A report older
//!   than the newest one judged (a late retry) changes nothing, so the
//!   outcome does not depend on arrival order among retries.
//! * A report without the section a family reads ([`Verdict::Unknown`])
//!   changes nothing: "not reported" is neither good nor bad.
//! * An incident's start is derived from report content (the moment the
//!   breach began, e.g. the oldest missing patch's date plus the limit)
//!   and is kept in state, so a replay gives the same ids. A new incident
//!   of the same subject never starts before the previous one resolved
//!   (so two incidents never share an id).
//! * The `firing` event's time is the report's `observed_at_ms`, as is a
//!   `resolved` event's; suppression is judged at that time.

use serde::{Deserialize, Serialize};
use vigil_proto::v1::{AgentInfo, StatusReport};

use super::lifecycle::Subject;
use super::registry::{ReportCx, ReportFamily, ReportRule, RuleSet};
use crate::model::{AlertEvent, AlertStatus, DetectorKind, OptMs, ResolveReason};
use crate::rules::read::{Cx, Val};

/// A status family that is one condition judged on each status report
/// of an agent, with one incident per (agent, rule) (see the module
/// docs). Implementing it makes the type a [`ReportFamily`] whose state
/// is a [`ConditionState`] and whose alerts are of kind
/// [`DetectorKind::Status`], with no labels.
pub trait ConditionFamily {
    /// Version of the family's checkpoint form ([`ConditionState`] unless
    /// the lifecycle changes).
    const STATE_VERSION: u32 = 1;
    /// The rule type of its `[[key]]` section.
    type Rule: ReportRule;

    /// Reads one rule of the section (`path` is e.g. `backup[0]`),
    /// reporting every problem into `cx`.
    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<Self::Rule>;

    /// What report `r` of `agent` says under `rule`. MUST be pure and
    /// depend only on its arguments.
    fn judge(rule: &Self::Rule, r: &StatusReport, agent: &str) -> Verdict;

    /// The rule's limit, put on `resolved` events (those of a cleared
    /// condition and those closed for another reason); `None`: none.
    fn limit(_rule: &Self::Rule) -> Option<f64> {
        None
    }

    /// What the agent's `AgentInfo`, sent at `at_ms`, says under `rule`
    /// (judged as a report observed at `at_ms`); `Unknown` by default: a
    /// family that reads nothing of it.
    fn judge_info(_rule: &Self::Rule, _info: &AgentInfo, _at_ms: i64, _agent: &str) -> Verdict {
        Verdict::Unknown
    }
}

/// The alert subject of a condition rule on the agent of `a`.
fn subject<'a, R: ReportRule>(rule: &'a R, a: &ReportCx<'a>) -> Subject<'a> {
    a.subject(rule, DetectorKind::Status, "")
}

impl<F: ConditionFamily> ReportFamily for F {
    const STATE_VERSION: u32 = F::STATE_VERSION;
    type Rule = F::Rule;
    type State = ConditionState;

    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<F::Rule> {
        <F as ConditionFamily>::parse(cx, path, val)
    }

    fn on_status(
        rule: &F::Rule,
        rules: &RuleSet,
        a: &ReportCx<'_>,
        r: &StatusReport,
        st: &mut ConditionState,
        out: &mut Vec<AlertEvent>,
    ) {
        let verdict = F::judge(rule, r, a.agent);
        st.judge(
            &subject(rule, a),
            rules,
            r.observed_at_ms,
            verdict,
            F::limit(rule),
            out,
        );
    }

    fn on_agent_info(
        rule: &F::Rule,
        rules: &RuleSet,
        a: &ReportCx<'_>,
        info: &AgentInfo,
        at_ms: i64,
        st: &mut ConditionState,
        out: &mut Vec<AlertEvent>,
    ) {
        let verdict = F::judge_info(rule, info, at_ms, a.agent);
        st.judge(
            &subject(rule, a),
            rules,
            at_ms,
            verdict,
            F::limit(rule),
            out,
        );
    }

    fn close(
        rule: &F::Rule,
        rules: &RuleSet,
        a: &ReportCx<'_>,
        reason: ResolveReason,
        mut st: ConditionState,
        out: &mut Vec<AlertEvent>,
    ) {
        st.close(
            &subject(rule, a),
            rules,
            a.now_ms,
            reason,
            F::limit(rule),
            out,
        );
    }
}

/// What one report says about a family's condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The report does not carry what the rule reads.
    Unknown,
    /// The condition does not hold.
    Fine,
    /// The condition holds.
    Breach(Breach),
}

/// A breach seen in a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    /// When the breach began (event time, at most the report's time).
    pub since_ms: i64,
    /// Observed value (an age, a count), for the alert.
    pub value: Option<f64>,
    /// The rule's limit, for the alert.
    pub threshold: Option<f64>,
    /// Alert summary.
    pub summary: String,
}

/// State of one (agent, rule): the newest report judged and the open
/// incident. 24 bytes; `Default` = never judged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionState {
    /// `observed_at_ms` of the newest report judged.
    #[serde(default)]
    pub last_ms: OptMs,
    /// Start of the open incident, if any.
    #[serde(default)]
    pub open_since: OptMs,
    /// End of the last resolved incident (a new one starts after it).
    #[serde(default)]
    pub closed_at: OptMs,
}

impl ConditionState {
    /// Judges one report observed at `observed_ms` for `subject`,
    /// appending the events it causes to `out`. `threshold` is the rule's
    /// limit, put on `resolved` events.
    pub fn judge(
        &mut self,
        subject: &Subject<'_>,
        rules: &RuleSet,
        observed_ms: i64,
        verdict: Verdict,
        threshold: Option<f64>,
        out: &mut Vec<AlertEvent>,
    ) {
        if self.last_ms.get().is_some_and(|l| observed_ms < l) {
            return;
        }
        if matches!(verdict, Verdict::Unknown) {
            return;
        }
        self.last_ms = observed_ms.into();
        match (verdict, self.open_since.get()) {
            (Verdict::Breach(b), None) => {
                let floor = self
                    .closed_at
                    .get()
                    .map_or(i64::MIN, |c| c.saturating_add(1));
                let started = b.since_ms.min(observed_ms).max(floor);
                self.open_since = started.into();
                let mut e = subject.event(
                    rules,
                    AlertStatus::Firing,
                    started,
                    observed_ms.max(started),
                    b.summary,
                );
                e.value = b.value;
                e.threshold = b.threshold;
                out.push(e);
            }
            (Verdict::Fine, Some(started)) => {
                let at = observed_ms.max(started);
                self.open_since = OptMs::NONE;
                self.closed_at = at.into();
                let mut e = subject.event(
                    rules,
                    AlertStatus::Resolved,
                    started,
                    at,
                    format!("{}: rule {} no longer breached", on(subject), subject.rule),
                );
                e.threshold = threshold;
                out.push(e);
            }
            _ => {}
        }
    }

    /// Closes the open incident, if any, for `reason` at `at_ms`.
    pub fn close(
        &mut self,
        subject: &Subject<'_>,
        rules: &RuleSet,
        at_ms: i64,
        reason: ResolveReason,
        threshold: Option<f64>,
        out: &mut Vec<AlertEvent>,
    ) {
        if let Some(started) = self.open_since.get() {
            self.open_since = OptMs::NONE;
            self.closed_at = at_ms.max(started).into();
            out.push(subject.retired(rules, started, at_ms, reason, threshold));
        }
    }
}

/// `agent <id>`, the subject of a status family's summaries.
pub fn on(subject: &Subject<'_>) -> String {
    format!("agent {}", subject.agent)
}

/// Milliseconds of a duration, saturating.
pub fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds per day.
pub const DAY_MS: i64 = 86_400_000;

/// A duration in ms as hours (the unit of the status families' values).
pub fn hours(ms: i64) -> f64 {
    ms as f64 / 3_600_000.0
}

/// A duration in ms as a short human text (`3d 4h`).
pub fn age_text(ms: i64) -> String {
    let secs = (ms / 1000).max(0) as u64;
    // Minute precision is enough for ages of patches, backups, definitions.
    let rounded = secs - secs % 60;
    humantime::format_duration(std::time::Duration::from_secs(rounded)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DetectorKind, Severity};

    fn subject() -> Subject<'static> {
        Subject {
            rule: "r",
            kind: DetectorKind::Status,
            severity: Severity::Warning,
            tenant: "t",
            agent: "a",
            metric: None,
            labels: "",
        }
    }

    fn breach(since: i64) -> Verdict {
        Verdict::Breach(Breach {
            since_ms: since,
            value: Some(1.0),
            threshold: Some(2.0),
            summary: "bad".into(),
        })
    }

    #[test]
    fn fires_once_resolves_once_and_ignores_older_and_unknown_reports() {
        let rules = RuleSet::default();
        let s = subject();
        let mut st = ConditionState::default();
        let mut out = Vec::new();
        st.judge(&s, &rules, 100, breach(50), None, &mut out);
        st.judge(&s, &rules, 200, breach(60), None, &mut out);
        // An older report (a retry) and an unknown one change nothing.
        st.judge(&s, &rules, 150, Verdict::Fine, None, &mut out);
        st.judge(&s, &rules, 300, Verdict::Unknown, None, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, AlertStatus::Firing);
        assert_eq!(out[0].started_at_ms, 50);
        assert_eq!(out[0].event_time_ms, 100);
        st.judge(&s, &rules, 400, Verdict::Fine, Some(2.0), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].status, AlertStatus::Resolved);
        assert_eq!(out[1].id, out[0].id);
        assert_eq!(out[1].resolved_at_ms, Some(400));
        // The same derived start again: the new incident starts after the
        // old one ended, so it gets another id.
        st.judge(&s, &rules, 500, breach(50), None, &mut out);
        assert_eq!(out[2].started_at_ms, 401);
        assert_ne!(out[2].id, out[0].id);
        let mut closed = Vec::new();
        st.close(&s, &rules, 450, ResolveReason::Stale, None, &mut closed);
        assert_eq!(closed[0].resolved_at_ms, Some(450));
        assert_eq!(closed[0].resolve_reason, Some(ResolveReason::Stale));
        assert_eq!(st.open_since, OptMs::NONE);
    }
}
