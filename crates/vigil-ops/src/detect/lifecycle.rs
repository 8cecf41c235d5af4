//! Alert lifecycle shared by every detector: building `firing` and
//! `resolved` events with deterministic ids, fingerprints, maintenance
//! suppression and summary templates.
//!
//! Contract (checked by the detectors' tests): an incident MUST produce
//! exactly one `firing` event and at most one `resolved` event, both with
//! `id = incident_id(fingerprint, started_at_ms)` and
//! `fingerprint = fingerprint(rule, tenant, agent, metric or "", labels)`.
//! Detectors keep the incident's `started_at_ms` in their own state; this
//! module holds no state.

use crate::model::{
    fingerprint, incident_id, AlertEvent, AlertStatus, DetectorKind, ResolveReason, SeriesMeta,
    Severity,
};
use crate::rules::RuleSet;

/// The alert subject of `rule` on the series `meta`.
pub(crate) fn series_subject<'a>(
    meta: &'a SeriesMeta,
    rule: &'a str,
    kind: DetectorKind,
    severity: Severity,
) -> Subject<'a> {
    Subject {
        rule,
        kind,
        severity,
        tenant: meta.tenant(),
        agent: meta.agent(),
        metric: Some(meta.metric()),
        labels: meta.labels(),
    }
}

/// Identity of the thing an alert is about, and the rule that raised it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Rule name.
    pub rule: &'a str,
    /// Detector family.
    pub kind: DetectorKind,
    /// Severity from the rule.
    pub severity: Severity,
    /// Tenant id.
    pub tenant: &'a str,
    /// Agent id.
    pub agent: &'a str,
    /// Metric name (`None` for offline alerts).
    pub metric: Option<&'a str>,
    /// Canonical labels (empty for offline alerts).
    pub labels: &'a str,
}

impl Subject<'_> {
    /// The alert fingerprint of this subject.
    pub fn fingerprint(&self) -> String {
        fingerprint(
            self.rule,
            self.tenant,
            self.agent,
            self.metric.unwrap_or(""),
            self.labels,
        )
    }

    /// The `resolved` event of an incident closed for `reason` other than
    /// its condition (rule edited or removed, state evicted), at `at_ms`. `rules` is the rule set now in force
    /// (for maintenance windows); `threshold` is the retired rule's value
    /// or limit.
    pub fn retired(
        &self,
        rules: &RuleSet,
        started_at_ms: i64,
        at_ms: i64,
        reason: ResolveReason,
        threshold: Option<f64>,
    ) -> AlertEvent {
        let on = match self.metric {
            Some(_) => format!("{} on {}", self.series_name(), self.agent),
            None => format!("agent {}", self.agent),
        };
        let summary = match reason {
            ResolveReason::Stale => format!(
                "{on}: no data for the state TTL; state evicted, incident of rule {} closed",
                self.rule
            ),
            ResolveReason::RuleRemoved => format!(
                "{on}: rule {} was removed from the rules; incident closed",
                self.rule
            ),
            _ => format!("{on}: rule {} was changed; incident closed", self.rule),
        };
        let mut e = self.event(
            rules,
            AlertStatus::Resolved,
            started_at_ms,
            at_ms.max(started_at_ms),
            summary,
        );
        e.resolve_reason = Some(reason);
        e.threshold = threshold;
        e
    }

    /// `metric{labels}` (or just `metric` without labels).
    pub fn series_name(&self) -> String {
        let m = self.metric.unwrap_or("");
        if self.labels.is_empty() {
            m.to_string()
        } else {
            format!("{m}{{{}}}", self.labels)
        }
    }

    /// A `firing` or `resolved` event of the incident that started at
    /// `started_at_ms`, with `event_time_ms` as its time. Optional fields
    /// are left empty for the caller to fill; `hostname` stays `None` (the
    /// pipeline fills it). `suppressed` is set from the maintenance windows
    /// of `rules` at `event_time_ms`. A `resolved` event carries
    /// [`ResolveReason::Cleared`]; the caller overrides it for other
    /// reasons.
    pub fn event(
        &self,
        rules: &RuleSet,
        status: AlertStatus,
        started_at_ms: i64,
        event_time_ms: i64,
        summary: String,
    ) -> AlertEvent {
        let fp = self.fingerprint();
        AlertEvent {
            id: incident_id(&fp, started_at_ms),
            fingerprint: fp,
            rule: self.rule.to_string(),
            kind: self.kind,
            severity: self.severity,
            status,
            suppressed: rules.in_maintenance(self.tenant, self.agent, event_time_ms),
            tenant: self.tenant.to_string(),
            agent: self.agent.to_string(),
            hostname: None,
            metric: self.metric.map(str::to_string),
            labels: self.labels.to_string(),
            value: None,
            threshold: None,
            predicted_at_ms: None,
            window_start_ms: None,
            window_end_ms: None,
            started_at_ms,
            resolved_at_ms: match status {
                AlertStatus::Firing => None,
                AlertStatus::Resolved => Some(event_time_ms),
            },
            resolve_reason: match status {
                AlertStatus::Firing => None,
                AlertStatus::Resolved => Some(ResolveReason::Cleared),
            },
            flaps: None,
            event_time_ms,
            summary,
        }
    }
}

/// Expands `{name}` placeholders of a validated template from `vars`.
/// Unknown placeholders (rejected at validation) are kept verbatim.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let key = &after[..close];
                match vars.iter().find(|(k, _)| *k == key) {
                    Some((_, v)) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(key);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Formats a value compactly: integers without decimals, others with up to
/// two decimals.
pub fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_replaces_known_placeholders() {
        assert_eq!(
            render("{a} and {b} {c}", &[("a", "1"), ("b", "2")]),
            "1 and 2 {c}"
        );
        assert_eq!(render("open {brace", &[]), "open {brace");
        assert_eq!(fmt_value(90.0), "90");
        assert_eq!(fmt_value(91.256), "91.26");
        assert_eq!(fmt_value(0.5), "0.5");
    }

    #[test]
    fn event_ids_are_deterministic_and_suppression_applies() {
        let rules = RuleSet {
            maintenance: vec![crate::rules::MaintenanceWindow {
                tenant: "t".into(),
                agent: None,
                start_ms: 0,
                end_ms: 100,
                reason: None,
                every: None,
            }],
            ..RuleSet::default()
        };
        let s = Subject {
            rule: "r",
            kind: DetectorKind::Threshold,
            severity: Severity::Warning,
            tenant: "t",
            agent: "a",
            metric: Some("m"),
            labels: "",
        };
        let f = s.event(&rules, AlertStatus::Firing, 10, 50, String::new());
        let r = s.event(&rules, AlertStatus::Resolved, 10, 150, String::new());
        assert_eq!(f.id, r.id);
        assert_eq!(f.fingerprint, fingerprint("r", "t", "a", "m", ""));
        assert!(f.suppressed);
        assert!(!r.suppressed);
        assert_eq!(r.resolved_at_ms, Some(150));
    }
}
