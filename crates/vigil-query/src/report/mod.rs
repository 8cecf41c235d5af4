//! `vigil report`: the health, alerts, capacity, compliance and security
//! reports, as plain SQL over the `aggregates`, `alerts`, `status` and
//! `security_events` tables.
//!
//! ```text
//!  QuerySession ─scoped(--from, --to, --tenant)─▶ same table names, fewer rows
//!        │
//!        └─ ReportKind::sections(): [SectionSpec { name, title, sql, chart }] ─run()─▶ Report
//!                                                                               │
//!                 render_report(): table | csv | json (per section) | html (one self-contained file)
//! ```
//!
//! Each section's SQL is a `const` (in [`health`], [`alerts`],
//! [`capacity`], [`compliance`], [`security`]) so the docs can show
//! exactly what runs, and analysts can
//! paste it into DuckDB over the same files (the SQL sticks to what
//! DataFusion and DuckDB both accept). The scope of a report is not
//! spliced into that text: [`QuerySession::scoped`] puts the filters
//! (literal values, never SQL text) under the tables, so the SQL is the
//! same for a day, a tenant or the whole history.
//!
//! The HTML rendering ([`html`]) draws the charts a section asks for as
//! inline SVG, computed here; the file fetches nothing.

pub mod alerts;
pub mod capacity;
pub mod compliance;
pub mod health;
pub mod html;
pub mod security;
mod svg;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use datafusion::arrow::array::{RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::logical_expr::{col, lit, Expr};
use vigil_store::schema::TIMEZONE;
use vigil_store::Dataset;

use crate::alerts::{time_range, AlertFilter};
use crate::error::Result;
use crate::render::{render, Format};
use crate::session::QuerySession;
pub use compliance::ComplianceLimits;

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReportKind {
    /// Agents seen and offline, availability, resources in trouble,
    /// predicted disk fills. The default of `vigil report`.
    #[default]
    Health,
    /// Alert statistics, incident lifecycle, rules to tune, the incident
    /// list.
    Alerts,
    /// Disk and memory use per tenant over time, with the trend.
    Capacity,
    /// Patch compliance, antivirus and backup coverage per tenant, and the
    /// agents out of them (from status reports).
    Compliance,
    /// Failed logins, and remote sessions by technician with those
    /// outside business hours (from security events).
    Security,
}

impl ReportKind {
    /// Every report.
    pub const ALL: [ReportKind; 5] = [
        ReportKind::Health,
        ReportKind::Alerts,
        ReportKind::Capacity,
        ReportKind::Compliance,
        ReportKind::Security,
    ];

    /// Lower-case name (`health`, `alerts`, `capacity`, `compliance`,
    /// `security`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Health => "health",
            ReportKind::Alerts => "alerts",
            ReportKind::Capacity => "capacity",
            ReportKind::Compliance => "compliance",
            ReportKind::Security => "security",
        }
    }

    /// Human title.
    pub fn title(self) -> &'static str {
        match self {
            ReportKind::Health => "Fleet health report",
            ReportKind::Alerts => "Alerts report",
            ReportKind::Capacity => "Capacity report",
            ReportKind::Compliance => "Compliance report",
            ReportKind::Security => "Security report",
        }
    }

    /// The report's sections, in display order.
    pub fn sections(self) -> &'static [SectionSpec] {
        match self {
            ReportKind::Health => health::SECTIONS,
            ReportKind::Alerts => alerts::SECTIONS,
            ReportKind::Capacity => capacity::SECTIONS,
            ReportKind::Compliance => compliance::SECTIONS,
            ReportKind::Security => security::SECTIONS,
        }
    }
}

impl fmt::Display for ReportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A report name that is not `health`, `alerts`, `capacity`,
/// `compliance` or `security`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown report {0:?} (expected health, alerts, capacity, compliance or security)")]
pub struct UnknownReport(pub String);

impl FromStr for ReportKind {
    type Err = UnknownReport;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        ReportKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownReport(s.to_owned()))
    }
}

/// How a section's rows are drawn in the HTML report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    /// Horizontal bars, one per row: the label is `x`, the length the
    /// first `y` column. For rankings.
    Bars,
    /// Vertical columns per distinct `x` (a day): one per `y` column,
    /// stacked or side by side.
    Columns {
        /// Stack the `y` columns (their sum is meaningful) rather than
        /// placing them side by side.
        stacked: bool,
    },
    /// Lines over `x` (a time column): one line per distinct value of
    /// `series`, or per `y` column when there is no `series`.
    Lines,
}

/// What to chart of a section's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chart {
    /// How.
    pub kind: ChartKind,
    /// The category or time column.
    pub x: &'static str,
    /// The value columns (numeric).
    pub y: &'static [&'static str],
    /// [`ChartKind::Lines`]: the column whose values name the lines.
    pub series: Option<&'static str>,
    /// Fixed top of the value axis (100 for percentages); `None`: from
    /// the data.
    pub y_max: Option<f64>,
    /// What the values measure, shown on the value axis.
    pub unit: &'static str,
}

/// One section of a report: a named, titled SQL query and optionally a
/// chart of its result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SectionSpec {
    /// Stable machine name (`tenant_availability`, ...), also the HTML
    /// anchor and the `# name` line of CSV and JSON output.
    pub name: &'static str,
    /// Human title.
    pub title: &'static str,
    /// One sentence on what the section shows.
    pub about: &'static str,
    /// The SQL.
    pub sql: &'static str,
    /// The chart of the HTML report, if any.
    pub chart: Option<Chart>,
}

/// Which rows a report covers. Every bound is optional; `from_ms` is
/// inclusive and `to_ms` exclusive, on `window_start` for `aggregates`,
/// `event_time` for `alerts` (as `vigil export`, see [`AlertFilter`]) and
/// `security_events`, and `observed_at` for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Earliest time, inclusive (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Latest time, exclusive (ms since the epoch).
    pub to_ms: Option<i64>,
    /// Only this tenant.
    pub tenant: Option<String>,
}

impl Scope {
    /// True when the scope keeps every row.
    pub fn is_all(&self) -> bool {
        self == &Scope::default()
    }

    /// The filter of `dataset`'s rows (`None`: every row).
    pub fn expr(&self, dataset: Dataset) -> Option<Expr> {
        match dataset {
            Dataset::Alerts => AlertFilter {
                from_ms: self.from_ms,
                to_ms: self.to_ms,
                tenant: self.tenant.clone(),
                rule: None,
            }
            .expr(),
            Dataset::Aggregates | Dataset::Status | Dataset::SecurityEvents => {
                let mut parts =
                    time_range(dataset.partition_time_column(), self.from_ms, self.to_ms);
                if let Some(t) = &self.tenant {
                    parts.push(col("tenant").eq(lit(t.as_str())));
                }
                parts.into_iter().reduce(Expr::and)
            }
            // Rows of workers, not of tenants: only the time range.
            Dataset::Audit => time_range(dataset.partition_time_column(), self.from_ms, self.to_ms)
                .into_iter()
                .reduce(Expr::and),
        }
    }

    /// A one-line description (`tenant acme, from …, before …`, or `all
    /// data`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.tenant {
            parts.push(format!("tenant {t}"));
        }
        if let Some(f) = self.from_ms {
            parts.push(format!("from {}", rfc3339(f)));
        }
        if let Some(t) = self.to_ms {
            parts.push(format!("before {}", rfc3339(t)));
        }
        if parts.is_empty() {
            "all data".into()
        } else {
            parts.join(", ")
        }
    }
}

/// A UTC instant as RFC 3339, as the renderers print timestamps.
pub(crate) fn rfc3339(ms: i64) -> String {
    let a = TimestampMillisecondArray::from(vec![ms]).with_timezone(TIMEZONE);
    ArrayFormatter::try_new(&a, &FormatOptions::default())
        .map(|f| f.value(0).to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// The result of one section.
#[derive(Debug, Clone)]
pub struct Section {
    /// Which query produced it.
    pub spec: &'static SectionSpec,
    /// The SQL that ran: the spec's, with the report's limits in it
    /// ([`compliance::ComplianceLimits::apply`]).
    pub sql: Cow<'static, str>,
    /// The section's sentence, with the same limits.
    pub about: Cow<'static, str>,
    /// Its rows (at least one batch, possibly empty).
    pub batches: Vec<RecordBatch>,
}

impl Section {
    /// Rows in the result.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A computed report.
#[derive(Debug, Clone)]
pub struct Report {
    /// Which report.
    pub kind: ReportKind,
    /// The rows it covers.
    pub scope: Scope,
    /// When it was made, as the caller wants it shown (the library reads
    /// no clock); `None`: not shown.
    pub generated_at: Option<String>,
    /// The sections, in display order.
    pub sections: Vec<Section>,
    /// The limits a compliance report judged by (`None` for the other
    /// reports); shown in the report's heading.
    pub limits: Option<ComplianceLimits>,
}

impl Report {
    /// What the report covers, for its heading: the scope and, for a
    /// compliance report, the limits it judged by.
    pub fn describe(&self) -> String {
        let mut d = self.scope.describe();
        if let Some(l) = &self.limits {
            d.push_str(&format!("; {}", l.describe()));
        }
        d
    }
}

/// Runs every section of `kind` over the rows of `scope`, judging
/// compliance by the detectors' default limits.
pub async fn run(session: &QuerySession, kind: ReportKind, scope: &Scope) -> Result<Report> {
    run_with(session, kind, scope, &ComplianceLimits::default()).await
}

/// [`run`], judging compliance by `limits` (those of the rules the
/// workers run: [`ComplianceLimits::from_rules`]).
pub async fn run_with(
    session: &QuerySession,
    kind: ReportKind,
    scope: &Scope,
    limits: &ComplianceLimits,
) -> Result<Report> {
    let scoped;
    let session = if scope.is_all() {
        session
    } else {
        scoped = session.scoped(|d| scope.expr(d)).await?;
        &scoped
    };
    let specs = kind.sections();
    let mut sections = Vec::with_capacity(specs.len());
    for spec in specs {
        let (sql, about) = match kind {
            ReportKind::Compliance => (limits.apply(spec.sql), limits.apply(spec.about)),
            _ => (Cow::Borrowed(spec.sql), Cow::Borrowed(spec.about)),
        };
        let batches = session.sql(&sql).await?;
        sections.push(Section {
            spec,
            sql,
            about,
            batches,
        });
    }
    Ok(Report {
        kind,
        scope: scope.clone(),
        generated_at: None,
        sections,
        limits: (kind == ReportKind::Compliance).then_some(*limits),
    })
}

/// Renders a report. [`Format::Table`]: a title line, then each section
/// as a `## title` line and a table (`(no rows)` under an empty one).
/// CSV and JSON Lines: each section preceded by a `# name` line (a
/// comment line that tools can split on). [`Format::Html`]: one
/// self-contained document ([`html::document`]).
pub fn render_report(report: &Report, format: Format) -> Result<String> {
    if format == Format::Html {
        return html::document(report);
    }
    let mut out = String::new();
    if format == Format::Table {
        out.push_str(&format!(
            "# {} ({})\n\n",
            report.kind.title(),
            report.describe()
        ));
    }
    for (i, s) in report.sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match format {
            Format::Table => {
                out.push_str("## ");
                out.push_str(s.spec.title);
            }
            Format::Csv | Format::Json | Format::Html => {
                out.push_str("# ");
                out.push_str(s.spec.name);
            }
        }
        out.push('\n');
        out.push_str(&render(&s.batches, format)?);
        if format == Format::Table && s.rows() == 0 {
            out.push_str("(no rows)\n");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod posture_tests;
#[cfg(test)]
mod tests;
