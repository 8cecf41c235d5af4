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

use serde_json::{json, Map, Value};
use vigil_ops::model::{parse_canonical_labels, AlertEvent, AlertStatus, Severity};

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

    let mut host = Map::new();
    host.insert("id".into(), json!(a.agent));
    host.insert(
        "name".into(),
        json!(a.hostname.as_deref().unwrap_or(&a.agent)),
    );
    if let Some(h) = &a.hostname {
        host.insert("hostname".into(), json!(h));
    }

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
    d.insert("host".into(), Value::Object(host));
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
    fn dotted_label_names_become_flat_keys() {
        let mut a = firing();
        a.labels = "k8s.pod=web-1".into();
        assert_eq!(encode(&a)["labels"]["k8s_pod"], "web-1");
    }
}
