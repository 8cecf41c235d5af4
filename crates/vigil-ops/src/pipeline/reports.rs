//! Status reports and security events of an accepted batch (wire fields
//! 10 and 11): the per-event `future` check, their counters, their rows
//! for the `status/` and `security_events/` datasets ([`Outputs`]), and
//! their hand-over to the detector families that read them (see
//! [`crate::detect::registry::ReportFamily`]); and the batch's
//! `AgentInfo` (field 5) when its reports carry no agent version (judged
//! at the batch's send time; see [`crate::detect::agent_version`]).
//!
//! Reports and events are not windowed: each is judged alone, at its own
//! timestamp (event time). The one check that needs processing time is
//! the clock skew: a report or event stamped more than `max_clock_skew`
//! ahead of processing time is refused alone, as `future` (the structural
//! checks, done at decode, refuse the whole batch).

use vigil_proto::v1::{SecurityEventKind, TelemetryBatch};

use super::{Outputs, Pipeline};
use crate::decode::{kind_name, text};
use crate::model::{SecurityEventRow, StatusRow};
use crate::reject::{Position, RejectReason, Rejected};

/// The pseudo metric name of a refused status report in the dead letters.
pub const STATUS_DLQ_METRIC: &str = "vigil.status";
/// The pseudo metric name of a refused security event in the dead
/// letters (its kind is in the labels, `kind=login_failure`).
pub const SECURITY_DLQ_METRIC: &str = "vigil.security_event";

impl Pipeline {
    /// Takes the status reports and security events of the accepted batch
    /// of agent `ai` at processing time `now`: the events first, then the
    /// reports (a report stamped at the end of the batch's period must not
    /// close a burst before the batch's own failures are seen).
    pub(super) fn accept_reports(
        &mut self,
        ai: usize,
        pos: Position,
        batch: &TelemetryBatch,
        now: i64,
        out: &mut Outputs,
    ) {
        let info = batch
            .agent
            .as_ref()
            .filter(|i| !i.agent_version.is_empty())
            .filter(|_| batch.status.iter().all(|r| r.agent_version.is_empty()));
        if batch.status.is_empty() && batch.security_events.is_empty() && info.is_none() {
            return;
        }
        let skew = self.cfg.max_clock_skew.as_millis() as i64;
        let future_after = now.saturating_add(skew);
        let before = out.alerts.len();
        let refuse = |out: &mut Outputs, ts: i64, metric: &str, labels: String| {
            out.rejected.push(Rejected {
                reason: RejectReason::Future,
                detail: format!(
                    "timestamp {ts} more than {skew} ms ahead of processing time {now}"
                ),
                position: pos,
                tenant: Some(batch.tenant_id.clone()),
                agent: Some(batch.agent_id.clone()),
                seq: Some(batch.seq),
                metric: Some(metric.to_string()),
                labels: Some(labels),
                points: Vec::new(),
                point_count: 1,
                raw: None,
            });
        };
        for e in &batch.security_events {
            if e.timestamp_ms > future_after {
                self.stats.rejected_points[RejectReason::Future.index()] += 1;
                let kind = SecurityEventKind::try_from(e.kind)
                    .map(kind_name)
                    .unwrap_or("unspecified");
                refuse(
                    out,
                    e.timestamp_ms,
                    SECURITY_DLQ_METRIC,
                    format!("kind={kind}"),
                );
                continue;
            }
            self.stats.security_events += 1;
            let st = &self.agents[ai];
            out.security.push(SecurityEventRow {
                tenant: batch.tenant_id.clone(),
                agent: batch.agent_id.clone(),
                hostname: st.hostname.as_deref().map(str::to_string),
                event: e.clone(),
            });
            self.detectors
                .on_security(&st.key.tenant, &st.key.agent, now, e, &mut out.alerts);
        }
        for r in &batch.status {
            if r.observed_at_ms > future_after {
                self.stats.rejected_points[RejectReason::Future.index()] += 1;
                refuse(out, r.observed_at_ms, STATUS_DLQ_METRIC, String::new());
                continue;
            }
            self.stats.status_reports += 1;
            let st = &self.agents[ai];
            out.status.push(StatusRow {
                tenant: batch.tenant_id.clone(),
                agent: batch.agent_id.clone(),
                hostname: st.hostname.as_deref().map(str::to_string),
                report: r.clone(),
            });
            self.detectors
                .on_status(&st.key.tenant, &st.key.agent, now, r, &mut out.alerts);
        }
        if let Some(info) = info {
            if batch.sent_at_ms > future_after
                || text("agent.agent_version", &info.agent_version, &self.cfg.limits).is_err()
            {
                self.stats.agent_infos_ignored += 1;
            } else {
                self.stats.agent_infos += 1;
                let st = &self.agents[ai];
                self.detectors.on_agent_info(
                    &st.key.tenant,
                    &st.key.agent,
                    now,
                    info,
                    batch.sent_at_ms,
                    &mut out.alerts,
                );
            }
        }
        self.finish_alerts(before, out);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;
    use vigil_proto::v1::{SecurityEvent, SecurityEventKind, StatusReport, TelemetryBatch};

    use super::*;
    use crate::config::{ClockMode, PipelineConfig};
    use crate::rules::RuleSet;

    const NOW: i64 = 1_800_000_000_000;

    fn pipeline() -> Pipeline {
        let cfg = PipelineConfig {
            clock: ClockMode::Wall,
            ..PipelineConfig::default()
        };
        Pipeline::new(cfg, Arc::new(RuleSet::default())).unwrap()
    }

    fn login(ts: i64) -> SecurityEvent {
        SecurityEvent {
            timestamp_ms: ts,
            kind: SecurityEventKind::LoginFailure as i32,
            user: "admin".into(),
            ..SecurityEvent::default()
        }
    }

    #[test]
    fn a_future_report_or_event_is_refused_alone_at_the_exact_skew() {
        let mut p = pipeline();
        let skew = p.config().max_clock_skew.as_millis() as i64;
        let b = TelemetryBatch {
            tenant_id: "t".into(),
            agent_id: "a".into(),
            seq: 1,
            sent_at_ms: NOW,
            status: vec![
                StatusReport {
                    observed_at_ms: NOW + skew,
                    ..StatusReport::default()
                },
                StatusReport {
                    observed_at_ms: NOW + skew + 1,
                    ..StatusReport::default()
                },
            ],
            security_events: vec![login(NOW + skew), login(NOW + skew + 1), login(NOW - 1)],
            ..TelemetryBatch::default()
        };
        let mut out = Outputs::default();
        p.process(
            Position {
                partition: 0,
                offset: 7,
            },
            &b.encode_to_vec(),
            NOW,
            &mut out,
        );
        let refused: Vec<_> = out
            .rejected
            .iter()
            .map(|r| {
                (
                    r.reason,
                    r.metric.as_deref(),
                    r.labels.as_deref(),
                    r.point_count,
                )
            })
            .collect();
        assert_eq!(
            refused,
            vec![
                (
                    RejectReason::Future,
                    Some(SECURITY_DLQ_METRIC),
                    Some("kind=login_failure"),
                    1
                ),
                (RejectReason::Future, Some(STATUS_DLQ_METRIC), Some(""), 1),
            ]
        );
        // The taken ones are rows for the datasets.
        assert_eq!(out.status.len(), 1);
        assert_eq!(out.status[0].report.observed_at_ms, NOW + skew);
        assert_eq!(out.security.len(), 2);
        assert_eq!(out.security[1].event.timestamp_ms, NOW - 1);
        let s = p.stats();
        assert_eq!(s.batches_accepted, 1);
        assert_eq!(s.status_reports, 1);
        assert_eq!(s.security_events, 2);
        assert_eq!(s.rejected_points(RejectReason::Future), 2);
        assert_eq!(s.rejected_records(RejectReason::Future), 0);
    }

    #[test]
    fn a_malformed_event_refuses_the_batch_with_its_raw_record() {
        let mut p = pipeline();
        let b = TelemetryBatch {
            tenant_id: "t".into(),
            agent_id: "a".into(),
            seq: 1,
            sent_at_ms: NOW,
            security_events: vec![SecurityEvent {
                user: String::new(),
                ..login(NOW)
            }],
            ..TelemetryBatch::default()
        };
        let raw = b.encode_to_vec();
        let mut out = Outputs::default();
        p.process(
            Position {
                partition: 0,
                offset: 1,
            },
            &raw,
            NOW,
            &mut out,
        );
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(out.rejected[0].reason, RejectReason::InvalidSecurityEvent);
        assert_eq!(out.rejected[0].raw.as_deref(), Some(&raw[..]));
        assert_eq!(out.rejected[0].agent.as_deref(), Some("a"));
        assert_eq!(
            p.stats()
                .rejected_records(RejectReason::InvalidSecurityEvent),
            1
        );
        assert_eq!(p.stats().security_events, 0);
    }
}
