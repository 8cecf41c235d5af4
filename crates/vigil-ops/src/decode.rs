//! Decoding and batch-level validation of `vigil.v1.TelemetryBatch`.
//!
//! A record that does not decode, or breaks a [`Limits`] rule, is refused
//! whole with one [`RejectReason`]. Point-level checks (non-finite values,
//! future and late timestamps) happen later, in the pipeline, because they
//! need the agent's state; so does the `future` check of status reports
//! and security events (one refused report or event, not the batch).
//!
//! Status reports and security events (fields 10 and 11, see
//! docs/wire-format.md) are checked here against the wire contract: a
//! malformed one refuses the whole batch as `invalid_status` or
//! `invalid_security_event` (as a malformed series refuses it as
//! `invalid_metric`), so the agent's bug shows in the dead letters with
//! the raw record instead of half a batch being taken.

use vigil_proto::v1::{
    BackupResult, PatchSeverity, SecurityEvent, SecurityEventKind, StatusReport, TelemetryBatch,
};

use crate::pipeline::VALID_TS;

use crate::config::Limits;
use crate::reject::RejectReason;

mod wire;

pub use wire::{BatchDecoder, WireError};

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

/// Decodes `bytes` into `batch` with `dec` (reusing the strings and
/// vectors of earlier batches, see [`BatchDecoder`]) and validates it
/// against `limits`. On success labels of every series are sorted by key.
pub fn decode_into(
    bytes: &[u8],
    limits: &Limits,
    dec: &mut BatchDecoder,
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
    dec.decode(bytes, batch).map_err(|e| {
        BatchError::new(
            RejectReason::Decode,
            format!("not a vigil.v1.TelemetryBatch: {e}"),
        )
    })?;
    validate(batch, limits)
}

/// Byte classes of names, one table lookup per byte (these checks run on
/// every series of every batch): bit 0 may start a metric name, bit 1
/// may continue one, bit 2 may start a label key, bit 3 may continue one.
static NAME_BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let alpha = b.is_ascii_alphabetic();
        let digit = b.is_ascii_digit();
        let mut bits = 0;
        if alpha || b == b'_' || b == b':' {
            bits |= 1;
        }
        if alpha || digit || b == b'_' || b == b'.' || b == b':' {
            bits |= 2;
        }
        if alpha || b == b'_' {
            bits |= 4;
        }
        if alpha || digit || b == b'_' {
            bits |= 8;
        }
        t[c] = bits;
        c += 1;
    }
    t
};

/// Whether `b` is non-empty, its first byte has class `first` and every
/// byte has class `rest` ([`NAME_BYTES`]).
#[inline]
fn name_of(b: &[u8], first: u8, rest: u8) -> bool {
    let Some(&c) = b.first() else {
        return false;
    };
    // No early exit: the fold runs as straight-line code over short names.
    NAME_BYTES[usize::from(c)] & first != 0
        && b.iter()
            .fold(true, |ok, &c| ok & (NAME_BYTES[usize::from(c)] & rest != 0))
}

/// Is `s` a valid metric name: `[A-Za-z_:][A-Za-z0-9_.:]*`.
pub fn valid_metric(s: &str) -> bool {
    name_of(s.as_bytes(), 1, 2)
}

/// Is `s` a valid label key: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_label_key(s: &str) -> bool {
    name_of(s.as_bytes(), 4, 8)
}

/// Whether `s` holds a control character (`char::is_control`: U+0000 to
/// U+001F and U+007F to U+009F), looking at bytes: printable ASCII, the
/// common case, is decided without decoding characters.
#[inline]
pub(crate) fn has_control(s: &str) -> bool {
    let plain = s.bytes().fold(true, |ok, b| ok & (0x20..0x7f).contains(&b));
    !plain && s.chars().any(char::is_control)
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
        if has_control(id) {
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
    let events = batch.status.len() + batch.security_events.len();
    if events > limits.max_events_per_batch {
        return Err(BatchError::new(
            RejectReason::TooManyEvents,
            format!(
                "{} status reports and {} security events, limit {} together",
                batch.status.len(),
                batch.security_events.len(),
                limits.max_events_per_batch
            ),
        ));
    }
    for (i, r) in batch.status.iter().enumerate() {
        validate_status(r, limits).map_err(|m| {
            BatchError::new(RejectReason::InvalidStatus, format!("status[{i}]: {m}"))
        })?;
    }
    for (i, e) in batch.security_events.iter().enumerate() {
        validate_security_event(e, limits).map_err(|m| {
            BatchError::new(
                RejectReason::InvalidSecurityEvent,
                format!("security_events[{i}]: {m}"),
            )
        })?;
    }
    Ok(())
}

/// A required timestamp: inside [`VALID_TS`] and not 0 (0 is "not set").
fn required_ts(what: &str, ms: i64) -> Result<(), String> {
    if ms == 0 {
        Err(format!("{what} is not set"))
    } else {
        optional_ts(what, ms)
    }
}

/// An optional timestamp (0: not set): otherwise inside [`VALID_TS`].
fn optional_ts(what: &str, ms: i64) -> Result<(), String> {
    if ms != 0 && !VALID_TS.contains(&ms) {
        Err(format!(
            "{what} {ms} is outside 1970-01-01 ..= 9999-12-31 (ms since epoch)"
        ))
    } else {
        Ok(())
    }
}

/// A string field: at most `limits.max_label_bytes`, no control characters.
pub(crate) fn text(what: &str, s: &str, limits: &Limits) -> Result<(), String> {
    if s.len() > limits.max_label_bytes {
        Err(format!(
            "{what} is {} bytes, limit {}",
            s.len(),
            limits.max_label_bytes
        ))
    } else if has_control(s) {
        Err(format!(
            "{what} {:?} contains control characters",
            truncate(s)
        ))
    } else {
        Ok(())
    }
}

/// The wire contract of one status report (see the proto file).
pub fn validate_status(r: &StatusReport, limits: &Limits) -> Result<(), String> {
    required_ts("observed_at_ms", r.observed_at_ms)?;
    optional_ts("last_patch_install_ok_ms", r.last_patch_install_ok_ms)?;
    optional_ts(
        "last_patch_install_failed_ms",
        r.last_patch_install_failed_ms,
    )?;
    optional_ts("last_boot_ms", r.last_boot_ms)?;
    let mut seen = 0u32;
    for (j, m) in r.missing_patches.iter().enumerate() {
        let sev = match PatchSeverity::try_from(m.severity) {
            Ok(PatchSeverity::Unspecified) | Err(_) => {
                return Err(format!(
                    "missing_patches[{j}]: severity {} is not a known patch severity",
                    m.severity
                ))
            }
            Ok(s) => s,
        };
        let bit = 1u32 << (sev as i32);
        if seen & bit != 0 {
            return Err(format!(
                "missing_patches[{j}]: severity {} repeats",
                sev.as_str_name()
            ));
        }
        seen |= bit;
        if m.count == 0 {
            return Err(format!(
                "missing_patches[{j}]: count is 0 (leave the severity out instead)"
            ));
        }
        required_ts(
            &format!("missing_patches[{j}].oldest_missing_since_ms"),
            m.oldest_missing_since_ms,
        )?;
    }
    if !r.missing_patches.is_empty() && !r.patches_reported {
        return Err("missing_patches is set but patches_reported is false".into());
    }
    if let Some(av) = &r.antivirus {
        text("antivirus.product", &av.product, limits)?;
        optional_ts(
            "antivirus.definitions_updated_ms",
            av.definitions_updated_ms,
        )?;
        optional_ts("antivirus.last_scan_ms", av.last_scan_ms)?;
    }
    if let Some(b) = &r.backup {
        if BackupResult::try_from(b.last_result).is_err() {
            return Err(format!(
                "backup.last_result {} is not a known backup result",
                b.last_result
            ));
        }
        optional_ts("backup.last_run_ms", b.last_run_ms)?;
        optional_ts("backup.last_success_ms", b.last_success_ms)?;
    }
    text("agent_version", &r.agent_version, limits)?;
    Ok(())
}

/// The wire contract of one security event (see the proto file): a known
/// kind, a timestamp, and the fields its kind requires.
pub fn validate_security_event(e: &SecurityEvent, limits: &Limits) -> Result<(), String> {
    required_ts("timestamp_ms", e.timestamp_ms)?;
    let kind = match SecurityEventKind::try_from(e.kind) {
        Ok(SecurityEventKind::Unspecified) | Err(_) => {
            return Err(format!(
                "kind {} is not a known security event kind",
                e.kind
            ))
        }
        Ok(k) => k,
    };
    for (what, v) in [
        ("user", &e.user),
        ("source_address", &e.source_address),
        ("technician", &e.technician),
        ("session_id", &e.session_id),
        ("privilege", &e.privilege),
        ("actor", &e.actor),
    ] {
        text(what, v, limits)?;
    }
    let required: &[(&str, &String)] = match kind {
        SecurityEventKind::LoginSuccess | SecurityEventKind::LoginFailure => &[("user", &e.user)],
        SecurityEventKind::RemoteSessionStart | SecurityEventKind::RemoteSessionEnd => {
            &[("technician", &e.technician), ("session_id", &e.session_id)]
        }
        SecurityEventKind::PrivilegeChange => &[("user", &e.user), ("privilege", &e.privilege)],
        SecurityEventKind::Unspecified => &[],
    };
    for (what, v) in required {
        if v.is_empty() {
            return Err(format!(
                "{what} is empty (required for {})",
                kind_name(kind)
            ));
        }
    }
    Ok(())
}

/// The snake_case name of a security event kind (`login_failure`, ...),
/// as in the `security_events/` dataset and alert summaries.
pub fn kind_name(k: SecurityEventKind) -> &'static str {
    match k {
        SecurityEventKind::Unspecified => "unspecified",
        SecurityEventKind::LoginSuccess => "login_success",
        SecurityEventKind::LoginFailure => "login_failure",
        SecurityEventKind::RemoteSessionStart => "remote_session_start",
        SecurityEventKind::RemoteSessionEnd => "remote_session_end",
        SecurityEventKind::PrivilegeChange => "privilege_change",
    }
}

/// Field number of `TelemetryBatch.series`.
const SERIES_FIELD: u64 = 6;
/// Field numbers of `TelemetryBatch.status` and `.security_events`.
const EVENT_FIELDS: [u64; 2] = [10, 11];

/// Content hash of an encoded batch, for telling a resend from a restarted
/// agent's new batch under the same number (see [`crate::dedup`]): xxh3
/// over the encoded bytes of its `series`, `status` and `security_events`
/// fields, in order, and nothing else, so the optional `AgentInfo` (sent
/// now and then) does not change it (a batch without reports or events
/// hashes as before they existed). (Dedup also compares `sent_at_ms`, separately.) A record whose top-level fields cannot be walked
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
            let field = key >> 3;
            if (field == SERIES_FIELD || EVENT_FIELDS.contains(&field)) && key & 7 == 2 {
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
    use proptest::prelude::*;
    use prost::Message;
    use vigil_proto::v1::{Label, Series};

    /// The name rules as written in the docs, char by char.
    fn metric_by_rule(s: &str) -> bool {
        let mut cs = s.chars();
        cs.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && cs.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':'))
    }

    fn label_key_by_rule(s: &str) -> bool {
        let mut cs = s.chars();
        cs.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    #[test]
    fn name_tables_match_the_rules_for_every_char_pair() {
        let chars: Vec<char> = (0u32..0x100)
            .filter_map(char::from_u32)
            .chain(['é', '\u{85}', '\u{2028}', '😀'])
            .collect();
        assert!(!valid_metric("") && !valid_label_key(""));
        for &a in &chars {
            for &b in &chars {
                for s in [a.to_string(), format!("{a}{b}"), format!("x{a}{b}")] {
                    assert_eq!(valid_metric(&s), metric_by_rule(&s), "{s:?}");
                    assert_eq!(valid_label_key(&s), label_key_by_rule(&s), "{s:?}");
                    assert_eq!(has_control(&s), s.chars().any(char::is_control), "{s:?}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn byte_checks_agree_with_char_checks(s in any::<String>()) {
            prop_assert_eq!(valid_metric(&s), metric_by_rule(&s));
            prop_assert_eq!(valid_label_key(&s), label_key_by_rule(&s));
            prop_assert_eq!(has_control(&s), s.chars().any(char::is_control));
        }
    }

    #[test]
    fn content_hash_covers_series_only() {
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
            status: Vec::new(),
            security_events: Vec::new(),
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
        decode_into(
            &b.encode_to_vec(),
            &Limits::default(),
            &mut BatchDecoder::default(),
            &mut out,
        )
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
        let mut dec = BatchDecoder::default();
        let l = Limits::default();
        assert_eq!(
            decode_into(&[0xff, 0xff, 0xff], &l, &mut dec, &mut out)
                .unwrap_err()
                .reason,
            RejectReason::Decode
        );
        assert_eq!(
            decode_into(&vec![0; (1 << 20) + 1], &l, &mut dec, &mut out)
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

    fn report() -> StatusReport {
        use vigil_proto::v1::{AntivirusStatus, BackupStatus, MissingPatches};
        StatusReport {
            observed_at_ms: 1_700_000_000_000,
            missing_patches: vec![MissingPatches {
                severity: PatchSeverity::Critical as i32,
                count: 2,
                oldest_missing_since_ms: 1_690_000_000_000,
            }],
            patches_reported: true,
            last_patch_install_ok_ms: 1_699_000_000_000,
            last_patch_install_failed_ms: 0,
            antivirus: Some(AntivirusStatus {
                product: "Defender".into(),
                enabled: true,
                definitions_updated_ms: 1_699_900_000_000,
                last_scan_ms: 0,
            }),
            backup: Some(BackupStatus {
                last_result: BackupResult::Success as i32,
                last_run_ms: 1_699_950_000_000,
                last_success_ms: 1_699_950_000_000,
            }),
            agent_version: "5.12.3".into(),
            last_boot_ms: 1_699_000_000_000,
        }
    }

    fn login_failure() -> SecurityEvent {
        SecurityEvent {
            timestamp_ms: 1_700_000_000_000,
            kind: SecurityEventKind::LoginFailure as i32,
            user: "admin".into(),
            source_address: "203.0.113.9".into(),
            ..SecurityEvent::default()
        }
    }

    fn detail(b: &TelemetryBatch) -> (RejectReason, String) {
        let mut out = TelemetryBatch::default();
        let e = decode_into(
            &b.encode_to_vec(),
            &Limits::default(),
            &mut BatchDecoder::default(),
            &mut out,
        )
        .unwrap_err();
        (e.reason, e.detail)
    }

    #[test]
    fn reports_and_events_round_trip_and_validate() {
        let mut b = batch();
        b.status = vec![report()];
        b.security_events = vec![
            login_failure(),
            SecurityEvent {
                timestamp_ms: 1_700_000_001_000,
                kind: SecurityEventKind::RemoteSessionStart as i32,
                technician: "tech1".into(),
                session_id: "s-1".into(),
                ..SecurityEvent::default()
            },
            SecurityEvent {
                timestamp_ms: 1_700_000_002_000,
                kind: SecurityEventKind::PrivilegeChange as i32,
                user: "bob".into(),
                privilege: "Administrators".into(),
                granted: true,
                actor: "alice".into(),
                ..SecurityEvent::default()
            },
        ];
        let got = check(&b).unwrap();
        assert_eq!(got.status, b.status);
        assert_eq!(got.security_events, b.security_events);
        // Fully patched: no entries, but reported.
        let mut r = report();
        r.missing_patches.clear();
        assert_eq!(validate_status(&r, &Limits::default()), Ok(()));
    }

    #[test]
    fn each_bad_report_is_refused_with_its_reason_and_item() {
        type Case = (fn(&mut StatusReport), &'static str);
        let cases: Vec<Case> = vec![
            (
                |r| r.observed_at_ms = 0,
                "status[0]: observed_at_ms is not set",
            ),
            (
                |r| r.observed_at_ms = -5,
                "status[0]: observed_at_ms -5 is outside",
            ),
            (|r| r.last_boot_ms = i64::MAX, "status[0]: last_boot_ms"),
            (
                |r| r.missing_patches[0].severity = 0,
                "not a known patch severity",
            ),
            (
                |r| r.missing_patches[0].severity = 9,
                "not a known patch severity",
            ),
            (|r| r.missing_patches[0].count = 0, "count is 0"),
            (
                |r| r.missing_patches[0].oldest_missing_since_ms = 0,
                "missing_patches[0].oldest_missing_since_ms is not set",
            ),
            (
                |r| {
                    let m = r.missing_patches[0];
                    r.missing_patches.push(m)
                },
                "missing_patches[1]: severity PATCH_SEVERITY_CRITICAL repeats",
            ),
            (|r| r.patches_reported = false, "patches_reported is false"),
            (
                |r| {
                    if let Some(b) = r.backup.as_mut() {
                        b.last_result = 7
                    }
                },
                "not a known backup result",
            ),
            (|r| r.agent_version = "5\n1".into(), "control characters"),
            (
                |r| {
                    if let Some(av) = r.antivirus.as_mut() {
                        av.product = "x".repeat(1025)
                    }
                },
                "antivirus.product is 1025 bytes, limit 1024",
            ),
        ];
        for (i, (break_it, want)) in cases.into_iter().enumerate() {
            let mut b = batch();
            let mut r = report();
            break_it(&mut r);
            b.status = vec![r];
            let (reason, d) = detail(&b);
            assert_eq!(reason, RejectReason::InvalidStatus, "case {i}: {d}");
            assert!(d.contains(want), "case {i}: {d:?} lacks {want:?}");
        }
    }

    #[test]
    fn each_bad_security_event_is_refused_with_its_reason_and_item() {
        type Case = (fn(&mut SecurityEvent), &'static str);
        let cases: Vec<Case> = vec![
            (
                |e| e.timestamp_ms = 0,
                "security_events[1]: timestamp_ms is not set",
            ),
            (|e| e.kind = 0, "kind 0 is not a known"),
            (|e| e.kind = 42, "kind 42 is not a known"),
            (
                |e| e.user.clear(),
                "user is empty (required for login_failure)",
            ),
            (
                |e| {
                    e.kind = SecurityEventKind::RemoteSessionEnd as i32;
                    e.technician = "t".into();
                },
                "session_id is empty (required for remote_session_end)",
            ),
            (
                |e| e.kind = SecurityEventKind::PrivilegeChange as i32,
                "privilege is empty (required for privilege_change)",
            ),
            (|e| e.source_address = "a\u{7}".into(), "control characters"),
        ];
        for (i, (break_it, want)) in cases.into_iter().enumerate() {
            let mut b = batch();
            let mut e = login_failure();
            break_it(&mut e);
            b.security_events = vec![login_failure(), e];
            let (reason, d) = detail(&b);
            assert_eq!(reason, RejectReason::InvalidSecurityEvent, "case {i}: {d}");
            assert!(d.contains(want), "case {i}: {d:?} lacks {want:?}");
        }
    }

    #[test]
    fn event_count_limit_is_exact() {
        let limits = Limits {
            max_events_per_batch: 3,
            ..Limits::default()
        };
        let mut b = batch();
        b.status = vec![report()];
        b.security_events = vec![login_failure(), login_failure()];
        let mut out = TelemetryBatch::default();
        let mut dec = BatchDecoder::default();
        assert!(decode_into(&b.encode_to_vec(), &limits, &mut dec, &mut out).is_ok());
        b.security_events.push(login_failure());
        let e = decode_into(&b.encode_to_vec(), &limits, &mut dec, &mut out).unwrap_err();
        assert_eq!(e.reason, RejectReason::TooManyEvents);
        assert_eq!(
            e.detail,
            "1 status reports and 3 security events, limit 3 together"
        );
    }

    #[test]
    fn content_hash_covers_reports_and_events() {
        let mut b = batch();
        let plain = content_hash(&b.encode_to_vec());
        b.security_events = vec![login_failure()];
        let with_event = content_hash(&b.encode_to_vec());
        assert_ne!(with_event, plain);
        b.security_events[0].user = "root".into();
        assert_ne!(content_hash(&b.encode_to_vec()), with_event);
        let mut s = batch();
        s.status = vec![report()];
        assert_ne!(content_hash(&s.encode_to_vec()), plain);
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
