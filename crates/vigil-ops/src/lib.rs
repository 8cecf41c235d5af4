//! # vigil-ops: the product's operators
//!
//! Pure, synchronous stream operators. No I/O, no clock reads, no async:
//! time is passed in, so everything here is tested and benchmarked alone.
//!
//! ```text
//!  record bytes ──▶ decode+validate ──▶ dedup (agent, seq) ──▶ windows (per-agent watermark)
//!        │ refused ──▶ Rejected (reason)                             │ closed windows
//!        ▼                                                            ▼
//!   dead-letter sink                        detectors ──▶ alert lifecycle ──▶ AlertEvent
//! ```
//!
//! [`pipeline::Pipeline`] chains them for one partition (single owner, no
//! locks). Its state is plain data (serde), ready to be checkpointed.

pub mod clock;
pub mod config;
pub mod decode;
pub mod dedup;
pub mod detect;
pub mod exact;
pub mod intern;
pub mod model;
pub mod otlp;
pub mod pipeline;
pub mod reject;
pub mod rules;
pub mod window;

pub use model::*;
pub use reject::{Position, RejectReason, Rejected};
