//! The `capacity` report: disk and memory use per tenant over the period,
//! hour by hour, with the trend (the average least-squares slope of the
//! tenant's series, in percentage points per day), and the disks growing
//! fastest.

use super::{Chart, ChartKind, SectionSpec};

/// Disk use per tenant and UTC hour: the average of the window means of
/// every `disk_used_pct` series of the tenant, the highest window max,
/// and how many disks reported.
pub const DISK_USE: &str = "\
SELECT date_trunc('hour', window_start) AS hour,
       tenant,
       round(avg(mean), 2) AS avg_used_pct,
       round(max(\"max\"), 2) AS max_used_pct,
       count(DISTINCT agent || ' ' || labels) AS disks
FROM aggregates
WHERE metric = 'disk_used_pct'
GROUP BY date_trunc('hour', window_start), tenant
ORDER BY hour, tenant";

/// Memory use per tenant and UTC hour: the average of the window means of
/// `mem_pct`, the highest window max, and how many agents reported.
pub const MEMORY_USE: &str = "\
SELECT date_trunc('hour', window_start) AS hour,
       tenant,
       round(avg(mean), 2) AS avg_used_pct,
       round(max(\"max\"), 2) AS max_used_pct,
       count(DISTINCT agent) AS agents
FROM aggregates
WHERE metric = 'mem_pct'
GROUP BY date_trunc('hour', window_start), tenant
ORDER BY hour, tenant";

/// The trend per tenant and resource (disk, memory), over the tenant's
/// series (each disk of each agent, each agent's memory) with at least two
/// windows: how many, the average of their first and last window means,
/// the average change between them, and the average least-squares slope
/// of their window means in percentage points per day (`rising` above
/// +0.5, `falling` below -0.5, else `flat`). Per series, then averaged, so
/// agents that join or leave during the period do not make a trend.
pub const CAPACITY_TREND: &str = "\
WITH per_series AS (
       SELECT tenant, metric, agent, labels,
              regr_slope(mean, extract(epoch FROM window_start) / 86400.0) AS slope,
              min(window_start) AS first_window,
              max(window_start) AS last_window
       FROM aggregates
       WHERE metric IN ('disk_used_pct', 'mem_pct')
       GROUP BY tenant, metric, agent, labels
       HAVING count(*) >= 2),
     ends AS (
       SELECT a.tenant, a.metric, a.agent, a.labels,
              max(CASE WHEN a.window_start = s.first_window THEN a.mean END) AS first_pct,
              max(CASE WHEN a.window_start = s.last_window THEN a.mean END) AS last_pct
       FROM aggregates a
       JOIN per_series s ON s.tenant = a.tenant AND s.metric = a.metric
                        AND s.agent = a.agent AND s.labels = a.labels
       GROUP BY a.tenant, a.metric, a.agent, a.labels),
     trend AS (
       SELECT s.tenant, s.metric,
              count(*) AS series,
              avg(e.first_pct) AS first_pct,
              avg(e.last_pct) AS last_pct,
              avg(s.slope) AS slope
       FROM per_series s
       JOIN ends e ON e.tenant = s.tenant AND e.metric = s.metric
                  AND e.agent = s.agent AND e.labels = s.labels
       GROUP BY s.tenant, s.metric)
SELECT tenant,
       metric,
       series,
       round(first_pct, 2) AS first_pct,
       round(last_pct, 2) AS last_pct,
       round(last_pct - first_pct, 2) AS change_pct,
       round(slope, 3) AS slope_pct_per_day,
       CASE WHEN slope > 0.5 THEN 'rising' WHEN slope < -0.5 THEN 'falling' ELSE 'flat' END AS trend
FROM trend
ORDER BY metric, slope DESC, tenant";

/// The ten disks growing fastest: per `disk_used_pct` series with at
/// least two windows, the least-squares slope of its window means in
/// percentage points per day, its first and last window mean, and the
/// days left until 100 % at that slope (null unless growing).
pub const FASTEST_GROWING_DISKS: &str = "\
WITH per_disk AS (
       SELECT tenant, agent, labels,
              count(*) AS windows,
              regr_slope(mean, extract(epoch FROM window_start) / 86400.0) AS slope,
              min(window_start) AS first_window,
              max(window_start) AS last_window
       FROM aggregates
       WHERE metric = 'disk_used_pct'
       GROUP BY tenant, agent, labels
       HAVING count(*) >= 2),
     ends AS (
       SELECT a.tenant, a.agent, a.labels,
              max(CASE WHEN a.window_start = d.first_window THEN a.mean END) AS first_pct,
              max(CASE WHEN a.window_start = d.last_window THEN a.mean END) AS last_pct
       FROM aggregates a
       JOIN per_disk d ON d.tenant = a.tenant AND d.agent = a.agent AND d.labels = a.labels
       WHERE a.metric = 'disk_used_pct'
       GROUP BY a.tenant, a.agent, a.labels)
SELECT d.tenant,
       d.agent,
       d.labels,
       d.agent || ' ' || d.labels AS disk,
       round(e.first_pct, 2) AS first_pct,
       round(e.last_pct, 2) AS last_pct,
       round(d.slope, 2) AS slope_pct_per_day,
       CASE WHEN d.slope > 0 THEN round(greatest(0.0, 100.0 - e.last_pct) / d.slope, 1) END AS days_to_full
FROM per_disk d
JOIN ends e ON e.tenant = d.tenant AND e.agent = d.agent AND e.labels = d.labels
WHERE d.slope > 0
ORDER BY d.slope DESC, d.tenant, d.agent, d.labels
LIMIT 10";

/// The sections of the capacity report, in display order.
pub const SECTIONS: &[SectionSpec] = &[
    SectionSpec {
        name: "capacity_trend",
        title: "Capacity trend per tenant",
        about: "Disk and memory use at the start and end of the period, and the average slope of the tenant's series in points per day.",
        sql: CAPACITY_TREND,
        chart: None,
    },
    SectionSpec {
        name: "disk_use",
        title: "Disk use per tenant",
        about: "Hourly average of every disk's use, per tenant.",
        sql: DISK_USE,
        chart: Some(Chart {
            kind: ChartKind::Lines,
            x: "hour",
            y: &["avg_used_pct"],
            series: Some("tenant"),
            y_max: Some(100.0),
            unit: "disk used %",
        }),
    },
    SectionSpec {
        name: "memory_use",
        title: "Memory use per tenant",
        about: "Hourly average of every agent's memory use, per tenant.",
        sql: MEMORY_USE,
        chart: Some(Chart {
            kind: ChartKind::Lines,
            x: "hour",
            y: &["avg_used_pct"],
            series: Some("tenant"),
            y_max: Some(100.0),
            unit: "memory used %",
        }),
    },
    SectionSpec {
        name: "fastest_growing_disks",
        title: "Fastest-growing disks",
        about: "Disks whose use grew fastest over the period, and the days left at that rate.",
        sql: FASTEST_GROWING_DISKS,
        chart: Some(Chart {
            kind: ChartKind::Bars,
            x: "disk",
            y: &["slope_pct_per_day"],
            series: None,
            y_max: None,
            unit: "points per day",
        }),
    },
];
