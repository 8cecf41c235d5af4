//! Reading security events back out of the `security_events` dataset, for
//! `vigil export --dataset security_events`: as [`crate::alerts`] does
//! for alert events, the filters become DataFusion expressions (user
//! input is only ever a literal value), and rows come back ordered by
//! event time as [`SecurityEventRow`]s, a batch at a time.
//!
//! ```text
//!  security_events/date=…/*.parquet ─▶ filter(date, event_time, tenant, kind) ─▶ sort(event_time, tenant, agent, kind, …) ─▶ SecurityEvents
//! ```
//!
//! Every field of the wire message is stored (docs/storage.md), so a row
//! reads back as the [`SecurityEventRow`] that was written: empty strings
//! for the fields its kind does not use (stored as null), `granted`
//! false unless set.

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::logical_expr::{col, lit, Expr, SortExpr};
use vigil_ops::decode::kind_name;
use vigil_ops::SecurityEventRow;
use vigil_proto::v1::{SecurityEvent, SecurityEventKind};
use vigil_store::Dataset;

use crate::alerts::{bad_row, time_range, EventStream};
use crate::error::Result;
use crate::session::QuerySession;

/// The kinds a stored event can have, for parsing their names back.
const KINDS: [SecurityEventKind; 5] = [
    SecurityEventKind::LoginSuccess,
    SecurityEventKind::LoginFailure,
    SecurityEventKind::RemoteSessionStart,
    SecurityEventKind::RemoteSessionEnd,
    SecurityEventKind::PrivilegeChange,
];

/// The kind named `name` (`login_failure`, ...), if any.
pub fn kind_of(name: &str) -> Option<SecurityEventKind> {
    KINDS.into_iter().find(|k| kind_name(*k) == name)
}

/// Names of every kind, for error messages.
pub fn kind_names() -> Vec<&'static str> {
    KINDS.into_iter().map(kind_name).collect()
}

/// Which security events to read. Every bound is optional; `from_ms` is
/// inclusive and `to_ms` exclusive on `event_time`, as for alert events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityFilter {
    /// Earliest event time, inclusive (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Latest event time, exclusive (ms since the epoch).
    pub to_ms: Option<i64>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this kind (`login_failure`, ...).
    pub kind: Option<SecurityEventKind>,
}

impl SecurityFilter {
    /// The filter as one DataFusion expression (`None`: every row), with
    /// the time bounds also on the `date` partition column.
    pub fn expr(&self) -> Option<Expr> {
        let mut parts = time_range(
            Dataset::SecurityEvents.partition_time_column(),
            self.from_ms,
            self.to_ms,
        );
        if let Some(t) = &self.tenant {
            parts.push(col("tenant").eq(lit(t.as_str())));
        }
        if let Some(k) = self.kind {
            parts.push(col("kind").eq(lit(kind_name(k))));
        }
        parts.into_iter().reduce(Expr::and)
    }
}

/// The order of an export: event time, then every column that tells two
/// events apart, so that the order is total and the same on every run.
fn order() -> Vec<SortExpr> {
    [
        "event_time",
        "tenant",
        "agent",
        "kind",
        "user",
        "technician",
        "session_id",
        "source_address",
        "privilege",
        "actor",
        "granted",
    ]
    .into_iter()
    .map(|c| col(c).sort(true, true))
    .collect()
}

/// A stream of security events in export order (see
/// [`QuerySession::security_events`]).
pub type SecurityEvents = EventStream<SecurityEventRow>;

impl QuerySession {
    /// The security events `filter` selects, ordered by event time (then
    /// tenant, agent, kind and the other fields). The filter is pushed
    /// down to the Parquet scan as expressions with literal values.
    pub async fn security_events(&self, filter: &SecurityFilter) -> Result<SecurityEvents> {
        self.event_stream(
            Dataset::SecurityEvents,
            filter.expr(),
            order(),
            "security events",
            format!("{filter:?}"),
            security_events_of,
        )
        .await
    }
}

/// The security events of one batch of `security_events` rows (any
/// column order; the `date` column is ignored).
pub fn security_events_of(batch: &RecordBatch) -> Result<Vec<SecurityEventRow>> {
    let strings = |name: &str| -> Result<&StringArray> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| bad_row(format!("column {name} missing or not a string")))
    };
    let (tenant, agent, hostname, kind) = (
        strings("tenant")?,
        strings("agent")?,
        strings("hostname")?,
        strings("kind")?,
    );
    let (user, source, technician, session, privilege, actor) = (
        strings("user")?,
        strings("source_address")?,
        strings("technician")?,
        strings("session_id")?,
        strings("privilege")?,
        strings("actor")?,
    );
    let granted: &BooleanArray = batch
        .column_by_name("granted")
        .and_then(|c| c.as_boolean_opt())
        .ok_or_else(|| bad_row("column granted missing or not a boolean".into()))?;
    let time = batch
        .column_by_name("event_time")
        .ok_or_else(|| bad_row("column event_time missing".into()))?;
    let time = match time.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            time.as_primitive::<TimestampMillisecondType>()
        }
        t => {
            return Err(bad_row(format!(
                "column event_time is {t}, not ms timestamps"
            )))
        }
    };
    let s = |a: &StringArray, i: usize| {
        if a.is_valid(i) {
            a.value(i).to_owned()
        } else {
            String::new()
        }
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let k = kind_of(kind.value(i))
            .ok_or_else(|| bad_row(format!("unknown security event kind {:?}", kind.value(i))))?;
        out.push(SecurityEventRow {
            tenant: tenant.value(i).to_owned(),
            agent: agent.value(i).to_owned(),
            hostname: hostname.is_valid(i).then(|| hostname.value(i).to_owned()),
            event: SecurityEvent {
                timestamp_ms: time.value(i),
                kind: k as i32,
                user: s(user, i),
                source_address: s(source, i),
                technician: s(technician, i),
                session_id: s(session, i),
                privilege: s(privilege, i),
                granted: granted.is_valid(i) && granted.value(i),
                actor: s(actor, i),
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use vigil_store::{SecurityEventsWriter, WriterConfig};

    use super::*;
    use crate::block_on;
    use crate::tests::{range, MIDNIGHT};

    /// Events of every kind on two tenants and two days, in export order.
    fn rows() -> Vec<SecurityEventRow> {
        let kinds = [
            SecurityEventKind::LoginFailure,
            SecurityEventKind::LoginSuccess,
            SecurityEventKind::RemoteSessionStart,
            SecurityEventKind::RemoteSessionEnd,
            SecurityEventKind::PrivilegeChange,
        ];
        (0..20i64)
            .map(|i| {
                let kind = kinds[i as usize % kinds.len()];
                let session = matches!(
                    kind,
                    SecurityEventKind::RemoteSessionStart | SecurityEventKind::RemoteSessionEnd
                );
                let login = matches!(
                    kind,
                    SecurityEventKind::LoginFailure | SecurityEventKind::LoginSuccess
                );
                let privilege = kind == SecurityEventKind::PrivilegeChange;
                let text = |yes: bool, s: String| if yes { s } else { String::new() };
                SecurityEventRow {
                    tenant: if i % 2 == 0 { "acme" } else { "beta" }.into(),
                    agent: format!("a{}", i % 3),
                    hostname: (i % 4 != 0).then(|| format!("h{i}, \"x\"")),
                    event: SecurityEvent {
                        timestamp_ms: MIDNIGHT - 10 * 3_600_000 + i * 3_600_000,
                        kind: kind as i32,
                        user: text(login || privilege, format!("u{i}")),
                        source_address: text(login && i % 3 != 0, "203.0.113.7".into()),
                        technician: text(session, "tech.ana".into()),
                        session_id: text(session, format!("s{}", i / 5)),
                        privilege: text(privilege, "Administrators".into()),
                        granted: privilege && i % 10 == 4,
                        actor: text(privilege && i % 10 == 4, "admin".into()),
                    },
                }
            })
            .collect()
    }

    fn read(root: &std::path::Path, f: &SecurityFilter) -> Vec<SecurityEventRow> {
        let s = QuerySession::open(root).unwrap();
        block_on(async {
            let mut events = s.security_events(f).await.unwrap();
            let mut out = Vec::new();
            while let Some(b) = events.next_batch().await.unwrap() {
                out.extend(b);
            }
            assert_eq!(out.len() as u64, events.total);
            out
        })
        .unwrap()
    }

    #[test]
    fn security_events_read_back_whole_in_order_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SecurityEventsWriter::new(dir.path(), WriterConfig::default()).unwrap();
        let want = rows();
        // Pushed in reverse: the read order is the export order.
        for r in want.iter().rev() {
            w.push(r);
        }
        w.flush(range(0)).unwrap();
        assert_eq!(read(dir.path(), &SecurityFilter::default()), want);
        let f = SecurityFilter {
            from_ms: Some(MIDNIGHT),
            to_ms: Some(MIDNIGHT + 5 * 3_600_000),
            tenant: Some("acme".into()),
            kind: Some(SecurityEventKind::LoginFailure),
        };
        let got = read(dir.path(), &f);
        let expect: Vec<_> = want
            .iter()
            .filter(|r| {
                r.tenant == "acme"
                    && r.event.kind == SecurityEventKind::LoginFailure as i32
                    && (MIDNIGHT..MIDNIGHT + 5 * 3_600_000).contains(&r.event.timestamp_ms)
            })
            .cloned()
            .collect();
        assert_eq!(expect.len(), 1);
        assert_eq!(got, expect);
        assert_eq!(
            kind_of("privilege_change"),
            Some(SecurityEventKind::PrivilegeChange)
        );
        assert_eq!(kind_of("unspecified"), None);
        assert_eq!(kind_names().len(), 5);
    }
}
