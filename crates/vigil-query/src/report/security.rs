//! The `security` report: failed logins (per tenant, per account, per
//! day) and remote sessions by technician, with those started outside
//! business hours, from the `security_events` table (one row per security
//! event, docs/storage.md) and the security incidents in `alerts`.
//!
//! Which session started outside business hours depends on each tenant's
//! hours and time zone, which are rules (`[[off_hours_session]]`), not
//! data: the report takes the detector's judgement from `alerts`. A
//! session is off-hours when an incident of the security kind with
//! session labels (`session=…,technician=…`, what the off-hours family
//! raises, whatever the rule's name) started on the same agent at the
//! session's start. Without an `off_hours_session` rule no session
//! counts as off-hours. Brute-force incidents are those of the security
//! kind with `user=…` labels; `peak_10_minutes` is the most failures of
//! one account within any 10 minutes (the brute-force rule's default
//! window, both ends included), computed from the events themselves.

use super::{Chart, ChartKind, SectionSpec};

/// Every remote session started in scope, with its end (the first end
/// event of its id on that agent, if in scope) and whether the off-hours
/// detector judged it off-hours.
macro_rules! sessions {
    () => {
        "WITH ends AS (
       SELECT tenant, agent, session_id, min(event_time) AS ended
       FROM security_events
       WHERE kind = 'remote_session_end'
       GROUP BY tenant, agent, session_id),
     off_hours AS (
       SELECT DISTINCT tenant, agent, started_at
       FROM alerts
       WHERE kind = 'security' AND status = 'firing' AND labels LIKE 'session=%'),
     sessions AS (
       SELECT s.tenant, s.agent, s.hostname, s.technician, s.session_id,
              s.event_time AS started, e.ended,
              o.agent IS NOT NULL AS off_hours
       FROM security_events s
       LEFT JOIN ends e
         ON e.tenant = s.tenant AND e.agent = s.agent AND e.session_id = s.session_id
        AND e.ended >= s.event_time
       LEFT JOIN off_hours o
         ON o.tenant = s.tenant AND o.agent = s.agent AND o.started_at = s.event_time
       WHERE s.kind = 'remote_session_start')"
    };
}

/// One row per tenant: login failures and successes, accounts (agent and
/// user) with failures, brute-force incidents, remote sessions and those
/// off-hours, technicians and privilege changes. Most failures first.
pub const SECURITY_SUMMARY: &str = concat!(
    sessions!(),
    ",
     events AS (
       SELECT tenant,
              sum(CASE WHEN kind = 'login_failure' THEN 1 ELSE 0 END) AS login_failures,
              sum(CASE WHEN kind = 'login_success' THEN 1 ELSE 0 END) AS login_successes,
              count(DISTINCT CASE WHEN kind = 'login_failure' THEN agent || '/' || \"user\" END) AS accounts_with_failures,
              sum(CASE WHEN kind = 'remote_session_start' THEN 1 ELSE 0 END) AS remote_sessions,
              count(DISTINCT technician) AS technicians,
              sum(CASE WHEN kind = 'privilege_change' THEN 1 ELSE 0 END) AS privilege_changes
       FROM security_events
       GROUP BY tenant),
     brute_force AS (
       SELECT tenant, count(DISTINCT id) AS incidents
       FROM alerts
       WHERE kind = 'security' AND status = 'firing' AND labels LIKE 'user=%'
       GROUP BY tenant),
     off AS (
       SELECT tenant, sum(CASE WHEN off_hours THEN 1 ELSE 0 END) AS sessions
       FROM sessions
       GROUP BY tenant)
SELECT e.tenant,
       e.login_failures,
       e.login_successes,
       e.accounts_with_failures,
       coalesce(b.incidents, 0) AS brute_force_incidents,
       e.remote_sessions,
       coalesce(o.sessions, 0) AS off_hours_sessions,
       e.technicians,
       e.privilege_changes
FROM events e
LEFT JOIN brute_force b ON b.tenant = e.tenant
LEFT JOIN off o ON o.tenant = e.tenant
ORDER BY e.login_failures DESC, e.tenant"
);

/// The 20 accounts (agent and user) with the most failed logins: how
/// many, the most within any 10 minutes, from how many source addresses,
/// the first and the last.
pub const FAILED_LOGINS: &str = "\
WITH failures AS (
       SELECT tenant, agent, hostname, \"user\", source_address, event_time,
              count(*) OVER (PARTITION BY tenant, agent, \"user\" ORDER BY event_time
                             RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS in_10_minutes
       FROM security_events
       WHERE kind = 'login_failure')
SELECT tenant,
       agent,
       max(hostname) AS hostname,
       \"user\",
       agent || ' ' || \"user\" AS account,
       count(*) AS failures,
       max(in_10_minutes) AS peak_10_minutes,
       count(DISTINCT source_address) AS sources,
       min(event_time) AS first_failure,
       max(event_time) AS last_failure
FROM failures
GROUP BY tenant, agent, \"user\"
ORDER BY failures DESC, peak_10_minutes DESC, tenant, agent, \"user\"
LIMIT 20";

/// Failed and successful logins per UTC day.
pub const LOGINS_PER_DAY: &str = "\
SELECT CAST(event_time AS DATE) AS day,
       sum(CASE WHEN kind = 'login_failure' THEN 1 ELSE 0 END) AS failures,
       sum(CASE WHEN kind = 'login_success' THEN 1 ELSE 0 END) AS successes
FROM security_events
WHERE kind IN ('login_failure', 'login_success')
GROUP BY CAST(event_time AS DATE)
ORDER BY day";

/// Remote sessions per technician: started in scope, off-hours (count and
/// share), tenants and agents worked on, hours in sessions whose end is
/// in scope, and sessions without an end in scope. Most off-hours
/// sessions first.
pub const SESSIONS_BY_TECHNICIAN: &str = concat!(
    sessions!(),
    "
SELECT technician,
       count(*) AS sessions,
       sum(CASE WHEN off_hours THEN 1 ELSE 0 END) AS off_hours_sessions,
       round(100.0 * sum(CASE WHEN off_hours THEN 1 ELSE 0 END) / count(*), 1) AS off_hours_pct,
       count(DISTINCT tenant) AS tenants,
       count(DISTINCT tenant || '/' || agent) AS agents,
       round(coalesce(sum(extract(epoch FROM ended) - extract(epoch FROM started)), 0.0) / 3600.0, 2) AS session_hours,
       sum(CASE WHEN ended IS NULL THEN 1 ELSE 0 END) AS without_end
FROM sessions
GROUP BY technician
ORDER BY off_hours_sessions DESC, sessions DESC, technician"
);

/// Every off-hours session: when it started and ended (UTC), where, by
/// whom, and how long (minutes; null without an end in scope).
pub const OFF_HOURS_SESSIONS: &str = concat!(
    sessions!(),
    "
SELECT started,
       tenant,
       agent,
       hostname,
       technician,
       session_id,
       ended,
       round((extract(epoch FROM ended) - extract(epoch FROM started)) / 60.0, 1) AS minutes
FROM sessions
WHERE off_hours
ORDER BY started, tenant, agent, session_id"
);

/// The sections of the security report, in display order.
pub const SECTIONS: &[SectionSpec] = &[
    SectionSpec {
        name: "security_summary",
        title: "Security events per tenant",
        about: "Failed and successful logins, brute-force incidents, remote sessions and those outside business hours.",
        sql: SECURITY_SUMMARY,
        chart: None,
    },
    SectionSpec {
        name: "failed_logins",
        title: "Accounts with the most failed logins",
        about: "The 20 accounts (agent and user) with the most failed logins, and their peak within 10 minutes.",
        sql: FAILED_LOGINS,
        chart: Some(Chart {
            kind: ChartKind::Bars,
            x: "account",
            y: &["failures"],
            series: None,
            y_max: None,
            unit: "failed logins",
        }),
    },
    SectionSpec {
        name: "logins_per_day",
        title: "Logins per day",
        about: "Failed and successful logins per UTC day.",
        sql: LOGINS_PER_DAY,
        chart: Some(Chart {
            kind: ChartKind::Columns { stacked: false },
            x: "day",
            y: &["failures", "successes"],
            series: None,
            y_max: None,
            unit: "logins",
        }),
    },
    SectionSpec {
        name: "sessions_by_technician",
        title: "Remote sessions by technician",
        about: "Sessions per technician, and those started outside the tenant's business hours (as the off-hours rule judged them).",
        sql: SESSIONS_BY_TECHNICIAN,
        chart: Some(Chart {
            kind: ChartKind::Bars,
            x: "technician",
            y: &["off_hours_sessions"],
            series: None,
            y_max: None,
            unit: "off-hours sessions",
        }),
    },
    SectionSpec {
        name: "off_hours_sessions",
        title: "Off-hours sessions",
        about: "Every remote session started outside business hours, with its technician and length.",
        sql: OFF_HOURS_SESSIONS,
        chart: None,
    },
];
