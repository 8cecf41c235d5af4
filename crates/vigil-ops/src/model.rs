//! The values that flow between operators and out of the pipeline: series
//! identity, closed window aggregates and alert events.
//!
//! These types are the contract with the storage and query crates: the
//! Parquet schemas of `aggregates/` and `alerts/` are derived from them.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Stable 64-bit identity of a series: xxh3 of its canonical key
/// `tenant \0 agent \0 metric \0 labels`. Used to key per-series state in
/// detectors and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesId(pub u64);

impl SeriesId {
    /// Computes the id of a series from its key parts (labels canonical).
    pub fn of(tenant: &str, agent: &str, metric: &str, labels: &str) -> Self {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for part in [tenant, agent, metric, labels] {
            h.update(part.as_bytes());
            h.update(&[0]);
        }
        SeriesId(h.digest())
    }
}

/// Tenant and agent of a series: one allocation per agent, shared by all
/// of its series and their windows.
#[derive(Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AgentKey {
    /// Tenant id.
    pub tenant: Arc<str>,
    /// Agent id.
    pub agent: Box<str>,
}

/// Metric and canonical labels of a series. A pipeline interns them, so
/// every agent's `disk_used_pct{mount=/}` shares one allocation, which
/// also holds the key's hash (so per-series state need not).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    /// Metric name.
    pub metric: Box<str>,
    /// Canonical labels, see [`canonical_labels`].
    pub labels: Box<str>,
    /// [`crate::intern::key_hash`] of (metric, labels).
    hash: u64,
    /// Lateness this metric is allowed beyond the pipeline's
    /// `allowed_lateness` (`pipeline.lateness` overrides for slow
    /// collectors; 0 for most), in ms. Kept with the shared key so series
    /// need no byte for it.
    extra_lateness_ms: i64,
}

impl SeriesKey {
    /// The key (metric, canonical labels) with its hash, allowed the
    /// pipeline's lateness.
    pub fn new(metric: &str, labels: &str) -> Self {
        Self::with_lateness(metric, labels, 0)
    }

    /// The key of a metric allowed `extra_lateness_ms` beyond the
    /// pipeline's lateness (see [`crate::config::LatenessOverride`]).
    pub fn with_lateness(metric: &str, labels: &str, extra_lateness_ms: i64) -> Self {
        SeriesKey {
            metric: metric.into(),
            labels: labels.into(),
            hash: crate::intern::key_hash(metric, labels),
            extra_lateness_ms: extra_lateness_ms.max(0),
        }
    }

    /// Lateness allowed beyond the pipeline's, ms (0 for most metrics).
    #[inline]
    pub fn extra_lateness_ms(&self) -> i64 {
        self.extra_lateness_ms
    }

    /// [`crate::intern::key_hash`] of (metric, labels).
    #[inline]
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

/// Identity of one series: (tenant, agent, metric, labels). Two shared
/// pointers (16 bytes), so closing a window allocates nothing and a
/// million series do not hold a million copies of their metric names. The
/// [`SeriesId`] is computed when asked for, not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesMeta {
    agent: Arc<AgentKey>,
    key: Arc<SeriesKey>,
}

/// Serde form of [`SeriesMeta`]: the four strings.
#[derive(Serialize, Deserialize)]
struct SeriesMetaRepr {
    tenant: String,
    agent: String,
    metric: String,
    labels: String,
}

impl Serialize for SeriesMeta {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SeriesMetaRepr {
            tenant: self.tenant().to_string(),
            agent: self.agent().to_string(),
            metric: self.metric().to_string(),
            labels: self.labels().to_string(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SeriesMeta {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = SeriesMetaRepr::deserialize(d)?;
        Ok(SeriesMeta::new(&r.tenant, &r.agent, &r.metric, &r.labels))
    }
}

impl SeriesMeta {
    /// Builds the metadata of a series (allocates; the pipeline shares
    /// keys between series instead).
    pub fn new(tenant: &str, agent: &str, metric: &str, labels: &str) -> Self {
        SeriesMeta {
            agent: Arc::new(AgentKey {
                tenant: tenant.into(),
                agent: agent.into(),
            }),
            key: Arc::new(SeriesKey::new(metric, labels)),
        }
    }

    /// Builds the metadata from shared parts.
    pub(crate) fn from_shared(agent: Arc<AgentKey>, key: Arc<SeriesKey>) -> Self {
        SeriesMeta { agent, key }
    }

    /// Stable hash of the key, see [`SeriesId::of`].
    pub fn id(&self) -> SeriesId {
        SeriesId::of(self.tenant(), self.agent(), self.metric(), self.labels())
    }

    /// Tenant id.
    #[inline]
    pub fn tenant(&self) -> &str {
        &self.agent.tenant
    }

    /// Agent id.
    #[inline]
    pub fn agent(&self) -> &str {
        &self.agent.agent
    }

    /// Metric name.
    #[inline]
    pub fn metric(&self) -> &str {
        &self.key.metric
    }

    /// Canonical labels, see [`canonical_labels`].
    #[inline]
    pub fn labels(&self) -> &str {
        &self.key.labels
    }

    /// The shared tenant and agent.
    pub fn agent_key(&self) -> &Arc<AgentKey> {
        &self.agent
    }

    /// The shared metric and labels.
    pub fn key(&self) -> &Arc<SeriesKey> {
        &self.key
    }

    /// Orders series by (tenant, agent, metric, labels), bytewise. Series
    /// that share an interned agent or series key are settled by one
    /// pointer comparison; only keys in separate allocations are compared
    /// byte by byte (equal strings in them still compare equal).
    pub fn cmp_names(&self, other: &SeriesMeta) -> std::cmp::Ordering {
        use std::cmp::Ordering::Equal;
        let agent = if Arc::ptr_eq(&self.agent, &other.agent) {
            Equal
        } else {
            (self.tenant(), self.agent()).cmp(&(other.tenant(), other.agent()))
        };
        agent.then_with(|| {
            if Arc::ptr_eq(&self.key, &other.key) {
                Equal
            } else {
                (self.metric(), self.labels()).cmp(&(other.metric(), other.labels()))
            }
        })
    }

    /// Value of one label in the canonical label string, if present.
    pub fn label(&self, key: &str) -> Option<String> {
        parse_canonical_labels(self.labels())
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// Writes labels in canonical form into `out`: `k1=v1,k2=v2`, sorted by key
/// (the caller guarantees order), with `\`, `,` and `=` in values escaped by
/// a backslash. The empty label set is the empty string.
pub fn canonical_labels<'a>(
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    out: &mut String,
) {
    out.clear();
    for (i, (k, v)) in labels.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push('=');
        for c in v.chars() {
            if matches!(c, '\\' | ',' | '=') {
                out.push('\\');
            }
            out.push(c);
        }
    }
}

/// Whether `canon` is the [`canonical_labels`] string of `labels`,
/// without building it (the lookup of an agent's known series).
pub fn is_canonical_of<'a>(
    canon: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> bool {
    let mut rest = canon.as_bytes();
    // Takes `b` off the front of `rest`.
    fn eat(rest: &mut &[u8], b: u8) -> bool {
        match rest.split_first() {
            Some((&x, r)) if x == b => {
                *rest = r;
                true
            }
            _ => false,
        }
    }
    for (i, (k, v)) in labels.into_iter().enumerate() {
        if i > 0 && !eat(&mut rest, b',') {
            return false;
        }
        match rest.strip_prefix(k.as_bytes()) {
            Some(r) => rest = r,
            None => return false,
        }
        if !eat(&mut rest, b'=') {
            return false;
        }
        // The escaped characters are ASCII, so bytes compare as chars do.
        for &c in v.as_bytes() {
            if matches!(c, b'\\' | b',' | b'=') && !eat(&mut rest, b'\\') {
                return false;
            }
            if !eat(&mut rest, c) {
                return false;
            }
        }
    }
    rest.is_empty()
}

/// Parses a canonical label string back into (key, value) pairs.
pub fn parse_canonical_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if s.is_empty() {
        return out;
    }
    let mut key = String::new();
    let mut val = String::new();
    let mut in_val = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if in_val {
                        val.push(n)
                    } else {
                        key.push(n)
                    }
                }
            }
            '=' if !in_val => in_val = true,
            ',' => {
                out.push((std::mem::take(&mut key), std::mem::take(&mut val)));
                in_val = false;
            }
            c => {
                if in_val {
                    val.push(c)
                } else {
                    key.push(c)
                }
            }
        }
    }
    out.push((key, val));
    out
}

/// Serde for f64 fields that may hold ±inf (a sum of large finite values
/// can overflow): finite values as numbers, others as the strings `inf`,
/// `-inf`, `NaN`, so JSON checkpoints round-trip.
pub mod any_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises one f64.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Str(String),
    }

    /// Deserialises one f64.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Str(s) => match s.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "NaN" => Ok(f64::NAN),
                other => Err(serde::de::Error::custom(format!("not a number: {other:?}"))),
            },
        }
    }
}

/// An optional timestamp (ms since epoch) in 8 bytes instead of 16:
/// `i64::MIN` stands for "none" (never a valid timestamp, see
/// [`crate::pipeline::VALID_TS`]). Serialises as `Option<i64>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OptMs(i64);

impl OptMs {
    /// No timestamp.
    pub const NONE: OptMs = OptMs(i64::MIN);

    /// The timestamp, if any.
    #[inline]
    pub fn get(self) -> Option<i64> {
        (self.0 != i64::MIN).then_some(self.0)
    }

    /// Whether a timestamp is held.
    #[inline]
    pub fn is_some(self) -> bool {
        self.0 != i64::MIN
    }

    /// Whether no timestamp is held.
    #[inline]
    pub fn is_none(self) -> bool {
        self.0 == i64::MIN
    }
}

impl Default for OptMs {
    fn default() -> Self {
        OptMs::NONE
    }
}

impl From<Option<i64>> for OptMs {
    /// `Some(i64::MIN)` becomes none: the pipeline never produces it.
    #[inline]
    fn from(v: Option<i64>) -> Self {
        OptMs(v.unwrap_or(i64::MIN))
    }
}

impl From<i64> for OptMs {
    #[inline]
    fn from(v: i64) -> Self {
        OptMs(v)
    }
}

impl Serialize for OptMs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> Deserialize<'de> for OptMs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<i64>::deserialize(d).map(OptMs::from)
    }
}

/// The aggregates of one window. The pipeline's windows sum exactly
/// ([`crate::exact`]): `sum` is the exact sum of the values and `mean` the
/// exact sum divided by `count`, each rounded once to the nearest `f64`,
/// so they do not depend on arrival order, and the threshold detector
/// compares the very `mean` that is stored.
///
/// [`Agg::new`] and [`Agg::push`] build one naively (test fixtures,
/// benches): exact only while every partial sum is exact in `f64`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Agg {
    /// Number of points merged.
    pub count: u64,
    /// Sum of values.
    #[serde(with = "any_f64")]
    pub sum: f64,
    /// Smallest value.
    #[serde(with = "any_f64")]
    pub min: f64,
    /// Largest value.
    #[serde(with = "any_f64")]
    pub max: f64,
    /// Value of the point with the greatest timestamp (on a tie, the one
    /// that arrived last).
    #[serde(with = "any_f64")]
    pub last: f64,
    /// Timestamp of `last`.
    pub last_ts_ms: i64,
    /// Exact mean (sum / count, rounded once); what rules on `mean` see.
    #[serde(with = "any_f64")]
    pub mean: f64,
}

impl Agg {
    /// An aggregate holding one point.
    #[inline]
    pub fn new(ts_ms: i64, value: f64) -> Self {
        Agg {
            count: 1,
            sum: value,
            min: value,
            max: value,
            last: value,
            last_ts_ms: ts_ms,
            mean: value,
        }
    }

    /// Merges one point (naively, see the type's docs).
    #[inline]
    pub fn push(&mut self, ts_ms: i64, value: f64) {
        self.count += 1;
        self.sum += value;
        if value < self.min {
            self.min = value;
        }
        if value > self.max {
            self.max = value;
        }
        if ts_ms >= self.last_ts_ms {
            self.last = value;
            self.last_ts_ms = ts_ms;
        }
        self.mean = self.sum / self.count as f64;
    }

    /// Arithmetic mean (the `mean` field).
    #[inline]
    pub fn mean(&self) -> f64 {
        self.mean
    }
}

/// Which aggregate of a window a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateKind {
    /// Number of points.
    Count,
    /// Sum of values.
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Mean value.
    Mean,
    /// Latest value.
    Last,
}

impl AggregateKind {
    /// Reads this aggregate from a window.
    pub fn of(self, a: &Agg) -> f64 {
        match self {
            AggregateKind::Count => a.count as f64,
            AggregateKind::Sum => a.sum,
            AggregateKind::Min => a.min,
            AggregateKind::Max => a.max,
            AggregateKind::Mean => a.mean(),
            AggregateKind::Last => a.last,
        }
    }

    /// Lower-case name, as in config and output.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateKind::Count => "count",
            AggregateKind::Sum => "sum",
            AggregateKind::Min => "min",
            AggregateKind::Max => "max",
            AggregateKind::Mean => "mean",
            AggregateKind::Last => "last",
        }
    }
}

/// A closed tumbling window of one series, `[start_ms, end_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowAggregate {
    /// The series.
    pub series: SeriesMeta,
    /// Window start (inclusive), ms since epoch, aligned to the window size.
    pub start_ms: i64,
    /// Window end (exclusive).
    pub end_ms: i64,
    /// The aggregates.
    pub agg: Agg,
}

/// Severity of an alert rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Informational.
    Info,
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Lifecycle state carried by an alert event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The incident started.
    Firing,
    /// The incident ended.
    Resolved,
}

impl AlertStatus {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// The detector family that raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// Fixed threshold with `for` and hysteresis.
    Threshold,
    /// Predictive trend (time until a limit).
    Trend,
    /// Adaptive baseline deviation.
    Anomaly,
    /// Agent stopped sending.
    Offline,
    /// Agent sends only input that is refused (alive, but broken).
    InvalidInput,
    /// A status report shows a breach (patch SLA, antivirus, backup,
    /// agent version).
    Status,
    /// Security events show a threat (brute force, a remote session
    /// outside business hours).
    Security,
}

impl DetectorKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::Threshold => "threshold",
            DetectorKind::Trend => "trend",
            DetectorKind::Anomaly => "anomaly",
            DetectorKind::Offline => "offline",
            DetectorKind::InvalidInput => "invalid_input",
            DetectorKind::Status => "status",
            DetectorKind::Security => "security",
        }
    }
}

/// Why an incident ended (set on `resolved` events only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveReason {
    /// The condition no longer holds: a threshold is back past `clear`, a
    /// trend is no longer predicted, an agent sends (valid input) again.
    Cleared,
    /// A trend prediction came true: the series reached the limit.
    LimitReached,
    /// The rule that raised the incident was edited (same name, another
    /// definition); the new definition re-evaluates the subject.
    RuleChanged,
    /// The rule that raised the incident is no longer in the rules file.
    RuleRemoved,
    /// The subject stopped reporting and its state was evicted after the
    /// state TTL (`pipeline.state_ttl`): a series with no point, or an
    /// agent with no batch, for that long.
    Stale,
}

impl ResolveReason {
    /// Lower-case name, as in the alert JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolveReason::Cleared => "cleared",
            ResolveReason::LimitReached => "limit_reached",
            ResolveReason::RuleChanged => "rule_changed",
            ResolveReason::RuleRemoved => "rule_removed",
            ResolveReason::Stale => "stale",
        }
    }
}

/// One alert event: an incident produces exactly one `firing` and (when it
/// ends) one `resolved` event with the same `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Deterministic incident id: hex xxh3-128 of fingerprint and
    /// `started_at_ms`, so a replay yields the same id.
    pub id: String,
    /// Hex xxh3-64 of rule, tenant, agent, metric and labels.
    pub fingerprint: String,
    /// Rule name.
    pub rule: String,
    /// Detector family.
    pub kind: DetectorKind,
    /// Severity from the rule.
    pub severity: Severity,
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    /// True when a maintenance window suppressed notification.
    pub suppressed: bool,
    /// Tenant id.
    pub tenant: String,
    /// Agent id.
    pub agent: String,
    /// Last known hostname of the agent, if it reported one.
    pub hostname: Option<String>,
    /// Metric name (none for offline alerts).
    pub metric: Option<String>,
    /// Canonical labels of the series (empty for offline alerts).
    pub labels: String,
    /// Observed value that decided this event.
    pub value: Option<f64>,
    /// Rule threshold (or the limit a trend is heading for).
    pub threshold: Option<f64>,
    /// For trend alerts: when the limit is predicted to be reached.
    pub predicted_at_ms: Option<i64>,
    /// Start of the window that decided this event.
    pub window_start_ms: Option<i64>,
    /// End of the window that decided this event.
    pub window_end_ms: Option<i64>,
    /// When the incident started (event time of its first bad window; for
    /// offline, the agent's last batch plus `after`; for invalid input, the
    /// processing time of the first refused batch of the run). Always
    /// derived from checkpointed state, never from the time of the tick
    /// that noticed it, so a restart or replay yields the same id.
    pub started_at_ms: i64,
    /// When the incident ended (set on `resolved`).
    pub resolved_at_ms: Option<i64>,
    /// Why the incident ended (set on `resolved`, `None` on `firing`).
    #[serde(default)]
    pub resolve_reason: Option<ResolveReason>,
    /// For threshold `resolved` events: how often the incident flapped
    /// (went back past `clear` for fewer than the rule's `clear_for`
    /// windows) while open. `None` on `firing` and for other detectors.
    #[serde(default)]
    pub flaps: Option<u32>,
    /// Time of this event (`started_at_ms` or `resolved_at_ms`).
    pub event_time_ms: i64,
    /// Human-readable summary.
    pub summary: String,
}

/// Hex xxh3-64 fingerprint of an alert's identity.
pub fn fingerprint(rule: &str, tenant: &str, agent: &str, metric: &str, labels: &str) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [rule, tenant, agent, metric, labels] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    format!("{:016x}", h.digest())
}

/// Deterministic incident id from fingerprint and start time.
pub fn incident_id(fingerprint: &str, started_at_ms: i64) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(fingerprint.as_bytes());
    h.update(&started_at_ms.to_le_bytes());
    let mut s = String::with_capacity(32);
    let _ = write!(s, "{:032x}", h.digest128());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cmp_names` is the bytewise order of (tenant, agent, metric,
    /// labels), whether the keys are shared or separate allocations.
    #[test]
    fn series_order_by_names_with_shared_and_separate_keys() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let a = SeriesMeta::new("t", "a1", "cpu", "x=1");
        let same = SeriesMeta::new("t", "a1", "cpu", "x=1");
        assert!(!Arc::ptr_eq(a.key(), same.key()));
        assert_eq!(a.cmp_names(&a.clone()), Equal);
        assert_eq!(a.cmp_names(&same), Equal);
        for (other, want) in [
            (SeriesMeta::new("s", "a9", "zz", "z"), Greater),
            (SeriesMeta::new("t", "a2", "aa", ""), Less),
            (SeriesMeta::new("t", "a1", "cpu", "x=2"), Less),
            (SeriesMeta::new("t", "a1", "cpt", "x=9"), Greater),
        ] {
            assert_eq!(a.cmp_names(&other), want, "{other:?}");
            assert_eq!(other.cmp_names(&a), want.reverse(), "{other:?}");
        }
        // A shared agent key, separate series keys: the series decide.
        let b = SeriesMeta {
            agent: a.agent_key().clone(),
            key: Arc::new(SeriesKey::new("cpu", "x=0")),
        };
        assert_eq!(a.cmp_names(&b), Greater);
    }

    #[test]
    fn canonical_labels_round_trip_with_escapes() {
        let mut s = String::new();
        canonical_labels([("iface", "eth0"), ("path", "a,b=c\\d")], &mut s);
        assert_eq!(s, "iface=eth0,path=a\\,b\\=c\\\\d");
        let back = parse_canonical_labels(&s);
        assert_eq!(
            back,
            vec![
                ("iface".into(), "eth0".into()),
                ("path".into(), "a,b=c\\d".into())
            ]
        );
        canonical_labels(std::iter::empty(), &mut s);
        assert_eq!(s, "");
        assert!(parse_canonical_labels("").is_empty());
    }

    proptest::proptest! {
        /// `is_canonical_of` says yes exactly when the canonical strings
        /// are equal.
        #[test]
        fn is_canonical_of_equals_building_the_string(
            a in proptest::collection::vec(("[a-c=,\\\\]{0,3}", "[a-c=,\\\\é]{0,3}"), 0..3),
            b in proptest::collection::vec(("[a-c=,\\\\]{0,3}", "[a-c=,\\\\é]{0,3}"), 0..3),
        ) {
            let (mut ca, mut cb) = (String::new(), String::new());
            canonical_labels(a.iter().map(|(k, v)| (k.as_str(), v.as_str())), &mut ca);
            canonical_labels(b.iter().map(|(k, v)| (k.as_str(), v.as_str())), &mut cb);
            proptest::prop_assert!(is_canonical_of(&ca, a.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
            proptest::prop_assert_eq!(
                is_canonical_of(&ca, b.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                ca == cb
            );
        }
    }

    #[test]
    fn agg_tracks_last_by_timestamp() {
        let mut a = Agg::new(2000, 5.0);
        a.push(1000, 9.0);
        a.push(3000, 1.0);
        assert_eq!(
            (a.count, a.sum, a.min, a.max, a.last, a.last_ts_ms),
            (3, 15.0, 1.0, 9.0, 1.0, 3000)
        );
        assert_eq!(a.mean(), 5.0);
    }

    #[test]
    fn ids_are_deterministic() {
        let f = fingerprint("r", "t", "a", "m", "");
        assert_eq!(f, fingerprint("r", "t", "a", "m", ""));
        assert_ne!(f, fingerprint("r", "t", "a", "m", "x=y"));
        assert_eq!(incident_id(&f, 1), incident_id(&f, 1));
        assert_eq!(incident_id(&f, 1).len(), 32);
    }
}

/// One status report as the `status/` dataset stores it: the report as
/// the agent sent it (validated, not in the future) and whose it is.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    /// Tenant id.
    pub tenant: String,
    /// Agent id.
    pub agent: String,
    /// The agent's hostname, when known.
    pub hostname: Option<String>,
    /// The report.
    pub report: vigil_proto::v1::StatusReport,
}

/// One security event as the `security_events/` dataset stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityEventRow {
    /// Tenant id.
    pub tenant: String,
    /// Agent id.
    pub agent: String,
    /// The agent's hostname, when known.
    pub hostname: Option<String>,
    /// The event.
    pub event: vigil_proto::v1::SecurityEvent,
}
