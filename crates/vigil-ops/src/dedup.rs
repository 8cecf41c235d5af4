//! Per-agent duplicate detection by sequence number.
//!
//! Agents resend a batch (same `seq`) when they did not see it acknowledged,
//! and a resent batch can arrive after newer ones. [`AntiReplay`] keeps the
//! highest sequence number seen and a bitmap of the `width` numbers below
//! it (the IPsec anti-replay window): a number in the window is a duplicate
//! iff its bit is set; a number below the window cannot be decided and is
//! reported as [`Verdict::TooOld`], never guessed at.
//!
//! An agent that restarts its numbering (reinstall, lost state) or one batch
//! with an absurd seq would otherwise be refused forever. So after
//! [`RESYNC_AFTER`] consecutive too-old batches with consecutive numbers,
//! the window restarts at the newest one ([`AntiReplay::note_too_old`]); the
//! batches before it stay refused (dead-lettered with their bytes).

/// Consecutive too-old, consecutively numbered batches that restart the
/// window (the last of them is accepted).
pub const RESYNC_AFTER: u8 = 3;

use serde::{Deserialize, Serialize};

/// Outcome of checking one sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen before; it is now recorded.
    New,
    /// Seen before: drop the batch.
    Duplicate,
    /// Below the window: cannot tell.
    TooOld,
}

/// Anti-replay window over one agent's sequence numbers. Memory is
/// `width / 8` bytes plus 40.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "AntiReplayRepr", into = "AntiReplayRepr")]
pub struct AntiReplay {
    /// Highest number accepted (meaningful when `has_highest`).
    highest: u64,
    /// Last too-old seq (meaningful when `resync_run > 0`).
    resync_seq: u64,
    /// Ring of `width` bits indexed by `seq % width`.
    bits: Box<[u64]>,
    /// How many consecutive too-old numbers led to `resync_seq`.
    resync_run: u8,
    /// Whether a number was accepted since the start or the last resync.
    has_highest: bool,
}

/// Serde form of [`AntiReplay`] (the checkpoint format).
#[derive(Serialize, Deserialize)]
struct AntiReplayRepr {
    highest: Option<u64>,
    bits: Box<[u64]>,
    #[serde(default)]
    resync: Option<(u64, u8)>,
}

impl From<AntiReplayRepr> for AntiReplay {
    fn from(r: AntiReplayRepr) -> Self {
        let (resync_seq, resync_run) = r.resync.filter(|&(_, n)| n > 0).unwrap_or((0, 0));
        AntiReplay {
            highest: r.highest.unwrap_or(0),
            resync_seq,
            bits: if r.bits.is_empty() {
                vec![0].into_boxed_slice()
            } else {
                r.bits
            },
            resync_run,
            has_highest: r.highest.is_some(),
        }
    }
}

impl From<AntiReplay> for AntiReplayRepr {
    fn from(a: AntiReplay) -> Self {
        AntiReplayRepr {
            highest: a.highest(),
            resync: (a.resync_run > 0).then_some((a.resync_seq, a.resync_run)),
            bits: a.bits,
        }
    }
}

impl AntiReplay {
    /// A window covering `width` sequence numbers (rounded up to 64).
    pub fn new(width: u32) -> Self {
        let words = (width as usize).div_ceil(64).max(1);
        AntiReplay {
            highest: 0,
            resync_seq: 0,
            bits: vec![0; words].into_boxed_slice(),
            resync_run: 0,
            has_highest: false,
        }
    }

    fn width(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    #[inline]
    fn bit(&self, seq: u64) -> bool {
        let i = seq % self.width();
        self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    #[inline]
    fn set(&mut self, seq: u64, on: bool) {
        let i = seq % self.width();
        let w = &mut self.bits[(i / 64) as usize];
        if on {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }

    /// Checks `seq` without recording it.
    pub fn check(&self, seq: u64) -> Verdict {
        match self.highest() {
            None => Verdict::New,
            Some(h) if seq > h => Verdict::New,
            Some(h) if h - seq >= self.width() => Verdict::TooOld,
            Some(_) if self.bit(seq) => Verdict::Duplicate,
            Some(_) => Verdict::New,
        }
    }

    /// Records `seq` as processed. Call only after [`AntiReplay::check`]
    /// returned [`Verdict::New`].
    pub fn record(&mut self, seq: u64) {
        self.resync_run = 0;
        self.resync_seq = 0;
        match self.highest() {
            Some(h) if seq <= h => self.set(seq, true),
            Some(h) => {
                let gap = seq - h;
                if gap >= self.width() {
                    self.bits.iter_mut().for_each(|w| *w = 0);
                } else {
                    for s in h + 1..seq {
                        self.set(s, false);
                    }
                }
                self.set(seq, true);
                self.highest = seq;
            }
            None => {
                self.set(seq, true);
                self.highest = seq;
                self.has_highest = true;
            }
        }
    }

    /// Notes a batch that [`AntiReplay::check`] found too old. Returns true
    /// when it completes a run of [`RESYNC_AFTER`] consecutive numbers: the
    /// window is then reset and the caller records `seq` as new.
    pub fn note_too_old(&mut self, seq: u64) -> bool {
        let run = if self.resync_run > 0 && self.resync_seq.checked_add(1) == Some(seq) {
            self.resync_run.saturating_add(1)
        } else {
            1
        };
        if run >= RESYNC_AFTER {
            self.has_highest = false;
            self.highest = 0;
            self.bits.iter_mut().for_each(|w| *w = 0);
            self.resync_run = 0;
            self.resync_seq = 0;
            true
        } else {
            self.resync_seq = seq;
            self.resync_run = run;
            false
        }
    }

    /// Highest sequence number recorded.
    #[inline]
    pub fn highest(&self) -> Option<u64> {
        self.has_highest.then_some(self.highest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed(a: &mut AntiReplay, seq: u64) -> Verdict {
        let v = a.check(seq);
        if v == Verdict::New {
            a.record(seq);
        }
        v
    }

    #[test]
    fn out_of_order_resends_are_duplicates() {
        let mut a = AntiReplay::new(64);
        assert_eq!(feed(&mut a, 10), Verdict::New);
        assert_eq!(feed(&mut a, 12), Verdict::New);
        assert_eq!(feed(&mut a, 11), Verdict::New);
        assert_eq!(feed(&mut a, 10), Verdict::Duplicate);
        assert_eq!(feed(&mut a, 12), Verdict::Duplicate);
        assert_eq!(feed(&mut a, 100), Verdict::New);
        assert_eq!(feed(&mut a, 36), Verdict::TooOld);
        assert_eq!(feed(&mut a, 37), Verdict::New);
        assert_eq!(feed(&mut a, 37), Verdict::Duplicate);
        assert_eq!(a.highest(), Some(100));
    }

    #[test]
    fn restarted_numbering_resyncs_after_three_consecutive() {
        let mut a = AntiReplay::new(64);
        for s in 5000..5010 {
            assert_eq!(feed(&mut a, s), Verdict::New);
        }
        // The agent restarts at 1.
        assert_eq!(a.check(1), Verdict::TooOld);
        assert!(!a.note_too_old(1));
        assert_eq!(a.check(2), Verdict::TooOld);
        assert!(!a.note_too_old(2));
        assert_eq!(a.check(3), Verdict::TooOld);
        assert!(a.note_too_old(3));
        a.record(3);
        assert_eq!(feed(&mut a, 4), Verdict::New);
        assert_eq!(feed(&mut a, 3), Verdict::Duplicate);
        // A lone old resend does not resync.
        assert_eq!(feed(&mut a, 100), Verdict::New);
        assert_eq!(a.check(40), Verdict::New, "within the window again");
        let mut b = AntiReplay::new(64);
        feed(&mut b, 1000);
        assert!(!b.note_too_old(10));
        assert!(!b.note_too_old(500));
        assert!(!b.note_too_old(11));
        assert_eq!(b.highest(), Some(1000));
    }

    proptest! {
        /// Within the window, the verdict equals a naive set membership test.
        #[test]
        fn matches_naive_set(seqs in proptest::collection::vec(0u64..400, 1..300)) {
            let mut a = AntiReplay::new(128);
            let mut seen = std::collections::BTreeSet::new();
            let mut highest: Option<u64> = None;
            for s in seqs {
                let v = feed(&mut a, s);
                let expect = match highest {
                    Some(h) if s <= h && h - s >= 128 => Verdict::TooOld,
                    _ if seen.contains(&s) => Verdict::Duplicate,
                    _ => Verdict::New,
                };
                prop_assert_eq!(v, expect);
                if v == Verdict::New {
                    seen.insert(s);
                    highest = Some(highest.map_or(s, |h| h.max(s)));
                }
            }
        }
    }
}
