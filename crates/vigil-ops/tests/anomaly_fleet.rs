//! The anomaly detector against the default fixed CPU thresholds on a
//! simulated fleet with diurnal load and labelled CPU saturations: 80
//! agents over 4 days, a quarter of them busy hosts whose ordinary
//! afternoon peak reaches 91–97 % (seed 7). One pipeline run carries both
//! rule sets (the families do not share state, so this is two runs in
//! one); incidents are scored per family against the simulator's
//! `cpu_saturation` episodes.
//!
//! The anomaly rule learns a day's profile before it may fire (one
//! period of warm-up), so the comparison scores the episodes and
//! incidents that start after the first day; the figures of the first day
//! are printed too.

use std::collections::BTreeMap;
use std::sync::Arc;

use vigil_ops::config::{ClockMode, PipelineConfig};
use vigil_ops::model::{AlertEvent, AlertStatus, DetectorKind};
use vigil_ops::pipeline::{Outputs, Pipeline};
use vigil_ops::rules::RuleSet;
use vigil_ops::Position;
use vigil_sim::{EpisodeKind, Fleet, FleetConfig, FleetTruth, ScenarioMix};

const DAY_MS: i64 = 86_400_000;

/// The anomaly rule under test, as in docs/rules.md (chosen before the
/// first run, not tuned on it): defaults but the direction (saturation is
/// the bad side) and a 5-point floor (a CPU change below 5 % is no
/// incident).
const ANOMALY: &str = r#"
[[anomaly]]
name = "cpu_anomaly"
metric = "cpu_pct"
direction = "up"
min_deviation = 5
severity = "warning"
"#;

/// One incident: (tenant, agent, started, resolved or end of run, rule).
type Incident = (String, String, i64, i64, String);

fn run() -> (Vec<AlertEvent>, FleetTruth, i64) {
    let mut rules = match RuleSet::from_toml(ANOMALY, "anomaly.toml") {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    rules.threshold = RuleSet::default_rules()
        .threshold
        .into_iter()
        .filter(|r| r.metric == "cpu_pct")
        .collect();
    assert_eq!(rules.threshold.len(), 2, "cpu_high and cpu_saturated");
    let cfg = PipelineConfig {
        clock: ClockMode::Replay,
        ..PipelineConfig::default()
    };
    let mut p = match Pipeline::new(cfg, Arc::new(rules)) {
        Ok(p) => p,
        Err(e) => panic!("{e:?}"),
    };
    let fc = FleetConfig {
        agents: 80,
        tenants: 4,
        duration_ms: 4 * DAY_MS,
        seed: 7,
        scenarios: ScenarioMix {
            busy_cpu_agents: 0.25,
            include_oversized: false,
            ..ScenarioMix::default()
        },
        ..FleetConfig::default()
    };
    let start = fc.start_ms;
    let mut fleet = Fleet::new(fc);
    let mut out = Outputs::default();
    let mut alerts = Vec::new();
    for (i, rec) in fleet.by_ref().enumerate() {
        let pos = Position {
            partition: 0,
            offset: i as i64,
        };
        p.process(pos, &rec.payload, 0, &mut out);
        alerts.append(&mut out.alerts);
        out.clear();
    }
    p.finish(&mut out);
    alerts.append(&mut out.alerts);
    (alerts, fleet.into_truth(), start)
}

/// The incidents of `kind` on `cpu_pct`, from their events.
fn incidents(alerts: &[AlertEvent], kind: DetectorKind, end: i64) -> Vec<Incident> {
    let mut open: BTreeMap<&str, usize> = BTreeMap::new();
    let mut v: Vec<Incident> = Vec::new();
    for a in alerts
        .iter()
        .filter(|a| a.kind == kind && a.metric.as_deref() == Some("cpu_pct"))
    {
        match a.status {
            AlertStatus::Firing => {
                open.insert(&a.id, v.len());
                v.push((
                    a.tenant.clone(),
                    a.agent.clone(),
                    a.started_at_ms,
                    end,
                    a.rule.clone(),
                ));
            }
            AlertStatus::Resolved => {
                if let Some(&k) = open.get(a.id.as_str()) {
                    v[k].3 = a.resolved_at_ms.unwrap_or(end);
                }
            }
        }
    }
    v
}

/// Figures of one family over episodes and incidents starting in
/// `[from, to)`.
#[derive(Debug, Default, Clone, Copy)]
struct Score {
    incidents: usize,
    true_pos: usize,
    false_pos: usize,
    episodes: usize,
    caught: usize,
}

/// Whether an incident overlaps an episode of the same agent.
fn overlaps(i: &Incident, e: &vigil_sim::Episode) -> bool {
    i.0 == e.tenant && i.1 == e.agent && i.2 < e.end_ms && e.start_ms < i.3
}

fn score(inc: &[Incident], eps: &[&vigil_sim::Episode], from: i64, to: i64) -> (Score, Vec<usize>) {
    let mut s = Score::default();
    for i in inc.iter().filter(|i| (from..to).contains(&i.2)) {
        s.incidents += 1;
        if eps.iter().any(|e| overlaps(i, e)) {
            s.true_pos += 1;
        } else {
            s.false_pos += 1;
        }
    }
    let mut caught = Vec::new();
    for (k, e) in eps.iter().enumerate() {
        if !(from..to).contains(&e.start_ms) {
            continue;
        }
        s.episodes += 1;
        if inc.iter().any(|i| overlaps(i, e)) {
            s.caught += 1;
            caught.push(k);
        }
    }
    (s, caught)
}

#[test]
fn anomaly_catches_the_saturations_thresholds_catch_with_fewer_alerts() {
    let (alerts, truth, start) = run();
    let end = start + 4 * DAY_MS + DAY_MS;
    let thr = incidents(&alerts, DetectorKind::Threshold, end);
    let ano = incidents(&alerts, DetectorKind::Anomaly, end);
    let eps: Vec<&vigil_sim::Episode> = truth
        .episodes
        .iter()
        .filter(|e| e.kind == EpisodeKind::CpuSaturation)
        .collect();
    let busy = truth.agents.iter().filter(|a| a.busy_cpu).count();
    println!(
        "fleet: {} agents ({busy} busy hosts), 4 days, {} cpu_saturation episodes",
        truth.agents.len(),
        eps.len()
    );
    let warm = start + DAY_MS;
    for (label, from, to) in [
        ("day 1 (anomaly warm-up)", i64::MIN, warm),
        ("days 2-4 (scored)", warm, i64::MAX),
    ] {
        let (t, _) = score(&thr, &eps, from, to);
        let (a, _) = score(&ano, &eps, from, to);
        println!(
            "{label}: episodes {} | thresholds: incidents {}, TP {}, FP {}, episodes caught {} | anomaly: incidents {}, TP {}, FP {}, episodes caught {}",
            t.episodes, t.incidents, t.true_pos, t.false_pos, t.caught, a.incidents, a.true_pos, a.false_pos, a.caught
        );
    }
    let (t, t_caught) = score(&thr, &eps, warm, i64::MAX);
    let (a, a_caught) = score(&ano, &eps, warm, i64::MAX);
    let is_busy = |e: &vigil_sim::Episode| {
        truth
            .agents
            .iter()
            .any(|a| a.busy_cpu && a.agent == e.agent && a.tenant == e.tenant)
    };
    println!(
        "anomaly recall of the saturations the thresholds catch: {}/{}",
        t_caught.iter().filter(|k| a_caught.contains(k)).count(),
        t_caught.len()
    );
    let missed: Vec<&vigil_sim::Episode> = t_caught
        .iter()
        .filter(|k| !a_caught.contains(k))
        .map(|&k| eps[k])
        .collect();
    for e in &missed {
        let overlapping: Vec<&Incident> = thr.iter().filter(|i| overlaps(i, e)).collect();
        println!(
            "missed by anomaly: {}/{} busy={} start={}h into the run, {} min; threshold incidents (rule, start - episode start in min, length in min): {:?}",
            e.tenant,
            e.agent,
            is_busy(e),
            (e.start_ms - start) / 3_600_000,
            (e.end_ms - e.start_ms) / 60_000,
            overlapping
                .iter()
                .map(|i| (i.4.as_str(), (i.2 - e.start_ms) / 60_000, (i.3 - i.2) / 60_000))
                .collect::<Vec<_>>()
        );
    }
    // Every saturation the thresholds detect, the anomaly rule catches.
    // A miss is allowed for one cause only (docs/detectors.md,
    // "anomaly"), checked here, so any other miss fails the test: a busy
    // host whose thresholds incident had opened on its daily peak before
    // the saturation began (it overlaps the saturation, so it counts as
    // caught, but did not detect it; the saturation hardly exceeds the
    // peak). A saturation learnt in the first season no longer hides the
    // same hour's later ones (module docs, "Warm-up").
    let mut unexplained = Vec::new();
    for e in &missed {
        let peak_before = is_busy(e)
            && thr
                .iter()
                .filter(|i| overlaps(i, e))
                .all(|i| i.2 < e.start_ms);
        println!("  cause: thresholds incident opened on the daily peak before it: {peak_before}");
        if !peak_before {
            unexplained.push(e);
        }
    }
    assert!(
        unexplained.is_empty(),
        "saturations the thresholds catch and the anomaly rule misses: {unexplained:#?}"
    );
    assert!(t.caught > 0, "the thresholds catch saturations: {t:?}");
    assert!(missed.len() <= 1, "{} missed", missed.len());
    // Fewer alerts, fewer false ones.
    assert!(
        a.incidents < t.incidents,
        "anomaly {a:?} vs thresholds {t:?}"
    );
    assert!(
        a.false_pos < t.false_pos,
        "anomaly {a:?} vs thresholds {t:?}"
    );
}
