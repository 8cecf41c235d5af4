//! The project's alert JSON: the value of every record on the alert topic
//! (`rmm.alerts.v1`), described by `schemas/alert.v1.schema.json`; and
//! its security-event JSON (`vigil export --dataset security_events`),
//! described by `schemas/security_event.v1.schema.json`.
//!
//! The encoding is a contract of its own, separate from [`AlertEvent`]'s
//! in-memory layout: field names are stable, times are given both as
//! milliseconds since the epoch and as RFC 3339 UTC strings (SIEMs parse
//! either), labels are a JSON object, and `schema` names the version. New
//! optional fields may be added; nothing is renamed or removed within `v1`.

use serde::Serialize;

use vigil_ops::model::{parse_canonical_labels, AlertEvent};
use vigil_ops::SecurityEventRow;
use vigil_proto::v1::SecurityEventKind;

use super::security::{self as sec, opt};
use super::{finite, Encoding};
use crate::time::rfc3339_ms;

/// Value of the `schema` field.
pub const ALERT_SCHEMA: &str = "vigil.alert.v1";
/// Value of the `schema` field of a security event.
pub const SECURITY_EVENT_SCHEMA: &str = "vigil.security_event.v1";

#[derive(Serialize)]
struct SecurityEventJson<'a> {
    schema: &'static str,
    kind: &'static str,
    severity: &'static str,
    tenant: &'a str,
    agent: &'a str,
    hostname: Option<&'a str>,
    event_time_ms: i64,
    event_time: String,
    user: Option<&'a str>,
    source_address: Option<&'a str>,
    technician: Option<&'a str>,
    session_id: Option<&'a str>,
    privilege: Option<&'a str>,
    granted: Option<bool>,
    actor: Option<&'a str>,
    summary: String,
}

#[derive(Serialize)]
struct AlertJson<'a> {
    schema: &'static str,
    id: &'a str,
    fingerprint: &'a str,
    rule: &'a str,
    kind: &'static str,
    severity: &'static str,
    status: &'static str,
    suppressed: bool,
    tenant: &'a str,
    agent: &'a str,
    hostname: Option<&'a str>,
    metric: Option<&'a str>,
    labels: Labels,
    value: Option<f64>,
    threshold: Option<f64>,
    predicted_at_ms: Option<i64>,
    predicted_at: Option<String>,
    window_start_ms: Option<i64>,
    window_end_ms: Option<i64>,
    started_at_ms: i64,
    started_at: String,
    resolved_at_ms: Option<i64>,
    resolved_at: Option<String>,
    resolve_reason: Option<&'static str>,
    flaps: Option<u32>,
    event_time_ms: i64,
    event_time: String,
    summary: &'a str,
}

struct Labels(Vec<(String, String)>);

impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Vigil's own alert JSON (`vigil.alert.v1`), the default encoding.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Encoding for Json {
    fn name(&self) -> &'static str {
        "json"
    }

    fn content_type(&self) -> &'static str {
        "application/json"
    }

    fn file_extension(&self) -> &'static str {
        "jsonl"
    }

    fn encode(&self, a: &AlertEvent, out: &mut Vec<u8>) {
        encode_alert(a, out)
    }

    fn encode_security_event(&self, e: &SecurityEventRow, out: &mut Vec<u8>) {
        encode_security_event(e, out)
    }
}

/// Appends the security event's JSON encoding (one object, no trailing
/// newline) to `out`. Fields the kind does not use are null; `granted`
/// is set for privilege changes only.
pub fn encode_security_event(e: &SecurityEventRow, out: &mut Vec<u8>) {
    let ev = &e.event;
    let j = SecurityEventJson {
        schema: SECURITY_EVENT_SCHEMA,
        kind: sec::kind_str(e),
        severity: sec::severity(e).as_str(),
        tenant: &e.tenant,
        agent: &e.agent,
        hostname: e.hostname.as_deref(),
        event_time_ms: ev.timestamp_ms,
        event_time: rfc3339_ms(ev.timestamp_ms),
        user: opt(&ev.user),
        source_address: opt(&ev.source_address),
        technician: opt(&ev.technician),
        session_id: opt(&ev.session_id),
        privilege: opt(&ev.privilege),
        granted: (sec::kind(e) == SecurityEventKind::PrivilegeChange).then_some(ev.granted),
        actor: opt(&ev.actor),
        summary: sec::summary(e),
    };
    // Strings, numbers, booleans and nulls only: cannot fail.
    if serde_json::to_writer(&mut *out, &j).is_err() {
        out.extend_from_slice(b"{}");
    }
}

/// Appends the alert's JSON encoding (one object, no trailing newline) to
/// `out`.
pub fn encode_alert(a: &AlertEvent, out: &mut Vec<u8>) {
    let j = AlertJson {
        schema: ALERT_SCHEMA,
        id: &a.id,
        fingerprint: &a.fingerprint,
        rule: &a.rule,
        kind: a.kind.as_str(),
        severity: a.severity.as_str(),
        status: a.status.as_str(),
        suppressed: a.suppressed,
        tenant: &a.tenant,
        agent: &a.agent,
        hostname: a.hostname.as_deref(),
        metric: a.metric.as_deref(),
        labels: Labels(parse_canonical_labels(&a.labels)),
        value: finite(a.value),
        threshold: finite(a.threshold),
        predicted_at_ms: a.predicted_at_ms,
        predicted_at: a.predicted_at_ms.map(rfc3339_ms),
        window_start_ms: a.window_start_ms,
        window_end_ms: a.window_end_ms,
        started_at_ms: a.started_at_ms,
        started_at: rfc3339_ms(a.started_at_ms),
        resolved_at_ms: a.resolved_at_ms,
        resolved_at: a.resolved_at_ms.map(rfc3339_ms),
        resolve_reason: a.resolve_reason.map(|r| r.as_str()),
        flaps: a.flaps,
        event_time_ms: a.event_time_ms,
        event_time: rfc3339_ms(a.event_time_ms),
        summary: &a.summary,
    };
    // Serialising this struct into a Vec cannot fail: every field is a
    // string, number, bool, null or string map, and non-finite floats were
    // mapped to null above.
    if serde_json::to_writer(&mut *out, &j).is_err() {
        out.extend_from_slice(b"{}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vigil_ops::model::{AlertStatus, DetectorKind, ResolveReason, Severity};

    #[test]
    fn security_events_have_their_kinds_fields_and_nulls() {
        let rows = crate::encoding::security::testing::every_kind();
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|e| {
                let mut out = Vec::new();
                encode_security_event(e, &mut out);
                serde_json::from_slice(&out).unwrap()
            })
            .collect();
        assert_eq!(v[0]["schema"], SECURITY_EVENT_SCHEMA);
        assert_eq!(v[0]["kind"], "login_failure");
        assert_eq!(v[0]["severity"], "warning");
        assert_eq!(v[0]["user"], "root");
        assert_eq!(v[0]["source_address"], "203.0.113.50");
        assert_eq!(v[0]["event_time"], "2026-11-03T00:00:01.234Z");
        assert!(v[0]["technician"].is_null() && v[0]["granted"].is_null());
        assert_eq!(v[2]["session_id"], "s-42");
        assert!(v[2]["user"].is_null());
        assert_eq!(
            (&v[4]["granted"], &v[5]["granted"]),
            (&json!(true), &json!(false))
        );
        assert!(v[5]["actor"].is_null());
        assert_eq!(v[4]["summary"], sec::summary(&rows[4]));
    }

    #[test]
    fn encodes_labels_as_object_and_times_twice() {
        let a = AlertEvent {
            id: "i".into(),
            fingerprint: "f".into(),
            rule: "disk_high".into(),
            kind: DetectorKind::Threshold,
            severity: Severity::Warning,
            status: AlertStatus::Resolved,
            suppressed: false,
            tenant: "t".into(),
            agent: "a".into(),
            hostname: None,
            metric: Some("disk_used_pct".into()),
            labels: "mount=/data,x=a\\,b".into(),
            value: Some(f64::NAN),
            threshold: Some(90.0),
            predicted_at_ms: None,
            window_start_ms: Some(0),
            window_end_ms: Some(60_000),
            started_at_ms: 0,
            resolved_at_ms: Some(60_000),
            resolve_reason: Some(ResolveReason::RuleChanged),
            flaps: Some(3),
            event_time_ms: 60_000,
            summary: "s".into(),
        };
        let mut out = Vec::new();
        encode_alert(&a, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["schema"], ALERT_SCHEMA);
        assert_eq!(v["labels"]["mount"], "/data");
        assert_eq!(v["labels"]["x"], "a,b");
        assert!(v["value"].is_null());
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["resolved_at"], "1970-01-01T00:01:00.000Z");
        assert_eq!(v["resolve_reason"], "rule_changed");
        assert_eq!(v["flaps"], 3);
        let mut firing = a.clone();
        firing.status = AlertStatus::Firing;
        firing.resolve_reason = None;
        firing.flaps = None;
        out.clear();
        encode_alert(&firing, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["resolve_reason"].is_null());
        assert!(v["flaps"].is_null());
    }
}
