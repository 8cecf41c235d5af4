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
//! frontier. Closed windows are emitted series by series in the order the
//! series first appeared, each series' windows in start order, so output
//! order is deterministic for a given input order.

use std::sync::Arc;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::model::{Agg, SeriesMeta, WindowAggregate};

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

/// Open windows of one series.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeriesWindows {
    meta: Arc<SeriesMeta>,
    /// Open windows by start, ascending. Usually one or two.
    open: SmallVec<[(i64, Agg); 2]>,
}

/// All open windows of one agent, with its watermark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentWindows {
    spec: WindowSpec,
    /// Greatest accepted timestamp.
    max_ts: Option<i64>,
    /// Windows ending at or before this are closed.
    frontier: i64,
    series: Vec<SeriesWindows>,
    /// `metric \0 labels` → index into `series`.
    index: HashMap<Box<str>, u32>,
    /// Number of open windows over all series.
    open_windows: usize,
}

impl AgentWindows {
    /// An agent with no series yet.
    pub fn new(spec: WindowSpec) -> Self {
        AgentWindows {
            spec,
            max_ts: None,
            frontier: i64::MIN,
            series: Vec::new(),
            index: HashMap::new(),
            open_windows: 0,
        }
    }

    /// Index of an existing series (metric, canonical labels); `key_buf`
    /// as in [`AgentWindows::slot`].
    pub fn find(&self, metric: &str, labels: &str, key_buf: &mut String) -> Option<usize> {
        key_buf.clear();
        key_buf.push_str(metric);
        key_buf.push('\0');
        key_buf.push_str(labels);
        self.index.get(key_buf.as_str()).map(|&i| i as usize)
    }

    /// Index of the series (metric, canonical labels), creating it on first
    /// use. `key_buf` is scratch space reused between calls so that looking
    /// up a known series allocates nothing.
    pub fn slot(
        &mut self,
        tenant: &Arc<str>,
        agent: &Arc<str>,
        metric: &str,
        labels: &str,
        key_buf: &mut String,
    ) -> usize {
        key_buf.clear();
        key_buf.push_str(metric);
        key_buf.push('\0');
        key_buf.push_str(labels);
        if let Some(&i) = self.index.get(key_buf.as_str()) {
            return i as usize;
        }
        let i = self.series.len();
        let meta = SeriesMeta {
            id: crate::model::SeriesId::of(tenant, agent, metric, labels),
            tenant: tenant.clone(),
            agent: agent.clone(),
            metric: metric.into(),
            labels: labels.into(),
        };
        self.series.push(SeriesWindows {
            meta: Arc::new(meta),
            open: SmallVec::new(),
        });
        self.index.insert(key_buf.as_str().into(), i as u32);
        i
    }

    /// Would a point at `ts` be late now?
    #[inline]
    pub fn is_late(&self, ts: i64) -> bool {
        self.spec.end_of(ts) <= self.frontier
    }

    /// Merges one point into its window. Returns `false` (and changes
    /// nothing) when the point is late. The watermark only moves in
    /// [`AgentWindows::advance`], so all points of one batch are judged
    /// against the same frontier.
    #[inline]
    pub fn push(&mut self, slot: usize, ts: i64, value: f64) -> bool {
        if self.is_late(ts) {
            return false;
        }
        let start = self.spec.start_of(ts);
        let open = &mut self.series[slot].open;
        // Fast path: the newest open window.
        match open.last_mut() {
            Some((s, agg)) if *s == start => agg.push(ts, value),
            Some((s, _)) if *s < start => {
                open.push((start, Agg::new(ts, value)));
                self.open_windows += 1;
            }
            None => {
                open.push((start, Agg::new(ts, value)));
                self.open_windows += 1;
            }
            Some(_) => match open.binary_search_by_key(&start, |(s, _)| *s) {
                Ok(i) => open[i].1.push(ts, value),
                Err(i) => {
                    open.insert(i, (start, Agg::new(ts, value)));
                    self.open_windows += 1;
                }
            },
        }
        if self.max_ts.is_none_or(|m| ts > m) {
            self.max_ts = Some(ts);
        }
        true
    }

    /// Moves the frontier to the current watermark and emits the windows it
    /// closes. Returns how many were closed.
    pub fn advance(&mut self, out: &mut Vec<WindowAggregate>) -> usize {
        let Some(max_ts) = self.max_ts else { return 0 };
        let wm = max_ts.saturating_sub(self.spec.lateness_ms);
        let frontier = self.spec.start_of(wm);
        if frontier <= self.frontier {
            return 0;
        }
        self.frontier = frontier;
        self.close_through(out)
    }

    /// Closes every open window (idle timeout, end of input) and moves the
    /// frontier past the greatest timestamp's window.
    pub fn close_all(&mut self, out: &mut Vec<WindowAggregate>) -> usize {
        let Some(max_ts) = self.max_ts else { return 0 };
        self.frontier = self.frontier.max(self.spec.end_of(max_ts));
        self.close_through(out)
    }

    fn close_through(&mut self, out: &mut Vec<WindowAggregate>) -> usize {
        if self.open_windows == 0 {
            return 0;
        }
        let size = self.spec.size_ms;
        let frontier = self.frontier;
        let mut closed = 0;
        for s in &mut self.series {
            let n = s
                .open
                .iter()
                .take_while(|(start, _)| start.saturating_add(size) <= frontier)
                .count();
            if n == 0 {
                continue;
            }
            for (start, agg) in s.open.drain(..n) {
                out.push(WindowAggregate {
                    series: s.meta.clone(),
                    start_ms: start,
                    end_ms: start.saturating_add(size),
                    agg,
                });
            }
            closed += n;
        }
        self.open_windows -= closed;
        closed
    }

    /// The agent's watermark (greatest timestamp minus lateness).
    pub fn watermark(&self) -> Option<i64> {
        self.max_ts.map(|m| m.saturating_sub(self.spec.lateness_ms))
    }

    /// Windows ending at or before this are closed.
    pub fn frontier(&self) -> i64 {
        self.frontier
    }

    /// Number of open windows.
    pub fn open_windows(&self) -> usize {
        self.open_windows
    }

    /// Number of series seen.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Metadata of the series in `slot`.
    pub fn meta(&self, slot: usize) -> &Arc<SeriesMeta> {
        &self.series[slot].meta
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

    fn agent() -> (AgentWindows, Arc<str>, Arc<str>) {
        (AgentWindows::new(SPEC), "t".into(), "a".into())
    }

    #[test]
    fn closes_when_watermark_passes_end() {
        let (mut w, t, a) = agent();
        let mut buf = String::new();
        let s = w.slot(&t, &a, "cpu_pct", "", &mut buf);
        let mut out = Vec::new();
        assert!(w.push(s, 10_000, 1.0));
        assert!(w.push(s, 50_000, 3.0));
        assert!(w.push(s, 80_000, 5.0));
        assert_eq!(w.advance(&mut out), 0, "watermark 50s has not passed 60s");
        assert!(w.push(s, 90_000, 7.0));
        assert_eq!(w.advance(&mut out), 1, "watermark 60s closes [0,60s)");
        assert_eq!(out[0].start_ms, 0);
        assert_eq!(out[0].agg.count, 2);
        assert_eq!(out[0].agg.mean(), 2.0);
        assert!(!w.push(s, 59_999, 9.0), "point for a closed window is late");
        assert!(w.push(s, 60_000, 9.0), "next window still open");
        assert_eq!(w.close_all(&mut out), 1);
        assert_eq!(out[1].agg.count, 3);
        assert!(
            !w.push(s, 119_999, 1.0),
            "after close_all the whole window is closed"
        );
        assert_eq!(w.open_windows(), 0);
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
            let (mut w, t, a) = agent();
            let mut buf = String::new();
            let mut out = Vec::new();
            for chunk in order.chunks(7) {
                for &(s, ts, v) in chunk {
                    let slot = w.slot(&t, &a, "m", &format!("s={s}"), &mut buf);
                    prop_assert!(w.push(slot, ts, v as f64), "on-time point refused");
                }
                w.advance(&mut out);
            }
            w.close_all(&mut out);
            let mut naive: BTreeMap<(String, i64), (u64, i64, i64, i64)> = BTreeMap::new();
            for &(s, ts, v) in &pts {
                let e = naive.entry((format!("s={s}"), SPEC.start_of(ts))).or_insert((0, 0, i64::MAX, i64::MIN));
                e.0 += 1; e.1 += v; e.2 = e.2.min(v); e.3 = e.3.max(v);
            }
            let mut got: BTreeMap<(String, i64), (u64, i64, i64, i64)> = BTreeMap::new();
            for wa in &out {
                let k = (wa.series.labels.to_string(), wa.start_ms);
                prop_assert!(got.insert(k, (wa.agg.count, wa.agg.sum as i64, wa.agg.min as i64, wa.agg.max as i64)).is_none(), "window emitted twice");
            }
            prop_assert_eq!(got, naive);
            prop_assert_eq!(out.iter().map(|w| w.agg.count).sum::<u64>(), pts.len() as u64);
        }

        /// Late points never change a closed window, and every point is
        /// either merged exactly once or reported late.
        #[test]
        fn every_point_merged_once_or_late(ts in proptest::collection::vec(0i64..600_000, 1..300)) {
            let (mut w, t, a) = agent();
            let mut buf = String::new();
            let slot = w.slot(&t, &a, "m", "", &mut buf);
            let mut out = Vec::new();
            let mut late = 0u64;
            for chunk in ts.chunks(5) {
                for &x in chunk {
                    let was_late = w.is_late(x);
                    let merged = w.push(slot, x, 1.0);
                    prop_assert_eq!(merged, !was_late);
                    if !merged { late += 1; }
                }
                w.advance(&mut out);
            }
            w.close_all(&mut out);
            let merged: u64 = out.iter().map(|w| w.agg.count).sum();
            prop_assert_eq!(merged + late, ts.len() as u64);
            let mut starts: Vec<i64> = out.iter().map(|w| w.start_ms).collect();
            starts.sort();
            starts.dedup();
            prop_assert_eq!(starts.len(), out.len(), "a window closed twice");
        }
    }
}
