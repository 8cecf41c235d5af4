//! `vigil report compliance` and `vigil report security` over the posture
//! lab's datasets (`common::posture_data`), against an oracle: the
//! figures computed here, independently of the SQL, from the lab's own
//! records (decoded, resends dropped) and its truth (the scenario of
//! every agent, the incidents a correct detector raises).
//!
//! The lab's scenarios also fix which agents must be out of compliance at
//! the end of the run, whatever the arithmetic: a critical backlog never
//! patched (`PatchBacklog`) is past 30 days at the end, definitions that
//! stopped updating (`StaleAv`) are older than 3 days, backups that
//! stopped (`OldBackup`) are older than 26 hours; the near-limit traps,
//! the disabled-for-hours antivirus and the one failed backup night are
//! back within the limits by the end.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use serde_json::Value;
use vigil_proto::v1::{
    BackupResult, PatchSeverity, SecurityEvent, SecurityEventKind, StatusReport, TelemetryBatch,
};
use vigil_sim::posture::{PostureLab, PostureScenario};

use super::{text, vigil};
use crate::common::posture_data;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// What the lab sent, as the pipeline takes it: status reports per
/// (tenant, agent) and security events, resent batches counted once.
struct Sent {
    status: BTreeMap<(String, String), Vec<StatusReport>>,
    events: Vec<(String, String, SecurityEvent)>,
}

fn sent(lab: &PostureLab) -> Sent {
    let mut seen = BTreeSet::new();
    let mut s = Sent {
        status: BTreeMap::new(),
        events: Vec::new(),
    };
    for r in &lab.records {
        let b = TelemetryBatch::decode(&r.payload[..]).unwrap();
        if !seen.insert((b.agent_id.clone(), b.seq)) {
            continue;
        }
        let key = (b.tenant_id.clone(), b.agent_id.clone());
        s.status.entry(key).or_default().extend(b.status);
        for e in b.security_events {
            s.events.push((b.tenant_id.clone(), b.agent_id.clone(), e));
        }
    }
    s
}

/// The report's sections as JSON rows, by section name.
fn report(kind: &str, extra: &[&str]) -> BTreeMap<String, Vec<Value>> {
    let dir = posture_data().dir.path().to_str().unwrap().to_owned();
    let mut args = vec!["report", kind, "--data-dir", &dir, "--format", "json"];
    args.extend_from_slice(extra);
    let o = vigil(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut section = String::new();
    for line in text(&o.stdout).lines().filter(|l| !l.is_empty()) {
        match line.strip_prefix("# ") {
            Some(name) => {
                section = name.to_owned();
                out.entry(section.clone()).or_default();
            }
            None => out
                .get_mut(&section)
                .unwrap()
                .push(serde_json::from_str(line).unwrap()),
        }
    }
    out
}

fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

fn pct(n: usize, of: usize) -> f64 {
    (1000.0 * n as f64 / of as f64).round() / 10.0
}

fn close(got: &Value, want: f64, what: &str) {
    let g = got.as_f64().unwrap_or(f64::NAN);
    assert!((g - want).abs() < 0.051, "{what}: {g} != {want}");
}

/// Agents of the lab with scenario `s`.
fn with(lab: &PostureLab, s: PostureScenario) -> BTreeSet<String> {
    lab.agents
        .iter()
        .filter(|a| a.scenario == s)
        .map(|a| a.agent.clone())
        .collect()
}

fn agents_of(rows: &[Value]) -> BTreeSet<String> {
    rows.iter()
        .map(|r| r["agent"].as_str().unwrap().to_owned())
        .collect()
}

#[derive(Default, Debug, PartialEq)]
struct Coverage {
    agents: usize,
    patch_reported: usize,
    patch_ok: usize,
    av_reported: usize,
    av_ok: usize,
    backup_reported: usize,
    backup_ok: usize,
}

/// The limits the compliance report judges by, in ms (patches in days).
#[derive(Clone, Copy)]
struct Limits {
    patch_days: i64,
    av_ms: i64,
    backup_ms: i64,
}

/// The detectors' defaults.
const DEFAULT_LIMITS: Limits = Limits {
    patch_days: 30,
    av_ms: 3 * DAY,
    backup_ms: 26 * HOUR,
};

/// The compliance figures computed from the records, independently of
/// the SQL: each agent by its latest report carrying the section.
#[derive(Default)]
struct ComplianceOracle {
    per_tenant: BTreeMap<String, Coverage>,
    out_of_sla: BTreeMap<String, f64>,
    av_gaps: BTreeSet<String>,
    backup_gaps: BTreeMap<String, f64>,
    versions: BTreeMap<(String, String), u64>,
}

fn compliance_oracle(sent: &Sent, l: Limits) -> ComplianceOracle {
    let latest = |reports: &[StatusReport], has: &dyn Fn(&StatusReport) -> bool| {
        reports
            .iter()
            .filter(|r| has(r))
            .max_by_key(|r| r.observed_at_ms)
            .cloned()
    };
    let mut o = ComplianceOracle::default();
    for ((tenant, agent), reports) in &sent.status {
        let c = o.per_tenant.entry(tenant.clone()).or_default();
        c.agents += 1;
        if let Some(p) = latest(reports, &|r| r.patches_reported) {
            c.patch_reported += 1;
            let late = p
                .missing_patches
                .iter()
                .filter(|m| m.severity == PatchSeverity::Critical as i32)
                .map(|m| p.observed_at_ms - m.oldest_missing_since_ms)
                .find(|age| *age > l.patch_days * DAY);
            match late {
                None => c.patch_ok += 1,
                Some(age) => {
                    o.out_of_sla.insert(agent.clone(), age as f64 / DAY as f64);
                }
            }
        }
        if let Some(a) = latest(reports, &|r| r.antivirus.is_some()) {
            c.av_reported += 1;
            let av = a.antivirus.unwrap();
            let stale = av.definitions_updated_ms != 0
                && a.observed_at_ms - av.definitions_updated_ms > l.av_ms;
            if av.enabled && !stale {
                c.av_ok += 1;
            } else {
                o.av_gaps.insert(agent.clone());
            }
        }
        if let Some(b) = latest(reports, &|r| r.backup.is_some()) {
            c.backup_reported += 1;
            let bk = b.backup.unwrap();
            let age = b.observed_at_ms - bk.last_success_ms;
            if bk.last_result != BackupResult::Failed as i32
                && bk.last_success_ms != 0
                && age <= l.backup_ms
            {
                c.backup_ok += 1;
            } else {
                o.backup_gaps
                    .insert(agent.clone(), age as f64 / HOUR as f64);
            }
        }
        if let Some(v) = latest(reports, &|r| !r.agent_version.is_empty()) {
            *o.versions
                .entry((tenant.clone(), v.agent_version))
                .or_default() += 1;
        }
    }
    o
}

/// Every figure of the compliance report `r` equals the oracle's.
fn check_compliance(r: &BTreeMap<String, Vec<Value>>, o: &ComplianceOracle, l: Limits) {
    let summary = &r["compliance_summary"];
    assert_eq!(summary.len(), o.per_tenant.len());
    for row in summary {
        let c = &o.per_tenant[row["tenant"].as_str().unwrap()];
        let got = Coverage {
            agents: row["agents"].as_u64().unwrap() as usize,
            patch_reported: row["patch_reported"].as_u64().unwrap() as usize,
            patch_ok: row["patch_compliant"].as_u64().unwrap() as usize,
            av_reported: row["av_reported"].as_u64().unwrap() as usize,
            av_ok: row["av_protected"].as_u64().unwrap() as usize,
            backup_reported: row["backup_reported"].as_u64().unwrap() as usize,
            backup_ok: row["backup_ok"].as_u64().unwrap() as usize,
        };
        assert_eq!(&got, c, "{row}");
        close(
            &row["patch_compliance_pct"],
            pct(c.patch_ok, c.agents),
            "patch %",
        );
        close(&row["av_coverage_pct"], pct(c.av_ok, c.agents), "av %");
        close(
            &row["backup_coverage_pct"],
            pct(c.backup_ok, c.agents),
            "backup %",
        );
    }
    // Least patch-compliant tenant first.
    let order: Vec<f64> = summary
        .iter()
        .map(|r| r["patch_compliance_pct"].as_f64().unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");

    let sla = &r["agents_out_of_patch_sla"];
    assert_eq!(agents_of(sla), o.out_of_sla.keys().cloned().collect());
    for row in sla {
        let want = o.out_of_sla[row["agent"].as_str().unwrap()];
        close(&row["days_missing"], want, "days_missing");
        assert!(want > l.patch_days as f64);
    }
    assert_eq!(agents_of(&r["antivirus_gaps"]), o.av_gaps);
    let bk = &r["backup_gaps"];
    assert_eq!(agents_of(bk), o.backup_gaps.keys().cloned().collect());
    for row in bk {
        let hours = o.backup_gaps[row["agent"].as_str().unwrap()];
        if row["problem"] == "too_old" {
            close(&row["hours_since_success"], hours, "hours");
        }
    }
    let got: BTreeMap<(String, String), u64> = r["agent_versions"]
        .iter()
        .map(|row| {
            (
                (
                    row["tenant"].as_str().unwrap().to_owned(),
                    row["agent_version"].as_str().unwrap().to_owned(),
                ),
                row["agents"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, o.versions);
}

#[test]
fn compliance_report_matches_the_posture_lab() {
    let data = posture_data();
    let lab = &data.lab;
    let sent = sent(lab);
    let r = report("compliance", &[]);
    let o = compliance_oracle(&sent, DEFAULT_LIMITS);
    check_compliance(&r, &o, DEFAULT_LIMITS);

    // The gaps are also the scenarios'.
    let (sla, av, bk) = (
        &r["agents_out_of_patch_sla"],
        &r["antivirus_gaps"],
        &r["backup_gaps"],
    );
    assert_eq!(agents_of(sla), with(lab, PostureScenario::PatchBacklog));
    assert_eq!(agents_of(av), with(lab, PostureScenario::StaleAv));
    assert!(av.iter().all(|r| r["problem"] == "stale"));
    assert_eq!(agents_of(bk), with(lab, PostureScenario::OldBackup));
    assert!(bk.iter().all(|r| r["problem"] == "too_old"));
    let old = with(lab, PostureScenario::OldAgent).len() as u64;
    let on_old: u64 = o
        .versions
        .iter()
        .filter(|((_, v), _)| v == "5.9.4")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(on_old, old);
    for set in [sla, av, bk] {
        assert!(set.len() >= 5, "the lab gives every gap several agents");
    }
    eprintln!(
        "compliance: {} tenants, {} out of patch SLA, {} AV gaps, {} backup gaps",
        r["compliance_summary"].len(),
        sla.len(),
        av.len(),
        bk.len()
    );
}

/// Under a rules file with other limits the report judges by those (as
/// the detectors of that file would) and says so in its heading: a
/// looser patch SLA lets the backlogs that are 30 to 35 days old pass;
/// stricter antivirus and backup limits find the near-limit agents the
/// defaults let pass.
#[test]
fn compliance_report_judges_by_the_rules_limits() {
    let data = posture_data();
    let sent = sent(&data.lab);
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        r#"
[[patch_sla]]
name = "critical_patches_35d"
max_days = 35
severity = "warning"

[[patch_sla]]
name = "important_patches_60d"
max_days = 60
min_severity = "important"
severity = "info"

[[antivirus]]
name = "av_1d"
max_definition_age = "1d"
severity = "warning"

[[antivirus]]
name = "av_2d"
max_definition_age = "2d"
severity = "info"

[[backup]]
name = "backup_12h"
max_age = "12h"
severity = "warning"
"#,
    )
    .unwrap();
    let limits = Limits {
        patch_days: 35,
        av_ms: DAY,
        backup_ms: 12 * HOUR,
    };
    let rules = rules.to_str().unwrap();
    let r = report("compliance", &["--rules", rules]);
    let o = compliance_oracle(&sent, limits);
    check_compliance(&r, &o, limits);
    let d = compliance_oracle(&sent, DEFAULT_LIMITS);
    // Looser patch limit: fewer out, but some; stricter antivirus and
    // backup limits: everyone out under the defaults is out, and more.
    let (patch, patch_default) = (o.out_of_sla.len(), d.out_of_sla.len());
    assert!(
        0 < patch && patch < patch_default,
        "patch: {patch} vs {patch_default} agents out"
    );
    for (what, strict, default) in [
        ("antivirus", &o.av_gaps, &d.av_gaps),
        (
            "backup",
            &o.backup_gaps.keys().cloned().collect(),
            &d.backup_gaps.keys().cloned().collect::<BTreeSet<_>>(),
        ),
    ] {
        assert!(
            strict.len() > default.len() && strict.is_superset(default),
            "{what}: {} vs {} agents out",
            strict.len(),
            default.len()
        );
    }
    // The heading names the limits.
    let dir_arg = posture_data().dir.path().to_str().unwrap().to_owned();
    let t = vigil(&[
        "report",
        "compliance",
        "--data-dir",
        &dir_arg,
        "--rules",
        rules,
    ]);
    assert!(t.status.success(), "{}", text(&t.stderr));
    let head = text(&t.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        head.contains(
            "critical patches within 35 days, antivirus definitions within 1 day, backups within 12 hours"
        ),
        "{head}"
    );
    // A rules file that does not parse is an error, not the defaults.
    std::fs::write(dir.path().join("bad.toml"), "[[backup]]\nmax_age = 3\n").unwrap();
    let bad = dir.path().join("bad.toml");
    let e = vigil(&[
        "report",
        "compliance",
        "--data-dir",
        &dir_arg,
        "--rules",
        bad.to_str().unwrap(),
    ]);
    assert!(!e.status.success());
    assert!(text(&e.stderr).contains("bad.toml"), "{}", text(&e.stderr));
}

/// The lab's expected incidents of `rule` as (tenant, agent, labels).
fn expected(lab: &PostureLab, rule: &str) -> BTreeSet<(String, String, String)> {
    lab.agents
        .iter()
        .flat_map(|a| {
            a.expected
                .iter()
                .filter(move |e| e.rule == rule)
                .map(move |e| (a.tenant.to_owned(), a.agent.clone(), e.labels.clone()))
        })
        .collect()
}

/// `session=…,technician=…` → (session, technician).
fn session_of(labels: &str) -> (String, String) {
    let mut id = String::new();
    let mut tech = String::new();
    for kv in labels.split(',') {
        match kv.split_once('=') {
            Some(("session", v)) => id = v.to_owned(),
            Some(("technician", v)) => tech = v.to_owned(),
            _ => panic!("{labels}"),
        }
    }
    (id, tech)
}

/// One row of `failed_logins`: tenant, agent, user, failures, peak in 10
/// minutes, sources, first and last failure.
type AccountRow = (String, String, String, u64, u64, usize, i64, i64);

#[test]
fn security_report_matches_the_posture_lab() {
    use SecurityEventKind as K;
    let data = posture_data();
    let lab = &data.lab;
    let sent = sent(lab);
    let r = report("security", &[]);
    let is = |e: &SecurityEvent, k: K| e.kind == k as i32;

    // Per tenant.
    let brute = expected(lab, "brute_force");
    let off: BTreeSet<(String, String, String)> = expected(lab, "off_hours_session")
        .into_iter()
        .map(|(t, a, l)| (t, a, session_of(&l).0))
        .collect();
    let tenants: BTreeSet<&str> = sent.events.iter().map(|(t, _, _)| t.as_str()).collect();
    let summary = &r["security_summary"];
    assert_eq!(summary.len(), tenants.len());
    for row in summary {
        let t = row["tenant"].as_str().unwrap();
        let mine: Vec<_> = sent.events.iter().filter(|(x, _, _)| x == t).collect();
        let count = |k: K| mine.iter().filter(|(_, _, e)| is(e, k)).count() as u64;
        let accounts: BTreeSet<(&str, &str)> = mine
            .iter()
            .filter(|(_, _, e)| is(e, K::LoginFailure))
            .map(|(_, a, e)| (a.as_str(), e.user.as_str()))
            .collect();
        let techs: BTreeSet<&str> = mine
            .iter()
            .filter(|(_, _, e)| !e.technician.is_empty())
            .map(|(_, _, e)| e.technician.as_str())
            .collect();
        let want = serde_json::json!({
            "tenant": t,
            "login_failures": count(K::LoginFailure),
            "login_successes": count(K::LoginSuccess),
            "accounts_with_failures": accounts.len(),
            "brute_force_incidents": brute.iter().filter(|x| x.0 == t).count(),
            "remote_sessions": count(K::RemoteSessionStart),
            "off_hours_sessions": off.iter().filter(|x| x.0 == t).count(),
            "technicians": techs.len(),
            "privilege_changes": count(K::PrivilegeChange),
        });
        assert_eq!(row, &want);
    }

    // Failed logins per account: count, peak in any 10 minutes (both
    // ends included), sources, first and last.
    let mut accounts: BTreeMap<(String, String, String), Vec<(i64, String)>> = BTreeMap::new();
    for (t, a, e) in &sent.events {
        if is(e, K::LoginFailure) {
            accounts
                .entry((t.clone(), a.clone(), e.user.clone()))
                .or_default()
                .push((e.timestamp_ms, e.source_address.clone()));
        }
    }
    let mut want: Vec<AccountRow> = accounts
        .into_iter()
        .map(|((t, a, u), mut f)| {
            f.sort();
            let times: Vec<i64> = f.iter().map(|x| x.0).collect();
            let peak = times
                .iter()
                .map(|&end| {
                    times
                        .iter()
                        .filter(|&&x| x >= end - 10 * MIN && x <= end)
                        .count()
                })
                .max()
                .unwrap() as u64;
            let sources: BTreeSet<&str> = f
                .iter()
                .map(|x| x.1.as_str())
                .filter(|s| !s.is_empty())
                .collect();
            let n = times.len() as u64;
            (
                t,
                a,
                u,
                n,
                peak,
                sources.len(),
                times[0],
                times[times.len() - 1],
            )
        })
        .collect();
    want.sort_by(|x, y| {
        (y.3, y.4)
            .cmp(&(x.3, x.4))
            .then_with(|| (&x.0, &x.1, &x.2).cmp(&(&y.0, &y.1, &y.2)))
    });
    want.truncate(20);
    let got: Vec<_> = r["failed_logins"]
        .iter()
        .map(|row| {
            (
                row["tenant"].as_str().unwrap().to_owned(),
                row["agent"].as_str().unwrap().to_owned(),
                row["user"].as_str().unwrap().to_owned(),
                row["failures"].as_u64().unwrap(),
                row["peak_10_minutes"].as_u64().unwrap(),
                row["sources"].as_u64().unwrap() as usize,
                ms(&row["first_failure"]),
                ms(&row["last_failure"]),
            )
        })
        .collect();
    assert_eq!(got, want);
    // A peak of 5 (the rule's `failures`) is exactly a labelled burst.
    for x in &got {
        let burst = brute.contains(&(x.0.clone(), x.1.clone(), format!("user={}", x.2)));
        assert_eq!(x.4 >= 5, burst, "{x:?}");
    }

    // Logins per UTC day.
    let mut days: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (_, _, e) in &sent.events {
        let day = chrono::DateTime::from_timestamp_millis(e.timestamp_ms)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string();
        if is(e, K::LoginFailure) {
            days.entry(day).or_default().0 += 1;
        } else if is(e, K::LoginSuccess) {
            days.entry(day).or_default().1 += 1;
        }
    }
    let got: BTreeMap<String, (u64, u64)> = r["logins_per_day"]
        .iter()
        .map(|row| {
            (
                row["day"].as_str().unwrap().to_owned(),
                (
                    row["failures"].as_u64().unwrap(),
                    row["successes"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, days);

    // Sessions by technician: the off-hours ones from the truth.
    struct Session {
        tenant: String,
        agent: String,
        id: String,
        tech: String,
        start: i64,
        end: Option<i64>,
    }
    let sessions: Vec<Session> = sent
        .events
        .iter()
        .filter(|(_, _, e)| is(e, K::RemoteSessionStart))
        .map(|(t, a, e)| Session {
            tenant: t.clone(),
            agent: a.clone(),
            id: e.session_id.clone(),
            tech: e.technician.clone(),
            start: e.timestamp_ms,
            end: sent
                .events
                .iter()
                .filter(|(t2, a2, x)| {
                    t2 == t
                        && a2 == a
                        && is(x, K::RemoteSessionEnd)
                        && x.session_id == e.session_id
                        && x.timestamp_ms >= e.timestamp_ms
                })
                .map(|(_, _, x)| x.timestamp_ms)
                .min(),
        })
        .collect();
    let is_off = |s: &Session| off.contains(&(s.tenant.clone(), s.agent.clone(), s.id.clone()));
    let techs: BTreeSet<&str> = sessions.iter().map(|s| s.tech.as_str()).collect();
    let by_tech = &r["sessions_by_technician"];
    assert_eq!(by_tech.len(), techs.len());
    for row in by_tech {
        let tech = row["technician"].as_str().unwrap();
        let mine: Vec<&Session> = sessions.iter().filter(|s| s.tech == tech).collect();
        let n_off = mine.iter().filter(|s| is_off(s)).count();
        assert_eq!(
            row["sessions"].as_u64().unwrap() as usize,
            mine.len(),
            "{row}"
        );
        assert_eq!(
            row["off_hours_sessions"].as_u64().unwrap() as usize,
            n_off,
            "{row}"
        );
        close(&row["off_hours_pct"], pct(n_off, mine.len()), "off %");
        let tenants: BTreeSet<&str> = mine.iter().map(|s| s.tenant.as_str()).collect();
        let agents: BTreeSet<(&str, &str)> = mine
            .iter()
            .map(|s| (s.tenant.as_str(), s.agent.as_str()))
            .collect();
        assert_eq!(row["tenants"].as_u64().unwrap() as usize, tenants.len());
        assert_eq!(row["agents"].as_u64().unwrap() as usize, agents.len());
        let hours: i64 = mine.iter().filter_map(|s| s.end.map(|e| e - s.start)).sum();
        let hours = (hours as f64 / HOUR as f64 * 100.0).round() / 100.0;
        assert!(
            (row["session_hours"].as_f64().unwrap() - hours).abs() < 0.0051,
            "{row}: {hours}"
        );
        let no_end = mine.iter().filter(|s| s.end.is_none()).count();
        assert_eq!(row["without_end"].as_u64().unwrap() as usize, no_end);
    }

    // Every off-hours session, with its technician and length.
    let list = &r["off_hours_sessions"];
    let got: BTreeSet<(String, String, String)> = list
        .iter()
        .map(|row| {
            (
                row["tenant"].as_str().unwrap().to_owned(),
                row["agent"].as_str().unwrap().to_owned(),
                row["session_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, off);
    for row in list {
        let s = sessions
            .iter()
            .find(|s| s.agent == row["agent"] && s.id == row["session_id"])
            .unwrap();
        assert_eq!(row["technician"], s.tech.as_str());
        assert_eq!(ms(&row["started"]), s.start);
        let minutes = s.end.map(|e| (e - s.start) as f64 / MIN as f64);
        match minutes {
            Some(m) => close(&row["minutes"], m, "minutes"),
            None => assert!(row["minutes"].is_null()),
        }
    }
    assert!(off.len() >= 5 && brute.len() >= 5);
    eprintln!(
        "security: {} events, {} accounts with failures listed, {} technicians, {} off-hours sessions",
        sent.events.len(),
        r["failed_logins"].len(),
        techs.len(),
        off.len()
    );
}
