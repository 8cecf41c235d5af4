//! Threshold detector: `aggregate op value` for `for` consecutive windows
//! fires; the incident resolves once `aggregate op clear` has failed to
//! hold for `clear_for` consecutive windows (1 by default: the first clear
//! window resolves). A firing incident whose value goes back past `clear`
//! but not for `clear_for` windows has *flapped*: it stays open and counts
//! the flap, and its `resolved` event carries the count (`flaps`), so a
//! flapping series is one incident, not many.
//!
//! Per (rule, series) state is five scalars. Consecutive means the
//! previous window's end equals the next window's start: a gap of missing
//! windows restarts the run (but does not resolve a firing incident; the
//! next window decides).
//!
//! The family (see [`super::registry`]) owns the `[[threshold]]` rules
//! ([`ThresholdRule`], read by `parse`) and keeps its state sparse: an
//! idle (series, rule) (no breach run, not firing), which almost every one
//! is at any time, holds nothing; the others sit in a map keyed by
//! (series uid, rule index) ([`ThresholdStore`]), and each series' slot is
//! 16 bits saying which of its rules have an entry ([`ActiveBits`]).

use std::collections::BTreeMap;
use std::fmt;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use super::lifecycle::{fmt_value, render, series_subject, Subject};
use super::registry::{
    retire_reason, ConstDefault, FamilyRule, RuleSet, SeriesCx, SeriesFamily, SeriesRule,
};
use super::sorted_map;
use crate::model::{
    AggregateKind, AlertEvent, AlertStatus, DetectorKind, OptMs, ResolveReason, SeriesMeta,
    Severity, WindowAggregate,
};
use crate::rules::labels_match;
use crate::rules::read::{Cx, Val};

/// State of one threshold rule on one series.
/// 24 bytes: optional times use [`OptMs`], and the start of the current
/// run is not stored: a run is `run` contiguous windows ending at
/// `last_end_ms`, so it starts `run` window sizes before that. The two
/// `u16` counters of the clear run and the flaps sit in what was padding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdState {
    /// Breaching windows in the current run (contiguous, ending at
    /// `last_end_ms`).
    pub run: u32,
    /// While firing: contiguous windows past `clear` ending at
    /// `last_end_ms` (saturates; `clear_for` is at most `u16::MAX`).
    #[serde(default)]
    pub clear_run: u16,
    /// While firing: clear runs shorter than `clear_for` windows, ended by
    /// a window not past `clear` (saturates).
    #[serde(default)]
    pub flaps: u16,
    /// End of the last window seen, if any.
    pub last_end_ms: OptMs,
    /// `started_at_ms` of the firing incident, if any.
    pub firing_since: OptMs,
}

impl ThresholdState {
    /// No run in progress and not firing: the state carries nothing (the
    /// engine then does not store it).
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.run == 0 && self.firing_since.is_none()
    }

    /// The state after feeding one window to an idle one (see
    /// [`ThresholdState::on_window`]), or `None` when it stays idle. A
    /// window that does not breach leaves an idle state idle and raises
    /// nothing, so that case is decided without building one.
    #[inline]
    pub fn from_idle(
        rule: &ThresholdRule,
        rules: &RuleSet,
        w: &WindowAggregate,
        out: &mut Vec<AlertEvent>,
    ) -> Option<Self> {
        let v = rule.aggregate.of(&w.agg);
        if !(v.is_finite() && rule.op.holds(v, rule.value)) {
            return None;
        }
        let mut st = ThresholdState::default();
        st.on_window(rule, rules, w, out);
        (!st.is_idle()).then_some(st)
    }

    /// Feeds one window; appends a `firing` or `resolved` event on a
    /// transition.
    pub fn on_window(
        &mut self,
        rule: &ThresholdRule,
        rules: &RuleSet,
        w: &WindowAggregate,
        out: &mut Vec<AlertEvent>,
    ) {
        if self.last_end_ms.get().is_some_and(|e| w.start_ms < e) {
            // Out of order or repeated window: the contract says this does
            // not happen; ignore it rather than corrupt the run.
            return;
        }
        let v = rule.aggregate.of(&w.agg);
        if !v.is_finite() {
            return;
        }
        let contiguous = self.last_end_ms.get() == Some(w.start_ms);
        self.last_end_ms = w.end_ms.into();
        let breach = rule.op.holds(v, rule.value);
        if breach {
            if !contiguous {
                self.run = 0;
            }
            self.run = self.run.saturating_add(1);
        } else {
            self.run = 0;
        }
        match self.firing_since.get() {
            None if breach && self.run >= rule.for_windows => {
                // The run's windows are contiguous and of one size.
                let size = w.end_ms.saturating_sub(w.start_ms);
                let started = w
                    .start_ms
                    .saturating_sub(size.saturating_mul(i64::from(self.run - 1)));
                self.firing_since = started.into();
                self.clear_run = 0;
                self.flaps = 0;
                out.push(event(rule, rules, w, v, AlertStatus::Firing, started, 0));
            }
            Some(started) => {
                if !rule.op.holds(v, rule.clear) {
                    // Past `clear`: one more window of the clear run (a
                    // gap restarts it, as it restarts a breach run).
                    self.clear_run = if contiguous {
                        self.clear_run.saturating_add(1)
                    } else {
                        1
                    };
                    if u32::from(self.clear_run) >= rule.clear_for {
                        let flaps = self.flaps;
                        self.firing_since = OptMs::NONE;
                        self.clear_run = 0;
                        self.flaps = 0;
                        out.push(event(
                            rule,
                            rules,
                            w,
                            v,
                            AlertStatus::Resolved,
                            started,
                            flaps,
                        ));
                    }
                } else if self.clear_run > 0 {
                    // Went back past `clear` but did not stay there for
                    // `clear_for` windows: a flap, held in this incident.
                    self.flaps = self.flaps.saturating_add(1);
                    self.clear_run = 0;
                }
            }
            _ => {}
        }
    }
}

fn event(
    rule: &ThresholdRule,
    rules: &RuleSet,
    w: &WindowAggregate,
    v: f64,
    status: AlertStatus,
    started: i64,
    flaps: u16,
) -> AlertEvent {
    let s = &w.series;
    let subject = Subject {
        rule: &rule.name,
        kind: DetectorKind::Threshold,
        severity: rule.severity,
        tenant: s.tenant(),
        agent: s.agent(),
        metric: Some(s.metric()),
        labels: s.labels(),
    };
    let series = subject.series_name();
    let summary = match (&rule.summary, status) {
        (Some(t), AlertStatus::Firing) => render(
            t,
            &[
                ("rule", &rule.name),
                ("tenant", s.tenant()),
                ("agent", s.agent()),
                ("metric", s.metric()),
                ("labels", s.labels()),
                ("series", &series),
                ("aggregate", rule.aggregate.as_str()),
                ("op", rule.op.as_str()),
                ("value", &fmt_value(v)),
                ("threshold", &fmt_value(rule.value)),
                ("for", &rule.for_windows.to_string()),
            ],
        ),
        (None, AlertStatus::Firing) => format!(
            "{series} {} {} {} {} on {} for {} window(s)",
            rule.aggregate.as_str(),
            fmt_value(v),
            rule.op,
            fmt_value(rule.value),
            s.agent(),
            rule.for_windows
        ),
        (_, AlertStatus::Resolved) => format!(
            "{series} {} {} on {} is back past {} (resolved)",
            rule.aggregate.as_str(),
            fmt_value(v),
            s.agent(),
            fmt_value(rule.clear)
        ),
    };
    let mut e = subject.event(rules, status, started, w.end_ms, summary);
    e.value = Some(v);
    e.threshold = Some(rule.value);
    e.window_start_ms = Some(w.start_ms);
    e.window_end_ms = Some(w.end_ms);
    if status == AlertStatus::Resolved {
        e.flaps = Some(u32::from(flaps));
    }
    e
}

/// A fixed-threshold rule (`[[threshold]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRule {
    /// Unique rule name; part of the alert fingerprint.
    pub name: String,
    /// Metric the rule watches.
    pub metric: String,
    /// Labels the series must carry with exactly these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Window aggregate compared against `value`.
    pub aggregate: AggregateKind,
    /// Comparison: the window breaches when `aggregate op value`.
    pub op: CompareOp,
    /// Threshold value.
    pub value: f64,
    /// Consecutive breaching windows needed to fire (>= 1).
    #[serde(rename = "for")]
    pub for_windows: u32,
    /// Hysteresis: a firing alert resolves once `aggregate op clear` no
    /// longer holds. Equal to `value` when not given.
    pub clear: f64,
    /// Consecutive windows past `clear` needed to resolve a firing
    /// incident (1..=65535, default 1). Shorter excursions past `clear`
    /// keep the incident open and count as flaps.
    #[serde(default = "default_clear_for")]
    pub clear_for: u32,
    /// Severity of the alert.
    pub severity: Severity,
    /// Optional summary template (`{metric}`, `{value}`, ... see
    /// [`THRESHOLD_PLACEHOLDERS`]).
    #[serde(default)]
    pub summary: Option<String>,
}

impl FamilyRule for ThresholdRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn same_definition(&self, other: &ThresholdRule) -> bool {
        self.metric == other.metric
            && self.labels == other.labels
            && self.aggregate == other.aggregate
            && self.op == other.op
            && self.value.to_bits() == other.value.to_bits()
            && self.for_windows == other.for_windows
            && self.clear.to_bits() == other.clear.to_bits()
            && self.clear_for == other.clear_for
    }
}

/// Default `for` of a threshold rule (windows).
pub const DEFAULT_FOR: u32 = 1;

/// `clear_for` of a threshold rule that does not give one: the first
/// window past `clear` resolves.
pub const DEFAULT_CLEAR_FOR: u32 = 1;

pub(crate) fn default_clear_for() -> u32 {
    DEFAULT_CLEAR_FOR
}
/// Placeholders a threshold `summary` template may use.
pub const THRESHOLD_PLACEHOLDERS: &[&str] = &[
    "rule",
    "tenant",
    "agent",
    "metric",
    "labels",
    "series",
    "aggregate",
    "op",
    "value",
    "threshold",
    "for",
];

/// A comparison operator of a threshold rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareOp {
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
}

impl CompareOp {
    /// Parses `>`, `>=`, `<` or `<=`.
    pub fn parse(s: &str) -> Option<CompareOp> {
        match s {
            ">" => Some(CompareOp::Gt),
            ">=" => Some(CompareOp::Ge),
            "<" => Some(CompareOp::Lt),
            "<=" => Some(CompareOp::Le),
            _ => None,
        }
    }

    /// Applies the comparison `lhs op rhs` (false when either is NaN).
    #[inline]
    pub fn holds(self, lhs: f64, rhs: f64) -> bool {
        match self {
            CompareOp::Gt => lhs > rhs,
            CompareOp::Ge => lhs >= rhs,
            CompareOp::Lt => lhs < rhs,
            CompareOp::Le => lhs <= rhs,
        }
    }

    /// True for `>` and `>=` (the bad side is above the value).
    pub fn is_upper(self) -> bool {
        matches!(self, CompareOp::Gt | CompareOp::Ge)
    }

    /// The operator as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
        }
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SeriesRule for ThresholdRule {
    fn watches(&self, s: &SeriesMeta) -> bool {
        self.metric == s.metric() && labels_match(&self.labels, s.labels())
    }
}

/// Reads one `[[threshold]]` rule at `path`, reporting every problem
/// into `cx`.
pub(crate) fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<ThresholdRule> {
    const KEYS: &[&str] = &[
        "name",
        "metric",
        "labels",
        "aggregate",
        "op",
        "value",
        "for",
        "clear",
        "clear_for",
        "severity",
        "summary",
    ];
    let t = cx.fields(path, val, KEYS)?;
    let span = val.span();
    let name = cx.name(t, &span, path);
    let metric = cx.string(t, &span, path, "metric", true);
    let labels = cx.labels(t, path);
    let aggregate = cx.aggregate(t, &span, path, None);
    let op = match t.get("op") {
        None => {
            cx.missing(span.clone(), path, "op");
            None
        }
        Some(v) => {
            let o = v.get_ref().as_str().and_then(CompareOp::parse);
            if o.is_none() {
                cx.problem(
                    v.span(),
                    format!("{path}.op"),
                    "expected one of: \">\", \">=\", \"<\", \"<=\"",
                );
            }
            o
        }
    };
    let value = cx.number(t, &span, path, "value", true);
    let for_present = t.contains_key("for");
    let for_windows = cx.integer(t, path, "for", 1);
    let clear = cx.number(t, &span, path, "clear", false);
    let clear_for_present = t.contains_key("clear_for");
    let clear_for = cx.integer(t, path, "clear_for", 1);
    if let (Some(c), Some(v)) = (clear_for, t.get("clear_for")) {
        if c > u32::from(u16::MAX) {
            cx.problem(
                v.span(),
                format!("{path}.clear_for"),
                format!("must be <= {}", u16::MAX),
            );
            return None;
        }
    }
    let severity = cx.severity(t, &span, path);
    let summary = cx.summary(t, &span, path, THRESHOLD_PLACEHOLDERS);

    if let (Some(op), Some((v, _)), Some((c, cspan))) = (op, value.clone(), clear.clone()) {
        let wrong = if op.is_upper() { c > v } else { c < v };
        if wrong {
            let side = if op.is_upper() { "<=" } else { ">=" };
            cx.problem(
                cspan,
                format!("{path}.clear"),
                format!(
                    "must be on the safe side of value: clear {side} {v} for op {op:?}",
                    op = op.as_str()
                ),
            );
            return None;
        }
    }
    let for_windows = match (for_present, for_windows) {
        (false, _) => DEFAULT_FOR,
        (true, Some(f)) => f,
        (true, None) => return None,
    };
    let clear_for = match (clear_for_present, clear_for) {
        (false, _) => default_clear_for(),
        (true, Some(c)) => c,
        (true, None) => return None,
    };
    let value = value?.0;
    Some(ThresholdRule {
        name: name?,
        metric: metric?,
        labels: labels?,
        aggregate: aggregate?,
        op: op?,
        value,
        for_windows,
        clear: clear.map_or(value, |c| c.0),
        clear_for,
        severity: severity?,
        summary: summary?,
    })
}

/// The threshold family (see the module docs).
pub struct Threshold;

/// A series' threshold slot: bit `k` says that the `k`-th threshold rule
/// of its watch set has state in the [`ThresholdStore`]. The top bit also
/// stands for every rule after it (the map then decides).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActiveBits(u16);

impl ConstDefault for ActiveBits {
    const DEFAULT: Self = ActiveBits(0);
}

/// Bit of [`ActiveBits`] for the `k`-th threshold rule.
#[inline]
fn active_bit(k: usize) -> u16 {
    1 << k.min(15)
}

/// Threshold state of a partition, only where not idle.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThresholdStore {
    /// State by (series uid, rule index).
    #[serde(with = "sorted_map")]
    states: HashMap<(u64, u16), ThresholdState>,
}

impl ThresholdStore {
    /// The store of a checkpoint written before the registry (format 5).
    pub(crate) fn from_states(states: HashMap<(u64, u16), ThresholdState>) -> Self {
        ThresholdStore { states }
    }
}

/// The `resolved` event, for `reason`, of the incident a series'
/// threshold state holds (none unless firing): at the end of the last
/// window the rule saw.
fn close(
    meta: &SeriesMeta,
    rule: &ThresholdRule,
    st: &ThresholdState,
    rules: &RuleSet,
    reason: ResolveReason,
) -> Option<AlertEvent> {
    let started = st.firing_since.get()?;
    Some(
        series_subject(meta, &rule.name, DetectorKind::Threshold, rule.severity).retired(
            rules,
            started,
            st.last_end_ms.get().unwrap_or(started),
            reason,
            Some(rule.value),
        ),
    )
}

impl SeriesFamily for Threshold {
    type Rule = ThresholdRule;
    type Store = ThresholdStore;
    type Slot = ActiveBits;

    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<ThresholdRule> {
        parse(cx, path, val)
    }

    #[inline]
    fn on_window(
        store: &mut ThresholdStore,
        slot: &mut ActiveBits,
        watch: &[u16],
        fam: &[ThresholdRule],
        rules: &RuleSet,
        uid: u64,
        w: &WindowAggregate,
        out: &mut Vec<AlertEvent>,
    ) {
        for (k, &r) in watch.iter().enumerate() {
            let rule = &fam[r as usize];
            let bit = active_bit(k);
            let key = (uid, r);
            // No bit: idle. A set bit may be shared (rules 15 and up), so
            // the map decides.
            let stored = if slot.0 & bit == 0 {
                None
            } else {
                store.states.get_mut(&key)
            };
            match stored {
                Some(st) => {
                    st.on_window(rule, rules, w, out);
                    if st.is_idle() {
                        store.states.remove(&key);
                        if k < 15 {
                            slot.0 &= !bit;
                        }
                    }
                }
                None => {
                    if let Some(st) = ThresholdState::from_idle(rule, rules, w, out) {
                        store.states.insert(key, st);
                        slot.0 |= bit;
                    }
                }
            }
        }
    }

    fn evict(
        store: &mut ThresholdStore,
        slot: ActiveBits,
        watch: &[u16],
        fam: &[ThresholdRule],
        rules: &RuleSet,
        s: SeriesCx<'_>,
        out: &mut Vec<AlertEvent>,
    ) {
        for (k, &r) in watch.iter().enumerate() {
            if slot.0 & active_bit(k) == 0 {
                continue;
            }
            let Some(st) = store.states.remove(&(s.uid, r)) else {
                continue;
            };
            if let Some(rule) = fam.get(r as usize) {
                out.extend(close(s.meta, rule, &st, rules, ResolveReason::Stale));
            }
        }
    }

    fn copy(
        from: &ThresholdStore,
        to: &mut ThresholdStore,
        slot: ActiveBits,
        watch: &[u16],
        uid: u64,
    ) -> ActiveBits {
        for (k, &r) in watch.iter().enumerate() {
            if slot.0 & active_bit(k) == 0 {
                continue;
            }
            if let Some(st) = from.states.get(&(uid, r)) {
                to.states.insert((uid, r), st.clone());
            }
        }
        slot
    }

    fn rebind(
        old: &ThresholdStore,
        next: &mut ThresholdStore,
        slot: ActiveBits,
        old_watch: &[u16],
        new_watch: &[u16],
        carry: &[Option<u16>],
        old_rules: &[ThresholdRule],
        fam: &[ThresholdRule],
        rules: &RuleSet,
        s: SeriesCx<'_>,
        retired: &mut Vec<AlertEvent>,
    ) -> ActiveBits {
        // Move the series' non-idle states to the new rule indexes;
        // retire the firing ones of edited or removed rules.
        let mut bits = 0;
        for (k, &r) in old_watch.iter().enumerate() {
            if slot.0 & active_bit(k) == 0 {
                continue;
            }
            let Some(st) = old.states.get(&(s.uid, r)) else {
                continue;
            };
            if let Some(nr) = carry.get(r as usize).copied().flatten() {
                if let Some(nk) = new_watch.iter().position(|x| *x == nr) {
                    next.states.insert((s.uid, nr), st.clone());
                    bits |= active_bit(nk);
                    continue;
                }
            }
            let Some(rule) = old_rules.get(r as usize) else {
                continue;
            };
            if st.firing_since.is_none() {
                continue;
            }
            let reason = retire_reason(&rule.name, fam.iter().map(|n| n.name.as_str()));
            retired.extend(close(s.meta, rule, st, rules, reason));
        }
        ActiveBits(bits)
    }

    fn states(store: &ThresholdStore) -> usize {
        store.states.len()
    }
}
