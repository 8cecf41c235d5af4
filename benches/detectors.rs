//! Each detector family alone, over the same closed windows: 1,000 series
//! of 6 h of one-minute windows (noisy CPU and slowly filling disks), and
//! the offline detector's tick over 10,000 agents.
//!
//! `cargo bench -p vigil-ops --bench detectors`. Throughput is in windows
//! (agents for the offline tick) per second.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil_ops::detect::DetectorEngine;
use vigil_ops::rules::RuleSet;
use vigil_ops::{Agg, SeriesMeta, WindowAggregate};

const SERIES: usize = 1000;
const WINDOWS: i64 = 360;
const T0: i64 = 1_793_577_600_000;

/// Windows in arrival order: window by window, series by series.
fn windows(metric: &str) -> Vec<WindowAggregate> {
    let metas: Vec<SeriesMeta> = (0..SERIES)
        .map(|i| SeriesMeta::new("t", &format!("a{i}"), metric, "mount=/"))
        .collect();
    let mut out = Vec::with_capacity(SERIES * WINDOWS as usize);
    for k in 0..WINDOWS {
        for (i, m) in metas.iter().enumerate() {
            // Deterministic noise around a level; every 7th series fills.
            let noise = ((i as i64 * 31 + k * 17) % 11) as f64 - 5.0;
            let level = if i % 7 == 0 {
                50.0 + k as f64 * 0.1
            } else {
                60.0
            };
            let start = T0 + k * 60_000;
            out.push(WindowAggregate {
                series: m.clone(),
                start_ms: start,
                end_ms: start + 60_000,
                agg: Agg::new(start + 50_000, level + noise),
            });
        }
    }
    out
}

fn rules(toml: &str) -> Arc<RuleSet> {
    Arc::new(RuleSet::from_toml(toml, "bench.toml").expect("bench rules are valid"))
}

fn bench(c: &mut Criterion) {
    let families = [
        (
            "threshold",
            "cpu_pct",
            "[[threshold]]\nname = \"cpu_high\"\nmetric = \"cpu_pct\"\naggregate = \"mean\"\nop = \">\"\nvalue = 62\nfor = 3\nclear = 58\nseverity = \"warning\"\n",
        ),
        (
            "trend",
            "disk_used_pct",
            "[[trend]]\nname = \"disk_full_predicted\"\nmetric = \"disk_used_pct\"\nlimit = 100\nhorizon = \"24h\"\nlookback = \"6h\"\nseverity = \"warning\"\n",
        ),
    ];
    let mut g = c.benchmark_group("detectors_1000_series_6h");
    g.sample_size(10);
    for (name, metric, toml) in families {
        let ws = windows(metric);
        let rules = rules(toml);
        g.throughput(Throughput::Elements(ws.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut d = DetectorEngine::new(rules.clone());
                let mut out = Vec::new();
                for w in &ws {
                    d.on_window(w, &mut out);
                }
                black_box(out.len())
            })
        });
    }
    let offline =
        rules("[offline]\nname = \"agent_offline\"\nafter = \"10m\"\nseverity = \"warning\"\n");
    let agents: Vec<String> = (0..10_000).map(|i| format!("a{i}")).collect();
    g.throughput(Throughput::Elements(agents.len() as u64));
    g.bench_function("offline_tick_10000_agents", |b| {
        let mut d = DetectorEngine::new(offline.clone());
        let mut out = Vec::new();
        for a in &agents {
            d.on_agent_seen("t", a, T0, &mut out);
        }
        let mut now = T0;
        b.iter(|| {
            // Agents stay alive: the tick visits all and fires nothing.
            now += 5_000;
            for a in agents.iter().step_by(100) {
                d.on_agent_seen("t", a, now, &mut out);
            }
            d.on_tick(T0 + 60_000, &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
