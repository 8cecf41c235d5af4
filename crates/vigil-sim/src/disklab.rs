//! Labelled disk-fill laboratory: a fleet of `disk_used_pct` series, one
//! point per minute, with the exact truth a predictive detector is scored
//! against (see [`crate::diskscore`]).
//!
//! Unlike [`crate::Fleet`], which produces encoded telemetry records for
//! the whole pipeline, the lab produces plain value series so a detector's
//! pure code can be fed window means directly: 1,000 disks × 14 days
//! (20 M points) are generated and scored in seconds.
//!
//! ```text
//! DiskLabConfig (seed) ──▶ shape deck (stratified, shuffled by seed)
//!     disk i ──own ChaCha8 stream (seed, i)──▶ noiseless curve
//!        + AR(1) noise (τ 10–120 min) + white noise + working-hours bump
//!        + full-disk behaviour (just under 100, clipped) + agent gaps
//!        ──▶ LabDisk { truth, values: one Option<f64> per minute }
//! ```
//!
//! Shapes (what a fleet really shows, and what a linear fit falls into):
//!
//! * fills: linear (some short), accelerating, flat then fill, slow fills
//!   near the top (0.06–0.25 %/h from 85–94 %), fast fills (3–9 %/h from
//!   15–60 %) that an operator cleans up part-way and that then fill
//!   anyway. Once full, a disk sits just under 100 with noise, clipped at
//!   100 (so a window mean sometimes *is* 100).
//! * traps (never fill): quiet disks, noisy flat disks (also at 88–95 %
//!   with σ 1–3), fills that plateau at 80–95 % (saturating or a ramp
//!   that stops), log-rotation sawtooth, nightly backup growth cleared in
//!   the morning (from the first night on), bursts that get cleaned up.
//! * on every disk: autocorrelated noise (AR(1) with a time constant of
//!   10–120 minutes), white noise (σ 1–3 on noisy hosts), a working-hours
//!   bump of 0.5–4 points on most disks, agent gaps of 1–10 h on some.
//!
//! Every disk is generated from its own RNG stream, seeded by (seed,
//! index), so a disk does not change when the fleet grows.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::config::DEFAULT_START_MS;

/// Minutes per hour.
const H: f64 = 60.0;
/// Minutes per day.
const D: f64 = 1440.0;

/// Shape of one lab disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DiskShape {
    /// Flat, then a linear fill to 100 (6 h to 5 days).
    LinearFill,
    /// Flat, then a fill whose rate grows (a power 1.5–3 of time).
    AcceleratingFill,
    /// A long flat stretch at 50–85 %, then a linear fill late in the run.
    FlatThenFill,
    /// A slow fill near the top: 0.06–0.25 %/h from 85–94 %.
    SlowFillNearTop,
    /// A fast fill (3–9 %/h from 15–60 %) that an operator cleans up
    /// part-way; it keeps filling at the same rate and fills.
    FastFillCleanedUp,
    /// Quiet disk, flat or drifting by less than 0.5 %/day.
    Quiet,
    /// Flat at 20–88 % on a noisy host (white σ 1–3).
    NoisyFlat,
    /// Flat at 88–95 % on a noisy host (white σ 1–3).
    NoisyFlatHigh,
    /// A fill that levels off at 80–95 % (saturating or a ramp that stops).
    Plateau,
    /// Log rotation: a sawtooth of 2–8 points, period 1–24 h.
    LogRotation,
    /// Nightly backup growth from about 22:00 to 05:00 local, cleared
    /// by the morning, from the first night on.
    NightlyBackup,
    /// One-off bursts of 5–25 points that are cleaned up after hours.
    BurstCleaned,
}

impl DiskShape {
    /// Every shape, fills first.
    pub const ALL: [DiskShape; 12] = [
        DiskShape::LinearFill,
        DiskShape::AcceleratingFill,
        DiskShape::FlatThenFill,
        DiskShape::SlowFillNearTop,
        DiskShape::FastFillCleanedUp,
        DiskShape::Quiet,
        DiskShape::NoisyFlat,
        DiskShape::NoisyFlatHigh,
        DiskShape::Plateau,
        DiskShape::LogRotation,
        DiskShape::NightlyBackup,
        DiskShape::BurstCleaned,
    ];

    /// Whether a disk of this shape fills (reaches 100 %) during the run.
    pub fn fills(self) -> bool {
        matches!(
            self,
            DiskShape::LinearFill
                | DiskShape::AcceleratingFill
                | DiskShape::FlatThenFill
                | DiskShape::SlowFillNearTop
                | DiskShape::FastFillCleanedUp
        )
    }

    /// Short snake_case name (for tables).
    pub fn as_str(self) -> &'static str {
        match self {
            DiskShape::LinearFill => "linear_fill",
            DiskShape::AcceleratingFill => "accelerating_fill",
            DiskShape::FlatThenFill => "flat_then_fill",
            DiskShape::SlowFillNearTop => "slow_fill_near_top",
            DiskShape::FastFillCleanedUp => "fast_fill_cleaned_up",
            DiskShape::Quiet => "quiet",
            DiskShape::NoisyFlat => "noisy_flat",
            DiskShape::NoisyFlatHigh => "noisy_flat_high",
            DiskShape::Plateau => "plateau",
            DiskShape::LogRotation => "log_rotation",
            DiskShape::NightlyBackup => "nightly_backup",
            DiskShape::BurstCleaned => "burst_cleaned",
        }
    }

    /// Share of the default fleet (sums to 1): 12 % of disks fill.
    pub fn share(self) -> f64 {
        match self {
            DiskShape::LinearFill => 0.045,
            DiskShape::AcceleratingFill => 0.02,
            DiskShape::FlatThenFill => 0.025,
            DiskShape::SlowFillNearTop => 0.02,
            DiskShape::FastFillCleanedUp => 0.01,
            DiskShape::Quiet => 0.30,
            DiskShape::NoisyFlat => 0.10,
            DiskShape::NoisyFlatHigh => 0.12,
            DiskShape::Plateau => 0.10,
            DiskShape::LogRotation => 0.10,
            DiskShape::NightlyBackup => 0.10,
            DiskShape::BurstCleaned => 0.06,
        }
    }
}

/// Size and seed of a lab fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLabConfig {
    /// Seed of every random draw.
    pub seed: u64,
    /// Number of disks.
    pub disks: usize,
    /// Length of the run, days.
    pub days: u32,
    /// Time of the first point, ms since epoch (aligned to a minute).
    pub start_ms: i64,
}

impl DiskLabConfig {
    /// 1,000 disks × 14 days starting at [`DEFAULT_START_MS`].
    pub fn new(seed: u64) -> Self {
        DiskLabConfig {
            seed,
            disks: 1000,
            days: 14,
            start_ms: DEFAULT_START_MS,
        }
    }

    /// Points (minutes) per disk.
    pub fn minutes(&self) -> usize {
        self.days as usize * 1440
    }
}

/// Ground truth of one lab disk. Times are minute indexes from the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabTruth {
    /// Index of the disk in the fleet.
    pub index: usize,
    /// Its shape.
    pub shape: DiskShape,
    /// Whether the host is noisy (white σ ≥ 1).
    pub noisy_host: bool,
    /// Minute the fill starts (the curve leaves its flat level), for fills.
    pub fill_onset: Option<usize>,
    /// First minute the noiseless curve reaches 100, for fills.
    pub fill_at: Option<usize>,
    /// Length of the run, minutes.
    pub minutes: usize,
}

/// One lab disk: truth and one value per minute (`None` during an agent
/// gap).
#[derive(Debug, Clone, PartialEq)]
pub struct LabDisk {
    /// What the disk does.
    pub truth: LabTruth,
    /// Value of minute `i` (the point at `start_ms + i` minutes), in
    /// [0, 100].
    pub values: Vec<Option<f64>>,
    /// The noiseless curve under `values` at each minute (no noise, no
    /// working-hours bump, no gap, not clipped): what a detector that
    /// saw through all noise would see (yardsticks, not detectors).
    pub curve: Vec<f64>,
}

/// The lab fleet: a deterministic function of its config.
#[derive(Debug, Clone)]
pub struct DiskLab {
    cfg: DiskLabConfig,
    deck: Vec<DiskShape>,
}

impl DiskLab {
    /// Plans the fleet: the shape of each disk, stratified by
    /// [`DiskShape::share`] and shuffled by the seed.
    pub fn new(cfg: DiskLabConfig) -> Self {
        let n = cfg.disks;
        let mut deck = Vec::with_capacity(n);
        for s in DiskShape::ALL {
            let c = (s.share() * n as f64).round() as usize;
            deck.extend(std::iter::repeat_n(s, c.min(n - deck.len())));
        }
        deck.resize(n, DiskShape::Quiet);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6469_736b_6c61_6221);
        for i in (1..deck.len()).rev() {
            let j = rng.random_range(0..=i);
            deck.swap(i, j);
        }
        DiskLab { cfg, deck }
    }

    /// The configuration.
    pub fn config(&self) -> &DiskLabConfig {
        &self.cfg
    }

    /// Number of disks.
    pub fn len(&self) -> usize {
        self.deck.len()
    }

    /// Whether the fleet has no disk.
    pub fn is_empty(&self) -> bool {
        self.deck.is_empty()
    }

    /// Shape of disk `i`.
    pub fn shape(&self, i: usize) -> Option<DiskShape> {
        self.deck.get(i).copied()
    }

    /// Generates disk `i` (`None` past the end).
    pub fn disk(&self, i: usize) -> Option<LabDisk> {
        let shape = self.shape(i)?;
        let seed = self
            .cfg
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(i as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Some(generate(&mut rng, shape, i, self.cfg.minutes()))
    }

    /// Every disk in order.
    pub fn disks(&self) -> impl Iterator<Item = LabDisk> + '_ {
        (0..self.len()).filter_map(|i| self.disk(i))
    }
}

fn u(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        lo + (hi - lo) * rng.random::<f64>()
    } else {
        lo
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

/// A noiseless disk curve, minute → percent (may exceed 100: clipped).
#[derive(Debug, Clone, Copy)]
enum Curve {
    /// `base` until `on`, then `base + (100 - base) * ((t - on) / dur)^p`.
    Power {
        base: f64,
        on: f64,
        dur: f64,
        p: f64,
    },
    /// Fast fill with a cleanup of `drop` points at minute `cut`.
    Cleaned {
        base: f64,
        on: f64,
        rate: f64,
        cut: f64,
        drop: f64,
    },
    /// `base + drift * t`.
    Flat { base: f64, drift: f64 },
    /// `base` until `on`, then towards `cap`: saturating with time
    /// constant `tc`, or (`tc <= 0`) linearly at `rate` until `cap`.
    Plateau {
        base: f64,
        cap: f64,
        on: f64,
        tc: f64,
        rate: f64,
    },
    /// Sawtooth of `amp` points with period `period`, phase `phase`.
    Saw {
        base: f64,
        amp: f64,
        period: f64,
        phase: f64,
    },
    /// Nightly growth of `amp` points from `start` (minute of the local
    /// day) for `len` minutes, held until `clear` minutes after `start`.
    Nightly {
        base: f64,
        amp: f64,
        start: f64,
        len: f64,
        clear: f64,
        tz: f64,
    },
    /// Bursts `(at, rise, size, hold)` on a flat base.
    Bursts {
        base: f64,
        bursts: [(f64, f64, f64, f64); 4],
        n: usize,
    },
}

impl Curve {
    fn at(&self, t: f64) -> f64 {
        match *self {
            Curve::Power { base, on, dur, p } => {
                if t < on {
                    base
                } else {
                    base + (100.0 - base) * ((t - on) / dur).powf(p)
                }
            }
            Curve::Cleaned {
                base,
                on,
                rate,
                cut,
                drop,
            } => {
                if t < on {
                    base
                } else if t < cut {
                    base + rate * (t - on)
                } else {
                    base + rate * (t - on) - drop
                }
            }
            Curve::Flat { base, drift } => base + drift * t,
            Curve::Plateau {
                base,
                cap,
                on,
                tc,
                rate,
            } => {
                if t < on {
                    base
                } else if tc > 0.0 {
                    base + (cap - base) * (1.0 - (-(t - on) / tc).exp())
                } else {
                    // A ramp with a soft knee of about an hour at the cap.
                    let lin = base + rate * (t - on);
                    let k = 0.5 * rate * H;
                    let x = (cap - lin) / k;
                    cap - k * if x > 30.0 { x } else { x.exp().ln_1p() }
                }
            }
            Curve::Saw {
                base,
                amp,
                period,
                phase,
            } => base + amp * ((t + phase).rem_euclid(period) / period),
            Curve::Nightly {
                base,
                amp,
                start,
                len,
                clear,
                tz,
            } => {
                let tod = (t + tz).rem_euclid(D);
                let since = (tod - start).rem_euclid(D);
                if since < len {
                    base + amp * since / len
                } else if since < clear {
                    base + amp
                } else {
                    base
                }
            }
            Curve::Bursts { base, bursts, n } => {
                let mut v = base;
                for &(at, rise, size, hold) in bursts.iter().take(n) {
                    if t >= at && t < at + rise {
                        v += size * (t - at) / rise;
                    } else if t >= at + rise && t < at + rise + hold {
                        v += size;
                    }
                }
                v
            }
        }
    }
}

/// First minute at which the usage reaches 100 (scanning minute by
/// minute), if any.
fn first_full(usage: impl Fn(f64) -> f64, n: usize) -> Option<usize> {
    (0..n).find(|&i| usage(i as f64) >= 100.0)
}

fn generate(rng: &mut ChaCha8Rng, shape: DiskShape, index: usize, n: usize) -> LabDisk {
    let nf = n as f64;
    // Fills must end at least a day before the run does.
    let last_fill = nf - D;
    let (curve, onset) = match shape {
        DiskShape::LinearFill => {
            let base = u(rng, 20.0, 80.0);
            let dur = if rng.random::<f64>() < 0.2 {
                u(rng, 6.0, 24.0) * H
            } else {
                u(rng, 24.0, 120.0) * H
            };
            let on = u(rng, 0.0, (last_fill - dur).max(0.0));
            (
                Curve::Power {
                    base,
                    on,
                    dur,
                    p: 1.0,
                },
                Some(on),
            )
        }
        DiskShape::AcceleratingFill => {
            let base = u(rng, 20.0, 70.0);
            let dur = u(rng, 24.0, 96.0) * H;
            let on = u(rng, 0.5 * D, (last_fill - dur).max(0.5 * D));
            let p = u(rng, 1.5, 3.0);
            (Curve::Power { base, on, dur, p }, Some(on))
        }
        DiskShape::FlatThenFill => {
            let base = u(rng, 50.0, 85.0);
            let dur = u(rng, 12.0, 72.0) * H;
            let on = u(rng, 4.0 * D, (last_fill - dur).max(4.0 * D));
            (
                Curve::Power {
                    base,
                    on,
                    dur,
                    p: 1.0,
                },
                Some(on),
            )
        }
        DiskShape::SlowFillNearTop => {
            let rate = u(rng, 0.06, 0.25) / H;
            let on = u(rng, 0.0, 2.0 * D);
            let mut base = u(rng, 85.0, 94.0);
            // The fill must end inside the run.
            base = base.max(100.0 - rate * (last_fill - on));
            let dur = (100.0 - base) / rate;
            (
                Curve::Power {
                    base,
                    on,
                    dur,
                    p: 1.0,
                },
                Some(on),
            )
        }
        DiskShape::FastFillCleanedUp => {
            let base = u(rng, 15.0, 60.0);
            let rate = u(rng, 3.0, 9.0) / H;
            let to_full = (100.0 - base) / rate;
            let cut_frac = u(rng, 0.3, 0.7);
            let drop = u(rng, 0.3, 0.8) * cut_frac * (100.0 - base);
            let total = to_full + drop / rate;
            let on = u(rng, D, (last_fill - total).max(D));
            (
                Curve::Cleaned {
                    base,
                    on,
                    rate,
                    cut: on + cut_frac * to_full,
                    drop,
                },
                Some(on),
            )
        }
        DiskShape::Quiet => (
            Curve::Flat {
                base: u(rng, 5.0, 85.0),
                drift: u(rng, -0.2, 0.5) / D,
            },
            None,
        ),
        DiskShape::NoisyFlat => (
            Curve::Flat {
                base: u(rng, 20.0, 88.0),
                drift: 0.0,
            },
            None,
        ),
        DiskShape::NoisyFlatHigh => (
            Curve::Flat {
                base: u(rng, 88.0, 95.0),
                drift: 0.0,
            },
            None,
        ),
        DiskShape::Plateau => {
            let cap = u(rng, 80.0, 95.0);
            let base = cap - u(rng, 10.0, 35.0);
            let on = u(rng, 0.5 * D, nf - 2.0 * D);
            if rng.random::<f64>() < 0.6 {
                let tc = u(rng, 4.0, 24.0) * H;
                (
                    Curve::Plateau {
                        base,
                        cap,
                        on,
                        tc,
                        rate: 0.0,
                    },
                    None,
                )
            } else {
                let rate = u(rng, 0.2, 1.0) / H;
                (
                    Curve::Plateau {
                        base,
                        cap,
                        on,
                        tc: 0.0,
                        rate,
                    },
                    None,
                )
            }
        }
        DiskShape::LogRotation => {
            let base = u(rng, 20.0, 84.0);
            let amp = u(rng, 2.0, 8.0f64.min(92.0 - base));
            let period = u(rng, 1.0, 24.0) * H;
            let phase = u(rng, 0.0, period);
            (
                Curve::Saw {
                    base,
                    amp,
                    period,
                    phase,
                },
                None,
            )
        }
        DiskShape::NightlyBackup => {
            let base = u(rng, 30.0, 80.0);
            let amp = u(rng, 5.0, 18.0f64.min(95.0 - base));
            let start = u(rng, 21.0, 23.0) * H;
            let len = u(rng, 5.0, 8.0) * H;
            let clear = len + u(rng, 0.5, 3.0) * H;
            let tz = (u(rng, -12.0, 12.0).round()) * H;
            (
                Curve::Nightly {
                    base,
                    amp,
                    start,
                    len,
                    clear,
                    tz,
                },
                None,
            )
        }
        DiskShape::BurstCleaned => {
            let base = u(rng, 20.0, 80.0);
            let n_b = 1 + (rng.random::<f64>() * 4.0) as usize;
            let mut bursts = [(0.0, 1.0, 0.0, 0.0); 4];
            for b in bursts.iter_mut().take(n_b) {
                let at = u(rng, 0.0, nf - D);
                let rise = u(rng, 10.0, 6.0 * H);
                let size = u(rng, 5.0, 25.0).min(97.0 - base);
                let hold = u(rng, 0.5, 12.0) * H;
                *b = (at, rise, size, hold);
            }
            (
                Curve::Bursts {
                    base,
                    bursts,
                    n: n_b,
                },
                None,
            )
        }
    };

    // Noise model.
    let noisy_host = matches!(shape, DiskShape::NoisyFlat | DiskShape::NoisyFlatHigh)
        || rng.random::<f64>() < 0.12;
    let white = if noisy_host {
        u(rng, 1.0, 3.0)
    } else {
        u(rng, 0.05, 0.5)
    };
    let ar_sd = if noisy_host {
        u(rng, 0.5, 2.0)
    } else {
        u(rng, 0.1, 0.8)
    };
    let ar_tau = u(rng, 10.0, 120.0);
    let phi = (-1.0 / ar_tau).exp();
    let innov = ar_sd * (1.0 - phi * phi).sqrt();
    let bump = if rng.random::<f64>() < 0.6 {
        u(rng, 0.5, 4.0)
    } else {
        0.0
    };
    let tz = u(rng, -12.0, 12.0).round() * H;
    // A disk is full once its usage (the curve plus the working-hours
    // bump, not the random noise) reaches 100.
    let fill_at = if shape.fills() {
        first_full(|t| curve.at(t) + bump * working_hours(t + tz), n)
    } else {
        None
    };
    // Full disks: just under the limit, a little noise, clipped at 100.
    let full_level = 100.0 - u(rng, 0.05, 0.5);
    let full_sd = u(rng, 0.05, 0.3);
    // Agent gaps.
    let n_gaps = match rng.random::<f64>() {
        x if x < 0.6 => 0,
        x if x < 0.85 => 1,
        _ => 2 + (rng.random::<f64>() * 2.0) as usize,
    };
    let mut gaps = Vec::with_capacity(n_gaps);
    for _ in 0..n_gaps {
        let len = u(rng, 1.0, 10.0) * H;
        let at = u(rng, 0.0, nf - len);
        gaps.push((at as usize, (at + len) as usize));
    }

    let mut ar = ar_sd * normal(rng);
    let mut values = Vec::with_capacity(n);
    let clean = (0..n).map(|i| curve.at(i as f64)).collect();
    for i in 0..n {
        ar = phi * ar + innov * normal(rng);
        let w = normal(rng);
        if gaps.iter().any(|&(a, b)| a <= i && i < b) {
            values.push(None);
            continue;
        }
        let t = i as f64;
        let v = if fill_at.is_some_and(|f| i >= f) {
            full_level + full_sd * w
        } else {
            curve.at(t) + ar + white * w + bump * working_hours(t + tz)
        };
        values.push(Some(v.clamp(0.0, 100.0)));
    }
    LabDisk {
        truth: LabTruth {
            index,
            shape,
            noisy_host,
            fill_onset: fill_at.and(onset.map(|o| o as usize)),
            fill_at,
            minutes: n,
        },
        values,
        curve: clean,
    }
}

/// Working-hours activity in [0, 1] at local minute `t`: a smooth bump
/// from 08:00 to 18:00 on weekdays (day 0 is a Monday), 0 otherwise.
fn working_hours(t: f64) -> f64 {
    let day = (t / D).floor().rem_euclid(7.0);
    if day >= 5.0 {
        return 0.0;
    }
    let tod = t.rem_euclid(D) / H;
    if (8.0..18.0).contains(&tod) {
        let x = (tod - 8.0) / 10.0;
        (std::f64::consts::PI * x).sin().powi(2)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deck_is_stratified_and_deterministic() {
        let lab = DiskLab::new(DiskLabConfig::new(7));
        assert_eq!(lab.len(), 1000);
        let fills = (0..lab.len())
            .filter(|&i| lab.shape(i).is_some_and(DiskShape::fills))
            .count();
        assert_eq!(fills, 120);
        let again = DiskLab::new(DiskLabConfig::new(7));
        assert_eq!(lab.disk(3), again.disk(3));
        let other = DiskLab::new(DiskLabConfig::new(8));
        assert_ne!(lab.deck, other.deck);
    }

    #[test]
    fn fills_reach_the_limit_inside_the_run_and_sit_just_under_it() {
        let cfg = DiskLabConfig {
            disks: 200,
            ..DiskLabConfig::new(11)
        };
        let lab = DiskLab::new(cfg);
        let mut seen = 0;
        for d in lab.disks().filter(|d| d.truth.shape.fills()) {
            seen += 1;
            let t = d.truth;
            let (Some(on), Some(at)) = (t.fill_onset, t.fill_at) else {
                panic!("{t:?} has no fill time");
            };
            assert!(on < at && at + 1440 <= t.minutes, "{t:?}");
            let after: Vec<f64> = d.values[at..].iter().flatten().copied().collect();
            assert!(after.iter().all(|v| (98.0..=100.0).contains(v)), "{t:?}");
            let mean = after.iter().sum::<f64>() / after.len() as f64;
            assert!(mean < 100.0 && mean > 99.4, "{t:?}: mean {mean}");
        }
        assert!(seen >= 20);
    }

    #[test]
    fn traps_never_fill_and_values_stay_in_range() {
        let cfg = DiskLabConfig {
            disks: 300,
            ..DiskLabConfig::new(5)
        };
        let lab = DiskLab::new(cfg);
        let mut gaps = 0;
        for d in lab.disks() {
            assert_eq!(d.values.len(), cfg.minutes());
            assert!(d.values.iter().flatten().all(|v| (0.0..=100.0).contains(v)));
            gaps += d.values.iter().filter(|v| v.is_none()).count();
            if !d.truth.shape.fills() {
                assert_eq!(d.truth.fill_at, None);
            }
        }
        assert!(gaps > 0, "no agent gaps");
    }

    #[test]
    fn autocorrelated_noise_hides_from_consecutive_differences() {
        // A quiet disk's consecutive differences see only part of the
        // variance around its level (the trap of cause 3).
        let lab = DiskLab::new(DiskLabConfig::new(3));
        let mut ratios = Vec::new();
        for d in lab
            .disks()
            .filter(|d| d.truth.shape == DiskShape::Quiet)
            .take(40)
        {
            let v: Vec<f64> = d.values[..1440].iter().flatten().copied().collect();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
            let dv = v
                .windows(2)
                .map(|w| 0.5 * (w[1] - w[0]).powi(2))
                .sum::<f64>()
                / (v.len() - 1) as f64;
            ratios.push(dv / var);
        }
        ratios.sort_by(f64::total_cmp);
        assert!(ratios[ratios.len() / 2] < 0.5, "{ratios:?}");
    }
}
