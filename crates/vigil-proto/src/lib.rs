//! Generated wire types for Vigil's telemetry format (`vigil.v1`).
//!
//! The schema lives in `proto/vigil/v1/telemetry.proto`; this crate only
//! compiles it. One [`v1::TelemetryBatch`] is one Kafka record. Files of
//! batches use the usual length-delimited stream (a varint length before
//! each encoded batch), see [`prost::Message::encode_length_delimited`].

#![allow(missing_docs)]

/// `vigil.v1`: the first version of the wire format.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/vigil.v1.rs"));
}

pub use prost;
