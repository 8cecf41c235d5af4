//! Value models: what one agent's series read at a given event time.
//!
//! Every model is a deterministic trend plus noise drawn from the agent's
//! own RNG. Times are event times (the agent's clock). Percentages are
//! clamped to [0, 100].

use std::f64::consts::TAU;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::config::{DAY_MS, HOUR_MS};
use crate::truth::DiskScenario;

pub(crate) type SimRng = ChaCha8Rng;

#[inline]
pub(crate) fn normal(rng: &mut SimRng) -> f64 {
    rng.sample(StandardNormal)
}

/// Noise bounded to ±`amp` (a normal with σ = amp/2, clipped at 2σ).
#[inline]
pub(crate) fn bounded(rng: &mut SimRng, amp: f64) -> f64 {
    (normal(rng) * 0.5).clamp(-1.0, 1.0) * amp
}

/// Uniform in `[lo, hi)` (returns `lo` when the range is empty).
#[inline]
pub(crate) fn uniform(rng: &mut SimRng, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        lo + (hi - lo) * rng.random::<f64>()
    } else {
        lo
    }
}

/// Uniform integer in `[lo, hi]` (returns `lo` when the range is empty).
#[inline]
pub(crate) fn uniform_i(rng: &mut SimRng, lo: i64, hi: i64) -> i64 {
    if hi > lo {
        rng.random_range(lo..=hi)
    } else {
        lo
    }
}

/// Daily activity in [0, 1]: lowest at 02:00, highest at 14:00 local time.
#[inline]
pub(crate) fn diurnal(t_local_ms: i64) -> f64 {
    let tod = t_local_ms.rem_euclid(DAY_MS) as f64 / DAY_MS as f64;
    0.5 - 0.5 * (TAU * (tod - 2.0 / 24.0)).cos()
}

/// Index of the episode of `eps` (half-open ranges) that contains `t`.
#[inline]
pub(crate) fn active(eps: &[(i64, i64)], t: i64) -> Option<usize> {
    eps.iter().position(|&(s, e)| s <= t && t < e)
}

/// Which model a series of the agent's batch follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeriesKind {
    Cpu,
    Mem,
    Disk(usize),
    NetRx,
    NetTx,
    Service(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct Cpu {
    /// A busy host (see `ScenarioMix::busy_cpu_agents`).
    pub busy: bool,
    pub base: f64,
    pub amp: f64,
    pub sigma: f64,
    pub saturation: Vec<(i64, i64)>,
}

impl Cpu {
    fn value(&self, t: i64, day: f64, rng: &mut SimRng) -> f64 {
        if active(&self.saturation, t).is_some() {
            return (95.5 + 4.5 * rng.random::<f64>()).min(100.0);
        }
        let v = self.base + self.amp * day + self.sigma * normal(rng);
        if rng.random::<f64>() < 0.001 {
            // A short spike: one sample, not an episode.
            return uniform(rng, 70.0, 100.0);
        }
        v.clamp(0.0, 92.0)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Leak {
    pub start: i64,
    pub end: i64,
    pub peak: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct Mem {
    pub base: f64,
    pub wander: f64,
    pub period_ms: f64,
    pub phase: f64,
    pub sigma: f64,
    pub leaks: Vec<Leak>,
}

impl Mem {
    fn value(&self, t: i64, rng: &mut SimRng) -> f64 {
        for l in &self.leaks {
            if l.start <= t && t < l.end {
                let f = (t - l.start) as f64 / (l.end - l.start) as f64;
                let v = self.base + (l.peak - self.base) * f + bounded(rng, 0.5);
                return v.clamp(0.0, 100.0);
            }
        }
        let w = self.wander * (TAU * t as f64 / self.period_ms + self.phase).sin();
        (self.base + w + self.sigma * normal(rng)).clamp(1.0, 88.0)
    }

    /// First instant of a leak at which the trend is above 90 %.
    pub(crate) fn above_90_from(&self, l: &Leak) -> i64 {
        let f = ((90.0 - self.base) / (l.peak - self.base)).clamp(0.0, 1.0);
        l.start + (f * (l.end - l.start) as f64).ceil() as i64
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Net {
    pub rx_base: f64,
    pub tx_ratio: f64,
    pub sigma: f64,
}

/// One disk's shape. Field meaning depends on the scenario (see
/// [`Disk::trend`]).
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    pub scenario: DiskScenario,
    /// Event time of the simulation start.
    pub t0: i64,
    pub base: f64,
    pub noise: f64,
    /// Growth per ms (Fill, Flat drift).
    pub rate: f64,
    /// Amplitude (Sawtooth, Nightly, Burst).
    pub amp: f64,
    /// Sawtooth period; Nightly cleanup delay after 05:00.
    pub period: i64,
    /// Sawtooth phase; Nightly shift of the local clock.
    pub phase: i64,
    /// Burst start; Plateau onset.
    pub tb: i64,
    /// Burst end.
    pub te: i64,
    /// Plateau level.
    pub cap: f64,
    /// Plateau time constant, ms.
    pub tau: f64,
    /// Fill: event time the trend reaches 100.
    pub fill_at: Option<i64>,
    /// Agent's local time offset (Nightly).
    pub tz: i64,
}

impl Disk {
    pub(crate) fn blank(scenario: DiskScenario, t0: i64, tz: i64) -> Disk {
        Disk {
            scenario,
            t0,
            base: 50.0,
            noise: 0.3,
            rate: 0.0,
            amp: 0.0,
            period: HOUR_MS,
            phase: 0,
            tb: t0,
            te: t0,
            cap: 90.0,
            tau: HOUR_MS as f64,
            fill_at: None,
            tz,
        }
    }

    /// Noiseless value at event time `t`.
    pub(crate) fn trend(&self, t: i64) -> f64 {
        match self.scenario {
            DiskScenario::Fill => match self.fill_at {
                Some(f) if t >= f => 100.0,
                _ => self.base + self.rate * (t - self.t0) as f64,
            },
            DiskScenario::FlatNoisy => self.base,
            DiskScenario::Flat => self.base + self.rate * (t - self.t0) as f64,
            DiskScenario::Sawtooth => {
                let p = self.period.max(1);
                let f = (t - self.t0 + self.phase).rem_euclid(p) as f64 / p as f64;
                self.base + self.amp * f
            }
            DiskScenario::Nightly => {
                let tod = (t + self.tz + self.phase).rem_euclid(DAY_MS);
                let grow = 7 * HOUR_MS; // 22:00 -> 05:00
                let ramp = if tod >= 22 * HOUR_MS {
                    (tod - 22 * HOUR_MS) as f64 / grow as f64
                } else if tod < 5 * HOUR_MS {
                    (tod + 2 * HOUR_MS) as f64 / grow as f64
                } else if tod < 5 * HOUR_MS + self.period {
                    1.0
                } else {
                    0.0
                };
                self.base + self.amp * ramp
            }
            DiskScenario::Burst => {
                if self.tb <= t && t < self.te {
                    self.base + self.amp
                } else {
                    self.base
                }
            }
            DiskScenario::Plateau => {
                if t < self.tb {
                    self.base
                } else {
                    let x = (t - self.tb) as f64 / self.tau;
                    self.cap - (self.cap - self.base) * (-x).exp()
                }
            }
        }
    }

    fn value(&self, t: i64, rng: &mut SimRng) -> f64 {
        let tr = self.trend(t);
        if tr >= 100.0 {
            return 100.0;
        }
        (tr + bounded(rng, self.noise)).clamp(0.0, 100.0)
    }
}

/// All models of one agent.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    /// Local time offset of the agent's tenant, ms.
    pub tz: i64,
    pub cpu: Cpu,
    pub mem: Mem,
    pub net: Net,
    pub disks: Vec<Disk>,
    /// Down episodes per service.
    pub services: Vec<Vec<(i64, i64)>>,
}

impl Model {
    /// Shared diurnal factor at event time `t`.
    #[inline]
    pub(crate) fn day(&self, t: i64) -> f64 {
        diurnal(t + self.tz)
    }

    /// Value of series `kind` at event time `t` (`day` = [`Model::day`]`(t)`).
    #[inline]
    pub(crate) fn value(&self, kind: SeriesKind, t: i64, day: f64, rng: &mut SimRng) -> f64 {
        match kind {
            SeriesKind::Cpu => self.cpu.value(t, day, rng),
            SeriesKind::Mem => self.mem.value(t, rng),
            SeriesKind::Disk(i) => match self.disks.get(i) {
                Some(d) => d.value(t, rng),
                None => 0.0,
            },
            SeriesKind::NetRx => {
                (self.net.rx_base * (0.1 + day) * (self.net.sigma * normal(rng)).exp()).round()
            }
            SeriesKind::NetTx => (self.net.rx_base
                * self.net.tx_ratio
                * (0.1 + day)
                * (self.net.sigma * normal(rng)).exp())
            .round(),
            SeriesKind::Service(i) => match self.services.get(i) {
                Some(down) if active(down, t).is_some() => 0.0,
                _ => 1.0,
            },
        }
    }
}
