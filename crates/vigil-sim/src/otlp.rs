//! The simulated fleet as OpenTelemetry: each `TelemetryBatch` the fleet
//! produces re-encoded as the OTLP `ExportMetricsServiceRequest` the
//! Collector's hostmetrics receiver would send for the same host and the
//! same samples (`vigil simulate --format otlp`).
//!
//! One batch becomes one request with one resource: `host.id` = the agent
//! id, `host.name` = its hostname (once the agent has reported one),
//! `vigil.tenant` = the tenant, under the scope of the hostmetrics
//! receiver. The series map onto the receiver's metrics, the inverse of
//! Vigil's default OTLP mapping (docs/otlp.md), so the default rules see
//! the same metrics on either format:
//!
//! | Vigil series | OTLP |
//! |---|---|
//! | `cpu_pct` | gauge `system.cpu.utilization`, points `{cpu=cpu0, state=idle}` = 1 − v/100 and `{cpu=cpu0, state=user}` = v/100 |
//! | `mem_pct` | gauge `system.memory.utilization`, `{state=used}` = v/100, `{state=free}` = 1 − v/100 |
//! | `disk_used_pct{mount}` | gauge `system.filesystem.utilization{mountpoint, device, type, mode}` = v/100 |
//! | `net_rx_bps{iface}`, `net_tx_bps{iface}` | cumulative monotonic integer sum `system.network.io{device, direction}` in bytes: the previous count plus v/8 × the seconds since the previous point |
//! | anything else | gauge of the same name, labels as attributes |
//!
//! Each counter starts at 0 at the agent's first point (its
//! `start_time_unix_nano`). A counter point is a function of the batches
//! converted before it, so a resent batch (the same bytes again) is
//! re-encoded from a memo of recent batches, byte for byte the same
//! request, as a real resend would be; a delayed batch's counter values are
//! integrated from the nearest earlier point the encoder kept. Records
//! that are not a decodable batch (the simulator's malformed faults) pass
//! through unchanged: they are just as undecodable as OTLP. Points with
//! timestamps before 1970 (which OTLP cannot carry) are left out.

use std::collections::{BTreeMap, HashMap, VecDeque};

use prost::Message;
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use vigil_proto::otlp::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::v1::TelemetryBatch;

/// Recent batches remembered per agent, to re-encode resends identically.
const MEMO_PER_AGENT: usize = 64;
/// Counter points remembered per counter series, for delayed batches.
const POINTS_PER_COUNTER: usize = 256;

/// Converts the simulator's records to OTLP requests, keeping the state a
/// host's cumulative counters need. Deterministic: the same records in the
/// same order give the same bytes.
#[derive(Debug, Default)]
pub struct OtlpEncoder {
    agents: HashMap<String, AgentState>,
}

#[derive(Debug, Default)]
struct AgentState {
    hostname: Option<String>,
    /// Start of the agent's counters, ns since the epoch.
    start_ns: Option<u64>,
    /// (xxh3 of a batch's bytes, its request), most recent last.
    memo: VecDeque<(u64, Vec<u8>)>,
    /// Per counter (OTLP attributes): timestamp (ms) → cumulative bytes.
    counters: HashMap<(String, &'static str), BTreeMap<i64, f64>>,
}

impl OtlpEncoder {
    /// An encoder that has seen no agent yet.
    pub fn new() -> Self {
        OtlpEncoder::default()
    }

    /// The OTLP request for one record's payload: an encoded
    /// `TelemetryBatch` (other bytes are returned unchanged).
    pub fn encode(&mut self, payload: &[u8]) -> Vec<u8> {
        let Ok(batch) = TelemetryBatch::decode(payload) else {
            return payload.to_vec();
        };
        let digest = xxhash_rust::xxh3::xxh3_64(payload);
        let agent = self.agents.entry(batch.agent_id.clone()).or_default();
        if let Some((_, bytes)) = agent.memo.iter().find(|(d, _)| *d == digest) {
            return bytes.clone();
        }
        let bytes = agent.request(&batch).encode_to_vec();
        if agent.memo.len() == MEMO_PER_AGENT {
            agent.memo.pop_front();
        }
        agent.memo.push_back((digest, bytes.clone()));
        bytes
    }

    /// Agents seen so far.
    pub fn agents(&self) -> usize {
        self.agents.len()
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..KeyValue::default()
    }
}

/// Nanoseconds since the epoch of `ms`, `None` before 1970.
fn ns(ms: i64) -> Option<u64> {
    u64::try_from(ms).ok().map(|m| m.saturating_mul(1_000_000))
}

fn point(attrs: Vec<KeyValue>, ts_ns: u64, value: number_data_point::Value) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: ts_ns,
        value: Some(value),
        ..NumberDataPoint::default()
    }
}

fn gauge(name: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_string(),
        unit: unit.to_string(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Metric::default()
    }
}

impl AgentState {
    fn request(&mut self, b: &TelemetryBatch) -> ExportMetricsServiceRequest {
        if let Some(info) = b.agent.as_ref().filter(|i| !i.hostname.is_empty()) {
            self.hostname = Some(info.hostname.clone());
        }
        let mut attrs = vec![kv("host.id", &b.agent_id)];
        if let Some(h) = &self.hostname {
            attrs.push(kv("host.name", h));
        }
        attrs.push(kv("vigil.tenant", &b.tenant_id));
        if let Some(info) = &b.agent {
            if !info.os.is_empty() {
                attrs.push(kv("os.type", &info.os));
            }
        }
        // Gauges are grouped by OTLP metric, in first-appearance order;
        // the network counters into one `system.network.io`.
        let mut metrics: Vec<Metric> = Vec::new();
        let mut net: Vec<NumberDataPoint> = Vec::new();
        for s in &b.series {
            let label = |k: &str| {
                s.labels
                    .iter()
                    .find(|l| l.key == k)
                    .map_or("", |l| l.value.as_str())
            };
            let samples = s
                .timestamps_ms
                .iter()
                .zip(&s.values)
                .filter_map(|(&t, &v)| ns(t).map(|n| (t, n, v)));
            use number_data_point::Value::{AsDouble, AsInt};
            let (name, unit, points): (&str, &str, Vec<NumberDataPoint>) = match s.metric.as_str() {
                "cpu_pct" => (
                    "system.cpu.utilization",
                    "1",
                    samples
                        .flat_map(|(_, n, v)| {
                            [("idle", 1.0 - v / 100.0), ("user", v / 100.0)].map(|(st, x)| {
                                point(vec![kv("cpu", "cpu0"), kv("state", st)], n, AsDouble(x))
                            })
                        })
                        .collect(),
                ),
                "mem_pct" => (
                    "system.memory.utilization",
                    "1",
                    samples
                        .flat_map(|(_, n, v)| {
                            [("used", v / 100.0), ("free", 1.0 - v / 100.0)]
                                .map(|(st, x)| point(vec![kv("state", st)], n, AsDouble(x)))
                        })
                        .collect(),
                ),
                "disk_used_pct" => {
                    let mount = label("mount");
                    (
                        "system.filesystem.utilization",
                        "1",
                        samples
                            .map(|(_, n, v)| {
                                let attrs = vec![
                                    kv("device", &format!("/dev/disk{mount}")),
                                    kv("mode", "rw"),
                                    kv("mountpoint", mount),
                                    kv("type", "ext4"),
                                ];
                                point(attrs, n, AsDouble(v / 100.0))
                            })
                            .collect(),
                    )
                }
                m @ ("net_rx_bps" | "net_tx_bps") => {
                    let direction = if m == "net_rx_bps" {
                        "receive"
                    } else {
                        "transmit"
                    };
                    let device = label("iface").to_string();
                    let samples: Vec<(i64, u64, f64)> = samples.collect();
                    let start = *self
                        .start_ns
                        .get_or_insert(samples.first().map_or(0, |&(_, n, _)| n));
                    let counter = self
                        .counters
                        .entry((device.clone(), direction))
                        .or_default();
                    for (t, n, v) in samples {
                        let count = cumulative(counter, t, v);
                        let mut p = point(
                            vec![kv("device", &device), kv("direction", direction)],
                            n,
                            AsInt(count.round() as i64),
                        );
                        p.start_time_unix_nano = start.min(n);
                        net.push(p);
                    }
                    continue;
                }
                other => (
                    other,
                    "",
                    samples
                        .map(|(_, n, v)| {
                            let attrs = s.labels.iter().map(|l| kv(&l.key, &l.value)).collect();
                            point(attrs, n, AsDouble(v))
                        })
                        .collect(),
                ),
            };
            if points.is_empty() {
                continue;
            }
            match metrics.iter_mut().find(|m| m.name == name) {
                Some(Metric {
                    data: Some(metric::Data::Gauge(g)),
                    ..
                }) => g.data_points.extend(points),
                _ => metrics.push(gauge(name, unit, points)),
            }
        }
        if !net.is_empty() {
            metrics.push(Metric {
                name: "system.network.io".into(),
                unit: "By".into(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: net,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })),
                ..Metric::default()
            });
        }
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: attrs,
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/hostmetricsreceiver".into(),
                        version: "vigil-sim".into(),
                        ..InstrumentationScope::default()
                    }),
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }
}

/// The counter's value at `t` (ms) for a rate of `bps` bits per second
/// there: the nearest earlier point kept plus `bps / 8` bytes per second
/// since it (0 for the first). Remembered, so a point converted again
/// keeps its value.
fn cumulative(counter: &mut BTreeMap<i64, f64>, t: i64, bps: f64) -> f64 {
    if let Some(&c) = counter.get(&t) {
        return c;
    }
    let c = match counter.range(..t).next_back() {
        Some((&t0, &c0)) => {
            let rate = if bps.is_finite() { bps.max(0.0) } else { 0.0 };
            c0 + rate / 8.0 * (t - t0) as f64 / 1000.0
        }
        None => 0.0,
    };
    counter.insert(t, c);
    while counter.len() > POINTS_PER_COUNTER {
        counter.pop_first();
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::v1::{AgentInfo, Label, Series};

    fn batch(seq: u64, t0: i64) -> TelemetryBatch {
        let series = |metric: &str, label: Option<(&str, &str)>, v: f64| Series {
            metric: metric.into(),
            labels: label
                .map(|(k, v)| Label {
                    key: k.into(),
                    value: v.into(),
                })
                .into_iter()
                .collect(),
            timestamps_ms: vec![t0, t0 + 10_000],
            values: vec![v, v + 1.0],
        };
        TelemetryBatch {
            status: Vec::new(),
            security_events: Vec::new(),
            tenant_id: "t1".into(),
            agent_id: "a1".into(),
            seq,
            sent_at_ms: t0 + 20_000,
            agent: (seq == 1).then(|| AgentInfo {
                hostname: "host-1".into(),
                ..AgentInfo::default()
            }),
            series: vec![
                series("cpu_pct", None, 40.0),
                series("disk_used_pct", Some(("mount", "/")), 80.0),
                series("net_rx_bps", Some(("iface", "eth0")), 8000.0),
                series("smart_reallocated_sectors", Some(("disk", "0")), 3.0),
            ],
            boot_id: 0,
        }
    }

    fn decode(b: &[u8]) -> ResourceMetrics {
        let mut r = ExportMetricsServiceRequest::decode(b).unwrap();
        assert_eq!(r.resource_metrics.len(), 1);
        r.resource_metrics.remove(0)
    }

    fn attr<'a>(attrs: &'a [KeyValue], k: &str) -> Option<&'a str> {
        attrs
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            })
    }

    fn metric<'a>(rm: &'a ResourceMetrics, name: &str) -> &'a Metric {
        rm.scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    fn values(m: &Metric) -> Vec<f64> {
        let points = match m.data.as_ref().unwrap() {
            metric::Data::Gauge(g) => &g.data_points,
            metric::Data::Sum(s) => &s.data_points,
            other => panic!("{other:?}"),
        };
        points
            .iter()
            .map(|p| match p.value.unwrap() {
                number_data_point::Value::AsDouble(d) => d,
                number_data_point::Value::AsInt(i) => i as f64,
            })
            .collect()
    }

    #[test]
    fn hostmetrics_shape_and_identity() {
        let mut e = OtlpEncoder::new();
        let t0 = 1_800_000_000_000;
        let rm = decode(&e.encode(&batch(1, t0).encode_to_vec()));
        let res = &rm.resource.as_ref().unwrap().attributes;
        assert_eq!(attr(res, "host.id"), Some("a1"));
        assert_eq!(attr(res, "host.name"), Some("host-1"));
        assert_eq!(attr(res, "vigil.tenant"), Some("t1"));
        assert_eq!(
            values(metric(&rm, "system.cpu.utilization")),
            [0.6, 0.4, 1.0 - 0.41, 0.41]
        );
        assert_eq!(
            values(metric(&rm, "system.filesystem.utilization")),
            [0.8, 0.81]
        );
        assert_eq!(values(metric(&rm, "smart_reallocated_sectors")), [3.0, 4.0]);
        let net = metric(&rm, "system.network.io");
        let Some(metric::Data::Sum(s)) = &net.data else {
            panic!("not a sum")
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        // 8,001 bits/s for 10 s = 10,001.25 bytes after the first point.
        assert_eq!(values(net), [0.0, 10_001.0]);
        assert_eq!(s.data_points[1].start_time_unix_nano, ns(t0).unwrap());
        assert_eq!(s.data_points[0].time_unix_nano, ns(t0).unwrap());
        // The hostname stays on later batches without agent info.
        let rm2 = decode(&e.encode(&batch(2, t0 + 20_000).encode_to_vec()));
        let res2 = &rm2.resource.as_ref().unwrap().attributes;
        assert_eq!(attr(res2, "host.name"), Some("host-1"));
        // The counter goes on from where it was: 8,000 bits/s for 10 s,
        // 8,001 for the next 10.
        assert_eq!(
            values(metric(&rm2, "system.network.io")),
            [10_001.25 + 10_000.0, 10_001.25 + 10_000.0 + 10_001.25].map(f64::round)
        );
    }

    #[test]
    fn resends_are_byte_identical_and_delayed_batches_fit_in() {
        let t0 = 1_800_000_000_000;
        let b1 = batch(1, t0).encode_to_vec();
        let b2 = batch(2, t0 + 20_000).encode_to_vec();
        let b3 = batch(3, t0 + 40_000).encode_to_vec();
        let mut e = OtlpEncoder::new();
        let first = e.encode(&b1);
        let third = e.encode(&b3);
        assert_eq!(e.encode(&b1), first, "a resend is the same request");
        // Batch 2 arrives late: integrated from batch 1's last point, so
        // its counter lies between batch 1's and batch 3's.
        let second = values(metric(&decode(&e.encode(&b2)), "system.network.io"));
        let (v1, v3) = (
            values(metric(&decode(&first), "system.network.io")),
            values(metric(&decode(&third), "system.network.io")),
        );
        assert!(
            v1[1] < second[0] && second[1] <= v3[1],
            "{v1:?} {second:?} {v3:?}"
        );
        assert_eq!(e.encode(&b3), third);
        assert_eq!(e.agents(), 1);
    }

    #[test]
    fn undecodable_bytes_pass_through_and_pre_1970_points_are_left_out() {
        let mut e = OtlpEncoder::new();
        let junk = vec![0xff, 0xff, 0xff];
        assert_eq!(e.encode(&junk), junk);
        let mut b = batch(1, -20_000);
        b.series.truncate(1);
        let rm = decode(&e.encode(&b.encode_to_vec()));
        // -20,000 ms and -10,000 ms are left out: no cpu point, no metric.
        assert!(rm.scope_metrics[0].metrics.is_empty());
    }
}
