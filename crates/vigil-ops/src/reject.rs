//! Why input is refused: one reason enum for every drop path, whose string
//! is at once the DLQ reason, the metric label and the log field.

use serde::{Deserialize, Serialize};

/// Why a batch or some of its points were refused. Each variant maps to
/// one stable snake_case string ([`RejectReason::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The record is not a valid `TelemetryBatch`.
    Decode,
    /// The record is larger than `limits.max_batch_bytes`.
    TooLarge,
    /// More series than `limits.max_series_per_batch`.
    TooManySeries,
    /// More points than `limits.max_points_per_batch`.
    TooManyPoints,
    /// Tenant or agent id is empty.
    MissingId,
    /// Tenant or agent id is too long or contains control characters.
    InvalidId,
    /// Metric name is empty, too long or has characters outside `[A-Za-z0-9_.:]`.
    InvalidMetric,
    /// A label key is invalid, or keys repeat.
    InvalidLabels,
    /// `timestamps_ms` and `values` differ in length.
    LengthMismatch,
    /// A value is NaN or infinite.
    NonFinite,
    /// A timestamp outside 1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999Z.
    OutOfRange,
    /// A timestamp is further in the future than `max_clock_skew`.
    Future,
    /// A point belongs to a window that is already closed.
    Late,
    /// The batch's sequence number is below the agent's dedup window, so
    /// whether it is a resend cannot be decided.
    SeqTooOld,
    /// A new series would exceed `limits.max_series_per_agent` or
    /// `limits.max_series_per_tenant` (the cardinality guard).
    SeriesLimit,
    /// An OTLP metric of a type Vigil does not read (exponential
    /// histogram, summary, a sum or histogram without temporality).
    UnsupportedType,
    /// An OTLP point older than the timestamps its series remembers for
    /// dedup (OTLP has no sequence), so whether it is a resend cannot be
    /// decided (see docs/otlp.md).
    DedupOverflow,
    /// A batch of a new agent when the partition already holds
    /// `limits.max_agents` agents, or of an agent of a new tenant when it
    /// holds `limits.max_tenants` tenants (the agent-table guard).
    AgentLimit,
    /// More status reports and security events than
    /// `limits.max_events_per_batch`.
    TooManyEvents,
    /// A status report that breaks the wire contract (no or invalid
    /// `observed_at_ms`, an unknown or repeated patch severity, a
    /// timestamp out of range, a string over `limits.max_label_bytes`).
    InvalidStatus,
    /// A security event that breaks the wire contract (no or invalid
    /// timestamp, unknown kind, a field its kind requires is empty, a
    /// string over `limits.max_label_bytes` or with control characters).
    InvalidSecurityEvent,
}

impl RejectReason {
    /// Every reason, in a stable order (for metrics pre-registration and docs).
    pub const ALL: [RejectReason; 21] = [
        RejectReason::Decode,
        RejectReason::TooLarge,
        RejectReason::TooManySeries,
        RejectReason::TooManyPoints,
        RejectReason::MissingId,
        RejectReason::InvalidId,
        RejectReason::InvalidMetric,
        RejectReason::InvalidLabels,
        RejectReason::LengthMismatch,
        RejectReason::NonFinite,
        RejectReason::OutOfRange,
        RejectReason::Future,
        RejectReason::Late,
        RejectReason::SeqTooOld,
        RejectReason::SeriesLimit,
        RejectReason::UnsupportedType,
        RejectReason::DedupOverflow,
        RejectReason::AgentLimit,
        RejectReason::TooManyEvents,
        RejectReason::InvalidStatus,
        RejectReason::InvalidSecurityEvent,
    ];

    /// The stable name: DLQ reason, metric label value, log field.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Decode => "decode",
            RejectReason::TooLarge => "too_large",
            RejectReason::TooManySeries => "too_many_series",
            RejectReason::TooManyPoints => "too_many_points",
            RejectReason::MissingId => "missing_id",
            RejectReason::InvalidId => "invalid_id",
            RejectReason::InvalidMetric => "invalid_metric",
            RejectReason::InvalidLabels => "invalid_labels",
            RejectReason::LengthMismatch => "length_mismatch",
            RejectReason::NonFinite => "non_finite",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::Future => "future",
            RejectReason::Late => "late",
            RejectReason::SeqTooOld => "seq_too_old",
            RejectReason::SeriesLimit => "series_limit",
            RejectReason::UnsupportedType => "unsupported_type",
            RejectReason::DedupOverflow => "dedup_overflow",
            RejectReason::AgentLimit => "agent_limit",
            RejectReason::TooManyEvents => "too_many_events",
            RejectReason::InvalidStatus => "invalid_status",
            RejectReason::InvalidSecurityEvent => "invalid_security_event",
        }
    }

    /// Index into [`RejectReason::ALL`], for per-reason counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// True when the whole batch is refused (as opposed to some points).
    pub fn is_batch_level(self) -> bool {
        !matches!(
            self,
            RejectReason::NonFinite
                | RejectReason::Future
                | RejectReason::Late
                | RejectReason::OutOfRange
                | RejectReason::SeriesLimit
                | RejectReason::UnsupportedType
                | RejectReason::DedupOverflow
        )
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a record came from: Kafka (topic, partition, offset), or a file
/// (`source` = file name, partition 0, offset = record index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Partition number.
    pub partition: i32,
    /// Offset of the record within the partition.
    pub offset: i64,
}

/// A refused batch, or the refused points of one series of a batch, ready
/// for the dead-letter sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    /// Why.
    pub reason: RejectReason,
    /// Human-readable detail (decode error, the limit that was exceeded...).
    pub detail: String,
    /// Source record.
    pub position: Position,
    /// Tenant, when the batch decoded.
    pub tenant: Option<String>,
    /// Agent, when the batch decoded.
    pub agent: Option<String>,
    /// Batch sequence number, when the batch decoded.
    pub seq: Option<u64>,
    /// Metric of the refused points (point-level reasons).
    pub metric: Option<String>,
    /// Canonical labels of the refused points (point-level reasons).
    pub labels: Option<String>,
    /// The refused points as (timestamp ms, value) (point-level reasons).
    pub points: Vec<(i64, f64)>,
    /// Number of points refused (for batch-level reasons, all the batch's
    /// points when it decoded, else 0).
    pub point_count: u64,
    /// The raw record, for batch-level reasons (so it can be replayed).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub raw: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_position_in_all_and_names_are_unique() {
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r}");
        }
        let mut names: Vec<_> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RejectReason::ALL.len());
    }
}
