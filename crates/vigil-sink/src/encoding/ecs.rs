//! ECS: one alert event as an Elastic Common Schema document (JSON, nested
//! objects), version [`ECS_VERSION`], for Elastic users.
//!
//! `event.kind` is `alert`, `event.category` `host`, `event.type` `start`
//! (firing) or `end` (resolved); the rule is `rule.*`, the agent's host
//! `host.*`, the tenant `organization.id`, the series labels `labels.*`
//! (dots in label names become `_`, as ECS labels are flat keywords).
//! Vigil's fields that ECS has no field for are under the custom `vigil.*`
//! field set. Optional fields are left out rather than written as null.
//! The full mapping is in `docs/siem.md`.
//!
//! A security event (`vigil export --dataset security_events`) is an
//! `event.kind` `event` document; see [`security_document`].

use serde_json::{json, Map, Value};
use vigil_ops::model::{parse_canonical_labels, AlertEvent, AlertStatus, Severity};
use vigil_ops::SecurityEventRow;
use vigil_proto::v1::SecurityEventKind;

use super::security::{self as sec, opt};
use super::{finite, Encoding, PRODUCT};
use crate::time::rfc3339_ms;

/// The ECS version the documents follow (`ecs.version`).
pub const ECS_VERSION: &str = "8.11.0";

/// The ECS encoding.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ecs;

impl Encoding for Ecs {
    fn name(&self) -> &'static str {
        "ecs"
    }

    fn content_type(&self) -> &'static str {
        "application/json"
    }

    fn file_extension(&self) -> &'static str {
        "jsonl"
    }

    fn encode(&self, a: &AlertEvent, out: &mut Vec<u8>) {
        // Serialising a Value into a Vec cannot fail.
        if serde_json::to_writer(&mut *out, &document(a)).is_err() {
            out.extend_from_slice(b"{}");
        }
    }

    fn encode_security_event(&self, e: &SecurityEventRow, out: &mut Vec<u8>) {
        if serde_json::to_writer(&mut *out, &security_document(e)).is_err() {
            out.extend_from_slice(b"{}");
        }
    }
}

/// The `host` object of an agent.
fn host(agent: &str, hostname: Option<&str>) -> Value {
    let mut host = Map::new();
    host.insert("id".into(), json!(agent));
    host.insert("name".into(), json!(hostname.unwrap_or(agent)));
    if let Some(h) = hostname {
        host.insert("hostname".into(), json!(h));
    }
    Value::Object(host)
}

/// A security event as an ECS document: `event.kind` `event`,
/// `event.action` the kind; logins and remote sessions are
/// `event.category` `authentication` (sessions also `session`),
/// `event.type` `start` (a login, a session start) or `end` (a session
/// end), `event.outcome` `success` or `failure`; privilege changes are
/// `iam` / `change`, with `user.target.name` the account, `user.name` the
/// actor when known and `group.name` the privilege. The account of a
/// login and the technician of a session are `user.name`; a login's
/// source address is `source.address` (and `source.ip` or
/// `source.domain`); every user named is in `related.user`.
pub fn security_document(e: &SecurityEventRow) -> Value {
    let ev = &e.event;
    let kind = sec::kind(e);
    let (category, ty, outcome): (&[&str], &str, &str) = match kind {
        SecurityEventKind::LoginFailure => (&["authentication"], "start", "failure"),
        SecurityEventKind::RemoteSessionStart => {
            (&["authentication", "session"], "start", "success")
        }
        SecurityEventKind::RemoteSessionEnd => (&["authentication", "session"], "end", "success"),
        SecurityEventKind::PrivilegeChange => (&["iam"], "change", "success"),
        _ => (&["authentication"], "start", "success"),
    };
    let sev = sec::severity(e);
    let mut event = Map::new();
    event.insert("kind".into(), json!("event"));
    event.insert("category".into(), json!(category));
    event.insert("type".into(), json!([ty]));
    event.insert("outcome".into(), json!(outcome));
    event.insert("action".into(), json!(sec::kind_str(e)));
    event.insert("severity".into(), json!(severity(sev)));
    event.insert("provider".into(), json!("vigil"));
    event.insert("module".into(), json!("vigil"));
    event.insert("dataset".into(), json!("vigil.security_events"));

    let mut user = Map::new();
    let mut related = Vec::new();
    let mut vigil = Map::new();
    vigil.insert("kind".into(), json!(sec::kind_str(e)));
    match kind {
        SecurityEventKind::RemoteSessionStart | SecurityEventKind::RemoteSessionEnd => {
            user.insert("name".into(), json!(ev.technician));
            related.push(ev.technician.as_str());
            vigil.insert("session_id".into(), json!(ev.session_id));
        }
        SecurityEventKind::PrivilegeChange => {
            if let Some(a) = opt(&ev.actor) {
                user.insert("name".into(), json!(a));
                related.push(a);
            }
            user.insert("target".into(), json!({ "name": ev.user }));
            related.push(ev.user.as_str());
            vigil.insert("granted".into(), json!(ev.granted));
        }
        _ => {
            user.insert("name".into(), json!(ev.user));
            related.push(ev.user.as_str());
        }
    }

    let mut d = Map::new();
    d.insert("@timestamp".into(), json!(rfc3339_ms(ev.timestamp_ms)));
    d.insert("message".into(), json!(sec::summary(e)));
    d.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    d.insert("event".into(), Value::Object(event));
    d.insert("log".into(), json!({ "level": sev.as_str() }));
    d.insert("host".into(), host(&e.agent, e.hostname.as_deref()));
    d.insert("organization".into(), json!({ "id": e.tenant }));
    if !user.is_empty() {
        d.insert("user".into(), Value::Object(user));
    }
    if kind == SecurityEventKind::PrivilegeChange {
        d.insert("group".into(), json!({ "name": ev.privilege }));
    }
    if let Some(src) = opt(&ev.source_address) {
        let mut source = Map::new();
        source.insert("address".into(), json!(src));
        let key = if sec::is_ip(src) { "ip" } else { "domain" };
        source.insert(key.into(), json!(src));
        d.insert("source".into(), Value::Object(source));
    }
    related.dedup();
    if !related.is_empty() {
        d.insert("related".into(), json!({ "user": related }));
    }
    d.insert("vigil".into(), Value::Object(vigil));
    Value::Object(d)
}

/// `event.severity` of a Vigil severity (the CEF scale: 1, 5, 9).
pub fn severity(s: Severity) -> u8 {
    super::cef::severity(s)
}

/// The document as a JSON value.
pub fn document(a: &AlertEvent) -> Value {
    let mut event = Map::new();
    event.insert("kind".into(), json!("alert"));
    event.insert("category".into(), json!(["host"]));
    let ty = match a.status {
        AlertStatus::Firing => "start",
        AlertStatus::Resolved => "end",
    };
    event.insert("type".into(), json!([ty]));
    event.insert(
        "id".into(),
        json!(format!("{}-{}", a.id, a.status.as_str())),
    );
    event.insert(
        "action".into(),
        json!(format!("alert-{}", a.status.as_str())),
    );
    event.insert("severity".into(), json!(severity(a.severity)));
    event.insert("start".into(), json!(rfc3339_ms(a.started_at_ms)));
    if let Some(end) = a.resolved_at_ms {
        event.insert("end".into(), json!(rfc3339_ms(end)));
        // ECS durations are nanoseconds.
        let ns = end
            .saturating_sub(a.started_at_ms)
            .saturating_mul(1_000_000);
        event.insert("duration".into(), json!(ns));
    }
    if let Some(r) = a.resolve_reason {
        event.insert("reason".into(), json!(r.as_str()));
    }
    event.insert("provider".into(), json!("vigil"));
    event.insert("module".into(), json!("vigil"));
    event.insert("dataset".into(), json!("vigil.alerts"));

    let labels: Map<String, Value> = parse_canonical_labels(&a.labels)
        .into_iter()
        .map(|(k, v)| (k.replace('.', "_"), Value::String(v)))
        .collect();

    let mut vigil = Map::new();
    vigil.insert("fingerprint".into(), json!(a.fingerprint));
    vigil.insert("incident_id".into(), json!(a.id));
    vigil.insert("status".into(), json!(a.status.as_str()));
    vigil.insert("severity".into(), json!(a.severity.as_str()));
    vigil.insert("suppressed".into(), json!(a.suppressed));
    if let Some(m) = &a.metric {
        vigil.insert("metric".into(), json!(m));
    }
    for (k, x) in [
        ("value", finite(a.value)),
        ("threshold", finite(a.threshold)),
    ] {
        if let Some(x) = x {
            vigil.insert(k.into(), json!(x));
        }
    }
    for (k, x) in [
        ("predicted_at", a.predicted_at_ms),
        ("window_start", a.window_start_ms),
        ("window_end", a.window_end_ms),
    ] {
        if let Some(x) = x {
            vigil.insert(k.into(), json!(rfc3339_ms(x)));
        }
    }
    if let Some(f) = a.flaps {
        vigil.insert("flaps".into(), json!(f));
    }

    let mut d = Map::new();
    d.insert("@timestamp".into(), json!(rfc3339_ms(a.event_time_ms)));
    d.insert("message".into(), json!(a.summary));
    d.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    d.insert("event".into(), Value::Object(event));
    d.insert("log".into(), json!({ "level": a.severity.as_str() }));
    d.insert(
        "rule".into(),
        json!({ "name": a.rule, "id": a.rule, "category": a.kind.as_str(), "ruleset": PRODUCT.to_ascii_lowercase() }),
    );
    d.insert("host".into(), host(&a.agent, a.hostname.as_deref()));
    d.insert("organization".into(), json!({ "id": a.tenant }));
    if !labels.is_empty() {
        d.insert("labels".into(), Value::Object(labels));
    }
    if a.suppressed {
        d.insert("tags".into(), json!(["suppressed"]));
    }
    d.insert("vigil".into(), Value::Object(vigil));
    Value::Object(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::testing::{firing, offline, resolved};

    fn encode(a: &AlertEvent) -> Value {
        let mut out = Vec::new();
        Ecs.encode(a, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn core_fields_are_set() {
        let v = encode(&firing());
        assert_eq!(v["@timestamp"], "2026-11-03T00:00:00.000Z");
        assert_eq!(v["event"]["kind"], "alert");
        assert_eq!(v["event"]["category"][0], "host");
        assert_eq!(v["event"]["type"][0], "start");
        assert_eq!(v["rule"]["name"], "disk_high");
        assert_eq!(v["host"]["name"], "db-1.acme.example");
        assert_eq!(v["host"]["id"], "agent-7");
        assert_eq!(v["organization"]["id"], "acme");
        assert_eq!(v["labels"]["mount"], "/data");
        assert_eq!(v["ecs"]["version"], ECS_VERSION);
        assert!(!v.to_string().contains("null"), "{v}");
        let r = encode(&resolved());
        assert_eq!(r["event"]["type"][0], "end");
        assert_eq!(r["event"]["duration"], 3_600_000_000_000i64);
        assert_eq!(r["event"]["reason"], "cleared");
        let o = encode(&offline());
        assert_eq!(o["host"]["name"], "agent-7");
        assert!(o.get("labels").is_none());
    }

    #[test]
    fn severity_mapping_is_exhaustive() {
        for (s, want) in [
            (Severity::Info, 1),
            (Severity::Warning, 5),
            (Severity::Critical, 9),
        ] {
            let mut a = firing();
            a.severity = s;
            assert_eq!(encode(&a)["event"]["severity"], want);
            assert_eq!(encode(&a)["log"]["level"], s.as_str());
        }
    }

    #[test]
    fn security_events_are_authentication_and_iam_events() {
        let rows = crate::encoding::security::testing::every_kind();
        let v: Vec<Value> = rows
            .iter()
            .map(|e| {
                let mut out = Vec::new();
                Ecs.encode_security_event(e, &mut out);
                serde_json::from_slice(&out).unwrap()
            })
            .collect();
        let brief: Vec<(String, String, String, String)> = v
            .iter()
            .map(|x| {
                (
                    x["event"]["category"][0].as_str().unwrap().into(),
                    x["event"]["type"][0].as_str().unwrap().into(),
                    x["event"]["outcome"].as_str().unwrap().into(),
                    x["user"]["name"].as_str().unwrap_or("-").into(),
                )
            })
            .collect();
        let b = |c: &str, t: &str, o: &str, u: &str| (c.into(), t.into(), o.into(), u.into());
        assert_eq!(
            brief,
            vec![
                b("authentication", "start", "failure", "root"),
                b("authentication", "start", "success", "j.doe"),
                b("authentication", "start", "success", "tech.ana"),
                b("authentication", "end", "success", "tech.ana"),
                b("iam", "change", "success", "admin"),
                b("iam", "change", "success", "-"),
            ]
        );
        assert_eq!(v[0]["source"]["ip"], "203.0.113.50");
        assert_eq!(v[1]["source"]["domain"], "laptop-3.acme.example");
        assert_eq!(v[2]["event"]["category"][1], "session");
        assert_eq!(v[2]["vigil"]["session_id"], "s-42");
        assert_eq!(v[4]["user"]["target"]["name"], "j.doe");
        assert_eq!(v[4]["group"]["name"], "Administrators");
        assert_eq!(v[4]["related"]["user"], json!(["admin", "j.doe"]));
        assert_eq!(v[5]["vigil"]["granted"], false);
        for x in &v {
            assert_eq!(x["event"]["kind"], "event");
            assert_eq!(x["host"]["id"], "agent-7");
            assert_eq!(x["organization"]["id"], "acme");
            assert_eq!(x["@timestamp"], "2026-11-03T00:00:01.234Z");
            assert!(!x.to_string().contains("null"), "{x}");
        }
    }

    #[test]
    fn dotted_label_names_become_flat_keys() {
        let mut a = firing();
        a.labels = "k8s.pod=web-1".into();
        assert_eq!(encode(&a)["labels"]["k8s_pod"], "web-1");
    }
}
