//! Compaction (`vigil compact`): merges the small files of one source
//! partition in one `date=` directory into large ones, without changing
//! any query result, while workers write.
//!
//! ## Protocol
//!
//! A compacted file is an ordinary dataset file: it is named after the
//! union of its inputs' input ranges,
//! `part-<source>-p<partition>-<first of the first input>-<last of the last input>.parquet`,
//! so the machinery that finds a source's files by name (a replay's
//! [`crate::remove_source_files`], a worker's sweep
//! [`crate::remove_partition_files_from`]) finds it too. Inputs are a run of
//! consecutive files of one (source, partition) in offset order, so the
//! output's range covers exactly the inputs and no other file.
//!
//! 1. The output is published under `<name>`, never over an existing
//!    file: in a directory written as `.tmp-<name>.partial` (merged in
//!    sort-key order through the writer's own encoder), fsynced, hard
//!    linked to `<name>`, the directory fsynced; on an object store
//!    encoded in memory and sent with one conditional PUT
//!    (`If-None-Match: *`).
//! 2. The inputs are checked to be the files that were read (same size,
//!    and modification time and inode, or entity tag); if one changed or
//!    went (a replay of the source started meanwhile), the output is
//!    removed instead.
//! 3. The inputs are removed, in name order, the directory fsynced.
//!
//! The same code runs both: the `tree` module does each step on a
//! directory or an object store, and step 0, the root's lock, is an
//! advisory `flock` or a lease object with an expiry.
//!
//! Between 1 and 3 (and after a crash there) a directory holds the output
//! and some of its inputs. The **reader rule** [`superseded`] makes that
//! harmless: a file whose range lies inside the range of another file of
//! the same source partition in the same directory is not read. Vigil's
//! reader (`vigil-query`) applies it; the next compaction deletes such
//! files when the covering file is a compacted one.
//!
//! ## What is compacted
//!
//! Only files a restarted worker would never sweep: a worker's sweep
//! removes the files of its partition whose range starts at or after its
//! checkpoint's offset, so a file is eligible only when its last offset is
//! below that offset ([`Commit::Before`]); an output therefore never
//! straddles a checkpoint, and a sweep removes none or all of it. A source
//! partition with no checkpoint (a replay's source, `vigil ingest`) has its
//! files compacted once they are [`CompactOptions::settle`] old. Without
//! an explicit date, only dates whose day ended at least `settle` ago are
//! looked at. Files at least [`CompactOptions::target_file_bytes`] large
//! are left as they are and break runs.
//!
//! Tick files (a worker's output of processing time alone, named after
//! the record they follow: `naming` module docs) are not dataset files to
//! [`PartName::parse`]: compaction neither merges nor removes them, and the
//! reader rule never skips them, so a compacted range that spans the
//! record a tick file follows leaves that file to be read beside it (their
//! rows are disjoint). They are few: one per flush of a partition that
//! went silent.

mod tree;

use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{new_null_array, ArrayRef, RecordBatch};
use arrow::compute::interleave_record_batch;
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::properties::WriterProperties;

use self::tree::{FileId, Input, Published, Tree};
use crate::error::{Result, StoreError};
use crate::location::Root;
use crate::naming::{date_string, SourceRange, DAY_MS};
use crate::retention::parse_partition_dir;
use crate::schema::Dataset;
use crate::writer::{encode_parquet, file_metadata, WriterConfig};

/// Key/value metadata of a compacted file: how many files it merged.
pub const COMPACTED_FILES_KEY: &str = "vigil.compacted_files";

/// In-progress files older than this are garbage of a crashed writer and
/// are deleted from the directories compaction visits.
pub const STALE_TMP_AGE: Duration = Duration::from_secs(86_400);

/// Rows read from each input at a time while merging.
const MERGE_BATCH_ROWS: usize = 1024;

/// Most files merged into one at a time: bounds the open files and the
/// merge's memory (one batch of `MERGE_BATCH_ROWS` per input). A worker
/// flushing every 5 s leaves 17,280 files a day per partition; they take
/// a few runs to reach the target size (each run merges the previous
/// run's outputs further).
pub const MAX_MERGE_FILES: usize = 256;

/// Settings of a compaction run.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactOptions {
    /// Size a compacted file aims for: inputs are merged until their sizes
    /// add up to at least this, and files this large are left alone.
    pub target_file_bytes: u64,
    /// Fewest files merged into one; shorter runs are left alone.
    pub min_files: usize,
    /// How long a date (after its day ended) and a file without a
    /// checkpoint (after it was written) rest before they are compacted.
    pub settle: Duration,
    /// The Parquet writer settings of the output (the workers' own).
    pub writer: WriterConfig,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            target_file_bytes: 128 * 1024 * 1024,
            min_files: 4,
            settle: Duration::from_secs(3600),
            writer: WriterConfig::default(),
        }
    }
}

impl CompactOptions {
    /// Checks every setting; returns one problem per bad setting, named by
    /// its key.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.target_file_bytes < 1024 * 1024 {
            problems.push(format!(
                "target_file_bytes: {} is below the minimum of 1 MiB (1048576)",
                self.target_file_bytes
            ));
        }
        if self.min_files < 2 {
            problems.push(format!(
                "min_files: {} merges nothing; it must be at least 2",
                self.min_files
            ));
        }
        if let Err(e) = self.writer.validate() {
            problems.push(format!("writer: {e}"));
        }
        problems
    }
}

/// What is known about a source partition's committed output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// A worker checkpoint says the partition continues from this offset:
    /// files whose range ends before it are committed (never swept).
    Before(i64),
    /// No checkpoint: a replay's source, or a worker partition that never
    /// checkpointed. Files are compacted once they are `settle` old.
    Unknown,
}

/// The committed offset of a source partition: called with the source as
/// it appears in file names (sanitized) and the partition.
pub type CommitLookup<'a> = dyn FnMut(&str, i32) -> std::result::Result<Commit, String> + 'a;

/// A dataset file name, parsed:
/// `part-<source>-p<partition:05>-<first:020>-<last:020>.parquet`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartName {
    /// The source, sanitized (as in the name).
    pub source: String,
    /// The source partition.
    pub partition: i32,
    /// First offset of the range (inclusive).
    pub first: i64,
    /// Last offset of the range (inclusive).
    pub last: i64,
}

impl PartName {
    /// Parses a dataset file name; `None` for any other name (in-progress
    /// files, foreign files, dead letters).
    pub fn parse(name: &str) -> Option<PartName> {
        let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
        let mut it = rest.rsplitn(4, '-');
        let last = it.next()?;
        let first = it.next()?;
        let partition = it.next()?.strip_prefix('p')?;
        let source = it.next()?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if source.is_empty()
            || source.starts_with('.')
            || first.len() != 20
            || last.len() != 20
            || partition.len() < 5
            || !digits(first)
            || !digits(last)
            || !digits(partition)
        {
            return None;
        }
        let p = PartName {
            source: source.to_owned(),
            partition: partition.parse().ok()?,
            first: first.parse().ok()?,
            last: last.parse().ok()?,
        };
        (p.first <= p.last).then_some(p)
    }

    /// The file name (the inverse of [`parse`](Self::parse)).
    pub fn file_name(&self) -> String {
        format!(
            "part-{}-p{:05}-{:020}-{:020}.parquet",
            self.source, self.partition, self.first, self.last
        )
    }

    /// Whether `other` is of the same source partition and its range lies
    /// inside this one's.
    pub fn covers(&self, other: &PartName) -> bool {
        self.source == other.source
            && self.partition == other.partition
            && self.first <= other.first
            && other.last <= self.last
    }
}

/// The reader rule: for the file names of **one** directory, which files
/// a reader must skip because another file of the same source partition
/// covers their range (the inputs of a compaction whose removal has not
/// happened yet). Names that are not dataset files are never superseded.
pub fn superseded<S: AsRef<str>>(names: &[S]) -> Vec<bool> {
    let mut out = vec![false; names.len()];
    let mut parsed: Vec<(PartName, usize)> = names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| PartName::parse(n.as_ref()).map(|p| (p, i)))
        .collect();
    // Within a source partition: by first offset, the widest range first.
    parsed.sort_by(|(a, _), (b, _)| {
        (&a.source, a.partition, a.first, std::cmp::Reverse(a.last)).cmp(&(
            &b.source,
            b.partition,
            b.first,
            std::cmp::Reverse(b.last),
        ))
    });
    let mut reach: Option<(&str, i32, i64)> = None;
    for (p, i) in &parsed {
        match reach {
            Some((s, part, last)) if s == p.source && part == p.partition => {
                // Every earlier file starts at or before this one.
                if last >= p.last {
                    out[*i] = true;
                } else {
                    reach = Some((s, part, p.last));
                }
            }
            _ => reach = Some((&p.source, p.partition, p.last)),
        }
    }
    out
}

/// Which dates to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DateScope {
    /// Every date whose day ended at least `settle` ago.
    #[default]
    Settled,
    /// This UTC day only (days since 1970-01-01), settled or not.
    Day(i64),
}

/// One compacted run: the files of one source partition in one date
/// directory merged into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The dataset.
    pub dataset: Dataset,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// The source (sanitized, as in file names).
    pub source: String,
    /// The source partition.
    pub partition: i32,
    /// The published file.
    pub output: PathBuf,
    /// Files merged (and removed).
    pub files: usize,
    /// Rows in the output (the sum of the inputs').
    pub rows: u64,
    /// Bytes of the inputs.
    pub bytes_in: u64,
    /// Bytes of the output.
    pub bytes_out: u64,
}

/// What a compaction run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Every merge, in a stable order (dataset, date, source, partition).
    pub merged: Vec<Merged>,
    /// Date directories looked at.
    pub dates: u64,
    /// Date directories skipped as not settled yet.
    pub dates_unsettled: u64,
    /// Inputs of an interrupted earlier run (covered by its published
    /// output) removed.
    pub leftovers_removed: u64,
    /// In-progress files older than [`STALE_TMP_AGE`] removed.
    pub stale_tmp_removed: u64,
    /// Small files left because they are not committed or not settled yet.
    pub not_yet: u64,
    /// Runs given up because an input changed while it was merged (its
    /// output was removed), or because ranges overlap without one covering
    /// the other (not Vigil's layout: left for an operator).
    pub conflicts: u64,
}

impl CompactReport {
    /// Files merged in total.
    pub fn files_merged(&self) -> u64 {
        self.merged.iter().map(|m| m.files as u64).sum()
    }
    /// Bytes of the merged inputs in total.
    pub fn bytes_in(&self) -> u64 {
        self.merged.iter().map(|m| m.bytes_in).sum()
    }
    /// Bytes of the outputs in total.
    pub fn bytes_out(&self) -> u64 {
        self.merged.iter().map(|m| m.bytes_out).sum()
    }
}

/// Points of the protocol where tests inject a crash (an error returned by
/// the hook stops the run right there, leaving the files as a crash would).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The output is written (not yet renamed to its name).
    Written,
    /// The output is published; no input is removed yet.
    Published,
    /// Input number `n` (from 1) is removed.
    Removed(usize),
}

/// Compacts the datasets under `root` (see the module docs): every
/// `date=` directory in `scope`, at `now_ms` (ms since the epoch),
/// asking `commits` for each source partition's committed offset.
/// `root` is a local directory (a path) or an object store ([`Root`]):
/// the protocol is the same, and the private `tree` module does each of
/// its steps on either.
pub fn compact(
    root: impl Into<Root>,
    opts: &CompactOptions,
    scope: DateScope,
    now_ms: i64,
    commits: &mut CommitLookup<'_>,
) -> Result<CompactReport> {
    compact_with(&root.into(), opts, scope, now_ms, commits, &mut |_| Ok(()))
}

pub(crate) fn compact_with(
    root: &Root,
    opts: &CompactOptions,
    scope: DateScope,
    now_ms: i64,
    commits: &mut CommitLookup<'_>,
    hook: &mut dyn FnMut(Step) -> Result<()>,
) -> Result<CompactReport> {
    if let Some(problem) = opts.validate().into_iter().next() {
        return Err(StoreError::Config {
            field: "compaction",
            problem,
        });
    }
    let tree = Tree::of(root);
    let mut lock = tree.lock(LOCK_LEASE, now_ms)?;
    let mut report = CompactReport::default();
    let mut known: HashMap<(String, i32), Commit> = HashMap::new();
    let settle_ms = i64::try_from(opts.settle.as_millis()).unwrap_or(i64::MAX);
    for dataset in Dataset::ALL {
        let props = opts.writer.writer_properties(dataset)?;
        for name in tree.dirs(dataset.name())? {
            let Some(day) = parse_partition_dir(&name) else {
                continue;
            };
            match scope {
                DateScope::Day(d) if d != day => continue,
                DateScope::Settled
                    if (day + 1).saturating_mul(DAY_MS) > now_ms.saturating_sub(settle_ms) =>
                {
                    report.dates_unsettled += 1;
                    continue;
                }
                _ => {}
            }
            report.dates += 1;
            let mut ctx = DirCtx {
                tree,
                dataset,
                dir: format!("{}/{name}", dataset.name()),
                date: date_string(day)?,
                opts,
                props: &props,
                now_ms,
                settle_ms,
            };
            let span =
                tracing::info_span!("compact_dir", dataset = dataset.name(), date = %ctx.date);
            let _g = span.enter();
            ctx.run(&mut known, commits, hook, &mut lock, &mut report)?;
        }
    }
    Ok(report)
}

/// Name of the lock under the root that keeps two compactions of one
/// root from running at once (hidden: readers skip it): a locked file in
/// a directory, a lease object in an object store.
pub const LOCK_FILE: &str = ".vigil-compact.lock";

/// How long an object store lease lasts without renewal: a run renews it
/// before each merge once a third of it has passed, so only a crashed
/// run's lease runs out, and the next run may start this long after the
/// crash at the latest.
pub const LOCK_LEASE: Duration = Duration::from_secs(15 * 60);

/// Counter of expired compaction leases (crashed runs' locks on an object
/// store) taken over by a new run.
pub const LEASE_TAKEOVERS: &str = "vigil_compact_lease_takeovers_total";

/// Takes the compaction lock of a local root (see [`Tree::lock`]); held
/// while the returned value lives.
#[cfg(test)]
fn lock_root(root: &Path) -> Result<tree::Lock<'_>> {
    Tree::Local(root).lock(LOCK_LEASE, 0)
}

/// A dataset file found in a date directory.
#[derive(Debug, Clone)]
struct Found {
    part: PartName,
    /// The file name.
    name: String,
    id: FileId,
}

fn system_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// One date directory of one dataset being compacted.
struct DirCtx<'a> {
    tree: Tree<'a>,
    dataset: Dataset,
    /// `<dataset>/date=YYYY-MM-DD`, relative to the root.
    dir: String,
    date: String,
    opts: &'a CompactOptions,
    props: &'a WriterProperties,
    now_ms: i64,
    settle_ms: i64,
}

impl DirCtx<'_> {
    fn rel(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    fn shown(&self, name: &str) -> PathBuf {
        self.tree.display(&self.rel(name))
    }

    fn run(
        &mut self,
        known: &mut HashMap<(String, i32), Commit>,
        commits: &mut CommitLookup<'_>,
        hook: &mut dyn FnMut(Step) -> Result<()>,
        lock: &mut tree::Lock<'_>,
        report: &mut CompactReport,
    ) -> Result<()> {
        let mut files: Vec<Found> = Vec::new();
        for (name, id) in self.tree.files(&self.dir)? {
            if Tree::is_tmp(&name) {
                self.remove_stale_tmp(&name, &id, report)?;
                continue;
            }
            let Some(part) = PartName::parse(&name) else {
                continue;
            };
            files.push(Found { part, name, id });
        }
        let names: Vec<String> = files.iter().map(|f| f.part.file_name()).collect();
        let covered = superseded(&names);
        let (mut dead, mut live): (Vec<Found>, Vec<Found>) = (Vec::new(), Vec::new());
        for (f, covered) in files.into_iter().zip(covered) {
            if covered {
                dead.push(f);
            } else {
                live.push(f);
            }
        }
        for f in &dead {
            self.remove_leftover(f, &live, report)?;
        }
        live.sort_by(|a, b| a.part.cmp(&b.part));
        let mut start = 0;
        while start < live.len() {
            let key = (live[start].part.source.clone(), live[start].part.partition);
            let end = live[start..]
                .iter()
                .position(|f| (&f.part.source, f.part.partition) != (&key.0, key.1))
                .map_or(live.len(), |n| start + n);
            let group = &live[start..end];
            start = end;
            if group.len() < self.opts.min_files {
                continue;
            }
            let commit = match known.get(&key) {
                Some(c) => *c,
                None => {
                    let c = commits(&key.0, key.1).map_err(|problem| StoreError::Commit {
                        source_name: key.0.clone(),
                        partition: key.1,
                        problem,
                    })?;
                    known.insert(key.clone(), c);
                    c
                }
            };
            self.compact_group(group, commit, hook, lock, report)?;
        }
        Ok(())
    }

    /// Removes an in-progress file older than [`STALE_TMP_AGE`].
    fn remove_stale_tmp(&self, name: &str, id: &FileId, report: &mut CompactReport) -> Result<()> {
        let age_ms = self.now_ms - id.mtime_ms;
        if age_ms >= STALE_TMP_AGE.as_millis() as i64 && self.tree.remove(&self.rel(name))? {
            report.stale_tmp_removed += 1;
        }
        Ok(())
    }

    /// Removes a superseded file when the file covering it is a compacted
    /// one (the input of an interrupted run); otherwise only warns
    /// (readers skip it either way).
    fn remove_leftover(&self, f: &Found, live: &[Found], report: &mut CompactReport) -> Result<()> {
        let Some(cover) = live.iter().find(|g| g.part.covers(&f.part)) else {
            return Ok(());
        };
        // An unreadable covering file is not a compacted one.
        if compacted_files_in(self.tree, &self.rel(&cover.name))
            .ok()
            .flatten()
            .is_none()
        {
            tracing::warn!(
                file = %self.shown(&f.name).display(),
                covered_by = %self.shown(&cover.name).display(),
                "a file's range lies inside another's that is not a compacted file; \
                 readers skip it, compaction leaves it"
            );
            report.conflicts += 1;
            return Ok(());
        }
        if self.tree.remove(&self.rel(&f.name))? {
            report.leftovers_removed += 1;
            tracing::info!(
                dataset = self.dataset.name(),
                date = %self.date,
                file = %self.shown(&f.name).display(),
                "removed an input of an interrupted compaction"
            );
            self.tree.sync(&self.dir)?;
        }
        Ok(())
    }

    /// Splits the files of one source partition (sorted by range) into runs
    /// of consecutive eligible files and merges each run's chunks.
    fn compact_group(
        &self,
        group: &[Found],
        commit: Commit,
        hook: &mut dyn FnMut(Step) -> Result<()>,
        lock: &mut tree::Lock<'_>,
        report: &mut CompactReport,
    ) -> Result<()> {
        if let Some(w) = group.windows(2).find(|w| w[1].part.first <= w[0].part.last) {
            tracing::warn!(
                a = %self.shown(&w[0].name).display(),
                b = %self.shown(&w[1].name).display(),
                "overlapping ranges in one source partition; not compacted"
            );
            report.conflicts += 1;
            return Ok(());
        }
        let mut chunk: Vec<&Found> = Vec::new();
        let mut bytes = 0u64;
        for f in group {
            let small = f.id.len < self.opts.target_file_bytes;
            let ready = match commit {
                Commit::Before(next) => f.part.last < next,
                Commit::Unknown => f.id.mtime_ms <= self.now_ms.saturating_sub(self.settle_ms),
            };
            if small && !ready {
                report.not_yet += 1;
            }
            if !(small && ready) {
                self.merge_chunk(&chunk, hook, lock, report)?;
                chunk.clear();
                bytes = 0;
                continue;
            }
            chunk.push(f);
            bytes += f.id.len;
            if bytes >= self.opts.target_file_bytes || chunk.len() >= MAX_MERGE_FILES {
                self.merge_chunk(&chunk, hook, lock, report)?;
                chunk.clear();
                bytes = 0;
            }
        }
        self.merge_chunk(&chunk, hook, lock, report)
    }

    /// Merges one chunk (consecutive files of one source partition) when
    /// it has at least `min_files` files: steps 1 to 3 of the protocol.
    fn merge_chunk(
        &self,
        chunk: &[&Found],
        hook: &mut dyn FnMut(Step) -> Result<()>,
        lock: &mut tree::Lock<'_>,
        report: &mut CompactReport,
    ) -> Result<()> {
        if chunk.len() < self.opts.min_files {
            return Ok(());
        }
        lock.renew(chrono::Utc::now().timestamp_millis())?;
        let started = Instant::now();
        let (first, last) = (chunk[0], chunk[chunk.len() - 1]);
        let out = PartName {
            first: first.part.first,
            last: last.part.last,
            ..first.part.clone()
        };
        let out_name = out.file_name();
        let shown = self.shown(&out_name);
        // Step 1: write and publish the output, never over another file.
        let published = self.tree.publish_new(
            &self.dir,
            &out_name,
            self.opts.writer.sync,
            |w, tmp| self.write_merged(w, tmp, chunk, &out),
            || hook(Step::Written),
        )?;
        let (out_id, (bytes_out, rows)) = match published {
            Published::Exists => {
                tracing::warn!(
                    output = %shown.display(),
                    "a file with the compacted file's name appeared meanwhile (a replay of its \
                     source?); not compacted"
                );
                report.conflicts += 1;
                return Ok(());
            }
            Published::Done(id, t) => (id, t),
        };
        hook(Step::Published)?;
        // Step 2: the inputs must be the files that were read.
        let now: HashMap<String, FileId> = self.tree.files(&self.dir)?.into_iter().collect();
        if let Some(changed) = chunk.iter().find(|f| now.get(&f.name) != Some(&f.id)) {
            tracing::warn!(
                input = %self.shown(&changed.name).display(),
                output = %shown.display(),
                "a compaction input changed while it was merged (a replay of its source?); \
                 the output is removed"
            );
            // Only the file published here (a replay may have replaced it).
            if now.get(&out_name) == Some(&out_id) {
                self.tree.remove(&self.rel(&out_name))?;
                self.tree.sync(&self.dir)?;
            }
            report.conflicts += 1;
            return Ok(());
        }
        // Step 3: remove the inputs, in name order (the first input, which
        // sorts before the output, goes first: see docs/storage.md for
        // what a listing in between can see).
        for (n, f) in chunk.iter().enumerate() {
            self.tree.remove(&self.rel(&f.name))?;
            hook(Step::Removed(n + 1))?;
        }
        if self.opts.writer.sync {
            self.tree.sync(&self.dir)?;
        }
        let bytes_in = chunk.iter().map(|f| f.id.len).sum();
        tracing::info!(
            dataset = self.dataset.name(),
            date = %self.date,
            source = %out.source,
            partition = out.partition,
            files = chunk.len(),
            rows,
            bytes_in,
            bytes_out,
            first_offset = out.first,
            last_offset = out.last,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compacted partition"
        );
        report.merged.push(Merged {
            dataset: self.dataset,
            date: self.date.clone(),
            source: out.source.clone(),
            partition: out.partition,
            output: shown,
            files: chunk.len(),
            rows,
            bytes_in,
            bytes_out,
        });
        Ok(())
    }

    /// Writes the merge of `chunk` into `out` (the temporary output, or
    /// the buffer of an object): every input's rows in sort-key order,
    /// with the dataset schema, the writer's properties and the union
    /// range's metadata. Returns (bytes, rows).
    fn write_merged(
        &self,
        out_w: &mut (dyn std::io::Write + Send),
        tmp: &Path,
        chunk: &[&Found],
        out: &PartName,
    ) -> Result<(u64, u64)> {
        let mut inputs = Vec::with_capacity(chunk.len());
        let mut expected_rows = 0u64;
        let mut source = None;
        for f in chunk {
            let path = self.shown(&f.name);
            let opened = open_input(self.tree, &self.rel(&f.name), &path)?;
            expected_rows += opened.rows;
            if source.is_none() {
                source = opened.source;
            }
            let reader = opened
                .builder
                .with_batch_size(MERGE_BATCH_ROWS)
                .build()
                .map_err(|source| StoreError::Read {
                    path: path.clone(),
                    source,
                })?;
            inputs.push((path, reader));
        }
        // The original source name when the inputs recorded it.
        let source = source.unwrap_or_else(|| out.source.clone());
        let range = SourceRange {
            source: &source,
            partition: out.partition,
            first_offset: out.first,
            last_offset: out.last,
            tick: 0,
        };
        let metadata = file_metadata(
            self.dataset,
            range,
            &[(COMPACTED_FILES_KEY, chunk.len().to_string())],
        );
        let mut merge = Merge::new(self.dataset, inputs)?;
        let mut counted = Counted { inner: out_w, n: 0 };
        encode_parquet(
            &mut counted,
            tmp,
            self.dataset,
            self.props,
            &metadata,
            &mut merge,
        )?;
        if merge.rows != expected_rows {
            return Err(StoreError::Compact {
                path: tmp.to_owned(),
                problem: format!(
                    "merged {} rows, the inputs hold {expected_rows}",
                    merge.rows
                ),
            });
        }
        Ok((counted.n, merge.rows))
    }
}

/// A writer that counts the bytes through it.
struct Counted<'a> {
    inner: &'a mut (dyn std::io::Write + Send),
    n: u64,
}

impl std::io::Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// An input opened for the merge: its reader builder, its row count and
/// its `vigil.source`.
struct Opened {
    builder: ParquetRecordBatchReaderBuilder<Input>,
    rows: u64,
    source: Option<String>,
}

fn open_input(tree: Tree<'_>, rel: &str, path: &Path) -> Result<Opened> {
    let input = tree.open(rel)?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(input).map_err(|source| StoreError::Read {
            path: path.to_owned(),
            source,
        })?;
    let meta = builder.metadata().file_metadata();
    let rows = u64::try_from(meta.num_rows()).unwrap_or(0);
    let source = meta
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == "vigil.source"))
        .and_then(|k| k.value.clone());
    Ok(Opened {
        builder,
        rows,
        source,
    })
}

/// The value of [`COMPACTED_FILES_KEY`] in a file's footer, `None` for a
/// file that is not a compaction output.
pub fn compacted_files(path: &Path) -> Result<Option<usize>> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    compacted_files_in(Tree::Local(parent), &name)
}

fn compacted_files_in(tree: Tree<'_>, rel: &str) -> Result<Option<usize>> {
    let input = tree.open(rel)?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(input).map_err(|source| StoreError::Read {
            path: tree.display(rel),
            source,
        })?;
    Ok(builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == COMPACTED_FILES_KEY))
        .and_then(|k| k.value.as_deref())
        .and_then(|v| v.parse().ok()))
}
/// One input of a merge: its reader and current batch.
struct Cursor {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    batch: RecordBatch,
    keys: Rows,
    pos: usize,
}

/// A k-way merge of sorted inputs into batches in sort-key order. Holds
/// one batch of [`MERGE_BATCH_ROWS`] rows per input, so its memory does
/// not grow with the inputs' sizes.
struct Merge {
    dataset: Dataset,
    converter: RowConverter,
    sort_idx: Vec<usize>,
    cursors: Vec<Option<Cursor>>,
    /// Next row of each input with rows left: (key, input), smallest first;
    /// equal keys in input (offset) order.
    heap: BinaryHeap<std::cmp::Reverse<(OwnedRow, usize)>>,
    /// Rows picked for the next output batch: (input, row in its batch).
    picked: Vec<(usize, usize)>,
    last_key: Option<OwnedRow>,
    rows: u64,
    failed: bool,
}

impl Merge {
    fn new(dataset: Dataset, inputs: Vec<(PathBuf, ParquetRecordBatchReader)>) -> Result<Self> {
        let schema = dataset.schema();
        let arrow_err = |source| StoreError::Arrow {
            dataset: dataset.name(),
            source,
        };
        let mut sort_idx = Vec::new();
        let mut fields = Vec::new();
        for c in dataset.sort_columns() {
            let i = schema.index_of(c).map_err(arrow_err)?;
            sort_idx.push(i);
            fields.push(SortField::new(schema.field(i).data_type().clone()));
        }
        let converter = RowConverter::new(fields).map_err(arrow_err)?;
        let mut m = Merge {
            dataset,
            converter,
            sort_idx,
            cursors: Vec::with_capacity(inputs.len()),
            heap: BinaryHeap::new(),
            picked: Vec::new(),
            last_key: None,
            rows: 0,
            failed: false,
        };
        for (i, (path, reader)) in inputs.into_iter().enumerate() {
            let c = m.load(path, reader)?;
            if let Some(c) = &c {
                m.heap.push(std::cmp::Reverse((c.keys.row(0).owned(), i)));
            }
            m.cursors.push(c);
        }
        Ok(m)
    }

    /// The next non-empty batch of an input as a cursor at its first row;
    /// `None` when the input is exhausted.
    fn load(&self, path: PathBuf, mut reader: ParquetRecordBatchReader) -> Result<Option<Cursor>> {
        loop {
            let Some(batch) = reader.next() else {
                return Ok(None);
            };
            let batch = batch.map_err(|e| StoreError::Read {
                path: path.clone(),
                source: e.into(),
            })?;
            if batch.num_rows() == 0 {
                continue;
            }
            let batch = conform(self.dataset, batch, &path)?;
            let cols: Vec<ArrayRef> = self
                .sort_idx
                .iter()
                .map(|&i| batch.column(i).clone())
                .collect();
            let keys =
                self.converter
                    .convert_columns(&cols)
                    .map_err(|source| StoreError::Arrow {
                        dataset: self.dataset.name(),
                        source,
                    })?;
            return Ok(Some(Cursor {
                path,
                reader,
                batch,
                keys,
                pos: 0,
            }));
        }
    }

    /// Builds the output batch of the rows picked so far.
    fn emit(&mut self) -> Result<Option<RecordBatch>> {
        if self.picked.is_empty() {
            return Ok(None);
        }
        let empty = RecordBatch::new_empty(self.dataset.schema());
        let batches: Vec<&RecordBatch> = self
            .cursors
            .iter()
            .map(|c| c.as_ref().map_or(&empty, |c| &c.batch))
            .collect();
        let out = interleave_record_batch(&batches, &self.picked).map_err(|source| {
            StoreError::Arrow {
                dataset: self.dataset.name(),
                source,
            }
        })?;
        self.picked.clear();
        Ok(Some(out))
    }

    fn step(&mut self) -> Result<Option<RecordBatch>> {
        while let Some(std::cmp::Reverse((key, i))) = self.heap.pop() {
            let Some(c) = self.cursors[i].as_mut() else {
                continue;
            };
            if self.last_key.as_ref().is_some_and(|k| key < *k) {
                return Err(StoreError::Compact {
                    path: c.path.clone(),
                    problem: "rows are not in the dataset's sort-key order".into(),
                });
            }
            self.picked.push((i, c.pos));
            self.rows += 1;
            c.pos += 1;
            self.last_key = Some(key);
            if c.pos < c.batch.num_rows() {
                let next = c.keys.row(c.pos).owned();
                self.heap.push(std::cmp::Reverse((next, i)));
                if self.picked.len() >= MERGE_BATCH_ROWS {
                    return self.emit();
                }
                continue;
            }
            // This input's batch is used up: emit what references it, then
            // move it on to its next batch.
            let out = self.emit()?;
            if let Some(c) = self.cursors[i].take() {
                let next = self.load(c.path, c.reader)?;
                if let Some(n) = &next {
                    self.heap
                        .push(std::cmp::Reverse((n.keys.row(0).owned(), i)));
                }
                self.cursors[i] = next;
            }
            if out.is_some() {
                return Ok(out);
            }
        }
        self.emit()
    }
}

impl Iterator for Merge {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// An input batch with exactly the dataset's schema: columns taken by
/// name; a nullable column the file predates (added later, see
/// `docs/storage.md`) becomes nulls. Any other difference is an error.
fn conform(dataset: Dataset, batch: RecordBatch, path: &Path) -> Result<RecordBatch> {
    let schema = dataset.schema();
    let bad = |problem: String| StoreError::Compact {
        path: path.to_owned(),
        problem,
    };
    if let Some(extra) = batch
        .schema()
        .fields()
        .iter()
        .find(|f| schema.field_with_name(f.name()).is_err())
    {
        return Err(bad(format!(
            "column {} is not in the {} schema",
            extra.name(),
            dataset.name()
        )));
    }
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        match batch.column_by_name(field.name()) {
            Some(c) if c.data_type() == field.data_type() => cols.push(c.clone()),
            Some(c) => {
                return Err(bad(format!(
                    "column {} is {}, the schema says {}",
                    field.name(),
                    c.data_type(),
                    field.data_type()
                )))
            }
            None if field.is_nullable() => {
                cols.push(new_null_array(field.data_type(), batch.num_rows()))
            }
            None => return Err(bad(format!("column {} is missing", field.name()))),
        }
    }
    RecordBatch::try_new(Arc::clone(&schema), cols).map_err(|source| StoreError::Arrow {
        dataset: dataset.name(),
        source,
    })
}

#[cfg(test)]
mod tests;
