//! Query tests over datasets written by `vigil-store` into a temp dir.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use vigil_ops::{
    Agg, AlertEvent, AlertStatus, DetectorKind, SeriesMeta, Severity, WindowAggregate,
};
use vigil_store::{AggregatesWriter, AlertsWriter, SourceRange, WriterConfig};

use crate::report;
use crate::*;

/// 2026-11-03T00:00:00Z.
pub(crate) const MIDNIGHT: i64 = 1_793_664_000_000;
pub(crate) const W: i64 = 60_000;
pub(crate) const HOUR: i64 = 3_600_000;

fn window(agent: &str, metric: &str, start: i64, values: &[f64]) -> WindowAggregate {
    let mut agg = Agg::new(start, values[0]);
    for (i, v) in values.iter().enumerate().skip(1) {
        agg.push(start + i as i64 * 1000, *v);
    }
    WindowAggregate {
        series: SeriesMeta::new("t1", agent, metric, ""),
        start_ms: start,
        end_ms: start + W,
        agg,
    }
}

pub(crate) fn range(first: i64) -> SourceRange<'static> {
    SourceRange {
        source: "rmm.telemetry.v1",
        partition: 0,
        first_offset: first,
        last_offset: first + 9,
        tick: 0,
    }
}

/// 3 agents × {cpu_pct, mem_pct} × 4 windows: two before midnight
/// (2026-11-02) and two after (2026-11-03). Agent `a{i}` has cpu mean
/// `10·(i+1)` and mem max `85 + 5·i` (90 for a1, so only a2 exceeds 90).
fn write_aggregates(root: &Path) {
    let mut w = AggregatesWriter::new(root, WriterConfig::default()).unwrap();
    for i in 0..3 {
        let agent = format!("a{i}");
        for k in [-2, -1, 0, 1] {
            let cpu = 10.0 * (i + 1) as f64;
            w.push(&window(
                &agent,
                "cpu_pct",
                MIDNIGHT + k * W,
                &[cpu - 1.0, cpu + 1.0],
            ));
            let mem = 85.0 + 5.0 * i as f64;
            w.push(&window(
                &agent,
                "mem_pct",
                MIDNIGHT + k * W,
                &[mem - 10.0, mem],
            ));
        }
    }
    w.flush(range(0)).unwrap();
}

pub(crate) fn alert(
    agent: &str,
    rule: &str,
    kind: DetectorKind,
    status: AlertStatus,
    suppressed: bool,
    t: i64,
) -> AlertEvent {
    let resolved = status == AlertStatus::Resolved;
    AlertEvent {
        id: format!("{rule}-{agent}"),
        fingerprint: format!("fp-{rule}-{agent}"),
        rule: rule.into(),
        kind,
        severity: if kind == DetectorKind::Trend {
            Severity::Warning
        } else {
            Severity::Critical
        },
        status,
        suppressed,
        tenant: "t1".into(),
        agent: agent.into(),
        hostname: Some(format!("host-{agent}")),
        metric: (kind != DetectorKind::Offline).then(|| "disk_used_pct".into()),
        labels: if kind == DetectorKind::Trend {
            "mount=/data".into()
        } else {
            String::new()
        },
        value: Some(80.0),
        threshold: Some(100.0),
        predicted_at_ms: (kind == DetectorKind::Trend).then_some(t + 18 * HOUR),
        window_start_ms: Some(t - W),
        window_end_ms: Some(t),
        started_at_ms: t,
        resolved_at_ms: resolved.then_some(t + HOUR),
        resolve_reason: resolved.then_some(vigil_ops::model::ResolveReason::Cleared),
        flaps: None,
        event_time_ms: if resolved { t + HOUR } else { t },
        summary: format!("{rule} on {agent}"),
    }
}

fn write_alerts(root: &Path) {
    let mut w = AlertsWriter::new(root, WriterConfig::default()).unwrap();
    w.push(&alert(
        "a0",
        "disk_fill",
        DetectorKind::Trend,
        AlertStatus::Firing,
        false,
        MIDNIGHT + 2 * HOUR,
    ));
    w.push(&alert(
        "a1",
        "disk_fill",
        DetectorKind::Trend,
        AlertStatus::Firing,
        false,
        MIDNIGHT + HOUR,
    ));
    w.push(&alert(
        "a1",
        "disk_fill",
        DetectorKind::Trend,
        AlertStatus::Resolved,
        false,
        MIDNIGHT + HOUR,
    ));
    w.push(&alert(
        "a0",
        "agent_offline",
        DetectorKind::Offline,
        AlertStatus::Firing,
        false,
        MIDNIGHT,
    ));
    w.push(&alert(
        "a2",
        "agent_offline",
        DetectorKind::Offline,
        AlertStatus::Firing,
        true,
        MIDNIGHT,
    ));
    w.flush(range(0)).unwrap();
}

pub(crate) fn run(session: &QuerySession, sql: &str) -> Vec<RecordBatch> {
    block_on(session.sql(sql)).unwrap().unwrap()
}

pub(crate) fn one(session: &QuerySession, sql: &str) -> RecordBatch {
    let batches = run(session, sql);
    datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

#[test]
fn group_by_where_date_and_order_by() {
    let dir = tempfile::tempdir().unwrap();
    write_aggregates(dir.path());
    let s = QuerySession::open(dir.path()).unwrap();

    let b = one(
        &s,
        "SELECT agent, count(*) AS windows, sum(\"count\") AS points, avg(mean) AS cpu
         FROM aggregates WHERE metric = 'cpu_pct' GROUP BY agent ORDER BY agent DESC",
    );
    let agents: Vec<_> = b
        .column(0)
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap().to_owned())
        .collect();
    assert_eq!(agents, ["a2", "a1", "a0"]);
    assert_eq!(
        b.column(1).as_primitive::<Int64Type>().values().to_vec(),
        [4, 4, 4]
    );
    assert_eq!(
        b.column(2).as_primitive::<UInt64Type>().values().to_vec(),
        [8, 8, 8]
    );
    assert_eq!(
        b.column(3).as_primitive::<Float64Type>().values().to_vec(),
        [30.0, 20.0, 10.0]
    );

    // The partition column is a date and filters by directory.
    let b = one(
        &s,
        "SELECT date, count(*) AS n FROM aggregates GROUP BY date ORDER BY date",
    );
    assert_eq!(b.schema().field(0).data_type(), &DataType::Date32);
    assert_eq!(
        render(&[b], Format::Csv).unwrap(),
        "date,n\n2026-11-02,12\n2026-11-03,12\n"
    );
    let n = |sql: &str| one(&s, sql).column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(
        n("SELECT count(*) FROM aggregates WHERE date = '2026-11-02'"),
        12
    );
    assert_eq!(
        n("SELECT count(*) FROM aggregates WHERE date >= '2026-11-03'"),
        12
    );
    assert_eq!(n("SELECT count(*) FROM aggregates WHERE date BETWEEN DATE '2026-11-01' AND DATE '2026-11-02'"), 12);
    assert_eq!(
        n("SELECT count(*) FROM aggregates WHERE window_start >= TIMESTAMP '2026-11-03T00:00:00Z' AND agent = 'a1'"),
        4
    );
    // The date directory is the UTC day of window_start for every row.
    assert_eq!(
        n("SELECT count(*) FROM aggregates WHERE date <> CAST(window_start AS DATE)"),
        0
    );
}

#[test]
fn partition_filter_prunes_other_directories() {
    let dir = tempfile::tempdir().unwrap();
    write_aggregates(dir.path());
    // A file that cannot be read, in a partition the query does not touch.
    let bad = dir.path().join("aggregates/date=2026-11-01");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("part-garbage.parquet"), b"not parquet").unwrap();
    let s = QuerySession::open(dir.path()).unwrap();
    let b = one(
        &s,
        "SELECT count(*) FROM aggregates WHERE date >= '2026-11-02'",
    );
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 24);
    let err = block_on(s.sql("SELECT count(*) FROM aggregates"))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, QueryError::Sql { .. }), "{err}");
    // A report's scope prunes the same way: the scoped table never opens
    // the garbage file.
    let scope = report::Scope {
        from_ms: Some(MIDNIGHT - 2 * W),
        ..report::Scope::default()
    };
    let scoped = block_on(s.scoped(|d| scope.expr(d))).unwrap().unwrap();
    let b = one(&scoped, "SELECT count(*) FROM aggregates");
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 24);
}

#[test]
fn empty_root_gives_empty_tables_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("does-not-exist");
    let s = QuerySession::open(&root).unwrap();
    let b = one(&s, "SELECT count(*) AS n FROM aggregates");
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 0);
    let batches = run(&s, "SELECT * FROM alerts");
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    assert_eq!(
        batches[0].schema().fields().len(),
        vigil_store::alerts_schema().fields().len() + 1
    );
    assert!(render(&batches, Format::Csv)
        .unwrap()
        .starts_with("id,fingerprint,rule,"));
    for kind in report::ReportKind::ALL {
        let r = block_on(report::run(&s, kind, &report::Scope::default()))
            .unwrap()
            .unwrap();
        assert_eq!(r.sections.len(), kind.sections().len());
        let text = report::render_report(&r, Format::Table).unwrap();
        assert!(
            text.contains(&format!("## {}", kind.sections()[0].title)),
            "{text}"
        );
        let html = report::render_report(&r, Format::Html).unwrap();
        assert!(html.contains("No data for this section"), "{html}");
        assert!(!html.contains("<svg"), "no chart without data");
    }

    // Data written after open is seen by later queries.
    write_aggregates(&root);
    let b = one(&s, "SELECT count(*) AS n FROM aggregates");
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 24);
}

#[test]
fn render_formats() {
    let dir = tempfile::tempdir().unwrap();
    write_alerts(dir.path());
    let s = QuerySession::open(dir.path()).unwrap();
    let batches = run(
        &s,
        "SELECT agent, status, predicted_at, resolved_at, value FROM alerts
         WHERE rule = 'disk_fill' ORDER BY agent, status",
    );

    let table = render(&batches, Format::Table).unwrap();
    assert!(
        table.contains("| agent | status   | predicted_at"),
        "{table}"
    );
    assert!(table.contains("2026-11-03T20:00:00Z"), "{table}");

    let csv = render(&batches, Format::Csv).unwrap();
    let lines: Vec<_> = csv.lines().collect();
    assert_eq!(lines[0], "agent,status,predicted_at,resolved_at,value");
    assert_eq!(lines.len(), 4);
    assert!(
        lines[1].starts_with("a0,firing,2026-11-03T20:00:00"),
        "{csv}"
    );

    let json = render(&batches, Format::Json).unwrap();
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["agent"], "a0");
    assert_eq!(
        rows[0]["resolved_at"],
        serde_json::Value::Null,
        "nulls are explicit"
    );
    assert_eq!(rows[0]["value"], 80.0);
    assert!(
        rows[0]["predicted_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-03T20:00:00"),
        "{json}"
    );

    assert_eq!("JSON".parse::<Format>().unwrap(), Format::Json);
    assert!("xml".parse::<Format>().is_err());
}

#[test]
fn report_sections_over_a_small_fleet() {
    let dir = tempfile::tempdir().unwrap();
    write_aggregates(dir.path());
    write_alerts(dir.path());
    let s = QuerySession::open(dir.path()).unwrap();
    let r = block_on(report::run(
        &s,
        report::ReportKind::Health,
        &report::Scope::default(),
    ))
    .unwrap()
    .unwrap();
    let names: Vec<_> = r.sections.iter().map(|s| s.spec.name).collect();
    assert_eq!(
        names,
        [
            "fleet_summary",
            "agents_offline",
            "tenant_availability",
            "resources_in_trouble",
            "predicted_disk_fills"
        ]
    );

    let json = |i: usize| -> Vec<serde_json::Value> {
        render(&r.sections[i].batches, Format::Json)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let health = json(0);
    assert_eq!(
        health[0],
        serde_json::json!({"period_start": "2026-11-02T23:58:00Z", "period_end": "2026-11-03T00:02:00Z",
            "tenants": 1, "agents_seen": 3, "agents_offline_now": 2, "offline_incidents": 2,
            "cpu_pct_avg": 20.0, "cpu_pct_p95": 30.0, "agents_mem_pct_over_90": 1})
    );
    // Open predictions only: a1's resolved; a0's is open.
    let fills = json(4);
    assert_eq!(fills.len(), 1);
    assert_eq!(fills[0]["agent"], "a0");
    assert_eq!(fills[0]["hours_ahead"], 18.0);
    assert_eq!(fills[0]["hostname"], "host-a0");
    assert_eq!(fills[0]["incidents"], 1);

    let text = report::render_report(&r, Format::Table).unwrap();
    assert!(
        text.contains("## Disks predicted to fill") && text.contains("mount=/data"),
        "{text}"
    );
}

#[test]
fn sql_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = QuerySession::open(dir.path()).unwrap();
    for sql in [
        "COPY (SELECT 1) TO '/tmp/x.parquet'",
        "CREATE TABLE t AS SELECT 1",
        "DROP TABLE aggregates",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let r = block_on(s.sql(sql)).unwrap();
        assert!(r.is_err(), "{sql} must be refused");
    }
    let b = one(
        &s,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    );
    let names: Vec<_> = b
        .column(0)
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["aggregates", "alerts", "audit", "security_events", "status"]
    );
}

/// Alerts on both sides of midnight, in two tenants, for the export reader.
fn write_export_alerts(root: &Path) -> Vec<AlertEvent> {
    let mut all = Vec::new();
    let mut w = AlertsWriter::new(root, WriterConfig::default()).unwrap();
    for (k, t) in [-2 * HOUR, -1, 0, 1, HOUR, 3 * HOUR]
        .into_iter()
        .enumerate()
    {
        for (tenant, rule) in [("t1", "disk_fill"), ("t2", "cpu_high")] {
            let mut a = alert(
                &format!("a{k}"),
                rule,
                DetectorKind::Threshold,
                AlertStatus::Firing,
                k % 2 == 0,
                MIDNIGHT + t,
            );
            a.tenant = tenant.into();
            if k % 2 == 1 {
                a.status = AlertStatus::Resolved;
                a.resolved_at_ms = Some(a.event_time_ms);
                a.resolve_reason = Some(vigil_ops::model::ResolveReason::Stale);
                a.flaps = Some(k as u32);
            }
            if k == 3 {
                a.hostname = None;
                a.value = None;
                a.metric = None;
            }
            w.push(&a);
            all.push(a);
        }
    }
    w.flush(range(0)).unwrap();
    all.sort_by(|a, b| {
        (a.event_time_ms, &a.id, a.status.as_str()).cmp(&(
            b.event_time_ms,
            &b.id,
            b.status.as_str(),
        ))
    });
    all
}

fn export(s: &QuerySession, f: &AlertFilter) -> Vec<AlertEvent> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut events = s.alert_events(f).await.unwrap();
        let mut out = Vec::new();
        while let Some(b) = events.next_batch().await.unwrap() {
            out.extend(b);
        }
        assert_eq!(events.total, out.len() as u64);
        out
    })
}

#[test]
fn alert_events_round_trip_in_event_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let want = write_export_alerts(dir.path());
    let s = QuerySession::open(dir.path()).unwrap();
    let got = export(&s, &AlertFilter::default());
    assert_eq!(got.len(), 12);
    // Every field comes back.
    assert_eq!(got, want);
    assert!(got
        .iter()
        .any(|a| a.flaps == Some(3) && a.resolve_reason.is_some()));
    assert!(got
        .windows(2)
        .all(|w| w[0].event_time_ms <= w[1].event_time_ms));
}

#[test]
fn alert_filter_bounds_are_half_open_and_cross_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let all = write_export_alerts(dir.path());
    let s = QuerySession::open(dir.path()).unwrap();
    let times =
        |f: AlertFilter| -> Vec<i64> { export(&s, &f).iter().map(|a| a.event_time_ms).collect() };
    // [midnight - 1 ms, midnight + 1 h): from is inclusive, to exclusive,
    // and the range spans the two date partitions.
    let got = times(AlertFilter {
        from_ms: Some(MIDNIGHT - 1),
        to_ms: Some(MIDNIGHT + HOUR),
        ..AlertFilter::default()
    });
    let m = MIDNIGHT;
    assert_eq!(got, [m - 1, m - 1, m, m, m + 1, m + 1]);
    // A range ending exactly at midnight excludes midnight (and its day).
    let got = times(AlertFilter {
        to_ms: Some(MIDNIGHT),
        ..AlertFilter::default()
    });
    assert_eq!(got, [m - 2 * HOUR, m - 2 * HOUR, m - 1, m - 1]);
    // Tenant and rule.
    let t2 = export(
        &s,
        &AlertFilter {
            tenant: Some("t2".into()),
            ..AlertFilter::default()
        },
    );
    assert_eq!(t2.len(), 6);
    assert!(t2.iter().all(|a| a.tenant == "t2" && a.rule == "cpu_high"));
    let r = export(
        &s,
        &AlertFilter {
            rule: Some("disk_fill".into()),
            from_ms: Some(MIDNIGHT),
            ..AlertFilter::default()
        },
    );
    let want: Vec<_> = all
        .iter()
        .filter(|a| a.rule == "disk_fill" && a.event_time_ms >= MIDNIGHT)
        .cloned()
        .collect();
    assert_eq!(r, want);
    // A value that would be SQL is only ever a literal.
    let none = export(
        &s,
        &AlertFilter {
            tenant: Some("t1' OR '1'='1".into()),
            ..AlertFilter::default()
        },
    );
    assert!(none.is_empty());
}

#[test]
fn alert_files_without_the_later_columns_read_as_null() {
    use datafusion::parquet::arrow::ArrowWriter;
    let dir = tempfile::tempdir().unwrap();
    write_export_alerts(dir.path());
    // Rewrite every file as a file of the first release: without
    // resolve_reason and flaps.
    let mut rewritten = 0;
    for day in std::fs::read_dir(dir.path().join("alerts")).unwrap() {
        for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let file = std::fs::File::open(&path).unwrap();
            let reader =
                datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
                    file, 1024,
                )
                .unwrap();
            let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
            let keep: Vec<usize> = (0..batches[0].num_columns() - 2).collect();
            let old: Vec<RecordBatch> = batches.iter().map(|b| b.project(&keep).unwrap()).collect();
            let mut w =
                ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), old[0].schema(), None)
                    .unwrap();
            for b in &old {
                w.write(b).unwrap();
            }
            w.close().unwrap();
            rewritten += 1;
        }
    }
    assert!(rewritten >= 2);
    let s = QuerySession::open(dir.path()).unwrap();
    let got = export(&s, &AlertFilter::default());
    assert_eq!(got.len(), 12);
    assert!(got
        .iter()
        .all(|a| a.resolve_reason.is_none() && a.flaps.is_none()));
    assert!(got.iter().any(|a| a.status == AlertStatus::Resolved));
}

/// Queries over a directory caught between compaction's publish and its
/// removal of the inputs (or after a crash there): the covered inputs are
/// not read, so every result is the one before compaction. The bug this
/// names: a listing that reads the compacted file and its inputs (counts
/// and sums doubled for the leftover inputs' rows).
#[test]
fn results_are_unchanged_by_compaction_and_by_its_leftover_inputs() {
    use vigil_store::compact::{compact, Commit, CompactOptions, DateScope};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut w = AggregatesWriter::new(root, WriterConfig::default()).unwrap();
    for k in 0..6 {
        for i in 0..3 {
            let v = (10 * k + i) as f64;
            w.push(&window(
                &format!("a{i}"),
                "cpu_pct",
                MIDNIGHT + k * W,
                &[v, v + 2.0],
            ));
        }
        w.flush(range(10 * k)).unwrap();
    }
    let queries = [
        "SELECT count(*) AS n, sum(count) AS points, sum(sum) AS s, min(min) AS lo, \
         max(max) AS hi FROM aggregates",
        "SELECT agent, avg(mean) AS m, count(*) AS n FROM aggregates \
         WHERE date = '2026-11-03' GROUP BY agent ORDER BY agent",
        "SELECT * FROM aggregates ORDER BY agent, window_start",
    ];
    let results = |s: &QuerySession| -> Vec<String> {
        queries
            .iter()
            .map(|q| render(&run(s, q), Format::Csv).unwrap())
            .collect()
    };
    let before = results(&QuerySession::open(root).unwrap());
    let date_dir = root.join("aggregates/date=2026-11-03");
    let backup = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&date_dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, backup.path().join(p.file_name().unwrap())).unwrap();
    }
    let opts = CompactOptions {
        target_file_bytes: 1 << 20,
        min_files: 2,
        settle: std::time::Duration::ZERO,
        writer: WriterConfig::default(),
    };
    let mut unknown = |_: &str, _: i32| Ok(Commit::Unknown);
    let r = compact(root, &opts, DateScope::Settled, i64::MAX / 2, &mut unknown).unwrap();
    assert_eq!(r.files_merged(), 6);
    assert_eq!(std::fs::read_dir(&date_dir).unwrap().count(), 1);
    assert_eq!(results(&QuerySession::open(root).unwrap()), before);
    // The moment between publish and removal: two inputs still there.
    for name in [
        "part-rmm.telemetry.v1-p00000-00000000000000000000-00000000000000000009.parquet",
        "part-rmm.telemetry.v1-p00000-00000000000000000030-00000000000000000039.parquet",
    ] {
        std::fs::copy(backup.path().join(name), date_dir.join(name)).unwrap();
    }
    let s = QuerySession::open(root).unwrap();
    assert_eq!(results(&s), before);
    let n = one(
        &s,
        "SELECT count(*) AS n FROM aggregates WHERE date = '2026-11-03'",
    );
    assert_eq!(n.column(0).as_primitive::<Int64Type>().value(0), 18);

    // The same files on an object store (the in-memory one): listed
    // through the same rule, the leftover inputs are not read there either.
    let obj = vigil_store::Root::s3_with_store(
        "bucket",
        "vigil",
        Arc::new(datafusion::object_store::memory::InMemory::new()),
    );
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                obj.write_file(&rel, &std::fs::read(&p).unwrap(), false)
                    .unwrap();
            }
        }
    }
    let s = QuerySession::open_root(&obj).unwrap();
    assert_eq!(s.root(), Path::new("s3://bucket/vigil"));
    assert_eq!(results(&s), before);
}

fn one_f64(b: &[RecordBatch]) -> f64 {
    b[0].column(0).as_primitive::<Float64Type>().value(0)
}

fn count(b: &[RecordBatch]) -> i64 {
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

fn p(name: &str, value: &str) -> (String, String) {
    (name.to_string(), value.to_string())
}

#[test]
fn named_parameters_bind_as_typed_literals() {
    let dir = tempfile::tempdir().unwrap();
    write_aggregates(dir.path());
    let s = QuerySession::open(dir.path()).unwrap();
    let q = "SELECT count(*) FROM aggregates WHERE metric = $metric AND mean > $limit";
    // `$limit` compares with a float column: bound as a float.
    let run = |params: &[(String, String)]| block_on(s.sql_with_params(q, params)).unwrap();
    let b = run(&[p("metric", "cpu_pct"), p("limit", "15")]).unwrap();
    assert_eq!(count(&b), 8, "a1 and a2 (means 20 and 30), 4 windows each");
    let b = run(&[p("metric", "cpu_pct"), p("limit", "20.5")]).unwrap();
    assert_eq!(count(&b), 4);
    // A value is a literal, never SQL: an injection attempt matches nothing.
    let b = run(&[p("metric", "x' OR '1'='1"), p("limit", "0")]).unwrap();
    assert_eq!(count(&b), 0);
    let b = block_on(s.sql_with_params(
        "SELECT max(mean) FROM aggregates WHERE agent = $a AND metric = 'cpu_pct'",
        &[p("a", "a1")],
    ))
    .unwrap()
    .unwrap();
    assert_eq!(one_f64(&b), 20.0);

    let err = |params: &[(String, String)]| {
        block_on(s.sql_with_params(q, params))
            .unwrap()
            .unwrap_err()
            .to_string()
    };
    let e = err(&[p("metric", "cpu_pct")]);
    assert!(e.contains("$limit") && e.contains("no value given"), "{e}");
    let e = err(&[p("metric", "cpu_pct"), p("limit", "1"), p("tenant", "t1")]);
    assert!(
        e.contains("$tenant") && e.contains("it has $limit, $metric"),
        "{e}"
    );
    let e = err(&[p("metric", "cpu_pct"), p("limit", "lots")]);
    assert!(
        e.contains("$limit") && e.contains("\"lots\" is not a Float64"),
        "{e}"
    );
    let e = err(&[p("metric", "a"), p("metric", "b"), p("limit", "1")]);
    assert!(e.contains("given twice"), "{e}");
    let e = block_on(s.sql_with_params("SELECT 1", &[p("x", "1")]))
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(e.contains("no $placeholders"), "{e}");
}

#[test]
fn explain_shows_the_plan_and_analyze_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    write_aggregates(dir.path());
    let s = QuerySession::open(dir.path()).unwrap();
    let q = "SELECT agent, avg(mean) FROM aggregates WHERE date = '2026-11-03' AND mean > $m GROUP BY agent";
    let text = |analyze: bool| {
        let b = block_on(s.explain(q, &[p("m", "5")], analyze))
            .unwrap()
            .unwrap();
        render(&b, Format::Csv).unwrap()
    };
    let plan = text(false);
    assert!(
        plan.contains("logical_plan") && plan.contains("physical_plan"),
        "{plan}"
    );
    // The parameter is bound in the plan, and the date prunes directories.
    assert!(plan.contains("mean > Float64(5)"), "{plan}");
    assert!(
        plan.contains("date=2026-11-03") && !plan.contains("date=2026-11-02"),
        "{plan}"
    );
    let analyzed = text(true);
    assert!(analyzed.contains("output_rows="), "{analyzed}");
}

/// Files that appear and disappear while queries run (a worker
/// publishing, compaction or retention removing): no query fails, each
/// sees either state of every file, never a row twice.
#[test]
fn queries_survive_files_that_come_and_go() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    write_aggregates(dir.path());
    let s = QuerySession::open(dir.path()).unwrap();
    let base = count(
        &block_on(s.sql("SELECT count(*) FROM aggregates"))
            .unwrap()
            .unwrap(),
    );
    // Each extra file holds 2 rows: 3 agents x 2 metrics x 4 windows = 24
    // rows in the base file.
    assert_eq!(base, 24);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let root = dir.path().to_path_buf();
        let stop = &stop;
        scope.spawn(move || {
            let mut k = 0i64;
            while !stop.load(Ordering::Relaxed) {
                // Publish a file of 2 rows, then remove it.
                let cfg = WriterConfig {
                    sync: false,
                    ..WriterConfig::default()
                };
                let mut w = AggregatesWriter::new(&root, cfg).unwrap();
                let start = MIDNIGHT + (k % 60) * W;
                w.push(&window("x", "cpu_pct", start, &[1.0]));
                w.push(&window("x", "mem_pct", start, &[1.0]));
                let r = SourceRange {
                    source: "churn",
                    partition: 0,
                    first_offset: k * 10,
                    last_offset: k * 10 + 9,
                    tick: 0,
                };
                w.flush(r).unwrap();
                let day = root.join("aggregates").join("date=2026-11-03");
                for e in std::fs::read_dir(&day).unwrap().flatten() {
                    if e.file_name().to_string_lossy().contains("churn") {
                        std::fs::remove_file(e.path()).unwrap();
                    }
                }
                k += 1;
            }
        });
        for _ in 0..400 {
            let b = block_on(s.sql("SELECT count(*), sum(mean) FROM aggregates"))
                .unwrap()
                .unwrap_or_else(|e| panic!("a query failed under churn: {e}"));
            let n = count(&b);
            assert!(n == base || n == base + 2, "{n} rows");
        }
        stop.store(true, Ordering::Relaxed);
    });
}

/// An object store that, once armed, removes a listed file right after
/// listing it: the moment compaction or retention can hit a query.
#[derive(Debug)]
struct VanishingStore {
    inner: crate::listing::RuleStore,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Display for VanishingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VanishingStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl datafusion::object_store::ObjectStore for VanishingStore {
    async fn put_opts(
        &self,
        location: &datafusion::object_store::path::Path,
        payload: datafusion::object_store::PutPayload,
        opts: datafusion::object_store::PutOptions,
    ) -> datafusion::object_store::Result<datafusion::object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &datafusion::object_store::path::Path,
        opts: datafusion::object_store::PutMultipartOptions,
    ) -> datafusion::object_store::Result<Box<dyn datafusion::object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &datafusion::object_store::path::Path,
        options: datafusion::object_store::GetOptions,
    ) -> datafusion::object_store::Result<datafusion::object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures_util::stream::BoxStream<
            'static,
            datafusion::object_store::Result<datafusion::object_store::path::Path>,
        >,
    ) -> futures_util::stream::BoxStream<
        'static,
        datafusion::object_store::Result<datafusion::object_store::path::Path>,
    > {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&datafusion::object_store::path::Path>,
    ) -> futures_util::stream::BoxStream<
        'static,
        datafusion::object_store::Result<datafusion::object_store::ObjectMeta>,
    > {
        use futures_util::{StreamExt, TryStreamExt};
        let all = self.inner.list(prefix);
        let armed = self.armed.clone();
        futures_util::stream::once(async move {
            let listed: Vec<datafusion::object_store::ObjectMeta> = all.try_collect().await?;
            if armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                let victim = listed
                    .iter()
                    .find(|o: &&datafusion::object_store::ObjectMeta| {
                        o.location.as_ref().contains("churn")
                    })
                    .expect("a file to remove");
                std::fs::remove_file(format!("/{}", victim.location)).unwrap();
            }
            Ok::<_, datafusion::object_store::Error>(futures_util::stream::iter(
                listed.into_iter().map(Ok),
            ))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&datafusion::object_store::path::Path>,
    ) -> datafusion::object_store::Result<datafusion::object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &datafusion::object_store::path::Path,
        to: &datafusion::object_store::path::Path,
        options: datafusion::object_store::CopyOptions,
    ) -> datafusion::object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A file listed by a query and removed before it is read: the query
/// plans again over the files then present and gives their result.
#[test]
fn a_file_removed_between_listing_and_reading_replans() {
    let dir = tempfile::tempdir().unwrap();
    write_aggregates(dir.path());
    let mut w = AggregatesWriter::new(dir.path(), WriterConfig::default()).unwrap();
    w.push(&window("x", "cpu_pct", MIDNIGHT, &[1.0]));
    w.flush(SourceRange {
        source: "churn",
        partition: 0,
        first_offset: 0,
        last_offset: 0,
        tick: 0,
    })
    .unwrap();
    let s = QuerySession::open(dir.path()).unwrap();
    let store = Arc::new(VanishingStore {
        inner: crate::listing::RuleStore::new(Arc::new(
            datafusion::object_store::local::LocalFileSystem::new(),
        )),
        armed: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    });
    s.context().register_object_store(
        datafusion::execution::object_store::ObjectStoreUrl::local_filesystem().as_ref(),
        store.clone(),
    );
    let b = block_on(s.sql("SELECT count(*), sum(mean) FROM aggregates"))
        .unwrap()
        .unwrap();
    assert!(
        !store.armed.load(std::sync::atomic::Ordering::SeqCst),
        "the file was removed"
    );
    assert_eq!(count(&b), 24, "the rows of the files still there");
}

/// A session lists directories per query: files published after it
/// opened are read, files removed are not.
#[test]
fn a_session_sees_files_published_and_removed_after_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    write_aggregates(dir.path());
    let s = QuerySession::open(dir.path()).unwrap();
    let rows = || {
        count(
            &block_on(s.sql("SELECT count(*) FROM aggregates WHERE mean >= 0"))
                .unwrap()
                .unwrap(),
        )
    };
    assert_eq!(rows(), 24);
    let mut w = AggregatesWriter::new(dir.path(), WriterConfig::default()).unwrap();
    w.push(&window("x", "cpu_pct", MIDNIGHT, &[1.0]));
    w.flush(range(100)).unwrap();
    assert_eq!(rows(), 25, "a file published after the session opened");
    let day = dir.path().join("aggregates").join("date=2026-11-03");
    for e in std::fs::read_dir(&day).unwrap().flatten() {
        if e.file_name()
            .to_string_lossy()
            .contains("-00000000000000000100-")
        {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    assert_eq!(rows(), 24, "and gone once removed");
}

/// The `audit` table reads the audit files two starts wrote (the rules
/// snapshot beside them is not a table file), and a tenant scope keeps
/// its rows (they belong to workers, not tenants).
#[test]
fn audit_table_reads_the_recorded_starts() {
    use vigil_ops::rules::{RuleSet, RulesMeta};
    use vigil_store::{record_start, AuditStart, Root};

    let dir = tempfile::tempdir().unwrap();
    let root = Root::local(dir.path());
    let rules = |v: &str| {
        RuleSet::from_toml(
            &format!(
                "[[threshold]]\nname = \"cpu_high\"\nmetric = \"cpu_pct\"\naggregate = \"mean\"\n\
                 op = \">\"\nvalue = {v}\nseverity = \"warning\"\n"
            ),
            "rules.toml",
        )
        .unwrap()
    };
    let meta = RulesMeta::default();
    for (at, v) in [(MIDNIGHT + HOUR, "90"), (MIDNIGHT + 2 * HOUR, "80")] {
        let start = AuditStart {
            at_ms: at,
            worker: "pod-a",
            pid: 1,
            command: "run",
            vigil_version: "0.1.0",
            rules_origin: None,
            meta: &meta,
        };
        record_start(&root, &WriterConfig::default(), &start, &rules(v)).unwrap();
    }
    let s = QuerySession::open(dir.path()).unwrap();
    let b = one(
        &s,
        "SELECT event, rule, fields, CAST(date AS VARCHAR) AS d FROM audit ORDER BY event_time, seq",
    );
    let col = |i: usize| -> Vec<Option<String>> {
        let c = datafusion::arrow::compute::cast(b.column(i), &DataType::Utf8).unwrap();
        c.as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_owned))
            .collect()
    };
    let some = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
    assert_eq!(
        col(0),
        some(&["rules_loaded", "rules_loaded", "rule_changed"])
    );
    assert_eq!(col(1), vec![None, None, Some("cpu_high".into())]);
    assert_eq!(col(2), vec![None, None, Some("clear,value".into())]);
    assert_eq!(col(3), some(&["2026-11-03"; 3]));
    let scoped = block_on(s.scoped(|d| {
        report::Scope {
            tenant: Some("t1".into()),
            ..report::Scope::default()
        }
        .expr(d)
    }))
    .unwrap()
    .unwrap();
    assert_eq!(
        one(&scoped, "SELECT count(*) FROM audit")
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        3
    );
}
