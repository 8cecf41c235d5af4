//! What the consumer knows of its own health, for the worker's readiness
//! probe: whether it has joined its group, whether any broker is
//! reachable and how far behind its partitions are.
//!
//! librdkafka reports broker states and per-partition consumer lag in its
//! statistics (every `statistics.interval.ms`); the consumer context feeds
//! each report into a [`ConsumerHealth`] (relaxed atomics, written by the
//! polling thread, read by the HTTP thread), and [`ConsumerHealth::snapshot`]
//! gives a consistent-enough view to decide readiness.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::Mutex;

/// What one statistics report says about health.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsSummary {
    /// Brokers of the cluster (learned or configured, not librdkafka's
    /// internal or logical ones) in state `UP`.
    pub brokers_up: u32,
    /// Brokers of the cluster known to the client.
    pub brokers_known: u32,
    /// Greatest consumer lag over the partitions this member fetches
    /// (`None`: it fetches none, or no lag is known yet).
    pub max_lag: Option<i64>,
    /// Partitions this member fetches, as (topic, partition), that cannot
    /// be fetched: their leader broker is not `UP`, or no broker is.
    pub unfetchable: BTreeSet<(String, i32)>,
}

/// Reads a statistics report.
pub fn summarize(stats: &rdkafka::Statistics) -> StatsSummary {
    let mut s = StatsSummary::default();
    for b in stats.brokers.values() {
        // `internal` is librdkafka's own pseudo-broker, `logical` the
        // group coordinator's alias; neither says a real broker is there.
        if b.source == "internal" || b.source == "logical" {
            continue;
        }
        s.brokers_known += 1;
        if b.state == "UP" {
            s.brokers_up += 1;
        }
    }
    let up: BTreeSet<i32> = stats
        .brokers
        .values()
        .filter(|b| b.state == "UP" && b.source != "internal" && b.source != "logical")
        .map(|b| b.nodeid)
        .collect();
    for t in stats.topics.values() {
        for p in t.partitions.values() {
            // Partition -1 is librdkafka's internal UA partition.
            if p.partition < 0 || !p.desired {
                continue;
            }
            // A leader not known yet (right after an assignment) is not
            // an outage unless no broker is up at all.
            let down = if p.leader < 0 {
                up.is_empty()
            } else {
                !up.contains(&p.leader)
            };
            if down {
                s.unfetchable.insert((t.topic.clone(), p.partition));
            }
            // Negative lags mean "not known yet".
            if p.consumer_lag < 0 {
                continue;
            }
            s.max_lag = Some(s.max_lag.map_or(p.consumer_lag, |m| m.max(p.consumer_lag)));
        }
    }
    s
}

/// Health facts of one consumer, updated from its callbacks.
#[derive(Debug)]
pub struct ConsumerHealth {
    joined: AtomicBool,
    stats_at_ms: AtomicI64,
    brokers_up: AtomicU32,
    brokers_known: AtomicU32,
    /// -1: unknown or no partition.
    max_lag: AtomicI64,
    /// See [`StatsSummary::unfetchable`] (written once per report).
    unfetchable: Mutex<BTreeSet<(String, i32)>>,
    /// librdkafka reported every broker connection down since the last
    /// statistics report (nothing can be fetched until one says otherwise).
    all_down: AtomicBool,
}

impl Default for ConsumerHealth {
    fn default() -> Self {
        ConsumerHealth {
            joined: AtomicBool::new(false),
            stats_at_ms: AtomicI64::new(0),
            brokers_up: AtomicU32::new(0),
            brokers_known: AtomicU32::new(0),
            max_lag: AtomicI64::new(-1),
            unfetchable: Mutex::new(BTreeSet::new()),
            all_down: AtomicBool::new(false),
        }
    }
}

/// A copy of [`ConsumerHealth`] at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerSnapshot {
    /// The group has given this member an assignment (possibly empty).
    pub joined: bool,
    /// Wall-clock time of the last statistics report (ms since the
    /// epoch), `None` before the first.
    pub stats_at_ms: Option<i64>,
    /// Brokers in state `UP` at the last report.
    pub brokers_up: u32,
    /// Brokers known at the last report.
    pub brokers_known: u32,
    /// Greatest consumer lag at the last report.
    pub max_lag: Option<i64>,
}

impl ConsumerHealth {
    /// Records that the group assigned partitions to this member (an
    /// empty assignment counts: the member takes part in the group).
    pub fn mark_joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
    }

    /// Records a statistics report received at `now_ms`.
    pub fn record(&self, s: StatsSummary, now_ms: i64) {
        self.brokers_up.store(s.brokers_up, Ordering::Relaxed);
        self.brokers_known.store(s.brokers_known, Ordering::Relaxed);
        self.max_lag
            .store(s.max_lag.unwrap_or(-1), Ordering::Relaxed);
        *self.unfetchable.lock().unwrap_or_else(|p| p.into_inner()) = s.unfetchable;
        self.all_down.store(false, Ordering::Relaxed);
        self.stats_at_ms.store(now_ms.max(1), Ordering::Relaxed);
    }

    /// Records librdkafka's "all broker connections are down" error: no
    /// partition can be fetched until the next statistics report (which
    /// comes within `statistics.interval.ms` and says what is up).
    pub fn mark_all_down(&self) {
        self.all_down.store(true, Ordering::Relaxed);
    }

    /// Whether `topic`/`partition` could be fetched at the last
    /// statistics report (true before the first: nothing says otherwise),
    /// and no "all brokers down" error came since.
    pub fn fetchable(&self, topic: &str, partition: i32) -> bool {
        if self.all_down.load(Ordering::Relaxed) {
            return false;
        }
        let set = self.unfetchable.lock().unwrap_or_else(|p| p.into_inner());
        !set.iter().any(|(t, p)| *p == partition && t == topic)
    }

    /// The current facts.
    pub fn snapshot(&self) -> ConsumerSnapshot {
        let at = self.stats_at_ms.load(Ordering::Relaxed);
        let lag = self.max_lag.load(Ordering::Relaxed);
        ConsumerSnapshot {
            joined: self.joined.load(Ordering::Relaxed),
            stats_at_ms: (at > 0).then_some(at),
            brokers_up: self.brokers_up.load(Ordering::Relaxed),
            brokers_known: self.brokers_known.load(Ordering::Relaxed),
            max_lag: (lag >= 0).then_some(lag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statistics report with the given brokers (name, source, state)
    /// and partitions (id, desired, lag).
    fn stats(brokers: &[(&str, &str, &str)], parts: &[(i32, bool, i64)]) -> rdkafka::Statistics {
        use rdkafka::statistics::{Broker, Partition, Topic};
        let brokers = brokers
            .iter()
            .map(|(name, source, state)| {
                let b = Broker {
                    name: name.to_string(),
                    source: source.to_string(),
                    state: state.to_string(),
                    ..Broker::default()
                };
                (name.to_string(), b)
            })
            .collect();
        let partitions = parts
            .iter()
            .map(|&(partition, desired, consumer_lag)| {
                let p = Partition {
                    partition,
                    desired,
                    consumer_lag,
                    ..Partition::default()
                };
                (partition, p)
            })
            .collect();
        let topic = Topic {
            topic: "t".into(),
            partitions,
            ..Topic::default()
        };
        rdkafka::Statistics {
            brokers,
            topics: [("t".to_string(), topic)].into_iter().collect(),
            ..rdkafka::Statistics::default()
        }
    }

    #[test]
    fn internal_and_logical_brokers_do_not_count_as_reachable() {
        let s = summarize(&stats(
            &[
                (":0/internal", "internal", "UP"),
                ("GroupCoordinator", "logical", "UP"),
                ("127.0.0.1:9092/1", "learned", "DOWN"),
                ("127.0.0.1:9092/bootstrap", "configured", "INIT"),
            ],
            &[],
        ));
        assert_eq!((s.brokers_up, s.brokers_known), (0, 2));
        let s = summarize(&stats(&[("127.0.0.1:9092/1", "learned", "UP")], &[]));
        assert_eq!((s.brokers_up, s.brokers_known), (1, 1));
    }

    #[test]
    fn lag_is_the_greatest_over_fetched_partitions_with_a_known_lag() {
        let s = summarize(&stats(
            &[],
            &[
                (-1, true, 99),
                (0, true, 7),
                (1, false, 500),
                (2, true, -1),
                (3, true, 12),
            ],
        ));
        assert_eq!(s.max_lag, Some(12));
        assert_eq!(summarize(&stats(&[], &[(0, false, 3)])).max_lag, None);
    }

    #[test]
    fn a_partition_whose_leader_is_not_up_cannot_be_fetched() {
        let mut st = stats(
            &[
                ("127.0.0.1:9092/1", "learned", "UP"),
                ("127.0.0.1:9093/2", "learned", "DOWN"),
            ],
            &[
                (0, true, 0),
                (1, true, 0),
                (2, true, 0),
                (3, false, 0),
                (-1, true, 0),
            ],
        );
        let ids = [("127.0.0.1:9092/1", 1), ("127.0.0.1:9093/2", 2)];
        for (name, id) in ids {
            st.brokers.get_mut(name).unwrap().nodeid = id;
        }
        let t = st.topics.get_mut("t").unwrap();
        // Leaders: 0 on the broker that is up, 1 on the one that is down,
        // 2 not known yet (fetchable while a broker is up); 3 is not
        // fetched by this member.
        for (p, leader) in [(0, 1), (1, 2), (2, -1), (3, 2), (-1, -1)] {
            t.partitions.get_mut(&p).unwrap().leader = leader;
        }
        let s = summarize(&st);
        let want: BTreeSet<(String, i32)> = [("t".to_string(), 1)].into();
        assert_eq!(s.unfetchable, want);
        let h = ConsumerHealth::default();
        assert!(h.fetchable("t", 1), "nothing known yet");
        h.record(s, 1);
        assert!(h.fetchable("t", 0) && h.fetchable("t", 2) && h.fetchable("t", 3));
        assert!(h.fetchable("u", 1) && !h.fetchable("t", 1));
        // Every broker down: nothing can be fetched.
        st.brokers.get_mut("127.0.0.1:9092/1").unwrap().state = "CONNECT".into();
        h.record(summarize(&st), 2);
        assert!(!h.fetchable("t", 0) && !h.fetchable("t", 2));
        st.brokers.get_mut("127.0.0.1:9092/1").unwrap().state = "UP".into();
        h.record(summarize(&st), 3);
        assert!(h.fetchable("t", 0));
        // The client's "all brokers down" error holds until the next report.
        h.mark_all_down();
        assert!(!h.fetchable("t", 0) && !h.fetchable("u", 9));
        h.record(summarize(&st), 4);
        assert!(h.fetchable("t", 0));
    }

    #[test]
    fn snapshot_reflects_the_last_report() {
        let h = ConsumerHealth::default();
        let s0 = h.snapshot();
        assert!(!s0.joined);
        assert_eq!(s0.stats_at_ms, None);
        assert_eq!(s0.max_lag, None);
        h.mark_joined();
        h.record(
            StatsSummary {
                brokers_up: 1,
                brokers_known: 1,
                max_lag: Some(0),
                unfetchable: BTreeSet::new(),
            },
            1_700_000_000_000,
        );
        let s = h.snapshot();
        assert!(s.joined);
        assert_eq!(s.stats_at_ms, Some(1_700_000_000_000));
        assert_eq!(s.max_lag, Some(0));
        h.record(StatsSummary::default(), 1_700_000_005_000);
        assert_eq!(h.snapshot().max_lag, None);
        assert_eq!(h.snapshot().brokers_up, 0);
    }
}
