//! Processing time for replays.
//!
//! A live worker reads the wall clock. A replay (a file of batches, the
//! in-process demo) has no meaningful wall clock, so processing time is
//! reconstructed from the batches' `sent_at_ms`:
//!
//! - the clock keeps the send times of the last [`RING`] batches;
//! - it reads as the greatest of them that is not more than the allowed
//!   clock skew ahead of their median.
//!
//! So an agent whose clock runs far ahead (a minority of recent batches)
//! never drags processing time forward, not even when its batch comes
//! first; a fleet-wide silence (an outage, two captures joined) is crossed
//! as soon as most recent batches agree on the new time (the first few
//! batches after it are refused as `future`, with their bytes kept in the
//! dead letters); and the result is
//! deterministic: the same input gives the same idle timeouts, offline
//! alerts and `future` refusals on every run. Send times outside
//! [`VALID_TS`], and 0 (unset), are ignored. Until a second batch arrives,
//! the first one alone defines processing time.

use serde::{Deserialize, Serialize};

use crate::pipeline::VALID_TS;

/// Number of recent send times the clock looks at.
pub const RING: usize = 8;

/// Processing time reconstructed from batch send times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayClock {
    recent: Vec<i64>,
    next: usize,
    max_jump_ms: i64,
    now_ms: Option<i64>,
}

impl ReplayClock {
    /// A clock that ignores send times more than `max_jump_ms` ahead of
    /// the median of recent ones.
    pub fn new(max_jump_ms: i64) -> Self {
        ReplayClock {
            recent: Vec::with_capacity(RING),
            next: 0,
            max_jump_ms,
            now_ms: None,
        }
    }

    /// Current processing time, `None` before the first valid send time.
    pub fn now_ms(&self) -> Option<i64> {
        self.now_ms
    }

    /// Feeds one batch's send time and returns the processing time to use
    /// for that batch (`None` until a valid send time was seen).
    pub fn observe(&mut self, sent_at_ms: i64) -> Option<i64> {
        if sent_at_ms > 0 && VALID_TS.contains(&sent_at_ms) {
            if self.recent.len() < RING {
                self.recent.push(sent_at_ms);
            } else {
                self.recent[self.next] = sent_at_ms;
            }
            self.next = (self.next + 1) % RING;
            let mut sorted = [0i64; RING];
            let n = self.recent.len();
            sorted[..n].copy_from_slice(&self.recent);
            let sorted = &mut sorted[..n];
            sorted.sort_unstable();
            let limit = sorted[(n - 1) / 2].saturating_add(self.max_jump_ms);
            self.now_ms = sorted.iter().rev().find(|s| **s <= limit).copied();
        }
        self.now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000_000;

    #[test]
    fn ignores_a_minority_far_ahead_even_when_first() {
        let mut c = ReplayClock::new(300_000);
        // The very first batch comes from an agent 15 min ahead.
        assert_eq!(c.observe(T + 900_000), Some(T + 900_000));
        assert_eq!(c.observe(T), Some(T), "two honest batches outvote it");
        assert_eq!(c.observe(T + 10_000), Some(T + 10_000));
        assert_eq!(c.observe(T + 20_000 + 900_000), Some(T + 10_000));
        // An agent 20 min behind does not move it back.
        assert_eq!(c.observe(T - 1_200_000), Some(T + 10_000));
    }

    #[test]
    fn crosses_a_fleet_wide_silence() {
        let mut c = ReplayClock::new(300_000);
        for i in 0..RING as i64 {
            c.observe(T + i * 1000);
        }
        let after = T + 3_600_000;
        let mut now = None;
        for i in 0..RING as i64 {
            now = c.observe(after + i * 1000);
        }
        assert_eq!(now, Some(after + (RING as i64 - 1) * 1000));
    }

    #[test]
    fn ignores_invalid_send_times() {
        let mut c = ReplayClock::new(300_000);
        assert_eq!(c.observe(-1), None);
        assert_eq!(c.observe(0), None, "unset");
        assert_eq!(c.observe(i64::MAX), None);
        assert_eq!(c.observe(T), Some(T));
        assert_eq!(c.observe(i64::MAX), Some(T));
    }
}
