//! A lock-free latency histogram with bounded memory: log-linear buckets
//! (32 per doubling, about 1.1 % relative error) from 1 µs to about
//! 18 minutes, safe to record from librdkafka's delivery callbacks and to
//! read from any thread. It holds the producer's acknowledgement
//! latencies ([`crate::AckedProducer::send_timed`]), which `vigil bench
//! --brokers` reports as p50/p99.
//!
//! ```text
//!  record(d): bucket i = floor(32 · log2(d / 1 µs))   (clamped to [0, N))
//!  quantile(q): rank = ceil(q · count); walk the buckets to the rank;
//!               answer the bucket's geometric midpoint, capped at the max seen
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per doubling of the latency.
const PER_DOUBLING: f64 = 32.0;
/// Doublings covered above [`FLOOR_NS`]: 1 µs · 2^30 ≈ 1,074 s.
const DOUBLINGS: usize = 30;
/// Number of buckets.
const BUCKETS: usize = DOUBLINGS * PER_DOUBLING as usize;
/// Lower edge of bucket 0; smaller latencies are counted in bucket 0.
const FLOOR_NS: f64 = 1_000.0;

/// Latency histogram. See the module docs.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }
}

/// A summary of the recorded latencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    /// Number of latencies recorded.
    pub count: u64,
    /// Their mean.
    pub mean: Duration,
    /// Median (within about 1.1 %).
    pub p50: Duration,
    /// 99th percentile (within about 1.1 %).
    pub p99: Duration,
    /// The largest latency recorded (exact).
    pub max: Duration,
}

fn bucket_of(ns: u64) -> usize {
    let x = ns as f64 / FLOOR_NS;
    if x.is_nan() || x <= 1.0 {
        return 0;
    }
    let i = (x.log2() * PER_DOUBLING).floor();
    if i >= (BUCKETS - 1) as f64 {
        BUCKETS - 1
    } else {
        i as usize
    }
}

/// Geometric midpoint of bucket `i`, in nanoseconds.
fn midpoint_ns(i: usize) -> f64 {
    FLOOR_NS * ((i as f64 + 0.5) / PER_DOUBLING).exp2()
}

/// The 1-based rank of quantile `q` among `count` sorted values (the
/// nearest-rank definition: the smallest value with at least `q` of the
/// values at or below it). `q` is clamped to `[0, 1]`.
pub fn nearest_rank(q: f64, count: u64) -> u64 {
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    ((q * count as f64).ceil() as u64).clamp(1, count.max(1))
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_add(ns))
            });
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Number of latencies recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The latency at quantile `q` (0.5: median, 0.99: p99), or `None`
    /// when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        quantile_of(&counts, q, self.max_ns.load(Ordering::Relaxed))
    }

    /// Count, mean, p50, p99 and max, or `None` when nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        let max = self.max_ns.load(Ordering::Relaxed);
        Some(LatencySummary {
            count,
            mean: Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed) / count.max(1)),
            p50: quantile_of(&counts, 0.5, max)?,
            p99: quantile_of(&counts, 0.99, max)?,
            max: Duration::from_nanos(max),
        })
    }
}

fn quantile_of(counts: &[u64], q: f64, max_ns: u64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = nearest_rank(q, total);
    let mut seen = 0u64;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            let ns = midpoint_ns(i).min(max_ns as f64);
            return Some(Duration::from_nanos(ns as u64));
        }
    }
    Some(Duration::from_nanos(max_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: Duration, want: Duration, rel: f64) -> bool {
        let (g, w) = (got.as_secs_f64(), want.as_secs_f64());
        (g - w).abs() <= rel * w
    }

    #[test]
    fn nearest_rank_follows_the_definition() {
        assert_eq!(nearest_rank(0.5, 10), 5);
        assert_eq!(nearest_rank(0.99, 10), 10);
        assert_eq!(nearest_rank(0.99, 1000), 990);
        assert_eq!(nearest_rank(0.0, 10), 1);
        assert_eq!(nearest_rank(1.0, 10), 10);
        assert_eq!(nearest_rank(2.0, 10), 10);
        assert_eq!(nearest_rank(f64::NAN, 10), 1);
        assert_eq!(nearest_rank(0.5, 0), 1);
    }

    #[test]
    fn percentiles_of_a_uniform_spread_are_within_the_bucket_error() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.summary(), None);
        // 1 ms .. 1000 ms, shuffled order does not matter.
        for ms in (1..=1000u64).rev() {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary().unwrap();
        assert_eq!(s.count, 1000);
        assert!(
            close(s.p50, Duration::from_millis(500), 0.011),
            "{:?}",
            s.p50
        );
        assert!(
            close(s.p99, Duration::from_millis(990), 0.011),
            "{:?}",
            s.p99
        );
        assert_eq!(s.max, Duration::from_millis(1000));
        assert!(close(s.mean, Duration::from_micros(500_500), 1e-9));
        assert!(s.p50 <= s.p99 && s.p99 <= s.max);
    }

    #[test]
    fn a_single_sample_is_its_own_percentiles_and_extremes_do_not_panic() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(2_500));
        let s = h.summary().unwrap();
        assert!(close(s.p50, Duration::from_micros(2_500), 0.011));
        assert!(s.p99 <= s.max);

        let h = LatencyHistogram::default();
        h.record(Duration::ZERO);
        h.record(Duration::from_nanos(10));
        h.record(Duration::MAX);
        h.record(Duration::from_secs(100_000));
        assert_eq!(h.count(), 4);
        assert!(h.quantile(0.25).unwrap() <= Duration::from_micros(2));
        // Beyond the last bucket: counted, reported at the last bucket's
        // midpoint (the max stays exact).
        assert!(h.quantile(1.0).unwrap() >= Duration::from_secs(1_000));
        assert_eq!(h.summary().unwrap().max, Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn a_skewed_tail_shows_in_p99_not_p50() {
        let h = LatencyHistogram::default();
        for _ in 0..985 {
            h.record(Duration::from_millis(5));
        }
        for _ in 0..15 {
            h.record(Duration::from_millis(800));
        }
        let s = h.summary().unwrap();
        assert!(close(s.p50, Duration::from_millis(5), 0.011), "{s:?}");
        assert!(close(s.p99, Duration::from_millis(800), 0.011), "{s:?}");
    }
}
