//! Liveness and readiness of a running worker, as Kubernetes probes ask
//! for them (`/healthz`, `/readyz` on the metrics listener, see
//! [`crate::http`]).
//!
//! - **Alive**: the worker's loop made progress within
//!   `worker.stall_timeout` (a flush waits at most
//!   `worker.delivery_timeout`, so a live worker always beats it). A stuck
//!   loop is what a restart cures.
//! - **Ready**: alive, not stopping, a member of its consumer group (an
//!   assignment was received, possibly empty: a spare replica with no
//!   partition is ready, or a rolling update would never finish), a
//!   broker reachable according to librdkafka's last statistics report,
//!   that report recent, and no owned partition further behind than
//!   `worker.ready_max_lag` records (0: lag is not checked).
//!
//! A worker runs `worker.threads` consumer-group members, one per thread;
//! each publishes its own facts ([`MemberHealth`]) and the worker is
//! alive, or ready, only when every member is ([`Probes`]).
//!
//! The decision is a pure function of a [`Probe`] so that it is tested at
//! its limits without a broker or a clock.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use vigil_kafka::health::{ConsumerHealth, ConsumerSnapshot};

/// Statistics older than this many statistics intervals mean the client
/// stopped reporting (or its thread is stuck): not ready.
const STALE_STATS_INTERVALS: i64 = 3;

/// Facts a running worker publishes for its probes: one
/// [`MemberHealth`] per consumer-group member it runs (one per thread,
/// `worker.threads`), written by that member's thread with relaxed
/// atomics and read by the HTTP thread.
#[derive(Debug, Default)]
pub struct WorkerHealth {
    stopping: AtomicBool,
    members: Mutex<Vec<Arc<MemberHealth>>>,
}

/// The facts of one member: its loop's last beat and its consumer.
#[derive(Debug, Default)]
pub struct MemberHealth {
    heartbeat_ms: AtomicI64,
    consumer: OnceLock<Arc<ConsumerHealth>>,
}

impl MemberHealth {
    /// The member's loop is alive at `now_ms`.
    pub fn beat(&self, now_ms: i64) {
        self.heartbeat_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Attaches the member's consumer health facts once it exists.
    pub fn attach_consumer(&self, c: Arc<ConsumerHealth>) {
        let _ = self.consumer.set(c);
    }

    fn probe(&self, now_ms: i64, stopping: bool, limits: ProbeLimits) -> Probe {
        let hb = self.heartbeat_ms.load(Ordering::Relaxed);
        Probe {
            now_ms,
            heartbeat_ms: (hb > 0).then_some(hb),
            stopping,
            consumer: self.consumer.get().map(|c| c.snapshot()),
            limits,
        }
    }
}

impl WorkerHealth {
    /// Registers the `n` members of a worker run (threads), replacing
    /// those of an earlier run (and its stopping flag), and returns their
    /// facts: until a member has started, the worker is not ready.
    pub fn members(&self, n: usize) -> Vec<Arc<MemberHealth>> {
        let fresh: Vec<Arc<MemberHealth>> =
            (0..n).map(|_| Arc::new(MemberHealth::default())).collect();
        self.stopping.store(false, Ordering::Relaxed);
        *self
            .members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh.clone();
        fresh
    }

    /// The worker is shutting down (readiness fails from now on).
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// What the probes decide on, at `now_ms`: one [`Probe`] per member
    /// (one that has not started, before any member registered).
    pub fn probe(&self, now_ms: i64, limits: ProbeLimits) -> Probes {
        let stopping = self.stopping.load(Ordering::Relaxed);
        let members = self
            .members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut probes: Vec<Probe> = members
            .iter()
            .map(|m| m.probe(now_ms, stopping, limits))
            .collect();
        if probes.is_empty() {
            probes.push(MemberHealth::default().probe(now_ms, stopping, limits));
        }
        Probes { members: probes }
    }
}

/// The probes of every member of a worker: alive when every member is,
/// ready when every member is (a member with no partition is ready, see
/// the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probes {
    /// One per member, in the order they registered.
    pub members: Vec<Probe>,
}

impl Probes {
    /// `Ok` when every member is alive, else why not.
    pub fn alive(&self) -> Result<(), String> {
        self.all(Probe::alive)
    }

    /// `Ok` when every member is ready, else every reason why not.
    pub fn ready(&self) -> Result<(), String> {
        self.all(Probe::ready)
    }

    /// The members' verdicts, named `member k` when there are several.
    fn all(&self, f: impl Fn(&Probe) -> Result<(), String>) -> Result<(), String> {
        let many = self.members.len() > 1;
        let why: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .filter_map(|(k, p)| {
                f(p).err()
                    .map(|e| if many { format!("member {k}: {e}") } else { e })
            })
            .collect();
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }
}

/// The configured bounds of the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeLimits {
    /// Longest time without loop progress that is still alive (ms).
    pub stall_timeout_ms: i64,
    /// librdkafka's `statistics.interval.ms`.
    pub stats_interval_ms: i64,
    /// Largest per-partition lag that is still ready; 0: not checked.
    pub ready_max_lag: u64,
}

/// A snapshot of everything the probes look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Now (wall clock, ms since the epoch).
    pub now_ms: i64,
    /// Last loop progress, `None` before the loop started.
    pub heartbeat_ms: Option<i64>,
    /// Shutting down.
    pub stopping: bool,
    /// The consumer's facts, `None` before it exists.
    pub consumer: Option<ConsumerSnapshot>,
    /// Bounds.
    pub limits: ProbeLimits,
}

impl Probe {
    /// `Ok` when alive, else why not.
    pub fn alive(&self) -> Result<(), String> {
        match self.heartbeat_ms {
            // Starting: restoring checkpoints and joining can take a while;
            // the startup probe (or initialDelaySeconds) covers it.
            None => Ok(()),
            Some(hb) => {
                let idle = self.now_ms.saturating_sub(hb);
                if idle > self.limits.stall_timeout_ms {
                    Err(format!(
                        "the worker loop made no progress for {idle} ms (stall_timeout {} ms)",
                        self.limits.stall_timeout_ms
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// `Ok` when ready, else every reason why not.
    pub fn ready(&self) -> Result<(), String> {
        let mut why = Vec::new();
        if let Err(e) = self.alive() {
            why.push(e);
        }
        if self.stopping {
            why.push("the worker is stopping".to_string());
        }
        if self.heartbeat_ms.is_none() {
            why.push("the worker loop has not started".to_string());
        }
        match self.consumer {
            None => why.push("the consumer does not exist yet".to_string()),
            Some(c) => {
                if !c.joined {
                    why.push("no assignment from the consumer group yet".to_string());
                }
                let stale_after = self
                    .limits
                    .stats_interval_ms
                    .saturating_mul(STALE_STATS_INTERVALS);
                match c.stats_at_ms {
                    None => why.push("no client statistics yet".to_string()),
                    Some(at) if self.now_ms.saturating_sub(at) > stale_after => why.push(format!(
                        "no client statistics for {} ms",
                        self.now_ms.saturating_sub(at)
                    )),
                    Some(_) if c.brokers_up == 0 => {
                        why.push(format!("no broker reachable ({} known)", c.brokers_known))
                    }
                    Some(_) => {}
                }
                let max = self.limits.ready_max_lag;
                if let Some(lag) = c.max_lag {
                    if max > 0 && lag as u64 > max {
                        why.push(format!(
                            "a partition is {lag} records behind (ready_max_lag {max})"
                        ));
                    }
                }
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn limits() -> ProbeLimits {
        ProbeLimits {
            stall_timeout_ms: 120_000,
            stats_interval_ms: 5_000,
            ready_max_lag: 1_000,
        }
    }

    fn healthy() -> Probe {
        Probe {
            now_ms: NOW,
            heartbeat_ms: Some(NOW - 10),
            stopping: false,
            consumer: Some(ConsumerSnapshot {
                joined: true,
                stats_at_ms: Some(NOW - 1_000),
                brokers_up: 1,
                brokers_known: 1,
                max_lag: Some(0),
            }),
            limits: limits(),
        }
    }

    fn with_consumer(f: impl FnOnce(&mut ConsumerSnapshot)) -> Probe {
        let mut p = healthy();
        if let Some(c) = p.consumer.as_mut() {
            f(c);
        }
        p
    }

    #[test]
    fn a_working_member_is_alive_and_ready() {
        assert_eq!(healthy().alive(), Ok(()));
        assert_eq!(healthy().ready(), Ok(()));
    }

    #[test]
    fn liveness_fails_only_past_the_stall_timeout() {
        let at = |idle: i64| Probe {
            heartbeat_ms: Some(NOW - idle),
            ..healthy()
        };
        assert!(at(120_000).alive().is_ok());
        let e = at(120_001).alive().unwrap_err();
        assert!(e.contains("no progress for 120001 ms"), "{e}");
        assert!(at(120_001).ready().is_err());
        // Before the loop starts: alive (startup), not ready.
        let starting = Probe {
            heartbeat_ms: None,
            ..healthy()
        };
        assert!(starting.alive().is_ok());
        assert!(starting.ready().unwrap_err().contains("not started"));
    }

    #[test]
    fn readiness_needs_membership_statistics_and_a_broker() {
        let e = with_consumer(|c| c.joined = false).ready().unwrap_err();
        assert!(e.contains("no assignment"), "{e}");
        let e = with_consumer(|c| c.stats_at_ms = None).ready().unwrap_err();
        assert!(e.contains("no client statistics yet"), "{e}");
        let e = with_consumer(|c| c.brokers_up = 0).ready().unwrap_err();
        assert!(e.contains("no broker reachable (1 known)"), "{e}");
        let e = Probe {
            consumer: None,
            ..healthy()
        }
        .ready()
        .unwrap_err();
        assert!(e.contains("consumer does not exist"), "{e}");
        let e = Probe {
            stopping: true,
            ..healthy()
        }
        .ready()
        .unwrap_err();
        assert!(e.contains("stopping"), "{e}");
    }

    #[test]
    fn statistics_go_stale_after_three_intervals() {
        assert!(with_consumer(|c| c.stats_at_ms = Some(NOW - 15_000))
            .ready()
            .is_ok());
        let e = with_consumer(|c| c.stats_at_ms = Some(NOW - 15_001))
            .ready()
            .unwrap_err();
        assert!(e.contains("no client statistics for 15001 ms"), "{e}");
    }

    #[test]
    fn lag_at_the_bound_is_ready_one_more_is_not() {
        assert!(with_consumer(|c| c.max_lag = Some(1_000)).ready().is_ok());
        let e = with_consumer(|c| c.max_lag = Some(1_001))
            .ready()
            .unwrap_err();
        assert!(e.contains("1001 records behind"), "{e}");
        // Unknown lag (no partition, or not measured yet) does not block.
        assert!(with_consumer(|c| c.max_lag = None).ready().is_ok());
        // 0 turns the lag check off.
        let mut p = with_consumer(|c| c.max_lag = Some(5_000_000));
        p.limits.ready_max_lag = 0;
        assert!(p.ready().is_ok());
    }

    #[test]
    fn every_reason_is_reported_at_once() {
        let p = Probe {
            stopping: true,
            ..with_consumer(|c| {
                c.joined = false;
                c.brokers_up = 0;
            })
        };
        let e = p.ready().unwrap_err();
        assert_eq!(e.matches("; ").count(), 2, "{e}");
    }

    #[test]
    fn worker_health_publishes_what_the_members_set() {
        let h = WorkerHealth::default();
        // Before any member: alive (starting), not ready.
        let p = h.probe(NOW, limits());
        assert_eq!(p.members.len(), 1);
        assert_eq!(p.members[0].heartbeat_ms, None);
        assert!(p.members[0].consumer.is_none());
        assert!(p.alive().is_ok());
        assert!(p.ready().unwrap_err().contains("not started"));
        let m = h.members(1).remove(0);
        m.beat(NOW - 5);
        let c = Arc::new(ConsumerHealth::default());
        c.mark_joined();
        m.attach_consumer(c);
        let p = h.probe(NOW, limits());
        assert_eq!(p.members.len(), 1);
        assert_eq!(p.members[0].heartbeat_ms, Some(NOW - 5));
        assert!(p.members[0].consumer.is_some_and(|c| c.joined));
        h.set_stopping();
        assert!(h.probe(NOW, limits()).members[0].stopping);
        // A run of two: neither has started, so not ready; the first
        // run's member is gone.
        let two = h.members(2);
        let p = h.probe(NOW, limits());
        assert_eq!(p.members.len(), 2);
        assert!(p.members.iter().all(|m| m.heartbeat_ms.is_none()));
        two[0].beat(NOW);
        let e = h.probe(NOW, limits()).ready().unwrap_err();
        assert!(
            e.contains("member 1: the worker loop has not started"),
            "{e}"
        );
    }

    #[test]
    fn a_worker_is_alive_and_ready_only_when_every_member_is() {
        let two = |a: Probe, b: Probe| Probes {
            members: vec![a, b],
        };
        assert!(two(healthy(), healthy()).ready().is_ok());
        let stuck = Probe {
            heartbeat_ms: Some(NOW - 120_001),
            ..healthy()
        };
        let e = two(healthy(), stuck).alive().unwrap_err();
        assert!(
            e.starts_with("member 1: the worker loop made no progress"),
            "{e}"
        );
        let e = two(with_consumer(|c| c.brokers_up = 0), healthy())
            .ready()
            .unwrap_err();
        assert!(e.starts_with("member 0: no broker reachable"), "{e}");
        // One member: the reason as it is, unnamed.
        let one = Probes {
            members: vec![with_consumer(|c| c.joined = false)],
        };
        assert!(one.ready().unwrap_err().starts_with("no assignment"));
    }
}
