//! Failpoints: named places in the commit protocol where a test can make
//! the process die, to check what a restart finds there.
//!
//! Debug builds read `VIGIL_FAILPOINTS` once, a comma-separated list of
//! `name=abort` (die at the first hit) or `name=abort@N` (die at the N-th
//! hit, N ≥ 1). Dying is `std::process::abort()`: no destructor runs,
//! no buffer is flushed, no offset is committed, as with SIGKILL.
//! Release builds compile [`hit`] to nothing, whatever the environment.
//!
//! Why not the `fail` crate: it switches failpoints on with a cargo
//! feature, so the test suite would build every crate a second time with
//! it; keyed on `debug_assertions`, the failpoints are in the debug binary
//! the tests already run and in no release build.
//!
//! The names (documented where they are hit):
//! - `flush.after_publish`: after the first file of a flush is published;
//! - `flush.after_acks`: after every alert and dead letter of a flush is
//!   acknowledged, before any checkpoint is written;
//! - `flush.after_checkpoint`: after the first partition's checkpoint of
//!   a flush is written;
//! - `flush.before_commit`: after every checkpoint of a flush, before the
//!   offsets are handed to the committer;
//! - `checkpoint.between_renames`: on a local disk, after an existing
//!   newest checkpoint became the previous one and before the new one
//!   takes its name (not passed for a partition's first checkpoint).

/// The environment variable read by debug builds.
pub const ENV: &str = "VIGIL_FAILPOINTS";

/// Passes failpoint `name`: in a debug build where `VIGIL_FAILPOINTS`
/// arms it, counts the hit and aborts the process at the armed one.
#[inline]
pub fn hit(name: &str) {
    #[cfg(debug_assertions)]
    armed::hit(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(debug_assertions)]
mod armed {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    /// Armed failpoints: the hit that aborts, and the hits so far.
    fn table() -> &'static HashMap<String, (u64, AtomicU64)> {
        static TABLE: OnceLock<HashMap<String, (u64, AtomicU64)>> = OnceLock::new();
        TABLE.get_or_init(|| {
            let spec = std::env::var(super::ENV).unwrap_or_default();
            parse(&spec)
                .unwrap_or_else(|e| panic!("{}={spec:?}: {e}", super::ENV))
                .into_iter()
                .map(|(name, at)| (name, (at, AtomicU64::new(0))))
                .collect()
        })
    }

    /// `name=abort[@N],...` as (name, N).
    pub(super) fn parse(spec: &str) -> Result<Vec<(String, u64)>, String> {
        spec.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                let (name, action) = item
                    .split_once('=')
                    .ok_or_else(|| format!("{item:?} is not name=abort[@N]"))?;
                let at = match action.strip_prefix("abort") {
                    Some("") => 1,
                    Some(n) => n
                        .strip_prefix('@')
                        .and_then(|n| n.parse::<u64>().ok())
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| format!("{item:?}: the hit must be @N with N >= 1"))?,
                    None => return Err(format!("{item:?}: the only action is abort")),
                };
                Ok((name.trim().to_string(), at))
            })
            .collect()
    }

    pub(super) fn hit(name: &str) {
        let Some((at, hits)) = table().get(name) else {
            return;
        };
        let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
        if n == *at {
            eprintln!("failpoint {name}: hit {n}, aborting the process");
            std::process::abort();
        }
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::armed::parse;

    #[test]
    fn spec_parses_and_bad_ones_are_named() {
        assert_eq!(
            parse(" flush.after_acks=abort , checkpoint.between_renames=abort@3").unwrap(),
            vec![
                ("flush.after_acks".to_string(), 1),
                ("checkpoint.between_renames".to_string(), 3)
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert!(parse("x").unwrap_err().contains("not name=abort"));
        assert!(parse("x=abort@0").unwrap_err().contains("N >= 1"));
        assert!(parse("x=panic").unwrap_err().contains("only action"));
        // Not armed: passing is a no-op.
        super::hit("not.armed");
    }
}
