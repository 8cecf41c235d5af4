//! # vigil: the binary's library
//!
//! Wires the pure operators of `vigil-ops` to the edges: configuration
//! (`settings`), replays of batch files and the in-process demo
//! (`replay`), the Kafka worker (`worker`), Parquet and dead-letter output (`vigil-store`), SQL
//! (`vigil-query`), the simulator (`vigil-sim`), logs and metrics (`obs`),
//! the audit trail of the rules each start runs under (`audit`),
//! the worker's HTTP listener and probes (`http`, `health`), and the
//! command line (`cli`, `cmd`).
//!
//! ```text
//!  vigil simulate ──▶ batches file ──▶ vigil ingest ─┐
//!  vigil demo (in-process fleet) ───────────────────┼─▶ Replay: Pipeline ─▶ aggregates/ alerts/ dlq/
//!                                                    │
//!  vigil sql / vigil report ◀── DataFusion over the Parquet datasets
//! ```

pub mod alloc;
pub mod audit;
pub mod cli;
pub mod cmd;
pub mod health;
pub mod http;
pub mod obs;
pub mod replay;
pub mod settings;
pub mod worker;
