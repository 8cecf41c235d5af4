//! # vigil-sim — a deterministic RMM fleet simulator with labelled faults
//!
//! `vigil-sim` generates the Kafka records a fleet of RMM agents would send
//! to `rmm.telemetry.v1`: one encoded [`vigil_proto::v1::TelemetryBatch`]
//! per record, keyed by agent id, in arrival order. Every record carries
//! what the pipeline must do with it ([`Expect`]), and the fleet keeps the
//! ground truth ([`FleetTruth`]) of the scenarios it simulated: which disks
//! fill and exactly when, which are traps for a trend detector, when CPU,
//! memory and services misbehave, when agents go offline, whose clocks are
//! wrong, and exact counters of records and points per expected outcome.
//! It feeds `vigil simulate`, `vigil demo` and the oracle/detector tests.
//!
//! ```text
//! FleetConfig ──plan──▶ agents (tenant, host, OS, series, value models,
//!     (seed)            disk scenario, episodes, offline, clock skew)
//!                          │ one ChaCha8 stream per agent
//!                          ▼
//!   binary heap of pending events, ordered by (arrival, agent, serial)
//!     regular batch ─▶ sample points ─▶ prost encode ─▶ SimRecord{Accept|Future}
//!        └─ draws extras: resend (Duplicate), stale batch (Late),
//!           spool resend (SeqTooOld), malformed (Reject(reason));
//!           rebooting agents restart `seq` (with or without a boot id)
//!                          │
//!                          ▼
//!   Iterator<Item = SimRecord> (non-decreasing arrival_ms) + FleetTruth
//! ```
//!
//! With [`FleetConfig::posture`] the same agents also send hourly status
//! reports and their security events, a share of them in breach of the
//! default rules, labelled in [`FleetTruth::posture`] ([`fleet_posture`]).
//!
//! Besides the record-level fleet, [`disklab`] generates plain labelled
//! `disk_used_pct` series (1,000 disks × 14 days of 1-minute points: fills
//! of five shapes and every trap a predictive rule falls into) that a
//! detector's pure code is fed directly, and [`diskscore`] scores the
//! incidents it opens (recall, lead, false incidents per 1,000 disk-days,
//! incidents per filling disk, predicted-time error); [`diskbaseline`]
//! evaluates the Prometheus node-mixin disk-fill alerts on the same disks
//! as the yardstick.
//!
//! ## Guarantees
//! - **Deterministic**: the same [`FleetConfig`] (seed included) gives
//!   byte-identical records in the same order.
//! - **Streaming**: memory is O(agents), not O(duration); nothing is
//!   pre-built. The library does no I/O; [`write_delimited`] writes to any
//!   [`std::io::Write`].
//! - **Exact labels**, under the pipeline's default semantics (the
//!   `PIPELINE_*` constants): 60 s tumbling windows aligned to the epoch,
//!   a per-agent watermark = max point timestamp of the agent's earlier
//!   batches − 30 s (advanced after each batch), 5 min allowed clock skew,
//!   a 1024-wide dedup window, and the batch limits (1 MiB, 10 000 series,
//!   100 000 points, 200-byte metric names). On-time points are at most
//!   ~13 s older than the agent's previous maximum, so they are on time
//!   with a margin of 17 s; every point of a `Late` batch is at least 60 s
//!   older than the end of the last closed window. Each malformed record
//!   breaks exactly one rule, so its reason does not depend on the order
//!   the pipeline checks them in.
//! - Percent series stay within [0, 100] (apart from the rare injected
//!   NaN/±inf values of `Accept` batches).
//!
//! ## Time bases
//! Point timestamps, `sent_at_ms`, disk `fill_at_ms` and metric episodes
//! are in *event time*, the agent's clock (true time + its skew).
//! `arrival_ms` and offline episodes are in *true time* (processing time).
//! For the 97 %+ of agents without skew the two coincide.

#![warn(missing_docs)]

mod config;
mod delimited;
pub mod diskbaseline;
pub mod disklab;
pub mod diskscore;
mod fleet;
pub mod fleet_posture;
mod malformed;
mod model;
pub mod otlp;
pub mod posture;
mod truth;

pub use config::{
    ConfigError, FleetConfig, ScenarioMix, DAY_MS, DEFAULT_START_MS, HOUR_MS, MAX_AGENTS, MINUTE_MS,
};
pub use delimited::{
    read_delimited, read_delimited_slice, write_delimited, DelimitedError, DelimitedReader,
    DelimitedSlice, Frame, SkipKind, Skipped, MAX_DELIMITED_RECORD,
};
pub use fleet::{Fleet, SimRecord, AGENT_INFO_EVERY, FUTURE_SKEW_MS, SMALL_SKEWS_MS};
pub use truth::{
    reason, AgentTruth, DiskScenario, DiskTruth, EmittedCounts, Episode, EpisodeKind, Expect,
    FleetTruth, OfflineEpisode, Reboot, SkewedAgent, Tally,
};

/// Window size the labels assume (the pipeline default), ms.
pub const PIPELINE_WINDOW_MS: i64 = 60_000;
/// Allowed lateness the labels assume (the pipeline default), ms.
pub const PIPELINE_ALLOWED_LATENESS_MS: i64 = 30_000;
/// Lateness the labels assume for the slow collector's metrics (the
/// pipeline's default `[[pipeline.lateness]]` override for `smart_*`), ms.
pub const PIPELINE_SLOW_LATENESS_MS: i64 = 600_000;
/// Metric prefix of the slow collector's series (see
/// [`ScenarioMix::slow_collector_agents`]).
pub const SLOW_METRIC_PREFIX: &str = "smart_";
/// Allowed clock skew into the future the labels assume, ms.
pub const PIPELINE_MAX_CLOCK_SKEW_MS: i64 = 5 * 60_000;
/// Width of the per-agent dedup window (sequence numbers) the labels assume.
pub const PIPELINE_DEDUP_WINDOW: u64 = 1024;
/// Largest accepted record, bytes (`too_large` above).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Most series accepted in one batch (`too_many_series` above).
pub const MAX_SERIES_PER_BATCH: usize = 10_000;
/// Most points accepted in one batch (`too_many_points` above).
pub const MAX_POINTS_PER_BATCH: usize = 100_000;
/// Longest accepted metric name, bytes (`invalid_metric` above).
pub const MAX_METRIC_LEN: usize = 200;
