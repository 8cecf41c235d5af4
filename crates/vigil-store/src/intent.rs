//! Intent records: where a worker's next flush of a partition will write,
//! recorded before it writes, so that a restart sweeps only those places.
//!
//! A restarted worker removes the output its partition published after
//! the checkpoint it restores ([`crate::replace`]). Without a record of
//! where that output went, the sweep lists every `date=` directory of
//! every dataset for each partition it is assigned: restart time grows
//! with history. Before a flush publishes anything, the worker writes
//! the partition's intent record (fsynced, or one PUT), naming the UTC
//! days each dataset's files of this flush **and of the flush before it**
//! go to. A restart may restore either checkpoint generation (the newest,
//! or the previous one when the newest is damaged or was a fenced
//! worker's), and everything published after the previous generation came
//! from those two flushes, so the sweep lists only those days' directories
//! (and `dlq/`, `routes/`, which have no days).
//!
//! ```text
//!  <state_dir>/<sanitized topic>/p00003.intent   {"format":1,"full":false,"days":{"aggregates":[20394]}}
//! ```
//!
//! A missing or unreadable intent means a full sweep, as before intents
//! existed. An owner that restored without one writes its first intent
//! with `full: true` (it cannot name the days of the flush before its
//! own), so a restart that falls back past that flush still sweeps
//! everything.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::checkpoint::CheckpointStore;
use crate::error::{Result, StoreError};
use crate::naming::sanitize_source;
use crate::schema::Dataset;

/// Format of intent records this build writes and reads.
pub const INTENT_FORMAT: u32 = 1;

/// UTC day numbers ([`crate::naming::day_of`]) by dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetDays(BTreeMap<Dataset, BTreeSet<i64>>);

impl DatasetDays {
    /// No day of any dataset.
    pub fn new() -> Self {
        DatasetDays::default()
    }

    /// Adds `day` for `dataset`.
    pub fn insert(&mut self, dataset: Dataset, day: i64) {
        self.0.entry(dataset).or_default().insert(day);
    }

    /// Adds every day of `other`.
    pub fn extend(&mut self, other: &DatasetDays) {
        for (d, days) in &other.0 {
            self.0.entry(*d).or_default().extend(days);
        }
    }

    /// The days of `dataset` (none when absent).
    pub fn days(&self, dataset: Dataset) -> impl Iterator<Item = i64> + '_ {
        self.0.get(&dataset).into_iter().flatten().copied()
    }

    /// How many (dataset, day) directories these are.
    pub fn directories(&self) -> usize {
        self.0.values().map(BTreeSet::len).sum()
    }

    /// True when no dataset has a day.
    pub fn is_empty(&self) -> bool {
        self.directories() == 0
    }
}

/// One partition's intent record (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The days the last two flushes of the partition write to.
    pub days: DatasetDays,
    /// True when the days of the flush before the last are unknown: a
    /// restart sweeps everything.
    pub full: bool,
}

/// The serialized form: dataset names as keys, so a reader of another
/// build sees an unknown dataset as an error, not as nothing.
#[derive(Serialize, Deserialize)]
struct IntentFile {
    format: u32,
    full: bool,
    days: BTreeMap<String, BTreeSet<i64>>,
}

impl Intent {
    fn to_file(&self) -> IntentFile {
        IntentFile {
            format: INTENT_FORMAT,
            full: self.full,
            days: self
                .days
                .0
                .iter()
                .map(|(d, days)| (d.name().to_owned(), days.clone()))
                .collect(),
        }
    }

    fn from_file(f: IntentFile) -> std::result::Result<Intent, String> {
        if f.format != INTENT_FORMAT {
            return Err(format!(
                "format {}, this Vigil reads {INTENT_FORMAT}",
                f.format
            ));
        }
        let mut days = DatasetDays::new();
        for (name, ds) in f.days {
            let d = Dataset::ALL
                .into_iter()
                .find(|d| d.name() == name)
                .ok_or_else(|| format!("unknown dataset {name:?}"))?;
            for day in ds {
                days.insert(d, day);
            }
        }
        Ok(Intent { days, full: f.full })
    }
}

impl CheckpointStore {
    fn intent_rel(topic: &str, partition: i32) -> String {
        format!("{}/p{partition:05}.intent", sanitize_source(topic))
    }

    /// Path of the intent record of `topic`/`partition` (for an object
    /// store, its URL).
    pub fn intent_path(&self, topic: &str, partition: i32) -> PathBuf {
        self.root()
            .display_path(&Self::intent_rel(topic, partition))
    }

    /// Writes the intent record of `topic`/`partition`, replacing the
    /// previous one: fsynced with its directory on a local disk, one PUT
    /// on an object store.
    pub fn save_intent(&self, topic: &str, partition: i32, intent: &Intent) -> Result<()> {
        let bytes = serde_json::to_vec(&intent.to_file()).map_err(|e| StoreError::Corrupt {
            path: self.intent_path(topic, partition),
            problem: format!("intent record does not encode: {e}"),
        })?;
        let rel = Self::intent_rel(topic, partition);
        if let Some(obj) = self.root().as_object() {
            obj.put(&rel, bytes, object_store::PutMode::Overwrite)?;
            return Ok(());
        }
        let path = self.root().display_path(&rel);
        let (dir, name) = (path.parent().unwrap_or(&path), file_name(&path));
        write_atomic(dir, &name, true, |mut f, tmp| {
            f.write_all(&bytes).map_err(StoreError::io("write", tmp))
        })?;
        Ok(())
    }

    /// The intent record of `topic`/`partition`: `Ok(None)` when there is
    /// none, [`StoreError::Corrupt`] when it does not decode (the caller
    /// sweeps everything).
    pub fn load_intent(&self, topic: &str, partition: i32) -> Result<Option<Intent>> {
        let rel = Self::intent_rel(topic, partition);
        let path = self.intent_path(topic, partition);
        let bytes = match self.root().as_object() {
            Some(obj) => match obj.get(&rel)? {
                Some(b) => b.to_vec(),
                None => return Ok(None),
            },
            None => match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StoreError::io("read", &path)(e)),
            },
        };
        let corrupt = |problem: String| StoreError::Corrupt {
            path: path.clone(),
            problem,
        };
        let f: IntentFile = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(format!("intent record does not decode: {e}")))?;
        Intent::from_file(f)
            .map(Some)
            .map_err(|p| corrupt(format!("intent record: {p}")))
    }
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Root;

    fn intent() -> Intent {
        let mut days = DatasetDays::new();
        days.insert(Dataset::Aggregates, 20_394);
        days.insert(Dataset::Aggregates, 20_395);
        days.insert(Dataset::Alerts, 20_395);
        Intent { days, full: false }
    }

    #[test]
    fn intents_round_trip_on_disk_and_object_store() {
        let dir = tempfile::tempdir().unwrap();
        for root in Root::test_pair(dir.path()) {
            let s = CheckpointStore::at(&root);
            assert_eq!(s.load_intent("rmm.t", 3).unwrap(), None);
            s.save_intent("rmm.t", 3, &intent()).unwrap();
            assert_eq!(s.load_intent("rmm.t", 3).unwrap(), Some(intent()));
            let full = Intent {
                days: DatasetDays::new(),
                full: true,
            };
            s.save_intent("rmm.t", 3, &full).unwrap();
            assert_eq!(s.load_intent("rmm.t", 3).unwrap(), Some(full));
            assert_eq!(s.load_intent("rmm.t", 4).unwrap(), None);
        }
    }

    #[test]
    fn a_damaged_intent_is_an_error_not_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = CheckpointStore::new(dir.path());
        s.save_intent("t", 0, &intent()).unwrap();
        let path = s.intent_path("t", 0);
        for bad in [
            &b"{\"format\":1,\"full\":false,\"days\":{\"aggre"[..],
            b"{\"format\":2,\"full\":false,\"days\":{}}",
            b"{\"format\":1,\"full\":false,\"days\":{\"metrics\":[1]}}",
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = s.load_intent("t", 0).unwrap_err();
            assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        }
    }

    #[test]
    fn days_merge() {
        let mut a = intent().days;
        let mut b = DatasetDays::new();
        b.insert(Dataset::Status, 7);
        b.insert(Dataset::Aggregates, 20_394);
        a.extend(&b);
        assert_eq!(a.directories(), 4);
        assert_eq!(a.days(Dataset::Status).collect::<Vec<_>>(), vec![7]);
        assert_eq!(a.days(Dataset::SecurityEvents).count(), 0);
    }
}
