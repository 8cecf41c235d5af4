//! Failpoints: named places in the commit protocol where a test can make
//! the process die, or freeze, to check what a restart (or a resumed
//! zombie) does there.
//!
//! Debug builds read `VIGIL_FAILPOINTS` once, a comma-separated list of
//! `name=action` (at the first hit) or `name=action@N` (at the N-th hit,
//! N ≥ 1), where the action is
//! - `abort`: `std::process::abort()`: no destructor runs, no buffer is
//!   flushed, no offset is committed, as with SIGKILL;
//! - `stop`: the process sends itself SIGSTOP (every thread freezes, as
//!   in a VM pause) and goes on where it stopped once it gets SIGCONT;
//! - `error`: the step fails with an error, as a failed write would (only
//!   where the code asks [`fails`]: `flush.error`);
//! - `delay<ms>` (e.g. `delay5000`): the thread that hit it sleeps that
//!   long, the others run on (a slow disk or store under one step).
//!
//! Release builds compile [`hit`] to nothing, whatever the environment.
//!
//! Why not the `fail` crate: it switches failpoints on with a cargo
//! feature, so the test suite would build every crate a second time with
//! it; keyed on `debug_assertions`, the failpoints are in the debug binary
//! the tests already run and in no release build.
//!
//! The names (documented where they are hit):
//! - `flush.before_publish`: on a member's publishing thread, when it
//!   takes a flush, before it checks the member still owns its
//!   partitions and publishes the first partition's files;
//! - `flush.after_intent`: after the first partition's intent record of
//!   a flush is written, before its files are published;
//! - `flush.after_publish`: after the first file of a flush is published;
//! - `flush.after_tick_publish`: after a tick file (output of processing
//!   time on a partition that received no record) is published, before
//!   its checkpoint;
//! - `flush.after_acks`: after every alert and dead letter of a flush is
//!   acknowledged, before any checkpoint is written;
//! - `flush.after_checkpoint`: after the first partition's checkpoint of
//!   a flush is written;
//! - `flush.before_commit`: after every checkpoint of a flush, before the
//!   offsets are handed to the committer;
//! - `checkpoint.after_state_file`: after a partition's state file is
//!   durable, before the checkpoint naming it is written;
//! - `checkpoint.between_renames`: on a local disk, after an existing
//!   newest checkpoint became the previous one and before the new one
//!   takes its name (not passed for a partition's first checkpoint);
//! - `flush.error`: at the start of a worker member's flush; with
//!   `error`, that flush (and so that member) fails.

/// The environment variable read by debug builds.
pub const ENV: &str = "VIGIL_FAILPOINTS";

/// Passes failpoint `name`: in a debug build where `VIGIL_FAILPOINTS`
/// arms it, counts the hit and aborts the process at the armed one.
#[inline]
pub fn hit(name: &str) {
    let _ = fails(name);
}

/// Passes failpoint `name` as [`hit`] does; `true` at the armed hit of an
/// `error` action, where the caller fails the step. Always `false` in
/// release builds.
#[inline]
pub fn fails(name: &str) -> bool {
    #[cfg(debug_assertions)]
    return armed::hit(name);
    #[cfg(not(debug_assertions))]
    {
        let _ = name;
        false
    }
}

#[cfg(debug_assertions)]
mod armed {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    /// What an armed failpoint does at its hit.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Action {
        /// Dies at once.
        Abort,
        /// Freezes the process until SIGCONT.
        Stop,
        /// Fails the step (where the code asks [`super::fails`]).
        Error,
        /// Sleeps this many milliseconds (the calling thread only).
        Delay(u64),
    }

    /// An armed failpoint: its action, the hit that triggers it, the hits
    /// so far.
    type Armed = (Action, u64, AtomicU64);

    /// Armed failpoints by name.
    fn table() -> &'static HashMap<String, Armed> {
        static TABLE: OnceLock<HashMap<String, Armed>> = OnceLock::new();
        TABLE.get_or_init(|| {
            let spec = std::env::var(super::ENV).unwrap_or_default();
            parse(&spec)
                .unwrap_or_else(|e| panic!("{}={spec:?}: {e}", super::ENV))
                .into_iter()
                .map(|(name, action, at)| (name, (action, at, AtomicU64::new(0))))
                .collect()
        })
    }

    /// `name=action[@N],...` as (name, action, N).
    pub(super) fn parse(spec: &str) -> Result<Vec<(String, Action, u64)>, String> {
        spec.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                let (name, action) = item
                    .split_once('=')
                    .ok_or_else(|| format!("{item:?} is not name=action[@N]"))?;
                let (action, at) = action.split_once('@').unwrap_or((action, "1"));
                let action = match action {
                    "abort" => Action::Abort,
                    "stop" => Action::Stop,
                    "error" => Action::Error,
                    a => match a.strip_prefix("delay").map(str::parse::<u64>) {
                        Some(Ok(ms)) => Action::Delay(ms),
                        _ => {
                            return Err(format!(
                                "{item:?}: the actions are abort, stop, error and delay<ms>"
                            ))
                        }
                    },
                };
                let at = at
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| format!("{item:?}: the hit must be @N with N >= 1"))?;
                Ok((name.trim().to_string(), action, at))
            })
            .collect()
    }

    /// Counts a hit of `name`; whether it is the armed hit of an `error`.
    pub(super) fn hit(name: &str) -> bool {
        let Some((action, at, hits)) = table().get(name) else {
            return false;
        };
        let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
        if n != *at {
            return false;
        }
        match action {
            Action::Error => {
                eprintln!("failpoint {name}: hit {n}, failing the step");
                return true;
            }
            Action::Abort => {
                eprintln!("failpoint {name}: hit {n}, aborting the process");
                std::process::abort();
            }
            Action::Stop => {
                eprintln!("failpoint {name}: hit {n}, stopping the process (SIGSTOP)");
                stop_self();
                eprintln!("failpoint {name}: continued");
            }
            Action::Delay(ms) => {
                eprintln!("failpoint {name}: hit {n}, delaying this thread {ms} ms");
                std::thread::sleep(std::time::Duration::from_millis(*ms));
                eprintln!("failpoint {name}: delay over");
            }
        }
        false
    }

    /// Sends SIGSTOP to this process; returns once it is continued.
    #[cfg(unix)]
    fn stop_self() {
        // SAFETY: raise(3) with a valid signal number has no memory
        // effects; SIGSTOP cannot be caught, so no handler runs.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }

    /// No job control outside Unix: the stop action dies instead.
    #[cfg(not(unix))]
    fn stop_self() {
        std::process::abort();
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::armed::parse;

    #[test]
    fn spec_parses_and_bad_ones_are_named() {
        use super::armed::Action::{Abort, Delay, Error, Stop};
        assert_eq!(
            parse(" flush.after_acks=abort , checkpoint.between_renames=abort@3, flush.before_publish=stop@2, flush.error=error@4, flush.after_publish=delay250@2")
                .unwrap(),
            vec![
                ("flush.after_acks".to_string(), Abort, 1),
                ("checkpoint.between_renames".to_string(), Abort, 3),
                ("flush.before_publish".to_string(), Stop, 2),
                ("flush.error".to_string(), Error, 4),
                ("flush.after_publish".to_string(), Delay(250), 2)
            ]
        );
        assert!(parse("x=delay").unwrap_err().contains("delay<ms>"));
        assert!(parse("x=delay-5").unwrap_err().contains("delay<ms>"));
        assert_eq!(parse("").unwrap(), vec![]);
        assert!(parse("x").unwrap_err().contains("not name=action"));
        assert!(parse("x=abort@0").unwrap_err().contains("N >= 1"));
        assert!(parse("x=stop@").unwrap_err().contains("N >= 1"));
        assert!(parse("x=panic")
            .unwrap_err()
            .contains("abort, stop, error and delay<ms>"));
        // Not armed: passing is a no-op.
        super::hit("not.armed");
        assert!(!super::fails("not.armed"));
    }
}
