//! Compaction tests: results unchanged (every row, read with and without
//! the reader rule), sort order and writer properties kept, a second run
//! does nothing, a crash at each step of the protocol, a writer publishing
//! meanwhile, and a crashed worker's sweep and replay after compaction.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::TimestampMillisecondType;
use arrow::util::display::array_value_to_string;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::file::metadata::PageIndexPolicy;
use vigil_ops::AlertStatus;

use super::*;
use crate::location::ObjectRoot;
use crate::tests::{agg, alert, MIDNIGHT, W};
use crate::{AggregatesWriter, AlertsWriter};

const SOURCE: &str = "rmm.telemetry.v1";
const P: i32 = 2;

fn wcfg() -> WriterConfig {
    WriterConfig {
        row_group_rows: 64,
        sync: false,
        ..WriterConfig::default()
    }
}

fn opts(min_files: usize) -> CompactOptions {
    CompactOptions {
        target_file_bytes: 1024 * 1024,
        min_files,
        settle: Duration::ZERO,
        writer: wcfg(),
    }
}

fn range(partition: i32, first: i64, last: i64) -> SourceRange<'static> {
    SourceRange {
        source: SOURCE,
        partition,
        first_offset: first,
        last_offset: last,
        tick: 0,
    }
}

/// Flush `k` of partition `partition`: records `[10k, 10k+9]`, holding
/// window `k` of 12 series (so every compaction must interleave files to
/// keep the sort order) and two alert events; `day` 0 or 1 after
/// `MIDNIGHT`.
fn flush(root: &Path, partition: i32, k: i64, day: i64) {
    let mut aggs = AggregatesWriter::new(root, wcfg()).unwrap();
    let mut alerts = AlertsWriter::new(root, wcfg()).unwrap();
    let t = MIDNIGHT + day * DAY_MS + k * W;
    for s in 0..12 {
        let agent = format!("a{:02}", (s * 7) % 12);
        aggs.push(&agg("t1", &agent, "cpu_pct", "", t, (k * 100 + s) as f64));
    }
    alerts.push(&alert(
        &format!("p{partition}-k{k}"),
        AlertStatus::Firing,
        t,
    ));
    alerts.push(&alert(
        &format!("p{partition}-k{k}"),
        AlertStatus::Resolved,
        t + 1,
    ));
    let r = range(partition, 10 * k, 10 * k + 9);
    aggs.flush(r).unwrap();
    alerts.flush(r).unwrap();
}

/// Every `.parquet` file under a dataset's date directories, by directory.
fn parquet_files(root: &Path, dataset: Dataset) -> BTreeMap<PathBuf, Vec<String>> {
    let mut out = BTreeMap::new();
    let Ok(dates) = fs::read_dir(root.join(dataset.name())) else {
        return out;
    };
    for d in dates {
        let d = d.unwrap().path();
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("date=") {
            continue;
        }
        let mut files: Vec<String> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".parquet") && !n.starts_with('.'))
            .collect();
        files.sort();
        out.insert(d, files);
    }
    out
}

fn read_rows(path: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let file = fs::File::open(path)?;
    let date = path
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy();
    rows_of(file, &date, out);
    Ok(())
}

fn rows_of<T: parquet::file::reader::ChunkReader + 'static>(
    input: T,
    date: &str,
    out: &mut Vec<String>,
) {
    let reader = ParquetRecordBatchReaderBuilder::try_new(input)
        .unwrap()
        .build()
        .unwrap();
    for b in reader {
        let b: RecordBatch = b.unwrap();
        for row in 0..b.num_rows() {
            let cols: Vec<String> = (0..b.num_columns())
                .map(|c| {
                    let col = b.column(c);
                    // Timestamps as epoch ms (their UTC zone needs chrono-tz).
                    match col.as_primitive_opt::<TimestampMillisecondType>() {
                        Some(t) if t.is_null(row) => "null".into(),
                        Some(t) => t.value(row).to_string(),
                        None => array_value_to_string(col, row).unwrap(),
                    }
                })
                .collect();
            out.push(format!("{date}|{}", cols.join("|")));
        }
    }
}

/// Every row of both datasets as text (date first), sorted. With `rule`,
/// files the reader rule supersedes are skipped (as `vigil-query` does);
/// without, every `.parquet` file is read (as DuckDB's glob does).
/// Retries when a file goes between listing and reading (a reader racing a
/// compaction sees an error and retries, never a wrong count).
fn dump(root: &Path, rule: bool) -> Vec<String> {
    'retry: loop {
        let mut rows = Vec::new();
        for ds in Dataset::ALL {
            for (dir, files) in parquet_files(root, ds) {
                let skip = if rule {
                    superseded(&files)
                } else {
                    vec![false; files.len()]
                };
                for (f, skip) in files.iter().zip(skip) {
                    if skip {
                        continue;
                    }
                    if read_rows(&dir.join(f), &mut rows).is_err() {
                        continue 'retry;
                    }
                }
            }
        }
        rows.sort();
        return rows;
    }
}

fn all_committed() -> impl FnMut(&str, i32) -> std::result::Result<Commit, String> {
    |_, _| Ok(Commit::Before(i64::MAX))
}

fn run(root: &Path, o: &CompactOptions) -> CompactReport {
    compact(root, o, DateScope::Settled, now(), &mut all_committed()).unwrap()
}

/// [`compact_with`] on `root` with every partition committed, `min_files`
/// and the run's hook `hook`.
fn compact_hooked(
    root: &Root,
    min_files: usize,
    scope: DateScope,
    hook: &mut dyn FnMut(Step) -> Result<()>,
) -> Result<CompactReport> {
    compact_with(
        root,
        &opts(min_files),
        scope,
        now(),
        &mut all_committed(),
        hook,
    )
}

fn now() -> i64 {
    system_ms(SystemTime::now())
}

/// (name, size, mtime) of every file under `root`.
fn snapshot(root: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64, SystemTime)>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let md = fs::metadata(&p).unwrap();
            if md.is_dir() {
                walk(&p, out);
            } else {
                out.push((p, md.len(), md.modified().unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

fn no_duplicates(rows: &[String]) {
    let mut seen = rows.to_vec();
    seen.dedup();
    assert_eq!(seen.len(), rows.len(), "a row is read twice");
}

#[test]
fn names_parse_and_the_reader_rule_skips_covered_ranges() {
    let n = |s: &str, p: i32, a: i64, b: i64| {
        PartName {
            source: s.into(),
            partition: p,
            first: a,
            last: b,
        }
        .file_name()
    };
    let odd = crate::sanitize_source("a-b/c");
    for name in [
        n("rmm.t", 3, 0, 9),
        n("x-y-z", 12345, 7, 7),
        n(&odd, 0, 1, 2),
    ] {
        assert_eq!(PartName::parse(&name).unwrap().file_name(), name);
    }
    for bad in [
        "part-x-p00001-1-2.parquet",
        ".tmp-part-x-p00001-00000000000000000000-00000000000000000001.parquet.1-0.partial",
        "part--p00001-00000000000000000000-00000000000000000001.parquet",
        "part-x-p00001-00000000000000000005-00000000000000000001.parquet",
        "dlq-x-p00001-00000000000000000000-00000000000000000001.jsonl",
    ] {
        assert_eq!(PartName::parse(bad), None, "{bad}");
    }
    let names = [
        n("s", 1, 0, 99),    // compacted
        n("s", 1, 0, 9),     // its input
        n("s", 1, 90, 99),   // its input
        n("s", 1, 100, 109), // after it
        n("s", 2, 10, 19),   // another partition
        n("s-2", 1, 10, 19), // another source
        "foreign.parquet".into(),
    ];
    assert_eq!(
        superseded(&names),
        [false, true, true, false, false, false, false]
    );
}

/// The bug this names: compaction that loses, duplicates, reorders or
/// re-encodes rows differently (sort order, statistics, page index, row
/// groups, metadata).
#[test]
fn compaction_keeps_every_row_the_sort_order_and_the_writer_properties() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for k in 0..10 {
        flush(root, P, k, 0);
    }
    for k in 0..6 {
        flush(root, P, k, 1);
    }
    // Partition 3 has fewer files than min_files: left alone.
    for k in 0..3 {
        flush(root, 3, k, 0);
    }
    let before = dump(root, false);
    let report = run(root, &opts(4));
    // Two datasets × two dates for partition 2.
    assert_eq!(report.merged.len(), 4, "{report:?}");
    assert_eq!(report.files_merged(), 2 * (10 + 6));
    assert_eq!(
        dump(root, false),
        before,
        "rows changed (read without the rule)"
    );
    assert_eq!(
        dump(root, true),
        before,
        "rows changed (read with the rule)"
    );
    let d0 = root.join("aggregates/date=2026-11-03");
    let files = &parquet_files(root, Dataset::Aggregates)[&d0];
    let compacted = n_name(P, 0, 99);
    assert!(files.contains(&compacted), "{files:?}");
    assert_eq!(files.len(), 1 + 3, "{files:?}");
    let m = report
        .merged
        .iter()
        .find(|m| m.output == d0.join(&compacted))
        .unwrap();
    assert_eq!((m.files, m.rows), (10, 120));
    assert!(m.bytes_out > 0 && m.bytes_in > m.bytes_out, "{m:?}");

    // The output's rows are in sort-key order across the inputs.
    let mut rows = Vec::new();
    read_rows(&d0.join(&compacted), &mut rows).unwrap();
    let keys: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            let c: Vec<&str> = r.split('|').collect();
            (c[2].to_owned(), c[5].to_owned()) // agent, window_start
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);

    // Footer: the writer's properties and the union range's metadata.
    let file = fs::File::open(d0.join(&compacted)).unwrap();
    let opts = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
    let b = ParquetRecordBatchReaderBuilder::try_new_with_options(file, opts).unwrap();
    let md = b.metadata();
    assert_eq!(b.schema().fields(), Dataset::Aggregates.schema().fields());
    assert!(md.column_index().is_some() && md.offset_index().is_some());
    assert_eq!(md.num_row_groups(), 2); // 120 rows, 64 per group
    for rg in md.row_groups() {
        assert!(rg.num_rows() <= 64);
        assert_eq!(rg.sorting_columns().map(|s| s.len()), Some(5));
        let c = rg.column(0);
        assert!(matches!(
            c.compression(),
            parquet::basic::Compression::ZSTD(_)
        ));
        assert!(c.statistics().is_some_and(|s| s.min_bytes_opt().is_some()));
    }
    let kv: BTreeMap<String, String> = md
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(kv["vigil.source"], SOURCE);
    assert_eq!(kv["vigil.first_offset"], "0");
    assert_eq!(kv["vigil.last_offset"], "99");
    assert_eq!(kv[COMPACTED_FILES_KEY], "10");
    assert_eq!(kv["vigil.dataset"], "aggregates");
}

fn n_name(partition: i32, first: i64, last: i64) -> String {
    range(partition, first, last)
        .file_name("part", "parquet")
        .unwrap()
}

/// The bug this names: a second run that rewrites (or re-merges) files.
#[test]
fn a_second_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for k in 0..8 {
        flush(dir.path(), P, k, 0);
    }
    assert_eq!(run(dir.path(), &opts(4)).merged.len(), 2);
    let after_first = snapshot(dir.path());
    let second = run(dir.path(), &opts(4));
    assert_eq!(second.merged, vec![]);
    assert_eq!(second.leftovers_removed + second.conflicts, 0);
    assert_eq!(snapshot(dir.path()), after_first);
}

/// A crash at each step of the protocol: readers that apply the rule see
/// every row once at every moment, and the next run completes the work
/// (after which even readers without the rule see every row once).
#[test]
fn a_crash_at_each_step_leaves_every_row_visible_once_and_a_rerun_completes() {
    for crash_at in [
        Step::Written,
        Step::Published,
        Step::Removed(1),
        Step::Removed(3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for k in 0..5 {
            flush(root, P, k, 0);
        }
        let before = dump(root, false);
        let mut hook = |s: Step| {
            if s == crash_at {
                Err(StoreError::Config {
                    field: "test",
                    problem: "crash".into(),
                })
            } else {
                Ok(())
            }
        };
        let r = compact_hooked(&Root::from(root), 4, DateScope::Settled, &mut hook);
        assert!(r.is_err(), "{crash_at:?}");
        assert_eq!(dump(root, true), before, "after a crash at {crash_at:?}");
        // A crashed writer's leftover: ignored by readers, removed once old.
        let d0 = root.join("aggregates/date=2026-11-03");
        let tmp = d0.join(format!(".tmp-{}.9-9.partial", n_name(P, 0, 49)));
        fs::write(&tmp, b"half a file").unwrap();
        let old = SystemTime::now() - STALE_TMP_AGE - Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(dump(root, true), before);

        let rerun = run(root, &opts(4));
        assert_eq!(rerun.stale_tmp_removed, 1, "{crash_at:?}");
        assert!(!tmp.exists());
        assert_eq!(dump(root, false), before, "after the rerun ({crash_at:?})");
        for files in parquet_files(root, Dataset::Aggregates).values() {
            assert_eq!(files, &[n_name(P, 0, 49)], "{crash_at:?}");
        }
        if crash_at != Step::Written {
            // The crash hit the first merge (aggregates): the rerun only
            // finished its removal, and merged the alerts it never reached.
            assert!(
                rerun.merged.iter().all(|m| m.dataset == Dataset::Alerts),
                "{crash_at:?}: {rerun:?}"
            );
            assert!(rerun.leftovers_removed > 0, "{crash_at:?}");
        }
    }
}

/// The bug this names: compacting files a worker published after its last
/// checkpoint. The worker crashed after publishing ranges 60..99 and
/// before checkpointing; compaction runs; the worker restarts from its
/// checkpoint (60), sweeps its partition from there and processes
/// 60..99 again, cut into other ranges. Every row must exist once.
#[test]
fn a_crashed_workers_sweep_and_replay_after_compaction_leave_one_copy() {
    for crash_compaction_at in [None, Some(Step::Published), Some(Step::Removed(2))] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for k in 0..10 {
            flush(root, P, k, 0);
        }
        let expected = dump(root, false);
        let checkpoint = 60;
        let mut commits = |s: &str, p: i32| {
            assert_eq!((s, p), (SOURCE, P));
            Ok(Commit::Before(checkpoint))
        };
        let mut hook = |s: Step| match crash_compaction_at {
            Some(c) if c == s => Err(StoreError::Config {
                field: "test",
                problem: "crash".into(),
            }),
            _ => Ok(()),
        };
        let r = compact_with(
            &Root::from(root),
            &opts(2),
            DateScope::Settled,
            now(),
            &mut commits,
            &mut hook,
        );
        assert_eq!(r.is_err(), crash_compaction_at.is_some());
        if let Ok(r) = &r {
            // Only the committed files (ranges ending before 60).
            assert_eq!(r.files_merged(), 2 * 6);
            assert_eq!(r.not_yet, 2 * 4);
        }
        // The worker restarts: sweep, then the replay in other ranges.
        let swept =
            crate::remove_partition_files_from(root, SOURCE, P, checkpoint, 0, None).unwrap();
        assert_eq!(swept, 2 * 4);
        let mut aggs = AggregatesWriter::new(root, wcfg()).unwrap();
        let mut alerts = AlertsWriter::new(root, wcfg()).unwrap();
        for (first, last) in [(60, 79), (80, 99)] {
            for k in first / 10..=last / 10 {
                // The same rows as flush(k) wrote.
                let t = MIDNIGHT + k * W;
                for s in 0..12 {
                    let agent = format!("a{:02}", (s * 7) % 12);
                    aggs.push(&agg("t1", &agent, "cpu_pct", "", t, (k * 100 + s) as f64));
                }
                let a = format!("p{P}-k{k}");
                alerts.push(&alert(&a, AlertStatus::Firing, t));
                alerts.push(&alert(&a, AlertStatus::Resolved, t + 1));
            }
            aggs.flush(range(P, first, last)).unwrap();
            alerts.flush(range(P, first, last)).unwrap();
        }
        assert_eq!(dump(root, true), expected, "{crash_compaction_at:?}");
        // The next run (the worker has checkpointed everything) completes.
        let mut later = |_: &str, _: i32| Ok(Commit::Before(100));
        compact(root, &opts(2), DateScope::Settled, now(), &mut later).unwrap();
        assert_eq!(dump(root, false), expected, "{crash_compaction_at:?}");
        assert_eq!(dump(root, true), expected);
    }
}

/// The bug this names: compaction racing a writer that publishes new
/// files (and moves its checkpoint) into the same date directory loses or
/// duplicates rows.
#[test]
fn a_writer_publishing_during_compaction_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let checkpoint = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (root, checkpoint, done) = (root.clone(), checkpoint.clone(), done.clone());
        std::thread::spawn(move || {
            for k in 0..60 {
                flush(&root, P, k, 0);
                // The checkpoint follows the publish (the worker's steps 1, 3).
                checkpoint.store(10 * k + 10, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut runs = 0;
    let mut merged = 0;
    loop {
        let finished = done.load(Ordering::SeqCst);
        let mut commits = |_: &str, _: i32| Ok(Commit::Before(checkpoint.load(Ordering::SeqCst)));
        let r = compact(&root, &opts(2), DateScope::Settled, now(), &mut commits).unwrap();
        merged += r.files_merged();
        assert_eq!(r.conflicts, 0, "{r:?}");
        runs += 1;
        // A reader meanwhile: never a row twice.
        no_duplicates(&dump(&root, true));
        if finished {
            break;
        }
    }
    writer.join().unwrap();
    assert!(runs > 1 && merged > 0, "runs {runs}, merged {merged}");
    // Everything the writer wrote, once: compare with a fresh copy.
    let fresh = tempfile::tempdir().unwrap();
    for k in 0..60 {
        flush(fresh.path(), P, k, 0);
    }
    let expected = dump(fresh.path(), false);
    assert_eq!(dump(&root, true), expected);
    run(&root, &opts(2));
    assert_eq!(dump(&root, false), expected);
}

/// A replay's source (no checkpoint): files are compacted once `settle`
/// old; a rerun of the replay removes the compacted file with the rest of
/// its source's files; an input replaced while it is merged voids the
/// output.
#[test]
fn replay_sources_settle_and_a_changed_input_voids_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for k in 0..4 {
        flush(root, P, k, 0);
    }
    let mut unknown = |_: &str, _: i32| Ok(Commit::Unknown);
    let hour = CompactOptions {
        settle: Duration::from_secs(3600),
        ..opts(4)
    };
    // The date is long over, but the files are new.
    let r = compact(root, &hour, DateScope::Settled, now(), &mut unknown).unwrap();
    assert_eq!((r.merged.len(), r.not_yet), (0, 8));
    // An explicit date does not bypass the file's own settle time.
    let day = MIDNIGHT / DAY_MS;
    let r = compact(root, &hour, DateScope::Day(day), now(), &mut unknown).unwrap();
    assert_eq!((r.dates, r.merged.len()), (2, 0));
    // A date that ended less than `settle` ago is not looked at.
    let r = compact(
        root,
        &hour,
        DateScope::Settled,
        MIDNIGHT + DAY_MS + 60_000,
        &mut unknown,
    )
    .unwrap();
    assert_eq!((r.dates, r.dates_unsettled), (0, 2));

    // An input rewritten while the output is written: output removed.
    let victim = root.join("alerts/date=2026-11-03").join(n_name(P, 10, 19));
    let mut written = 0;
    let mut hook = |s: Step| {
        written += usize::from(s == Step::Written);
        // The second merge is the alerts'.
        if s == Step::Written && written == 2 {
            fs::remove_file(&victim).unwrap();
            let mut w = AlertsWriter::new(root, wcfg()).unwrap();
            w.push(&alert("other", AlertStatus::Firing, MIDNIGHT + W));
            w.flush(range(P, 10, 19)).unwrap();
        }
        Ok(())
    };
    let r = compact_with(
        &Root::from(root),
        &opts(4),
        DateScope::Settled,
        now(),
        &mut unknown,
        &mut hook,
    )
    .unwrap();
    assert_eq!((r.merged.len(), r.conflicts), (1, 1), "{r:?}");
    let alerts = &parquet_files(root, Dataset::Alerts)[&root.join("alerts/date=2026-11-03")];
    assert_eq!(alerts.len(), 4, "the output was not removed: {alerts:?}");

    // Aggregates were compacted; a rerun of the replay removes the output.
    let aggs = &parquet_files(root, Dataset::Aggregates)[&root.join("aggregates/date=2026-11-03")];
    assert_eq!(aggs, &[n_name(P, 0, 39)]);
    assert_eq!(crate::remove_source_files(root, SOURCE).unwrap(), 1 + 4);
    assert!(dump(root, false).is_empty());
}

#[test]
fn invalid_options_are_refused() {
    let bad = CompactOptions {
        target_file_bytes: 10,
        min_files: 1,
        ..CompactOptions::default()
    };
    let p = bad.validate();
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].starts_with("target_file_bytes") && p[1].starts_with("min_files"));
    let dir = tempfile::tempdir().unwrap();
    assert!(compact(
        dir.path(),
        &bad,
        DateScope::Settled,
        0,
        &mut all_committed()
    )
    .is_err());
    assert!(CompactOptions::default().validate().is_empty());
}

/// The bug this names: a merge opening every small file of a day at once
/// (a worker flushing every 5 s leaves 17,280). At most
/// `MAX_MERGE_FILES` are merged into one; the next run merges the outputs.
#[test]
fn merges_are_capped_and_the_next_run_merges_the_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let n = MAX_MERGE_FILES as i64 + 4;
    for k in 0..n {
        let mut w = AggregatesWriter::new(root, wcfg()).unwrap();
        w.push(&agg("t1", "a1", "cpu_pct", "", MIDNIGHT + k * W, k as f64));
        w.flush(range(P, 10 * k, 10 * k + 9)).unwrap();
    }
    let before = dump(root, false);
    let r = run(root, &opts(2));
    let sizes: Vec<usize> = r.merged.iter().map(|m| m.files).collect();
    assert_eq!(sizes, [MAX_MERGE_FILES, 4]);
    assert_eq!(dump(root, false), before);
    let r = run(root, &opts(2));
    assert_eq!(r.merged.len(), 1);
    let files = &parquet_files(root, Dataset::Aggregates)[&root.join("aggregates/date=2026-11-03")];
    assert_eq!(files, &[n_name(P, 0, 10 * n - 1)]);
    assert_eq!(dump(root, false), before);
}

/// Two runs on one root at once are refused (they would merge the same
/// inputs into the same name), and an output name that exists already is
/// never overwritten.
#[test]
fn a_second_concurrent_run_is_refused_and_outputs_never_replace_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for k in 0..4 {
        flush(root, P, k, 0);
    }
    let held = lock_root(root).unwrap();
    assert!(matches!(held, tree::Lock::Local(_)));
    let e = compact(
        root,
        &opts(2),
        DateScope::Settled,
        now(),
        &mut all_committed(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("another vigil compact"), "{e}");
    drop(held);
    // A file named like the output that appears while the output is
    // written (a replay of the source) is left as it is.
    let d0 = root.join("aggregates/date=2026-11-03");
    let theirs = d0.join(n_name(P, 0, 39));
    let mut hook = |s: Step| {
        if s == Step::Written && !theirs.exists() {
            fs::write(&theirs, b"someone else's").unwrap();
        }
        Ok(())
    };
    let r = compact_hooked(
        &Root::from(root),
        2,
        DateScope::Day(MIDNIGHT / DAY_MS),
        &mut hook,
    )
    .unwrap();
    assert!(r.conflicts >= 1, "{r:?}");
    assert_eq!(fs::read(&theirs).unwrap(), b"someone else's");
    assert!(d0.join(n_name(P, 0, 9)).exists(), "an input was removed");
}

/// Every local file under `root` put into the object root `o`, same keys.
fn upload(root: &Path, o: &ObjectRoot) {
    for (p, _, _) in snapshot(root) {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel.starts_with('.') {
            continue;
        }
        o.put(
            &rel,
            fs::read(&p).unwrap(),
            object_store::PutMode::Overwrite,
        )
        .unwrap();
    }
}

/// [`dump`] of an object root: every row of both datasets, with or
/// without the reader rule.
fn dump_object(o: &ObjectRoot, rule: bool) -> Vec<String> {
    let mut rows = Vec::new();
    for ds in Dataset::ALL {
        let mut by_dir: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in o.list(ds.name()).unwrap() {
            let key = m.location.as_ref().to_owned();
            let (dir, name) = key.rsplit_once('/').unwrap();
            if name.ends_with(".parquet") && !name.starts_with('.') {
                by_dir
                    .entry(dir.to_owned())
                    .or_default()
                    .push(name.to_owned());
            }
        }
        for (dir, files) in by_dir {
            let skip = if rule {
                superseded(&files)
            } else {
                vec![false; files.len()]
            };
            let date = dir.rsplit_once('/').unwrap().1.to_owned();
            for (f, skip) in files.iter().zip(skip) {
                if !skip {
                    let bytes = o.get(&format!("{dir}/{f}")).unwrap().unwrap();
                    rows_of(bytes, &date, &mut rows);
                }
            }
        }
    }
    rows.sort();
    rows
}

/// The names of the parquet objects of one dataset, per date directory.
fn object_names(o: &ObjectRoot, ds: Dataset) -> BTreeMap<String, Vec<String>> {
    let mut by_dir: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in o.list(ds.name()).unwrap() {
        let key = m.location.as_ref().to_owned();
        let (dir, name) = key.rsplit_once('/').unwrap();
        by_dir
            .entry(dir.to_owned())
            .or_default()
            .push(name.to_owned());
    }
    by_dir
}

/// The protocol on an object store (object_store's in-memory store stands
/// in for S3; tests/integration/s3.rs runs it against a real server): the
/// output appears by one conditional PUT, the inputs go after; a crash
/// between the PUT and the deletes (or between two deletes) leaves every
/// row read once under the reader rule; the crashed run's lease keeps a
/// rerun out until it expires; the rerun finishes the removal and leaves
/// the rows unchanged.
#[test]
fn on_an_object_store_a_crash_between_put_and_deletes_is_safe_to_rerun() {
    for crash_at in [Step::Written, Step::Published, Step::Removed(2)] {
        let dir = tempfile::tempdir().unwrap();
        for k in 0..5 {
            flush(dir.path(), P, k, 0);
        }
        let store = Arc::new(object_store::memory::InMemory::new());
        let root = Root::s3_with_store("bucket", "vigil", store);
        let o = root.as_object().unwrap();
        upload(dir.path(), o);
        let before = dump_object(o, false);
        no_duplicates(&before);
        let mut hook = |s: Step| {
            if s == crash_at {
                Err(StoreError::Config {
                    field: "test",
                    problem: "crash".into(),
                })
            } else {
                Ok(())
            }
        };
        let r = compact_hooked(&root, 4, DateScope::Settled, &mut hook);
        assert!(r.is_err(), "{crash_at:?}");
        assert_eq!(
            dump_object(o, true),
            before,
            "after a crash at {crash_at:?}"
        );
        if crash_at == Step::Published {
            // Output and every input: a reader without the rule counts twice.
            assert!(dump_object(o, false).len() > before.len());
        }
        // A real crash leaves its lease: a live one keeps the rerun out,
        // an expired one is taken over.
        let lease = |expires_ms: i64| {
            serde_json::to_vec(&serde_json::json!({"owner": "crashed", "expires_ms": expires_ms}))
                .unwrap()
        };
        o.put(
            LOCK_FILE,
            lease(now() + 60_000),
            object_store::PutMode::Overwrite,
        )
        .unwrap();
        let e = compact(
            &root,
            &opts(4),
            DateScope::Settled,
            now(),
            &mut all_committed(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("another vigil compact"), "{e}");
        o.put(
            LOCK_FILE,
            lease(now() - 1),
            object_store::PutMode::Overwrite,
        )
        .unwrap();
        let rerun = compact(
            &root,
            &opts(4),
            DateScope::Settled,
            now(),
            &mut all_committed(),
        )
        .unwrap();
        assert_eq!(
            dump_object(o, false),
            before,
            "after the rerun ({crash_at:?})"
        );
        for files in object_names(o, Dataset::Aggregates).values() {
            assert_eq!(files, &[n_name(P, 0, 49)], "{crash_at:?}");
        }
        if crash_at != Step::Written {
            assert!(rerun.leftovers_removed > 0, "{crash_at:?}: {rerun:?}");
        }
        assert!(o.get(LOCK_FILE).unwrap().is_none(), "the lease is released");
        // A second run changes nothing.
        let again = compact(
            &root,
            &opts(4),
            DateScope::Settled,
            now(),
            &mut all_committed(),
        )
        .unwrap();
        assert!(
            again.merged.is_empty() && again.leftovers_removed == 0,
            "{again:?}"
        );
    }
}

/// On an object store too, an object named like the output that appears
/// meanwhile is never replaced (the PUT is conditional), and an input
/// rewritten meanwhile (a replay) voids the output.
#[test]
fn on_an_object_store_outputs_never_replace_and_changed_inputs_void_the_output() {
    let dir = tempfile::tempdir().unwrap();
    for k in 0..4 {
        flush(dir.path(), P, k, 0);
    }
    let store = Arc::new(object_store::memory::InMemory::new());
    let root = Root::s3_with_store("bucket", "", store);
    let o = root.as_object().unwrap();
    upload(dir.path(), o);
    let d0 = "aggregates/date=2026-11-03";
    let theirs = format!("{d0}/{}", n_name(P, 0, 39));
    let mut hook = |s: Step| {
        if s == Step::Written && o.get(&theirs).unwrap().is_none() {
            o.put(
                &theirs,
                b"someone else's".to_vec(),
                object_store::PutMode::Overwrite,
            )
            .unwrap();
        }
        Ok(())
    };
    let r = compact_hooked(&root, 2, DateScope::Day(MIDNIGHT / DAY_MS), &mut hook).unwrap();
    assert!(r.conflicts >= 1, "{r:?}");
    assert_eq!(&o.get(&theirs).unwrap().unwrap()[..], b"someone else's");
    assert!(o
        .get(&format!("{d0}/{}", n_name(P, 0, 9)))
        .unwrap()
        .is_some());

    // An input rewritten after the output's PUT: the output goes, the
    // rewritten input stays.
    o.delete(&theirs).unwrap();
    let input = format!("{d0}/{}", n_name(P, 10, 19));
    let mut rewritten = false;
    let mut hook = |s: Step| {
        if s == Step::Published && !rewritten {
            let b = o.get(&input).unwrap().unwrap();
            o.put(&input, b.to_vec(), object_store::PutMode::Overwrite)
                .unwrap();
            rewritten = true;
        }
        Ok(())
    };
    let r = compact_hooked(&root, 2, DateScope::Day(MIDNIGHT / DAY_MS), &mut hook).unwrap();
    assert!(r.conflicts >= 1, "{r:?}");
    assert!(
        o.get(&theirs).unwrap().is_none(),
        "the voided output was removed"
    );
    assert!(o.get(&input).unwrap().is_some());
}
