//! # vigil-kafka: the Kafka edge of the worker
//!
//! Owns everything that talks to a Kafka broker through librdkafka
//! (`rdkafka`), and nothing about what the records mean:
//!
//! ```text
//!  [kafka] settings ──client_config(role)──▶ librdkafka config (secrets from env/files)
//!     │
//!     ├─ consumer::subscribe ──▶ BaseConsumer<WorkerContext>  (rebalance → AssignHook → PartitionEvent)
//!     ├─ producer::AckedProducer ──▶ alerts, dead letters, simulated telemetry (acks checked at flush)
//!     └─ admin::create_topics / partition_count
//! ```
//!
//! The worker runtime that ties these to the operators and the Parquet
//! store lives in the `vigil` binary; this crate is the reusable, typed
//! layer under it. Modules: [`config`], [`consumer`], [`producer`],
//! [`admin`], [`headers`] (dead-letter header names), [`latency`]
//! (acknowledgement latency histogram), [`health`] (readiness facts from
//! the consumer's callbacks), [`metric_names`],
//! [`error`].

pub mod admin;
pub mod config;
pub mod consumer;
pub mod error;
pub mod headers;
pub mod health;
pub mod latency;
pub mod metric_names;
pub mod producer;
#[cfg(test)]
mod test_util;

pub use config::{KafkaSettings, Role};
pub(crate) use consumer::log_client;
pub use error::{Error, Result};
pub use latency::{LatencyHistogram, LatencySummary};
pub use producer::{AckedProducer, Undelivered};

/// Re-export of the client crate, so users name the same types.
pub use rdkafka;
