//! The output stage: one place that hands what a [`Pipeline`] produced to
//! its sinks, used by the Kafka worker (per partition) and by replays
//! (`vigil ingest`, `vigil demo`) alike.
//!
//! ```text
//!  Outputs ─route─▶ windows  ─▶ AggregatesWriter ┐
//!                   status   ─▶ StatusWriter     │
//!                   security ─▶ SecurityEventsWriter
//!                   alerts   ─▶ AlertsWriter     ├─ publish(SourceRange) ─▶ Parquet + dlq/ files
//!                            └▶ AlertRouter ─▶ Destinations::send_alert (encoded per route)
//!                   refused  ─▶ Destinations::send_dead_letter (the DLQ topic), else DlqWriter ┘
//! ```
//!
//! What a destination is (a Kafka producer, files) is the caller's: the
//! stage encodes, routes and counts; the [`Destinations`] send.
//!
//! [`Pipeline`]: vigil_ops::pipeline::Pipeline

use std::path::Path;
use std::time::Instant;

use vigil_ops::pipeline::Outputs;
use vigil_ops::Rejected;
use vigil_store::{
    AggregatesWriter, AlertsWriter, DlqFlushReport, DlqWriter, FlushReport, SecurityEventsWriter,
    SourceRange, StatusWriter, WriterConfig,
};

use crate::error::{DestinationError, Result, SinkError};
use crate::route::{AlertRouter, Route, ROUTE_EVENTS};

/// Where routed alert events and dead letters are sent as they are
/// produced.
pub trait Destinations {
    /// Sends one encoded alert event of `route`; `key` is the alert's
    /// fingerprint, `emitted` when the pipeline produced it (for
    /// acknowledgement latency).
    fn send_alert(
        &mut self,
        route: &Route,
        key: &[u8],
        payload: &[u8],
        emitted: Instant,
    ) -> Result<(), DestinationError>;

    /// Sends one dead letter (`ordinal`: its rank among the letters of
    /// one pipeline call). Returns false when there is no dead-letter
    /// destination: the letter then goes to the stage's `dlq/` files.
    fn send_dead_letter(&mut self, r: &Rejected, ordinal: u32) -> Result<bool, DestinationError>;
}

/// What one [`OutputStage::publish`] wrote.
#[derive(Debug, Clone)]
pub struct Published {
    /// The aggregates dataset.
    pub aggregates: FlushReport,
    /// The alerts dataset.
    pub alerts: FlushReport,
    /// The status dataset.
    pub status: FlushReport,
    /// The security events dataset.
    pub security_events: FlushReport,
    /// The dead-letter file, when the stage writes dead letters to files.
    pub dlq: Option<DlqFlushReport>,
}

impl Published {
    /// Files published (Parquet and dead letters).
    pub fn files(&self) -> u64 {
        let dlq = self.dlq.as_ref().is_some_and(|d| d.path.is_some());
        (self.aggregates.files.len()
            + self.alerts.files.len()
            + self.status.files.len()
            + self.security_events.files.len()) as u64
            + u64::from(dlq)
    }
}

/// The writers of one input (a worker partition, a replay) and the
/// routing of its alert events. See the module docs.
#[derive(Debug)]
pub struct OutputStage {
    aggs: AggregatesWriter,
    alerts: AlertsWriter,
    status: StatusWriter,
    security: SecurityEventsWriter,
    dlq_files: Option<DlqWriter>,
    buf: Vec<u8>,
}

impl OutputStage {
    /// A stage writing the datasets under `data_dir` with `config`, and
    /// dead letters to `dlq_files` when given (the worker with a DLQ topic
    /// has none).
    pub fn new(
        data_dir: &Path,
        config: WriterConfig,
        dlq_files: Option<DlqWriter>,
    ) -> Result<OutputStage> {
        Self::at(&vigil_store::Root::local(data_dir), config, dlq_files)
    }

    /// [`OutputStage::new`] under `root`, a local directory or an object
    /// store (`s3://`, each file one PUT of its final name).
    pub fn at(
        root: &vigil_store::Root,
        config: WriterConfig,
        dlq_files: Option<DlqWriter>,
    ) -> Result<OutputStage> {
        let store = |what| move |source| SinkError::Store { what, source };
        Ok(OutputStage {
            aggs: AggregatesWriter::at(root, config.clone()).map_err(store("aggregates writer"))?,
            alerts: AlertsWriter::at(root, config.clone()).map_err(store("alerts writer"))?,
            status: StatusWriter::at(root, config.clone()).map_err(store("status writer"))?,
            security: SecurityEventsWriter::at(root, config)
                .map_err(store("security events writer"))?,
            dlq_files,
            buf: Vec::new(),
        })
    }

    /// Aggregate rows buffered (not yet published).
    pub fn aggregate_rows(&self) -> usize {
        self.aggs.len()
    }

    /// Whether any row of any dataset or dead letter is buffered: output
    /// a flush has to publish. A worker publishes a silent partition's
    /// buffered output (what processing time alone produced) as a tick
    /// file when this is true.
    pub fn has_buffered(&self) -> bool {
        !(self.aggs.is_empty()
            && self.alerts.is_empty()
            && self.status.is_empty()
            && self.security.is_empty()
            && self.dlq_files.as_ref().is_none_or(DlqWriter::is_empty))
    }

    /// The days each dataset's next publish writes to (its `date=`
    /// directories), for the partition's intent record.
    pub fn days(&self) -> vigil_store::intent::DatasetDays {
        use vigil_store::Dataset;
        let mut out = vigil_store::intent::DatasetDays::new();
        let all = [
            (Dataset::Aggregates, self.aggs.days()),
            (Dataset::Alerts, self.alerts.days()),
            (Dataset::Status, self.status.days()),
            (Dataset::SecurityEvents, self.security.days()),
        ];
        for (d, days) in all {
            for day in days {
                out.insert(d, day);
            }
        }
        out
    }

    /// Bytes of dead letters buffered for the `dlq/` files.
    pub fn dlq_buffered_bytes(&self) -> usize {
        self.dlq_files.as_ref().map_or(0, DlqWriter::buffered_bytes)
    }

    /// The dead-letter file writer, if the stage has one.
    pub fn dlq_files_mut(&mut self) -> Option<&mut DlqWriter> {
        self.dlq_files.as_mut()
    }

    /// Hands everything in `out` to its sinks and empties it: windows and
    /// alert events to the writers, each alert event encoded to each of
    /// its routes, refused records to the dead-letter destination or
    /// files.
    pub fn route(
        &mut self,
        out: &mut Outputs,
        router: &AlertRouter,
        dest: &mut dyn Destinations,
    ) -> Result<()> {
        let emitted = Instant::now();
        for w in &out.windows {
            self.aggs.push(w);
        }
        for r in &out.status {
            self.status.push(r);
        }
        for e in &out.security {
            self.security.push(e);
        }
        for a in &out.alerts {
            self.alerts.push(a);
            for route in router.routes_for(a) {
                self.buf.clear();
                route.encoding().encode(a, &mut self.buf);
                dest.send_alert(route, a.fingerprint.as_bytes(), &self.buf, emitted)
                    .map_err(|source| SinkError::Destination {
                        what: "an alert event",
                        route: route.name().to_string(),
                        source,
                    })?;
                metrics::counter!(ROUTE_EVENTS, "route" => route.name().to_string()).increment(1);
            }
        }
        for (i, r) in out.rejected.iter().enumerate() {
            tracing::debug!(reason = r.reason.as_str(), partition = r.position.partition, offset = r.position.offset, detail = %r.detail, "refused");
            let sent =
                dest.send_dead_letter(r, i as u32)
                    .map_err(|source| SinkError::Destination {
                        what: "a dead letter",
                        route: "dlq".into(),
                        source,
                    })?;
            if !sent {
                if let Some(files) = &mut self.dlq_files {
                    files.push(r).map_err(|source| SinkError::Store {
                        what: "dead-letter record",
                        source,
                    })?;
                }
            }
        }
        out.clear();
        Ok(())
    }

    /// Publishes the Parquet and dead-letter files of `range` (tmp +
    /// rename), emptying the buffers.
    pub fn publish(&mut self, range: SourceRange<'_>) -> Result<Published> {
        let store = |what| move |source| SinkError::Store { what, source };
        let aggregates = self
            .aggs
            .flush(range)
            .map_err(store("writing aggregates"))?;
        let alerts = self.alerts.flush(range).map_err(store("writing alerts"))?;
        let status = self.status.flush(range).map_err(store("writing status"))?;
        let security_events = self
            .security
            .flush(range)
            .map_err(store("writing security events"))?;
        let dlq = match &mut self.dlq_files {
            Some(d) => Some(d.flush(range).map_err(store("writing dead letters"))?),
            None => None,
        };
        Ok(Published {
            aggregates,
            alerts,
            status,
            security_events,
            dlq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_ops::{SecurityEventRow, StatusRow};
    use vigil_proto::v1::{SecurityEvent, SecurityEventKind, StatusReport};

    /// No alert routes, no dead-letter destination.
    struct Nowhere;

    impl Destinations for Nowhere {
        fn send_alert(
            &mut self,
            _: &Route,
            _: &[u8],
            _: &[u8],
            _: Instant,
        ) -> Result<(), DestinationError> {
            Ok(())
        }

        fn send_dead_letter(&mut self, _: &Rejected, _: u32) -> Result<bool, DestinationError> {
            Ok(false)
        }
    }

    #[test]
    fn status_and_security_rows_are_published_to_their_datasets() {
        let dir = tempfile::tempdir().unwrap();
        let mut stage = OutputStage::new(dir.path(), WriterConfig::default(), None).unwrap();
        let t = 1_793_664_000_000; // 2026-11-03T00:00:00Z
        let mut out = Outputs::default();
        out.status.push(StatusRow {
            tenant: "t".into(),
            agent: "a".into(),
            hostname: None,
            report: StatusReport {
                observed_at_ms: t + 5,
                agent_version: "5.1".into(),
                ..StatusReport::default()
            },
        });
        out.security.push(SecurityEventRow {
            tenant: "t".into(),
            agent: "a".into(),
            hostname: Some("h".into()),
            event: SecurityEvent {
                timestamp_ms: t + 7,
                kind: SecurityEventKind::LoginFailure as i32,
                user: "root".into(),
                ..SecurityEvent::default()
            },
        });
        stage
            .route(&mut out, &AlertRouter::none(), &mut Nowhere)
            .unwrap();
        assert!(out.is_empty());
        let p = stage
            .publish(SourceRange {
                source: "rmm.telemetry.v1",
                partition: 0,
                first_offset: 10,
                last_offset: 12,
                tick: 0,
            })
            .unwrap();
        assert_eq!((p.status.rows, p.security_events.rows), (1, 1));
        assert_eq!(p.files(), 2);
        for f in p.status.files.iter().chain(&p.security_events.files) {
            let rel = f
                .path
                .strip_prefix(dir.path())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let name = "/date=2026-11-03/part-rmm.telemetry.v1-p00000-\
                        00000000000000000010-00000000000000000012.parquet";
            assert!(
                rel == format!("status{name}") || rel == format!("security_events{name}"),
                "{rel}"
            );
        }
    }
}
