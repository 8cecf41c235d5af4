//! Ground truth: what each record is expected to do in the pipeline, the
//! scenario behind every disk, the planned episodes, and exact counters of
//! what was emitted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Batch-level reject reasons the simulator produces, with the strings the
/// pipeline uses as DLQ reason.
pub mod reason {
    /// The record does not decode as a `TelemetryBatch`.
    pub const DECODE: &str = "decode";
    /// The record is larger than 1 MiB.
    pub const TOO_LARGE: &str = "too_large";
    /// `tenant_id` or `agent_id` is empty.
    pub const MISSING_ID: &str = "missing_id";
    /// A metric name breaks `[A-Za-z_:][A-Za-z0-9_.:]*` or is over 200 bytes.
    pub const INVALID_METRIC: &str = "invalid_metric";
    /// A label key breaks `[A-Za-z_][A-Za-z0-9_]*` or repeats in a series.
    pub const INVALID_LABELS: &str = "invalid_labels";
    /// `timestamps_ms` and `values` of a series differ in length.
    pub const LENGTH_MISMATCH: &str = "length_mismatch";
    /// More than 10 000 series in the batch.
    pub const TOO_MANY_SERIES: &str = "too_many_series";
    /// More than 100 000 points in the batch.
    pub const TOO_MANY_POINTS: &str = "too_many_points";

    /// Every reason above, in a stable order.
    pub const ALL: [&str; 8] = [
        DECODE,
        TOO_LARGE,
        MISSING_ID,
        INVALID_METRIC,
        INVALID_LABELS,
        LENGTH_MISMATCH,
        TOO_MANY_SERIES,
        TOO_MANY_POINTS,
    ];

    /// The reasons whose records are large (0.4–1.3 MB each).
    pub const OVERSIZED: [&str; 3] = [TOO_LARGE, TOO_MANY_SERIES, TOO_MANY_POINTS];

    /// The `&'static str` of a known reason, if `s` is one.
    pub fn lookup(s: &str) -> Option<&'static str> {
        ALL.iter().copied().find(|r| *r == s)
    }
}

/// What the pipeline must do with one record: the label of a [`crate::SimRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// A valid batch, every point on time. It may carry a few NaN/±inf
    /// values, which the pipeline refuses point by point (`non_finite`);
    /// the rest of the batch is accepted.
    Accept,
    /// A resent batch whose (agent, seq) was already delivered (same bytes),
    /// arriving after newer batches of the agent; within the dedup window.
    Duplicate,
    /// A batch with a fresh seq whose every point is in a window the agent's
    /// watermark has already closed (older than max timestamp − 30 s − 60 s − 60 s).
    Late,
    /// A batch from an agent whose clock runs 15 min ahead: every point is
    /// more than 5 min ahead of the arrival time.
    Future,
    /// A resend of a batch whose seq is more than the dedup window (1024)
    /// below the agent's highest delivered seq.
    SeqTooOld,
    /// A batch refused as a whole, with the reason string (see [`reason`]).
    Reject(&'static str),
}

impl Expect {
    /// Stable snake_case name: `accept`, `duplicate`, `late`, `future`,
    /// `seq_too_old`, or the reject reason itself.
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Accept => "accept",
            Expect::Duplicate => "duplicate",
            Expect::Late => "late",
            Expect::Future => "future",
            Expect::SeqTooOld => "seq_too_old",
            Expect::Reject(r) => r,
        }
    }

    /// True for [`Expect::Reject`].
    pub fn is_reject(self) -> bool {
        matches!(self, Expect::Reject(_))
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Records and points emitted for one [`Expect`] kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Number of records.
    pub records: u64,
    /// Points in them: the sum of `timestamps_ms` lengths over all series
    /// (0 for `decode`, whose bytes do not decode).
    pub points: u64,
    /// How many of those points have a NaN or ±inf value. Only
    /// [`Expect::Accept`] batches carry any.
    pub non_finite: u64,
}

impl Tally {
    fn add(&mut self, points: u64, non_finite: u64) {
        self.records += 1;
        self.points += points;
        self.non_finite += non_finite;
    }
}

/// Exact counters of the records emitted so far, per [`Expect`] kind.
/// Complete once the [`crate::Fleet`] iterator is exhausted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EmittedCounts {
    /// [`Expect::Accept`] records.
    pub accept: Tally,
    /// [`Expect::Duplicate`] records.
    pub duplicate: Tally,
    /// [`Expect::Late`] records.
    pub late: Tally,
    /// [`Expect::Future`] records.
    pub future: Tally,
    /// [`Expect::SeqTooOld`] records.
    pub seq_too_old: Tally,
    /// [`Expect::Reject`] records, by reason (only reasons that occurred).
    pub reject: BTreeMap<&'static str, Tally>,
}

impl EmittedCounts {
    pub(crate) fn add(&mut self, e: Expect, points: u64, non_finite: u64) {
        match e {
            Expect::Accept => self.accept.add(points, non_finite),
            Expect::Duplicate => self.duplicate.add(points, non_finite),
            Expect::Late => self.late.add(points, non_finite),
            Expect::Future => self.future.add(points, non_finite),
            Expect::SeqTooOld => self.seq_too_old.add(points, non_finite),
            Expect::Reject(r) => self.reject.entry(r).or_default().add(points, non_finite),
        }
    }

    /// The tally of one kind (zero when it never occurred).
    pub fn get(&self, e: Expect) -> Tally {
        match e {
            Expect::Accept => self.accept,
            Expect::Duplicate => self.duplicate,
            Expect::Late => self.late,
            Expect::Future => self.future,
            Expect::SeqTooOld => self.seq_too_old,
            Expect::Reject(r) => self.reject.get(r).copied().unwrap_or_default(),
        }
    }

    /// All records emitted.
    pub fn records(&self) -> u64 {
        self.accept.records
            + self.duplicate.records
            + self.late.records
            + self.future.records
            + self.seq_too_old.records
            + self.reject.values().map(|t| t.records).sum::<u64>()
    }

    /// Sum over every reject reason.
    pub fn rejected(&self) -> Tally {
        let mut t = Tally::default();
        for v in self.reject.values() {
            t.records += v.records;
            t.points += v.points;
            t.non_finite += v.non_finite;
        }
        t
    }
}

/// The shape a disk series follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskScenario {
    /// Linear growth that reaches 100 % 2–40 h after start (noise ±0.5–2 %),
    /// then stays at 100. The only scenario with a `fill_at_ms`.
    Fill,
    /// Flat at 20–95 % with ±3 % noise (trap).
    FlatNoisy,
    /// Log rotation: rises 2–8 % over 1–3 h, drops back, repeats (trap).
    Sawtooth,
    /// Grows 5–18 % from 22:00 to 05:00 local time, cleared by morning (trap).
    Nightly,
    /// One-off jump of 5–25 % held 20 min–3 h, then cleaned up (trap).
    Burst,
    /// Fills on an exponential approach and levels off at 80–96 % (trap).
    Plateau,
    /// Quiet: 10–80 % with tiny noise and a negligible drift.
    Flat,
}

impl DiskScenario {
    /// Every scenario, in a stable order.
    pub const ALL: [DiskScenario; 7] = [
        DiskScenario::Fill,
        DiskScenario::FlatNoisy,
        DiskScenario::Sawtooth,
        DiskScenario::Nightly,
        DiskScenario::Burst,
        DiskScenario::Plateau,
        DiskScenario::Flat,
    ];

    /// True for the shapes a predictive detector must stay quiet on.
    pub fn is_trap(self) -> bool {
        !matches!(self, DiskScenario::Fill | DiskScenario::Flat)
    }

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskScenario::Fill => "fill",
            DiskScenario::FlatNoisy => "flat_noisy",
            DiskScenario::Sawtooth => "sawtooth",
            DiskScenario::Nightly => "nightly",
            DiskScenario::Burst => "burst",
            DiskScenario::Plateau => "plateau",
            DiskScenario::Flat => "flat",
        }
    }
}

/// Truth of one disk series `disk_used_pct{mount=...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskTruth {
    /// Tenant id.
    pub tenant: String,
    /// Agent id.
    pub agent: String,
    /// Mount point label value (`/` or `/data`).
    pub mount: String,
    /// The shape of the series.
    pub scenario: DiskScenario,
    /// For [`DiskScenario::Fill`]: the exact event time (agent clock, the
    /// point timestamps' time base) at which the noiseless trend reaches
    /// 100 %. May lie after the end of the simulation. `None` otherwise.
    pub fill_at_ms: Option<i64>,
    /// Bound of the additive noise, in percentage points (values are the
    /// trend ± at most this, clamped to [0, 100]).
    pub noise_pct: f64,
    /// Trend value at the start of the simulation, in %.
    pub start_pct: f64,
}

/// Kind of a planned metric episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeKind {
    /// `cpu_pct` above 95 % at every point.
    CpuSaturation,
    /// `mem_pct` climbs linearly from its baseline to 92–98 % and drops back
    /// at `end_ms` (the process restarts). It is above 90 % for the last
    /// part of the episode only.
    MemoryLeak,
    /// `service_up{service=...}` is 0.
    ServiceDown,
}

/// A planned episode of one agent's metric, in event time (the agent's
/// clock, the time base of its point timestamps), `[start_ms, end_ms)`.
/// Episodes lie inside the simulated range; parts that fall into an offline
/// episode are not seen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Episode {
    /// Tenant id.
    pub tenant: String,
    /// Agent id.
    pub agent: String,
    /// What happens.
    pub kind: EpisodeKind,
    /// First affected instant.
    pub start_ms: i64,
    /// End (exclusive).
    pub end_ms: i64,
    /// For [`EpisodeKind::ServiceDown`]: the `service` label value.
    pub service: Option<String>,
    /// For [`EpisodeKind::MemoryLeak`]: the first instant the trend is above 90 %.
    pub above_90_from_ms: Option<i64>,
}

/// An offline episode, in true time (= processing/arrival time): the agent
/// sends no batch in `[start_ms, end_ms)`. Its last batch before was sent
/// before `start_ms` (and may arrive up to ~8 s later); its next batch is
/// sent at or after `end_ms` with the next seq and only points sampled from
/// `end_ms` on, and carries its `AgentInfo`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OfflineEpisode {
    /// Tenant id.
    pub tenant: String,
    /// Agent id.
    pub agent: String,
    /// Start of the silence.
    pub start_ms: i64,
    /// End of the silence.
    pub end_ms: i64,
}

/// An agent whose clock is wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkewedAgent {
    /// Tenant id.
    pub tenant: String,
    /// Agent id.
    pub agent: String,
    /// Agent clock − true clock, ms (applies to point timestamps and `sent_at_ms`).
    pub skew_ms: i64,
    /// True when the skew puts every point more than 5 min in the future:
    /// all the agent's batches are [`Expect::Future`].
    pub future: bool,
}

/// Descriptive facts about one simulated agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentTruth {
    /// Tenant id.
    pub tenant: String,
    /// Agent id (the Kafka key).
    pub agent: String,
    /// Hostname sent in `AgentInfo`, e.g. `acme-ws-0042`.
    pub hostname: String,
    /// Operating system sent in `AgentInfo`.
    pub os: String,
    /// Agent version sent in `AgentInfo`.
    pub agent_version: String,
    /// Agent clock − true clock, ms (0 for most agents).
    pub clock_skew_ms: i64,
    /// Mount points of its disk series.
    pub mounts: Vec<String>,
    /// Services of its `service_up` series.
    pub services: Vec<String>,
    /// A busy host: its daily CPU peak reaches 91–97 % as normal load
    /// (not an incident; see `ScenarioMix::busy_cpu_agents`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub busy_cpu: bool,
}

/// Everything the simulator knows about the fleet it generates.
///
/// All fields but `counts` are complete as soon as the [`crate::Fleet`] is
/// built; `counts` is complete once its iterator is exhausted.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FleetTruth {
    /// Every agent, in fleet order.
    pub agents: Vec<AgentTruth>,
    /// Every disk series.
    pub disks: Vec<DiskTruth>,
    /// CPU, memory and service episodes.
    pub episodes: Vec<Episode>,
    /// Offline episodes.
    pub offline: Vec<OfflineEpisode>,
    /// Agents with a wrong clock.
    pub skewed: Vec<SkewedAgent>,
    /// Records and points emitted per expected outcome.
    pub counts: EmittedCounts,
    /// Reboots of agents (see `ScenarioMix::reboot_agents`), in emission
    /// order; like `counts`, complete once the iterator is exhausted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reboots: Vec<Reboot>,
    /// Every agent's status and security posture, when the fleet sends
    /// them ([`crate::FleetConfig::posture`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub posture: Vec<crate::fleet_posture::PostureTruth>,
}

/// An agent restart: its numbering starts again from `first_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reboot {
    /// Tenant id.
    pub tenant: String,
    /// Agent id.
    pub agent: String,
    /// Arrival (true time) of the first batch after the reboot.
    pub arrival_ms: i64,
    /// Its sequence number (0 or 1).
    pub first_seq: u64,
    /// The new boot id (0 when the agent sends none).
    pub boot_id: u64,
}

impl FleetTruth {
    /// True when `agent`'s batches are all [`Expect::Future`].
    pub fn is_future_agent(&self, agent: &str) -> bool {
        self.skewed.iter().any(|s| s.future && s.agent == agent)
    }

    /// Disk series of one scenario.
    pub fn disks_of(&self, scenario: DiskScenario) -> impl Iterator<Item = &DiskTruth> {
        self.disks.iter().filter(move |d| d.scenario == scenario)
    }
}
