//! The `compliance` report: patch compliance, antivirus and backup
//! coverage per tenant, and the agents that break them, from the `status`
//! table (one row per status report, docs/storage.md).
//!
//! Each agent is judged by its **latest report in scope that carries the
//! section** (patches, antivirus, backup, agent version): a report
//! without a section says nothing about it, as for the detectors. The
//! limits are the detectors' defaults (docs/rules.md): a critical patch
//! missing for **more than 30 days** (PCI DSS 6.3.3), antivirus disabled
//! or definitions **older than 3 days** (unknown definitions with
//! protection on are fine), a failed last backup job, no successful
//! backup, or one **older than 26 hours**; exactly the limit is within
//! it. Ages are taken at the report's `observed_at`, so the report
//! describes what the agents said, not the day it runs. Coverage shares
//! count every agent with a report in scope, so an agent that does not
//! report a section counts as not covered (the `*_reported` columns show
//! how many did).
//!
//! The SQL constants hold the default limits, so they read as what runs
//! with the built-in rules; `vigil report compliance` judges by the rules
//! the workers run ([`ComplianceLimits::from_rules`]): each limit literal
//! (`INTERVAL '30 days'`, ...) and the sentence that names it is replaced
//! by the configured one before the query runs
//! ([`ComplianceLimits::apply`]).

use std::borrow::Cow;
use std::time::Duration;

use vigil_ops::detect::{antivirus, backup, patch_sla};
use vigil_ops::rules::RuleSet;

use super::{Chart, ChartKind, SectionSpec};

/// The limits the compliance report judges by: the status detectors'
/// rules (docs/rules.md), so the report and the alerts agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComplianceLimits {
    /// A critical patch missing for more than this many days is out of
    /// SLA (`[[patch_sla]] max_days`).
    pub patch_max_days: u32,
    /// Antivirus definitions older than this are stale
    /// (`[[antivirus]] max_definition_age`).
    pub av_max_definition_age: Duration,
    /// A last successful backup older than this is too old
    /// (`[[backup]] max_age`).
    pub backup_max_age: Duration,
}

impl Default for ComplianceLimits {
    /// The detectors' defaults: 30 days, 3 days, 26 hours.
    fn default() -> Self {
        ComplianceLimits {
            patch_max_days: patch_sla::DEFAULT_MAX_DAYS,
            av_max_definition_age: antivirus::DEFAULT_MAX_DEFINITION_AGE,
            backup_max_age: backup::DEFAULT_BACKUP_MAX_AGE,
        }
    }
}

impl ComplianceLimits {
    /// The limits of `rules`. The `status` table records critical
    /// patches only, so the patch limit is that of the `[[patch_sla]]`
    /// rules that count critical patches; where several rules of a family
    /// apply, the strictest (smallest) limit; a family without such a
    /// rule keeps its default.
    pub fn from_rules(rules: &RuleSet) -> Self {
        let d = ComplianceLimits::default();
        ComplianceLimits {
            patch_max_days: rules
                .patch_sla
                .iter()
                .filter(|r| r.min_severity == "critical")
                .map(|r| r.max_days)
                .min()
                .unwrap_or(d.patch_max_days),
            av_max_definition_age: rules
                .antivirus
                .iter()
                .map(|r| r.max_definition_age)
                .min()
                .unwrap_or(d.av_max_definition_age),
            backup_max_age: rules
                .backup
                .iter()
                .map(|r| r.max_age)
                .min()
                .unwrap_or(d.backup_max_age),
        }
    }

    /// The limits in words: `critical patches within 30 days, antivirus
    /// definitions within 3 days, backups within 26 hours`.
    pub fn describe(&self) -> String {
        format!(
            "critical patches within {}, antivirus definitions within {}, backups within {}",
            span(days(self.patch_max_days)),
            span(self.av_max_definition_age),
            span(self.backup_max_age)
        )
    }

    /// `text` (a section's SQL or its sentence) with each default limit
    /// replaced by this one: the SQL interval literals and the phrases
    /// of the sections' sentences that name them. Borrowed unchanged
    /// under the default limits.
    pub fn apply(&self, text: &'static str) -> Cow<'static, str> {
        let d = ComplianceLimits::default();
        if *self == d {
            return Cow::Borrowed(text);
        }
        let limits = [
            (
                span(days(d.patch_max_days)),
                span(days(self.patch_max_days)),
            ),
            (
                span(d.av_max_definition_age),
                span(self.av_max_definition_age),
            ),
            (span(d.backup_max_age), span(self.backup_max_age)),
        ];
        // Two passes through markers, so a new limit that spells another
        // default (a patch limit of 3 days) is not replaced again.
        let mut out = text.to_string();
        for (i, (from, _)) in limits.iter().enumerate() {
            for ctx in ["INTERVAL '", "over ", "than "] {
                out = out.replace(&format!("{ctx}{from}"), &format!("{ctx}\u{1}{i}\u{1}"));
            }
        }
        for (i, (_, to)) in limits.iter().enumerate() {
            out = out.replace(&format!("\u{1}{i}\u{1}"), to);
        }
        Cow::Owned(out)
    }
}

/// `n` whole days.
fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 86_400)
}

/// A limit as an SQL interval's text and as the sentences say it: whole
/// days, else whole hours, minutes or seconds (`3 days`, `26 hours`,
/// `1 day`, `90 minutes`); with a part of a second, milliseconds.
/// DataFusion and DuckDB read each of these the same way.
fn span(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    let (n, unit) = if !ms.is_multiple_of(1000) {
        (ms, "millisecond")
    } else if s.is_multiple_of(86_400) && s > 0 {
        (u128::from(s / 86_400), "day")
    } else if s.is_multiple_of(3600) && s > 0 {
        (u128::from(s / 3600), "hour")
    } else if s.is_multiple_of(60) && s > 0 {
        (u128::from(s / 60), "minute")
    } else {
        (u128::from(s), "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// The newest patch section of each agent (`newest = 1`).
macro_rules! latest_patches {
    () => {
        "patch AS (
       SELECT tenant, agent, hostname, observed_at, missing_critical, oldest_critical_missing_since,
              row_number() OVER (PARTITION BY tenant, agent ORDER BY observed_at DESC) AS newest
       FROM status
       WHERE patches_reported)"
    };
}

/// The newest antivirus section of each agent (`newest = 1`).
macro_rules! latest_antivirus {
    () => {
        "av AS (
       SELECT tenant, agent, hostname, observed_at, av_product, av_enabled, av_definitions_updated,
              row_number() OVER (PARTITION BY tenant, agent ORDER BY observed_at DESC) AS newest
       FROM status
       WHERE av_enabled IS NOT NULL)"
    };
}

/// The newest backup section of each agent (`newest = 1`).
macro_rules! latest_backup {
    () => {
        "backup AS (
       SELECT tenant, agent, hostname, observed_at, backup_result, backup_last_run, backup_last_success,
              row_number() OVER (PARTITION BY tenant, agent ORDER BY observed_at DESC) AS newest
       FROM status
       WHERE backup_result IS NOT NULL)"
    };
}

/// One row per tenant: agents with a report in scope and their latest
/// report, then per section the agents that reported it, those within
/// the limits, and that count as a share of all agents (least
/// patch-compliant tenant first).
pub const COMPLIANCE_SUMMARY: &str = concat!(
    "WITH agents AS (
       SELECT tenant, agent, max(observed_at) AS last_report
       FROM status
       GROUP BY tenant, agent),
     ",
    latest_patches!(),
    ",
     ",
    latest_antivirus!(),
    ",
     ",
    latest_backup!(),
    ",
     judged AS (
       SELECT a.tenant,
              a.last_report,
              CASE WHEN p.agent IS NULL THEN 0 ELSE 1 END AS patch_reported,
              CASE WHEN p.agent IS NOT NULL
                        AND (p.oldest_critical_missing_since IS NULL
                             OR p.oldest_critical_missing_since >= p.observed_at - INTERVAL '30 days')
                   THEN 1 ELSE 0 END AS patch_ok,
              CASE WHEN v.agent IS NULL THEN 0 ELSE 1 END AS av_reported,
              CASE WHEN v.av_enabled
                        AND (v.av_definitions_updated IS NULL
                             OR v.av_definitions_updated >= v.observed_at - INTERVAL '3 days')
                   THEN 1 ELSE 0 END AS av_ok,
              CASE WHEN b.agent IS NULL THEN 0 ELSE 1 END AS backup_reported,
              CASE WHEN b.backup_result <> 'failed'
                        AND b.backup_last_success >= b.observed_at - INTERVAL '26 hours'
                   THEN 1 ELSE 0 END AS backup_ok
       FROM agents a
       LEFT JOIN patch p ON p.tenant = a.tenant AND p.agent = a.agent AND p.newest = 1
       LEFT JOIN av v ON v.tenant = a.tenant AND v.agent = a.agent AND v.newest = 1
       LEFT JOIN backup b ON b.tenant = a.tenant AND b.agent = a.agent AND b.newest = 1)
SELECT tenant,
       count(*) AS agents,
       max(last_report) AS last_report,
       sum(patch_reported) AS patch_reported,
       sum(patch_ok) AS patch_compliant,
       round(100.0 * sum(patch_ok) / count(*), 1) AS patch_compliance_pct,
       sum(av_reported) AS av_reported,
       sum(av_ok) AS av_protected,
       round(100.0 * sum(av_ok) / count(*), 1) AS av_coverage_pct,
       sum(backup_reported) AS backup_reported,
       sum(backup_ok) AS backup_ok,
       round(100.0 * sum(backup_ok) / count(*), 1) AS backup_coverage_pct
FROM judged
GROUP BY tenant
ORDER BY patch_compliance_pct, tenant"
);

/// Agents whose latest patch section shows a critical patch missing for
/// more than 30 days: how many critical patches, since when the oldest is
/// missing and for how many days (at the report). Longest first.
pub const PATCH_SLA_BREACHES: &str = concat!(
    "WITH ",
    latest_patches!(),
    "
SELECT tenant,
       agent,
       hostname,
       missing_critical,
       oldest_critical_missing_since,
       round((extract(epoch FROM observed_at) - extract(epoch FROM oldest_critical_missing_since)) / 86400.0, 1) AS days_missing,
       observed_at AS reported_at
FROM patch
WHERE newest = 1 AND oldest_critical_missing_since < observed_at - INTERVAL '30 days'
ORDER BY days_missing DESC, tenant, agent"
);

/// Agents whose latest antivirus section shows protection disabled, or
/// definitions older than 3 days: the product, the definitions' age
/// (days, at the report) and which problem. Disabled first, then the
/// oldest definitions.
pub const ANTIVIRUS_GAPS: &str = concat!(
    "WITH ",
    latest_antivirus!(),
    "
SELECT tenant,
       agent,
       hostname,
       av_product,
       CASE WHEN NOT av_enabled THEN 'disabled' ELSE 'stale' END AS problem,
       av_definitions_updated,
       round((extract(epoch FROM observed_at) - extract(epoch FROM av_definitions_updated)) / 86400.0, 1) AS definitions_age_days,
       observed_at AS reported_at
FROM av
WHERE newest = 1
  AND (NOT av_enabled OR av_definitions_updated < observed_at - INTERVAL '3 days')
ORDER BY problem, definitions_age_days DESC NULLS LAST, tenant, agent"
);

/// Agents whose latest backup section shows a failed last job, no
/// successful backup, or a last success older than 26 hours: the last
/// result, run and success, the hours since that success (at the report)
/// and which problem (`failed`, `never`, `too_old`).
pub const BACKUP_GAPS: &str = concat!(
    "WITH ",
    latest_backup!(),
    "
SELECT tenant,
       agent,
       hostname,
       CASE WHEN backup_result = 'failed' THEN 'failed'
            WHEN backup_last_success IS NULL THEN 'never'
            ELSE 'too_old' END AS problem,
       backup_result,
       backup_last_run,
       backup_last_success,
       round((extract(epoch FROM observed_at) - extract(epoch FROM backup_last_success)) / 3600.0, 1) AS hours_since_success,
       observed_at AS reported_at
FROM backup
WHERE newest = 1
  AND (backup_result = 'failed'
       OR backup_last_success IS NULL
       OR backup_last_success < observed_at - INTERVAL '26 hours')
ORDER BY problem, hours_since_success DESC NULLS LAST, tenant, agent"
);

/// Agents per tenant and agent version (each agent by its latest report
/// that carries a version), most common first: what an upgrade campaign
/// has left to do.
pub const AGENT_VERSIONS: &str = "\
WITH versions AS (
       SELECT tenant, agent, agent_version,
              row_number() OVER (PARTITION BY tenant, agent ORDER BY observed_at DESC) AS newest
       FROM status
       WHERE agent_version IS NOT NULL)
SELECT tenant,
       agent_version,
       count(*) AS agents
FROM versions
WHERE newest = 1
GROUP BY tenant, agent_version
ORDER BY tenant, agents DESC, agent_version";

/// The sections of the compliance report, in display order.
pub const SECTIONS: &[SectionSpec] = &[
    SectionSpec {
        name: "compliance_summary",
        title: "Compliance per tenant",
        about: "Patch compliance (no critical patch missing over 30 days), antivirus and backup coverage, from each agent's latest report.",
        sql: COMPLIANCE_SUMMARY,
        chart: Some(Chart {
            kind: ChartKind::Columns { stacked: false },
            x: "tenant",
            y: &["patch_compliance_pct", "av_coverage_pct", "backup_coverage_pct"],
            series: None,
            y_max: Some(100.0),
            unit: "% of agents",
        }),
    },
    SectionSpec {
        name: "agents_out_of_patch_sla",
        title: "Agents out of patch SLA",
        about: "Agents whose latest report shows a critical patch missing for more than 30 days.",
        sql: PATCH_SLA_BREACHES,
        chart: Some(Chart {
            kind: ChartKind::Bars,
            x: "agent",
            y: &["days_missing"],
            series: None,
            y_max: None,
            unit: "days missing",
        }),
    },
    SectionSpec {
        name: "antivirus_gaps",
        title: "Antivirus off or stale",
        about: "Agents whose latest report shows protection disabled or definitions older than 3 days.",
        sql: ANTIVIRUS_GAPS,
        chart: None,
    },
    SectionSpec {
        name: "backup_gaps",
        title: "Backups failed or too old",
        about: "Agents whose latest report shows a failed backup, none, or a last success older than 26 hours.",
        sql: BACKUP_GAPS,
        chart: None,
    },
    SectionSpec {
        name: "agent_versions",
        title: "Agent versions per tenant",
        about: "Agents per monitoring-agent version, each by its latest report.",
        sql: AGENT_VERSIONS,
        chart: None,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_leave_the_sql_as_written() {
        let d = ComplianceLimits::default();
        for s in SECTIONS {
            assert!(matches!(d.apply(s.sql), Cow::Borrowed(_)));
            assert_eq!(d.apply(s.about), s.about);
        }
        assert_eq!(
            d.describe(),
            "critical patches within 30 days, antivirus definitions within 3 days, backups within 26 hours"
        );
        assert_eq!(ComplianceLimits::from_rules(&RuleSet::default_rules()), d);
        assert_eq!(ComplianceLimits::from_rules(&RuleSet::default()), d);
    }

    #[test]
    fn every_limit_is_replaced_once_in_sql_and_sentences() {
        // A patch limit that spells the antivirus default and an
        // antivirus limit that spells the patch default: each replaced
        // once, not again by the other.
        let l = ComplianceLimits {
            patch_max_days: 3,
            av_max_definition_age: Duration::from_secs(30 * 86_400),
            backup_max_age: Duration::from_secs(90 * 60),
        };
        let summary = l.apply(COMPLIANCE_SUMMARY);
        assert_eq!(summary.matches("INTERVAL '3 days'").count(), 1);
        assert_eq!(summary.matches("INTERVAL '30 days'").count(), 1);
        assert_eq!(summary.matches("INTERVAL '90 minutes'").count(), 1);
        assert!(!summary.contains("26 hours"));
        assert!(l
            .apply(PATCH_SLA_BREACHES)
            .contains("observed_at - INTERVAL '3 days'"));
        assert!(l
            .apply(ANTIVIRUS_GAPS)
            .contains("observed_at - INTERVAL '30 days'"));
        assert!(l
            .apply(BACKUP_GAPS)
            .contains("observed_at - INTERVAL '90 minutes'"));
        let about: Vec<String> = SECTIONS.iter().map(|s| l.apply(s.about).into()).collect();
        assert!(about[0].contains("missing over 3 days"), "{}", about[0]);
        assert!(about[1].contains("more than 3 days"), "{}", about[1]);
        assert!(about[2].contains("older than 30 days"), "{}", about[2]);
        assert!(about[3].contains("older than 90 minutes"), "{}", about[3]);
        assert_eq!(span(Duration::from_millis(1500)), "1500 milliseconds");
        assert_eq!(span(Duration::from_secs(86_400)), "1 day");
        assert_eq!(span(Duration::from_secs(61)), "61 seconds");
    }

    #[test]
    fn limits_come_from_the_strictest_rule_that_counts() {
        let rules = RuleSet::from_toml(
            r#"
[[patch_sla]]
name = "critical"
max_days = 14
severity = "warning"

[[patch_sla]]
name = "important"
max_days = 7
min_severity = "important"
severity = "info"

[[antivirus]]
name = "a"
max_definition_age = "2d"
severity = "warning"

[[antivirus]]
name = "b"
max_definition_age = "36h"
severity = "info"
"#,
            "rules.toml",
        )
        .unwrap();
        let l = ComplianceLimits::from_rules(&rules);
        // The `important` rule counts more than critical patches: the
        // status table's critical ones are judged by the critical rule.
        assert_eq!(l.patch_max_days, 14);
        assert_eq!(l.av_max_definition_age, Duration::from_secs(36 * 3600));
        assert_eq!(l.backup_max_age, backup::DEFAULT_BACKUP_MAX_AGE);
    }
}
