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
//! | `vigil.truncated` | `true` on truncated dead letters (only then) |
//!
//! Alert records carry `content-type` (the encoding's media type) and
//! [`ENCODING`] (the encoding's name: `json`, `ocsf`, `cef`, `ecs`).
//!
//! And the size accounting of a dead letter on the topic: the value
//! budget that keeps key, headers and framing within the producer's
//! `message.max.bytes` ([`dead_letter_value_budget`]).

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
/// Alert records: the name of the value's encoding (`json`, `ocsf`,
/// `cef`, `ecs`; see `docs/siem.md`).
pub const ENCODING: &str = "vigil.encoding";
/// Present (value `true`) when the value is a truncated dead letter: a
/// JSON object with the reason, the source coordinates, the digest and
/// first bytes of the record, and where the full record is kept (see
/// `docs/kafka.md`).
pub const TRUNCATED: &str = "vigil.truncated";

/// Most bytes of the [`DETAIL`] header (cut at a character boundary).
pub const DETAIL_MAX_BYTES: usize = 1024;
/// Most bytes of a dead letter's key (the agent id; longer ids are cut).
pub const KEY_MAX_BYTES: usize = 256;
/// librdkafka's worst-case framing of one record in a v2 record batch
/// (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`: length, attributes, timestamp,
/// offset, key and value lengths, header count), which its produce-time
/// size check adds to key, value and headers.
pub const RECORD_OVERHEAD: usize = 36;
/// Upper bound of the serialized headers of one dead letter: every header
/// above at its longest (detail [`DETAIL_MAX_BYTES`], topic 249 bytes, an
/// `i32` partition and `i64` offset in decimal, the longest reason and
/// content type, [`TRUNCATED`]), each with two 5-byte length varints.
/// `dead_letter_headers_fit` checks the sum.
pub const HEADERS_MAX_BYTES: usize = 2048;
/// Room kept free besides the accounted parts, for anything librdkafka or
/// a broker adds that the accounting above misses.
pub const SAFETY_MARGIN: usize = 1024;
/// librdkafka's default `message.max.bytes`.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// The most bytes a dead letter's value may take so that the whole
/// message (key, headers and framing) stays within a producer's
/// `message.max.bytes`: that limit minus [`RECORD_OVERHEAD`],
/// [`KEY_MAX_BYTES`], [`HEADERS_MAX_BYTES`] and [`SAFETY_MARGIN`]
/// (996,636 bytes for the default 1,000,000).
pub fn dead_letter_value_budget(message_max_bytes: usize) -> usize {
    message_max_bytes
        .saturating_sub(RECORD_OVERHEAD + KEY_MAX_BYTES + HEADERS_MAX_BYTES + SAFETY_MARGIN)
}

/// The size librdkafka checks against `message.max.bytes` when a message
/// is produced: framing, key, value and serialized headers (each header:
/// its name and value and their zigzag-varint lengths).
pub fn wire_size(key_len: usize, value_len: usize, headers: &[(&str, &[u8])]) -> usize {
    let varint = |n: usize| {
        let mut z = (n as u64) << 1; // zigzag of a non-negative length
        let mut len = 1;
        while z >= 0x80 {
            z >>= 7;
            len += 1;
        }
        len
    };
    RECORD_OVERHEAD
        + key_len
        + value_len
        + headers
            .iter()
            .map(|(k, v)| varint(k.len()) + k.len() + varint(v.len()) + v.len())
            .sum::<usize>()
}

/// `bytes` cut to at most `max` bytes; when they are UTF-8, at a
/// character boundary.
pub fn cap_bytes(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    let mut end = max;
    if std::str::from_utf8(bytes).is_ok() {
        while end > 0 && (bytes[end] & 0xC0) == 0x80 {
            end -= 1;
        }
    }
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_headers_fit() {
        let detail = "x".repeat(DETAIL_MAX_BYTES);
        let topic = "t".repeat(249);
        let worst: [(&str, &[u8]); 7] = [
            (REASON, b"length_mismatch_and_then_some_xx"),
            (DETAIL, detail.as_bytes()),
            (SOURCE_TOPIC, topic.as_bytes()),
            (SOURCE_PARTITION, b"-2147483648"),
            (SOURCE_OFFSET, b"-9223372036854775808"),
            (CONTENT_TYPE, PROTOBUF.as_bytes()),
            (TRUNCATED, b"true"),
        ];
        let headers = wire_size(0, 0, &worst) - RECORD_OVERHEAD;
        assert!(headers <= HEADERS_MAX_BYTES, "{headers}");
        // A value at the budget, the longest key and the worst headers
        // stay within the limit, by the margin.
        for max in [DEFAULT_MESSAGE_MAX_BYTES, 1 << 20, 64 << 10] {
            let value = dead_letter_value_budget(max);
            let total = wire_size(KEY_MAX_BYTES, value, &worst);
            assert!(total + SAFETY_MARGIN <= max, "{total} for {max}");
        }
        assert_eq!(dead_letter_value_budget(DEFAULT_MESSAGE_MAX_BYTES), 996_636);
    }

    #[test]
    fn caps_keep_utf8_whole() {
        assert_eq!(cap_bytes(b"abc", 5), b"abc");
        assert_eq!(cap_bytes("aé".as_bytes(), 2), b"a");
        assert_eq!(cap_bytes(&[0xff, 0xfe, 0xfd], 2), &[0xff, 0xfe]);
    }
}
