//! The dead-letter size policy: one function, [`bound_letter`], turns a
//! refused record ([`Rejected`]) into a dead letter whose encoded size is
//! at most a [`LetterBudget`], for every sink (the DLQ topic, the `dlq/`
//! files of the worker and of replays). No single refused record can then
//! make a sink fail (a Kafka message over `message.max.bytes`) or grow a
//! buffer without bound.
//!
//! A dead letter that fits is unchanged: the original record (batch-level
//! reasons, [`LetterForm::Record`]) or the JSON object of a `dlq/` line.
//! One that does not fit becomes a *truncated* JSON letter that keeps:
//!
//! - the reason, the detail, the source coordinates (partition, offset)
//!   and what identifies the sender (tenant, agent, seq, metric, labels),
//!   each string cut to [`FIELD_BYTES`];
//! - `original_bytes` and `digest` ([`DIGEST_ALGORITHM`] of the full
//!   content: the raw record for batch-level reasons, else the full JSON
//!   letter);
//! - `head`: the first bytes of the raw record (at most [`HEAD_BYTES`],
//!   base64), or for point-level reasons the first refused points that
//!   fit (`point_count` still counts all of them);
//! - `full_path`: where the full content is kept, relative to the data
//!   root: `dlq/full/full-<source>-p<partition:05>-<offset:020>-<n:04>.<pb|json>`
//!   (`n` numbers the dead letters of one record), or `null` when the
//!   caller keeps no copy because the input itself is kept (`vigil ingest`
//!   of a file: the record is its `offset`-th record).
//!
//! The full copy's name depends only on the source, the record's position
//! and the dead letter's rank in it, so processing the record again (a
//! restart, a replay) rewrites the same file instead of adding one.
//!
//! The size bound is by construction: the letter without its variable
//! parts is encoded first; the head takes at most the room left (base64
//! is exactly 4 bytes per 3), and each point at most [`POINT_JSON_MAX`]
//! bytes. [`LetterBudget::new`] refuses budgets below
//! [`MIN_LETTER_BYTES`], which the fixed part never exceeds (five capped
//! strings of at most 6 × [`FIELD_BYTES`] escaped bytes each, the path,
//! the digest and numbers).

use std::borrow::Cow;
use std::path::PathBuf;

use vigil_ops::{Position, RejectReason, Rejected};

use crate::dlq::{encode_dead_letter, Line, Points, Raw, DLQ_DIR};
use crate::error::{Result, StoreError};
use crate::location::Root;
use crate::naming::sanitize_source;

/// The digest of a truncated letter's full content: xxh3 with 128-bit
/// output, written `xxh3-128:<32 lowercase hex digits>`. An identity
/// check (find the full copy, spot the same record twice), not a
/// cryptographic one.
pub const DIGEST_ALGORITHM: &str = "xxh3-128";
/// Most bytes of the raw record a truncated letter keeps (`head`).
pub const HEAD_BYTES: usize = 4096;
/// Most bytes of each string field (detail, tenant, agent, metric,
/// labels, full path) in a truncated letter, cut at a character boundary.
pub const FIELD_BYTES: usize = 512;
/// Smallest budget [`LetterBudget::new`] accepts: the truncated letter's
/// fixed part always fits in it.
pub const MIN_LETTER_BYTES: usize = 32 * 1024;
/// Default budget of one `dlq/` line (`storage.dlq_max_record_bytes`):
/// refused batches of usual sizes stay whole (and replayable from the
/// line), bigger ones are truncated.
pub const DEFAULT_LINE_BYTES: usize = 64 * 1024;
/// Most bytes one point takes in a JSON letter, comma included:
/// `[-9223372036854775808,-2.2250738585072014e-308],`.
pub const POINT_JSON_MAX: usize = 48;
/// Directory of full copies under `dlq/`.
pub const FULL_DIR: &str = "full";

/// The most bytes one encoded dead letter may take. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LetterBudget {
    max_bytes: usize,
}

impl LetterBudget {
    /// A budget of `max_bytes` per dead letter; at least
    /// [`MIN_LETTER_BYTES`].
    pub fn new(max_bytes: usize) -> Result<LetterBudget> {
        if max_bytes < MIN_LETTER_BYTES {
            return Err(StoreError::Config {
                field: "dead-letter budget",
                problem: format!(
                    "{max_bytes} bytes is below the minimum of {MIN_LETTER_BYTES} bytes a truncated dead letter needs"
                ),
            });
        }
        Ok(LetterBudget { max_bytes })
    }

    /// The limit, in bytes.
    pub fn max_bytes(self) -> usize {
        self.max_bytes
    }
}

impl Default for LetterBudget {
    fn default() -> Self {
        LetterBudget {
            max_bytes: DEFAULT_LINE_BYTES,
        }
    }
}

/// How a dead letter that fits is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LetterForm {
    /// A refused record that fits is its original bytes (the DLQ topic's
    /// `application/x-protobuf` value); other letters are JSON.
    Record,
    /// Always a JSON object (a line of the `dlq/` files, the DLQ topic's
    /// `application/json` value).
    Json,
}

/// What [`bound_letter`] produced.
#[derive(Debug)]
pub struct Bounded<'a> {
    /// True: the letter is the record's raw bytes ([`Rejected::raw`]) and
    /// nothing was written to the output buffer. False: the buffer holds
    /// the JSON letter.
    pub is_record: bool,
    /// The letter is the truncated form (see the module docs).
    pub truncated: bool,
    /// The full content to keep, when truncated and the caller asked for
    /// a copy: write it with [`write_full_copy`] before the letter is
    /// considered delivered.
    pub full: Option<FullCopy<'a>>,
}

/// The full content of a truncated letter and where it goes.
#[derive(Debug)]
pub struct FullCopy<'a> {
    /// Path relative to the data root (`dlq/full/...`), as the letter's
    /// `full_path` names it.
    pub rel_path: String,
    /// The raw record, or the full JSON letter.
    pub bytes: Cow<'a, [u8]>,
}

/// `xxh3-128:<hex>` of `bytes` ([`DIGEST_ALGORITHM`]).
pub fn digest(bytes: &[u8]) -> String {
    format_digest(xxhash_rust::xxh3::xxh3_128(bytes))
}

/// `xxh3-128:<hex>` of an xxh3-128 value computed elsewhere (a streaming
/// hash of a record that was read through).
pub fn format_digest(xxh3_128: u128) -> String {
    format!("{DIGEST_ALGORITHM}:{xxh3_128:032x}")
}

/// The file name of a full copy (see the module docs).
pub fn full_copy_name(source: &str, position: Position, ordinal: u32, ext: &str) -> String {
    format!(
        "full-{}-p{:05}-{:020}-{ordinal:04}.{ext}",
        sanitize_source(source),
        position.partition,
        position.offset.max(0)
    )
}

/// Writes a full copy under `root` (tmp + fsync when `sync` + rename:
/// a rewrite replaces it whole). Returns its path.
///
/// `root` is a local directory or an object store ([`Root`]).
pub fn write_full_copy(root: impl Into<Root>, copy: &FullCopy<'_>, sync: bool) -> Result<PathBuf> {
    root.into().write_file(&copy.rel_path, &copy.bytes, sync)
}

/// Bounds one dead letter of `r` to `budget` (see the module docs).
/// `source` (the input topic or file) and `ordinal` (the rank of this
/// dead letter among those of the same record, from 0) name the full
/// copy; with `keep_full` false none is made and the letter's
/// `full_path` is null. A JSON letter is appended to `out`; on error `out`
/// is left as it was.
pub fn bound_letter<'a>(
    r: &'a Rejected,
    source: &str,
    ordinal: u32,
    form: LetterForm,
    keep_full: bool,
    budget: LetterBudget,
    out: &mut Vec<u8>,
) -> Result<Bounded<'a>> {
    let max = budget.max_bytes;
    let mark = out.len();
    if let Some(raw) = r.raw.as_deref() {
        match form {
            LetterForm::Record if raw.len() <= max => {
                return Ok(Bounded {
                    is_record: true,
                    truncated: false,
                    full: None,
                });
            }
            LetterForm::Json if base64_len(raw.len()) < max => {
                encode_dead_letter(r, out)?;
                if out.len() - mark <= max {
                    return Ok(whole());
                }
                out.truncate(mark);
            }
            _ => {}
        }
        let rel = keep_full.then(|| full_rel_path(source, r.position, ordinal, "pb"));
        let d = digest(raw);
        encode_truncated(
            &Parts::of(r, raw.len() as u64, &d, Some(raw), &[], rel.as_deref()),
            budget,
            out,
        )?;
        return Ok(Bounded {
            is_record: false,
            truncated: true,
            full: rel.map(|rel_path| FullCopy {
                rel_path,
                bytes: Cow::Borrowed(raw),
            }),
        });
    }
    encode_dead_letter(r, out)?;
    if out.len() - mark <= max {
        return Ok(whole());
    }
    let full = out.split_off(mark);
    let rel = keep_full.then(|| full_rel_path(source, r.position, ordinal, "json"));
    let d = digest(&full);
    encode_truncated(
        &Parts::of(r, full.len() as u64, &d, None, &r.points, rel.as_deref()),
        budget,
        out,
    )?;
    Ok(Bounded {
        is_record: false,
        truncated: true,
        full: rel.map(|rel_path| FullCopy {
            rel_path,
            bytes: Cow::Owned(full),
        }),
    })
}

fn whole() -> Bounded<'static> {
    Bounded {
        is_record: false,
        truncated: false,
        full: None,
    }
}

fn full_rel_path(source: &str, position: Position, ordinal: u32, ext: &str) -> String {
    format!(
        "{DLQ_DIR}/{FULL_DIR}/{}",
        full_copy_name(source, position, ordinal, ext)
    )
}

/// Directory of undelivered dead letters under `dlq/`.
pub const UNDELIVERED_DIR: &str = "undelivered";

/// A dead letter the DLQ topic did not take, as the worker tried to send
/// it: kept as one JSON file by [`write_undelivered`].
#[derive(Debug, Clone, Copy)]
pub struct UndeliveredLetter<'a> {
    /// The input topic (names the file).
    pub source: &'a str,
    /// The refused record's position (names the file).
    pub position: Position,
    /// The DLQ topic.
    pub topic: &'a str,
    /// The message key.
    pub key: Option<&'a [u8]>,
    /// The message headers.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The message value (a bounded dead letter).
    pub value: &'a [u8],
    /// Why it was not delivered.
    pub error: &'a str,
}

#[derive(serde::Serialize)]
struct UndeliveredJson<'a> {
    topic: &'a str,
    key: Option<Raw<'a>>,
    headers: std::collections::BTreeMap<&'a str, Cow<'a, str>>,
    value: Raw<'a>,
    error: &'a str,
}

/// Writes an undelivered dead letter to
/// `dlq/undelivered/undelivered-<source>-p<partition:05>-<offset:020>-<xxh3-64 of the value:016x>.json`:
/// `{"topic", "key" (base64 or null), "headers" {name: value}, "value"
/// (base64), "error"}`. The name depends on the letter only, so a
/// reprocessed record rewrites the same file. Returns its path.
///
/// `root` is a local directory or an object store ([`Root`]).
pub fn write_undelivered(
    root: impl Into<Root>,
    sync: bool,
    u: &UndeliveredLetter<'_>,
) -> Result<PathBuf> {
    let name = format!(
        "undelivered-{}-p{:05}-{:020}-{:016x}.json",
        sanitize_source(u.source),
        u.position.partition,
        u.position.offset.max(0),
        xxhash_rust::xxh3::xxh3_64(u.value)
    );
    let doc = UndeliveredJson {
        topic: u.topic,
        key: u.key.map(Raw),
        headers: u
            .headers
            .iter()
            .map(|(k, v)| (*k, String::from_utf8_lossy(v)))
            .collect(),
        value: Raw(u.value),
        error: u.error,
    };
    let bytes = serde_json::to_vec(&doc).map_err(|source| StoreError::Json {
        partition: u.position.partition,
        offset: u.position.offset,
        source,
    })?;
    root.into()
        .write_file(&format!("{DLQ_DIR}/{UNDELIVERED_DIR}/{name}"), &bytes, sync)
}

/// A record the input reader could not hand over whole (its length
/// prefix is above the reader's limit, or the input ends inside it): the
/// reader skipped it and kept its first bytes and digest.
#[derive(Debug, Clone, Copy)]
pub struct Unread<'a> {
    /// Why (`too_large` for an over-long record, `decode` for a cut one).
    pub reason: RejectReason,
    /// What happened, with the byte offset in the input.
    pub detail: &'a str,
    /// Position (offset = record index in the input).
    pub position: Position,
    /// The first bytes of the record (the letter keeps at most
    /// [`HEAD_BYTES`]).
    pub head: &'a [u8],
    /// Bytes of the record that were read (all of it, unless the input
    /// ends inside it; the detail says what its prefix announced).
    pub original_bytes: u64,
    /// [`digest`] of those bytes.
    pub digest: &'a str,
}

/// Appends the truncated letter of an [`Unread`] record to `out` (its
/// `full_path` is null: the input holds it).
pub fn encode_unread(u: &Unread<'_>, budget: LetterBudget, out: &mut Vec<u8>) -> Result<()> {
    let parts = Parts {
        reason: u.reason,
        detail: u.detail,
        position: u.position,
        tenant: None,
        agent: None,
        seq: None,
        metric: None,
        labels: None,
        point_count: 0,
        points: &[],
        original_bytes: u.original_bytes,
        digest: u.digest,
        head: Some(u.head),
        full_path: None,
    };
    encode_truncated(&parts, budget, out)
}

/// The fields of a truncated letter.
struct Parts<'a> {
    reason: RejectReason,
    detail: &'a str,
    position: Position,
    tenant: Option<&'a str>,
    agent: Option<&'a str>,
    seq: Option<u64>,
    metric: Option<&'a str>,
    labels: Option<&'a str>,
    point_count: u64,
    points: &'a [(i64, f64)],
    original_bytes: u64,
    digest: &'a str,
    head: Option<&'a [u8]>,
    full_path: Option<&'a str>,
}

impl<'a> Parts<'a> {
    fn of(
        r: &'a Rejected,
        original_bytes: u64,
        digest: &'a str,
        head: Option<&'a [u8]>,
        points: &'a [(i64, f64)],
        full_path: Option<&'a str>,
    ) -> Parts<'a> {
        Parts {
            reason: r.reason,
            detail: &r.detail,
            position: r.position,
            tenant: r.tenant.as_deref(),
            agent: r.agent.as_deref(),
            seq: r.seq,
            metric: r.metric.as_deref(),
            labels: r.labels.as_deref(),
            point_count: r.point_count,
            points,
            original_bytes,
            digest,
            head,
            full_path,
        }
    }

    fn line(&self, head: Option<&'a [u8]>, points: &'a [(i64, f64)]) -> Line<'a> {
        Line {
            reason: self.reason.as_str(),
            detail: cap(self.detail),
            partition: self.position.partition,
            offset: self.position.offset,
            tenant: self.tenant.map(cap),
            agent: self.agent.map(cap),
            seq: self.seq,
            metric: self.metric.map(cap),
            labels: self.labels.map(cap),
            points: Points(points),
            point_count: self.point_count,
            raw: None,
            truncated: true,
            original_bytes: Some(self.original_bytes),
            digest: Some(self.digest),
            head: head.map(Raw),
            full_path: Some(self.full_path.map(cap)),
        }
    }
}

/// `s` cut to at most [`FIELD_BYTES`] bytes, at a character boundary.
fn cap(s: &str) -> &str {
    if s.len() <= FIELD_BYTES {
        return s;
    }
    let mut end = FIELD_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Length of the standard base64 (padded) encoding of `n` bytes.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3).saturating_mul(4)
}

fn write_line(line: &Line<'_>, position: Position, out: &mut Vec<u8>) -> Result<()> {
    serde_json::to_writer(&mut *out, line).map_err(|source| StoreError::Json {
        partition: position.partition,
        offset: position.offset,
        source,
    })
}

fn encode_truncated(p: &Parts<'_>, budget: LetterBudget, out: &mut Vec<u8>) -> Result<()> {
    let max = budget.max_bytes;
    let mark = out.len();
    let result = (|| {
        // The fixed part: every field, an empty head, no points.
        write_line(&p.line(p.head.map(|_| &[][..]), &[]), p.position, out)?;
        let room = max.saturating_sub(out.len() - mark);
        out.truncate(mark);
        let head_n = p
            .head
            .map_or(0, |h| h.len().min(HEAD_BYTES).min(room / 4 * 3));
        let room = room - base64_len(head_n);
        let points_n = p.points.len().min(room / POINT_JSON_MAX);
        write_line(
            &p.line(p.head.map(|h| &h[..head_n]), &p.points[..points_n]),
            p.position,
            out,
        )?;
        if out.len() - mark > max {
            // Unreachable for budgets LetterBudget::new accepts; kept so
            // that the bound holds even if the arithmetic above were wrong.
            out.truncate(mark);
            let bare = Parts {
                detail: "",
                tenant: None,
                agent: None,
                metric: None,
                labels: None,
                full_path: None,
                points: &[],
                head: None,
                ..*p
            };
            write_line(&bare.line(None, &[]), p.position, out)?;
        }
        Ok(())
    })();
    if result.is_err() {
        out.truncate(mark);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_refusal(raw_len: usize) -> Rejected {
        Rejected {
            reason: RejectReason::TooManySeries,
            detail: "10001 series, limit 10000".into(),
            position: Position {
                partition: 3,
                offset: 41,
            },
            tenant: Some("acme".into()),
            agent: Some("a1".into()),
            seq: Some(9),
            metric: None,
            labels: None,
            points: Vec::new(),
            point_count: 12,
            raw: Some((0..raw_len).map(|i| (i % 251) as u8).collect()),
        }
    }

    fn point_refusal(points: usize, detail_len: usize) -> Rejected {
        Rejected {
            reason: RejectReason::NonFinite,
            detail: "d".repeat(detail_len),
            position: Position {
                partition: 1,
                offset: 7,
            },
            tenant: Some("acme".into()),
            agent: Some("a1".into()),
            seq: Some(3),
            metric: Some("cpu_pct".into()),
            labels: Some("core=all".into()),
            points: (0..points).map(|i| (i as i64, f64::NAN)).collect(),
            point_count: points as u64,
            raw: None,
        }
    }

    fn budget() -> LetterBudget {
        LetterBudget::new(MIN_LETTER_BYTES).unwrap()
    }

    fn json(out: &[u8]) -> serde_json::Value {
        serde_json::from_slice(out).unwrap()
    }

    #[test]
    fn budgets_below_the_minimum_are_refused() {
        assert!(LetterBudget::new(MIN_LETTER_BYTES - 1).is_err());
        assert_eq!(
            LetterBudget::new(MIN_LETTER_BYTES).unwrap().max_bytes(),
            MIN_LETTER_BYTES
        );
        assert_eq!(LetterBudget::default().max_bytes(), DEFAULT_LINE_BYTES);
    }

    #[test]
    fn a_record_exactly_at_the_budget_is_sent_whole_one_byte_more_is_truncated() {
        let b = budget();
        let max = b.max_bytes();
        for len in [max - 1, max] {
            let r = batch_refusal(len);
            let mut out = Vec::new();
            let got = bound_letter(&r, "t", 0, LetterForm::Record, true, b, &mut out).unwrap();
            assert!(
                got.is_record && !got.truncated && got.full.is_none(),
                "{len}"
            );
            assert!(out.is_empty());
        }
        let r = batch_refusal(max + 1);
        let mut out = Vec::new();
        let got = bound_letter(&r, "rmm.t", 2, LetterForm::Record, true, b, &mut out).unwrap();
        assert!(!got.is_record && got.truncated);
        assert!(out.len() <= max, "{} > {max}", out.len());
        let v = json(&out);
        assert_eq!(v["reason"], "too_many_series");
        assert_eq!(v["partition"], 3);
        assert_eq!(v["offset"], 41);
        assert_eq!(v["agent"], "a1");
        assert_eq!(v["truncated"], true);
        assert_eq!(v["raw"], serde_json::Value::Null);
        assert_eq!(v["original_bytes"], max + 1);
        let raw = r.raw.as_deref().unwrap();
        assert_eq!(v["digest"], digest(raw));
        let head = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(v["head"].as_str().unwrap())
                .unwrap()
        };
        assert_eq!(head, raw[..HEAD_BYTES]);
        let rel = "dlq/full/full-rmm.t-p00003-00000000000000000041-0002.pb";
        assert_eq!(v["full_path"], rel);
        let full = got.full.unwrap();
        assert_eq!(full.rel_path, rel);
        assert_eq!(&*full.bytes, raw);
    }

    /// A point-level refusal whose whole JSON line is `len` bytes.
    fn point_line_of(len: usize) -> Rejected {
        let mut out = Vec::new();
        encode_dead_letter(&point_refusal(10, 0), &mut out).unwrap();
        point_refusal(10, len - out.len())
    }

    #[test]
    fn a_json_letter_exactly_at_the_budget_is_whole_one_byte_more_is_truncated() {
        let b = budget();
        let max = b.max_bytes();
        for len in [max - 1, max] {
            let r = point_line_of(len);
            let mut out = Vec::new();
            let got = bound_letter(&r, "t", 0, LetterForm::Record, true, b, &mut out).unwrap();
            assert_eq!(out.len(), len);
            assert!(!got.is_record && !got.truncated && got.full.is_none());
            assert_eq!(json(&out)["truncated"], false);
        }
        let r = point_line_of(max + 1);
        let mut out = Vec::new();
        let got = bound_letter(&r, "t", 0, LetterForm::Json, true, b, &mut out).unwrap();
        assert!(got.truncated && out.len() <= max);
        let v = json(&out);
        assert_eq!(v["detail"].as_str().unwrap().len(), FIELD_BYTES);
        assert_eq!(v["point_count"], 10);
        assert_eq!(v["points"].as_array().unwrap().len(), 10);
        assert_eq!(v["original_bytes"], max + 1);
        let full = got.full.unwrap();
        assert_eq!(full.bytes.len(), max + 1);
        assert_eq!(v["digest"], digest(&full.bytes));
        assert!(full.rel_path.ends_with("-0000.json"));
        assert_eq!(json(&full.bytes)["detail"], r.detail.as_str());
    }

    #[test]
    fn a_raw_record_in_a_json_line_is_whole_until_its_line_passes_the_budget() {
        let b = budget();
        let max = b.max_bytes();
        // The line's size over its raw record's base64.
        let mut probe = Vec::new();
        encode_dead_letter(&batch_refusal(3), &mut probe).unwrap();
        let fixed = probe.len() - 4;
        // The largest raw record (a multiple of 3) whose line fits.
        let fits = (max - fixed) / 4 * 3;
        for (len, truncated) in [(fits, false), (fits + 3, true)] {
            let r = batch_refusal(len);
            let mut out = Vec::new();
            let got = bound_letter(&r, "t", 0, LetterForm::Json, false, b, &mut out).unwrap();
            assert_eq!(got.truncated, truncated, "{len}");
            assert!(out.len() <= max);
            let v = json(&out);
            if truncated {
                assert_eq!(v["full_path"], serde_json::Value::Null);
                assert!(got.full.is_none());
            } else {
                assert_eq!(v["truncated"], false);
                assert!(v.get("full_path").is_none());
            }
        }
    }

    #[test]
    fn tens_of_thousands_of_refused_points_keep_the_first_that_fit() {
        let b = LetterBudget::new(1_000_000).unwrap();
        let mut r = point_refusal(60_000, 20);
        // Worst-case numbers: the longest timestamps and values.
        for p in &mut r.points {
            *p = (i64::MIN, -2.225_073_858_507_201_4e-308);
        }
        let mut out = Vec::new();
        let got = bound_letter(&r, "t", 0, LetterForm::Record, true, b, &mut out).unwrap();
        assert!(got.truncated);
        assert!(out.len() <= 1_000_000, "{}", out.len());
        let v = json(&out);
        let kept = v["points"].as_array().unwrap().len();
        assert!(kept > 19_000 && kept < 60_000, "{kept}");
        assert_eq!(v["point_count"], 60_000);
        assert_eq!(
            serde_json::to_string(&v["points"][0]).unwrap().len() + 1,
            POINT_JSON_MAX
        );
    }

    #[test]
    fn huge_identity_fields_are_capped() {
        // An invalid agent id the size of the record, full of characters
        // JSON escapes six-fold.
        let mut r = batch_refusal(200_000);
        r.reason = RejectReason::InvalidId;
        r.agent = Some("\u{1}".repeat(100_000));
        r.tenant = Some("\u{1}".repeat(100_000));
        r.detail = "\u{1}".repeat(100_000);
        let b = budget();
        let mut out = Vec::new();
        let got = bound_letter(&r, "t", 0, LetterForm::Record, true, b, &mut out).unwrap();
        assert!(got.truncated && out.len() <= b.max_bytes(), "{}", out.len());
        let v = json(&out);
        assert_eq!(v["agent"].as_str().unwrap().len(), FIELD_BYTES);
        assert!(!v["head"].as_str().unwrap().is_empty());
    }

    #[test]
    fn caps_cut_at_character_boundaries() {
        let s = format!("{}é", "x".repeat(FIELD_BYTES - 1));
        assert_eq!(cap(&s).len(), FIELD_BYTES - 1);
        assert_eq!(cap("short"), "short");
    }

    #[test]
    fn unread_records_keep_their_head_and_digest() {
        let head = vec![7u8; 10_000];
        let d = digest(&head);
        let u = Unread {
            reason: RejectReason::TooLarge,
            detail: "record 3 at byte 99 announces 70000000 bytes",
            position: Position {
                partition: 0,
                offset: 3,
            },
            head: &head,
            original_bytes: 70_000_000,
            digest: &d,
        };
        let mut out = Vec::new();
        encode_unread(&u, budget(), &mut out).unwrap();
        let v = json(&out);
        assert_eq!(v["reason"], "too_large");
        assert_eq!(v["offset"], 3);
        assert_eq!(v["original_bytes"], 70_000_000);
        assert_eq!(v["head"].as_str().unwrap().len(), base64_len(HEAD_BYTES));
        assert_eq!(v["full_path"], serde_json::Value::Null);
    }

    #[test]
    fn undelivered_letters_are_kept_whole_under_a_deterministic_name() {
        let dir = tempfile::tempdir().unwrap();
        let u = UndeliveredLetter {
            source: "rmm.t",
            position: Position {
                partition: 2,
                offset: 9,
            },
            topic: "rmm.dlq",
            key: Some(b"a1"),
            headers: &[("vigil.reason", b"late")],
            value: b"{\"reason\":\"late\"}",
            error: "Message production error: TopicAuthorizationFailed",
        };
        let p = write_undelivered(dir.path(), false, &u).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("undelivered-rmm.t-p00002-00000000000000000009-"),
            "{name}"
        );
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["headers"]["vigil.reason"], "late");
        assert_eq!(v["key"], "YTE=");
        assert_eq!(v["topic"], "rmm.dlq");
        assert_eq!(write_undelivered(dir.path(), false, &u).unwrap(), p);
    }

    #[test]
    fn full_copies_are_written_atomically_under_dlq_full() {
        let dir = tempfile::tempdir().unwrap();
        let r = batch_refusal(MIN_LETTER_BYTES + 1);
        let mut out = Vec::new();
        let got =
            bound_letter(&r, "rmm.t", 0, LetterForm::Record, true, budget(), &mut out).unwrap();
        let full = got.full.unwrap();
        let p = write_full_copy(dir.path(), &full, false).unwrap();
        assert_eq!(p, dir.path().join(&full.rel_path));
        assert_eq!(std::fs::read(&p).unwrap(), r.raw.clone().unwrap());
        // Again: the same file, replaced.
        write_full_copy(dir.path(), &full, false).unwrap();
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
