//! Observability: the metric names (one place, `vigil_<area>_<name>_<unit>`,
//! `_total` for counters; labels only from a closed set) and the tracing
//! subscriber set-up (human or JSON logs on stderr, `RUST_LOG` filter).

use vigil_ops::dedup::RestartCause;
use vigil_ops::otlp::OtlpStats;
use vigil_ops::pipeline::PipelineStats;
use vigil_ops::RejectReason;

/// Records offered to the pipeline.
pub const RECORDS_IN: &str = "vigil_pipeline_records_in_total";
/// Bytes offered to the pipeline.
pub const BYTES_IN: &str = "vigil_pipeline_bytes_in_total";
/// Points merged into windows.
pub const POINTS_ACCEPTED: &str = "vigil_pipeline_points_accepted_total";
/// Batches dropped as duplicates (agent, boot id, seq).
pub const DUPLICATES: &str = "vigil_pipeline_duplicate_batches_total";
/// Restarts of an agent's sequence numbering, label `reason` (`boot_id`:
/// a new boot id; `content`: no boot id, a seen number with other
/// content; `seq_resync`: consecutive batches below the dedup window).
/// The batches are accepted, none is dropped as a duplicate.
pub const AGENT_RESTARTS: &str = "vigil_pipeline_agent_restarts_total";
/// Records refused whole, label `reason`.
pub const REJECTED_RECORDS: &str = "vigil_pipeline_rejected_records_total";
/// Points refused, label `reason`.
pub const REJECTED_POINTS: &str = "vigil_pipeline_rejected_points_total";
/// Replays: batches whose send time was not trusted (0, unset, or out of
/// range); the replay clock used their newest valid point instead.
pub const UNTRUSTED_SEND_TIMES: &str = "vigil_pipeline_untrusted_send_times_total";
/// Windows closed, label `trigger` (`watermark` or `idle`).
pub const WINDOWS_CLOSED: &str = "vigil_windows_closed_total";
/// Alert events, label `status`.
pub const ALERT_EVENTS: &str = "vigil_alert_events_total";
/// State evicted after `pipeline.state_ttl`, label `kind` (`agent`,
/// `series`; an agent's series count as series too).
pub const EVICTED: &str = "vigil_pipeline_evicted_total";
/// Open incidents resolved as `stale` by evictions.
pub const INCIDENTS_EXPIRED: &str = "vigil_pipeline_incidents_expired_total";
/// Status reports and security events taken from accepted batches, and
/// `AgentInfo` agent versions judged in place of a report's, label `kind`
/// (`status`, `security`, `agent_info`); refused ones are in the rejected
/// counters (docs/wire-format.md).
pub const REPORTS_IN: &str = "vigil_pipeline_reports_total";
/// `AgentInfo` agent versions not judged (send time past the clock skew,
/// or text over the limits; docs/wire-format.md).
pub const AGENT_INFO_IGNORED: &str = "vigil_pipeline_agent_info_ignored_total";
/// Agents held in a partition's state, label `partition`.
pub const AGENTS_HELD: &str = "vigil_pipeline_agents";
/// Series held in a partition's state, label `partition`.
pub const SERIES_HELD: &str = "vigil_pipeline_series";
/// Tenants held in a partition's state, label `partition`.
pub const TENANTS_HELD: &str = "vigil_pipeline_tenants";
/// Alert events sent on a route, label `route` (defined next to the
/// routes, in `vigil-sink`).
pub use vigil_sink::ROUTE_EVENTS as ALERT_ROUTE_EVENTS;
/// Rule and maintenance window changes recorded in `audit/` at start,
/// label `kind` (`rule_added`, `rule_removed`, `rule_changed`,
/// `maintenance_added`, `maintenance_removed`, `maintenance_changed`).
pub const RULES_CHANGES: &str = "vigil_rules_changes_total";
/// Starts recorded in `audit/` (one `rules_loaded` row each), label
/// `changed` (`true` when the digest differs from the one recorded
/// before, `false` when equal, `unknown` when none was).
pub const RULES_LOADED: &str = "vigil_rules_loaded_total";
/// Parquet rows written, label `dataset`.
pub const PARQUET_ROWS: &str = "vigil_store_rows_written_total";
/// Parquet flush duration in seconds.
pub const FLUSH_SECONDS: &str = "vigil_store_flush_duration_seconds";

/// Worker: records processed by the pipeline, counted after each poll
/// batch. Above the records published (`vigil_pipeline_records_in_total`)
/// by the records read again after a partition moved or a worker died
/// before its flush (the next owner resumes from the checkpoint).
pub const RECORDS_PROCESSED: &str = "vigil_worker_records_processed_total";

/// Worker: records not processed, label `reason` (`not_assigned`: the
/// partition was revoked; `before_checkpoint`: already in the checkpoint).
pub const RECORDS_SKIPPED: &str = "vigil_worker_records_skipped_total";
/// Worker: errors returned by the consumer's poll.
pub const CONSUMER_ERRORS: &str = "vigil_worker_consumer_errors_total";
/// Worker: 1 while `/readyz` would answer ready, else 0; evaluated at
/// each scrape of `/metrics` (the readiness probe as a series, for alerts).
pub const READY: &str = "vigil_worker_ready";
/// Worker: partitions assigned to this worker (counter of assignments).
pub const PARTITIONS_ASSIGNED: &str = "vigil_worker_partitions_assigned_total";
/// Worker: partitions revoked from this worker; `lost` = `true` when
/// librdkafka declared the assignment lost (the group session ended, e.g.
/// while the process was paused), `false` for a rebalance.
pub const PARTITIONS_REVOKED: &str = "vigil_worker_partitions_revoked_total";
/// Worker: partitions currently owned.
pub const PARTITIONS_OWNED: &str = "vigil_worker_partitions_owned";
/// Worker: offset commits the group coordinator acknowledged.
pub const COMMITS: &str = "vigil_worker_commits_total";
/// Worker: offset commits refused or not sent, label `reason`
/// (`rebalance`, `coordinator`, `network`: retried at the next flush;
/// `authorization`, `other`: the worker stops).
pub const COMMIT_FAILURES: &str = "vigil_worker_commit_failures_total";
/// Worker: pending offset commits dropped because their partition was
/// revoked first (the next owner restores from the checkpoint).
pub const COMMITS_DROPPED: &str = "vigil_worker_commits_dropped_total";
/// Worker: seconds a flush waited for the broker to acknowledge alerts and
/// dead letters.
pub const DELIVERY_WAIT_SECONDS: &str = "vigil_worker_delivery_wait_seconds";
/// Dead letters written in the truncated form (over their sink's budget;
/// the full content kept under `dlq/full/` or in the input), label `sink`
/// (`topic` or `file`).
pub const DLQ_TRUNCATED: &str = "vigil_dlq_letters_truncated_total";
/// Dead letters the DLQ topic did not take (send refused after its
/// retries, or delivery failed after redelivery) that were stored under
/// `dlq/undelivered/` instead, label `reason`.
pub const DLQ_STORED_LOCALLY: &str = "vigil_dlq_letters_stored_locally_total";
/// Dead letters sent again after a failed delivery.
pub const DLQ_REDELIVERIES: &str = "vigil_dlq_redeliveries_total";
/// Checkpoint: seconds to write the flushed partitions' checkpoints.
pub const CHECKPOINT_SECONDS: &str = "vigil_checkpoint_write_duration_seconds";
/// Checkpoint: bytes one partition checkpoint wrote (its state file and
/// the checkpoint naming it).
pub const CHECKPOINT_BYTES: &str = "vigil_checkpoint_size_bytes";
/// Counter{kind}: state files written by checkpoints (`base`: the whole
/// partition state, starting a chain; `delta`: the agents changed since
/// the checkpoint before), see docs/storage.md "Checkpoints".
pub const CHECKPOINT_STATE_FILES: &str = "vigil_checkpoint_state_files_total";
/// State files removed because no checkpoint generation names them.
pub const CHECKPOINT_STATE_FILES_REMOVED: &str = "vigil_checkpoint_state_files_removed_total";
/// Checkpoint: seconds to load and restore one partition's checkpoint.
pub const CHECKPOINT_RESTORE_SECONDS: &str = "vigil_checkpoint_restore_duration_seconds";
/// Gauge per partition: 1 while it cannot be fetched and its idle and
/// offline clocks are paused, label `partition`.
pub const PARTITION_CLOCKS_PAUSED: &str = "vigil_worker_partition_clocks_paused";
/// Milliseconds of processing time skipped by partitions' paused clocks.
pub const CLOCKS_PAUSED_MS: &str = "vigil_worker_clocks_paused_milliseconds_total";
/// Time a member stopped consuming at a flush point (histogram): waiting
/// for its previous flush to be published, when it was not yet, and
/// sealing this one (the publishing itself runs beside the member).
pub const FLUSH_STALL_SECONDS: &str = "vigil_worker_flush_stall_seconds";
/// Flushes the publishing thread handed back unfinished because the
/// member might not own its partitions any more (label `reason`:
/// `assignment_lost`, `stalled`); the member then proves its membership
/// or is fenced.
pub const FLUSH_UNCONFIRMED: &str = "vigil_worker_flushes_unconfirmed_total";
/// Shutdown drains that ended with a flush still being published (a
/// store or broker slower than `worker.shutdown_timeout`): its partitions
/// resume from their last checkpoint.
pub const DRAIN_TIMEOUTS: &str = "vigil_worker_drain_timeouts_total";
/// Members that could not leave the consumer group within the leave
/// timeout after their drain (the group notices at its session timeout).
pub const LEAVE_TIMEOUTS: &str = "vigil_worker_leave_timeouts_total";
/// Time a revoke waited for the member's flush in flight (histogram).
pub const REVOKE_WAIT_SECONDS: &str = "vigil_worker_revoke_wait_seconds";
/// Flushes of a silent partition that published what processing time
/// alone produced (idle-closed windows, offline alerts) as a tick file.
pub const TICK_FLUSHES: &str = "vigil_worker_tick_flushes_total";
/// Restart sweeps of a partition's output after its checkpoint, label
/// `scope`: `intent` (only the days its intent record names) or `full`
/// (every day of every dataset: no intent record).
pub const SWEEPS: &str = "vigil_worker_sweeps_total";
/// Checkpoint: restores from the previous generation because the newest
/// was missing, torn, corrupt or did not decode.
pub const CHECKPOINT_FALLBACKS: &str = "vigil_checkpoint_fallbacks_total";
/// Counter{reason}: restores that passed over a newest checkpoint that
/// decodes because a fenced worker wrote it late (`behind_commit`: behind
/// the group's committed offset; `earlier_owner`: a smaller owner epoch).
pub const CHECKPOINT_PASSED: &str = "vigil_checkpoint_generations_passed_total";
/// Counter{reason}: times the worker found it no longer owned its
/// partitions before publishing (`assignment_lost`, `commit_refused`) and
/// dropped them unflushed.
pub const FENCED: &str = "vigil_worker_fenced_total";
/// Counter{result}: membership proofs after a stall (`member`, `fenced`).
pub const MEMBERSHIP_PROOFS: &str = "vigil_worker_membership_proofs_total";
/// Compaction: files merged into compacted files (and removed), label
/// `dataset`.
pub const COMPACT_FILES_MERGED: &str = "vigil_compact_files_merged_total";
/// Compaction: compacted files written, label `dataset`.
pub const COMPACT_FILES_WRITTEN: &str = "vigil_compact_files_written_total";
/// Compaction: bytes of the merged files, label `dataset`.
pub const COMPACT_BYTES_IN: &str = "vigil_compact_bytes_read_total";
/// Compaction: bytes of the compacted files, label `dataset`.
pub const COMPACT_BYTES_OUT: &str = "vigil_compact_bytes_written_total";
/// Compaction: runs given up because an input changed while it was merged,
/// or ranges that overlap without one covering the other.
pub const COMPACT_CONFLICTS: &str = "vigil_compact_conflicts_total";
/// Compaction: inputs of an interrupted earlier run (covered by its
/// published output) removed.
pub const COMPACT_LEFTOVERS_REMOVED: &str = "vigil_compact_leftovers_removed_total";
/// Compaction: small files left because they are not committed or settled
/// yet.
pub const COMPACT_FILES_NOT_YET: &str = "vigil_compact_files_not_ready_total";
/// Retention: date partitions (and dead-letter files) removed, label
/// `dataset` (`aggregates`, `alerts`, `dlq`).
pub const RETENTION_REMOVED: &str = "vigil_retention_removed_total";
/// Retention: files removed, label `dataset`.
pub const RETENTION_FILES: &str = "vigil_retention_files_removed_total";
/// Retention: bytes removed, label `dataset`.
pub const RETENTION_BYTES: &str = "vigil_retention_bytes_removed_total";
/// Compaction: seconds one `vigil compact` run took.
pub const COMPACT_SECONDS: &str = "vigil_compact_duration_seconds";

/// OTLP input: resources (would-be batches) in decoded requests.
pub const OTLP_RESOURCES: &str = "vigil_otlp_resources_total";
/// OTLP input: data points by `outcome`: `in` (seen), `duplicate` (same
/// series and timestamp taken before), `no_value`, `first` (first point of
/// a cumulative series: no rate yet), `superseded` (a cumulative point not
/// newer than its series' previous one), `shadowed` (an earlier mapping
/// row made the same metric), `out` (Vigil points handed to the pipeline).
pub const OTLP_POINTS: &str = "vigil_otlp_points_total";
/// OTLP input: cumulative series resets (value down or start time moved).
pub const OTLP_RESETS: &str = "vigil_otlp_resets_total";
/// OTLP input: point attributes not kept as labels.
pub const OTLP_DROPPED_ATTRIBUTES: &str = "vigil_otlp_dropped_attributes_total";

/// Counts the Parquet rows one publish of an output stage wrote.
pub fn published(p: &vigil_sink::Published) {
    metrics::counter!(PARQUET_ROWS, "dataset" => "aggregates").increment(p.aggregates.rows as u64);
    metrics::counter!(PARQUET_ROWS, "dataset" => "alerts").increment(p.alerts.rows as u64);
    metrics::counter!(PARQUET_ROWS, "dataset" => "status").increment(p.status.rows as u64);
    metrics::counter!(PARQUET_ROWS, "dataset" => "security_events")
        .increment(p.security_events.rows as u64);
}

/// Adds the difference between two stats snapshots to the metric
/// counters (a no-op when no recorder is installed).
pub fn publish(prev: &PipelineStats, now: &PipelineStats) {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    metrics::counter!(RECORDS_IN).increment(d(prev.records, now.records));
    metrics::counter!(BYTES_IN).increment(d(prev.bytes, now.bytes));
    metrics::counter!(POINTS_ACCEPTED).increment(d(prev.points_accepted, now.points_accepted));
    metrics::counter!(DUPLICATES).increment(d(prev.duplicates, now.duplicates));
    metrics::counter!(UNTRUSTED_SEND_TIMES)
        .increment(d(prev.untrusted_send_times, now.untrusted_send_times));
    for c in RestartCause::ALL {
        let i = c.index();
        metrics::counter!(AGENT_RESTARTS, "reason" => c.as_str())
            .increment(d(prev.restarts[i], now.restarts[i]));
    }
    for r in RejectReason::ALL {
        let i = r.index();
        metrics::counter!(REJECTED_RECORDS, "reason" => r.as_str())
            .increment(d(prev.rejected_records[i], now.rejected_records[i]));
        metrics::counter!(REJECTED_POINTS, "reason" => r.as_str())
            .increment(d(prev.rejected_points[i], now.rejected_points[i]));
    }
    metrics::counter!(WINDOWS_CLOSED, "trigger" => "watermark")
        .increment(d(prev.windows_closed, now.windows_closed));
    metrics::counter!(WINDOWS_CLOSED, "trigger" => "idle")
        .increment(d(prev.windows_closed_idle, now.windows_closed_idle));
    metrics::counter!(ALERT_EVENTS, "status" => "firing")
        .increment(d(prev.alerts_firing, now.alerts_firing));
    metrics::counter!(ALERT_EVENTS, "status" => "resolved")
        .increment(d(prev.alerts_resolved, now.alerts_resolved));
    metrics::counter!(EVICTED, "kind" => "agent")
        .increment(d(prev.agents_evicted, now.agents_evicted));
    metrics::counter!(EVICTED, "kind" => "series")
        .increment(d(prev.series_evicted, now.series_evicted));
    metrics::counter!(INCIDENTS_EXPIRED)
        .increment(d(prev.incidents_expired, now.incidents_expired));
    metrics::counter!(REPORTS_IN, "kind" => "status")
        .increment(d(prev.status_reports, now.status_reports));
    metrics::counter!(REPORTS_IN, "kind" => "security")
        .increment(d(prev.security_events, now.security_events));
    metrics::counter!(REPORTS_IN, "kind" => "agent_info")
        .increment(d(prev.agent_infos, now.agent_infos));
    metrics::counter!(AGENT_INFO_IGNORED)
        .increment(d(prev.agent_infos_ignored, now.agent_infos_ignored));
}

/// Adds the difference between two OTLP conversion stats snapshots to the
/// `vigil_otlp_*` counters (all zero for Vigil input).
pub fn publish_otlp(prev: &OtlpStats, now: &OtlpStats) {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    metrics::counter!(OTLP_RESOURCES).increment(d(prev.resources, now.resources));
    for (outcome, a, b) in [
        ("in", prev.points_in, now.points_in),
        ("duplicate", prev.duplicate_points, now.duplicate_points),
        ("no_value", prev.no_value_points, now.no_value_points),
        ("first", prev.first_points, now.first_points),
        ("superseded", prev.superseded_points, now.superseded_points),
        ("shadowed", prev.shadowed_points, now.shadowed_points),
        ("out", prev.points_out, now.points_out),
    ] {
        metrics::counter!(OTLP_POINTS, "outcome" => outcome).increment(d(a, b));
    }
    metrics::counter!(OTLP_RESETS).increment(d(prev.resets, now.resets));
    metrics::counter!(OTLP_DROPPED_ATTRIBUTES)
        .increment(d(prev.dropped_attributes, now.dropped_attributes));
}

/// Sets the state-size gauges of one partition's pipeline (`None`: the
/// partition was revoked; the gauges go to zero).
pub fn publish_state(partition: i32, pipeline: Option<&vigil_ops::pipeline::Pipeline>) {
    let p = partition.to_string();
    let (agents, series, tenants) = pipeline.map_or((0, 0, 0), |pl| {
        (pl.agents_held(), pl.series_held(), pl.tenants_held())
    });
    metrics::gauge!(AGENTS_HELD, "partition" => p.clone()).set(agents as f64);
    metrics::gauge!(SERIES_HELD, "partition" => p.clone()).set(series as f64);
    metrics::gauge!(TENANTS_HELD, "partition" => p).set(tenants as f64);
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber on stderr. `RUST_LOG` overrides
/// the default level (`warn` for commands, `info` for workers).
pub fn init_tracing(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
