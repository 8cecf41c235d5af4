//! Generated wire types for Vigil's telemetry format (`vigil.v1`) and for
//! the OpenTelemetry OTLP metrics format, Vigil's second input format.
//!
//! The Vigil schema lives in `proto/vigil/v1/telemetry.proto`; this crate
//! only compiles it. One [`v1::TelemetryBatch`] is one Kafka record. Files of
//! batches use the usual length-delimited stream (a varint length before
//! each encoded batch), see [`prost::Message::encode_length_delimited`].
//!
//! The OTLP definitions are the official `opentelemetry-proto` files,
//! vendored verbatim under `proto/opentelemetry/` (release and licence in
//! its README). One [`otlp::collector::metrics::v1::ExportMetricsServiceRequest`]
//! is one Kafka record as the OpenTelemetry Collector's Kafka exporter
//! writes it (`encoding: otlp_proto`). Only message types are generated,
//! without the .proto comments (read the vendored files for them).

#![allow(missing_docs)]

/// `vigil.v1`: the first version of the wire format.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/vigil.v1.rs"));
}

/// OpenTelemetry OTLP (`opentelemetry.proto.*`), the message types of the
/// metrics signal. Module paths mirror the protobuf packages.
pub mod otlp {
    /// `opentelemetry.proto.common.v1`: attributes and scopes.
    pub mod common {
        pub mod v1 {
            include!(concat!(
                env!("OUT_DIR"),
                "/opentelemetry.proto.common.v1.rs"
            ));
        }
    }
    /// `opentelemetry.proto.resource.v1`: the resource (host, service).
    pub mod resource {
        pub mod v1 {
            include!(concat!(
                env!("OUT_DIR"),
                "/opentelemetry.proto.resource.v1.rs"
            ));
        }
    }
    /// `opentelemetry.proto.metrics.v1`: metrics and data points.
    pub mod metrics {
        pub mod v1 {
            include!(concat!(
                env!("OUT_DIR"),
                "/opentelemetry.proto.metrics.v1.rs"
            ));
        }
    }
    /// `opentelemetry.proto.collector.metrics.v1`: the export request.
    pub mod collector {
        pub mod metrics {
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/opentelemetry.proto.collector.metrics.v1.rs"
                ));
            }
        }
    }
}

pub use prost;
