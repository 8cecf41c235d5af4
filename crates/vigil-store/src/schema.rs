//! The Arrow schemas of the datasets: the column names, types and
//! nullability that every Parquet file of a dataset carries, plus the sort
//! key and the column that decides a row's `date=` partition.
//!
//! The schemas here are the storage contract (see `docs/storage.md`):
//! columns are only ever added at the end, as nullable, never renamed or
//! retyped.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Time zone of every timestamp column: instants are stored as UTC
/// milliseconds and marked `isAdjustedToUTC = true` in Parquet.
pub const TIMEZONE: &str = "UTC";

/// Name of the Hive partition column. It is not stored in the files: it is
/// the directory `date=YYYY-MM-DD/` (UTC calendar day).
pub const PARTITION_COLUMN: &str = "date";

/// The Arrow type of every timestamp column: `Timestamp(Millisecond, "UTC")`.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(TIMEZONE.into()))
}

/// A dataset under the storage root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dataset {
    /// Closed window aggregates, one row per (series, window).
    Aggregates,
    /// Alert events, one row per `firing` or `resolved` event.
    Alerts,
    /// Status reports, one row per report (wire field 10).
    Status,
    /// Security events, one row per event (wire field 11).
    SecurityEvents,
    /// The audit trail of rule changes: one row per start of a worker or
    /// replay, plus one per rule or maintenance window that changed since
    /// the rules recorded last.
    Audit,
}

impl Dataset {
    /// Every dataset, in a stable order.
    pub const ALL: [Dataset; 5] = [
        Dataset::Aggregates,
        Dataset::Alerts,
        Dataset::Status,
        Dataset::SecurityEvents,
        Dataset::Audit,
    ];

    /// Directory name under the root, also the SQL table name.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Aggregates => "aggregates",
            Dataset::Alerts => "alerts",
            Dataset::Status => "status",
            Dataset::SecurityEvents => "security_events",
            Dataset::Audit => "audit",
        }
    }

    /// The file schema (without the `date` partition column).
    pub fn schema(self) -> SchemaRef {
        match self {
            Dataset::Aggregates => aggregates_schema(),
            Dataset::Alerts => alerts_schema(),
            Dataset::Status => status_schema(),
            Dataset::SecurityEvents => security_events_schema(),
            Dataset::Audit => audit_schema(),
        }
    }

    /// Columns the rows of each file are sorted by, in order (ascending,
    /// none of them nullable).
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            Dataset::Aggregates => &["tenant", "agent", "metric", "labels", "window_start"],
            Dataset::Alerts => &["tenant", "agent", "rule", "event_time", "status"],
            Dataset::Status => &["tenant", "agent", "observed_at"],
            Dataset::SecurityEvents => &["tenant", "agent", "event_time", "kind"],
            Dataset::Audit => &["worker", "event_time", "pid", "seq"],
        }
    }

    /// The timestamp column whose UTC day is the row's `date` partition.
    pub fn partition_time_column(self) -> &'static str {
        match self {
            Dataset::Aggregates => "window_start",
            Dataset::Alerts => "event_time",
            Dataset::Status => "observed_at",
            Dataset::SecurityEvents => "event_time",
            Dataset::Audit => "event_time",
        }
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn ts(name: &str, nullable: bool) -> Field {
    Field::new(name, timestamp_type(), nullable)
}

fn f64_field(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Float64, nullable)
}

/// Schema of `aggregates/`: one closed tumbling window `[window_start,
/// window_end)` of one series (tenant, agent, metric, labels).
pub fn aggregates_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                utf8("tenant", false),
                utf8("agent", false),
                utf8("metric", false),
                utf8("labels", false),
                ts("window_start", false),
                ts("window_end", false),
                Field::new("count", DataType::UInt64, false),
                f64_field("sum", false),
                f64_field("min", false),
                f64_field("max", false),
                f64_field("mean", false),
                f64_field("last", false),
                ts("last_ts", false),
            ]))
        })
        .clone()
}

/// Schema of `alerts/`: one alert lifecycle event (`firing` or `resolved`).
pub fn alerts_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                utf8("id", false),
                utf8("fingerprint", false),
                utf8("rule", false),
                utf8("kind", false),
                utf8("severity", false),
                utf8("status", false),
                Field::new("suppressed", DataType::Boolean, false),
                utf8("tenant", false),
                utf8("agent", false),
                utf8("hostname", true),
                utf8("metric", true),
                utf8("labels", false),
                f64_field("value", true),
                f64_field("threshold", true),
                ts("predicted_at", true),
                ts("window_start", true),
                ts("window_end", true),
                ts("started_at", false),
                ts("resolved_at", true),
                ts("event_time", false),
                utf8("summary", false),
                // Added after the first release: files written before
                // lack them and read as null.
                utf8("resolve_reason", true),
                Field::new("flaps", DataType::UInt32, true),
            ]))
        })
        .clone()
}

/// Schema of `status/`: one status report of an agent (docs/wire-format.md),
/// flattened: missing patches per severity (count, and since when the
/// oldest is missing), antivirus, backup, agent version and boot. Columns
/// of a section the report did not carry are null.
pub fn status_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields = vec![
                utf8("tenant", false),
                utf8("agent", false),
                utf8("hostname", true),
                ts("observed_at", false),
                Field::new("patches_reported", DataType::Boolean, false),
            ];
            for sev in ["critical", "important", "moderate", "low"] {
                fields.push(Field::new(format!("missing_{sev}"), DataType::UInt32, true));
                fields.push(ts(&format!("oldest_{sev}_missing_since"), true));
            }
            fields.extend([
                ts("last_patch_install_ok", true),
                ts("last_patch_install_failed", true),
                utf8("av_product", true),
                Field::new("av_enabled", DataType::Boolean, true),
                ts("av_definitions_updated", true),
                ts("av_last_scan", true),
                utf8("backup_result", true),
                ts("backup_last_run", true),
                ts("backup_last_success", true),
                utf8("agent_version", true),
                ts("last_boot", true),
            ]);
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// Schema of `security_events/`: one security event of an agent
/// (docs/wire-format.md); fields the kind does not use are null.
pub fn security_events_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                utf8("tenant", false),
                utf8("agent", false),
                utf8("hostname", true),
                ts("event_time", false),
                utf8("kind", false),
                utf8("user", true),
                utf8("source_address", true),
                utf8("technician", true),
                utf8("session_id", true),
                utf8("privilege", true),
                Field::new("granted", DataType::Boolean, true),
                utf8("actor", true),
            ]))
        })
        .clone()
}

/// Schema of `audit/`: one row per start of a worker or replay
/// (`event = 'rules_loaded'`, with the digest of the rules in force and
/// the digest recorded before) and one per change since the rules
/// recorded last (`rule_added`, `rule_removed`, `rule_changed`,
/// `maintenance_added`, `maintenance_removed`, `maintenance_changed`),
/// with who and when from the rules file's `[meta]` table.
pub fn audit_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let u32_field = |name: &str, nullable| Field::new(name, DataType::UInt32, nullable);
            Arc::new(Schema::new(vec![
                ts("event_time", false),
                utf8("worker", false),
                u32_field("pid", false),
                u32_field("seq", false),
                utf8("event", false),
                utf8("command", false),
                utf8("vigil_version", false),
                utf8("rules_digest", false),
                utf8("previous_digest", true),
                utf8("rules_origin", true),
                u32_field("rules", false),
                u32_field("maintenance_windows", false),
                u32_field("changes", false),
                utf8("family", true),
                utf8("rule", true),
                utf8("fields", true),
                utf8("before", true),
                utf8("after", true),
                utf8("changed_by", true),
                utf8("change_ref", true),
                ts("changed_at", true),
                utf8("note", true),
            ]))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_and_partition_columns_exist_and_are_not_nullable() {
        for ds in Dataset::ALL {
            let schema = ds.schema();
            for name in ds
                .sort_columns()
                .iter()
                .chain([&ds.partition_time_column()])
            {
                let field = schema.field_with_name(name).unwrap();
                assert!(!field.is_nullable(), "{ds}.{name}");
            }
            assert!(
                schema.field_with_name(PARTITION_COLUMN).is_err(),
                "date is not stored"
            );
        }
    }
}
