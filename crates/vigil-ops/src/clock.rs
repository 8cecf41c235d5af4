//! Processing time for replays.
//!
//! A live worker reads the wall clock. A replay (a file of batches, the
//! in-process demo) has no meaningful wall clock, so processing time is
//! reconstructed from the batches' `sent_at_ms`: the clock is the greatest
//! send time seen, where a send time more than the allowed clock skew ahead
//! of the clock is ignored (that agent's clock is wrong, and it must not drag
//! everyone's processing time forward). The result is deterministic: the
//! same input gives the same idle timeouts, offline alerts and `future`
//! rejections on every run.

use serde::{Deserialize, Serialize};

/// Processing time reconstructed from batch send times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayClock {
    now_ms: Option<i64>,
    max_jump_ms: i64,
}

impl ReplayClock {
    /// A clock that ignores send times more than `max_jump_ms` ahead.
    pub fn new(max_jump_ms: i64) -> Self {
        ReplayClock {
            now_ms: None,
            max_jump_ms,
        }
    }

    /// Current processing time, `None` before the first batch.
    pub fn now_ms(&self) -> Option<i64> {
        self.now_ms
    }

    /// Feeds one batch's send time and returns the processing time to use
    /// for that batch.
    pub fn observe(&mut self, sent_at_ms: i64) -> i64 {
        match self.now_ms {
            None => {
                self.now_ms = Some(sent_at_ms);
                sent_at_ms
            }
            Some(now) => {
                if sent_at_ms > now && sent_at_ms - now <= self.max_jump_ms {
                    self.now_ms = Some(sent_at_ms);
                    sent_at_ms
                } else {
                    now
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_clocks_far_ahead_and_never_goes_back() {
        let mut c = ReplayClock::new(300_000);
        assert_eq!(c.observe(1_000_000), 1_000_000);
        assert_eq!(c.observe(1_060_000), 1_060_000);
        // an agent 15 min ahead does not move the clock
        assert_eq!(c.observe(1_060_000 + 900_000), 1_060_000);
        // an agent 20 min behind does not move it back
        assert_eq!(c.observe(1_060_000 - 1_200_000), 1_060_000);
        assert_eq!(c.now_ms(), Some(1_060_000));
    }
}
