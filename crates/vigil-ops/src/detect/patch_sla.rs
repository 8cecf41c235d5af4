//! Patch SLA: patches of a severity (critical by default) missing longer
//! than `max_days` (30 by default, as PCI DSS 6.3.3 asks for critical
//! patches).
//!
//! A report family (see [`super::registry`]) on status reports: the
//! condition and its lifecycle are [`super::condition`]'s. A report
//! breaches when a `missing_patches` entry of severity `min_severity` or
//! higher has its oldest patch missing for **longer** than `max_days`
//! (exactly `max_days` is within the SLA); it is fine when the patch
//! section is reported and no such entry is that old. The incident starts
//! when the oldest such patch passed the limit (`oldest_missing_since_ms`
//! plus `max_days`). `value` is the oldest age in days, `threshold`
//! `max_days`.

use serde::{Deserialize, Serialize};
use vigil_proto::v1::{PatchSeverity, StatusReport};

use super::condition::{age_text, Breach, ConditionFamily, Verdict, DAY_MS};
use super::registry::{FamilyRule, ReportRule};
use crate::model::Severity;
use crate::rules::read::{Cx, Val};

/// Default `max_days`.
pub const DEFAULT_MAX_DAYS: u32 = 30;

/// A patch SLA rule (`[[patch_sla]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchSlaRule {
    /// Rule name.
    pub name: String,
    /// Patches missing longer than this many days breach.
    pub max_days: u32,
    /// Lowest patch severity counted: `low`, `moderate`, `important` or
    /// `critical` (default).
    pub min_severity: String,
    /// Severity of the alert.
    pub severity: Severity,
}

impl FamilyRule for PatchSlaRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn same_definition(&self, other: &Self) -> bool {
        self.max_days == other.max_days && self.min_severity == other.min_severity
    }
}

impl ReportRule for PatchSlaRule {
    fn severity(&self) -> Severity {
        self.severity
    }
}

/// The patch severity of a rules-file name.
fn patch_severity(name: &str) -> Option<PatchSeverity> {
    match name {
        "low" => Some(PatchSeverity::Low),
        "moderate" => Some(PatchSeverity::Moderate),
        "important" => Some(PatchSeverity::Important),
        "critical" => Some(PatchSeverity::Critical),
        _ => None,
    }
}

/// The patch SLA family (see the module docs).
pub struct PatchSla;

impl ConditionFamily for PatchSla {
    type Rule = PatchSlaRule;

    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<PatchSlaRule> {
        const KEYS: &[&str] = &["name", "max_days", "min_severity", "severity"];
        let t = cx.fields(path, val, KEYS)?;
        let span = val.span();
        let name = cx.name(t, &span, path);
        let max_days = cx.integer_or(t, path, "max_days", 1, DEFAULT_MAX_DAYS);
        let min_severity = match cx.string(t, &span, path, "min_severity", false) {
            None if t.contains_key("min_severity") => None,
            None => Some("critical".to_string()),
            Some(s) if patch_severity(&s).is_some() => Some(s),
            Some(_) => {
                let vspan = t.get("min_severity").map_or(span.clone(), |v| v.span());
                cx.problem(
                    vspan,
                    format!("{path}.min_severity"),
                    "expected one of: \"low\", \"moderate\", \"important\", \"critical\"",
                );
                None
            }
        };
        let severity = cx.severity(t, &span, path);
        Some(PatchSlaRule {
            name: name?,
            max_days: max_days?,
            min_severity: min_severity?,
            severity: severity?,
        })
    }

    fn limit(rule: &PatchSlaRule) -> Option<f64> {
        Some(f64::from(rule.max_days))
    }

    fn judge(rule: &PatchSlaRule, r: &StatusReport, agent: &str) -> Verdict {
        if !r.patches_reported {
            return Verdict::Unknown;
        }
        let min = patch_severity(&rule.min_severity).unwrap_or(PatchSeverity::Critical) as i32;
        let limit_ms = i64::from(rule.max_days) * DAY_MS;
        let oldest = r
            .missing_patches
            .iter()
            .filter(|m| m.severity >= min && m.count > 0)
            .map(|m| (m.oldest_missing_since_ms, m.count))
            .min();
        let Some((since, _)) = oldest else {
            return Verdict::Fine;
        };
        let age = r.observed_at_ms.saturating_sub(since);
        if age <= limit_ms {
            return Verdict::Fine;
        }
        let count: u32 = r
            .missing_patches
            .iter()
            .filter(|m| m.severity >= min)
            .map(|m| m.count)
            .sum();
        Verdict::Breach(Breach {
            since_ms: since.saturating_add(limit_ms),
            value: Some(age as f64 / DAY_MS as f64),
            threshold: Self::limit(rule),
            summary: format!(
                "agent {agent} misses {count} {}-or-higher patch(es), the oldest for {} (SLA {} days)",
                rule.min_severity,
                age_text(age),
                rule.max_days
            ),
        })
    }
}
