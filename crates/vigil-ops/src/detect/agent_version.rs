//! Agent version below a minimum: the monitoring agent is older than
//! `minimum` (dotted numbers, e.g. `5.10.0`).
//!
//! A report family (see [`super::registry`]) on status reports, with
//! [`super::condition`]'s lifecycle. Versions compare number by number,
//! a missing number counting as 0 (`5.10` = `5.10.0`); a suffix after
//! the numbers (`-beta`, `+build`) is ignored. A report whose
//! `agent_version` is empty or does not start with a number says nothing.
//! Exactly `minimum` is fine. The incident starts at the first report
//! below the minimum and resolves at the first report at or above it.
//!
//! The version also comes from the agent's `AgentInfo` (wire field 5,
//! sent on an agent's first batch and periodically): a batch whose
//! status reports carry no `agent_version` (none, or all empty) but
//! whose `AgentInfo` does is judged as a report observed at the batch's
//! send time (`sent_at_ms`; not when that is more than `max_clock_skew`
//! ahead of processing time, as a report would be refused `future`).
//! Where both come, the status report wins (it says when it was
//! observed). So an agent that sends no status reports at all is still
//! checked, and its incident follows the same event-time rules: an
//! `AgentInfo` sent before the newest report judged changes nothing.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use vigil_proto::v1::{AgentInfo, StatusReport};

use super::condition::{Breach, ConditionFamily, Verdict};
use super::registry::{FamilyRule, ReportRule};
use crate::model::Severity;
use crate::rules::read::{Cx, Val};

/// A minimum agent version rule (`[[agent_version]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentVersionRule {
    /// Rule name.
    pub name: String,
    /// The lowest accepted version, dotted numbers.
    pub minimum: String,
    /// Severity of the alert.
    pub severity: Severity,
}

impl FamilyRule for AgentVersionRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn same_definition(&self, other: &Self) -> bool {
        parse_version(&self.minimum) == parse_version(&other.minimum)
    }
}

impl ReportRule for AgentVersionRule {
    fn severity(&self) -> Severity {
        self.severity
    }
}

/// The numbers of a version (`5.10.2-beta` → `[5, 10, 2]`), without
/// trailing zeros; `None` when it does not start with a number.
pub fn parse_version(v: &str) -> Option<Vec<u64>> {
    let v = v.trim().trim_start_matches(['v', 'V']);
    let numeric = v.split(['-', '+', ' ']).next().unwrap_or("");
    let mut out = Vec::new();
    for part in numeric.split('.') {
        let digits: &str = &part[..part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(part.len())];
        let Ok(n) = digits.parse::<u64>() else {
            break;
        };
        out.push(n);
        if digits.len() != part.len() {
            break;
        }
    }
    while out.last() == Some(&0) {
        out.pop();
    }
    (!out.is_empty() || v.starts_with('0')).then_some(out)
}

/// Compares two parsed versions number by number (missing numbers are 0).
pub fn compare(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            a.get(i)
                .copied()
                .unwrap_or(0)
                .cmp(&b.get(i).copied().unwrap_or(0))
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// The agent version family (see the module docs).
pub struct AgentVersion;

impl ConditionFamily for AgentVersion {
    type Rule = AgentVersionRule;

    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<AgentVersionRule> {
        const KEYS: &[&str] = &["name", "minimum", "severity"];
        let t = cx.fields(path, val, KEYS)?;
        let span = val.span();
        let name = cx.name(t, &span, path);
        let minimum = match cx.string(t, &span, path, "minimum", true) {
            Some(m) if parse_version(&m).is_some() => Some(m),
            Some(m) => {
                let vspan = t.get("minimum").map_or(span.clone(), |v| v.span());
                cx.problem(
                    vspan,
                    format!("{path}.minimum"),
                    format!("{m:?} is not a version of dotted numbers such as \"5.10.0\""),
                );
                None
            }
            None => None,
        };
        let severity = cx.severity(t, &span, path);
        Some(AgentVersionRule {
            name: name?,
            minimum: minimum?,
            severity: severity?,
        })
    }

    fn judge(rule: &AgentVersionRule, r: &StatusReport, agent: &str) -> Verdict {
        judge_version(rule, &r.agent_version, r.observed_at_ms, agent)
    }

    fn judge_info(rule: &AgentVersionRule, info: &AgentInfo, at_ms: i64, agent: &str) -> Verdict {
        judge_version(rule, &info.agent_version, at_ms, agent)
    }
}

/// What version `version`, reported at `at_ms`, says under `rule`.
fn judge_version(rule: &AgentVersionRule, version: &str, at_ms: i64, agent: &str) -> Verdict {
    let (Some(have), Some(min)) = (parse_version(version), parse_version(&rule.minimum)) else {
        return Verdict::Unknown;
    };
    if compare(&have, &min).is_lt() {
        Verdict::Breach(Breach {
            since_ms: at_ms,
            value: None,
            threshold: None,
            summary: format!(
                "agent {agent} runs version {version} (minimum {})",
                rule.minimum
            ),
        })
    } else {
        Verdict::Fine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_number_by_number() {
        let v = |s: &str| parse_version(s).unwrap();
        assert_eq!(v("5.10.2-beta"), vec![5, 10, 2]);
        assert_eq!(v("v5.10"), vec![5, 10]);
        assert_eq!(v("5.10.0"), vec![5, 10]);
        assert_eq!(v("0.0"), Vec::<u64>::new());
        assert!(parse_version("").is_none());
        assert!(parse_version("beta").is_none());
        assert!(compare(&v("5.9.99"), &v("5.10")).is_lt());
        assert!(compare(&v("5.10"), &v("5.10.0")).is_eq());
        assert!(compare(&v("5.10.0.1"), &v("5.10")).is_gt());
        assert!(compare(&v("10"), &v("9.9")).is_gt());
    }
}
