//! The `alerts` report: alert statistics for the period, the lifecycle of
//! incidents (opened, resolved, time to resolve), the rules to tune
//! (noisiest, most flapping) and the incident list.
//!
//! An incident is every event of one `id`: its `firing` event, and its
//! `resolved` event once it ended. Within a `--from`/`--to` scope an
//! incident can show only one of them (opened before the period, or still
//! open after it); both events carry `started_at`, and the `resolved` one
//! `resolved_at`, so durations are right either way.

use super::{Chart, ChartKind, SectionSpec};

/// One row: incidents opened (a `firing` event in the period) and
/// resolved (a `resolved` event), those still open at its end, those
/// suppressed by a maintenance window, the mean and median time to resolve
/// (minutes, over resolved incidents, from `started_at` to
/// `resolved_at`), and the flaps of resolved threshold incidents.
pub const ALERTS_SUMMARY: &str = "\
WITH incidents AS (
       SELECT id,
              max(CASE WHEN status = 'firing' THEN 1 ELSE 0 END) AS opened,
              max(CASE WHEN status = 'resolved' THEN 1 ELSE 0 END) AS resolved,
              max(CASE WHEN suppressed THEN 1 ELSE 0 END) AS suppressed,
              (extract(epoch FROM max(resolved_at)) - extract(epoch FROM min(started_at))) / 60.0 AS ttr_minutes,
              sum(coalesce(flaps, 0)) AS flaps
       FROM alerts
       GROUP BY id)
SELECT coalesce(sum(opened), 0) AS opened,
       coalesce(sum(resolved), 0) AS resolved,
       coalesce(sum(1 - resolved), 0) AS open_at_end,
       coalesce(sum(suppressed), 0) AS suppressed,
       round(avg(CASE WHEN resolved = 1 THEN ttr_minutes END), 1) AS mttr_minutes,
       round(median(CASE WHEN resolved = 1 THEN ttr_minutes END), 1) AS median_ttr_minutes,
       coalesce(sum(flaps), 0) AS flaps
FROM incidents";

/// Incidents opened per UTC day by severity: notified ones per severity,
/// and those a maintenance window suppressed (any severity).
pub const ALERTS_PER_DAY: &str = "\
SELECT CAST(event_time AS DATE) AS day,
       sum(CASE WHEN severity = 'critical' AND NOT suppressed THEN 1 ELSE 0 END) AS critical,
       sum(CASE WHEN severity = 'warning' AND NOT suppressed THEN 1 ELSE 0 END) AS warning,
       sum(CASE WHEN severity = 'info' AND NOT suppressed THEN 1 ELSE 0 END) AS info,
       sum(CASE WHEN suppressed THEN 1 ELSE 0 END) AS suppressed
FROM alerts
WHERE status = 'firing'
GROUP BY CAST(event_time AS DATE)
ORDER BY day";

/// Incidents opened and resolved per UTC day, and the mean time to
/// resolve (minutes) of those resolved that day.
pub const INCIDENTS_PER_DAY: &str = "\
SELECT CAST(event_time AS DATE) AS day,
       sum(CASE WHEN status = 'firing' THEN 1 ELSE 0 END) AS opened,
       sum(CASE WHEN status = 'resolved' THEN 1 ELSE 0 END) AS resolved,
       round(avg(CASE WHEN status = 'resolved'
                      THEN (extract(epoch FROM resolved_at) - extract(epoch FROM started_at)) / 60.0 END), 1) AS mttr_minutes
FROM alerts
GROUP BY CAST(event_time AS DATE)
ORDER BY day";

/// Alert events per UTC day, tenant, rule and severity: incidents that
/// fired and were notified, fired under a maintenance window
/// (suppressed), and resolved.
pub const ALERT_COUNTS: &str = "\
SELECT CAST(event_time AS DATE) AS day,
       tenant,
       rule,
       severity,
       sum(CASE WHEN status = 'firing' AND NOT suppressed THEN 1 ELSE 0 END) AS fired,
       sum(CASE WHEN status = 'firing' AND suppressed THEN 1 ELSE 0 END) AS suppressed,
       sum(CASE WHEN status = 'resolved' THEN 1 ELSE 0 END) AS resolved
FROM alerts
GROUP BY CAST(event_time AS DATE), tenant, rule, severity
ORDER BY day, tenant, fired DESC, rule, severity";

/// The ten rules that opened the most incidents, for alert tuning: how
/// many agents they hit, how many incidents resolved and how fast (mean
/// minutes), how many were short (resolved within 10 minutes of their
/// start, likely noise) and how often they flapped.
pub const NOISIEST_RULES: &str = "\
WITH incidents AS (
       SELECT id, rule, severity, tenant, agent,
              max(CASE WHEN status = 'firing' THEN 1 ELSE 0 END) AS opened,
              max(CASE WHEN status = 'resolved' THEN 1 ELSE 0 END) AS resolved,
              (extract(epoch FROM max(resolved_at)) - extract(epoch FROM min(started_at))) / 60.0 AS ttr_minutes,
              sum(coalesce(flaps, 0)) AS flaps
       FROM alerts
       GROUP BY id, rule, severity, tenant, agent)
SELECT rule,
       severity,
       sum(opened) AS opened,
       count(DISTINCT tenant || '/' || agent) AS agents,
       sum(resolved) AS resolved,
       round(avg(CASE WHEN resolved = 1 THEN ttr_minutes END), 1) AS mttr_minutes,
       sum(CASE WHEN resolved = 1 AND ttr_minutes < 10 THEN 1 ELSE 0 END) AS short_incidents,
       sum(flaps) AS flaps
FROM incidents
GROUP BY rule, severity
HAVING sum(opened) > 0
ORDER BY opened DESC, rule, severity
LIMIT 10";

/// The rules whose incidents flapped most (a threshold incident flaps when
/// its value goes back past `clear` for fewer than `clear_for` windows
/// while open): total flaps, incidents that flapped, the most flaps of one
/// incident, and flaps per resolved incident. A rule here wants a wider
/// hysteresis or a longer `clear_for`.
pub const FLAPPING_RULES: &str = "\
SELECT rule,
       severity,
       sum(flaps) AS flaps,
       sum(CASE WHEN flaps > 0 THEN 1 ELSE 0 END) AS incidents_flapping,
       max(flaps) AS max_flaps,
       round(CAST(sum(flaps) AS DOUBLE) / count(*), 2) AS flaps_per_incident
FROM alerts
WHERE status = 'resolved' AND flaps IS NOT NULL
GROUP BY rule, severity
HAVING sum(flaps) > 0
ORDER BY flaps DESC, rule, severity
LIMIT 10";

/// The incident record: one row per incident, in detection order, with
/// its detection time (`started_at`: the start of its first bad window,
/// or for `agent_offline` the moment the agent went silent), end,
/// duration (minutes; null while open), resolution (`open` while open,
/// else the resolve reason), and whether a maintenance window suppressed
/// it.
pub const INCIDENT_LIST: &str = "\
SELECT min(started_at) AS detected_at,
       tenant,
       agent,
       max(hostname) AS hostname,
       rule,
       severity,
       labels,
       max(resolved_at) AS resolved_at,
       round((extract(epoch FROM max(resolved_at)) - extract(epoch FROM min(started_at))) / 60.0, 1) AS duration_minutes,
       CASE WHEN max(CASE WHEN status = 'resolved' THEN 1 ELSE 0 END) = 0 THEN 'open'
            ELSE coalesce(max(resolve_reason), 'resolved') END AS resolution,
       max(flaps) AS flaps,
       max(CASE WHEN suppressed THEN 1 ELSE 0 END) = 1 AS suppressed,
       id
FROM alerts
GROUP BY id, tenant, agent, rule, severity, labels
ORDER BY detected_at, tenant, agent, rule, labels, id";

/// The sections of the alerts report, in display order.
pub const SECTIONS: &[SectionSpec] = &[
    SectionSpec {
        name: "alerts_summary",
        title: "Incidents in the period",
        about: "Opened, resolved and still open incidents, mean and median time to resolve.",
        sql: ALERTS_SUMMARY,
        chart: None,
    },
    SectionSpec {
        name: "alerts_per_day",
        title: "Incidents opened per day, by severity",
        about: "Notified incidents per severity, and those suppressed by a maintenance window.",
        sql: ALERTS_PER_DAY,
        chart: Some(Chart {
            kind: ChartKind::Columns { stacked: true },
            x: "day",
            y: &["critical", "warning", "info", "suppressed"],
            series: None,
            y_max: None,
            unit: "incidents",
        }),
    },
    SectionSpec {
        name: "incidents_per_day",
        title: "Incidents opened and resolved per day",
        about: "Lifecycle per day, with the mean time to resolve of the incidents resolved that day.",
        sql: INCIDENTS_PER_DAY,
        chart: Some(Chart {
            kind: ChartKind::Columns { stacked: false },
            x: "day",
            y: &["opened", "resolved"],
            series: None,
            y_max: None,
            unit: "incidents",
        }),
    },
    SectionSpec {
        name: "noisiest_rules",
        title: "Noisiest rules",
        about: "The rules that opened the most incidents; many short incidents or flaps suggest tuning.",
        sql: NOISIEST_RULES,
        chart: Some(Chart {
            kind: ChartKind::Bars,
            x: "rule",
            y: &["opened"],
            series: None,
            y_max: None,
            unit: "incidents",
        }),
    },
    SectionSpec {
        name: "flapping_rules",
        title: "Most flapping rules",
        about: "Threshold rules whose incidents went back and forth across their clear value while open.",
        sql: FLAPPING_RULES,
        chart: None,
    },
    SectionSpec {
        name: "alert_counts",
        title: "Alert counts by day, tenant, rule and severity",
        about: "Fired (notified), suppressed and resolved alert events.",
        sql: ALERT_COUNTS,
        chart: None,
    },
    SectionSpec {
        name: "incident_list",
        title: "Incident list",
        about: "The incident record: detection time, duration and resolution of every incident.",
        sql: INCIDENT_LIST,
        chart: None,
    },
];
