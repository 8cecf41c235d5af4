//! # vigil-query: SQL over Vigil's Parquet datasets
//!
//! Owns reading: a DataFusion session with the `aggregates`, `alerts`,
//! `status`, `security_events` and `audit` datasets written by `vigil-store`
//! registered as tables (Hive `date` partition, statistics and page-index
//! pruning), result rendering for the CLI, the `vigil report` reports
//! (health, alerts, capacity, compliance, security) with their HTML
//! rendering, and alert and security events read back for `vigil export`.
//!
//! ```text
//!  <root>/aggregates/date=…/*.parquet      ─┐
//!  <root>/alerts/date=…/*.parquet          ─┤
//!  <root>/status/date=…/*.parquet          ─┤
//!  <root>/security_events/date=…/*.parquet ─┴▶ QuerySession (DataFusion) ─sql()─▶ Vec<RecordBatch> ─render()─▶ table | csv | json | html
//!                                                 ├─ report::run(health | alerts | capacity | compliance | security) ─▶ Report ─render_report()─▶ … | one HTML file
//!                                                 └─ alert_events() | security_events() ─▶ vigil export
//! ```
//!
//! The root is a local directory or an S3-compatible object store
//! (`QuerySession::open_location` with `s3://bucket/prefix`): the store is
//! registered in the DataFusion session and listed through the same
//! reader rule.
//!
//! Queries are async and CPU-heavy: the binary runs them on a tokio runtime
//! of its own (or through [`block_on`]), never on the worker's I/O runtime.
//!
//! Modules: [`session`] (the tables), [`listing`] (the reader rule that
//! hides files a compacted file covers), [`alerts`] (alert events back as
//! `AlertEvent`s, for `vigil export`), [`security_events`] (security
//! events back as `SecurityEventRow`s, likewise), [`mod@render`] (output formats),
//! [`report`] (the reports' SQL, HTML and SVG charts), [`error`] (the
//! typed error).

pub mod alerts;
pub mod error;
pub mod listing;
pub mod render;
pub mod report;
pub mod security_events;
pub mod session;

pub use alerts::{AlertEvents, AlertFilter, EventStream};
pub use datafusion::arrow::array::RecordBatch;
pub use error::{QueryError, Result};
pub use render::{render, Format, UnknownFormat};
pub use security_events::{SecurityEvents, SecurityFilter};
pub use session::{table_schema, QuerySession, PARTITION_TYPE};

/// Runs a future to completion on a new multi-threaded tokio runtime (one
/// worker per core): the blocking entry point for callers without a
/// runtime, such as `vigil sql`. Callers that already run tokio should
/// `.await` the async functions on a runtime dedicated to queries instead.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("vigil-query")
        .enable_all()
        .build()
        .map_err(|source| QueryError::Runtime { source })?;
    Ok(runtime.block_on(future))
}

#[cfg(test)]
mod tests;
