//! Anomaly detector: a per-series adaptive baseline that fires on a
//! sustained deviation, where one fixed threshold does not fit every
//! machine (a database server at 91 % CPU every afternoon is normal; a
//! desktop at 60 % at 3 am is not).
//!
//! # Model
//!
//! Per (rule, series) the baseline is a **seasonal profile**: the period
//! (`period`, default 1 d) is cut into `slots` slots (default 24, i.e.
//! hourly), and each slot keeps the expected value of the windows that
//! start in it (an EWMA, half-life `half_life`, default 3 d) and their
//! **residual variance** around it (an EWMA of the squared residual,
//! half-life `variance_half_life`, default 1 d). Half-lives are in time:
//! a slot is updated by its own windows, once per period. `slots = 1` is
//! a plain (non-seasonal) EWMA mean and variance.
//!
//! Why a profile and not a level plus seasonal offsets (Holt-Winters): the
//! level of such a model lags a diurnal ramp, its offsets need days to
//! learn the lag, and until then the residual swings with the day; a
//! series that is exactly periodic then deviates by more than `k` sigma
//! on the ramps. A profile has no level to lag: from the second period on,
//! a periodic series differs from its slot's value only by its change
//! within the slot (at most `√3` sigma of that slot for a linear ramp).
//! Why a variance per slot: noise differs by hour (a busy host pinned at
//! its clip every afternoon is quieter than on its morning ramp), and one
//! variance for the day made the band at the quiet hours too wide to see
//! a saturation there (measured on the simulated fleet: 101 against 104
//! of 107 saturations caught).
//!
//! A window is judged against `expected ± band`, `band = max(k · sigma,
//! min_deviation)`: the absolute floor keeps a series with a tiny
//! variance (a constant, a quiet disk) from firing on a blip.
//!
//! # Warm-up
//!
//! The rule never fires before it has seen `warmup` windows (default 60)
//! and, with a season (`slots > 1`), one period and one slot since its
//! first window (every slot has had one whole visit). In that first
//! season a slot's value and variance are the running mean of its latest
//! visit's windows and of their squared residuals (not biased towards the
//! first value or 0); then both continue as EWMAs. A slot never visited
//! takes its first window's value and does not judge it. Everything seen
//! in the first season is learnt, incidents included. Rejecting outliers
//! in the first season was tried and dropped: with a handful of windows
//! of a slot the estimate has no scale yet, and a smooth low-noise curve
//! (a noise-free diurnal peak) was then rejected as an outlier forever
//! and fired every day.
//!
//! What the first season learnt is therefore **provisional**, and the
//! slot's next visit checks it. That visit is judged and learnt as usual,
//! and also summarised (its windows' mean and spread); when it ends, a
//! visit whose mean is below the first-season estimate by more than the
//! band of its own spread (`max(k · its sd, min_deviation)`; above it,
//! for a `down` rule) says the estimate was most likely learnt from an
//! incident (a saturation on the first day): the slot takes the visit's
//! mean and variance. Any other visit confirms the estimate. Without the
//! check a first-day saturation stayed in its hour's profile for days
//! (the normal values after it were outliers, which do not move the
//! profile, and it widened the band), and a saturation in the same hour
//! on a later day was not seen. A daily peak that recurs agrees with its
//! estimate and stays learnt. `both` rules have no side to trust and keep
//! the first season's estimate.
//!
//! # Robustness
//!
//! Once warm, a window outside the band (either way, whatever the rule's
//! direction) is an outlier: it does not move its slot's expected value,
//! and it updates the slot's variance with its residual *capped at the
//! band* and at the weight of one window of the whole series, not of the
//! slot. An incident therefore does not become the new normal during its
//! life (a 40-minute saturation widens its slot's sigma by about 8 %),
//! while a permanent change of level widens the band geometrically (at
//! most a factor `k` in sigma per variance half-life of the slot's own
//! windows) until it fits, after which the profile learns the new level:
//! it does not fire forever, but with 24 slots a shift of 10 sigma keeps
//! its incident open for days. Editing the rule (any key but `severity`
//! and `summary`) restarts its baselines.
//!
//! # Incidents
//!
//! A window *deviates* when its residual is beyond the band in the rule's
//! `direction` (`up`, `down` or `both`). `for` consecutive deviating
//! windows fire (the incident starts at the first of them); `clear_for`
//! consecutive windows that do not deviate resolve it. Consecutive means
//! contiguous windows, as in [`super::threshold`]: a gap restarts a run.
//! Alerts carry the observed value (`value`), the band edge it crossed
//! (`threshold`, expected ± band) and, in the summary, the expected
//! value, the band, sigma and the deviation in sigmas.
//!
//! # State
//!
//! Every watched series needs its baseline, but series no anomaly rule
//! watches must cost nothing: the family's [`SeriesFamily::Slot`] is `()`
//! (no byte in any series' handle) and the states sit in a map keyed by
//! (series uid, rule index) ([`AnomalyStore`]), created on a series' first
//! window. One state is 72 bytes plus two `f32` per slot on the heap (192
//! bytes at 24 slots); `f32` keeps 7 significant digits, far below the
//! noise of any metric the rule is useful on. The checkpoint form writes
//! the floats as their bits (exact restore).

use std::collections::BTreeMap;
use std::time::Duration;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use super::lifecycle::{fmt_value, render, series_subject, Subject};
use super::registry::{retire_reason, FamilyRule, RuleSet, SeriesCx, SeriesFamily, SeriesRule};
use super::sorted_map;
use crate::model::{
    AggregateKind, AlertEvent, AlertStatus, DetectorKind, OptMs, ResolveReason, SeriesMeta,
    Severity, WindowAggregate,
};
use crate::rules::labels_match;
use crate::rules::read::{Cx, Val};

/// Default season length.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(24 * 3600);
/// Default number of seasonal slots per period.
pub const DEFAULT_SLOTS: u32 = 24;
/// Most seasonal slots a rule may ask for.
pub const MAX_SLOTS: u32 = 1440;
/// Default half-life of a slot's expected value.
pub const DEFAULT_HALF_LIFE: Duration = Duration::from_secs(3 * 24 * 3600);
/// Default half-life of the residual variance.
pub const DEFAULT_VARIANCE_HALF_LIFE: Duration = Duration::from_secs(24 * 3600);
/// Default width of the band in standard deviations.
pub const DEFAULT_K: f64 = 3.0;
/// Default number of consecutive deviating windows to fire.
pub const DEFAULT_FOR: u32 = 5;
/// Default number of consecutive normal windows to resolve.
pub const DEFAULT_CLEAR_FOR: u32 = 5;
/// Default number of windows seen before a rule may fire.
pub const DEFAULT_WARMUP: u32 = 60;

/// Placeholders an anomaly `summary` template may use.
pub const ANOMALY_PLACEHOLDERS: &[&str] = &[
    "rule",
    "tenant",
    "agent",
    "metric",
    "labels",
    "series",
    "aggregate",
    "value",
    "expected",
    "sigma",
    "deviation",
    "threshold",
    "for",
];

/// Which deviations of an anomaly rule count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deviation {
    /// Above the band only (load, latency, error rates).
    Up,
    /// Below the band only (throughput, free space).
    Down,
    /// Either way.
    #[default]
    Both,
}

impl Deviation {
    /// The name as written in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            Deviation::Up => "up",
            Deviation::Down => "down",
            Deviation::Both => "both",
        }
    }
}

/// An anomaly rule (`[[anomaly]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyRule {
    /// Unique rule name; part of the alert fingerprint.
    pub name: String,
    /// Metric the rule watches.
    pub metric: String,
    /// Labels the series must carry with exactly these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Window aggregate the baseline follows (default `mean`).
    pub aggregate: AggregateKind,
    /// Length of the season (default 1 d).
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Seasonal slots per period (1..=1440, default 24; 1 = no season).
    pub slots: u32,
    /// Half-life of a slot's expected value (in time: a slot is updated
    /// once per window in it, every period).
    #[serde(with = "humantime_serde")]
    pub half_life: Duration,
    /// Half-life of the residual variance.
    #[serde(with = "humantime_serde")]
    pub variance_half_life: Duration,
    /// Width of the band in residual standard deviations.
    pub k: f64,
    /// Absolute floor of the band (in the metric's unit, default 0).
    pub min_deviation: f64,
    /// Which deviations count.
    pub direction: Deviation,
    /// Consecutive deviating windows needed to fire (>= 1).
    #[serde(rename = "for")]
    pub for_windows: u32,
    /// Consecutive normal windows needed to resolve (1..=65535).
    pub clear_for: u32,
    /// Windows seen before the rule may fire.
    pub warmup: u32,
    /// Severity of the alert.
    pub severity: Severity,
    /// Optional summary template (see [`ANOMALY_PLACEHOLDERS`]).
    #[serde(default)]
    pub summary: Option<String>,
}

impl FamilyRule for AnomalyRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn same_definition(&self, o: &AnomalyRule) -> bool {
        self.metric == o.metric
            && self.labels == o.labels
            && self.aggregate == o.aggregate
            && self.period == o.period
            && self.slots == o.slots
            && self.half_life == o.half_life
            && self.variance_half_life == o.variance_half_life
            && self.k.to_bits() == o.k.to_bits()
            && self.min_deviation.to_bits() == o.min_deviation.to_bits()
            && self.direction == o.direction
            && self.for_windows == o.for_windows
            && self.clear_for == o.clear_for
            && self.warmup == o.warmup
    }
}

impl SeriesRule for AnomalyRule {
    fn watches(&self, s: &SeriesMeta) -> bool {
        self.metric == s.metric() && labels_match(&self.labels, s.labels())
    }
}

/// The rule's period in ms (at least 1).
#[inline]
fn period_ms(rule: &AnomalyRule) -> i64 {
    i64::try_from(rule.period.as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

/// `1 - 2^(-step / half_life)`: the EWMA weight of one step.
#[inline]
fn alpha(step_ms: f64, half_life: Duration) -> f64 {
    let h = half_life.as_millis() as f64;
    if h <= 0.0 {
        1.0
    } else {
        1.0 - (-step_ms / h).exp2()
    }
}

/// Exact (bit) serde of `f64` and `f32` slices, so a checkpoint restores
/// the very same baseline.
mod bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub mod f32x2 {
        use super::*;

        pub fn serialize<S: Serializer>(v: &[f32; 2], s: S) -> Result<S::Ok, S::Error> {
            [v[0].to_bits(), v[1].to_bits()].serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[f32; 2], D::Error> {
            let [a, b] = <[u32; 2]>::deserialize(d)?;
            Ok([f32::from_bits(a), f32::from_bits(b)])
        }
    }

    pub mod f32s {
        use super::*;

        pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
            let b: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
            b.serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<[f32]>, D::Error> {
            Ok(Vec::<u32>::deserialize(d)?
                .into_iter()
                .map(f32::from_bits)
                .collect())
        }
    }
}

/// State of one anomaly rule on one series (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnomalyState {
    /// Windows seen (saturating).
    pub seen: u32,
    /// Deviating windows in the current run (contiguous, ending at
    /// `last_end_ms`; saturates).
    pub run: u16,
    /// While firing: contiguous normal windows ending at `last_end_ms`.
    pub clear_run: u16,
    /// Start of the first window seen: the first season runs from here.
    pub since_ms: OptMs,
    /// End of the last window seen, if any.
    pub last_end_ms: OptMs,
    /// `started_at_ms` of the firing incident, if any.
    pub firing_since: OptMs,
    /// While the first visit after the first season of a provisional
    /// slot lasts: the visit's start (see "Warm-up" in the module docs).
    #[serde(default)]
    pub check_from: OptMs,
    /// Windows of that visit so far.
    #[serde(default)]
    pub check_n: u32,
    /// Their mean and sum of squared deviations from it (Welford).
    #[serde(default, with = "bits::f32x2")]
    pub check: [f32; 2],
    /// Per seasonal slot, its expected value and its residual variance
    /// (`[m0, v0, m1, v1, ...]`; a NaN expected value: not visited yet;
    /// empty before the first window). The variance's sign bit marks a
    /// slot learnt only in the first season (provisional), so its
    /// magnitude is the variance.
    #[serde(with = "bits::f32s")]
    pub season: Box<[f32]>,
}

/// What one window looked like against the baseline it was judged by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    /// The window's value (the rule's aggregate).
    pub value: f64,
    /// Expected value: the mean of the window's seasonal slot.
    pub expected: f64,
    /// Residual standard deviation of the slot.
    pub sigma: f64,
    /// Half-width of the band: `max(k · sigma, min_deviation)`.
    pub band: f64,
    /// Whether the window deviates in the rule's direction (after
    /// warm-up).
    pub deviates: bool,
}

impl AnomalyState {
    /// Seasonal slot of a window starting at `start_ms`, and the slot's
    /// length in ms.
    #[inline]
    fn slot_of(rule: &AnomalyRule, start_ms: i64) -> (usize, i64) {
        let p = period_ms(rule);
        let n = i64::from(rule.slots.max(1));
        let at = start_ms.rem_euclid(p);
        // at < p, so the product fits i128 and the slot is < n.
        let j = (i128::from(at) * i128::from(n)) / i128::from(p);
        (j as usize, (p / n).max(1))
    }

    /// Whether a window starting at `start_ms` is in the first season:
    /// one period and one slot from the first window, so that every slot
    /// has had one whole visit when it ends.
    #[inline]
    fn first_season(&self, rule: &AnomalyRule, start_ms: i64, slot_ms: i64) -> bool {
        let p = period_ms(rule).saturating_add(slot_ms);
        self.since_ms
            .get()
            .is_none_or(|s| start_ms < s.saturating_add(p))
    }

    /// Judges a window of value `x` against the baseline and learns from
    /// it; returns the judgement.
    pub fn learn(&mut self, rule: &AnomalyRule, w: &WindowAggregate, x: f64) -> Judged {
        let step = (w.end_ms - w.start_ms).max(1);
        let slots = rule.slots.max(1);
        if self.season.is_empty() {
            let mut v = vec![0.0f32; 2 * slots as usize];
            for m in v.iter_mut().step_by(2) {
                *m = f32::NAN;
            }
            self.season = v.into_boxed_slice();
            self.since_ms = w.start_ms.into();
        }
        let (j, slot_ms) = Self::slot_of(rule, w.start_ms);
        let slot_start = w.start_ms - w.start_ms.rem_euclid(slot_ms);
        // A checked visit ends when a window of another visit comes.
        if let Some(from) = self.check_from.get() {
            if from != slot_start {
                self.end_check(rule, from);
            }
        }
        let j = j.min(self.season.len() / 2 - 1);
        let (im, iv) = (2 * j, 2 * j + 1);
        let m = f64::from(self.season[im]);
        let provisional = self.season[iv].is_sign_negative();
        let v = f64::from(self.season[iv]).abs();
        let sigma = v.sqrt();
        let band = (rule.k * sigma).max(rule.min_deviation);
        self.seen = self.seen.saturating_add(1);
        if m.is_nan() {
            // First visit of the slot: it starts at this value, learnt in
            // its first visit (provisional).
            self.season[im] = x as f32;
            self.season[iv] = -0.0;
            return Judged {
                value: x,
                expected: x,
                sigma,
                band,
                deviates: false,
            };
        }
        let r = x - m;
        let first = self.first_season(rule, w.start_ms, slot_ms);
        // The first visit after the first season of a provisional slot is
        // summarised, to check the slot's estimate by at its end.
        let checking = !first && provisional && slots > 1 && rule.direction != Deviation::Both;
        if checking {
            if self.check_from.get().is_none() {
                self.check_from = slot_start.into();
            }
            self.check_n = self.check_n.saturating_add(1);
            let n = f64::from(self.check_n);
            let mean = f64::from(self.check[0]);
            let d = x - mean;
            let mean2 = mean + d / n;
            let m2 = f64::from(self.check[1]) + d * (x - mean2);
            self.check = [mean2 as f32, m2 as f32];
        }
        let warm = self.seen >= rule.warmup && (slots <= 1 || !first);
        let up = r > band;
        let down = r < -band;
        let deviates = warm
            && match rule.direction {
                Deviation::Up => up,
                Deviation::Down => down,
                Deviation::Both => up || down,
            };
        // EWMA weights of the slot (updated once per window in it), and
        // running means before the slot's estimates are complete: in the
        // first season from the slot's latest visit, without a season
        // until warm.
        let per = (step * i64::from(slots)) as f64;
        let mut g = alpha(per, rule.half_life);
        let mut gv = alpha(per, rule.variance_half_life);
        let running = if slots <= 1 {
            (!warm).then(|| f64::from(self.seen))
        } else if first {
            let from = self
                .since_ms
                .get()
                .map_or(slot_start, |s| s.max(slot_start));
            Some(((w.start_ms - from) / step + 1).max(1) as f64)
        } else {
            None
        };
        // Outliers (once warm): see the module docs.
        let outlier = warm && (up || down);
        if let Some(c) = running {
            g = g.max(1.0 / c);
            gv = gv.max(1.0 / c);
            if c <= 1.0 {
                // A new visit in the first season restarts the slot.
                self.season[im] = x as f32;
                self.season[iv] = -0.0;
                return Judged {
                    value: x,
                    expected: m,
                    sigma,
                    band,
                    deviates,
                };
            }
        }
        // Outliers leave the expected value alone and update the variance
        // with their residual capped at the band, at the weight of one
        // window of the whole series (not of the slot): an incident widens
        // its slot's band by at most a factor `k` per variance half-life.
        if outlier {
            gv = alpha(step as f64, rule.variance_half_life);
        } else {
            self.season[im] = (m + g * r) as f32;
        }
        let r2 = if outlier { band * band } else { r * r };
        let nv = (v + gv * (r2 - v)) as f32;
        // Learnt in the first season, or in the visit that checks it: still
        // provisional (until [`AnomalyState::end_check`]).
        self.season[iv] = if first || checking { -nv } else { nv };
        Judged {
            value: x,
            expected: m,
            sigma,
            band,
            deviates,
        }
    }

    /// Ends the checked visit that started at `from`: a slot whose
    /// first-season estimate that visit contradicts on the side that does
    /// not alert (its mean further below the estimate than the band of its
    /// own spread, for an `up` rule) takes the visit's mean and variance;
    /// any other is confirmed as it is (see "Warm-up" in the module docs).
    fn end_check(&mut self, rule: &AnomalyRule, from: i64) {
        let (j, _) = Self::slot_of(rule, from);
        let j = j.min(self.season.len() / 2 - 1);
        let (im, iv) = (2 * j, 2 * j + 1);
        let n = self.check_n;
        let [mean, m2] = self.check;
        self.check_from = OptMs::NONE;
        self.check_n = 0;
        self.check = [0.0; 2];
        if !self.season[iv].is_sign_negative() || n == 0 {
            return;
        }
        let var = (f64::from(m2) / f64::from(n)).max(0.0);
        let band = (rule.k * var.sqrt()).max(rule.min_deviation);
        let d = f64::from(mean) - f64::from(self.season[im]);
        let contradicted = match rule.direction {
            Deviation::Up => d < -band,
            Deviation::Down => d > band,
            Deviation::Both => false,
        };
        if contradicted {
            self.season[im] = mean;
            self.season[iv] = var as f32;
        } else {
            self.season[iv] = self.season[iv].abs();
        }
    }

    /// Feeds one window; appends a `firing` or `resolved` event on a
    /// transition.
    pub fn on_window(
        &mut self,
        rule: &AnomalyRule,
        rules: &RuleSet,
        w: &WindowAggregate,
        out: &mut Vec<AlertEvent>,
    ) {
        if self.last_end_ms.get().is_some_and(|e| w.start_ms < e) {
            // Out of order or repeated window: not in the contract; ignore
            // it rather than corrupt the baseline.
            return;
        }
        let x = rule.aggregate.of(&w.agg);
        if !x.is_finite() {
            return;
        }
        let contiguous = self.last_end_ms.get() == Some(w.start_ms);
        self.last_end_ms = w.end_ms.into();
        let j = self.learn(rule, w, x);
        if j.deviates {
            self.run = if contiguous {
                self.run.saturating_add(1)
            } else {
                1
            };
        } else {
            self.run = 0;
        }
        match self.firing_since.get() {
            None if j.deviates && u32::from(self.run) >= rule.for_windows => {
                let size = w.end_ms.saturating_sub(w.start_ms);
                let started = w
                    .start_ms
                    .saturating_sub(size.saturating_mul(i64::from(self.run) - 1));
                self.firing_since = started.into();
                self.clear_run = 0;
                out.push(event(rule, rules, w, &j, AlertStatus::Firing, started));
            }
            Some(started) => {
                if j.deviates {
                    self.clear_run = 0;
                } else {
                    self.clear_run = if contiguous {
                        self.clear_run.saturating_add(1)
                    } else {
                        1
                    };
                    if u32::from(self.clear_run) >= rule.clear_for {
                        self.firing_since = OptMs::NONE;
                        self.clear_run = 0;
                        out.push(event(rule, rules, w, &j, AlertStatus::Resolved, started));
                    }
                }
            }
            _ => {}
        }
    }

    /// Expected value and band of the next window starting at `start_ms`
    /// (`None` before the first window).
    pub fn expect(&self, rule: &AnomalyRule, start_ms: i64) -> Option<(f64, f64)> {
        let j = Self::slot_of(rule, start_ms).0;
        let m = f64::from(*self.season.get(2 * j)?);
        let sigma = f64::from(*self.season.get(2 * j + 1)?).abs().sqrt();
        (!m.is_nan()).then_some((m, (rule.k * sigma).max(rule.min_deviation)))
    }
}

/// The band edge a window was judged against, on the side it went.
fn edge(j: &Judged) -> f64 {
    if j.value >= j.expected {
        j.expected + j.band
    } else {
        j.expected - j.band
    }
}

fn event(
    rule: &AnomalyRule,
    rules: &RuleSet,
    w: &WindowAggregate,
    j: &Judged,
    status: AlertStatus,
    started: i64,
) -> AlertEvent {
    let s = &w.series;
    let subject = Subject {
        rule: &rule.name,
        kind: DetectorKind::Anomaly,
        severity: rule.severity,
        tenant: s.tenant(),
        agent: s.agent(),
        metric: Some(s.metric()),
        labels: s.labels(),
    };
    let series = subject.series_name();
    let dev = if j.sigma > 0.0 {
        format!("{:.1}", (j.value - j.expected) / j.sigma)
    } else {
        "inf".to_string()
    };
    let threshold = edge(j);
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
                ("value", &fmt_value(j.value)),
                ("expected", &fmt_value(j.expected)),
                ("sigma", &fmt_value(j.sigma)),
                ("deviation", &dev),
                ("threshold", &fmt_value(threshold)),
                ("for", &rule.for_windows.to_string()),
            ],
        ),
        (None, AlertStatus::Firing) => format!(
            "{series} {} {} on {} deviates from its baseline: expected {} ± {} (sigma {}, {} sigma) for {} window(s)",
            rule.aggregate.as_str(),
            fmt_value(j.value),
            s.agent(),
            fmt_value(j.expected),
            fmt_value(j.band),
            fmt_value(j.sigma),
            dev,
            rule.for_windows
        ),
        (_, AlertStatus::Resolved) => format!(
            "{series} {} {} on {} is back within its baseline {} ± {} (resolved)",
            rule.aggregate.as_str(),
            fmt_value(j.value),
            s.agent(),
            fmt_value(j.expected),
            fmt_value(j.band),
        ),
    };
    let mut e = subject.event(rules, status, started, w.end_ms, summary);
    e.value = Some(j.value);
    e.threshold = Some(threshold);
    e.window_start_ms = Some(w.start_ms);
    e.window_end_ms = Some(w.end_ms);
    e
}

/// Reads one `[[anomaly]]` rule at `path`, reporting every problem into
/// `cx`.
pub(crate) fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<AnomalyRule> {
    const KEYS: &[&str] = &[
        "name",
        "metric",
        "labels",
        "aggregate",
        "period",
        "slots",
        "half_life",
        "variance_half_life",
        "k",
        "min_deviation",
        "direction",
        "for",
        "clear_for",
        "warmup",
        "severity",
        "summary",
    ];
    let t = cx.fields(path, val, KEYS)?;
    let span = val.span();
    let name = cx.name(t, &span, path);
    let metric = cx.string(t, &span, path, "metric", true);
    let labels = cx.labels(t, path);
    let aggregate = cx.aggregate(t, &span, path, Some(AggregateKind::Mean));
    let direction = match t.get("direction") {
        None => Some(Deviation::Both),
        Some(v) => match v.get_ref().as_str() {
            Some("up") => Some(Deviation::Up),
            Some("down") => Some(Deviation::Down),
            Some("both") => Some(Deviation::Both),
            _ => {
                cx.problem(
                    v.span(),
                    format!("{path}.direction"),
                    "expected one of: \"up\", \"down\", \"both\"",
                );
                None
            }
        },
    };
    let period = cx.duration_or(t, path, "period", DEFAULT_PERIOD);
    let half_life = cx.duration_or(t, path, "half_life", DEFAULT_HALF_LIFE);
    let variance_half_life =
        cx.duration_or(t, path, "variance_half_life", DEFAULT_VARIANCE_HALF_LIFE);
    let slots = cx.integer_or(t, path, "slots", 1, DEFAULT_SLOTS);
    let for_windows = cx.integer_or(t, path, "for", 1, DEFAULT_FOR);
    let clear_for = cx.integer_or(t, path, "clear_for", 1, DEFAULT_CLEAR_FOR);
    let warmup = cx.integer_or(t, path, "warmup", 1, DEFAULT_WARMUP);
    let mut ok = true;
    for (key, got, max) in [
        ("slots", slots, MAX_SLOTS),
        ("for", for_windows, u32::from(u16::MAX)),
        ("clear_for", clear_for, u32::from(u16::MAX)),
    ] {
        if let (Some(n), Some(v)) = (got, t.get(key)) {
            if n > max {
                cx.problem(
                    v.span(),
                    format!("{path}.{key}"),
                    format!("must be <= {max}"),
                );
                ok = false;
            }
        }
    }
    let mut ranged = |cx: &mut Cx<'_>, key: &str, default: f64, lo: f64, lo_open: bool| -> f64 {
        match cx.number(t, &span, path, key, false) {
            None => {
                ok &= !t.contains_key(key);
                default
            }
            Some((x, s)) if x < lo || (lo_open && x == lo) => {
                let op = if lo_open { ">" } else { ">=" };
                cx.problem(s, format!("{path}.{key}"), format!("must be {op} {lo}"));
                ok = false;
                default
            }
            Some((x, _)) => x,
        }
    };
    let k = ranged(cx, "k", DEFAULT_K, 0.0, true);
    let min_deviation = ranged(cx, "min_deviation", 0.0, 0.0, false);
    let severity = cx.severity(t, &span, path);
    let summary = cx.summary(t, &span, path, ANOMALY_PLACEHOLDERS);
    if !ok {
        return None;
    }
    Some(AnomalyRule {
        name: name?,
        metric: metric?,
        labels: labels?,
        aggregate: aggregate?,
        period: period?,
        slots: slots?,
        half_life: half_life?,
        variance_half_life: variance_half_life?,
        k,
        min_deviation,
        direction: direction?,
        for_windows: for_windows?,
        clear_for: clear_for?,
        warmup: warmup?,
        severity: severity?,
        summary: summary?,
    })
}

/// The anomaly family (see the module docs).
pub struct Anomaly;

/// Anomaly state of a partition: a baseline per (series uid, rule index)
/// watched, created on the series' first window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AnomalyStore {
    #[serde(with = "sorted_map")]
    states: HashMap<(u64, u16), AnomalyState>,
}

impl AnomalyStore {
    /// Bytes the store holds: its map's buckets (key, state and control
    /// byte per bucket of its capacity) and every state's slots, without
    /// the allocator's own overhead.
    pub fn heap_bytes(&self) -> usize {
        let bucket = std::mem::size_of::<((u64, u16), AnomalyState)>() + 1;
        self.states.capacity() * bucket
            + self
                .states
                .values()
                .map(|s| s.season.len() * std::mem::size_of::<f32>())
                .sum::<usize>()
    }

    /// The state of rule `rule` on series `uid`, if any.
    pub fn get(&self, uid: u64, rule: u16) -> Option<&AnomalyState> {
        self.states.get(&(uid, rule))
    }
}

/// The `resolved` event, for `reason`, of the incident a series' anomaly
/// state holds (none unless firing): at the end of the last window seen.
fn close(
    meta: &SeriesMeta,
    rule: &AnomalyRule,
    st: &AnomalyState,
    rules: &RuleSet,
    reason: ResolveReason,
) -> Option<AlertEvent> {
    let started = st.firing_since.get()?;
    let threshold = st
        .last_end_ms
        .get()
        .and_then(|e| st.expect(rule, e))
        .map(|(x, _)| x);
    Some(
        series_subject(meta, &rule.name, DetectorKind::Anomaly, rule.severity).retired(
            rules,
            started,
            st.last_end_ms.get().unwrap_or(started),
            reason,
            threshold,
        ),
    )
}

impl SeriesFamily for Anomaly {
    type Rule = AnomalyRule;
    type Store = AnomalyStore;
    type Slot = ();

    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<AnomalyRule> {
        parse(cx, path, val)
    }

    #[inline]
    fn on_window(
        store: &mut AnomalyStore,
        _slot: &mut (),
        watch: &[u16],
        fam: &[AnomalyRule],
        rules: &RuleSet,
        uid: u64,
        w: &WindowAggregate,
        out: &mut Vec<AlertEvent>,
    ) {
        for &r in watch {
            let Some(rule) = fam.get(r as usize) else {
                continue;
            };
            store
                .states
                .entry((uid, r))
                .or_default()
                .on_window(rule, rules, w, out);
        }
    }

    fn evict(
        store: &mut AnomalyStore,
        _slot: (),
        watch: &[u16],
        fam: &[AnomalyRule],
        rules: &RuleSet,
        s: SeriesCx<'_>,
        out: &mut Vec<AlertEvent>,
    ) {
        for &r in watch {
            let Some(st) = store.states.remove(&(s.uid, r)) else {
                continue;
            };
            if let Some(rule) = fam.get(r as usize) {
                out.extend(close(s.meta, rule, &st, rules, ResolveReason::Stale));
            }
        }
    }

    fn copy(from: &AnomalyStore, to: &mut AnomalyStore, _slot: (), watch: &[u16], uid: u64) {
        for &r in watch {
            if let Some(st) = from.states.get(&(uid, r)) {
                to.states.insert((uid, r), st.clone());
            }
        }
    }

    fn rebind(
        old: &AnomalyStore,
        next: &mut AnomalyStore,
        _slot: (),
        old_watch: &[u16],
        new_watch: &[u16],
        carry: &[Option<u16>],
        old_rules: &[AnomalyRule],
        fam: &[AnomalyRule],
        rules: &RuleSet,
        s: SeriesCx<'_>,
        retired: &mut Vec<AlertEvent>,
    ) {
        for &r in old_watch {
            let Some(st) = old.states.get(&(s.uid, r)) else {
                continue;
            };
            if let Some(nr) = carry.get(r as usize).copied().flatten() {
                if new_watch.contains(&nr) {
                    next.states.insert((s.uid, nr), st.clone());
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
    }

    fn states(store: &AnomalyStore) -> usize {
        store.states.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::detect::DetectorEngine;
    use crate::model::Agg;

    const W: i64 = 60_000;
    const DAY: i64 = 1440;

    const RULE: &str = r#"
[[anomaly]]
name = "cpu_anomaly"
metric = "cpu_pct"
direction = "up"
min_deviation = 5
severity = "warning"
"#;

    /// The same without a season, with a 1 h baseline.
    fn flat() -> String {
        RULE.replace(
            "min_deviation = 5\n",
            "min_deviation = 5\nslots = 1\nhalf_life = \"1h\"\n",
        )
    }

    fn rules(text: &str) -> Arc<RuleSet> {
        match RuleSet::from_toml(text, "test.toml") {
            Ok(r) => Arc::new(r),
            Err(e) => panic!("{e}"),
        }
    }

    fn parse_err(text: &str) -> String {
        match RuleSet::from_toml(text, "test.toml") {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    fn cpu() -> SeriesMeta {
        SeriesMeta::new("t1", "a1", "cpu_pct", "")
    }

    fn win(s: &SeriesMeta, i: i64, v: f64) -> WindowAggregate {
        WindowAggregate {
            series: s.clone(),
            start_ms: i * W,
            end_ms: (i + 1) * W,
            agg: Agg::new(i * W, v),
        }
    }

    /// Deterministic noise in [-1, 1) (splitmix64).
    fn noise(seed: u64, i: i64) -> f64 {
        let mut z = seed
            .wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// Diurnal load like the simulator's: `base + amp · day(t)` + noise.
    fn diurnal(i: i64, base: f64, amp: f64, phase: f64) -> f64 {
        let tod = (i.rem_euclid(DAY)) as f64 / DAY as f64;
        base + amp * (0.5 - 0.5 * (std::f64::consts::TAU * (tod - phase)).cos())
    }

    fn run(text: &str, vals: &[(i64, f64)]) -> Vec<AlertEvent> {
        let mut e = DetectorEngine::new(rules(text));
        let s = cpu();
        let mut out = Vec::new();
        for &(i, v) in vals {
            e.on_window(&win(&s, i, v), &mut out);
        }
        out
    }

    fn statuses(ev: &[AlertEvent]) -> Vec<(AlertStatus, i64)> {
        ev.iter().map(|e| (e.status, e.event_time_ms / W)).collect()
    }

    #[test]
    fn defaults_and_keys() {
        let r = rules(RULE);
        let a = &r.anomaly[0];
        assert_eq!(a.aggregate, AggregateKind::Mean);
        assert_eq!(a.period, DEFAULT_PERIOD);
        assert_eq!(a.slots, DEFAULT_SLOTS);
        assert_eq!(a.k, DEFAULT_K);
        assert_eq!(a.for_windows, DEFAULT_FOR);
        assert_eq!(a.clear_for, DEFAULT_CLEAR_FOR);
        assert_eq!(a.warmup, DEFAULT_WARMUP);
        assert_eq!(a.direction, Deviation::Up);
        assert_eq!(a.min_deviation, 5.0);
        let full = rules(
            r#"
[[anomaly]]
name = "n"
metric = "m"
labels = { mount = "/" }
aggregate = "max"
period = "7d"
slots = 168
half_life = "30m"
variance_half_life = "1d"
k = 4.5
min_deviation = 0.5
direction = "down"
for = 3
clear_for = 10
warmup = 120
severity = "critical"
summary = "{series} at {value}, expected {expected} (sigma {sigma}, {deviation}) past {threshold}"
"#,
        );
        let a = &full.anomaly[0];
        assert_eq!(a.slots, 168);
        assert_eq!(a.half_life, Duration::from_secs(1800));
        assert_eq!(a.period, Duration::from_secs(7 * 86400));
        assert_eq!(a.k, 4.5);
        assert_eq!(a.direction, Deviation::Down);
        assert_eq!(a.labels.get("mount").map(String::as_str), Some("/"));
    }

    #[test]
    fn bad_rules_are_reported_with_their_place() {
        let e = parse_err(
            "[[anomaly]]\nname = \"n\"\nmetric = \"m\"\nk = 0\nslots = 5000\ndirection = \"sideways\"\nperiod = \"soon\"\nbogus = 1\nsummary = \"{nope}\"\n",
        );
        for want in [
            "test.toml:4:5: anomaly[0].k: must be > 0",
            "test.toml:5:9: anomaly[0].slots: must be <= 1440",
            "anomaly[0].direction: expected one of",
            "anomaly[0].period: invalid duration",
            "anomaly[0].bogus: unknown field",
            "anomaly[0].summary: unknown placeholder {nope}",
            "anomaly[0].severity: missing required field",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
        let e = parse_err(
            "[[anomaly]]\nname = \"n\"\nmetric = \"m\"\nmin_deviation = -1\nseverity = \"info\"\n",
        );
        assert!(e.contains("anomaly[0].min_deviation: must be >= 0"), "{e}");
    }

    #[test]
    fn a_constant_series_never_fires_and_a_step_fires_once() {
        let mut v: Vec<(i64, f64)> = (0..300).map(|i| (i, 40.0)).collect();
        v.extend((300..330).map(|i| (i, 80.0)));
        v.extend((330..400).map(|i| (i, 40.0)));
        let ev = run(&flat(), &v);
        // Fires at the 5th window of the step, starts at its first,
        // resolves at the 5th normal window.
        assert_eq!(
            statuses(&ev),
            [(AlertStatus::Firing, 305), (AlertStatus::Resolved, 335)],
            "{ev:?}"
        );
        assert_eq!(ev[0].started_at_ms, 300 * W);
        assert_eq!(ev[0].kind, DetectorKind::Anomaly);
        assert_eq!(ev[0].value, Some(80.0));
        // Constant baseline: sigma 0, so the band is the floor.
        assert_eq!(ev[0].threshold, Some(45.0));
        assert!(
            ev[0].summary.contains("expected 40 ± 5"),
            "{}",
            ev[0].summary
        );
        assert_eq!(ev[1].resolve_reason, Some(ResolveReason::Cleared));
    }

    #[test]
    fn warmup_and_direction_gate_firing() {
        // A step inside the warm-up does not fire.
        let mut v: Vec<(i64, f64)> = (0..20).map(|i| (i, 40.0)).collect();
        v.extend((20..40).map(|i| (i, 90.0)));
        assert!(run(&flat(), &v).is_empty());
        // A drop does not fire an `up` rule, and fires a `both` rule.
        let mut v: Vec<(i64, f64)> = (0..200).map(|i| (i, 60.0)).collect();
        v.extend((200..230).map(|i| (i, 10.0)));
        assert!(run(&flat(), &v).is_empty());
        let both = flat().replace("\"up\"", "\"both\"");
        assert_eq!(run(&both, &v).len(), 1);
    }

    #[test]
    fn diurnal_load_does_not_fire_but_a_saturation_does() {
        // A busy server: 45 % at night, 91 % every afternoon, ±3 noise.
        let load = |i: i64| diurnal(i, 45.0, 46.0, 2.0 / 24.0) + 3.0 * noise(7, i);
        let mut v: Vec<(i64, f64)> = (0..5 * DAY).map(|i| (i, load(i))).collect();
        assert!(run(RULE, &v).is_empty(), "{:?}", statuses(&run(RULE, &v)));
        // A fixed threshold at 85 on the same series fires every day.
        let thr = "[[threshold]]\nname = \"t\"\nmetric = \"cpu_pct\"\naggregate = \"mean\"\nop = \">\"\nvalue = 85\nfor = 5\nclear = 80\nseverity = \"warning\"\n";
        let daily = run(thr, &v)
            .iter()
            .filter(|e| e.status == AlertStatus::Firing)
            .count();
        assert!(daily >= 4, "{daily}");
        // 40 minutes at 97 % at 6 am of day 6 fire one incident.
        let at = 5 * DAY + 6 * 60;
        v.extend((5 * DAY..6 * DAY).map(|i| {
            let x = if (at..at + 40).contains(&i) {
                97.0 + noise(9, i)
            } else {
                load(i)
            };
            (i, x)
        }));
        let ev = run(RULE, &v);
        assert_eq!(
            statuses(&ev),
            [
                (AlertStatus::Firing, at + 5),
                (AlertStatus::Resolved, at + 45)
            ],
            "{ev:?}"
        );
    }

    #[test]
    fn a_first_day_saturation_is_re_learnt_not_kept() {
        // A desktop at 20 % ± 2, saturated at 97 % from 06:00 to 06:40 on
        // its first day (learnt: nothing may fire in the first season),
        // then again at the same time on days 3 and 5.
        let load = |i: i64| 20.0 + 2.0 * noise(3, i);
        let sat = |d: i64, i: i64| (d * DAY + 6 * 60..d * DAY + 6 * 60 + 40).contains(&i);
        let v: Vec<(i64, f64)> = (0..6 * DAY)
            .map(|i| {
                let x = if sat(0, i) || sat(2, i) || sat(4, i) {
                    97.0 + noise(9, i)
                } else {
                    load(i)
                };
                (i, x)
            })
            .collect();
        // Day 2's normal hour contradicts the learnt mix of 97 % and 20 %:
        // the slot takes day 2's, so days 3 and 5 each fire once (before,
        // neither did: the day-1 profile held, its band widened by the
        // saturation, the normal values being outliers below it).
        let ev = run(RULE, &v);
        let (d3, d5) = (2 * DAY + 6 * 60, 4 * DAY + 6 * 60);
        assert_eq!(
            statuses(&ev),
            [
                (AlertStatus::Firing, d3 + 5),
                (AlertStatus::Resolved, d3 + 45),
                (AlertStatus::Firing, d5 + 5),
                (AlertStatus::Resolved, d5 + 45),
            ],
            "{ev:?}"
        );
        // A recurring daily peak is not contradicted: it stays learnt, so
        // the same series with the peak every day never fires.
        let daily: Vec<(i64, f64)> = (0..6 * DAY)
            .map(|i| {
                let peak = (6 * 60..6 * 60 + 40).contains(&i.rem_euclid(DAY));
                (i, if peak { 97.0 + noise(9, i) } else { load(i) })
            })
            .collect();
        assert!(run(RULE, &daily).is_empty());
    }

    #[test]
    fn a_long_incident_does_not_become_the_new_normal() {
        // Three hours 30 points up: one incident, open all along.
        let mut v: Vec<(i64, f64)> = (0..600).map(|i| (i, 40.0 + noise(1, i))).collect();
        v.extend((600..780).map(|i| (i, 70.0 + noise(2, i))));
        v.extend((780..900).map(|i| (i, 40.0 + noise(3, i))));
        let ev = run(&flat(), &v);
        assert_eq!(
            statuses(&ev),
            [(AlertStatus::Firing, 605), (AlertStatus::Resolved, 785)],
            "{ev:?}"
        );
    }

    #[test]
    fn a_permanent_shift_is_learnt_eventually() {
        let mut v: Vec<(i64, f64)> = (0..600).map(|i| (i, 40.0 + noise(1, i))).collect();
        v.extend((600..3000).map(|i| (i, 70.0 + noise(2, i))));
        let ev = run(&flat(), &v);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(ev[1].status, AlertStatus::Resolved);
    }

    #[test]
    fn series_other_rules_watch_hold_no_anomaly_state() {
        let text = format!("{RULE}\n[[threshold]]\nname = \"m\"\nmetric = \"mem_pct\"\naggregate = \"mean\"\nop = \">\"\nvalue = 90\nseverity = \"info\"\n");
        let mut e = DetectorEngine::new(rules(&text));
        let mut out = Vec::new();
        let mem = SeriesMeta::new("t1", "a1", "mem_pct", "");
        for i in 0..10 {
            e.on_window(&win(&mem, i, 50.0), &mut out);
        }
        assert_eq!(e.series_states(), 0);
        for i in 0..10 {
            e.on_window(&win(&cpu(), i, 50.0), &mut out);
        }
        assert_eq!(e.series_states(), 1);
    }

    #[test]
    fn bytes_per_watched_series() {
        // 10,000 cpu series a day old under the default 24 slots.
        let r = rules(RULE);
        let fam = &r.anomaly;
        let mut store = AnomalyStore::default();
        let mut out = Vec::new();
        for uid in 0..10_000u64 {
            let s = SeriesMeta::new("t1", &format!("a{uid}"), "cpu_pct", "");
            for i in 0..DAY {
                <Anomaly as SeriesFamily>::on_window(
                    &mut store,
                    &mut (),
                    &[0],
                    fam,
                    &r,
                    uid,
                    &win(&s, i, diurnal(i, 20.0, 30.0, 0.1) + noise(uid, i)),
                    &mut out,
                );
            }
        }
        assert!(out.is_empty());
        let per = store.heap_bytes() as f64 / 10_000.0;
        println!("anomaly state: {per:.0} bytes per watched series (24 slots)");
        // 72 + 16 key, and 2 × 24 f32: 280 at a full map.
        assert!((256.0..=400.0).contains(&per), "{per}");
    }

    #[test]
    fn state_size() {
        // The fixed part; the offsets are `slots` × 4 bytes on the heap.
        assert_eq!(std::mem::size_of::<AnomalyState>(), 72);
        assert_eq!(std::mem::size_of::<crate::detect::DetHandle>(), 8);
        // A series' handle in a checkpoint carries no anomaly field.
        let h = serde_json::to_string(&crate::detect::DetHandle::NONE).unwrap_or_default();
        assert!(!h.contains("anomaly"), "{h}");
    }

    #[test]
    fn eviction_resolves_stale_and_edits_retire() {
        let text = flat();
        let mut e = DetectorEngine::new(rules(&text));
        let s = cpu();
        let mut out = Vec::new();
        let mut v: Vec<(i64, f64)> = (0..100).map(|i| (i, 40.0)).collect();
        v.extend((100..110).map(|i| (i, 90.0)));
        for &(i, x) in &v {
            e.on_window(&win(&s, i, x), &mut out);
        }
        assert_eq!(out.len(), 1);
        // An edit of k retires the open incident.
        let json = serde_json::to_string(&e).unwrap_or_default();
        let mut back: DetectorEngine = match serde_json::from_str(&json) {
            Ok(b) => b,
            Err(err) => panic!("{err}"),
        };
        let mut retired = Vec::new();
        back.attach_rules(
            rules(&text.replace("min_deviation = 5", "min_deviation = 6")),
            &mut retired,
        );
        assert_eq!(retired.len(), 1, "{retired:?}");
        assert_eq!(retired[0].resolve_reason, Some(ResolveReason::RuleChanged));
        assert_eq!(retired[0].id, out[0].id);
        // A severity edit keeps the state.
        let mut back: DetectorEngine = match serde_json::from_str(&json) {
            Ok(b) => b,
            Err(err) => panic!("{err}"),
        };
        let mut retired = Vec::new();
        back.attach_rules(
            rules(&text.replace("\"warning\"", "\"critical\"")),
            &mut retired,
        );
        assert!(retired.is_empty());
        assert_eq!(back.series_states(), 1);
    }

    /// Runs `vals` straight, and cut at `cut` through a JSON checkpoint.
    fn straight_and_restored(
        text: &str,
        vals: &[(i64, f64)],
        cut: usize,
    ) -> (Vec<AlertEvent>, Vec<AlertEvent>, String, String) {
        let r = rules(text);
        let s = cpu();
        let mut straight = DetectorEngine::new(r.clone());
        let mut want = Vec::new();
        for &(i, v) in vals {
            straight.on_window(&win(&s, i, v), &mut want);
        }
        let mut first = DetectorEngine::new(r.clone());
        let mut got = Vec::new();
        for &(i, v) in &vals[..cut] {
            first.on_window(&win(&s, i, v), &mut got);
        }
        let json = serde_json::to_string(&first).unwrap_or_default();
        let mut back: DetectorEngine = match serde_json::from_str(&json) {
            Ok(b) => b,
            Err(err) => panic!("{err}"),
        };
        back.attach_rules(r, &mut got);
        for &(i, v) in &vals[cut..] {
            back.on_window(&win(&s, i, v), &mut got);
        }
        let a = serde_json::to_string(&straight).unwrap_or_default();
        let b = serde_json::to_string(&back).unwrap_or_default();
        (want, got, a, b)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

        /// A constant series never fires, whatever its value.
        #[test]
        fn constant_never_fires(x in -1e6f64..1e6, n in 60usize..3000) {
            let text = RULE.replace("min_deviation = 5\n", "");
            let v: Vec<(i64, f64)> = (0..n as i64).map(|i| (i, x)).collect();
            prop_assert!(run(&text, &v).is_empty());
        }

        /// A purely seasonal series (diurnal shape of any level, swing and
        /// phase, with or without noise) never fires after the warm-up,
        /// in either direction, without any absolute floor.
        #[test]
        fn seasonal_never_fires(
            base in 0f64..1000.0,
            amp in 0f64..500.0,
            phase in 0f64..1.0,
            noisy in 0f64..0.05,
            seed in any::<u64>(),
        ) {
            let text = RULE.replace("min_deviation = 5\n", "").replace("\"up\"", "\"both\"");
            let v: Vec<(i64, f64)> = (0..4 * DAY)
                .map(|i| (i, diurnal(i, base, amp, phase) + noisy * amp * noise(seed, i)))
                .collect();
            let ev = run(&text, &v);
            prop_assert!(ev.is_empty(), "{:?}", statuses(&ev));
        }

        /// A step of more than the band (k · the noise bound, plus the
        /// floor) held at least `for` windows fires exactly one incident,
        /// which starts at the step and resolves after it.
        #[test]
        fn a_sustained_step_fires_exactly_once(
            base in 0f64..100.0,
            len in 5i64..120,
            extra in 0f64..50.0,
            seed in any::<u64>(),
        ) {
            // Noise within ±1: sigma <= 1, band <= 3 (k) and >= 5 (floor).
            let step = 5.0 + 3.0 + 2.0 + extra;
            let mut v: Vec<(i64, f64)> = (0..300).map(|i| (i, base + noise(seed, i))).collect();
            v.extend((300..300 + len).map(|i| (i, base + step + noise(seed, i))));
            v.extend((300 + len..400 + len).map(|i| (i, base + noise(seed, i))));
            let ev = run(&flat(), &v);
            prop_assert_eq!(ev.len(), 2, "{:?}", statuses(&ev));
            prop_assert_eq!(ev[0].status, AlertStatus::Firing);
            prop_assert_eq!(ev[0].started_at_ms, 300 * W);
            prop_assert_eq!(ev[1].status, AlertStatus::Resolved);
            prop_assert_eq!(ev[1].event_time_ms, (300 + len + 5) * W);
        }

        /// A checkpoint anywhere restores to exactly the uninterrupted
        /// run: same events, same state.
        #[test]
        fn restore_is_equivalent(
            vals in prop::collection::vec((0i64..3, 0f64..100.0, prop::bool::weighted(0.05)), 0..600),
            cut in 0usize..600,
        ) {
            // Steps of 1-3 windows (gaps), values with bursts.
            let mut at = 0;
            let v: Vec<(i64, f64)> = vals
                .iter()
                .map(|&(gap, x, burst)| {
                    at += 1 + i64::from(gap == 2);
                    (at, if burst { x + 200.0 } else { x / 10.0 + 40.0 })
                })
                .collect();
            let text = RULE.replace("min_deviation = 5", "min_deviation = 1\nwarmup = 10\nfor = 2\nclear_for = 2\nslots = 7\nperiod = \"1h\"");
            let cut = cut.min(v.len());
            let (want, got, a, b) = straight_and_restored(&text, &v, cut);
            prop_assert_eq!(got, want);
            prop_assert_eq!(a, b);
        }
    }
}
