//! The `health` report: who was seen, who is offline now, per-tenant
//! availability, the resources in trouble and the disks predicted to fill.
//!
//! "The period" is the span of the telemetry in scope: from the first
//! `window_start` to the last `window_end` of `aggregates` (after the
//! `--from`/`--to`/`--tenant` scope), so a report over history describes
//! that history, not the wall clock of the day it runs.

use super::{Chart, ChartKind, SectionSpec};

/// One row: the period, tenants and agents seen, agents offline at the
/// end of the period, offline incidents, and the fleet's CPU (average and
/// exact 95th percentile of the per-window mean of `cpu_pct`) and memory
/// (agents whose `mem_pct` window max went above 90).
pub const FLEET_SUMMARY: &str = "\
WITH open_offline AS (
       SELECT DISTINCT f.tenant, f.agent
       FROM alerts f
       LEFT JOIN (SELECT DISTINCT id FROM alerts WHERE status = 'resolved') r ON r.id = f.id
       WHERE f.kind = 'offline' AND f.status = 'firing' AND r.id IS NULL),
     cpu AS (SELECT mean FROM aggregates WHERE metric = 'cpu_pct')
SELECT (SELECT min(window_start) FROM aggregates) AS period_start,
       (SELECT max(window_end) FROM aggregates) AS period_end,
       (SELECT count(DISTINCT tenant) FROM aggregates) AS tenants,
       (SELECT count(*) FROM (SELECT DISTINCT tenant, agent FROM aggregates) a) AS agents_seen,
       (SELECT count(*) FROM open_offline) AS agents_offline_now,
       (SELECT count(DISTINCT id) FROM alerts WHERE kind = 'offline') AS offline_incidents,
       (SELECT round(avg(mean), 2) FROM cpu) AS cpu_pct_avg,
       (SELECT round(percentile_cont(0.95) WITHIN GROUP (ORDER BY mean), 2) FROM cpu) AS cpu_pct_p95,
       (SELECT count(*) FROM (SELECT DISTINCT tenant, agent FROM aggregates
                              WHERE metric = 'mem_pct' AND \"max\" > 90) m) AS agents_mem_pct_over_90";

/// Agents offline at the end of the period: an `agent_offline` incident
/// fired and no `resolved` event followed. `offline_since` is the
/// incident start (the agent's last batch plus the rule's `after`),
/// `last_seen` the end of its last telemetry point in scope, and
/// `hours_offline` runs from `offline_since` to the end of the period.
pub const AGENTS_OFFLINE: &str = "\
WITH period AS (SELECT max(window_end) AS period_end FROM aggregates),
     last_seen AS (SELECT tenant, agent, max(last_ts) AS last_seen
                   FROM aggregates GROUP BY tenant, agent),
     open_offline AS (
       SELECT f.tenant, f.agent, max(f.hostname) AS hostname, min(f.started_at) AS offline_since
       FROM alerts f
       LEFT JOIN (SELECT DISTINCT id FROM alerts WHERE status = 'resolved') r ON r.id = f.id
       WHERE f.kind = 'offline' AND f.status = 'firing' AND r.id IS NULL
       GROUP BY f.tenant, f.agent)
SELECT o.tenant,
       o.agent,
       o.hostname,
       o.offline_since,
       s.last_seen,
       round(greatest(0.0, extract(epoch FROM p.period_end) - extract(epoch FROM o.offline_since)) / 3600.0, 1) AS hours_offline
FROM open_offline o
CROSS JOIN period p
LEFT JOIN last_seen s ON s.tenant = o.tenant AND s.agent = o.agent
ORDER BY o.offline_since, o.tenant, o.agent";

/// Availability per tenant: the share of agent time in the period not
/// covered by `agent_offline` incidents (each clipped to the period; an
/// open one runs to its end). Agents are those that sent telemetry or had
/// an offline incident in scope. Least available first.
pub const TENANT_AVAILABILITY: &str = "\
WITH period AS (SELECT min(window_start) AS t0, max(window_end) AS t1 FROM aggregates),
     agents AS (
       SELECT tenant, count(*) AS agents
       FROM (SELECT tenant, agent FROM aggregates
             UNION
             SELECT tenant, agent FROM alerts WHERE kind = 'offline') a
       GROUP BY tenant),
     incidents AS (
       SELECT tenant, id, min(started_at) AS started_at, max(resolved_at) AS resolved_at
       FROM alerts WHERE kind = 'offline'
       GROUP BY tenant, id),
     offline AS (
       SELECT i.tenant,
              count(*) AS incidents,
              sum(greatest(0.0, extract(epoch FROM least(coalesce(i.resolved_at, p.t1), p.t1))
                                - extract(epoch FROM greatest(i.started_at, p.t0)))) AS offline_s
       FROM incidents i CROSS JOIN period p
       GROUP BY i.tenant)
SELECT a.tenant,
       a.agents,
       coalesce(o.incidents, 0) AS offline_incidents,
       round(coalesce(o.offline_s, 0.0) / 3600.0, 2) AS offline_hours,
       round(100.0 * (1.0 - coalesce(o.offline_s, 0.0)
                            / (a.agents * (extract(epoch FROM p.t1) - extract(epoch FROM p.t0)))), 3) AS availability_pct
FROM agents a
CROSS JOIN period p
LEFT JOIN offline o ON o.tenant = a.tenant
ORDER BY availability_pct, a.tenant";

/// The five busiest resources of each kind (CPU, memory, disk): per
/// series, the exact 95th percentile of the window means and the highest
/// window max over the period, ranked by the percentile; `resource`
/// (`cpu a1`, `disk a1 mount=/`) labels the chart.
pub const RESOURCES_IN_TROUBLE: &str = "\
WITH per_series AS (
       SELECT metric, tenant, agent, labels,
              count(*) AS windows,
              percentile_cont(0.95) WITHIN GROUP (ORDER BY mean) AS p95,
              max(\"max\") AS peak
       FROM aggregates
       WHERE metric IN ('cpu_pct', 'mem_pct', 'disk_used_pct')
       GROUP BY metric, tenant, agent, labels),
     ranked AS (
       SELECT *, row_number() OVER (PARTITION BY metric ORDER BY p95 DESC, tenant, agent, labels) AS rank
       FROM per_series)
SELECT metric,
       rank,
       tenant,
       agent,
       labels,
       CASE metric WHEN 'cpu_pct' THEN 'cpu' WHEN 'mem_pct' THEN 'mem' ELSE 'disk' END
         || ' ' || agent || CASE WHEN labels = '' THEN '' ELSE ' ' || labels END AS resource,
       round(p95, 1) AS p95_pct,
       round(peak, 1) AS peak_pct,
       windows
FROM ranked
WHERE rank <= 5
ORDER BY metric, rank";

/// Disks predicted to fill: the open predictions, one row per disk (its
/// latest trend incident, listed only while that incident is open), with
/// when it was alerted, the predicted time, how many hours ahead of the
/// alert it was, and how many trend incidents the disk had in scope.
/// Soonest first. A disk whose latest prediction was withdrawn or came
/// true is not listed; nor are its older incidents.
pub const PREDICTED_DISK_FILLS: &str = "\
WITH fills AS (
       SELECT f.id, f.tenant, f.agent, f.hostname, f.metric, f.labels, f.event_time, f.predicted_at,
              r.id IS NULL AS is_open
       FROM alerts f
       LEFT JOIN (SELECT DISTINCT id FROM alerts WHERE status = 'resolved') r ON r.id = f.id
       WHERE f.kind = 'trend' AND f.status = 'firing'),
     ranked AS (
       SELECT *,
              row_number() OVER (PARTITION BY tenant, agent, metric, labels
                                 ORDER BY event_time DESC, id DESC) AS newest,
              count(*) OVER (PARTITION BY tenant, agent, metric, labels) AS incidents
       FROM fills)
SELECT tenant,
       agent,
       hostname,
       labels,
       event_time AS alerted_at,
       predicted_at,
       round((extract(epoch FROM predicted_at) - extract(epoch FROM event_time)) / 3600.0, 1) AS hours_ahead,
       incidents
FROM ranked
WHERE newest = 1 AND is_open
ORDER BY predicted_at, tenant, agent, labels";

/// The sections of the health report, in display order.
pub const SECTIONS: &[SectionSpec] = &[
    SectionSpec {
        name: "fleet_summary",
        title: "Fleet summary",
        about: "The period covered, agents seen and offline now, and the fleet's CPU and memory.",
        sql: FLEET_SUMMARY,
        chart: None,
    },
    SectionSpec {
        name: "agents_offline",
        title: "Agents offline now",
        about: "Agents with an open agent_offline incident at the end of the period, and when they were last seen.",
        sql: AGENTS_OFFLINE,
        chart: None,
    },
    SectionSpec {
        name: "tenant_availability",
        title: "Availability per tenant",
        about: "Share of agent time not covered by offline incidents, least available first.",
        sql: TENANT_AVAILABILITY,
        chart: Some(Chart {
            kind: ChartKind::Bars,
            x: "tenant",
            y: &["availability_pct"],
            series: None,
            y_max: Some(100.0),
            unit: "availability %",
        }),
    },
    SectionSpec {
        name: "resources_in_trouble",
        title: "Resources in trouble",
        about: "The five series of each kind with the highest 95th percentile of their window means.",
        sql: RESOURCES_IN_TROUBLE,
        chart: Some(Chart {
            kind: ChartKind::Bars,
            x: "resource",
            y: &["p95_pct"],
            series: None,
            y_max: Some(100.0),
            unit: "95th percentile %",
        }),
    },
    SectionSpec {
        name: "predicted_disk_fills",
        title: "Disks predicted to fill",
        about: "Open predictions, one per disk (its latest trend incident): when it is predicted to be full.",
        sql: PREDICTED_DISK_FILLS,
        chart: None,
    },
];
