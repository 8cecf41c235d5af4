//! Per-agent duplicate detection by sequence number, and agent restarts.
//!
//! Agents resend a batch (same `seq`) when they did not see it acknowledged,
//! and a resent batch can arrive after newer ones. [`AntiReplay`] keeps the
//! highest sequence number seen and a bitmap of the `width` numbers below
//! it (the IPsec anti-replay window): a number in the window is a duplicate
//! iff its bit is set; a number below the window cannot be decided and is
//! reported as [`Verdict::TooOld`], never guessed at.
//!
//! Agents also restart their numbering (a reboot, a reinstall, lost state).
//! [`AgentDedup`] is what the pipeline keeps per agent and tells a restart
//! from a resend in three ways, in this order:
//!
//! - **Boot id** (`TelemetryBatch.boot_id`, 0 = not sent). Each boot id has
//!   its own window (a *session*). A batch with a new boot id starts a new
//!   session ([`RestartCause::BootId`]); the session it replaces is kept as
//!   the *previous* one, so a retried batch of the old boot that arrives
//!   after the new boot's first batches is judged in the old boot's own
//!   window (accepted if unseen there, dropped if seen) and never resets
//!   anything. The two most recently *used* boot ids are remembered (a
//!   batch of the previous boot makes it the current one again, a swap,
//!   no reset): a boot id that is neither starts a new session and
//!   forgets the least recently used one. Random ids cannot be ordered, so
//!   this is the rule that keeps the live boot's window whatever stale
//!   batches arrive: it is evicted only by two different stale boots in a
//!   row, which needs three restarts within the retry horizon.
//! - **Send time and content tag**, for agents that send no boot id
//!   (session 0). The window also keeps the latest `sent_at_ms` recorded,
//!   the last number recorded and a [`TAG_BITS`]-bit tag ([`tag_of`] of a
//!   content hash, see `decode::content_hash`) of each of the numbers
//!   `0..`[`TAGGED_SEQS`], the ones a restart reuses first. A resend is
//!   the same record, send time included, so a batch sent after every
//!   batch recorded cannot be a resend: a seen number that comes with a
//!   later send time is a restart ([`RestartCause::Content`]), and so is a
//!   seen number below [`TAGGED_SEQS`] whose tag differs from the one
//!   recorded (a restart whose clock went back). At a restart every number
//!   seen is forgotten, so the new numbering takes them over, but the last
//!   one recorded when its number is lower (an agent that restarts from 0
//!   after numbering from 1 shows the restart only at its second batch).
//!   A number below the window that comes with a later send time is a
//!   restart too, taken at once: the window starts afresh at it.
//!   Limits (see docs/semantics.md): a restart whose clock went back shows
//!   only at a reused number below [`TAGGED_SEQS`] whose tag differs (1
//!   in 8 collide: the next such number shows it); a straggler of an older
//!   numbering delivered after the new numbering reused its number is
//!   dropped unless its tag shows it; a resend of a batch recorded before
//!   the restart showed is accepted again.
//! - **Resync**: a number below the window cannot be judged; after
//!   [`RESYNC_AFTER`] consecutive too-old batches with consecutive numbers,
//!   the window restarts at the newest one ([`RestartCause::SeqResync`]);
//!   the batches before it stay refused (dead-lettered with their bytes).
//!
//! Memory per agent: [`AgentDedup`] is 72 bytes inline, plus `width / 8`
//! bytes of bitmap per session (128 at the default width of 1,024), plus
//! 24 bytes of tags for a session without boot id (it was 512 bytes of
//! tags and "current" bits for every slot of the window before checkpoint
//! format 7), plus one more session (boxed, 64 bytes + its bitmap) once the
//! agent restarted with a boot id. Event time (watermarks, windows) is not
//! touched by a restart: points are judged by their timestamps whatever
//! session they came in.

use serde::{Deserialize, Serialize};

/// Consecutive too-old, consecutively numbered batches that restart the
/// window (the last of them is accepted).
pub const RESYNC_AFTER: u8 = 3;

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

/// Why an agent's numbering was found to restart. One stable string per
/// variant: the metric label (`reason`) and the log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartCause {
    /// A boot id the agent's state did not remember.
    BootId,
    /// No boot id; a seen number came with a batch of other content.
    Content,
    /// No way to tell: [`RESYNC_AFTER`] consecutive batches below the window.
    SeqResync,
}

impl RestartCause {
    /// Every cause, in a stable order (for metrics pre-registration and docs).
    pub const ALL: [RestartCause; 3] = [
        RestartCause::BootId,
        RestartCause::Content,
        RestartCause::SeqResync,
    ];

    /// The stable name: metric label value, log field.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartCause::BootId => "boot_id",
            RestartCause::Content => "content",
            RestartCause::SeqResync => "seq_resync",
        }
    }

    /// Index into [`RestartCause::ALL`], for per-cause counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What [`AgentDedup::observe`] decided about one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accept the batch (it is now recorded); `Some` when it showed that
    /// the agent restarted its numbering.
    Accept(Option<RestartCause>),
    /// Seen before in its session: drop the batch.
    Duplicate,
    /// Below its session's window: refuse it as `seq_too_old`.
    TooOld {
        /// The session's highest number.
        highest: u64,
    },
}

/// Bits of content tag a tagged number keeps (see [`tag_of`]).
pub const TAG_BITS: u32 = 3;

/// How many numbers at the start of a numbering keep a content tag
/// (`0..TAGGED_SEQS`): the numbers a restart reuses first.
pub const TAGGED_SEQS: u64 = 64;

/// The content tag a number keeps: the top [`TAG_BITS`] bits of a 64-bit
/// content hash.
#[inline]
pub fn tag_of(hash: u64) -> u8 {
    (hash >> (64 - TAG_BITS)) as u8
}

/// Mask of a tag's bits.
const TAG_MASK: u8 = (1 << TAG_BITS) - 1;

/// In the checkpoint form of format 6 and before, a slot's tag byte: bit 7
/// "written since the last restart detected", the tag in the bits just
/// below it (bits 4–6 with 3 tag bits; 7-bit tags in bits 0–6 read as
/// their top bits, which is what [`tag_of`] keeps).
const REPR_CURRENT: u8 = 0x80;
const REPR_TAG_SHIFT: u32 = 7 - TAG_BITS;

/// Anti-replay window over one session's sequence numbers. A window of a
/// session without boot id (*tagged*) also keeps the latest send time
/// recorded, the last number recorded and a content tag for each of the
/// numbers `0..TAGGED_SEQS` (three bit planes of one word). Memory: 56
/// bytes inline plus `width / 8` (the seen bitmap: 128 bytes at the
/// default width of 1,024), plus 24 when tagged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AntiReplayRepr", into = "AntiReplayRepr")]
pub struct AntiReplay {
    /// Highest number accepted (meaningful when `has_highest`).
    highest: u64,
    /// Last too-old seq (meaningful when `resync_run > 0`).
    resync_seq: u64,
    /// The seen bitmap (`width` bits, indexed by `seq % width`), then for
    /// a tagged window [`TAG_BITS`] words: bit `b` of tag word `i` is bit
    /// `i` of the tag of number `b` (`b < TAGGED_SEQS`).
    bits: Box<[u64]>,
    /// Last number recorded in a tagged window (meaningful when `has_last`).
    last: u64,
    /// Latest `sent_at_ms` recorded in a tagged window (`i64::MIN`: none).
    max_sent: i64,
    /// How many consecutive too-old numbers led to `resync_seq`.
    resync_run: u8,
    /// Whether a number was accepted since the start or the last resync.
    has_highest: bool,
    /// Whether `last` is set.
    has_last: bool,
    /// Whether `bits` holds the tag words.
    tagged: bool,
}

/// Serde form of [`AntiReplay`] (the checkpoint format).
#[derive(Serialize, Deserialize)]
struct AntiReplayRepr {
    highest: Option<u64>,
    bits: Box<[u64]>,
    #[serde(default)]
    resync: Option<(u64, u8)>,
    /// Last number recorded (tagged windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<u64>,
    /// Latest send time recorded (tagged windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_sent: Option<i64>,
    /// Tags of the numbers `0..TAGGED_SEQS` (tagged windows, checkpoint
    /// format 7 on): [`TAG_BITS`] words, word `i` holding bit `i` of each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    low_tags: Option<Vec<u64>>,
    /// Format 6 and before: one byte per slot as lower-case hex (two
    /// characters per slot), bit 7 "current", the tag below it (see
    /// `REPR_TAG_SHIFT`). Read, never written.
    #[serde(default, skip_serializing)]
    tags: Option<String>,
}

/// A checkpointed window that cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid anti-replay window in checkpoint: {0}")]
pub struct ReprError(String);

fn hex_decode(s: &str) -> Result<Vec<u8>, ReprError> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err(ReprError("tags: odd number of hex digits".into()));
    }
    let digit = |c: u8| -> Result<u8, ReprError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(ReprError(format!(
                "tags: {:?} is not a hex digit",
                c as char
            ))),
        }
    };
    b.chunks_exact(2)
        .map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

impl TryFrom<AntiReplayRepr> for AntiReplay {
    type Error = ReprError;

    fn try_from(r: AntiReplayRepr) -> Result<Self, ReprError> {
        let (resync_seq, resync_run) = r.resync.filter(|&(_, n)| n > 0).unwrap_or((0, 0));
        let seen = if r.bits.is_empty() {
            vec![0].into_boxed_slice()
        } else {
            r.bits
        };
        let mut a = AntiReplay {
            highest: r.highest.unwrap_or(0),
            resync_seq,
            bits: seen,
            last: r.last.unwrap_or(0),
            max_sent: r.max_sent.unwrap_or(i64::MIN),
            resync_run,
            has_highest: r.highest.is_some(),
            has_last: r.last.is_some(),
            tagged: false,
        };
        if let Some(words) = r.low_tags {
            if words.len() != TAG_BITS as usize {
                return Err(ReprError(format!(
                    "{} tag words, expected {TAG_BITS}",
                    words.len()
                )));
            }
            a.add_tag_words();
            let n = a.words();
            a.bits[n..].copy_from_slice(&words);
        } else if let Some(h) = r.tags {
            // Format 6 and before: a tag and a "current" bit per slot.
            let bytes = hex_decode(&h)?;
            let width = a.bits.len() * 64;
            if bytes.len() != width {
                return Err(ReprError(format!(
                    "{} tags for a window of {width} numbers",
                    bytes.len()
                )));
            }
            a.add_tag_words();
            for (slot, &b) in bytes.iter().enumerate() {
                let seq = slot as u64;
                if b & REPR_CURRENT == 0 {
                    // Written before the last restart detected: the next
                    // batch with this number was to take it over, which an
                    // unseen number does.
                    a.set(seq, false);
                }
                if seq < TAGGED_SEQS && a.holds(seq) {
                    a.put_tag(seq, (b >> REPR_TAG_SHIFT) & TAG_MASK);
                }
            }
        }
        Ok(a)
    }
}

impl From<AntiReplay> for AntiReplayRepr {
    fn from(a: AntiReplay) -> Self {
        let words = a.words();
        let mut bits = a.bits.into_vec();
        let low_tags = a.tagged.then(|| bits.split_off(words));
        AntiReplayRepr {
            highest: a.has_highest.then_some(a.highest),
            resync: (a.resync_run > 0).then_some((a.resync_seq, a.resync_run)),
            last: a.has_last.then_some(a.last),
            max_sent: (a.max_sent != i64::MIN).then_some(a.max_sent),
            low_tags,
            tags: None,
            bits: bits.into_boxed_slice(),
        }
    }
}

impl AntiReplay {
    /// A window covering `width` sequence numbers (rounded up to 64),
    /// without content tags.
    pub fn new(width: u32) -> Self {
        let words = (width as usize).div_ceil(64).max(1);
        AntiReplay {
            highest: 0,
            resync_seq: 0,
            bits: vec![0; words].into_boxed_slice(),
            last: 0,
            max_sent: i64::MIN,
            resync_run: 0,
            has_highest: false,
            has_last: false,
            tagged: false,
        }
    }

    /// A window like [`AntiReplay::new`] that also keeps the send time,
    /// the last number and the tags of the numbers `0..TAGGED_SEQS`.
    pub fn new_tagged(width: u32) -> Self {
        let mut a = AntiReplay::new(width);
        a.add_tag_words();
        a
    }

    /// Appends the (zeroed) tag words.
    fn add_tag_words(&mut self) {
        let mut v = std::mem::take(&mut self.bits).into_vec();
        v.resize(v.len() + TAG_BITS as usize, 0);
        self.bits = v.into_boxed_slice();
        self.tagged = true;
    }

    /// Whether the window keeps content tags.
    pub fn is_tagged(&self) -> bool {
        self.tagged
    }

    /// Words of the seen bitmap.
    #[inline]
    fn words(&self) -> usize {
        self.bits.len() - if self.tagged { TAG_BITS as usize } else { 0 }
    }

    fn width(&self) -> u64 {
        self.words() as u64 * 64
    }

    /// Word index and bit mask of number `seq` in the seen bitmap.
    #[inline]
    fn locate(&self, seq: u64) -> (usize, u64) {
        let i = seq % self.width();
        ((i / 64) as usize, 1 << (i % 64))
    }

    #[inline]
    fn bit(&self, seq: u64) -> bool {
        let (w, m) = self.locate(seq);
        self.bits[w] & m != 0
    }

    #[inline]
    fn set(&mut self, seq: u64, on: bool) {
        let (w, m) = self.locate(seq);
        if on {
            self.bits[w] |= m;
        } else {
            self.bits[w] &= !m;
        }
    }

    /// Whether `seq` is inside the window (at or below the highest and
    /// less than `width` below it).
    fn holds(&self, seq: u64) -> bool {
        self.highest()
            .is_some_and(|h| seq <= h && h - seq < self.width())
    }

    /// The tag recorded for number `seq` (tagged windows, `seq <
    /// TAGGED_SEQS`, meaningful while `seq` is seen).
    fn tag(&self, seq: u64) -> Option<u8> {
        if !self.tagged || seq >= TAGGED_SEQS {
            return None;
        }
        let n = self.words();
        Some((0..TAG_BITS as usize).fold(0u8, |t, i| {
            t | (u8::from(self.bits[n + i] >> seq & 1 != 0) << i)
        }))
    }

    /// Keeps `tag` for number `seq` (tagged windows, `seq < TAGGED_SEQS`;
    /// a no-op otherwise).
    fn put_tag(&mut self, seq: u64, tag: u8) {
        if !self.tagged || seq >= TAGGED_SEQS {
            return;
        }
        let n = self.words();
        for i in 0..TAG_BITS as usize {
            let w = &mut self.bits[n + i];
            if tag >> i & 1 != 0 {
                *w |= 1 << seq;
            } else {
                *w &= !(1 << seq);
            }
        }
    }

    /// The seen bits.
    fn seen_mut(&mut self) -> &mut [u64] {
        let words = self.words();
        &mut self.bits[..words]
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
                    self.seen_mut().iter_mut().for_each(|w| *w = 0);
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

    /// [`AntiReplay::record`], keeping the send time, the number as the
    /// last one and `tag` (for a number below [`TAGGED_SEQS`]) when the
    /// window is tagged.
    pub fn record_tagged(&mut self, seq: u64, tag: u8, sent_at_ms: i64) {
        self.record(seq);
        if self.tagged {
            self.max_sent = self.max_sent.max(sent_at_ms);
            self.put_tag(seq, tag & TAG_MASK);
            self.last = seq;
            self.has_last = true;
        }
    }

    /// Forgets every number seen before the restart that number `seq`
    /// shows (one pass over the bitmap per detected restart), so the new
    /// numbering takes them over; but the last one recorded stays seen
    /// when it is below `seq`: an agent that restarts from 0 after
    /// numbering from 1 shows it only at its second batch, and the first
    /// must keep dropping its resends.
    fn forget_before_restart(&mut self, seq: u64) {
        let keep = (self.has_last && self.last < seq && self.holds(self.last)).then_some(self.last);
        self.seen_mut().iter_mut().for_each(|w| *w = 0);
        if let Some(l) = keep {
            self.set(l, true);
        }
    }

    /// Starts the window afresh: nothing seen, no highest.
    fn reset(&mut self) {
        self.has_highest = false;
        self.highest = 0;
        self.seen_mut().iter_mut().for_each(|w| *w = 0);
        self.resync_run = 0;
        self.resync_seq = 0;
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
            self.reset();
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

/// One remembered boot of an agent: its id and its window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    boot: u64,
    win: AntiReplay,
}

/// Per-agent dedup state: the current session (boot id and window) and
/// the previous one. See the module docs for the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDedup {
    /// Boot id of the current session (0: the agent sends none).
    boot: u64,
    /// Window of the current session (tagged iff `boot == 0`).
    win: AntiReplay,
    /// The previously used session, once the agent changed boot ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev: Option<Box<Session>>,
}

impl AgentDedup {
    /// State of an agent not seen yet, with windows of `width` numbers.
    /// Its first batch names the first session (no restart counted).
    pub fn new(width: u32) -> Self {
        AgentDedup {
            boot: 0,
            win: AntiReplay::new(width),
            prev: None,
        }
    }

    fn window_for(&self, boot: u64) -> AntiReplay {
        let width = self.win.width() as u32;
        if boot == 0 {
            AntiReplay::new_tagged(width)
        } else {
            AntiReplay::new(width)
        }
    }

    /// Judges batch `seq` of boot `boot` (0 = not sent) and records it when
    /// accepted. `hash` gives the batch's content hash; it is called only
    /// for sessions without boot id, at most once.
    ///
    /// Without boot id, `sent_at_ms` shows most restarts: a batch sent
    /// after every batch recorded in its session cannot be a resend of one
    /// of them (a resend is the same record, send time included), so a
    /// seen or too-old number that comes with one is a restart; the tags
    /// of the numbers below [`TAGGED_SEQS`] show a restart whose clock
    /// went back.
    pub fn observe(
        &mut self,
        boot: u64,
        seq: u64,
        sent_at_ms: i64,
        hash: impl FnOnce() -> u64,
    ) -> Outcome {
        let mut restart = None;
        if boot != self.boot {
            match self.prev.as_deref_mut() {
                Some(p) if p.boot == boot => {
                    std::mem::swap(&mut self.boot, &mut p.boot);
                    std::mem::swap(&mut self.win, &mut p.win);
                }
                _ if self.win.highest().is_none() && self.win.resync_run == 0 => {
                    // Nothing recorded yet: name the session.
                    self.win = self.window_for(boot);
                    self.boot = boot;
                }
                _ => {
                    let win = self.window_for(boot);
                    let old = Session {
                        boot: std::mem::replace(&mut self.boot, boot),
                        win: std::mem::replace(&mut self.win, win),
                    };
                    match self.prev.as_deref_mut() {
                        Some(p) => *p = old,
                        None => self.prev = Some(Box::new(old)),
                    }
                    restart = Some(RestartCause::BootId);
                }
            }
        } else if self.boot == 0 && !self.win.is_tagged() {
            // The very first batch, without boot id.
            self.win = self.window_for(0);
        }
        let win = &mut self.win;
        if !win.is_tagged() {
            // A boot id decides: the content is not looked at.
            return match win.check(seq) {
                Verdict::New => {
                    win.record(seq);
                    Outcome::Accept(restart)
                }
                Verdict::Duplicate => Outcome::Duplicate,
                Verdict::TooOld if win.note_too_old(seq) => {
                    win.record(seq);
                    Outcome::Accept(Some(RestartCause::SeqResync))
                }
                Verdict::TooOld => Outcome::TooOld {
                    highest: win.highest().unwrap_or(0),
                },
            };
        }
        // No boot id: a batch sent after every batch recorded cannot be a
        // resend of one of them (a resend is the same record, send time
        // included); the tags of the first numbers catch a restart whose
        // clock went back.
        let later = sent_at_ms > win.max_sent;
        let mut hash = Some(hash);
        let mut tag = || (seq < TAGGED_SEQS).then(|| tag_of(hash.take().map_or(0, |h| h())));
        match win.check(seq) {
            Verdict::New => {
                let t = tag();
                win.record_tagged(seq, t.unwrap_or(0), sent_at_ms);
                Outcome::Accept(restart)
            }
            Verdict::Duplicate => {
                let t = tag();
                let other = matches!((t, win.tag(seq)), (Some(new), Some(old)) if new != old);
                if later || other {
                    // A reused number: the agent restarted its numbering,
                    // and every number seen belongs to the old one.
                    win.forget_before_restart(seq);
                    win.record_tagged(seq, t.unwrap_or(0), sent_at_ms);
                    Outcome::Accept(Some(RestartCause::Content))
                } else {
                    Outcome::Duplicate
                }
            }
            Verdict::TooOld if later => {
                // Below the window and sent after everything recorded: a
                // restart, taken at once (no resync run needed).
                win.reset();
                let t = tag();
                win.record_tagged(seq, t.unwrap_or(0), sent_at_ms);
                Outcome::Accept(Some(RestartCause::Content))
            }
            Verdict::TooOld => {
                if win.note_too_old(seq) {
                    let t = tag();
                    win.record_tagged(seq, t.unwrap_or(0), sent_at_ms);
                    Outcome::Accept(Some(RestartCause::SeqResync))
                } else {
                    Outcome::TooOld {
                        highest: win.highest().unwrap_or(0),
                    }
                }
            }
        }
    }

    /// Boot id of the current session (0: none).
    pub fn boot(&self) -> u64 {
        self.boot
    }

    /// Highest number of the current session.
    pub fn highest(&self) -> Option<u64> {
        self.win.highest()
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

    const ACCEPT: Outcome = Outcome::Accept(None);
    const BY_BOOT: Outcome = Outcome::Accept(Some(RestartCause::BootId));
    const BY_CONTENT: Outcome = Outcome::Accept(Some(RestartCause::Content));

    /// Content hash of batch `seq` of boot number `boot` in these tests
    /// (the tag is its top [`TAG_BITS`] bits, distinct for distinct boots
    /// below 8).
    fn h(boot: u64, seq: u64) -> u64 {
        (boot << (64 - TAG_BITS)) | seq
    }

    /// Send time of batch `seq` of boot number `n`: later boots send later.
    fn sent(n: u64, seq: u64) -> i64 {
        (n * 1_000_000 + seq) as i64
    }

    fn obs(d: &mut AgentDedup, boot_id: u64, n: u64, seq: u64) -> Outcome {
        d.observe(boot_id, seq, sent(n, seq), || h(n, seq))
    }

    #[test]
    fn memory_per_agent() {
        assert_eq!(std::mem::size_of::<AntiReplay>(), 56);
        assert_eq!(std::mem::size_of::<AgentDedup>(), 72);
        // Heap: the seen bits, plus "current" and tag bits without boot id.
        assert_eq!(AntiReplay::new(1024).bits.len() * 8, 128);
        assert_eq!(AntiReplay::new_tagged(1024).bits.len() * 8, 152);
    }

    #[test]
    fn reboot_twice_inside_the_window_with_boot_id_loses_nothing() {
        let mut d = AgentDedup::new(1024);
        for s in 1..=50 {
            assert_eq!(obs(&mut d, 11, 0, s), ACCEPT, "boot 11 seq {s}");
        }
        assert_eq!(obs(&mut d, 22, 1, 1), BY_BOOT);
        for s in 2..=30 {
            assert_eq!(obs(&mut d, 22, 1, s), ACCEPT, "boot 22 seq {s}");
        }
        assert_eq!(obs(&mut d, 33, 2, 1), BY_BOOT);
        for s in 2..=40 {
            assert_eq!(obs(&mut d, 33, 2, s), ACCEPT, "boot 33 seq {s}");
        }
        // True resends are still dropped, in the current and previous boot.
        assert_eq!(obs(&mut d, 33, 2, 40), Outcome::Duplicate);
        assert_eq!(obs(&mut d, 33, 2, 1), Outcome::Duplicate);
        assert_eq!(obs(&mut d, 22, 1, 30), Outcome::Duplicate);
        assert_eq!(obs(&mut d, 33, 2, 41), ACCEPT);
        assert_eq!(d.boot(), 33);
        assert_eq!(d.highest(), Some(41));
    }

    #[test]
    fn reboot_twice_inside_the_window_without_boot_id_loses_nothing() {
        let mut d = AgentDedup::new(1024);
        for s in 1..=50 {
            assert_eq!(obs(&mut d, 0, 0, s), ACCEPT);
        }
        // Reboot: seq 1 again, other content. One restart counted.
        assert_eq!(obs(&mut d, 0, 1, 1), BY_CONTENT);
        for s in 2..=30 {
            assert_eq!(obs(&mut d, 0, 1, s), ACCEPT, "second boot seq {s}");
        }
        // Second reboot, numbering from 0 this time.
        assert_eq!(obs(&mut d, 0, 2, 0), ACCEPT, "0 was never seen");
        assert_eq!(obs(&mut d, 0, 2, 1), BY_CONTENT);
        for s in 2..=60 {
            assert_eq!(obs(&mut d, 0, 2, s), ACCEPT, "third boot seq {s}");
        }
        // Identical resends of the third boot are dropped.
        for s in [0, 1, 29, 31, 60] {
            assert_eq!(obs(&mut d, 0, 2, s), Outcome::Duplicate, "resend {s}");
        }
    }

    #[test]
    fn true_resend_is_dropped() {
        let mut d = AgentDedup::new(64);
        assert_eq!(obs(&mut d, 0, 0, 7), ACCEPT);
        assert_eq!(obs(&mut d, 0, 0, 7), Outcome::Duplicate);
        assert_eq!(obs(&mut d, 0, 0, 8), ACCEPT);
        assert_eq!(obs(&mut d, 0, 0, 7), Outcome::Duplicate);
        let mut e = AgentDedup::new(64);
        assert_eq!(obs(&mut e, 5, 0, 7), ACCEPT);
        assert_eq!(obs(&mut e, 5, 0, 7), Outcome::Duplicate);
        // With a boot id, the boot id decides: the content is not looked at.
        assert_eq!(
            e.observe(5, 7, sent(0, 7), || unreachable!("no hash with a boot id")),
            Outcome::Duplicate
        );
    }

    #[test]
    fn out_of_order_retry_of_the_old_boot_after_a_reboot() {
        let mut d = AgentDedup::new(1024);
        for s in [1, 2, 3, 5] {
            assert_eq!(obs(&mut d, 11, 0, s), ACCEPT);
        }
        assert_eq!(obs(&mut d, 22, 1, 1), BY_BOOT);
        // Seq 4 of the old boot arrives late: unseen there, accepted; a
        // resend of its seq 3 is dropped. Neither resets anything.
        assert_eq!(obs(&mut d, 11, 0, 4), ACCEPT);
        assert_eq!(obs(&mut d, 11, 0, 3), Outcome::Duplicate);
        // The new boot goes on: nothing lost, its resends still dropped.
        assert_eq!(obs(&mut d, 22, 1, 2), ACCEPT);
        assert_eq!(obs(&mut d, 22, 1, 1), Outcome::Duplicate);
        assert_eq!(obs(&mut d, 11, 0, 4), Outcome::Duplicate);
        assert_eq!(obs(&mut d, 22, 1, 3), ACCEPT);
        // A third boot; then a straggler of the first (forgotten) boot
        // starts a session of its own but evicts the oldest, not the live.
        assert_eq!(obs(&mut d, 33, 2, 1), BY_BOOT);
        assert_eq!(obs(&mut d, 11, 0, 6), BY_BOOT);
        assert_eq!(obs(&mut d, 33, 2, 2), ACCEPT);
        assert_eq!(obs(&mut d, 33, 2, 1), Outcome::Duplicate);
        assert_eq!(obs(&mut d, 11, 0, 6), Outcome::Duplicate);
    }

    #[test]
    fn reused_number_without_boot_id_keeps_the_new_numbering() {
        // The new numbering's first delivered batch is above the old
        // highest, so the restart shows only later (at seq 1): nothing of
        // the new numbering is forgotten when it does.
        let mut d = AgentDedup::new(64);
        for s in 1..=10 {
            obs(&mut d, 0, 0, s);
        }
        assert_eq!(obs(&mut d, 0, 1, 12), ACCEPT);
        assert_eq!(obs(&mut d, 0, 1, 1), BY_CONTENT);
        assert_eq!(obs(&mut d, 0, 1, 2), ACCEPT, "one restart, counted once");
        assert_eq!(obs(&mut d, 0, 1, 1), Outcome::Duplicate);
        assert_eq!(obs(&mut d, 0, 1, 2), Outcome::Duplicate);
        // The documented price: seq 12 was written before the restart
        // showed, so its resend is taken as the new numbering's.
        assert_eq!(obs(&mut d, 0, 1, 12), ACCEPT);
        assert_eq!(obs(&mut d, 0, 1, 12), Outcome::Duplicate);
    }

    #[test]
    fn tag_collision_hides_only_the_first_reused_number() {
        let mut d = AgentDedup::new(64);
        for s in 1..=10 {
            obs(&mut d, 0, 0, s);
        }
        let mut e = d.clone();
        // The new numbering's seq 1 has the same tag as the old seq 1, but
        // it was sent after everything seen: a restart all the same.
        assert_eq!(d.observe(0, 1, sent(1, 1), || h(0, 1)), BY_CONTENT);
        // Its send time is not newer (the clock went back at the reboot):
        // dropped, and the next reused number shows the restart.
        assert_eq!(e.observe(0, 1, sent(0, 10), || h(0, 1)), Outcome::Duplicate);
        assert_eq!(obs(&mut e, 0, 1, 2), BY_CONTENT);
        // From then on the old slots are taken over whatever their tags.
        for s in 3..=10 {
            assert_eq!(e.observe(0, s, sent(0, 10), || h(0, s)), ACCEPT, "seq {s}");
        }
    }

    #[test]
    fn seq_below_the_window_is_too_old_in_every_session_kind() {
        for boot in [0, 9] {
            let mut d = AgentDedup::new(64);
            assert_eq!(obs(&mut d, boot, 0, 5000), ACCEPT);
            assert_eq!(
                obs(&mut d, boot, 0, 5000 - 64),
                Outcome::TooOld { highest: 5000 }
            );
            assert_eq!(obs(&mut d, boot, 0, 5000 - 63), ACCEPT, "just inside");
            // A restart with a new boot id is not too old.
            assert_eq!(obs(&mut d, 77, 1, 1), BY_BOOT);
            // The old boot's numbers below its window still are.
            assert_eq!(obs(&mut d, boot, 0, 10), Outcome::TooOld { highest: 5000 });
        }
        // Without a boot id, a restart far below whose clock went back
        // resyncs after three; the two before it stay refused.
        let mut d = AgentDedup::new(64);
        obs(&mut d, 0, 0, 5000);
        let back = |d: &mut AgentDedup, seq| d.observe(0, seq, seq as i64, || h(1, seq));
        assert_eq!(back(&mut d, 1), Outcome::TooOld { highest: 5000 });
        assert_eq!(back(&mut d, 2), Outcome::TooOld { highest: 5000 });
        assert_eq!(
            back(&mut d, 3),
            Outcome::Accept(Some(RestartCause::SeqResync))
        );
        assert_eq!(back(&mut d, 3), Outcome::Duplicate);
        // Sent after everything recorded: a restart at once, nothing lost.
        let mut e = AgentDedup::new(64);
        obs(&mut e, 0, 0, 5000);
        assert_eq!(obs(&mut e, 0, 1, 1), BY_CONTENT);
        assert_eq!(obs(&mut e, 0, 1, 2), ACCEPT);
        assert_eq!(obs(&mut e, 0, 1, 1), Outcome::Duplicate);
        assert_eq!(e.highest(), Some(2));
        // A resend below the window, not sent later: still too old.
        for s in 3..=100 {
            obs(&mut e, 0, 1, s);
        }
        assert_eq!(obs(&mut e, 0, 1, 30), Outcome::TooOld { highest: 100 });
    }

    #[test]
    fn boot_id_appears_or_disappears() {
        // An agent upgraded to send boot ids: a restart by boot id.
        let mut d = AgentDedup::new(64);
        assert_eq!(obs(&mut d, 0, 0, 1), ACCEPT);
        assert_eq!(obs(&mut d, 0, 0, 2), ACCEPT);
        assert_eq!(obs(&mut d, 44, 1, 1), BY_BOOT);
        assert_eq!(obs(&mut d, 0, 0, 2), Outcome::Duplicate);
        assert_eq!(obs(&mut d, 44, 1, 2), ACCEPT);
        // The first batch names the session: no restart counted.
        let mut e = AgentDedup::new(64);
        assert_eq!(obs(&mut e, 44, 0, 9), ACCEPT);
        assert_eq!(obs(&mut e, 0, 1, 9), BY_BOOT);
    }

    #[test]
    fn checkpoint_with_seven_bit_tags_restores() {
        // A window written when a slot kept a byte with a 7-bit tag: slots
        // 1-20 hold batches of numbering 1 (7-bit tag 1 << 4, current).
        let tags: String = (0..64)
            .map(|s| if (1..=20).contains(&s) { "90" } else { "00" })
            .collect();
        let old = serde_json::json!({
            "boot": 0,
            "win": {
                "highest": 20,
                "bits": [((1u64 << 21) - 2)],
                "last": 20,
                "max_sent": sent(1, 20),
                "tags": tags,
            }
        });
        let mut d: AgentDedup = serde_json::from_value(old.clone()).unwrap();
        // Same tag, not sent later: a resend.
        assert_eq!(obs(&mut d, 0, 1, 5), Outcome::Duplicate);
        // The clock went back, other content: the restart still shows.
        assert_eq!(d.observe(0, 3, sent(0, 0), || h(2, 3)), BY_CONTENT);
        assert_eq!(obs(&mut d, 0, 2, 4), ACCEPT, "taken over after the restart");
        // Written back in the format-7 form: three tag words.
        let back = serde_json::to_value(&d).unwrap();
        assert!(back["win"].get("tags").is_none(), "{back}");
        let words: Vec<u64> = serde_json::from_value(back["win"]["low_tags"].clone()).unwrap();
        // Seq 3 and 4: tag 2; 1-20 but those: tag 1 as restored (stale,
        // never compared while their numbers are unseen).
        let ones = ((1u64 << 21) - 2) & !(1 << 3 | 1 << 4);
        assert_eq!(words, [ones, 1 << 3 | 1 << 4, 0]);
        let again: AgentDedup = serde_json::from_value(back).unwrap();
        assert_eq!(again, d);
    }

    #[test]
    fn format_6_slots_written_before_a_restart_restore_as_unseen() {
        // Slots 1-10: seen, written before the last restart ("00": not
        // current); 11-12: current, tag 3 ("b0"). Highest 12.
        let tags: String = (0..64)
            .map(|s| match s {
                1..=10 => "00",
                11 | 12 => "b0",
                _ => "00",
            })
            .collect();
        let old = serde_json::json!({
            "boot": 0,
            "win": {"highest": 12, "bits": [(1u64 << 13) - 2], "last": 12,
                    "max_sent": 500, "tags": tags}
        });
        let mut d: AgentDedup = serde_json::from_value(old).unwrap();
        // The old numbering's slots are taken over, as format 6 did.
        for s in 1..=10 {
            assert_eq!(d.observe(0, s, 1, || h(3, s)), ACCEPT, "seq {s}");
        }
        // The current ones still drop their resends (same tag, not later).
        assert_eq!(d.observe(0, 11, 500, || h(3, 11)), Outcome::Duplicate);
        // Other content at a current number: a restart.
        assert_eq!(d.observe(0, 12, 500, || h(5, 12)), BY_CONTENT);
    }

    #[test]
    fn checkpoint_round_trip_and_bad_tags() {
        let mut d = AgentDedup::new(64);
        for s in 1..=20 {
            obs(&mut d, 0, 0, s);
        }
        obs(&mut d, 0, 1, 1);
        obs(&mut d, 5, 2, 3);
        let j = serde_json::to_string(&d).unwrap();
        let back: AgentDedup = serde_json::from_str(&j).unwrap();
        assert_eq!(back, d);
        let mut v: serde_json::Value = serde_json::from_str(&j).unwrap();
        // The session without boot id is the previous one.
        let mut w = v.clone();
        w["prev"]["win"]["low_tags"] = serde_json::json!([1, 2]);
        let e = serde_json::from_value::<AgentDedup>(w).unwrap_err();
        assert!(e.to_string().contains("2 tag words, expected 3"), "{e}");
        v["prev"]["win"].as_object_mut().unwrap().remove("low_tags");
        v["prev"]["win"]["tags"] = "0g".into();
        let e = serde_json::from_value::<AgentDedup>(v.clone()).unwrap_err();
        assert!(e.to_string().contains("not a hex digit"), "{e}");
        v["prev"]["win"]["tags"] = "00".into();
        let e = serde_json::from_value::<AgentDedup>(v).unwrap_err();
        assert!(e.to_string().contains("1 tags for a window of 64"), "{e}");
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

        /// With boot ids: an agent that reboots (numbering from 0 or 1),
        /// delivers out of order and resends has every distinct batch
        /// accepted exactly once and every identical resend dropped, for
        /// batches of the two most recently used boots or of a new one.
        #[test]
        fn with_boot_ids_every_batch_once_every_resend_dropped(
            ops in proptest::collection::vec((0u8..8, any::<u16>()), 1..400),
        ) {
            use std::collections::HashSet;
            let mut d = AgentDedup::new(64);
            let mut accepted: HashSet<(u64, u64)> = HashSet::new();
            // Most recently used boots first.
            let mut lru: Vec<u64> = Vec::new();
            for (b, _) in agent_script(&ops, 50) {
                let known = lru.contains(&b.0);
                if known && lru.iter().take(2).all(|&x| x != b.0) {
                    continue; // a forgotten boot: outside the contract
                }
                let out = obs(&mut d, 1000 + b.0, b.0, b.1);
                if accepted.contains(&b) {
                    prop_assert_eq!(out, Outcome::Duplicate, "resend {:?}", b);
                } else {
                    prop_assert!(matches!(out, Outcome::Accept(_)), "{:?}: {:?}", b, out);
                    let new_boot = !known && !lru.is_empty();
                    prop_assert_eq!(out == BY_BOOT, new_boot, "{:?}", b);
                    accepted.insert(b);
                }
                lru.retain(|&x| x != b.0);
                lru.insert(0, b.0);
            }
        }

        /// Without boot id, against a reference model of the documented
        /// rules on plain sets, for agents whose clock moves forward across
        /// restarts and agents whose clock starts again at each restart;
        /// and the contract itself: a batch delivered for the first time
        /// inside or above the window is accepted when no other batch
        /// holds its number, when it was sent after everything recorded,
        /// or when its tag tells it apart; every resend whose number still
        /// holds it is dropped; with a forward clock the first batch of a
        /// newer numbering is never lost (no resync needed).
        #[test]
        fn without_boot_id_matches_the_documented_rules(
            clock_back in any::<bool>(),
            ops in proptest::collection::vec((0u8..8, any::<u16>()), 1..400),
        ) {
            use std::collections::HashSet;
            const WIDTH: u64 = 64;
            let sent_of = |b: (u64, u64)| if clock_back { b.1 as i64 } else { sent(b.0, b.1) };
            let mut d = AgentDedup::new(WIDTH as u32);
            let mut m = Model::default();
            let mut accepted: HashSet<(u64, u64)> = HashSet::new();
            let mut newest = 0;
            for (b, resend) in agent_script(&ops, 150) {
                let before = m.clone();
                let out = d.observe(0, b.1, sent_of(b), || h(b.0, b.1));
                let expect = m.deliver(b, sent_of(b), WIDTH);
                prop_assert_eq!(out, expect, "{:?} (resend {}) in {:?}", b, resend, before);
                let owner = before.seen.get(&b.1).copied();
                let inside = before.highest.is_none_or(|h| b.1 > h || h - b.1 < WIDTH);
                if resend && owner == Some(b) {
                    prop_assert_eq!(out, Outcome::Duplicate, "resend {:?}", b);
                }
                // Tags decide only for a batch not sent after everything
                // recorded whose number another batch holds.
                let later = before.max_sent.is_none_or(|m| sent_of(b) > m);
                let shows = owner.is_none_or(|o| {
                    later || (b.1 < TAGGED_SEQS && tag_of(h(o.0, o.1)) != tag_of(h(b.0, b.1)))
                });
                if !accepted.contains(&b) && inside && shows {
                    prop_assert!(matches!(out, Outcome::Accept(_)), "{:?}: {:?} in {:?}", b, out, before);
                }
                if !clock_back && !accepted.contains(&b) && b.0 > newest {
                    prop_assert!(matches!(out, Outcome::Accept(_)), "lost {:?}: {:?}", b, out);
                }
                if matches!(out, Outcome::Accept(_)) {
                    accepted.insert(b);
                    newest = newest.max(b.0);
                }
            }
        }
    }

    /// What one agent emits: `((numbering, seq), resend)` in delivery
    /// order. Batches are delivered out of order and resent; the agent
    /// restarts its numbering from 0 or 1 at random and after `max_seq`.
    fn agent_script(ops: &[(u8, u16)], max_seq: u64) -> Vec<((u64, u64), bool)> {
        let (mut boot, mut next_seq) = (0u64, 1u64);
        let mut pending: Vec<(u64, u64)> = Vec::new();
        let mut delivered: Vec<(u64, u64)> = Vec::new();
        let mut script = Vec::new();
        for &(op, pick) in ops {
            match op {
                0..=2 => {
                    pending.push((boot, next_seq));
                    next_seq += 1;
                }
                3 | 4 if !pending.is_empty() => {
                    let b = pending.swap_remove(pick as usize % pending.len());
                    delivered.push(b);
                    script.push((b, false));
                }
                5 if !delivered.is_empty() => {
                    script.push((delivered[pick as usize % delivered.len()], true));
                }
                6 | 7 if op == 6 || next_seq > 40 => {
                    boot += 1;
                    next_seq = u64::from(pick % 2);
                }
                _ => {}
            }
            if next_seq > max_seq {
                boot += 1;
                next_seq = 1;
            }
        }
        script.extend(pending.into_iter().map(|b| (b, false)));
        script
    }

    /// The documented rules for a session without boot id, on plain sets
    /// (the numbers seen with the batch that holds each), as the
    /// reference for [`AgentDedup`]'s bit planes.
    #[derive(Debug, Clone, Default)]
    struct Model {
        seen: std::collections::BTreeMap<u64, (u64, u64)>,
        highest: Option<u64>,
        max_sent: Option<i64>,
        last: Option<u64>,
        run: Option<(u64, u8)>,
    }

    impl Model {
        fn record(&mut self, b: (u64, u64), sent: i64, width: u64) {
            let h = self.highest.map_or(b.1, |h| h.max(b.1));
            self.highest = Some(h);
            self.seen.retain(|&s, _| h - s < width);
            self.seen.insert(b.1, b);
            self.max_sent = Some(self.max_sent.map_or(sent, |m| m.max(sent)));
            self.last = Some(b.1);
            self.run = None;
        }

        fn deliver(&mut self, b: (u64, u64), sent: i64, width: u64) -> Outcome {
            let later = self.max_sent.is_none_or(|m| sent > m);
            let seq = b.1;
            match self.highest {
                Some(h) if seq <= h && h - seq >= width => {
                    if later {
                        self.seen.clear();
                        self.highest = None;
                        self.record(b, sent, width);
                        return BY_CONTENT;
                    }
                    let run = match self.run {
                        Some((s, n)) if s + 1 == seq => n + 1,
                        _ => 1,
                    };
                    if run >= RESYNC_AFTER {
                        self.seen.clear();
                        self.highest = None;
                        self.record(b, sent, width);
                        return Outcome::Accept(Some(RestartCause::SeqResync));
                    }
                    self.run = Some((seq, run));
                    Outcome::TooOld { highest: h }
                }
                _ => match self.seen.get(&seq).copied() {
                    None => {
                        self.record(b, sent, width);
                        ACCEPT
                    }
                    Some(o) => {
                        let other = seq < TAGGED_SEQS && tag_of(h(o.0, o.1)) != tag_of(h(b.0, b.1));
                        if !later && !other {
                            return Outcome::Duplicate;
                        }
                        let keep = self
                            .last
                            .filter(|&l| l < seq)
                            .and_then(|l| self.seen.get(&l).map(|&x| (l, x)));
                        self.seen.clear();
                        self.seen.extend(keep);
                        self.record(b, sent, width);
                        BY_CONTENT
                    }
                },
            }
        }
    }
}
