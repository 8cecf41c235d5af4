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

use super::condition::{age_text, hours, ms, Breach, ConditionFamily, Verdict};
use super::registry::{FamilyRule, ReportRule};
use crate::model::Severity;
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

impl ReportRule for BackupRule {
    fn severity(&self) -> Severity {
        self.severity
    }
}

/// The backup family (see the module docs).
pub struct Backup;

impl ConditionFamily for Backup {
    type Rule = BackupRule;

    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<BackupRule> {
        const KEYS: &[&str] = &["name", "max_age", "severity"];
        let t = cx.fields(path, val, KEYS)?;
        let span = val.span();
        let name = cx.name(t, &span, path);
        let max_age = cx.duration_or(t, path, "max_age", DEFAULT_BACKUP_MAX_AGE);
        let severity = cx.severity(t, &span, path);
        Some(BackupRule {
            name: name?,
            max_age: max_age?,
            severity: severity?,
        })
    }

    fn limit(rule: &BackupRule) -> Option<f64> {
        Some(hours(ms(rule.max_age)))
    }

    fn judge(rule: &BackupRule, r: &StatusReport, agent: &str) -> Verdict {
        let Some(b) = &r.backup else {
            return Verdict::Unknown;
        };
        let max = ms(rule.max_age);
        let age =
            (b.last_success_ms != 0).then(|| r.observed_at_ms.saturating_sub(b.last_success_ms));
        if b.last_result == BackupResult::Failed as i32 {
            let since = if b.last_run_ms != 0 {
                b.last_run_ms
            } else {
                r.observed_at_ms
            };
            return Verdict::Breach(Breach {
                since_ms: since,
                value: age.map(hours),
                threshold: Self::limit(rule),
                summary: format!("the last backup job on agent {agent} failed"),
            });
        }
        match age {
            None => Verdict::Breach(Breach {
                since_ms: r.observed_at_ms,
                value: None,
                threshold: Self::limit(rule),
                summary: format!("agent {agent} has no successful backup"),
            }),
            Some(age) if age > max => Verdict::Breach(Breach {
                since_ms: b.last_success_ms.saturating_add(max),
                value: Some(hours(age)),
                threshold: Self::limit(rule),
                summary: format!(
                    "the last successful backup on agent {agent} is {} old (limit {})",
                    age_text(age),
                    humantime::format_duration(rule.max_age)
                ),
            }),
            Some(_) => Verdict::Fine,
        }
    }
}
