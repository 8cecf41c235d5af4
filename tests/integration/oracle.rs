//! Oracle tests: the Parquet `aggregates` output must equal, row by row, an
//! independent DataFusion GROUP BY over the points the simulator labelled
//! as accepted; every refusal count must equal the simulator's ground truth.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, UInt64Type};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use prost::Message;
use vigil_ops::rules::RuleSet;
use vigil_ops::RejectReason;
use vigil_proto::v1::TelemetryBatch;
use vigil_sim::{Expect, SimRecord};

use crate::common::*;

/// One window row: key and aggregates.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    key: (String, String, String, String, i64),
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
    last: f64,
}

/// Canonical labels written independently of vigil-ops: sorted by key,
/// `\`, `,` and `=` escaped in values.
fn labels_of(s: &vigil_proto::v1::Series) -> String {
    let mut l: Vec<(&str, &str)> = s
        .labels
        .iter()
        .map(|l| (l.key.as_str(), l.value.as_str()))
        .collect();
    l.sort();
    l.iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.replace('\\', "\\\\")
                    .replace(',', "\\,")
                    .replace('=', "\\=")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A window's key, as in [`Row`].
type Key = (String, String, String, String, i64);

/// Expected windows: a DataFusion GROUP BY over the finite points of the
/// records labelled `Accept`; and the values of each window, for the
/// exactness checks ([`exact_sum_and_mean`]).
fn expected(records: &[SimRecord]) -> (Vec<Row>, BTreeMap<Key, Vec<f64>>) {
    let mut values: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
    let (mut t, mut a, mut m, mut l, mut ts, mut v, mut ord) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut n = 0i64;
    for r in records.iter().filter(|r| r.expect == Expect::Accept) {
        let b = TelemetryBatch::decode(r.payload.as_slice()).unwrap();
        for s in &b.series {
            let labels = labels_of(s);
            for (&x, &y) in s.timestamps_ms.iter().zip(&s.values) {
                if !y.is_finite() {
                    continue;
                }
                values
                    .entry((
                        b.tenant_id.clone(),
                        b.agent_id.clone(),
                        s.metric.clone(),
                        labels.clone(),
                        x.div_euclid(60_000) * 60_000,
                    ))
                    .or_default()
                    .push(y);
                t.push(b.tenant_id.clone());
                a.push(b.agent_id.clone());
                m.push(s.metric.clone());
                l.push(labels.clone());
                ts.push(x);
                v.push(y);
                ord.push(n);
                n += 1;
            }
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new("agent", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
        Field::new("arrival", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(t)),
            Arc::new(StringArray::from(a)),
            Arc::new(StringArray::from(m)),
            Arc::new(StringArray::from(l)),
            Arc::new(Int64Array::from(ts)),
            Arc::new(Float64Array::from(v)),
            Arc::new(Int64Array::from(ord)),
        ],
    )
    .unwrap();
    let ctx = SessionContext::new();
    ctx.register_table(
        "points",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
    )
    .unwrap();
    let q = "SELECT tenant, agent, metric, labels, (ts / 60000) * 60000 AS ws,
                    CAST(count(*) AS BIGINT UNSIGNED) AS n, sum(value) AS s, min(value) AS mn, max(value) AS mx,
                    avg(value) AS mean, last_value(value ORDER BY ts, arrival) AS last
             FROM points GROUP BY 1, 2, 3, 4, 5";
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let batches = rt.block_on(async { ctx.sql(q).await.unwrap().collect().await.unwrap() });
    let rows = rows(&batches, |b, i| {
        b.column(4).as_primitive::<Int64Type>().value(i)
    });
    (rows, values)
}

/// Converts result batches to rows; `ws` reads the window start column.
fn rows(batches: &[RecordBatch], ws: impl Fn(&RecordBatch, usize) -> i64) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let s = |c: usize, i: usize| b.column(c).as_string::<i32>().value(i).to_string();
        let f = |c: usize, i: usize| b.column(c).as_primitive::<Float64Type>().value(i);
        for i in 0..b.num_rows() {
            out.push(Row {
                key: (s(0, i), s(1, i), s(2, i), s(3, i), ws(b, i)),
                count: b.column(5).as_primitive::<UInt64Type>().value(i),
                sum: f(6, i),
                min: f(7, i),
                max: f(8, i),
                mean: f(9, i),
                last: f(10, i),
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The `aggregates` dataset as rows.
fn actual(dir: &std::path::Path) -> Vec<Row> {
    let batches = sql(
        dir,
        "SELECT tenant, agent, metric, labels, CAST(window_start AS BIGINT) AS ws, count, sum, min, max, mean, last,
                window_end, date FROM aggregates",
    );
    for b in &batches {
        let ws = b.column(4).as_primitive::<Int64Type>();
        assert_eq!(ws.null_count(), 0);
    }
    rows(&batches, |b, i| {
        b.column(4).as_primitive::<Int64Type>().value(i)
    })
}

/// DataFusion sums in its own order, naively: Vigil's exact sums and means
/// (docs/semantics.md) agree with it to this relative tolerance; exactness
/// itself is checked by [`exact_sum_and_mean`].
fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The exactly rounded sum of `xs`, computed independently of
/// `vigil_ops::exact`: a list of non-overlapping partial sums kept exact
/// with the two-sum identity, then rounded once from the top with a
/// half-way correction (the classic "msum" method).
fn fsum(xs: impl IntoIterator<Item = f64>) -> f64 {
    let mut parts: Vec<f64> = Vec::new();
    for mut x in xs {
        let mut kept = 0;
        for i in 0..parts.len() {
            let mut y = parts[i];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                parts[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        parts.truncate(kept);
        parts.push(x);
    }
    let Some(mut hi) = parts.pop() else {
        return 0.0;
    };
    let mut lo = 0.0;
    while let Some(y) = parts.pop() {
        let x = hi;
        hi = x + y;
        lo = y - (hi - x);
        if lo != 0.0 {
            break;
        }
    }
    if let Some(&next) = parts.last() {
        if (lo < 0.0 && next < 0.0) || (lo > 0.0 && next > 0.0) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
    }
    hi
}

/// Sign of `Σ 2·values − (a + b)·n`, exactly: `a·n` and `b·n` split
/// exactly into a product and its error (fused multiply-add).
fn sign_twice_sum_minus(values: &[f64], a: f64, b: f64, n: f64) -> f64 {
    let (pa, pb) = (a * n, b * n);
    let (ea, eb) = (a.mul_add(n, -pa), b.mul_add(n, -pb));
    let terms = values.iter().map(|v| 2.0 * v).chain([-pa, -ea, -pb, -eb]);
    let s = fsum(terms);
    // Not `signum`: that says 1.0 for +0.0.
    if s > 0.0 {
        1.0
    } else if s < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Vigil's `sum` is the exact sum rounded once (equal to [`fsum`]), and
/// its `mean` the nearest `f64` to the exact mean: the exact mean lies
/// between the midpoints to the neighbouring doubles (a tie is accepted
/// either way).
fn exact_sum_and_mean(got: &Row, values: &[f64]) {
    assert_eq!(
        got.sum.to_bits(),
        fsum(values.iter().copied()).to_bits(),
        "sum of {:?} is not the exactly rounded sum of {values:?}",
        got.key
    );
    let (m, n) = (got.mean, values.len() as f64);
    let up = m.next_up();
    let down = m.next_down();
    // 2S <= (m + up)·n and 2S >= (m + down)·n.
    assert!(
        sign_twice_sum_minus(values, m, up, n) <= 0.0
            && sign_twice_sum_minus(values, m, down, n) >= 0.0,
        "mean of {:?} ({m}) is not the exact mean of {values:?} rounded to nearest",
        got.key
    );
}

fn compare(got: &[Row], want: &[Row]) {
    assert_eq!(
        got.len(),
        want.len(),
        "number of closed windows differs from the oracle"
    );
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.key, w.key, "window keys differ");
        assert_eq!(g.count, w.count, "count of {:?}", g.key);
        assert_eq!(
            (g.min, g.max, g.last),
            (w.min, w.max, w.last),
            "min/max/last of {:?}",
            g.key
        );
        assert!(
            close(g.sum, w.sum) && close(g.mean, w.mean),
            "sum/mean of {:?}: {g:?} vs {w:?}",
            g.key
        );
    }
}

#[test]
fn parquet_aggregates_equal_independent_group_by_and_counts_match_truth() {
    let run = simulate(small_fleet(40, 3.0, 7));
    let dir = tempfile::tempdir().unwrap();
    let summary = replay(
        dir.path(),
        "oracle",
        &run.records,
        &settings(),
        Arc::new(RuleSet::default_rules()),
    );
    let (want, values) = expected(&run.records);
    assert!(
        want.len() > 10_000,
        "fleet too small to be meaningful: {} windows",
        want.len()
    );
    // Mixed collection cycles: the slow collector's SMART series, minutes
    // behind their agents' fast series, are in the comparison (accepted
    // under the `smart_*` lateness override, none refused as late).
    let slow = want
        .iter()
        .filter(|r| r.key.2.starts_with(vigil_sim::SLOW_METRIC_PREFIX))
        .count();
    assert!(slow >= 100, "{slow} slow-collector windows");
    let got = actual(dir.path());
    compare(&got, &want);
    for g in &got {
        exact_sum_and_mean(g, &values[&g.key]);
    }

    // Every refusal and drop equals the simulator's ground truth.
    let c = &run.truth.counts;
    let st = &summary.stats;
    assert_eq!(st.records, c.records());
    assert_eq!(st.duplicates, c.duplicate.records, "duplicates");
    assert_eq!(
        st.points_accepted,
        c.accept.points - c.accept.non_finite,
        "accepted points"
    );
    assert_eq!(
        st.rejected_points(RejectReason::NonFinite),
        c.accept.non_finite,
        "non-finite points"
    );
    assert_eq!(
        st.rejected_points(RejectReason::Late),
        c.late.points,
        "late points"
    );
    assert_eq!(
        st.rejected_points(RejectReason::Future),
        c.future.points,
        "future points"
    );
    assert_eq!(
        st.rejected_records(RejectReason::SeqTooOld),
        c.seq_too_old.records,
        "seq_too_old"
    );
    assert!(
        c.late.points > 0
            && c.future.points > 0
            && c.accept.non_finite > 0
            && c.duplicate.records > 0
    );
    for (reason, tally) in &c.reject {
        let r = RejectReason::ALL
            .into_iter()
            .find(|r| r.as_str() == *reason)
            .unwrap();
        assert_eq!(
            st.rejected_records(r),
            tally.records,
            "records refused as {reason}"
        );
    }
    let batch_level: u64 = RejectReason::ALL
        .iter()
        .filter(|r| r.is_batch_level())
        .map(|r| st.rejected_records(*r))
        .sum();
    assert_eq!(batch_level, c.rejected().records + c.seq_too_old.records);

    // The dead-letter files hold exactly those refusals, with reasons.
    let mut by_reason: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for d in dead_letters(dir.path()) {
        let e = by_reason
            .entry(d["reason"].as_str().unwrap().to_string())
            .or_default();
        e.0 += 1;
        e.1 += d["point_count"].as_u64().unwrap();
    }
    for r in RejectReason::ALL {
        let (records, points) = by_reason.get(r.as_str()).copied().unwrap_or_default();
        if r.is_batch_level() {
            assert_eq!(records, st.rejected_records(r), "dlq records for {r}");
        } else {
            assert_eq!(points, st.rejected_points(r), "dlq points for {r}");
        }
    }
}

#[test]
fn flush_cadence_and_replays_do_not_change_or_duplicate_rows() {
    let run = simulate(small_fleet(12, 1.5, 11));
    let (want, _) = expected(&run.records);
    let rules = Arc::new(RuleSet::default_rules());

    // Many small flushes (many files) give the same rows.
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.storage.flush_records = 37;
    replay(dir.path(), "cadence", &run.records, &s, rules.clone());
    compare(&actual(dir.path()), &want);
    let files = |d: &std::path::Path| {
        let mut v: Vec<String> = walk(d)
            .into_iter()
            .filter(|p| p.ends_with(".parquet"))
            .collect();
        v.sort();
        v
    };
    let first = files(dir.path());
    assert!(first.len() > 5);

    // Replaying the same input into the same directory rewrites the same
    // files: no duplicate rows, no extra files, nothing left half-written.
    replay(dir.path(), "cadence", &run.records, &s, rules);
    assert_eq!(files(dir.path()), first);
    compare(&actual(dir.path()), &want);
    let names: Vec<String> = walk(dir.path())
        .iter()
        .map(|p| {
            std::path::Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".tmp-")),
        "temporary files left behind: {names:?}"
    );

    // Flushes bounded by buffered rows instead of records: other files,
    // the same rows.
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.storage.flush_rows = 500;
    replay(
        dir.path(),
        "rows",
        &run.records,
        &s,
        Arc::new(RuleSet::default_rules()),
    );
    compare(&actual(dir.path()), &want);
    assert!(
        files(dir.path()).len() > 5,
        "flush_rows made flushes happen"
    );
}

fn walk(d: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
