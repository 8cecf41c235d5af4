//! Threshold detector: `aggregate op value` for `for` consecutive windows
//! fires; the incident resolves once `aggregate op clear` has failed to
//! hold for `clear_for` consecutive windows (1 by default: the first clear
//! window resolves). A firing incident whose value goes back past `clear`
//! but not for `clear_for` windows has *flapped*: it stays open and counts
//! the flap, and its `resolved` event carries the count (`flaps`), so a
//! flapping series is one incident, not many.
//!
//! Per (rule, series) state is five scalars. Consecutive means the
//! previous window's end equals the next window's start: a gap of missing
//! windows restarts the run (but does not resolve a firing incident; the
//! next window decides).

use serde::{Deserialize, Serialize};

use super::lifecycle::{fmt_value, render, Subject};
use crate::model::{AlertEvent, AlertStatus, DetectorKind, OptMs, WindowAggregate};
use crate::rules::{RuleSet, ThresholdRule};

/// State of one threshold rule on one series.
/// 24 bytes: optional times use [`OptMs`], and the start of the current
/// run is not stored: a run is `run` contiguous windows ending at
/// `last_end_ms`, so it starts `run` window sizes before that. The two
/// `u16` counters of the clear run and the flaps sit in what was padding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdState {
    /// Breaching windows in the current run (contiguous, ending at
    /// `last_end_ms`).
    pub run: u32,
    /// While firing: contiguous windows past `clear` ending at
    /// `last_end_ms` (saturates; `clear_for` is at most `u16::MAX`).
    #[serde(default)]
    pub clear_run: u16,
    /// While firing: clear runs shorter than `clear_for` windows, ended by
    /// a window not past `clear` (saturates).
    #[serde(default)]
    pub flaps: u16,
    /// End of the last window seen, if any.
    pub last_end_ms: OptMs,
    /// `started_at_ms` of the firing incident, if any.
    pub firing_since: OptMs,
}

impl ThresholdState {
    /// No run in progress and not firing: the state carries nothing (the
    /// engine then does not store it).
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.run == 0 && self.firing_since.is_none()
    }

    /// The state after feeding one window to an idle one (see
    /// [`ThresholdState::on_window`]), or `None` when it stays idle. A
    /// window that does not breach leaves an idle state idle and raises
    /// nothing, so that case is decided without building one.
    #[inline]
    pub fn from_idle(
        rule: &ThresholdRule,
        rules: &RuleSet,
        w: &WindowAggregate,
        out: &mut Vec<AlertEvent>,
    ) -> Option<Self> {
        let v = rule.aggregate.of(&w.agg);
        if !(v.is_finite() && rule.op.holds(v, rule.value)) {
            return None;
        }
        let mut st = ThresholdState::default();
        st.on_window(rule, rules, w, out);
        (!st.is_idle()).then_some(st)
    }

    /// Feeds one window; appends a `firing` or `resolved` event on a
    /// transition.
    pub fn on_window(
        &mut self,
        rule: &ThresholdRule,
        rules: &RuleSet,
        w: &WindowAggregate,
        out: &mut Vec<AlertEvent>,
    ) {
        if self.last_end_ms.get().is_some_and(|e| w.start_ms < e) {
            // Out of order or repeated window: the contract says this does
            // not happen; ignore it rather than corrupt the run.
            return;
        }
        let v = rule.aggregate.of(&w.agg);
        if !v.is_finite() {
            return;
        }
        let contiguous = self.last_end_ms.get() == Some(w.start_ms);
        self.last_end_ms = w.end_ms.into();
        let breach = rule.op.holds(v, rule.value);
        if breach {
            if !contiguous {
                self.run = 0;
            }
            self.run = self.run.saturating_add(1);
        } else {
            self.run = 0;
        }
        match self.firing_since.get() {
            None if breach && self.run >= rule.for_windows => {
                // The run's windows are contiguous and of one size.
                let size = w.end_ms.saturating_sub(w.start_ms);
                let started = w
                    .start_ms
                    .saturating_sub(size.saturating_mul(i64::from(self.run - 1)));
                self.firing_since = started.into();
                self.clear_run = 0;
                self.flaps = 0;
                out.push(event(rule, rules, w, v, AlertStatus::Firing, started, 0));
            }
            Some(started) => {
                if !rule.op.holds(v, rule.clear) {
                    // Past `clear`: one more window of the clear run (a
                    // gap restarts it, as it restarts a breach run).
                    self.clear_run = if contiguous {
                        self.clear_run.saturating_add(1)
                    } else {
                        1
                    };
                    if u32::from(self.clear_run) >= rule.clear_for {
                        let flaps = self.flaps;
                        self.firing_since = OptMs::NONE;
                        self.clear_run = 0;
                        self.flaps = 0;
                        out.push(event(
                            rule,
                            rules,
                            w,
                            v,
                            AlertStatus::Resolved,
                            started,
                            flaps,
                        ));
                    }
                } else if self.clear_run > 0 {
                    // Went back past `clear` but did not stay there for
                    // `clear_for` windows: a flap, held in this incident.
                    self.flaps = self.flaps.saturating_add(1);
                    self.clear_run = 0;
                }
            }
            _ => {}
        }
    }
}

fn event(
    rule: &ThresholdRule,
    rules: &RuleSet,
    w: &WindowAggregate,
    v: f64,
    status: AlertStatus,
    started: i64,
    flaps: u16,
) -> AlertEvent {
    let s = &w.series;
    let subject = Subject {
        rule: &rule.name,
        kind: DetectorKind::Threshold,
        severity: rule.severity,
        tenant: s.tenant(),
        agent: s.agent(),
        metric: Some(s.metric()),
        labels: s.labels(),
    };
    let series = subject.series_name();
    let summary = match (&rule.summary, status) {
        (Some(t), AlertStatus::Firing) => render(
            t,
            &[
                ("rule", &rule.name),
                ("tenant", s.tenant()),
                ("agent", s.agent()),
                ("metric", s.metric()),
                ("labels", s.labels()),
                ("series", &series),
                ("aggregate", rule.aggregate.as_str()),
                ("op", rule.op.as_str()),
                ("value", &fmt_value(v)),
                ("threshold", &fmt_value(rule.value)),
                ("for", &rule.for_windows.to_string()),
            ],
        ),
        (None, AlertStatus::Firing) => format!(
            "{series} {} {} {} {} on {} for {} window(s)",
            rule.aggregate.as_str(),
            fmt_value(v),
            rule.op,
            fmt_value(rule.value),
            s.agent(),
            rule.for_windows
        ),
        (_, AlertStatus::Resolved) => format!(
            "{series} {} {} on {} is back past {} (resolved)",
            rule.aggregate.as_str(),
            fmt_value(v),
            s.agent(),
            fmt_value(rule.clear)
        ),
    };
    let mut e = subject.event(rules, status, started, w.end_ms, summary);
    e.value = Some(v);
    e.threshold = Some(rule.value);
    e.window_start_ms = Some(w.start_ms);
    e.window_end_ms = Some(w.end_ms);
    if status == AlertStatus::Resolved {
        e.flaps = Some(u32::from(flaps));
    }
    e
}
