//! Predictive trend detector: "this disk will be full within 24 h".
//!
//! # Algorithm
//!
//! Per (rule, series) the state is a fixed set of scalars (O(1), no history
//! buffer; 576 bytes):
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
//! * **Long fit** ([`CycleFit`]): a line plus a 24-hour cycle (its first
//!   harmonic), with `τ_long = horizon / 2` (12 h by default): slow fills
//!   near the top (0.06-0.25 %/h) rise less over the lookback than
//!   autocorrelated noise wanders, but not over a day, once the
//!   working-hours bump is fitted instead of left in the residuals. The
//!   cycle's amplitude is how far the daily high sits above the trend.
//! * **Multi-day fit**: the same with `1.5 × horizon` (36 h): the slowest
//!   fills, under wander of a point or two.
//! * **Noise**: an exponentially weighted mean of half the squared
//!   difference of consecutive window means (`v1`), i.e. the point noise
//!   variance, blind to trends and to rare steps. Real disk noise is
//!   autocorrelated (AR(1) with time constants of 10-120 minutes,
//!   working-hours bumps), and `v1` then sees only `(1 - ρ)` of it: every
//!   slope standard error is multiplied by `sqrt(2 v_res / v1 - 1)` (at
//!   least 1), the AR(1) variance factor `(1 + ρ) / (1 - ρ)` with `ρ`
//!   estimated from that fit's residual variance `v_res`.
//! * **Low point** (`valley`): follows the fast level down at once and up
//!   with time constant `horizon`: where the current rise started; and the
//!   time it was last set (`low_ms`), the age of the rise.
//! * **Cleared rise** (`crest`, `cleared`): the largest drop from a crest
//!   of the fast level to a new low, decaying with a 7-day time constant:
//!   how far this series rises and then gets cleared (log rotation, nightly
//!   backups, cleanups; on a noisy host the wander of the level).
//! * **Latch** (`spent`): the fast level at which the last incident fired.
//! * **Steps down** (`step_n`, `step_sum`): windows more than 4 noise sd
//!   below the fast fit's line are held back from the slow and fast fits;
//!   five in a row are a step (a cleanup): the past of both fits moves
//!   down by the step (their weighted mean; slope and residuals are
//!   unchanged), so a fill cleaned up part-way is still one straight line
//!   with its slope, not a drop that spoils both fits for hours. Shorter
//!   dips are left out of the fits. A drop within what the series clears
//!   anyway (1.5 × `cleared`) is not a step, and the long fit keeps every
//!   drop (a sawtooth or nightly growth with its drops removed would climb
//!   for ever).
//! * **Rise fit** ([`RiseFit`]): an exponentially weighted (τ_long)
//!   quadratic least-squares fit of the current rise from its onset: it
//!   restarts at every window whose fast level is within 1 local noise sd
//!   of the low, and moves with a step down like the fast and slow fits.
//!   It sees the whole rise where they see hours of it: whether the rise
//!   bends over, stays straight or accelerates, and its slope over all
//!   of it. Eleven scalars.
//!
//! A prediction fires when all of these hold (a conjunction of cheap
//! gates; each is aimed at one of the known traps of a plain
//! `predict_linear`):
//!
//! 1. the slow fit has at least `min_points` effective windows;
//! 2. one of three fits is trusted:
//!    * *slow path*: slope significant (`b / se(b) >= min_t`, `R² >=
//!      min_r2`; kills noisy flat series, also at 90 %+), the lookback is
//!      one straight line (slow residual sd <= 1.5 × local noise + 10 % of
//!      the rise per τ: kills bursts, steps and curves) and the fast slope
//!      neither decelerates nor accelerates beyond 10 % + 2.5 standard
//!      errors (kills fills that level off and cleanup edges);
//!    * *fast path*: the fast slope accelerated beyond the slow one (a fill
//!      started inside the lookback), or, on a rise younger than two
//!      lookbacks whose lookback is not one straight line (the onset is
//!      still in it), is at least the slow one; it is significant and the
//!      recent span is one straight line; the prediction then uses the fast
//!      fit;
//!    * *long path*: neither of those, but the long slope is significant
//!      (`min_t`, with the autocorrelation factor), the long fit has
//!      `4 × min_points` effective windows and `horizon` of history, and
//!      neither the slow nor the fast slope contradicts it (within 2.5
//!      standard errors of half to twice it); else, with two horizons of
//!      history, the same for the multi-day fit, which the long slope
//!      must not contradict either (at least half of it less 2.5 of the
//!      long fit's standard errors). The prediction then uses that fit's
//!      trend plus its cycle's amplitude (a disk is full when its daily
//!      high reaches the limit) and its slope. Both are solved only where
//!      the largest long slope the slow and fast slopes allow could pass
//!      gate 5;
//! 3. the chosen fit predicts the limit within `horizon`;
//! 4. the newest window agrees with the fast level within 4 noise sd (not
//!    the first window of a cleanup drop or a spike);
//! 5. **bounded extrapolation**: the headroom left, `limit - level`, is at
//!    most `k` (half that on the fast path until the series has `horizon`
//!    of history: the first night's backup and the first burst have no
//!    cleared rise to compare with yet) times the rise observed since
//!    the valley, and the rise is at least 1.5 × the cleared rise. `k`
//!    grows from 1 for a new rise to `max_extrapolation` for a rise that
//!    has lasted 8 h. A trend is not projected further than it has been
//!    seen to go: log rotation and nightly growth cleared every morning
//!    pull the valley back down at every cleanup and leave their size in
//!    `cleared`, so from the second time on they never count as a rise,
//!    while a real fill keeps its valley near the fill's start. On the
//!    long path the rise is the larger of that and what the long slope
//!    climbed over its fit's memory (twice its time constant), without the
//!    cleared-rise test: a noisy host's daily wander clears as much as a
//!    slow fill climbs in a day, and the long fit's significance is the
//!    evidence there;
//! 6. the series has not reached the limit (below) and the latch is armed:
//!    the fast level is below where the last incident fired, less
//!    `2 × noise sd + 0.5 % × |limit|` (a cleanup happened since);
//! 7. the rise does not **level off**: its curvature is not 2 standard
//!    errors (with the autocorrelation factor) below zero with its
//!    parabola peaking under the limit within `horizon`. A fill that
//!    saturates (an exponential approach to 80-95 %) is steepest at its
//!    onset; by the time it has risen far enough to pass gate 5 its slope
//!    has often halved, which the fast-over-slow tests of gate 2 miss
//!    because the slow fit still holds the flat stretch before the onset.
//!
//! The predicted time, tested against `horizon` in gate 3 and reported,
//! is `now + (limit - level) / slope` with, off the long path, the fast
//! level and the slope of the rise fit's straight line (all of the rise,
//! so a working-hours bump on a long fill does not tilt it as it tilts
//! the fast slope), or the rise fit's parabola when the rise accelerates
//! significantly (curvature ≥ 3 standard errors, its slope now agreeing
//! with the fast slope; on the slow path only for a rise 6 times what the
//! series clears anyway). On the long path it is that fit's daily high
//! (above), and before the rise fit has `min_points / 2` windows the
//! chosen fit's line.
//!
//! The labelled evaluations in `detect/trend_eval.rs` pin the behaviour:
//! per trap family, and on `vigil_sim::disklab`'s mixed fleet (1,000
//! disks × 14 days) against the DESIGN.md targets.
//!
//! While firing, the alert holds as long as the slow (or long) fit still
//! predicts the limit within 1.5 × `horizon` with half the `min_t`; it
//! resolves once that has been false for `resolve_after` (hysteresis: no
//! flapping around the horizon), or immediately when the series *reaches*
//! the limit: the fast level is within `0.5 × noise sd + 0.5 % × |limit|`
//! of it (a full disk sits just under 100 with clipped noise, so one
//! window touching 100 is not the test; the fast level averages tens of
//! windows, so a fraction of one window's noise sd is its spread, and two
//! sd called a slow fill on a noisy host full a day early). The prediction came true and the
//! threshold rules (e.g. `disk_critical`) own the incident from there; the
//! latch keeps a disk that stays at the limit from opening new incidents.
//!
//! A falling rule (`direction = "falling"`) runs the same algorithm on the
//! negated series and limit.

//!
//! The family (see [`super::registry`]) owns the `[[trend]]` rules
//! ([`TrendRule`], read by `parse`). Every watched series needs its
//! fits, so its state is dense: a [`TrendStore`] arena with one slot per
//! (series, trend rule watching it), contiguous per series, and a 32-bit
//! [`TrendSlot`] per series pointing at the first.

use std::collections::BTreeMap;
use std::time::Duration;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use super::lifecycle::{fmt_value, render, series_subject, Subject};
use super::registry::{
    retire_reason, ConstDefault, FamilyRule, RuleSet, SeriesCx, SeriesFamily, SeriesRule,
};
use super::sorted_map;
use crate::intern::grow_gently;
use crate::model::{
    AlertEvent, AlertStatus, DetectorKind, OptMs, ResolveReason, SeriesMeta, Severity,
    WindowAggregate,
};
use crate::rules::calendar::format_utc_minute;
use crate::rules::labels_match;
use crate::rules::read::{Cx, Val};

const MS_PER_HOUR: f64 = 3_600_000.0;
/// Part of `|limit|` within which the smoothed level counts as having
/// reached the limit, on top of [`REACHED_NOISE_SD`] noise sd.
const REACHED_TOL: f64 = 0.005;
/// Noise sd (of one window mean) within which the smoothed level counts
/// as having reached the limit, on top of [`REACHED_TOL`]. The fast level
/// averages tens of windows, so its own spread is a fraction of one
/// window's noise; two sd (the first issue-20 detector) called a slow fill
/// near the top of a noisy host "full" a day early and never predicted it.
const REACHED_NOISE_SD: f64 = 0.5;
/// Memory of the rises a series showed and then cleared, hours.
const CLEARED_TAU_H: f64 = 168.0;
/// A rise is extrapolated only once it exceeds the recently cleared rise
/// by this factor.
const REPEAT_MARGIN: f64 = 1.5;
/// Hours of rising after which a rise may be extrapolated the full
/// `max_extrapolation` (before: linearly from 1).
const RISE_MATURE_H: f64 = 8.0;
/// A window this many local noise sd below the fast fit's line starts a
/// candidate drop (the `agrees` gate's tolerance).
const STEP_SD: f64 = 4.0;
/// Consecutive windows that must stay that far below the line before the
/// drop counts as a step (a cleanup), not a dip or a spike.
const STEP_WINDOWS: u32 = 5;
/// The rise fit restarts while the fast level is within this many local
/// noise sd of the low.
const RISE_BAND_SD: f64 = 1.0;
/// A rise whose curvature is this many standard errors below zero, and
/// whose parabola peaks under the limit within the horizon, levels off.
const LEVEL_OFF_T: f64 = 2.0;
/// A rise whose curvature is this many standard errors above zero
/// accelerates: its predicted time is the parabola's.
const CURVE_T: f64 = 3.0;
/// On the slow path, a curvature counts only for a rise this many times
/// what the series clears anyway (or its local noise sd): a working-hours
/// bump on a slow fill is curved too.
const CURVE_RISE_MARGIN: f64 = 6.0;
/// Time constant of the multi-day fit ([`TrendState::days`]), in units of
/// the long fit's (`horizon / 2`): 36 h at the default horizon.
const DAYS_TAU: f64 = 3.0;
/// History the multi-day path needs, in units of the long fit's time
/// constant: two horizons (48 h by default).
const DAYS_HISTORY: f64 = 4.0;

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

/// [`exact_f64`] for an array of `f64` (their bit patterns).
mod exact_f64s {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[f64; N], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.to_bits()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[f64; N], D::Error> {
        let bits = Vec::<u64>::deserialize(d)?;
        let n = bits.len();
        let mut out = [0.0; N];
        if n != N {
            return Err(serde::de::Error::invalid_length(
                n,
                &"as many moments as the fit keeps",
            ));
        }
        for (o, b) in out.iter_mut().zip(bits) {
            *o = f64::from_bits(b);
        }
        Ok(out)
    }
}

/// [`exact_f64`] for an `f32` (its bit pattern as a `u32`).
mod exact_f32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(v.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        Ok(f32::from_bits(u32::deserialize(d)?))
    }
}

/// Effective number of points of weights summing to `w` whose squares
/// sum to `w2`: `w² / w2` (0 without weight).
#[inline]
fn n_eff(w: f64, w2: f64) -> f64 {
    if w2 > 0.0 {
        w * w / w2
    } else {
        0.0
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
        n_eff(self.w, self.w2)
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

/// Exponentially weighted quadratic least-squares fit of the current rise,
/// from its onset (the last window whose fast level was within
/// one local noise sd of the low) on, as decayed raw moments
/// of `x = (t - origin) / RISE_SCALE_H`. Where the fast and slow fits see
/// the last hours, this one sees the whole rise: whether it bends over (a
/// saturating plateau), stays straight or accelerates, and its slope over
/// all of it. O(1): 11 scalars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RiseFit {
    /// Onset of the rise, hours since the series' reference time.
    #[serde(with = "exact_f64")]
    pub origin: f64,
    /// Σw, Σw², Σwx, Σwx², Σwx³, Σwx⁴, Σwy, Σwxy, Σwx²y, Σwy².
    #[serde(with = "exact_f64s")]
    pub m: [f64; 10],
}

/// Time unit of [`RiseFit`]'s moments, hours: keeps `x⁴` of a rise of a
/// few days near 1-1,000.
const RISE_SCALE_H: f64 = 12.0;

/// `y = a + b x + c x²` fitted by [`RiseFit::solve`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quadratic {
    /// Value at `x = 0` (the onset).
    pub a: f64,
    /// Slope at the onset, per `RISE_SCALE_H` (12 h).
    pub b: f64,
    /// Curvature, per `RISE_SCALE_H`².
    pub c: f64,
    /// Unbiased residual variance.
    pub var: f64,
    /// Standard error of `c` for independent residuals.
    pub se_c: f64,
}

impl RiseFit {
    /// Starts again at time `t` (hours).
    pub fn reset(&mut self, t: f64) {
        *self = RiseFit {
            origin: t,
            m: [0.0; 10],
        };
    }

    /// Multiplies every past weight by `d`.
    pub fn decay(&mut self, d: f64) {
        for (i, v) in self.m.iter_mut().enumerate() {
            *v *= if i == 1 { d * d } else { d };
        }
    }

    /// Adds a point of weight 1 at time `t` (hours).
    pub fn push(&mut self, t: f64, y: f64) {
        let x = (t - self.origin) / RISE_SCALE_H;
        let x2 = x * x;
        let m = &mut self.m;
        m[0] += 1.0;
        m[1] += 1.0;
        m[2] += x;
        m[3] += x2;
        m[4] += x2 * x;
        m[5] += x2 * x2;
        m[6] += y;
        m[7] += x * y;
        m[8] += x2 * y;
        m[9] += y * y;
    }

    /// Moves every past value by `d` (the step down the fast and slow
    /// fits took: the rise goes on from the cleaned-up level).
    pub fn shift(&mut self, d: f64) {
        let m = &mut self.m;
        m[9] += 2.0 * d * m[6] + d * d * m[0];
        m[6] += d * m[0];
        m[7] += d * m[2];
        m[8] += d * m[3];
    }

    /// Effective number of points, `(Σw)² / Σw²`.
    pub fn n_eff(&self) -> f64 {
        n_eff(self.m[0], self.m[1])
    }

    /// Slope (per hour) of the straight line fitted to the rise.
    pub fn line_slope(&self) -> Option<f64> {
        let m = &self.m;
        let det = m[0] * m[3] - m[2] * m[2];
        (self.n_eff() >= 3.0 && det > 1e-12 * m[0] * m[3])
            .then(|| (m[0] * m[7] - m[2] * m[6]) / det / RISE_SCALE_H)
    }

    /// The quadratic through the rise, if at least 4 effective points
    /// spread in time determine it.
    pub fn solve(&self) -> Option<Quadratic> {
        let m = &self.m;
        let n = self.n_eff();
        if n < 4.0 {
            return None;
        }
        // Normal equations: [[m0 m2 m3] [m2 m3 m4] [m3 m4 m5]] p = [m6 m7 m8],
        // solved by the adjugate (symmetric, so six cofactors).
        let (s0, s1, s2, s3, s4) = (m[0], m[2], m[3], m[4], m[5]);
        let k00 = s2 * s4 - s3 * s3;
        let k01 = s2 * s3 - s1 * s4;
        let k02 = s1 * s3 - s2 * s2;
        let k11 = s0 * s4 - s2 * s2;
        let k12 = s1 * s2 - s0 * s3;
        let k22 = s0 * s2 - s1 * s1;
        let det = s0 * k00 + s1 * k01 + s2 * k02;
        // (Also rejects a NaN determinant.)
        if det.is_nan() || det <= 1e-12 * s0 * s2 * s4 {
            return None;
        }
        let (r0, r1, r2) = (m[6], m[7], m[8]);
        let a = (k00 * r0 + k01 * r1 + k02 * r2) / det;
        let b = (k01 * r0 + k11 * r1 + k12 * r2) / det;
        let c = (k02 * r0 + k12 * r1 + k22 * r2) / det;
        let ss = m[9] - (a * r0 + b * r1 + c * r2);
        let var = (ss.max(0.0) / s0) * n / (n - 3.0);
        // Weighted least squares: Var(p) ≈ var · (Σw² / Σw) · A⁻¹.
        let se_c = (var * (m[1] / s0) * (k22 / det)).max(0.0).sqrt();
        Some(Quadratic { a, b, c, var, se_c })
    }
}

/// Exponentially weighted least-squares fit of a line plus a daily cycle,
/// `y = a + b u + c cos ωt + d sin ωt` with `u = (t - origin) / 12 h` and
/// `ω = 2π / 24 h`, as decayed raw moments.
///
/// Disks that people use have a working-hours bump (0.5-4 points, on
/// weekdays): over a day it is as large as a slow fill near the top
/// climbs, and in a straight-line fit it sits in the residuals, where it
/// looks like strongly autocorrelated noise and kills the slope's
/// significance. The cycle's first harmonic takes most of it out of the
/// residuals, and its amplitude says how far above the trend the daily
/// high goes: a disk is full when its daily high reaches the limit, not
/// its trend. O(1): 17 scalars; the origin moves forward every 4 days so
/// the moments of `u` stay small.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CycleFit {
    /// Origin of `u`, hours since the series' reference time.
    #[serde(with = "exact_f64")]
    pub origin: f64,
    /// Σw², the upper triangle of XᵀWX for `x = (1, cos, sin, u)` (00 01
    /// 02 03 11 12 13 22 23 33; 00 is Σw), XᵀWy (4) and Σwy². (`u` last:
    /// its coefficient and variance come straight out of the Cholesky
    /// factor.)
    #[serde(with = "exact_f64s")]
    pub m: [f64; 16],
}

/// A solved [`CycleFit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cycle {
    /// Trend level at the fit's origin.
    pub a: f64,
    /// Trend slope, per hour.
    pub slope: f64,
    /// Amplitude of the daily cycle (its high is this far above the
    /// trend).
    pub amp: f64,
    /// Unbiased residual variance.
    pub var: f64,
    /// Standard error of the slope (per hour) for independent residuals.
    pub se_slope: f64,
}

/// Angular frequency of the daily cycle, per hour.
const CYCLE_OMEGA: f64 = std::f64::consts::TAU / 24.0;

/// How far (hours) a [`CycleFit`]'s origin may fall behind before it moves.
const CYCLE_RECENTRE_H: f64 = 96.0;

/// Index of `(i, j)` in the upper triangle of [`CycleFit::m`].
const fn cycle_idx(i: usize, j: usize) -> usize {
    let (i, j) = if i <= j { (i, j) } else { (j, i) };
    1 + i * 4 - i * (i + 1) / 2 + j
}

impl CycleFit {
    /// Multiplies every past weight by `d`.
    pub fn decay(&mut self, d: f64) {
        self.m[0] *= d * d;
        for v in &mut self.m[1..] {
            *v *= d;
        }
    }

    /// Adds a point of weight 1 at time `t` (hours) with the cycle's
    /// phase `(sin ωt, cos ωt)`, as `f64::sin_cos` gives it (computed once
    /// for every fit of a series).
    pub fn push(&mut self, t: f64, phase: (f64, f64), y: f64) {
        if self.m[1] <= 0.0 {
            self.origin = t;
        } else if t - self.origin > CYCLE_RECENTRE_H {
            self.recentre(t);
        }
        let x = [1.0, phase.1, phase.0, (t - self.origin) / RISE_SCALE_H];
        let m = &mut self.m;
        m[0] += 1.0;
        for i in 0..4 {
            for j in i..4 {
                m[cycle_idx(i, j)] += x[i] * x[j];
            }
            m[11 + i] += x[i] * y;
        }
        m[15] += y * y;
    }

    /// Moves the origin to `t`: `u` becomes `u - δ` in every moment.
    fn recentre(&mut self, t: f64) {
        let d = (t - self.origin) / RISE_SCALE_H;
        let m = &mut self.m;
        m[cycle_idx(3, 3)] += -2.0 * d * m[cycle_idx(0, 3)] + d * d * m[1];
        m[cycle_idx(0, 3)] -= d * m[1];
        m[cycle_idx(1, 3)] -= d * m[cycle_idx(0, 1)];
        m[cycle_idx(2, 3)] -= d * m[cycle_idx(0, 2)];
        m[14] -= d * m[11];
        self.origin = t;
    }

    /// Effective number of points, `(Σw)² / Σw²`.
    pub fn n_eff(&self) -> f64 {
        n_eff(self.m[1], self.m[0])
    }

    /// Solves the normal equations (Cholesky), if at least 6 effective
    /// points spread in time and phase determine them.
    pub fn solve(&self) -> Option<Cycle> {
        let m = &self.m;
        let n = self.n_eff();
        if n < 6.0 {
            return None;
        }
        let mut l = [[0.0f64; 4]; 4];
        for i in 0..4 {
            for j in 0..=i {
                let sum = (0..j).fold(m[cycle_idx(i, j)], |s, k| s - l[i][k] * l[j][k]);
                if i != j {
                    l[i][j] = sum / l[j][j];
                } else if sum > 1e-9 * m[cycle_idx(i, i)] {
                    l[i][i] = sum.sqrt();
                } else {
                    // (Also rejects NaN.)
                    return None;
                }
            }
        }
        // L z = r; then the slope is z₃ / l₃₃ with (A⁻¹)₃₃ = 1 / l₃₃², and
        // the residual sum of squares Σwy² - |z|².
        let r = [m[11], m[12], m[13], m[14]];
        let mut z = [0.0; 4];
        for i in 0..4 {
            z[i] = (0..i).fold(r[i], |s, k| s - l[i][k] * z[k]) / l[i][i];
        }
        let mut p = [0.0; 4];
        for i in (0..4).rev() {
            p[i] = (i + 1..4).fold(z[i], |s, k| s - l[k][i] * p[k]) / l[i][i];
        }
        let ss = m[15] - z.iter().map(|v| v * v).sum::<f64>();
        let var = (ss.max(0.0) / m[1]) * n / (n - 4.0);
        // Weighted least squares: Var(p) ≈ var · (Σw² / Σw) · A⁻¹.
        let se = (var * (m[0] / m[1])).max(0.0).sqrt() / l[3][3];
        Some(Cycle {
            a: p[0],
            slope: p[3] / RISE_SCALE_H,
            amp: p[1].hypot(p[2]),
            var,
            se_slope: se / RISE_SCALE_H,
        })
    }

    /// Trend level (without the cycle) of solution `c` at `t` (hours).
    pub fn trend_at(&self, c: &Cycle, t: f64) -> f64 {
        c.a + c.slope * (t - self.origin)
    }
}

/// What [`RiseFit`] says about the current rise (see
/// [`TrendState::update`]).
#[derive(Debug, Clone, Copy, PartialEq)]
struct RiseShape {
    /// Curvature over its standard error (with the autocorrelation
    /// factor): below `-LEVEL_OFF_T` the rise bends over, above
    /// `CURVE_T` it accelerates.
    curve_t: f64,
    /// Significantly concave and peaking below the limit within the
    /// horizon.
    levels_off: bool,
    /// The parabola's slope now, per hour.
    slope_now: f64,
    /// Slope of the straight line through the rise, per hour (NaN if
    /// undetermined).
    line_slope: f64,
    /// Hours until the parabola first reaches the limit (convex only).
    ttl_h: Option<f64>,
}

/// What the fit says after a window (for tests and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Assessment {
    /// Level the prediction starts from at the window end (in the rule's
    /// orientation): the chosen fit's, or the fast level when the rise
    /// fit gives the slope (module docs, "The predicted time").
    pub level: f64,
    /// Slope of the prediction, per hour.
    pub slope: f64,
    /// Hours until the limit, if the prediction reaches it.
    pub ttl_h: Option<f64>,
    /// All firing gates pass.
    pub fire: bool,
    /// The relaxed hold condition of a firing alert passes.
    pub hold: bool,
    /// The series reached the limit.
    pub reached: bool,
    /// Fast (lag-free) level at the window end, oriented.
    pub fast_level: f64,
    /// Which gates passed (diagnostics): bit `i` is [`GATE_NAMES`]`[i]`.
    pub gates: u16,
}

/// Names of the bits of [`Assessment::gates`], lowest first.
pub const GATE_NAMES: [&str; 15] = [
    "enough",
    "not_reached",
    "armed",
    "agrees",
    "slow_ok",
    "fast_ok",
    "long_ok",
    "within",
    "bounded",
    "long_t",
    "above_cleared",
    "slow_t",
    "slow_linear",
    "not_decelerating",
    "not_accelerating",
];

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
    /// Long fit (τ = horizon / 2), a line plus a daily cycle: sees slow
    /// fills through autocorrelated noise and a working-hours bump that
    /// the slow fit cannot tell from wander. (A state checkpointed before
    /// the cycle restores with it empty: its straight-line `long` fit is
    /// not read.)
    #[serde(default)]
    pub day: CycleFit,
    /// Multi-day fit (τ = 1.5 × horizon), a line plus a daily cycle: the
    /// slowest fills, which climb less in a day than the noise wanders.
    #[serde(default)]
    pub days: CycleFit,
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
    /// Fast level (oriented) at which the last incident fired: no new
    /// incident until the fast level has fallen below it again, less the
    /// reached tolerance (a cleanup), so a disk sitting at the limit holds
    /// one incident. NaN when armed.
    #[serde(default)]
    pub spent: Latch,
    /// Highest fast level since the last new low (oriented; NaN when
    /// restored from a checkpoint that predates it).
    #[serde(default = "nan", with = "exact_f64")]
    pub crest: f64,
    /// Largest recent drop from a crest to a new low, decaying with time
    /// constant `CLEARED_TAU_H`: how far this series rises and then
    /// gets cleared (rotation, nightly jobs, cleanups, slow wander). A
    /// rise must exceed it before it is extrapolated.
    #[serde(default, with = "exact_f64")]
    pub cleared: f64,
    /// End of the window that last set a new low (`valley`): the rise
    /// has lasted since then.
    #[serde(default)]
    pub low_ms: i64,
    /// Consecutive windows held back from the slow and fast fits because
    /// they lie far below the fast fit's line (a candidate step down).
    #[serde(default)]
    pub step_n: u32,
    /// Sum of those windows' deviations from the line (f32: only their
    /// mean, the size of the step, is used).
    #[serde(default, with = "exact_f32")]
    pub step_sum: f32,
    /// Quadratic fit of the current rise from its onset. Empty in a state
    /// checkpointed before it existed: it starts at the next onset, and
    /// until it has `min_points / 2` windows the chosen fit's line is used.
    #[serde(default)]
    pub rise: RiseFit,
}

fn nan() -> f64 {
    f64::NAN
}

/// Re-arm level of a trend state (see [`TrendState::spent`]); NaN = armed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Latch(#[serde(with = "exact_f64")] pub f64);

impl PartialEq for Latch {
    fn eq(&self, o: &Self) -> bool {
        self.0.to_bits() == o.0.to_bits()
    }
}

impl Default for Latch {
    fn default() -> Self {
        Latch(f64::NAN)
    }
}

impl Latch {
    /// Whether a new incident may fire at fast level `s`.
    #[inline]
    fn armed(self, s: f64) -> bool {
        self.0.is_nan() || s < self.0
    }
}

impl TrendState {
    /// Step-down handling (a cleanup): whether window `(t, y)` goes into
    /// the slow and fast fits. A window more than [`STEP_SD`] local noise
    /// sd below the fast fit's line is held back; when [`STEP_WINDOWS`]
    /// contiguous windows in a row are, the level stepped down: the past
    /// of both fits moves down by the mean deviation (their weighted mean
    /// value; the centred moments, hence slope and residuals, are
    /// unchanged) and the window goes in. A dip or spike that returns
    /// sooner is left out of the fits. Without this the drop sits in both
    /// fits' residuals and slopes for hours: a fill cleaned up part-way is
    /// neither one straight line nor significant until the drop has aged
    /// out. The long fit keeps the drop: its path has no cleared-rise test,
    /// and a sawtooth or nightly growth with its drops removed would be a
    /// staircase climbing for ever. For the same reason a drop no larger
    /// than [`REPEAT_MARGIN`] × the cleared rise is what this series
    /// clears anyway (log rotation on a fill) and goes in as it is, and a
    /// step's size is remembered in `cleared` unless an incident fired on
    /// the rise (then it was a fill's cleanup; see [`Self::update`]).
    /// Returns (the window goes into the fits, a step was taken).
    fn step_down(&mut self, lim: f64, t: f64, y: f64, contiguous: bool) -> (bool, f64) {
        if !contiguous || self.fast.n_eff() < 8.0 {
            self.step_n = 0;
            self.step_sum = 0.0;
            return (true, 0.0);
        }
        let sd = self.noise_var.sqrt().max(self.fast.residual_var().sqrt());
        let dev = y - self.fast.level_at(t);
        if dev >= -(STEP_SD * sd + REACHED_TOL * lim.abs()) || -dev <= REPEAT_MARGIN * self.cleared
        {
            self.step_n = 0;
            self.step_sum = 0.0;
            return (true, 0.0);
        }
        self.step_n += 1;
        self.step_sum += dev as f32;
        if self.step_n < STEP_WINDOWS {
            return (false, 0.0);
        }
        let d = f64::from(self.step_sum) / f64::from(self.step_n);
        self.slow.my += d;
        self.fast.my += d;
        if self.spent.0.is_nan() {
            self.cleared = self.cleared.max(-d);
        }
        self.step_n = 0;
        self.step_sum = 0.0;
        (true, d)
    }

    /// Autocorrelated noise: the lag-1 estimate `v1` sees only `(1 - ρ)`
    /// of the variance a fit's residuals show (`v_res`); a slope's (or
    /// curvature's) standard error grows by about `sqrt((1 + ρ) / (1 - ρ))
    /// = sqrt(2 v_res / v1 - 1)`, at least 1.
    fn ar_factor(&self, v_res: f64) -> f64 {
        let v1 = self.noise_var.max(1e-12);
        (2.0 * v_res / v1 - 1.0).max(1.0).sqrt()
    }

    /// What the rise fit says at `t_now` (hours), if it has at least
    /// half of `min_points` windows and its normal equations are solvable.
    fn rise_shape(
        &self,
        rule: &TrendRule,
        t_now: f64,
        lim: f64,
        horizon_h: f64,
    ) -> Option<RiseShape> {
        if self.rise.n_eff() < 0.5 * f64::from(rule.min_points) {
            return None;
        }
        let q = self.rise.solve()?;
        let se_c = q.se_c * self.ar_factor(q.var);
        let curve_t = if se_c > 0.0 { q.c / se_c } else { 0.0 };
        let x0 = (t_now - self.rise.origin) / RISE_SCALE_H;
        let x1 = x0 + horizon_h / RISE_SCALE_H;
        let at = |x: f64| q.a + q.b * x + q.c * x * x;
        // The parabola's highest point over the next horizon.
        let vertex = if q.c != 0.0 {
            -q.b / (2.0 * q.c)
        } else {
            f64::NAN
        };
        let peak = if q.c < 0.0 && vertex > x0 && vertex < x1 {
            at(vertex)
        } else {
            at(x0).max(at(x1))
        };
        // Its first crossing of the limit from now on (convex only).
        let ttl_h = (q.c > 0.0)
            .then_some(q.b * q.b - 4.0 * q.c * (q.a - lim))
            .filter(|d| *d >= 0.0)
            .map(|d| (-q.b + d.sqrt()) / (2.0 * q.c))
            .filter(|x| *x >= x0)
            .map(|x| (x - x0) * RISE_SCALE_H);
        Some(RiseShape {
            curve_t,
            levels_off: curve_t <= -LEVEL_OFF_T && peak < lim,
            slope_now: (q.b + 2.0 * q.c * x0) / RISE_SCALE_H,
            line_slope: self.rise.line_slope().unwrap_or(f64::NAN),
            ttl_h,
        })
    }

    /// Updates the fits with one window mean and evaluates the gates.
    /// `y` is in the rule's orientation (negated for falling rules).
    pub fn update(&mut self, rule: &TrendRule, start_ms: i64, end_ms: i64, y: f64) -> Assessment {
        let lim = orient(rule, rule.limit);
        let tau_h = (rule.lookback.as_secs_f64() / 3600.0 / 2.0).max(1e-6);
        let tau_fast_h = tau_h / 4.0;
        let tau_long_h = (rule.horizon.as_secs_f64() / 3600.0 / 2.0).max(tau_h);
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
            let d_long = (-dt / tau_long_h).exp();
            self.day.decay(d_long);
            self.days.decay((-dt / (DAYS_TAU * tau_long_h)).exp());
            self.rise.decay(d_long);
            if self.last_end_ms.get() == Some(start_ms) {
                let diff = y - self.last_y;
                self.noise_w = self.noise_w * d + 1.0;
                self.noise_var += (0.5 * diff * diff - self.noise_var) / self.noise_w;
            }
        }
        self.last_y = y;
        let (fit, step) = self.step_down(lim, t, y, prev_end == start_ms);
        let stepped = step != 0.0;
        if stepped {
            self.rise.shift(step);
        }
        if fit {
            self.slow.push(t, y);
            self.fast.push(t, y);
            self.rise.push(t, y);
        }
        let phase = (CYCLE_OMEGA * t).sin_cos();
        self.day.push(t, phase, y);
        self.days.push(t, phase, y);
        self.last_end_ms = end_ms.into();
        let t_now = (end_ms - self.t0_ms) as f64 / MS_PER_HOUR;

        // Fast level and the relaxing low point.
        let s = if self.fast.n_eff() >= 8.0 {
            self.fast.level_at(t_now)
        } else {
            self.fast.my
        };
        let dt_h = ((end_ms - prev_end) as f64 / MS_PER_HOUR).max(0.0);
        self.cleared *= (-dt_h / CLEARED_TAU_H).exp();
        // (The first window after a start or a long gap starts a crest.)
        if self.crest.is_nan() || s > self.crest || self.slow.w <= 1.0 {
            self.crest = s;
        }
        let prev_valley = self.valley;
        if s < self.valley {
            self.valley = s;
            self.low_ms = end_ms;
            // A step down the fits took at once clears the whole drop;
            // but after an incident fired on this rise (the latch is set)
            // the drop is the cleanup of a fill, not a rise this series
            // repeats: it counts only down to the old low, as a smoothed
            // fall would, so a full disk cleaned to 40 % and filling
            // again is predicted again.
            let floor = if stepped && !self.spent.0.is_nan() {
                s.max(prev_valley)
            } else {
                s
            };
            self.cleared = self.cleared.max(self.crest - floor);
            self.crest = s;
        } else {
            let relax = 1.0 - (-dt_h / (rule.horizon.as_secs_f64() / 3600.0).max(1e-6)).exp();
            self.valley += (s - self.valley) * relax;
        }

        // The rise fit starts where the fast level leaves the bottom band
        // (within RISE_BAND_SD local noise sd of the low): its origin is
        // the onset of the current rise, not a low days before it.
        let band_sd = if self.fast.n_eff() >= 8.0 {
            self.noise_var.sqrt().max(self.fast.residual_var().sqrt())
        } else {
            self.noise_var.sqrt()
        };
        if s <= self.valley + RISE_BAND_SD * band_sd {
            self.rise.reset(t);
            if fit {
                self.rise.push(t, y);
            }
        }

        // The limit is reached when the smoothed level is within noise of
        // it: a full disk sits just under 100 (clipped noise), and one
        // window touching 100 is not "full" yet.
        // The latch re-arms only on a clear fall (two noise sd), so a disk
        // wandering at the limit holds its one incident.
        let tol = 2.0 * self.noise_var.sqrt() + REACHED_TOL * lim.abs();
        let reached =
            s >= lim - (REACHED_NOISE_SD * self.noise_var.sqrt() + REACHED_TOL * lim.abs());
        if s < self.spent.0 - tol {
            self.spent = Latch::default();
        }
        let (Some(b), Some(b_fast)) = (self.slow.slope(), self.fast.slope()) else {
            return Assessment {
                level: s,
                reached,
                fast_level: s,
                ..Assessment::default()
            };
        };
        let horizon_h = rule.horizon.as_secs_f64() / 3600.0;
        let min_t = rule.min_t;
        let noise = self.noise_var.sqrt();
        let se_fast = self.fast.slope_se();
        let slow_level = self.slow.level_at(t_now);
        let ttl =
            |level: f64, slope: f64| (slope > 0.0 && level < lim).then(|| (lim - level) / slope);

        // Slow path: the lookback is one straight line and the recent slope
        // agrees with it.
        // Every standard error carries the autocorrelation factor.
        let infl = |v_res: f64| self.ar_factor(v_res);
        let se_fast = se_fast * infl(self.fast.residual_var());
        let slow_t = b / (self.slow.slope_se() * infl(self.slow.residual_var()));
        let local_sd = noise.max(self.fast.residual_var().sqrt());
        let slow_linear = self.slow.residual_var().sqrt() <= 1.5 * local_sd + 0.1 * b.abs() * tau_h;
        let decelerating = b_fast < 0.9 * b - 2.5 * se_fast;
        let accelerating = b_fast > 1.1 * b + 2.5 * se_fast;
        let slow_ok = slow_t >= min_t
            && self.slow.r2() >= rule.min_r2
            && slow_linear
            && !decelerating
            && !accelerating;
        // Fast path: the trend steepened (a fill started inside the
        // lookback); the recent span is one straight line.
        let fast_t = b_fast / se_fast;
        let age_h = (end_ms - self.low_ms.max(self.t0_ms)) as f64 / MS_PER_HOUR;
        // The rise began within two lookbacks (a saturating plateau,
        // curved for longer, must not slip through the gap below).
        let young = age_h <= 4.0 * tau_h;
        let fast_linear =
            self.fast.residual_var().sqrt() <= 1.5 * noise + 0.1 * b_fast.abs() * tau_fast_h;
        // It also covers the gap between the paths on a young rise: the
        // fast slope is no flatter than the slow one, but the lookback
        // still holds the fill's onset, so the slow fit is not one straight
        // line and the fast one is not steeper by 2.5 standard errors.
        let fast_ok = (accelerating || (young && !slow_linear && b_fast >= b))
            && fast_t >= min_t
            && fast_linear;

        // Long paths: a slow fill, significant over a long fit even with
        // autocorrelated noise and a working-hours cycle, that the slow and
        // fast fits do not contradict. The long fit (τ = horizon / 2) first;
        // then, once the series has two horizons of history, the multi-day
        // fit (τ = 1.5 × horizon), which the long fit must not contradict
        // either. Each predicts from its trend plus its cycle's amplitude
        // (the daily high: a disk is full when that reaches the limit).
        let rise = s - self.valley;
        let headroom = lim - s;
        // A young rise (a nightly job, a burst, a ramp that may stop) is
        // extrapolated at most as far as it rose; the full reach comes
        // with RISE_MATURE_H of rising.
        let max_ex = rule.max_extrapolation;
        let k = 1.0 + (max_ex - 1.0).max(0.0) * (age_h / RISE_MATURE_H).min(1.0);
        let k = k.min(max_ex.max(0.0));
        let slow_se = self.slow.slope_se() * infl(self.slow.residual_var());
        let agrees_with = |bl: f64| {
            b >= 0.5 * bl - 2.5 * slow_se
                && b <= 2.0 * bl + 2.5 * slow_se
                && b_fast >= 0.5 * bl - 2.5 * se_fast
        };
        // Those agreement tests cap a long slope, and with it how far a
        // long path may extrapolate (gate 5): where even the cap cannot
        // reach the limit, no long fit is solved (most windows of a fleet,
        // on flat series, stop here).
        let b_cap = 2.0 * (b + 2.5 * slow_se).min(b_fast + 2.5 * se_fast);
        // (The multi-day fit is tried only with two horizons of history.)
        let days_tau = if t_now >= DAYS_HISTORY * tau_long_h {
            DAYS_TAU * tau_long_h
        } else {
            0.0
        };
        let long_try = !slow_ok
            && !fast_ok
            && self.day.n_eff() >= 4.0 * f64::from(rule.min_points)
            && t_now >= 2.0 * tau_long_h
            && headroom <= k * rise.max(b_cap * 2.0 * days_tau.max(tau_long_h));
        // (level, slope, time constant) of the long path that passes.
        let mut long: Option<(f64, f64, f64)> = None;
        let mut long_t = f64::NAN;
        if let Some(c) = long_try.then(|| self.day.solve()).flatten() {
            let se = c.se_slope * infl(c.var);
            long_t = c.slope / se;
            if long_t >= min_t && agrees_with(c.slope) {
                long = Some((self.day.trend_at(&c, t_now) + c.amp, c.slope, tau_long_h));
            } else if days_tau > 0.0
                // (The long slope caps the multi-day one as well.)
                && headroom <= k * rise.max(b_cap.min(2.0 * (c.slope + 2.5 * se)) * 2.0 * days_tau)
            {
                if let Some(w) = self.days.solve() {
                    let days_t = w.slope / (w.se_slope * infl(w.var));
                    if days_t >= min_t
                        && agrees_with(w.slope)
                        && c.slope >= 0.5 * w.slope - 2.5 * se
                    {
                        let level = self.days.trend_at(&w, t_now) + w.amp;
                        long = Some((level, w.slope, DAYS_TAU * tau_long_h));
                    }
                    long_t = long_t.max(days_t);
                }
            }
        }
        let long_ok = long.is_some();
        let (level, slope) = match (fast_ok, long) {
            (true, _) => (s, b_fast),
            (false, Some((level, b_long, _))) => (level, b_long),
            (false, None) => (slow_level, b),
        };
        // The rise since its onset, as a quadratic (see [`RiseFit`]); only
        // where a fit could fire or hold (most windows of a fleet are on
        // flat series, and the solve is a tenth of a window's work).
        let may_hold = fast_ok || long_ok || slow_t >= 0.5 * min_t;
        let shape = (slow_ok || may_hold)
            .then(|| self.rise_shape(rule, t_now, lim, horizon_h))
            .flatten();
        // A rise that bends over below the limit (significantly concave,
        // its parabola peaking under the limit within the horizon) levels
        // off: a saturating plateau, not a fill.
        let levels_off = shape.is_some_and(|q| q.levels_off);
        // The predicted time. Off the long path, the rise fit has seen the
        // whole rise where the fast and slow fits see hours of it: if the
        // rise significantly accelerates (and the parabola's slope now
        // agrees with the fast fit's; on the slow path only for a rise far
        // above what this series clears, not a working-hours bump), the
        // parabola's crossing; else the straight line through the rise,
        // from the fast level. On the long path, and for a rise too short
        // to fit, the path's own line.
        let path_ttl = ttl(level, slope);
        let (level, slope, ttl_h) = match shape.filter(|_| !long_ok && path_ttl.is_some()) {
            Some(q)
                if q.curve_t >= CURVE_T
                    && (q.slope_now - b_fast).abs() <= 2.5 * se_fast + 0.1 * b_fast.abs()
                    && (fast_ok || rise >= CURVE_RISE_MARGIN * self.cleared.max(local_sd))
                    && q.ttl_h.is_some() =>
            {
                (s, q.slope_now, q.ttl_h)
            }
            Some(q) if q.line_slope > 0.0 => (s, q.line_slope, ttl(s, q.line_slope)),
            _ => (level, slope, path_ttl),
        };
        let within = |h: f64| ttl_h.is_some_and(|x| x <= h);
        let enough = self.slow.n_eff() >= f64::from(rule.min_points);
        // The fast path sees a short span: it may extrapolate half as far
        // until the series has a horizon of history (the first night's
        // backup, the first burst), then as far as the slow path.
        let seasoned = t_now >= horizon_h;
        let reach = if fast_ok && !seasoned { 0.5 } else { 1.0 } * k;
        let mut bounded = headroom <= reach * rise && rise >= REPEAT_MARGIN * self.cleared;
        // The long path's evidence is the long fit itself (significant
        // with the autocorrelation factor over a day): its rise is what the
        // long slope climbed over the fit's memory, and the cleared-rise
        // test does not apply (a noisy host's wander and a working-hours
        // bump clear as much every day as a slow fill climbs).
        if let Some((_, b_long, tau)) = long {
            bounded = headroom <= k * rise.max(b_long * 2.0 * tau);
        }
        // The newest window agrees with the fast level (not a cleanup drop
        // or a spike that is still being absorbed).
        let agrees = (y - s).abs() <= 4.0 * local_sd + 1e-9 * lim.abs();
        let armed = self.spent.armed(s);
        let fire = enough
            && !reached
            && armed
            && agrees
            && (slow_ok || fast_ok || long_ok)
            && within(horizon_h)
            && bounded
            && !levels_off;
        let hold = !reached && may_hold && within(1.5 * horizon_h);
        let gates = [
            enough,
            !reached,
            armed,
            agrees,
            slow_ok,
            fast_ok,
            long_ok,
            within(horizon_h),
            bounded,
            long_t >= min_t,
            rise >= REPEAT_MARGIN * self.cleared,
            slow_t >= min_t,
            slow_linear,
            !decelerating,
            !accelerating,
        ]
        .iter()
        .enumerate()
        .fold(0u16, |g, (i, &x)| g | (u16::from(x) << i));
        Assessment {
            level,
            slope,
            ttl_h,
            fire,
            hold,
            reached,
            fast_level: s,
            gates,
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
                    self.spent = Latch(a.fast_level);
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

#[cfg(test)]
mod latch_tests {
    //! Regression tests for issue 20, cause 1: re-alerting at the limit.

    use super::*;
    use crate::model::{Agg, SeriesMeta};

    const MIN: i64 = 60_000;

    /// Feeds minute values to the default `disk_full_predicted` rule;
    /// returns its events with the minute of each.
    fn events(values: &[f64]) -> Vec<(usize, AlertEvent)> {
        let rules = RuleSet::default_rules();
        let Some(rule) = rules.trend.iter().find(|r| r.name == "disk_full_predicted") else {
            panic!("default rules lack disk_full_predicted");
        };
        let series = SeriesMeta::new("t", "h", "disk_used_pct", "mount=/");
        let mut st = TrendState::default();
        let mut out = Vec::new();
        let mut events = Vec::new();
        for (i, &v) in values.iter().enumerate() {
            let start = i as i64 * MIN;
            let w = WindowAggregate {
                series: series.clone(),
                start_ms: start,
                end_ms: start + MIN,
                agg: Agg::new(start, v),
            };
            out.clear();
            st.on_window(rule, &rules, &w, &mut out);
            events.extend(out.drain(..).map(|e| (i, e)));
        }
        events
    }

    /// Feeds minute values; returns the events as (minute, status, summary).
    fn run(values: &[f64]) -> Vec<(usize, AlertStatus, String)> {
        events(values)
            .into_iter()
            .map(|(i, e)| (i, e.status, e.summary))
            .collect()
    }

    /// Deterministic noise in [-1, 1].
    fn wiggle(i: usize) -> f64 {
        let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
        2.0 * (x as f64 / (1u64 << 53) as f64) - 1.0
    }

    /// 12 h flat at 40, a fill of 2 %/h to 100 (30 h), then `hold_h`
    /// hours of a full disk: 99.8 ± 0.4, clipped at 100.
    fn fill_then_full(hold_h: usize) -> Vec<f64> {
        let mut v = Vec::new();
        for i in 0..(12 + 30 + hold_h) * 60 {
            let h = i as f64 / 60.0;
            let c = if h < 12.0 {
                40.0
            } else {
                40.0 + 2.0 * (h - 12.0)
            };
            let x = if c >= 100.0 {
                99.8 + 0.4 * wiggle(i)
            } else {
                c + 0.3 * wiggle(i)
            };
            v.push(x.min(100.0));
        }
        v
    }

    #[test]
    fn a_full_disk_sitting_just_under_the_limit_holds_one_incident() {
        let v = fill_then_full(48);
        assert!(v.iter().filter(|&&x| x == 100.0).count() > 100);
        let ev = run(&v);
        let st: Vec<AlertStatus> = ev.iter().map(|e| e.1).collect();
        assert_eq!(st, [AlertStatus::Firing, AlertStatus::Resolved], "{ev:?}");
        assert!(ev[1].2.contains("reached"), "{}", ev[1].2);
        // Fired long before full (42 h), resolved near it.
        assert!(ev[0].0 < 30 * 60, "fired at minute {}", ev[0].0);
        assert!(ev[1].0 > 40 * 60, "resolved at minute {}", ev[1].0);
    }

    #[test]
    fn one_window_touching_the_limit_does_not_resolve() {
        // A fill at 2 %/h with a single window at 100 when the level is
        // about 90: the incident stays open.
        let mut v = fill_then_full(0);
        v.truncate(37 * 60);
        let spike = 37 * 60 - 10;
        v[spike] = 100.0;
        let ev = run(&v);
        let st: Vec<AlertStatus> = ev.iter().map(|e| e.1).collect();
        assert_eq!(st, [AlertStatus::Firing], "{ev:?}");
    }

    #[test]
    fn a_state_checkpointed_before_issue_20_restores() {
        let rules = RuleSet::default_rules();
        let rule = &rules.trend[0];
        let series = SeriesMeta::new("t", "h", "disk_used_pct", "mount=/");
        let mut st = TrendState::default();
        let mut out = Vec::new();
        for i in 0..300 {
            let start = i * MIN;
            let w = WindowAggregate {
                series: series.clone(),
                start_ms: start,
                end_ms: start + MIN,
                agg: Agg::new(start, 50.0 + wiggle(i as usize)),
            };
            st.on_window(rule, &rules, &w, &mut out);
        }
        let Ok(serde_json::Value::Object(mut m)) = serde_json::to_value(&st) else {
            panic!("state does not serialize to an object");
        };
        for k in [
            "day", "days", "spent", "crest", "cleared", "low_ms", "step_n", "step_sum", "rise",
        ] {
            assert!(m.remove(k).is_some(), "{k} not serialized");
        }
        let back: TrendState = match serde_json::from_value(serde_json::Value::Object(m)) {
            Ok(b) => b,
            Err(e) => panic!("old state does not restore: {e}"),
        };
        assert_eq!((back.slow, back.fast), (st.slow, st.fast));
        assert!(back.spent.0.is_nan() && back.crest.is_nan());
        assert_eq!(
            (back.day, back.days),
            (CycleFit::default(), CycleFit::default())
        );
        assert_eq!((back.step_n, back.step_sum), (0, 0.0));
        assert_eq!(back.rise, RiseFit::default());
        // Same state round trip: exact.
        let json = serde_json::to_string(&st).unwrap_or_default();
        let again: Result<TrendState, _> = serde_json::from_str(&json);
        assert_eq!(again.ok().as_ref(), Some(&st));
    }

    /// The rise fit against a direct weighted least-squares solution.
    #[test]
    fn the_rise_fit_recovers_a_parabola_and_its_line() {
        // y = 40 + 3 t - 0.05 t² (t in hours from the onset), every 10 min,
        // weights decaying by d per point, plus a shift of -5 at the end.
        let (a, b, c) = (40.0, 3.0, -0.05);
        let mut f = RiseFit::default();
        f.reset(100.0);
        let d: f64 = 0.995;
        let mut pts = Vec::new();
        for i in 0..200 {
            let t = i as f64 / 6.0;
            f.decay(d);
            f.push(100.0 + t, a + b * t + c * t * t);
            pts.push(t);
        }
        f.shift(-5.0);
        let Some(q) = f.solve() else {
            panic!("a parabola over 33 h does not solve")
        };
        let h = RISE_SCALE_H;
        assert!((q.a - (a - 5.0)).abs() < 1e-6, "{q:?}");
        assert!((q.b - b * h).abs() < 1e-6, "{q:?}");
        assert!((q.c - c * h * h).abs() < 1e-6, "{q:?}");
        assert!(q.var < 1e-9 && q.se_c < 1e-4, "{q:?}");
        // n_eff from the weights d^k.
        let w: Vec<f64> = (0..200).rev().map(|k| d.powi(k)).collect();
        let (sw, sw2): (f64, f64) = (w.iter().sum(), w.iter().map(|x| x * x).sum());
        assert!((f.n_eff() - sw * sw / sw2).abs() < 1e-6);
        // The straight line through it: weighted least squares by hand.
        let mt = w.iter().zip(&pts).map(|(w, t)| w * t).sum::<f64>() / sw;
        let y = |t: f64| a + b * t + c * t * t;
        let my = w.iter().zip(&pts).map(|(w, &t)| w * y(t)).sum::<f64>() / sw;
        let ctt: f64 = w
            .iter()
            .zip(&pts)
            .map(|(w, t)| w * (t - mt) * (t - mt))
            .sum();
        let cty: f64 = w
            .iter()
            .zip(&pts)
            .map(|(w, &t)| w * (t - mt) * (y(t) - my))
            .sum();
        let line = f.line_slope().unwrap_or(f64::NAN);
        assert!((line - cty / ctt).abs() < 1e-9, "{line} vs {}", cty / ctt);
        // Too few points or no spread in time: no answer, no NaN.
        let mut g = RiseFit::default();
        g.reset(0.0);
        g.push(0.0, 1.0);
        g.push(0.0, 2.0);
        assert!(g.solve().is_none() && g.line_slope().is_none());
    }

    /// Minute values of a rise from `base` at `on_h` to `cap` with time
    /// constant `tc_h` (a saturating plateau), with deterministic noise.
    fn saturating(base: f64, cap: f64, on_h: f64, tc_h: f64, days: usize) -> Vec<f64> {
        (0..days * 1440)
            .map(|i| {
                let h = i as f64 / 60.0;
                let c = if h < on_h {
                    base
                } else {
                    cap - (cap - base) * (-(h - on_h) / tc_h).exp()
                };
                c + 0.3 * wiggle(i)
            })
            .collect()
    }

    #[test]
    fn a_rise_that_levels_off_below_the_limit_is_not_predicted() {
        // From 65 towards 92 with a 6 h time constant, 2 days after the
        // start (the fast path has its full reach): steepest at the onset
        // (4.5 %/h), a straight line from anywhere on its first hours
        // reaches 100 within 24 h. Before issue 20's fourth slice it fired.
        let v = saturating(65.0, 92.0, 48.0, 6.0, 5);
        let ev = run(&v);
        assert!(ev.is_empty(), "{ev:?}");
        // The same onset as a linear fill at the same first rate does
        // fire, long before full.
        let fill: Vec<f64> = (0..5 * 1440)
            .map(|i| {
                let h = i as f64 / 60.0;
                (65.0 + 1.5 * (h - 48.0).max(0.0)).min(100.0) + 0.3 * wiggle(i)
            })
            .collect();
        let ev = run(&fill);
        let full_min = (48.0 + 35.0 / 1.5) * 60.0;
        assert!(
            ev.first().is_some_and(|e| e.1 == AlertStatus::Firing
                && (e.0 as f64) < full_min - 8.0 * 60.0),
            "{ev:?}"
        );
    }

    /// Minute of the first firing and its predicted minute.
    fn first_prediction(values: &[f64]) -> Option<(usize, f64)> {
        events(values)
            .into_iter()
            .find(|(_, e)| e.status == AlertStatus::Firing)
            .and_then(|(i, e)| Some((i, e.predicted_at_ms? as f64 / MIN as f64)))
    }

    /// Working-hours bump in [0, 1] at minute `i`: a sin² from 08:00 to
    /// 18:00 on weekdays (day 0 is a Monday).
    fn working_hours(i: usize) -> f64 {
        let (day, h) = (i / 1440 % 7, (i % 1440) as f64 / 60.0);
        if day < 5 && (8.0..18.0).contains(&h) {
            (std::f64::consts::PI * (h - 8.0) / 10.0).sin().powi(2)
        } else {
            0.0
        }
    }

    /// `days` of a disk at `base` filling at `rate` %/h from hour `on`,
    /// with a working-hours bump of `bump` points and AR(1) noise (sd
    /// 0.6, time constant 50 min), clipped at 100; and the minute it is
    /// full (curve plus bump at 100), if it fills.
    fn slow_fill(
        base: f64,
        on: f64,
        rate: f64,
        bump: f64,
        days: usize,
    ) -> (Vec<f64>, Option<usize>) {
        let mut ar = 0.0;
        let mut full = None;
        let v = (0..days * 1440)
            .map(|i| {
                let h = i as f64 / 60.0;
                ar = 0.98 * ar + 0.21 * wiggle(i);
                let use_ = base + rate * (h - on).max(0.0) + bump * working_hours(i);
                if use_ >= 100.0 && full.is_none() {
                    full = Some(i);
                }
                (use_ + ar).min(100.0)
            })
            .collect();
        (v, full)
    }

    #[test]
    fn the_cycle_fit_recovers_a_line_and_a_daily_cycle() {
        // 10 days of a line plus a daily cycle, decayed like the long fit:
        // exact, also after its origin moved forward (every 4 days).
        let mut f = CycleFit::default();
        let d = (-1.0f64 / 60.0 / 12.0).exp();
        let y = |t: f64| {
            40.0 + 0.05 * t + 1.5 * (CYCLE_OMEGA * t).cos() - 2.0 * (CYCLE_OMEGA * t).sin()
        };
        for i in 0..10 * 1440 {
            let t = i as f64 / 60.0;
            f.decay(d);
            f.push(t, (CYCLE_OMEGA * t).sin_cos(), y(t));
        }
        assert!(f.origin > 190.0, "origin {} did not move", f.origin);
        let Some(c) = f.solve() else {
            panic!("no solution");
        };
        assert!((c.slope - 0.05).abs() < 1e-6, "{c:?}");
        assert!((c.amp - 2.5).abs() < 1e-6, "{c:?}");
        assert!((f.trend_at(&c, 240.0) - 52.0).abs() < 1e-5, "{c:?}");
        assert!(c.var < 1e-8 && c.se_slope < 1e-5, "{c:?}");
        // Too few points, or all at one time: no solution.
        let mut g = CycleFit::default();
        for _ in 0..10 {
            g.push(5.0, (0.0, 1.0), 3.0);
        }
        assert!(g.solve().is_none());
    }

    #[test]
    fn a_flat_disk_with_a_working_hours_bump_is_not_predicted() {
        // 93-96 % with a 1-4 point weekday bump and wandering noise, 9
        // days: the cycle's amplitude brings the daily high near the
        // limit, but there is no trend to carry it there. (The first
        // morning's bump on a new series, 0.8 %/h at 97.5 %, is another
        // matter: without history it is a fill, and may be predicted.)
        for (base, bump) in [(95.0, 3.0), (93.0, 4.0), (96.0, 1.0)] {
            let (flat, full) = slow_fill(base, 0.0, 0.0, bump, 9);
            assert_eq!(full, None);
            let late: Vec<_> = run(&flat).into_iter().filter(|e| e.0 >= 1440).collect();
            assert_eq!(late, vec![], "flat at {base} with a bump of {bump}");
        }
    }

    #[test]
    fn an_accelerating_fill_is_predicted_from_its_curve() {
        // 30 % + 70 % × (t / 60 h)² from hour 36: full at hour 96. A
        // straight line through any recent span predicts it late (by
        // 45-60 % of the lead for the default rule before the rise fit).
        let on = 36.0;
        let v: Vec<f64> = (0..100 * 60)
            .map(|i| {
                let h = i as f64 / 60.0;
                let x = ((h - on) / 60.0).max(0.0);
                (30.0 + 70.0 * x.powi(2)).min(100.0) + 0.3 * wiggle(i)
            })
            .collect();
        let full = 96.0 * 60.0;
        let Some((fired, predicted)) = first_prediction(&v) else {
            panic!("an accelerating fill was not predicted")
        };
        let lead = full - fired as f64;
        let err = (predicted - full).abs() / lead;
        assert!(lead >= 8.0 * 60.0, "lead {} h", lead / 60.0);
        assert!(
            err <= 0.15,
            "predicted-time error {err:.3} (lead {:.1} h)",
            lead / 60.0
        );
    }

    #[test]
    fn a_young_series_extrapolates_a_fast_rise_half_as_far() {
        // The same fast rise (8 %/h from 30 %) 2 h after the series
        // started and 2 days after: the seasoned series fires earlier (it
        // may extrapolate the fast fit as far as the rise it saw; the
        // young one half as far: a first-night backup looks the same).
        let rise = |start_h: f64| -> Vec<f64> {
            (0..((start_h + 9.0) * 60.0) as usize)
                .map(|i| {
                    let h = i as f64 / 60.0;
                    (30.0 + 8.0 * (h - start_h).max(0.0)).min(100.0) + 0.2 * wiggle(i)
                })
                .collect()
        };
        let young = first_prediction(&rise(2.0)).map(|(i, _)| i as f64 / 60.0 - 2.0);
        let old = first_prediction(&rise(48.0)).map(|(i, _)| i as f64 / 60.0 - 48.0);
        let (Some(young), Some(old)) = (young, old) else {
            panic!("a fast rise was not predicted: young {young:?}, seasoned {old:?}")
        };
        // Full 8.75 h after the onset.
        assert!(
            old < young - 1.0,
            "seasoned fired {old:.1} h after the onset, young {young:.1} h"
        );
        assert!(8.75 - old >= 4.0, "seasoned lead {:.1} h", 8.75 - old);
    }

    #[test]
    fn a_cleanup_rearms_the_rule_for_the_next_fill() {
        // Full for 6 h, cleaned to 40, flat 12 h, then the same fill again.
        let mut v = fill_then_full(6);
        v.extend(fill_then_full(6));
        let ev = run(&v);
        let st: Vec<AlertStatus> = ev.iter().map(|e| e.1).collect();
        assert_eq!(
            st,
            [
                AlertStatus::Firing,
                AlertStatus::Resolved,
                AlertStatus::Firing,
                AlertStatus::Resolved
            ],
            "{ev:?}"
        );
    }
}

/// A predictive trend rule (`[[trend]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendRule {
    /// Unique rule name; part of the alert fingerprint.
    pub name: String,
    /// Metric the rule watches (window means are fitted).
    pub metric: String,
    /// Labels the series must carry with exactly these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The value the series must not reach (e.g. 100 for disk percent).
    pub limit: f64,
    /// Whether the series rises or falls towards `limit`.
    #[serde(default)]
    pub direction: Direction,
    /// Fire when the limit is predicted within this time.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// Memory of the fit: the slow fit's time constant is half of it.
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// Minimum effective number of windows in the fit before it may fire.
    pub min_points: u32,
    /// Minimum R² of the fit (0 disables the gate).
    pub min_r2: f64,
    /// Minimum t-statistic of the fitted slope (slope / standard error).
    pub min_t: f64,
    /// Largest ratio of remaining headroom to the rise observed since the
    /// series' last low point that the detector extrapolates.
    pub max_extrapolation: f64,
    /// A firing prediction resolves after it stayed false this long.
    #[serde(with = "humantime_serde")]
    pub resolve_after: Duration,
    /// Severity of the alert.
    pub severity: Severity,
    /// Optional summary template (see [`TREND_PLACEHOLDERS`]).
    #[serde(default)]
    pub summary: Option<String>,
}

impl FamilyRule for TrendRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn same_definition(&self, other: &TrendRule) -> bool {
        self.metric == other.metric
            && self.labels == other.labels
            && self.limit.to_bits() == other.limit.to_bits()
            && self.direction == other.direction
            && self.horizon == other.horizon
            && self.lookback == other.lookback
            && self.min_points == other.min_points
            && self.min_r2.to_bits() == other.min_r2.to_bits()
            && self.min_t.to_bits() == other.min_t.to_bits()
            && self.max_extrapolation.to_bits() == other.max_extrapolation.to_bits()
            && self.resolve_after == other.resolve_after
    }
}

/// Default trend horizon.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(24 * 3600);
/// Default trend lookback.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(6 * 3600);
/// Default minimum effective number of windows behind a trend fit.
pub const DEFAULT_MIN_POINTS: u32 = 120;
/// Default minimum coefficient of determination of a trend fit.
pub const DEFAULT_MIN_R2: f64 = 0.0;
/// Default minimum t-statistic (slope / standard error) of a trend fit.
pub const DEFAULT_MIN_T: f64 = 8.0;
/// Default ratio of remaining headroom to observed rise a trend may
/// extrapolate (see `docs/rules.md`, "max_extrapolation").
pub const DEFAULT_MAX_EXTRAPOLATION: f64 = 1.0;
/// Default time a trend prediction must stay false before the alert resolves.
pub const DEFAULT_RESOLVE_AFTER: Duration = Duration::from_secs(30 * 60);
/// Placeholders a trend `summary` template may use.
pub const TREND_PLACEHOLDERS: &[&str] = &[
    "rule",
    "tenant",
    "agent",
    "metric",
    "labels",
    "series",
    "limit",
    "value",
    "predicted_at",
    "in_hours",
];

/// Which way a trend rule watches a series go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The series rises towards `limit` (disk filling).
    #[default]
    Rising,
    /// The series falls towards `limit` (free space shrinking).
    Falling,
}

/// A fixed-threshold rule (`[[threshold]]`).
impl SeriesRule for TrendRule {
    fn watches(&self, s: &SeriesMeta) -> bool {
        self.metric == s.metric() && labels_match(&self.labels, s.labels())
    }
}

/// Reads one `[[trend]]` rule at `path`, reporting every problem into
/// `cx`.
pub(crate) fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<TrendRule> {
    const KEYS: &[&str] = &[
        "name",
        "metric",
        "labels",
        "limit",
        "direction",
        "horizon",
        "lookback",
        "min_points",
        "min_r2",
        "min_t",
        "max_extrapolation",
        "resolve_after",
        "severity",
        "summary",
    ];
    let t = cx.fields(path, val, KEYS)?;
    let span = val.span();
    let name = cx.name(t, &span, path);
    let metric = cx.string(t, &span, path, "metric", true);
    let labels = cx.labels(t, path);
    let limit = cx.number(t, &span, path, "limit", true);
    let direction = match t.get("direction") {
        None => Some(Direction::Rising),
        Some(v) => match v.get_ref().as_str() {
            Some("rising") => Some(Direction::Rising),
            Some("falling") => Some(Direction::Falling),
            _ => {
                cx.problem(
                    v.span(),
                    format!("{path}.direction"),
                    "expected one of: \"rising\", \"falling\"",
                );
                None
            }
        },
    };
    let mut ok = true;
    let mut opt_dur = |cx: &mut Cx<'_>, key: &str, default: Duration| {
        if t.contains_key(key) {
            let d = cx.duration(t, path, key);
            ok &= d.is_some();
            d.unwrap_or(default)
        } else {
            default
        }
    };
    let horizon = opt_dur(cx, "horizon", DEFAULT_HORIZON);
    let lookback = opt_dur(cx, "lookback", DEFAULT_LOOKBACK);
    let resolve_after = opt_dur(cx, "resolve_after", DEFAULT_RESOLVE_AFTER);
    let min_points = if t.contains_key("min_points") {
        let m = cx.integer(t, path, "min_points", 2);
        ok &= m.is_some();
        m.unwrap_or(DEFAULT_MIN_POINTS)
    } else {
        DEFAULT_MIN_POINTS
    };
    let mut ranged = |cx: &mut Cx<'_>, key: &str, default: f64, lo: f64, hi: f64| -> f64 {
        match cx.number(t, &span, path, key, false) {
            None => {
                ok &= !t.contains_key(key);
                default
            }
            Some((x, s)) if x < lo || x > hi => {
                cx.problem(
                    s,
                    format!("{path}.{key}"),
                    format!("must be in [{lo}, {hi}]"),
                );
                ok = false;
                default
            }
            Some((x, _)) => x,
        }
    };
    let min_r2 = ranged(cx, "min_r2", DEFAULT_MIN_R2, 0.0, 1.0);
    let min_t = ranged(cx, "min_t", DEFAULT_MIN_T, 0.0, 1e6);
    let max_extrapolation = ranged(cx, "max_extrapolation", DEFAULT_MAX_EXTRAPOLATION, 0.0, 1e6);
    let severity = cx.severity(t, &span, path);
    let summary = cx.summary(t, &span, path, TREND_PLACEHOLDERS);
    if !ok {
        return None;
    }
    Some(TrendRule {
        name: name?,
        metric: metric?,
        labels: labels?,
        limit: limit?.0,
        direction: direction?,
        horizon,
        lookback,
        min_points,
        min_r2,
        min_t,
        max_extrapolation,
        resolve_after,
        severity: severity?,
        summary: summary?,
    })
}

/// The trend family (see the module docs).
pub struct Trend;

/// A series' trend slot: the first of its slots in the [`TrendStore`],
/// one per trend rule of its watch set (`u32::MAX`: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrendSlot(u32);

impl ConstDefault for TrendSlot {
    const DEFAULT: Self = TrendSlot(u32::MAX);
}

impl Default for TrendSlot {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Trend state of a partition: an arena of per-(series, rule) states.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrendStore {
    slots: Vec<TrendState>,
    /// Runs of slots freed by evicted series, by run length (the number
    /// of trend rules of the series' watch set), reused by new series with
    /// as many trend rules. A rebind lays the arena out afresh.
    #[serde(default, with = "sorted_map")]
    free: HashMap<u16, Vec<u32>>,
}

impl TrendStore {
    /// The store of a checkpoint written before the registry (format 5).
    pub(crate) fn from_parts(slots: Vec<TrendState>, free: HashMap<u16, Vec<u32>>) -> Self {
        TrendStore { slots, free }
    }

    /// Slots held for reuse (freed by evicted series).
    pub fn free_slots(&self) -> usize {
        self.free
            .iter()
            .map(|(n, v)| usize::from(*n) * v.len())
            .sum()
    }
}

/// The `resolved` event, for `reason`, of the incident a series' trend
/// state holds (none unless firing): at the end of the last window the
/// rule saw.
fn close(
    meta: &SeriesMeta,
    rule: &TrendRule,
    st: &TrendState,
    rules: &RuleSet,
    reason: ResolveReason,
) -> Option<AlertEvent> {
    let started = st.firing_since.get()?;
    Some(
        series_subject(meta, &rule.name, DetectorKind::Trend, rule.severity).retired(
            rules,
            started,
            st.last_end_ms.get().unwrap_or(started),
            reason,
            Some(rule.limit),
        ),
    )
}

impl SeriesFamily for Trend {
    type Rule = TrendRule;
    type Store = TrendStore;
    type Slot = TrendSlot;

    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<TrendRule> {
        parse(cx, path, val)
    }

    fn register(store: &mut TrendStore, watch: &[u16]) -> TrendSlot {
        let reused = u16::try_from(watch.len())
            .ok()
            .and_then(|n| store.free.get_mut(&n))
            .and_then(Vec::pop);
        match reused {
            // Freed slots were reset when their series was evicted.
            Some(at) => TrendSlot(at),
            None => {
                let at = u32::try_from(store.slots.len()).expect("at most 4 billion trend states");
                for _ in watch {
                    grow_gently(&mut store.slots);
                    store.slots.push(TrendState::default());
                }
                TrendSlot(at)
            }
        }
    }

    #[inline]
    fn on_window(
        store: &mut TrendStore,
        slot: &mut TrendSlot,
        watch: &[u16],
        fam: &[TrendRule],
        rules: &RuleSet,
        _uid: u64,
        w: &WindowAggregate,
        out: &mut Vec<AlertEvent>,
    ) {
        if let Some(states) = store.slots.get_mut(slot.0 as usize..) {
            for (&r, st) in watch.iter().zip(states) {
                let _ = st.on_window(&fam[r as usize], rules, w, out);
            }
        }
    }

    fn evict(
        store: &mut TrendStore,
        slot: TrendSlot,
        watch: &[u16],
        fam: &[TrendRule],
        rules: &RuleSet,
        s: SeriesCx<'_>,
        out: &mut Vec<AlertEvent>,
    ) {
        let at = slot.0 as usize;
        if let Some(states) = store.slots.get_mut(at..at + watch.len()) {
            for (&r, st) in watch.iter().zip(states.iter_mut()) {
                let old = std::mem::take(st);
                if let Some(rule) = fam.get(r as usize) {
                    out.extend(close(s.meta, rule, &old, rules, ResolveReason::Stale));
                }
            }
            if let Ok(n) = u16::try_from(watch.len()) {
                store.free.entry(n).or_default().push(slot.0);
            }
        }
    }

    fn rebind(
        old: &TrendStore,
        next: &mut TrendStore,
        slot: TrendSlot,
        old_watch: &[u16],
        new_watch: &[u16],
        carry: &[Option<u16>],
        old_rules: &[TrendRule],
        fam: &[TrendRule],
        rules: &RuleSet,
        s: SeriesCx<'_>,
        retired: &mut Vec<AlertEvent>,
    ) -> TrendSlot {
        // New slots, each with the old state of its rule when that rule
        // is unchanged; retire the firing ones of the others.
        let old_state = |k: usize| old.slots.get((slot.0 as usize).checked_add(k)?);
        let mut carried = vec![None; new_watch.len()];
        for (k, &r) in old_watch.iter().enumerate() {
            let Some(st) = old_state(k) else { continue };
            let to = carry.get(r as usize).copied().flatten();
            if let Some(nk) = to.and_then(|nr| new_watch.iter().position(|x| *x == nr)) {
                carried[nk] = Some(st);
                continue;
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
        if new_watch.is_empty() {
            return TrendSlot::DEFAULT;
        }
        let base = next.slots.len();
        for st in carried {
            grow_gently(&mut next.slots);
            next.slots.push(st.cloned().unwrap_or_default());
        }
        TrendSlot(u32::try_from(base).expect("at most 4 billion trend states"))
    }

    fn states(store: &TrendStore) -> usize {
        store.slots.len() - store.free_slots()
    }

    fn copy(
        from: &TrendStore,
        to: &mut TrendStore,
        slot: TrendSlot,
        watch: &[u16],
        _uid: u64,
    ) -> TrendSlot {
        if watch.is_empty() {
            return TrendSlot::DEFAULT;
        }
        let at = to.slots.len();
        let old = |k: usize| from.slots.get((slot.0 as usize).checked_add(k)?);
        for k in 0..watch.len() {
            grow_gently(&mut to.slots);
            to.slots.push(old(k).cloned().unwrap_or_default());
        }
        TrendSlot(u32::try_from(at).expect("at most 4 billion trend states"))
    }
}
