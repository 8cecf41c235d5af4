//! Checkpoint chains through the worker's own write and restore paths:
//! deltas follow what changed, a restore continues exactly, damage falls
//! back a generation, and state files no checkpoint names go.

use std::sync::Arc;

use vigil_ops::model::{AlertEvent, WindowAggregate};
use vigil_ops::pipeline::{Outputs, Pipeline};
use vigil_ops::reject::Position;
use vigil_ops::rules::RuleSet;
use vigil_sim::{Fleet, FleetConfig, SimRecord, HOUR_MS};
use vigil_store::Generation;

use super::chain::Chain;
use super::{write_checkpoint, CheckpointHook, Committed};

const POS: Position = Position {
    partition: 0,
    offset: 0,
};

fn records() -> Vec<SimRecord> {
    Fleet::new(FleetConfig {
        agents: 60,
        tenants: 2,
        duration_ms: 3 * HOUR_MS,
        seed: 11,
        ..FleetConfig::default()
    })
    .collect()
}

fn hook(dir: &std::path::Path) -> CheckpointHook {
    CheckpointHook::at(dir, Arc::new(RuleSet::default_rules()))
}

/// Windows and series alerts of processing `recs` with `p`, then
/// finishing. (Agent alerts are left out: a restore skips the few
/// milliseconds of wall time since the checkpoint, which moves offline
/// incidents' times by as much.)
fn rest(mut p: Pipeline, recs: &[SimRecord]) -> (Vec<WindowAggregate>, Vec<AlertEvent>) {
    let mut out = Outputs::default();
    for r in recs {
        p.process(POS, &r.payload, r.arrival_ms, &mut out);
    }
    p.finish(&mut out);
    out.alerts.retain(|a| a.metric.is_some());
    (
        std::mem::take(&mut out.windows),
        std::mem::take(&mut out.alerts),
    )
}

/// One owner of partition 0 of topic `t` in a test: its checkpoint
/// store, pipeline and chain, fed the simulated records.
struct Owner {
    _dir: tempfile::TempDir,
    h: CheckpointHook,
    recs: Vec<SimRecord>,
    p: Pipeline,
    chain: Chain,
}

impl Owner {
    fn new() -> Owner {
        let dir = tempfile::tempdir().unwrap();
        let h = hook(dir.path());
        let p = Pipeline::new(h.cfg.clone(), h.rules.clone()).unwrap();
        Owner {
            _dir: dir,
            h,
            recs: records(),
            p,
            chain: Chain::new(1),
        }
    }

    /// Processes records `range`.
    fn feed(&mut self, range: std::ops::Range<usize>) {
        let mut out = Outputs::default();
        for r in &self.recs[range] {
            self.p.process(POS, &r.payload, r.arrival_ms, &mut out);
            out.clear();
        }
    }

    /// Checkpoints at offset `i` as the worker does: the bytes written
    /// and whether the state file was a delta.
    fn checkpoint(&mut self, i: usize) -> (u64, bool) {
        let at = (i as i64, 0, 1);
        let snapshot = self.chain.snapshot(&self.p);
        self.p.checkpointed();
        write_checkpoint(&self.h.store, "t", 0, at, &mut self.chain, &snapshot).unwrap()
    }
}

/// A worker's checkpoints every 15 records (a quarter of the agents
/// change between two): deltas after the first base, each much smaller
/// than the base, a new base once the deltas add up to one, and a
/// restore at any checkpoint that continues as if nothing stopped.
#[test]
fn checkpoints_are_deltas_and_the_chain_restores_exactly() {
    let mut o = Owner::new();
    let mut sizes = Vec::new();
    for i in (15..o.recs.len()).step_by(15) {
        o.feed(i - 15..i);
        sizes.push(o.checkpoint(i));
        if [300, 1_500, 4_005].contains(&i) {
            let a = o.h.load("t", 0, Committed::Offset(i as i64)).unwrap();
            let back = a.restored.unwrap();
            assert_eq!(back.next_offset, i as i64);
            assert_eq!(a.epoch, 2);
            let (got, want) = (
                rest(back.pipeline, &o.recs[i..]),
                rest(o.p.clone(), &o.recs[i..]),
            );
            assert!(!want.0.is_empty() && !want.1.is_empty());
            assert!(got == want, "restored at {i}");
        }
    }
    // About a quarter of the agents change between two checkpoints: a
    // delta is about a quarter of a base, and a new base comes when the
    // deltas add up to one (one base, then about four deltas).
    let base = sizes.iter().filter(|w| !w.1).map(|w| w.0).max().unwrap();
    let deltas: Vec<u64> = sizes.iter().filter(|w| w.1).map(|w| w.0).collect();
    assert!(
        deltas.len() * 10 > sizes.len() * 7,
        "most checkpoints are deltas: {} of {}",
        deltas.len(),
        sizes.len()
    );
    assert!(
        deltas.iter().all(|&n| n * 2 < base),
        "every delta is under half the largest base ({base} B)"
    );
    let mean = sizes.iter().map(|w| w.0).sum::<u64>() / sizes.len() as u64;
    assert!(
        mean * 2 < base,
        "a checkpoint writes less than half a base on average: {mean} vs {base}"
    );
    // State files: only what the two generations name is left.
    let store = &o.h.store;
    let files = store.state_files("t", 0).unwrap();
    let named: usize = Generation::BOTH
        .iter()
        .map(|&g| {
            let c = store.open("t", 0, g).unwrap().unwrap();
            let v: serde_json::Value = serde_json::from_reader(c.reader().unwrap()).unwrap();
            assert_eq!(v["format"], 8);
            v["state"]["deltas"].as_array().unwrap().len() + 1
        })
        .max()
        .unwrap();
    assert!(
        files.len() <= named + 1 && files.len() >= named,
        "{} files, the longest chain named is {named}",
        files.len()
    );
}

/// A damaged or missing delta of the newest checkpoint falls back to the
/// previous generation; a damaged base, which both name, is an error
/// that says what to do.
#[test]
fn a_damaged_state_file_falls_back_a_generation_or_is_a_clear_error() {
    let mut o = Owner::new();
    let mut from = 0;
    for i in [40, 70, 99] {
        o.feed(from..i);
        o.checkpoint(i);
        from = i;
    }
    let h = &o.h;
    let files = h.store.state_files("t", 0).unwrap();
    assert_eq!(files.len(), 3, "a base and two deltas: {files:?}");
    let newest = h.store.state_file_path("t", files.last().unwrap());
    let mut b = std::fs::read(&newest).unwrap();
    b[10] ^= 1;
    std::fs::write(&newest, &b).unwrap();
    let a = h.load("t", 0, Committed::Offset(70)).unwrap();
    assert_eq!(
        a.restored.unwrap().next_offset,
        70,
        "the previous generation"
    );
    std::fs::remove_file(&newest).unwrap();
    let a = h.load("t", 0, Committed::Offset(70)).unwrap();
    assert_eq!(a.restored.unwrap().next_offset, 70);
    let base = h.store.state_file_path("t", &files[0]);
    std::fs::write(&base, b"{}").unwrap();
    let e = format!("{:#}", h.load("t", 0, Committed::Offset(70)).err().unwrap());
    assert!(
        e.contains("no checkpoint of t/0 can be restored") && e.contains(&files[0]),
        "{e}"
    );
}

/// A crash between a state file and the checkpoint naming it leaves an
/// unnamed file: the restore does not see it, and the next owner's first
/// checkpoint removes it.
#[test]
fn a_state_file_no_checkpoint_names_is_removed_by_the_next_owner() {
    let mut o = Owner::new();
    o.feed(0..50);
    o.checkpoint(50);
    o.feed(50..80);
    let (h, p, chain) = (&o.h, &o.p, &mut o.chain);
    // The crash: a delta written, its checkpoint never.
    let (orphan, _) = chain.write(&h.store, "t", 0, &chain.snapshot(p)).unwrap();
    assert_eq!(h.store.state_files("t", 0).unwrap().len(), 2);
    let a = h.load("t", 0, Committed::Offset(50)).unwrap();
    assert_eq!(a.epoch, 2);
    let mut back = a.restored.unwrap().pipeline;
    let mut next = Chain::new(a.epoch);
    let snapshot = next.snapshot(&back);
    back.checkpointed();
    write_checkpoint(&h.store, "t", 0, (50, 0, 2), &mut next, &snapshot).unwrap();
    let files = h.store.state_files("t", 0).unwrap();
    assert_eq!(
        files.len(),
        2,
        "the old base (named by the previous) and the new: {files:?}"
    );
    assert!(!files.contains(orphan.deltas.last().unwrap()), "{files:?}");
}
