//! Antivirus off or stale: real-time protection disabled, or signature
//! definitions older than `max_definition_age` (3 days by default).
//!
//! A report family (see [`super::registry`]) on status reports, with
//! [`super::condition`]'s lifecycle. A report with an `antivirus` section
//! breaches when `enabled` is false, or when `definitions_updated_ms` is
//! set and the definitions are **older** than the limit (exactly the
//! limit is fine); a report without the section says nothing. The
//! incident starts at the report that first showed protection off, or
//! when the definitions passed the limit. `value` is the definition age
//! in hours, `threshold` the limit in hours.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_proto::v1::StatusReport;

use super::condition::{age_text, hours, ms, Breach, ConditionFamily, Verdict};
use super::registry::{FamilyRule, ReportRule};
use crate::model::Severity;
use crate::rules::read::{Cx, Val};

/// Default `max_definition_age`.
pub const DEFAULT_MAX_DEFINITION_AGE: Duration = Duration::from_secs(3 * 86_400);

/// An antivirus rule (`[[antivirus]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AntivirusRule {
    /// Rule name.
    pub name: String,
    /// Definitions older than this breach.
    #[serde(with = "humantime_serde")]
    pub max_definition_age: Duration,
    /// Severity of the alert.
    pub severity: Severity,
}

impl FamilyRule for AntivirusRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn same_definition(&self, other: &Self) -> bool {
        self.max_definition_age == other.max_definition_age
    }
}

impl ReportRule for AntivirusRule {
    fn severity(&self) -> Severity {
        self.severity
    }
}

/// The antivirus family (see the module docs).
pub struct Antivirus;

impl ConditionFamily for Antivirus {
    type Rule = AntivirusRule;

    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<AntivirusRule> {
        const KEYS: &[&str] = &["name", "max_definition_age", "severity"];
        let t = cx.fields(path, val, KEYS)?;
        let span = val.span();
        let name = cx.name(t, &span, path);
        let age = cx.duration_or(t, path, "max_definition_age", DEFAULT_MAX_DEFINITION_AGE);
        let severity = cx.severity(t, &span, path);
        Some(AntivirusRule {
            name: name?,
            max_definition_age: age?,
            severity: severity?,
        })
    }

    fn limit(rule: &AntivirusRule) -> Option<f64> {
        Some(hours(ms(rule.max_definition_age)))
    }

    fn judge(rule: &AntivirusRule, r: &StatusReport, agent: &str) -> Verdict {
        let Some(av) = &r.antivirus else {
            return Verdict::Unknown;
        };
        let max = ms(rule.max_definition_age);
        let age = (av.definitions_updated_ms != 0)
            .then(|| r.observed_at_ms.saturating_sub(av.definitions_updated_ms));
        let product = if av.product.is_empty() {
            "antivirus"
        } else {
            av.product.as_str()
        };
        if !av.enabled {
            return Verdict::Breach(Breach {
                since_ms: r.observed_at_ms,
                value: age.map(hours),
                threshold: Self::limit(rule),
                summary: format!("{product} real-time protection is disabled on agent {agent}"),
            });
        }
        match age {
            Some(age) if age > max => Verdict::Breach(Breach {
                since_ms: av.definitions_updated_ms.saturating_add(max),
                value: Some(hours(age)),
                threshold: Self::limit(rule),
                summary: format!(
                    "{product} definitions on agent {agent} are {} old (limit {})",
                    age_text(age),
                    humantime::format_duration(rule.max_definition_age)
                ),
            }),
            _ => Verdict::Fine,
        }
    }
}
