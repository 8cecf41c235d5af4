//! Processing time for replays.
//!
//! A live worker reads the wall clock. A replay (a file of batches, the
//! in-process demo) has no meaningful wall clock, so processing time is
//! reconstructed from the batches' send times, one vote per agent:
//!
//! - the clock keeps the latest send time of each of the last [`AGENTS`]
//!   distinct agents that sent a batch (an agent that sends many batches
//!   in a row still has one vote);
//! - the candidate time is the lower median of those votes;
//! - processing time is the greatest candidate so far: it never moves
//!   back, once at least [`QUORUM`] agents voted (before that, with one or
//!   two agents known, it follows the lower median, which may move back:
//!   a first batch from a wrong clock is then outvoted by the next agent).
//!
//! So agents with clocks ahead or behind, as long as they are a minority
//! of the recent agents, neither drag processing time forward (which would
//! close other agents' windows as idle and make their next points `late`)
//! nor hold it back (which would make honest points `future`), whatever
//! the interleaving. After a fleet-wide silence, processing time follows
//! once a majority of the recent agents (5 of 8) sent from after it; the
//! batches before that whose points are more than the allowed clock skew
//! ahead are refused as `future`, with their bytes kept in the dead
//! letters.
//!
//! A send time outside the pipeline's valid timestamps, or 0 (unset), is
//! not trusted and counted ([`ReplayClock::invalid`]); the batch votes with
//! its newest valid point timestamp instead (points are never newer than
//! their honest send time), or not at all. All arithmetic on times
//! saturates. The result is deterministic: the same input gives the same
//! idle timeouts, offline alerts and `future` refusals on every run.

use serde::{Deserialize, Serialize};

use crate::pipeline::VALID_TS;

/// Number of recent distinct agents whose send times vote.
pub const AGENTS: usize = 8;

/// Agents that must have voted before processing time stops moving back.
pub const QUORUM: usize = 3;

/// Processing time reconstructed from batch send times (see the module
/// docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayClock {
    /// (agent hash, latest send time) of the last [`AGENTS`] distinct
    /// agents, oldest first.
    votes: Vec<(u64, i64)>,
    now_ms: Option<i64>,
    /// Send times that were not trusted (0 or out of range).
    #[serde(default)]
    invalid: u64,
}

impl Default for ReplayClock {
    fn default() -> Self {
        ReplayClock::new()
    }
}

impl ReplayClock {
    /// A clock with no votes yet.
    pub fn new() -> Self {
        ReplayClock {
            votes: Vec::with_capacity(AGENTS),
            now_ms: None,
            invalid: 0,
        }
    }

    /// Current processing time, `None` before the first vote.
    pub fn now_ms(&self) -> Option<i64> {
        self.now_ms
    }

    /// Send times not trusted so far (0, unset, or outside the valid
    /// timestamps).
    pub fn invalid(&self) -> u64 {
        self.invalid
    }

    /// Feeds one batch of the agent whose identity hashes to `agent`: its
    /// send time, and (called only when the send time is not trusted) its
    /// newest point timestamp, which votes instead when it is itself
    /// valid. Returns the processing time to use for that batch (`None`
    /// while nothing valid was seen).
    pub fn observe(
        &mut self,
        agent: u64,
        sent_at_ms: i64,
        newest_point_ms: impl FnOnce() -> Option<i64>,
    ) -> Option<i64> {
        let valid = |t: i64| t > 0 && VALID_TS.contains(&t);
        let vote = if valid(sent_at_ms) {
            Some(sent_at_ms)
        } else {
            self.invalid += 1;
            newest_point_ms().filter(|t| valid(*t))
        };
        let Some(t) = vote else {
            return self.now_ms;
        };
        if let Some(i) = self.votes.iter().position(|(a, _)| *a == agent) {
            self.votes.remove(i);
        } else if self.votes.len() == AGENTS {
            self.votes.remove(0);
        }
        self.votes.push((agent, t));
        let mut sorted = [0i64; AGENTS];
        let n = self.votes.len();
        for (s, (_, t)) in sorted.iter_mut().zip(&self.votes) {
            *s = *t;
        }
        let sorted = &mut sorted[..n];
        sorted.sort_unstable();
        let candidate = sorted[(n - 1) / 2];
        self.now_ms = Some(match self.now_ms {
            Some(prev) if n >= QUORUM => prev.max(candidate),
            _ => candidate,
        });
        self.now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000_000;
    const MIN: i64 = 60_000;

    #[test]
    fn ignores_a_minority_far_ahead_even_when_first() {
        let mut c = ReplayClock::new();
        // The very first batch comes from an agent 15 min ahead.
        assert_eq!(c.observe(1, T + 15 * MIN, || None), Some(T + 15 * MIN));
        assert_eq!(
            c.observe(2, T, || None),
            Some(T),
            "a second agent outvotes it"
        );
        assert_eq!(c.observe(3, T + 10_000, || None), Some(T + 10_000));
        // It sends again and again: still one vote.
        for i in 0..10 {
            assert_eq!(c.observe(1, T + 20 * MIN + i, || None), Some(T + 10_000));
        }
        // An agent 20 min behind does not move it back.
        assert_eq!(c.observe(4, T - 20 * MIN, || None), Some(T + 10_000));
    }

    /// Issue 18 item 3: an agent ahead within the allowed skew moved the
    /// clock to its own send time (the greatest recent one within the
    /// skew of the median).
    #[test]
    fn an_agent_ahead_within_the_skew_does_not_move_it() {
        let mut c = ReplayClock::new();
        for a in 0..5 {
            c.observe(a, T, || None);
        }
        assert_eq!(c.observe(9, T + 4 * MIN, || None), Some(T));
        assert_eq!(c.observe(9, T + 4 * MIN + 1, || None), Some(T));
    }

    #[test]
    fn never_moves_back_after_the_quorum() {
        let mut c = ReplayClock::new();
        for a in 0..3 {
            c.observe(a, T + MIN, || None);
        }
        assert_eq!(c.now_ms(), Some(T + MIN));
        for a in 3..8 {
            assert_eq!(c.observe(a, T, || None), Some(T + MIN));
        }
    }

    /// After a fleet-wide silence the clock follows once a majority of
    /// the recent agents (5 of 8) sent from after it; not before.
    #[test]
    fn crosses_a_fleet_wide_silence_with_a_majority() {
        let mut c = ReplayClock::new();
        for a in 0..AGENTS as u64 {
            c.observe(a, T + a as i64 * 1000, || None);
        }
        let after = T + 60 * MIN;
        for a in 0..4 {
            assert!(
                c.observe(a, after + a as i64, || None) < Some(after),
                "agent {a}"
            );
        }
        assert_eq!(c.observe(4, after + 4, || None), Some(after));
    }

    #[test]
    fn untrusted_send_times_are_counted_and_replaced_by_a_valid_point() {
        let mut c = ReplayClock::new();
        assert_eq!(c.observe(1, -1, || None), None);
        assert_eq!(
            c.observe(1, 0, || Some(i64::MIN)),
            None,
            "unset, point invalid"
        );
        assert_eq!(c.observe(1, i64::MAX, || Some(i64::MAX)), None);
        assert_eq!(c.invalid(), 3);
        assert_eq!(
            c.observe(1, 0, || Some(T)),
            Some(T),
            "the newest valid point votes"
        );
        assert_eq!(c.observe(2, T + 1, || None), Some(T));
        assert_eq!(c.observe(2, i64::MAX, || None), Some(T));
        assert_eq!(c.invalid(), 5);
        assert_eq!(
            c.observe(3, *VALID_TS.end(), || None),
            Some(T + 1),
            "the last valid ms is one vote"
        );
    }

    #[test]
    fn a_year_9999_first_batch_is_outvoted() {
        let mut c = ReplayClock::new();
        assert_eq!(
            c.observe(1, *VALID_TS.end(), || None),
            Some(*VALID_TS.end())
        );
        assert_eq!(c.observe(2, T, || None), Some(T));
        assert_eq!(c.observe(3, T + 1, || None), Some(T + 1));
        assert_eq!(c.observe(1, *VALID_TS.end(), || None), Some(T + 1));
    }
}
