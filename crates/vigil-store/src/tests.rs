//! Writer tests: round trips through parquet's own Arrow reader, file
//! naming and replacement, date split, sort order, footer statistics and
//! the dead-letter sink.

use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, TimestampMillisecondType, UInt64Type};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::statistics::Statistics;
use vigil_ops::{
    Agg, AlertEvent, AlertStatus, DetectorKind, Position, RejectReason, Rejected, SeriesMeta,
    Severity, WindowAggregate,
};

use crate::*;

/// 2026-11-03T00:00:00Z.
pub(crate) const MIDNIGHT: i64 = 1_793_664_000_000;
pub(crate) const W: i64 = 60_000;

pub(crate) fn agg(
    tenant: &str,
    agent: &str,
    metric: &str,
    labels: &str,
    start: i64,
    v: f64,
) -> WindowAggregate {
    let mut a = Agg::new(start + 1_000, v);
    a.push(start + 2_000, v * 2.0);
    WindowAggregate {
        series: SeriesMeta::new(tenant, agent, metric, labels),
        start_ms: start,
        end_ms: start + W,
        agg: a,
    }
}

fn range(first: i64, last: i64) -> SourceRange<'static> {
    SourceRange {
        source: "rmm.telemetry.v1",
        partition: 2,
        first_offset: first,
        last_offset: last,
        tick: 0,
    }
}

fn cfg() -> WriterConfig {
    WriterConfig {
        row_group_rows: 4,
        ..WriterConfig::default()
    }
}

fn read(path: &Path) -> RecordBatch {
    let file = fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn strings(batch: &RecordBatch, col: &str) -> Vec<String> {
    let a = batch.column_by_name(col).unwrap().as_string::<i32>();
    (0..a.len()).map(|i| a.value(i).to_owned()).collect()
}

fn millis(batch: &RecordBatch, col: &str) -> Vec<i64> {
    batch
        .column_by_name(col)
        .unwrap()
        .as_primitive::<TimestampMillisecondType>()
        .values()
        .to_vec()
}

#[test]
fn aggregates_round_trip_through_parquet_arrow_reader() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = AggregatesWriter::new(dir.path(), cfg()).unwrap();
    let a = agg("t1", "a1", "cpu_pct", "", MIDNIGHT, 10.0);
    w.push(&a);
    assert_eq!(w.len(), 1);
    let report = w.flush(range(0, 9)).unwrap();
    assert!(w.is_empty());
    assert_eq!(report.rows, 1);
    assert_eq!(report.files.len(), 1);
    let f = &report.files[0];
    assert_eq!(f.date, "2026-11-03");
    assert!(f.bytes > 0);
    assert_eq!(
        f.path,
        dir.path().join("aggregates/date=2026-11-03/part-rmm.telemetry.v1-p00002-00000000000000000000-00000000000000000009.parquet")
    );

    let b = read(&f.path);
    assert_eq!(
        b.schema().fields(),
        aggregates_schema().fields(),
        "schema incl. UTC timestamps survives"
    );
    assert_eq!(strings(&b, "tenant"), ["t1"]);
    assert_eq!(strings(&b, "metric"), ["cpu_pct"]);
    assert_eq!(strings(&b, "labels"), [""]);
    assert_eq!(millis(&b, "window_start"), [MIDNIGHT]);
    assert_eq!(millis(&b, "window_end"), [MIDNIGHT + W]);
    assert_eq!(millis(&b, "last_ts"), [MIDNIGHT + 2_000]);
    assert_eq!(
        b.column_by_name("count")
            .unwrap()
            .as_primitive::<UInt64Type>()
            .value(0),
        2
    );
    let f64s = |c: &str| {
        b.column_by_name(c)
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(0)
    };
    assert_eq!(
        (
            f64s("sum"),
            f64s("min"),
            f64s("max"),
            f64s("mean"),
            f64s("last")
        ),
        (30.0, 10.0, 20.0, 15.0, 20.0)
    );
}

pub(crate) fn alert(agent: &str, status: AlertStatus, t: i64) -> AlertEvent {
    let resolved = status == AlertStatus::Resolved;
    AlertEvent {
        id: format!("id-{agent}"),
        fingerprint: "fp".into(),
        rule: "disk_fill".into(),
        kind: DetectorKind::Trend,
        severity: Severity::Warning,
        status,
        suppressed: resolved,
        tenant: "t1".into(),
        agent: agent.into(),
        hostname: if resolved {
            None
        } else {
            Some("host-1".into())
        },
        metric: Some("disk_used_pct".into()),
        labels: "mount=/data".into(),
        value: Some(91.5),
        threshold: None,
        predicted_at_ms: if resolved { None } else { Some(t + 3_600_000) },
        window_start_ms: Some(t - W),
        window_end_ms: Some(t),
        started_at_ms: t,
        resolved_at_ms: resolved.then_some(t),
        resolve_reason: resolved.then_some(vigil_ops::model::ResolveReason::Cleared),
        flaps: None,
        event_time_ms: t,
        summary: "disk /data predicted full".into(),
    }
}

#[test]
fn alerts_round_trip_with_nulls() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = AlertsWriter::new(dir.path(), cfg()).unwrap();
    w.push(&alert("a2", AlertStatus::Resolved, MIDNIGHT + 10));
    w.push(&alert("a1", AlertStatus::Firing, MIDNIGHT + 5));
    let report = w.flush(range(5, 5)).unwrap();
    assert_eq!(report.files.len(), 1);
    let b = read(&report.files[0].path);
    assert_eq!(b.schema().fields(), alerts_schema().fields());
    assert_eq!(
        strings(&b, "agent"),
        ["a1", "a2"],
        "sorted by tenant, agent, rule, event_time, status"
    );
    assert_eq!(strings(&b, "kind"), ["trend", "trend"]);
    assert_eq!(strings(&b, "status"), ["firing", "resolved"]);
    assert_eq!(strings(&b, "severity"), ["warning", "warning"]);
    let host = b.column_by_name("hostname").unwrap();
    assert!(host.is_valid(0) && host.is_null(1));
    let threshold = b.column_by_name("threshold").unwrap();
    assert_eq!(threshold.null_count(), 2);
    let resolved = b
        .column_by_name("resolved_at")
        .unwrap()
        .as_primitive::<TimestampMillisecondType>();
    assert!(resolved.is_null(0));
    assert_eq!(resolved.value(1), MIDNIGHT + 10);
    assert_eq!(millis(&b, "event_time"), [MIDNIGHT + 5, MIDNIGHT + 10]);
    let suppressed = b.column_by_name("suppressed").unwrap().as_boolean();
    assert!(!suppressed.value(0) && suppressed.value(1));
}

#[test]
fn reflushing_the_same_range_replaces_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = AggregatesWriter::new(dir.path(), cfg()).unwrap();
    let mut paths = Vec::new();
    for v in [1.0, 2.0] {
        w.push(&agg("t1", "a1", "cpu_pct", "", MIDNIGHT, v));
        let r = w.flush(range(100, 200)).unwrap();
        paths.push(r.files[0].path.clone());
    }
    assert_eq!(paths[0], paths[1], "deterministic name");
    let files = tree(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let b = read(&paths[0]);
    assert_eq!(b.num_rows(), 1);
    assert_eq!(
        b.column_by_name("min")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(0),
        2.0,
        "second flush won"
    );

    // Another range is another file.
    w.push(&agg("t1", "a1", "cpu_pct", "", MIDNIGHT + W, 3.0));
    w.flush(range(201, 300)).unwrap();
    assert_eq!(tree(dir.path()).len(), 2);
}

#[test]
fn rows_split_by_utc_date_across_midnight() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = AggregatesWriter::new(dir.path(), cfg()).unwrap();
    w.push(&agg("t1", "a1", "cpu_pct", "", MIDNIGHT, 2.0));
    w.push(&agg("t1", "a1", "cpu_pct", "", MIDNIGHT - W, 1.0));
    w.push(&agg(
        "t1",
        "a0",
        "cpu_pct",
        "",
        MIDNIGHT + 86_400_000 - W,
        3.0,
    ));
    let report = w.flush(range(0, 2)).unwrap();
    let dates: Vec<_> = report.files.iter().map(|f| f.date.as_str()).collect();
    assert_eq!(dates, ["2026-11-02", "2026-11-03"]);
    assert_eq!(report.rows, 3);
    assert_eq!(
        report.files.iter().map(|f| f.rows).collect::<Vec<_>>(),
        [1, 2]
    );
    let name = "part-rmm.telemetry.v1-p00002-00000000000000000000-00000000000000000002.parquet";
    assert_eq!(
        tree(dir.path()),
        [
            format!("aggregates/date=2026-11-02/{name}"),
            format!("aggregates/date=2026-11-03/{name}")
        ]
    );
    // The date directory matches window_start's UTC day in every file.
    for f in &report.files {
        for ms in millis(&read(&f.path), "window_start") {
            assert_eq!(naming::date_string(naming::day_of(ms)).unwrap(), f.date);
        }
    }
}

#[test]
fn no_tmp_files_are_left_and_empty_flush_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = AggregatesWriter::new(dir.path(), cfg()).unwrap();
    let r = w.flush(range(0, 0)).unwrap();
    assert!(r.files.is_empty());
    assert!(
        !dir.path().join("aggregates").exists(),
        "nothing created for an empty flush"
    );
    for i in 0..10 {
        w.push(&agg(
            "t1",
            "a1",
            "cpu_pct",
            "",
            MIDNIGHT + i * 3_600_000 * 3,
            1.0,
        ));
    }
    w.flush(range(0, 9)).unwrap();
    let files = tree(dir.path());
    assert_eq!(files.len(), 2);
    assert!(
        files
            .iter()
            .all(|f| !f.contains(naming::TMP_PREFIX) && f.ends_with(".parquet")),
        "{files:?}"
    );
}

/// (agent, metric, window start) of each row of an aggregates file, in
/// file order.
fn agent_metric_start(path: &Path) -> Vec<(String, String, i64)> {
    let b = read(path);
    strings(&b, "agent")
        .into_iter()
        .zip(strings(&b, "metric"))
        .zip(millis(&b, "window_start"))
        .map(|((a, m), t)| (a, m, t))
        .collect()
}

#[test]
fn rows_are_sorted_by_series_then_window_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = AggregatesWriter::new(dir.path(), cfg()).unwrap();
    let mut expected = Vec::new();
    // Deterministic shuffle of 4 agents x 2 metrics x 3 windows.
    for i in (0..24).map(|i| (i * 7) % 24) {
        let (agent, metric, k) = (
            format!("a{}", i % 4),
            ["mem_pct", "cpu_pct"][(i / 4) % 2],
            (i / 8) as i64,
        );
        w.push(&agg("t1", &agent, metric, "", MIDNIGHT + k * W, i as f64));
        expected.push((agent, metric.to_owned(), MIDNIGHT + k * W));
    }
    expected.sort();
    let r = w.flush(range(0, 23)).unwrap();
    assert_eq!(agent_metric_start(&r.files[0].path), expected);
}

/// The sort compares interned keys by pointer first: rows that share an
/// agent's or a series' key and rows with equal strings in keys of their
/// own (a restored state, another partition's) sort the same.
#[test]
fn rows_sort_the_same_with_shared_and_separate_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = AggregatesWriter::new(dir.path(), cfg()).unwrap();
    let shared: Vec<SeriesMeta> = (0..6)
        .map(|i| SeriesMeta::new("t1", &format!("a{}", i % 3), ["mem", "cpu"][i / 3], "x=1"))
        .collect();
    let mut expected = Vec::new();
    for i in (0..48).map(|i| (i * 11) % 48) {
        let s = &shared[i % 6];
        let k = (i / 6) as i64;
        // Odd windows: a key of its own with the same strings.
        let series = if k % 2 == 1 {
            SeriesMeta::new(s.tenant(), s.agent(), s.metric(), s.labels())
        } else {
            s.clone()
        };
        let mut row = agg("t1", "-", "-", "", MIDNIGHT + k * W, i as f64);
        row.series = series;
        w.push(&row);
        expected.push((
            s.agent().to_owned(),
            s.metric().to_owned(),
            MIDNIGHT + k * W,
        ));
    }
    expected.sort();
    let r = w.flush(range(0, 47)).unwrap();
    assert_eq!(agent_metric_start(&r.files[0].path), expected);
}

#[test]
fn footer_has_statistics_page_index_and_sorting_columns() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = AggregatesWriter::new(dir.path(), cfg()).unwrap();
    for k in 0..10 {
        w.push(&agg("t1", "a1", "cpu_pct", "", MIDNIGHT + k * W, 1.0));
    }
    let r = w.flush(range(0, 9)).unwrap();
    let file = fs::File::open(&r.files[0].path).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
        file,
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
    )
    .unwrap();
    let meta = builder.metadata();
    assert_eq!(meta.num_row_groups(), 3, "row_group_rows = 4");
    let ws = aggregates_schema().index_of("window_start").unwrap();
    for (i, rg) in meta.row_groups().iter().enumerate() {
        let col = rg.column(ws);
        // The level is not recorded in the footer, only the codec.
        assert!(matches!(
            col.compression(),
            parquet::basic::Compression::ZSTD(_)
        ));
        match col.statistics() {
            Some(Statistics::Int64(s)) => {
                assert_eq!(s.min_opt(), Some(&(MIDNIGHT + 4 * i as i64 * W)));
                assert_eq!(
                    s.max_opt(),
                    Some(&(MIDNIGHT + (4 * i as i64 + 3).min(9) * W))
                );
            }
            other => panic!("window_start statistics missing: {other:?}"),
        }
        let sorting = rg.sorting_columns().expect("sorting_columns set");
        let names: Vec<_> = sorting
            .iter()
            .map(|s| {
                aggregates_schema()
                    .field(s.column_idx as usize)
                    .name()
                    .clone()
            })
            .collect();
        assert_eq!(names, Dataset::Aggregates.sort_columns());
    }
    assert!(
        meta.column_index().is_some(),
        "page index (column index) written"
    );
    assert!(meta.offset_index().is_some());
    let kv = meta.file_metadata().key_value_metadata().unwrap();
    let get = |k: &str| kv.iter().find(|e| e.key == k).and_then(|e| e.value.clone());
    assert_eq!(get("vigil.source").as_deref(), Some("rmm.telemetry.v1"));
    assert_eq!(get("vigil.last_offset").as_deref(), Some("9"));
}

#[test]
fn failed_flush_keeps_rows_for_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = AggregatesWriter::new(dir.path(), cfg()).unwrap();
    w.push(&agg("t1", "a1", "cpu_pct", "", MIDNIGHT, 1.0));
    // Invalid range: refused before anything is taken.
    assert!(matches!(
        w.flush(range(5, 4)),
        Err(StoreError::InvalidRange { .. })
    ));
    assert_eq!(w.len(), 1);
    // The dataset path is a file: the write fails.
    fs::write(dir.path().join("aggregates"), b"in the way").unwrap();
    let err = w.flush(range(0, 1)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Io {
                op: "create dir",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(w.len(), 1);
    fs::remove_file(dir.path().join("aggregates")).unwrap();
    w.push(&agg("t1", "a1", "cpu_pct", "", MIDNIGHT + W, 2.0));
    let r = w.flush(range(0, 1)).unwrap();
    assert_eq!(r.rows, 2);
    w.push(&agg("t1", "a1", "cpu_pct", "", MIDNIGHT + W, 2.0));
    w.discard();
    assert!(w.is_empty());
}

#[test]
fn invalid_config_is_refused() {
    let bad = WriterConfig {
        row_group_rows: 0,
        ..WriterConfig::default()
    };
    assert!(matches!(
        AggregatesWriter::new("/nonexistent", bad),
        Err(StoreError::Config {
            field: "row_group_rows",
            ..
        })
    ));
    let bad = WriterConfig {
        zstd_level: 30,
        ..WriterConfig::default()
    };
    assert!(matches!(
        AlertsWriter::new("/nonexistent", bad),
        Err(StoreError::Config {
            field: "zstd_level",
            ..
        })
    ));
    let parsed: WriterConfig = serde_json::from_str(r#"{"zstd_level": 5}"#).unwrap();
    assert_eq!(
        parsed,
        WriterConfig {
            zstd_level: 5,
            ..WriterConfig::default()
        }
    );
    assert!(serde_json::from_str::<WriterConfig>(r#"{"zstd": 5}"#).is_err());
}

fn rejected(reason: RejectReason, offset: i64) -> Rejected {
    Rejected {
        reason,
        detail: format!("detail {offset}"),
        position: Position {
            partition: 2,
            offset,
        },
        tenant: Some("t1".into()),
        agent: None,
        seq: Some(7),
        metric: Some("cpu_pct".into()),
        labels: Some("".into()),
        points: vec![
            (1, 1.5),
            (2, f64::NAN),
            (3, f64::INFINITY),
            (4, f64::NEG_INFINITY),
        ],
        point_count: 4,
        raw: (reason == RejectReason::Decode).then(|| vec![0xff, 0x00, 0x10]),
    }
}

#[test]
fn dlq_writes_json_lines_with_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = DlqWriter::new(dir.path(), "rmm.telemetry.v1", true);
    assert_eq!(w.flush(range(0, 0)).unwrap().path, None);
    w.push(&rejected(RejectReason::NonFinite, 10)).unwrap();
    w.push(&rejected(RejectReason::Decode, 11)).unwrap();
    w.push(&rejected(RejectReason::NonFinite, 12)).unwrap();
    let r = w.flush(range(10, 12)).unwrap();
    assert_eq!(r.counts.get(RejectReason::NonFinite), 2);
    assert_eq!(r.counts.get(RejectReason::Decode), 1);
    assert_eq!(r.counts.total(), 3);
    assert_eq!(
        r.counts.iter().collect::<Vec<_>>(),
        [(RejectReason::Decode, 1), (RejectReason::NonFinite, 2)]
    );
    let path: PathBuf = r.path.unwrap();
    assert_eq!(
        path,
        dir.path().join(
            "dlq/dlq-rmm.telemetry.v1-p00002-00000000000000000010-00000000000000000012.jsonl"
        )
    );
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(r.bytes, text.len() as u64);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["reason"], "non_finite");
    assert_eq!(lines[0]["offset"], 10);
    assert_eq!(lines[0]["partition"], 2);
    assert_eq!(lines[0]["agent"], serde_json::Value::Null);
    assert_eq!(
        lines[0]["points"],
        serde_json::json!([[1, 1.5], [2, "NaN"], [3, "inf"], [4, "-inf"]])
    );
    assert_eq!(lines[0]["raw"], serde_json::Value::Null);
    assert_eq!(lines[1]["raw"], "/wAQ");
    assert_eq!(lines[1]["seq"], 7);
    assert!(w.is_empty());

    // Replay of the same range replaces the file.
    w.push(&rejected(RejectReason::Late, 10)).unwrap();
    w.flush(range(10, 12)).unwrap();
    assert_eq!(tree(dir.path()).len(), 1);
    assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 1);
}

/// Writes a small dataset to `VIGIL_INTEROP_DIR` (default
/// `target/interop-data`) for `tests/interop/check_parquet.py`:
/// `cargo test -p vigil-store -- --ignored write_interop_dataset`.
#[test]
#[ignore = "writes a dataset for the python interop check"]
fn write_interop_dataset() {
    let root = std::env::var_os("VIGIL_INTEROP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/interop-data"));
    let _ = fs::remove_dir_all(&root);
    let mut aggs = AggregatesWriter::new(&root, WriterConfig::default()).unwrap();
    let mut alerts = AlertsWriter::new(&root, WriterConfig::default()).unwrap();
    let mut n = 0;
    for agent in 0..5 {
        for k in -30..30 {
            aggs.push(&agg(
                "t1",
                &format!("a{agent}"),
                "cpu_pct",
                "",
                MIDNIGHT + k * W,
                k as f64,
            ));
            aggs.push(&agg(
                "t1",
                &format!("a{agent}"),
                "disk_used_pct",
                "mount=/data",
                MIDNIGHT + k * W,
                50.0,
            ));
            n += 2;
        }
        alerts.push(&alert(
            &format!("a{agent}"),
            AlertStatus::Firing,
            MIDNIGHT - 1,
        ));
        alerts.push(&alert(
            &format!("a{agent}"),
            AlertStatus::Resolved,
            MIDNIGHT + 1,
        ));
    }
    aggs.flush(range(0, 99)).unwrap();
    alerts.flush(range(0, 99)).unwrap();
    println!(
        "{{\"root\":{:?},\"aggregates\":{n},\"alerts\":10}}",
        root.display().to_string()
    );
}

#[test]
fn dlq_lines_are_bounded_and_full_copies_named_by_rank_in_their_record() {
    let dir = tempfile::tempdir().unwrap();
    let budget = crate::LetterBudget::new(crate::bound::MIN_LETTER_BYTES).unwrap();
    let mut w = DlqWriter::new(dir.path(), "rmm.t", false).with_budget(budget);
    let mut big = rejected(RejectReason::NonFinite, 5);
    big.points = (0..5_000).map(|i| (i, f64::NAN)).collect();
    big.point_count = 5_000;
    // Two letters of one record (two series), then one of the next.
    w.push(&big).unwrap();
    w.push(&big).unwrap();
    let before = w.buffered_bytes();
    w.push(&rejected(RejectReason::Late, 6)).unwrap();
    assert!(w.buffered_bytes() - before < 1000);
    let mut next = big.clone();
    next.position.offset = 6;
    w.push(&next).unwrap();
    let r = w.flush(range(5, 6)).unwrap();
    assert_eq!((r.counts.total(), r.truncated), (4, 3));
    let text = fs::read_to_string(r.path.unwrap()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| {
            assert!(l.len() <= budget.max_bytes(), "{}", l.len());
            serde_json::from_str(l).unwrap()
        })
        .collect();
    let paths: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["full_path"].as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "dlq/full/full-rmm.t-p00002-00000000000000000005-0000.json",
            "dlq/full/full-rmm.t-p00002-00000000000000000005-0001.json",
            "dlq/full/full-rmm.t-p00002-00000000000000000006-0001.json",
        ]
    );
    for p in paths {
        let full: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join(p)).unwrap()).unwrap();
        assert_eq!(full["points"].as_array().unwrap().len(), 5_000);
    }
    assert_eq!(lines[2]["truncated"], false);
}

/// The same flushes, checkpoints and sweep against an object store
/// (object_store's in-memory one, which implements the conditional PUT
/// like S3): the objects are byte for byte the local files.
mod object_root {
    use std::sync::Arc;

    use object_store::memory::InMemory;

    use super::*;

    fn roots() -> (tempfile::TempDir, Root, Root) {
        let dir = tempfile::tempdir().unwrap();
        let local = Root::local(dir.path());
        let obj = Root::s3_with_store("bucket", "some/prefix", Arc::new(InMemory::new()));
        (dir, local, obj)
    }

    fn keys(root: &Root) -> Vec<String> {
        let mut k: Vec<String> = root
            .as_object()
            .unwrap()
            .list("")
            .unwrap()
            .into_iter()
            .map(|o| o.location.to_string())
            .collect();
        k.sort();
        k
    }

    #[test]
    fn flushes_put_the_local_files_bytes_under_the_same_names() {
        let (dir, local, obj) = roots();
        let rows = [
            agg("t1", "a1", "cpu_pct", "", MIDNIGHT - W, 50.0),
            agg("t1", "a1", "cpu_pct", "", MIDNIGHT, 60.0),
            agg("t0", "a2", "mem_pct", "", MIDNIGHT, 10.0),
        ];
        let mut reports = Vec::new();
        for root in [&local, &obj] {
            let mut w = AggregatesWriter::at(root, cfg()).unwrap();
            let mut d = DlqWriter::at(root, "rmm.telemetry.v1", false);
            for r in &rows {
                w.push(r);
            }
            d.push(&rejected(RejectReason::Late, 7)).unwrap();
            reports.push(w.flush(range(0, 9)).unwrap());
            d.flush(range(0, 9)).unwrap();
        }
        let want = tree(dir.path());
        assert_eq!(
            keys(&obj),
            want,
            "the same layout under the prefix, no temporary object"
        );
        for name in &want {
            let got = obj.as_object().unwrap().get(name).unwrap().unwrap();
            assert_eq!(
                &got[..],
                &fs::read(dir.path().join(name)).unwrap()[..],
                "{name}"
            );
        }
        assert_eq!(reports[0].rows, reports[1].rows);
        assert!(reports[1].files[0]
            .path
            .to_string_lossy()
            .starts_with("s3://bucket/some/prefix/aggregates/date="));
    }

    #[test]
    fn checkpoints_replace_and_read_back() {
        let (_dir, _local, obj) = roots();
        let s = CheckpointStore::at(&obj);
        assert!(s.load("rmm.telemetry.v1", 3).unwrap().is_none());
        assert!(s
            .open("rmm.telemetry.v1", 3, Generation::Newest)
            .unwrap()
            .is_none());
        s.save("rmm.telemetry.v1", 3, b"one").unwrap();
        let (path, n) = s
            .save_with("rmm.telemetry.v1", 3, |w| w.write_all(b"two!"))
            .unwrap();
        assert_eq!(n, 4);
        assert_eq!(
            path,
            PathBuf::from("s3://bucket/some/prefix/rmm.telemetry.v1/p00003.ckpt")
        );
        assert_eq!(s.load("rmm.telemetry.v1", 3).unwrap().unwrap(), b"two!");
        let newest = s
            .open("rmm.telemetry.v1", 3, Generation::Newest)
            .unwrap()
            .unwrap();
        assert!(newest.verified);
        let mut back = String::new();
        std::io::Read::read_to_string(&mut newest.reader().unwrap(), &mut back).unwrap();
        assert_eq!(back, "two!");
        let prev = s
            .open("rmm.telemetry.v1", 3, Generation::Previous)
            .unwrap()
            .unwrap();
        let mut back = String::new();
        std::io::Read::read_to_string(&mut prev.reader().unwrap(), &mut back).unwrap();
        assert_eq!(back, "one", "the previous generation, copied on the store");
        // A failed encoding leaves the last checkpoint.
        assert!(s
            .save_with("rmm.telemetry.v1", 3, |_| Err(std::io::Error::other("no")))
            .is_err());
        assert_eq!(s.load("rmm.telemetry.v1", 3).unwrap().unwrap(), b"two!");
        assert_eq!(
            keys(&obj),
            vec![
                "rmm.telemetry.v1/p00003.ckpt",
                "rmm.telemetry.v1/p00003.ckpt.prev"
            ]
        );
    }

    #[test]
    fn a_large_checkpoint_goes_up_in_parts_and_reads_back_whole() {
        let (_dir, _local, obj) = roots();
        let s = CheckpointStore::at(&obj);
        let chunk: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        let parts = 2 * crate::location::PART_BYTES / chunk.len() + 3;
        let (_, n) = s
            .save_with("t", 0, |w| {
                for _ in 0..parts {
                    w.write_all(&chunk)?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(n as usize, parts * chunk.len());
        let back = s.load("t", 0).unwrap().unwrap();
        assert_eq!(back.len(), parts * chunk.len());
        assert!(back.chunks(chunk.len()).all(|c| c == &chunk[..]));
        // A failure after some parts went up keeps the old checkpoint.
        let failed = s.save_with("t", 0, |w| {
            for _ in 0..parts {
                w.write_all(b"new")?;
                w.write_all(&chunk)?;
            }
            Err(std::io::Error::other("encoder failed"))
        });
        assert!(failed.is_err());
        assert_eq!(s.load("t", 0).unwrap().unwrap(), back);
        assert_eq!(keys(&obj), vec!["t/p00000.ckpt", "t/p00000.ckpt.prev"]);
    }

    #[test]
    fn the_local_sweep_removes_orphaned_temporary_files_of_the_partition() {
        let d = tempfile::tempdir().unwrap();
        let day = d.path().join("aggregates/date=2026-11-02");
        fs::create_dir_all(&day).unwrap();
        let f = |p: i32, a: i64, b: i64| format!("part-rmm.t-p{p:05}-{a:020}-{b:020}.parquet");
        let orphan = crate::atomic::tmp_path(&day, &f(1, 10, 19));
        let other = crate::atomic::tmp_path(&day, &f(2, 10, 19));
        let done = day.join(f(1, 0, 9));
        for p in [&orphan, &other, &done] {
            fs::write(p, b"x").unwrap();
        }
        assert_eq!(
            remove_partition_files_from(d.path(), "rmm.t", 1, 10, 0, None).unwrap(),
            1
        );
        assert!(!orphan.exists(), "the dead writer's file of this partition");
        assert!(other.exists(), "another partition's writer may be alive");
        assert!(done.exists(), "before the checkpoint");
    }

    #[test]
    fn the_sweep_lists_the_store_and_removes_only_files_from_the_offset() {
        let (_dir, _local, obj) = roots();
        let o = obj.as_object().unwrap();
        let f = |p: i32, a: i64, b: i64| format!("part-rmm.t-p{p:05}-{a:020}-{b:020}.parquet");
        let kept = [
            format!("aggregates/date=2026-11-02/{}", f(1, 0, 9)),
            format!("alerts/date=2026-11-02/{}", f(2, 10, 19)),
            "dlq/full/full-rmm.t-p00001-00000000000000000012-0000.pb".to_string(),
            format!("elsewhere/{}", f(1, 10, 19)),
        ];
        let gone = [
            format!("aggregates/date=2026-11-02/{}", f(1, 10, 19)),
            format!("aggregates/date=2026-11-03/{}", f(1, 10, 19)),
            "dlq/dlq-rmm.t-p00001-00000000000000000010-00000000000000000019.jsonl".to_string(),
        ];
        for k in kept.iter().chain(&gone) {
            o.put(k, b"x".to_vec(), object_store::PutMode::Overwrite)
                .unwrap();
        }
        assert_eq!(
            remove_partition_files_at(&obj, "rmm.t", 1, 10, 0, None).unwrap(),
            3
        );
        let mut want: Vec<String> = kept.to_vec();
        want.sort();
        assert_eq!(keys(&obj), want);
    }

    /// Tick files (output of processing time after a record, before the
    /// next) are swept by their place in the partition's sequence: with a
    /// checkpoint at record 10 holding 2 tick files after record 9, the
    /// ticks 1 and 2 after record 9 stay, tick 3 after it and every file
    /// from record 10 on go, on a directory and on an object store alike.
    #[test]
    fn the_sweep_keeps_the_tick_files_the_checkpoint_holds() {
        let name = |r: crate::SourceRange<'_>| r.file_name("part", "parquet").unwrap();
        let ticks = |after: i64, n: u32| name(crate::SourceRange::ticks("rmm.t", 1, after, n));
        let records = |a: i64, b: i64| name(crate::SourceRange::records("rmm.t", 1, a, b));
        let kept = [records(0, 9), ticks(8, 7), ticks(9, 1), ticks(9, 2)];
        let gone = [ticks(9, 3), records(10, 10), ticks(10, 1), records(11, 20)];
        let (_dir, local, obj) = roots();
        for root in [&local, &obj] {
            let at = |n: &str| format!("aggregates/date=2026-11-02/{n}");
            for n in kept.iter().chain(&gone) {
                match root.as_object() {
                    Some(o) => {
                        o.put(&at(n), b"x".to_vec(), object_store::PutMode::Overwrite)
                            .unwrap();
                    }
                    None => {
                        let p = root.display_path(&at(n));
                        fs::create_dir_all(p.parent().unwrap()).unwrap();
                        fs::write(p, b"x").unwrap();
                    }
                }
            }
            assert_eq!(
                remove_partition_files_at(root, "rmm.t", 1, 10, 2, None).unwrap(),
                gone.len()
            );
            for n in &kept {
                let left = match root.as_object() {
                    Some(o) => o.get(&at(n)).unwrap().is_some(),
                    None => root.display_path(&at(n)).exists(),
                };
                assert!(left, "{n} is held by the checkpoint");
            }
            for n in &gone {
                let left = match root.as_object() {
                    Some(o) => o.get(&at(n)).unwrap().is_some(),
                    None => root.display_path(&at(n)).exists(),
                };
                assert!(!left, "{n} lies after the checkpoint");
            }
        }
    }

    /// With the days of an intent record, the sweep lists only those
    /// days' directories (and `dlq/`): a matching file on another day is
    /// not looked at, on a directory and on an object store alike.
    #[test]
    fn the_sweep_with_an_intent_lists_only_its_days() {
        let f = |p: i32, a: i64, b: i64| format!("part-rmm.t-p{p:05}-{a:020}-{b:020}.parquet");
        let outside = format!("aggregates/date=2026-11-02/{}", f(1, 10, 19));
        let gone = [
            format!("aggregates/date=2026-11-03/{}", f(1, 10, 19)),
            format!("alerts/date=2026-11-04/{}", f(1, 10, 19)),
            "dlq/dlq-rmm.t-p00001-00000000000000000010-00000000000000000019.jsonl".to_string(),
        ];
        let day = |d: &str| {
            crate::naming::day_of(
                chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap()
                    .and_utc()
                    .timestamp_millis(),
            )
        };
        let mut only = crate::intent::DatasetDays::new();
        only.insert(crate::Dataset::Aggregates, day("2026-11-03"));
        only.insert(crate::Dataset::Alerts, day("2026-11-04"));
        only.insert(crate::Dataset::Status, day("2026-11-05"));
        let (_dir, local, obj) = roots();
        for root in [&local, &obj] {
            for k in gone.iter().chain([&outside]) {
                match root.as_object() {
                    Some(o) => {
                        o.put(k, b"x".to_vec(), object_store::PutMode::Overwrite)
                            .unwrap();
                    }
                    None => {
                        let p = root.display_path(k);
                        fs::create_dir_all(p.parent().unwrap()).unwrap();
                        fs::write(p, b"x").unwrap();
                    }
                }
            }
            assert_eq!(
                remove_partition_files_at(root, "rmm.t", 1, 10, 0, Some(&only)).unwrap(),
                gone.len()
            );
            let exists = |k: &str| match root.as_object() {
                Some(o) => o.get(k).unwrap().is_some(),
                None => root.display_path(k).exists(),
            };
            assert!(exists(&outside), "a day the intent does not name");
            assert!(gone.iter().all(|k| !exists(k)));
        }
    }

    #[test]
    fn source_file_names_parse_to_their_place() {
        use crate::replace::{parse_source_file, SourceFile};
        let parse = |n: &str| parse_source_file(n, "part", "rmm.t", "parquet");
        assert_eq!(
            parse("part-rmm.t-p00001-00000000000000000010-00000000000000000019.parquet"),
            Some(SourceFile {
                partition: 1,
                offset: 10,
                tick: 0
            })
        );
        assert_eq!(
            parse("part-rmm.t-p00001-00000000000000000009-t0000000000000000004.parquet"),
            Some(SourceFile {
                partition: 1,
                offset: 9,
                tick: 4
            })
        );
        for not in [
            "part-rmm.t-p00001-00000000000000000009-t0000000000000000000.parquet",
            "part-rmm.t-p00001-00000000000000000009-t000000000000000004.parquet",
            "part-rmm.t-p00001-00000000000000000009-x0000000000000000004.parquet",
            "part-rmm.t-p00001-t0000000000000000009-00000000000000000009.parquet",
            "part-rmm.t-p00001-00000000000000000009.parquet",
            "part-rmm.t2-p00001-00000000000000000010-00000000000000000019.parquet",
        ] {
            assert_eq!(parse(not), None, "{not}");
        }
        let f = SourceFile {
            partition: 0,
            offset: 9,
            tick: 2,
        };
        assert!(!f.after(10, 2) && f.after(10, 1) && !f.after(11, 0) && f.after(9, 5));
    }

    #[test]
    fn a_conditional_put_never_replaces_an_object() {
        let (_dir, _local, obj) = roots();
        let o = obj.as_object().unwrap();
        o.put("x", b"first".to_vec(), object_store::PutMode::Create)
            .unwrap();
        let e = o
            .put("x", b"second".to_vec(), object_store::PutMode::Create)
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::Object { source, .. } if matches!(**source, object_store::Error::AlreadyExists { .. })),
            "{e}"
        );
        assert_eq!(&o.get("x").unwrap().unwrap()[..], b"first");
    }
}

#[test]
fn status_and_security_events_round_trip_split_by_day_and_sorted() {
    use arrow::datatypes::UInt32Type;
    use vigil_ops::{SecurityEventRow, StatusRow};
    use vigil_proto::v1::{
        AntivirusStatus, BackupResult, BackupStatus, MissingPatches, PatchSeverity, SecurityEvent,
        SecurityEventKind, StatusReport,
    };

    let dir = tempfile::tempdir().unwrap();
    let status = |agent: &str, t: i64, patches: bool| StatusRow {
        tenant: "t".into(),
        agent: agent.into(),
        hostname: (agent == "a1").then(|| "host-1".into()),
        report: StatusReport {
            observed_at_ms: t,
            patches_reported: patches,
            missing_patches: if patches {
                vec![MissingPatches {
                    severity: PatchSeverity::Critical as i32,
                    count: 2,
                    oldest_missing_since_ms: t - 40 * 86_400_000,
                }]
            } else {
                vec![]
            },
            antivirus: Some(AntivirusStatus {
                product: "Defender".into(),
                enabled: false,
                definitions_updated_ms: t - 1000,
                last_scan_ms: 0,
            }),
            backup: Some(BackupStatus {
                last_result: BackupResult::Failed as i32,
                last_run_ms: t - 5000,
                last_success_ms: 0,
            }),
            agent_version: "5.9.1".into(),
            ..StatusReport::default()
        },
    };
    let mut w = StatusWriter::new(dir.path(), cfg()).unwrap();
    w.push(&status("a2", MIDNIGHT + 10, true));
    w.push(&status("a1", MIDNIGHT + 20, false));
    w.push(&status("a1", MIDNIGHT - 10, true));
    let report = w.flush(range(1, 3)).unwrap();
    assert_eq!(report.files.len(), 2, "one file per UTC day");
    let b = read(&report.files[1].path);
    assert_eq!(b.schema().fields(), status_schema().fields());
    assert_eq!(
        strings(&b, "agent"),
        ["a1", "a2"],
        "sorted by tenant, agent, observed_at"
    );
    assert_eq!(millis(&b, "observed_at"), [MIDNIGHT + 20, MIDNIGHT + 10]);
    let crit = b
        .column_by_name("missing_critical")
        .unwrap()
        .as_primitive::<UInt32Type>();
    assert!(crit.is_null(0), "patches not reported: null, not 0");
    assert_eq!(crit.value(1), 2);
    let imp = b
        .column_by_name("missing_important")
        .unwrap()
        .as_primitive::<UInt32Type>();
    assert!(imp.is_null(0) && imp.value(1) == 0);
    assert_eq!(strings(&b, "backup_result"), ["failed", "failed"]);
    assert_eq!(
        b.column_by_name("backup_last_success")
            .unwrap()
            .null_count(),
        2
    );
    assert!(!b
        .column_by_name("av_enabled")
        .unwrap()
        .as_boolean()
        .value(0));
    let host = b.column_by_name("hostname").unwrap();
    assert!(host.is_valid(0) && host.is_null(1));
    assert!(tree(dir.path())
        .iter()
        .all(|f| f.starts_with("status/date=2026-11-0")));

    let ev = |agent: &str, t: i64, kind: SecurityEventKind| SecurityEventRow {
        tenant: "t".into(),
        agent: agent.into(),
        hostname: None,
        event: SecurityEvent {
            timestamp_ms: t,
            kind: kind as i32,
            user: "admin".into(),
            source_address: "203.0.113.5".into(),
            ..SecurityEvent::default()
        },
    };
    let mut w = SecurityEventsWriter::new(dir.path(), cfg()).unwrap();
    w.push(&ev("a1", MIDNIGHT + 5, SecurityEventKind::LoginSuccess));
    w.push(&ev("a1", MIDNIGHT + 5, SecurityEventKind::LoginFailure));
    w.push(&ev("a0", MIDNIGHT + 9, SecurityEventKind::PrivilegeChange));
    let report = w.flush(range(4, 4)).unwrap();
    assert_eq!(report.files.len(), 1);
    let b = read(&report.files[0].path);
    assert_eq!(b.schema().fields(), security_events_schema().fields());
    assert_eq!(strings(&b, "agent"), ["a0", "a1", "a1"]);
    assert_eq!(
        strings(&b, "kind"),
        ["privilege_change", "login_failure", "login_success"]
    );
    let granted = b.column_by_name("granted").unwrap();
    assert!(
        granted.is_valid(0) && granted.is_null(1),
        "granted only for privilege changes"
    );
    assert_eq!(b.column_by_name("technician").unwrap().null_count(), 3);
    assert!(report.files[0]
        .path
        .to_string_lossy()
        .contains("security_events/date=2026-11-03/"));
}

/// The audit trail (`audit/`): three starts on a directory and on an
/// object store (the in-memory one the other object store tests use),
/// the same names and rows on both; an unchanged restart writes one row
/// with the previous digest, an edit writes its changes, a corrupt
/// snapshot is read as none.
#[test]
fn audit_trail_records_starts_and_changes_on_a_directory_and_an_object_store() {
    use std::sync::Arc;

    use arrow::datatypes::UInt32Type;
    use object_store::memory::InMemory;
    use vigil_ops::rules::{RuleSet, RulesMeta};

    use crate::audit::{read_previous, Previous, SNAPSHOT_PATH};

    const RULES: &str = "[[threshold]]\nname = \"cpu_high\"\nmetric = \"cpu_pct\"\n\
        aggregate = \"mean\"\nop = \">\"\nvalue = 90\nseverity = \"warning\"\n";
    let edited = format!(
        "{}\n[[threshold]]\nname = \"mem_high\"\nmetric = \"mem_pct\"\naggregate = \"mean\"\n\
         op = \">\"\nvalue = 95\nseverity = \"warning\"\n",
        RULES.replace("value = 90", "value = 85")
    );
    let rules = |t: &str| RuleSet::from_toml(t, "rules.toml").unwrap();
    let meta = RulesMeta {
        changed_by: Some("ops@example.com".into()),
        change_ref: Some("CHG-42".into()),
        changed_at_ms: Some(MIDNIGHT - 3_600_000),
        note: None,
    };
    let none = RulesMeta::default();
    let start = |at_ms, worker, meta| AuditStart {
        at_ms,
        worker,
        pid: 42,
        command: "run",
        vigil_version: "0.1.0",
        rules_origin: Some("/etc/vigil/rules.toml"),
        meta,
    };
    let dir = tempfile::tempdir().unwrap();
    let local = Root::local(dir.path());
    let obj = Root::s3_with_store("bucket", "some/prefix", Arc::new(InMemory::new()));
    let mut names = Vec::new();
    for root in [&local, &obj] {
        let bytes_of = |rel: &str| -> bytes::Bytes {
            match root.as_object() {
                Some(o) => o.get(rel).unwrap().unwrap(),
                None => fs::read(dir.path().join(rel)).unwrap().into(),
            }
        };
        let read_back = |report: &AuditReport| -> RecordBatch {
            let f = report.file.as_ref().unwrap();
            let rel = format!(
                "audit/date={}/{}",
                f.date,
                f.path.file_name().unwrap().to_string_lossy()
            );
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes_of(&rel))
                .unwrap()
                .build()
                .unwrap();
            let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
            arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
        };
        assert_eq!(read_previous(root).unwrap(), Previous::None);

        // First start: nothing to compare with.
        let first = record_start(
            root,
            &cfg(),
            &start(MIDNIGHT - 1, "w-1", &none),
            &rules(RULES),
        )
        .unwrap();
        assert_eq!(
            (first.previous_digest.as_deref(), first.changes.len()),
            (None, 0)
        );
        let b = read_back(&first);
        assert_eq!(b.num_rows(), 1);
        assert_eq!(strings(&b, "event"), ["rules_loaded"]);
        assert!(b.column_by_name("previous_digest").unwrap().is_null(0));
        assert!(strings(&b, "after")[0].contains("\"cpu_high\""));
        assert_eq!(first.file.as_ref().unwrap().date, "2026-11-02");

        // Unchanged restart of another worker: one row, same digest.
        let again = record_start(
            root,
            &cfg(),
            &start(MIDNIGHT + 5, "w-2", &none),
            &rules(RULES),
        )
        .unwrap();
        assert_eq!(
            again.previous_digest.as_deref(),
            Some(first.digest.as_str())
        );
        assert_eq!(
            (again.digest.as_str(), again.changes.len()),
            (first.digest.as_str(), 0)
        );
        let b = read_back(&again);
        assert_eq!(b.num_rows(), 1);
        assert_eq!(strings(&b, "rules_digest"), strings(&b, "previous_digest"));

        // An edit: rules_loaded, then one row per change, with who/when.
        let third = record_start(
            root,
            &cfg(),
            &start(MIDNIGHT + 9, "w-1", &meta),
            &rules(&edited),
        )
        .unwrap();
        assert_ne!(third.digest, first.digest);
        let b = read_back(&third);
        assert_eq!(
            strings(&b, "event"),
            ["rules_loaded", "rule_changed", "rule_added"]
        );
        assert_eq!(strings(&b, "rule")[1..], ["cpu_high", "mem_high"]);
        assert_eq!(strings(&b, "family")[1..], ["threshold", "threshold"]);
        assert_eq!(strings(&b, "fields")[1], "clear,value");
        assert!(b.column_by_name("fields").unwrap().is_null(2));
        assert!(strings(&b, "before")[1].contains("\"value\":90.0"));
        assert!(strings(&b, "after")[1].contains("\"value\":85.0"));
        assert!(b.column_by_name("before").unwrap().is_null(2));
        assert_eq!(strings(&b, "changed_by"), ["ops@example.com"; 3]);
        assert_eq!(strings(&b, "change_ref"), ["CHG-42"; 3]);
        assert_eq!(millis(&b, "changed_at"), [MIDNIGHT - 3_600_000; 3]);
        assert_eq!(
            strings(&b, "previous_digest"),
            vec![first.digest.clone(); 3]
        );
        let seq = b
            .column_by_name("seq")
            .unwrap()
            .as_primitive::<UInt32Type>();
        assert_eq!(seq.values().to_vec(), [0, 1, 2]);
        let n = |c: &str| {
            b.column_by_name(c)
                .unwrap()
                .as_primitive::<UInt32Type>()
                .value(0)
        };
        assert_eq!(
            (n("rules"), n("maintenance_windows"), n("changes"), n("pid")),
            (2, 0, 2, 42)
        );
        let name = third
            .file
            .as_ref()
            .unwrap()
            .path
            .to_string_lossy()
            .into_owned();
        assert!(
            name.ends_with(&format!(
                "audit/date=2026-11-03/part-audit.w-1-p00042-{:020}-{:020}.parquet",
                MIDNIGHT + 9,
                MIDNIGHT + 9
            )),
            "{name}"
        );

        // A snapshot nobody can read is reported, and the start recorded
        // without a previous digest.
        root.write_file(SNAPSHOT_PATH, b"{not json", false).unwrap();
        assert!(matches!(
            read_previous(root).unwrap(),
            Previous::Unreadable(_)
        ));
        let after_corrupt = record_start(
            root,
            &cfg(),
            &start(MIDNIGHT + 20, "w-3", &none),
            &rules(&edited),
        )
        .unwrap();
        assert!(after_corrupt.previous_unreadable.is_some());
        assert_eq!(
            (after_corrupt.previous_digest, after_corrupt.changes.len()),
            (None, 0)
        );
        assert!(
            matches!(read_previous(root).unwrap(), Previous::Found(p) if p.digest == third.digest)
        );
        names.push(match root.as_object() {
            Some(o) => {
                let mut k: Vec<String> = o
                    .list("audit")
                    .unwrap()
                    .into_iter()
                    .map(|m| m.location.to_string())
                    .collect();
                k.sort();
                k
            }
            None => tree(dir.path()),
        });
    }
    assert_eq!(names[0], names[1], "the same layout on both");
    assert_eq!(names[0].len(), 5, "{:?}", names[0]);
}
