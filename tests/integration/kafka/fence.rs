//! Fencing a zombie, against the real broker: a worker freezes in the
//! middle of a flush (the `flush.before_publish=stop` failpoint sends it
//! SIGSTOP, as a VM pause would) with processed records not yet
//! published. Its group session expires, a second worker takes its
//! partitions, restores its checkpoints and commits the whole stream.
//! Then the frozen worker gets SIGCONT and goes on exactly where it
//! stopped, about to publish files of ranges the new owner has published
//! and to write checkpoints older than the new owner's. It must find out
//! it is fenced first (docs/kafka.md "Fencing"): nothing of its stale
//! flush is published or checkpointed, and after it rejoins and the two
//! share the rest of the stream, the aggregates equal the oracle row for
//! row and the alert incidents are the designed ones.

use super::*;

/// The process state letter of `/proc/<pid>/stat` (`T`: stopped).
fn proc_state(w: &WorkerProc) -> Option<char> {
    let pid = w.child.as_ref()?.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

#[test]
fn kafka_a_paused_worker_is_fenced_before_it_publishes_and_nothing_duplicates() {
    let Some(env) = Env::new("fence") else {
        return;
    };
    let parts = [
        fleet(AGENTS, 0..40),
        fleet(AGENTS, 40..80),
        fleet(AGENTS, 80..MINUTES),
    ];
    env.produce(&parts[0]);
    // The zombie-to-be: its second flush with records freezes it before
    // anything of that flush is published.
    let zombie = env.worker(
        "zombie",
        &[
            ("VIGIL_FAILPOINTS", "flush.before_publish=stop@2"),
            ("VIGIL_WORKER__FLUSH_INTERVAL", "1s"),
            // One member: the failpoint's second hit is this one's
            // second flush (the chaos test pauses workers of several).
            ("VIGIL_WORKER__THREADS", "1"),
        ],
    );
    let watch = env.group_client();
    wait_for(
        "the first commit",
        Duration::from_secs(60),
        &[&zombie],
        || env.committed_by(&watch).iter().any(|&c| c >= 0),
    );
    env.produce(&parts[1]);
    wait_for("the freeze", Duration::from_secs(60), &[&zombie], || {
        proc_state(&zombie) == Some('T')
    });
    assert!(
        zombie
            .log()
            .contains("failpoint flush.before_publish: hit 2, stopping"),
        "{}",
        zombie.log()
    );
    // What the frozen worker has published so far: nothing may be added
    // by its stale flush.
    let frozen_files = aggregate_files(&env);
    // The zombie's session expires (6 s); the new owner takes every
    // partition, restores the zombie's checkpoints and commits the lot.
    let owner = env.worker("owner", &[("VIGIL_WORKER__THREADS", "1")]);
    env.wait_committed(&[&owner, &zombie]);
    let committed = env.committed();
    let owner_files = aggregate_files(&env);
    zombie.signal("-CONT");
    // It fences itself, or librdkafka, whose session timer ran out while
    // the process was stopped, revokes the partitions as lost first (which
    // of the two depends on thread timing after the resume; docs/kafka.md
    // "Fencing"): either way before anything stale is published.
    wait_for(
        "the zombie to fence itself",
        Duration::from_secs(60),
        &[&zombie],
        || gave_up(&zombie.log()),
    );
    let log = zombie.log();
    assert!(
        log.contains("failpoint flush.before_publish: continued"),
        "{log}"
    );
    // Nothing of the stale flush: no file, and the group's offsets and
    // the newest checkpoints are still the owner's.
    let after = aggregate_files(&env);
    let new: Vec<&String> = after.difference(&owner_files).collect();
    assert!(new.is_empty(), "the fenced worker published {new:?}\n{log}");
    assert!(frozen_files.is_subset(&after));
    assert_eq!(env.committed(), committed);
    // The zombie rejoins; the two share the rest of the stream.
    env.produce(&parts[2]);
    env.wait_committed(&[&owner, &zombie]);
    let zombie_metrics = zombie.metrics();
    let (lz, lo) = (zombie.stop(), owner.stop());
    assert!(
        zombie_metrics.lines().any(|l| {
            (l.starts_with("vigil_worker_fenced_total{")
                || (l.starts_with("vigil_worker_partitions_revoked_total{")
                    && l.contains("lost=\"true\"")))
                && !l.ends_with(" 0")
        }),
        "{zombie_metrics}"
    );
    for l in lz.lines().chain(lo.lines()).filter(|l| {
        l.contains("fenced")
            || l.contains("confirming it still owns")
            || l.contains("restored the partition")
            || l.contains("removed output")
    }) {
        eprintln!("{l}");
    }
    let all: Vec<_> = parts.iter().flatten().cloned().collect();
    assert_windows(&env, &all);
    assert_incidents(&env, true);
}

/// Whether the worker log shows it gave up its partitions after the
/// resume: a `fenced` line, or a partition revoked as lost (the log's
/// colour codes removed).
fn gave_up(log: &str) -> bool {
    let plain = plain(log);
    let after = match plain.find("failpoint flush.before_publish: continued") {
        Some(i) => &plain[i..],
        None => return false,
    };
    after.contains("fenced: this worker no longer owns its partitions")
        || after.lines().any(|l| {
            l.contains("partition revoked; unflushed work dropped") && l.contains("lost=true")
        })
}

/// The names of the published aggregates files.
fn aggregate_files(env: &Env) -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.insert(p.display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&env.data().join("aggregates"), &mut out);
    out
}

/// `gave_up` on the two endings of a resume, as the worker logs them
/// (with colour codes; the lost-assignment one is from a CI run under
/// load).
#[test]
fn a_lost_revocation_or_a_fence_after_the_resume_counts_as_giving_up() {
    let e = "\u{1b}";
    let resumed = "failpoint flush.before_publish: continued\n";
    let lost = format!(
        "{e}[2m2026-12-06T01:01:47.568320Z{e}[0m {e}[32m INFO{e}[0m {e}[2mvigil::worker{e}[0m{e}[2m:{e}[0m \
         partition revoked; unflushed work dropped {e}[3mpartition{e}[0m{e}[2m={e}[0m0 \
         {e}[3mlost{e}[0m{e}[2m={e}[0mtrue {e}[3mdropped{e}[0m{e}[2m={e}[0m0\n"
    );
    let rebalanced = lost.replace("true", "false");
    let fenced = format!(
        "{e}[33m WARN{e}[0m fenced: this worker no longer owns its partitions; their unflushed work is dropped\n"
    );
    assert!(gave_up(&format!("{resumed}{lost}")));
    assert!(gave_up(&format!("{resumed}{fenced}")));
    // Not before the resume, and not a plain rebalance.
    assert!(!gave_up(&format!("{lost}{resumed}")));
    assert!(!gave_up(&format!("{resumed}{rebalanced}")));
}
