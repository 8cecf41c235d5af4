//! Detectors end to end on labelled simulated scenarios: the alerts written
//! to Parquet are checked against the simulator's ground truth.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use vigil_ops::rules::RuleSet;
use vigil_sim::DiskScenario;

use crate::common::*;

const HOUR: i64 = 3_600_000;

#[test]
fn disks_that_fill_are_predicted_and_flat_noisy_disks_are_not() {
    let cfg = small_fleet(200, 24.0, 2024);
    let (start, end) = (cfg.start_ms, cfg.start_ms + cfg.duration_ms);
    let run = simulate(cfg);
    let dir = tempfile::tempdir().unwrap();
    replay(
        dir.path(),
        "detect",
        &run.records,
        &settings(),
        Arc::new(RuleSet::default_rules()),
    );

    // First firing trend alert per disk (tenant, agent, labels).
    let batches = sql(
        dir.path(),
        "SELECT tenant, agent, labels, CAST(event_time AS BIGINT) AS at, CAST(predicted_at AS BIGINT) AS predicted
         FROM alerts WHERE kind = 'trend' AND status = 'firing' ORDER BY event_time",
    );
    let mut first: BTreeMap<(String, String, String), (i64, i64)> = BTreeMap::new();
    let mut incidents: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            let s = |c: usize| b.column(c).as_string::<i32>().value(i).to_string();
            let pred = b.column(4).as_primitive::<Int64Type>();
            assert!(!pred.is_null(i), "trend alert without predicted time");
            *incidents.entry((s(0), s(1), s(2))).or_default() += 1;
            first.entry((s(0), s(1), s(2))).or_insert((
                b.column(3).as_primitive::<Int64Type>().value(i),
                pred.value(i),
            ));
        }
    }
    let key = |d: &vigil_sim::DiskTruth| {
        (
            d.tenant.clone(),
            d.agent.clone(),
            format!("mount={}", d.mount),
        )
    };

    // Every disk that fills, during the run or within a day after it, is
    // predicted before it fills, with the predicted time within 10 % of
    // the true time left at the moment of the alert. The fills are under
    // way when the run starts, so the lead is bounded by the history the
    // detector has seen: each is predicted before half of the time from
    // the start of the run to the disk's fill has passed (the lookback
    // has a few hours of the fill by then).
    let mut errors = Vec::new();
    let mut leads = Vec::new();
    for d in run.truth.disks_of(DiskScenario::Fill) {
        let fill = d.fill_at_ms.unwrap();
        let alert = first.get(&key(d)).copied();
        eprintln!(
            "fill {:?}: fills at +{:.1} h, first alert {:?}",
            key(d),
            (fill - start) as f64 / HOUR as f64,
            alert.map(|(at, p)| (
                (at - start) as f64 / HOUR as f64,
                (p - fill) as f64 / HOUR as f64
            ))
        );
        if fill < start + 6 * HOUR || fill > end + 24 * HOUR {
            continue;
        }
        let (at, predicted) =
            alert.unwrap_or_else(|| panic!("fill of {:?} at {fill} not predicted", key(d)));
        assert!(
            at < fill,
            "{:?}: alert at {at} after the disk filled at {fill}",
            key(d)
        );
        let lead = (fill - at) as f64 / HOUR as f64;
        let observed = (fill - start) as f64 / HOUR as f64;
        assert!(
            lead >= 0.5 * observed,
            "{:?}: predicted {lead:.1} h ahead of a fill {observed:.1} h after the start",
            key(d)
        );
        assert_eq!(
            incidents[&key(d)],
            1,
            "{:?}: one predictive incident per fill",
            key(d)
        );
        errors.push((predicted - fill).abs() as f64 / (fill - at) as f64);
        leads.push(lead);
    }
    assert!(
        errors.len() >= 10,
        "fleet has too few filling disks ({}) to test",
        errors.len()
    );
    eprintln!("errors {errors:?}");
    for e in &errors {
        assert!(
            *e <= 0.10,
            "predicted time off by {:.1}% of the time left",
            e * 100.0
        );
    }
    leads.sort_by(f64::total_cmp);
    eprintln!(
        "fills checked: {}, median lead {:.1} h",
        leads.len(),
        leads[leads.len() / 2]
    );

    // The traps. Noisy flat disks, flat disks, log-rotation sawtooth,
    // bursts that are cleaned up and fills that plateau never get a
    // predictive alert. Nightly growth cleared by morning may fire on its
    // first night only (this run has one night): with no history a night's
    // growth toward the limit looks like a fill. The rate of false
    // incidents over a fortnight (at most 10 per 1,000 disk-days, first
    // nights included) is asserted on the unseen seeds of the disk lab,
    // vigil-ops `detect::trend_eval`.
    let flat: BTreeSet<_> = run
        .truth
        .disks_of(DiskScenario::FlatNoisy)
        .map(key)
        .collect();
    assert!(!flat.is_empty());
    let false_flat: Vec<_> = flat.iter().filter(|k| first.contains_key(*k)).collect();
    assert!(
        false_flat.is_empty(),
        "predictive alerts on flat noisy disks: {false_flat:?}"
    );
    for sc in [
        DiskScenario::Sawtooth,
        DiskScenario::Nightly,
        DiskScenario::Burst,
        DiskScenario::Plateau,
        DiskScenario::Flat,
    ] {
        let n = run.truth.disks_of(sc).count();
        assert!(n > 0, "fleet has no {sc:?} disk");
        let fired: Vec<_> = run
            .truth
            .disks_of(sc)
            .filter_map(|d| incidents.get(&key(d)).map(|c| (key(d), *c)))
            .collect();
        eprintln!(
            "trap {sc:?}: {} of {n} disks got a predictive alert",
            fired.len()
        );
        if sc == DiskScenario::Nightly {
            for (k, c) in &fired {
                assert_eq!(*c, 1, "{k:?}: a nightly disk re-fired in one night");
            }
            assert!(
                fired.len() * 4 <= n,
                "{} of {n} nightly disks fired (more than a quarter)",
                fired.len()
            );
        } else {
            assert!(
                fired.is_empty(),
                "predictive alerts on {sc:?} disks: {fired:?}"
            );
        }
    }
}
