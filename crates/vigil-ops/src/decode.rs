//! Decoding and batch-level validation of `vigil.v1.TelemetryBatch`.
//!
//! A record that does not decode, or breaks a [`Limits`] rule, is refused
//! whole with one [`RejectReason`]. Point-level checks (non-finite values,
//! future and late timestamps) happen later, in the pipeline, because they
//! need the agent's state.

use prost::Message;
use vigil_proto::v1::TelemetryBatch;

use crate::config::Limits;
use crate::reject::RejectReason;

/// Why a batch was refused, with a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// Reason (DLQ reason and metric label).
    pub reason: RejectReason,
    /// Detail for operators.
    pub detail: String,
}

impl BatchError {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        BatchError {
            reason,
            detail: detail.into(),
        }
    }
}

/// Decodes `bytes` into `batch` (reusing its allocations where prost can)
/// and validates it against `limits`. On success labels of every series
/// are sorted by key.
pub fn decode_into(
    bytes: &[u8],
    limits: &Limits,
    batch: &mut TelemetryBatch,
) -> Result<(), BatchError> {
    if bytes.len() > limits.max_batch_bytes {
        return Err(BatchError::new(
            RejectReason::TooLarge,
            format!(
                "record is {} bytes, limit {}",
                bytes.len(),
                limits.max_batch_bytes
            ),
        ));
    }
    batch.clear();
    batch.merge(bytes).map_err(|e| {
        BatchError::new(
            RejectReason::Decode,
            format!("not a vigil.v1.TelemetryBatch: {e}"),
        )
    })?;
    validate(batch, limits)
}

/// Is `s` a valid metric name: `[A-Za-z_:][A-Za-z0-9_.:]*`.
pub fn valid_metric(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':'))
}

/// Is `s` a valid label key: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_label_key(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Batch-level checks of a decoded (or converted) batch; sorts labels.
pub(crate) fn validate(batch: &mut TelemetryBatch, limits: &Limits) -> Result<(), BatchError> {
    for (what, id) in [
        ("tenant_id", &batch.tenant_id),
        ("agent_id", &batch.agent_id),
    ] {
        if id.is_empty() {
            return Err(BatchError::new(
                RejectReason::MissingId,
                format!("{what} is empty"),
            ));
        }
        if id.chars().any(char::is_control) {
            return Err(BatchError::new(
                RejectReason::InvalidId,
                format!("{what} {:?} contains control characters", truncate(id)),
            ));
        }
        if id.len() > limits.max_id_bytes {
            return Err(BatchError::new(
                RejectReason::InvalidId,
                format!(
                    "{what} is {} bytes, limit {}",
                    id.len(),
                    limits.max_id_bytes
                ),
            ));
        }
    }
    if batch.series.len() > limits.max_series_per_batch {
        return Err(BatchError::new(
            RejectReason::TooManySeries,
            format!(
                "{} series, limit {}",
                batch.series.len(),
                limits.max_series_per_batch
            ),
        ));
    }
    let mut points = 0usize;
    for (i, s) in batch.series.iter_mut().enumerate() {
        if s.metric.len() > limits.max_metric_bytes || !valid_metric(&s.metric) {
            return Err(BatchError::new(
                RejectReason::InvalidMetric,
                format!("series {i}: metric name {:?} is not [A-Za-z_:][A-Za-z0-9_.:]* of at most {} bytes", truncate(&s.metric), limits.max_metric_bytes),
            ));
        }
        if s.timestamps_ms.len() != s.values.len() {
            return Err(BatchError::new(
                RejectReason::LengthMismatch,
                format!(
                    "series {i} ({}): {} timestamps but {} values",
                    s.metric,
                    s.timestamps_ms.len(),
                    s.values.len()
                ),
            ));
        }
        points += s.timestamps_ms.len();
        if s.labels.len() > limits.max_labels {
            return Err(BatchError::new(
                RejectReason::InvalidLabels,
                format!(
                    "series {i} ({}): {} labels, limit {}",
                    s.metric,
                    s.labels.len(),
                    limits.max_labels
                ),
            ));
        }
        if !s.labels.is_sorted_by(|a, b| a.key <= b.key) {
            s.labels.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        }
        for (j, l) in s.labels.iter().enumerate() {
            if !valid_label_key(&l.key)
                || l.key.len() > limits.max_label_bytes
                || l.value.len() > limits.max_label_bytes
            {
                return Err(BatchError::new(
                    RejectReason::InvalidLabels,
                    format!("series {i} ({}): label key {:?} is not [A-Za-z_][A-Za-z0-9_]* or key/value exceed {} bytes", s.metric, truncate(&l.key), limits.max_label_bytes),
                ));
            }
            if j > 0 && s.labels[j - 1].key == l.key {
                return Err(BatchError::new(
                    RejectReason::InvalidLabels,
                    format!("series {i} ({}): label key {:?} repeats", s.metric, l.key),
                ));
            }
        }
    }
    if points > limits.max_points_per_batch {
        return Err(BatchError::new(
            RejectReason::TooManyPoints,
            format!("{points} points, limit {}", limits.max_points_per_batch),
        ));
    }
    Ok(())
}

/// Field number of `TelemetryBatch.series`.
const SERIES_FIELD: u64 = 6;

/// Content hash of an encoded batch, for telling a resend from a restarted
/// agent's new batch under the same number (see [`crate::dedup`]): xxh3
/// over the encoded bytes of its `series` fields, in order, and nothing
/// else, so the optional `AgentInfo` (sent now and then) does not change
/// it. (Dedup also compares `sent_at_ms`, separately.) A record whose top-level fields cannot be walked
/// (it decoded, so this does not happen in practice) is hashed whole.
/// Cost: one pass over a handful of field headers plus xxh3 of the series
/// bytes (tens of nanoseconds for a typical batch).
pub fn content_hash(payload: &[u8]) -> u64 {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*i)?;
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let walk = || -> Option<u64> {
        let mut h = 0u64;
        let mut i = 0usize;
        while i < payload.len() {
            let key = varint(payload, &mut i)?;
            let len = match key & 7 {
                0 => {
                    varint(payload, &mut i)?;
                    0
                }
                1 => 8,
                2 => usize::try_from(varint(payload, &mut i)?).ok()?,
                5 => 4,
                _ => return None,
            };
            let end = i.checked_add(len).filter(|&e| e <= payload.len())?;
            if key >> 3 == SERIES_FIELD && key & 7 == 2 {
                h = xxh3_64_with_seed(&payload[i..end], h);
            }
            i = end;
        }
        Some(h)
    };
    walk().unwrap_or_else(|| xxh3_64(payload))
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::v1::{Label, Series};

    #[test]
    fn content_hash_covers_series_only() {
        use prost::Message;
        use vigil_proto::v1::AgentInfo;
        let b = batch();
        let h = content_hash(&b.encode_to_vec());
        // A resend: new send time, agent info, another seq or boot id.
        let mut r = b.clone();
        r.sent_at_ms = 1_800_000_000_000;
        r.agent = Some(AgentInfo {
            hostname: "h".into(),
            ..AgentInfo::default()
        });
        r.seq = 99;
        r.boot_id = 7;
        assert_eq!(content_hash(&r.encode_to_vec()), h);
        // Other points, or one value changed: another hash.
        let mut o = b.clone();
        o.series[0].values[0] += 1.0;
        assert_ne!(content_hash(&o.encode_to_vec()), h);
        let mut o = b.clone();
        o.series[0].timestamps_ms.push(5);
        o.series[0].values.push(5.0);
        assert_ne!(content_hash(&o.encode_to_vec()), h);
        // Series order matters (an agent encodes its series in one order).
        let mut two = b.clone();
        let mut s2 = two.series[0].clone();
        s2.metric = "mem_pct".into();
        two.series.push(s2);
        let mut swapped = two.clone();
        swapped.series.swap(0, 1);
        assert_ne!(
            content_hash(&two.encode_to_vec()),
            content_hash(&swapped.encode_to_vec())
        );
        // Bytes that do not walk are hashed whole, without panicking.
        let garbage = [0x32u8, 0xff, 0xff, 0xff];
        assert_eq!(content_hash(&garbage), xxhash_rust::xxh3::xxh3_64(&garbage));
        assert_eq!(content_hash(&[]), 0);
    }

    fn batch() -> TelemetryBatch {
        TelemetryBatch {
            tenant_id: "t".into(),
            agent_id: "a".into(),
            seq: 1,
            sent_at_ms: 0,
            agent: None,
            boot_id: 0,
            series: vec![Series {
                metric: "cpu_pct".into(),
                labels: vec![
                    Label {
                        key: "z".into(),
                        value: "1".into(),
                    },
                    Label {
                        key: "a".into(),
                        value: "2".into(),
                    },
                ],
                timestamps_ms: vec![1, 2],
                values: vec![1.0, 2.0],
            }],
        }
    }

    fn check(b: &TelemetryBatch) -> Result<TelemetryBatch, RejectReason> {
        let mut out = TelemetryBatch::default();
        decode_into(&b.encode_to_vec(), &Limits::default(), &mut out)
            .map(|_| out)
            .map_err(|e| e.reason)
    }

    #[test]
    fn valid_batch_decodes_with_sorted_labels() {
        let b = check(&batch()).unwrap();
        assert_eq!(b.series[0].labels[0].key, "a");
    }

    #[test]
    fn each_malformation_has_its_reason() {
        let mut out = TelemetryBatch::default();
        let l = Limits::default();
        assert_eq!(
            decode_into(&[0xff, 0xff, 0xff], &l, &mut out)
                .unwrap_err()
                .reason,
            RejectReason::Decode
        );
        assert_eq!(
            decode_into(&vec![0; (1 << 20) + 1], &l, &mut out)
                .unwrap_err()
                .reason,
            RejectReason::TooLarge
        );
        let mut b = batch();
        b.agent_id.clear();
        assert_eq!(check(&b), Err(RejectReason::MissingId));
        let mut b = batch();
        b.agent_id = "a\0b".into();
        assert_eq!(check(&b), Err(RejectReason::InvalidId));
        let mut b = batch();
        b.tenant_id = "t".repeat(257);
        assert_eq!(check(&b), Err(RejectReason::InvalidId));
        let mut b = batch();
        b.series[0].metric = "cpu pct".into();
        assert_eq!(check(&b), Err(RejectReason::InvalidMetric));
        let mut b = batch();
        b.series[0].labels[1].key = "z".into();
        assert_eq!(check(&b), Err(RejectReason::InvalidLabels));
        let mut b = batch();
        b.series[0].labels[1].key = "9x".into();
        assert_eq!(check(&b), Err(RejectReason::InvalidLabels));
        let mut b = batch();
        b.series[0].values.pop();
        assert_eq!(check(&b), Err(RejectReason::LengthMismatch));
        let mut b = batch();
        b.series = vec![b.series[0].clone(); 10_001];
        assert_eq!(check(&b), Err(RejectReason::TooManySeries));
        let mut b = batch();
        b.series[0].timestamps_ms = vec![0; 100_001];
        b.series[0].values = vec![0.0; 100_001];
        assert_eq!(check(&b), Err(RejectReason::TooManyPoints));
    }

    #[test]
    fn names() {
        assert!(
            valid_metric("disk_used_pct")
                && valid_metric("a:b.c")
                && !valid_metric("")
                && !valid_metric("1x")
        );
        assert!(valid_label_key("mount") && !valid_label_key("a-b") && !valid_label_key(""));
    }
}
