//! The reports' SQL against a small hand-built dataset whose answers are
//! worked out in the comments, the scope, and the HTML rendering.
//!
//! The fleet: tenant `acme` with agents `a1`, `a2`, tenant `beta` with
//! `b1`; hour-long windows `k = 0..10` from 2026-11-03T00:00Z, so the
//! period is [00:00, 10:00). `a2` is silent from 08:00 (windows 8, 9
//! missing), `b1` from 05:00 to 07:00 (windows 5, 6 missing).
//!
//! | series        | a1           | a2  | b1                 |
//! |---------------|--------------|-----|--------------------|
//! | cpu_pct       | 10           | 50  | 90                 |
//! | mem_pct       | 40           | 60  | 95                 |
//! | disk_used_pct | 10 + k       | 50  | 80 + 2k            |
//!
//! Incidents (`t` = hours after midnight):
//!
//! | incident | rule / kind            | agent | started | resolved | notes                    |
//! |----------|------------------------|-------|---------|----------|--------------------------|
//! | off-a1   | agent_offline, offline | a1    | -1      | 0.5      | firing on 2026-11-02     |
//! | x1       | cpu_high, threshold    | b1    | 1       | 1 h 05   | 2 flaps                  |
//! | x2       | cpu_high               | b1    | 2       | 3        | 0 flaps                  |
//! | x3       | cpu_high               | b1    | 3.5     | 4        | suppressed, 1 flap       |
//! | off-b1   | agent_offline          | b1    | 5       | 7        |                          |
//! | fill     | disk_fill, trend       | b1    | 7.5     | open     | predicted at 20:00       |
//! | off-a2   | agent_offline          | a2    | 8       | open     |                          |

use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use serde_json::{json, Value};
use vigil_ops::model::ResolveReason;
use vigil_ops::{
    Agg, AlertEvent, AlertStatus, DetectorKind, SeriesMeta, Severity, WindowAggregate,
};
use vigil_store::{AggregatesWriter, AlertsWriter, WriterConfig};

use super::*;
use crate::tests::{alert, range, HOUR, MIDNIGHT};
use crate::{block_on, QuerySession};

const MIN: i64 = 60_000;

fn agents() -> [(&'static str, &'static str); 3] {
    [("acme", "a1"), ("acme", "a2"), ("beta", "b1")]
}

fn present(agent: &str, k: i64) -> bool {
    match agent {
        "a2" => k < 8,
        "b1" => !(5..7).contains(&k),
        _ => true,
    }
}

fn value(agent: &str, metric: &str, k: i64) -> f64 {
    match (agent, metric) {
        ("a1", "cpu_pct") => 10.0,
        ("a2", "cpu_pct") => 50.0,
        ("b1", "cpu_pct") => 90.0,
        ("a1", "mem_pct") => 40.0,
        ("a2", "mem_pct") => 60.0,
        ("b1", "mem_pct") => 95.0,
        ("a1", _) => 10.0 + k as f64,
        ("a2", _) => 50.0,
        _ => 80.0 + 2.0 * k as f64,
    }
}

fn write_fleet(root: &Path, tenant_of: impl Fn(&str) -> String) {
    let mut w = AggregatesWriter::new(root, WriterConfig::default()).unwrap();
    for (_, agent) in agents() {
        for k in 0..10 {
            if !present(agent, k) {
                continue;
            }
            let start = MIDNIGHT + k * HOUR;
            for (metric, labels) in [
                ("cpu_pct", ""),
                ("mem_pct", ""),
                ("disk_used_pct", "mount=/"),
            ] {
                w.push(&WindowAggregate {
                    series: SeriesMeta::new(&tenant_of(agent), agent, metric, labels),
                    start_ms: start,
                    end_ms: start + HOUR,
                    // One point, 59 minutes into the window: last_ts.
                    agg: Agg::new(start + 59 * MIN, value(agent, metric, k)),
                });
            }
        }
    }
    w.flush(range(0)).unwrap();

    let mut events = Vec::new();
    let mut incident = |id: &str,
                        agent: &str,
                        rule: &str,
                        kind: DetectorKind,
                        started: i64,
                        resolved: Option<i64>,
                        suppressed: bool,
                        flaps: Option<u32>| {
        let mut a = alert(agent, rule, kind, AlertStatus::Firing, suppressed, started);
        a.id = id.into();
        a.tenant = tenant_of(agent);
        a.severity = match kind {
            DetectorKind::Trend => Severity::Warning,
            _ => Severity::Critical,
        };
        a.labels = if kind == DetectorKind::Trend {
            "mount=/".into()
        } else {
            String::new()
        };
        a.predicted_at_ms = (kind == DetectorKind::Trend).then_some(MIDNIGHT + 20 * HOUR);
        events.push(a.clone());
        if let Some(r) = resolved {
            let mut e: AlertEvent = a;
            e.status = AlertStatus::Resolved;
            e.resolved_at_ms = Some(r);
            e.event_time_ms = r;
            e.resolve_reason = Some(ResolveReason::Cleared);
            e.flaps = flaps;
            events.push(e);
        }
    };
    let t = |h: f64| MIDNIGHT + (h * HOUR as f64) as i64;
    use DetectorKind::{Offline, Threshold, Trend};
    incident(
        "off-a1",
        "a1",
        "agent_offline",
        Offline,
        t(-1.0),
        Some(t(0.5)),
        false,
        None,
    );
    incident(
        "x1",
        "b1",
        "cpu_high",
        Threshold,
        t(1.0),
        Some(t(1.0) + 5 * MIN),
        false,
        Some(2),
    );
    incident(
        "x2",
        "b1",
        "cpu_high",
        Threshold,
        t(2.0),
        Some(t(3.0)),
        false,
        Some(0),
    );
    incident(
        "x3",
        "b1",
        "cpu_high",
        Threshold,
        t(3.5),
        Some(t(4.0)),
        true,
        Some(1),
    );
    incident(
        "off-b1",
        "b1",
        "agent_offline",
        Offline,
        t(5.0),
        Some(t(7.0)),
        false,
        None,
    );
    incident("fill", "b1", "disk_fill", Trend, t(7.5), None, false, None);
    incident(
        "off-a2",
        "a2",
        "agent_offline",
        Offline,
        t(8.0),
        None,
        false,
        None,
    );
    let mut w = AlertsWriter::new(root, WriterConfig::default()).unwrap();
    for e in &events {
        w.push(e);
    }
    w.flush(range(0)).unwrap();
}

fn tenant(agent: &str) -> String {
    if agent.starts_with('a') {
        "acme"
    } else {
        "beta"
    }
    .into()
}

fn fleet() -> (tempfile::TempDir, QuerySession) {
    let dir = tempfile::tempdir().unwrap();
    write_fleet(dir.path(), tenant);
    let s = QuerySession::open(dir.path()).unwrap();
    (dir, s)
}

fn report(s: &QuerySession, kind: ReportKind, scope: &Scope) -> Report {
    block_on(run(s, kind, scope)).unwrap().unwrap()
}

/// A section's rows as JSON objects.
pub(super) fn rows(r: &Report, name: &str) -> Vec<Value> {
    let s = r
        .sections
        .iter()
        .find(|s| s.spec.name == name)
        .unwrap_or_else(|| panic!("no section {name}"));
    render(&s.batches, Format::Json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(super) fn pick(rows: &[Value], keys: &[&str]) -> Vec<Value> {
    rows.iter()
        .map(|r| Value::Array(keys.iter().map(|k| r[*k].clone()).collect()))
        .collect()
}

#[test]
fn health_report_numbers() {
    let (_dir, s) = fleet();
    let r = report(&s, ReportKind::Health, &Scope::default());

    // 26 cpu windows: 10 × 10, 8 × 50, 8 × 90 → mean 1220 / 26; the 95th
    // percentile lies among the 90s. Offline incidents: off-a1, off-b1,
    // off-a2; only off-a2 is open.
    assert_eq!(
        rows(&r, "fleet_summary"),
        [
            json!({"period_start": "2026-11-03T00:00:00Z", "period_end": "2026-11-03T10:00:00Z",
            "tenants": 2, "agents_seen": 3, "agents_offline_now": 1, "offline_incidents": 3,
            "cpu_pct_avg": 46.92, "cpu_pct_p95": 90.0, "agents_mem_pct_over_90": 1})
        ]
    );

    // a2: last point 07:59 (window 7), offline since 08:00, period end 10:00.
    assert_eq!(
        rows(&r, "agents_offline"),
        [
            json!({"tenant": "acme", "agent": "a2", "hostname": "host-a2",
            "offline_since": "2026-11-03T08:00:00Z", "last_seen": "2026-11-03T07:59:00Z",
            "hours_offline": 2.0})
        ]
    );

    // beta: 1 agent × 10 h, off-b1 2 h → 80 %. acme: 2 agents × 10 h;
    // off-a1 clipped to [00:00, 00:30] (0.5 h), off-a2 open, clipped to
    // [08:00, 10:00] (2 h) → 1 - 2.5 / 20 = 87.5 %.
    assert_eq!(
        pick(
            &rows(&r, "tenant_availability"),
            &[
                "tenant",
                "agents",
                "offline_incidents",
                "offline_hours",
                "availability_pct"
            ]
        ),
        [
            json!(["beta", 1, 1, 2.0, 80.0]),
            json!(["acme", 2, 2, 2.5, 87.5])
        ]
    );

    // Ranked per kind by the 95th percentile of window means. b1's disk:
    // 80 82 84 86 88 94 96 98 → 96 + 0.65 × 2 = 97.3.
    let trouble = rows(&r, "resources_in_trouble");
    assert_eq!(
        pick(
            &trouble,
            &["metric", "rank", "agent", "p95_pct", "peak_pct"]
        )[..4],
        [
            json!(["cpu_pct", 1, "b1", 90.0, 90.0]),
            json!(["cpu_pct", 2, "a2", 50.0, 50.0]),
            json!(["cpu_pct", 3, "a1", 10.0, 10.0]),
            json!(["disk_used_pct", 1, "b1", 97.3, 98.0]),
        ]
    );
    assert_eq!(trouble.len(), 9);
    assert_eq!(trouble[3]["resource"], "disk b1 mount=/");
    assert_eq!(trouble[6]["resource"], "mem b1");

    // The trend incident: predicted 20:00, alert at 07:30 → 12.5 h ahead.
    assert_eq!(
        pick(
            &rows(&r, "predicted_disk_fills"),
            &[
                "agent",
                "labels",
                "alerted_at",
                "predicted_at",
                "hours_ahead",
                "incidents"
            ]
        ),
        [json!([
            "b1",
            "mount=/",
            "2026-11-03T07:30:00Z",
            "2026-11-03T20:00:00Z",
            12.5,
            1
        ])]
    );
}

/// Issue 20 item 3: `vigil report` lists the open predictions, one row per
/// disk with its latest prediction, not every trend incident ever.
#[test]
fn predicted_disk_fills_lists_one_open_prediction_per_disk() {
    let dir = tempfile::tempdir().unwrap();
    write_fleet(dir.path(), tenant);
    // More trend incidents (t = hours after midnight): on b1 mount=/ an
    // older one that is still open (superseded by `fill` at 7.5) and one
    // that resolved; on a1 mount=/ one that resolved (withdrawn: no open
    // prediction); on a1 mount=/home an open one.
    let t = |h: f64| MIDNIGHT + (h * HOUR as f64) as i64;
    let trend = |id: &str, agent: &str, labels: &str, at: f64, predicted: f64| {
        let mut a = alert(
            agent,
            "disk_fill",
            DetectorKind::Trend,
            AlertStatus::Firing,
            false,
            t(at),
        );
        a.id = id.into();
        a.tenant = tenant(agent);
        a.labels = labels.into();
        a.predicted_at_ms = Some(t(predicted));
        a
    };
    let resolved = |mut a: AlertEvent, at: f64| {
        a.status = AlertStatus::Resolved;
        a.resolved_at_ms = Some(t(at));
        a.event_time_ms = t(at);
        a.resolve_reason = Some(ResolveReason::Cleared);
        a
    };
    let old = trend("fill-old", "b1", "mount=/", 1.0, 30.0);
    let gone = trend("fill-gone", "b1", "mount=/", 2.0, 26.0);
    let a1 = trend("fill-a1", "a1", "mount=/", 3.0, 15.0);
    let home = trend("fill-home", "a1", "mount=/home", 4.0, 22.0);
    let mut w = AlertsWriter::new(dir.path(), WriterConfig::default()).unwrap();
    for e in [
        old,
        gone.clone(),
        resolved(gone, 2.5),
        a1.clone(),
        resolved(a1, 6.0),
        home,
    ] {
        w.push(&e);
    }
    w.flush(range(100)).unwrap();
    let s = QuerySession::open(dir.path()).unwrap();
    let r = report(&s, ReportKind::Health, &Scope::default());
    assert_eq!(
        pick(
            &rows(&r, "predicted_disk_fills"),
            &[
                "agent",
                "labels",
                "predicted_at",
                "hours_ahead",
                "incidents"
            ]
        ),
        [
            json!(["b1", "mount=/", "2026-11-03T20:00:00Z", 12.5, 3]),
            json!(["a1", "mount=/home", "2026-11-03T22:00:00Z", 18.0, 1]),
        ]
    );
}

#[test]
fn alerts_report_numbers() {
    let (_dir, s) = fleet();
    let r = report(&s, ReportKind::Alerts, &Scope::default());

    // Seven incidents, five resolved: off-a1 90 min, x1 5, x2 60, x3 30,
    // off-b1 120 → mean 61, median 60. Flaps 2 + 0 + 1.
    assert_eq!(
        rows(&r, "alerts_summary"),
        [
            json!({"opened": 7, "resolved": 5, "open_at_end": 2, "suppressed": 1,
            "mttr_minutes": 61.0, "median_ttr_minutes": 60.0, "flaps": 3})
        ]
    );

    assert_eq!(
        rows(&r, "alerts_per_day"),
        [
            json!({"day": "2026-11-02", "critical": 1, "warning": 0, "info": 0, "suppressed": 0}),
            json!({"day": "2026-11-03", "critical": 4, "warning": 1, "info": 0, "suppressed": 1}),
        ]
    );
    assert_eq!(
        rows(&r, "incidents_per_day"),
        [
            json!({"day": "2026-11-02", "opened": 1, "resolved": 0, "mttr_minutes": null}),
            json!({"day": "2026-11-03", "opened": 6, "resolved": 5, "mttr_minutes": 61.0}),
        ]
    );

    // cpu_high: 3 incidents on one agent, MTTR (5 + 60 + 30) / 3, one
    // under 10 minutes, 3 flaps. Ties on `opened` go by rule name.
    assert_eq!(
        pick(
            &rows(&r, "noisiest_rules"),
            &[
                "rule",
                "opened",
                "agents",
                "resolved",
                "mttr_minutes",
                "short_incidents",
                "flaps"
            ]
        ),
        [
            json!(["agent_offline", 3, 3, 2, 105.0, 0, 0]),
            json!(["cpu_high", 3, 1, 3, 31.7, 1, 3]),
            json!(["disk_fill", 1, 1, 0, null, 0, 0]),
        ]
    );
    assert_eq!(
        rows(&r, "flapping_rules"),
        [
            json!({"rule": "cpu_high", "severity": "critical", "flaps": 3,
            "incidents_flapping": 2, "max_flaps": 2, "flaps_per_incident": 1.0})
        ]
    );

    let counts = rows(&r, "alert_counts");
    assert!(counts.contains(
        &json!({"day": "2026-11-03", "tenant": "beta", "rule": "cpu_high",
        "severity": "critical", "fired": 2, "suppressed": 1, "resolved": 3})
    ));
    assert!(counts.contains(
        &json!({"day": "2026-11-02", "tenant": "acme", "rule": "agent_offline",
        "severity": "critical", "fired": 1, "suppressed": 0, "resolved": 0})
    ));
    assert_eq!(counts.len(), 5);

    let list = rows(&r, "incident_list");
    assert_eq!(
        pick(
            &list,
            &[
                "id",
                "detected_at",
                "duration_minutes",
                "resolution",
                "suppressed"
            ]
        ),
        [
            json!(["off-a1", "2026-11-02T23:00:00Z", 90.0, "cleared", false]),
            json!(["x1", "2026-11-03T01:00:00Z", 5.0, "cleared", false]),
            json!(["x2", "2026-11-03T02:00:00Z", 60.0, "cleared", false]),
            json!(["x3", "2026-11-03T03:30:00Z", 30.0, "cleared", true]),
            json!(["off-b1", "2026-11-03T05:00:00Z", 120.0, "cleared", false]),
            json!(["fill", "2026-11-03T07:30:00Z", null, "open", false]),
            json!(["off-a2", "2026-11-03T08:00:00Z", null, "open", false]),
        ]
    );
    assert_eq!(list[1]["flaps"], 2);
    assert_eq!(list[1]["hostname"], "host-b1");
}

#[test]
fn capacity_report_numbers() {
    let (_dir, s) = fleet();
    let r = report(&s, ReportKind::Capacity, &Scope::default());

    // Hourly disk use: acme averages a1 (10 + k) and a2 (50) while both
    // report, then a1 alone.
    let disk = rows(&r, "disk_use");
    assert_eq!(disk.len(), 10 + 8);
    assert_eq!(
        disk[0],
        json!({"hour": "2026-11-03T00:00:00Z", "tenant": "acme", "avg_used_pct": 30.0,
            "max_used_pct": 50.0, "disks": 2})
    );
    assert_eq!(
        disk.last().unwrap(),
        &json!({"hour": "2026-11-03T09:00:00Z", "tenant": "beta", "avg_used_pct": 98.0,
            "max_used_pct": 98.0, "disks": 1})
    );
    assert_eq!(rows(&r, "memory_use").len(), 18);

    // Per series, then averaged per tenant. beta's one disk grows 2
    // points an hour (48 a day); acme's disks: a1 24 a day from 10 to 19,
    // a2 flat at 50 → slope 12, first (10 + 50) / 2, last (19 + 50) / 2.
    // Memory is flat everywhere.
    let trend = rows(&r, "capacity_trend");
    assert_eq!(
        pick(
            &trend,
            &[
                "tenant",
                "metric",
                "series",
                "first_pct",
                "last_pct",
                "change_pct",
                "slope_pct_per_day",
                "trend"
            ]
        ),
        [
            json!(["beta", "disk_used_pct", 1, 80.0, 98.0, 18.0, 48.0, "rising"]),
            json!(["acme", "disk_used_pct", 2, 30.0, 34.5, 4.5, 12.0, "rising"]),
            json!(["acme", "mem_pct", 2, 50.0, 50.0, 0.0, 0.0, "flat"]),
            json!(["beta", "mem_pct", 1, 95.0, 95.0, 0.0, 0.0, "flat"]),
        ]
    );

    // b1 grows 48 points a day (2 left: 0.04 days); a1 24 (81 left:
    // 3.375 days); a2 is flat and not listed.
    assert_eq!(
        pick(
            &rows(&r, "fastest_growing_disks"),
            &[
                "disk",
                "first_pct",
                "last_pct",
                "slope_pct_per_day",
                "days_to_full"
            ]
        ),
        [
            json!(["b1 mount=/", 80.0, 98.0, 48.0, 0.0]),
            json!(["a1 mount=/", 10.0, 19.0, 24.0, 3.4]),
        ]
    );
}

#[test]
fn scope_limits_every_table_and_values_stay_values() {
    let (_dir, s) = fleet();
    // [02:00, 06:00): windows 2..=5; alert events x2 (both), x3 (both),
    // off-b1 firing. off-b1 is open at the end of the scope: clipped to
    // [05:00, 06:00), 1 h of beta's 4 h.
    let scope = Scope {
        from_ms: Some(MIDNIGHT + 2 * HOUR),
        to_ms: Some(MIDNIGHT + 6 * HOUR),
        tenant: None,
    };
    assert_eq!(
        scope.describe(),
        "from 2026-11-03T02:00:00Z, before 2026-11-03T06:00:00Z"
    );
    let a = report(&s, ReportKind::Alerts, &scope);
    assert_eq!(
        pick(
            &rows(&a, "alerts_summary"),
            &["opened", "resolved", "open_at_end", "mttr_minutes"]
        ),
        [json!([3, 2, 1, 45.0])]
    );
    let h = report(&s, ReportKind::Health, &scope);
    assert_eq!(
        pick(
            &rows(&h, "tenant_availability"),
            &["tenant", "availability_pct"]
        ),
        [json!(["beta", 75.0]), json!(["acme", 100.0])]
    );
    assert_eq!(
        rows(&h, "fleet_summary")[0]["period_start"],
        "2026-11-03T02:00:00Z"
    );
    assert_eq!(rows(&h, "agents_offline")[0]["agent"], "b1");

    let beta = Scope {
        tenant: Some("beta".into()),
        ..Scope::default()
    };
    let h = report(&s, ReportKind::Health, &beta);
    assert_eq!(
        pick(
            &rows(&h, "tenant_availability"),
            &["tenant", "availability_pct"]
        ),
        [json!(["beta", 80.0])]
    );
    assert_eq!(rows(&h, "fleet_summary")[0]["agents_seen"], 1);

    // A tenant that would be SQL is a value that matches nothing.
    let evil = Scope {
        tenant: Some("beta' OR '1'='1".into()),
        ..Scope::default()
    };
    for kind in ReportKind::ALL {
        let r = report(&s, kind, &evil);
        for sec in &r.sections {
            if sec.spec.name.ends_with("summary") {
                continue; // one row of zeros and nulls
            }
            assert_eq!(sec.rows(), 0, "{kind} {}", sec.spec.name);
        }
    }
    assert_eq!(
        rows(&report(&s, ReportKind::Health, &evil), "fleet_summary")[0]["agents_seen"],
        0
    );
}

#[test]
fn text_formats_split_by_section() {
    let (_dir, s) = fleet();
    let r = report(&s, ReportKind::Alerts, &Scope::default());
    let csv = render_report(&r, Format::Csv).unwrap();
    let names: Vec<&str> = csv.lines().filter_map(|l| l.strip_prefix("# ")).collect();
    let want: Vec<&str> = alerts::SECTIONS.iter().map(|s| s.name).collect();
    assert_eq!(names, want);
    let table = render_report(&r, Format::Table).unwrap();
    assert!(table.starts_with("# Alerts report (all data)\n"), "{table}");
    assert!(table.contains("## Most flapping rules\n"), "{table}");
}

pub(super) fn sections_with_chart(r: &Report) -> usize {
    r.sections
        .iter()
        .filter(|s| s.spec.chart.is_some() && s.rows() > 0)
        .count()
}

/// The HTML document of `r`: self-contained, with a section per spec
/// and a chart per charted section with rows (at least two).
pub(super) fn check_html(r: &mut Report) {
    let kind = r.kind;
    r.generated_at = Some("2026-11-04T08:00:00Z".into());
    let html = render_report(r, Format::Html).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.ends_with("</html>\n"));
    assert!(html.contains(&format!("<h1>{}</h1>", kind.title())));
    assert!(html.contains("generated 2026-11-04T08:00:00Z"));
    for sec in kind.sections() {
        assert!(
            html.contains(&format!("<section id=\"{}\">", sec.name)),
            "{kind} {}",
            sec.name
        );
    }
    let charts = html.matches("<svg class=\"chart\"").count();
    assert_eq!(charts, sections_with_chart(r), "{kind}");
    assert!(charts >= 2, "{kind}: {charts} charts");
    // Nothing to fetch: no URL, no external resource.
    for needle in ["http://", "https://", "src=", "url(", "@import", "//cdn"] {
        assert!(!html.contains(needle), "{kind}: {needle}");
    }
    // Every drawn value is a mark with a size.
    assert!(html.contains("class=\"mark\""));
}

/// The reports over metrics and alerts (compliance and security:
/// `posture_tests`).
#[test]
fn html_report_is_self_contained_with_a_chart_per_charted_section() {
    let (_dir, s) = fleet();
    for kind in [ReportKind::Health, ReportKind::Alerts, ReportKind::Capacity] {
        check_html(&mut report(&s, kind, &Scope::default()));
    }
    // The capacity lines: one path per tenant, per chart.
    let r = report(&s, ReportKind::Capacity, &Scope::default());
    let html = render_report(&r, Format::Html).unwrap();
    assert_eq!(html.matches("<path class=\"mark\"").count(), 4);
}

#[test]
fn html_escapes_every_cell_label_and_scope() {
    let dir = tempfile::tempdir().unwrap();
    let nasty = "<script>alert(\"x\")</script>&'";
    write_fleet(dir.path(), |a| {
        if a == "b1" {
            nasty.to_owned()
        } else {
            "acme".to_owned()
        }
    });
    let s = QuerySession::open(dir.path()).unwrap();
    for kind in ReportKind::ALL {
        let mut r = report(&s, kind, &Scope::default());
        r.scope.tenant = Some(nasty.into()); // shown in the header
        let html = render_report(&r, Format::Html).unwrap();
        assert!(!html.contains(nasty), "{kind}");
        assert!(!html.contains("<script>alert"), "{kind}");
        assert!(
            html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"),
            "{kind}"
        );
        // The only script element is the report's own.
        assert_eq!(html.matches("<script").count(), 1, "{kind}");
    }
    assert_eq!(
        html::escape("a<b>&\"c\"'"),
        "a&lt;b&gt;&amp;&quot;c&quot;&#39;"
    );
    // The plain HTML table of `vigil sql --format html`.
    let b: Vec<RecordBatch> = block_on(s.sql("SELECT DISTINCT tenant FROM alerts ORDER BY 1"))
        .unwrap()
        .unwrap();
    let t = render(&b, Format::Html).unwrap();
    assert_eq!(
        t,
        "<table>\n<thead><tr><th>tenant</th></tr></thead>\n<tbody>\n\
         <tr><td>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;</td></tr>\n\
         <tr><td>acme</td></tr>\n</tbody>\n</table>\n"
    );
}

#[test]
fn docs_show_the_sql_that_runs() {
    let doc = include_str!("../../../../docs/reports.md");
    for kind in ReportKind::ALL {
        for s in kind.sections() {
            assert!(
                doc.contains(&format!("### `{}`: {}", s.name, s.title)),
                "docs/reports.md has no heading for {}",
                s.name
            );
            assert!(
                doc.contains(&format!("```sql\n{}\n```", s.sql)),
                "docs/reports.md does not show the SQL of {} as it is in the code",
                s.name
            );
        }
    }
}
