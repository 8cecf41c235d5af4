//! The compliance and security reports against a small hand-built
//! dataset whose answers are worked out in the comments (`T` = 2026-11-03
//! 00:00Z, `h` hours after it; `d` = a day). Exact limits are on both
//! sides of each rule: at the limit is within it, 1 ms more is not.
//!
//! Status reports (the latest report carrying a section decides it):
//!
//! | agent     | report | patches (critical missing since) | antivirus                  | backup                         | version |
//! |-----------|--------|----------------------------------|----------------------------|--------------------------------|---------|
//! | acme/a1   | 1h     | T-40d                            | on, defs T-1d              | success, last ok T-2h          | 5.12.1  |
//! | acme/a1   | 5h     | 5h-30d (exactly the SLA)         | on, defs 5h-3d (exactly)   | success, last ok 5h-26h (exactly) | 5.12.1 |
//! | acme/a2   | 4h     | 4h-30d-1ms (2 critical)          | **off** (defs T-1d)        | **failed**, last ok T-1h       | 5.9.4   |
//! | acme/a3   | 3h     | important only                   | -                          | -                              | -       |
//! | acme/a3   | 6h     | -                                | on, defs unknown           | -                              | -       |
//! | beta/b1   | 2h     | -                                | on, defs 2h-3d-1ms (stale) | **none ever**                  | 5.12.1  |
//! | beta/b2   | 2h     | none missing                     | on, defs T                 | success, last ok 2h-26h-1ms (too old) | 5.12.1 |
//!
//! Security events (`m` minutes):
//!
//! | agent   | what                                                                    |
//! |---------|-------------------------------------------------------------------------|
//! | acme/a1 | root fails at 10h00m, 02m, 04m, 09m, 10m (from 203.0.113.50): 5 within exactly 10 minutes |
//! | acme/a1 | j.doe fails at 9h from 10.0.0.7, succeeds 20 s later                    |
//! | acme/a1 | tech.ana: session s1 2h–2h30m (off-hours incident), s2 11h–11h45m       |
//! | acme/a1 | admin grants j.doe Administrators at 12h                                |
//! | acme/a2 | root fails at 23h30m (203.0.113.9) and 24h30m (203.0.113.10, next day)  |
//! | acme/a2 | tech.bo: session s3 at 12h, no end                                      |
//! | beta/b1 | admin fails at 1h, succeeds 5 s later                                   |
//! | beta/b1 | tech.bo: session s4 22h–23h (off-hours incident)                        |
//!
//! Alerts: a brute-force incident (labels `user=root`) on a1, and the
//! off-hours incidents of s1 and s4 (firing and resolved events).

use std::path::Path;

use serde_json::json;
use vigil_ops::{AlertEvent, AlertStatus, DetectorKind, SecurityEventRow, StatusRow};
use vigil_proto::v1::{
    AntivirusStatus, BackupResult, BackupStatus, MissingPatches, PatchSeverity, SecurityEvent,
    SecurityEventKind, StatusReport,
};
use vigil_store::{AlertsWriter, SecurityEventsWriter, StatusWriter, WriterConfig};

use super::tests::{pick, rows};
use super::*;
use crate::tests::{alert, range, HOUR, MIDNIGHT as T};
use crate::{block_on, QuerySession};

const MIN: i64 = 60_000;
const DAY: i64 = 24 * HOUR;

fn host(agent: &str) -> Option<String> {
    Some(format!("host-{agent}"))
}

fn tenant(agent: &str) -> &'static str {
    if agent.starts_with('a') {
        "acme"
    } else {
        "beta"
    }
}

fn patches(critical_since: Option<(i64, u32)>) -> (Vec<MissingPatches>, bool) {
    let mut m = vec![MissingPatches {
        severity: PatchSeverity::Important as i32,
        count: 4,
        oldest_missing_since_ms: T - 60 * DAY,
    }];
    if let Some((since, count)) = critical_since {
        m.push(MissingPatches {
            severity: PatchSeverity::Critical as i32,
            count,
            oldest_missing_since_ms: since,
        });
    }
    (m, true)
}

fn av(enabled: bool, defs: i64) -> Option<AntivirusStatus> {
    Some(AntivirusStatus {
        product: "Defender".into(),
        enabled,
        definitions_updated_ms: defs,
        last_scan_ms: 0,
    })
}

fn backup(result: BackupResult, last_ok: i64) -> Option<BackupStatus> {
    Some(BackupStatus {
        last_result: result as i32,
        last_run_ms: last_ok.max(T - DAY),
        last_success_ms: last_ok,
    })
}

fn status_rows() -> Vec<StatusRow> {
    use BackupResult::{Failed, Success, Unspecified};
    let row = |agent: &str, observed: i64, f: &dyn Fn(&mut StatusReport)| {
        let mut report = StatusReport {
            observed_at_ms: observed,
            ..StatusReport::default()
        };
        f(&mut report);
        StatusRow {
            tenant: tenant(agent).into(),
            agent: agent.into(),
            hostname: host(agent),
            report,
        }
    };
    let with_patches = |r: &mut StatusReport, critical: Option<(i64, u32)>| {
        (r.missing_patches, r.patches_reported) = patches(critical);
    };
    let (h1, h2, h3, h4, h5, h6) = (
        T + HOUR,
        T + 2 * HOUR,
        T + 3 * HOUR,
        T + 4 * HOUR,
        T + 5 * HOUR,
        T + 6 * HOUR,
    );
    vec![
        row("a1", h1, &|r| {
            with_patches(r, Some((T - 40 * DAY, 1)));
            r.antivirus = av(true, T - DAY);
            r.backup = backup(Success, T - 2 * HOUR);
            r.agent_version = "5.12.1".into();
        }),
        row("a1", h5, &|r| {
            with_patches(r, Some((h5 - 30 * DAY, 1)));
            r.antivirus = av(true, h5 - 3 * DAY);
            r.backup = backup(Success, h5 - 26 * HOUR);
            r.agent_version = "5.12.1".into();
        }),
        row("a2", h4, &|r| {
            with_patches(r, Some((h4 - 30 * DAY - 1, 2)));
            r.antivirus = av(false, T - DAY);
            r.backup = backup(Failed, T - HOUR);
            r.agent_version = "5.9.4".into();
        }),
        row("a3", h3, &|r| with_patches(r, None)),
        row("a3", h6, &|r| r.antivirus = av(true, 0)),
        row("b1", h2, &|r| {
            r.antivirus = av(true, h2 - 3 * DAY - 1);
            r.backup = backup(Unspecified, 0);
            r.agent_version = "5.12.1".into();
        }),
        row("b2", h2, &|r| {
            r.missing_patches = Vec::new();
            r.patches_reported = true;
            r.antivirus = av(true, T);
            r.backup = backup(Success, h2 - 26 * HOUR - 1);
            r.agent_version = "5.12.1".into();
        }),
    ]
}

fn security_rows() -> Vec<SecurityEventRow> {
    use SecurityEventKind as K;
    let ev = |agent: &str, t: i64, kind: K, f: &dyn Fn(&mut SecurityEvent)| {
        let mut event = SecurityEvent {
            timestamp_ms: t,
            kind: kind as i32,
            ..SecurityEvent::default()
        };
        f(&mut event);
        SecurityEventRow {
            tenant: tenant(agent).into(),
            agent: agent.into(),
            hostname: host(agent),
            event,
        }
    };
    let login = |agent: &str, t: i64, kind: K, user: &str, src: &str| {
        ev(agent, t, kind, &|e| {
            e.user = user.into();
            e.source_address = src.into();
        })
    };
    let session = |agent: &str, t: i64, kind: K, id: &str, tech: &str| {
        ev(agent, t, kind, &|e| {
            e.session_id = id.into();
            e.technician = tech.into();
        })
    };
    let mut v = Vec::new();
    for m in [0, 2, 4, 9, 10] {
        v.push(login(
            "a1",
            T + 10 * HOUR + m * MIN,
            K::LoginFailure,
            "root",
            "203.0.113.50",
        ));
    }
    v.push(login(
        "a1",
        T + 9 * HOUR,
        K::LoginFailure,
        "j.doe",
        "10.0.0.7",
    ));
    v.push(login(
        "a1",
        T + 9 * HOUR + 20_000,
        K::LoginSuccess,
        "j.doe",
        "10.0.0.7",
    ));
    v.push(session(
        "a1",
        T + 2 * HOUR,
        K::RemoteSessionStart,
        "s1",
        "tech.ana",
    ));
    v.push(session(
        "a1",
        T + 2 * HOUR + 30 * MIN,
        K::RemoteSessionEnd,
        "s1",
        "tech.ana",
    ));
    v.push(session(
        "a1",
        T + 11 * HOUR,
        K::RemoteSessionStart,
        "s2",
        "tech.ana",
    ));
    v.push(session(
        "a1",
        T + 11 * HOUR + 45 * MIN,
        K::RemoteSessionEnd,
        "s2",
        "tech.ana",
    ));
    v.push(ev("a1", T + 12 * HOUR, K::PrivilegeChange, &|e| {
        e.user = "j.doe".into();
        e.privilege = "Administrators".into();
        e.granted = true;
        e.actor = "admin".into();
    }));
    v.push(login(
        "a2",
        T + 23 * HOUR + 30 * MIN,
        K::LoginFailure,
        "root",
        "203.0.113.9",
    ));
    v.push(login(
        "a2",
        T + 24 * HOUR + 30 * MIN,
        K::LoginFailure,
        "root",
        "203.0.113.10",
    ));
    v.push(session(
        "a2",
        T + 12 * HOUR,
        K::RemoteSessionStart,
        "s3",
        "tech.bo",
    ));
    v.push(login(
        "b1",
        T + HOUR,
        K::LoginFailure,
        "admin",
        "198.51.100.4",
    ));
    v.push(login(
        "b1",
        T + HOUR + 5_000,
        K::LoginSuccess,
        "admin",
        "198.51.100.4",
    ));
    v.push(session(
        "b1",
        T + 22 * HOUR,
        K::RemoteSessionStart,
        "s4",
        "tech.bo",
    ));
    v.push(session(
        "b1",
        T + 23 * HOUR,
        K::RemoteSessionEnd,
        "s4",
        "tech.bo",
    ));
    v
}

fn security_alerts() -> Vec<AlertEvent> {
    let incident = |agent: &str, rule: &str, labels: &str, start: i64, end: i64| {
        let mut f = alert(
            agent,
            rule,
            DetectorKind::Security,
            AlertStatus::Firing,
            false,
            start,
        );
        f.id = format!("{rule}-{agent}-{start}");
        f.tenant = tenant(agent).into();
        f.labels = labels.into();
        let mut r = f.clone();
        r.status = AlertStatus::Resolved;
        r.resolved_at_ms = Some(end);
        r.event_time_ms = end;
        [f, r]
    };
    let mut v = Vec::new();
    v.extend(incident(
        "a1",
        "brute_force",
        "user=root",
        T + 10 * HOUR + 10 * MIN,
        T + 10 * HOUR + 20 * MIN,
    ));
    v.extend(incident(
        "a1",
        "off_hours",
        "session=s1,technician=tech.ana",
        T + 2 * HOUR,
        T + 2 * HOUR + 30 * MIN,
    ));
    v.extend(incident(
        "b1",
        "off_hours",
        "session=s4,technician=tech.bo",
        T + 22 * HOUR,
        T + 23 * HOUR,
    ));
    v
}

fn write_posture(root: &Path) {
    let mut s = StatusWriter::new(root, WriterConfig::default()).unwrap();
    for r in status_rows() {
        s.push(&r);
    }
    s.flush(range(0)).unwrap();
    let mut e = SecurityEventsWriter::new(root, WriterConfig::default()).unwrap();
    for r in security_rows() {
        e.push(&r);
    }
    e.flush(range(0)).unwrap();
    let mut a = AlertsWriter::new(root, WriterConfig::default()).unwrap();
    for r in security_alerts() {
        a.push(&r);
    }
    a.flush(range(0)).unwrap();
}

fn report(kind: ReportKind, scope: &Scope) -> Report {
    report_with(kind, scope, &ComplianceLimits::default())
}

fn report_with(kind: ReportKind, scope: &Scope, limits: &ComplianceLimits) -> Report {
    let dir = tempfile::tempdir().unwrap();
    write_posture(dir.path());
    let s = QuerySession::open(dir.path()).unwrap();
    block_on(run_with(&s, kind, scope, limits))
        .unwrap()
        .unwrap()
}

#[test]
fn compliance_report_numbers() {
    let r = report(ReportKind::Compliance, &Scope::default());
    // acme: a1 at every limit exactly (compliant, protected, backed up);
    // a2 out of everything; a3 patches fine, AV on with unknown
    // definitions (fine), no backup section. beta: b1 no patch section,
    // stale AV, no backup ever; b2 fine but a backup 1 ms too old.
    assert_eq!(
        pick(
            &rows(&r, "compliance_summary"),
            &[
                "tenant",
                "agents",
                "last_report",
                "patch_reported",
                "patch_compliant",
                "patch_compliance_pct",
                "av_reported",
                "av_protected",
                "av_coverage_pct",
                "backup_reported",
                "backup_ok",
                "backup_coverage_pct"
            ]
        ),
        [
            json!([
                "beta",
                2,
                "2026-11-03T02:00:00Z",
                1,
                1,
                50.0,
                2,
                1,
                50.0,
                2,
                0,
                0.0
            ]),
            json!([
                "acme",
                3,
                "2026-11-03T06:00:00Z",
                3,
                2,
                66.7,
                3,
                2,
                66.7,
                2,
                1,
                33.3
            ]),
        ]
    );
    // a2 only: a1's 40-day backlog is in an older report.
    assert_eq!(
        pick(
            &rows(&r, "agents_out_of_patch_sla"),
            &[
                "tenant",
                "agent",
                "hostname",
                "missing_critical",
                "days_missing",
                "reported_at"
            ]
        ),
        [json!([
            "acme",
            "a2",
            "host-a2",
            2,
            30.0,
            "2026-11-03T04:00:00Z"
        ])]
    );
    // Disabled first; b1's definitions are 3 days and 1 ms old.
    assert_eq!(
        pick(
            &rows(&r, "antivirus_gaps"),
            &["agent", "av_product", "problem", "definitions_age_days"]
        ),
        [
            json!(["a2", "Defender", "disabled", 1.2]),
            json!(["b1", "Defender", "stale", 3.0]),
        ]
    );
    assert_eq!(
        pick(
            &rows(&r, "backup_gaps"),
            &["agent", "problem", "backup_result", "hours_since_success"]
        ),
        [
            json!(["a2", "failed", "failed", 5.0]),
            json!(["b1", "never", "none", null]),
            json!(["b2", "too_old", "success", 26.0]),
        ]
    );
    assert_eq!(
        pick(
            &rows(&r, "agent_versions"),
            &["tenant", "agent_version", "agents"]
        ),
        [
            json!(["acme", "5.12.1", 1]),
            json!(["acme", "5.9.4", 1]),
            json!(["beta", "5.12.1", 2]),
        ]
    );
}

#[test]
fn compliance_report_judges_by_the_limits_given() {
    // Patches within 40 days: a2's 30 days and 1 ms pass. Definitions
    // within 1 day: a1's (exactly 3 days at 5h) are stale too. Backups
    // within 2 days: b2's 26 h 1 ms pass.
    let limits = ComplianceLimits {
        patch_max_days: 40,
        av_max_definition_age: std::time::Duration::from_secs(86_400),
        backup_max_age: std::time::Duration::from_secs(2 * 86_400),
    };
    let r = report_with(ReportKind::Compliance, &Scope::default(), &limits);
    assert!(rows(&r, "agents_out_of_patch_sla").is_empty());
    assert_eq!(
        pick(&rows(&r, "antivirus_gaps"), &["agent", "problem"]),
        [
            json!(["a2", "disabled"]),
            json!(["a1", "stale"]),
            json!(["b1", "stale"]),
        ]
    );
    assert_eq!(
        pick(&rows(&r, "backup_gaps"), &["agent", "problem"]),
        [json!(["a2", "failed"]), json!(["b1", "never"])]
    );
    assert_eq!(
        pick(
            &rows(&r, "compliance_summary"),
            &["tenant", "patch_compliant", "av_protected", "backup_ok"]
        ),
        [json!(["beta", 1, 1, 1]), json!(["acme", 3, 1, 1])]
    );
    assert!(r.describe().ends_with(
        "critical patches within 40 days, antivirus definitions within 1 day, backups within 2 days"
    ));
    assert!(r.sections[0].about.contains("over 40 days"));
    // The HTML shows the SQL that ran, with the limits in it.
    let html = render_report(&r, crate::Format::Html).unwrap();
    assert!(
        html.contains("observed_at - INTERVAL &#39;40 days&#39;"),
        "{html}"
    );
    assert!(!html.contains("INTERVAL &#39;30 days&#39;"));
    // The other reports carry no limits.
    let h = report_with(ReportKind::Security, &Scope::default(), &limits);
    assert_eq!(h.limits, None);
    assert_eq!(h.describe(), "all data");
}

#[test]
fn compliance_report_judges_the_latest_report_in_scope() {
    // Before 04:00 a1's latest patch report is the 01:00 one (a critical
    // patch 40 days and 1 hour old) and a2 has none.
    let scope = Scope {
        to_ms: Some(T + 4 * HOUR),
        ..Scope::default()
    };
    let r = report(ReportKind::Compliance, &scope);
    assert_eq!(
        pick(
            &rows(&r, "agents_out_of_patch_sla"),
            &["agent", "days_missing", "reported_at"]
        ),
        [json!(["a1", 40.0, "2026-11-03T01:00:00Z"])]
    );
    let scope = Scope {
        tenant: Some("beta".into()),
        ..Scope::default()
    };
    let r = report(ReportKind::Compliance, &scope);
    assert_eq!(rows(&r, "compliance_summary").len(), 1);
    assert!(rows(&r, "agents_out_of_patch_sla").is_empty());
}

#[test]
fn security_report_numbers() {
    let r = report(ReportKind::Security, &Scope::default());
    // acme: 5 + 1 + 2 failures on 3 accounts, 3 sessions (s1 off-hours),
    // 2 technicians, 1 privilege change; beta: 1 failure, s4 off-hours.
    assert_eq!(
        pick(
            &rows(&r, "security_summary"),
            &[
                "tenant",
                "login_failures",
                "login_successes",
                "accounts_with_failures",
                "brute_force_incidents",
                "remote_sessions",
                "off_hours_sessions",
                "technicians",
                "privilege_changes"
            ]
        ),
        [
            json!(["acme", 8, 1, 3, 1, 3, 1, 2, 1]),
            json!(["beta", 1, 1, 1, 0, 1, 1, 1, 0]),
        ]
    );
    // root on a1: 5 failures, the first and last exactly 10 minutes apart
    // (both ends count); root on a2: an hour apart, from two addresses.
    assert_eq!(
        pick(
            &rows(&r, "failed_logins"),
            &[
                "tenant",
                "agent",
                "user",
                "account",
                "failures",
                "peak_10_minutes",
                "sources",
                "first_failure",
                "last_failure"
            ]
        ),
        [
            json!([
                "acme",
                "a1",
                "root",
                "a1 root",
                5,
                5,
                1,
                "2026-11-03T10:00:00Z",
                "2026-11-03T10:10:00Z"
            ]),
            json!([
                "acme",
                "a2",
                "root",
                "a2 root",
                2,
                1,
                2,
                "2026-11-03T23:30:00Z",
                "2026-11-04T00:30:00Z"
            ]),
            json!([
                "acme",
                "a1",
                "j.doe",
                "a1 j.doe",
                1,
                1,
                1,
                "2026-11-03T09:00:00Z",
                "2026-11-03T09:00:00Z"
            ]),
            json!([
                "beta",
                "b1",
                "admin",
                "b1 admin",
                1,
                1,
                1,
                "2026-11-03T01:00:00Z",
                "2026-11-03T01:00:00Z"
            ]),
        ]
    );
    assert_eq!(
        pick(
            &rows(&r, "logins_per_day"),
            &["day", "failures", "successes"]
        ),
        [json!(["2026-11-03", 8, 2]), json!(["2026-11-04", 1, 0]),]
    );
    // tech.ana: s1 (30 min, off-hours) and s2 (45 min); tech.bo: s3 (no
    // end) and s4 (1 h, off-hours) on two tenants.
    assert_eq!(
        pick(
            &rows(&r, "sessions_by_technician"),
            &[
                "technician",
                "sessions",
                "off_hours_sessions",
                "off_hours_pct",
                "tenants",
                "agents",
                "session_hours",
                "without_end"
            ]
        ),
        [
            json!(["tech.ana", 2, 1, 50.0, 1, 1, 1.25, 0]),
            json!(["tech.bo", 2, 1, 50.0, 2, 2, 1.0, 1]),
        ]
    );
    assert_eq!(
        pick(
            &rows(&r, "off_hours_sessions"),
            &[
                "started",
                "tenant",
                "agent",
                "hostname",
                "technician",
                "session_id",
                "ended",
                "minutes"
            ]
        ),
        [
            json!([
                "2026-11-03T02:00:00Z",
                "acme",
                "a1",
                "host-a1",
                "tech.ana",
                "s1",
                "2026-11-03T02:30:00Z",
                30.0
            ]),
            json!([
                "2026-11-03T22:00:00Z",
                "beta",
                "b1",
                "host-b1",
                "tech.bo",
                "s4",
                "2026-11-03T23:00:00Z",
                60.0
            ]),
        ]
    );
}

#[test]
fn security_report_scope_and_empty_datasets() {
    let scope = Scope {
        tenant: Some("beta".into()),
        ..Scope::default()
    };
    let r = report(ReportKind::Security, &scope);
    assert_eq!(
        pick(&rows(&r, "security_summary"), &["tenant", "login_failures"]),
        [json!(["beta", 1])]
    );
    assert_eq!(rows(&r, "off_hours_sessions").len(), 1);
    // A root without status or security data: every section runs, empty.
    let dir = tempfile::tempdir().unwrap();
    let s = QuerySession::open(dir.path()).unwrap();
    for kind in [ReportKind::Compliance, ReportKind::Security] {
        let r = block_on(run(&s, kind, &Scope::default())).unwrap().unwrap();
        for sec in &r.sections {
            assert_eq!(sec.rows(), 0, "{kind}.{}", sec.spec.name);
        }
    }
}

#[test]
fn html_reports_draw_their_charts() {
    for kind in [ReportKind::Compliance, ReportKind::Security] {
        let mut r = report(kind, &Scope::default());
        assert_eq!(
            super::tests::sections_with_chart(&r),
            r.sections.iter().filter(|s| s.spec.chart.is_some()).count(),
            "{kind}: every charted section has rows here"
        );
        super::tests::check_html(&mut r);
    }
}
