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
    for b in &batches {
        for i in 0..b.num_rows() {
            let s = |c: usize| b.column(c).as_string::<i32>().value(i).to_string();
            let pred = b.column(4).as_primitive::<Int64Type>();
            assert!(!pred.is_null(i), "trend alert without predicted time");
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

    // Every disk that fills during the run, after enough history to fit, is
    // predicted before it fills, with the predicted time within 10 % of the
    // true time left at the moment of the alert.
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
        if fill < start + 6 * HOUR || fill > end {
            continue;
        }
        let (at, predicted) =
            alert.unwrap_or_else(|| panic!("fill of {:?} at {fill} not predicted", key(d)));
        assert!(
            at < fill,
            "{:?}: alert at {at} after the disk filled at {fill}",
            key(d)
        );
        let err = (predicted - fill).abs() as f64 / (fill - at) as f64;
        errors.push(err);
        leads.push((fill - at) as f64 / HOUR as f64);
    }
    assert!(
        errors.len() >= 3,
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

    // Noisy but flat disks never get a predictive alert; report the other traps.
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
        let fired = run
            .truth
            .disks_of(sc)
            .filter(|d| first.contains_key(&key(d)))
            .count();
        eprintln!("trap {sc:?}: {fired} of {n} disks got a predictive alert");
    }
    leads.sort_by(f64::total_cmp);
    eprintln!(
        "fills checked: {}, median lead {:.1} h",
        leads.len(),
        leads[leads.len() / 2]
    );
}
