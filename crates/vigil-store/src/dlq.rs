//! The dead-letter file sink: refused input ([`Rejected`]) as JSON Lines
//! under `<root>/dlq/`, one file per flushed source range, published with
//! the same tmp + fsync + rename discipline as the Parquet datasets.
//!
//! One line per record:
//!
//! ```json
//! {"reason":"late","detail":"...","partition":0,"offset":42,"tenant":"t1","agent":"a1",
//!  "seq":7,"metric":"cpu_pct","labels":"","points":[[1793664000000,12.5]],"point_count":1,
//!  "raw":null}
//! ```
//!
//! `points` holds `[timestamp_ms, value]` pairs; a non-finite value is
//! written as the string `"NaN"`, `"inf"` or `"-inf"` (JSON has no such
//! numbers). `raw` is the original record in standard base64 (with
//! padding), present for batch-level reasons so it can be replayed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use serde::ser::{SerializeSeq, SerializeTuple};
use serde::{Serialize, Serializer};
use vigil_ops::{RejectReason, Rejected};

use crate::atomic::write_atomic;
use crate::error::{Result, StoreError};
use crate::naming::SourceRange;

/// Directory of dead-letter files under the root.
pub const DLQ_DIR: &str = "dlq";

/// One JSON line, borrowing from the [`Rejected`] record.
#[derive(Serialize)]
struct Line<'a> {
    reason: &'static str,
    detail: &'a str,
    partition: i32,
    offset: i64,
    tenant: Option<&'a str>,
    agent: Option<&'a str>,
    seq: Option<u64>,
    metric: Option<&'a str>,
    labels: Option<&'a str>,
    points: Points<'a>,
    point_count: u64,
    raw: Option<Raw<'a>>,
}

struct Points<'a>(&'a [(i64, f64)]);

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

struct Raw<'a>(&'a [u8]);

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
    /// File size in bytes (0 when nothing was written).
    pub bytes: u64,
}

/// Writes refused records as JSON Lines files under `<root>/dlq/`, named
/// `dlq-<source>-p<partition:05>-<first:020>-<last:020>.jsonl` after the
/// input range they came from. Each record is encoded when pushed into one
/// reusable buffer, so a push allocates nothing beyond the buffer's growth.
#[derive(Debug)]
pub struct DlqWriter {
    dir: PathBuf,
    sync: bool,
    buf: Vec<u8>,
    counts: ReasonCounts,
}

impl DlqWriter {
    /// A writer for `<root>/dlq/`. `sync` as in
    /// [`WriterConfig::sync`](crate::WriterConfig::sync). Creates no
    /// directory until the first flush that has records.
    pub fn new(root: impl AsRef<Path>, sync: bool) -> Self {
        DlqWriter {
            dir: root.as_ref().join(DLQ_DIR),
            sync,
            buf: Vec::new(),
            counts: ReasonCounts::default(),
        }
    }

    /// The dead-letter directory, `<root>/dlq`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Buffers one refused record as a JSON line.
    pub fn push(&mut self, r: &Rejected) -> Result<()> {
        encode_dead_letter(r, &mut self.buf)?;
        self.buf.push(b'\n');
        self.counts.add(r.reason);
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
                bytes: 0,
            });
        }
        let buf = &self.buf;
        let (path, ()) = write_atomic(&self.dir, &name, self.sync, |mut file, tmp| {
            file.write_all(buf).map_err(StoreError::io("write", tmp))
        })?;
        let report = DlqFlushReport {
            path: Some(path),
            counts: self.counts,
            bytes: self.buf.len() as u64,
        };
        self.buf.clear();
        self.counts = ReasonCounts::default();
        Ok(report)
    }
}
