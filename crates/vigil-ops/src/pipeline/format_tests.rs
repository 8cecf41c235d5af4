//! Checkpoint compatibility: a pipeline checkpointed by the Vigil before
//! the detector-family registry (worker checkpoint format 5) restores into
//! the registry's layout and continues with exactly the output of an
//! uninterrupted run.
//!
//! `testdata/pipeline_v5.json` was written by this module's
//! `write_golden` test on the last commit before the registry
//! (`VIGIL_WRITE_GOLDEN=1 cargo test -p vigil-ops write_golden --
//! --ignored`): the scenario's first half, with every family holding
//! state (a firing threshold incident and a threshold run in progress,
//! trend fits, an agent offline, an agent whose input is refused).
//!
//! Since issue 20's fourth slice an uninterrupted run reports a trend
//! prediction's value and time from the fast level and the trend state's
//! rise fit: step 40's `disk_fill` alert fires at the same step, with
//! value 59.350 instead of 59.318 and predicted 0.5 s later. A format-5
//! checkpoint has no rise fit, so the restored run still reports those
//! two fields as before (until its rise fit has `min_points / 2`
//! windows) and matches the golden output exactly.

use std::sync::Arc;

use super::test_batch::batch_of;
use super::{Outputs, Pipeline};
use crate::config::{ClockMode, PipelineConfig};
use crate::reject::Position;
use crate::rules::RuleSet;

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;
const POS: Position = Position {
    partition: 0,
    offset: 0,
};
/// Steps fed before the checkpoint.
const HALF: usize = 40;
/// Steps in all.
const STEPS: usize = 90;

const RULES: &str = r#"
[[threshold]]
name = "cpu_high"
metric = "cpu_pct"
aggregate = "mean"
op = ">"
value = 90
for = 2
clear = 80
severity = "warning"

[[threshold]]
name = "mem_high"
metric = "mem_pct"
aggregate = "max"
op = ">="
value = 95
for = 5
clear_for = 3
severity = "critical"

[[trend]]
name = "disk_fill"
metric = "disk_used_pct"
limit = 100
horizon = "2h"
lookback = "40m"
min_points = 10
min_t = 2
max_extrapolation = 20
resolve_after = "5m"
severity = "warning"

[offline]
after = "10m"
severity = "warning"

[invalid_input]
batches = 2
severity = "info"
"#;

fn rules() -> Arc<RuleSet> {
    Arc::new(RuleSet::from_toml(RULES, "format_tests.toml").unwrap())
}

fn cfg() -> PipelineConfig {
    PipelineConfig {
        clock: ClockMode::Wall,
        ..PipelineConfig::default()
    }
}

/// The batches of step `k` (one minute each) and its processing time:
/// a0 breaches cpu from minute 5 to 30 and mem from 20 on, a1 fills a
/// disk, a2 goes silent at minute 15 (offline) and comes back at 70, a3
/// sends only non-finite values from minute 10 to 60.
fn step(k: usize) -> (Vec<Vec<u8>>, i64) {
    let t = T0 + k as i64 * MIN;
    let now = t + 45_000;
    let seq = k as u64 + 1;
    let m = k as f64;
    let cpu = if (5..30).contains(&k) {
        96.0 + m % 3.0
    } else {
        40.0 + m % 7.0
    };
    let mem = if k >= 20 { 97.0 } else { 60.0 };
    let disk = 40.0 + 0.5 * m + if k.is_multiple_of(2) { 0.3 } else { -0.2 };
    let mut out = vec![
        batch_of(
            "t1",
            "a0",
            1,
            seq,
            t,
            &[("cpu_pct", t, cpu), ("mem_pct", t, mem)],
        ),
        batch_of("t1", "a1", 1, seq, t, &[("disk_used_pct", t, disk)]),
    ];
    if !(15..70).contains(&k) {
        out.push(batch_of("t1", "a2", 1, seq, t, &[("cpu_pct", t, 10.0)]));
    }
    let bad = if (10..60).contains(&k) { f64::NAN } else { 5.0 };
    out.push(batch_of("t2", "a3", 1, seq, t, &[("cpu_pct", t, bad)]));
    (out, now)
}

/// Feeds steps `range` and returns every output as comparable text.
fn feed(p: &mut Pipeline, range: std::ops::Range<usize>) -> Vec<String> {
    let mut got = Vec::new();
    let mut out = Outputs::default();
    for k in range {
        let (batches, now) = step(k);
        for b in &batches {
            p.process(POS, b, now, &mut out);
        }
        p.tick(now, &mut out);
        got.extend(out.alerts.iter().map(|a| format!("{k} alert {a:?}")));
        got.extend(out.windows.iter().map(|w| format!("{k} window {w:?}")));
        out.clear();
    }
    got
}

fn golden_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/pipeline/testdata/pipeline_v5.json")
}

fn golden_output_path() -> std::path::PathBuf {
    golden_path().with_file_name("pipeline_v5_output.txt")
}

/// Writes the golden checkpoint (run on the last commit before the
/// registry; see the module docs).
#[test]
#[ignore = "writes testdata; run by hand with VIGIL_WRITE_GOLDEN=1"]
fn write_golden() {
    if std::env::var_os("VIGIL_WRITE_GOLDEN").is_none() {
        return;
    }
    let mut p = Pipeline::new(cfg(), rules()).unwrap();
    let first = feed(&mut p, 0..HALF);
    assert!(first
        .iter()
        .any(|l| l.contains("alert") && l.contains("cpu_high")));
    std::fs::write(golden_path(), serde_json::to_string_pretty(&p).unwrap()).unwrap();
    let rest = feed(&mut p, HALF..STEPS);
    let all: Vec<String> = first.into_iter().chain(rest).collect();
    std::fs::write(golden_output_path(), all.join("\n") + "\n").unwrap();
}

/// The golden output (every step of the scenario, uninterrupted, as the
/// Vigil before the registry produced it).
fn golden_output() -> Vec<String> {
    include_str!("testdata/pipeline_v5_output.txt")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The registry changes no output: the whole scenario, uninterrupted,
/// gives the events and windows of the Vigil before it, line for line,
/// but for a trend prediction's `value` and `predicted_at_ms` (see the
/// module docs), which may differ by at most 0.1 and 1 s.
#[test]
fn output_is_unchanged_by_the_registry() {
    let mut p = Pipeline::new(cfg(), rules()).unwrap();
    let got = feed(&mut p, 0..STEPS);
    let want = golden_output();
    assert_eq!(got.len(), want.len());
    let field = |l: &str, name: &str| -> Option<f64> {
        let rest = &l[l.find(&format!("{name}: Some("))? + name.len() + 7..];
        rest[..rest.find(')')?].parse().ok()
    };
    let mut trend = 0;
    for (g, w) in got.iter().zip(&want) {
        if g.contains("kind: Trend") && g.contains("status: Firing") {
            trend += 1;
            for (name, tol) in [("value", 0.1), ("predicted_at_ms", 1000.0)] {
                let (Some(a), Some(b)) = (field(g, name), field(w, name)) else {
                    panic!("{name} missing: {g} / {w}")
                };
                assert!((a - b).abs() <= tol, "{name}: {a} vs {b}");
            }
            let strip = |l: &str| {
                let cut = |l: String, name: &str| match l.find(&format!("{name}: Some(")) {
                    Some(i) => {
                        let j = i + l[i..].find(')').unwrap_or(0);
                        format!("{}{}", &l[..i], &l[j + 1..])
                    }
                    None => l,
                };
                // The summary text carries both as well.
                let l = cut(cut(l.to_string(), "value"), "predicted_at_ms");
                match l.find("summary: ") {
                    Some(i) => l[..i].to_string(),
                    None => l,
                }
            };
            assert_eq!(strip(g), strip(w));
        } else {
            assert_eq!(g, w);
        }
    }
    assert_eq!(trend, 1, "the scenario's one trend prediction");
}

/// A format-5 checkpoint restores into the registry's layout and
/// continues with exactly the output of the uninterrupted run; written
/// again (new layout) and restored, it still does.
#[test]
fn format_5_checkpoint_restores_into_the_registry_layout() {
    let text = include_str!("testdata/pipeline_v5.json");
    let mut p: Pipeline = serde_json::from_str(text).unwrap();
    p.attach_rules(rules());
    let want: Vec<String> = golden_output()
        .into_iter()
        .filter(|l| {
            l.split(' ')
                .next()
                .and_then(|k| k.parse::<usize>().ok())
                .is_some_and(|k| k >= HALF)
        })
        .collect();
    assert!(want.iter().any(|l| l.contains("alert")));
    // The restored state holds what the old layout held.
    assert_eq!(p.detectors.series_states(), 2, "mem_high firing, disk fit");
    let again = serde_json::to_string(&p).unwrap();
    assert!(
        again.contains("\"versions\""),
        "the new form records versions"
    );
    assert!(!again.contains("\"input\":"), "no old agent form");
    assert!(!again.contains("\"free_trend\""), "no old engine form");
    let mut q: Pipeline = serde_json::from_str(&again).unwrap();
    q.attach_rules(rules());
    assert_eq!(feed(&mut p, HALF..STEPS), want);
    assert_eq!(feed(&mut q, HALF..STEPS), want);
}

/// A checkpoint holding a family this Vigil does not know, or a newer
/// form of a known one, is refused with a clear error (its state would be
/// lost or misread otherwise).
#[test]
fn unknown_family_state_is_refused() {
    let mut p = Pipeline::new(cfg(), rules()).unwrap();
    feed(&mut p, 0..5);
    let mut v: serde_json::Value = serde_json::to_value(&p).unwrap();
    v["detectors"]["versions"]["trend"] = 99.into();
    let e = serde_json::from_value::<Pipeline>(v.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("\"trend\" in form version 99"), "{e}");
    v["detectors"]["versions"]["trend"] = 1.into();
    v["detectors"]["versions"]["forecast"] = 1.into();
    let e = serde_json::from_value::<Pipeline>(v)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("family \"forecast\""), "{e}");
}
