//! The crate's typed error: every variant carries the context (path,
//! dataset, range) needed to act on it without a backtrace.

use std::path::PathBuf;

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong while writing datasets or dead letters.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`create dir`, `write`, `rename`, `fsync`...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Encoding a Parquet file failed.
    #[error("writing parquet file {path}: {source}")]
    Parquet {
        /// The temporary file being written.
        path: PathBuf,
        /// The encoder's error.
        source: parquet::errors::ParquetError,
    },
    /// Building, sorting or slicing the Arrow batch of a dataset failed.
    #[error("arrow error in dataset {dataset}: {source}")]
    Arrow {
        /// Dataset name.
        dataset: &'static str,
        /// The Arrow error.
        source: arrow::error::ArrowError,
    },
    /// Encoding a dead-letter record as JSON failed.
    #[error("encoding dead-letter record at partition {partition} offset {offset}: {source}")]
    Json {
        /// Partition of the refused record.
        partition: i32,
        /// Offset of the refused record.
        offset: i64,
        /// The encoder's error.
        source: serde_json::Error,
    },
    /// The source range given to a flush is not valid.
    #[error("invalid source range {source_name:?} p{partition} [{first_offset}, {last_offset}]: {problem}")]
    InvalidRange {
        /// The source (topic or file stem) as given.
        source_name: String,
        /// The partition as given.
        partition: i32,
        /// The first offset as given.
        first_offset: i64,
        /// The last offset as given.
        last_offset: i64,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A partition timestamp falls outside years 0000–9999, so it has no
    /// `date=YYYY-MM-DD` directory.
    #[error("timestamp day {day} (days since 1970-01-01) has no YYYY-MM-DD partition")]
    InvalidTimestamp {
        /// The UTC day number.
        day: i64,
    },
    /// Reading a dataset file (a compaction input) failed.
    #[error("reading parquet file {path}: {source}")]
    Read {
        /// The file being read.
        path: PathBuf,
        /// The decoder's error.
        source: parquet::errors::ParquetError,
    },
    /// A compaction input is not what the storage contract promises
    /// (foreign schema, rows out of sort-key order, a row count that does
    /// not add up): the partition is left as it was.
    #[error("cannot compact {path}: {problem}")]
    Compact {
        /// The input (or output) file concerned.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A checkpoint whose trailer does not match its body (torn, or
    /// corrupted on disk or in the store).
    #[error("checkpoint {path} is corrupt: {problem}")]
    Corrupt {
        /// The checkpoint.
        path: PathBuf,
        /// What does not match.
        problem: String,
    },
    /// The committed offset of a source partition could not be read (its
    /// checkpoint is unreadable), so compaction cannot tell which of its
    /// files a restarted worker would sweep.
    #[error("committed offset of {source_name} p{partition}: {problem}")]
    Commit {
        /// The source, sanitized as in file names.
        source_name: String,
        /// The partition.
        partition: i32,
        /// What went wrong.
        problem: String,
    },
    /// A storage location (`data_dir`, `worker.state_dir`, `--data-dir`)
    /// is not valid, or is an object store where only a local directory
    /// works. `location` never holds credentials (a URL with user
    /// information is shown as `s3://<redacted>`).
    #[error("storage location {location}: {problem}")]
    Location {
        /// The location as configured (credential-free).
        location: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An object store request failed (after the client's retries).
    #[error("object store {op} {location}: {source}")]
    Object {
        /// What was being done (`put`, `get`, `list`, `delete`, `configure`).
        op: &'static str,
        /// The object's URL, `s3://bucket/key`.
        location: String,
        /// The client's error.
        source: Box<object_store::Error>,
    },
    /// A writer setting is out of range.
    #[error("invalid store config {field}: {problem}")]
    Config {
        /// The config field, as named in [`crate::WriterConfig`].
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl StoreError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }
}
