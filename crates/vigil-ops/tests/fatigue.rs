//! Alert fatigue of the default threshold rules on the default simulated
//! fleet (the one `vigil demo` runs: 1,000 agents, 6 h, seed 42).

use std::collections::BTreeMap;
use std::sync::Arc;

use vigil_ops::config::{ClockMode, PipelineConfig};
use vigil_ops::model::{AlertEvent, AlertStatus, DetectorKind};
use vigil_ops::pipeline::{Outputs, Pipeline};
use vigil_ops::rules::RuleSet;
use vigil_ops::Position;
use vigil_sim::{Fleet, FleetConfig, FleetTruth};

fn run_default_fleet() -> (Vec<AlertEvent>, FleetTruth) {
    let rules = Arc::new(RuleSet::default_rules());
    let cfg = PipelineConfig {
        clock: ClockMode::Replay,
        ..PipelineConfig::default()
    };
    let mut p = Pipeline::new(cfg, rules).expect("default config is valid");
    let mut fleet = Fleet::new(FleetConfig::default());
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
    (alerts, fleet.into_truth())
}

#[test]
fn default_threshold_rules_do_not_flap_on_the_demo_fleet() {
    let (alerts, _truth) = run_default_fleet();
    // (rule, series) -> incidents opened
    let mut per_series: BTreeMap<(String, String), u32> = BTreeMap::new();
    for a in alerts
        .iter()
        .filter(|a| a.kind == DetectorKind::Threshold && a.status == AlertStatus::Firing)
    {
        let key = format!(
            "{}/{}/{}{{{}}}",
            a.tenant,
            a.agent,
            a.metric.as_deref().unwrap_or(""),
            a.labels
        );
        *per_series.entry((a.rule.clone(), key)).or_default() += 1;
    }
    let mut per_rule: BTreeMap<&str, (u32, u32, u32)> = BTreeMap::new();
    for ((rule, _), n) in &per_series {
        let e = per_rule.entry(rule).or_default();
        e.0 += n;
        e.1 += 1;
        e.2 = e.2.max(*n);
    }
    for (rule, (inc, series, max)) in &per_rule {
        println!("{rule}: {inc} incidents on {series} series (max {max} per series)");
    }
}
