//! Slow collectors (docs/semantics.md "Slow collectors"): series of
//! metrics with a `pipeline.lateness` override are judged and closed by
//! their own lateness, against an independent per-point computation.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::config::LatenessOverride;

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;
const POS: Position = Position {
    partition: 0,
    offset: 0,
};

fn rec(agent: &str, seq: u64, sent: i64, pts: &[(&str, i64, f64)]) -> Vec<u8> {
    super::test_batch::batch_of("t1", agent, 3, seq, sent, pts)
}

/// A record: processing time, payload, and its points (metric, ts, value).
type Record = (i64, Vec<u8>, Vec<(String, i64, f64)>);

/// An agent ticking every 20 s: `cpu_pct` stamped at the tick, and a SMART
/// attribute read on a 5-minute cycle, stamped when the read started and
/// delivered with the first tick after it finished (90–170 s later).
fn slow_agent(agent: &str, ticks: i64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut pending: Vec<(i64, f64)> = Vec::new();
    for k in 0..ticks {
        let now = T0 + k * 20_000;
        if k % 15 == 0 {
            // A SMART read starts; it takes 90 s plus up to 80 s.
            pending.push((now, (k / 15) as f64));
        }
        let mut pts = vec![("cpu_pct".to_string(), now, (k % 7) as f64)];
        pending.retain(|&(started, v)| {
            if now >= started + 90_000 + (started / 300_000 % 5) * 20_000 {
                pts.push(("smart_reallocated_sectors".to_string(), started, v));
                false
            } else {
                true
            }
        });
        let view: Vec<_> = pts.iter().map(|(m, t, v)| (m.as_str(), *t, *v)).collect();
        out.push((now, rec(agent, k as u64 + 1, now, &view), pts));
    }
    out
}

/// Windows (metric, start) → (count, sum) computed from the points alone.
fn by_window(pts: impl Iterator<Item = (String, i64, f64)>) -> BTreeMap<(String, i64), (u64, f64)> {
    let mut m = BTreeMap::new();
    for (metric, ts, v) in pts {
        let e = m
            .entry((metric, ts.div_euclid(MIN) * MIN))
            .or_insert((0, 0.0));
        e.0 += 1;
        e.1 += v;
    }
    m
}

fn run(
    cfg: PipelineConfig,
    input: &[Record],
    restore_at: Option<usize>,
) -> (Outputs, PipelineStats) {
    let rules = Arc::new(RuleSet::default());
    let mut p = Pipeline::new(cfg.clone(), rules.clone()).unwrap();
    let mut out = Outputs::default();
    for (i, (now, payload, _)) in input.iter().enumerate() {
        if Some(i) == restore_at {
            let snap = serde_json::to_vec(&p).unwrap();
            let back: Pipeline = serde_json::from_slice(&snap).unwrap();
            p = back.resume(cfg.clone(), rules.clone()).unwrap();
        }
        p.process(POS, payload, *now, &mut out);
    }
    p.finish(&mut out);
    let stats = p.stats().clone();
    (out, stats)
}

/// With the default configuration (`smart_*` allowed 10 min), a SMART
/// series stamped at collection start and arriving minutes behind the
/// agent's fast series loses no point, and its windows equal those
/// computed from the points; without the override its points are `late`.
/// Checkpoints anywhere change nothing.
#[test]
fn slow_collector_series_are_not_late_and_match_the_points() {
    let cfg = PipelineConfig {
        clock: ClockMode::Wall,
        ..PipelineConfig::default()
    };
    assert_eq!(cfg.extra_lateness_ms("smart_reallocated_sectors"), 570_000);
    assert_eq!(cfg.extra_lateness_ms("cpu_pct"), 0);
    let input = slow_agent("a", 200);
    let (out, stats) = run(cfg.clone(), &input, None);
    assert_eq!(stats.rejected_points(RejectReason::Late), 0);
    let got: BTreeMap<_, _> = out
        .windows
        .iter()
        .map(|w| {
            (
                (w.series.metric().to_string(), w.start_ms),
                (w.agg.count, w.agg.sum),
            )
        })
        .collect();
    let want = by_window(input.iter().flat_map(|r| r.2.iter().cloned()));
    assert!(want.keys().any(|k| k.0 == "smart_reallocated_sectors"));
    assert_eq!(got, want);
    for at in (0..input.len()).step_by(13) {
        let (again, _) = run(cfg.clone(), &input, Some(at));
        assert_eq!(again.windows, out.windows, "restored at record {at}");
    }

    // Without the override the same SMART points are refused as late.
    let strict = PipelineConfig {
        lateness: Vec::new(),
        ..cfg
    };
    let (_, stats) = run(strict, &input, None);
    assert!(stats.rejected_points(RejectReason::Late) > 0);
}

/// The fast series of an agent with slow series still close by the
/// agent's own lateness (a slow series holds nothing back), and a slow
/// series point past its own lateness is late.
#[test]
fn slow_series_hold_back_nothing_else() {
    let cfg = PipelineConfig {
        clock: ClockMode::Wall,
        lateness: vec![LatenessOverride {
            metrics: vec!["scan_*".into()],
            allowed_lateness: Duration::from_secs(300),
        }],
        ..PipelineConfig::default()
    };
    let mut p = Pipeline::new(cfg, Arc::new(RuleSet::default())).unwrap();
    let mut out = Outputs::default();
    let send = |p: &mut Pipeline, out: &mut Outputs, seq: u64, pts: &[(&str, i64, f64)]| {
        let now = pts.iter().map(|x| x.1).max().unwrap();
        p.process(POS, &rec("a", seq, now, pts), now, out);
    };
    send(
        &mut p,
        &mut out,
        1,
        &[("cpu_pct", T0, 1.0), ("scan_age", T0, 1.0)],
    );
    // 2 minutes later: cpu's first window closes (lateness 30 s), the
    // scan's (lateness 5 min) stays open.
    send(&mut p, &mut out, 2, &[("cpu_pct", T0 + 2 * MIN, 1.0)]);
    let closed: Vec<_> = out
        .windows
        .iter()
        .map(|w| (w.series.metric(), w.start_ms))
        .collect();
    assert_eq!(closed, [("cpu_pct", T0)]);
    // A scan point 4 minutes behind is on time; a cpu point is not.
    out.clear();
    send(
        &mut p,
        &mut out,
        3,
        &[
            ("cpu_pct", T0 + 4 * MIN, 1.0),
            ("scan_age", T0 + 30_000, 2.0),
        ],
    );
    send(&mut p, &mut out, 4, &[("cpu_pct", T0 + 30_000, 2.0)]);
    assert_eq!(p.stats().rejected_points(RejectReason::Late), 1);
    // Six minutes on, the scan's window closes with both its points.
    send(
        &mut p,
        &mut out,
        5,
        &[("cpu_pct", T0 + 6 * MIN + 30_000, 1.0)],
    );
    let scan: Vec<_> = out
        .windows
        .iter()
        .filter(|w| w.series.metric() == "scan_age")
        .map(|w| (w.start_ms, w.agg.count))
        .collect();
    assert_eq!(scan, [(T0, 2)]);
    // Past its own lateness (its window closed), a scan point is late.
    send(&mut p, &mut out, 6, &[("scan_age", T0 + 10_000, 3.0)]);
    assert_eq!(p.stats().rejected_points(RejectReason::Late), 2);
}

/// The overrides shape the state: a checkpoint cannot continue under
/// other ones; bad overrides are configuration errors.
#[test]
fn lateness_overrides_are_validated_and_fixed_per_checkpoint() {
    let cfg = PipelineConfig::default();
    let p = Pipeline::new(cfg.clone(), Arc::new(RuleSet::default())).unwrap();
    let back: Pipeline = serde_json::from_slice(&serde_json::to_vec(&p).unwrap()).unwrap();
    let other = PipelineConfig {
        lateness: Vec::new(),
        ..cfg.clone()
    };
    let e = back
        .resume(other, Arc::new(RuleSet::default()))
        .unwrap_err();
    assert!(e.iter().any(|p| p.field == "lateness"), "{e:?}");
    for (metrics, lat) in [
        (vec!["smart_*"], 10),
        (vec!["*"], 600),
        (vec!["a*b"], 600),
        (vec![], 600),
        (vec!["x"], 90_000),
    ] {
        let c = PipelineConfig {
            lateness: vec![LatenessOverride {
                metrics: metrics.iter().map(|m| m.to_string()).collect(),
                allowed_lateness: Duration::from_secs(lat),
            }],
            ..cfg.clone()
        };
        assert!(
            c.validate().iter().any(|p| p.field.starts_with("lateness")),
            "{metrics:?} {lat}"
        );
    }
}
