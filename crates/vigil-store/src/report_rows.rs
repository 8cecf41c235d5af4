//! Row buffers of the `status/` and `security_events/` datasets (issue
//! 24): the status reports and security events a pipeline took, as
//! [`vigil_ops::StatusRow`] and [`vigil_ops::SecurityEventRow`], turned
//! into the columns of [`crate::schema::status_schema`] and
//! [`crate::schema::security_events_schema`] at flush. Layout rules are
//! the other datasets' (one file per UTC day under `date=YYYY-MM-DD/`,
//! sorted by the dataset's sort key, deterministic names).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array,
};
use arrow::error::ArrowError;
use vigil_ops::decode::kind_name;
use vigil_ops::{SecurityEventRow, StatusRow};
use vigil_proto::v1::{BackupResult, PatchSeverity, SecurityEventKind};

use crate::naming::day_of;
use crate::schema::{Dataset, TIMEZONE};
use crate::writer::{DatasetWriter, RowBuffer};

/// Writer of the `status` dataset.
pub type StatusWriter = DatasetWriter<StatusRows>;
/// Writer of the `security_events` dataset.
pub type SecurityEventsWriter = DatasetWriter<SecurityEventRows>;

fn strings<'a, R>(rows: &'a [R], f: impl Fn(&'a R) -> Option<&'a str>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<StringArray>())
}

fn times<R>(rows: &[R], f: impl Fn(&R) -> Option<i64>) -> ArrayRef {
    Arc::new(
        rows.iter()
            .map(f)
            .collect::<TimestampMillisecondArray>()
            .with_timezone(TIMEZONE),
    )
}

fn bools<R>(rows: &[R], f: impl Fn(&R) -> Option<bool>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<BooleanArray>())
}

/// A wire timestamp where 0 means "not set".
fn set(ms: i64) -> Option<i64> {
    (ms != 0).then_some(ms)
}

/// A wire string where empty means "not set".
fn text(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Rows of the `status` dataset, one per status report.
#[derive(Debug, Default)]
pub struct StatusRows {
    rows: Vec<StatusRow>,
}

impl RowBuffer for StatusRows {
    type Row = StatusRow;
    const DATASET: Dataset = Dataset::Status;

    fn push(&mut self, r: &StatusRow) {
        self.rows.push(r.clone());
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn sort(&mut self) {
        // (day, tenant, agent, observed_at); equal keys keep push order.
        self.rows.sort_by(|a, b| {
            let (x, y) = (a.report.observed_at_ms, b.report.observed_at_ms);
            day_of(x)
                .cmp(&day_of(y))
                .then_with(|| a.tenant.cmp(&b.tenant))
                .then_with(|| a.agent.cmp(&b.agent))
                .then_with(|| x.cmp(&y))
        });
    }

    fn day(&self, i: usize) -> i64 {
        day_of(self.rows[i].report.observed_at_ms)
    }

    fn batch(&self, range: std::ops::Range<usize>) -> Result<RecordBatch, ArrowError> {
        let rows = &self.rows[range];
        let mut columns: Vec<ArrayRef> = vec![
            strings(rows, |r| Some(&r.tenant)),
            strings(rows, |r| Some(&r.agent)),
            strings(rows, |r| r.hostname.as_deref()),
            times(rows, |r| Some(r.report.observed_at_ms)),
            bools(rows, |r| Some(r.report.patches_reported)),
        ];
        for sev in [
            PatchSeverity::Critical,
            PatchSeverity::Important,
            PatchSeverity::Moderate,
            PatchSeverity::Low,
        ] {
            let entry = |r: &StatusRow| {
                r.report
                    .missing_patches
                    .iter()
                    .find(|m| m.severity == sev as i32)
                    .copied()
            };
            columns.push(Arc::new(
                rows.iter()
                    .map(|r| {
                        r.report
                            .patches_reported
                            .then(|| entry(r).map_or(0, |m| m.count))
                    })
                    .collect::<UInt32Array>(),
            ));
            columns.push(times(rows, |r| entry(r).map(|m| m.oldest_missing_since_ms)));
        }
        columns.extend([
            times(rows, |r| set(r.report.last_patch_install_ok_ms)),
            times(rows, |r| set(r.report.last_patch_install_failed_ms)),
            strings(rows, |r| {
                r.report.antivirus.as_ref().and_then(|a| text(&a.product))
            }),
            bools(rows, |r| r.report.antivirus.as_ref().map(|a| a.enabled)),
            times(rows, |r| {
                r.report
                    .antivirus
                    .as_ref()
                    .and_then(|a| set(a.definitions_updated_ms))
            }),
            times(rows, |r| {
                r.report
                    .antivirus
                    .as_ref()
                    .and_then(|a| set(a.last_scan_ms))
            }),
            strings(rows, |r| {
                r.report
                    .backup
                    .as_ref()
                    .map(|b| match BackupResult::try_from(b.last_result) {
                        Ok(BackupResult::Success) => "success",
                        Ok(BackupResult::Failed) => "failed",
                        Ok(BackupResult::Warning) => "warning",
                        _ => "none",
                    })
            }),
            times(rows, |r| {
                r.report.backup.as_ref().and_then(|b| set(b.last_run_ms))
            }),
            times(rows, |r| {
                r.report
                    .backup
                    .as_ref()
                    .and_then(|b| set(b.last_success_ms))
            }),
            strings(rows, |r| text(&r.report.agent_version)),
            times(rows, |r| set(r.report.last_boot_ms)),
        ]);
        RecordBatch::try_new(Self::DATASET.schema(), columns)
    }

    fn clear(&mut self) {
        self.rows = Vec::new();
    }
}

/// Rows of the `security_events` dataset, one per event.
#[derive(Debug, Default)]
pub struct SecurityEventRows {
    rows: Vec<SecurityEventRow>,
}

fn kind_of(r: &SecurityEventRow) -> &'static str {
    SecurityEventKind::try_from(r.event.kind).map_or("unspecified", kind_name)
}

impl RowBuffer for SecurityEventRows {
    type Row = SecurityEventRow;
    const DATASET: Dataset = Dataset::SecurityEvents;

    fn push(&mut self, r: &SecurityEventRow) {
        self.rows.push(r.clone());
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn sort(&mut self) {
        // (day, tenant, agent, event_time, kind); equal keys keep push
        // order.
        self.rows.sort_by(|a, b| {
            let (x, y) = (a.event.timestamp_ms, b.event.timestamp_ms);
            day_of(x)
                .cmp(&day_of(y))
                .then_with(|| a.tenant.cmp(&b.tenant))
                .then_with(|| a.agent.cmp(&b.agent))
                .then_with(|| x.cmp(&y))
                .then_with(|| kind_of(a).cmp(kind_of(b)))
        });
    }

    fn day(&self, i: usize) -> i64 {
        day_of(self.rows[i].event.timestamp_ms)
    }

    fn batch(&self, range: std::ops::Range<usize>) -> Result<RecordBatch, ArrowError> {
        let rows = &self.rows[range];
        let privilege =
            |r: &SecurityEventRow| r.event.kind == SecurityEventKind::PrivilegeChange as i32;
        let columns: Vec<ArrayRef> = vec![
            strings(rows, |r| Some(&r.tenant)),
            strings(rows, |r| Some(&r.agent)),
            strings(rows, |r| r.hostname.as_deref()),
            times(rows, |r| Some(r.event.timestamp_ms)),
            strings(rows, |r| Some(kind_of(r))),
            strings(rows, |r| text(&r.event.user)),
            strings(rows, |r| text(&r.event.source_address)),
            strings(rows, |r| text(&r.event.technician)),
            strings(rows, |r| text(&r.event.session_id)),
            strings(rows, |r| text(&r.event.privilege)),
            bools(rows, |r| privilege(r).then_some(r.event.granted)),
            strings(rows, |r| text(&r.event.actor)),
        ];
        RecordBatch::try_new(Self::DATASET.schema(), columns)
    }

    fn clear(&mut self) {
        self.rows = Vec::new();
    }
}
