//! The worker's crash points, one by one, against the real broker: a
//! failpoint (`VIGIL_FAILPOINTS`, debug builds only) aborts the worker at
//! one step of a flush (after a file is published, after the broker
//! acknowledged the flush's alerts, after a checkpoint, before the commit,
//! between the two renames of a checkpoint). The test checks what the
//! crash left (files past the checkpoint, a checkpoint ahead of the
//! group's commit, a missing newest checkpoint and a half-written one),
//! then a new worker finishes the stream and the aggregates equal the
//! oracle row for row: nothing lost, nothing twice. A damaged newest
//! checkpoint falls back to the previous one with the same result.

use std::os::unix::process::ExitStatusExt as _;

use vigil_store::{CheckpointStore, Generation};

use super::*;

/// One member per worker: a failpoint's N-th hit is the N-th flush step
/// of the one flushing thread, so each crash lands where the test says
/// (the chaos test runs several members per worker).
const ONE: (&str, &str) = ("VIGIL_WORKER__THREADS", "1");

/// Small polls and flushes: many flushes, so a failpoint's N-th hit lands
/// mid-stream with flushes done before it.
const SMALL: [(&str, &str); 4] = [
    ("VIGIL_WORKER__MAX_POLL_RECORDS", "8"),
    ("VIGIL_STORAGE__FLUSH_RECORDS", "8"),
    ("VIGIL_WORKER__FLUSH_INTERVAL", "20ms"),
    ONE,
];

impl WorkerProc {
    /// Waits (at most `within`) for the process to exit by itself.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "worker still running:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What a crashed worker left, per partition.
#[derive(Debug)]
struct Left {
    /// The newest checkpoint's `next_offset` (None: no newest).
    newest: Vec<Option<i64>>,
    /// Whether a previous checkpoint exists.
    previous: Vec<bool>,
    /// Half-written checkpoint files.
    orphans: Vec<usize>,
    /// State files neither checkpoint generation names.
    unnamed: Vec<usize>,
    /// The group's committed offsets (-1: none).
    committed: Vec<i64>,
    /// The greatest first offset of a published aggregates file.
    last_file: Vec<Option<i64>>,
}

impl Env {
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn left(&self) -> Left {
        let store = CheckpointStore::new(self.state());
        let newest = (0..PARTITIONS)
            .map(|p| {
                let o = store.open(&self.topic, p, Generation::Newest).unwrap()?;
                let v: serde_json::Value = serde_json::from_reader(o.reader().unwrap()).unwrap();
                v["next_offset"].as_i64()
            })
            .collect();
        let previous = (0..PARTITIONS)
            .map(|p| {
                store
                    .open(&self.topic, p, Generation::Previous)
                    .unwrap()
                    .is_some()
            })
            .collect();
        let dir = self.state().join(vigil_store::sanitize_source(&self.topic));
        let names: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        let orphans = (0..PARTITIONS)
            .map(|p| {
                let want = format!("p{p:05}.ckpt");
                names
                    .iter()
                    .filter(|n| vigil_store::naming::tmp_target(n) == Some(want.as_str()))
                    .count()
            })
            .collect();
        let unnamed = (0..PARTITIONS)
            .map(|p| {
                let mut named = Vec::new();
                for g in Generation::BOTH {
                    let Some(o) = store.open(&self.topic, p, g).unwrap() else {
                        continue;
                    };
                    let v: serde_json::Value =
                        serde_json::from_reader(o.reader().unwrap()).unwrap();
                    named.extend(v["state"]["base"].as_str().map(str::to_string));
                    for d in v["state"]["deltas"].as_array().into_iter().flatten() {
                        named.push(d.as_str().unwrap().to_string());
                    }
                }
                store
                    .state_files(&self.topic, p)
                    .unwrap()
                    .iter()
                    .filter(|f| !named.contains(f))
                    .count()
            })
            .collect();
        let mut last_file = vec![None; PARTITIONS as usize];
        for day in std::fs::read_dir(self.data().join("aggregates"))
            .into_iter()
            .flatten()
        {
            for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
                let name = f.unwrap().file_name().into_string().unwrap();
                if let Some((p, first)) =
                    vigil_store::replace::parse_source_file(&name, "part", &self.topic, "parquet")
                        .map(|f| (f.partition, f.offset))
                {
                    let l: &mut Option<i64> = &mut last_file[p as usize];
                    *l = Some(l.map_or(first, |x| x.max(first)));
                }
            }
        }
        Left {
            newest,
            previous,
            orphans,
            unnamed,
            committed: self.committed(),
            last_file,
        }
    }
}

/// Runs the fleet through a worker that aborts at the `hit`-th pass of
/// `failpoint`, checks what it left with `check`, lets a new worker
/// finish, and compares everything with the oracle. Returns the new
/// worker's log.
fn crash_at(name: &str, failpoint: &str, hit: u32, check: impl Fn(&Left)) -> Option<String> {
    let env = Env::new(name)?;
    let records = fleet(AGENTS, 0..MINUTES);
    env.produce(&records);
    let arm = format!("{failpoint}=abort@{hit}");
    let mut extra = SMALL.to_vec();
    extra.push(("VIGIL_FAILPOINTS", &arm));
    let mut w1 = env.worker("w1", &extra);
    let status = w1.wait_exit(Duration::from_secs(120));
    let log1 = w1.log();
    assert_eq!(
        status.signal(),
        Some(6),
        "aborted by the failpoint: {status}\n{log1}"
    );
    assert!(
        log1.contains(&format!("failpoint {failpoint}: hit {hit}, aborting")),
        "{log1}"
    );
    let left = env.left();
    eprintln!("{failpoint}: {left:?}");
    check(&left);
    let w2 = env.worker("w2", &[ONE]);
    env.wait_committed(&[&w2]);
    let log = w2.stop();
    assert_windows(&env, &records);
    assert_incidents(&env, true);
    Some(log)
}

/// Some partition has a file published at or past its newest checkpoint.
fn output_past_a_checkpoint(l: &Left) -> bool {
    (0..PARTITIONS as usize).any(|p| match (l.last_file[p], l.newest[p]) {
        (Some(f), Some(c)) => f >= c,
        (Some(_), None) => true,
        _ => false,
    })
}

/// Some partition's newest checkpoint is ahead of the group's commit.
fn checkpoint_ahead_of_commit(l: &Left) -> bool {
    (0..PARTITIONS as usize).any(|p| l.newest[p].is_some_and(|c| c > l.committed[p]))
}

/// A crash at `failpoint` (its 3rd pass) whose aftermath `left` must
/// show, and what the next worker's log must then say.
fn crash_case(name: &str, failpoint: &str, left: fn(&Left) -> bool, then: &[&str]) {
    let Some(log) = crash_at(name, failpoint, 3, |l| assert!(left(l), "{l:?}")) else {
        return;
    };
    for t in then {
        assert!(log.contains(t), "{t}: {log}");
    }
}

/// The next worker's sweep removed what the crashed flush published,
/// listing only the days its intent record named.
const SWEPT_BY_INTENT: [&str; 2] = [
    "removed output published after the last checkpoint",
    "\"intent\"",
];

#[test]
fn kafka_crash_after_a_file_is_published_leaves_one_copy_of_every_row() {
    crash_case(
        "crash-publish",
        "flush.after_publish",
        output_past_a_checkpoint,
        &SWEPT_BY_INTENT,
    );
}

/// A crash after a flush's intent record, before its first file: nothing
/// of that flush is out, and the next worker reads its records again.
#[test]
fn kafka_crash_after_the_intent_record_publishes_every_row_once() {
    crash_case(
        "crash-intent",
        "flush.after_intent",
        |l| !output_past_a_checkpoint(l),
        &["restored the partition's checkpoint"],
    );
}

#[test]
fn kafka_crash_after_the_acks_leaves_one_copy_of_every_row() {
    crash_case(
        "crash-acks",
        "flush.after_acks",
        output_past_a_checkpoint,
        &SWEPT_BY_INTENT,
    );
}

#[test]
fn kafka_crash_after_a_checkpoint_resumes_from_it() {
    crash_case(
        "crash-ckpt",
        "flush.after_checkpoint",
        checkpoint_ahead_of_commit,
        &["restored the partition's checkpoint"],
    );
}

#[test]
fn kafka_crash_before_the_commit_resumes_from_the_checkpoints() {
    crash_case(
        "crash-commit",
        "flush.before_commit",
        checkpoint_ahead_of_commit,
        &["restored the partition's checkpoint"],
    );
}

/// A crash after a state file is written, before the checkpoint naming
/// it: the file is named by nothing, and the next worker restores the
/// checkpoint before it (and removes the file at its first checkpoint).
#[test]
fn kafka_crash_after_a_state_file_resumes_from_the_checkpoint_before() {
    crash_case(
        "crash-state",
        "checkpoint.after_state_file",
        |l| l.unnamed.iter().sum::<usize>() == 1,
        &["restored the partition's checkpoint"],
    );
}

#[test]
fn kafka_crash_between_the_checkpoint_renames_falls_back_to_the_previous() {
    // The failpoint is passed only when a newest checkpoint was renamed
    // to `.prev`: at its 2nd pass some partition has no newest.
    let Some(log) = crash_at("crash-rename", "checkpoint.between_renames", 2, |l| {
        let p = (0..PARTITIONS as usize)
            .find(|&p| l.newest[p].is_none() && l.previous[p])
            .unwrap_or_else(|| panic!("no partition without its newest checkpoint: {l:?}"));
        assert_eq!(l.orphans[p], 1, "the new checkpoint, half published: {l:?}");
    }) else {
        return;
    };
    assert!(
        log.contains("falling back to the previous checkpoint"),
        "{log}"
    );
    assert!(log.contains("the newest is missing"), "{log}");
}

/// Every partition's newest checkpoint damaged on disk after a clean
/// stop: the next worker restores each previous one, reads the records
/// after it again, and the output is still the oracle's, once.
#[test]
fn kafka_damaged_newest_checkpoints_fall_back_and_lose_nothing() {
    let Some(env) = Env::new("ckpt-damaged") else {
        return;
    };
    let first = fleet(AGENTS, 0..60);
    let second = fleet(AGENTS, 60..MINUTES);
    env.produce(&first);
    let w1 = env.worker("w1", &SMALL);
    env.wait_committed(&[&w1]);
    w1.stop();
    let store = CheckpointStore::new(env.state());
    let mut damaged = 0;
    for p in 0..PARTITIONS {
        let path = store.path(&env.topic, p);
        let Ok(mut b) = std::fs::read(&path) else {
            continue; // no agent hashed to this partition
        };
        damaged += 1;
        let mid = b.len() / 2;
        b[mid] ^= 0x04;
        std::fs::write(&path, b).unwrap();
        assert!(store
            .open(&env.topic, p, Generation::Previous)
            .unwrap()
            .is_some());
    }
    env.produce(&second);
    let w2 = env.worker("w2", &[ONE]);
    env.wait_committed(&[&w2]);
    let metrics = w2.metrics();
    let log = w2.stop();
    assert_eq!(
        log.matches("falling back to the previous checkpoint")
            .count(),
        damaged,
        "{log}"
    );
    assert!(log.contains("is corrupt: xxh3 of its body"), "{log}");
    let fallbacks = metric_value(&metrics, "vigil_checkpoint_fallbacks_total");
    assert!(damaged >= 2, "the fleet spreads over the partitions");
    assert_eq!(fallbacks, damaged as f64);
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_windows(&env, &all);
    assert_incidents(&env, true);
}

/// Windows close 2 s after an agent's last record (processing time): once
/// the stream ends, every window is closed by a tick and published as a
/// tick file.
const IDLE: [(&str, &str); 3] = [
    ("VIGIL_PIPELINE__IDLE_TIMEOUT", "2s"),
    ("VIGIL_PIPELINE__TICK_INTERVAL", "200ms"),
    ONE,
];

impl Env {
    /// The tick files (output of processing time alone) of `aggregates/`.
    fn tick_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for day in std::fs::read_dir(self.data().join("aggregates"))
            .into_iter()
            .flatten()
        {
            for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
                let name = f.unwrap().file_name().into_string().unwrap();
                let parsed =
                    vigil_store::replace::parse_source_file(&name, "part", &self.topic, "parquet");
                if parsed.is_some_and(|f| f.tick > 0) {
                    out.push(name);
                }
            }
        }
        // One file per day of its rows, all with one name.
        out.sort();
        out.dedup();
        out
    }

    /// Waits (60 s at most) until the `aggregates` dataset holds `n`
    /// rows.
    fn wait_rows(&self, n: usize, w: &WorkerProc) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while actual_windows(self).1 < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} windows published:\n{}",
                actual_windows(self).1,
                w.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Issue 19 item 6: output of processing time alone is durable. The
/// stream ends; its last windows close by the idle timeout on partitions
/// that receive nothing more, and are published as tick files. A crash
/// right after the first tick file is published (before its checkpoint)
/// leaves a file the next owner's sweep removes and publishes again;
/// that owner's own tick files are checkpointed with their number, and a
/// third owner keeps them and publishes nothing again. Every window of
/// the stream is then in Parquet once.
#[test]
fn kafka_crash_after_a_tick_file_is_published_leaves_one_copy_of_every_window() {
    let Some(env) = Env::new("crash-tick") else {
        return;
    };
    let records = fleet(AGENTS, 0..30);
    let (want, _) = every_window(&records);
    env.produce(&records);
    let mut extra = IDLE.to_vec();
    extra.push(("VIGIL_FAILPOINTS", "flush.after_tick_publish=abort"));
    let mut w1 = env.worker("w1", &extra);
    let status = w1.wait_exit(Duration::from_secs(120));
    let log1 = w1.log();
    assert_eq!(status.signal(), Some(6), "{status}\n{log1}");
    assert!(
        log1.contains("failpoint flush.after_tick_publish: hit 1, aborting"),
        "{log1}"
    );
    let orphan = env.tick_files();
    assert_eq!(orphan.len(), 1, "the tick file published before the crash");

    let w2 = env.worker("w2", &IDLE);
    env.wait_rows(want.len(), &w2);
    // Flushes of every partition's ticks before the stop.
    std::thread::sleep(Duration::from_secs(1));
    let log2 = w2.stop();
    assert!(
        log2.contains("removed output published after the last checkpoint"),
        "{log2}"
    );
    assert_windows_are(&env, &want);
    let ticks = env.tick_files();
    assert!(!ticks.is_empty());

    let w3 = env.worker("w3", &IDLE);
    env.wait_committed(&[&w3]);
    // Three idle timeouts: had the restored state not held the closes,
    // they would be published again by now.
    std::thread::sleep(Duration::from_secs(6));
    assert_windows_are(&env, &want);
    // The stream goes on: the first record's sweep keeps the tick files
    // the checkpoints hold, and the new windows close and publish. (It
    // resumes at minute 31: minute 29's batch reaches into window 30, which
    // the idle timeout closed, so minute 30's points for it would be late.)
    let more = fleet(AGENTS, 31..40);
    env.produce(&more);
    let all: Vec<_> = records.iter().chain(&more).cloned().collect();
    let (want, _) = every_window(&all);
    env.wait_rows(want.len(), &w3);
    std::thread::sleep(Duration::from_secs(1));
    let log3 = w3.stop();
    assert!(
        !log3.contains("removed output published after the last checkpoint"),
        "{log3}"
    );
    let now = env.tick_files();
    assert!(
        ticks.iter().all(|t| now.contains(t)),
        "checkpointed tick files are kept: {ticks:?} {now:?}"
    );
    assert_windows_are(&env, &want);
}

/// Issue 19 item 1: a member that fails stops the worker's other
/// members, which drain and leave the group, and the worker exits with
/// the failed member's error: it does not run on without the failed
/// member's partitions. The failure: one flush of one member fails
/// (`flush.error`, at its first hit in the process); the other member's
/// flushes go on, so without the stop the process would never exit.
#[test]
fn kafka_a_failing_member_stops_the_other_members_of_its_worker() {
    let Some(env) = Env::new("member-fails") else {
        return;
    };
    env.produce(&fleet(AGENTS, 0..30));
    let mut w = env.worker(
        "w",
        &[
            ("VIGIL_WORKER__THREADS", "2"),
            ("VIGIL_WORKER__FLUSH_INTERVAL", "50ms"),
            ("VIGIL_FAILPOINTS", "flush.error=error"),
        ],
    );
    let status = w.wait_exit(Duration::from_secs(60));
    let log = plain(&w.log());
    assert_eq!(status.code(), Some(1), "{status}\n{log}");
    assert!(
        log.contains("failpoint flush.error: hit 1, failing the step"),
        "{log}"
    );
    let failed = log
        .lines()
        .find(|l| l.contains("member failed; stopping the worker's other members"))
        .unwrap_or_else(|| panic!("no member failed:\n{log}"));
    assert!(failed.contains("flush.error"), "{failed}");
    let k = failed
        .split("member{member=")
        .nth(1)
        .and_then(|r| r.chars().next())
        .unwrap_or_else(|| panic!("which member failed: {failed}"));
    let other = if k == '0' { '1' } else { '0' };
    // The other member stopped by itself and drained, as on SIGTERM.
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("member{{member={other}}}"))
                && l.contains("worker stopped")
                && l.contains("drained=true")),
        "member {other} drained:\n{log}"
    );
    for m in ['0', '1'] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("member{{member={m}}}"))
                    && l.contains("left the consumer group")),
            "member {m} left:\n{log}"
        );
    }
}

/// Issue 19 item 1, double-buffered output: while a member's flush is
/// being published (its publishing thread slowed by 10 s after the first
/// file, as a slow disk or object store would), the member consumes on:
/// every record produced meanwhile is processed long before that flush
/// is done, and nothing is committed before it is. Then everything
/// commits and the output equals the oracle. (A member that published
/// on its own thread would process nothing for the 10 s.)
#[test]
fn kafka_a_member_consumes_while_its_flush_is_published() {
    let Some(env) = Env::new("overlap") else {
        return;
    };
    const DELAY: Duration = Duration::from_secs(10);
    // The next flush point, which waits for this flush, comes after the
    // second half is consumed.
    let (records, w) = slowed_first_flush(&env, "w", DELAY, "3s", "");
    let half = records.len() / 2;
    let slowed = Instant::now();
    env.produce(&records[half..]);
    loop {
        let processed = metric_value(&w.metrics(), "vigil_worker_records_processed_total");
        if processed >= records.len() as f64 {
            break;
        }
        assert!(
            slowed.elapsed() < DELAY,
            "{processed} of {} records processed while the flush was published:\n{}",
            records.len(),
            w.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = slowed.elapsed();
    assert!(
        !w.log()
            .contains("failpoint flush.after_publish: delay over"),
        "the flush was done before the records were processed ({took:?}):\n{}",
        w.log()
    );
    assert!(
        env.committed().iter().all(|&c| c < 0),
        "committed before the flush was done: {:?}",
        env.committed()
    );
    env.wait_committed(&[&w]);
    let log = w.stop();
    assert!(
        log.contains("failpoint flush.after_publish: delay over"),
        "{log}"
    );
    eprintln!("every record processed {took:?} into a {DELAY:?} publish");
    assert_windows(&env, &records);
    assert_incidents(&env, true);
}

/// Issue 19 item 1: a rebalance that takes partitions from a member
/// whose flush is being published (slowed by 6 s) waits, inside the
/// revoke, until that flush is published and checkpointed: the next owner
/// restores from its checkpoint and neither duplicates nor loses a row.
/// (Without the wait, the next owner would resume from the checkpoint
/// before and publish those records again beside the slowed flush's
/// files.)
#[test]
fn kafka_a_revoke_waits_for_the_flush_being_published() {
    let Some(env) = Env::new("revoke-wait") else {
        return;
    };
    const DELAY: Duration = Duration::from_secs(6);
    // The slowed step stays under half the session timeout (not a stall
    // that stops the flush by itself), and the member's next flush point
    // comes after it: the member polls, and so takes part in the
    // rebalance, while its flush is published.
    let (records, a) = slowed_first_flush(
        &env,
        "a",
        DELAY,
        "10s",
        "[kafka.consumer_properties]\n\"session.timeout.ms\" = \"30000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
    );
    let half = records.len() / 2;
    // The rest of the records, then a second member joins while the flush
    // is slowed: some partitions move to it. (Its first flush then covers
    // more records than the slowed one: a file of that flush published
    // after the move would not replace one of the new owner's but sit
    // beside it.)
    env.produce(&records[half..]);
    let b = env.worker("b", &[ONE]);
    wait_for(
        "a partition moving",
        Duration::from_secs(60),
        &[&a, &b],
        || plain(&b.log()).contains("partition assigned"),
    );
    env.wait_committed(&[&a, &b]);
    let (la, lb) = (plain(&a.stop()), plain(&b.stop()));
    // The partitions moved while the flush was slowed, and the revoke
    // waited for it.
    let revoked = la.find("partition revoked").unwrap_or(usize::MAX);
    let over = la
        .find("failpoint flush.after_publish: delay over")
        .unwrap_or(usize::MAX);
    let waited = la
        .lines()
        .find(|l| l.contains("revoke waited for the flush being published"))
        .unwrap_or_default();
    eprintln!("{waited}");
    assert!(!waited.is_empty() && over < revoked, "{la}\n----\n{lb}");
    // Nothing of the slowed flush came after the next owner restored:
    // one copy of every row, and no file beside a later one that covers
    // its records (which readers would skip, hiding the duplicate).
    let covered = covered_files(&env);
    assert!(covered.is_empty(), "files covered by others: {covered:?}");
    assert_windows(&env, &records);
    assert_incidents(&env, true);
}

/// The shutdown drain is bounded even when a flush is not: SIGTERM
/// while the member's flush is slowed by a minute (a store that hangs)
/// stops the worker within `worker.shutdown_timeout` (4 s here) and the
/// bound on leaving the group, not when the slowed step ends. It exits
/// with an error that says the flush was not done, and the next owner
/// resumes from the last checkpoint: every row once. (Were the drain to
/// wait for the flush, the stop would take the minute.)
#[test]
fn kafka_a_drain_stops_waiting_for_a_hung_flush_at_its_deadline() {
    let Some(env) = Env::new("drain-deadline") else {
        return;
    };
    let (records, w) = slowed_first_flush(
        &env,
        "w",
        Duration::from_secs(60),
        "3s",
        "[worker]\nshutdown_timeout = \"4s\"\n",
    );
    env.produce(&records[records.len() / 2..]);
    let stopping = Instant::now();
    let (status, log) = w.terminate();
    let took = stopping.elapsed();
    eprintln!("stopped {took:?} after SIGTERM, during a slowed flush");
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("not done by the end of the shutdown drain"),
        "{log}"
    );
    assert!(!log.contains("delay over"), "{log}");
    // 4 s of drain, at most 1 s for the commit thread and the last
    // handle, 5 s to leave the group; the rest is margin.
    assert!(took < Duration::from_secs(20), "{took:?}:\n{log}");
    let next = env.worker("next", &[ONE]);
    env.wait_committed(&[&next]);
    next.stop();
    assert_windows(&env, &records);
    assert_incidents(&env, true);
}

/// Aggregates files that another file of the same directory covers (the
/// reader rule of compaction, [`vigil_store::compact::superseded`]): left
/// beside a later owner's by a flush that published after the move.
fn covered_files(env: &Env) -> Vec<String> {
    let mut out = Vec::new();
    for day in std::fs::read_dir(env.data().join("aggregates"))
        .into_iter()
        .flatten()
    {
        let names: Vec<String> = std::fs::read_dir(day.unwrap().path())
            .unwrap()
            .map(|f| f.unwrap().file_name().into_string().unwrap())
            .collect();
        for (n, c) in names.iter().zip(vigil_store::compact::superseded(&names)) {
            if c {
                out.push(n.clone());
            }
        }
    }
    out
}

/// Produces the first half of the fleet, starts worker `label` (one
/// member flushing every `interval`, `toml` added to its config) whose
/// first flush is slowed by `delay` after its first file is published,
/// and returns the fleet's records and the worker once that flush is
/// slowed.
fn slowed_first_flush(
    env: &Env,
    label: &str,
    delay: Duration,
    interval: &str,
    toml: &str,
) -> (Vec<(String, Vec<u8>)>, WorkerProc) {
    let records = fleet(AGENTS, 0..MINUTES);
    env.produce(&records[..records.len() / 2]);
    let arm = format!("flush.after_publish=delay{}@1", delay.as_millis());
    let w = env.worker_with_config(
        label,
        toml,
        &[
            ONE,
            ("VIGIL_FAILPOINTS", &arm),
            ("VIGIL_WORKER__FLUSH_INTERVAL", interval),
        ],
    );
    wait_for("the slowed flush", Duration::from_secs(60), &[&w], || {
        w.log().contains("failpoint flush.after_publish: hit 1")
    });
    (records, w)
}
