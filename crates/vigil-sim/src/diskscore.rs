//! Scores predictive disk-full incidents against the lab's truth
//! ([`crate::disklab`]).
//!
//! Per disk the caller reports every incident a detector opened (the
//! minute its `firing` event was emitted and the minute it predicted the
//! limit for). Definitions:
//!
//! * a filling disk is **detected** when an incident fired in
//!   `[fill_onset, fill_at)`; its **lead** is `fill_at` minus the first
//!   such firing, its **predicted-time error** that firing's
//!   `|predicted - fill_at| / (fill_at - fired)`;
//! * **recall** = detected / filling disks; median and p10 lead are over
//!   detected disks;
//! * a **false incident** is one that fired on a disk that does not fill,
//!   or before the fill started on one that does; the rate is per 1,000
//!   disk-days of non-filling time (every day of a disk that does not fill
//!   plus the days before the onset of each fill);
//! * **incidents per filling disk** counts every incident fired on a
//!   filling disk from its onset to the end of the run (repeats at the
//!   limit included), divided by the number of filling disks.

use std::collections::BTreeMap;

use crate::disklab::{DiskShape, LabTruth};

/// One incident a detector opened on a disk (minute indexes from the
/// run's start; `predicted` may be fractional).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredIncident {
    /// Minute whose window emitted the `firing` event (the window's end
    /// is at `fired + 1`).
    pub fired: usize,
    /// Predicted minute of reaching the limit.
    pub predicted: f64,
}

/// Accumulates incidents per disk; [`DiskScorer::scores`] sums up.
#[derive(Debug, Clone, Default)]
pub struct DiskScorer {
    fills: usize,
    leads_min: Vec<f64>,
    errors: Vec<f64>,
    fill_incidents: usize,
    false_incidents: usize,
    false_minutes: f64,
    false_by_shape: BTreeMap<DiskShape, usize>,
    missed: Vec<(usize, DiskShape)>,
    detected_by_shape: BTreeMap<DiskShape, (usize, usize)>,
    leads_by_shape: BTreeMap<DiskShape, Vec<f64>>,
    errors_by_shape: BTreeMap<DiskShape, Vec<f64>>,
}

/// The figures of a scored run.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskScores {
    /// Disks that fill.
    pub fills: usize,
    /// Of which detected.
    pub detected: usize,
    /// detected / fills (1 when no disk fills).
    pub recall: f64,
    /// Median lead of detected fills, hours.
    pub median_lead_h: f64,
    /// 10th percentile of the lead of detected fills, hours.
    pub p10_lead_h: f64,
    /// False incidents (see the module docs).
    pub false_incidents: usize,
    /// Non-filling disk-days they are counted over.
    pub disk_days: f64,
    /// False incidents per 1,000 non-filling disk-days.
    pub false_per_1000_disk_days: f64,
    /// Incidents from the onset on, per filling disk.
    pub incidents_per_filling_disk: f64,
    /// Median relative predicted-time error at the first true firing.
    pub median_predicted_error: f64,
    /// False incidents per disk shape.
    pub false_by_shape: BTreeMap<DiskShape, usize>,
    /// (detected, fills) per filling shape.
    pub detected_by_shape: BTreeMap<DiskShape, (usize, usize)>,
    /// Missed fills (disk index, shape).
    pub missed: Vec<(usize, DiskShape)>,
    /// (p10, median) lead per filling shape, hours.
    pub lead_by_shape: BTreeMap<DiskShape, (f64, f64)>,
    /// Median predicted-time error per filling shape.
    pub error_by_shape: BTreeMap<DiskShape, f64>,
}

impl DiskScorer {
    /// An empty scorer.
    pub fn new() -> Self {
        DiskScorer::default()
    }

    /// Scores one disk's incidents (in any order).
    pub fn add(&mut self, truth: &LabTruth, incidents: &[ScoredIncident]) {
        match (truth.fill_onset, truth.fill_at) {
            (Some(on), Some(at)) => {
                self.fills += 1;
                self.false_minutes += on as f64;
                let first = incidents
                    .iter()
                    .filter(|x| x.fired >= on && x.fired < at)
                    .min_by_key(|x| x.fired);
                let e = self.detected_by_shape.entry(truth.shape).or_default();
                e.1 += 1;
                match first {
                    Some(x) => {
                        e.0 += 1;
                        let lead = (at - x.fired) as f64;
                        self.leads_min.push(lead);
                        self.leads_by_shape
                            .entry(truth.shape)
                            .or_default()
                            .push(lead);
                        let err = (x.predicted - at as f64).abs() / lead;
                        self.errors.push(err);
                        self.errors_by_shape
                            .entry(truth.shape)
                            .or_default()
                            .push(err);
                    }
                    None => self.missed.push((truth.index, truth.shape)),
                }
                let early = incidents.iter().filter(|x| x.fired < on).count();
                self.false_incidents += early;
                if early > 0 {
                    *self.false_by_shape.entry(truth.shape).or_default() += early;
                }
                self.fill_incidents += incidents.len() - early;
            }
            _ => {
                self.false_minutes += truth.minutes as f64;
                self.false_incidents += incidents.len();
                if !incidents.is_empty() {
                    *self.false_by_shape.entry(truth.shape).or_default() += incidents.len();
                }
            }
        }
    }

    /// Merges another scorer (e.g. of another thread's disks).
    pub fn merge(&mut self, o: DiskScorer) {
        self.fills += o.fills;
        self.leads_min.extend(o.leads_min);
        self.errors.extend(o.errors);
        self.fill_incidents += o.fill_incidents;
        self.false_incidents += o.false_incidents;
        self.false_minutes += o.false_minutes;
        for (k, v) in o.false_by_shape {
            *self.false_by_shape.entry(k).or_default() += v;
        }
        for (k, (d, n)) in o.detected_by_shape {
            let e = self.detected_by_shape.entry(k).or_default();
            e.0 += d;
            e.1 += n;
        }
        self.missed.extend(o.missed);
        for (k, v) in o.errors_by_shape {
            self.errors_by_shape.entry(k).or_default().extend(v);
        }
        for (k, v) in o.leads_by_shape {
            self.leads_by_shape.entry(k).or_default().extend(v);
        }
    }

    /// The figures so far.
    pub fn scores(&self) -> DiskScores {
        let leads = sorted(&self.leads_min);
        let errors = sorted(&self.errors);
        let detected = leads.len();
        let disk_days = self.false_minutes / 1440.0;
        let mut missed = self.missed.clone();
        missed.sort();
        DiskScores {
            fills: self.fills,
            detected,
            recall: if self.fills == 0 {
                1.0
            } else {
                detected as f64 / self.fills as f64
            },
            median_lead_h: quantile(&leads, 0.5) / 60.0,
            p10_lead_h: quantile(&leads, 0.1) / 60.0,
            false_incidents: self.false_incidents,
            disk_days,
            false_per_1000_disk_days: if disk_days > 0.0 {
                1000.0 * self.false_incidents as f64 / disk_days
            } else {
                0.0
            },
            incidents_per_filling_disk: if self.fills == 0 {
                0.0
            } else {
                self.fill_incidents as f64 / self.fills as f64
            },
            median_predicted_error: quantile(&errors, 0.5),
            false_by_shape: self.false_by_shape.clone(),
            detected_by_shape: self.detected_by_shape.clone(),
            missed,
            lead_by_shape: self
                .leads_by_shape
                .iter()
                .map(|(k, v)| {
                    let v = sorted(v);
                    (*k, (quantile(&v, 0.1) / 60.0, quantile(&v, 0.5) / 60.0))
                })
                .collect(),
            error_by_shape: self
                .errors_by_shape
                .iter()
                .map(|(k, v)| (*k, quantile(&sorted(v), 0.5)))
                .collect(),
        }
    }
}

/// `v` sorted ascending (total order).
fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Quantile `q` of sorted values (lower nearest rank: the value with
/// `floor(q * (n - 1))` values below it); NaN when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).floor() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl std::fmt::Display for DiskScores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "recall {:.3} ({}/{}), lead median {:.1} h p10 {:.1} h, false {} = {:.1} per 1000 disk-days, {:.2} incidents per filling disk, median predicted-time error {:.3}",
            self.recall,
            self.detected,
            self.fills,
            self.median_lead_h,
            self.p10_lead_h,
            self.false_incidents,
            self.false_per_1000_disk_days,
            self.incidents_per_filling_disk,
            self.median_predicted_error,
        )?;
        write!(f, "\n  false by shape:")?;
        for (k, v) in &self.false_by_shape {
            write!(f, " {}={v}", k.as_str())?;
        }
        write!(f, "\n  detected by shape:")?;
        for (k, (d, n)) in &self.detected_by_shape {
            write!(f, " {}={d}/{n}", k.as_str())?;
        }
        write!(f, "\n  lead p10/median by shape:")?;
        for (k, (p, m)) in &self.lead_by_shape {
            write!(f, " {}={p:.1}/{m:.1}", k.as_str())?;
        }
        write!(f, "\n  median predicted-time error by shape:")?;
        for (k, e) in &self.error_by_shape {
            write!(f, " {}={e:.3}", k.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(shape: DiskShape, onset: Option<usize>, at: Option<usize>) -> LabTruth {
        LabTruth {
            index: 0,
            shape,
            noisy_host: false,
            fill_onset: onset,
            fill_at: at,
            minutes: 14 * 1440,
        }
    }

    fn inc(fired: usize, predicted: f64) -> ScoredIncident {
        ScoredIncident { fired, predicted }
    }

    #[test]
    fn leads_errors_and_false_incidents_follow_the_definitions() {
        let mut s = DiskScorer::new();
        let fill = truth(DiskShape::LinearFill, Some(1440), Some(3 * 1440));
        // Early false firing, then the true one 20 h before full with a
        // prediction 2 h late (10 %), then a repeat at the limit.
        s.add(
            &fill,
            &[
                inc(1439, 0.0),
                inc(3 * 1440 - 1200, 3.0 * 1440.0 + 120.0),
                inc(3 * 1440 + 5, 0.0),
            ],
        );
        // A fill first alerted at the very minute it fills: missed.
        s.add(&fill, &[inc(3 * 1440, 0.0)]);
        // A trap with two incidents, a quiet disk with none.
        s.add(
            &truth(DiskShape::Plateau, None, None),
            &[inc(5, 0.0), inc(9, 0.0)],
        );
        s.add(&truth(DiskShape::Quiet, None, None), &[]);
        let r = s.scores();
        assert_eq!((r.fills, r.detected), (2, 1));
        assert_eq!(r.recall, 0.5);
        assert_eq!(r.median_lead_h, 20.0);
        assert!((r.median_predicted_error - 0.1).abs() < 1e-12);
        assert_eq!(r.false_incidents, 3);
        // 1 + 1 days before the onsets, 14 + 14 days of traps.
        assert!((r.disk_days - 30.0).abs() < 1e-9);
        assert!((r.false_per_1000_disk_days - 100.0).abs() < 1e-9);
        assert_eq!(r.incidents_per_filling_disk, 1.5);
        assert_eq!(r.false_by_shape.get(&DiskShape::Plateau), Some(&2));
        assert_eq!(r.missed, vec![(0, DiskShape::LinearFill)]);
    }

    #[test]
    fn quantiles_are_lower_nearest_rank() {
        let v: Vec<f64> = (0..=10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.1), 1.0);
        assert_eq!(quantile(&v, 0.5), 5.0);
        assert_eq!(quantile(&v[..2], 0.5), 0.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
