//! Sharing of series keys between agents, and the memory habits of the
//! per-series state: one allocation per distinct (metric, labels) pair,
//! and vectors that grow by a sixteenth rather than double.

use std::sync::Arc;

use hashbrown::HashTable;

use crate::model::SeriesKey;

/// Hash of a series key (metric, canonical labels): xxh3 of the labels
/// seeded with xxh3 of the metric. Stable across processes and runs.
#[inline]
pub fn key_hash(metric: &str, labels: &str) -> u64 {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
    xxh3_64_with_seed(labels.as_bytes(), xxh3_64(metric.as_bytes()))
}

/// The distinct series keys of a pipeline. Every agent's series with the
/// same metric and labels points at one [`SeriesKey`].
#[derive(Debug, Clone, Default)]
pub struct KeyInterner {
    keys: HashTable<Arc<SeriesKey>>,
}

impl KeyInterner {
    /// The shared key for (metric, labels), if one exists. Allocates
    /// nothing.
    #[inline]
    pub fn find(&self, metric: &str, labels: &str) -> Option<&Arc<SeriesKey>> {
        let h = key_hash(metric, labels);
        self.keys
            .find(h, |k| *k.metric == *metric && *k.labels == *labels)
    }

    /// The shared key for (metric, labels), created on first use.
    pub fn get(&mut self, metric: &str, labels: &str) -> Arc<SeriesKey> {
        self.get_with(metric, labels, 0)
    }

    /// The shared key for (metric, labels), created on first use with
    /// `extra_lateness_ms` (a function of the metric, so every use of one
    /// key passes the same value).
    pub fn get_with(
        &mut self,
        metric: &str,
        labels: &str,
        extra_lateness_ms: i64,
    ) -> Arc<SeriesKey> {
        let h = key_hash(metric, labels);
        self.keys
            .entry(
                h,
                |k| *k.metric == *metric && *k.labels == *labels,
                |k| k.hash(),
            )
            .or_insert_with(|| {
                Arc::new(SeriesKey::with_lateness(metric, labels, extra_lateness_ms))
            })
            .get()
            .clone()
    }

    /// The shared key equal to `key` (which is adopted when new).
    pub fn intern(&mut self, key: &Arc<SeriesKey>) -> Arc<SeriesKey> {
        self.keys
            .entry(key.hash(), |k| **k == **key, |k| k.hash())
            .or_insert_with(|| key.clone())
            .get()
            .clone()
    }

    /// Forgets the keys no series holds any more (only the interner does,
    /// after evictions); returns how many it dropped.
    pub fn release_unused(&mut self) -> usize {
        let before = self.keys.len();
        self.keys.retain(|k| Arc::strong_count(k) > 1);
        before - self.keys.len()
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Makes room for one more element, growing by a sixteenth (at least 4)
/// instead of doubling: the state vectors (agents, per-agent series,
/// detector arenas) then waste at most about 6 % of their memory. The
/// cost is more reallocations (still amortised O(1)); the large ones are
/// cheap, as the allocator remaps their pages instead of copying them.
#[inline]
pub fn grow_gently<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 16).max(4));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_share_one_allocation() {
        let mut k = KeyInterner::default();
        let a = k.get("disk_used_pct", "mount=/");
        let b = k.get("disk_used_pct", "mount=/");
        let c = k.get("disk_used_pct", "mount=/var");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        let loose = Arc::new(SeriesKey::new("disk_used_pct", "mount=/"));
        assert!(Arc::ptr_eq(k.find("disk_used_pct", "mount=/").unwrap(), &a));
        assert!(k.find("disk_used_pct", "mount=/tmp").is_none());
        assert!(Arc::ptr_eq(&k.intern(&loose), &a));
        assert_eq!(k.len(), 2);
        // The split between metric and labels is part of the hash.
        assert_ne!(key_hash("ab", "c"), key_hash("a", "bc"));
    }

    #[test]
    fn gentle_growth_wastes_little() {
        let mut v: Vec<u64> = Vec::new();
        for i in 0..1000 {
            grow_gently(&mut v);
            v.push(i);
        }
        assert!(v.capacity() <= 1000 * 17 / 16 + 4, "{}", v.capacity());
    }
}
