//! The `vigil report` / demo summary, as plain SQL over the `aggregates`
//! and `alerts` tables. Each section is a `const` so the README and docs
//! can show exactly what runs, and analysts can paste it into DuckDB
//! (the SQL sticks to what DataFusion and DuckDB both accept).

use datafusion::arrow::array::RecordBatch;

use crate::error::Result;
use crate::render::{render, Format};
use crate::session::QuerySession;

/// Alerts fired by rule and severity: incidents that started (`firing`
/// events), notified ones and those suppressed by a maintenance window
/// counted separately. Most frequent first.
pub const ALERTS_BY_RULE: &str = "\
SELECT rule,
       severity,
       sum(CASE WHEN suppressed THEN 0 ELSE 1 END) AS fired,
       sum(CASE WHEN suppressed THEN 1 ELSE 0 END) AS suppressed
FROM alerts
WHERE status = 'firing'
GROUP BY rule, severity
ORDER BY fired DESC, suppressed DESC, rule, severity";

/// Disks predicted to fill: trend-alert incidents, with the predicted
/// time, how many hours ahead of the alert it was, and when the incident
/// resolved (null while still open). Soonest first.
pub const PREDICTED_DISK_FILLS: &str = "\
SELECT f.tenant,
       f.agent,
       f.hostname,
       f.labels,
       f.predicted_at,
       round((extract(epoch FROM f.predicted_at) - extract(epoch FROM f.event_time)) / 3600.0, 1) AS hours_ahead,
       r.resolved_at
FROM alerts f
LEFT JOIN (SELECT id, max(resolved_at) AS resolved_at
           FROM alerts
           WHERE status = 'resolved'
           GROUP BY id) r ON r.id = f.id
WHERE f.kind = 'trend' AND f.status = 'firing'
ORDER BY f.predicted_at, f.tenant, f.agent, f.labels";

/// Fleet health in one row: agents, series and windows seen; average and
/// 95th percentile (exact, `percentile_cont`) of the per-window mean of
/// `cpu_pct`; agents whose `mem_pct` window max went above 90; offline
/// incidents.
pub const FLEET_HEALTH: &str = "\
WITH agents AS (SELECT DISTINCT tenant, agent FROM aggregates),
     series AS (SELECT DISTINCT tenant, agent, metric, labels FROM aggregates),
     cpu AS (SELECT mean FROM aggregates WHERE metric = 'cpu_pct'),
     mem_hot AS (SELECT DISTINCT tenant, agent FROM aggregates WHERE metric = 'mem_pct' AND \"max\" > 90),
     offline AS (SELECT DISTINCT id FROM alerts WHERE kind = 'offline' AND status = 'firing')
SELECT (SELECT count(*) FROM agents) AS agents,
       (SELECT count(*) FROM series) AS series,
       (SELECT count(*) FROM aggregates) AS windows,
       (SELECT round(avg(mean), 2) FROM cpu) AS cpu_pct_avg,
       (SELECT round(percentile_cont(0.95) WITHIN GROUP (ORDER BY mean), 2) FROM cpu) AS cpu_pct_p95,
       (SELECT count(*) FROM mem_hot) AS agents_mem_pct_over_90,
       (SELECT count(*) FROM offline) AS offline_incidents";

/// One section of the report: a named, titled SQL query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportQuery {
    /// Stable machine name (`alerts_by_rule`, ...).
    pub name: &'static str,
    /// Human title.
    pub title: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// The report's sections, in display order.
pub const SECTIONS: [ReportQuery; 3] = [
    ReportQuery {
        name: "fleet_health",
        title: "Fleet health",
        sql: FLEET_HEALTH,
    },
    ReportQuery {
        name: "alerts_by_rule",
        title: "Alerts fired by rule and severity",
        sql: ALERTS_BY_RULE,
    },
    ReportQuery {
        name: "predicted_disk_fills",
        title: "Disks predicted to fill",
        sql: PREDICTED_DISK_FILLS,
    },
];

/// The result of one section.
#[derive(Debug, Clone)]
pub struct ReportSection {
    /// Which query produced it.
    pub query: ReportQuery,
    /// Its rows (at least one batch, possibly empty).
    pub batches: Vec<RecordBatch>,
}

/// Runs every section of [`SECTIONS`] in order.
pub async fn run(session: &QuerySession) -> Result<Vec<ReportSection>> {
    let mut out = Vec::with_capacity(SECTIONS.len());
    for query in SECTIONS {
        let batches = session.sql(query.sql).await?;
        out.push(ReportSection { query, batches });
    }
    Ok(out)
}

/// Renders a report: for [`Format::Table`] each section as a `## title`
/// line and a table; for CSV and JSON Lines each section preceded by a
/// `# name` line (a comment line that tools can split on).
pub fn render_report(sections: &[ReportSection], format: Format) -> Result<String> {
    let mut out = String::new();
    for (i, s) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match format {
            Format::Table => {
                out.push_str("## ");
                out.push_str(s.query.title);
            }
            Format::Csv | Format::Json => {
                out.push_str("# ");
                out.push_str(s.query.name);
            }
        }
        out.push('\n');
        out.push_str(&render(&s.batches, format)?);
    }
    Ok(out)
}
