//! The crate's typed error.

/// An error a destination returns (the worker's Kafka producer, a file).
pub type DestinationError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the output side.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A Parquet or dead-letter writer failed.
    #[error("{what}")]
    Store {
        /// What was being written.
        what: &'static str,
        /// The writer's error.
        #[source]
        source: vigil_store::StoreError,
    },
    /// A destination refused an alert event or a dead letter.
    #[error("sending {what} on route {route}")]
    Destination {
        /// What was being sent (`an alert event`, `a dead letter`).
        what: &'static str,
        /// The route (`dlq` for dead letters).
        route: String,
        /// The destination's error.
        #[source]
        source: DestinationError,
    },
}

/// Result of the output side.
pub type Result<T, E = SinkError> = std::result::Result<T, E>;
