//! Core operator chain against raw protobuf decode of the same bytes.
//!
//! `cargo bench -p vigil-ops --bench pipeline`. Both benches report points per
//! second over the same simulated records, so their ratio (pipeline rate /
//! decode rate) is the figure to compare across machines.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use vigil_ops::config::{ClockMode, PipelineConfig};
use vigil_ops::pipeline::{Outputs, Pipeline};
use vigil_ops::rules::RuleSet;
use vigil_ops::Position;
use vigil_proto::v1::TelemetryBatch;
use vigil_sim::{Fleet, FleetConfig};

fn records() -> (Vec<Vec<u8>>, u64) {
    let cfg = FleetConfig {
        agents: 100,
        duration_ms: 3_600_000,
        seed: 1,
        ..FleetConfig::default()
    };
    let recs: Vec<Vec<u8>> = Fleet::new(cfg).map(|r| r.payload).collect();
    let points = recs
        .iter()
        .filter_map(|p| TelemetryBatch::decode(p.as_slice()).ok())
        .map(|b| {
            b.series
                .iter()
                .map(|s| s.timestamps_ms.len() as u64)
                .sum::<u64>()
        })
        .sum();
    (recs, points)
}

fn bench(c: &mut Criterion) {
    let (recs, points) = records();
    let rules = Arc::new(RuleSet::default_rules());
    let mut g = c.benchmark_group("fleet_100_agents_1h");
    g.throughput(Throughput::Elements(points));
    g.sample_size(10);
    g.bench_function("raw_decode", |b| {
        let mut batch = TelemetryBatch::default();
        b.iter(|| {
            for p in &recs {
                batch.clear();
                let _ = black_box(batch.merge(p.as_slice()));
            }
        })
    });
    g.bench_function("operator_chain", |b| {
        b.iter(|| {
            let cfg = PipelineConfig {
                clock: ClockMode::Replay,
                ..PipelineConfig::default()
            };
            let mut p = Pipeline::new(cfg, rules.clone()).expect("default config is valid");
            let mut out = Outputs::default();
            for (i, rec) in recs.iter().enumerate() {
                p.process(
                    Position {
                        partition: 0,
                        offset: i as i64,
                    },
                    rec,
                    0,
                    &mut out,
                );
                out.clear();
            }
            p.finish(&mut out);
            black_box(p.stats().points_accepted)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
