//! The OTLP → Vigil metric mapping, as data: which OTLP metric becomes
//! which Vigil metric, from which data points, with which labels, how the
//! points of one instant combine and how the result is scaled.
//!
//! The built-in table ([`default_map`]) maps the OpenTelemetry Collector's
//! hostmetrics receiver onto the metric names the default rules use
//! (`cpu_pct`, `mem_pct`, `disk_used_pct`, `net_rx_bps`, `net_tx_bps`);
//! docs/otlp.md explains each row. `pipeline.otlp.map` in the config
//! replaces the table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How the selected data points of one group (one timestamp, one set of
/// output labels) combine into one value before scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// Sum of the selected points.
    Sum,
    /// Mean of the selected points.
    Mean,
    /// Greatest selected point.
    Max,
    /// Sum of the selected points divided by the sum of all the group's
    /// points (selected or not): e.g. `used / (used + free + ...)`.
    Share,
}

/// One row of the mapping table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapRule {
    /// OTLP metric name, e.g. `system.cpu.utilization`.
    pub otlp: String,
    /// Vigil metric name it becomes, e.g. `cpu_pct`.
    pub metric: String,
    /// Only data points whose attributes have these values are selected
    /// (all of them, when empty). For [`Combine::Share`] the other points
    /// still count in the denominator.
    #[serde(default)]
    pub select: BTreeMap<String, String>,
    /// OTLP data point attributes kept as labels, as OTLP key → Vigil
    /// label key. Points that differ only in other attributes fall in
    /// the same group and are combined.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How a group's points combine.
    pub combine: Combine,
    /// The Vigil value is `offset + scale × combined`.
    #[serde(default = "one")]
    pub scale: f64,
    /// See `scale`.
    #[serde(default)]
    pub offset: f64,
}

fn one() -> f64 {
    1.0
}

fn rule(
    otlp: &str,
    metric: &str,
    select: &[(&str, &str)],
    labels: &[(&str, &str)],
    combine: Combine,
    scale: f64,
    offset: f64,
) -> MapRule {
    let map = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    MapRule {
        otlp: otlp.into(),
        metric: metric.into(),
        select: map(select),
        labels: map(labels),
        combine,
        scale,
        offset,
    }
}

/// The built-in table: the hostmetrics receiver onto the default rules'
/// metrics. Order matters: when two rows produce the same Vigil metric
/// for one resource in one record, the earlier row wins (so the
/// `*.utilization` gauges, when enabled, take precedence over values
/// derived from `system.cpu.time` and the `*.usage` sums).
pub fn default_map() -> Vec<MapRule> {
    use Combine::*;
    let idle = [("state", "idle")];
    let used = [("state", "used")];
    let mount = [("mountpoint", "mount")];
    vec![
        // cpu_pct = 100 × (1 − mean over CPUs of the idle fraction).
        rule(
            "system.cpu.utilization",
            "cpu_pct",
            &idle,
            &[],
            Mean,
            -100.0,
            100.0,
        ),
        // The same from the cumulative CPU seconds: the per-second rate of
        // a (cpu, state) series is the fraction of time in that state.
        rule(
            "system.cpu.time",
            "cpu_pct",
            &idle,
            &[],
            Mean,
            -100.0,
            100.0,
        ),
        rule(
            "system.memory.utilization",
            "mem_pct",
            &used,
            &[],
            Sum,
            100.0,
            0.0,
        ),
        rule(
            "system.memory.usage",
            "mem_pct",
            &used,
            &[],
            Share,
            100.0,
            0.0,
        ),
        rule(
            "system.filesystem.utilization",
            "disk_used_pct",
            &[],
            &mount,
            Max,
            100.0,
            0.0,
        ),
        rule(
            "system.filesystem.usage",
            "disk_used_pct",
            &used,
            &mount,
            Share,
            100.0,
            0.0,
        ),
        // Bytes per second (rate of the cumulative byte counter) × 8.
        rule(
            "system.network.io",
            "net_rx_bps",
            &[("direction", "receive")],
            &[("device", "iface")],
            Sum,
            8.0,
            0.0,
        ),
        rule(
            "system.network.io",
            "net_tx_bps",
            &[("direction", "transmit")],
            &[("device", "iface")],
            Sum,
            8.0,
            0.0,
        ),
    ]
}

/// Checks a mapping table; returns one message per problem.
pub fn validate(map: &[MapRule]) -> Vec<String> {
    let mut p = Vec::new();
    for (i, r) in map.iter().enumerate() {
        if r.otlp.is_empty() {
            p.push(format!("map[{i}].otlp: must not be empty"));
        }
        if !crate::decode::valid_metric(&r.metric) {
            p.push(format!(
                "map[{i}].metric: {:?} is not [A-Za-z_:][A-Za-z0-9_.:]*",
                r.metric
            ));
        }
        for l in r.labels.values() {
            if !crate::decode::valid_label_key(l) {
                p.push(format!(
                    "map[{i}].labels: {l:?} is not a label key [A-Za-z_][A-Za-z0-9_]*"
                ));
            }
        }
        if !r.scale.is_finite() || !r.offset.is_finite() {
            p.push(format!("map[{i}]: scale and offset must be finite"));
        }
    }
    p
}
