//! The HTML report: one self-contained document (inline CSS, inline SVG
//! charts, a few lines of inline script) that a browser opens from disk
//! and prints; it references no URL and fetches nothing.
//!
//! Every piece of text that comes from data (cells, tenant names, labels,
//! the scope) is HTML-escaped ([`escape`]), in element content and in
//! attribute values alike. Each section shows its title, a sentence on
//! what it shows, its chart (when it asks for one and has data), its rows
//! (a clear "No data" when there are none), and its SQL, folded.
//!
//! The inline script does one thing: after the page is laid out it checks
//! that every chart drew its marks (each has a non-empty bounding box) and
//! records the count on `<body>` as `data-charts` and
//! `data-charts-rendered`, which the headless-browser test reads from the
//! DOM. It writes nothing to the console.

use std::fmt::Write as _;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::{svg, Report, Section};
use crate::error::{QueryError, Result};
use crate::render::Format;

/// `s` with `&`, `<`, `>`, `"` and `'` replaced by character references:
/// safe as element content and as a quoted attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric()
}

/// Text of every cell, column by column (nulls empty), formatted as the
/// other renderers format them (timestamps RFC 3339 in UTC).
fn cells(batches: &[RecordBatch]) -> std::result::Result<Vec<Vec<String>>, ArrowError> {
    let options = FormatOptions::default().with_null("");
    let mut rows = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for i in 0..b.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    Ok(rows)
}

/// The rows of `batches` (all with one schema) as an HTML `<table>` with
/// a header row; numeric columns are right-aligned (`class="num"`), every
/// cell is escaped. Zero batches give an empty string.
pub fn table(batches: &[RecordBatch]) -> std::result::Result<String, ArrowError> {
    let Some(first) = batches.first() else {
        return Ok(String::new());
    };
    let schema = first.schema();
    let numeric: Vec<bool> = schema
        .fields()
        .iter()
        .map(|f| is_numeric(f.data_type()))
        .collect();
    let mut out = String::from("<table>\n<thead><tr>");
    for (f, num) in schema.fields().iter().zip(&numeric) {
        let class = if *num { " class=\"num\"" } else { "" };
        let _ = write!(out, "<th{class}>{}</th>", escape(f.name()));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in cells(batches)? {
        out.push_str("<tr>");
        for (cell, num) in row.iter().zip(&numeric) {
            let class = if *num { " class=\"num\"" } else { "" };
            let _ = write!(out, "<td{class}>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    Ok(out)
}

/// One row shown as a two-column table of column name and value, easier
/// to read than a very wide row.
fn key_values(batches: &[RecordBatch]) -> std::result::Result<String, ArrowError> {
    let Some(first) = batches.first() else {
        return Ok(String::new());
    };
    let schema = first.schema();
    let rows = cells(batches)?;
    let mut out = String::from("<table class=\"kv\">\n<tbody>\n");
    if let Some(row) = rows.first() {
        for (f, v) in schema.fields().iter().zip(row) {
            let class = if is_numeric(f.data_type()) {
                " class=\"num\""
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "<tr><th>{}</th><td{class}>{}</td></tr>",
                escape(f.name()),
                escape(v)
            );
        }
    }
    out.push_str("</tbody>\n</table>\n");
    Ok(out)
}

const STYLE: &str = "\
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif;
       margin: 2rem auto; max-width: 62rem; padding: 0 1rem; color: #1b1f24; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; margin: 0 0 0.3rem; border-bottom: 2px solid #d0d7de; padding-bottom: 0.2rem; }
.meta { color: #57606a; margin-top: 0; }
nav ol { columns: 2; padding-left: 1.2rem; }
nav a { color: #0b5cad; }
section { margin: 2rem 0; }
.about { color: #57606a; margin: 0.2rem 0 0.8rem; }
figure { margin: 0 0 0.8rem; }
svg.chart { max-width: 100%; height: auto; font-size: 11px; }
svg.chart text { fill: #1b1f24; }
svg.chart .axis { stroke: #8c959f; stroke-width: 1; }
svg.chart .grid { stroke: #d0d7de; stroke-width: 1; stroke-dasharray: 2 3; }
.scroll { max-height: 30rem; overflow: auto; border: 1px solid #d0d7de; }
table { border-collapse: collapse; font-size: 0.85rem; width: 100%; }
th, td { padding: 0.2rem 0.5rem; border-bottom: 1px solid #eaeef2; text-align: left; vertical-align: top; }
thead th { position: sticky; top: 0; background: #f6f8fa; border-bottom: 1px solid #d0d7de; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv { width: auto; }
table.kv th { background: #f6f8fa; font-weight: 600; }
.no-data { color: #57606a; font-style: italic; padding: 0.6rem; background: #f6f8fa; border: 1px dashed #d0d7de; }
details.sql summary { cursor: pointer; color: #57606a; font-size: 0.85rem; margin-top: 0.4rem; }
details.sql pre { background: #f6f8fa; padding: 0.6rem; overflow: auto; font-size: 0.8rem; }
footer { color: #57606a; font-size: 0.8rem; border-top: 1px solid #d0d7de; margin-top: 2rem; padding-top: 0.5rem; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; }
  nav, details.sql { display: none; }
  section { break-inside: avoid-page; }
  .scroll { max-height: none; overflow: visible; border: none; }
  thead th { position: static; }
  a { color: inherit; text-decoration: none; }
}
";

/// Checks that every chart drew its marks and records the result on
/// `<body>`; silent (no console output) and free of network access.
const SCRIPT: &str = "\
(function () {
  var charts = document.querySelectorAll('svg.chart');
  var rendered = 0;
  for (var i = 0; i < charts.length; i++) {
    var marks = charts[i].querySelectorAll('.mark');
    var drawn = 0;
    for (var j = 0; j < marks.length; j++) {
      var box = marks[j].getBBox();
      if (box.width > 0 || box.height > 0) { drawn++; }
    }
    if (marks.length > 0 && drawn === marks.length) {
      rendered++;
      charts[i].setAttribute('data-rendered', 'yes');
    }
  }
  document.body.setAttribute('data-charts', String(charts.length));
  document.body.setAttribute('data-charts-rendered', String(rendered));
})();
";

/// Tables with more rows than this scroll on screen (and print in full).
const SCROLL_ROWS: usize = 25;

fn section_html(out: &mut String, s: &Section) -> Result<()> {
    let err = |source| QueryError::Render {
        format: Format::Html,
        source,
    };
    let spec = s.spec;
    let _ = writeln!(
        out,
        "<section id=\"{}\">\n<h2>{}</h2>\n<p class=\"about\">{}</p>",
        escape(spec.name),
        escape(spec.title),
        escape(&s.about)
    );
    let rows = s.rows();
    if rows == 0 {
        out.push_str("<p class=\"no-data\">No data for this section in the report's scope.</p>\n");
    } else {
        if let Some(chart) = &spec.chart {
            if let Some(svg) = svg::chart(chart, spec.title, &s.batches).map_err(err)? {
                let _ = writeln!(out, "<figure>\n{svg}</figure>");
            }
        }
        let columns = s.batches[0].num_columns();
        let body = if rows == 1 && columns > 3 {
            key_values(&s.batches).map_err(err)?
        } else {
            table(&s.batches).map_err(err)?
        };
        if rows > SCROLL_ROWS {
            let _ = write!(out, "<div class=\"scroll\">\n{body}</div>\n");
        } else {
            out.push_str(&body);
        }
    }
    let _ = writeln!(
        out,
        "<details class=\"sql\"><summary>SQL</summary><pre><code>{}</code></pre></details>\n</section>",
        escape(&s.sql)
    );
    Ok(())
}

/// The whole report as one self-contained HTML document.
pub fn document(report: &Report) -> Result<String> {
    let title = report.kind.title();
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Vigil: {}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<header>\n<h1>{}</h1>\n",
        escape(title),
        escape(title)
    );
    let mut meta = format!("Scope: {}", escape(&report.describe()));
    if let Some(g) = &report.generated_at {
        let _ = write!(meta, " · generated {}", escape(g));
    }
    meta.push_str(" · times in UTC");
    let _ = writeln!(out, "<p class=\"meta\">{meta}</p>\n<nav><ol>");
    for s in &report.sections {
        let _ = writeln!(
            out,
            "<li><a href=\"#{}\">{}</a></li>",
            escape(s.spec.name),
            escape(s.spec.title)
        );
    }
    out.push_str("</ol></nav>\n</header>\n<main>\n");
    for s in &report.sections {
        section_html(&mut out, s)?;
    }
    let _ = write!(
        out,
        "</main>\n<footer>Made by Vigil with DataFusion SQL over the Parquet datasets \
         <code>aggregates</code> and <code>alerts</code>; each section's SQL runs unchanged \
         in DuckDB over the same files.</footer>\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n"
    );
    Ok(out)
}
