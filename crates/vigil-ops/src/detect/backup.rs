//! Backup failed or too old: the last backup job failed, or the last
//! successful backup is older than `max_age` (26 hours by default: a
//! daily job plus slack), or there never was one.
//!
//! A report family (see [`super::registry`]) on status reports, with
//! [`super::condition`]'s lifecycle. A report with a `backup` section
//! breaches when `last_result` is `failed` (the incident starts when that
//! job finished, `last_run_ms`, or at the report when unknown), when no
//! successful backup is known (`last_success_ms` 0: starts at the
//! report), or when the last success is **older** than `max_age` (exactly
//! `max_age` is fine; starts at the success plus `max_age`). `warning`
//! results count as successes. `value` is the age of the last success in
//! hours, `threshold` `max_age` in hours.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_proto::v1::{BackupResult, StatusReport};

use super::condition::{age_text, ms, Breach, ConditionState, Verdict};
use super::lifecycle::Subject;
use super::registry::{FamilyRule, ReportCx, ReportFamily, RuleSet};
use crate::model::{AlertEvent, DetectorKind, ResolveReason, Severity};
use crate::rules::read::{Cx, Val};

/// Default `max_age`.
pub const DEFAULT_BACKUP_MAX_AGE: Duration = Duration::from_secs(26 * 3600);

/// A backup rule (`[[backup]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRule {
    /// Rule name.
    pub name: String,
    /// A last success older than this breaches.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Severity of the alert.
    pub severity: Severity,
}

impl FamilyRule for BackupRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn same_definition(&self, other: &Self) -> bool {
        self.max_age == other.max_age
    }
}

/// The backup family (see the module docs).
pub struct Backup;

const HOUR_MS: f64 = 3_600_000.0;

impl ReportFamily for Backup {
    type Rule = BackupRule;
    type State = ConditionState;

    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<BackupRule> {
        const KEYS: &[&str] = &["name", "max_age", "severity"];
        let t = cx.fields(path, val, KEYS)?;
        let span = val.span();
        let name = cx.name(t, &span, path);
        let max_age = if t.contains_key("max_age") {
            cx.duration(t, path, "max_age")
        } else {
            Some(DEFAULT_BACKUP_MAX_AGE)
        };
        let severity = cx.severity(t, &span, path);
        Some(BackupRule {
            name: name?,
            max_age: max_age?,
            severity: severity?,
        })
    }

    fn on_status(
        rule: &BackupRule,
        rules: &RuleSet,
        a: &ReportCx<'_>,
        r: &StatusReport,
        st: &mut ConditionState,
        out: &mut Vec<AlertEvent>,
    ) {
        let verdict = judge(rule, r, a.agent);
        st.judge(
            &subject(rule, a),
            rules,
            r.observed_at_ms,
            verdict,
            limit(rule),
            out,
        );
    }

    fn close(
        rule: &BackupRule,
        rules: &RuleSet,
        a: &ReportCx<'_>,
        reason: ResolveReason,
        mut st: ConditionState,
        out: &mut Vec<AlertEvent>,
    ) {
        st.close(&subject(rule, a), rules, a.now_ms, reason, limit(rule), out);
    }
}

fn limit(rule: &BackupRule) -> Option<f64> {
    Some(ms(rule.max_age) as f64 / HOUR_MS)
}

/// What report `r` says under `rule`.
pub fn judge(rule: &BackupRule, r: &StatusReport, agent: &str) -> Verdict {
    let Some(b) = &r.backup else {
        return Verdict::Unknown;
    };
    let max = ms(rule.max_age);
    let age = (b.last_success_ms != 0).then(|| r.observed_at_ms.saturating_sub(b.last_success_ms));
    if b.last_result == BackupResult::Failed as i32 {
        let since = if b.last_run_ms != 0 {
            b.last_run_ms
        } else {
            r.observed_at_ms
        };
        return Verdict::Breach(Breach {
            since_ms: since,
            value: age.map(|a| a as f64 / HOUR_MS),
            threshold: limit(rule),
            summary: format!("the last backup job on agent {agent} failed"),
        });
    }
    match age {
        None => Verdict::Breach(Breach {
            since_ms: r.observed_at_ms,
            value: None,
            threshold: limit(rule),
            summary: format!("agent {agent} has no successful backup"),
        }),
        Some(age) if age > max => Verdict::Breach(Breach {
            since_ms: b.last_success_ms.saturating_add(max),
            value: Some(age as f64 / HOUR_MS),
            threshold: limit(rule),
            summary: format!(
                "the last successful backup on agent {agent} is {} old (limit {})",
                age_text(age),
                humantime::format_duration(rule.max_age)
            ),
        }),
        Some(_) => Verdict::Fine,
    }
}

fn subject<'a>(rule: &'a BackupRule, a: &ReportCx<'a>) -> Subject<'a> {
    Subject {
        rule: &rule.name,
        kind: DetectorKind::Status,
        severity: rule.severity,
        tenant: a.tenant,
        agent: a.agent,
        metric: None,
        labels: "",
    }
}
