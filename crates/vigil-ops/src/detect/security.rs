//! What the security families ([`super::brute_force`],
//! [`super::off_hours_session`]) share: the subjects they track within
//! one (agent, rule) — a user with recent failed logins, an open remote
//! session — each with an incident of its own, told apart by its labels
//! (`user=…`; `session=…,technician=…`).
//!
//! A family keeps its tracked subjects in its state (its own type and
//! order, so its checkpoint form is its own) and implements [`Tracked`]
//! for them; the events of their incidents are built here, with the
//! subject's labels and [`DetectorKind::Security`].

use super::registry::{ReportCx, ReportRule, RuleSet};
use crate::model::{canonical_labels, AlertEvent, AlertStatus, DetectorKind, ResolveReason};

/// A subject a security family tracks within one (agent, rule).
pub trait Tracked {
    /// The canonical labels of the subject's incidents.
    fn labels(&self) -> String;

    /// Start of the subject's open incident, if any.
    fn open_since(&self) -> Option<i64>;
}

/// Canonical labels of `pairs` (sorted by key, escaped).
pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = String::new();
    canonical_labels(pairs, &mut s);
    s
}

/// A `firing` or `resolved` event of the incident of `t` under `rule`
/// that started at `started_ms`, at `at_ms` (see
/// [`super::lifecycle::Subject::event`]).
#[allow(clippy::too_many_arguments)]
pub fn event<T: Tracked, R: ReportRule>(
    t: &T,
    rule: &R,
    rules: &RuleSet,
    a: &ReportCx<'_>,
    status: AlertStatus,
    started_ms: i64,
    at_ms: i64,
    summary: String,
) -> AlertEvent {
    let labels = t.labels();
    a.subject(rule, DetectorKind::Security, &labels)
        .event(rules, status, started_ms, at_ms, summary)
}

/// The `resolved` event of the open incident of `t`, if it has one,
/// closed for `reason` at `at_ms` (never before its start), with the
/// rule's `threshold`.
pub fn retired<T: Tracked, R: ReportRule>(
    t: &T,
    rule: &R,
    rules: &RuleSet,
    a: &ReportCx<'_>,
    at_ms: i64,
    reason: ResolveReason,
    threshold: Option<f64>,
) -> Option<AlertEvent> {
    let started = t.open_since()?;
    let labels = t.labels();
    Some(
        a.subject(rule, DetectorKind::Security, &labels)
            .retired(rules, started, at_ms, reason, threshold),
    )
}

/// Closes the open incidents of every subject of `tracked`, in order,
/// for `reason` at `a.now_ms`: a family's
/// [`super::registry::ReportFamily::close`].
pub fn close_all<'t, T: Tracked + 't, R: ReportRule>(
    tracked: impl IntoIterator<Item = &'t T>,
    rule: &R,
    rules: &RuleSet,
    a: &ReportCx<'_>,
    reason: ResolveReason,
    threshold: Option<f64>,
    out: &mut Vec<AlertEvent>,
) {
    out.extend(
        tracked
            .into_iter()
            .filter_map(|t| retired(t, rule, rules, a, a.now_ms, reason, threshold)),
    );
}
