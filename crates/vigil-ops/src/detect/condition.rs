//! A condition judged on each status report, shared by the status
//! families ([`super::patch_sla`], [`super::antivirus`], [`super::backup`],
//! [`super::agent_version`]): it fires when a report shows the breach,
//! and resolves on the first later report that shows it gone.
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

use super::lifecycle::Subject;
use super::registry::RuleSet;
use crate::model::{AlertEvent, AlertStatus, OptMs, ResolveReason};

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
