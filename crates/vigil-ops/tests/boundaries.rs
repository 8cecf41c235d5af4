//! Oracle test at the boundaries of the semantics (docs/semantics.md): points
//! exactly at a window's start and end, exactly at the lateness and
//! future-skew limits, batches late by just under and just over the
//! lateness, an idle close followed by the agent's buffered backlog, an
//! agent whose clock is ahead within the bound next to one on time, and
//! timestamps before and at 1970-01-01. Vigil's closed windows and refusal
//! counts must equal those of an independent model of the contract,
//! written here from the documentation and sharing no code with the
//! pipeline.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;
use vigil_ops::config::{ClockMode, PipelineConfig};
use vigil_ops::pipeline::{Outputs, Pipeline};
use vigil_ops::rules::RuleSet;
use vigil_ops::{Position, RejectReason};
use vigil_proto::v1::{Series, TelemetryBatch};

const W: i64 = 60_000;
const L: i64 = 30_000;
const SKEW: i64 = 300_000;
const IDLE: i64 = 300_000;
/// A window-aligned time.
const T0: i64 = 1_800_000_000_000;

/// What a test feeds: a batch of one agent at processing time `now`, or a
/// tick at `now`.
enum Step {
    Batch {
        agent: &'static str,
        now: i64,
        points: Vec<i64>,
    },
    Tick(i64),
}

/// The contract, independently: per agent, the greatest accepted
/// timestamp, the frontier (greatest window boundary at or below greatest
/// timestamp − L, moved once per batch after its points are judged, or to
/// the end of the greatest timestamp's window by an idle close), the last
/// batch's processing time, and the open windows.
#[derive(Default)]
struct Model {
    agents: BTreeMap<&'static str, AgentModel>,
    /// (agent, window start) → (count, sum) of closed windows.
    closed: BTreeMap<(String, i64), (u64, f64)>,
    refused: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
struct AgentModel {
    max_ts: Option<i64>,
    frontier: Option<i64>,
    last_seen: i64,
    open: BTreeMap<i64, (u64, f64)>,
}

fn floor_w(t: i64) -> i64 {
    t.div_euclid(W) * W
}

impl Model {
    fn batch(&mut self, agent: &'static str, now: i64, points: &[i64]) {
        let a = self.agents.entry(agent).or_default();
        a.last_seen = now;
        for (i, &t) in points.iter().enumerate() {
            let v = (i + 1) as f64;
            let reason = if !(0..=253_402_300_799_999).contains(&t) {
                Some("out_of_range")
            } else if t > now + SKEW {
                Some("future")
            } else if a.frontier.is_some_and(|f| floor_w(t) + W <= f) {
                Some("late")
            } else {
                None
            };
            match reason {
                Some(r) => *self.refused.entry(r).or_default() += 1,
                None => {
                    let e = a.open.entry(floor_w(t)).or_default();
                    e.0 += 1;
                    e.1 += v;
                    a.max_ts = Some(a.max_ts.map_or(t, |m| m.max(t)));
                }
            }
        }
        if let Some(m) = a.max_ts {
            let f = floor_w(m - L);
            a.frontier = Some(a.frontier.map_or(f, |x| x.max(f)));
        }
        self.close(agent);
    }

    fn tick(&mut self, now: i64) {
        let idle: Vec<_> = self
            .agents
            .iter()
            .filter(|(_, a)| !a.open.is_empty() && now - a.last_seen >= IDLE)
            .map(|(k, _)| *k)
            .collect();
        for agent in idle {
            let a = self.agents.get_mut(agent).unwrap();
            let f = floor_w(a.max_ts.unwrap()) + W;
            a.frontier = Some(a.frontier.map_or(f, |x| x.max(f)));
            self.close(agent);
        }
    }

    fn close(&mut self, agent: &'static str) {
        let a = self.agents.get_mut(agent).unwrap();
        let Some(f) = a.frontier else { return };
        let done: Vec<i64> = a.open.keys().copied().filter(|s| s + W <= f).collect();
        for s in done {
            let agg = a.open.remove(&s).unwrap();
            self.closed.insert((agent.to_string(), s), agg);
        }
    }

    fn finish(&mut self) {
        let agents: Vec<_> = self.agents.keys().copied().collect();
        for agent in agents {
            let a = self.agents.get_mut(agent).unwrap();
            if let Some(m) = a.max_ts {
                let f = floor_w(m) + W;
                a.frontier = Some(a.frontier.map_or(f, |x| x.max(f)));
            }
            self.close(agent);
        }
    }
}

fn record(agent: &str, seq: u64, now: i64, points: &[i64]) -> Vec<u8> {
    TelemetryBatch {
        status: Vec::new(),
        security_events: Vec::new(),
        tenant_id: "t".into(),
        agent_id: agent.into(),
        seq,
        sent_at_ms: now,
        boot_id: 1,
        agent: None,
        series: vec![Series {
            metric: "cpu_pct".into(),
            labels: vec![],
            timestamps_ms: points.to_vec(),
            values: (1..=points.len()).map(|v| v as f64).collect(),
        }],
    }
    .encode_to_vec()
}

/// Runs the steps through Vigil and the model; compares closed windows
/// (agent, start, count, sum) and refusals by reason.
fn check(steps: &[Step]) {
    let cfg = PipelineConfig {
        clock: ClockMode::Wall,
        ..PipelineConfig::default()
    };
    assert_eq!(
        (
            cfg.window_ms(),
            cfg.allowed_lateness.as_millis() as i64,
            cfg.max_clock_skew.as_millis() as i64,
            cfg.idle_timeout.as_millis() as i64
        ),
        (W, L, SKEW, IDLE),
        "the model assumes the default limits"
    );
    let mut p = Pipeline::new(cfg, Arc::new(RuleSet::default())).unwrap();
    let mut out = Outputs::default();
    let mut m = Model::default();
    let mut seq: BTreeMap<&str, u64> = BTreeMap::new();
    for step in steps {
        match step {
            Step::Batch { agent, now, points } => {
                let s = seq.entry(agent).or_default();
                *s += 1;
                p.process(
                    Position {
                        partition: 0,
                        offset: 0,
                    },
                    &record(agent, *s, *now, points),
                    *now,
                    &mut out,
                );
                m.batch(agent, *now, points);
            }
            Step::Tick(now) => {
                p.tick(*now, &mut out);
                m.tick(*now);
            }
        }
    }
    p.finish(&mut out);
    m.finish();
    let got: BTreeMap<(String, i64), (u64, f64)> = out
        .windows
        .iter()
        .map(|w| {
            (
                (w.series.agent().to_string(), w.start_ms),
                (w.agg.count, w.agg.sum),
            )
        })
        .collect();
    assert_eq!(got.len(), out.windows.len(), "a window emitted twice");
    assert_eq!(got, m.closed);
    for r in ["out_of_range", "future", "late"] {
        let reason = RejectReason::ALL
            .into_iter()
            .find(|x| x.as_str() == r)
            .unwrap();
        assert_eq!(
            p.stats().rejected_points(reason),
            m.refused.get(r).copied().unwrap_or(0),
            "{r}"
        );
    }
}

fn batch(agent: &'static str, now: i64, points: &[i64]) -> Step {
    Step::Batch {
        agent,
        now,
        points: points.to_vec(),
    }
}

/// Window edges and the lateness limit: a point at a window's first and
/// last millisecond and at the next window's first; once the frontier
/// passed a window, its last millisecond is late (just over the
/// lateness) and the next window's first is not (just under).
#[test]
fn window_edges_and_the_lateness_limit() {
    check(&[
        batch("a", T0 + 10_000, &[T0, T0 + W - 1, T0 + W]),
        // max = T0 + 90 s: frontier T0 + 60 s closes [T0, T0 + 60 s).
        batch("a", T0 + 100_000, &[T0 + 90_000]),
        batch("a", T0 + 101_000, &[T0 + W - 1, T0 + W, T0 + 2 * W - 1]),
        // max - L exactly on a boundary: T0 + 150 s - 30 s = T0 + 120 s.
        batch("a", T0 + 151_000, &[T0 + 150_000]),
        batch("a", T0 + 152_000, &[T0 + 2 * W - 1, T0 + 2 * W]),
        // One millisecond before the boundary moves nothing.
        batch("a", T0 + 210_000, &[T0 + 3 * W + L - 1]),
        batch("a", T0 + 211_000, &[T0 + 3 * W - 1]),
    ]);
}

/// The future-skew limit: exactly `max_clock_skew` ahead is accepted, one
/// millisecond more is refused; an agent ahead within the bound gets its
/// own windows and closes none of another agent's.
#[test]
fn future_limit_and_skewed_agents() {
    let now = T0 + 30_000;
    check(&[
        batch("a", now, &[now + SKEW, now + SKEW + 1, T0]),
        batch("b", now, &[T0 + 1_000]),
        // An agent 4 min ahead: its watermark runs 4 min ahead of b's.
        batch("s", now + 1_000, &[now + 240_000, now + 241_000]),
        batch("b", now + 20_000, &[T0 + 21_000, T0 + 40_000]),
        batch("s", now + 60_000, &[now + 300_000]),
        batch("b", now + 61_000, &[T0 + 59_000, T0 + 61_000]),
    ]);
}

/// An idle close (no batch for `idle_timeout`) followed by the agent's
/// buffered backlog: points in windows the idle close ended are late, the
/// rest opens new windows; a tick just before the timeout closes nothing.
#[test]
fn idle_close_then_backlog() {
    let last = T0 + 130_000;
    check(&[
        batch("a", T0 + 65_000, &[T0 + 1_000, T0 + 61_000]),
        batch("a", last, &[T0 + 125_000]),
        Step::Tick(last + IDLE - 1),
        // The buffered backlog after the outage, before the idle close.
        Step::Tick(last + IDLE),
        batch(
            "a",
            last + IDLE + 1_000,
            &[T0 + 100_000, T0 + 179_999, T0 + 180_000, T0 + 240_000],
        ),
        batch("a", last + IDLE + 2_000, &[T0 + 300_000, T0 + 400_000]),
    ]);
}

/// Timestamps before 1970 are refused (`out_of_range`), the epoch itself
/// is accepted into the window starting at 0.
#[test]
fn epoch_and_before() {
    check(&[
        batch("z", T0, &[-1, 0, 59_999, -60_000, i64::MIN]),
        batch("z", T0 + 1_000, &[60_000, 120_000]),
    ]);
}
