//! Labelled posture laboratory: status reports and security events of a
//! fleet (wire fields 10 and 11), with the exact truth the status and
//! security detectors are scored against.
//!
//! Like [`crate::disklab`], the lab stands beside [`crate::Fleet`] (whose
//! records it does not change): it produces encoded `TelemetryBatch`
//! records, one per agent and hour, carrying that hour's status report
//! and security events and no series, in arrival order, plus one
//! [`AgentPosture`] per agent naming the incidents a correct detector
//! raises (family and subject).
//!
//! ```text
//! PostureConfig (seed) ──▶ scenario deck (stratified, shuffled by seed)
//!     agent i ──own ChaCha8 stream (seed, i)──▶ baseline (daily backups,
//!        daily AV updates, important patches missing, typo logins,
//!        business-hours sessions) + its scenario ──▶ hourly batches
//!        (+ resends and swapped neighbours) ──▶ records by arrival
//! ```
//!
//! Scenarios (each agent has one; every agent also has the baseline):
//!
//! * breaches: a critical-patch backlog that passes 30 days, definitions
//!   that stop updating, protection switched off for hours, a failed
//!   backup night, backups that stop, an agent below the minimum
//!   version, a brute-force burst (5-20 failures of one user within 1-9
//!   minutes), a remote session started off-hours (night or weekend, in
//!   the tenant's zone);
//! * traps (no incident): a critical backlog patched at 29-30 days (also
//!   exactly 30), definitions updated every 70-72 hours (also exactly
//!   72), backups 22-26 hours apart (also exactly 26), an agent at
//!   exactly the minimum version, typo bursts (2-4 failures, or 5
//!   failures spread over more than 10 minutes), sessions at the edges
//!   of business hours (exactly 08:00 and 17:59 local);
//! * noise on every agent: a resent batch now and then (a duplicate for
//!   the dedup) and two neighbouring batches delivered in swapped order
//!   (an older status report after a newer one).
//!
//! The labels assume the rules of [`RULES_TOML`]. Tenants' zones are
//! fixed-offset in January (no daylight-saving change inside the run).

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vigil_proto::prost::Message;
use vigil_proto::v1::{
    AntivirusStatus, BackupResult, BackupStatus, MissingPatches, PatchSeverity, SecurityEvent,
    SecurityEventKind, StatusReport, TelemetryBatch,
};

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// The rules the labels assume (the detectors' documented defaults, a
/// minimum version, and business hours 08:00-18:00 Monday to Friday in
/// each tenant's zone).
pub const RULES_TOML: &str = r#"
[[patch_sla]]
name = "patch_sla"
severity = "critical"

[[antivirus]]
name = "antivirus"
severity = "critical"

[[backup]]
name = "backup"
severity = "warning"

[[agent_version]]
name = "agent_version"
minimum = "5.10.0"
severity = "info"

[[brute_force]]
name = "brute_force"
severity = "critical"

[[off_hours_session]]
name = "off_hours_session"
severity = "warning"
tenants.eu = { time_zone = "Europe/Berlin" }
tenants.us = { time_zone = "America/New_York" }
tenants.jp = { time_zone = "Asia/Tokyo" }
tenants.uk = { time_zone = "Europe/London" }
"#;

/// Tenants and their UTC offsets in January, hours.
pub const TENANTS: [(&str, i64); 4] = [("eu", 1), ("us", -5), ("jp", 9), ("uk", 0)];

/// 2026-01-05T00:00:00Z, a Monday.
pub const DEFAULT_POSTURE_START_MS: i64 = 1_767_571_200_000;

/// Settings of a lab run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostureConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Agents (spread over [`TENANTS`]).
    pub agents: usize,
    /// Days simulated (hourly batches).
    pub days: u32,
    /// Start, ms since epoch (a Monday 00:00 UTC in January).
    pub start_ms: i64,
}

impl Default for PostureConfig {
    fn default() -> Self {
        PostureConfig {
            seed: 1,
            agents: 390,
            days: 14,
            start_ms: DEFAULT_POSTURE_START_MS,
        }
    }
}

/// What one agent of the lab does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PostureScenario {
    /// Baseline only.
    Clean,
    /// A critical patch missing past 30 days.
    PatchBacklog,
    /// Trap: a critical patch installed at 29-30 days of age.
    PatchNearSla,
    /// Definitions stop updating.
    StaleAv,
    /// Protection switched off for some hours.
    AvDisabled,
    /// Trap: definitions updated every 70-72 hours.
    AvNearLimit,
    /// One backup night fails.
    FailedBackup,
    /// Backups stop.
    OldBackup,
    /// Trap: backups 22-26 hours apart.
    BackupNearLimit,
    /// Agent below the minimum version.
    OldAgent,
    /// Trap: agent exactly at the minimum version.
    MinimumAgent,
    /// A brute-force burst on one user.
    BruteForce,
    /// Trap: typo bursts below the rule.
    LoginTypos,
    /// A remote session started outside business hours.
    OffHoursSession,
    /// Trap: sessions at the edges of business hours.
    EdgeSessions,
}

impl PostureScenario {
    /// Every scenario.
    pub const ALL: [PostureScenario; 15] = [
        PostureScenario::Clean,
        PostureScenario::PatchBacklog,
        PostureScenario::PatchNearSla,
        PostureScenario::StaleAv,
        PostureScenario::AvDisabled,
        PostureScenario::AvNearLimit,
        PostureScenario::FailedBackup,
        PostureScenario::OldBackup,
        PostureScenario::BackupNearLimit,
        PostureScenario::OldAgent,
        PostureScenario::MinimumAgent,
        PostureScenario::BruteForce,
        PostureScenario::LoginTypos,
        PostureScenario::OffHoursSession,
        PostureScenario::EdgeSessions,
    ];
}

/// An incident a correct detector raises: the rule (of [`RULES_TOML`])
/// and the incident's labels (`user=…`, `session=…,technician=…`, or
/// empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExpectedIncident {
    /// Rule name.
    pub rule: &'static str,
    /// Canonical labels of the incident.
    pub labels: String,
}

/// The truth of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPosture {
    /// Tenant id.
    pub tenant: &'static str,
    /// Agent id.
    pub agent: String,
    /// Its scenario.
    pub scenario: PostureScenario,
    /// Incidents a correct detector raises for it.
    pub expected: Vec<ExpectedIncident>,
}

/// One record of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostureRecord {
    /// True arrival time (processing time), ms.
    pub arrival_ms: i64,
    /// Agent id (the Kafka key).
    pub agent: String,
    /// The encoded `TelemetryBatch`.
    pub payload: Vec<u8>,
}

/// A generated lab: records in arrival order and the truth per agent.
#[derive(Debug, Clone)]
pub struct PostureLab {
    /// Records, non-decreasing `arrival_ms`.
    pub records: Vec<PostureRecord>,
    /// Truth, one per agent.
    pub agents: Vec<AgentPosture>,
}

/// Generates a lab.
pub fn generate(cfg: &PostureConfig) -> PostureLab {
    let mut deck: Vec<PostureScenario> = (0..cfg.agents)
        .map(|i| PostureScenario::ALL[i % PostureScenario::ALL.len()])
        .collect();
    deck.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed));
    let mut records = Vec::new();
    let mut agents = Vec::new();
    for (i, scenario) in deck.into_iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(
            cfg.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let (tenant, offset_h) = TENANTS[i % TENANTS.len()];
        let agent = format!("{tenant}-host-{i:04}");
        let (recs, expected) = simulate_agent(cfg, &mut rng, tenant, offset_h, &agent, scenario);
        records.extend(recs);
        agents.push(AgentPosture {
            tenant,
            agent,
            scenario,
            expected,
        });
    }
    records.sort_by(|a, b| (a.arrival_ms, &a.agent).cmp(&(b.arrival_ms, &b.agent)));
    PostureLab { records, agents }
}

/// Everything one agent will report, as event lists over the run.
struct Plan {
    /// Successful backups (finish times) and failed ones.
    backups: Vec<(i64, bool)>,
    /// Definition updates.
    av_updates: Vec<i64>,
    /// Protection off intervals.
    av_off: Vec<(i64, i64)>,
    /// Critical patch missing since, and installed at (if ever).
    critical: Option<(i64, Option<i64>)>,
    /// Agent version.
    version: &'static str,
    /// Security events.
    events: Vec<SecurityEvent>,
}

/// A login event (success or failure) of `user` from `src` at `ts`.
pub(crate) fn login(kind: SecurityEventKind, ts: i64, user: &str, src: &str) -> SecurityEvent {
    SecurityEvent {
        timestamp_ms: ts,
        kind: kind as i32,
        user: user.into(),
        source_address: src.into(),
        ..SecurityEvent::default()
    }
}

fn session(kind: SecurityEventKind, ts: i64, id: &str, tech: &str) -> SecurityEvent {
    SecurityEvent {
        timestamp_ms: ts,
        kind: kind as i32,
        technician: tech.into(),
        session_id: id.into(),
        ..SecurityEvent::default()
    }
}

fn canonical(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[allow(clippy::too_many_lines)]
fn simulate_agent(
    cfg: &PostureConfig,
    rng: &mut ChaCha8Rng,
    tenant: &'static str,
    offset_h: i64,
    agent: &str,
    scenario: PostureScenario,
) -> (Vec<PostureRecord>, Vec<ExpectedIncident>) {
    use PostureScenario as S;
    let start = cfg.start_ms;
    let end = start + i64::from(cfg.days) * DAY;
    let mut expected = Vec::new();
    let mut expect = |rule: &'static str, labels: String| {
        let e = ExpectedIncident { rule, labels };
        if !expected.contains(&e) {
            expected.push(e);
        }
    };
    // Local midnight of day d, in UTC.
    let local_day = |d: i64| start + d * DAY - offset_h * HOUR;
    let days = i64::from(cfg.days);

    // Baseline backups: nightly, finishing 01:00-01:30 local (23.5-24.5
    // hours apart).
    let backups: Vec<(i64, bool)> = (-1..=days)
        .map(|d| (local_day(d) + HOUR + rng.random_range(0..30 * MIN), true))
        .collect();
    // Baseline AV updates: daily.
    let mut av_updates = Vec::new();
    let mut t = start - rng.random_range(0..20 * HOUR);
    while t < end {
        av_updates.push(t);
        t += 24 * HOUR + rng.random_range(-2 * HOUR..=2 * HOUR);
    }
    let mut plan = Plan {
        backups,
        av_updates,
        av_off: Vec::new(),
        critical: None,
        version: "5.12.1",
        events: Vec::new(),
    };
    let techs = ["tech.ana", "tech.bo", "tech.cy"];
    let users = ["admin", "root", "svc_backup", "j.doe", "m.lee"];
    // Baseline: one or two typos a day, each followed by a success; a
    // business-hours session on some weekdays.
    for d in 0..days {
        for _ in 0..rng.random_range(1..=2) {
            let u = users[rng.random_range(0..users.len())];
            let t = local_day(d) + rng.random_range(7 * HOUR..20 * HOUR);
            plan.events
                .push(login(SecurityEventKind::LoginFailure, t, u, "10.0.0.7"));
            plan.events.push(login(
                SecurityEventKind::LoginSuccess,
                t + 20_000,
                u,
                "10.0.0.7",
            ));
        }
        let weekday = d % 7 < 5;
        if weekday && rng.random_bool(0.3) {
            let t = local_day(d) + rng.random_range(8 * HOUR..17 * HOUR);
            let id = format!("b{d}");
            let tech = techs[rng.random_range(0..techs.len())];
            plan.events
                .push(session(SecurityEventKind::RemoteSessionStart, t, &id, tech));
            plan.events.push(session(
                SecurityEventKind::RemoteSessionEnd,
                t + 40 * MIN,
                &id,
                tech,
            ));
        }
    }
    let day_in_run = |rng: &mut ChaCha8Rng| rng.random_range(2..days - 2);
    match scenario {
        S::Clean => {}
        S::PatchBacklog => {
            // Crosses 30 days during the run.
            let since = start - rng.random_range(20..29) * DAY - rng.random_range(0..DAY);
            plan.critical = Some((since, None));
            expect("patch_sla", String::new());
        }
        S::PatchNearSla => {
            let since = start - rng.random_range(20..28) * DAY;
            let age = if rng.random_bool(0.3) {
                30 * DAY
            } else {
                29 * DAY + rng.random_range(0..DAY)
            };
            plan.critical = Some((since, Some(since + age)));
        }
        S::StaleAv => {
            let stop = local_day(day_in_run(rng).min(days - 5));
            plan.av_updates.retain(|&u| u < stop);
            expect("antivirus", String::new());
        }
        S::AvDisabled => {
            let off = local_day(day_in_run(rng)) + rng.random_range(0..20 * HOUR);
            plan.av_off
                .push((off, off + rng.random_range(2..12) * HOUR));
            expect("antivirus", String::new());
        }
        S::AvNearLimit => {
            plan.av_updates.clear();
            let mut t = start - rng.random_range(0..20 * HOUR);
            while t < end {
                plan.av_updates.push(t);
                t += if rng.random_bool(0.3) {
                    72 * HOUR
                } else {
                    rng.random_range(70 * HOUR..72 * HOUR)
                };
            }
        }
        S::FailedBackup => {
            let d = day_in_run(rng);
            let night = local_day(d);
            if let Some(b) = plan.backups.iter_mut().find(|(t, _)| *t >= night) {
                b.1 = false;
                expect("backup", String::new());
            }
        }
        S::OldBackup => {
            let stop = local_day(day_in_run(rng).min(days - 3));
            plan.backups.retain(|(t, _)| *t < stop);
            expect("backup", String::new());
        }
        S::BackupNearLimit => {
            plan.backups.clear();
            let mut t = start - rng.random_range(0..10 * HOUR);
            while t < end {
                plan.backups.push((t, true));
                t += if rng.random_bool(0.3) {
                    26 * HOUR
                } else {
                    rng.random_range(22 * HOUR..26 * HOUR)
                };
            }
        }
        S::OldAgent => {
            plan.version = "5.9.4";
            expect("agent_version", String::new());
        }
        S::MinimumAgent => plan.version = "5.10.0",
        S::BruteForce => {
            let u = users[rng.random_range(0..users.len())];
            let t0 = local_day(day_in_run(rng)) + rng.random_range(0..DAY);
            let n = rng.random_range(5..=20);
            let span = rng.random_range(MIN..9 * MIN);
            for k in 0..n {
                let t = t0 + span * k / (n - 1);
                plan.events
                    .push(login(SecurityEventKind::LoginFailure, t, u, "203.0.113.50"));
            }
            expect("brute_force", canonical(&[("user", u)]));
        }
        S::LoginTypos => {
            // Users of their own, so the baseline's typos never add to them.
            let typists = ["k.smith", "r.ortiz", "p.nowak"];
            for u in typists {
                let t0 = local_day(day_in_run(rng)) + rng.random_range(8 * HOUR..18 * HOUR);
                if rng.random_bool(0.5) {
                    for k in 0..rng.random_range(2..=4) {
                        plan.events.push(login(
                            SecurityEventKind::LoginFailure,
                            t0 + k * 15_000,
                            u,
                            "10.0.0.9",
                        ));
                    }
                } else {
                    // 5 failures 2.5+ minutes apart: span > 10 minutes.
                    let gap = 150_001 + rng.random_range(0..60_000);
                    for k in 0..5 {
                        plan.events.push(login(
                            SecurityEventKind::LoginFailure,
                            t0 + k * gap,
                            u,
                            "10.0.0.9",
                        ));
                    }
                }
            }
        }
        S::OffHoursSession => {
            let d = day_in_run(rng);
            let weekend = d % 7 >= 5;
            let local = if weekend {
                rng.random_range(0..DAY)
            } else if rng.random_bool(0.5) {
                rng.random_range(0..8 * HOUR)
            } else {
                rng.random_range(18 * HOUR..DAY)
            };
            let t = local_day(d) + local;
            let id = format!("night-{d}");
            let tech = techs[rng.random_range(0..techs.len())];
            plan.events
                .push(session(SecurityEventKind::RemoteSessionStart, t, &id, tech));
            plan.events.push(session(
                SecurityEventKind::RemoteSessionEnd,
                t + rng.random_range(10 * MIN..3 * HOUR),
                &id,
                tech,
            ));
            expect(
                "off_hours_session",
                canonical(&[("session", &id), ("technician", tech)]),
            );
        }
        S::EdgeSessions => {
            for (k, local) in [8 * HOUR, 18 * HOUR - MIN].into_iter().enumerate() {
                let mut d = day_in_run(rng);
                while d % 7 >= 5 {
                    d -= 1;
                }
                let id = format!("edge-{k}-{d}");
                let tech = techs[k % techs.len()];
                let t = local_day(d) + local;
                plan.events
                    .push(session(SecurityEventKind::RemoteSessionStart, t, &id, tech));
                plan.events.push(session(
                    SecurityEventKind::RemoteSessionEnd,
                    t + 30 * MIN,
                    &id,
                    tech,
                ));
            }
        }
    }
    plan.events.sort_by_key(|e| e.timestamp_ms);
    let records = batches(cfg, rng, tenant, agent, &plan);
    (records, expected)
}

/// The agent's hourly batches.
fn batches(
    cfg: &PostureConfig,
    rng: &mut ChaCha8Rng,
    tenant: &str,
    agent: &str,
    plan: &Plan,
) -> Vec<PostureRecord> {
    let hours = i64::from(cfg.days) * 24;
    let delay = rng.random_range(1_000..50_000);
    let mut out: Vec<PostureRecord> = Vec::with_capacity(hours as usize + 4);
    let mut ev = 0usize;
    for h in 0..hours {
        let hour_end = cfg.start_ms + (h + 1) * HOUR;
        let observed = hour_end - rng.random_range(1_000..120_000);
        let last_ok = plan
            .backups
            .iter()
            .filter(|(t, ok)| *ok && *t <= observed)
            .map(|(t, _)| *t)
            .next_back();
        let last_run = plan.backups.iter().rfind(|(t, _)| *t <= observed);
        let defs = plan.av_updates.iter().copied().rfind(|&t| t <= observed);
        let enabled = !plan
            .av_off
            .iter()
            .any(|&(a, b)| a <= observed && observed < b);
        let mut missing = vec![MissingPatches {
            severity: PatchSeverity::Important as i32,
            count: 2,
            oldest_missing_since_ms: cfg.start_ms - 45 * DAY,
        }];
        if let Some((since, installed)) = plan.critical {
            if since <= observed && installed.is_none_or(|i| observed < i) {
                missing.push(MissingPatches {
                    severity: PatchSeverity::Critical as i32,
                    count: 1,
                    oldest_missing_since_ms: since,
                });
            }
        }
        let report = StatusReport {
            observed_at_ms: observed,
            missing_patches: missing,
            patches_reported: true,
            last_patch_install_ok_ms: cfg.start_ms - 3 * DAY,
            last_patch_install_failed_ms: 0,
            antivirus: Some(AntivirusStatus {
                product: "Defender".into(),
                enabled,
                definitions_updated_ms: defs.unwrap_or(0),
                last_scan_ms: 0,
            }),
            backup: Some(BackupStatus {
                last_result: match last_run {
                    Some((_, true)) => BackupResult::Success as i32,
                    Some((_, false)) => BackupResult::Failed as i32,
                    None => BackupResult::Unspecified as i32,
                },
                last_run_ms: last_run.map_or(0, |r| r.0),
                last_success_ms: last_ok.unwrap_or(0),
            }),
            agent_version: plan.version.into(),
            last_boot_ms: cfg.start_ms - 5 * DAY,
        };
        let mut events = Vec::new();
        while ev < plan.events.len() && plan.events[ev].timestamp_ms < hour_end {
            events.push(plan.events[ev].clone());
            ev += 1;
        }
        let sent = hour_end + delay;
        let b = TelemetryBatch {
            tenant_id: tenant.into(),
            agent_id: agent.into(),
            seq: h as u64 + 1,
            sent_at_ms: sent,
            boot_id: 7,
            status: vec![report],
            security_events: events,
            ..TelemetryBatch::default()
        };
        out.push(PostureRecord {
            arrival_ms: sent,
            agent: agent.into(),
            payload: b.encode_to_vec(),
        });
    }
    // Noise: a resend (same record, later), and two neighbours delivered
    // in swapped order (the older status report arrives second).
    if out.len() > 10 {
        let i = rng.random_range(1..out.len() - 2);
        let mut resend = out[i].clone();
        resend.arrival_ms += 5 * MIN;
        // Batch j is held back (a retry) until just after batch j + 1.
        let j = rng.random_range(1..out.len() - 2);
        out[j].arrival_ms = out[j + 1].arrival_ms + 1;
        out.push(resend);
    }
    out
}
