//! A protobuf decoder of `vigil.v1.TelemetryBatch` that reuses the
//! buffers of the previous batch.
//!
//! prost's generated `merge` builds every series anew: its metric and label
//! strings and its two point vectors are allocated for each batch and freed
//! at the next, which for agents sending one point per series per batch is
//! most of the decoding cost. [`BatchDecoder::decode`] decodes into the same
//! [`TelemetryBatch`] type but keeps the series (and their strings and
//! vectors) of earlier batches and overwrites them, so a steady stream of
//! batches allocates nothing.
//!
//! It accepts exactly what prost accepts and yields the same value (the
//! property and fuzz tests compare the two on valid and mutated records):
//! unknown fields (groups included) are skipped, repeated scalars may be
//! packed or not, a repeated `agent` field merges, the last value of a
//! scalar or string field wins, strings must be UTF-8, varints at most 10
//! bytes without overflow, and unknown groups nest at most as deep as
//! prost's recursion limit allows.
//!
//! Status reports and security events (fields 10 and 11) are decoded here
//! too, into the reports and events of the previous batch (cleared, their
//! strings and vectors kept), by the same rules. A batch without them
//! touches neither list beyond emptying it, so the metric path stays as
//! it was.

use vigil_proto::v1::{
    AgentInfo, AntivirusStatus, BackupStatus, Label, MissingPatches, SecurityEvent, Series,
    StatusReport, TelemetryBatch,
};

/// Why a record is not a `TelemetryBatch` (the detail of a `decode`
/// refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// A varint runs past the end or over 64 bits.
    Varint,
    /// A field key with wire type 6 or 7, field number 0, or over 32 bits.
    Key,
    /// A known field with the wrong wire type.
    WireType,
    /// A length or fixed-width field runs past the end of its message.
    Underflow,
    /// An end-group tag without its start, or with another field number.
    Group,
    /// Groups nested deeper than prost's recursion limit.
    Depth,
    /// A string field that is not UTF-8.
    Utf8,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WireError::Varint => "invalid varint",
            WireError::Key => "invalid field key",
            WireError::WireType => "wrong wire type for a known field",
            WireError::Underflow => "a field runs past the end of its message",
            WireError::Group => "unexpected end-group tag",
            WireError::Depth => "nested too deeply",
            WireError::Utf8 => "a string is not UTF-8",
        })
    }
}

/// prost's recursion limit: a message (or group) this deep is refused.
const RECURSION_LIMIT: u32 = 100;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A cursor over one message's bytes.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn done(&self) -> bool {
        self.i >= self.b.len()
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        let b = self.b;
        let mut i = self.i;
        let first = *b.get(i).ok_or(WireError::Varint)?;
        if first < 0x80 {
            self.i = i + 1;
            return Ok(u64::from(first));
        }
        let mut v = 0u64;
        for n in 0..10 {
            let byte = *b.get(i).ok_or(WireError::Varint)?;
            i += 1;
            v |= u64::from(byte & 0x7f) << (7 * n);
            if byte < 0x80 {
                // The 10th byte may only carry the top bit of 64.
                if n == 9 && byte >= 2 {
                    return Err(WireError::Varint);
                }
                self.i = i;
                return Ok(v);
            }
        }
        Err(WireError::Varint)
    }

    /// The next field key: (field number, wire type).
    #[inline]
    fn key(&mut self) -> Result<(u32, u8), WireError> {
        let k = self.varint()?;
        if k > u64::from(u32::MAX) {
            return Err(WireError::Key);
        }
        let wt = (k & 7) as u8;
        let tag = (k as u32) >> 3;
        if wt > 5 || tag == 0 {
            return Err(WireError::Key);
        }
        Ok((tag, wt))
    }

    #[inline]
    fn take(&mut self, n: u64) -> Result<&'a [u8], WireError> {
        let rest = (self.b.len() - self.i) as u64;
        if n > rest {
            return Err(WireError::Underflow);
        }
        let s = &self.b[self.i..self.i + n as usize];
        self.i += n as usize;
        Ok(s)
    }

    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.varint()?;
        self.take(n)
    }

    /// Reads a string field into `dst`. A value equal to what `dst` holds
    /// (a reused series' metric and labels, mostly) is neither validated
    /// again nor copied.
    #[inline]
    fn str_into(&mut self, dst: &mut String) -> Result<(), WireError> {
        let b = self.bytes()?;
        if dst.as_bytes() != b {
            let s = std::str::from_utf8(b).map_err(|_| WireError::Utf8)?;
            dst.clear();
            dst.push_str(s);
        }
        Ok(())
    }

    #[inline]
    fn fixed64(&mut self) -> Result<u64, WireError> {
        let s = self.take(8)?;
        Ok(u64::from_le_bytes(s.try_into().expect("8 bytes")))
    }

    /// Skips a field of wire type `wt` (an unknown field), as prost does:
    /// groups to their matching end, at most `budget` levels deep.
    fn skip(&mut self, tag: u32, wt: u8, budget: u32) -> Result<(), WireError> {
        if budget == 0 {
            return Err(WireError::Depth);
        }
        match wt {
            VARINT => {
                self.varint()?;
            }
            FIXED64 => {
                self.take(8)?;
            }
            LEN => {
                self.bytes()?;
            }
            FIXED32 => {
                self.take(4)?;
            }
            START_GROUP => loop {
                let (t, w) = self.key()?;
                if w == END_GROUP {
                    if t != tag {
                        return Err(WireError::Group);
                    }
                    break;
                }
                self.skip(t, w, budget - 1)?;
            },
            _ => return Err(WireError::Group),
        }
        Ok(())
    }
}

#[inline]
fn expect(wt: u8, want: u8) -> Result<(), WireError> {
    if wt == want {
        Ok(())
    } else {
        Err(WireError::WireType)
    }
}

/// Decodes `TelemetryBatch` records into one reused value. See the module
/// docs.
#[derive(Debug, Default, Clone)]
pub struct BatchDecoder {
    /// Series of earlier batches beyond the current one's count, kept for
    /// their buffers.
    spare: Vec<Series>,
}

/// Series kept in [`BatchDecoder`]'s spare list at most (a huge batch's
/// series are not all kept).
const SPARE_KEEP: usize = 256;

impl BatchDecoder {
    /// Decodes `bytes` into `batch`, replacing its content (as prost's
    /// `clear` then `merge` would). On error `batch` holds what was decoded
    /// before the error.
    pub fn decode(&mut self, bytes: &[u8], batch: &mut TelemetryBatch) -> Result<(), WireError> {
        batch.seq = 0;
        batch.sent_at_ms = 0;
        batch.agent = None;
        batch.boot_id = 0;
        let mut n = Counts::default();
        let r = self.batch(bytes, batch, &mut n);
        // Series beyond this batch's count keep their buffers for later.
        if batch.series.len() > n.series {
            let room = SPARE_KEEP.saturating_sub(self.spare.len());
            let keep = (batch.series.len() - n.series).min(room);
            let from = n.series;
            self.spare.extend(batch.series.drain(from..from + keep));
            batch.series.truncate(n.series);
        }
        // Reports and events are rare (a status cycle is hours): those
        // beyond this batch's count are dropped, not kept aside.
        batch.status.truncate(n.status);
        batch.security_events.truncate(n.events);
        r
    }

    fn batch(
        &mut self,
        bytes: &[u8],
        batch: &mut TelemetryBatch,
        n: &mut Counts,
    ) -> Result<(), WireError> {
        let mut r = Reader { b: bytes, i: 0 };
        // Strings keep the previous batch's value until read (so an equal
        // one is not copied); those absent from this batch are emptied.
        let (mut tenant, mut agent) = (false, false);
        while !r.done() {
            let (tag, wt) = r.key()?;
            match tag {
                1 => {
                    expect(wt, LEN)?;
                    r.str_into(&mut batch.tenant_id)?;
                    tenant = true;
                }
                2 => {
                    expect(wt, LEN)?;
                    r.str_into(&mut batch.agent_id)?;
                    agent = true;
                }
                3 => {
                    expect(wt, VARINT)?;
                    batch.seq = r.varint()?;
                }
                4 => {
                    expect(wt, VARINT)?;
                    batch.sent_at_ms = r.varint()? as i64;
                }
                5 => {
                    expect(wt, LEN)?;
                    let b = r.bytes()?;
                    agent_info(b, batch.agent.get_or_insert_with(AgentInfo::default))?;
                }
                6 => {
                    expect(wt, LEN)?;
                    let b = r.bytes()?;
                    if n.series == batch.series.len() {
                        batch.series.push(self.spare.pop().unwrap_or_default());
                    }
                    let s = &mut batch.series[n.series];
                    n.series += 1;
                    s.timestamps_ms.clear();
                    s.values.clear();
                    series(b, s)?;
                }
                9 => {
                    expect(wt, VARINT)?;
                    batch.boot_id = r.varint()?;
                }
                10 => {
                    expect(wt, LEN)?;
                    let b = r.bytes()?;
                    let s = reused(&mut batch.status, &mut n.status);
                    status_report(b, s)?;
                }
                11 => {
                    expect(wt, LEN)?;
                    let b = r.bytes()?;
                    let e = reused(&mut batch.security_events, &mut n.events);
                    security_event(b, e)?;
                }
                _ => r.skip(tag, wt, RECURSION_LIMIT)?,
            }
        }
        if !tenant {
            batch.tenant_id.clear();
        }
        if !agent {
            batch.agent_id.clear();
        }
        Ok(())
    }
}

/// How many series, status reports and security events the batch being
/// decoded has so far (the entries of its lists in use).
#[derive(Debug, Default)]
struct Counts {
    series: usize,
    status: usize,
    events: usize,
}

/// The next entry of `list` (`*n` of them in use): an earlier batch's,
/// reset to the default value with its buffers kept, or a new one.
fn reused<'a, T: Reset>(list: &'a mut Vec<T>, n: &mut usize) -> &'a mut T {
    if *n == list.len() {
        list.push(T::default());
    } else {
        list[*n].reset();
    }
    *n += 1;
    &mut list[*n - 1]
}

/// A message reset to its default value, keeping its allocations.
trait Reset: Default {
    fn reset(&mut self);
}

impl Reset for StatusReport {
    fn reset(&mut self) {
        let StatusReport {
            observed_at_ms,
            missing_patches,
            patches_reported,
            last_patch_install_ok_ms,
            last_patch_install_failed_ms,
            antivirus,
            backup,
            agent_version,
            last_boot_ms,
        } = self;
        *observed_at_ms = 0;
        missing_patches.clear();
        *patches_reported = false;
        *last_patch_install_ok_ms = 0;
        *last_patch_install_failed_ms = 0;
        *antivirus = None;
        *backup = None;
        agent_version.clear();
        *last_boot_ms = 0;
    }
}

impl Reset for SecurityEvent {
    fn reset(&mut self) {
        let SecurityEvent {
            timestamp_ms,
            kind,
            user,
            source_address,
            technician,
            session_id,
            privilege,
            granted,
            actor,
        } = self;
        *timestamp_ms = 0;
        *kind = 0;
        for s in [
            user,
            source_address,
            technician,
            session_id,
            privilege,
            actor,
        ] {
            s.clear();
        }
        *granted = false;
    }
}

/// Reads a `bool` field as prost does (any non-zero varint is true).
#[inline]
fn bool_field(r: &mut Reader<'_>, wt: u8) -> Result<bool, WireError> {
    expect(wt, VARINT)?;
    Ok(r.varint()? != 0)
}

/// Reads an `int64` field (two's complement varint).
#[inline]
fn i64_field(r: &mut Reader<'_>, wt: u8) -> Result<i64, WireError> {
    expect(wt, VARINT)?;
    Ok(r.varint()? as i64)
}

/// Reads an `int32` or enum field: the varint's low 32 bits, as prost
/// keeps them.
#[inline]
fn i32_field(r: &mut Reader<'_>, wt: u8) -> Result<i32, WireError> {
    expect(wt, VARINT)?;
    Ok(r.varint()? as i32)
}

/// Merges a `StatusReport` message (field 10, one nesting level) into
/// `s`, which holds the default value.
fn status_report(b: &[u8], s: &mut StatusReport) -> Result<(), WireError> {
    let mut r = Reader { b, i: 0 };
    while !r.done() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => s.observed_at_ms = i64_field(&mut r, wt)?,
            2 => {
                expect(wt, LEN)?;
                let mb = r.bytes()?;
                let mut m = MissingPatches::default();
                missing_patches(mb, &mut m)?;
                s.missing_patches.push(m);
            }
            3 => s.patches_reported = bool_field(&mut r, wt)?,
            4 => s.last_patch_install_ok_ms = i64_field(&mut r, wt)?,
            5 => s.last_patch_install_failed_ms = i64_field(&mut r, wt)?,
            6 => {
                expect(wt, LEN)?;
                let ab = r.bytes()?;
                antivirus(ab, s.antivirus.get_or_insert_with(AntivirusStatus::default))?;
            }
            7 => {
                expect(wt, LEN)?;
                let bb = r.bytes()?;
                backup(bb, s.backup.get_or_insert_with(BackupStatus::default))?;
            }
            8 => {
                expect(wt, LEN)?;
                r.str_into(&mut s.agent_version)?;
            }
            9 => s.last_boot_ms = i64_field(&mut r, wt)?,
            _ => r.skip(tag, wt, RECURSION_LIMIT - 1)?,
        }
    }
    Ok(())
}

/// Merges a `MissingPatches` message (two nesting levels) into `m`.
fn missing_patches(b: &[u8], m: &mut MissingPatches) -> Result<(), WireError> {
    let mut r = Reader { b, i: 0 };
    while !r.done() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => m.severity = i32_field(&mut r, wt)?,
            2 => {
                expect(wt, VARINT)?;
                m.count = r.varint()? as u32;
            }
            3 => m.oldest_missing_since_ms = i64_field(&mut r, wt)?,
            _ => r.skip(tag, wt, RECURSION_LIMIT - 2)?,
        }
    }
    Ok(())
}

/// Merges an `AntivirusStatus` message (two nesting levels) into `a`.
fn antivirus(b: &[u8], a: &mut AntivirusStatus) -> Result<(), WireError> {
    let mut r = Reader { b, i: 0 };
    while !r.done() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => {
                expect(wt, LEN)?;
                r.str_into(&mut a.product)?;
            }
            2 => a.enabled = bool_field(&mut r, wt)?,
            3 => a.definitions_updated_ms = i64_field(&mut r, wt)?,
            4 => a.last_scan_ms = i64_field(&mut r, wt)?,
            _ => r.skip(tag, wt, RECURSION_LIMIT - 2)?,
        }
    }
    Ok(())
}

/// Merges a `BackupStatus` message (two nesting levels) into `k`.
fn backup(b: &[u8], k: &mut BackupStatus) -> Result<(), WireError> {
    let mut r = Reader { b, i: 0 };
    while !r.done() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => k.last_result = i32_field(&mut r, wt)?,
            2 => k.last_run_ms = i64_field(&mut r, wt)?,
            3 => k.last_success_ms = i64_field(&mut r, wt)?,
            _ => r.skip(tag, wt, RECURSION_LIMIT - 2)?,
        }
    }
    Ok(())
}

/// Merges a `SecurityEvent` message (field 11, one nesting level) into
/// `e`, which holds the default value.
fn security_event(b: &[u8], e: &mut SecurityEvent) -> Result<(), WireError> {
    let mut r = Reader { b, i: 0 };
    while !r.done() {
        let (tag, wt) = r.key()?;
        let dst = match tag {
            1 => {
                e.timestamp_ms = i64_field(&mut r, wt)?;
                continue;
            }
            2 => {
                e.kind = i32_field(&mut r, wt)?;
                continue;
            }
            8 => {
                e.granted = bool_field(&mut r, wt)?;
                continue;
            }
            3 => &mut e.user,
            4 => &mut e.source_address,
            5 => &mut e.technician,
            6 => &mut e.session_id,
            7 => &mut e.privilege,
            9 => &mut e.actor,
            _ => {
                r.skip(tag, wt, RECURSION_LIMIT - 1)?;
                continue;
            }
        };
        expect(wt, LEN)?;
        r.str_into(dst)?;
    }
    Ok(())
}

/// Merges an `AgentInfo` message into `info`.
fn agent_info(b: &[u8], info: &mut AgentInfo) -> Result<(), WireError> {
    let mut r = Reader { b, i: 0 };
    while !r.done() {
        let (tag, wt) = r.key()?;
        let dst = match tag {
            1 => &mut info.hostname,
            2 => &mut info.os,
            3 => &mut info.agent_version,
            _ => {
                r.skip(tag, wt, RECURSION_LIMIT - 1)?;
                continue;
            }
        };
        expect(wt, LEN)?;
        r.str_into(dst)?;
    }
    Ok(())
}

/// Decodes a `Series` message into `s`, whose point vectors are empty and
/// whose metric and labels are those of an earlier series (reused).
fn series(b: &[u8], s: &mut Series) -> Result<(), WireError> {
    let mut r = Reader { b, i: 0 };
    let mut labels = 0usize;
    let mut metric = false;
    let res = (|| {
        while !r.done() {
            let (tag, wt) = r.key()?;
            match tag {
                1 => {
                    expect(wt, LEN)?;
                    r.str_into(&mut s.metric)?;
                    metric = true;
                }
                2 => {
                    expect(wt, LEN)?;
                    let lb = r.bytes()?;
                    if labels == s.labels.len() {
                        s.labels.push(Label::default());
                    }
                    let l = &mut s.labels[labels];
                    labels += 1;
                    label(lb, l)?;
                }
                3 => match wt {
                    LEN => {
                        let mut p = Reader {
                            b: r.bytes()?,
                            i: 0,
                        };
                        while !p.done() {
                            s.timestamps_ms.push(p.varint()? as i64);
                        }
                    }
                    VARINT => s.timestamps_ms.push(r.varint()? as i64),
                    _ => return Err(WireError::WireType),
                },
                4 => match wt {
                    LEN => {
                        let p = r.bytes()?;
                        if p.len() % 8 != 0 {
                            return Err(WireError::Underflow);
                        }
                        s.values.extend(
                            p.chunks_exact(8)
                                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))),
                        );
                    }
                    FIXED64 => s.values.push(f64::from_bits(r.fixed64()?)),
                    _ => return Err(WireError::WireType),
                },
                _ => r.skip(tag, wt, RECURSION_LIMIT - 1)?,
            }
        }
        Ok(())
    })();
    s.labels.truncate(labels);
    if !metric {
        s.metric.clear();
    }
    res
}

/// Decodes a `Label` message into `l` (whose strings are an earlier
/// label's).
fn label(b: &[u8], l: &mut Label) -> Result<(), WireError> {
    let mut r = Reader { b, i: 0 };
    let (mut key, mut value) = (false, false);
    while !r.done() {
        let (tag, wt) = r.key()?;
        let dst = match tag {
            1 => {
                key = true;
                &mut l.key
            }
            2 => {
                value = true;
                &mut l.value
            }
            _ => {
                r.skip(tag, wt, RECURSION_LIMIT - 2)?;
                continue;
            }
        };
        expect(wt, LEN)?;
        r.str_into(dst)?;
    }
    if !key {
        l.key.clear();
    }
    if !value {
        l.value.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    /// prost's verdict and value for `bytes`.
    fn prost_decode(bytes: &[u8]) -> Option<TelemetryBatch> {
        TelemetryBatch::decode(bytes).ok()
    }

    /// Decodes with `dec` into `reused` and compares with prost.
    fn same_as_prost(dec: &mut BatchDecoder, reused: &mut TelemetryBatch, bytes: &[u8]) {
        let ours = dec.decode(bytes, reused);
        match prost_decode(bytes) {
            Some(p) => {
                assert_eq!(ours, Ok(()), "prost decodes {bytes:02x?}");
                // Compared as encodings: values bit for bit (NaN too).
                assert_eq!(reused.encode_to_vec(), p.encode_to_vec(), "{bytes:02x?}");
            }
            None => assert!(ours.is_err(), "prost refuses {bytes:02x?}: {reused:?}"),
        }
    }

    fn any_batch() -> impl Strategy<Value = TelemetryBatch> {
        let label = ("[a-z_]{0,4}", "[a-zé=,]{0,4}").prop_map(|(key, value)| Label { key, value });
        let series = (
            "[a-z_]{0,6}",
            proptest::collection::vec(label, 0..3),
            proptest::collection::vec((any::<i64>(), any::<f64>()), 0..4),
        )
            .prop_map(|(metric, labels, pts)| Series {
                metric,
                labels,
                timestamps_ms: pts.iter().map(|p| p.0).collect(),
                values: pts.iter().map(|p| p.1).collect(),
            });
        (
            "[a-z]{0,3}",
            "[a-z]{0,3}",
            any::<u64>(),
            any::<i64>(),
            proptest::option::of("[a-z]{0,3}"),
            proptest::collection::vec(series, 0..4),
            any::<u64>(),
            proptest::collection::vec(any_report(), 0..3),
            proptest::collection::vec(any_event(), 0..4),
        )
            .prop_map(
                |(
                    tenant_id,
                    agent_id,
                    seq,
                    sent_at_ms,
                    host,
                    series,
                    boot_id,
                    status,
                    security_events,
                )| TelemetryBatch {
                    tenant_id,
                    agent_id,
                    seq,
                    sent_at_ms,
                    agent: host.map(|hostname| AgentInfo {
                        hostname,
                        ..AgentInfo::default()
                    }),
                    series,
                    boot_id,
                    status,
                    security_events,
                },
            )
    }

    /// Any status report (scalars over their whole range, enums included
    /// out of range, sub-messages present or not).
    fn any_report() -> impl Strategy<Value = StatusReport> {
        let missing = (any::<i32>(), any::<u32>(), any::<i64>()).prop_map(
            |(severity, count, oldest_missing_since_ms)| MissingPatches {
                severity,
                count,
                oldest_missing_since_ms,
            },
        );
        let av = ("[A-Za-z é]{0,5}", any::<bool>(), any::<i64>(), any::<i64>()).prop_map(
            |(product, enabled, definitions_updated_ms, last_scan_ms)| AntivirusStatus {
                product,
                enabled,
                definitions_updated_ms,
                last_scan_ms,
            },
        );
        let backup = (any::<i32>(), any::<i64>(), any::<i64>()).prop_map(
            |(last_result, last_run_ms, last_success_ms)| BackupStatus {
                last_result,
                last_run_ms,
                last_success_ms,
            },
        );
        (
            any::<i64>(),
            proptest::collection::vec(missing, 0..3),
            any::<bool>(),
            (any::<i64>(), any::<i64>(), any::<i64>()),
            proptest::option::of(av),
            proptest::option::of(backup),
            "[0-9.]{0,6}",
        )
            .prop_map(
                |(observed_at_ms, missing_patches, patches_reported, ts, antivirus, backup, v)| {
                    StatusReport {
                        observed_at_ms,
                        missing_patches,
                        patches_reported,
                        last_patch_install_ok_ms: ts.0,
                        last_patch_install_failed_ms: ts.1,
                        antivirus,
                        backup,
                        agent_version: v,
                        last_boot_ms: ts.2,
                    }
                },
            )
    }

    /// Any security event.
    fn any_event() -> impl Strategy<Value = SecurityEvent> {
        (
            any::<i64>(),
            any::<i32>(),
            proptest::collection::vec("[a-z0-9.é]{0,4}", 6),
            any::<bool>(),
        )
            .prop_map(|(timestamp_ms, kind, s, granted)| SecurityEvent {
                timestamp_ms,
                kind,
                user: s[0].clone(),
                source_address: s[1].clone(),
                technician: s[2].clone(),
                session_id: s[3].clone(),
                privilege: s[4].clone(),
                granted,
                actor: s[5].clone(),
            })
    }

    /// Hand-made records prost and this decoder must agree on.
    #[test]
    fn agrees_with_prost_on_edge_cases() {
        let mut dec = BatchDecoder::default();
        let mut b = TelemetryBatch::default();
        let cases: &[&[u8]] = &[
            &[],
            // unpacked timestamps and values, twice each
            &[
                0x32, 0x0c, 0x18, 0x05, 0x18, 0x06, 0x21, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f,
            ],
            // packed values of 7 bytes
            &[0x32, 0x09, 0x22, 0x07, 0, 0, 0, 0, 0, 0, 0],
            // unknown varint, fixed32, fixed64 and length fields, a group
            &[
                0x38, 0x01, 0x45, 0, 0, 0, 0, 0x61, 0, 0, 0, 0, 0, 0, 0, 0, 0x6a, 0x01, 0x00, 0x63,
                0x08, 0x01, 0x64,
            ],
            // a group closed with another field number, an end group alone
            &[0x63, 0x6c],
            &[0x64],
            // field number 0, wire types 6 and 7
            &[0x00, 0x01],
            &[0x0e],
            &[0x0f],
            // a known field with the wrong wire type
            &[0x08, 0x01],
            &[0x18, 0x01, 0x1a, 0x00],
            // a 10-byte varint at its limit, and over it
            &[
                0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            &[
                0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ],
            &[0x18, 0xff, 0xff],
            // a key over 32 bits
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00],
            // a string that is not UTF-8
            &[0x0a, 0x02, 0xc3, 0x28],
            // agent info twice: merged
            &[0x2a, 0x03, 0x0a, 0x01, b'h', 0x2a, 0x03, 0x12, 0x01, b'l'],
            // a label field inside the series running past the series
            &[0x32, 0x03, 0x12, 0x05, 0x0a],
            // status and security events with the wrong wire type
            &[0x50, 0x01],
            &[0x5d, 0, 0, 0, 0],
            // a status report's known fields with the wrong wire type
            &[0x52, 0x02, 0x0a, 0x00],
            &[0x52, 0x02, 0x10, 0x01],
            &[0x52, 0x02, 0x32, 0x00, 0x52, 0x03, 0x32, 0x01, 0x08],
            &[0x5a, 0x02, 0x1d, 0x00],
            // empty report and event, an empty antivirus and backup
            &[0x52, 0x00, 0x5a, 0x00],
            &[0x52, 0x04, 0x32, 0x00, 0x3a, 0x00],
            // a report and an event between series, unknown fields in each
            &[
                0x32, 0x02, 0x0a, 0x00, 0x52, 0x04, 0x08, 0x07, 0x78, 0x01, 0x5a, 0x04, 0x10, 0x02,
                0x60, 0x00, 0x32, 0x00,
            ],
            &[
                0x52, 0x04, 0x78, 0x01, 0x08, 0x07, 0x5a, 0x04, 0x68, 0x00, 0x10, 0x02,
            ],
            // enum, uint32 and bool values over their type: truncated, or
            // any non-zero as true
            &[
                0x5a, 0x0d, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x40,
                0x02,
            ],
            &[
                0x52, 0x0a, 0x12, 0x08, 0x08, 0x80, 0x80, 0x80, 0x80, 0x10, 0x10, 0x03,
            ],
            &[0x52, 0x08, 0x12, 0x06, 0x10, 0x80, 0x80, 0x80, 0x80, 0x10],
            // antivirus, backup and a report field twice: merged, last wins
            &[
                0x52, 0x11, 0x32, 0x03, 0x0a, 0x01, b'a', 0x32, 0x02, 0x10, 0x01, 0x3a, 0x02, 0x08,
                0x02, 0x08, 0x05, 0x08, 0x06,
            ],
            // strings that are not UTF-8 inside a report and an event
            &[0x52, 0x04, 0x42, 0x02, 0xc3, 0x28],
            &[0x52, 0x06, 0x32, 0x04, 0x0a, 0x02, 0xc3, 0x28],
            &[0x5a, 0x04, 0x4a, 0x02, 0xc3, 0x28],
            // a missing-patches entry running past its report
            &[0x52, 0x03, 0x12, 0x05, 0x08],
        ];
        for c in cases {
            same_as_prost(&mut dec, &mut b, c);
        }
        // Groups nested at and beyond prost's recursion limit.
        for depth in [98usize, 99, 100, 101] {
            let mut v = vec![0x63u8; depth];
            v.extend(std::iter::repeat_n(0x64u8, depth));
            same_as_prost(&mut dec, &mut b, &v);
            let mut s = vec![0x63u8; depth];
            s.extend(std::iter::repeat_n(0x64u8, depth));
            let mut rec = vec![0x32u8];
            prost::encoding::encode_varint(s.len() as u64, &mut rec);
            rec.extend(s);
            same_as_prost(&mut dec, &mut b, &rec);
            // The same inside a status report, a security event, and a
            // report's antivirus and missing-patches entry (one level
            // deeper).
            let mut g = vec![0x63u8; depth];
            g.extend(std::iter::repeat_n(0x64u8, depth));
            let nested = |outer: u8, body: &[u8]| {
                let mut v = vec![outer];
                prost::encoding::encode_varint(body.len() as u64, &mut v);
                v.extend_from_slice(body);
                v
            };
            same_as_prost(&mut dec, &mut b, &nested(0x52, &g));
            same_as_prost(&mut dec, &mut b, &nested(0x5a, &g));
            same_as_prost(&mut dec, &mut b, &nested(0x52, &nested(0x32, &g)));
            same_as_prost(&mut dec, &mut b, &nested(0x52, &nested(0x12, &g)));
            same_as_prost(&mut dec, &mut b, &nested(0x52, &nested(0x3a, &g)));
        }
    }

    /// Reports and events of an earlier batch do not leak into the next:
    /// fewer, none, or ones with fields left out.
    #[test]
    fn reused_reports_and_events_are_reset() {
        let full = TelemetryBatch {
            status: vec![
                StatusReport {
                    observed_at_ms: 5,
                    missing_patches: vec![MissingPatches {
                        severity: 4,
                        count: 2,
                        oldest_missing_since_ms: 3,
                    }],
                    patches_reported: true,
                    last_patch_install_ok_ms: 1,
                    last_patch_install_failed_ms: 2,
                    antivirus: Some(AntivirusStatus {
                        product: "Defender".into(),
                        enabled: true,
                        definitions_updated_ms: 4,
                        last_scan_ms: 6,
                    }),
                    backup: Some(BackupStatus {
                        last_result: 2,
                        last_run_ms: 7,
                        last_success_ms: 8,
                    }),
                    agent_version: "5.1".into(),
                    last_boot_ms: 9,
                };
                2
            ],
            security_events: vec![
                SecurityEvent {
                    timestamp_ms: 1,
                    kind: 5,
                    user: "bob".into(),
                    source_address: "h".into(),
                    technician: "t".into(),
                    session_id: "s".into(),
                    privilege: "Administrators".into(),
                    granted: true,
                    actor: "alice".into(),
                };
                3
            ],
            ..TelemetryBatch::default()
        };
        let sparse = TelemetryBatch {
            status: vec![StatusReport {
                observed_at_ms: 10,
                ..StatusReport::default()
            }],
            security_events: vec![SecurityEvent {
                kind: 2,
                user: "root".into(),
                ..SecurityEvent::default()
            }],
            ..TelemetryBatch::default()
        };
        let mut dec = BatchDecoder::default();
        let mut reused = TelemetryBatch::default();
        for b in [&full, &sparse, &full, &TelemetryBatch::default(), &full] {
            dec.decode(&b.encode_to_vec(), &mut reused).unwrap();
            assert_eq!(&reused, b);
        }
    }

    proptest! {
        /// Valid records, decoded one after another into one value (so
        /// buffers of a larger earlier batch are reused), equal prost's.
        #[test]
        fn valid_records_equal_prost(batches in proptest::collection::vec(any_batch(), 1..6)) {
            let mut dec = BatchDecoder::default();
            let mut reused = TelemetryBatch::default();
            for b in &batches {
                let bytes = b.encode_to_vec();
                dec.decode(&bytes, &mut reused).unwrap();
                prop_assert_eq!(reused.encode_to_vec(), bytes);
            }
        }

        /// Mutated records: the same verdict as prost, and the same value
        /// when both decode.
        #[test]
        fn mutated_records_agree_with_prost(
            b in any_batch(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
        ) {
            let mut bytes = b.encode_to_vec();
            for (at, byte, op) in edits {
                let n = bytes.len();
                match op {
                    0 if n > 0 => bytes[at.index(n)] = byte,
                    1 => bytes.insert(at.index(n + 1), byte),
                    2 if n > 0 => { bytes.remove(at.index(n)); }
                    _ => bytes.truncate(at.index(n + 1)),
                }
            }
            let mut dec = BatchDecoder::default();
            let mut reused = TelemetryBatch::default();
            // Once fresh, once over a reused value that held another batch.
            same_as_prost(&mut dec, &mut reused, &bytes);
            dec.decode(&b.encode_to_vec(), &mut reused).unwrap();
            same_as_prost(&mut dec, &mut reused, &bytes);
        }
    }
}
