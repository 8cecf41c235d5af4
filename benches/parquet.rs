//! Arrow batch building and Parquet encoding of window aggregates: rows
//! pushed into the `aggregates` writer, then one flush (sort, split by
//! date, ZSTD Parquet, atomic rename) into a temporary directory without
//! fsync.
//!
//! `cargo bench -p vigil-store --bench parquet`. Throughput is in rows per
//! second; compare it with the pipeline's windows per second.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil_ops::{Agg, SeriesMeta, WindowAggregate};
use vigil_store::{AggregatesWriter, SourceRange, WriterConfig};

const T0: i64 = 1_793_577_600_000;

fn rows(n: usize) -> Vec<WindowAggregate> {
    let metas: Vec<SeriesMeta> = (0..5_000)
        .map(|i| {
            SeriesMeta::new(
                &format!("tenant-{}", i % 20),
                &format!("agent-{:05}", i / 5),
                [
                    "cpu_pct",
                    "mem_pct",
                    "disk_used_pct",
                    "net_rx_bps",
                    "service_up",
                ][i % 5],
                "mount=/",
            )
        })
        .collect();
    (0..n)
        .map(|k| {
            let start = T0 + (k / metas.len()) as i64 * 60_000;
            let mut agg = Agg::new(start + 1_000, (k % 97) as f64);
            for j in 1..6 {
                agg.push(start + 1_000 + j * 10_000, ((k + j as usize) % 89) as f64);
            }
            WindowAggregate {
                series: metas[k % metas.len()].clone(),
                start_ms: start,
                end_ms: start + 60_000,
                agg,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    const N: usize = 200_000;
    let rows = rows(N);
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = WriterConfig {
        sync: false,
        ..WriterConfig::default()
    };
    let mut g = c.benchmark_group("aggregates_200k_rows");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.bench_function("arrow_build_and_parquet_encode", |b| {
        let mut w = AggregatesWriter::new(dir.path(), cfg.clone()).expect("writer");
        b.iter(|| {
            for r in &rows {
                w.push(r);
            }
            let range = SourceRange {
                source: "bench",
                partition: 0,
                first_offset: 0,
                last_offset: 0,
                tick: 0,
            };
            black_box(w.flush(range).expect("flush").rows)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
