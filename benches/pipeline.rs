//! Core operator chain against raw protobuf decode of the same bytes.
//!
//! `cargo bench -p vigil-ops --bench pipeline`. Both benches report points per
//! second over the same simulated records, so their ratio (pipeline rate /
//! decode rate) is the figure to compare across machines.
//!
//! Two fleets: the simulator's default batches (~48 points each), and
//! ticks (one point per series per batch, what RMM agents send), where
//! raw decode is also measured with the chain's own buffer-reusing
//! decoder ([`vigil_ops::decode::BatchDecoder`]) next to prost.

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

fn records(cfg: FleetConfig) -> (Vec<Vec<u8>>, u64) {
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
    let batches = FleetConfig {
        agents: 100,
        duration_ms: 3_600_000,
        seed: 1,
        ..FleetConfig::default()
    };
    // One point per series per batch, a batch every 10 s.
    let ticks = FleetConfig {
        agents: 1_000,
        duration_ms: 3_600_000,
        seed: 1,
        point_interval_ms: 10_000,
        batch_interval_ms: 10_000,
        aligned_batches: true,
        ..FleetConfig::default()
    };
    group(c, "fleet_100_agents_1h", batches, false);
    group(c, "ticks_1000_agents_1h", ticks, true);
}

fn group(c: &mut Criterion, name: &str, cfg: FleetConfig, reusing_decoder: bool) {
    let (recs, points) = records(cfg);
    let rules = Arc::new(RuleSet::default_rules());
    let mut g = c.benchmark_group(name);
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
    if reusing_decoder {
        g.bench_function("raw_decode_reusing", |b| {
            let mut dec = vigil_ops::decode::BatchDecoder::default();
            let mut batch = TelemetryBatch::default();
            b.iter(|| {
                for p in &recs {
                    let _ = black_box(dec.decode(p, &mut batch));
                }
            })
        });
    }
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
