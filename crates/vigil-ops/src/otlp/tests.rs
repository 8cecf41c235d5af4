//! OTLP conversion tests, with requests built from the official OTLP types
//! and shaped as the Collector's hostmetrics receiver emits them:
//! cumulative per-(cpu, state) CPU seconds, per-state memory, per
//! (device, mountpoint) filesystems, per (device, direction) network bytes.

use std::sync::Arc;

use prost::Message;
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use vigil_proto::otlp::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use vigil_proto::otlp::resource::v1::Resource;

use super::*;
use crate::config::ClockMode;
use crate::pipeline::{Outputs, Pipeline};
use crate::rules::RuleSet;

/// A window-aligned start (ms).
const T0: i64 = 1_800_000_000_000;
/// Boot time of the simulated host (ns), the start time of its counters.
const BOOT_NS: u64 = (T0 as u64 - 3_600_000) * 1_000_000;
const POS: Position = Position {
    partition: 0,
    offset: 0,
};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..KeyValue::default()
    }
}

fn ns(ms: i64) -> u64 {
    ms as u64 * 1_000_000
}

fn point(attrs: &[(&str, &str)], start_ns: u64, t_ms: i64, v: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
        start_time_unix_nano: start_ns,
        time_unix_nano: ns(t_ms),
        value: Some(number_data_point::Value::AsDouble(v)),
        ..NumberDataPoint::default()
    }
}

fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: "1".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Metric::default()
    }
}

fn sum(name: &str, monotonic: bool, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: monotonic,
        })),
        ..Metric::default()
    }
}

fn resource(attrs: &[(&str, &str)], metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource {
            attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
            ..Resource::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            metrics,
            ..ScopeMetrics::default()
        }],
        ..ResourceMetrics::default()
    }
}

/// The resource attributes of host `h` of tenant `acme`, as the
/// resourcedetection processor and a tenant attribute would set them.
fn host(h: &str) -> Vec<(&'static str, String)> {
    vec![
        ("host.name", format!("{h}.example")),
        ("host.id", format!("id-{h}")),
        ("vigil.tenant", "acme".into()),
    ]
}

fn request(h: &str, metrics: Vec<Metric>) -> Vec<u8> {
    let attrs = host(h);
    let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![resource(&attrs, metrics)],
    }
    .encode_to_vec()
}

/// `system.cpu.time` as hostmetrics emits it: cumulative, monotonic, one
/// point per (cpu, state); `secs[cpu]` = (idle, user, system) seconds.
fn cpu_time(t_ms: i64, secs: &[[f64; 3]]) -> Metric {
    let mut pts = Vec::new();
    for (c, s) in secs.iter().enumerate() {
        let cpu = format!("cpu{c}");
        for (state, v) in ["idle", "user", "system"].iter().zip(s) {
            pts.push(point(&[("cpu", &cpu), ("state", state)], BOOT_NS, t_ms, *v));
        }
    }
    sum("system.cpu.time", true, pts)
}

/// `system.network.io` for eth0: cumulative bytes per direction.
fn net_io(t_ms: i64, start_ns: u64, rx: f64, tx: f64) -> Metric {
    sum(
        "system.network.io",
        true,
        vec![
            point(
                &[("device", "eth0"), ("direction", "receive")],
                start_ns,
                t_ms,
                rx,
            ),
            point(
                &[("device", "eth0"), ("direction", "transmit")],
                start_ns,
                t_ms,
                tx,
            ),
        ],
    )
}

/// `system.filesystem.utilization` for `/` and `/data`.
fn fs_util(t_ms: i64, root: f64, data: f64) -> Metric {
    let p = |dev: &str, mp: &str, v: f64| {
        point(
            &[
                ("device", dev),
                ("mode", "rw"),
                ("mountpoint", mp),
                ("type", "ext4"),
            ],
            0,
            t_ms,
            v,
        )
    };
    gauge(
        "system.filesystem.utilization",
        vec![p("/dev/sda1", "/", root), p("/dev/sdb1", "/data", data)],
    )
}

fn mem_util(t_ms: i64, used: f64) -> Metric {
    gauge(
        "system.memory.utilization",
        ["used", "free", "cached"]
            .iter()
            .zip([used, (1.0 - used) / 2.0, (1.0 - used) / 2.0])
            .map(|(s, v)| point(&[("state", s)], 0, t_ms, v))
            .collect(),
    )
}

fn cfg() -> PipelineConfig {
    PipelineConfig {
        clock: ClockMode::Wall,
        ..PipelineConfig::default()
    }
}

/// Converts `payloads` in order with one state; returns all batches and
/// refusals.
fn convert_all(st: &mut OtlpState, payloads: &[Vec<u8>]) -> (Vec<TelemetryBatch>, Vec<Rejected>) {
    let (mut out, mut rej) = (Vec::new(), Vec::new());
    for p in payloads {
        st.convert(&cfg(), POS, p, &mut out, &mut rej);
    }
    (out.into_iter().map(|c| c.batch).collect(), rej)
}

/// (metric, canonical labels) → points of all batches.
fn points(batches: &[TelemetryBatch]) -> BTreeMap<(String, String), Vec<(i64, f64)>> {
    let mut m: BTreeMap<(String, String), Vec<(i64, f64)>> = BTreeMap::new();
    let mut canon = String::new();
    for b in batches {
        for s in &b.series {
            canonical_labels(
                s.labels.iter().map(|l| (l.key.as_str(), l.value.as_str())),
                &mut canon,
            );
            m.entry((s.metric.clone(), canon.clone()))
                .or_default()
                .extend(
                    s.timestamps_ms
                        .iter()
                        .copied()
                        .zip(s.values.iter().copied()),
                );
        }
    }
    m
}

fn key(metric: &str, labels: &str) -> (String, String) {
    (metric.to_string(), labels.to_string())
}

/// The windows of `out` as (metric, start, count, sum), sorted.
fn sorted_windows(out: &Outputs) -> Vec<(String, i64, u64, f64)> {
    let mut w: Vec<_> = out
        .windows
        .iter()
        .map(|w| {
            (
                w.series.metric().to_string(),
                w.start_ms,
                w.agg.count,
                w.agg.sum,
            )
        })
        .collect();
    w.sort_by(|a, b| a.partial_cmp(b).unwrap());
    w
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn identity_comes_from_resource_attributes() {
    let mut st = OtlpState::default();
    let (b, rej) = convert_all(&mut st, &[request("web1", vec![fs_util(T0, 0.5, 0.25)])]);
    assert!(rej.is_empty(), "{rej:?}");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].tenant_id, "acme");
    assert_eq!(b[0].agent_id, "id-web1", "host.id comes before host.name");
    assert_eq!(b[0].agent.as_ref().unwrap().hostname, "web1.example");
    assert_eq!(b[0].seq, 0);
    assert_eq!(b[0].sent_at_ms, T0);
}

#[test]
fn cpu_time_per_cpu_and_state_becomes_cpu_pct_from_the_second_scrape() {
    let mut st = OtlpState::default();
    // cpu0: +2 s idle, +7 user, +1 system in 10 s; cpu1: +8, +1, +1.
    let s0 = [[100.0, 50.0, 20.0], [300.0, 10.0, 5.0]];
    let s1 = [[102.0, 57.0, 21.0], [308.0, 11.0, 6.0]];
    let (b, rej) = convert_all(
        &mut st,
        &[
            request("h", vec![cpu_time(T0, &s0)]),
            request("h", vec![cpu_time(T0 + 10_000, &s1)]),
        ],
    );
    assert!(rej.is_empty());
    let pts = points(&b);
    // Independent computation: idle fraction per cpu = Δidle / Δt.
    let idle: Vec<f64> = (0..2).map(|c| (s1[c][0] - s0[c][0]) / 10.0).collect();
    let want = 100.0 * (1.0 - (idle[0] + idle[1]) / 2.0);
    assert_eq!(pts.len(), 1, "only cpu_pct: {pts:?}");
    let got = &pts[&key("cpu_pct", "")];
    assert_eq!(got.len(), 1, "the first scrape gives no rate");
    assert_eq!(got[0].0, T0 + 10_000);
    assert!(close(got[0].1, want), "{} vs {want}", got[0].1);
    assert_eq!(st.stats().first_points, 6);
}

#[test]
fn cpu_utilization_gauge_wins_over_cpu_time_for_the_same_resource() {
    let mut st = OtlpState::default();
    let util = |t| {
        gauge(
            "system.cpu.utilization",
            [
                ("cpu0", "idle", 0.1),
                ("cpu0", "user", 0.9),
                ("cpu1", "idle", 0.3),
                ("cpu1", "user", 0.7),
            ]
            .iter()
            .map(|(c, s, v)| point(&[("cpu", c), ("state", s)], 0, t, *v))
            .collect(),
        )
    };
    let (b, _) = convert_all(
        &mut st,
        &[
            request("h", vec![cpu_time(T0, &[[1.0, 1.0, 1.0]; 2]), util(T0)]),
            request(
                "h",
                vec![
                    cpu_time(T0 + 10_000, &[[11.0, 1.0, 1.0]; 2]),
                    util(T0 + 10_000),
                ],
            ),
        ],
    );
    let got = &points(&b)[&key("cpu_pct", "")];
    // 100 × (1 − mean(0.1, 0.3)) = 80 at both instants; the cpu.time
    // value at T0 + 10 s (0 %) is shadowed.
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|p| close(p.1, 80.0)), "{got:?}");
    assert_eq!(st.stats().shadowed_points, 1);
}

#[test]
fn memory_and_filesystem_utilization_become_percent() {
    let mut st = OtlpState::default();
    let (b, _) = convert_all(
        &mut st,
        &[request(
            "h",
            vec![mem_util(T0, 0.925), fs_util(T0, 0.5, 0.95)],
        )],
    );
    let pts = points(&b);
    assert!(close(pts[&key("mem_pct", "")][0].1, 92.5));
    assert!(close(pts[&key("disk_used_pct", "mount=/")][0].1, 50.0));
    assert!(close(pts[&key("disk_used_pct", "mount=/data")][0].1, 95.0));
    assert_eq!(pts.len(), 3, "{pts:?}");
}

#[test]
fn usage_sums_become_shares_of_the_total() {
    let mut st = OtlpState::default();
    let mem = sum(
        "system.memory.usage",
        false,
        [("used", 6.0e9), ("free", 1.0e9), ("cached", 1.0e9)]
            .iter()
            .map(|(s, v)| point(&[("state", s)], BOOT_NS, T0, *v))
            .collect(),
    );
    let fs = sum(
        "system.filesystem.usage",
        false,
        [("used", 90.0), ("free", 5.0), ("reserved", 5.0)]
            .iter()
            .map(|(s, v)| {
                point(
                    &[("device", "sdb1"), ("mountpoint", "/data"), ("state", s)],
                    BOOT_NS,
                    T0,
                    *v,
                )
            })
            .collect(),
    );
    let (b, _) = convert_all(&mut st, &[request("h", vec![mem, fs])]);
    let pts = points(&b);
    assert!(close(pts[&key("mem_pct", "")][0].1, 75.0));
    assert!(close(pts[&key("disk_used_pct", "mount=/data")][0].1, 90.0));
}

#[test]
fn network_bytes_become_bits_per_second_and_resets_are_handled() {
    let mut st = OtlpState::default();
    let reboot_ms = T0 + 25_000;
    let (b, rej) = convert_all(
        &mut st,
        &[
            request("h", vec![net_io(T0, BOOT_NS, 1_000.0, 500.0)]),
            // +10,000 B rx and +2,000 B tx in 10 s.
            request("h", vec![net_io(T0 + 10_000, BOOT_NS, 11_000.0, 2_500.0)]),
            // Reboot at T0+25 s: new start time after the previous point;
            // everything counted since the reboot (5 s).
            request(
                "h",
                vec![net_io(T0 + 30_000, ns(reboot_ms), 4_000.0, 1_000.0)],
            ),
            // The counter goes down with the same start time (a driver
            // reset): no rate for this point, the next one resumes.
            request("h", vec![net_io(T0 + 40_000, ns(reboot_ms), 100.0, 100.0)]),
            request(
                "h",
                vec![net_io(T0 + 50_000, ns(reboot_ms), 1_100.0, 600.0)],
            ),
        ],
    );
    assert!(rej.is_empty());
    let pts = points(&b);
    let rx = &pts[&key("net_rx_bps", "iface=eth0")];
    let tx = &pts[&key("net_tx_bps", "iface=eth0")];
    let want_rx = [
        (T0 + 10_000, 10_000.0 / 10.0 * 8.0),
        (T0 + 30_000, 4_000.0 / 5.0 * 8.0),
        (T0 + 50_000, 1_000.0 / 10.0 * 8.0),
    ];
    let want_tx = [
        (T0 + 10_000, 2_000.0 / 10.0 * 8.0),
        (T0 + 30_000, 1_000.0 / 5.0 * 8.0),
        (T0 + 50_000, 500.0 / 10.0 * 8.0),
    ];
    assert_eq!(rx.len(), 3, "{rx:?}");
    for (g, w) in rx.iter().zip(want_rx).chain(tx.iter().zip(want_tx)) {
        assert_eq!(g.0, w.0);
        assert!(close(g.1, w.1), "{g:?} vs {w:?}");
    }
    assert_eq!(st.stats().resets, 2, "one per direction, at T0+40s");
}

#[test]
fn cumulative_step_rules() {
    let mut c = None;
    assert_eq!(step(&mut c, 5, 1_000, 10.0, 0.0, 60_000), Step::First);
    assert_eq!(
        step(&mut c, 5, 2_000, 15.0, 0.0, 60_000),
        Step::Delta {
            dv: 5.0,
            dcount: 0.0,
            dt_ms: 1_000
        }
    );
    // Older or equal: superseded, state unchanged.
    assert_eq!(step(&mut c, 5, 2_000, 99.0, 0.0, 60_000), Step::Superseded);
    assert_eq!(step(&mut c, 5, 1_500, 12.0, 0.0, 60_000), Step::Superseded);
    // A gap of exactly the TTL still gives a rate; one ms more does not.
    assert!(matches!(
        step(&mut c, 5, 62_000, 20.0, 0.0, 60_000),
        Step::Delta { .. }
    ));
    assert_eq!(step(&mut c, 5, 122_001, 25.0, 0.0, 60_000), Step::First);
    // Start time changed but before the previous point: a plain reset.
    assert_eq!(step(&mut c, 7, 123_000, 30.0, 0.0, 60_000), Step::Reset);
    // Equal value is no reset.
    assert!(
        matches!(step(&mut c, 7, 124_000, 30.0, 0.0, 60_000), Step::Delta { dv, .. } if dv == 0.0)
    );
}

#[test]
fn resent_request_is_a_duplicate_and_not_double_counted() {
    let mut p = Pipeline::new(cfg(), Arc::new(RuleSet::default())).unwrap();
    let mut out = Outputs::default();
    let r1 = request("h", vec![mem_util(T0, 0.5), net_io(T0, BOOT_NS, 0.0, 0.0)]);
    let r2 = request(
        "h",
        vec![
            mem_util(T0 + 10_000, 0.7),
            net_io(T0 + 10_000, BOOT_NS, 100.0, 10.0),
        ],
    );
    let now = T0 + 20_000;
    for r in [&r1, &r2, &r1, &r2] {
        p.process_otlp(POS, r, now, &mut out);
    }
    assert_eq!(p.stats().duplicates, 2, "two resent requests");
    assert_eq!(p.otlp_stats().duplicate_points, 2 * 5);
    assert_eq!(p.stats().batches_accepted, 2);
    p.finish(&mut out);
    let mem: Vec<_> = out
        .windows
        .iter()
        .filter(|w| w.series.metric() == "mem_pct")
        .collect();
    assert_eq!(mem.len(), 1);
    assert_eq!(mem[0].agg.count, 2);
    assert!(close(mem[0].agg.sum, 120.0));
    let rx: Vec<_> = out
        .windows
        .iter()
        .filter(|w| w.series.metric() == "net_rx_bps")
        .collect();
    assert_eq!(rx[0].agg.count, 1, "one rate, not two");
    assert!(close(rx[0].agg.sum, 80.0));
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
}

#[test]
fn out_of_order_requests_are_not_duplicates() {
    let mut st = OtlpState::default();
    let (b, _) = convert_all(
        &mut st,
        &[
            request("h", vec![mem_util(T0 + 10_000, 0.7)]),
            request("h", vec![mem_util(T0, 0.5)]),
        ],
    );
    assert_eq!(points(&b)[&key("mem_pct", "")].len(), 2);
    assert_eq!(st.stats().duplicate_points, 0);
}

#[test]
fn point_for_a_closed_window_is_late() {
    let mut p = Pipeline::new(cfg(), Arc::new(RuleSet::default())).unwrap();
    let mut out = Outputs::default();
    let now = T0 + 200_000;
    p.process_otlp(
        POS,
        &request("h", vec![mem_util(T0 + 5_000, 0.5)]),
        now,
        &mut out,
    );
    // Watermark T0+120 s − 30 s closes [T0, T0+60 s).
    p.process_otlp(
        POS,
        &request("h", vec![mem_util(T0 + 120_000, 0.5)]),
        now,
        &mut out,
    );
    p.process_otlp(
        POS,
        &request("h", vec![mem_util(T0 + 6_000, 0.5)]),
        now,
        &mut out,
    );
    let late: Vec<_> = out
        .rejected
        .iter()
        .filter(|r| r.reason == RejectReason::Late)
        .collect();
    assert_eq!(late.len(), 1, "{:?}", out.rejected);
    assert_eq!(late[0].points, vec![(T0 + 6_000, 50.0)]);
    assert_eq!(late[0].agent.as_deref(), Some("id-h"));
}

#[test]
fn dedup_memory_limits() {
    let span = 90_000;
    let mut m = Memo::new(0);
    // Exactly DEDUP_DEPTH + 1 timestamps fit: all are recognised.
    for i in 1..=DEDUP_DEPTH as i64 {
        assert_eq!(m.check(i * 1_000, span), Seen::New);
        m.remember(i * 1_000, span);
    }
    for i in 0..=DEDUP_DEPTH as i64 {
        assert_eq!(m.check(i * 1_000, span), Seen::Duplicate, "{i}");
    }
    assert_eq!(m.check(500, span), Seen::New, "nothing forgotten yet");
    // One more: the oldest (0) is forgotten within the span.
    m.remember(16_000, span);
    assert_eq!(m.check(0, span), Seen::Undecidable);
    assert_eq!(m.check(-1, span), Seen::Undecidable);
    assert_eq!(m.check(1, span), Seen::New, "after the forgotten one");
    assert_eq!(m.check(1_000, span), Seen::Duplicate);
    // Further than the span below the newest: not judged (late anyway).
    // Exactly the span below is still judged (10 s was taken).
    m.remember(100_000, span);
    assert_eq!(m.check(100_000 - span, span), Seen::Duplicate);
    assert_eq!(m.check(100_000 - span - 1, span), Seen::New);
    assert_eq!(m.check(9_000, span), Seen::New);
}

#[test]
fn dedup_overflow_is_dead_lettered() {
    let mut st = OtlpState::default();
    let mut reqs: Vec<Vec<u8>> = (0..=DEDUP_DEPTH as i64 + 1)
        .map(|i| request("h", vec![mem_util(T0 + i * 1_000, 0.5)]))
        .collect();
    // The resend of the first request, whose timestamp was forgotten.
    reqs.push(reqs[0].clone());
    // A new point just after the forgotten one is still taken.
    reqs.push(request("h", vec![mem_util(T0 + 500, 0.5)]));
    let (b, rej) = convert_all(&mut st, &reqs);
    assert_eq!(points(&b)[&key("mem_pct", "")].len(), DEDUP_DEPTH + 3);
    assert_eq!(rej[0].reason, RejectReason::DedupOverflow);
    // One refusal per source series (the three memory states).
    assert_eq!(rej.len(), 3, "{rej:?}");
    assert!(rej.iter().all(|r| r.point_count == 1));
    assert_eq!(rej[0].metric.as_deref(), Some("system.memory.utilization"));
}

#[test]
fn undecodable_record_is_refused_whole() {
    let mut p = Pipeline::new(cfg(), Arc::new(RuleSet::default())).unwrap();
    let mut out = Outputs::default();
    p.process_otlp(POS, b"\xff\xff garbage", T0, &mut out);
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].reason, RejectReason::Decode);
    assert_eq!(
        out.rejected[0].raw.as_deref(),
        Some(&b"\xff\xff garbage"[..])
    );
    assert_eq!(p.stats().rejected_records(RejectReason::Decode), 1);
}

#[test]
fn resource_without_identity_is_refused_with_its_own_raw_record() {
    let mut p = Pipeline::new(cfg(), Arc::new(RuleSet::default())).unwrap();
    let mut out = Outputs::default();
    let good = host("a");
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let anon = resource(&[("service.name", "x")], vec![mem_util(T0, 0.5)]);
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![anon.clone(), resource(&good, vec![mem_util(T0, 0.5)])],
    };
    p.process_otlp(POS, &req.encode_to_vec(), T0, &mut out);
    assert_eq!(out.rejected.len(), 1);
    let r = &out.rejected[0];
    assert_eq!(r.reason, RejectReason::MissingId);
    assert_eq!(r.point_count, 3);
    let raw = ExportMetricsServiceRequest::decode(r.raw.as_deref().unwrap()).unwrap();
    assert_eq!(raw.resource_metrics, vec![anon]);
    assert_eq!(p.stats().points_accepted, 1, "the other resource is taken");
    assert_eq!(p.stats().rejected_points(RejectReason::MissingId), 3);
}

#[test]
fn default_tenant_stands_in_for_a_missing_tenant_attribute() {
    let mut c = cfg();
    c.otlp.default_tenant = "per-topic".into();
    let mut st = OtlpState::default();
    let (mut out, mut rej) = (Vec::new(), Vec::new());
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![resource(&[("host.name", "h1")], vec![mem_util(T0, 0.5)])],
    };
    st.convert(&c, POS, &req.encode_to_vec(), &mut out, &mut rej);
    assert!(rej.is_empty());
    assert_eq!(out[0].batch.tenant_id, "per-topic");
    assert_eq!(out[0].batch.agent_id, "h1");
    // Without it, the same resource is refused.
    st.convert(&cfg(), POS, &req.encode_to_vec(), &mut out, &mut rej);
    assert_eq!(rej[0].reason, RejectReason::MissingId);
}

#[test]
fn unsupported_types_are_refused_and_the_rest_is_kept() {
    let mut p = Pipeline::new(cfg(), Arc::new(RuleSet::default())).unwrap();
    let mut out = Outputs::default();
    let exp = Metric {
        name: "http.server.duration".into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint::default(); 2],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Metric::default()
    };
    let mut no_temp = sum("x.total", true, vec![point(&[], 0, T0, 1.0)]);
    if let Some(Data::Sum(s)) = &mut no_temp.data {
        s.aggregation_temporality = AggregationTemporality::Unspecified as i32;
    }
    p.process_otlp(
        POS,
        &request("h", vec![exp.clone(), mem_util(T0, 0.5), no_temp]),
        T0,
        &mut out,
    );
    let reasons: Vec<_> = out
        .rejected
        .iter()
        .map(|r| (r.reason, r.point_count))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (RejectReason::UnsupportedType, 2),
            (RejectReason::UnsupportedType, 1)
        ]
    );
    let raw = ExportMetricsServiceRequest::decode(out.rejected[0].raw.as_deref().unwrap()).unwrap();
    assert_eq!(raw.resource_metrics[0].scope_metrics[0].metrics, vec![exp]);
    assert_eq!(p.stats().points_accepted, 1);
    assert_eq!(p.stats().rejected_points(RejectReason::UnsupportedType), 3);
    assert_eq!(p.stats().rejected_records(RejectReason::UnsupportedType), 0);
}

#[test]
fn unset_time_is_out_of_range() {
    let mut st = OtlpState::default();
    let mut m = mem_util(T0, 0.5);
    if let Some(Data::Gauge(g)) = &mut m.data {
        g.data_points[0].time_unix_nano = 0;
    }
    let (_, rej) = convert_all(&mut st, &[request("h", vec![m])]);
    assert_eq!(rej.len(), 1);
    assert_eq!(rej[0].reason, RejectReason::OutOfRange);
}

#[test]
fn unmapped_metrics_keep_their_name_and_attributes() {
    let mut st = OtlpState::default();
    let disk = |t, v| {
        sum(
            "system.disk.io",
            true,
            vec![point(
                &[("device", "sda"), ("direction", "read")],
                BOOT_NS,
                t,
                v,
            )],
        )
    };
    let mut pod = gauge(
        "k8s.pod.phase",
        vec![point(
            &[("k8s.pod.name", "api-1"), ("2nd", "x")],
            0,
            T0,
            2.0,
        )],
    );
    if let Some(Data::Gauge(g)) = &mut pod.data {
        g.data_points[0].attributes.push(KeyValue {
            key: "tags".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue::default())),
            }),
            ..KeyValue::default()
        });
    }
    let (b, rej) = convert_all(
        &mut st,
        &[
            request("h", vec![disk(T0, 1_000.0), pod]),
            request("h", vec![disk(T0 + 2_000, 5_000.0)]),
        ],
    );
    assert!(rej.is_empty());
    let pts = points(&b);
    assert_eq!(
        pts[&key("system.disk.io:rate", "device=sda,direction=read")],
        vec![(T0 + 2_000, 2_000.0)]
    );
    assert_eq!(
        pts[&key("k8s.pod.phase", "_2nd=x,k8s_pod_name=api-1")],
        vec![(T0, 2.0)]
    );
    assert_eq!(st.stats().dropped_attributes, 1, "the array attribute");
}

#[test]
fn histograms_become_means_over_the_interval() {
    let mut st = OtlpState::default();
    let h = |temporality: AggregationTemporality, t, count, s| Metric {
        name: "rpc.duration".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                start_time_unix_nano: BOOT_NS,
                time_unix_nano: ns(t),
                count,
                sum: Some(s),
                ..HistogramDataPoint::default()
            }],
            aggregation_temporality: temporality as i32,
        })),
        ..Metric::default()
    };
    use AggregationTemporality::{Cumulative, Delta};
    let (b, _) = convert_all(
        &mut st,
        &[
            request("h", vec![h(Cumulative, T0, 10, 50.0)]),
            request("h", vec![h(Cumulative, T0 + 1_000, 14, 70.0)]),
            request("g", vec![h(Delta, T0, 4, 10.0)]),
        ],
    );
    let got: Vec<f64> = b
        .iter()
        .flat_map(|b| b.series.iter().flat_map(|s| s.values.clone()))
        .collect();
    assert_eq!(got, vec![20.0 / 4.0, 10.0 / 4.0]);
    assert_eq!(b[1].series[0].metric, "rpc.duration:mean");
}

#[test]
fn label_and_name_sanitising() {
    assert_eq!(label_key("host.name"), "host_name");
    assert_eq!(label_key("9a"), "_9a");
    assert_eq!(label_key(""), "_");
    assert_eq!(unmapped_name_for("a/b-c", false, false), "a_b_c");
    assert_eq!(unmapped_name_for("1x", true, false), "_1x:rate");
    assert!(crate::decode::valid_metric(&unmapped_name_for(
        ".x", false, true
    )));
}

#[test]
fn checkpoint_mid_stream_gives_the_same_output() {
    let reqs: Vec<Vec<u8>> = (0..12)
        .map(|i| {
            let t = T0 + i * 10_000;
            let c = i as f64;
            request(
                "h",
                vec![
                    cpu_time(t, &[[c * 1.0, c * 9.0, 0.0]]),
                    net_io(t, BOOT_NS, c * 1_000.0, c * 10.0),
                    mem_util(t, 0.5),
                ],
            )
        })
        .collect();
    let run = |split: Option<usize>| {
        let mut p = Pipeline::new(cfg(), Arc::new(RuleSet::default())).unwrap();
        let mut out = Outputs::default();
        for (i, r) in reqs.iter().enumerate() {
            if split == Some(i) {
                let json = serde_json::to_string(&p).unwrap();
                let restored: Pipeline = serde_json::from_str(&json).unwrap();
                p = restored
                    .resume(cfg(), Arc::new(RuleSet::default()))
                    .unwrap();
                // A resend across the restore is still a duplicate.
                p.process_otlp(POS, &reqs[i - 1], T0 + 200_000, &mut out);
            }
            p.process_otlp(POS, r, T0 + 200_000, &mut out);
        }
        p.finish(&mut out);
        sorted_windows(&out)
    };
    let straight = run(None);
    assert!(straight.iter().any(|w| w.0 == "cpu_pct"));
    assert_eq!(straight, run(Some(5)));
}

/// Default rules, unchanged, on hostmetrics-shaped input: an overloaded
/// host (cpu.time 97 % busy) fires `cpu_high`, a filling disk `disk_high`.
#[test]
fn default_rules_fire_on_overloaded_host_and_filling_disk() {
    let rules = Arc::new(RuleSet::default_rules());
    let mut p = Pipeline::new(cfg(), rules).unwrap();
    let mut out = Outputs::default();
    let step_ms = 10_000;
    for i in 0..(12 * 6) {
        let t = T0 + i * step_ms;
        let busy = i as f64 * 9.7;
        let idle = i as f64 * 0.3;
        let fill = 0.80 + 0.15 * i as f64 / 72.0;
        let r = request(
            "h",
            vec![
                cpu_time(t, &[[idle, busy, 0.0], [idle, busy, 0.0]]),
                fs_util(t, 0.3, fill),
            ],
        );
        p.process_otlp(POS, &r, t + 1_000, &mut out);
    }
    let fired: Vec<_> = out
        .alerts
        .iter()
        .filter(|a| a.status == crate::model::AlertStatus::Firing)
        .map(|a| (a.rule.as_str(), a.labels.as_str(), a.hostname.as_deref()))
        .collect();
    assert!(
        fired.contains(&("cpu_high", "", Some("h.example"))),
        "{fired:?}"
    );
    assert!(
        fired.contains(&("disk_high", "mount=/data", Some("h.example"))),
        "{fired:?}"
    );
    assert!(!fired.iter().any(|f| f.1 == "mount=/"), "{fired:?}");
}

#[test]
fn converter_state_is_bounded_and_silent_series_are_forgotten() {
    let mut c = cfg();
    c.otlp.max_series = 3;
    c.otlp.state_ttl = std::time::Duration::from_secs(600);
    let mut st = OtlpState::default();
    let (mut out, mut rej) = (Vec::new(), Vec::new());
    // Three series: exactly at the limit, all taken.
    st.convert(
        &c,
        POS,
        &request("h", vec![mem_util(T0, 0.5)]),
        &mut out,
        &mut rej,
    );
    assert!(rej.is_empty());
    assert_eq!(st.series(), 3);
    // A fourth while the others are fresh: refused.
    let one = |t, mp: &str| {
        gauge(
            "system.filesystem.utilization",
            vec![point(&[("mountpoint", mp)], 0, t, 0.5)],
        )
    };
    st.convert(
        &c,
        POS,
        &request("h", vec![one(T0 + 1_000, "/a")]),
        &mut out,
        &mut rej,
    );
    assert_eq!(rej.len(), 1);
    assert_eq!(rej[0].reason, RejectReason::SeriesLimit);
    assert_eq!(st.series(), 3);
    // Once the three are silent for longer than the TTL, they are forgotten.
    st.convert(
        &c,
        POS,
        &request("h", vec![one(T0 + 600_001, "/b")]),
        &mut out,
        &mut rej,
    );
    assert_eq!(rej.len(), 1, "{rej:?}");
    assert_eq!(st.series(), 1);
}

proptest::proptest! {
    /// Any delivery order of a set of requests, with any resends, within
    /// the dedup memory (12 scrapes 5 s apart: 60 s < window + lateness,
    /// fewer than 16 timestamps): every point is taken exactly once.
    #[test]
    fn resends_in_any_order_take_every_point_once(
        order in proptest::collection::vec(0usize..12, 0..40),
        seed in proptest::prelude::any::<u64>(),
    ) {
        let reqs: Vec<Vec<u8>> = (0..12)
            .map(|i| request("h", vec![mem_util(T0 + i as i64 * 5_000, 0.01 * i as f64)]))
            .collect();
        // Every request at least once, at a position decided by `seed`.
        let mut deliveries = order.clone();
        for i in 0..12 {
            let at = (seed.rotate_left(i as u32 * 5) as usize) % (deliveries.len() + 1);
            deliveries.insert(at, i);
        }
        let mut st = OtlpState::default();
        let payloads: Vec<Vec<u8>> = deliveries.iter().map(|&i| reqs[i].clone()).collect();
        let (b, rej) = convert_all(&mut st, &payloads);
        proptest::prop_assert!(rej.is_empty());
        let mut got = points(&b).remove(&key("mem_pct", "")).unwrap_or_default();
        got.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let want: Vec<(i64, f64)> = (0..12)
            .map(|i| (T0 + i as i64 * 5_000, 100.0 * (0.01 * i as f64)))
            .collect();
        proptest::prop_assert_eq!(got, want);
        proptest::prop_assert_eq!(st.stats().duplicate_points, 3 * order.len() as u64);
    }
}

/// Per-series refusals are points of a record, not refused records: a
/// request with several over-long metric names is one record in, none
/// refused whole.
#[test]
fn per_series_refusals_count_points_not_records() {
    let mut p = Pipeline::new(cfg(), Arc::new(RuleSet::default())).unwrap();
    let mut out = Outputs::default();
    let metrics = (0..5)
        .map(|i| {
            let name = format!("{}{i}", "x".repeat(300));
            gauge(&name, vec![point(&[], 0, T0, 1.0)])
        })
        .chain(std::iter::once(mem_util(T0, 0.5)))
        .collect();
    p.process_otlp(POS, &request("a", metrics), T0, &mut out);
    assert_eq!(p.stats().records, 1);
    assert_eq!(p.stats().rejected_records(RejectReason::InvalidMetric), 0);
    assert_eq!(p.stats().rejected_points(RejectReason::InvalidMetric), 5);
}

/// A resource whose every point the converter refuses (a metric type Vigil
/// does not read) is refused input for `[invalid_input]`, not good input:
/// three such requests in a row open an `agent_invalid_input` incident,
/// and a request with a readable metric resolves it.
#[test]
fn resources_refused_whole_by_the_converter_count_as_invalid_input() {
    let rules = RuleSet::from_toml(
        "[invalid_input]\nbatches = 3\nseverity = \"warning\"\n",
        "t.toml",
    )
    .unwrap();
    let mut p = Pipeline::new(cfg(), Arc::new(rules)).unwrap();
    let mut out = Outputs::default();
    let exp = Metric {
        name: "http.server.duration".into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint::default(); 2],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Metric::default()
    };
    for k in 0..3 {
        p.process_otlp(
            POS,
            &request("h", vec![exp.clone()]),
            T0 + k * 60_000,
            &mut out,
        );
    }
    let events: Vec<_> = out
        .alerts
        .iter()
        .map(|a| (a.rule.clone(), a.status))
        .collect();
    assert_eq!(
        events,
        [(
            "agent_invalid_input".to_string(),
            crate::model::AlertStatus::Firing
        )]
    );
    p.process_otlp(
        POS,
        &request("h", vec![mem_util(T0 + 240_000, 0.5)]),
        T0 + 240_000,
        &mut out,
    );
    assert_eq!(
        out.alerts.last().unwrap().status,
        crate::model::AlertStatus::Resolved
    );
}

/// The OTLP converter's memory goes into delta checkpoints by series: a
/// delta holds the series that sent since the last checkpoint, and a
/// pipeline restored from a base and its deltas drops the same resends
/// and derives the same rates as one that never stopped.
#[test]
fn otlp_memory_goes_into_deltas_by_series_and_restores_exactly() {
    let hosts = ["h1", "h2", "h3", "h4"];
    let at = |k: i64, h: &str| {
        let t = T0 + k * 10_000;
        request(
            h,
            vec![
                mem_util(t, 0.1 * k as f64),
                net_io(t, BOOT_NS, 100.0 * k as f64, 10.0 * k as f64),
            ],
        )
    };
    // Every host every step; after step 6 only h1, with resends of each
    // of its requests.
    let mut recs = Vec::new();
    for k in 0..6 {
        for h in hosts {
            recs.push(at(k, h));
        }
    }
    let before = recs.len();
    for k in 6..12 {
        recs.push(at(k, "h1"));
        recs.push(at(k, "h1"));
    }
    let run = |cut: Option<usize>| {
        let mut p = Pipeline::new(cfg(), Arc::new(RuleSet::default())).unwrap();
        let mut out = Outputs::default();
        let mut base = Vec::new();
        let now = T0 + 200_000;
        for (i, r) in recs.iter().enumerate() {
            if i == before {
                base = serde_json::to_vec(&p).unwrap();
                p.checkpointed();
            }
            if Some(i) == cut {
                let d = p.delta().unwrap();
                let json = serde_json::to_value(&d).unwrap();
                // h1's source series only, a quarter of the four hosts'.
                let series = json["otlp"]["series"].as_array().unwrap().len();
                let all: serde_json::Value = serde_json::from_slice(&base).unwrap();
                let all = all["otlp"]["series"].as_object().unwrap().len();
                assert_eq!(json["otlp"]["whole"], false);
                assert!(series > 0 && series * 4 == all, "{series} of {all}");
                let b: Pipeline = serde_json::from_slice(&base).unwrap();
                p = Pipeline::restore_chain(b, vec![serde_json::from_value(json).unwrap()])
                    .unwrap()
                    .resume(cfg(), Arc::new(RuleSet::default()))
                    .unwrap();
            }
            p.process_otlp(POS, r, now, &mut out);
        }
        p.finish(&mut out);
        (
            sorted_windows(&out),
            p.otlp_stats().duplicate_points,
            p.stats().duplicates,
        )
    };
    let want = run(None);
    assert!(want.2 >= 5, "resends dropped: {want:?}");
    for cut in [before + 3, before + 8] {
        assert_eq!(run(Some(cut)), want, "restored at {cut}");
    }
}
