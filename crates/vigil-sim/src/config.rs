//! Fleet configuration: size, time range, cadence, seed and the scenario mix.

use serde::{Deserialize, Serialize};

/// One minute in milliseconds.
pub const MINUTE_MS: i64 = 60_000;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// One day in milliseconds.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Default simulation start: 2026-11-02T00:00:00Z in ms since the Unix epoch.
pub const DEFAULT_START_MS: i64 = 1_793_577_600_000;

/// Upper bound on [`FleetConfig::agents`] accepted by [`FleetConfig::validate`].
pub const MAX_AGENTS: usize = 10_000_000;

/// What to simulate: fleet size, time range, cadence, seed and fault mix.
///
/// Deserialises from TOML/JSON with every field optional (missing fields
/// take the [`Default`] values) and unknown fields refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// Number of agents (endpoints). Default 1000.
    pub agents: usize,
    /// Number of tenants (client organisations) the agents belong to. Default 20.
    pub tenants: usize,
    /// Simulation start (true time), ms since the Unix epoch. Default
    /// 2026-11-02T00:00:00Z ([`DEFAULT_START_MS`]).
    pub start_ms: i64,
    /// Length of the simulated range in ms: points are sampled in
    /// `[start_ms, start_ms + duration_ms)`. Default 6 h.
    pub duration_ms: i64,
    /// Sampling interval of every series, ms. Default 10 s.
    pub point_interval_ms: i64,
    /// Interval between two batches of one agent, ms. Default 60 s.
    pub batch_interval_ms: i64,
    /// Every regular batch carries exactly `batch_interval_ms /
    /// point_interval_ms` points per series (its send time falls within one
    /// point interval after its last sample), e.g. one point per series for
    /// an agent that sends each tick. Requires `batch_interval_ms` to be a
    /// multiple of `point_interval_ms`. Exceptions: the agent's last batch
    /// at the end of the range may hold fewer. Default false: batches carry
    /// that many points ± 1, as agents whose send timer drifts against
    /// their sampling timer do.
    pub aligned_batches: bool,
    /// Most series in one regular batch: an agent with more series splits
    /// each of its batches into several, each with its own sequence number
    /// (the `AgentInfo` rides on the first), sent together. `None` (the
    /// default): all of an agent's series in one batch. Resends, late and
    /// malformed batches hold at most that many series too; the deliberate
    /// oversized faults (`too_large`, `too_many_series`,
    /// `too_many_points`) are not split.
    pub series_per_batch: Option<usize>,
    /// RNG seed: the same configuration and seed give byte-identical output.
    pub seed: u64,
    /// Fractions and rates of every scenario and fault.
    pub scenarios: ScenarioMix,
    /// Agents also send status reports (hourly, on their first batch of
    /// each hour) and security events (on the first batch after they
    /// happen), with a share of them in breach of the default rules: see
    /// [`crate::fleet_posture`]. Drawn from streams of their own, so the
    /// series are the same either way. Default false (`vigil demo` and
    /// `vigil simulate` turn it on).
    pub posture: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            agents: 1000,
            tenants: 20,
            start_ms: DEFAULT_START_MS,
            duration_ms: 6 * HOUR_MS,
            point_interval_ms: 10_000,
            batch_interval_ms: 60_000,
            aligned_batches: false,
            series_per_batch: None,
            seed: 42,
            scenarios: ScenarioMix::default(),
            posture: false,
        }
    }
}

/// Fractions and rates of the simulated scenarios and faults.
///
/// Disk fractions are shares of all disk series (the rest are
/// [`crate::DiskScenario::Flat`]); assignment is stratified, so a fleet with
/// `n` disks has `round(fraction * n)` of each (at least one of each non-zero
/// kind when there are enough disks). Episode rates are expected episodes per
/// agent per day. Record rates are probabilities per regular batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScenarioMix {
    /// Probability that an agent has a second disk `mount=/data`. Default 0.4.
    pub data_mount: f64,
    /// Share of disks that fill linearly to 100 % 2–40 h after start. Default 0.05.
    pub disk_fill: f64,
    /// Share of disks flat at 20–95 % with ±3 % noise (trap). Default 0.07.
    pub disk_flat_noisy: f64,
    /// Share of disks with a log-rotation sawtooth (trap). Default 0.06.
    pub disk_sawtooth: f64,
    /// Share of disks growing at night, cleared by morning (trap). Default 0.05.
    pub disk_nightly: f64,
    /// Share of disks with a one-off burst that is cleaned up (trap). Default 0.04.
    pub disk_burst: f64,
    /// Share of disks that fill then level off below 100 % (trap). Default 0.03.
    pub disk_plateau: f64,
    /// Fraction of agents that are busy hosts: their normal CPU load swings
    /// every day from 35–50 % at night to a 91–97 % afternoon peak (points
    /// clipped at 92 %), so a fixed 90 % threshold fires on their ordinary
    /// daily peak; labelled in [`crate::AgentTruth::busy_cpu`]. Drawn from
    /// the seed alone, so fleets without them are unchanged. Default 0.
    pub busy_cpu_agents: f64,
    /// CPU saturation episodes (> 95 % for 10–40 min) per agent-day. Default 0.4.
    pub cpu_saturation_per_day: f64,
    /// Memory leak episodes (climb to > 90 %, then restart) per agent-day. Default 0.15.
    pub memory_leak_per_day: f64,
    /// Service-down episodes (`service_up` = 0 for 5–60 min) per agent-day. Default 0.3.
    pub service_down_per_day: f64,
    /// Offline episodes (no batches for 15–60 min) per agent-day. Default 0.3.
    pub offline_per_day: f64,
    /// Fraction of agents whose clock runs 15 min ahead: all their batches
    /// are [`crate::Expect::Future`]. Default 0.01 (at least one agent when
    /// `force_every_kind` and the fleet has two agents or more).
    pub future_skew_agents: f64,
    /// Fraction of agents with a small clock skew (+2 min or −20 min) whose
    /// data stays on time. Default 0.03.
    pub small_skew_agents: f64,
    /// Probability per batch that it is resent 1–4 batches later
    /// ([`crate::Expect::Duplicate`]). Default 0.003.
    pub duplicate_rate: f64,
    /// Probability per batch of an extra batch of stale points
    /// ([`crate::Expect::Late`]). Default 0.0005.
    pub late_rate: f64,
    /// Probability per batch of a resend of a batch far below the dedup
    /// window ([`crate::Expect::SeqTooOld`]). Default 0.0002.
    pub seq_too_old_rate: f64,
    /// Probability per batch of an extra small malformed record (`decode`,
    /// `missing_id`, `invalid_metric`, `invalid_labels`,
    /// `length_mismatch`). Default 0.001.
    pub malformed_rate: f64,
    /// Probability per batch of an extra oversized record (`too_large`,
    /// `too_many_series`, `too_many_points`, 0.4–1.3 MB each). Default 3e-6.
    pub oversized_rate: f64,
    /// Probability per value of NaN/±inf in an `Accept` batch. Default 1e-5.
    pub non_finite_rate: f64,
    /// Fraction of agents that reboot: their numbering starts at 1 and
    /// restarts (from 0 or 1) at each reboot, inside the dedup window, so
    /// every batch is still [`crate::Expect::Accept`] and only a worker
    /// that tells restarts from resends keeps them. Default 0.
    pub reboot_agents: f64,
    /// Probability per batch of a rebooting agent that it reboots before
    /// its next batch. Default 0.02.
    pub reboot_rate: f64,
    /// Fraction of agents that send a boot id (`TelemetryBatch.boot_id`,
    /// a new random one at each reboot); the others send none. Default 0.
    pub boot_id_agents: f64,
    /// Fraction of agents with a slow collector: a SMART attribute
    /// (`smart_reallocated_sectors{disk=0}`) read every 5 minutes, each
    /// read taking 60–150 s and stamped at its start, delivered with the
    /// first batch after it finished: its points arrive minutes behind the
    /// agent's fast series (the pipeline's `smart_*` lateness override
    /// keeps them on time). Default 0.3.
    pub slow_collector_agents: f64,
    /// Emit oversized records at all. Set to false when the output goes to a
    /// Kafka broker with the default 1 MiB message limit, which would refuse
    /// the `too_large` record. Default true.
    pub include_oversized: bool,
    /// Guarantee at least one record of every [`crate::Expect`] kind and
    /// reject reason, and at least one episode of each kind, by scheduling
    /// one of each early (for fleets of ≥ 20 agents over ≥ 1 h). Default true.
    pub force_every_kind: bool,
}

impl Default for ScenarioMix {
    fn default() -> Self {
        ScenarioMix {
            data_mount: 0.4,
            disk_fill: 0.05,
            disk_flat_noisy: 0.07,
            disk_sawtooth: 0.06,
            disk_nightly: 0.05,
            disk_burst: 0.04,
            disk_plateau: 0.03,
            busy_cpu_agents: 0.0,
            cpu_saturation_per_day: 0.4,
            memory_leak_per_day: 0.15,
            service_down_per_day: 0.3,
            offline_per_day: 0.3,
            future_skew_agents: 0.01,
            small_skew_agents: 0.03,
            duplicate_rate: 0.003,
            late_rate: 0.0005,
            seq_too_old_rate: 0.0002,
            malformed_rate: 0.001,
            oversized_rate: 3e-6,
            non_finite_rate: 1e-5,
            reboot_agents: 0.0,
            reboot_rate: 0.02,
            boot_id_agents: 0.0,
            slow_collector_agents: 0.3,
            include_oversized: true,
            force_every_kind: true,
        }
    }
}

/// A configuration that [`FleetConfig::validate`] refused, with every
/// problem found (not only the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fleet config: {}", problems.join("; "))]
pub struct ConfigError {
    /// One message per problem, each naming the field (e.g.
    /// `scenarios.disk_fill must be in [0, 1], got 1.5`).
    pub problems: Vec<String>,
}

impl ScenarioMix {
    fn fractions(&self) -> [(&'static str, f64); 13] {
        [
            ("data_mount", self.data_mount),
            ("disk_fill", self.disk_fill),
            ("disk_flat_noisy", self.disk_flat_noisy),
            ("disk_sawtooth", self.disk_sawtooth),
            ("disk_nightly", self.disk_nightly),
            ("disk_burst", self.disk_burst),
            ("disk_plateau", self.disk_plateau),
            ("future_skew_agents", self.future_skew_agents),
            ("small_skew_agents", self.small_skew_agents),
            ("reboot_agents", self.reboot_agents),
            ("boot_id_agents", self.boot_id_agents),
            ("slow_collector_agents", self.slow_collector_agents),
            ("busy_cpu_agents", self.busy_cpu_agents),
        ]
    }

    fn record_rates(&self) -> [(&'static str, f64); 7] {
        [
            ("duplicate_rate", self.duplicate_rate),
            ("late_rate", self.late_rate),
            ("seq_too_old_rate", self.seq_too_old_rate),
            ("malformed_rate", self.malformed_rate),
            ("oversized_rate", self.oversized_rate),
            ("non_finite_rate", self.non_finite_rate),
            ("reboot_rate", self.reboot_rate),
        ]
    }

    fn day_rates(&self) -> [(&'static str, f64); 4] {
        [
            ("cpu_saturation_per_day", self.cpu_saturation_per_day),
            ("memory_leak_per_day", self.memory_leak_per_day),
            ("service_down_per_day", self.service_down_per_day),
            ("offline_per_day", self.offline_per_day),
        ]
    }

    pub(crate) fn disk_sum(&self) -> f64 {
        self.disk_fill
            + self.disk_flat_noisy
            + self.disk_sawtooth
            + self.disk_nightly
            + self.disk_burst
            + self.disk_plateau
    }

    pub(crate) fn extra_sum(&self) -> f64 {
        self.duplicate_rate
            + self.late_rate
            + self.seq_too_old_rate
            + self.malformed_rate
            + if self.include_oversized {
                self.oversized_rate
            } else {
                0.0
            }
    }
}

fn clamp01(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

fn non_negative(x: f64) -> f64 {
    if x.is_finite() {
        x.max(0.0)
    } else {
        0.0
    }
}

impl FleetConfig {
    /// Checks the configuration and reports every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.agents > MAX_AGENTS {
            problems.push(format!(
                "agents must be at most {MAX_AGENTS}, got {}",
                self.agents
            ));
        }
        if self.tenants == 0 {
            problems.push("tenants must be at least 1".to_string());
        }
        if self.duration_ms < 0 {
            problems.push(format!(
                "duration_ms must be >= 0, got {}",
                self.duration_ms
            ));
        }
        if self.point_interval_ms < 1 {
            problems.push(format!(
                "point_interval_ms must be >= 1, got {}",
                self.point_interval_ms
            ));
        }
        if self.batch_interval_ms < self.point_interval_ms.max(1) {
            problems.push(format!(
                "batch_interval_ms must be >= point_interval_ms ({}), got {}",
                self.point_interval_ms, self.batch_interval_ms
            ));
        }
        if self.aligned_batches
            && self.point_interval_ms >= 1
            && self.batch_interval_ms % self.point_interval_ms != 0
        {
            problems.push(format!(
                "aligned_batches needs batch_interval_ms ({}) to be a multiple of point_interval_ms ({})",
                self.batch_interval_ms, self.point_interval_ms
            ));
        }
        if self.series_per_batch == Some(0) {
            problems.push("series_per_batch must be at least 1".to_string());
        }
        if self
            .start_ms
            .checked_add(self.duration_ms.max(0))
            .and_then(|e| e.checked_add(DAY_MS * 365))
            .is_none()
        {
            problems.push("start_ms + duration_ms overflows".to_string());
        }
        let s = &self.scenarios;
        for (name, v) in s.fractions() {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("scenarios.{name} must be in [0, 1], got {v}"));
            }
        }
        for (name, v) in s.record_rates() {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("scenarios.{name} must be in [0, 1], got {v}"));
            }
        }
        for (name, v) in s.day_rates() {
            if !(v.is_finite() && (0.0..=1000.0).contains(&v)) {
                problems.push(format!("scenarios.{name} must be in [0, 1000], got {v}"));
            }
        }
        if s.disk_sum() > 1.0 + 1e-9 {
            problems.push(format!(
                "scenarios.disk_* fractions must sum to at most 1, got {}",
                s.disk_sum()
            ));
        }
        if s.future_skew_agents + s.small_skew_agents > 1.0 + 1e-9 {
            problems.push(
                "scenarios.future_skew_agents + small_skew_agents must be at most 1".to_string(),
            );
        }
        if s.extra_sum() > 1.0 + 1e-9 {
            problems.push(
                "scenarios duplicate/late/seq_too_old/malformed/oversized rates must sum to at most 1"
                    .to_string(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// A copy with every out-of-range value clamped to something usable
    /// (used by [`crate::Fleet::new`], which never fails): fractions to
    /// [0, 1] and scaled down when they sum above 1, negative durations to 0,
    /// intervals to at least 1 ms (batch ≥ point, a multiple of it when
    /// aligned), series per batch to at least 1, tenants to at least 1.
    pub fn normalized(&self) -> FleetConfig {
        let mut c = self.clone();
        c.agents = c.agents.min(MAX_AGENTS);
        c.tenants = c.tenants.max(1);
        c.point_interval_ms = c.point_interval_ms.max(1);
        c.batch_interval_ms = c.batch_interval_ms.max(c.point_interval_ms);
        if c.aligned_batches {
            // Round up to a whole number of point intervals.
            let r = c.batch_interval_ms % c.point_interval_ms;
            if r != 0 {
                c.batch_interval_ms = c.batch_interval_ms.saturating_add(c.point_interval_ms - r);
            }
        }
        c.series_per_batch = c.series_per_batch.map(|n| n.max(1));
        c.duration_ms = c.duration_ms.clamp(0, 100 * 365 * DAY_MS);
        c.start_ms = c.start_ms.clamp(-(1 << 52), 1 << 52);
        let s = &mut c.scenarios;
        for v in [
            &mut s.data_mount,
            &mut s.disk_fill,
            &mut s.disk_flat_noisy,
            &mut s.disk_sawtooth,
            &mut s.disk_nightly,
            &mut s.disk_burst,
            &mut s.disk_plateau,
            &mut s.future_skew_agents,
            &mut s.small_skew_agents,
            &mut s.duplicate_rate,
            &mut s.late_rate,
            &mut s.seq_too_old_rate,
            &mut s.malformed_rate,
            &mut s.oversized_rate,
            &mut s.non_finite_rate,
            &mut s.reboot_agents,
            &mut s.reboot_rate,
            &mut s.boot_id_agents,
            &mut s.slow_collector_agents,
            &mut s.busy_cpu_agents,
        ] {
            *v = clamp01(*v);
        }
        for v in [
            &mut s.cpu_saturation_per_day,
            &mut s.memory_leak_per_day,
            &mut s.service_down_per_day,
            &mut s.offline_per_day,
        ] {
            *v = non_negative(*v).min(1000.0);
        }
        let d = s.disk_sum();
        if d > 1.0 {
            for v in [
                &mut s.disk_fill,
                &mut s.disk_flat_noisy,
                &mut s.disk_sawtooth,
                &mut s.disk_nightly,
                &mut s.disk_burst,
                &mut s.disk_plateau,
            ] {
                *v /= d;
            }
        }
        let k = s.future_skew_agents + s.small_skew_agents;
        if k > 1.0 {
            s.future_skew_agents /= k;
            s.small_skew_agents /= k;
        }
        let e = s.extra_sum();
        if e > 1.0 {
            for v in [
                &mut s.duplicate_rate,
                &mut s.late_rate,
                &mut s.seq_too_old_rate,
                &mut s.malformed_rate,
                &mut s.oversized_rate,
            ] {
                *v /= e;
            }
        }
        c
    }

    /// End of the sampled range (true time), `start_ms + duration_ms`.
    pub fn end_ms(&self) -> i64 {
        self.start_ms.saturating_add(self.duration_ms.max(0))
    }
}
