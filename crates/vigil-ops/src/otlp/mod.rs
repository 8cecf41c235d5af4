//! OTLP metrics input: turns one OpenTelemetry `ExportMetricsServiceRequest`
//! (what the Collector's Kafka exporter writes with `otlp_proto` encoding)
//! into Vigil batches, one per resource, ready for the rest of the chain.
//!
//! ```text
//! record ─▶ decode ─▶ per resource: identity (tenant, agent, hostname)
//!                        │ none ─▶ Rejected(missing_id)
//!                        ▼
//!            per data point: time check ─▶ dedup (series, timestamp)
//!                        ─▶ value: gauge as is, monotonic sum → rate/s,
//!                           histogram → mean over the interval
//!                        ─▶ mapping table (mapping.rs) or kept as is
//!                        ─▶ TelemetryBatch (seq 0) ─▶ Pipeline::accept
//! ```
//!
//! This module owns the OTLP-specific state ([`OtlpState`]): per OTLP source
//! series, the recent timestamps (to drop resent points, since OTLP has no
//! per-agent sequence) and the previous cumulative value (to turn counters
//! into rates, with resets detected). It is pure: no clock, no I/O. The
//! contract is in docs/otlp.md.

pub mod mapping;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use hashbrown::HashMap;
use prost::Message;
use serde::{Deserialize, Serialize};
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::common::v1::{any_value, KeyValue};
use vigil_proto::otlp::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics,
};
use vigil_proto::v1::{AgentInfo, Label, Series, TelemetryBatch};

use crate::config::PipelineConfig;
use crate::model::canonical_labels;
use crate::reject::{Position, RejectReason, Rejected};
pub use mapping::{default_map, Combine, MapRule};

/// The wire format of an input (a topic or a file). Both formats are
/// protobuf and cannot be told apart reliably from the bytes (both start
/// with field 1, length-delimited), so the format is configured per input,
/// never guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// `vigil.v1.TelemetryBatch` records.
    #[default]
    Vigil,
    /// OTLP `ExportMetricsServiceRequest` records.
    Otlp,
}

impl std::str::FromStr for InputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vigil" => Ok(InputFormat::Vigil),
            "otlp" => Ok(InputFormat::Otlp),
            _ => Err(format!("unknown input format {s:?} (vigil or otlp)")),
        }
    }
}

/// `[pipeline.otlp]`: how OTLP input maps onto Vigil's model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Resource attributes that name the agent, first present (non-empty)
    /// wins.
    pub agent_attributes: Vec<String>,
    /// Resource attributes that name the tenant, first present wins.
    pub tenant_attributes: Vec<String>,
    /// Tenant of resources that carry none of `tenant_attributes` (e.g.
    /// one tenant per topic). Empty: such resources are refused
    /// (`missing_id`).
    pub default_tenant: String,
    /// Resource attribute reported as the agent's hostname.
    pub hostname_attribute: String,
    /// Most OTLP source series remembered per partition (dedup timestamps
    /// and cumulative values, about 120 bytes each). When full, series
    /// silent for `state_ttl` are forgotten; if none is, points of new
    /// series are refused (`series_limit`).
    pub max_series: usize,
    /// A cumulative series whose previous point is older than this (event
    /// time) starts over: its next point gives no rate.
    #[serde(with = "humantime_serde")]
    pub state_ttl: Duration,
    /// The mapping table (default: [`default_map`]).
    pub map: Vec<MapRule>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            agent_attributes: vec!["host.id".into(), "host.name".into()],
            tenant_attributes: vec!["vigil.tenant".into()],
            default_tenant: String::new(),
            hostname_attribute: "host.name".into(),
            max_series: 1_000_000,
            state_ttl: Duration::from_secs(3600),
            map: default_map(),
        }
    }
}

impl OtlpConfig {
    /// Every problem, as (field below `pipeline.otlp`, message).
    pub fn validate(&self) -> Vec<String> {
        let mut p = mapping::validate(&self.map);
        if self.agent_attributes.is_empty() {
            p.push("agent_attributes: must name at least one attribute".into());
        }
        if self.tenant_attributes.is_empty() && self.default_tenant.is_empty() {
            p.push("tenant_attributes: name at least one attribute or set default_tenant".into());
        }
        if self.max_series == 0 {
            p.push("max_series: must be positive".into());
        }
        if self.state_ttl.is_zero() {
            p.push("state_ttl: must be positive".into());
        }
        p
    }
}

/// Counters of the OTLP conversion (monotonic; the binary exports them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtlpStats {
    /// Resources (would-be batches) seen in decoded records.
    pub resources: u64,
    /// Data points seen (all types, before any check).
    pub points_in: u64,
    /// Points dropped because the same (series, timestamp) was already
    /// taken (a resent request).
    pub duplicate_points: u64,
    /// Points flagged "no recorded value" or without a value (skipped).
    pub no_value_points: u64,
    /// First points of cumulative series (no rate yet), including after
    /// a gap longer than `state_ttl`.
    pub first_points: u64,
    /// Cumulative resets (value went down or the start time changed).
    pub resets: u64,
    /// Cumulative points older than the series' newest one (their
    /// increase is inside the next rate already).
    pub superseded_points: u64,
    /// Mapped values dropped because an earlier table row produced the
    /// same Vigil metric for the resource.
    pub shadowed_points: u64,
    /// Attributes not kept as labels (array, map or byte values, or keys
    /// that collide once sanitised).
    pub dropped_attributes: u64,
    /// Vigil points handed to the pipeline.
    pub points_out: u64,
}

/// Timestamps remembered per source series for dedup (the newest and up
/// to this many earlier ones).
pub const DEDUP_DEPTH: usize = 15;

/// Per OTLP source series: dedup memory and cumulative state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Memo {
    /// Newest timestamp taken (ms).
    newest: i64,
    /// Earlier timestamps taken, as ms below `newest`; `u32::MAX` = empty.
    older: [u32; DEDUP_DEPTH],
    /// Newest timestamp forgotten for lack of room while still within
    /// the dedup span (`i64::MIN`: none).
    forgot: i64,
    /// Previous cumulative point.
    cum: Option<Cum>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Cum {
    start_ns: u64,
    ts: i64,
    value: f64,
    /// Histogram count (0 for sums).
    count: f64,
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    New,
    Duplicate,
    Undecidable,
}

impl Memo {
    fn new(ts: i64) -> Self {
        Memo {
            newest: ts,
            older: [u32::MAX; DEDUP_DEPTH],
            forgot: i64::MIN,
            cum: None,
        }
    }

    /// Was `ts` taken already? `span` is window + allowed lateness: a point
    /// further than that below the newest is late anyway and not judged.
    fn check(&self, ts: i64, span: i64) -> Seen {
        if ts == self.newest {
            return Seen::Duplicate;
        }
        if ts > self.newest || self.newest - ts > span {
            return Seen::New;
        }
        let off = self.newest - ts;
        if off < i64::from(u32::MAX) && self.older.contains(&(off as u32)) {
            Seen::Duplicate
        } else if ts <= self.forgot {
            Seen::Undecidable
        } else {
            Seen::New
        }
    }

    /// Notes `ts` as taken (after `check` said New).
    fn remember(&mut self, ts: i64, span: i64) {
        let mut all: smallvec::SmallVec<[i64; DEDUP_DEPTH + 2]> = smallvec::SmallVec::new();
        all.push(self.newest);
        all.extend(
            self.older
                .iter()
                .filter(|&&o| o != u32::MAX)
                .map(|&o| self.newest - i64::from(o)),
        );
        if ts != self.newest {
            all.push(ts);
        }
        all.sort_unstable_by(|a, b| b.cmp(a));
        let newest = all[0];
        let floor = newest.saturating_sub(span);
        all.retain(|t| *t >= floor);
        if all.len() > DEDUP_DEPTH + 1 {
            for &t in &all[DEDUP_DEPTH + 1..] {
                self.forgot = self.forgot.max(t);
            }
            all.truncate(DEDUP_DEPTH + 1);
        }
        self.newest = newest;
        self.older = [u32::MAX; DEDUP_DEPTH];
        for (slot, t) in self.older.iter_mut().zip(&all[1..]) {
            *slot = u32::try_from(newest - t).unwrap_or(u32::MAX - 1);
        }
    }
}

/// One resource of a record, converted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Converted {
    /// The Vigil batch (seq 0: OTLP has no sequence), with
    /// `sent_at_ms` = the resource's newest valid source point (OTLP has
    /// no send time).
    pub batch: TelemetryBatch,
    /// Data points of the resource in the record.
    pub points_in: u64,
    /// Of them, dropped as duplicates.
    pub duplicates: u64,
}

/// The OTLP converter's state for one partition (checkpointed with the
/// pipeline).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OtlpState {
    series: HashMap<u64, Memo>,
    /// Newest point timestamp seen (event time), for `state_ttl`.
    newest_ms: i64,
    /// `newest_ms` at the last sweep of silent series.
    #[serde(default)]
    swept_ms: i64,
    stats: OtlpStats,
    /// Newest valid source timestamp of the resource being converted.
    #[serde(skip)]
    resource_newest: i64,
    /// Series changed since the last checkpoint (see
    /// [`OtlpState::delta`]); `None`: every series (a new or restored
    /// state, or a sweep removed some).
    #[serde(skip)]
    changed: Option<hashbrown::HashSet<u64>>,
}

/// What changed in an [`OtlpState`] since its last checkpoint: the
/// series whose memory changed (or all of them), and the counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OtlpDelta {
    /// `series` is every series the state holds (it replaces them), not
    /// only the changed ones.
    whole: bool,
    series: Vec<(u64, Memo)>,
    newest_ms: i64,
    swept_ms: i64,
    stats: OtlpStats,
}

/// The value kind of an OTLP metric, as far as Vigil is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Gauge, or a non-monotonic sum (its value is a level).
    Level,
    /// Monotonic cumulative sum → rate per second.
    CumulativeRate,
    /// Monotonic delta sum → rate per second over (start, time].
    DeltaRate,
    /// Cumulative histogram → mean of the new observations.
    CumulativeMean,
    /// Delta histogram → mean of its observations.
    DeltaMean,
}

/// A data point reduced to what the conversion needs.
struct Raw<'a> {
    attrs: &'a [KeyValue],
    start_ns: u64,
    time_ns: u64,
    /// Value (sum for histograms); `None` when absent.
    value: Option<f64>,
    /// Histogram count.
    count: f64,
    flags: u32,
}

/// A converted value of one source point, before mapping.
struct Derived {
    ts: i64,
    value: f64,
    /// Attributes rendered as strings, sorted by key.
    attrs: Vec<(String, String)>,
}

/// Per-rule accumulator of one group.
#[derive(Default)]
struct Acc {
    sum: f64,
    n: u32,
    max: f64,
    all: f64,
}

/// Attributes or labels, as sorted (key, value) pairs.
type Pairs = Vec<(String, String)>;

/// A point-level refusal being collected: (reason, metric, labels) →
/// (points, detail).
type Refusals = BTreeMap<(RejectReason, String, String), (Vec<(i64, f64)>, String)>;

impl OtlpState {
    /// Counters so far.
    pub fn stats(&self) -> &OtlpStats {
        &self.stats
    }

    /// OTLP source series remembered.
    pub fn series(&self) -> usize {
        self.series.len()
    }

    /// What changed since [`OtlpState::checkpointed`] was last called
    /// (every series before the first call).
    pub fn delta(&self) -> OtlpDelta {
        let series = match &self.changed {
            Some(keys) => {
                let mut v: Vec<(u64, Memo)> = keys
                    .iter()
                    .filter_map(|k| self.series.get(k).map(|m| (*k, m.clone())))
                    .collect();
                v.sort_unstable_by_key(|e| e.0);
                v
            }
            None => {
                let mut v: Vec<(u64, Memo)> =
                    self.series.iter().map(|(k, m)| (*k, m.clone())).collect();
                v.sort_unstable_by_key(|e| e.0);
                v
            }
        };
        OtlpDelta {
            whole: self.changed.is_none(),
            series,
            newest_ms: self.newest_ms,
            swept_ms: self.swept_ms,
            stats: self.stats.clone(),
        }
    }

    /// The state is durable as of now: the next delta holds what changes
    /// from here.
    pub fn checkpointed(&mut self) {
        match &mut self.changed {
            Some(c) => c.clear(),
            None => self.changed = Some(hashbrown::HashSet::new()),
        }
    }

    /// Applies a delta written after this state (restoring a chain of
    /// checkpoints).
    pub fn apply(&mut self, d: OtlpDelta) {
        if d.whole {
            self.series.clear();
        }
        self.series.extend(d.series);
        self.newest_ms = d.newest_ms;
        self.swept_ms = d.swept_ms;
        self.stats = d.stats;
        self.changed = None;
    }

    /// Converts one record. Appends one [`Converted`] per resource that has
    /// an identity to `out`, and every refusal (the whole record, a whole
    /// resource, or some points) to `rejected`.
    pub fn convert(
        &mut self,
        cfg: &PipelineConfig,
        pos: Position,
        payload: &[u8],
        out: &mut Vec<Converted>,
        rejected: &mut Vec<Rejected>,
    ) {
        let limits = &cfg.limits;
        let whole = |reason, detail: String| Rejected {
            reason,
            detail,
            position: pos,
            tenant: None,
            agent: None,
            seq: None,
            metric: None,
            labels: None,
            points: Vec::new(),
            point_count: 0,
            raw: Some(payload.to_vec()),
        };
        if payload.len() > limits.max_batch_bytes {
            rejected.push(whole(
                RejectReason::TooLarge,
                format!(
                    "record is {} bytes, limit {}",
                    payload.len(),
                    limits.max_batch_bytes
                ),
            ));
            return;
        }
        let req = match ExportMetricsServiceRequest::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                rejected.push(whole(
                    RejectReason::Decode,
                    format!("not an OTLP ExportMetricsServiceRequest: {e}"),
                ));
                return;
            }
        };
        for rm in &req.resource_metrics {
            self.convert_resource(cfg, pos, rm, out, rejected);
        }
    }

    fn convert_resource(
        &mut self,
        cfg: &PipelineConfig,
        pos: Position,
        rm: &ResourceMetrics,
        out: &mut Vec<Converted>,
        rejected: &mut Vec<Rejected>,
    ) {
        let ocfg = &cfg.otlp;
        let limits = &cfg.limits;
        self.stats.resources += 1;
        let points_in: u64 = rm
            .scope_metrics
            .iter()
            .flat_map(|s| &s.metrics)
            .map(|m| metric_points(m) as u64)
            .sum();
        self.stats.points_in += points_in;
        let rattrs: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes[..]);
        let find = |keys: &[String]| {
            keys.iter()
                .find_map(|k| attr(rattrs, k).filter(|v| !v.is_empty()))
        };
        let tenant = find(&ocfg.tenant_attributes)
            .or_else(|| (!ocfg.default_tenant.is_empty()).then(|| ocfg.default_tenant.clone()));
        let agent = find(&ocfg.agent_attributes);
        let refuse_resource = |reason, detail: String, tenant: Option<String>, agent| Rejected {
            reason,
            detail,
            position: pos,
            tenant,
            agent,
            seq: None,
            metric: None,
            labels: None,
            points: Vec::new(),
            point_count: points_in,
            raw: Some(isolate(rm, None)),
        };
        let (tenant, agent) = match (tenant, agent) {
            (Some(t), Some(a)) => (t, a),
            (t, a) => {
                let missing = if a.is_none() {
                    format!("none of the agent attributes {:?}", ocfg.agent_attributes)
                } else {
                    format!(
                        "none of the tenant attributes {:?} and no default_tenant",
                        ocfg.tenant_attributes
                    )
                };
                rejected.push(refuse_resource(
                    RejectReason::MissingId,
                    format!("OTLP resource has {missing}"),
                    t,
                    a,
                ));
                return;
            }
        };
        for (what, id) in [("tenant", &tenant), ("agent", &agent)] {
            if crate::decode::has_control(id) || id.len() > limits.max_id_bytes {
                rejected.push(refuse_resource(
                    RejectReason::InvalidId,
                    format!(
                        "{what} id from the resource attributes has control characters or exceeds {} bytes",
                        limits.max_id_bytes
                    ),
                    None,
                    None,
                ));
                return;
            }
        }
        let hostname = attr(rattrs, &ocfg.hostname_attribute).filter(|h| !h.is_empty());
        let span = cfg.window_ms() + cfg.allowed_lateness.as_millis() as i64;
        let ttl = ocfg.state_ttl.as_millis() as i64;

        let mut duplicates = 0u64;
        self.resource_newest = 0;
        let mut refusals: Refusals = BTreeMap::new();
        // (rule index, labels, ts) → accumulator.
        let mut groups: BTreeMap<(usize, Pairs, i64), Acc> = BTreeMap::new();
        // (metric, labels) → points.
        let mut series: BTreeMap<(String, Pairs), (Vec<i64>, Vec<f64>)> = BTreeMap::new();
        let mut derived = Vec::new();
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let Some(kind) = self.kind_or_refuse(pos, rm, sm, m, &tenant, &agent, rejected)
                else {
                    continue;
                };
                derived.clear();
                for p in raw_points(m) {
                    self.derive(
                        &p,
                        kind,
                        (&tenant, &agent, &m.name),
                        (span, ttl, ocfg.max_series),
                        &mut duplicates,
                        &mut refusals,
                        &mut derived,
                    );
                }
                let rules: Vec<usize> = (0..ocfg.map.len())
                    .filter(|&i| ocfg.map[i].otlp == m.name)
                    .collect();
                if rules.is_empty() {
                    let name = unmapped_name(&m.name, kind);
                    for d in derived.drain(..) {
                        let labels = self.sanitise(&d.attrs);
                        let e = series.entry((name.clone(), labels)).or_default();
                        e.0.push(d.ts);
                        e.1.push(d.value);
                    }
                    continue;
                }
                for &ri in &rules {
                    let r = &ocfg.map[ri];
                    for d in &derived {
                        let get = |k: &str| {
                            d.attrs
                                .binary_search_by(|(a, _)| a.as_str().cmp(k))
                                .ok()
                                .map(|i| d.attrs[i].1.as_str())
                        };
                        let labels: Vec<(String, String)> = r
                            .labels
                            .iter()
                            .filter_map(|(ok, lk)| get(ok).map(|v| (lk.clone(), v.to_string())))
                            .collect();
                        let selected = r.select.iter().all(|(k, v)| get(k) == Some(v.as_str()));
                        let acc = groups.entry((ri, labels, d.ts)).or_insert(Acc {
                            max: f64::NEG_INFINITY,
                            ..Acc::default()
                        });
                        acc.all += d.value;
                        if selected {
                            acc.sum += d.value;
                            acc.n += 1;
                            acc.max = acc.max.max(d.value);
                        }
                    }
                }
            }
        }
        // Mapped values, earlier table rows first; a later row for a
        // metric an earlier row already produced is shadowed.
        let mut claimed: HashMap<&str, usize> = HashMap::new();
        for ((ri, labels, ts), acc) in groups {
            let r = &ocfg.map[ri];
            if acc.n == 0 {
                continue;
            }
            let combined = match r.combine {
                Combine::Sum => acc.sum,
                Combine::Mean => acc.sum / f64::from(acc.n),
                Combine::Max => acc.max,
                Combine::Share => acc.sum / acc.all,
            };
            if *claimed.entry(r.metric.as_str()).or_insert(ri) != ri {
                self.stats.shadowed_points += 1;
                continue;
            }
            let e = series.entry((r.metric.clone(), labels)).or_default();
            e.0.push(ts);
            e.1.push(r.offset + r.scale * combined);
        }

        let mut batch = TelemetryBatch {
            status: Vec::new(),
            security_events: Vec::new(),
            tenant_id: tenant.clone(),
            agent_id: agent.clone(),
            seq: 0,
            // OTLP has no send time: the resource's newest point stands in.
            sent_at_ms: self.resource_newest,
            boot_id: 0,
            agent: hostname.map(|h| AgentInfo {
                hostname: h,
                ..AgentInfo::default()
            }),
            series: Vec::with_capacity(series.len()),
        };
        let mut canon = String::new();
        for ((metric, labels), (ts, vs)) in series {
            let problem = if metric.len() > limits.max_metric_bytes {
                Some((
                    RejectReason::InvalidMetric,
                    format!("metric name longer than {} bytes", limits.max_metric_bytes),
                ))
            } else if labels.len() > limits.max_labels
                || labels.iter().any(|(k, v)| {
                    k.len() > limits.max_label_bytes || v.len() > limits.max_label_bytes
                })
            {
                Some((
                    RejectReason::InvalidLabels,
                    format!(
                        "more than {} attributes, or one longer than {} bytes",
                        limits.max_labels, limits.max_label_bytes
                    ),
                ))
            } else {
                None
            };
            if let Some((reason, detail)) = problem {
                canonical_labels(
                    labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    &mut canon,
                );
                let e = refusals
                    .entry((reason, metric, canon.clone()))
                    .or_insert_with(|| (Vec::new(), detail));
                e.0.extend(ts.into_iter().zip(vs));
                continue;
            }
            self.stats.points_out += ts.len() as u64;
            batch.series.push(Series {
                metric,
                labels: labels
                    .into_iter()
                    .map(|(key, value)| Label { key, value })
                    .collect(),
                timestamps_ms: ts,
                values: vs,
            });
        }
        for ((reason, metric, labels), (points, detail)) in refusals {
            rejected.push(Rejected {
                reason,
                detail,
                position: pos,
                tenant: Some(tenant.clone()),
                agent: Some(agent.clone()),
                seq: None,
                metric: Some(metric),
                labels: Some(labels),
                point_count: points.len() as u64,
                points,
                raw: None,
            });
        }
        out.push(Converted {
            batch,
            points_in,
            duplicates,
        });
    }

    /// The value kind of `m`, or refuses its points (`unsupported_type`).
    #[allow(clippy::too_many_arguments)]
    fn kind_or_refuse(
        &mut self,
        pos: Position,
        rm: &ResourceMetrics,
        sm: &ScopeMetrics,
        m: &Metric,
        tenant: &str,
        agent: &str,
        rejected: &mut Vec<Rejected>,
    ) -> Option<Kind> {
        const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;
        const DELTA: i32 = AggregationTemporality::Delta as i32;
        let why = match &m.data {
            Some(Data::Gauge(_)) => return Some(Kind::Level),
            Some(Data::Sum(s)) => match (s.is_monotonic, s.aggregation_temporality) {
                (false, CUMULATIVE | DELTA) => return Some(Kind::Level),
                (true, CUMULATIVE) => return Some(Kind::CumulativeRate),
                (true, DELTA) => return Some(Kind::DeltaRate),
                _ => "sum without aggregation temporality",
            },
            Some(Data::Histogram(h)) => match h.aggregation_temporality {
                CUMULATIVE => return Some(Kind::CumulativeMean),
                DELTA => return Some(Kind::DeltaMean),
                _ => "histogram without aggregation temporality",
            },
            Some(Data::ExponentialHistogram(_)) => "exponential histograms are not supported",
            Some(Data::Summary(_)) => "summaries are not supported",
            None => "metric without data",
        };
        rejected.push(Rejected {
            reason: RejectReason::UnsupportedType,
            detail: format!("OTLP metric {:?}: {why}", m.name),
            position: pos,
            tenant: Some(tenant.to_string()),
            agent: Some(agent.to_string()),
            seq: None,
            metric: Some(m.name.clone()),
            labels: None,
            points: Vec::new(),
            point_count: metric_points(m) as u64,
            raw: Some(isolate(rm, Some((sm, m)))),
        });
        None
    }

    /// Checks one source point, dedups it and derives its value (if any)
    /// into `out`.
    #[allow(clippy::too_many_arguments)]
    fn derive(
        &mut self,
        p: &Raw<'_>,
        kind: Kind,
        (tenant, agent, name): (&str, &str, &str),
        (span, ttl, max_series): (i64, i64, usize),
        duplicates: &mut u64,
        refusals: &mut Refusals,
        out: &mut Vec<Derived>,
    ) {
        // DataPointFlags.FLAG_NO_RECORDED_VALUE = 1.
        let value = match p.value {
            Some(v) if p.flags & 1 == 0 => v,
            _ => {
                self.stats.no_value_points += 1;
                return;
            }
        };
        let mut attrs: Vec<(String, String)> = Vec::with_capacity(p.attrs.len());
        for kv in p.attrs {
            match kv.value.as_ref().and_then(render) {
                Some(v) => attrs.push((kv.key.clone(), v)),
                None => self.stats.dropped_attributes += 1,
            }
        }
        attrs.sort_unstable();
        attrs.dedup_by(|a, b| a.0 == b.0);
        let mut refuse = |reason: RejectReason, detail: String, ts: i64| {
            let mut canon = String::new();
            canonical_labels(
                attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                &mut canon,
            );
            refusals
                .entry((reason, name.to_string(), canon))
                .or_insert_with(|| (Vec::new(), detail))
                .0
                .push((ts, value));
        };
        let ts = (p.time_ns / 1_000_000) as i64;
        if p.time_ns == 0 || !crate::pipeline::VALID_TS.contains(&ts) {
            refuse(
                RejectReason::OutOfRange,
                format!("OTLP time_unix_nano {} is unset or out of range", p.time_ns),
                ts,
            );
            return;
        }
        self.newest_ms = self.newest_ms.max(ts);
        self.resource_newest = self.resource_newest.max(ts);
        let key = series_key(tenant, agent, name, &attrs);
        if !self.series.contains_key(&key) && self.series.len() >= max_series {
            // A sweep costs O(series): at most one per 1/16 of the TTL of
            // event time, so a flood of new series cannot sweep per point.
            if self.newest_ms.saturating_sub(self.swept_ms) >= ttl / 16 {
                self.swept_ms = self.newest_ms;
                let cutoff = self.newest_ms.saturating_sub(ttl);
                self.series.retain(|_, m| m.newest >= cutoff);
                // Removals are not noted one by one: the next delta
                // holds every series.
                self.changed = None;
            }
            if self.series.len() >= max_series {
                refuse(
                    RejectReason::SeriesLimit,
                    format!("the OTLP converter already holds {max_series} series (pipeline.otlp.max_series)"),
                    ts,
                );
                return;
            }
        }
        if let Some(c) = &mut self.changed {
            c.insert(key);
        }
        let memo = match self.series.entry(key) {
            hashbrown::hash_map::Entry::Vacant(e) => e.insert(Memo::new(ts)),
            hashbrown::hash_map::Entry::Occupied(e) => {
                let memo = e.into_mut();
                match memo.check(ts, span) {
                    Seen::New => {}
                    Seen::Duplicate => {
                        *duplicates += 1;
                        self.stats.duplicate_points += 1;
                        return;
                    }
                    Seen::Undecidable => {
                        refuse(
                            RejectReason::DedupOverflow,
                            format!(
                                "older than the {} timestamps remembered for its series within \
                                 window + lateness: cannot tell a resend from new data",
                                DEDUP_DEPTH + 1
                            ),
                            ts,
                        );
                        return;
                    }
                }
                memo.remember(ts, span);
                memo
            }
        };
        let secs = |ms: i64| ms as f64 / 1000.0;
        let v = match kind {
            Kind::Level => Some(value),
            Kind::DeltaRate => {
                let start = (p.start_ns / 1_000_000) as i64;
                (p.start_ns != 0 && ts > start).then(|| value / secs(ts - start))
            }
            Kind::DeltaMean => (p.count > 0.0).then(|| value / p.count),
            Kind::CumulativeRate | Kind::CumulativeMean => {
                match step(&mut memo.cum, p.start_ns, ts, value, p.count, ttl) {
                    Step::Delta { dv, dcount, dt_ms } => match kind {
                        Kind::CumulativeRate => Some(dv / secs(dt_ms)),
                        _ => (dcount > 0.0).then(|| dv / dcount),
                    },
                    Step::First => {
                        self.stats.first_points += 1;
                        None
                    }
                    Step::Reset => {
                        self.stats.resets += 1;
                        None
                    }
                    Step::Superseded => {
                        self.stats.superseded_points += 1;
                        None
                    }
                }
            }
        };
        if let Some(value) = v {
            out.push(Derived { ts, value, attrs });
        } else if kind == Kind::DeltaRate || kind == Kind::DeltaMean {
            self.stats.first_points += 1;
        }
    }

    /// Attributes as valid Vigil labels: keys sanitised, collisions dropped.
    fn sanitise(&mut self, attrs: &[(String, String)]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = attrs
            .iter()
            .map(|(k, v)| (label_key(k), v.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        let before = out.len();
        out.dedup_by(|a, b| a.0 == b.0);
        self.stats.dropped_attributes += (before - out.len()) as u64;
        out
    }
}

/// What a cumulative point adds.
#[derive(Debug, PartialEq)]
enum Step {
    /// Increase `dv` (and `dcount`) over `dt_ms`.
    Delta { dv: f64, dcount: f64, dt_ms: i64 },
    /// The series' first point (or first after a gap over `state_ttl`).
    First,
    /// A reset without a usable start time.
    Reset,
    /// Older than the newest point seen.
    Superseded,
}

/// Advances the cumulative state by one point. A reset is a start time
/// that changed or a value (or count) that went down. After a reset whose
/// new start time is at or after the previous point, the whole value
/// accrued since that start; otherwise the point only restarts the series.
fn step(cum: &mut Option<Cum>, start_ns: u64, ts: i64, v: f64, count: f64, ttl: i64) -> Step {
    let new = Cum {
        start_ns,
        ts,
        value: v,
        count,
    };
    let Some(prev) = *cum else {
        *cum = Some(new);
        return Step::First;
    };
    if ts <= prev.ts {
        return Step::Superseded;
    }
    *cum = Some(new);
    let restarted = start_ns != 0 && prev.start_ns != 0 && start_ns != prev.start_ns;
    if restarted || v < prev.value || count < prev.count {
        let start = (start_ns / 1_000_000) as i64;
        if start_ns != 0 && start >= prev.ts && ts > start {
            return Step::Delta {
                dv: v,
                dcount: count,
                dt_ms: ts - start,
            };
        }
        return Step::Reset;
    }
    if ts - prev.ts > ttl {
        return Step::First;
    }
    Step::Delta {
        dv: v - prev.value,
        dcount: count - prev.count,
        dt_ms: ts - prev.ts,
    }
}

/// Number of data points of a metric, any type.
pub fn metric_points(m: &Metric) -> usize {
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// A number data point reduced to [`Raw`].
fn number(p: &NumberDataPoint) -> Raw<'_> {
    Raw {
        attrs: &p.attributes,
        start_ns: p.start_time_unix_nano,
        time_ns: p.time_unix_nano,
        value: p.value.map(|v| match v {
            number_data_point::Value::AsDouble(d) => d,
            number_data_point::Value::AsInt(i) => i as f64,
        }),
        count: 0.0,
        flags: p.flags,
    }
}

/// The points of a supported metric, reduced to [`Raw`].
fn raw_points(m: &Metric) -> Vec<Raw<'_>> {
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.iter().map(number).collect(),
        Some(Data::Sum(s)) => s.data_points.iter().map(number).collect(),
        Some(Data::Histogram(h)) => h
            .data_points
            .iter()
            .map(|p| Raw {
                attrs: &p.attributes,
                start_ns: p.start_time_unix_nano,
                time_ns: p.time_unix_nano,
                value: p.sum,
                count: p.count as f64,
                flags: p.flags,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A string, bool, int or double attribute value as a string; `None` for
/// the others (arrays, maps, bytes).
fn render(v: &vigil_proto::otlp::common::v1::AnyValue) -> Option<String> {
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// The rendered value of attribute `key`.
fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(render)
}

/// An OTLP attribute key as a Vigil label key: every character outside
/// `[A-Za-z0-9_]` becomes `_`, and a leading digit (or an empty key) gets
/// a `_` in front.
pub fn label_key(k: &str) -> String {
    let mut s: String = k
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.as_bytes()[0].is_ascii_digit() {
        s.insert(0, '_');
    }
    s
}

/// The Vigil name of an unmapped OTLP metric: characters outside
/// `[A-Za-z0-9_.:]` become `_` (a leading digit gets a `_` in front), and
/// rates and means say so with a `:rate` or `:mean` suffix.
pub fn unmapped_name_for(name: &str, rate: bool, mean: bool) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.as_bytes()[0].is_ascii_digit() || s.as_bytes()[0] == b'.' {
        s.insert(0, '_');
    }
    if rate {
        s.push_str(":rate");
    } else if mean {
        s.push_str(":mean");
    }
    s
}

fn unmapped_name(name: &str, kind: Kind) -> String {
    unmapped_name_for(
        name,
        matches!(kind, Kind::CumulativeRate | Kind::DeltaRate),
        matches!(kind, Kind::CumulativeMean | Kind::DeltaMean),
    )
}

/// Key of a source series: xxh3 of tenant, agent, OTLP metric name and the
/// sorted rendered attributes, each followed by a 0 byte.
fn series_key(tenant: &str, agent: &str, name: &str, attrs: &[(String, String)]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [tenant, agent, name] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    for (k, v) in attrs {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(v.as_bytes());
        h.update(&[0]);
    }
    h.digest()
}

/// One resource (and optionally one of its metrics only) as a standalone
/// request: the raw record of a refusal, replayable on its own.
fn isolate(rm: &ResourceMetrics, only: Option<(&ScopeMetrics, &Metric)>) -> Vec<u8> {
    let mut one = rm.clone();
    if let Some((sm, m)) = only {
        let mut sm = sm.clone();
        sm.metrics = vec![m.clone()];
        one.scope_metrics = vec![sm];
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![one],
    }
    .encode_to_vec()
}
