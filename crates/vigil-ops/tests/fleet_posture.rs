//! The simulated fleet's status reports and security events
//! (`FleetConfig::posture`, what `vigil demo` sends) through the pipeline
//! with the default rules: the status and security incidents are exactly
//! the ones the fleet's truth labels, each opened once, with the start the
//! truth gives.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use vigil_ops::config::{ClockMode, PipelineConfig};
use vigil_ops::model::{AlertStatus, DetectorKind};
use vigil_ops::pipeline::{Outputs, Pipeline};
use vigil_ops::rules::RuleSet;
use vigil_ops::Position;
use vigil_sim::fleet_posture::FleetPosture;
use vigil_sim::{Fleet, FleetConfig};

#[test]
fn posture_incidents_are_exactly_the_labelled_ones() {
    for seed in [9, 10, 11] {
        check_seed(seed);
    }
}

fn check_seed(seed: u64) {
    let cfg = FleetConfig {
        agents: 300,
        seed,
        posture: true,
        ..FleetConfig::default()
    };
    let mut p = Pipeline::new(
        PipelineConfig {
            clock: ClockMode::Replay,
            ..PipelineConfig::default()
        },
        Arc::new(RuleSet::default_rules()),
    )
    .expect("default config is valid");
    let mut fleet = Fleet::new(cfg);
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
    let truth = fleet.into_truth();

    // (agent, rule, labels) -> firing times.
    let mut fired: BTreeMap<(String, String, String), Vec<i64>> = BTreeMap::new();
    for a in alerts.iter().filter(|a| {
        a.status == AlertStatus::Firing
            && matches!(a.kind, DetectorKind::Status | DetectorKind::Security)
    }) {
        fired
            .entry((a.agent.clone(), a.rule.clone(), a.labels.clone()))
            .or_default()
            .push(a.started_at_ms);
    }
    let mut expected = BTreeSet::new();
    let mut by_scenario: BTreeMap<FleetPosture, usize> = BTreeMap::new();
    for t in &truth.posture {
        *by_scenario.entry(t.scenario).or_default() += 1;
        let Some(rule) = t.scenario.rule() else {
            continue;
        };
        if truth.is_future_agent(&t.agent) {
            continue;
        }
        let key = (t.agent.clone(), rule.to_string(), t.labels.clone());
        let (from, by) = t.start_ms.expect("an incident scenario has a start");
        let at = fired
            .get(&key)
            .unwrap_or_else(|| panic!("{key:?} ({:?}) never fired", t.scenario));
        assert_eq!(at.len(), 1, "{key:?} fired {} times", at.len());
        assert!(
            (from..=by).contains(&at[0]),
            "{key:?} ({:?}) started at {}, not in [{from}, {by}]",
            t.scenario,
            at[0]
        );
        expected.insert(key);
    }
    let got: BTreeSet<_> = fired.keys().cloned().collect();
    let unexpected: Vec<_> = got.difference(&expected).collect();
    assert!(
        unexpected.is_empty(),
        "unlabelled incidents: {unexpected:?}"
    );
    // Every scenario occurs on a fleet of this size.
    eprintln!("{by_scenario:?}, {} incidents", expected.len());
    assert_eq!(by_scenario.len(), 7, "{by_scenario:?}");
    assert!(expected.len() >= 30, "{}", expected.len());
}
