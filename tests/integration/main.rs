//! Vigil's integration tests, compiled into one binary: the oracle test
//! (Parquet output against an independent computation), CLI behaviour,
//! malformed input, detectors on labelled scenarios, and the Parquet files
//! read by pyarrow and DuckDB, and the Kafka worker against the real test
//! broker (nisshi), and the SIEM encodings checked by independent parsers
//! and validators, and the reports (the HTML one in a headless browser),
//! and object storage against a real S3-compatible server (moto).

mod cli;
mod common;
mod detectors;
mod export;
mod interop;
mod kafka;
mod oracle;
mod otlp;
mod report;
mod s3;
mod siem;
