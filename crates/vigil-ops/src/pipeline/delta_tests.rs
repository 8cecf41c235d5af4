//! Delta checkpoints against whole ones: a pipeline restored from a base
//! and the deltas written after it continues exactly as one that never
//! stopped (windows, alerts, ids, counters).

use std::sync::Arc;

use super::*;
use crate::rules::RuleSet;
use vigil_sim::{Fleet, FleetConfig, ScenarioMix, HOUR_MS};

use super::test_batch::batch_of;
use super::TestChain;

const POS: Position = Position {
    partition: 0,
    offset: 0,
};

/// A simulated fleet with every series family busy (disk fills for the
/// trend rules, CPU and memory for thresholds and anomalies, offline
/// agents, reboots and duplicates) and agents that end (a short state
/// TTL evicts the offline ones and their series).
fn scenario(seed: u64) -> (PipelineConfig, Vec<vigil_sim::SimRecord>) {
    let fleet = Fleet::new(FleetConfig {
        agents: 40,
        tenants: 3,
        duration_ms: 10 * HOUR_MS,
        seed,
        scenarios: ScenarioMix {
            offline_per_day: 3.0,
            cpu_saturation_per_day: 2.0,
            memory_leak_per_day: 2.0,
            reboot_agents: 0.3,
            reboot_rate: 0.02,
            duplicate_rate: 0.02,
            ..ScenarioMix::default()
        },
        ..FleetConfig::default()
    });
    let cfg = PipelineConfig {
        state_ttl: std::time::Duration::from_secs(900),
        ..PipelineConfig::default()
    };
    (cfg, fleet.collect())
}

fn rules() -> Arc<RuleSet> {
    Arc::new(RuleSet::default_rules())
}

/// What a run produced, in order.
#[derive(Debug, PartialEq)]
struct Produced {
    windows: Vec<WindowAggregate>,
    alerts: Vec<AlertEvent>,
    stats: String,
}

/// Checkpoints every `every` records (a delta when the pipeline can
/// write one, else a whole base that starts a new chain), and restores
/// from the chain written so far at each record of `restore_at`.
/// Returns the output and the (whole, delta) checkpoints written, with
/// the agents the deltas held.
fn run(
    cfg: &PipelineConfig,
    recs: &[vigil_sim::SimRecord],
    every: usize,
    restore_at: &[usize],
) -> (Produced, usize, usize, usize) {
    let mut p = Pipeline::new(cfg.clone(), rules()).unwrap();
    let mut out = Outputs::default();
    let mut got = Produced {
        windows: Vec::new(),
        alerts: Vec::new(),
        stats: String::new(),
    };
    let mut chain = TestChain::default();
    for (i, r) in recs.iter().enumerate() {
        if i > 0 && i % every == 0 {
            chain.checkpoint(&mut p);
        }
        if restore_at.contains(&i) {
            if let Some(back) = chain.restore(rules()) {
                p = back;
            }
        }
        p.process(POS, &r.payload, r.arrival_ms, &mut out);
        got.windows.append(&mut out.windows);
        got.alerts.append(&mut out.alerts);
        out.clear();
    }
    p.finish(&mut out);
    got.windows.append(&mut out.windows);
    got.alerts.append(&mut out.alerts);
    got.stats = format!("{:?}", p.stats());
    (got, chain.wholes, chain.delta_count, chain.delta_agents)
}

#[test]
fn a_chain_of_deltas_restores_exactly() {
    let (cfg, recs) = scenario(5);
    // A checkpoint every 10 batches: a quarter of the 40 agents change
    // between two.
    let every = 10;
    let (want, ..) = run(&cfg, &recs, every, &[]);
    assert!(want.alerts.len() > 20, "{} alerts", want.alerts.len());
    assert!(want.windows.len() > 10_000);
    // Restores at checkpoints early, in the middle and late; each
    // restore starts a new base, and the deltas after it build on it.
    let at: Vec<usize> = (1..recs.len() / every)
        .filter(|k| k % 37 == 7)
        .map(|k| k * every)
        .collect();
    assert!(at.len() >= 5, "{at:?}");
    let (got, wholes, deltas, delta_agents) = run(&cfg, &recs, every, &at);
    assert_eq!(
        wholes,
        1 + at.len(),
        "a base at the start and after each restore"
    );
    assert!(deltas > 10 * wholes, "{deltas} deltas");
    // A delta holds the agents that changed (about 10 of 40), not all.
    assert!(
        delta_agents < deltas * 15,
        "{delta_agents} agents in {deltas} deltas"
    );
    assert_eq!(got.stats, want.stats);
    assert_eq!(got.alerts.len(), want.alerts.len());
    for (g, w) in got.alerts.iter().zip(&want.alerts) {
        assert_eq!(g, w);
    }
    assert_eq!(got.windows.len(), want.windows.len());
    assert!(got.windows == want.windows);
}

#[test]
fn a_delta_holds_only_the_agents_that_changed() {
    let (cfg, recs) = scenario(6);
    let mut p = Pipeline::new(cfg, rules()).unwrap();
    let mut out = Outputs::default();
    assert_eq!(
        p.changed_agents(),
        None,
        "a new pipeline writes a base first"
    );
    for r in &recs[..2_000] {
        p.process(POS, &r.payload, r.arrival_ms, &mut out);
    }
    p.checkpointed();
    assert_eq!(p.changed_agents(), Some(0));
    let d = p.delta().unwrap();
    assert_eq!(d.agents(), 0);
    // One more batch: its agent, and no other (no tick is due within
    // one batch of the last).
    let r = &recs[2_000];
    p.process(POS, &r.payload, r.arrival_ms, &mut out);
    assert_eq!(p.changed_agents(), Some(1));
    let d = p.delta().unwrap();
    assert_eq!(d.agents(), 1);
    let whole = serde_json::to_vec(&p).unwrap().len();
    let delta = serde_json::to_vec(&d).unwrap().len();
    assert!(delta * 10 < whole, "delta {delta} B, whole {whole} B");
    // Skipped processing time moves every agent: the next is whole.
    p.checkpointed();
    p.skip_processing_time(1_000);
    assert_eq!(p.changed_agents(), None);
    assert!(p.delta().is_none());
}

#[test]
fn a_delta_that_does_not_continue_its_base_is_refused() {
    let (cfg, recs) = scenario(7);
    let mut p = Pipeline::new(cfg.clone(), rules()).unwrap();
    let mut out = Outputs::default();
    for r in &recs[..500] {
        p.process(POS, &r.payload, r.arrival_ms, &mut out);
    }
    let base = serde_json::to_vec(&p).unwrap();
    p.checkpointed();
    for r in &recs[500..1_000] {
        p.process(POS, &r.payload, r.arrival_ms, &mut out);
    }
    let d = serde_json::to_vec(&p.delta().unwrap()).unwrap();
    // Under other rules (another threshold): refused.
    let mut other = Pipeline::new(cfg.clone(), rules()).unwrap();
    other.attach_rules(Arc::new(
        RuleSet::from_toml(
            "[[threshold]]\nname = \"x\"\nmetric = \"cpu_pct\"\naggregate = \"mean\"\n\
             op = \">\"\nvalue = 1\nseverity = \"warning\"\n",
            "t.toml",
        )
        .unwrap(),
    ));
    let other: Pipeline = serde_json::from_slice(&serde_json::to_vec(&other).unwrap()).unwrap();
    let e = Pipeline::restore_chain(other, vec![serde_json::from_slice(&d).unwrap()]).unwrap_err();
    assert!(e.contains("delta 1 of the chain"), "{e}");
    // Written by a newer Vigil (a family's state in a newer form): refused.
    let mut newer: serde_json::Value = serde_json::from_slice(&d).unwrap();
    newer["detectors"]["versions"]["threshold"] = 999.into();
    let b: Pipeline = serde_json::from_slice(&base).unwrap();
    let e = Pipeline::restore_chain(b, vec![serde_json::from_value(newer).unwrap()]).unwrap_err();
    assert!(e.contains("form version 999"), "{e}");
    // On its own base: accepted.
    let b: Pipeline = serde_json::from_slice(&base).unwrap();
    assert!(Pipeline::restore_chain(b, vec![serde_json::from_slice(&d).unwrap()]).is_ok());
}

/// Restores `p`'s base `base` with `p`'s delta, as a worker would.
fn restored(base: &[u8], p: &Pipeline, rules: Arc<RuleSet>) -> Pipeline {
    let b: Pipeline = serde_json::from_slice(base).unwrap();
    let d = serde_json::to_vec(&p.delta().expect("a delta")).unwrap();
    Pipeline::restore_chain(b, vec![serde_json::from_slice(&d).unwrap()])
        .unwrap()
        .resume(p.config().clone(), rules)
        .unwrap()
}

/// An eviction changes an agent nothing else marks when no rule watches
/// liveness and its windows closed long before.
#[test]
fn evicted_agents_and_series_are_in_the_next_delta() {
    const T: i64 = 1_800_000_000_000;
    const MIN: i64 = 60_000;
    let cfg = PipelineConfig {
        state_ttl: std::time::Duration::from_secs(900),
        ..PipelineConfig::default()
    };
    let none = Arc::new(RuleSet::default());
    let mut p = Pipeline::new(cfg, none.clone()).unwrap();
    let mut out = Outputs::default();
    // a sends once; b sends cpu every minute and disk only at first.
    p.process(
        POS,
        &batch_of("t", "a", 0, 1, T, &[("cpu", T, 1.0)]),
        T,
        &mut out,
    );
    let mut base = Vec::new();
    for k in 0..40i64 {
        let t = T + k * MIN;
        let mut pts = vec![("cpu", t, 1.0)];
        if k < 2 {
            pts.push(("disk", t, 1.0));
        }
        p.process(
            POS,
            &batch_of("t", "b", 0, k as u64 + 1, t, &pts),
            t,
            &mut out,
        );
        if k == 8 {
            assert_eq!(p.open_windows(), 2, "a idle and closed; b open");
            base = serde_json::to_vec(&p).unwrap();
            p.checkpointed();
        }
    }
    assert_eq!(p.stats().agents_evicted, 1, "a is past the TTL");
    assert_eq!(p.stats().series_evicted, 2, "a's cpu and b's disk");
    assert_eq!(p.changed_agents(), Some(2));
    let r = restored(&base, &p, none);
    assert_eq!(r.agents_held(), 1, "the eviction is in the delta");
    assert_eq!(r.series_held(), p.series_held());
    assert_eq!(r.stats().agents_evicted, 1);
}

/// In a healthy fleet (no agent idle or offline) the agents a delta
/// holds are exactly those that sent since the last checkpoint, and its
/// size is theirs: the share of the whole state they are, plus the few
/// kilobytes of partition-wide fields.
#[test]
fn a_delta_is_the_agents_that_sent_and_their_share_of_the_state() {
    use prost::Message;
    let (cfg, recs) = scenario(8);
    let mut p = Pipeline::new(cfg, rules()).unwrap();
    let mut out = Outputs::default();
    for r in &recs[..3_000] {
        p.process(POS, &r.payload, r.arrival_ms, &mut out);
    }
    p.checkpointed();
    let mut senders = std::collections::HashSet::new();
    for r in &recs[3_000..3_012] {
        if let Ok(b) = vigil_proto::v1::TelemetryBatch::decode(&r.payload[..]) {
            senders.insert(b.agent_id);
        }
        p.process(POS, &r.payload, r.arrival_ms, &mut out);
    }
    assert!(senders.len() >= 10, "{senders:?}");
    assert_eq!(p.changed_agents(), Some(senders.len()));
    let whole = serde_json::to_vec(&p).unwrap().len() as f64;
    let delta = serde_json::to_vec(&p.delta().unwrap()).unwrap().len() as f64;
    let share = senders.len() as f64 / p.agents_held() as f64;
    assert!(
        delta < whole * share * 1.25 + 8_000.0,
        "delta {delta} B for {} of {} agents, whole {whole} B",
        senders.len(),
        p.agents_held()
    );
}

/// With status reports (patches, antivirus, backups) the report
/// families' states in a delta are those of the agents that changed: the
/// delta's share of the whole report state is about their share.
#[test]
fn a_deltas_report_states_are_the_changed_agents_share() {
    let fleet = Fleet::new(FleetConfig {
        agents: 400,
        tenants: 5,
        duration_ms: 3 * HOUR_MS,
        seed: 3,
        posture: true,
        ..FleetConfig::default()
    });
    let recs: Vec<_> = fleet.collect();
    let mut p = Pipeline::new(PipelineConfig::default(), rules()).unwrap();
    let mut out = Outputs::default();
    let n = recs.len();
    for r in &recs[..n - 40] {
        p.process(POS, &r.payload, r.arrival_ms, &mut out);
        out.clear();
    }
    p.checkpointed();
    for r in &recs[n - 40..] {
        p.process(POS, &r.payload, r.arrival_ms, &mut out);
    }
    let share = p.changed_agents().unwrap() as f64 / p.agents_held() as f64;
    assert!(share < 0.2, "{share}");
    let size = |x: &serde_json::Value| serde_json::to_vec(x).unwrap().len() as f64;
    let delta = serde_json::to_value(p.delta().unwrap()).unwrap();
    let whole = serde_json::to_value(&p).unwrap();
    let (part, all) = (
        size(&delta["detectors"]["reports"]),
        size(&whole["detectors"]["reports"]),
    );
    assert!(all > 10_000.0, "the fleet has report state: {all} B");
    assert!(
        part < all * share * 2.0,
        "{part} B of {all} B for {share:.3} of the agents"
    );
}

/// One step of a random stream: agent, gap since the last step (minutes,
/// long ones make agents idle, offline or evicted), a CPU value, and
/// whether a checkpoint comes before it and whether the pipeline is
/// restored from the chain there.
type Step = (u8, u8, u8, bool, bool);

fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
    use proptest::prelude::*;
    proptest::collection::vec(
        (
            0u8..4,
            prop_oneof![8 => 0u8..2, 1 => 5u8..40],
            0u8..100,
            any::<bool>(),
            prop::bool::weighted(0.15),
        ),
        1..120,
    )
}

/// Runs `steps` (wall clock, a 15-minute state TTL, the default rules):
/// with `restores`, checkpoints and restores where the steps say.
fn run_steps(steps: &[Step], restores: bool) -> (Vec<WindowAggregate>, Vec<AlertEvent>, String) {
    const T: i64 = 1_800_000_000_000;
    let cfg = PipelineConfig {
        state_ttl: std::time::Duration::from_secs(900),
        ..PipelineConfig::default()
    };
    let mut p = Pipeline::new(cfg, rules()).unwrap();
    let mut out = Outputs::default();
    let mut chain = TestChain::default();
    let (mut t, mut seq) = (T, [0u64; 4]);
    for &(agent, gap, v, checkpoint, restore) in steps {
        t += i64::from(gap) * 60_000 + 1_000;
        if restores && checkpoint {
            chain.checkpoint(&mut p);
            if restore {
                p = chain.restore(rules()).unwrap();
            }
        }
        let a = usize::from(agent);
        seq[a] += 1;
        let name = format!("agent-{a}");
        let pts = [("cpu_pct", t, f64::from(v)), ("mem_pct", t, 50.0)];
        p.process(POS, &batch_of("t", &name, 0, seq[a], t, &pts), t, &mut out);
    }
    p.finish(&mut out);
    (
        std::mem::take(&mut out.windows),
        std::mem::take(&mut out.alerts),
        format!("{:?}", p.stats()),
    )
}

proptest::proptest! {
    /// Checkpoints as deltas and restores from the chain anywhere in a
    /// random stream (agents going idle, offline and evicted, thresholds
    /// firing and resolving) change nothing in the output.
    #[test]
    fn restoring_a_chain_anywhere_is_invisible(s in steps()) {
        let straight = run_steps(&s, false);
        let chained = run_steps(&s, true);
        proptest::prop_assert_eq!(chained, straight);
    }
}
