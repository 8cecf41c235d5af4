//! # vigil-store: Parquet datasets and dead-letter files
//!
//! Owns how Vigil's output lands in storage: the Arrow schemas of the
//! `aggregates/`, `alerts/`, `status/`, `security_events/` and `audit/`
//! datasets, their Hive-style `date=` layout,
//! deterministic file names, and atomic publication (tmp + fsync + rename
//! in a local directory, one PUT of the final name in an S3-compatible
//! object store), plus the JSON Lines dead-letter sink and the checkpoint
//! store. The contract is written down in
//! `docs/storage.md`; DataFusion lives in `vigil-query`, not here.
//!
//! ```text
//!  WindowAggregate ─push─▶ AggregatesWriter ─┐
//!  AlertEvent      ─push─▶ AlertsWriter     ─┼─flush(SourceRange)─▶ <root>/<dataset>/date=YYYY-MM-DD/
//!                                            │                        part-<src>-p<part>-<first>-<last>.parquet
//!  Rejected        ─push─▶ DlqWriter        ─┴─flush(SourceRange)─▶ <root>/dlq/dlq-<src>-p<part>-<first>-<last>.jsonl
//! ```
//!
//! A worker flushes after each input range and commits the range's Kafka
//! offsets only once `flush` returned: the files are then durable, and a
//! replay of the same range rewrites the same names instead of adding
//! duplicates.
//!
//! Modules: [`location`] (where a root lives: a directory or
//! `s3://bucket/prefix`, and the [`Root`] every writer reaches it
//! through), [`schema`] (columns and sort keys), [`naming`] (source ranges,
//! file and partition names), [`writer`] (the Parquet writer), [`dlq`] (the
//! dead-letter sink), [`audit`] (the `audit/` trail of rule changes
//! recorded at every start), [`bound`] (the dead-letter size policy shared by
//! every dead-letter sink), [`retention`] (removing output older than a
//! limit), [`compact`] (merging small files, and the reader rule that
//! makes it invisible to queries), [`error`] (the typed error).

mod atomic;
pub mod audit;
pub mod bound;
pub mod checkpoint;
pub mod compact;
pub mod dlq;
pub mod error;
pub mod failpoint;
pub mod intent;
pub mod location;
pub mod naming;
pub mod replace;
pub mod report_rows;
pub mod retention;
pub mod schema;
pub mod state_files;
pub mod writer;

pub use audit::{record_start, AuditReport, AuditRow, AuditRows, AuditStart, AuditWriter};
pub use bound::{
    bound_letter, digest, encode_unread, format_digest, write_full_copy, write_undelivered,
    Bounded, FullCopy, LetterBudget, LetterForm, UndeliveredLetter, Unread,
};
pub use checkpoint::{CheckpointStore, Generation, Opened};
pub use dlq::{encode_dead_letter, DlqFlushReport, DlqWriter, ReasonCounts, DLQ_DIR};
pub use error::{Result, StoreError};
pub use location::{Location, ObjectRoot, ObjectStoreOptions, Root};
pub use naming::{sanitize_source, SourceRange};
pub use object_store;
pub use replace::{
    remove_partition_files_at, remove_partition_files_from, remove_source_files, write_file_atomic,
    ROUTES_DIR, ROUTE_FILE_EXTENSIONS, ROUTE_FILE_PREFIX,
};
pub use report_rows::{SecurityEventRows, SecurityEventsWriter, StatusRows, StatusWriter};
pub use schema::{
    aggregates_schema, alerts_schema, audit_schema, security_events_schema, status_schema, Dataset,
    PARTITION_COLUMN,
};
pub use state_files::{is_state_file_of, state_file_name};
pub use writer::{
    AggregateRows, AggregatesWriter, AlertRows, AlertsWriter, DatasetWriter, FlushReport,
    RowBuffer, WriterConfig, WrittenFile,
};

#[cfg(test)]
mod tests;
