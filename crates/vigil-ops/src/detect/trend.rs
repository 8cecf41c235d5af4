//! Predictive trend detector: "this disk will be full within 24 h".
//!
//! # Algorithm
//!
//! Per (rule, series) the state is a fixed set of scalars (O(1), no history
//! buffer):
//!
//! * **Slow fit**: exponentially weighted least squares of window mean
//!   against window mid-time, time constant `τ = lookback / 2` (86 % of the
//!   weight lies within the lookback). Kept as decayed weighted moments
//!   (West's incremental update: weight sum, sum of squared weights, means,
//!   centred co-moments), which are numerically stable and exact for a
//!   linear series. Gives slope `b`, level now, R², residual variance and
//!   the slope's standard error (with the effective sample size
//!   `(Σw)² / Σw²`).
//! * **Fast fit**: the same with `τ / 4`. Its level is a lag-free smoother
//!   of the series; its slope is the local trend.
//! * **Noise**: an exponentially weighted mean of half the squared
//!   difference of consecutive window means, i.e. the point noise variance,
//!   blind to trends and to rare steps.
//! * **Low point** (`valley`): follows the fast level down at once and up
//!   with time constant `horizon`: where the current rise started.
//!
//! A prediction fires when all of these hold (a conjunction of cheap
//! gates; each is aimed at one of the known traps of a plain
//! `predict_linear`):
//!
//! 1. the slow fit has at least `min_points` effective windows;
//! 2. one of two fits is trusted:
//!    * *slow path*: slope significant (`b / se(b) >= min_t`, `R² >=
//!      min_r2`; kills noisy flat series, also at 90 %+), the lookback is
//!      one straight line (slow residual sd <= 1.5 × local noise + 10 % of
//!      the rise per τ: kills bursts, steps and curves) and the fast slope
//!      neither decelerates nor accelerates beyond 10 % + 2.5 standard
//!      errors (kills fills that level off and cleanup edges);
//!    * *fast path*: the fast slope accelerated beyond the slow one (a fill
//!      started inside the lookback), is significant and the recent span is
//!      one straight line; the prediction then uses the fast fit;
//! 3. the chosen fit predicts the limit within `horizon`;
//! 4. the newest window agrees with the fast level within 4 noise sd (not
//!    the first window of a cleanup drop or a spike);
//! 5. **bounded extrapolation**: the headroom left, `limit - level`, is at
//!    most `max_extrapolation` (half that on the fast path) times the rise
//!    observed since the valley. A trend is not projected further than it
//!    has been seen to go: log rotation (5 % rises that drop back) and
//!    nightly growth cleared every morning pull the valley back down at
//!    every cleanup, so they never gather enough rise to be extrapolated to
//!    100 %, while a real fill keeps its valley near the fill's start.
//!
//! The predicted time is `now + (limit - level) / slope` from the chosen
//! fit (unbiased for a linear fill once the fit covers the fill).
//!
//! The labelled-scenario evaluation in `detect/trend_eval.rs` pins the
//! behaviour (recall, predicted-time error, false alarms per trap).
//!
//! While firing, the alert holds as long as the slow fit still predicts
//! the limit within 1.5 × `horizon` with half the `min_t`; it resolves
//! once that has been false for `resolve_after` (hysteresis: no flapping
//! around the horizon), or immediately when the series *reaches* the
//! limit: the prediction came true and the threshold rules (e.g.
//! `disk_critical`) own the incident from there.
//!
//! A falling rule (`direction = "falling"`) runs the same algorithm on the
//! negated series and limit.

use serde::{Deserialize, Serialize};

use super::lifecycle::{fmt_value, render, Subject};
use crate::model::{AlertEvent, AlertStatus, DetectorKind, OptMs, ResolveReason, WindowAggregate};
use crate::rules::{format_utc_minute, Direction, RuleSet, TrendRule};

const MS_PER_HOUR: f64 = 3_600_000.0;

/// Serializes an `f64` as its IEEE-754 bit pattern (`u64`), so a
/// checkpoint restores the exact value whatever the format's float
/// printing and parsing do (serde_json without `float_roundtrip` may be off
/// by one ulp, which could flip a later decision).
mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(f64::from_bits(u64::deserialize(d)?))
    }
}

/// Exponentially weighted linear least-squares fit, as decayed moments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EwFit {
    /// Sum of weights.
    #[serde(with = "exact_f64")]
    pub w: f64,
    /// Sum of squared weights.
    #[serde(with = "exact_f64")]
    pub w2: f64,
    /// Weighted mean time (hours since the series' reference).
    #[serde(with = "exact_f64")]
    pub mt: f64,
    /// Weighted mean value.
    #[serde(with = "exact_f64")]
    pub my: f64,
    /// Weighted centred Σ(t - mt)².
    #[serde(with = "exact_f64")]
    pub ctt: f64,
    /// Weighted centred Σ(t - mt)(y - my).
    #[serde(with = "exact_f64")]
    pub cty: f64,
    /// Weighted centred Σ(y - my)².
    #[serde(with = "exact_f64")]
    pub cyy: f64,
}

impl EwFit {
    /// Multiplies every past weight by `d`.
    #[inline]
    pub fn decay(&mut self, d: f64) {
        self.w *= d;
        self.w2 *= d * d;
        self.ctt *= d;
        self.cty *= d;
        self.cyy *= d;
    }

    /// Adds a point of weight 1.
    #[inline]
    pub fn push(&mut self, t: f64, y: f64) {
        self.w += 1.0;
        self.w2 += 1.0;
        let dt = t - self.mt;
        let dy = y - self.my;
        self.mt += dt / self.w;
        self.my += dy / self.w;
        self.ctt += dt * (t - self.mt);
        self.cty += dt * (y - self.my);
        self.cyy += dy * (y - self.my);
    }

    /// Effective number of points, `(Σw)² / Σw²`.
    #[inline]
    pub fn n_eff(&self) -> f64 {
        if self.w2 > 0.0 {
            self.w * self.w / self.w2
        } else {
            0.0
        }
    }

    /// Fitted slope (value per hour), if time has spread.
    #[inline]
    pub fn slope(&self) -> Option<f64> {
        (self.ctt > 1e-12 * self.w.max(1.0)).then(|| self.cty / self.ctt)
    }

    /// Fitted value at time `t`.
    #[inline]
    pub fn level_at(&self, t: f64) -> f64 {
        self.my + self.slope().unwrap_or(0.0) * (t - self.mt)
    }

    /// Unbiased estimate of the residual variance.
    pub fn residual_var(&self) -> f64 {
        let ss = match self.slope() {
            Some(b) => self.cyy - b * self.cty,
            None => self.cyy,
        };
        let n = self.n_eff();
        if self.w <= 0.0 || n <= 2.0 {
            return f64::INFINITY;
        }
        (ss.max(0.0) / self.w) * n / (n - 2.0)
    }

    /// Standard error of the slope.
    pub fn slope_se(&self) -> f64 {
        if self.ctt <= 0.0 || self.w <= 0.0 {
            return f64::INFINITY;
        }
        (self.residual_var() * self.w2 / (self.w * self.ctt)).sqrt()
    }

    /// Standard error of the fitted level at `t`.
    pub fn level_se(&self, t: f64) -> f64 {
        if self.w <= 0.0 || self.ctt <= 0.0 {
            return f64::INFINITY;
        }
        let d = t - self.mt;
        (self.residual_var() * (self.w2 / (self.w * self.w)) * (1.0 + d * d * self.w / self.ctt))
            .sqrt()
    }

    /// Coefficient of determination.
    pub fn r2(&self) -> f64 {
        if self.ctt <= 0.0 || self.cyy <= 0.0 {
            return 0.0;
        }
        (self.cty * self.cty / (self.ctt * self.cyy)).clamp(0.0, 1.0)
    }
}

/// What the fit says after a window (for tests and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Assessment {
    /// Slow-fit level at the window end (in the rule's orientation).
    pub level: f64,
    /// Slow-fit slope, per hour.
    pub slope: f64,
    /// Hours until the limit, if the slope points at it.
    pub ttl_h: Option<f64>,
    /// All firing gates pass.
    pub fire: bool,
    /// The relaxed hold condition of a firing alert passes.
    pub hold: bool,
    /// The series reached the limit.
    pub reached: bool,
}

/// State of one trend rule on one series: a fixed number of scalars.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrendState {
    /// Reference time (ms) that fit times are measured from.
    pub t0_ms: i64,
    /// End of the last window seen, if any (windows are of one size, so
    /// the distance between window mid-times is that between their ends).
    pub last_end_ms: OptMs,
    /// Slow fit (τ = lookback / 2).
    pub slow: EwFit,
    /// Fast fit (τ = lookback / 8).
    pub fast: EwFit,
    /// Low point of the fast level: follows it down at once and up with
    /// time constant `horizon`.
    #[serde(with = "exact_f64")]
    pub valley: f64,
    /// Last window mean (oriented).
    #[serde(with = "exact_f64")]
    pub last_y: f64,
    /// Decayed weight of the noise estimate.
    #[serde(with = "exact_f64")]
    pub noise_w: f64,
    /// Exponentially weighted mean of half the squared difference of
    /// consecutive window means: the point noise variance, unaffected by
    /// trends and by rare steps.
    #[serde(with = "exact_f64")]
    pub noise_var: f64,
    /// `started_at_ms` of the firing incident, if any.
    pub firing_since: OptMs,
    /// Since when a firing prediction has not held.
    pub failing_since: OptMs,
}

impl TrendState {
    /// Updates the fits with one window mean and evaluates the gates.
    /// `y` is in the rule's orientation (negated for falling rules).
    pub fn update(&mut self, rule: &TrendRule, start_ms: i64, end_ms: i64, y: f64) -> Assessment {
        let lim = orient(rule, rule.limit);
        let tau_h = (rule.lookback.as_secs_f64() / 3600.0 / 2.0).max(1e-6);
        let tau_fast_h = tau_h / 4.0;
        let mid_ms = start_ms + (end_ms - start_ms) / 2;
        if self.last_end_ms.is_none() {
            self.t0_ms = mid_ms;
            self.valley = y;
        }
        let prev_end = self.last_end_ms.get().unwrap_or(end_ms);
        let t = (mid_ms - self.t0_ms) as f64 / MS_PER_HOUR;
        if self.slow.w > 0.0 {
            let dt = ((end_ms - prev_end) as f64 / MS_PER_HOUR).max(0.0);
            let d = (-dt / tau_h).exp();
            self.slow.decay(d);
            self.fast.decay((-dt / tau_fast_h).exp());
            if self.last_end_ms.get() == Some(start_ms) {
                let diff = y - self.last_y;
                self.noise_w = self.noise_w * d + 1.0;
                self.noise_var += (0.5 * diff * diff - self.noise_var) / self.noise_w;
            }
        }
        self.last_y = y;
        self.slow.push(t, y);
        self.fast.push(t, y);
        self.last_end_ms = end_ms.into();
        let t_now = (end_ms - self.t0_ms) as f64 / MS_PER_HOUR;

        // Fast level and the relaxing low point.
        let s = if self.fast.n_eff() >= 8.0 {
            self.fast.level_at(t_now)
        } else {
            self.fast.my
        };
        if s < self.valley {
            self.valley = s;
        } else {
            let dt_h = (end_ms - prev_end) as f64 / MS_PER_HOUR;
            let relax = 1.0 - (-dt_h / (rule.horizon.as_secs_f64() / 3600.0).max(1e-6)).exp();
            self.valley += (s - self.valley) * relax;
        }

        let reached = y >= lim;
        let (Some(b), Some(b_fast)) = (self.slow.slope(), self.fast.slope()) else {
            return Assessment {
                level: s,
                reached,
                ..Assessment::default()
            };
        };
        let horizon_h = rule.horizon.as_secs_f64() / 3600.0;
        let noise = self.noise_var.sqrt();
        let se_fast = self.fast.slope_se();
        let slow_level = self.slow.level_at(t_now);
        let ttl =
            |level: f64, slope: f64| (slope > 0.0 && level < lim).then(|| (lim - level) / slope);

        // Slow path: the lookback is one straight line and the recent slope
        // agrees with it.
        let slow_t = b / self.slow.slope_se();
        let local_sd = noise.max(self.fast.residual_var().sqrt().min(2.0 * noise));
        let slow_linear = self.slow.residual_var().sqrt() <= 1.5 * local_sd + 0.1 * b.abs() * tau_h;
        let decelerating = b_fast < 0.9 * b - 2.5 * se_fast;
        let accelerating = b_fast > 1.1 * b + 2.5 * se_fast;
        let slow_ok = slow_t >= rule.min_t
            && self.slow.r2() >= rule.min_r2
            && slow_linear
            && !decelerating
            && !accelerating;
        // Fast path: the trend steepened (a fill started inside the
        // lookback); the recent span is one straight line.
        let fast_t = b_fast / se_fast;
        let fast_linear =
            self.fast.residual_var().sqrt() <= 1.5 * noise + 0.1 * b_fast.abs() * tau_fast_h;
        let fast_ok = accelerating && fast_t >= rule.min_t && fast_linear;

        let (level, slope) = if fast_ok {
            (s, b_fast)
        } else {
            (slow_level, b)
        };
        let ttl_h = ttl(level, slope);
        let within = |h: f64| ttl_h.is_some_and(|x| x <= h);
        let enough = self.slow.n_eff() >= f64::from(rule.min_points);
        let headroom = lim - s;
        let rise = s - self.valley;
        // The fast path sees a short span: it may extrapolate half as far.
        let reach = if fast_ok { 0.5 } else { 1.0 } * rule.max_extrapolation;
        let bounded = headroom <= reach * rise;
        // The newest window agrees with the fast level (not a cleanup drop
        // or a spike that is still being absorbed).
        let agrees = (y - s).abs() <= 4.0 * local_sd + 1e-9 * lim.abs();
        let fire =
            enough && !reached && agrees && (slow_ok || fast_ok) && within(horizon_h) && bounded;
        let hold = !reached && (fast_ok || slow_t >= 0.5 * rule.min_t) && within(1.5 * horizon_h);
        Assessment {
            level,
            slope,
            ttl_h,
            fire,
            hold,
            reached,
        }
    }

    /// Feeds one window of the series; appends a `firing` or `resolved`
    /// event on a transition. Returns the fit's assessment (`None` when the
    /// window was ignored: out of order, empty or non-finite).
    pub fn on_window(
        &mut self,
        rule: &TrendRule,
        rules: &RuleSet,
        w: &WindowAggregate,
        out: &mut Vec<AlertEvent>,
    ) -> Option<Assessment> {
        if self.last_end_ms.get().is_some_and(|e| w.start_ms < e) || w.agg.count == 0 {
            return None;
        }
        let raw = w.agg.mean();
        if !raw.is_finite() {
            return None;
        }
        let a = self.update(rule, w.start_ms, w.end_ms, orient(rule, raw));
        let now = w.end_ms;
        match self.firing_since.get() {
            None => {
                if a.fire {
                    self.firing_since = now.into();
                    self.failing_since = OptMs::NONE;
                    out.push(event(rule, rules, w, &a, AlertStatus::Firing, now));
                }
            }
            Some(started) => {
                let resolve_ms = i64::try_from(rule.resolve_after.as_millis()).unwrap_or(i64::MAX);
                let done = if a.reached {
                    true
                } else if a.hold || a.fire {
                    self.failing_since = OptMs::NONE;
                    false
                } else {
                    if self.failing_since.is_none() {
                        self.failing_since = now.into();
                    }
                    let since = self.failing_since.get().unwrap_or(now);
                    now - since >= resolve_ms
                };
                if done {
                    self.firing_since = OptMs::NONE;
                    self.failing_since = OptMs::NONE;
                    out.push(event(rule, rules, w, &a, AlertStatus::Resolved, started));
                }
            }
        }
        Some(a)
    }
}

/// Maps a value into the rule's orientation (rising: as is; falling:
/// negated). The mapping is its own inverse.
#[inline]
fn orient(rule: &TrendRule, v: f64) -> f64 {
    match rule.direction {
        Direction::Rising => v,
        Direction::Falling => -v,
    }
}

fn event(
    rule: &TrendRule,
    rules: &RuleSet,
    w: &WindowAggregate,
    a: &Assessment,
    status: AlertStatus,
    started: i64,
) -> AlertEvent {
    let s = &w.series;
    let subject = Subject {
        rule: &rule.name,
        kind: DetectorKind::Trend,
        severity: rule.severity,
        tenant: s.tenant(),
        agent: s.agent(),
        metric: Some(s.metric()),
        labels: s.labels(),
    };
    let series = subject.series_name();
    let level = orient(rule, a.level);
    let predicted = match (status, a.ttl_h) {
        (AlertStatus::Firing, Some(h)) => {
            Some(w.end_ms.saturating_add((h * MS_PER_HOUR).round() as i64))
        }
        _ => None,
    };
    let summary = match (status, predicted) {
        (AlertStatus::Firing, Some(p)) => {
            let at = format_utc_minute(p);
            let in_h = format!("{:.1}", a.ttl_h.unwrap_or(0.0));
            match &rule.summary {
                Some(t) => render(
                    t,
                    &[
                        ("rule", &rule.name),
                        ("tenant", s.tenant()),
                        ("agent", s.agent()),
                        ("metric", s.metric()),
                        ("labels", s.labels()),
                        ("series", &series),
                        ("limit", &fmt_value(rule.limit)),
                        ("value", &fmt_value(level)),
                        ("predicted_at", &at),
                        ("in_hours", &in_h),
                    ],
                ),
                None => format!(
                    "{series} on {} predicted to reach {} at {at} (in {in_h} h; now {})",
                    s.agent(),
                    fmt_value(rule.limit),
                    fmt_value(level)
                ),
            }
        }
        _ if a.reached => format!(
            "{series} on {} reached {}: prediction came true, threshold rules take over",
            s.agent(),
            fmt_value(rule.limit)
        ),
        _ => format!(
            "{series} on {} no longer predicted to reach {} within {} (now {})",
            s.agent(),
            fmt_value(rule.limit),
            humantime::format_duration(rule.horizon),
            fmt_value(level)
        ),
    };
    let mut e = subject.event(rules, status, started, w.end_ms, summary);
    if status == AlertStatus::Resolved && a.reached {
        e.resolve_reason = Some(ResolveReason::LimitReached);
    }
    e.value = Some(level);
    e.threshold = Some(rule.limit);
    e.predicted_at_ms = predicted;
    e.window_start_ms = Some(w.start_ms);
    e.window_end_ms = Some(w.end_ms);
    e
}
