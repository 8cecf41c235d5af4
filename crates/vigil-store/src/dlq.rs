//! The dead-letter file sink: refused input ([`Rejected`]) as JSON Lines
//! under `<root>/dlq/`, one file per flushed source range, published with
//! the same tmp + fsync + rename discipline as the Parquet datasets.
//!
//! One line per record:
//!
//! ```json
//! {"reason":"late","detail":"...","partition":0,"offset":42,"tenant":"t1","agent":"a1",
//!  "seq":7,"metric":"cpu_pct","labels":"","points":[[1793664000000,12.5]],"point_count":1,
//!  "raw":null,"truncated":false}
//! ```
//!
//! `points` holds `[timestamp_ms, value]` pairs; a non-finite value is
//! written as the string `"NaN"`, `"inf"` or `"-inf"` (JSON has no such
//! numbers). `raw` is the original record in standard base64 (with
//! padding), present for batch-level reasons so it can be replayed.
//! `truncated` says whether the letter was cut to its budget; a truncated
//! letter has `raw: null` and four more fields (`original_bytes`,
//! `digest`, `head`, `full_path`), see [`crate::bound`].

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use serde::ser::{SerializeSeq, SerializeTuple};
use serde::{Serialize, Serializer};
use vigil_ops::{Position, RejectReason, Rejected};

use crate::atomic::write_atomic;
use crate::bound::{
    bound_letter, encode_unread, write_full_copy, LetterBudget, LetterForm, Unread,
};
use crate::error::{Result, StoreError};
use crate::location::Root;
use crate::naming::SourceRange;

/// Directory of dead-letter files under the root.
pub const DLQ_DIR: &str = "dlq";

/// One JSON line, borrowing from the [`Rejected`] record. The last four
/// fields are written only on truncated letters ([`crate::bound`]).
#[derive(Serialize)]
pub(crate) struct Line<'a> {
    pub(crate) reason: &'static str,
    pub(crate) detail: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) tenant: Option<&'a str>,
    pub(crate) agent: Option<&'a str>,
    pub(crate) seq: Option<u64>,
    pub(crate) metric: Option<&'a str>,
    pub(crate) labels: Option<&'a str>,
    pub(crate) points: Points<'a>,
    pub(crate) point_count: u64,
    pub(crate) raw: Option<Raw<'a>>,
    pub(crate) truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) original_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) head: Option<Raw<'a>>,
    /// `Some(None)` is written as `null` (truncated, no full copy kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) full_path: Option<Option<&'a str>>,
}

pub(crate) struct Points<'a>(pub(crate) &'a [(i64, f64)]);

impl Serialize for Points<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (ts, v) in self.0 {
            seq.serialize_element(&Point(*ts, *v))?;
        }
        seq.end()
    }
}

struct Point(i64, f64);

impl Serialize for Point {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.0)?;
        if self.1.is_finite() {
            t.serialize_element(&self.1)?;
        } else if self.1.is_nan() {
            t.serialize_element("NaN")?;
        } else if self.1 > 0.0 {
            t.serialize_element("inf")?;
        } else {
            t.serialize_element("-inf")?;
        }
        t.end()
    }
}

pub(crate) struct Raw<'a>(pub(crate) &'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Base64Display::new(self.0, &STANDARD))
    }
}

/// Appends one refused record's JSON object (a dead-letter line without
/// its newline) to `out`. On error `out` is left as it was.
pub fn encode_dead_letter(r: &Rejected, out: &mut Vec<u8>) -> Result<()> {
    let line = Line {
        reason: r.reason.as_str(),
        detail: &r.detail,
        partition: r.position.partition,
        offset: r.position.offset,
        tenant: r.tenant.as_deref(),
        agent: r.agent.as_deref(),
        seq: r.seq,
        metric: r.metric.as_deref(),
        labels: r.labels.as_deref(),
        points: Points(&r.points),
        point_count: r.point_count,
        raw: r.raw.as_deref().map(Raw),
        truncated: false,
        original_bytes: None,
        digest: None,
        head: None,
        full_path: None,
    };
    let mark = out.len();
    if let Err(source) = serde_json::to_writer(&mut *out, &line) {
        out.truncate(mark);
        return Err(StoreError::Json {
            partition: r.position.partition,
            offset: r.position.offset,
            source,
        });
    }
    Ok(())
}

/// Records per reason, indexed like [`RejectReason::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReasonCounts([u64; RejectReason::ALL.len()]);

impl ReasonCounts {
    /// Count for one reason.
    pub fn get(&self, reason: RejectReason) -> u64 {
        self.0[reason.index()]
    }

    /// Sum over every reason.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The non-zero counts, in [`RejectReason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (RejectReason, u64)> + '_ {
        RejectReason::ALL
            .iter()
            .map(|r| (*r, self.0[r.index()]))
            .filter(|(_, n)| *n > 0)
    }

    fn add(&mut self, reason: RejectReason) {
        self.0[reason.index()] += 1;
    }
}

/// What a [`DlqWriter::flush`] published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqFlushReport {
    /// The file written, or `None` when nothing was buffered.
    pub path: Option<PathBuf>,
    /// Records written, per reason.
    pub counts: ReasonCounts,
    /// Of those, letters written in the truncated form.
    pub truncated: u64,
    /// File size in bytes (0 when nothing was written).
    pub bytes: u64,
}

/// Writes refused records as JSON Lines files under `<root>/dlq/`, named
/// `dlq-<source>-p<partition:05>-<first:020>-<last:020>.jsonl` after the
/// input range they came from. Each record is bounded
/// ([`bound_letter`], [`LetterForm::Json`]) and encoded when pushed into
/// one reusable buffer, so a push allocates nothing beyond the buffer's
/// growth and one refused record adds at most the budget to it; the full
/// content of a truncated letter is written to `dlq/full/` at once (unless
/// the caller keeps the input, [`DlqWriter::keep_full`]). Callers flush
/// when [`DlqWriter::buffered_bytes`] passes their threshold.
#[derive(Debug)]
pub struct DlqWriter {
    root: Root,
    dir: PathBuf,
    source: String,
    sync: bool,
    budget: LetterBudget,
    keep_full: bool,
    buf: Vec<u8>,
    counts: ReasonCounts,
    truncated: u64,
    /// Position of the last record pushed and how many of its letters
    /// were: the rank that names a full copy.
    last: Option<(Position, u32)>,
}

impl DlqWriter {
    /// A writer for `<root>/dlq/` of the input `source` (the topic or the
    /// replay's name, used in the names of full copies), with the default
    /// [`LetterBudget`] and full copies kept. `sync` as in
    /// [`WriterConfig::sync`](crate::WriterConfig::sync). Creates no
    /// directory until the first flush that has records.
    pub fn new(root: impl AsRef<Path>, source: &str, sync: bool) -> Self {
        Self::at(&Root::local(root.as_ref()), source, sync)
    }

    /// [`DlqWriter::new`] under `root`, a local directory or an object
    /// store (each file one PUT of its final name).
    pub fn at(root: &Root, source: &str, sync: bool) -> Self {
        DlqWriter {
            dir: root.display_path(DLQ_DIR),
            root: root.clone(),
            source: source.to_string(),
            sync,
            budget: LetterBudget::default(),
            keep_full: true,
            buf: Vec::new(),
            counts: ReasonCounts::default(),
            truncated: 0,
            last: None,
        }
    }

    /// Bounds each line to `budget`.
    pub fn with_budget(mut self, budget: LetterBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Whether truncated letters get a full copy under `dlq/full/`
    /// (default true). False when the input itself is kept (a replay of a
    /// file): the letter's `full_path` is then null and its offset finds
    /// the record in the input.
    pub fn keep_full(mut self, keep: bool) -> Self {
        self.keep_full = keep;
        self
    }

    /// [`DlqWriter::keep_full`] on a writer in place.
    pub fn set_keep_full(&mut self, keep: bool) {
        self.keep_full = keep;
    }

    /// The dead-letter directory, `<root>/dlq`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Buffers one refused record as a bounded JSON line, writing its full
    /// copy first when it is truncated. On error nothing is buffered.
    pub fn push(&mut self, r: &Rejected) -> Result<()> {
        let ordinal = match &mut self.last {
            Some((pos, n)) if *pos == r.position => {
                *n += 1;
                *n
            }
            last => {
                *last = Some((r.position, 0));
                0
            }
        };
        let mark = self.buf.len();
        let b = bound_letter(
            r,
            &self.source,
            ordinal,
            LetterForm::Json,
            self.keep_full,
            self.budget,
            &mut self.buf,
        )?;
        if let Some(full) = &b.full {
            if let Err(e) = write_full_copy(&self.root, full, self.sync) {
                self.buf.truncate(mark);
                return Err(e);
            }
        }
        self.buf.push(b'\n');
        self.counts.add(r.reason);
        self.truncated += u64::from(b.truncated);
        Ok(())
    }

    /// Buffers the truncated letter of a record the input reader skipped.
    pub fn push_unread(&mut self, u: &Unread<'_>) -> Result<()> {
        encode_unread(u, self.budget, &mut self.buf)?;
        self.buf.push(b'\n');
        self.counts.add(u.reason);
        self.truncated += 1;
        Ok(())
    }

    /// Records buffered.
    pub fn len(&self) -> u64 {
        self.counts.total()
    }

    /// True when no record is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes buffered (the next file's size).
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Publishes the buffered records as the dead letters of `range`
    /// (atomic rename; a replay of the same range replaces the file). With
    /// nothing buffered it writes nothing. On error the records stay
    /// buffered.
    pub fn flush(&mut self, range: SourceRange<'_>) -> Result<DlqFlushReport> {
        let name = range.file_name("dlq", "jsonl")?;
        if self.is_empty() {
            return Ok(DlqFlushReport {
                path: None,
                counts: ReasonCounts::default(),
                truncated: 0,
                bytes: 0,
            });
        }
        let buf = &self.buf;
        let path = match self.root.as_object() {
            None => {
                write_atomic(&self.dir, &name, self.sync, |mut file, tmp| {
                    file.write_all(buf).map_err(StoreError::io("write", tmp))
                })?
                .0
            }
            Some(_) => self
                .root
                .write_file(&format!("{DLQ_DIR}/{name}"), buf, self.sync)?,
        };
        let report = DlqFlushReport {
            path: Some(path),
            counts: self.counts,
            truncated: self.truncated,
            bytes: self.buf.len() as u64,
        };
        self.buf.clear();
        // A burst of large letters must not keep its capacity for the
        // rest of the run.
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
        self.counts = ReasonCounts::default();
        self.truncated = 0;
        Ok(report)
    }
}

/// Buffer capacity a [`DlqWriter`] keeps across flushes.
const KEEP_CAPACITY: usize = 4 << 20;
