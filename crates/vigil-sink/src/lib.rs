//! # vigil-sink: Vigil's output side
//!
//! Owns what leaves the pipeline and how: the alert encodings (one file
//! each, one registry line: [`mod@encoding`]), the routing of alert events to
//! destinations ([`route`]), and the output stage that hands a pipeline's
//! output to the Parquet writers, the dead-letter sinks and the routed
//! destinations ([`output`]), and exports of stored alert events and
//! security events to stdout, files and syslog receivers ([`export`]). The Kafka worker, replays (`vigil ingest`,
//! `vigil demo`: [`RouteFiles`]) and exports use this one path; `vigil-ops` stays pure (no
//! I/O, no output formats).
//!
//! ```text
//!  Pipeline ─▶ Outputs ─▶ OutputStage ─┬▶ AggregatesWriter / AlertsWriter / DlqWriter (vigil-store)
//!                                      └▶ AlertRouter ─▶ Encoding ─▶ Destinations (Kafka topic, files)
//! ```
//!
//! The field mapping of each encoding is in `docs/siem.md`.

pub mod encoding;
pub mod error;
pub mod export;
pub mod output;
pub mod route;
pub mod route_files;
pub mod time;

pub use encoding::{encoding, encoding_names, Encoding, ENCODINGS};
pub use error::{DestinationError, Result, SinkError};
pub use export::{
    Envelope, ExportError, ExportOptions, ExportReport, ExportSink, Exportable, Exporter,
    SendError, Target,
};
pub use output::{Destinations, OutputStage, Published};
pub use route::{AlertRouter, AlertSettings, Route, DEFAULT_ROUTE, ROUTE_EVENTS};
pub use route_files::RouteFiles;
