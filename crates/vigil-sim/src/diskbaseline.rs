//! The predictive disk rules people run today, evaluated on lab disks
//! ([`crate::disklab`]) so a detector's figures can be put next to theirs
//! on the same fleet ([`crate::diskscore`]).
//!
//! The baselines are the two `NodeFilesystemSpaceFillingUp` alerts of the
//! Prometheus node-exporter mixin, in terms of used percent `u` (the mixin
//! writes them on available bytes, `100 - u`):
//!
//! * **warning**: `u > 60` and `predict_linear(u[6h], 24h) > 100`, `for: 1h`;
//! * **critical**: `u > 80` and `predict_linear(u[6h], 4h) > 100`, `for: 1h`.
//!
//! Evaluation follows Prometheus: the rule is evaluated once a minute (at
//! each lab minute); `predict_linear` is the least-squares line through
//! the samples of the range `(t - lookback, t]`, extrapolated from `t`, and
//! needs at least two samples; the instant sample `u` is the newest one at
//! most 5 minutes old (the staleness limit), else the expression has no
//! result. An alert is *pending* from the first evaluation whose
//! expression holds, *fires* (an incident) when it has held at every
//! evaluation for `for`, and ends at the first evaluation where it does not
//! hold: the next run of holding evaluations is a new incident.
//!
//! Prometheus alerts carry no predicted time; an incident's predicted time
//! here is where the firing evaluation's line reaches 100, the prediction
//! the rule acted on.

use crate::diskscore::ScoredIncident;

/// One `predict_linear` threshold alert (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PredictLinearRule {
    /// Alert name, for reports.
    pub name: &'static str,
    /// The used percent the disk must be above.
    pub used_above: f64,
    /// Range of `predict_linear`, minutes.
    pub lookback_min: usize,
    /// How far ahead the line is read, minutes.
    pub horizon_min: f64,
    /// `for` of the alert, minutes.
    pub for_min: usize,
}

/// Newest sample the instant selector still returns, minutes (Prometheus'
/// default lookback delta).
const STALENESS_MIN: usize = 5;

impl PredictLinearRule {
    /// The mixin's warning alert: above 60 % used, full within 24 h by
    /// the last 6 h, for an hour.
    pub const WARNING: PredictLinearRule = PredictLinearRule {
        name: "NodeFilesystemSpaceFillingUp (warning)",
        used_above: 60.0,
        lookback_min: 360,
        horizon_min: 1440.0,
        for_min: 60,
    };

    /// The mixin's critical alert: above 80 % used, full within 4 h by the
    /// last 6 h, for an hour.
    pub const CRITICAL: PredictLinearRule = PredictLinearRule {
        name: "NodeFilesystemSpaceFillingUp (critical)",
        used_above: 80.0,
        lookback_min: 360,
        horizon_min: 240.0,
        for_min: 60,
    };

    /// The incidents the rule opens on one disk's minute values (`None`:
    /// no sample that minute).
    pub fn incidents(&self, values: &[Option<f64>]) -> Vec<ScoredIncident> {
        let mut fit = RangeFit::default();
        let mut out = Vec::new();
        // Minute the current run of holding evaluations started, and
        // whether it has fired.
        let mut pending: Option<(usize, bool)> = None;
        let mut newest: Option<usize> = None;
        for (t, v) in values.iter().enumerate() {
            if let Some(v) = *v {
                fit.add(t as f64, v);
                newest = Some(t);
            }
            if t >= self.lookback_min {
                if let Some(old) = values[t - self.lookback_min] {
                    fit.remove((t - self.lookback_min) as f64, old);
                }
            }
            let now = newest
                .filter(|&n| t - n <= STALENESS_MIN)
                .and_then(|n| values[n]);
            let line = fit.line_at(t as f64);
            let holds = match (now, line) {
                (Some(u), Some((level, slope))) => {
                    u > self.used_above && level + slope * self.horizon_min > 100.0
                }
                _ => false,
            };
            if !holds {
                pending = None;
                continue;
            }
            let (since, fired) = pending.get_or_insert((t, false));
            if !*fired && t - *since >= self.for_min {
                *fired = true;
                let predicted = match line {
                    Some((level, slope)) if slope > 0.0 => t as f64 + (100.0 - level) / slope,
                    _ => t as f64,
                };
                out.push(ScoredIncident {
                    fired: t,
                    predicted,
                });
            }
        }
        out
    }
}

/// Running least-squares sums of the samples in a sliding range; times
/// are minute indexes (exact in f64 for any lab length), values in [0, 100].
#[derive(Debug, Default, Clone, Copy)]
struct RangeFit {
    n: f64,
    st: f64,
    sv: f64,
    stt: f64,
    stv: f64,
}

impl RangeFit {
    fn add(&mut self, t: f64, v: f64) {
        self.n += 1.0;
        self.st += t;
        self.sv += v;
        self.stt += t * t;
        self.stv += t * v;
    }

    fn remove(&mut self, t: f64, v: f64) {
        self.n -= 1.0;
        self.st -= t;
        self.sv -= v;
        self.stt -= t * t;
        self.stv -= t * v;
    }

    /// The fitted value at `t` and the slope (per minute), with at least
    /// two samples at distinct times.
    fn line_at(&self, t: f64) -> Option<(f64, f64)> {
        if self.n < 2.0 {
            return None;
        }
        let mt = self.st / self.n;
        let mv = self.sv / self.n;
        let var_t = self.stt / self.n - mt * mt;
        if var_t <= 0.0 {
            return None;
        }
        let slope = (self.stv / self.n - mt * mv) / var_t;
        Some((mv + slope * (t - mt), slope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(from: f64, per_min: f64, n: usize) -> Vec<Option<f64>> {
        (0..n)
            .map(|i| Some((from + per_min * i as f64).min(100.0)))
            .collect()
    }

    #[test]
    fn a_steady_fill_fires_once_after_the_for_period() {
        // 50.25 % + 2 %/h: above 60 % from minute 293; a line through it
        // reaches 100 within 24 h once u > 52, so the warning rule holds
        // from minute 293 and fires an hour later.
        let v = ramp(50.25, 2.0 / 60.0, 1600);
        let inc = PredictLinearRule::WARNING.incidents(&v);
        assert_eq!(inc.len(), 1, "{inc:?}");
        assert_eq!(inc[0].fired, 293 + 60);
        // The line is exact: full at minute 1492.5.
        assert!((inc[0].predicted - 1492.5).abs() < 1e-6, "{inc:?}");
    }

    #[test]
    fn the_used_limit_is_strict() {
        // Exactly 60 % after a steep rise: the line predicts full for a
        // while, but the disk is never above 60 %.
        let mut v = ramp(40.0, 0.5, 40);
        v.extend(std::iter::repeat_n(Some(60.0), 200));
        assert!(PredictLinearRule::WARNING.incidents(&v).is_empty());
        // Just over: it fires.
        let mut v = ramp(40.0, 0.5, 40);
        v.extend(std::iter::repeat_n(Some(60.001), 200));
        assert_eq!(PredictLinearRule::WARNING.incidents(&v).len(), 1);
    }

    #[test]
    fn a_break_in_the_condition_restarts_the_for_period() {
        // 90 % rising 5 %/h (full within 4 h): holds from minute 1.
        let v = ramp(90.0, 5.0 / 60.0, 100);
        let inc = PredictLinearRule::CRITICAL.incidents(&v);
        assert_eq!(inc.iter().map(|i| i.fired).collect::<Vec<_>>(), [61]);
        // One sample at 79 (not above 80) at minute 30 breaks the run; it
        // also bends the line for a few minutes, so the next run starts
        // later still and fires an hour after that.
        let mut v = ramp(90.0, 5.0 / 60.0, 100);
        v[30] = Some(79.0);
        let inc = PredictLinearRule::CRITICAL.incidents(&v);
        assert_eq!(inc.len(), 1, "{inc:?}");
        assert!(inc[0].fired >= 31 + 60, "{inc:?}");
    }

    #[test]
    fn stale_samples_end_the_alert() {
        // 80 % rising 1 %/h (full within 24 h). Minutes 100-105 have no
        // sample: at 105 the newest is 6 minutes old, past the staleness
        // limit, so the run that fired at 61 ends and a new one starts at
        // 106.
        let mut v = ramp(80.0, 1.0 / 60.0, 400);
        for x in &mut v[100..106] {
            *x = None;
        }
        let inc = PredictLinearRule::WARNING.incidents(&v);
        assert_eq!(inc.iter().map(|i| i.fired).collect::<Vec<_>>(), [61, 166]);
        // Five minutes without a sample are not stale.
        let mut v = ramp(80.0, 1.0 / 60.0, 400);
        for x in &mut v[100..105] {
            *x = None;
        }
        let inc = PredictLinearRule::WARNING.incidents(&v);
        assert_eq!(inc.iter().map(|i| i.fired).collect::<Vec<_>>(), [61]);
    }
}
