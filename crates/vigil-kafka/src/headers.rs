//! Header names of dead-letter records on the DLQ topic. Each refused
//! record carries why it was refused and where it came from:
//!
//! | header | value |
//! |---|---|
//! | `vigil.reason` | the reason (`decode`, `late`, ...; see `docs/semantics.md`) |
//! | `vigil.detail` | a human-readable explanation |
//! | `vigil.source.topic` | the input topic |
//! | `vigil.source.partition` | the input partition, decimal |
//! | `vigil.source.offset` | the input offset, decimal |
//! | `content-type` | [`PROTOBUF`] for whole records, [`JSON`] for refused points |

/// Why the record was refused.
pub const REASON: &str = "vigil.reason";
/// Human-readable explanation.
pub const DETAIL: &str = "vigil.detail";
/// Input topic.
pub const SOURCE_TOPIC: &str = "vigil.source.topic";
/// Input partition (decimal).
pub const SOURCE_PARTITION: &str = "vigil.source.partition";
/// Input offset (decimal).
pub const SOURCE_OFFSET: &str = "vigil.source.offset";
/// Media type of the value.
pub const CONTENT_TYPE: &str = "content-type";
/// Value is the original `vigil.v1.TelemetryBatch` record, byte for byte.
pub const PROTOBUF: &str = "application/x-protobuf; messageType=vigil.v1.TelemetryBatch";
/// Value is a JSON object describing refused points (same fields as a line
/// of the dead-letter files).
pub const JSON: &str = "application/json";
