//! Event-time tumbling windows of one agent, driven by that agent's own
//! watermark.
//!
//! Contract (DESIGN.md "Semantics"; docs/semantics.md):
//! - A point at `ts` belongs to the window `[s, s + W)` with
//!   `s = floor(ts / W) · W` (aligned to the Unix epoch).
//! - The agent's watermark is its greatest accepted timestamp minus the
//!   allowed lateness `L`. The *frontier* is the greatest window boundary at
//!   or below the watermark; every window whose end is at or below the
//!   frontier is closed and emitted exactly once.
//! - A point whose window end is at or below the frontier is late: it is
//!   not merged ([`AgentWindows::push`] returns `false`).
//! - [`AgentWindows::close_all`] (idle timeout, end of input) moves the
//!   frontier to the end of the window holding the greatest timestamp and
//!   closes everything.
//!
//! State is per agent, so an agent with a wrong clock only moves its own
//! frontier.
//!
//! Memory: a series costs one 128-byte slot (shared key, detector
//! handle, two inline open windows of 56 bytes); an agent with more than
//! [`INDEX_FROM`] series also keeps a hash index of them (smaller agents
//! find a series by scanning their slots for the shared key's pointer).
//! The rare third and later open windows of a series (a batch spanning
//! many windows, or lateness above the window size) live in a per-agent
//! side list. Closed windows are emitted series by series in the order
//! the series first appeared, each series' windows in start order, so
//! output order is deterministic for a given input order.

use std::sync::Arc;

use hashbrown::HashTable;
use serde::{Deserialize, Serialize};

use crate::detect::DetHandle;
use crate::exact::{ExactRepr, Fixed, WideSum};
use crate::intern::{key_hash, KeyInterner};
use crate::model::{AgentKey, Agg, OptMs, SeriesKey, SeriesMeta, WindowAggregate};

/// Series count above which an agent keeps a hash index of its series.
pub const INDEX_FROM: usize = 16;

/// Window size and allowed lateness, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// Window size W (> 0).
    pub size_ms: i64,
    /// Allowed lateness L (>= 0).
    pub lateness_ms: i64,
}

impl WindowSpec {
    /// Start of the window holding `ts`.
    /// Saturates at `i64::MIN` for timestamps whose window would start
    /// before it (the pipeline refuses such timestamps before they get here).
    #[inline]
    pub fn start_of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.size_ms).saturating_mul(self.size_ms)
    }

    /// End (exclusive) of the window holding `ts`.
    #[inline]
    pub fn end_of(&self, ts: i64) -> i64 {
        self.start_of(ts).saturating_add(self.size_ms)
    }
}

/// Bits of [`OpenAgg::packed`] holding the count; the rest hold the offset
/// of the last point from the window start (windows are at most 24 h,
/// 2^27 ms > 24 h).
const COUNT_BITS: u32 = 37;
/// Largest count a window can hold (137 billion points: beyond any
/// series' window under the batch limits); a count saturates there.
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;

/// A running aggregate in 48 bytes: count and the last point's offset
/// from the window start share one word; the sum is exact (see
/// [`crate::exact`]): the [`Fixed`] part inline, plus the agent's
/// [`WideSum`] for this window when a value did not fit it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OpenAgg {
    packed: u64,
    sum: Fixed,
    min: f64,
    max: f64,
    last: f64,
}

impl OpenAgg {
    const EMPTY: OpenAgg = OpenAgg {
        packed: 0,
        sum: Fixed::ZERO,
        min: 0.0,
        max: 0.0,
        last: 0.0,
    };

    /// An aggregate holding one point, and whether its value went into
    /// the inline sum (`false`: the caller adds it to the window's
    /// [`WideSum`]).
    #[inline]
    fn new(off: u64, v: f64) -> (Self, bool) {
        let mut sum = Fixed::ZERO;
        let fits = sum.add(v);
        let a = OpenAgg {
            packed: 1 | (off << COUNT_BITS),
            sum,
            min: v,
            max: v,
            last: v,
        };
        (a, fits)
    }

    #[inline]
    fn count(&self) -> u64 {
        self.packed & COUNT_MAX
    }

    #[inline]
    fn last_off(&self) -> u64 {
        self.packed >> COUNT_BITS
    }

    /// Merges one point; returns whether its value went into the inline
    /// sum (`false`: the caller adds it to the window's [`WideSum`]).
    #[inline]
    fn push(&mut self, off: u64, v: f64) -> bool {
        let count = (self.count() + 1).min(COUNT_MAX);
        let mut last_off = self.last_off();
        let fits = self.sum.add(v);
        if v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
        if off >= last_off {
            self.last = v;
            last_off = off;
        }
        self.packed = count | (last_off << COUNT_BITS);
        fits
    }

    /// The closed aggregate; `wide` is the window's wide part, if any.
    fn to_agg(self, start: i64, wide: Option<&WideSum>) -> Agg {
        let count = self.count();
        let (sum, mean) = match wide {
            None => (self.sum.sum(), self.sum.mean(count)),
            Some(w) => {
                let mut w = w.clone();
                w.add_fixed(self.sum);
                (w.quotient(1), w.quotient(count))
            }
        };
        Agg {
            count,
            sum,
            min: self.min,
            max: self.max,
            last: self.last,
            last_ts_ms: start.saturating_add(self.last_off() as i64),
            mean,
        }
    }

    fn from_agg(a: &Agg, start: i64, sum: Fixed) -> Self {
        let off = (a.last_ts_ms.saturating_sub(start)).clamp(0, (1 << 27) - 1) as u64;
        OpenAgg {
            packed: a.count.min(COUNT_MAX) | (off << COUNT_BITS),
            sum,
            min: a.min,
            max: a.max,
            last: a.last,
        }
    }
}

/// One open window: its start and running aggregate (56 bytes). A count
/// of zero marks an empty inline slot.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OpenWindow {
    start: i64,
    agg: OpenAgg,
}

impl OpenWindow {
    const EMPTY: OpenWindow = OpenWindow {
        start: 0,
        agg: OpenAgg::EMPTY,
    };

    #[inline]
    fn is_open(&self) -> bool {
        self.agg.packed != 0
    }

    /// A window holding one point, and whether its value went into the
    /// inline sum.
    #[inline]
    fn new(start: i64, ts: i64, v: f64) -> (Self, bool) {
        let (agg, fits) = OpenAgg::new((ts - start) as u64, v);
        (OpenWindow { start, agg }, fits)
    }

    /// Merges one point; `false` when its value must go to the window's
    /// [`WideSum`].
    #[inline]
    fn push(&mut self, ts: i64, v: f64) -> bool {
        self.agg.push((ts - self.start) as u64, v)
    }
}

/// One series of an agent: identity, where its detector state is, and its
/// two oldest open windows (`open[0].start < open[1].start`; `open[1]` is
/// empty when `open[0]` is). 128 bytes. While the series has no open
/// window, `open[0].start` keeps the start of its last closed window (the
/// series' last activity, for the state TTL) at no extra cost. A vacant
/// slot (evicted series) has the [`vacant_key`].
#[derive(Debug, Clone)]
struct SeriesSlot {
    key: Arc<SeriesKey>,
    det: DetHandle,
    open: [OpenWindow; 2],
}

/// All open windows of one agent, with its watermark.
#[derive(Debug, Clone)]
pub struct AgentWindows {
    spec: WindowSpec,
    /// Greatest accepted timestamp.
    max_ts: OptMs,
    /// Windows ending at or before this are closed.
    frontier: i64,
    /// Series in order of first appearance.
    series: Vec<SeriesSlot>,
    /// Index into `series` by [`SeriesKey::hash`], once the agent has more
    /// than [`INDEX_FROM`] series.
    index: Option<Box<HashTable<u32>>>,
    /// Open windows beyond a series' two inline ones, sorted by (series,
    /// start); each starts after its series' `open[1]`.
    extra: Extra,
    /// Number of open windows over all series.
    open_windows: u32,
    /// Number of vacant series slots (series evicted, see
    /// [`AgentWindows::vacate`]), reused by the agent's next new series.
    vacant: u32,
    /// Number of series allowed more lateness than the agent's (a
    /// [`SeriesKey::extra_lateness_ms`] above 0): while there are any,
    /// every advance looks for their windows to close.
    slow: u32,
    /// Frontier set by [`AgentWindows::close_all`] (idle timeout, end of
    /// input): every class of series is closed at least this far.
    idle_floor: i64,
    /// The greatest timestamp as of the last advance: the slow series'
    /// frontiers derive from it, so that (as for the agent's frontier)
    /// every point of a batch is judged against the same frontier.
    adv_max: OptMs,
    /// The wide sums of open windows that took a value the inline sum
    /// could not hold exactly, by (series, start), sorted.
    wide: Wides,
}

/// The wide sums of an agent's open windows: no allocation (8 bytes)
/// while there are none, which is almost always.
#[allow(clippy::box_collection)]
#[derive(Debug, Clone, Default)]
struct Wides(Option<Box<Vec<(u32, i64, WideSum)>>>);

impl Wides {
    #[inline]
    fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    fn get(&self, slot: u32, start: i64) -> Option<&WideSum> {
        let v = self.0.as_deref()?;
        v.binary_search_by_key(&(slot, start), |(s, t, _)| (*s, *t))
            .ok()
            .map(|i| &v[i].2)
    }

    /// Adds `v` to the wide sum of window (slot, start), creating it.
    #[cold]
    fn add(&mut self, slot: u32, start: i64, v: f64) {
        let vec = self.0.get_or_insert_default();
        let i = match vec.binary_search_by_key(&(slot, start), |(s, t, _)| (*s, *t)) {
            Ok(i) => i,
            Err(i) => {
                vec.insert(i, (slot, start, WideSum::default()));
                i
            }
        };
        vec[i].2.add(v);
    }

    /// Drops the wide sums of windows that are no longer open.
    fn retain(&mut self, mut open: impl FnMut(u32, i64) -> bool) {
        if let Some(v) = &mut self.0 {
            v.retain(|(s, t, _)| open(*s, *t));
            if v.is_empty() {
                self.0 = None;
            }
        }
    }
}

/// The extra open windows of an agent: no allocation (8 bytes) while
/// there are none, which is almost always.
// A boxed Vec on purpose: one pointer in every agent instead of a
// 24-byte Vec header, for a list almost every agent leaves empty.
#[allow(clippy::box_collection)]
#[derive(Debug, Clone, Default)]
struct Extra(Option<Box<Vec<(u32, OpenWindow)>>>);

impl Extra {
    #[inline]
    fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    fn as_slice(&self) -> &[(u32, OpenWindow)] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    fn vec_mut(&mut self) -> &mut Vec<(u32, OpenWindow)> {
        self.0.get_or_insert_default()
    }

    fn take(&mut self) -> Vec<(u32, OpenWindow)> {
        self.0.take().map(|b| *b).unwrap_or_default()
    }

    fn set(&mut self, v: Vec<(u32, OpenWindow)>) {
        self.0 = (!v.is_empty()).then(|| Box::new(v));
    }
}

impl AgentWindows {
    /// An agent with no series yet.
    pub fn new(spec: WindowSpec) -> Self {
        AgentWindows {
            spec,
            max_ts: OptMs::NONE,
            frontier: i64::MIN,
            series: Vec::new(),
            index: None,
            extra: Extra::default(),
            open_windows: 0,
            vacant: 0,
            slow: 0,
            idle_floor: i64::MIN,
            adv_max: OptMs::NONE,
            wide: Wides::default(),
        }
    }

    /// Index of an existing series (metric, canonical labels).
    pub fn find(&self, metric: &str, labels: &str) -> Option<usize> {
        let h = key_hash(metric, labels);
        let eq = |k: &SeriesKey| k.hash() == h && *k.metric == *metric && *k.labels == *labels;
        match &self.index {
            Some(ix) => ix
                .find(h, |&i| eq(&self.series[i as usize].key))
                .map(|&i| i as usize),
            None => self.series.iter().position(|s| eq(&s.key)),
        }
    }

    /// Index of the series whose key is `key`, a key shared through the
    /// pipeline's [`KeyInterner`] (compared by pointer). Allocates nothing.
    #[inline]
    pub fn find_key(&self, key: &Arc<SeriesKey>) -> Option<usize> {
        match &self.index {
            Some(ix) => ix
                .find(key.hash(), |&i| {
                    Arc::ptr_eq(&self.series[i as usize].key, key)
                })
                .map(|&i| i as usize),
            None => self.series.iter().position(|s| Arc::ptr_eq(&s.key, key)),
        }
    }

    /// The key of the series in `slot`, unless the slot is vacant or
    /// beyond the agent's slots.
    #[inline]
    pub fn key_at(&self, slot: usize) -> Option<&Arc<SeriesKey>> {
        self.series
            .get(slot)
            .map(|s| &s.key)
            .filter(|k| !is_vacant(k))
    }

    /// Window size and lateness.
    #[inline]
    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// Index of the series (metric, canonical labels), creating it on first
    /// use with its key shared through `keys`. Looking up a known series
    /// allocates nothing.
    pub fn slot(&mut self, metric: &str, labels: &str, keys: &mut KeyInterner) -> usize {
        if let Some(i) = self.find(metric, labels) {
            return i;
        }
        self.add(keys.get(metric, labels))
    }

    /// Adds a series with the shared key `key` (which the agent must not
    /// have yet) and returns its index.
    pub fn add(&mut self, key: Arc<SeriesKey>) -> usize {
        debug_assert!(self.find_key(&key).is_none());
        // Active from the agent's latest window (its first point follows).
        let now = self.max_ts.get().map_or(0, |m| self.spec.start_of(m));
        self.add_series(key, DetHandle::NONE, [idle_since(now), OpenWindow::EMPTY])
    }

    fn add_series(&mut self, key: Arc<SeriesKey>, det: DetHandle, open: [OpenWindow; 2]) -> usize {
        let reuse = if self.vacant > 0 {
            self.series.iter().position(|s| is_vacant(&s.key))
        } else {
            None
        };
        self.put_series(reuse, key, det, open)
    }

    /// Puts a series into the vacant slot `reuse`, or after the last slot.
    fn put_series(
        &mut self,
        reuse: Option<usize>,
        key: Arc<SeriesKey>,
        det: DetHandle,
        open: [OpenWindow; 2],
    ) -> usize {
        if key.extra_lateness_ms() > 0 {
            self.slow += 1;
        }
        let i = match reuse {
            Some(i) => {
                self.vacant -= 1;
                self.series[i] = SeriesSlot { key, det, open };
                i
            }
            None => {
                crate::intern::grow_gently(&mut self.series);
                self.series.push(SeriesSlot { key, det, open });
                self.series.len() - 1
            }
        };
        let series = &self.series;
        let rehash = |&j: &u32| series[j as usize].key.hash();
        match &mut self.index {
            Some(ix) => {
                ix.insert_unique(series[i].key.hash(), i as u32, rehash);
            }
            None if series.len() > INDEX_FROM => {
                let mut ix = HashTable::with_capacity(series.len());
                for (j, s) in series.iter().enumerate() {
                    if !is_vacant(&s.key) {
                        ix.insert_unique(s.key.hash(), j as u32, rehash);
                    }
                }
                self.index = Some(Box::new(ix));
            }
            None => {}
        }
        i
    }

    /// Evicts the series in `slot`, which must have no open window: the
    /// slot becomes vacant (its number is kept for the agent's next new
    /// series, so the numbers of the other series never change). Returns
    /// the series' key and detector handle, for the detectors to drop its
    /// state.
    pub fn vacate(&mut self, slot: usize) -> (Arc<SeriesKey>, DetHandle) {
        debug_assert!(!self.series[slot].open[0].is_open());
        let s = std::mem::replace(
            &mut self.series[slot],
            SeriesSlot {
                key: vacant_key(),
                det: DetHandle::NONE,
                open: [OpenWindow::EMPTY; 2],
            },
        );
        if let Some(ix) = &mut self.index {
            if let Ok(e) = ix.find_entry(s.key.hash(), |&j| j as usize == slot) {
                e.remove();
            }
        }
        self.vacant += 1;
        if s.key.extra_lateness_ms() > 0 {
            self.slow -= 1;
        }
        (s.key, s.det)
    }

    /// Whether the series in `slot` was evicted (its slot is free).
    #[inline]
    pub fn is_vacant(&self, slot: usize) -> bool {
        is_vacant(&self.series[slot].key)
    }

    /// Slots of the series that had no point for `ttl_ms` of the agent's
    /// event time: no open window, and their last closed window ended
    /// `ttl_ms` or more before the agent's greatest timestamp. Appended
    /// to `out` in slot order.
    pub fn stale_series(&self, ttl_ms: i64, out: &mut Vec<u32>) {
        let Some(max_ts) = self.max_ts.get() else {
            return;
        };
        let size = self.spec.size_ms;
        for (i, s) in self.series.iter().enumerate() {
            if s.open[0].is_open() || is_vacant(&s.key) {
                continue;
            }
            let last_end = s.open[0].start.saturating_add(size);
            if max_ts.saturating_sub(last_end) >= ttl_ms {
                out.push(i as u32);
            }
        }
    }

    /// Would a point at `ts` be late now (for a series allowed the
    /// agent's lateness)?
    #[inline]
    pub fn is_late(&self, ts: i64) -> bool {
        self.is_late_for(ts, 0)
    }

    /// Would a point at `ts` of a series allowed `extra_ms` more lateness
    /// than the agent's be late now?
    #[inline]
    pub fn is_late_for(&self, ts: i64, extra_ms: i64) -> bool {
        self.spec.end_of(ts) <= self.frontier_for(extra_ms)
    }

    /// The frontier of the series allowed `extra_ms` more lateness than
    /// the agent's: the greatest window boundary at or below the agent's
    /// greatest timestamp minus (lateness + `extra_ms`), and never below
    /// an idle close.
    #[inline]
    pub fn frontier_for(&self, extra_ms: i64) -> i64 {
        self.frontiers().of(extra_ms)
    }

    /// What the frontier of every lateness class derives from, copied out
    /// (a close computes it while it updates the series).
    #[inline]
    fn frontiers(&self) -> Frontiers {
        Frontiers {
            spec: self.spec,
            frontier: self.frontier,
            adv_max: self.adv_max,
            idle_floor: self.idle_floor,
        }
    }

    /// Merges one point into its window. Returns `false` (and changes
    /// nothing) when the point is late. The watermark only moves in
    /// [`AgentWindows::advance`], so all points of one batch are judged
    /// against the same frontier.
    #[inline]
    pub fn push(&mut self, slot: usize, ts: i64, value: f64) -> bool {
        self.push_with(slot, ts, value, 0)
    }

    /// [`AgentWindows::push`] for a series allowed `extra_ms` more
    /// lateness than the agent (its key's
    /// [`SeriesKey::extra_lateness_ms`]).
    #[inline]
    pub fn push_with(&mut self, slot: usize, ts: i64, value: f64, extra_ms: i64) -> bool {
        debug_assert_eq!(extra_ms, self.series[slot].key.extra_lateness_ms());
        let start = self.spec.start_of(ts);
        if self.is_late_at(start, extra_ms) {
            return false;
        }
        self.push_at(slot, start, ts, value);
        true
    }

    /// Would a point in the window starting at `start` (`spec.start_of`
    /// of its timestamp) of a series allowed `extra_ms` more lateness be
    /// late now? [`AgentWindows::is_late_for`] with the window start
    /// computed once by the caller.
    #[inline]
    pub fn is_late_at(&self, start: i64, extra_ms: i64) -> bool {
        start.saturating_add(self.spec.size_ms) <= self.frontier_for(extra_ms)
    }

    /// Merges a point the caller found not late ([`AgentWindows::is_late_at`])
    /// into its window, which starts at `start` (`spec.start_of(ts)`).
    #[inline]
    pub fn push_at(&mut self, slot: usize, start: i64, ts: i64, value: f64) {
        debug_assert_eq!(start, self.spec.start_of(ts));
        let open = &mut self.series[slot].open;
        // Fast paths: the newest inline window, then the older one.
        let fits = if open[1].is_open() && open[1].start == start {
            open[1].push(ts, value)
        } else if open[0].is_open() && open[0].start == start {
            open[0].push(ts, value)
        } else {
            self.insert_window(slot, start, ts, value)
        };
        if !fits {
            self.wide.add(slot as u32, start, value);
        }
        if self.max_ts.get().is_none_or(|m| ts > m) {
            self.max_ts = ts.into();
        }
    }

    /// A point outside both inline windows: opens a window, or merges into
    /// one of the series' extra windows. Returns whether the value went
    /// into the window's inline sum.
    #[cold]
    fn insert_window(&mut self, slot: usize, start: i64, ts: i64, value: f64) -> bool {
        let key = slot as u32;
        let open = &mut self.series[slot].open;
        let (new, fits) = OpenWindow::new(start, ts, value);
        let displaced = if !open[0].is_open() {
            open[0] = new;
            None
        } else if !open[1].is_open() {
            if start > open[0].start {
                open[1] = new;
            } else {
                open[1] = open[0];
                open[0] = new;
            }
            None
        } else if start < open[0].start {
            let d = open[1];
            open[1] = open[0];
            open[0] = new;
            Some(d)
        } else if start < open[1].start {
            let d = open[1];
            open[1] = new;
            Some(d)
        } else {
            match self
                .extra
                .as_slice()
                .binary_search_by_key(&(key, start), |(s, w)| (*s, w.start))
            {
                Ok(i) => {
                    return self.extra.vec_mut()[i].1.push(ts, value);
                }
                Err(_) => Some(new),
            }
        };
        self.open_windows += 1;
        if let Some(d) = displaced {
            let extra = self.extra.vec_mut();
            let i = extra
                .binary_search_by_key(&(key, d.start), |(s, w)| (*s, w.start))
                .unwrap_or_else(|i| i);
            extra.insert(i, (key, d));
        }
        fits
    }

    /// Moves the frontier to the current watermark and emits the windows it
    /// closes, with `(agent_no, slot)` of each window's series pushed to
    /// `closed` (the caller's reference to the series' detector handle,
    /// see [`AgentWindows::handle_mut`]).
    /// Returns how many were closed.
    pub fn advance(
        &mut self,
        agent: &Arc<AgentKey>,
        out: &mut Vec<WindowAggregate>,
        agent_no: u32,
        closed: &mut Vec<(u32, u32)>,
    ) -> usize {
        let Some(max_ts) = self.max_ts.get() else {
            return 0;
        };
        let wm = max_ts.saturating_sub(self.spec.lateness_ms);
        let frontier = self.spec.start_of(wm);
        if frontier <= self.frontier {
            if self.adv_max == self.max_ts {
                return 0;
            }
            // The slower classes' frontiers follow the greatest timestamp
            // as of this advance, also while the agent has no slow series
            // yet: the first point of one is judged by them.
            self.adv_max = self.max_ts;
            if self.slow == 0 {
                return 0;
            }
        } else {
            self.frontier = frontier;
        }
        self.adv_max = self.max_ts;
        self.close_through(agent, out, agent_no, closed)
    }

    /// Closes every open window (idle timeout, end of input) and moves the
    /// frontier past the greatest timestamp's window. As
    /// [`AgentWindows::advance`].
    pub fn close_all(
        &mut self,
        agent: &Arc<AgentKey>,
        out: &mut Vec<WindowAggregate>,
        agent_no: u32,
        closed: &mut Vec<(u32, u32)>,
    ) -> usize {
        let Some(max_ts) = self.max_ts.get() else {
            return 0;
        };
        self.frontier = self.frontier.max(self.spec.end_of(max_ts));
        self.idle_floor = self.frontier;
        self.adv_max = self.max_ts;
        self.close_through(agent, out, agent_no, closed)
    }

    fn close_through(
        &mut self,
        agent: &Arc<AgentKey>,
        out: &mut Vec<WindowAggregate>,
        agent_no: u32,
        closed: &mut Vec<(u32, u32)>,
    ) -> usize {
        if self.open_windows == 0 {
            return 0;
        }
        let size = self.spec.size_ms;
        // Each series closes by the frontier of its lateness class (the
        // agent's, a field read, for all but slow collectors' series).
        let fr = self.frontiers();
        let closed_at = |key: &SeriesKey, start: i64| {
            start.saturating_add(size) <= fr.of(key.extra_lateness_ms())
        };
        let wide = &self.wide;
        let mut emit =
            |out: &mut Vec<WindowAggregate>, i: usize, s: &SeriesSlot, w: &OpenWindow| {
                closed.push((agent_no, i as u32));
                let ws = if wide.is_empty() {
                    None
                } else {
                    wide.get(i as u32, w.start)
                };
                out.push(WindowAggregate {
                    series: SeriesMeta::from_shared(agent.clone(), s.key.clone()),
                    start_ms: w.start,
                    end_ms: w.start.saturating_add(size),
                    agg: w.agg.to_agg(w.start, ws),
                })
            };
        let before = out.len();
        if self.extra.is_empty() {
            for (i, s) in self.series.iter_mut().enumerate() {
                if !s.open[0].is_open() || !closed_at(&s.key, s.open[0].start) {
                    continue;
                }
                emit(out, i, s, &s.open[0]);
                if s.open[1].is_open() && closed_at(&s.key, s.open[1].start) {
                    emit(out, i, s, &s.open[1]);
                    s.open = [idle_since(s.open[1].start), OpenWindow::EMPTY];
                } else if s.open[1].is_open() {
                    s.open = [s.open[1], OpenWindow::EMPTY];
                } else {
                    s.open = [idle_since(s.open[0].start), OpenWindow::EMPTY];
                }
            }
        } else {
            // Some series hold more than two windows: merge each series'
            // inline and extra windows in start order.
            let extra = self.extra.take();
            let mut rest = extra.iter().peekable();
            let mut kept = Vec::new();
            let mut seq: Vec<OpenWindow> = Vec::new();
            for (i, s) in self.series.iter_mut().enumerate() {
                seq.clear();
                seq.extend(s.open.iter().filter(|w| w.is_open()).copied());
                while let Some((_, w)) = rest.next_if(|(j, _)| *j as usize == i) {
                    seq.push(*w);
                }
                let n = seq
                    .iter()
                    .take_while(|w| closed_at(&s.key, w.start))
                    .count();
                for w in &seq[..n] {
                    emit(out, i, s, w);
                }
                if n == 0 {
                    // Nothing of this series closes: its inline slots
                    // (open windows, or the idle series' last activity)
                    // stay, and so do its extra windows (only a series
                    // with both inline windows open has any).
                    kept.extend(seq.iter().skip(2).map(|w| (i as u32, *w)));
                    continue;
                }
                let last_closed = seq[n - 1].start;
                let mut left = seq[n..].iter().copied();
                s.open = [
                    left.next().unwrap_or(idle_since(last_closed)),
                    left.next().unwrap_or(OpenWindow::EMPTY),
                ];
                kept.extend(left.map(|w| (i as u32, w)));
            }
            self.extra.set(kept);
        }
        let n = out.len() - before;
        self.open_windows -= n as u32;
        if !self.wide.is_empty() {
            let series = &self.series;
            self.wide
                .retain(|slot, start| !closed_at(&series[slot as usize].key, start));
        }
        n
    }

    /// The agent's watermark (greatest timestamp minus lateness).
    pub fn watermark(&self) -> Option<i64> {
        self.max_ts
            .get()
            .map(|m| m.saturating_sub(self.spec.lateness_ms))
    }

    /// Windows ending at or before this are closed.
    pub fn frontier(&self) -> i64 {
        self.frontier
    }

    /// Number of open windows.
    pub fn open_windows(&self) -> usize {
        self.open_windows as usize
    }

    /// Makes room for `n` more series exactly (an agent's first batch
    /// names most of its series: its slots then waste nothing).
    pub fn reserve_series(&mut self, n: usize) {
        self.series.reserve_exact(n);
    }

    /// Number of series held (evicted ones not counted).
    pub fn series_count(&self) -> usize {
        self.series.len() - self.vacant as usize
    }

    /// Number of series slots, vacant ones included (slot numbers are
    /// below it).
    pub fn slots(&self) -> usize {
        self.series.len()
    }

    /// Identity of the series in `slot`.
    pub fn meta(&self, agent: &Arc<AgentKey>, slot: usize) -> SeriesMeta {
        let s = &self.series[slot];
        SeriesMeta::from_shared(agent.clone(), s.key.clone())
    }

    /// Sets where the detector state of the series in `slot` is.
    pub fn set_handle(&mut self, slot: usize, h: DetHandle) {
        self.series[slot].det = h;
    }

    /// The detector handle of the series in `slot`, for the detectors to
    /// update.
    #[inline]
    pub fn handle_mut(&mut self, slot: usize) -> &mut DetHandle {
        &mut self.series[slot].det
    }

    /// Calls `f` with the identity, slot index and detector handle of
    /// every series (rebinding detector state to a new rule set).
    pub fn for_each_handle(
        &mut self,
        agent: &Arc<AgentKey>,
        f: &mut dyn FnMut(&SeriesMeta, u32, &mut DetHandle),
    ) {
        for (i, s) in self.series.iter_mut().enumerate() {
            if is_vacant(&s.key) {
                continue;
            }
            let meta = SeriesMeta::from_shared(agent.clone(), s.key.clone());
            f(&meta, i as u32, &mut s.det);
        }
    }

    /// Calls `f` on the slot and detector handle of every series held
    /// (vacant slots skipped), to update the handle in place.
    pub fn for_each_det(&mut self, f: &mut dyn FnMut(u32, &mut DetHandle)) {
        for (i, s) in self.series.iter_mut().enumerate() {
            if !is_vacant(&s.key) {
                f(i as u32, &mut s.det);
            }
        }
    }

    /// Replaces every series key by the shared one from `keys` (after a
    /// restore, whose keys are one allocation per series), with the extra
    /// lateness `extra_of` gives its metric.
    pub fn intern_keys(&mut self, keys: &mut KeyInterner, extra_of: &dyn Fn(&str) -> i64) {
        self.slow = 0;
        for s in &mut self.series {
            if is_vacant(&s.key) {
                continue;
            }
            let e = extra_of(&s.key.metric);
            s.key = if e == s.key.extra_lateness_ms() {
                keys.intern(&s.key)
            } else {
                keys.get_with(&s.key.metric, &s.key.labels, e)
            };
            if e > 0 {
                self.slow += 1;
            }
        }
    }
}

/// An empty inline window slot that remembers `start`, the start of the
/// series' last closed window (see [`SeriesSlot`]).
#[inline]
fn idle_since(start: i64) -> OpenWindow {
    OpenWindow {
        start,
        agg: OpenAgg::EMPTY,
    }
}

/// The inputs of [`AgentWindows::frontier_for`]: the agent's frontier, and
/// for slower classes its greatest timestamp as of the last advance and
/// the last idle close.
#[derive(Clone, Copy)]
struct Frontiers {
    spec: WindowSpec,
    frontier: i64,
    adv_max: OptMs,
    idle_floor: i64,
}

impl Frontiers {
    /// The frontier of the class allowed `extra_ms` more lateness.
    #[inline]
    fn of(&self, extra_ms: i64) -> i64 {
        if extra_ms == 0 {
            return self.frontier;
        }
        let Some(max_ts) = self.adv_max.get() else {
            return self.frontier;
        };
        let wm = max_ts
            .saturating_sub(self.spec.lateness_ms)
            .saturating_sub(extra_ms);
        self.spec.start_of(wm).max(self.idle_floor)
    }
}

/// The key of every vacant series slot: an empty metric, which no real
/// series has (metric names are validated non-empty).
fn vacant_key() -> Arc<SeriesKey> {
    static VACANT: std::sync::OnceLock<Arc<SeriesKey>> = std::sync::OnceLock::new();
    VACANT
        .get_or_init(|| Arc::new(SeriesKey::new("", "")))
        .clone()
}

#[inline]
fn is_vacant(key: &SeriesKey) -> bool {
    key.metric.is_empty()
}

/// Serde form of one series: its key and open windows in start order.
#[derive(Serialize, Deserialize)]
struct SeriesRepr {
    metric: String,
    labels: String,
    /// Where the series' detector state is in the detector engine's
    /// checkpoint.
    #[serde(default)]
    det: DetHandle,
    /// (start, aggregate, exact sum) of each open window, ascending. The
    /// aggregate's sum and mean are informative; the exact sum is what a
    /// restore continues from.
    open: Vec<(i64, Agg, ExactRepr)>,
    /// Without open windows: start of the series' last closed window (its
    /// last activity, for the state TTL). Absent in older checkpoints: the
    /// series then counts as active at the agent's latest window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idle_since: Option<i64>,
}

/// Serde form of [`AgentWindows`] (the checkpoint format).
#[derive(Serialize, Deserialize)]
struct AgentWindowsRepr {
    spec: WindowSpec,
    max_ts: OptMs,
    frontier: i64,
    /// The frontier of the last idle close (`i64::MIN`: none). Absent in
    /// older checkpoints: the frontier, which is what every series was
    /// closed through then.
    #[serde(default)]
    idle_floor: Option<i64>,
    /// The greatest timestamp as of the last advance, when it differs
    /// from `max_ts` (absent: equal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    adv_max: Option<OptMs>,
    series: Vec<SeriesRepr>,
}

impl Serialize for AgentWindows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut extra = self.extra.as_slice().iter().peekable();
        let series = self
            .series
            .iter()
            .enumerate()
            .map(|(i, sl)| {
                let repr = |w: &OpenWindow| {
                    let wide = self.wide.get(i as u32, w.start);
                    (
                        w.start,
                        w.agg.to_agg(w.start, wide),
                        ExactRepr {
                            fixed: w.agg.sum.to_i128().to_string(),
                            wide: wide.map(WideSum::to_sparse).unwrap_or_default(),
                        },
                    )
                };
                let mut open: Vec<_> = sl.open.iter().filter(|w| w.is_open()).map(repr).collect();
                while let Some((_, w)) = extra.next_if(|(j, _)| *j as usize == i) {
                    open.push(repr(w));
                }
                let idle_since =
                    (open.is_empty() && !is_vacant(&sl.key)).then_some(sl.open[0].start);
                SeriesRepr {
                    det: sl.det,
                    metric: sl.key.metric.to_string(),
                    labels: sl.key.labels.to_string(),
                    open,
                    idle_since,
                }
            })
            .collect();
        AgentWindowsRepr {
            spec: self.spec,
            max_ts: self.max_ts,
            frontier: self.frontier,
            idle_floor: Some(self.idle_floor),
            adv_max: (self.adv_max != self.max_ts).then_some(self.adv_max),
            series,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for AgentWindows {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let r = AgentWindowsRepr::deserialize(d)?;
        let mut w = AgentWindows::new(r.spec);
        w.max_ts = r.max_ts;
        w.frontier = r.frontier;
        w.idle_floor = r.idle_floor.unwrap_or(r.frontier);
        w.adv_max = r.adv_max.unwrap_or(r.max_ts);
        // Series without open windows in older checkpoints: active at the
        // agent's latest window.
        let latest = r.max_ts.get().map_or(0, |m| w.spec.start_of(m));
        for s in r.series {
            if s.metric.is_empty() {
                // A vacant slot keeps its number.
                if !s.open.is_empty() || !s.labels.is_empty() {
                    return Err(D::Error::custom("a vacant series slot holds data"));
                }
                w.series.push(SeriesSlot {
                    key: vacant_key(),
                    det: DetHandle::NONE,
                    open: [OpenWindow::EMPTY; 2],
                });
                w.vacant += 1;
                continue;
            }
            if !s.open.is_sorted_by(|a, b| a.0 < b.0) || s.open.iter().any(|(_, a, _)| a.count == 0)
            {
                return Err(D::Error::custom(format!(
                    "series {}{{{}}}: open windows not in ascending start order or empty",
                    s.metric, s.labels
                )));
            }
            let slot = w.series.len() as u32;
            let mut windows = Vec::with_capacity(s.open.len());
            for (start, a, exact) in &s.open {
                let bad = || {
                    D::Error::custom(format!(
                        "series {}{{{}}}: window {start}: bad exact sum {exact:?}",
                        s.metric, s.labels
                    ))
                };
                let fixed = exact.fixed.parse::<i128>().map_err(|_| bad())?;
                if !exact.wide.is_empty() {
                    let ws = WideSum::from_sparse(&exact.wide).ok_or_else(bad)?;
                    w.wide.0.get_or_insert_default().push((slot, *start, ws));
                }
                windows.push(OpenWindow {
                    start: *start,
                    agg: OpenAgg::from_agg(a, *start, Fixed::from_i128(fixed)),
                });
            }
            let mut open = windows.into_iter();
            let inline = [
                open.next()
                    .unwrap_or(idle_since(s.idle_since.unwrap_or(latest))),
                open.next().unwrap_or(OpenWindow::EMPTY),
            ];
            let key = Arc::new(SeriesKey::new(&s.metric, &s.labels));
            if w.find(&key.metric, &key.labels).is_some() {
                return Err(D::Error::custom(format!(
                    "series {}{{{}}} appears twice",
                    s.metric, s.labels
                )));
            }
            let i = w.put_series(None, key, s.det, inline);
            let rest: Vec<_> = open.map(|o| (i as u32, o)).collect();
            if !rest.is_empty() {
                w.extra.vec_mut().extend(rest);
            }
            w.open_windows += s.open.len() as u32;
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const SPEC: WindowSpec = WindowSpec {
        size_ms: 60_000,
        lateness_ms: 30_000,
    };

    fn agent() -> (AgentWindows, Arc<AgentKey>, KeyInterner) {
        agent_with(SPEC)
    }

    fn agent_with(spec: WindowSpec) -> (AgentWindows, Arc<AgentKey>, KeyInterner) {
        let key = Arc::new(AgentKey {
            tenant: "t".into(),
            agent: "a".into(),
        });
        (AgentWindows::new(spec), key, KeyInterner::default())
    }

    /// A slow series' first point is judged by the frontier of its class
    /// as of the last advance, also when the agent's own frontier did not
    /// move at that advance and the agent had no slow series yet (found
    /// by `slow_series_close_by_their_own_lateness`).
    #[test]
    fn a_first_slow_point_is_judged_by_the_last_advance() {
        let spec = WindowSpec {
            size_ms: 4_000,
            lateness_ms: 8_000,
        };
        let (mut w, a, mut keys) = agent_with(spec);
        let fast = w.slot("m0", "", &mut keys);
        let mut out = Vec::new();
        assert!(w.push(fast, 56_000, 0.0));
        w.advance(&a, &mut out, 0, &mut Vec::new());
        // 58 s - 8 s lateness lies in the window the frontier already
        // passed (48 s): the agent's frontier stays where it is.
        assert!(w.push(fast, 58_000, 0.0));
        w.advance(&a, &mut out, 0, &mut Vec::new());
        assert_eq!(w.frontier(), 48_000);
        // A series allowed 10 s more: 58 - 18 = 40 s, so [36 s, 40 s) is
        // closed for it, and [40 s, 44 s) is not.
        assert_eq!(w.frontier_for(10_000), 40_000);
        assert!(w.is_late_for(36_000, 10_000));
        assert!(!w.is_late_for(40_000, 10_000));
        let slow = w.add(keys.get_with("m3", "", 10_000));
        assert!(!w.push_with(slow, 39_999, 0.0, 10_000));
        assert!(w.push_with(slow, 40_000, 0.0, 10_000));
    }

    #[test]
    fn closes_when_watermark_passes_end() {
        let (mut w, a, mut keys) = agent();
        let s = w.slot("cpu_pct", "", &mut keys);
        let mut out = Vec::new();
        assert!(w.push(s, 10_000, 1.0));
        assert!(w.push(s, 50_000, 3.0));
        assert!(w.push(s, 80_000, 5.0));
        assert_eq!(
            w.advance(&a, &mut out, 0, &mut Vec::new()),
            0,
            "watermark 50s has not passed 60s"
        );
        assert!(w.push(s, 90_000, 7.0));
        assert_eq!(
            w.advance(&a, &mut out, 0, &mut Vec::new()),
            1,
            "watermark 60s closes [0,60s)"
        );
        assert_eq!(out[0].start_ms, 0);
        assert_eq!(out[0].agg.count, 2);
        assert_eq!(out[0].agg.mean(), 2.0);
        assert!(!w.push(s, 59_999, 9.0), "point for a closed window is late");
        assert!(w.push(s, 60_000, 9.0), "next window still open");
        assert_eq!(w.close_all(&a, &mut out, 0, &mut Vec::new()), 1);
        assert_eq!(out[1].agg.count, 3);
        assert!(
            !w.push(s, 119_999, 1.0),
            "after close_all the whole window is closed"
        );
        assert_eq!(w.open_windows(), 0);
    }

    /// The per-series memory budget (BENCHMARKS.md "Memory"): a change
    /// that grows these is a decision, not an accident.
    #[test]
    fn slot_sizes() {
        assert_eq!(std::mem::size_of::<OpenWindow>(), 56);
        assert_eq!(std::mem::size_of::<SeriesSlot>(), 128);
    }

    #[test]
    fn small_and_large_agents_find_their_series() {
        let (mut w, _, mut keys) = agent();
        for n in 0..3 * INDEX_FROM {
            let labels = format!("n={n}");
            let i = w.slot("m", &labels, &mut keys);
            assert_eq!(i, n);
            for m in 0..=n {
                let labels = format!("n={m}");
                assert_eq!(w.find("m", &labels), Some(m));
                assert_eq!(w.find_key(&keys.get("m", &labels)), Some(m));
            }
            assert_eq!(w.find("m", "n=x"), None);
            assert_eq!(
                w.find_key(&Arc::new(SeriesKey::new("m", "n=0"))),
                None,
                "not the shared key"
            );
        }
        assert!(w.index.is_some());
    }

    #[test]
    fn negative_timestamps_align_to_epoch() {
        assert_eq!(SPEC.start_of(-1), -60_000);
        assert_eq!(SPEC.end_of(-1), 0);
        assert_eq!(SPEC.end_of(i64::MAX), i64::MAX);
    }

    /// Points and an arrival order in which every point is at most L behind
    /// the greatest timestamp delivered before it.
    fn arrivals() -> impl Strategy<Value = Vec<(u8, i64, i64)>> {
        proptest::collection::vec((0u8..3, 0i64..1_000, -1000i64..1000), 1..200).prop_map(|raw| {
            // (series, ts, value); build an arrival order: sort by ts then
            // perturb within the lateness bound.
            let mut pts: Vec<(u8, i64, i64)> = raw
                .into_iter()
                .enumerate()
                .map(|(i, (s, t, v))| (s, t * 1_000 + i as i64 % 1000, v))
                .collect();
            pts.sort_by_key(|p| p.1);
            pts
        })
    }

    proptest! {
        /// For any arrival order within the allowed lateness, closed windows
        /// equal a naive recomputation and no point is counted twice.
        #[test]
        fn windows_equal_naive_group_by(pts in arrivals(), swaps in proptest::collection::vec((0usize..200, 0usize..200), 0..100)) {
            let mut order = pts.clone();
            for (i, j) in swaps {
                let (i, j) = (i % order.len(), j % order.len());
                order.swap(i, j);
                // undo a swap that breaks the lateness bound
                let ok = {
                    let mut max = i64::MIN;
                    order.iter().all(|p| { let good = p.1 >= max.saturating_sub(SPEC.lateness_ms); max = max.max(p.1); good })
                };
                if !ok { order.swap(i, j); }
            }
            let (mut w, a, mut keys) = agent();
            let mut out = Vec::new();
            for chunk in order.chunks(7) {
                for &(s, ts, v) in chunk {
                    let slot = w.slot("m", &format!("s={s}"), &mut keys);
                    prop_assert!(w.push(slot, ts, v as f64), "on-time point refused");
                }
                w.advance(&a, &mut out, 0, &mut Vec::new());
            }
            w.close_all(&a, &mut out, 0, &mut Vec::new());
            let mut naive: BTreeMap<(String, i64), (u64, i64, i64, i64)> = BTreeMap::new();
            for &(s, ts, v) in &pts {
                let e = naive.entry((format!("s={s}"), SPEC.start_of(ts))).or_insert((0, 0, i64::MAX, i64::MIN));
                e.0 += 1; e.1 += v; e.2 = e.2.min(v); e.3 = e.3.max(v);
            }
            let mut got: BTreeMap<(String, i64), (u64, i64, i64, i64)> = BTreeMap::new();
            for wa in &out {
                let k = (wa.series.labels().to_string(), wa.start_ms);
                prop_assert!(got.insert(k, (wa.agg.count, wa.agg.sum as i64, wa.agg.min as i64, wa.agg.max as i64)).is_none(), "window emitted twice");
            }
            prop_assert_eq!(got, naive);
            prop_assert_eq!(out.iter().map(|w| w.agg.count).sum::<u64>(), pts.len() as u64);
        }

        /// Late points never change a closed window, and every point is
        /// either merged exactly once or reported late.
        #[test]
        fn every_point_merged_once_or_late(ts in proptest::collection::vec(0i64..600_000, 1..300)) {
            let (mut w, a, mut keys) = agent();
            let slot = w.slot("m", "", &mut keys);
            let mut out = Vec::new();
            let mut late = 0u64;
            for chunk in ts.chunks(5) {
                for &x in chunk {
                    let was_late = w.is_late(x);
                    let merged = w.push(slot, x, 1.0);
                    prop_assert_eq!(merged, !was_late);
                    if !merged { late += 1; }
                }
                w.advance(&a, &mut out, 0, &mut Vec::new());
            }
            w.close_all(&a, &mut out, 0, &mut Vec::new());
            let merged: u64 = out.iter().map(|w| w.agg.count).sum();
            prop_assert_eq!(merged + late, ts.len() as u64);
            let mut starts: Vec<i64> = out.iter().map(|w| w.start_ms).collect();
            starts.sort();
            starts.dedup();
            prop_assert_eq!(starts.len(), out.len(), "a window closed twice");
        }
    }

    fn any_value() -> impl Strategy<Value = f64> {
        prop_oneof![
            (-1000i64..1000).prop_map(|x| x as f64 / 100.0),
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
            (-1e-9f64..1e-9),
        ]
    }

    proptest! {
        /// Sums and means are exact: any arrival order of the same points
        /// (through inline, extra and wide sums, with a checkpoint round
        /// trip anywhere) gives bit-identical aggregates, equal to the
        /// exactly rounded sum and mean of each window's values.
        #[test]
        fn aggregates_do_not_depend_on_arrival_order(
            pts in proptest::collection::vec((0usize..2, 0i64..4, any_value()), 1..60),
            perm_seed in any::<u64>(),
            restore_at in 0usize..60,
        ) {
            // (series, window, value): every point on time (no advance
            // until the end), up to four windows per series.
            let run = |order: &[(usize, i64, f64)], restore_at: usize| {
                let (mut w, a, mut keys) = agent();
                for (i, &(s, k, v)) in order.iter().enumerate() {
                    if i == restore_at {
                        let json = serde_json::to_string(&w).unwrap();
                        w = serde_json::from_str(&json).unwrap();
                        w.intern_keys(&mut keys, &|_| 0);
                    }
                    let slot = w.slot("m", &format!("s={s}"), &mut keys);
                    assert!(w.push(slot, k * SPEC.size_ms + i as i64 % 1000, v));
                }
                let mut out = Vec::new();
                w.close_all(&a, &mut out, 0, &mut Vec::new());
                assert!(w.wide.is_empty(), "wide sums of closed windows kept");
                out.into_iter()
                    .map(|x| ((x.series.labels().to_string(), x.start_ms), (x.agg.count, x.agg.sum.to_bits(), x.agg.mean.to_bits())))
                    .collect::<BTreeMap<_, _>>()
            };
            let mut shuffled = pts.clone();
            let mut x = perm_seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let first = run(&pts, usize::MAX);
            prop_assert_eq!(&run(&shuffled, restore_at), &first);
            let mut groups: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
            for &(s, k, v) in &pts {
                groups.entry((format!("s={s}"), k * SPEC.size_ms)).or_default().push(v);
            }
            for (key, vals) in groups {
                let (sum, mean) = crate::exact::exact_sum_mean(&vals);
                prop_assert_eq!(first[&key], (vals.len() as u64, sum.to_bits(), mean.to_bits()));
            }
        }
    }

    /// The contract of the module, written the obvious way: every open
    /// window in one ordered map.
    struct Reference {
        spec: WindowSpec,
        max_ts: Option<i64>,
        frontier: i64,
        open: BTreeMap<(usize, i64), Agg>,
    }

    impl Reference {
        fn push(&mut self, slot: usize, ts: i64, v: f64) -> bool {
            if self.spec.end_of(ts) <= self.frontier {
                return false;
            }
            self.open
                .entry((slot, self.spec.start_of(ts)))
                .and_modify(|a| a.push(ts, v))
                .or_insert_with(|| Agg::new(ts, v));
            self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
            true
        }

        fn close(&mut self, frontier: i64) -> Vec<(usize, i64, Agg)> {
            self.frontier = self.frontier.max(frontier);
            let f = self.frontier;
            let size = self.spec.size_ms;
            let done: Vec<_> = self
                .open
                .iter()
                .filter(|((_, s), _)| s + size <= f)
                .map(|(&(slot, s), a)| (slot, s, *a))
                .collect();
            for (slot, s, _) in &done {
                self.open.remove(&(*slot, *s));
            }
            done
        }
    }

    proptest! {
        /// Under any arrival order, window size and lateness (including
        /// lateness above the window size and batches spanning many
        /// windows), closing emits exactly what the reference emits, in the
        /// same order (series by first appearance, then start), with
        /// identical aggregates; and a checkpoint round trip at any batch
        /// boundary changes nothing.
        #[test]
        fn equals_reference_model(
            size_s in 1i64..5,
            lateness_s in 0i64..12,
            batches in proptest::collection::vec(
                proptest::collection::vec((0usize..4, 0i64..40_000, -50i64..50), 1..12), 1..40),
            restore_at in 0usize..40,
        ) {
            let spec = WindowSpec { size_ms: size_s * 1000, lateness_ms: lateness_s * 1000 };
            let (mut w, a, mut keys) = agent_with(spec);
            let mut r = Reference { spec, max_ts: None, frontier: i64::MIN, open: BTreeMap::new() };
            let mut out = Vec::new();
            let seg = |w: &AgentWindows, out: &[WindowAggregate]| -> Vec<(usize, i64, Agg)> {
                out.iter()
                    .map(|x| (w.find(x.series.metric(), x.series.labels()).unwrap(), x.start_ms, x.agg))
                    .collect()
            };
            for (bi, b) in batches.iter().enumerate() {
                if bi == restore_at {
                    let json = serde_json::to_string(&w).unwrap();
                    w = serde_json::from_str(&json).unwrap();
                    w.intern_keys(&mut keys, &|_| 0);
                }
                for &(s, ts, v) in b {
                    let slot = w.slot("m", &format!("s={s}"), &mut keys);
                    prop_assert_eq!(w.push(slot, ts, v as f64), r.push(slot, ts, v as f64));
                }
                out.clear();
                w.advance(&a, &mut out, 0, &mut Vec::new());
                let wm = r.max_ts.unwrap().saturating_sub(spec.lateness_ms);
                prop_assert_eq!(seg(&w, &out), r.close(spec.start_of(wm)));
                prop_assert_eq!(w.open_windows(), r.open.len());
            }
            out.clear();
            w.close_all(&a, &mut out, 0, &mut Vec::new());
            prop_assert_eq!(seg(&w, &out), r.close(spec.end_of(r.max_ts.unwrap())));
            prop_assert_eq!(w.open_windows(), 0);
        }
    }

    /// Reference for series with their own lateness: per-series frontiers
    /// from the agent's greatest timestamp minus (lateness + extra), all
    /// raised to an idle close.
    struct SlowReference {
        spec: WindowSpec,
        extra: [i64; 4],
        max_ts: Option<i64>,
        frontier: [i64; 4],
        open: BTreeMap<(usize, i64), Agg>,
    }

    impl SlowReference {
        fn push(&mut self, slot: usize, ts: i64, v: f64) -> bool {
            if self.spec.end_of(ts) <= self.frontier[slot] {
                return false;
            }
            self.open
                .entry((slot, self.spec.start_of(ts)))
                .and_modify(|a| a.push(ts, v))
                .or_insert_with(|| Agg::new(ts, v));
            self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
            true
        }

        /// Closes by watermark, or everything (`idle`).
        fn close(&mut self, idle: bool) -> Vec<(usize, i64, Agg)> {
            let Some(m) = self.max_ts else {
                return Vec::new();
            };
            for slot in 0..4 {
                let f = if idle {
                    self.spec.end_of(m)
                } else {
                    self.spec
                        .start_of(m - self.spec.lateness_ms - self.extra[slot])
                };
                self.frontier[slot] = self.frontier[slot].max(f);
            }
            let size = self.spec.size_ms;
            let done: Vec<_> = self
                .open
                .iter()
                .filter(|((slot, s), _)| s + size <= self.frontier[*slot])
                .map(|(&(slot, s), a)| (slot, s, *a))
                .collect();
            for (slot, s, _) in &done {
                self.open.remove(&(*slot, *s));
            }
            done
        }
    }

    proptest! {
        /// Series allowed more lateness than their agent (slow collectors,
        /// `pipeline.lateness`): under any arrival order, window size,
        /// lateness and extra lateness, each series closes by its own
        /// frontier exactly as the reference does, a point is late only
        /// for its own series' frontier, and checkpoints change nothing.
        #[test]
        fn slow_series_close_by_their_own_lateness(
            size_s in 1i64..5,
            lateness_s in 0i64..12,
            extra_s in 1i64..30,
            batches in proptest::collection::vec(
                proptest::collection::vec((0usize..4, 0i64..60_000, -50i64..50), 1..12), 1..40),
            restore_at in 0usize..40,
            end_idle in any::<bool>(),
        ) {
            let spec = WindowSpec { size_ms: size_s * 1000, lateness_ms: lateness_s * 1000 };
            // Series 2 and 3 are slow (3 the slowest), 0 and 1 are not.
            let extra = [0, 0, extra_s * 1000, extra_s * 2000];
            let (mut w, a, mut keys) = agent_with(spec);
            let mut r = SlowReference {
                spec,
                extra,
                max_ts: None,
                frontier: [i64::MIN; 4],
                open: BTreeMap::new(),
            };
            let extra_of = |m: &str| extra[m[1..].parse::<usize>().unwrap()];
            let mut out = Vec::new();
            let seg = |out: &[WindowAggregate]| -> Vec<(usize, i64, Agg)> {
                out.iter()
                    .map(|x| (x.series.metric()[1..].parse::<usize>().unwrap(), x.start_ms, x.agg))
                    .collect()
            };
            for (bi, b) in batches.iter().enumerate() {
                if bi == restore_at {
                    let json = serde_json::to_string(&w).unwrap();
                    w = serde_json::from_str(&json).unwrap();
                    w.intern_keys(&mut keys, &extra_of);
                }
                for &(s, ts, v) in b {
                    let m = format!("m{s}");
                    prop_assert_eq!(w.is_late_for(ts, extra[s]), r.spec.end_of(ts) <= r.frontier[s]);
                    if w.is_late_for(ts, extra[s]) {
                        continue;
                    }
                    let slot = match w.find(&m, "") {
                        Some(i) => i,
                        None => w.add(keys.get_with(&m, "", extra[s])),
                    };
                    prop_assert!(w.push_with(slot, ts, v as f64, extra[s]));
                    prop_assert!(r.push(s, ts, v as f64));
                }
                out.clear();
                w.advance(&a, &mut out, 0, &mut Vec::new());
                let mut got = seg(&out);
                let mut want = r.close(false);
                got.sort_by_key(|x| (x.0, x.1));
                want.sort_by_key(|x| (x.0, x.1));
                prop_assert_eq!(got, want);
                prop_assert_eq!(w.open_windows(), r.open.len());
            }
            if end_idle {
                out.clear();
                w.close_all(&a, &mut out, 0, &mut Vec::new());
                let mut got = seg(&out);
                got.sort_by_key(|x| (x.0, x.1));
                prop_assert_eq!(got, r.close(true));
                prop_assert_eq!(w.open_windows(), 0);
                // After an idle close, every class is closed through the
                // idle frontier, also the slow ones.
                let m = r.max_ts.unwrap();
                for e in extra {
                    prop_assert!(w.is_late_for(m, e));
                }
            }
        }
    }
}
