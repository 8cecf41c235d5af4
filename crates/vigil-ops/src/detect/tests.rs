//! Unit and property tests of the detector engine: threshold `for` and
//! hysteresis, gaps, offline detection, trend events, lifecycle invariants
//! and checkpoint/restore equivalence.

use std::collections::HashMap as StdHashMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::DetectorEngine;
use crate::model::{
    incident_id, Agg, AlertEvent, AlertStatus, DetectorKind, ResolveReason, SeriesMeta,
    WindowAggregate,
};
use crate::rules::RuleSet;

const W: i64 = 60_000;

fn rules(text: &str) -> Arc<RuleSet> {
    match RuleSet::from_toml(text, "test.toml") {
        Ok(r) => Arc::new(r),
        Err(e) => panic!("{e}"),
    }
}

const CPU: &str = r#"
[[threshold]]
name = "cpu_high"
metric = "cpu_pct"
aggregate = "mean"
op = ">"
value = 90
for = 3
clear = 80
severity = "warning"

[offline]
after = "10m"
severity = "warning"
"#;

fn win(series: &SeriesMeta, i: i64, v: f64) -> WindowAggregate {
    WindowAggregate {
        series: series.clone(),
        start_ms: i * W,
        end_ms: (i + 1) * W,
        agg: Agg::new(i * W, v),
    }
}

fn cpu() -> SeriesMeta {
    SeriesMeta::new("t1", "a1", "cpu_pct", "")
}

fn feed(e: &mut DetectorEngine, s: &SeriesMeta, vals: &[(i64, f64)]) -> Vec<AlertEvent> {
    let mut out = Vec::new();
    for &(i, v) in vals {
        e.on_window(&win(s, i, v), &mut out);
    }
    out
}

#[test]
fn threshold_fires_after_for_and_resolves_past_clear() {
    let mut e = DetectorEngine::new(rules(CPU));
    let s = cpu();
    let out = feed(&mut e, &s, &[(0, 95.0), (1, 95.0)]);
    assert!(out.is_empty());
    let out = feed(&mut e, &s, &[(2, 96.0)]);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(
        (f.status, f.kind, f.rule.as_str()),
        (AlertStatus::Firing, DetectorKind::Threshold, "cpu_high")
    );
    assert_eq!(f.started_at_ms, 0, "started at the first breaching window");
    assert_eq!(
        f.event_time_ms,
        3 * W,
        "event at the end of the window completing the run"
    );
    assert_eq!(
        (f.window_start_ms, f.window_end_ms),
        (Some(2 * W), Some(3 * W))
    );
    assert_eq!((f.value, f.threshold), (Some(96.0), Some(90.0)));
    assert_eq!(f.id, incident_id(&f.fingerprint, 0));
    assert!(f.hostname.is_none() && !f.suppressed);
    // Between clear and value: still firing, no event.
    assert!(feed(&mut e, &s, &[(3, 85.0), (4, 92.0), (5, 81.0)]).is_empty());
    let out = feed(&mut e, &s, &[(6, 80.0)]);
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(r.status, AlertStatus::Resolved);
    assert_eq!(
        (r.id.as_str(), r.resolved_at_ms, r.started_at_ms),
        (f.id.as_str(), Some(7 * W), 0)
    );
}

const CPU_CLEAR_FOR: &str = r#"
[[threshold]]
name = "cpu_high"
metric = "cpu_pct"
aggregate = "mean"
op = ">"
value = 90
clear = 80
clear_for = 3
severity = "warning"
"#;

#[test]
fn clear_for_resolves_after_exactly_that_many_clear_windows() {
    let mut e = DetectorEngine::new(rules(CPU_CLEAR_FOR));
    let s = cpu();
    assert_eq!(feed(&mut e, &s, &[(0, 95.0)]).len(), 1);
    // Two windows past clear: one short of clear_for, still open.
    assert!(feed(&mut e, &s, &[(1, 79.0), (2, 79.0)]).is_empty());
    // The third resolves, at the end of that window, with no flap.
    let out = feed(&mut e, &s, &[(3, 79.0)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status, AlertStatus::Resolved);
    assert_eq!(out[0].resolved_at_ms, Some(4 * W));
    assert_eq!(out[0].started_at_ms, 0);
    assert_eq!(out[0].flaps, Some(0));
}

#[test]
fn short_clear_runs_are_flaps_of_one_incident() {
    let mut e = DetectorEngine::new(rules(CPU_CLEAR_FOR));
    let s = cpu();
    let out = feed(
        &mut e,
        &s,
        &[
            (0, 95.0),
            // Two clear windows, then back in the band: flap 1.
            (1, 70.0),
            (2, 70.0),
            (3, 85.0),
            // Exactly 80 is past clear (80 > 80 does not hold): one
            // clear window, then a breach: flap 2.
            (4, 80.0),
            (5, 99.0),
            // A clear window, a gap, two clear windows: the gap restarts
            // the clear run, no resolve yet and no flap.
            (6, 70.0),
            (8, 70.0),
            (9, 70.0),
        ],
    );
    assert_eq!(out.len(), 1, "one incident: {out:?}");
    assert_eq!(out[0].status, AlertStatus::Firing);
    assert!(out[0].flaps.is_none(), "firing events carry no flap count");
    let out = feed(&mut e, &s, &[(10, 70.0)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status, AlertStatus::Resolved);
    assert_eq!(
        (out[0].started_at_ms, out[0].resolved_at_ms),
        (0, Some(11 * W))
    );
    assert_eq!(out[0].flaps, Some(2));
    // The next incident counts its own flaps from zero.
    let out = feed(
        &mut e,
        &s,
        &[(11, 95.0), (12, 70.0), (13, 70.0), (14, 70.0)],
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].flaps, Some(0));
}

#[test]
fn threshold_state_from_a_checkpoint_without_flap_counters() {
    let st: super::threshold::ThresholdState =
        serde_json::from_str(r#"{"run":2,"last_end_ms":120000,"firing_since":0}"#)
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((st.run, st.clear_run, st.flaps), (2, 0, 0));
}

#[test]
fn a_gap_restarts_the_run() {
    let mut e = DetectorEngine::new(rules(CPU));
    let s = cpu();
    // windows 0,1 breach, 2 missing, 3,4 breach: not 3 consecutive yet.
    assert!(feed(&mut e, &s, &[(0, 95.0), (1, 95.0), (3, 95.0), (4, 95.0)]).is_empty());
    let out = feed(&mut e, &s, &[(5, 95.0)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].started_at_ms, 3 * W);
}

#[test]
fn lower_bound_rule_and_labels() {
    let r = rules(
        r#"
[[threshold]]
name = "spooler_down"
metric = "service_up"
labels = { service = "spooler" }
aggregate = "last"
op = "<"
value = 1
for = 2
severity = "critical"
summary = "{series} down on {agent}"
"#,
    );
    let mut e = DetectorEngine::new(r);
    let other = SeriesMeta::new("t", "a", "service_up", "service=sshd");
    let spool = SeriesMeta::new("t", "a", "service_up", "service=spooler");
    assert!(feed(&mut e, &other, &[(0, 0.0), (1, 0.0), (2, 0.0)]).is_empty());
    let out = feed(&mut e, &spool, &[(0, 0.0), (1, 0.0)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].summary, "service_up{service=spooler} down on a");
    assert_eq!(out[0].labels, "service=spooler");
    let out = feed(&mut e, &spool, &[(2, 1.0)]);
    assert_eq!(out[0].status, AlertStatus::Resolved);
}

#[test]
fn maintenance_suppresses_but_records() {
    let r = rules(&format!(
        "{CPU}\n[[maintenance]]\ntenant = \"t1\"\nagent = \"a1\"\nstart = 0\nend = {}\n",
        5 * W
    ));
    let mut e = DetectorEngine::new(r);
    let s = cpu();
    let out = feed(&mut e, &s, &[(0, 95.0), (1, 95.0), (2, 95.0), (3, 50.0)]);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|e| e.suppressed));
    let out = feed(&mut e, &s, &[(10, 95.0), (11, 95.0), (12, 95.0)]);
    assert!(!out[0].suppressed);
}

#[test]
fn offline_fires_on_tick_and_resolves_on_return() {
    let mut e = DetectorEngine::new(rules(CPU));
    let mut out = Vec::new();
    e.on_agent_seen("t1", "b", 0, &mut out);
    e.on_agent_seen("t1", "a", 0, &mut out);
    e.on_agent_seen("t0", "z", 5 * W, &mut out);
    e.on_tick(10 * W, &mut out);
    assert!(out.is_empty(), "exactly `after` is not yet offline");
    e.on_tick(10 * W + 1, &mut out);
    let agents: Vec<&str> = out.iter().map(|e| e.agent.as_str()).collect();
    assert_eq!(agents, ["a", "b"], "stable order");
    assert!(out
        .iter()
        .all(|e| e.kind == DetectorKind::Offline && e.metric.is_none() && e.labels.is_empty()));
    assert_eq!(
        out[0].started_at_ms,
        10 * W,
        "started at last seen + after, not at the tick that noticed it"
    );
    assert!(out.iter().all(|e| e.resolve_reason.is_none()));
    out.clear();
    e.on_tick(20 * W, &mut out);
    assert_eq!(out.len(), 1, "only z newly offline; a and b already are");
    assert_eq!(out[0].agent, "z");
    out.clear();
    e.on_agent_seen("t1", "a", 30 * W, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status, AlertStatus::Resolved);
    assert_eq!(out[0].resolved_at_ms, Some(30 * W));
    assert_eq!(out[0].id, incident_id(&out[0].fingerprint, 10 * W));
    assert_eq!(out[0].resolve_reason, Some(ResolveReason::Cleared));
}

#[test]
fn trend_fires_with_predicted_time_and_resolves_on_cleanup() {
    let r = rules(
        r#"
[[trend]]
name = "disk_full_predicted"
metric = "disk_used_pct"
limit = 100
severity = "warning"
"#,
    );
    let mut e = DetectorEngine::new(r);
    let s = SeriesMeta::new("t", "host1", "disk_used_pct", "mount=/data");
    let mut out = Vec::new();
    // Flat at 50 for 12 h, then +2 %/h: full at 12 h + 25 h = 37 h.
    let fill_min = 37 * 60;
    let mut fired = None;
    for i in 0..fill_min - 60 {
        let v = if i < 720 {
            50.0
        } else {
            50.0 + 2.0 * (i - 720) as f64 / 60.0
        };
        let v = v + if i % 2 == 0 { 0.2 } else { -0.2 };
        e.on_window(&win(&s, i, v), &mut out);
        if fired.is_none() && !out.is_empty() {
            fired = Some(i);
        }
    }
    let Some(at) = fired else {
        panic!("no trend alert")
    };
    assert_eq!(out.len(), 1);
    let f = out[0].clone();
    assert_eq!(
        (f.kind, f.status, f.threshold),
        (DetectorKind::Trend, AlertStatus::Firing, Some(100.0))
    );
    let pred = f.predicted_at_ms.unwrap_or(0);
    let truth = fill_min * W;
    let lead = truth - (at + 1) * W;
    assert!(lead > 5 * 3_600_000, "lead {} h", lead as f64 / 3.6e6);
    assert!(
        ((pred - truth).abs() as f64) < 0.1 * lead as f64,
        "pred {pred} truth {truth}"
    );
    assert!(
        f.summary.contains("predicted to reach 100 at 1970-01-0"),
        "{}",
        f.summary
    );
    // Cleanup: back to 40 % and flat; resolves within resolve_after (30m)
    // plus the fit's reaction time.
    out.clear();
    let base = fill_min - 60;
    for i in base..base + 180 {
        e.on_window(&win(&s, i, 40.0), &mut out);
    }
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].status, AlertStatus::Resolved);
    assert_eq!(out[0].id, f.id);
}

#[test]
fn trend_resolves_when_limit_is_reached() {
    let r = rules("[[trend]]\nname = \"p\"\nmetric = \"m\"\nlimit = 100\nseverity = \"info\"\n");
    let mut e = DetectorEngine::new(r);
    let s = SeriesMeta::new("t", "a", "m", "");
    let mut out = Vec::new();
    for i in 0..3000 {
        let v = (20.0 + 3.0 * i as f64 / 60.0).min(100.0);
        e.on_window(&win(&s, i, v), &mut out);
    }
    let st: Vec<AlertStatus> = out.iter().map(|e| e.status).collect();
    assert_eq!(st, [AlertStatus::Firing, AlertStatus::Resolved]);
    assert!(out[1].summary.contains("reached"), "{}", out[1].summary);
}

#[test]
fn falling_trend() {
    let r = rules("[[trend]]\nname = \"free\"\nmetric = \"free_gb\"\nlimit = 0\ndirection = \"falling\"\nseverity = \"info\"\n");
    let mut e = DetectorEngine::new(r);
    let s = SeriesMeta::new("t", "a", "free_gb", "");
    let mut out = Vec::new();
    for i in 0..1500 {
        let v = 100.0 - 4.0 * i as f64 / 60.0 + if i % 2 == 0 { 0.1 } else { -0.1 };
        e.on_window(&win(&s, i, v.max(0.0)), &mut out);
    }
    assert!(!out.is_empty());
    assert_eq!(out[0].status, AlertStatus::Firing);
    let pred = out[0].predicted_at_ms.unwrap_or(0);
    assert!((pred - 1500 * W).abs() < 3_600_000, "pred {pred}");
}

#[test]
fn attach_rules_keeps_state_by_name() {
    let mut e = DetectorEngine::new(rules(CPU));
    let s = cpu();
    feed(&mut e, &s, &[(0, 95.0), (1, 95.0)]);
    let json = serde_json::to_string(&e).unwrap_or_default();
    let back: Result<DetectorEngine, _> = serde_json::from_str(&json);
    let Ok(mut back) = back else {
        panic!("restore failed")
    };
    // Same rules plus a new one before it: state still found by name.
    let more = format!(
        "[[threshold]]\nname = \"x\"\nmetric = \"y\"\naggregate = \"last\"\nop = \">\"\nvalue = 1\nseverity = \"info\"\n{CPU}"
    );
    back.attach_rules(rules(&more), &mut Vec::new());
    assert_eq!(feed(&mut back, &s, &[(2, 95.0)]).len(), 1);
}

/// A checkpoint of `e` restored under `rules`: the events the attach
/// raised, and the restored engine.
fn restore(e: &DetectorEngine, rules: Arc<RuleSet>) -> (Vec<AlertEvent>, DetectorEngine) {
    let json = serde_json::to_string(e).unwrap_or_default();
    let back: Result<DetectorEngine, _> = serde_json::from_str(&json);
    let Ok(mut back) = back else {
        panic!("restore failed")
    };
    let mut out = Vec::new();
    back.attach_rules(rules, &mut out);
    (out, back)
}

/// (rule, status, started, event time, reason) of each event.
type Brief = (String, AlertStatus, i64, i64, Option<ResolveReason>);

fn brief(out: &[AlertEvent]) -> Vec<Brief> {
    out.iter()
        .map(|e| {
            (
                e.rule.clone(),
                e.status,
                e.started_at_ms,
                e.event_time_ms,
                e.resolve_reason,
            )
        })
        .collect()
}

#[test]
fn edited_threshold_resolves_with_rule_changed_and_re_evaluates() {
    let mut e = DetectorEngine::new(rules(CPU));
    let s = cpu();
    let out = feed(&mut e, &s, &[(0, 95.0), (1, 95.0), (2, 95.0), (3, 95.0)]);
    assert_eq!(
        brief(&out),
        [("cpu_high".into(), AlertStatus::Firing, 0, 3 * W, None)]
    );
    // Same name, threshold 90 -> 85.
    let (out, mut back) = restore(&e, rules(&CPU.replace("value = 90", "value = 85")));
    assert_eq!(
        brief(&out),
        [(
            "cpu_high".into(),
            AlertStatus::Resolved,
            0,
            4 * W,
            Some(ResolveReason::RuleChanged)
        )],
        "resolved at the end of the last window the old rule saw"
    );
    assert_eq!(out[0].id, incident_id(&out[0].fingerprint, 0));
    assert_eq!(out[0].threshold, Some(90.0), "the retired rule's threshold");
    // The new definition starts from nothing: `for` = 3 windows over 85.
    assert!(feed(&mut back, &s, &[(4, 87.0), (5, 87.0)]).is_empty());
    let out = feed(&mut back, &s, &[(6, 87.0)]);
    assert_eq!(
        brief(&out),
        [("cpu_high".into(), AlertStatus::Firing, 4 * W, 7 * W, None)]
    );
    // The straight run under the old rule would have resolved at 87 < 90
    // only below clear (80): the new rule decides now.
    assert!(feed(&mut back, &s, &[(7, 86.0)]).is_empty());
}

#[test]
fn removed_rule_resolves_with_rule_removed_and_a_new_name_starts_afresh() {
    let mut e = DetectorEngine::new(rules(CPU));
    let s = cpu();
    feed(&mut e, &s, &[(0, 95.0), (1, 95.0), (2, 95.0)]);
    // Renamed: the old name is gone (rule_removed), the new one is a new
    // rule with its own fingerprint.
    let (out, mut back) = restore(&e, rules(&CPU.replace("cpu_high", "cpu_hot")));
    assert_eq!(
        brief(&out),
        [(
            "cpu_high".into(),
            AlertStatus::Resolved,
            0,
            3 * W,
            Some(ResolveReason::RuleRemoved)
        )]
    );
    let out = feed(&mut back, &s, &[(3, 95.0), (4, 95.0), (5, 95.0)]);
    assert_eq!(
        brief(&out),
        [("cpu_hot".into(), AlertStatus::Firing, 3 * W, 6 * W, None)]
    );
    // A removed rule whose series was not firing resolves nothing.
    let (out, _) = restore(&back, rules("[[threshold]]\nname = \"x\"\nmetric = \"y\"\naggregate = \"last\"\nop = \">\"\nvalue = 1\nseverity = \"info\"\n"));
    assert_eq!(
        brief(&out),
        [(
            "cpu_hot".into(),
            AlertStatus::Resolved,
            3 * W,
            6 * W,
            Some(ResolveReason::RuleRemoved)
        )]
    );
}

#[test]
fn severity_and_summary_edits_keep_state() {
    let mut e = DetectorEngine::new(rules(CPU));
    let s = cpu();
    feed(&mut e, &s, &[(0, 95.0), (1, 95.0), (2, 95.0)]);
    let edited = CPU.replace(
        "severity = \"warning\"\n\n[offline]",
        "severity = \"critical\"\nsummary = \"{series} hot\"\n\n[offline]",
    );
    assert_ne!(edited, CPU);
    let (out, mut back) = restore(&e, rules(&edited));
    assert!(out.is_empty(), "{out:?}");
    let out = feed(&mut back, &s, &[(3, 70.0)]);
    assert_eq!(
        brief(&out),
        [(
            "cpu_high".into(),
            AlertStatus::Resolved,
            0,
            4 * W,
            Some(ResolveReason::Cleared)
        )]
    );
    assert_eq!(out[0].severity, crate::model::Severity::Critical);
}

#[test]
fn label_edit_watches_the_known_series_that_now_match() {
    let spooler = |svc: &str| {
        rules(&format!(
            "[[threshold]]\nname = \"down\"\nmetric = \"service_up\"\nlabels = {{ service = \"{svc}\" }}\n\
             aggregate = \"last\"\nop = \"<\"\nvalue = 1\nfor = 2\nseverity = \"critical\"\n"
        ))
    };
    let mut e = DetectorEngine::new(spooler("spooler"));
    let spool = SeriesMeta::new("t", "a", "service_up", "service=spooler");
    let sshd = SeriesMeta::new("t", "a", "service_up", "service=sshd");
    let mut out = feed(&mut e, &spool, &[(0, 0.0), (1, 0.0)]);
    out.extend(feed(&mut e, &sshd, &[(0, 0.0)]));
    assert_eq!(
        brief(&out),
        [("down".into(), AlertStatus::Firing, 0, 2 * W, None)]
    );
    let (out, mut back) = restore(&e, spooler("sshd"));
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].labels.as_str(), out[0].resolve_reason),
        ("service=spooler", Some(ResolveReason::RuleChanged))
    );
    // sshd (known, seen once) is now watched; spooler no longer is.
    assert!(feed(&mut back, &spool, &[(2, 0.0), (3, 0.0), (4, 0.0)]).is_empty());
    let out = feed(&mut back, &sshd, &[(1, 0.0), (2, 0.0)]);
    assert_eq!(
        brief(&out),
        [("down".into(), AlertStatus::Firing, W, 3 * W, None)]
    );
    assert_eq!(out[0].labels, "service=sshd");
}

#[test]
fn edited_trend_rule_resolves_its_prediction() {
    let text = "[[trend]]\nname = \"p\"\nmetric = \"m\"\nlimit = 100\nseverity = \"info\"\n";
    let mut e = DetectorEngine::new(rules(text));
    let s = SeriesMeta::new("t", "a", "m", "");
    let mut out = Vec::new();
    let mut i = 0;
    while out.is_empty() && i < 3000 {
        let v = 20.0 + 3.0 * i as f64 / 60.0 + if i % 2 == 0 { 0.1 } else { -0.1 };
        e.on_window(&win(&s, i, v), &mut out);
        i += 1;
    }
    assert_eq!(out.len(), 1, "the fill is predicted");
    let fired = out[0].clone();
    let (out, _) = restore(&e, rules(&text.replace("limit = 100", "limit = 200")));
    assert_eq!(
        brief(&out),
        [(
            "p".into(),
            AlertStatus::Resolved,
            fired.started_at_ms,
            i * W,
            Some(ResolveReason::RuleChanged)
        )]
    );
    assert_eq!(out[0].id, fired.id);
    assert_eq!(
        (out[0].kind, out[0].threshold),
        (DetectorKind::Trend, Some(100.0))
    );
}

#[test]
fn offline_ids_survive_a_restart() {
    // Straight: agent seen at 0, noticed offline by a tick at 11 min.
    let mut straight = DetectorEngine::new(rules(CPU));
    let mut want = Vec::new();
    straight.on_agent_seen("t1", "a", 0, &mut want);
    let snapshot = straight.clone();
    straight.on_tick(11 * W, &mut want);
    straight.on_agent_seen("t1", "a", 60 * W, &mut want);
    assert_eq!(want.len(), 2);
    // Restarted from the checkpoint before the tick: Vigil was down for
    // 30 minutes (skipped), then a tick at 45 min notices the silence
    // again: same incident, same id.
    let (out, mut back) = restore(&snapshot, rules(CPU));
    assert!(out.is_empty());
    back.skip_processing_time(30 * W);
    let mut got = Vec::new();
    back.on_tick(39 * W, &mut got);
    assert!(got.is_empty(), "skipped time is not silence");
    back.on_tick(45 * W, &mut got);
    back.on_agent_seen("t1", "a", 60 * W, &mut got);
    let ids = |v: &[AlertEvent]| -> Vec<(String, AlertStatus, i64)> {
        v.iter()
            .map(|e| (e.id.clone(), e.status, e.started_at_ms))
            .collect()
    };
    assert_eq!(
        ids(&got),
        ids(&want),
        "the firing's time differs, not its id"
    );
    assert_eq!(got[0].id, want[0].id);
    assert_eq!(got[1].id, want[1].id);
    assert_eq!(got[0].started_at_ms, 10 * W);
    assert_eq!(
        got[0].value,
        Some(45.0 * 60.0),
        "the real silence, in seconds"
    );
}

#[test]
fn edited_offline_rule_resolves_and_re_fires_with_a_new_start() {
    let mut e = DetectorEngine::new(rules(CPU));
    let mut out = Vec::new();
    e.on_agent_seen("t1", "a", 0, &mut out);
    e.on_agent_seen("t1", "b", 0, &mut out);
    e.on_tick(11 * W, &mut out);
    assert_eq!(out.len(), 2);
    let (out, mut back) = restore(
        &e,
        rules(&CPU.replace("after = \"10m\"", "after = \"20m\"")),
    );
    let b = brief(&out);
    assert_eq!(b.len(), 2);
    for (x, agent) in b.iter().zip(["a", "b"]) {
        assert_eq!(
            x,
            &(
                "agent_offline".into(),
                AlertStatus::Resolved,
                10 * W,
                11 * W,
                Some(ResolveReason::RuleChanged)
            ),
            "{agent}"
        );
    }
    assert_eq!((out[0].agent.as_str(), out[1].agent.as_str()), ("a", "b"));
    let mut out = Vec::new();
    back.on_tick(20 * W, &mut out);
    assert!(out.is_empty(), "exactly the new `after`");
    back.on_tick(21 * W, &mut out);
    assert_eq!(
        brief(&out)[0],
        (
            "agent_offline".into(),
            AlertStatus::Firing,
            20 * W,
            21 * W,
            None
        )
    );
    // Removed: rule_removed.
    let (out, _) = restore(&back, rules("[[threshold]]\nname = \"x\"\nmetric = \"y\"\naggregate = \"last\"\nop = \">\"\nvalue = 1\nseverity = \"info\"\n"));
    assert_eq!(out.len(), 2);
    assert!(
        out.iter()
            .all(|e| e.resolve_reason == Some(ResolveReason::RuleRemoved)
                && e.started_at_ms == 20 * W)
    );
}

const INVALID: &str = "[invalid_input]\nbatches = 3\nafter = \"2m\"\nseverity = \"warning\"\n";

#[test]
fn invalid_input_fires_after_batches_and_time_and_resolves_on_good_input() {
    use super::invalid_input::InputVerdict::{Good, Refused};
    use crate::reject::RejectReason::InvalidMetric;
    let mut e = DetectorEngine::new(rules(INVALID));
    let mut out = Vec::new();
    // Two refused batches then a good one: the run restarts.
    e.on_agent_input("t", "a", 0, Refused(InvalidMetric), &mut out);
    e.on_agent_input("t", "a", W, Refused(InvalidMetric), &mut out);
    e.on_agent_input("t", "a", 2 * W, Good, &mut out);
    assert!(out.is_empty());
    // Three refused batches, but only 2 min - 1 ms apart: not yet.
    e.on_agent_input("t", "a", 3 * W, Refused(InvalidMetric), &mut out);
    e.on_agent_input("t", "a", 4 * W, Refused(InvalidMetric), &mut out);
    e.on_agent_input("t", "a", 5 * W - 1, Refused(InvalidMetric), &mut out);
    assert!(out.is_empty());
    // Exactly `after` since the first of the run: fires, started then.
    e.on_agent_input("t", "a", 5 * W, Refused(InvalidMetric), &mut out);
    assert_eq!(
        brief(&out),
        [(
            "agent_invalid_input".into(),
            AlertStatus::Firing,
            3 * W,
            5 * W,
            None
        )]
    );
    assert_eq!(
        (out[0].kind, out[0].value, out[0].metric.as_deref()),
        (DetectorKind::InvalidInput, Some(4.0), None)
    );
    assert!(
        out[0].summary.contains("invalid_metric"),
        "{}",
        out[0].summary
    );
    // More refused input: still one incident; a checkpoint keeps it.
    e.on_agent_input("t", "a", 6 * W, Refused(InvalidMetric), &mut out);
    assert_eq!(out.len(), 1);
    let (restored, mut back) = restore(&e, rules(INVALID));
    assert!(restored.is_empty());
    back.on_agent_input("t", "a", 7 * W, Good, &mut out);
    assert_eq!(
        brief(&out[1..]),
        [(
            "agent_invalid_input".into(),
            AlertStatus::Resolved,
            3 * W,
            7 * W,
            Some(ResolveReason::Cleared)
        )]
    );
    assert_eq!(out[0].id, out[1].id);
}

#[test]
fn invalid_input_batches_limit_is_exact_and_rule_edits_resolve() {
    use super::invalid_input::InputVerdict::Refused;
    use crate::reject::RejectReason::TooManySeries;
    let text = "[invalid_input]\nbatches = 2\nseverity = \"info\"\n";
    let mut e = DetectorEngine::new(rules(text));
    let mut out = Vec::new();
    e.on_agent_input("t", "a", 0, Refused(TooManySeries), &mut out);
    assert!(out.is_empty(), "one batch under the limit");
    e.on_agent_input("t", "a", 0, Refused(TooManySeries), &mut out);
    assert_eq!(out.len(), 1, "no time condition by default");
    e.on_agent_seen("t", "a", 3 * W, &mut out);
    // Edited: resolved at the latest processing time the engine knows; the
    // run restarts, so a new incident has a new start and id.
    let (out2, mut back) = restore(&e, rules(&text.replace("batches = 2", "batches = 1")));
    assert_eq!(
        brief(&out2),
        [(
            "agent_invalid_input".into(),
            AlertStatus::Resolved,
            0,
            3 * W,
            Some(ResolveReason::RuleChanged)
        )]
    );
    let mut out3 = Vec::new();
    back.on_agent_input("t", "a", 4 * W, Refused(TooManySeries), &mut out3);
    assert_eq!(
        brief(&out3),
        [(
            "agent_invalid_input".into(),
            AlertStatus::Firing,
            4 * W,
            4 * W,
            None
        )]
    );
    assert_ne!(out3[0].id, out[0].id);
}

/// Runs `steps` straight under `PROP_RULES`, and with a checkpoint at
/// `cut` restored under `edited`; returns both event lists.
fn straight_and_edited(
    steps: &[Step],
    cut: usize,
    edited: &str,
) -> (Vec<AlertEvent>, Vec<AlertEvent>) {
    let s = series();
    let mut straight = DetectorEngine::new(rules(PROP_RULES));
    let want = run_steps(&mut straight, steps, &s, &mut [0; 3], &mut 0);
    let mut first = DetectorEngine::new(rules(PROP_RULES));
    let (mut pos, mut now) = ([0i64; 3], 0i64);
    let mut got = run_steps(&mut first, &steps[..cut], &s, &mut pos, &mut now);
    let (retired, mut back) = restore(&first, rules(edited));
    got.extend(retired);
    got.extend(run_steps(&mut back, &steps[cut..], &s, &mut pos, &mut now));
    (want, got)
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

/// One step of a random stream.
#[derive(Debug, Clone)]
enum Step {
    /// A window of series `s` (0..3), `skip` windows after its previous
    /// one, with value `v`.
    Window { s: usize, skip: u8, v: f64 },
    /// Agent `a` (0..3) seen, `dt` ms after the previous processing time.
    Seen { a: usize, dt: i64 },
    /// Tick `dt` ms later.
    Tick { dt: i64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0usize..3, prop_oneof![4 => Just(0u8), 1 => 1u8..4], prop_oneof![70.0f64..100.0, Just(90.0), Just(80.0)])
            .prop_map(|(s, skip, v)| Step::Window { s, skip, v }),
        1 => (0usize..3, 0i64..400_000).prop_map(|(a, dt)| Step::Seen { a, dt }),
        1 => (0i64..900_000).prop_map(|dt| Step::Tick { dt }),
    ]
}

const PROP_RULES: &str = r#"
[[threshold]]
name = "hot"
metric = "cpu_pct"
aggregate = "mean"
op = ">"
value = 90
for = 2
clear = 80
severity = "warning"

[[threshold]]
name = "very_hot"
metric = "cpu_pct"
aggregate = "max"
op = ">="
value = 97
severity = "critical"

[[trend]]
name = "rising"
metric = "cpu_pct"
limit = 100
min_points = 5
lookback = "30m"
min_t = 2
severity = "info"

[offline]
after = "10m"
severity = "warning"
"#;

/// Runs steps `from..` on `engine`, with stream cursors `pos` (next window
/// index per series) and `now` (processing time).
fn run_steps(
    engine: &mut DetectorEngine,
    steps: &[Step],
    series: &[SeriesMeta],
    pos: &mut [i64; 3],
    now: &mut i64,
) -> Vec<AlertEvent> {
    let mut out = Vec::new();
    for st in steps {
        match *st {
            Step::Window { s, skip, v } => {
                pos[s] += i64::from(skip);
                engine.on_window(&win(&series[s], pos[s], v), &mut out);
                pos[s] += 1;
            }
            Step::Seen { a, dt } => {
                *now += dt;
                engine.on_agent_seen("t", &format!("agent{a}"), *now, &mut out);
            }
            Step::Tick { dt } => {
                *now += dt;
                engine.on_tick(*now, &mut out);
            }
        }
    }
    out
}

fn series() -> Vec<SeriesMeta> {
    (0..3)
        .map(|i| SeriesMeta::new("t", &format!("agent{i}"), "cpu_pct", ""))
        .collect()
}

/// Reference model of one threshold rule: (firing, run, last_end).
fn reference(
    vals: &[(i64, f64)],
    value: f64,
    clear: f64,
    for_n: u32,
    ge: bool,
) -> Vec<(AlertStatus, i64)> {
    let holds = |v: f64, x: f64| if ge { v >= x } else { v > x };
    let (mut firing, mut run, mut run_start, mut last_end) = (None::<i64>, 0u32, 0i64, None::<i64>);
    let mut ev = Vec::new();
    for &(i, v) in vals {
        let (start, end) = (i * W, (i + 1) * W);
        let contiguous = last_end == Some(start);
        last_end = Some(end);
        if holds(v, value) {
            if run == 0 || !contiguous {
                run = 0;
                run_start = start;
            }
            run += 1;
        } else {
            run = 0;
        }
        match firing {
            None if holds(v, value) && run >= for_n => {
                firing = Some(run_start);
                ev.push((AlertStatus::Firing, run_start));
            }
            Some(st) if !holds(v, clear) => {
                firing = None;
                ev.push((AlertStatus::Resolved, st));
            }
            _ => {}
        }
    }
    ev
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn lifecycle_alternates_and_ids_match(steps in prop::collection::vec(step(), 0..300)) {
        let mut e = DetectorEngine::new(rules(PROP_RULES));
        let s = series();
        let out = run_steps(&mut e, &steps, &s, &mut [0; 3], &mut 0);
        let mut open: StdHashMap<String, String> = StdHashMap::new();
        for ev in &out {
            prop_assert!(ev.hostname.is_none());
            prop_assert_eq!(&ev.id, &incident_id(&ev.fingerprint, ev.started_at_ms));
            match ev.status {
                AlertStatus::Firing => {
                    prop_assert!(!open.contains_key(&ev.fingerprint), "two firings for {}", ev.fingerprint);
                    open.insert(ev.fingerprint.clone(), ev.id.clone());
                    prop_assert_eq!(ev.event_time_ms >= ev.started_at_ms, true);
                }
                AlertStatus::Resolved => {
                    let id = open.remove(&ev.fingerprint);
                    prop_assert_eq!(id.as_deref(), Some(ev.id.as_str()), "resolved without firing");
                    prop_assert_eq!(ev.resolved_at_ms, Some(ev.event_time_ms));
                }
            }
        }
    }

    #[test]
    fn threshold_events_match_the_reference_model(steps in prop::collection::vec(step(), 0..300)) {
        let mut e = DetectorEngine::new(rules(PROP_RULES));
        let s = series();
        let out = run_steps(&mut e, &steps, &s, &mut [0; 3], &mut 0);
        // Rebuild each series' window sequence.
        let mut pos = [0i64; 3];
        let mut vals: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 3];
        for st in &steps {
            if let Step::Window { s, skip, v } = *st {
                pos[s] += i64::from(skip);
                vals[s].push((pos[s], v));
                pos[s] += 1;
            }
        }
        for (i, sm) in s.iter().enumerate() {
            for (rule, value, clear, for_n, ge) in [("hot", 90.0, 80.0, 2, false), ("very_hot", 97.0, 97.0, 1, true)] {
                let want = reference(&vals[i], value, clear, for_n, ge);
                let got: Vec<(AlertStatus, i64)> = out
                    .iter()
                    .filter(|e| e.rule == rule && e.agent == sm.agent())
                    .map(|e| (e.status, e.started_at_ms))
                    .collect();
                prop_assert_eq!(got, want, "rule {} series {}", rule, i);
            }
        }
    }

    /// Editing one rule at a restore changes nothing for the others
    /// (their state survives bit for bit), and the edited rule's incidents
    /// still pair up: every firing is resolved at most once, by the old
    /// definition or with `rule_changed`.
    #[test]
    fn an_edit_leaves_other_rules_untouched(steps in prop::collection::vec(step(), 0..300), cut in 0usize..300) {
        let cut = cut.min(steps.len());
        let edited = PROP_RULES.replace("value = 97", "value = 95");
        let (want, got) = straight_and_edited(&steps, cut, &edited);
        for rule in ["hot", "rising", "agent_offline"] {
            let w: Vec<_> = want.iter().filter(|e| e.rule == rule).collect();
            let g: Vec<_> = got.iter().filter(|e| e.rule == rule).collect();
            prop_assert_eq!(g, w, "rule {}", rule);
        }
        let mut open: StdHashMap<String, String> = StdHashMap::new();
        for ev in got.iter().filter(|e| e.rule == "very_hot") {
            match ev.status {
                AlertStatus::Firing => {
                    prop_assert!(open.insert(ev.fingerprint.clone(), ev.id.clone()).is_none());
                }
                AlertStatus::Resolved => {
                    let id = open.remove(&ev.fingerprint);
                    prop_assert_eq!(id.as_deref(), Some(ev.id.as_str()));
                }
            }
        }
        // Exactly the incidents open at the cut resolve as rule_changed.
        let changed = got.iter().filter(|e| e.resolve_reason == Some(ResolveReason::RuleChanged)).count();
        let mut at_cut: StdHashMap<String, bool> = StdHashMap::new();
        let s = series();
        let mut e = DetectorEngine::new(rules(PROP_RULES));
        for ev in run_steps(&mut e, &steps[..cut], &s, &mut [0; 3], &mut 0) {
            if ev.rule == "very_hot" {
                at_cut.insert(ev.fingerprint, ev.status == AlertStatus::Firing);
            }
        }
        let open_at_cut = at_cut.values().filter(|f| **f).count();
        prop_assert_eq!(changed, open_at_cut);
    }

    /// Identical rules (a re-parsed file, also with another severity or
    /// summary text) restore to exactly the uninterrupted output.
    #[test]
    fn restore_under_identical_definitions_is_exact(steps in prop::collection::vec(step(), 0..300), cut in 0usize..300) {
        let cut = cut.min(steps.len());
        let (want, got) = straight_and_edited(&steps, cut, PROP_RULES);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn checkpoint_restore_is_equivalent(steps in prop::collection::vec(step(), 0..300), cut in 0usize..300) {
        let r = rules(PROP_RULES);
        let s = series();
        let cut = cut.min(steps.len());

        let mut straight = DetectorEngine::new(r.clone());
        let want = run_steps(&mut straight, &steps, &s, &mut [0; 3], &mut 0);

        let mut first = DetectorEngine::new(r.clone());
        let (mut pos, mut now) = ([0i64; 3], 0i64);
        let mut got = run_steps(&mut first, &steps[..cut], &s, &mut pos, &mut now);
        let json = serde_json::to_string(&first).map_err(|e| TestCaseError::fail(e.to_string()))?;
        drop(first);
        let mut restored: DetectorEngine = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        restored.attach_rules(r, &mut Vec::new());
        got.extend(run_steps(&mut restored, &steps[cut..], &s, &mut pos, &mut now));
        prop_assert_eq!(got, want);
        // Checkpoints are deterministic.
        let again = serde_json::to_string(&restored).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again2 = serde_json::to_string(&straight).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again, again2);
    }
}
