//! Brute force: `failures` login failures for one user of one agent
//! within `within` (a sliding window).
//!
//! A report family (see [`super::registry`]) on security events. Per
//! (agent, rule) it keeps the users with a recent failure, each with at
//! most `failures` failure times (the newest ones, sorted): bounded state,
//! O(`failures`) per event, no history buffer. A user's failures breach
//! when the newest `failures` of them span **at most** `within` (the
//! first and the last exactly `within` apart breach; 1 ms more does
//! not). The incident (labels `user=<name>`) starts at the failure that
//! completed the burst; it resolves when processing time passes the
//! user's newest failure plus `within` with no new burst, at that moment
//! (derived from state, not from the tick that noticed it). Successful
//! logins do not resolve it (a success after a burst is no all-clear).
//!
//! At most `max_users` users are tracked per agent and rule: a new user
//! beyond that replaces the user whose newest failure is oldest and who
//! has no open incident; when every tracked user has an open incident,
//! the new user's failure is not tracked. Users without an open incident
//! whose failures left the window `resolve_grace` ago are dropped at each
//! tick.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_proto::v1::{SecurityEvent, SecurityEventKind, StatusReport};

use super::condition::ms;
use super::registry::{FamilyRule, ReportCx, ReportFamily, ReportRule, RuleSet};
use super::security::{self, Tracked};
use crate::model::{AlertEvent, AlertStatus, OptMs, ResolveReason, Severity};
use crate::rules::read::{Cx, Val};

/// Default `failures`.
pub const DEFAULT_FAILURES: u32 = 5;
/// Default `within`.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(600);
/// Default `max_users`.
pub const DEFAULT_MAX_USERS: u32 = 64;
/// Largest `failures` (the per-user buffer).
pub const MAX_FAILURES: u32 = 1000;
/// Default `resolve_grace`.
pub const DEFAULT_RESOLVE_GRACE: Duration = Duration::from_secs(3600);

/// A brute-force rule (`[[brute_force]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BruteForceRule {
    /// Rule name.
    pub name: String,
    /// Failures of one user that make a burst (2..=1000).
    pub failures: u32,
    /// The window the failures must fall in.
    #[serde(with = "humantime_serde")]
    pub within: Duration,
    /// Users tracked per agent.
    pub max_users: u32,
    /// Processing time past a burst's quiet moment after which it is
    /// resolved when the agent reported nothing later.
    #[serde(with = "humantime_serde")]
    pub resolve_grace: Duration,
    /// Severity of the alert.
    pub severity: Severity,
}

impl FamilyRule for BruteForceRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn same_definition(&self, other: &Self) -> bool {
        self.failures == other.failures
            && self.within == other.within
            && self.max_users == other.max_users
            && self.resolve_grace == other.resolve_grace
    }
}

impl ReportRule for BruteForceRule {
    fn severity(&self) -> Severity {
        self.severity
    }
}

/// Recent failures of one user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFailures {
    /// The user name.
    pub user: String,
    /// The newest failure times (at most `failures`), ascending.
    pub fails: Vec<i64>,
    /// Source address of the newest failure.
    #[serde(default)]
    pub last_source: String,
    /// Start of the open incident, if any.
    #[serde(default)]
    pub open_since: OptMs,
    /// End of the user's last incident (a new one starts after it).
    #[serde(default)]
    pub closed_at: OptMs,
}

impl Tracked for UserFailures {
    fn labels(&self) -> String {
        security::labels([("user", self.user.as_str())])
    }

    fn open_since(&self) -> Option<i64> {
        self.open_since.get()
    }
}

/// State of one (agent, rule): the users with recent failures, sorted by
/// name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BruteForceState {
    /// Tracked users.
    pub users: Vec<UserFailures>,
    /// Failures not tracked because `max_users` users with open
    /// incidents were tracked already.
    #[serde(default)]
    pub untracked: u64,
}

/// The brute-force family (see the module docs).
pub struct BruteForce;

impl ReportFamily for BruteForce {
    type Rule = BruteForceRule;
    type State = BruteForceState;

    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<BruteForceRule> {
        const KEYS: &[&str] = &[
            "name",
            "failures",
            "within",
            "max_users",
            "resolve_grace",
            "severity",
        ];
        let t = cx.fields(path, val, KEYS)?;
        let span = val.span();
        let name = cx.name(t, &span, path);
        let failures = match t.get("failures") {
            None => Some(DEFAULT_FAILURES),
            Some(v) => match cx.integer(t, path, "failures", 2) {
                Some(n) if n > MAX_FAILURES => {
                    cx.problem(
                        v.span(),
                        format!("{path}.failures"),
                        format!("must be <= {MAX_FAILURES}"),
                    );
                    None
                }
                n => n,
            },
        };
        let within = cx.duration_or(t, path, "within", DEFAULT_WITHIN);
        let max_users = cx.integer_or(t, path, "max_users", 1, DEFAULT_MAX_USERS);
        let resolve_grace = cx.duration_or(t, path, "resolve_grace", DEFAULT_RESOLVE_GRACE);
        let severity = cx.severity(t, &span, path);
        Some(BruteForceRule {
            name: name?,
            failures: failures?,
            within: within?,
            max_users: max_users?,
            resolve_grace: resolve_grace?,
            severity: severity?,
        })
    }

    fn on_security(
        rule: &BruteForceRule,
        rules: &RuleSet,
        a: &ReportCx<'_>,
        e: &SecurityEvent,
        st: &mut BruteForceState,
        out: &mut Vec<AlertEvent>,
    ) {
        // The agent's event time moved: bursts quiet since then are over.
        resolve_quiet(rule, rules, a, st, e.timestamp_ms, out);
        if e.kind != SecurityEventKind::LoginFailure as i32 {
            return;
        }
        let i = match st.users.binary_search_by(|u| u.user.as_str().cmp(&e.user)) {
            Ok(i) => i,
            Err(mut at) => {
                if st.users.len() >= rule.max_users as usize {
                    let victim = st
                        .users
                        .iter()
                        .enumerate()
                        .filter(|(_, u)| u.open_since.is_none())
                        .min_by_key(|(_, u)| (u.fails.last().copied(), u.user.clone()))
                        .map(|(i, _)| i);
                    let Some(v) = victim else {
                        st.untracked += 1;
                        return;
                    };
                    st.users.remove(v);
                    if v < at {
                        at -= 1;
                    }
                }
                st.users.insert(
                    at,
                    UserFailures {
                        user: e.user.clone(),
                        ..UserFailures::default()
                    },
                );
                at
            }
        };
        let u = &mut st.users[i];
        let n = rule.failures as usize;
        if u.fails.len() >= n && u.fails.first().is_some_and(|&f| e.timestamp_ms < f) {
            // Older than every kept failure: it cannot complete a newer
            // burst than the ones already judged.
            return;
        }
        let at = u.fails.partition_point(|&f| f <= e.timestamp_ms);
        u.fails.insert(at, e.timestamp_ms);
        if u.fails.len() > n {
            u.fails.remove(0);
        }
        if at + 1 == u.fails.len() {
            u.last_source.clone_from(&e.source_address);
        }
        if u.open_since.is_some() || u.fails.len() < n {
            return;
        }
        let (first, last) = (u.fails[0], u.fails[n - 1]);
        if last.saturating_sub(first) > ms(rule.within) {
            return;
        }
        let floor = u.closed_at.get().map_or(i64::MIN, |c| c.saturating_add(1));
        let started = last.max(floor);
        u.open_since = started.into();
        let from = if u.last_source.is_empty() {
            String::new()
        } else {
            format!(", latest from {}", u.last_source)
        };
        let mut ev = security::event(
            u,
            rule,
            rules,
            a,
            AlertStatus::Firing,
            started,
            started,
            format!(
                "{n} failed logins for user {} on agent {} within {}{from}",
                u.user,
                a.agent,
                humantime::format_duration(Duration::from_millis(
                    u64::try_from(last - first).unwrap_or(0)
                )),
            ),
        );
        ev.value = Some(n as f64);
        ev.threshold = Some(f64::from(rule.failures));
        out.push(ev);
    }

    /// A status report is the agent's event time too.
    fn on_status(
        rule: &BruteForceRule,
        rules: &RuleSet,
        a: &ReportCx<'_>,
        r: &StatusReport,
        st: &mut BruteForceState,
        out: &mut Vec<AlertEvent>,
    ) {
        resolve_quiet(rule, rules, a, st, r.observed_at_ms, out);
    }

    fn on_tick(
        rule: &BruteForceRule,
        rules: &RuleSet,
        a: &ReportCx<'_>,
        st: &mut BruteForceState,
        out: &mut Vec<AlertEvent>,
    ) {
        let grace = ms(rule.resolve_grace);
        resolve_quiet(rule, rules, a, st, a.now_ms.saturating_sub(grace), out);
        // Users without an open incident whose failures left the window
        // `resolve_grace` ago are forgotten (their last incident's end
        // goes with them: a new burst starts after it anyway).
        let within = ms(rule.within);
        st.users.retain(|u| {
            u.open_since.is_some()
                || u.fails
                    .last()
                    .is_some_and(|&f| a.now_ms <= f.saturating_add(within).saturating_add(grace))
        });
        if st.users.is_empty() {
            st.untracked = 0;
        }
    }

    fn close(
        rule: &BruteForceRule,
        rules: &RuleSet,
        a: &ReportCx<'_>,
        reason: ResolveReason,
        st: BruteForceState,
        out: &mut Vec<AlertEvent>,
    ) {
        let threshold = Some(f64::from(rule.failures));
        security::close_all(&st.users, rule, rules, a, reason, threshold, out);
    }
}

/// Resolves the open incidents whose quiet moment (newest failure plus
/// `within`) is before `now_ms` (an event time of the agent, or
/// processing time minus the grace), at that moment.
fn resolve_quiet(
    rule: &BruteForceRule,
    rules: &RuleSet,
    a: &ReportCx<'_>,
    st: &mut BruteForceState,
    now_ms: i64,
    out: &mut Vec<AlertEvent>,
) {
    let within = ms(rule.within);
    for u in &mut st.users {
        let (Some(started), Some(&newest)) = (u.open_since.get(), u.fails.last()) else {
            continue;
        };
        let quiet_at = newest.saturating_add(within);
        if now_ms <= quiet_at {
            continue;
        }
        let at = quiet_at.max(started);
        u.open_since = OptMs::NONE;
        u.closed_at = at.into();
        let mut ev = security::event(
            u,
            rule,
            rules,
            a,
            AlertStatus::Resolved,
            started,
            at,
            format!(
                "no failed login for user {} on agent {} for {}",
                u.user,
                a.agent,
                humantime::format_duration(rule.within)
            ),
        );
        ev.threshold = Some(f64::from(rule.failures));
        out.push(ev);
    }
}
