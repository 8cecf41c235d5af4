//! Status reports and security events of the simulated fleet
//! ([`crate::FleetConfig::posture`]), so `vigil demo` and `vigil simulate`
//! exercise the status and security detectors and `vigil report
//! compliance` / `security` have data.
//!
//! Unlike [`crate::posture`] (a separate, hourly, days-long lab scored
//! against its own rules), this rides on the fleet's own agents and
//! batches: an agent's first batch and then its first batch of every hour
//! carry a [`StatusReport`], and every batch carries the security events
//! that happened since the previous one. Each agent draws its posture from
//! its own ChaCha8 stream, so its metrics are the same with or without it.
//!
//! Most agents are healthy (backups every night, definitions updated
//! every day, only important patches missing, a typo at a login now and
//! then, followed by a success). About [`INCIDENT_SHARE`] of them have one
//! incident, labelled in [`crate::FleetTruth::posture`] under the default
//! rules (`config/rules.toml`: critical patches missing over 30 days,
//! antivirus off or definitions older than 3 days, the last backup failed
//! or older than 26 hours, 5 failed logins of one user within 10 minutes):
//!
//! * a critical patch missing for 31-90 days when the run starts;
//! * definitions last updated 4-10 days before the run, never again;
//! * protection switched off for 2-4 hours during the run;
//! * the last backup before the run failed;
//! * no backup for 2-5 days before the run, and none during it;
//! * a burst of 6-15 failed logins of one user within 1-8 minutes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::posture::login;
use vigil_proto::v1::{
    AntivirusStatus, BackupResult, BackupStatus, MissingPatches, PatchSeverity, SecurityEvent,
    SecurityEventKind, StatusReport, TelemetryBatch,
};

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// Share of agents with one posture incident (the rest are healthy).
pub const INCIDENT_SHARE: f64 = 0.15;

/// What one agent of the fleet does besides its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetPosture {
    /// Healthy.
    Healthy,
    /// A critical patch missing for more than 30 days.
    PatchBacklog,
    /// Antivirus definitions older than 3 days.
    StaleAv,
    /// Antivirus protection switched off for some hours.
    AvDisabled,
    /// The last backup failed.
    FailedBackup,
    /// No successful backup for days.
    OldBackup,
    /// Failed logins of one user, in a burst.
    BruteForce,
}

impl FleetPosture {
    /// The incident scenarios, in the order an agent's draw picks them.
    const INCIDENTS: [FleetPosture; 6] = [
        FleetPosture::PatchBacklog,
        FleetPosture::StaleAv,
        FleetPosture::AvDisabled,
        FleetPosture::FailedBackup,
        FleetPosture::OldBackup,
        FleetPosture::BruteForce,
    ];

    /// The default rule that opens an incident for it (none for healthy).
    pub fn rule(self) -> Option<&'static str> {
        match self {
            FleetPosture::Healthy => None,
            FleetPosture::PatchBacklog => Some("patch_sla_critical"),
            FleetPosture::StaleAv | FleetPosture::AvDisabled => Some("antivirus_off_or_stale"),
            FleetPosture::FailedBackup | FleetPosture::OldBackup => Some("backup_failed_or_old"),
            FleetPosture::BruteForce => Some("brute_force_login"),
        }
    }
}

/// The truth of one agent's posture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PostureTruth {
    /// Tenant id.
    pub tenant: String,
    /// Agent id.
    pub agent: String,
    /// What it does.
    pub scenario: FleetPosture,
    /// Incident labels (`user=…` for brute force, else empty).
    pub labels: String,
    /// The range (inclusive, agent clock) the start of the default rule's
    /// incident lies in, as the detectors derive it: when the breach began
    /// by the reports (a patch's age passing 30 days, definitions passing
    /// 3 days, the failed run, the last success passing 26 hours), the
    /// first report that shows protection off (reports are hourly), the
    /// burst's 5th failure. Both ends are equal where the reports fix it.
    /// `None` for healthy agents.
    pub start_ms: Option<(i64, i64)>,
}

/// One agent's posture over the run.
#[derive(Debug)]
pub(crate) struct AgentPostureGen {
    rng: ChaCha8Rng,
    scenario: FleetPosture,
    /// Event time of the next status report (the first batch at or after
    /// it carries one).
    next_report_ms: i64,
    /// Local time of day (ms after midnight UTC + offset) of the nightly
    /// backup and of the daily definitions update.
    backup_tod: i64,
    av_tod: i64,
    /// Scenario parameters (event time).
    critical_since: Option<i64>,
    av_frozen_at: Option<i64>,
    av_off: Option<(i64, i64)>,
    backup_failed_before: Option<i64>,
    backups_stop_at: Option<i64>,
    /// Security events not yet sent, oldest last.
    events: Vec<SecurityEvent>,
    /// Tenant and agent (for the truth).
    tenant: String,
    agent: String,
    labels: String,
    start_ms: Option<(i64, i64)>,
}

const USERS: [&str; 5] = ["admin", "root", "svc_backup", "j.doe", "m.lee"];

/// The last occurrence at or before `t` of a daily event at `tod` ms
/// after midnight UTC.
fn last_daily(t: i64, tod: i64) -> i64 {
    let d = (t - tod).div_euclid(DAY);
    d * DAY + tod
}

impl AgentPostureGen {
    /// An agent's posture for a run of `[t0e, t0e + dur)` (its clock),
    /// drawn from its own stream `seed`.
    pub(crate) fn new(seed: u64, tenant: &str, agent: &str, t0e: i64, dur: i64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let scenario = if rng.random::<f64>() < INCIDENT_SHARE {
            FleetPosture::INCIDENTS[rng.random_range(0..FleetPosture::INCIDENTS.len())]
        } else {
            FleetPosture::Healthy
        };
        let mut g = AgentPostureGen {
            backup_tod: rng.random_range(0..DAY),
            av_tod: rng.random_range(0..DAY),
            rng,
            scenario,
            next_report_ms: i64::MIN,
            critical_since: None,
            av_frozen_at: None,
            av_off: None,
            backup_failed_before: None,
            backups_stop_at: None,
            events: Vec::new(),
            tenant: tenant.into(),
            agent: agent.into(),
            labels: String::new(),
            start_ms: None,
        };
        // A typo now and then: about one a day, always followed by a
        // success within a minute.
        let typos = (dur as f64 / DAY as f64 * g.rng.random_range(0.5..1.5)).round() as i64;
        for _ in 0..typos.max(0) {
            let u = USERS[g.rng.random_range(0..USERS.len())];
            let t = t0e + g.rng.random_range(0..dur.max(1));
            g.events
                .push(login(SecurityEventKind::LoginFailure, t, u, "10.0.0.7"));
            g.events.push(login(
                SecurityEventKind::LoginSuccess,
                t + g.rng.random_range(5_000..60_000),
                u,
                "10.0.0.7",
            ));
        }
        let exactly = |t: i64| Some((t, t));
        match scenario {
            FleetPosture::Healthy => {}
            FleetPosture::PatchBacklog => {
                let since = t0e - g.rng.random_range(31..=90) * DAY;
                g.critical_since = Some(since);
                g.start_ms = exactly(since + 30 * DAY);
            }
            FleetPosture::StaleAv => {
                let at = t0e - g.rng.random_range(4..=10) * DAY;
                g.av_frozen_at = Some(at);
                g.start_ms = exactly(at + 3 * DAY);
            }
            FleetPosture::AvDisabled => {
                // Off from somewhere in the first two thirds of the run,
                // for 2-4 hours: at least two hourly reports fall inside,
                // so one does even when the agent is offline (at most an
                // hour) at the other.
                let from = t0e + g.rng.random_range(0..(dur * 2 / 3).max(1));
                let until = from + g.rng.random_range(2 * HOUR..=4 * HOUR);
                g.av_off = Some((from, until));
                // The first report at or after `from`: reports go out on
                // the agent's first batch of every hour (observed up to
                // 30 s before it is sent).
                g.start_ms = Some((from, from + HOUR + 2 * MIN));
            }
            FleetPosture::FailedBackup => {
                g.backup_failed_before = Some(t0e);
                g.start_ms = exactly(last_daily(t0e, g.backup_tod));
            }
            FleetPosture::OldBackup => {
                let stop = t0e - g.rng.random_range(2..=5) * DAY;
                g.backups_stop_at = Some(stop);
                g.start_ms = exactly(last_daily(stop, g.backup_tod) + 26 * HOUR);
            }
            FleetPosture::BruteForce => {
                let u = USERS[g.rng.random_range(0..USERS.len())];
                let n = g.rng.random_range(6..=15i64);
                let span = g.rng.random_range(MIN..=8 * MIN);
                let t0 = t0e + g.rng.random_range(0..(dur - span).max(1));
                for k in 0..n {
                    g.events.push(login(
                        SecurityEventKind::LoginFailure,
                        t0 + span * k / (n - 1),
                        u,
                        "203.0.113.50",
                    ));
                }
                g.labels = format!("user={u}");
                g.start_ms = exactly(t0 + span * 4 / (n - 1));
            }
        }
        // Oldest last, so sending pops from the end.
        g.events.sort_by_key(|e| std::cmp::Reverse(e.timestamp_ms));
        g
    }

    /// The agent's posture truth.
    pub(crate) fn truth(&self) -> PostureTruth {
        PostureTruth {
            tenant: self.tenant.clone(),
            agent: self.agent.clone(),
            scenario: self.scenario,
            labels: self.labels.clone(),
            start_ms: self.start_ms,
        }
    }

    /// Puts into `batch`, sent at `sent_e` (agent clock), the status report
    /// due (if any) and the security events up to `sent_e`. Returns whether
    /// anything was added; [`AgentPostureGen::clear`] takes it out again
    /// after encoding.
    pub(crate) fn attach(&mut self, batch: &mut TelemetryBatch, sent_e: i64) -> bool {
        let mut added = false;
        if sent_e >= self.next_report_ms {
            let observed = sent_e - self.rng.random_range(0..30_000);
            batch.status.push(self.report(observed));
            // The next report in the next hour of the agent's clock.
            self.next_report_ms = (sent_e.div_euclid(HOUR) + 1) * HOUR;
            added = true;
        }
        while self.events.last().is_some_and(|e| e.timestamp_ms <= sent_e) {
            if let Some(e) = self.events.pop() {
                batch.security_events.push(e);
                added = true;
            }
        }
        added
    }

    /// Takes the status report and events out of the agent's batch
    /// template again.
    pub(crate) fn clear(batch: &mut TelemetryBatch) {
        batch.status.clear();
        batch.security_events.clear();
    }

    fn report(&self, observed: i64) -> StatusReport {
        let mut missing = vec![MissingPatches {
            severity: PatchSeverity::Important as i32,
            count: 2,
            oldest_missing_since_ms: observed - 12 * DAY,
        }];
        if let Some(since) = self.critical_since {
            missing.push(MissingPatches {
                severity: PatchSeverity::Critical as i32,
                count: 1,
                oldest_missing_since_ms: since,
            });
        }
        let defs = match self.av_frozen_at {
            Some(t) => t,
            None => last_daily(observed, self.av_tod),
        };
        let enabled = !self
            .av_off
            .is_some_and(|(a, b)| a <= observed && observed < b);
        let last_run = last_daily(observed, self.backup_tod);
        let (last_run, ok) = match (self.backups_stop_at, self.backup_failed_before) {
            (Some(stop), _) => (last_daily(stop, self.backup_tod), true),
            // The last run before the run's start failed; the agent's
            // reports say so until the next night's run succeeds.
            (None, Some(t0)) if last_run <= t0 => (last_run, false),
            _ => (last_run, true),
        };
        let last_success = if ok { last_run } else { last_run - DAY };
        StatusReport {
            observed_at_ms: observed,
            missing_patches: missing,
            patches_reported: true,
            last_patch_install_ok_ms: observed - 9 * DAY,
            last_patch_install_failed_ms: 0,
            antivirus: Some(AntivirusStatus {
                product: "Defender".into(),
                enabled,
                definitions_updated_ms: defs,
                last_scan_ms: last_daily(observed, self.av_tod),
            }),
            backup: Some(BackupStatus {
                last_result: if ok {
                    BackupResult::Success as i32
                } else {
                    BackupResult::Failed as i32
                },
                last_run_ms: last_run,
                last_success_ms: last_success,
            }),
            agent_version: String::new(),
            last_boot_ms: observed - 3 * DAY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_daily_is_at_or_before() {
        assert_eq!(last_daily(DAY + 5, 5), DAY + 5);
        assert_eq!(last_daily(DAY + 4, 5), 5);
        assert_eq!(last_daily(-1, 0), -DAY);
    }

    #[test]
    fn reports_go_out_hourly_and_events_in_order() {
        let t0 = 1_790_000_000_000;
        let mut events = 0;
        for seed in 0..50 {
            let mut g = AgentPostureGen::new(seed, "t", "a", t0, 6 * HOUR);
            let mut b = TelemetryBatch::default();
            let mut reports = 0;
            let mut last = i64::MIN;
            let last_sent = t0 + 359 * MIN + 30_000;
            for k in 0..360 {
                let sent = t0 + k * MIN + 30_000;
                g.attach(&mut b, sent);
                reports += b.status.len();
                for e in &b.security_events {
                    assert!(e.timestamp_ms >= last && e.timestamp_ms <= sent);
                    last = e.timestamp_ms;
                    events += 1;
                }
                AgentPostureGen::clear(&mut b);
                assert!(b.status.is_empty() && b.security_events.is_empty());
            }
            // The first batch, then the first batch of each later hour.
            assert!((6..=7).contains(&reports), "{reports}");
            // What is left happens after the last batch.
            assert!(g.events.iter().all(|e| e.timestamp_ms > last_sent));
        }
        assert!(events > 0);
    }

    #[test]
    fn incident_scenarios_report_what_the_default_rules_catch() {
        let t0 = 1_790_000_000_000;
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..400 {
            let mut g = AgentPostureGen::new(seed, "t", "a", t0, 6 * HOUR);
            let r = g.report(t0);
            let age = |since: i64| (t0 - since) as f64 / DAY as f64;
            let critical = r
                .missing_patches
                .iter()
                .find(|m| m.severity == PatchSeverity::Critical as i32);
            let av = r.antivirus.clone().unwrap();
            let bk = r.backup.unwrap();
            match g.scenario {
                FleetPosture::Healthy | FleetPosture::BruteForce | FleetPosture::AvDisabled => {
                    assert!(critical.is_none());
                    assert!(age(av.definitions_updated_ms) < 1.0);
                    assert!(age(bk.last_success_ms) < 1.0);
                    assert_eq!(bk.last_result, BackupResult::Success as i32);
                }
                FleetPosture::PatchBacklog => {
                    assert!(age(critical.unwrap().oldest_missing_since_ms) > 30.0)
                }
                FleetPosture::StaleAv => assert!(age(av.definitions_updated_ms) > 3.0),
                FleetPosture::FailedBackup => {
                    assert_eq!(bk.last_result, BackupResult::Failed as i32)
                }
                FleetPosture::OldBackup => assert!(age(bk.last_success_ms) > 26.0 / 24.0),
            }
            if g.scenario == FleetPosture::AvDisabled {
                let (from, until) = g.av_off.unwrap();
                assert!(!g.report(from).antivirus.unwrap().enabled);
                assert!(g.report(until).antivirus.unwrap().enabled);
            }
            if g.scenario == FleetPosture::BruteForce {
                let mut b = TelemetryBatch::default();
                g.attach(&mut b, t0 + 7 * HOUR);
                let burst: Vec<_> = b
                    .security_events
                    .iter()
                    .filter(|e| e.source_address == "203.0.113.50")
                    .collect();
                assert!(burst.len() >= 6);
                let span = burst.last().unwrap().timestamp_ms - burst[0].timestamp_ms;
                assert!(span <= 8 * MIN);
                let t = burst[4].timestamp_ms;
                assert_eq!(g.start_ms, Some((t, t)));
            }
            seen.insert(g.scenario);
        }
        assert_eq!(seen.len(), 7, "{seen:?}");
    }
}
