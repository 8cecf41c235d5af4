//! The `audit/` dataset (issue 24, "auditable trails"): at every start a
//! worker or replay records the rules it runs under, and what changed
//! since the rules recorded last.
//!
//! ```text
//!  RuleSet ─RulesSnapshot::of─▶ digest + canonical rules ─┐
//!  <root>/audit/_rules.json (the rules recorded last) ─────┼─diff─▶ AuditRow × (1 + changes)
//!                                                          ▼
//!   DatasetWriter<AuditRows> ─▶ <root>/audit/date=YYYY-MM-DD/part-audit.<worker>-p<pid>-<ms>-<ms>.parquet
//!   then <root>/audit/_rules.json replaced by the rules now in force
//! ```
//!
//! Layout rules are the other datasets' (`docs/storage.md`): one file per
//! start under the UTC day of the start, published atomically (tmp +
//! rename, or one PUT), written through the same [`DatasetWriter`]. The
//! file's source range is the start itself: source `audit.<worker>`,
//! "partition" the process id, first and last offset the start time in
//! ms, so two workers (different worker ids: Kubernetes pod names), two
//! processes on one host (different pids) and two starts of one process
//! (different times) never write the same name. A source with no
//! checkpoint, it is never swept by a worker and is compacted once
//! settled, like a replay's.
//!
//! The previous rules are the snapshot `audit/_rules.json` (not a dataset
//! file: readers list `date=` directories and `*.parquet` only), written
//! *after* the rows are published: a start that dies between the two
//! leaves the old snapshot, and the next start records the change again
//! (the trail may repeat a change, it never misses one). Workers that
//! start at the same moment under new rules may each record the change;
//! each row names its worker. A snapshot that cannot be read (corrupt, or
//! written by a newer format) is logged and treated as absent.
//!
//! [`record_start`] does all of it; [`start_rows`] is the pure part.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array};
use arrow::error::ArrowError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vigil_ops::rules::audit::{canonical_text, diff, RuleChange};
use vigil_ops::rules::{RuleSet, RulesMeta, RulesSnapshot};

use crate::error::{Result, StoreError};
use crate::location::Root;
use crate::naming::{day_of, SourceRange};
use crate::schema::{Dataset, TIMEZONE};
use crate::writer::{DatasetWriter, RowBuffer, WriterConfig, WrittenFile};

/// Where the rules recorded last are kept, relative to the root.
pub const SNAPSHOT_PATH: &str = "audit/_rules.json";

/// Format version of [`SNAPSHOT_PATH`]; a newer one is not read.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// `event` of the row every start writes.
pub const RULES_LOADED: &str = "rules_loaded";

/// Prefix of the audit files' source (`audit.<worker>`).
pub const SOURCE_PREFIX: &str = "audit.";

/// Writer of the `audit` dataset.
pub type AuditWriter = DatasetWriter<AuditRows>;

/// One row of the `audit` dataset (see [`crate::schema::audit_schema`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    /// When the worker started, ms since the epoch (the partition time).
    pub event_time_ms: i64,
    /// Worker id (`worker.id`, else the host name).
    pub worker: String,
    /// Process id of the worker.
    pub pid: u32,
    /// Row number within the start: 0 for `rules_loaded`, then the
    /// changes in order.
    pub seq: u32,
    /// `rules_loaded`, or a [`vigil_ops::rules::ChangeKind`] name.
    pub event: String,
    /// The command that started (`run`, `ingest`, `demo`).
    pub command: String,
    /// Vigil's version.
    pub vigil_version: String,
    /// Digest of the rules in force.
    pub rules_digest: String,
    /// Digest of the rules recorded last (`None`: nothing recorded).
    pub previous_digest: Option<String>,
    /// The rules file (`None`: the built-in rules).
    pub rules_origin: Option<String>,
    /// Rules in force.
    pub rules: u32,
    /// Maintenance windows in force.
    pub maintenance_windows: u32,
    /// Changes recorded by this start.
    pub changes: u32,
    /// Family of the changed rule (`maintenance` for a window).
    pub family: Option<String>,
    /// Name of the changed rule (`tenant` or `tenant/agent` for a window).
    pub rule: Option<String>,
    /// Top-level fields that changed, comma-separated.
    pub fields: Option<String>,
    /// The rule before, canonical JSON.
    pub before: Option<String>,
    /// The rule after, canonical JSON (for `rules_loaded`: every rule in
    /// force).
    pub after: Option<String>,
    /// `[meta] changed_by` of the rules file.
    pub changed_by: Option<String>,
    /// `[meta] change_ref`.
    pub change_ref: Option<String>,
    /// `[meta] changed_at`, ms since the epoch.
    pub changed_at_ms: Option<i64>,
    /// `[meta] note`.
    pub note: Option<String>,
}

/// Rows of the `audit` dataset.
#[derive(Debug, Default)]
pub struct AuditRows {
    rows: Vec<AuditRow>,
}

fn strings<'a>(rows: &'a [AuditRow], f: impl Fn(&'a AuditRow) -> Option<&'a str>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<StringArray>())
}

fn times(rows: &[AuditRow], f: impl Fn(&AuditRow) -> Option<i64>) -> ArrayRef {
    Arc::new(
        rows.iter()
            .map(f)
            .collect::<TimestampMillisecondArray>()
            .with_timezone(TIMEZONE),
    )
}

fn counts(rows: &[AuditRow], f: impl Fn(&AuditRow) -> u32) -> ArrayRef {
    Arc::new(rows.iter().map(|r| Some(f(r))).collect::<UInt32Array>())
}

impl RowBuffer for AuditRows {
    type Row = AuditRow;
    const DATASET: Dataset = Dataset::Audit;

    fn push(&mut self, r: &AuditRow) {
        self.rows.push(r.clone());
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn sort(&mut self) {
        // (day, worker, event_time, pid, seq).
        self.rows.sort_by(|a, b| {
            day_of(a.event_time_ms)
                .cmp(&day_of(b.event_time_ms))
                .then_with(|| a.worker.cmp(&b.worker))
                .then_with(|| a.event_time_ms.cmp(&b.event_time_ms))
                .then_with(|| a.pid.cmp(&b.pid))
                .then_with(|| a.seq.cmp(&b.seq))
        });
    }

    fn day(&self, i: usize) -> i64 {
        day_of(self.rows[i].event_time_ms)
    }

    fn batch(&self, range: std::ops::Range<usize>) -> Result<RecordBatch, ArrowError> {
        let rows = &self.rows[range];
        let columns: Vec<ArrayRef> = vec![
            times(rows, |r| Some(r.event_time_ms)),
            strings(rows, |r| Some(&r.worker)),
            counts(rows, |r| r.pid),
            counts(rows, |r| r.seq),
            strings(rows, |r| Some(&r.event)),
            strings(rows, |r| Some(&r.command)),
            strings(rows, |r| Some(&r.vigil_version)),
            strings(rows, |r| Some(&r.rules_digest)),
            strings(rows, |r| r.previous_digest.as_deref()),
            strings(rows, |r| r.rules_origin.as_deref()),
            counts(rows, |r| r.rules),
            counts(rows, |r| r.maintenance_windows),
            counts(rows, |r| r.changes),
            strings(rows, |r| r.family.as_deref()),
            strings(rows, |r| r.rule.as_deref()),
            strings(rows, |r| r.fields.as_deref()),
            strings(rows, |r| r.before.as_deref()),
            strings(rows, |r| r.after.as_deref()),
            strings(rows, |r| r.changed_by.as_deref()),
            strings(rows, |r| r.change_ref.as_deref()),
            times(rows, |r| r.changed_at_ms),
            strings(rows, |r| r.note.as_deref()),
        ];
        RecordBatch::try_new(Self::DATASET.schema(), columns)
    }

    fn clear(&mut self) {
        self.rows = Vec::new();
    }
}

/// Who started, when, with which rules file: the context of one start.
#[derive(Debug, Clone)]
pub struct AuditStart<'a> {
    /// Start time, ms since the epoch.
    pub at_ms: i64,
    /// Worker id (non-empty).
    pub worker: &'a str,
    /// Process id.
    pub pid: u32,
    /// The command (`run`, `ingest`, `demo`).
    pub command: &'a str,
    /// Vigil's version.
    pub vigil_version: &'a str,
    /// The rules file (`None`: the built-in rules).
    pub rules_origin: Option<&'a str>,
    /// The rules file's `[meta]` table.
    pub meta: &'a RulesMeta,
}

/// The rules recorded last, as [`SNAPSHOT_PATH`] holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRules {
    /// [`SNAPSHOT_FORMAT`].
    pub format: u32,
    /// Digest recorded with them.
    pub digest: String,
    /// When they were recorded, ms since the epoch.
    pub recorded_at_ms: i64,
    /// By which worker.
    pub worker: String,
    /// The canonical rules.
    pub rules: Value,
}

/// What [`read_previous`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Previous {
    /// No rules recorded yet (a new root, or a root from before the
    /// audit trail).
    None,
    /// The rules recorded last.
    Found(StoredRules),
    /// A snapshot that cannot be read, and why (treated as none).
    Unreadable(String),
}

/// Reads the rules recorded last under `root`. Fails only when the
/// store cannot be read; a bad snapshot is [`Previous::Unreadable`].
pub fn read_previous(root: &Root) -> Result<Previous> {
    let bytes = match root.as_object() {
        Some(o) => o.get(SNAPSHOT_PATH)?.map(|b| b.to_vec()),
        None => {
            let path = root.display_path(SNAPSHOT_PATH);
            match std::fs::read(&path) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(StoreError::io("read", &path)(e)),
            }
        }
    };
    let Some(bytes) = bytes else {
        return Ok(Previous::None);
    };
    Ok(match serde_json::from_slice::<StoredRules>(&bytes) {
        Ok(s) if s.format > SNAPSHOT_FORMAT => Previous::Unreadable(format!(
            "format {} is newer than this version reads ({SNAPSHOT_FORMAT})",
            s.format
        )),
        Ok(s) => Previous::Found(s),
        Err(e) => Previous::Unreadable(e.to_string()),
    })
}

/// The rows one start records, and the changes they describe: a
/// `rules_loaded` row (digest, previous digest, counts, the canonical
/// rules in `after`), then one row per change against `previous` (none
/// when nothing was recorded before: there is nothing to compare with).
pub fn start_rows(
    start: &AuditStart<'_>,
    now: &RulesSnapshot,
    previous: Option<&StoredRules>,
) -> (Vec<AuditRow>, Vec<RuleChange>) {
    let changes = previous.map_or_else(Vec::new, |p| diff(&p.rules, &now.rules));
    let meta = start.meta;
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let base = AuditRow {
        event_time_ms: start.at_ms,
        worker: start.worker.to_owned(),
        pid: start.pid,
        seq: 0,
        event: RULES_LOADED.to_owned(),
        command: start.command.to_owned(),
        vigil_version: start.vigil_version.to_owned(),
        rules_digest: now.digest.clone(),
        previous_digest: previous.map(|p| p.digest.clone()),
        rules_origin: start.rules_origin.map(str::to_owned),
        rules: count(now.rule_count()),
        maintenance_windows: count(now.maintenance_count()),
        changes: count(changes.len()),
        family: None,
        rule: None,
        fields: None,
        before: None,
        after: Some(now.text()),
        changed_by: meta.changed_by.clone(),
        change_ref: meta.change_ref.clone(),
        changed_at_ms: meta.changed_at_ms,
        note: meta.note.clone(),
    };
    let mut rows = Vec::with_capacity(1 + changes.len());
    for (i, c) in changes.iter().enumerate() {
        rows.push(AuditRow {
            seq: count(i + 1),
            event: c.kind.as_str().to_owned(),
            family: Some(c.family.clone()),
            rule: Some(c.name.clone()),
            fields: (!c.fields.is_empty()).then(|| c.fields.join(",")),
            before: c.before.as_ref().map(canonical_text),
            after: c.after.as_ref().map(canonical_text),
            ..base.clone()
        });
    }
    rows.insert(0, base);
    (rows, changes)
}

/// What [`record_start`] recorded.
#[derive(Debug, Clone)]
pub struct AuditReport {
    /// Digest of the rules in force.
    pub digest: String,
    /// Digest recorded before (`None`: none, or unreadable).
    pub previous_digest: Option<String>,
    /// Why the previous snapshot was not read, when it was not.
    pub previous_unreadable: Option<String>,
    /// The changes recorded.
    pub changes: Vec<RuleChange>,
    /// The published audit file.
    pub file: Option<WrittenFile>,
    /// Where the snapshot of the rules now in force went.
    pub snapshot: std::path::PathBuf,
}

/// Records one start under `root` (a directory or an object store): reads
/// the rules recorded last, publishes the rows of [`start_rows`] as one
/// `audit/` file, then replaces the snapshot with `rules` (module docs).
pub fn record_start(
    root: &Root,
    config: &WriterConfig,
    start: &AuditStart<'_>,
    rules: &RuleSet,
) -> Result<AuditReport> {
    if start.worker.is_empty() {
        return Err(StoreError::Config {
            field: "worker id",
            problem: "must not be empty".into(),
        });
    }
    let now = RulesSnapshot::of(rules);
    let (previous, unreadable) = match read_previous(root)? {
        Previous::None => (None, None),
        Previous::Found(p) => (Some(p), None),
        Previous::Unreadable(why) => (None, Some(why)),
    };
    let (rows, changes) = start_rows(start, &now, previous.as_ref());
    let mut writer = AuditWriter::at(root, config.clone())?;
    for r in &rows {
        writer.push(r);
    }
    let source = format!("{SOURCE_PREFIX}{}", start.worker);
    let partition = i32::try_from(start.pid).unwrap_or(i32::MAX);
    let at = start.at_ms.max(0);
    let report = writer.flush(SourceRange::records(&source, partition, at, at))?;
    let stored = StoredRules {
        format: SNAPSHOT_FORMAT,
        digest: now.digest.clone(),
        recorded_at_ms: start.at_ms,
        worker: start.worker.to_owned(),
        rules: now.rules,
    };
    let bytes = serde_json::to_vec_pretty(&stored).map_err(|e| StoreError::Config {
        field: "rules snapshot",
        problem: e.to_string(),
    })?;
    let snapshot = root.write_file(SNAPSHOT_PATH, &bytes, config.sync)?;
    Ok(AuditReport {
        digest: now.digest,
        previous_digest: previous.map(|p| p.digest),
        previous_unreadable: unreadable,
        changes,
        file: report.files.into_iter().next(),
        snapshot,
    })
}
