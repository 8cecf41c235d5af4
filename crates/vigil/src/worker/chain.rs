//! Checkpoints as chains (format 8): a partition's checkpoint names a
//! base state file (the whole pipeline) and the delta state files written
//! after it, in order, instead of holding the state. A checkpoint writes
//! one state file: a delta of the agents that changed since the last
//! checkpoint ([`vigil_ops::pipeline::PipelineDelta`]) while the deltas
//! of the chain stay smaller than its base, else a new base. So the bytes
//! written per checkpoint follow what changed, and the deltas a restore
//! reads are bounded by one base's worth.
//!
//! State files are immutable and named per writer
//! ([`vigil_store::state_files`]); the checkpoint naming one is written
//! after it is durable. After a new base, once neither checkpoint
//! generation names the old chain, the writer removes the state files of
//! the partition that neither names (old chains, a crashed writer's
//! unnamed file, a fenced zombie's).

use std::hash::{BuildHasher as _, Hasher as _};

use anyhow::{anyhow, Context as _, Result};
use serde::{Deserialize, Serialize};
use vigil_ops::pipeline::{Pipeline, PipelineDelta};
use vigil_store::{failpoint, CheckpointStore, Generation};

use crate::obs;

/// Deltas at most in one chain, whatever their size: a restore reads at
/// most this many files after the base.
pub(super) const MAX_DELTAS: usize = 256;

/// The state files a checkpoint names: its base and deltas, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ChainRef {
    pub(super) base: String,
    #[serde(default)]
    pub(super) deltas: Vec<String>,
}

impl ChainRef {
    /// Every state file it names.
    fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.base.as_str()).chain(self.deltas.iter().map(String::as_str))
    }
}

/// A partition owner's chain: what its last checkpoint named, the sizes
/// that decide between a delta and a new base, and its writer name.
#[derive(Debug)]
pub(super) struct Chain {
    /// The owner's epoch.
    epoch: u64,
    /// Unique per owner: its epoch and a random token.
    owner: String,
    /// State files written by this owner so far.
    written: u64,
    /// The chain the owner's last checkpoint named (`None`: none yet).
    current: Option<ChainRef>,
    base_bytes: u64,
    delta_bytes: u64,
    /// Checkpoints still to be followed by a sweep of the state files no
    /// generation names: the first of an owner (what earlier owners
    /// left), and the two after a new base (the one after it is when the
    /// previous chain stops being named).
    sweeps_due: u8,
}

/// The state a checkpoint writes, taken at the flush point
/// ([`Chain::snapshot`]) and written by the member's publishing thread
/// while the pipeline runs on.
#[derive(Debug)]
pub(super) enum Snapshot {
    /// The agents that changed since the last checkpoint.
    Delta(Box<PipelineDelta>),
    /// The whole pipeline, for a new base.
    Base(Box<Pipeline>),
}

/// What one state file write did.
pub(super) struct Written {
    /// Body bytes of the state file.
    pub(super) bytes: u64,
    /// Whether it was a delta (else a new base).
    pub(super) delta: bool,
    /// Agents the delta held.
    pub(super) agents: usize,
}

impl Chain {
    /// A new owner's chain (epoch `epoch`): its first checkpoint writes a
    /// base.
    pub(super) fn new(epoch: u64) -> Self {
        let token = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish() as u32;
        Chain {
            epoch,
            owner: format!("e{epoch}-{token:08x}"),
            written: 0,
            current: None,
            base_bytes: 0,
            delta_bytes: 0,
            sweeps_due: 1,
        }
    }

    /// What the next state file holds, taken from `pipeline` now (on the
    /// member's thread, at the flush point): the changes since the last
    /// checkpoint when the pipeline has them and the chain has room for a
    /// delta, else a copy of the whole pipeline for a new base. The
    /// caller marks the pipeline checkpointed ([`Pipeline::checkpointed`])
    /// once it took this: later changes go into the next one.
    pub(super) fn snapshot(&self, pipeline: &Pipeline) -> Snapshot {
        let room = self
            .current
            .as_ref()
            .is_some_and(|c| c.deltas.len() < MAX_DELTAS && self.delta_bytes < self.base_bytes);
        match room.then(|| pipeline.delta()).flatten() {
            Some(d) => Snapshot::Delta(Box::new(d)),
            None => Snapshot::Base(Box::new(pipeline.clone())),
        }
    }

    /// Writes `snapshot` as the partition's next state file and returns
    /// the chain the checkpoint names. Call [`Chain::committed`] once that
    /// checkpoint is written.
    pub(super) fn write(
        &mut self,
        store: &CheckpointStore,
        topic: &str,
        partition: i32,
        snapshot: &Snapshot,
    ) -> Result<(ChainRef, Written)> {
        self.written += 1;
        let name = vigil_store::state_file_name(partition, &self.owner, self.written);
        let r = match snapshot {
            Snapshot::Delta(d) => {
                let bytes = save_json(store, topic, &name, &**d).with_context(|| {
                    format!("writing a delta state file of partition {partition}")
                })?;
                let mut next = self
                    .current
                    .clone()
                    .ok_or_else(|| anyhow!("a delta of partition {partition} without a base"))?;
                next.deltas.push(name.clone());
                let w = Written {
                    bytes,
                    delta: true,
                    agents: d.agents(),
                };
                (next, w)
            }
            Snapshot::Base(pipeline) => {
                let bytes = save_json(store, topic, &name, pipeline).with_context(|| {
                    format!("writing a base state file of partition {partition}")
                })?;
                let next = ChainRef {
                    base: name.clone(),
                    deltas: Vec::new(),
                };
                let w = Written {
                    bytes,
                    delta: false,
                    agents: pipeline.agents_held(),
                };
                (next, w)
            }
        };
        failpoint::hit("checkpoint.after_state_file");
        Ok(r)
    }

    /// The checkpoint naming `next` (from [`Chain::write`]) is written:
    /// it is the owner's chain now. Removes the state files of the
    /// partition no generation names when a sweep is due (best effort: a
    /// failure is logged and the sweep retried at the next checkpoint).
    pub(super) fn committed(
        &mut self,
        store: &CheckpointStore,
        topic: &str,
        partition: i32,
        next: ChainRef,
        w: &Written,
    ) {
        let kind = if w.delta { "delta" } else { "base" };
        metrics::counter!(obs::CHECKPOINT_STATE_FILES, "kind" => kind).increment(1);
        if w.delta {
            self.delta_bytes += w.bytes;
        } else {
            if self.current.is_some() {
                self.sweeps_due = 2;
            }
            self.base_bytes = w.bytes;
            self.delta_bytes = 0;
        }
        self.current = Some(next);
        if self.sweeps_due == 0 {
            return;
        }
        match sweep(store, topic, partition, self.epoch, &self.owner) {
            Ok(n) => {
                self.sweeps_due -= 1;
                if n > 0 {
                    tracing::debug!(
                        partition,
                        removed = n,
                        "removed state files no checkpoint names"
                    );
                }
            }
            Err(e) => tracing::warn!(
                partition,
                error = format!("{e:#}"),
                "could not remove the state files no checkpoint names; retrying at the next \
                 checkpoint"
            ),
        }
    }
}

/// Streams `value` as JSON into state file `name` of `topic`; returns its
/// body bytes.
fn save_json(
    store: &CheckpointStore,
    topic: &str,
    name: &str,
    value: &impl Serialize,
) -> vigil_store::Result<u64> {
    store
        .save_state_file(topic, name, |w| {
            serde_json::to_writer(w, value).map_err(std::io::Error::other)
        })
        .map(|(_, bytes)| bytes)
}

/// Whether the owner of epoch `epoch` and name `owner` may remove state
/// file `name` of `partition` when no generation names it: its own, and
/// those of earlier owners (smaller epoch). A later owner's file may be
/// one it is writing and has not named yet: a fenced zombie sweeping
/// must not remove it.
fn removable(name: &str, partition: i32, epoch: u64, owner: &str) -> bool {
    let Some(rest) = name.strip_prefix(&format!("p{partition:05}-")) else {
        return false;
    };
    if rest.starts_with(&format!("{owner}-")) {
        return true;
    }
    let writer_epoch = rest
        .strip_prefix('e')
        .and_then(|r| r.split('-').next())
        .and_then(|e| e.parse::<u64>().ok());
    writer_epoch.is_some_and(|e| e < epoch)
}

/// Removes the state files of `topic`/`partition` that neither checkpoint
/// generation names and that the owner `owner` of epoch `epoch` may
/// remove ([`removable`]); returns how many. A generation that cannot be
/// read protects every file (nothing is removed).
fn sweep(
    store: &CheckpointStore,
    topic: &str,
    partition: i32,
    epoch: u64,
    owner: &str,
) -> Result<usize> {
    let mut named = std::collections::HashSet::new();
    for g in Generation::BOTH {
        let Some(o) = store.open(topic, partition, g)? else {
            continue;
        };
        let c: Manifest = serde_json::from_reader(o.reader()?)
            .with_context(|| format!("checkpoint {} does not decode", o.path.display()))?;
        if let Some(chain) = c.state {
            named.extend(chain.names().map(str::to_string));
        }
    }
    let mut removed = 0;
    for f in store.state_files(topic, partition)? {
        if !named.contains(&f) && removable(&f, partition, epoch, owner) {
            store.remove_state_file(topic, &f)?;
            removed += 1;
        }
    }
    metrics::counter!(obs::CHECKPOINT_STATE_FILES_REMOVED).increment(removed as u64);
    Ok(removed)
}

/// The chain a checkpoint names, when it names one.
#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    state: Option<ChainRef>,
}

/// The pipeline a checkpoint's chain describes: its base, then each
/// delta in order. An error (the caller falls back to the other
/// generation) when a file is missing, torn, corrupt, does not decode or
/// does not continue the one before it.
pub(super) fn load(
    store: &CheckpointStore,
    topic: &str,
    partition: i32,
    chain: &ChainRef,
) -> Result<Pipeline> {
    let open = |name: &str| {
        if !vigil_store::is_state_file_of(name, partition) {
            return Err(anyhow!(
                "the checkpoint names {name:?}, not a state file of partition {partition}"
            ));
        }
        store.open_state_file(topic, name)?.ok_or_else(|| {
            anyhow!(
                "state file {} is missing",
                store.state_file_path(topic, name).display()
            )
        })
    };
    let o = open(&chain.base)?;
    let base: Pipeline = serde_json::from_reader(o.reader()?)
        .with_context(|| format!("state file {} does not decode", o.path.display()))?;
    let mut deltas: Vec<PipelineDelta> = Vec::with_capacity(chain.deltas.len());
    for name in &chain.deltas {
        let o = open(name)?;
        deltas.push(
            serde_json::from_reader(o.reader()?)
                .with_context(|| format!("state file {} does not decode", o.path.display()))?,
        );
    }
    Pipeline::restore_chain(base, deltas).map_err(|e| anyhow!("the checkpoint's chain: {e}"))
}

#[cfg(test)]
mod tests {
    use super::removable;

    #[test]
    fn an_owner_removes_its_own_and_earlier_owners_files_only() {
        let own = "e5-0000abcd";
        assert!(removable("p00003-e5-0000abcd-000007.state", 3, 5, own));
        assert!(removable("p00003-e4-ffff0000-000001.state", 3, 5, own));
        // A later owner's (this one is a zombie), or another owner's of
        // the same epoch: perhaps being written.
        assert!(!removable("p00003-e6-0000abcd-000001.state", 3, 5, own));
        assert!(!removable("p00003-e5-99990000-000001.state", 3, 5, own));
        assert!(!removable("p00004-e4-ffff0000-000001.state", 3, 5, own));
        assert!(!removable("p00003-x-000001.state", 3, 5, own));
    }
}
