//! Pipeline settings: window size, lateness, idle timeout, clock skew,
//! dedup width and input limits. Deserialised from the `[pipeline]` table of
//! the worker config; defaults match DESIGN.md.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the pipeline's processing time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    /// The caller passes the wall clock (the Kafka worker).
    #[default]
    Wall,
    /// Processing time is reconstructed from the batches' `sent_at_ms`
    /// (replays, `vigil ingest`, `vigil demo`): see [`crate::clock::ReplayClock`].
    Replay,
}

/// Limits that protect a worker from oversized or abusive batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted record, in bytes (Kafka's default is 1 MiB).
    pub max_batch_bytes: usize,
    /// Most series in one batch.
    pub max_series_per_batch: usize,
    /// Most points in one batch (all series together).
    pub max_points_per_batch: usize,
    /// Longest tenant or agent id, in bytes.
    pub max_id_bytes: usize,
    /// Longest metric name, in bytes.
    pub max_metric_bytes: usize,
    /// Most labels on one series.
    pub max_labels: usize,
    /// Longest label key or value, in bytes.
    pub max_label_bytes: usize,
    /// Most series one agent may have in a partition's state; points of
    /// further new series are refused as `series_limit`.
    pub max_series_per_agent: usize,
    /// Most series one tenant may have in a partition's state (its agents
    /// together); points of further new series are refused as
    /// `series_limit`.
    pub max_series_per_tenant: usize,
    /// Most agents in a partition's state; batches of further new agents
    /// are refused as `agent_limit` until idle agents are evicted
    /// (`state_ttl`).
    pub max_agents: usize,
    /// Most tenants in a partition's state; batches of agents of further
    /// new tenants are refused as `agent_limit`.
    pub max_tenants: usize,
    /// Most status reports and security events in one batch (together);
    /// a batch with more is refused as `too_many_events`. Their string
    /// fields (user, address, technician, ...) are bounded by
    /// `max_label_bytes`.
    pub max_events_per_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_bytes: 1 << 20,
            max_series_per_batch: 10_000,
            max_points_per_batch: 100_000,
            max_id_bytes: 256,
            max_metric_bytes: 200,
            max_labels: 32,
            max_label_bytes: 1024,
            max_series_per_agent: 10_000,
            max_series_per_tenant: 500_000,
            max_agents: 250_000,
            max_tenants: 10_000,
            max_events_per_batch: 10_000,
        }
    }
}

/// More allowed lateness for the series of some metrics: slow collectors
/// (SMART attributes, patch scans, service probes) whose points are stamped
/// at collection start and arrive behind the agent's fast series. See
/// docs/semantics.md "Slow collectors".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatenessOverride {
    /// Metric names, exact or a prefix ending in `*` (`smart_*`).
    pub metrics: Vec<String>,
    /// The lateness allowed to these metrics' series (at least the
    /// pipeline's `allowed_lateness`, at most 24 h).
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
}

impl LatenessOverride {
    /// Whether `metric` is one of this override's metrics.
    pub fn matches(&self, metric: &str) -> bool {
        self.metrics.iter().any(|m| match m.strip_suffix('*') {
            Some(prefix) => metric.starts_with(prefix),
            None => m == metric,
        })
    }
}

/// The default overrides: SMART attributes, which agents read on an hourly
/// or slower cycle and stamp at collection start, 10 minutes.
fn default_lateness() -> Vec<LatenessOverride> {
    vec![LatenessOverride {
        metrics: vec!["smart_*".into()],
        allowed_lateness: Duration::from_secs(600),
    }]
}

/// Settings of the operator chain (one per worker, shared by partitions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Tumbling window size W; windows are `[k·W, (k+1)·W)` on the epoch.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Allowed lateness L: an agent's watermark is its greatest timestamp
    /// minus L.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// More lateness for the series of slow collectors' metrics, first
    /// match wins (`[[pipeline.lateness]]`); default: `smart_*` 10 min.
    pub lateness: Vec<LatenessOverride>,
    /// An agent silent this long (processing time) has its windows closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Points further than this ahead of processing time are refused as
    /// `future`.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Width of the per-agent anti-replay window, in sequence numbers
    /// (multiple of 64).
    pub dedup_window: u32,
    /// How often idle timeouts and offline agents are checked (processing
    /// time).
    #[serde(with = "humantime_serde")]
    pub tick_interval: Duration,
    /// State that ends: an agent that sends nothing for this long
    /// (processing time) is evicted with its series, and a series with no
    /// point for this long (its agent's event time) is evicted; their open
    /// incidents resolve with reason `stale` (docs/semantics.md "State
    /// that ends").
    #[serde(with = "humantime_serde")]
    pub state_ttl: Duration,
    /// Source of processing time.
    pub clock: ClockMode,
    /// Input limits.
    pub limits: Limits,
    /// OTLP input: identity attributes and the metric mapping.
    pub otlp: crate::otlp::OtlpConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            window: Duration::from_secs(60),
            allowed_lateness: Duration::from_secs(30),
            lateness: default_lateness(),
            idle_timeout: Duration::from_secs(300),
            max_clock_skew: Duration::from_secs(300),
            dedup_window: 1024,
            tick_interval: Duration::from_secs(5),
            state_ttl: Duration::from_secs(72 * 3600),
            clock: ClockMode::Wall,
            limits: Limits::default(),
            otlp: crate::otlp::OtlpConfig::default(),
        }
    }
}

/// One problem found by [`PipelineConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pipeline.{field}: {message}")]
pub struct ConfigProblem {
    /// Field path below `pipeline`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl PipelineConfig {
    /// Window size in ms.
    pub fn window_ms(&self) -> i64 {
        self.window.as_millis() as i64
    }

    /// Lateness the series of `metric` are allowed beyond
    /// `allowed_lateness`, in ms (0 unless a [`LatenessOverride`] names
    /// the metric; the first that does decides).
    #[inline]
    pub fn extra_lateness_ms(&self, metric: &str) -> i64 {
        if self.lateness.is_empty() {
            return 0;
        }
        self.lateness
            .iter()
            .find(|o| o.matches(metric))
            .map_or(0, |o| {
                o.allowed_lateness
                    .saturating_sub(self.allowed_lateness)
                    .as_millis() as i64
            })
    }

    /// Checks every setting and returns all problems at once.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let mut bad = |field, message: &str| {
            p.push(ConfigProblem {
                field,
                message: message.to_string(),
            })
        };
        if self.window.as_millis() < 1000 || !self.window.as_millis().is_multiple_of(1000) {
            bad("window", "must be a whole number of seconds, at least 1s");
        }
        if self.window.as_millis() > 86_400_000 {
            bad("window", "must be at most 24h");
        }
        if self.allowed_lateness > Duration::from_secs(86_400) {
            bad("allowed_lateness", "must be at most 24h");
        }
        for o in &self.lateness {
            if o.allowed_lateness < self.allowed_lateness
                || o.allowed_lateness > Duration::from_secs(86_400)
            {
                bad(
                    "lateness.allowed_lateness",
                    "must be between the pipeline's allowed_lateness and 24h",
                );
            }
            if o.metrics.is_empty()
                || o.metrics
                    .iter()
                    .any(|m| m.is_empty() || m == "*" || m[..m.len() - 1].contains('*'))
            {
                bad(
                    "lateness.metrics",
                    "must list metric names, each exact or a prefix ending in `*` (not `*` alone)",
                );
            }
        }
        if self.idle_timeout < self.tick_interval {
            bad("idle_timeout", "must be at least tick_interval");
        }
        const WEEK: Duration = Duration::from_secs(7 * 86_400);
        if self.idle_timeout > WEEK {
            bad("idle_timeout", "must be at most 7d");
        }
        if self.max_clock_skew > WEEK {
            bad("max_clock_skew", "must be at most 7d");
        }
        if self.tick_interval > Duration::from_secs(3600) {
            bad("tick_interval", "must be at most 1h");
        }
        if self.tick_interval.is_zero() {
            bad("tick_interval", "must be positive");
        }
        if self.dedup_window < 64
            || !self.dedup_window.is_multiple_of(64)
            || self.dedup_window > 1 << 20
        {
            bad(
                "dedup_window",
                "must be a multiple of 64 between 64 and 1048576",
            );
        }
        if self.state_ttl < self.idle_timeout || self.state_ttl < Duration::from_secs(60) {
            bad("state_ttl", "must be at least idle_timeout and at least 1m");
        }
        if self.state_ttl > Duration::from_secs(365 * 86_400) {
            bad("state_ttl", "must be at most 365d");
        }
        let l = &self.limits;
        for (field, v) in [
            ("limits.max_batch_bytes", l.max_batch_bytes),
            ("limits.max_series_per_batch", l.max_series_per_batch),
            ("limits.max_points_per_batch", l.max_points_per_batch),
            ("limits.max_id_bytes", l.max_id_bytes),
            ("limits.max_metric_bytes", l.max_metric_bytes),
            ("limits.max_labels", l.max_labels),
            ("limits.max_label_bytes", l.max_label_bytes),
            ("limits.max_series_per_agent", l.max_series_per_agent),
            ("limits.max_series_per_tenant", l.max_series_per_tenant),
            ("limits.max_agents", l.max_agents),
            ("limits.max_tenants", l.max_tenants),
            ("limits.max_events_per_batch", l.max_events_per_batch),
        ] {
            if v == 0 {
                bad(field, "must be positive");
            }
        }
        for message in self.otlp.validate() {
            p.push(ConfigProblem {
                field: "otlp",
                message,
            });
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_design() {
        let c = PipelineConfig::default();
        assert!(c.validate().is_empty());
        assert_eq!(c.window_ms(), 60_000);
        assert_eq!(c.allowed_lateness, Duration::from_secs(30));
        assert_eq!(c.max_clock_skew, Duration::from_secs(300));
    }

    #[test]
    fn parses_humantime_and_reports_all_problems() {
        let c: PipelineConfig = toml::from_str("window = \"0s\"\ndedup_window = 100\n").unwrap();
        let p = c.validate();
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(
            p[0].to_string(),
            "pipeline.window: must be a whole number of seconds, at least 1s"
        );
        assert!(toml::from_str::<PipelineConfig>("windw = \"1m\"").is_err());
    }
}
