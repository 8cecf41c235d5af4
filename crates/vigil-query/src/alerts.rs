//! Reading alert events back out of the `alerts` dataset, for `vigil
//! export`: the filters become DataFusion expressions (user input is only
//! ever a literal value, never SQL text), rows come back ordered by event
//! time as [`AlertEvent`]s, a batch at a time.
//!
//! ```text
//!  alerts/date=…/*.parquet ─▶ filter(date, event_time, tenant, rule) ─▶ sort(event_time, id, status) ─▶ AlertEvents
//! ```
//!
//! Every field of [`AlertEvent`] is stored. `resolve_reason` and `flaps`
//! were added to the dataset later: in older files they read as null, so
//! their events come back with `None` there (the encoders then leave the
//! fields out, and Vigil's JSON has `null`).

use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, Float64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::datatypes::TimeUnit;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{col, lit, Expr, SortExpr};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures_util::StreamExt;
use vigil_ops::model::{AlertEvent, AlertStatus, DetectorKind, ResolveReason, Severity};
use vigil_store::schema::TIMEZONE;
use vigil_store::{Dataset, PARTITION_COLUMN};

use crate::error::{QueryError, Result};
use crate::session::QuerySession;

const MS_PER_DAY: i64 = 86_400_000;

/// Which alert events to read. Every bound is optional; `from_ms` is
/// inclusive and `to_ms` exclusive (the half-open `[from, to)` on
/// `event_time`), so consecutive ranges neither overlap nor leave gaps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// Earliest event time, inclusive (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Latest event time, exclusive (ms since the epoch).
    pub to_ms: Option<i64>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this rule.
    pub rule: Option<String>,
}

impl AlertFilter {
    /// The filter as one DataFusion expression (`None`: every row). The
    /// time bounds also bound the `date` partition column, so days
    /// outside the range are not listed.
    pub fn expr(&self) -> Option<Expr> {
        let mut parts = time_range(
            Dataset::Alerts.partition_time_column(),
            self.from_ms,
            self.to_ms,
        );
        if let Some(t) = &self.tenant {
            parts.push(col("tenant").eq(lit(t.as_str())));
        }
        if let Some(r) = &self.rule {
            parts.push(col("rule").eq(lit(r.as_str())));
        }
        parts.into_iter().reduce(Expr::and)
    }
}

/// `[from_ms, to_ms)` on the timestamp column `time_column` (either
/// bound optional) as expressions with literal values, plus the matching
/// bounds on the `date` partition column so that days outside the range
/// are not listed. `time_column` must be the dataset's
/// [`Dataset::partition_time_column`], whose UTC day is the partition.
pub(crate) fn time_range(time_column: &str, from_ms: Option<i64>, to_ms: Option<i64>) -> Vec<Expr> {
    let mut parts: Vec<Expr> = Vec::new();
    let ts = |ms: i64| {
        lit(ScalarValue::TimestampMillisecond(
            Some(ms),
            Some(TIMEZONE.into()),
        ))
    };
    let day = |ms: i64| lit(ScalarValue::Date32(Some(ms.div_euclid(MS_PER_DAY) as i32)));
    if let Some(from) = from_ms {
        parts.push(col(PARTITION_COLUMN).gt_eq(day(from)));
        parts.push(col(time_column).gt_eq(ts(from)));
    }
    if let Some(to) = to_ms {
        // The day holding the last included millisecond.
        parts.push(col(PARTITION_COLUMN).lt_eq(day(to - 1)));
        parts.push(col(time_column).lt(ts(to)));
    }
    parts
}

/// The order of an export: event time, then incident id, then status
/// (`firing` before `resolved`): total, so a resumed export skips exactly
/// what it sent.
fn order() -> Vec<SortExpr> {
    ["event_time", "id", "status"]
        .into_iter()
        .map(|c| col(c).sort(true, false))
        .collect()
}

/// Rows of one dataset read back as events `T`, in export order, a batch
/// at a time: alert events ([`AlertEvents`]) and security events
/// ([`crate::SecurityEvents`]).
pub struct EventStream<T> {
    stream: SendableRecordBatchStream,
    /// Rows the filter selects (counted before streaming).
    pub total: u64,
    /// What the rows are, for errors (`alert events`).
    what: &'static str,
    decode: fn(&RecordBatch) -> Result<Vec<T>>,
}

/// A stream of alert events in export order (see [`QuerySession::alert_events`]).
pub type AlertEvents = EventStream<AlertEvent>;

impl<T> std::fmt::Debug for EventStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("what", &self.what)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl<T> EventStream<T> {
    /// The next events, in order; `None` at the end. Batches are
    /// DataFusion's (a few thousand rows at most).
    pub async fn next_batch(&mut self) -> Result<Option<Vec<T>>> {
        match self.stream.next().await {
            None => Ok(None),
            Some(Err(source)) => Err(QueryError::Sql {
                query: format!("reading {}", self.what),
                source: Box::new(source),
            }),
            Some(Ok(batch)) => (self.decode)(&batch).map(Some),
        }
    }
}

impl QuerySession {
    /// The rows of `dataset` that `filter` selects (`None`: all), sorted
    /// by `order`, as a stream of events decoded by `decode`. The filter
    /// is pushed down to the Parquet scan (partition and row-group
    /// pruning); `what` and `described` name them in errors.
    pub(crate) async fn event_stream<T>(
        &self,
        dataset: Dataset,
        filter: Option<Expr>,
        order: Vec<SortExpr>,
        what: &'static str,
        described: String,
        decode: fn(&RecordBatch) -> Result<Vec<T>>,
    ) -> Result<EventStream<T>> {
        let err = |source| QueryError::Sql {
            query: format!("{what} where {described}"),
            source: Box::new(source),
        };
        let mut df = self.context().table(dataset.name()).await.map_err(err)?;
        if let Some(e) = filter {
            df = df.filter(e).map_err(err)?;
        }
        let total = df.clone().count().await.map_err(err)? as u64;
        let df = df.sort(order).map_err(err)?;
        let stream = df.execute_stream().await.map_err(err)?;
        Ok(EventStream {
            stream,
            total,
            what,
            decode,
        })
    }

    /// The alert events `filter` selects, ordered by event time (then id
    /// and status). The filter is applied as DataFusion expressions with
    /// literal values, and pushed down to the Parquet scan (partition and
    /// row-group pruning).
    pub async fn alert_events(&self, filter: &AlertFilter) -> Result<AlertEvents> {
        self.event_stream(
            Dataset::Alerts,
            filter.expr(),
            order(),
            "alert events",
            format!("{filter:?}"),
            events_of,
        )
        .await
    }
}

/// A row that does not decode into an [`AlertEvent`].
pub(crate) fn bad_row(what: String) -> QueryError {
    QueryError::Sql {
        query: "decoding alert events".into(),
        source: Box::new(datafusion::error::DataFusionError::Execution(what)),
    }
}

/// The alert events of one batch of `alerts` rows (any column order; the
/// `date` column is ignored).
pub fn events_of(batch: &RecordBatch) -> Result<Vec<AlertEvent>> {
    let strings = |name: &str| -> Result<&StringArray> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| bad_row(format!("column {name} missing or not a string")))
    };
    let floats = |name: &str| -> Result<&Float64Array> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_primitive_opt())
            .ok_or_else(|| bad_row(format!("column {name} missing or not a float")))
    };
    let times = |name: &str| -> Result<&TimestampMillisecondArray> {
        let c = batch
            .column_by_name(name)
            .ok_or_else(|| bad_row(format!("column {name} missing")))?;
        match c.data_type() {
            datafusion::arrow::datatypes::DataType::Timestamp(TimeUnit::Millisecond, _) => {
                Ok(c.as_primitive())
            }
            t => Err(bad_row(format!("column {name} is {t}, not ms timestamps"))),
        }
    };
    let bools = |name: &str| -> Result<&BooleanArray> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_boolean_opt())
            .ok_or_else(|| bad_row(format!("column {name} missing or not a boolean")))
    };
    let (id, fingerprint, rule, kind, severity, status) = (
        strings("id")?,
        strings("fingerprint")?,
        strings("rule")?,
        strings("kind")?,
        strings("severity")?,
        strings("status")?,
    );
    let suppressed = bools("suppressed")?;
    let (tenant, agent, hostname, metric, labels, summary) = (
        strings("tenant")?,
        strings("agent")?,
        strings("hostname")?,
        strings("metric")?,
        strings("labels")?,
        strings("summary")?,
    );
    let (value, threshold) = (floats("value")?, floats("threshold")?);
    let reason = strings("resolve_reason")?;
    let flaps: &UInt32Array = batch
        .column_by_name("flaps")
        .and_then(|c| c.as_primitive_opt())
        .ok_or_else(|| bad_row("column flaps missing or not a u32".into()))?;
    let (predicted_at, window_start, window_end, started_at, resolved_at, event_time) = (
        times("predicted_at")?,
        times("window_start")?,
        times("window_end")?,
        times("started_at")?,
        times("resolved_at")?,
        times("event_time")?,
    );
    let opt_s = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_owned());
    let opt_f = |a: &Float64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    let opt_t = |a: &TimestampMillisecondArray, i: usize| a.is_valid(i).then(|| a.value(i));
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        out.push(AlertEvent {
            id: id.value(i).to_owned(),
            fingerprint: fingerprint.value(i).to_owned(),
            rule: rule.value(i).to_owned(),
            kind: kind_of(kind.value(i))?,
            severity: severity_of(severity.value(i))?,
            status: status_of(status.value(i))?,
            suppressed: suppressed.value(i),
            tenant: tenant.value(i).to_owned(),
            agent: agent.value(i).to_owned(),
            hostname: opt_s(hostname, i),
            metric: opt_s(metric, i),
            labels: labels.value(i).to_owned(),
            value: opt_f(value, i),
            threshold: opt_f(threshold, i),
            predicted_at_ms: opt_t(predicted_at, i),
            window_start_ms: opt_t(window_start, i),
            window_end_ms: opt_t(window_end, i),
            started_at_ms: started_at.value(i),
            resolved_at_ms: opt_t(resolved_at, i),
            resolve_reason: match reason.is_valid(i) {
                true => Some(reason_of(reason.value(i))?),
                false => None,
            },
            flaps: flaps.is_valid(i).then(|| flaps.value(i)),
            event_time_ms: event_time.value(i),
            summary: summary.value(i).to_owned(),
        });
    }
    Ok(out)
}

fn kind_of(s: &str) -> Result<DetectorKind> {
    [
        DetectorKind::Threshold,
        DetectorKind::Trend,
        DetectorKind::Anomaly,
        DetectorKind::Offline,
        DetectorKind::InvalidInput,
        DetectorKind::Status,
        DetectorKind::Security,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
    .ok_or_else(|| bad_row(format!("unknown detector kind {s:?}")))
}

fn severity_of(s: &str) -> Result<Severity> {
    [Severity::Info, Severity::Warning, Severity::Critical]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| bad_row(format!("unknown severity {s:?}")))
}

fn reason_of(s: &str) -> Result<ResolveReason> {
    [
        ResolveReason::Cleared,
        ResolveReason::LimitReached,
        ResolveReason::RuleChanged,
        ResolveReason::RuleRemoved,
        ResolveReason::Stale,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
    .ok_or_else(|| bad_row(format!("unknown resolve reason {s:?}")))
}

fn status_of(s: &str) -> Result<AlertStatus> {
    [AlertStatus::Firing, AlertStatus::Resolved]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| bad_row(format!("unknown status {s:?}")))
}
