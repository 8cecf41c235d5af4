//! The crate's typed error, with the table, query or format concerned.

use std::path::PathBuf;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

use crate::render::Format;

/// Result with [`QueryError`].
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// Everything that can go wrong while opening, querying or rendering.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A dataset could not be registered as a table.
    #[error("registering table {table} over {path}: {source}")]
    Register {
        /// Table name.
        table: &'static str,
        /// Dataset directory.
        path: PathBuf,
        /// DataFusion's error.
        source: Box<DataFusionError>,
    },
    /// The storage location could not be opened (an invalid location, or
    /// an object store client that cannot be configured).
    #[error("opening {location}: {source}")]
    Location {
        /// The location, credential-free.
        location: String,
        /// The store's error.
        source: vigil_store::StoreError,
    },
    /// Planning or running a query failed (bad SQL, unknown column,
    /// unreadable file...).
    #[error("query failed: {source}\nquery: {query}")]
    Sql {
        /// The SQL text.
        query: String,
        /// DataFusion's error.
        source: Box<DataFusionError>,
    },
    /// A query parameter (`--param name=value`) does not fit the query.
    #[error("parameter ${name}: {problem}")]
    Param {
        /// The parameter's name (without `$`).
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// Rendering results failed.
    #[error("rendering results as {format}: {source}")]
    Render {
        /// The output format.
        format: Format,
        /// Arrow's error.
        source: ArrowError,
    },
    /// The tokio runtime of [`crate::block_on`] could not be built.
    #[error("building the query runtime: {source}")]
    Runtime {
        /// The OS error.
        source: std::io::Error,
    },
}
