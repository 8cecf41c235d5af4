//! OTLP input through the real broker: `vigil run` with
//! `worker.input_format = "otlp"` reads `ExportMetricsServiceRequest`
//! records shaped as the Collector's hostmetrics receiver emits them
//! (cumulative CPU time per CPU and state, memory and filesystem usage per
//! state, network bytes per device and direction, one scrape a minute),
//! keyed by host as the Collector's Kafka exporter does with
//! `partition_metrics_by_resource_attributes`.
//!
//! The expected windows are computed here from the values put into the
//! requests, with the arithmetic docs/otlp.md gives for each hostmetrics
//! metric; nothing of vigil-ops is used. The worker is killed halfway and
//! a new one continues from the checkpoint, so the cumulative counters'
//! state must survive it: a lost state would drop the first rate after
//! the restart and fail the comparison.

use std::collections::{BTreeMap, BTreeSet};

use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, ExponentialHistogram,
    ExponentialHistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use vigil_proto::otlp::resource::v1::Resource;

use prost::Message as _;

use super::*;
use crate::otlp::kv;

const HOSTS: usize = 4;
/// 14 hours of one scrape a minute (hostmetrics' default interval).
const SCRAPES: i64 = 14 * 60;
const CPUS: usize = 2;
const CPU_STATES: [&str; 4] = ["idle", "user", "system", "wait"];
/// Host with a CPU at 97 % for minutes 120..150.
const HOT_HOST: usize = 1;
/// Host whose `/data` fills by 2.8 points an hour.
const FILLING_HOST: usize = 2;
const DISK_BYTES: i64 = 500_000_000_000;
const MEM_BYTES: i64 = 16_000_000_000;

/// A small deterministic wobble in -1..=1, different per (host, minute, k).
fn wobble(h: usize, m: i64, k: u64) -> f64 {
    let mut x = (h as u64 + 1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((m as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(k.wrapping_mul(0x94D0_49BB_1331_11EB));
    x ^= x >> 31;
    x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x ^= x >> 29;
    (x % 2001) as f64 / 1000.0 - 1.0
}

/// Scrape time of minute `m` (15 s into the minute).
fn at(m: i64) -> i64 {
    T0 + m * MIN + 15_000
}

/// Share of CPU `c`'s time spent in each state during the minute that
/// ends with scrape `m`.
fn cpu_shares(h: usize, c: usize, m: i64) -> [f64; 4] {
    let busy = if h == HOT_HOST && (120..150).contains(&m) {
        0.97
    } else {
        0.25 + 0.1 * wobble(h, m, c as u64)
    };
    [1.0 - busy, 0.8 * busy, 0.15 * busy, 0.05 * busy]
}

/// Cumulative seconds per CPU and state at every scrape, since boot.
fn cpu_times(h: usize) -> Vec<[[f64; 4]; CPUS]> {
    let mut acc = [[1_000.0; 4]; CPUS];
    (0..SCRAPES)
        .map(|m| {
            if m > 0 {
                for (c, a) in acc.iter_mut().enumerate() {
                    for (s, share) in cpu_shares(h, c, m).iter().enumerate() {
                        a[s] += share * 60.0;
                    }
                }
            }
            acc
        })
        .collect()
}

/// Memory bytes (used, free, cached) at scrape `m`.
fn memory(h: usize, m: i64) -> [i64; 3] {
    let used = (MEM_BYTES as f64 * (0.45 + 0.05 * wobble(h, m, 7))) as i64;
    let cached = MEM_BYTES / 8;
    [used, MEM_BYTES - used - cached, cached]
}

/// Filesystem bytes (used, free, reserved) of `mount` at scrape `m`.
fn filesystem(h: usize, mount: &str, m: i64) -> [i64; 3] {
    let frac = if h == FILLING_HOST && mount == "/data" {
        0.55 + 0.028 * m as f64 / 60.0 + 0.002 * wobble(h, m, 11)
    } else {
        0.35 + 0.001 * wobble(h, m, 13)
    };
    let reserved = DISK_BYTES / 20;
    let used = (DISK_BYTES as f64 * frac) as i64;
    [used, DISK_BYTES - used - reserved, reserved]
}

/// Cumulative network bytes (receive, transmit) of eth0 at scrape `m`.
fn network(h: usize, m: i64) -> [i64; 2] {
    let mut acc = [5_000_000_000i64, 2_000_000_000];
    for k in 1..=m {
        acc[0] += 60 * (1_000_000 + 100_000 * h as i64 + 10_000 * (k % 7));
        acc[1] += 60 * (300_000 + 50_000 * (k % 5));
    }
    acc
}

fn point(
    attrs: &[(&str, &str)],
    start_ms: i64,
    t_ms: i64,
    v: number_data_point::Value,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
        start_time_unix_nano: start_ms as u64 * 1_000_000,
        time_unix_nano: t_ms as u64 * 1_000_000,
        value: Some(v),
        ..NumberDataPoint::default()
    }
}

fn sum(name: &str, unit: &str, monotonic: bool, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: monotonic,
        })),
        ..Metric::default()
    }
}

fn host_id(h: usize) -> String {
    format!("host-{h:02}")
}

fn tenant(h: usize) -> &'static str {
    if h.is_multiple_of(2) {
        "acme"
    } else {
        "globex"
    }
}

/// The resource of host `h` (or one without identity, `None`).
fn resource(h: Option<usize>) -> Resource {
    let attributes = match h {
        Some(h) => vec![
            kv("host.id", &host_id(h)),
            kv("host.name", &format!("node{h}.example")),
            kv("os.type", "linux"),
            kv("vigil.tenant", tenant(h)),
        ],
        None => vec![kv("os.type", "linux"), kv("vigil.tenant", "acme")],
    };
    Resource {
        attributes,
        ..Resource::default()
    }
}

/// Host `h`'s scrape `m` as the hostmetrics receiver would export it.
fn scrape_metrics(h: usize, m: i64, cpu: &[[f64; 4]; CPUS]) -> Vec<Metric> {
    use number_data_point::Value::{AsDouble, AsInt};
    let t = at(m);
    let boot = T0 - 3_600_000;
    let mut cpu_points = Vec::new();
    for (c, times) in cpu.iter().enumerate() {
        let name = format!("cpu{c}");
        for (s, state) in CPU_STATES.iter().enumerate() {
            cpu_points.push(point(
                &[("cpu", &name), ("state", state)],
                boot,
                t,
                AsDouble(times[s]),
            ));
        }
    }
    let mem = memory(h, m);
    let mem_points = ["used", "free", "cached"]
        .iter()
        .zip(mem)
        .map(|(s, v)| point(&[("state", s)], boot, t, AsInt(v)))
        .collect();
    let mut fs_points = Vec::new();
    for (dev, mount) in [("sda1", "/"), ("sdb1", "/data")] {
        for (s, v) in ["used", "free", "reserved"]
            .iter()
            .zip(filesystem(h, mount, m))
        {
            fs_points.push(point(
                &[
                    ("device", dev),
                    ("mode", "rw"),
                    ("mountpoint", mount),
                    ("type", "ext4"),
                    ("state", s),
                ],
                boot,
                t,
                AsInt(v),
            ));
        }
    }
    let net = network(h, m);
    let net_points = [("receive", net[0]), ("transmit", net[1])]
        .iter()
        .map(|(d, v)| point(&[("device", "eth0"), ("direction", d)], boot, t, AsInt(*v)))
        .collect();
    vec![
        sum("system.cpu.time", "s", true, cpu_points),
        sum("system.memory.usage", "By", false, mem_points),
        sum("system.filesystem.usage", "By", false, fs_points),
        sum("system.network.io", "By", true, net_points),
    ]
}

fn request(resources: Vec<(Resource, Vec<Metric>)>) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: resources
            .into_iter()
            .map(|(resource, metrics)| ResourceMetrics {
                resource: Some(resource),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

/// The fleet's requests for minutes `minutes`, in arrival order, keyed by
/// host id.
fn otlp_fleet(
    cpu: &[Vec<[[f64; 4]; CPUS]>],
    minutes: std::ops::Range<i64>,
) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for m in minutes {
        for (h, times) in cpu.iter().enumerate() {
            let metrics = scrape_metrics(h, m, &times[m as usize]);
            out.push((host_id(h), request(vec![(resource(Some(h)), metrics)])));
        }
    }
    out
}

/// Expected windows: (tenant, agent, metric, labels, start) → value, the
/// one point each window holds (a scrape a minute).
fn expected(
    cpu: &[Vec<[[f64; 4]; CPUS]>],
    last: i64,
) -> BTreeMap<(String, String, String, String, i64), f64> {
    let mut w = BTreeMap::new();
    for (h, times) in cpu.iter().enumerate() {
        for m in 0..last {
            // Closed: the window ends at or before the host's newest point
            // minus the allowed lateness (30 s).
            if T0 + (m + 1) * MIN > at(last - 1) - 30_000 {
                continue;
            }
            let key = |metric: &str, labels: &str| {
                (
                    tenant(h).to_string(),
                    host_id(h),
                    metric.to_string(),
                    labels.to_string(),
                    T0 + m * MIN,
                )
            };
            let share = |v: [i64; 3]| v[0] as f64 / (v[0] + v[1] + v[2]) as f64;
            w.insert(key("mem_pct", ""), 100.0 * share(memory(h, m)));
            for mount in ["/", "/data"] {
                w.insert(
                    key("disk_used_pct", &format!("mount={mount}")),
                    100.0 * share(filesystem(h, mount, m)),
                );
            }
            if m == 0 {
                // The first point of a cumulative series gives no rate.
                continue;
            }
            let idle: f64 = (0..CPUS)
                .map(|c| (times[m as usize][c][0] - times[m as usize - 1][c][0]) / 60.0)
                .sum::<f64>()
                / CPUS as f64;
            w.insert(key("cpu_pct", ""), 100.0 - 100.0 * idle);
            let (now, before) = (network(h, m), network(h, m - 1));
            w.insert(
                key("net_rx_bps", "iface=eth0"),
                8.0 * (now[0] - before[0]) as f64 / 60.0,
            );
            w.insert(
                key("net_tx_bps", "iface=eth0"),
                8.0 * (now[1] - before[1]) as f64 / 60.0,
            );
        }
    }
    w
}

/// A counter of the exposition, by its full series name (0 when absent).
fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[test]
fn kafka_otlp_topic_hostmetrics_windows_equal_oracle_across_a_restart_and_rules_fire() {
    let Some(env) = Env::new("otlp") else {
        return;
    };
    let cpu: Vec<_> = (0..HOSTS).map(cpu_times).collect();
    let half = SCRAPES / 2;
    let mut first = otlp_fleet(&cpu, 0..half);
    // Bad input, each dead-lettered with its reason while the rest flows:
    // not OTLP at all, a resource with no host identity, and an exponential
    // histogram next to host 3's normal metrics (the metric alone goes).
    first.push(("junk".into(), b"\xff\xff not otlp".to_vec()));
    first.push((
        "anon".into(),
        request(vec![(resource(None), scrape_metrics(0, 5, &cpu[0][5]))]),
    ));
    let mut with_histogram = scrape_metrics(3, 1, &cpu[3][1]);
    with_histogram.push(Metric {
        name: "http.server.duration".into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                time_unix_nano: at(1) as u64 * 1_000_000,
                count: 3,
                ..ExponentialHistogramDataPoint::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Metric::default()
    });
    // Host 3's minute-1 request also carries an exponential histogram.
    first[HOSTS + 3].1 = request(vec![(resource(Some(3)), with_histogram)]);

    let config = "[worker]\ninput_format = \"otlp\"\n";
    env.produce(&first);
    let w1 = env.worker_with_config("w1", config, &[]);
    env.wait_committed(&[&w1]);
    let m1 = w1.metrics();
    w1.kill9();

    // The second half, with one request the Collector resent after a
    // failed export: its points are dropped as duplicates.
    let mut second = otlp_fleet(&cpu, half..SCRAPES);
    let resent = second[40].clone();
    second.insert(45, resent.clone());
    env.produce(&second);
    let w2 = env.worker_with_config("w2", config, &[]);
    env.wait_committed(&[&w2]);
    let m2 = w2.metrics();
    let log = w2.stop();
    // The log is coloured: compare it without the escape sequences.
    let text = plain(&log);
    assert!(text.contains("input_format=Otlp"), "{text}");

    // Counters: every cumulative series' first point was in the first
    // worker's half; the second continued from the checkpointed state.
    let cumulative = (CPUS * CPU_STATES.len() + 2) * HOSTS;
    assert_eq!(
        counter(&m1, "vigil_otlp_points_total{outcome=\"first\"}"),
        cumulative as f64,
        "{m1}"
    );
    assert_eq!(
        counter(&m2, "vigil_otlp_points_total{outcome=\"first\"}"),
        0.0,
        "{m2}"
    );
    let resent_points = CPUS * CPU_STATES.len() + 3 + 2 * 3 + 2;
    assert_eq!(
        counter(&m2, "vigil_otlp_points_total{outcome=\"duplicate\"}"),
        resent_points as f64,
        "{m2}"
    );
    assert!(counter(&m2, "vigil_otlp_resources_total") >= (HOSTS as i64 * half) as f64);

    // Every closed window equals the oracle, once.
    let want = expected(&cpu, SCRAPES);
    let (got, rows) = actual_windows(&env);
    assert_eq!(rows, got.len(), "duplicate window rows in Parquet");
    let got_keys: BTreeSet<_> = got.keys().collect();
    let want_keys: BTreeSet<_> = want.keys().collect();
    let missing: Vec<_> = want_keys.difference(&got_keys).take(5).collect();
    let extra: Vec<_> = got_keys.difference(&want_keys).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "windows missing {missing:?}, unexpected {extra:?} ({} vs {})",
        got.len(),
        want.len()
    );
    for (k, v) in &want {
        let (count, sum, min, max, last) = got[k];
        assert_eq!(count, 1, "{k:?}");
        for g in [sum, min, max, last] {
            assert!(
                (g - v).abs() <= 1e-9 * v.abs().max(1.0),
                "{k:?}: {g} != {v}"
            );
        }
    }

    // Dead letters: each bad input once, with its reason.
    let reasons: Vec<String> = env
        .consume(&env.dlq)
        .iter()
        .map(|r| r.headers["vigil.reason"].clone())
        .collect();
    let mut sorted = reasons.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["decode", "missing_id", "unsupported_type"],
        "{reasons:?}"
    );

    // The default rules on hostmetrics: the hot CPU fires and resolves once
    // (the first hot window starts the incident, the first window back
    // under `clear` ends it), the filling disk is predicted to fill and
    // then crosses disk_high; nothing else fires.
    let mut fired: BTreeMap<(String, String, String), Vec<serde_json::Value>> = BTreeMap::new();
    for r in env.consume(&env.alerts) {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        let labels = v["labels"]["mount"].as_str().unwrap_or("").to_string();
        fired
            .entry((
                v["agent"].as_str().unwrap().to_string(),
                v["rule"].as_str().unwrap().to_string(),
                labels,
            ))
            .or_default()
            .push(v);
    }
    let keys: BTreeSet<_> = fired.keys().cloned().collect();
    let want_alerts: BTreeSet<(String, String, String)> = [
        (HOT_HOST, "cpu_high", ""),
        (FILLING_HOST, "disk_full_predicted", "/data"),
        (FILLING_HOST, "disk_high", "/data"),
    ]
    .iter()
    .map(|(h, r, l)| (host_id(*h), r.to_string(), l.to_string()))
    .collect();
    assert_eq!(keys, want_alerts, "incidents");
    let cpu_events = &fired[&(host_id(HOT_HOST), "cpu_high".into(), String::new())];
    let status: Vec<&str> = cpu_events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["firing", "resolved"]);
    assert_eq!(cpu_events[0]["id"], cpu_events[1]["id"]);
    assert_eq!(cpu_events[0]["started_at_ms"], T0 + 120 * MIN);
    assert_eq!(cpu_events[1]["resolved_at_ms"], T0 + 151 * MIN);
    assert_eq!(cpu_events[0]["hostname"], "node1.example");
    let fill = &fired[&(
        host_id(FILLING_HOST),
        "disk_full_predicted".into(),
        "/data".into(),
    )];
    assert_eq!(fill[0]["status"], "firing");
    let high = &fired[&(host_id(FILLING_HOST), "disk_high".into(), "/data".into())];
    assert!(
        fill[0]["started_at_ms"].as_i64() < high[0]["started_at_ms"].as_i64(),
        "the prediction comes before the threshold: {} vs {}",
        fill[0],
        high[0]
    );
}
