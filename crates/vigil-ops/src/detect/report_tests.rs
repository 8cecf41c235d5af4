//! Tests of the report families (status reports and security events):
//! exact limits (at, just under, just over), lifecycle, suppression,
//! rule changes, eviction, and checkpoint → restore mid-stream.

use std::sync::Arc;

use prost::Message;
use vigil_proto::v1::{
    AntivirusStatus, BackupResult, BackupStatus, MissingPatches, PatchSeverity, SecurityEvent,
    SecurityEventKind, StatusReport, TelemetryBatch,
};

use super::DetectorEngine;
use crate::config::{ClockMode, PipelineConfig};
use crate::model::{AlertEvent, AlertStatus, DetectorKind, ResolveReason};
use crate::pipeline::{Outputs, Pipeline, TestChain};
use crate::reject::Position;
use crate::rules::RuleSet;

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;
const MIN: i64 = 60_000;
/// 2026-03-02T00:00:00Z, a Monday.
const MON: i64 = 1_772_409_600_000;

fn rules(toml: &str) -> Arc<RuleSet> {
    match RuleSet::from_toml(toml, "t.toml") {
        Ok(r) => Arc::new(r),
        Err(e) => panic!("{e}"),
    }
}

fn engine(toml: &str) -> DetectorEngine {
    DetectorEngine::new(rules(toml))
}

fn status(observed: i64) -> StatusReport {
    StatusReport {
        observed_at_ms: observed,
        ..StatusReport::default()
    }
}

fn patches(observed: i64, sev: PatchSeverity, since: i64) -> StatusReport {
    StatusReport {
        patches_reported: true,
        missing_patches: vec![MissingPatches {
            severity: sev as i32,
            count: 3,
            oldest_missing_since_ms: since,
        }],
        ..status(observed)
    }
}

/// A status report of agent version `v` only.
fn versioned(observed: i64, v: &str) -> StatusReport {
    StatusReport {
        agent_version: v.into(),
        ..status(observed)
    }
}

fn brief(out: &[AlertEvent]) -> Vec<(String, AlertStatus, i64, i64, String)> {
    out.iter()
        .map(|a| {
            (
                a.rule.clone(),
                a.status,
                a.started_at_ms,
                a.event_time_ms,
                a.labels.clone(),
            )
        })
        .collect()
}

fn feed(e: &mut DetectorEngine, agent: &str, r: &StatusReport) -> Vec<AlertEvent> {
    let mut out = Vec::new();
    e.on_status("t", agent, r.observed_at_ms, r, &mut out);
    out
}

const PATCH: &str = r#"
[[patch_sla]]
name = "patch_sla"
severity = "critical"
"#;

#[test]
fn patch_sla_fires_only_past_max_days_and_resolves_when_patched() {
    let since = MON - 40 * DAY;
    let limit = since + 30 * DAY;
    // At the limit and just under: within the SLA.
    for observed in [limit - 1, limit] {
        let mut e = engine(PATCH);
        let out = feed(
            &mut e,
            "a",
            &patches(observed, PatchSeverity::Critical, since),
        );
        assert!(out.is_empty(), "{observed}: {out:?}");
    }
    // Just over: breached, from the moment the limit passed.
    let mut e = engine(PATCH);
    let out = feed(
        &mut e,
        "a",
        &patches(limit + 1, PatchSeverity::Critical, since),
    );
    assert_eq!(
        brief(&out),
        vec![(
            "patch_sla".into(),
            AlertStatus::Firing,
            limit,
            limit + 1,
            String::new()
        )]
    );
    assert_eq!(out[0].kind, DetectorKind::Status);
    assert_eq!(out[0].threshold, Some(30.0));
    assert!(
        out[0].summary.contains("misses 3 critical-or-higher"),
        "{}",
        out[0].summary
    );
    // Still breached: nothing new. Important patches do not count for a
    // critical-only rule; not reporting patches says nothing.
    assert!(feed(
        &mut e,
        "a",
        &patches(limit + HOUR, PatchSeverity::Critical, since)
    )
    .is_empty());
    assert!(feed(&mut e, "a", &status(limit + 2 * HOUR)).is_empty());
    let out = feed(
        &mut e,
        "a",
        &patches(limit + 3 * HOUR, PatchSeverity::Important, since),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status, AlertStatus::Resolved);
    assert_eq!(out[0].resolved_at_ms, Some(limit + 3 * HOUR));
    // A configurable limit and severity floor.
    let mut e = engine(
        r#"
[[patch_sla]]
name = "important_90"
max_days = 90
min_severity = "important"
severity = "warning"
"#,
    );
    let since = MON - 100 * DAY;
    assert!(feed(
        &mut e,
        "a",
        &patches(since + 90 * DAY, PatchSeverity::Important, since)
    )
    .is_empty());
    assert_eq!(
        feed(
            &mut e,
            "a",
            &patches(since + 90 * DAY + 1, PatchSeverity::Important, since)
        )
        .len(),
        1
    );
}

const AV: &str = r#"
[[antivirus]]
name = "av"
severity = "critical"
"#;

fn av(observed: i64, enabled: bool, defs: i64) -> StatusReport {
    StatusReport {
        antivirus: Some(AntivirusStatus {
            product: "Defender".into(),
            enabled,
            definitions_updated_ms: defs,
            last_scan_ms: 0,
        }),
        ..status(observed)
    }
}

#[test]
fn antivirus_fires_when_disabled_or_definitions_pass_the_limit() {
    let defs = MON;
    let limit = defs + 3 * DAY;
    for observed in [limit - 1, limit] {
        let mut e = engine(AV);
        assert!(feed(&mut e, "a", &av(observed, true, defs)).is_empty());
    }
    let mut e = engine(AV);
    let out = feed(&mut e, "a", &av(limit + 1, true, defs));
    assert_eq!(out[0].started_at_ms, limit);
    assert_eq!(out[0].threshold, Some(72.0));
    // Updated definitions resolve it.
    let out = feed(&mut e, "a", &av(limit + HOUR, true, limit));
    assert_eq!(out[0].status, AlertStatus::Resolved);
    // Disabled: at the report that shows it.
    let out = feed(&mut e, "a", &av(limit + 2 * HOUR, false, limit));
    assert_eq!(out[0].status, AlertStatus::Firing);
    assert_eq!(out[0].started_at_ms, limit + 2 * HOUR);
    assert!(out[0]
        .summary
        .contains("Defender real-time protection is disabled"));
    // A report without the antivirus section says nothing.
    assert!(feed(&mut e, "a", &status(limit + 3 * HOUR)).is_empty());
}

const BACKUP: &str = r#"
[[backup]]
name = "backup"
severity = "warning"
"#;

fn backup(observed: i64, result: BackupResult, run: i64, success: i64) -> StatusReport {
    StatusReport {
        backup: Some(BackupStatus {
            last_result: result as i32,
            last_run_ms: run,
            last_success_ms: success,
        }),
        ..status(observed)
    }
}

#[test]
fn backup_fires_on_failure_on_age_past_the_limit_and_without_success() {
    let ok = MON;
    let limit = ok + 26 * HOUR;
    for observed in [limit - 1, limit] {
        let mut e = engine(BACKUP);
        assert!(feed(
            &mut e,
            "a",
            &backup(observed, BackupResult::Success, ok, ok)
        )
        .is_empty());
    }
    let mut e = engine(BACKUP);
    let out = feed(
        &mut e,
        "a",
        &backup(limit + 1, BackupResult::Warning, ok, ok),
    );
    assert_eq!(brief(&out)[0].2, limit);
    // A new success resolves; a failed job fires from when it finished.
    let out = feed(
        &mut e,
        "a",
        &backup(limit + HOUR, BackupResult::Success, limit, limit),
    );
    assert_eq!(out[0].status, AlertStatus::Resolved);
    let out = feed(
        &mut e,
        "a",
        &backup(
            limit + 3 * HOUR,
            BackupResult::Failed,
            limit + 2 * HOUR,
            limit,
        ),
    );
    assert_eq!(out[0].status, AlertStatus::Firing);
    assert_eq!(out[0].started_at_ms, limit + 2 * HOUR);
    assert!(out[0].summary.contains("failed"));
    // Never a success.
    let mut e = engine(BACKUP);
    let out = feed(&mut e, "b", &backup(MON, BackupResult::Unspecified, 0, 0));
    assert!(out[0].summary.contains("no successful backup"));
}

const AGENT_OLD: &str = r#"
[[agent_version]]
name = "agent_old"
minimum = "5.10.0"
severity = "info"
"#;

#[test]
fn agent_version_below_minimum_fires_and_an_upgrade_resolves() {
    let v = versioned;
    let mut e = engine(AGENT_OLD);
    assert!(feed(&mut e, "a", &v(MON, "5.10")).is_empty());
    assert!(feed(&mut e, "b", &v(MON, "5.10.1")).is_empty());
    let out = feed(&mut e, "c", &v(MON, "5.9.99"));
    assert_eq!(out.len(), 1);
    assert!(out[0].summary.contains("5.9.99 (minimum 5.10.0)"));
    assert!(feed(&mut e, "c", &v(MON + HOUR, "")).is_empty());
    let out = feed(&mut e, "c", &v(MON + 2 * HOUR, "5.10.0"));
    assert_eq!(out[0].status, AlertStatus::Resolved);
}

/// Agent versions from `AgentInfo` (wire field 5) when the batch's
/// status reports carry none, through a pipeline (wall clock: processing
/// time is the `now` given).
#[test]
fn agent_version_reads_agent_info_when_no_status_report_carries_one() {
    use vigil_proto::v1::AgentInfo;
    let cfg = PipelineConfig {
        clock: ClockMode::Wall,
        ..PipelineConfig::default()
    };
    let skew = cfg.max_clock_skew.as_millis() as i64;
    let mut p = Pipeline::new(cfg, rules(AGENT_OLD)).unwrap();
    let mut seq = 0;
    let mut send = |p: &mut Pipeline,
                    agent: &str,
                    sent: i64,
                    now: i64,
                    info: Option<&str>,
                    st: Vec<StatusReport>| {
        seq += 1;
        let b = TelemetryBatch {
            tenant_id: "t".into(),
            agent_id: agent.into(),
            seq,
            sent_at_ms: sent,
            agent: info.map(|v| AgentInfo {
                hostname: format!("{agent}.example"),
                agent_version: v.into(),
                ..AgentInfo::default()
            }),
            status: st,
            ..TelemetryBatch::default()
        };
        let mut out = Outputs::default();
        p.process(POS0, &b.encode_to_vec(), now, &mut out);
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        brief(&out.alerts)
    };
    let v = versioned;
    let fire = |t: i64| {
        vec![(
            "agent_old".to_string(),
            AlertStatus::Firing,
            t,
            t,
            String::new(),
        )]
    };
    // An agent that sends no status reports: its AgentInfo is judged at
    // the batch's send time; exactly the minimum is fine.
    assert_eq!(
        send(&mut p, "a", MON, MON + 50, Some("5.9.4"), vec![]),
        fire(MON)
    );
    assert!(send(&mut p, "m", MON, MON, Some("5.10"), vec![]).is_empty());
    // Still old: nothing new; an upgrade resolves at its send time.
    assert!(send(&mut p, "a", MON + HOUR, MON + HOUR, Some("5.9.4"), vec![]).is_empty());
    let out = send(
        &mut p,
        "a",
        MON + 2 * HOUR,
        MON + 2 * HOUR,
        Some("5.12.1"),
        vec![],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].1, out[0].2, out[0].3),
        (AlertStatus::Resolved, MON, MON + 2 * HOUR)
    );
    // A status report with a version wins over the batch's AgentInfo.
    assert!(send(
        &mut p,
        "b",
        MON,
        MON,
        Some("5.9.4"),
        vec![v(MON - 5, "5.12.1")]
    )
    .is_empty());
    // A status report without one leaves the AgentInfo to be judged.
    assert_eq!(
        send(&mut p, "c", MON, MON, Some("5.9.4"), vec![v(MON - 5, "")]),
        fire(MON)
    );
    // Event time: an AgentInfo sent before the newest report judged
    // (a retried batch) changes nothing.
    assert!(send(&mut p, "c", MON - 10, MON + 1, Some("5.12.1"), vec![]).is_empty());
    assert_eq!(p.stats().agent_infos, 6);
    // Ignored and counted: a send time past the skew (a wrong clock), a
    // version with control characters; an empty version is no version.
    for (sent, ver) in [
        (MON + 2 * HOUR + skew + 1, "5.9.4"),
        (MON + 2 * HOUR, "5.9\n"),
    ] {
        assert!(send(&mut p, "d", sent, MON + 2 * HOUR, Some(ver), vec![]).is_empty());
    }
    assert!(send(
        &mut p,
        "d",
        MON + 2 * HOUR,
        MON + 2 * HOUR,
        Some(""),
        vec![]
    )
    .is_empty());
    assert_eq!(p.stats().agent_infos, 6);
    assert_eq!(p.stats().agent_infos_ignored, 2);
    // Exactly at the skew is taken.
    assert_eq!(
        send(
            &mut p,
            "d",
            MON + 3 * HOUR + skew,
            MON + 3 * HOUR,
            Some("5.9.4"),
            vec![]
        ),
        fire(MON + 3 * HOUR + skew)
    );
}

#[test]
fn status_rules_report_every_problem_with_its_position() {
    let bad = r#"
[[patch_sla]]
name = "p"
max_days = 0
min_severity = "urgent"
severity = "critical"

[[agent_version]]
name = "v"
minimum = "latest"
severity = "info"

[[brute_force]]
name = "b"
failures = 1
within = "0s"
severity = "warning"
colour = "red"

[[off_hours_session]]
name = "o"
time_zone = "Mars/Olympus"
start = "18:00"
end = "08:00"
days = ["mon", "someday"]
severity = "warning"
"#;
    let err = RuleSet::from_toml(bad, "r.toml").unwrap_err().to_string();
    for want in [
        "r.toml:4:12: patch_sla[0].max_days: must be >= 1",
        "r.toml:5:16: patch_sla[0].min_severity: expected one of",
        "r.toml:10:11: agent_version[0].minimum: \"latest\" is not a version",
        "r.toml:15:12: brute_force[0].failures: must be >= 2",
        "r.toml:16:10: brute_force[0].within: must be > 0",
        "r.toml:18:1: brute_force[0].colour: unknown field",
        "r.toml:22:13: off_hours_session[0].time_zone: unknown time zone \"Mars/Olympus\"",
        "off_hours_session[0].days[1]: expected one of",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // Defaults.
    let r = rules(
        r#"
[[patch_sla]]
name = "p"
severity = "critical"
[[antivirus]]
name = "a"
severity = "critical"
[[backup]]
name = "b"
severity = "warning"
[[brute_force]]
name = "bf"
severity = "warning"
[[off_hours_session]]
name = "o"
severity = "warning"
"#,
    );
    assert_eq!(r.patch_sla[0].max_days, 30);
    assert_eq!(r.patch_sla[0].min_severity, "critical");
    assert_eq!(r.antivirus[0].max_definition_age.as_secs(), 3 * 86_400);
    assert_eq!(r.backup[0].max_age.as_secs(), 26 * 3600);
    assert_eq!(r.brute_force[0].failures, 5);
    assert_eq!(r.brute_force[0].within.as_secs(), 600);
    assert_eq!(r.brute_force[0].resolve_grace.as_secs(), 3600);
    assert_eq!(r.off_hours_session[0].schedule.time_zone, "UTC");
    assert_eq!(r.off_hours_session[0].schedule.start_min, 480);
    assert_eq!(r.off_hours_session[0].schedule.end_min, 1080);
}

const BF: &str = r#"
[[brute_force]]
name = "brute_force"
failures = 3
within = "60s"
severity = "critical"
"#;

fn sec(kind: SecurityEventKind, ts: i64) -> SecurityEvent {
    SecurityEvent {
        timestamp_ms: ts,
        kind: kind as i32,
        ..SecurityEvent::default()
    }
}

fn fail(user: &str, ts: i64) -> SecurityEvent {
    SecurityEvent {
        user: user.into(),
        source_address: "198.51.100.7".into(),
        ..sec(SecurityEventKind::LoginFailure, ts)
    }
}

fn feed_sec(e: &mut DetectorEngine, agent: &str, ev: &SecurityEvent) -> Vec<AlertEvent> {
    let mut out = Vec::new();
    e.on_security("t", agent, ev.timestamp_ms, ev, &mut out);
    out
}

#[test]
fn brute_force_fires_at_n_failures_within_the_window_exactly() {
    // Three failures spanning exactly 60 s: a burst.
    let mut e = engine(BF);
    assert!(feed_sec(&mut e, "a", &fail("admin", MON)).is_empty());
    assert!(feed_sec(&mut e, "a", &fail("admin", MON + 30_000)).is_empty());
    let out = feed_sec(&mut e, "a", &fail("admin", MON + 60_000));
    assert_eq!(
        brief(&out),
        vec![(
            "brute_force".into(),
            AlertStatus::Firing,
            MON + 60_000,
            MON + 60_000,
            "user=admin".into()
        )]
    );
    assert_eq!(out[0].kind, DetectorKind::Security);
    assert!(
        out[0].summary.contains("3 failed logins for user admin"),
        "{}",
        out[0].summary
    );
    assert!(out[0].summary.contains("198.51.100.7"));
    // 1 ms wider: no burst. Two failures (one under N): none.
    let mut e = engine(BF);
    feed_sec(&mut e, "a", &fail("admin", MON));
    feed_sec(&mut e, "a", &fail("admin", MON + 30_000));
    assert!(feed_sec(&mut e, "a", &fail("admin", MON + 60_001)).is_empty());
    // ... but the sliding window moves: a fourth within 60 s of the
    // second completes one.
    let out = feed_sec(&mut e, "a", &fail("admin", MON + 61_000));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].started_at_ms, MON + 61_000);
    // Users and agents are separate; successes and other kinds count for
    // nothing.
    let mut e = engine(BF);
    for (i, u) in ["a1", "a2", "a3"].iter().enumerate() {
        assert!(feed_sec(&mut e, "x", &fail(u, MON + i as i64)).is_empty());
    }
    feed_sec(&mut e, "x", &fail("a1", MON + 10));
    let mut ok = fail("a1", MON + 20);
    ok.kind = SecurityEventKind::LoginSuccess as i32;
    assert!(feed_sec(&mut e, "x", &ok).is_empty());
    assert!(feed_sec(&mut e, "y", &fail("a1", MON + 30)).is_empty());
    assert_eq!(feed_sec(&mut e, "x", &fail("a1", MON + 40)).len(), 1);
}

#[test]
fn brute_force_resolves_when_the_window_empties_and_state_is_dropped() {
    let mut e = engine(BF);
    for k in 0..3 {
        feed_sec(&mut e, "a", &fail("admin", MON + k * 1000));
    }
    // More failures keep it open (no new incident).
    assert!(feed_sec(&mut e, "a", &fail("admin", MON + 10_000)).is_empty());
    assert_eq!(e.report_states(), 1);
    let mut out = Vec::new();
    // Processing time: at exactly newest + within + grace (1 h), still
    // open; past it, resolved.
    e.on_tick(MON + 70_000 + HOUR, &mut out);
    assert!(out.is_empty());
    e.on_tick(MON + 95_000 + HOUR, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status, AlertStatus::Resolved);
    // Resolved when the window emptied, not when the tick noticed.
    assert_eq!(out[0].resolved_at_ms, Some(MON + 70_000));
    assert_eq!(out[0].started_at_ms, MON + 2000);
    assert_eq!(e.report_states(), 0);
    // The agent's own event time resolves without the grace: a status
    // report at newest + within keeps it, 1 ms later closes it.
    let mut e = engine(BF);
    for k in 0..3 {
        feed_sec(&mut e, "a", &fail("admin", MON + k * 1000));
    }
    assert!(feed(&mut e, "a", &status(MON + 62_000)).is_empty());
    let out = feed(&mut e, "a", &status(MON + 62_001));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].resolved_at_ms, Some(MON + 62_000));
}

#[test]
fn a_burst_split_over_two_batches_an_hour_apart_is_one_incident() {
    let mut e = engine(BF);
    // Two failures at the end of one batch's hour ...
    feed_sec(&mut e, "a", &fail("admin", MON + HOUR - 20_000));
    feed_sec(&mut e, "a", &fail("admin", MON + HOUR - 10_000));
    // ... ticks for the hour until the next batch ...
    let mut out = Vec::new();
    for m in 1..60 {
        e.on_tick(MON + HOUR + m * MIN, &mut out);
    }
    assert!(out.is_empty());
    // ... which brings the third (and a status report after it).
    let mut ev = Vec::new();
    e.on_security(
        "t",
        "a",
        MON + 2 * HOUR,
        &fail("admin", MON + HOUR + 5_000),
        &mut ev,
    );
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].started_at_ms, MON + HOUR + 5_000);
    e.on_status(
        "t",
        "a",
        MON + 2 * HOUR,
        &status(MON + 2 * HOUR - 1000),
        &mut ev,
    );
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[1].status, AlertStatus::Resolved);
}

#[test]
fn brute_force_state_is_bounded_by_max_users() {
    let mut e = engine(
        r#"
[[brute_force]]
name = "bf"
failures = 2
within = "1h"
max_users = 3
severity = "warning"
"#,
    );
    // 100 users spraying one failure each: at most 3 are tracked.
    for k in 0..100 {
        feed_sec(&mut e, "a", &fail(&format!("u{k:03}"), MON + k));
    }
    let st = &e.reports.brute_force;
    let users: Vec<_> = st.iter().flat_map(|(_, _, _, s)| s.users.iter()).collect();
    assert_eq!(users.len(), 3);
    // The newest are kept; a burst of one of them still fires.
    assert_eq!(users[0].user, "u097");
    assert_eq!(feed_sec(&mut e, "a", &fail("u099", MON + 200)).len(), 1);
}

fn session(kind: SecurityEventKind, ts: i64, id: &str) -> SecurityEvent {
    SecurityEvent {
        technician: "tech.jo".into(),
        session_id: id.into(),
        ..sec(kind, ts)
    }
}

const OFF: &str = r#"
[[off_hours_session]]
name = "off_hours"
time_zone = "Europe/Berlin"
start = "08:00"
end = "18:00"
severity = "warning"
tenants.night = { time_zone = "America/New_York", start = "20:00", end = "24:00", days = ["sat"] }
"#;

#[test]
fn off_hours_sessions_follow_the_tenants_zone_and_hours_exactly() {
    use SecurityEventKind::{RemoteSessionEnd as End, RemoteSessionStart as Start};
    // Monday 2026-03-02 in Berlin is UTC+1: 08:00 local = 07:00Z.
    let local_8 = MON + 7 * HOUR;
    let local_18 = MON + 17 * HOUR;
    let cases = [
        (local_8 - 1, true),
        (local_8, false),
        (local_18 - 1, false),
        (local_18, true),
        // Saturday 12:00 local.
        (MON + 5 * DAY + 11 * HOUR, true),
    ];
    for (i, (ts, fires)) in cases.into_iter().enumerate() {
        let mut e = engine(OFF);
        let out = feed_sec(&mut e, "a", &session(Start, ts, &format!("s{i}")));
        assert_eq!(out.len(), usize::from(fires), "case {i}");
    }
    // Summer time: 2026-06-01 (a Monday) 08:00 in Berlin is 06:00Z.
    let june = 1_780_272_000_000;
    let mut e = engine(OFF);
    assert!(feed_sec(&mut e, "a", &session(Start, june + 6 * HOUR, "s")).is_empty());
    assert_eq!(
        feed_sec(&mut e, "a", &session(Start, june + 6 * HOUR - 1, "s2")).len(),
        1
    );
    // A session's end resolves its incident; the labels name it.
    let mut e = engine(OFF);
    let f = feed_sec(&mut e, "a", &session(Start, MON, "s-9"));
    assert_eq!(f[0].labels, "session=s-9,technician=tech.jo");
    assert!(f[0]
        .summary
        .contains("outside business hours (Europe/Berlin)"));
    let r = feed_sec(&mut e, "a", &session(End, MON + HOUR, "s-9"));
    assert_eq!(r[0].status, AlertStatus::Resolved);
    assert_eq!(r[0].id, f[0].id);
    assert_eq!(r[0].resolved_at_ms, Some(MON + HOUR));
    assert_eq!(e.report_states(), 0);
    // Tenant `night` works Saturdays 20:00-24:00 New York (UTC-5 in
    // March before the 8th): Saturday 2026-03-07 21:00 local = Sunday 02:00Z.
    let mut out = Vec::new();
    let ev = session(Start, MON + 6 * DAY + 2 * HOUR, "n1");
    e.on_security("night", "a", ev.timestamp_ms, &ev, &mut out);
    assert!(out.is_empty(), "{out:?}");
    let ev = session(Start, MON + 7 * HOUR, "n2");
    e.on_security("night", "a", ev.timestamp_ms, &ev, &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn maintenance_suppresses_and_eviction_and_rule_changes_close() {
    let toml = format!(
        "{BF}\n{PATCH}\n[[maintenance]]\ntenant = \"t\"\nagent = \"m\"\nstart = {}\nend = {}\n",
        MON - DAY,
        MON + DAY
    );
    let mut e = engine(&toml);
    let mut fired = Vec::new();
    for k in 0..3 {
        fired.extend(feed_sec(&mut e, "m", &fail("root", MON + k)));
        fired.extend(feed_sec(&mut e, "n", &fail("root", MON + k)));
    }
    assert_eq!(fired.len(), 2);
    assert!(fired[0].suppressed && !fired[1].suppressed);
    let since = MON - 40 * DAY;
    assert_eq!(
        feed(&mut e, "n", &patches(MON, PatchSeverity::Critical, since)).len(),
        1
    );
    // Eviction of agent m closes its incident as stale.
    let mut out = Vec::new();
    let mut live = super::Liveness::default();
    e.evict_agent(&mut live, "t", "m", MON + 5000, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].resolve_reason, Some(ResolveReason::Stale));
    assert_eq!(out[0].id, fired[0].id);
    // An edited brute-force rule closes n's burst (rule_changed); the
    // unchanged patch rule keeps its incident open.
    let edited = format!("{}\n{PATCH}", BF.replace("failures = 3", "failures = 4"));
    let mut out = Vec::new();
    e.attach_rules(rules(&edited), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rule, "brute_force");
    assert_eq!(out[0].resolve_reason, Some(ResolveReason::RuleChanged));
    assert_eq!(e.report_states(), 1);
    // Removing the patch rule closes it (rule_removed).
    let mut out = Vec::new();
    e.attach_rules(rules(BF), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].resolve_reason, Some(ResolveReason::RuleRemoved));
    assert_eq!(e.report_states(), 0);
}

/// A batch of reports and events of agent `agent`, sent at `sent`.
fn batch(
    agent: &str,
    seq: u64,
    sent: i64,
    st: Vec<StatusReport>,
    ev: Vec<SecurityEvent>,
) -> Vec<u8> {
    TelemetryBatch {
        tenant_id: "t".into(),
        agent_id: agent.into(),
        seq,
        sent_at_ms: sent,
        status: st,
        security_events: ev,
        ..TelemetryBatch::default()
    }
    .encode_to_vec()
}

/// The mixed scenario of the checkpoint tests: three agents, a minute
/// apart for two hours, with patch, AV and backup reports every 30
/// minutes, a burst of failed logins and an off-hours session. Returns
/// the rules, the config and the records.
fn mixed_scenario() -> (String, PipelineConfig, Vec<Vec<u8>>) {
    let all = format!("{BF}\n{PATCH}\n{AV}\n{BACKUP}\n{OFF}");
    let cfg = PipelineConfig {
        clock: ClockMode::Replay,
        ..PipelineConfig::default()
    };
    let mut recs = Vec::new();
    let since = MON - 31 * DAY;
    for k in 0..120i64 {
        let t = MON + k * MIN;
        for (ai, agent) in ["a", "b", "c"].iter().enumerate() {
            let mut st = Vec::new();
            let mut ev = Vec::new();
            if k % 30 == 0 {
                let mut r = patches(t, PatchSeverity::Critical, since + ai as i64 * DAY);
                r.antivirus = av(t, k < 60 || ai != 1, MON).antivirus;
                r.backup =
                    backup(t, BackupResult::Success, MON - 30 * HOUR, MON - 30 * HOUR).backup;
                st.push(r);
            }
            if *agent == "c" && (20..23).contains(&k) {
                ev.extend((0..2).map(|j| fail("admin", t + 100 + j * 10_000)));
            }
            if *agent == "a" && k == 10 {
                ev.push(session(SecurityEventKind::RemoteSessionStart, t, "s1"));
            }
            if *agent == "a" && k == 50 {
                ev.push(session(SecurityEventKind::RemoteSessionEnd, t, "s1"));
            }
            recs.push(batch(agent, k as u64 + 1, t + 200, st, ev));
        }
    }
    (all, cfg, recs)
}

#[test]
fn report_incidents_are_identical_across_a_checkpoint_and_restore() {
    let (all, cfg, recs) = mixed_scenario();
    let pos = Position {
        partition: 0,
        offset: 0,
    };
    let run = |restore_at: Option<usize>| {
        let mut p = Pipeline::new(cfg.clone(), rules(&all)).unwrap();
        let mut out = Outputs::default();
        for (i, r) in recs.iter().enumerate() {
            if Some(i) == restore_at {
                let snap = serde_json::to_vec(&p).unwrap();
                p = serde_json::from_slice(&snap).unwrap();
                p.attach_rules(rules(&all));
            }
            p.process(pos, r, 0, &mut out);
        }
        brief(&out.alerts)
            .into_iter()
            .zip(out.alerts.iter().map(|a| a.id.clone()))
            .collect::<Vec<_>>()
    };
    let want = run(None);
    let rules_fired: Vec<_> = want
        .iter()
        .filter(|(b, _)| b.1 == AlertStatus::Firing)
        .map(|(b, _)| b.0.as_str())
        .collect();
    // Patches of a (31 days) and b (30 days at MON, past them at the
    // next report), AV of b, backups of all three, c's burst, a's night
    // session.
    for r in ["patch_sla", "av", "backup", "brute_force", "off_hours"] {
        assert!(rules_fired.contains(&r), "{r} did not fire: {want:?}");
    }
    assert!(want.len() >= 10, "{want:?}");
    for at in [1, 37, 150, 200, 359] {
        assert_eq!(run(Some(at)), want, "restore at {at}");
    }
}

/// Where the pinned report-family states are (see
/// [`report_family_states_keep_their_checkpoint_form`]).
fn report_states_golden() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/detect/testdata/report_states_v1.json")
}

/// Records of the mixed scenario fed before the pinned checkpoint: every
/// report family holds state there (open patch, AV and backup incidents,
/// c's burst, a's open off-hours session).
const PINNED_AT: usize = 120;

const POS0: Position = Position {
    partition: 0,
    offset: 0,
};

/// The report families' section of a pipeline's checkpoint.
fn report_section(p: &Pipeline) -> serde_json::Value {
    let v = serde_json::to_value(p).unwrap();
    v["detectors"]["reports"].clone()
}

/// Writes the pinned states (run by hand when a family's form version is
/// bumped, keeping the older file for the restore test).
#[test]
#[ignore = "writes testdata; run by hand with VIGIL_WRITE_GOLDEN=1"]
fn write_report_states_golden() {
    if std::env::var_os("VIGIL_WRITE_GOLDEN").is_none() {
        return;
    }
    let (all, cfg, recs) = mixed_scenario();
    let mut p = Pipeline::new(cfg, rules(&all)).unwrap();
    let mut out = Outputs::default();
    for r in &recs[..PINNED_AT] {
        p.process(POS0, r, 0, &mut out);
    }
    let json = serde_json::to_string_pretty(&report_section(&p)).unwrap();
    std::fs::create_dir_all(report_states_golden().parent().unwrap()).unwrap();
    std::fs::write(report_states_golden(), json + "\n").unwrap();
}

/// The checkpoint form of the report families' state (version 1 of each,
/// `testdata/report_states_v1.json`, written before the status families
/// shared [`super::condition::ConditionFamily`] and the security
/// families [`super::security`]) is still what they write, and a
/// checkpoint holding it restores and continues with the output of an
/// uninterrupted run.
#[test]
fn report_family_states_keep_their_checkpoint_form() {
    let (all, cfg, recs) = mixed_scenario();
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("testdata/report_states_v1.json")).unwrap();
    for family in [
        "patch_sla",
        "antivirus",
        "backup",
        "brute_force",
        "off_hours_session",
    ] {
        assert!(golden.get(family).is_some(), "{family} holds no state");
    }
    let versions = super::registry::Registry::versions();
    for family in golden.as_object().unwrap().keys() {
        assert_eq!(versions[family], 1, "{family}: bumped; keep reading v1");
    }
    let feed = |p: &mut Pipeline, recs: &[Vec<u8>]| {
        let mut out = Outputs::default();
        for r in recs {
            p.process(POS0, r, 0, &mut out);
        }
        brief(&out.alerts)
            .into_iter()
            .zip(out.alerts.iter().map(|a| a.id.clone()))
            .collect::<Vec<_>>()
    };
    let mut straight = Pipeline::new(cfg.clone(), rules(&all)).unwrap();
    feed(&mut straight, &recs[..PINNED_AT]);
    assert_eq!(report_section(&straight), golden, "the form changed");
    // The checkpoint with the pinned section in place restores.
    let mut snap = serde_json::to_value(&straight).unwrap();
    snap["detectors"]["reports"] = golden;
    let mut restored: Pipeline = serde_json::from_value(snap).unwrap();
    restored.attach_rules(rules(&all));
    let want = feed(&mut straight, &recs[PINNED_AT..]);
    assert!(
        want.iter().any(|(b, _)| b.1 == AlertStatus::Resolved),
        "{want:?}"
    );
    assert_eq!(feed(&mut restored, &recs[PINNED_AT..]), want);
}

/// The posture lab of `vigil_sim::posture` through a whole pipeline
/// (processing time = arrival, as in the worker; resends, swapped
/// batches), scored per rule: precision and recall of the incidents
/// against the lab's labels. (Not the replay clock: it is the median of
/// the agents' latest send times, and with batches an hour apart it lags
/// by up to an hour, so reports stamped just before sending would be
/// `future`; real agents send status inside their minute batches.)
#[test]
fn posture_lab_precision_and_recall_per_detector() {
    use std::collections::{BTreeMap, BTreeSet};
    use vigil_sim::posture::{generate, PostureConfig, RULES_TOML};

    for seed in [1, 2] {
        let lab = generate(&PostureConfig {
            seed,
            ..PostureConfig::default()
        });
        let cfg = PipelineConfig {
            clock: ClockMode::Wall,
            ..PipelineConfig::default()
        };
        let mut p = Pipeline::new(cfg, rules(RULES_TOML)).unwrap();
        let mut out = Outputs::default();
        let mut fired = Vec::new();
        for (i, r) in lab.records.iter().enumerate() {
            let pos = Position {
                partition: 0,
                offset: i as i64,
            };
            p.process(pos, &r.payload, r.arrival_ms, &mut out);
            fired.extend(
                out.alerts
                    .drain(..)
                    .filter(|a| a.status == AlertStatus::Firing),
            );
            assert!(out.rejected.is_empty(), "{:?}", out.rejected);
            out.clear();
        }
        assert!(p.stats().duplicates > 0, "the lab resends batches");
        let predicted: BTreeSet<(String, String, String)> = fired
            .iter()
            .map(|a| (a.rule.clone(), a.agent.clone(), a.labels.clone()))
            .collect();
        // One incident per subject: no re-firing.
        let mut per: BTreeMap<(String, String, String), Vec<&AlertEvent>> = BTreeMap::new();
        for a in &fired {
            per.entry((a.rule.clone(), a.agent.clone(), a.labels.clone()))
                .or_default()
                .push(a);
        }
        let twice: Vec<_> = per
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(k, v)| {
                (
                    k,
                    v.iter()
                        .map(|a| (a.started_at_ms, a.summary.as_str()))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        assert!(twice.is_empty(), "fired twice: {twice:?}");
        let truth: BTreeSet<(String, String, String)> = lab
            .agents
            .iter()
            .flat_map(|a| {
                a.expected
                    .iter()
                    .map(move |e| (e.rule.to_string(), a.agent.clone(), e.labels.clone()))
            })
            .collect();
        let mut table = BTreeMap::new();
        for rule in [
            "patch_sla",
            "antivirus",
            "backup",
            "agent_version",
            "brute_force",
            "off_hours_session",
        ] {
            let pred: BTreeSet<_> = predicted.iter().filter(|k| k.0 == rule).collect();
            let want: BTreeSet<_> = truth.iter().filter(|k| k.0 == rule).collect();
            let tp = pred.intersection(&want).count();
            let precision = tp as f64 / pred.len().max(1) as f64;
            let recall = tp as f64 / want.len().max(1) as f64;
            eprintln!(
                "seed {seed} {rule:>18}: truth {:>3} predicted {:>3} precision {precision:.3} recall {recall:.3}",
                want.len(),
                pred.len()
            );
            assert!(
                want.len() >= 20,
                "{rule}: only {} labelled incidents",
                want.len()
            );
            table.insert(
                rule,
                (
                    precision,
                    recall,
                    pred.difference(&want).cloned().collect::<Vec<_>>(),
                    want.difference(&pred).cloned().collect::<Vec<_>>(),
                ),
            );
        }
        for (rule, (precision, recall, false_pos, missed)) in &table {
            assert!(
                *precision >= 1.0 && *recall >= 1.0,
                "seed {seed} {rule}: precision {precision}, recall {recall}; false {false_pos:?}; missed {missed:?}"
            );
        }
    }
}

/// The report families' states go into delta checkpoints by agent: a
/// pipeline restored from a base and the deltas after it (checkpoints
/// every 7 records) raises and resolves the same incidents, with the same
/// ids, as one that never stopped, wherever it is restored.
#[test]
fn report_incidents_are_identical_across_a_chain_of_delta_checkpoints() {
    let (all, cfg, recs) = mixed_scenario();
    let pos = Position {
        partition: 0,
        offset: 0,
    };
    let run = |restore_at: &[usize]| {
        let mut p = Pipeline::new(cfg.clone(), rules(&all)).unwrap();
        let mut out = Outputs::default();
        let mut chain = TestChain::default();
        for (i, r) in recs.iter().enumerate() {
            if i > 0 && i % 7 == 0 {
                chain.checkpoint(&mut p);
                if restore_at.contains(&i) {
                    p = chain.restore(rules(&all)).unwrap();
                }
            }
            p.process(pos, r, 0, &mut out);
        }
        let got = brief(&out.alerts)
            .into_iter()
            .zip(out.alerts.iter().map(|a| a.id.clone()))
            .collect::<Vec<_>>();
        (got, chain.delta_count)
    };
    let (want, _) = run(&[]);
    assert!(want.len() >= 10, "{want:?}");
    let at: Vec<usize> = (1..recs.len() / 7)
        .map(|k| k * 7)
        .filter(|i| i % 91 == 14)
        .collect();
    let (got, deltas) = run(&at);
    assert!(deltas > 20, "{deltas}");
    assert_eq!(got, want, "restored at {at:?}");
}

/// Agent a's burst of failed logins at MON, then agent b's status
/// reports every minute for three hours (wall clock), under `cfg`. With
/// `restore`, a base checkpoint at minute `base_at` and, at minute
/// `restore_at` (after `check` looks at the pipeline), a restore from
/// that base and the delta written then. Returns the alerts.
fn silent_burst(
    cfg: &PipelineConfig,
    base_at: i64,
    restore_at: i64,
    restore: bool,
    check: impl Fn(&Pipeline),
) -> Vec<(String, AlertStatus, i64, i64, String)> {
    let pos = Position {
        partition: 0,
        offset: 0,
    };
    let mut p = Pipeline::new(cfg.clone(), rules(BF)).unwrap();
    let mut out = Outputs::default();
    let burst = (0..3).map(|k| fail("admin", MON + k * 1_000)).collect();
    p.process(
        pos,
        &batch("a", 1, MON + 5_000, vec![], burst),
        MON + 5_000,
        &mut out,
    );
    let mut chain = TestChain::default();
    for m in 1..180i64 {
        let t = MON + m * MIN;
        if m == base_at {
            chain.checkpoint(&mut p);
        }
        if m == restore_at && restore {
            check(&p);
            chain.checkpoint(&mut p);
            assert_eq!((chain.wholes, chain.delta_count), (1, 1));
            p = chain.restore(rules(BF)).unwrap();
        }
        p.process(
            pos,
            &batch("b", m as u64, t, vec![status(t)], vec![]),
            t,
            &mut out,
        );
    }
    brief(&out.alerts)
}

/// A report family's state that only a tick changes (a burst of failed
/// logins that resolves an hour after its agent fell silent) goes into
/// the next delta: a pipeline restored from it does not resolve the
/// incident a second time.
#[test]
fn a_report_state_only_a_tick_changed_is_in_the_next_delta() {
    let cfg = PipelineConfig::default();
    let check = |p: &Pipeline| {
        assert_eq!(
            p.changed_agents(),
            Some(2),
            "b by its batches, a by the tick"
        )
    };
    let want = silent_burst(&cfg, 10, 120, false, check);
    assert_eq!(want.len(), 2, "fired, then resolved by a tick: {want:?}");
    assert_eq!(silent_burst(&cfg, 10, 120, true, check), want);
}

/// An agent evicted (past the state TTL) takes its report families'
/// states with it, also in the next delta: a pipeline restored from it
/// does not close its incident again later.
#[test]
fn an_evicted_agents_report_state_is_gone_from_the_next_delta() {
    let cfg = PipelineConfig {
        state_ttl: std::time::Duration::from_secs(900),
        ..PipelineConfig::default()
    };
    let check = |p: &Pipeline| assert_eq!(p.stats().agents_evicted, 1);
    let want = silent_burst(&cfg, 5, 40, false, check);
    assert_eq!(
        want.len(),
        2,
        "fired, then closed by the eviction: {want:?}"
    );
    assert_eq!(silent_burst(&cfg, 5, 40, true, check), want);
}
