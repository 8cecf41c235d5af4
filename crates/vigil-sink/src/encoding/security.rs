//! What every encoding needs of a security event (a
//! [`SecurityEventRow`]: one row of the `security_events/` dataset, read
//! back by `vigil export --dataset security_events`): its kind, its
//! severity, a one-line summary, and the optional fields as options.
//!
//! A security event is a fact the agent observed, not a finding, so it
//! has no rule or incident id; its severity is derived from its kind
//! (the same for every encoding):
//!
//! | kind                   | severity  |
//! |------------------------|-----------|
//! | `login_failure`        | `warning` |
//! | `privilege_change`     | `warning` |
//! | `login_success`        | `info`    |
//! | `remote_session_start` | `info`    |
//! | `remote_session_end`   | `info`    |

use vigil_ops::decode::kind_name;
use vigil_ops::model::Severity;
use vigil_ops::SecurityEventRow;
use vigil_proto::v1::SecurityEventKind;

/// The event's kind (`Unspecified` for a number this build does not
/// know; stored events were validated, so not in practice).
pub fn kind(e: &SecurityEventRow) -> SecurityEventKind {
    SecurityEventKind::try_from(e.event.kind).unwrap_or(SecurityEventKind::Unspecified)
}

/// The kind's name as the dataset stores it (`login_failure`, ...).
pub fn kind_str(e: &SecurityEventRow) -> &'static str {
    kind_name(kind(e))
}

/// The event's severity (see the module docs).
pub fn severity(e: &SecurityEventRow) -> Severity {
    match kind(e) {
        SecurityEventKind::LoginFailure | SecurityEventKind::PrivilegeChange => Severity::Warning,
        _ => Severity::Info,
    }
}

/// Whether the event is a login (success or failure), and which.
pub fn login_outcome(e: &SecurityEventRow) -> Option<&'static str> {
    match kind(e) {
        SecurityEventKind::LoginSuccess => Some("success"),
        SecurityEventKind::LoginFailure => Some("failure"),
        _ => None,
    }
}

/// A wire string, `None` when empty (not set).
pub fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// One line saying what happened, e.g. `failed login of user root on
/// agent a-17 from 203.0.113.50`.
pub fn summary(e: &SecurityEventRow) -> String {
    let ev = &e.event;
    let on = match &e.hostname {
        Some(h) if h != &e.agent => format!("agent {} ({h})", e.agent),
        _ => format!("agent {}", e.agent),
    };
    let from = opt(&ev.source_address)
        .map(|s| format!(" from {s}"))
        .unwrap_or_default();
    match kind(e) {
        SecurityEventKind::LoginFailure => {
            format!("failed login of user {} on {on}{from}", ev.user)
        }
        SecurityEventKind::LoginSuccess => format!("login of user {} on {on}{from}", ev.user),
        SecurityEventKind::RemoteSessionStart => format!(
            "technician {} started remote session {} on {on}",
            ev.technician, ev.session_id
        ),
        SecurityEventKind::RemoteSessionEnd => format!(
            "technician {} ended remote session {} on {on}",
            ev.technician, ev.session_id
        ),
        SecurityEventKind::PrivilegeChange => {
            let by = opt(&ev.actor)
                .map(|a| format!(" by {a}"))
                .unwrap_or_default();
            let what = if ev.granted {
                "granted to"
            } else {
                "revoked from"
            };
            format!(
                "privilege {} {what} user {} on {on}{by}",
                ev.privilege, ev.user
            )
        }
        SecurityEventKind::Unspecified => format!("security event on {on}"),
    }
}

/// Whether `s` is an IPv4 or IPv6 address (else a source address is a
/// host name).
pub fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
pub(crate) mod testing {
    use vigil_ops::SecurityEventRow;
    use vigil_proto::v1::{SecurityEvent, SecurityEventKind};

    /// 2026-11-03T00:00:00Z.
    pub const T: i64 = 1_793_664_000_000;

    fn row(kind: SecurityEventKind, f: impl FnOnce(&mut SecurityEvent)) -> SecurityEventRow {
        let mut event = SecurityEvent {
            timestamp_ms: T + 1234,
            kind: kind as i32,
            ..SecurityEvent::default()
        };
        f(&mut event);
        SecurityEventRow {
            tenant: "acme".into(),
            agent: "agent-7".into(),
            hostname: Some("db-1.acme.example".into()),
            event,
        }
    }

    /// One event of every kind, with the fields its kind uses.
    pub fn every_kind() -> Vec<SecurityEventRow> {
        use SecurityEventKind as K;
        vec![
            row(K::LoginFailure, |e| {
                e.user = "root".into();
                e.source_address = "203.0.113.50".into();
            }),
            row(K::LoginSuccess, |e| {
                e.user = "j.doe".into();
                e.source_address = "laptop-3.acme.example".into();
            }),
            row(K::RemoteSessionStart, |e| {
                e.technician = "tech.ana".into();
                e.session_id = "s-42".into();
            }),
            row(K::RemoteSessionEnd, |e| {
                e.technician = "tech.ana".into();
                e.session_id = "s-42".into();
            }),
            row(K::PrivilegeChange, |e| {
                e.user = "j.doe".into();
                e.privilege = "Administrators".into();
                e.granted = true;
                e.actor = "admin".into();
            }),
            row(K::PrivilegeChange, |e| {
                e.user = "j.doe".into();
                e.privilege = "Backup Operators".into();
                e.granted = false;
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::testing::every_kind;
    use super::*;

    #[test]
    fn summaries_and_severities_per_kind() {
        let got: Vec<(String, Severity)> = every_kind()
            .iter()
            .map(|e| (summary(e), severity(e)))
            .collect();
        let on = "agent agent-7 (db-1.acme.example)";
        assert_eq!(
            got,
            vec![
                (
                    format!("failed login of user root on {on} from 203.0.113.50"),
                    Severity::Warning
                ),
                (
                    format!("login of user j.doe on {on} from laptop-3.acme.example"),
                    Severity::Info
                ),
                (
                    format!("technician tech.ana started remote session s-42 on {on}"),
                    Severity::Info
                ),
                (
                    format!("technician tech.ana ended remote session s-42 on {on}"),
                    Severity::Info
                ),
                (
                    format!("privilege Administrators granted to user j.doe on {on} by admin"),
                    Severity::Warning
                ),
                (
                    format!("privilege Backup Operators revoked from user j.doe on {on}"),
                    Severity::Warning
                ),
            ]
        );
        assert!(is_ip("203.0.113.50") && is_ip("2001:db8::1"));
        assert!(!is_ip("laptop-3.acme.example"));
    }
}
