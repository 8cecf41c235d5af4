//! OCSF: one alert event as an OCSF Detection Finding (class 2004,
//! category 2 "Findings"), JSON, schema version [`OCSF_VERSION`] with the
//! `host` profile (the agent is the `device`).
//!
//! Every attribute the schema requires for the class, its base event and
//! the objects used is always present (`activity_id`, `category_uid`,
//! `class_uid`, `type_uid`, `severity_id`, `time`, `metadata.product.
//! vendor_name`, `metadata.version`, `finding_info.uid`,
//! `finding_info.title`, `device.type_id`); optional attributes are left
//! out rather than written as null (the schema's types do not admit null).
//! Times are milliseconds since the epoch. The full mapping is in
//! `docs/siem.md`.
//!
//! | Vigil                 | OCSF                                                   |
//! |-----------------------|--------------------------------------------------------|
//! | firing / resolved     | `activity_id` 1 Create / 3 Close, `type_uid` 2004xx    |
//! | firing (suppressed)   | `status_id` 1 New (3 Suppressed); resolved: 4 Resolved |
//! | info/warning/critical | `severity_id` 1 Informational / 3 Medium / 5 Critical  |
//! | id                    | `finding_info.uid`                                     |
//! | rule, summary         | `finding_info.title`, `finding_info.desc`, `message`   |
//! | tenant                | `metadata.tenant_uid`                                  |
//! | agent, hostname       | `device.uid`, `device.name`, `device.hostname`         |
//!
//! A security event (`vigil export --dataset security_events`) is an
//! Identity & Access Management event (category 3) with the `host`
//! profile: logins and remote sessions are **Authentication** (class
//! 3002; a session is a `Remote Interactive` logon of the technician,
//! its end a logoff), privilege changes **User Access Management** (class
//! 3005). See [`security_event`] and `docs/siem.md`.

use serde_json::{json, Map, Value};
use vigil_ops::model::{parse_canonical_labels, AlertEvent, AlertStatus, DetectorKind, Severity};
use vigil_ops::SecurityEventRow;
use vigil_proto::v1::SecurityEventKind;

use super::security::{self as sec, opt};
use super::{finite, Encoding, PRODUCT, PRODUCT_VERSION, VENDOR};

/// The OCSF schema version the encoding targets (`metadata.version`).
pub const OCSF_VERSION: &str = "1.3.0";
/// Detection Finding.
pub const CLASS_UID: u32 = 2004;
/// Findings.
pub const CATEGORY_UID: u32 = 2;
/// Authentication (logins, remote sessions).
pub const AUTHENTICATION_UID: u32 = 3002;
/// User Access Management (privilege changes).
pub const USER_ACCESS_UID: u32 = 3005;
/// Identity & Access Management.
pub const IAM_CATEGORY_UID: u32 = 3;
/// Longest string the OCSF schema admits (`string_t`), in characters.
const MAX_STRING_CHARS: usize = 65_535;

/// The OCSF Detection Finding encoding.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ocsf;

impl Encoding for Ocsf {
    fn name(&self) -> &'static str {
        "ocsf"
    }

    fn content_type(&self) -> &'static str {
        "application/json"
    }

    fn file_extension(&self) -> &'static str {
        "jsonl"
    }

    fn encode(&self, a: &AlertEvent, out: &mut Vec<u8>) {
        // Serialising a Value into a Vec cannot fail.
        if serde_json::to_writer(&mut *out, &finding(a)).is_err() {
            out.extend_from_slice(b"{}");
        }
    }

    fn encode_security_event(&self, e: &SecurityEventRow, out: &mut Vec<u8>) {
        if serde_json::to_writer(&mut *out, &security_event(e)).is_err() {
            out.extend_from_slice(b"{}");
        }
    }
}

/// `activity_id` and its caption: a firing event creates the finding, a
/// resolved one closes it.
pub fn activity(status: AlertStatus) -> (u32, &'static str) {
    match status {
        AlertStatus::Firing => (1, "Create"),
        AlertStatus::Resolved => (3, "Close"),
    }
}

/// `status_id` and its caption.
pub fn status(status: AlertStatus, suppressed: bool) -> (u32, &'static str) {
    match (status, suppressed) {
        (AlertStatus::Firing, false) => (1, "New"),
        (AlertStatus::Firing, true) => (3, "Suppressed"),
        (AlertStatus::Resolved, _) => (4, "Resolved"),
    }
}

/// `severity_id` and its caption.
pub fn severity(s: Severity) -> (u32, &'static str) {
    match s {
        Severity::Info => (1, "Informational"),
        Severity::Warning => (3, "Medium"),
        Severity::Critical => (5, "Critical"),
    }
}

/// `finding_info.analytic.type_id` and its caption for a detector family.
pub fn analytic_type(k: DetectorKind) -> (u32, &'static str) {
    match k {
        DetectorKind::Threshold
        | DetectorKind::Offline
        | DetectorKind::InvalidInput
        | DetectorKind::Status
        | DetectorKind::Security => (1, "Rule"),
        DetectorKind::Anomaly => (2, "Behavioral"),
        DetectorKind::Trend => (3, "Statistical"),
    }
}

/// Whether `s` is a host name as OCSF's `hostname_t` admits it (labels of
/// letters, digits and inner hyphens, separated by dots).
pub fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn text(s: &str) -> Value {
    match s.char_indices().nth(MAX_STRING_CHARS) {
        Some((cut, _)) => Value::String(s[..cut].to_string()),
        None => Value::String(s.to_string()),
    }
}

/// The finding as a JSON value.
pub fn finding(a: &AlertEvent) -> Value {
    let (activity_id, activity_name) = activity(a.status);
    let (status_id, status_name) = status(a.status, a.suppressed);
    let (severity_id, severity_name) = severity(a.severity);
    let (analytic_id, analytic_name) = analytic_type(a.kind);
    let labels = parse_canonical_labels(&a.labels);
    let label_strings: Vec<Value> = labels
        .iter()
        .map(|(k, v)| text(&format!("{k}={v}")))
        .collect();

    let mut metadata = Map::new();
    metadata.insert("version".into(), json!(OCSF_VERSION));
    metadata.insert(
        "product".into(),
        json!({"name": PRODUCT, "vendor_name": VENDOR, "version": PRODUCT_VERSION}),
    );
    metadata.insert(
        "uid".into(),
        text(&format!("{}-{}", a.id, a.status.as_str())),
    );
    metadata.insert("correlation_uid".into(), text(&a.fingerprint));
    metadata.insert("tenant_uid".into(), text(&a.tenant));
    metadata.insert("profiles".into(), json!(["host"]));
    if !label_strings.is_empty() {
        metadata.insert("labels".into(), Value::Array(label_strings.clone()));
    }

    let mut info = Map::new();
    info.insert("uid".into(), text(&a.id));
    info.insert("title".into(), text(&a.rule));
    info.insert("desc".into(), text(&a.summary));
    info.insert("types".into(), json!([a.kind.as_str()]));
    info.insert(
        "analytic".into(),
        json!({
            "name": text(&a.rule),
            "type_id": analytic_id,
            "type": analytic_name,
            "category": a.kind.as_str(),
        }),
    );
    info.insert("created_time".into(), json!(a.started_at_ms));
    info.insert("first_seen_time".into(), json!(a.started_at_ms));
    info.insert("last_seen_time".into(), json!(a.event_time_ms));
    if a.status == AlertStatus::Resolved {
        info.insert("modified_time".into(), json!(a.event_time_ms));
    }

    let mut f = Map::new();
    f.insert("activity_id".into(), json!(activity_id));
    f.insert("activity_name".into(), json!(activity_name));
    f.insert("category_uid".into(), json!(CATEGORY_UID));
    f.insert("category_name".into(), json!("Findings"));
    f.insert("class_uid".into(), json!(CLASS_UID));
    f.insert("class_name".into(), json!("Detection Finding"));
    f.insert("type_uid".into(), json!(CLASS_UID * 100 + activity_id));
    f.insert(
        "type_name".into(),
        json!(format!("Detection Finding: {activity_name}")),
    );
    f.insert("severity_id".into(), json!(severity_id));
    f.insert("severity".into(), json!(severity_name));
    f.insert("status_id".into(), json!(status_id));
    f.insert("status".into(), json!(status_name));
    f.insert("time".into(), json!(a.event_time_ms));
    f.insert("timezone_offset".into(), json!(0));
    f.insert("start_time".into(), json!(a.started_at_ms));
    if let Some(end) = a.resolved_at_ms {
        f.insert("end_time".into(), json!(end));
        f.insert(
            "duration".into(),
            json!(end.saturating_sub(a.started_at_ms)),
        );
    }
    f.insert("message".into(), text(&a.summary));
    f.insert("metadata".into(), Value::Object(metadata));
    f.insert("finding_info".into(), Value::Object(info));
    f.insert("device".into(), device(&a.agent, a.hostname.as_deref()));
    if let Some(metric) = &a.metric {
        let mut r = Map::new();
        r.insert("type".into(), json!("metric"));
        r.insert("name".into(), text(metric));
        r.insert("uid".into(), text(&a.fingerprint));
        if !label_strings.is_empty() {
            r.insert("labels".into(), Value::Array(label_strings));
        }
        f.insert("resources".into(), json!([r]));
    }
    f.insert("unmapped".into(), unmapped(a, &labels));
    Value::Object(f)
}

/// The OCSF `device` object of an agent.
fn device(agent: &str, hostname: Option<&str>) -> Value {
    let mut device = Map::new();
    device.insert("type_id".into(), json!(0));
    device.insert("type".into(), json!("Unknown"));
    device.insert("uid".into(), text(agent));
    if let Some(h) = hostname {
        device.insert("name".into(), text(h));
        if is_hostname(h) {
            device.insert("hostname".into(), text(h));
        }
    }
    Value::Object(device)
}

/// `user` object named `name`.
fn user(name: &str) -> Value {
    json!({ "name": text(name) })
}

/// A network endpoint at `address`: `ip` for an IP address, else `name`
/// (and `hostname` when it has the host-name syntax).
fn endpoint(address: &str) -> Value {
    let mut m = Map::new();
    if sec::is_ip(address) {
        m.insert("ip".into(), text(address));
    } else {
        m.insert("name".into(), text(address));
        if is_hostname(address) {
            m.insert("hostname".into(), text(address));
        }
    }
    Value::Object(m)
}

/// A security event as an OCSF Authentication (3002) or User Access
/// Management (3005) event:
///
/// | kind                   | class | `activity_id`          | `status_id`  | `user`     |
/// |------------------------|-------|------------------------|--------------|------------|
/// | `login_success`        | 3002  | 1 Logon                | 1 Success    | user       |
/// | `login_failure`        | 3002  | 1 Logon                | 2 Failure    | user       |
/// | `remote_session_start` | 3002  | 1 Logon (type 10)      | 1 Success    | technician |
/// | `remote_session_end`   | 3002  | 2 Logoff (type 10)     | 1 Success    | technician |
/// | `privilege_change`     | 3005  | 1 Assign / 2 Revoke    | 1 Success    | user       |
///
/// The agent is `device`, and for Authentication also `dst_endpoint`
/// (the class requires a `service` or a `dst_endpoint`: the endpoint
/// logged on to); a login's source address is `src_endpoint`; a
/// session is `session.uid` with `is_remote`; a privilege change has
/// `privileges` and, when known, `actor.user`. `severity_id` follows
/// [`sec::severity`] through [`severity`].
pub fn security_event(e: &SecurityEventRow) -> Value {
    let ev = &e.event;
    let kind = sec::kind(e);
    let (class_uid, class_name) = match kind {
        SecurityEventKind::PrivilegeChange => (USER_ACCESS_UID, "User Access Management"),
        _ => (AUTHENTICATION_UID, "Authentication"),
    };
    let (activity_id, activity_name) = match kind {
        SecurityEventKind::RemoteSessionEnd => (2, "Logoff"),
        SecurityEventKind::PrivilegeChange if ev.granted => (1, "Assign Privileges"),
        SecurityEventKind::PrivilegeChange => (2, "Revoke Privileges"),
        _ => (1, "Logon"),
    };
    let (status_id, status_name) = match kind {
        SecurityEventKind::LoginFailure => (2, "Failure"),
        _ => (1, "Success"),
    };
    let (severity_id, severity_name) = severity(sec::severity(e));
    let mut metadata = Map::new();
    metadata.insert("version".into(), json!(OCSF_VERSION));
    metadata.insert(
        "product".into(),
        json!({"name": PRODUCT, "vendor_name": VENDOR, "version": PRODUCT_VERSION}),
    );
    metadata.insert("tenant_uid".into(), text(&e.tenant));
    metadata.insert("profiles".into(), json!(["host"]));
    metadata.insert("event_code".into(), json!(sec::kind_str(e)));

    let mut f = Map::new();
    f.insert("activity_id".into(), json!(activity_id));
    f.insert("activity_name".into(), json!(activity_name));
    f.insert("category_uid".into(), json!(IAM_CATEGORY_UID));
    f.insert(
        "category_name".into(),
        json!("Identity & Access Management"),
    );
    f.insert("class_uid".into(), json!(class_uid));
    f.insert("class_name".into(), json!(class_name));
    f.insert("type_uid".into(), json!(class_uid * 100 + activity_id));
    f.insert(
        "type_name".into(),
        json!(format!("{class_name}: {activity_name}")),
    );
    f.insert("severity_id".into(), json!(severity_id));
    f.insert("severity".into(), json!(severity_name));
    f.insert("status_id".into(), json!(status_id));
    f.insert("status".into(), json!(status_name));
    f.insert("time".into(), json!(ev.timestamp_ms));
    f.insert("timezone_offset".into(), json!(0));
    f.insert("message".into(), text(&sec::summary(e)));
    f.insert("metadata".into(), Value::Object(metadata));
    f.insert("device".into(), device(&e.agent, e.hostname.as_deref()));
    if class_uid == AUTHENTICATION_UID {
        let mut dst = Map::new();
        dst.insert("uid".into(), text(&e.agent));
        if let Some(h) = &e.hostname {
            dst.insert("name".into(), text(h));
            if is_hostname(h) {
                dst.insert("hostname".into(), text(h));
            }
        }
        f.insert("dst_endpoint".into(), Value::Object(dst));
    }
    let mut vigil = Map::new();
    vigil.insert("kind".into(), json!(sec::kind_str(e)));
    vigil.insert("tenant".into(), text(&e.tenant));
    vigil.insert("agent".into(), text(&e.agent));
    match kind {
        SecurityEventKind::RemoteSessionStart | SecurityEventKind::RemoteSessionEnd => {
            f.insert("user".into(), user(&ev.technician));
            f.insert("logon_type_id".into(), json!(10));
            f.insert("logon_type".into(), json!("Remote Interactive"));
            f.insert("is_remote".into(), json!(true));
            f.insert(
                "session".into(),
                json!({ "uid": text(&ev.session_id), "is_remote": true }),
            );
            vigil.insert("technician".into(), text(&ev.technician));
            vigil.insert("session_id".into(), text(&ev.session_id));
        }
        SecurityEventKind::PrivilegeChange => {
            f.insert("user".into(), user(&ev.user));
            f.insert("privileges".into(), json!([text(&ev.privilege)]));
            if let Some(a) = opt(&ev.actor) {
                f.insert("actor".into(), json!({ "user": user(a) }));
            }
            vigil.insert("granted".into(), json!(ev.granted));
        }
        _ => {
            f.insert("user".into(), user(&ev.user));
            if let Some(src) = opt(&ev.source_address) {
                f.insert("src_endpoint".into(), endpoint(src));
                f.insert("is_remote".into(), json!(true));
            }
        }
    }
    f.insert("unmapped".into(), json!({ "vigil": vigil }));
    Value::Object(f)
}

/// Vigil's fields that OCSF has no attribute for, under `unmapped.vigil`.
fn unmapped(a: &AlertEvent, labels: &[(String, String)]) -> Value {
    let mut v = Map::new();
    v.insert("fingerprint".into(), text(&a.fingerprint));
    v.insert("rule".into(), text(&a.rule));
    v.insert("kind".into(), json!(a.kind.as_str()));
    v.insert("severity".into(), json!(a.severity.as_str()));
    v.insert("status".into(), json!(a.status.as_str()));
    v.insert("suppressed".into(), json!(a.suppressed));
    v.insert("tenant".into(), text(&a.tenant));
    v.insert("agent".into(), text(&a.agent));
    if let Some(m) = &a.metric {
        v.insert("metric".into(), text(m));
    }
    let l: Map<String, Value> = labels.iter().map(|(k, x)| (k.clone(), text(x))).collect();
    v.insert("labels".into(), Value::Object(l));
    let opt_f = |x: Option<f64>| finite(x).map(|x| json!(x));
    let opt_i = |x: Option<i64>| x.map(|x| json!(x));
    for (k, x) in [
        ("value", opt_f(a.value)),
        ("threshold", opt_f(a.threshold)),
        ("predicted_at_ms", opt_i(a.predicted_at_ms)),
        ("window_start_ms", opt_i(a.window_start_ms)),
        ("window_end_ms", opt_i(a.window_end_ms)),
        (
            "resolve_reason",
            a.resolve_reason.map(|r| json!(r.as_str())),
        ),
        ("flaps", a.flaps.map(|f| json!(f))),
    ] {
        if let Some(x) = x {
            v.insert(k.into(), x);
        }
    }
    json!({ "vigil": v })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::testing::{firing, offline, resolved};

    fn encode(a: &AlertEvent) -> Value {
        let mut out = Vec::new();
        Ocsf.encode(a, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn required_attributes_of_the_class_are_present() {
        for a in [firing(), resolved(), offline()] {
            let v = encode(&a);
            for k in [
                "activity_id",
                "category_uid",
                "class_uid",
                "finding_info",
                "metadata",
                "severity_id",
                "time",
                "type_uid",
            ] {
                assert!(v.get(k).is_some(), "{k} missing: {v}");
            }
            assert_eq!(v["class_uid"], 2004);
            assert_eq!(v["category_uid"], 2);
            assert_eq!(v["metadata"]["version"], OCSF_VERSION);
            assert_eq!(v["metadata"]["product"]["vendor_name"], VENDOR);
            assert_eq!(v["finding_info"]["uid"], a.id.as_str());
            assert_eq!(v["finding_info"]["title"], a.rule.as_str());
            assert_eq!(v["device"]["type_id"], 0);
            assert_eq!(v["time"], a.event_time_ms);
            assert_eq!(v["metadata"]["tenant_uid"], "acme");
            assert_eq!(v["device"]["uid"], "agent-7");
            assert_eq!(
                v["type_uid"].as_u64().unwrap(),
                2004 * 100 + v["activity_id"].as_u64().unwrap()
            );
            // No nulls anywhere: OCSF's types do not admit them.
            assert!(!v.to_string().contains("null"), "{v}");
        }
    }

    #[test]
    fn lifecycle_maps_to_activity_and_status() {
        let f = encode(&firing());
        assert_eq!(
            (f["activity_id"].as_u64(), f["status_id"].as_u64()),
            (Some(1), Some(1))
        );
        assert!(f.get("end_time").is_none());
        let r = encode(&resolved());
        assert_eq!(
            (r["activity_id"].as_u64(), r["status_id"].as_u64()),
            (Some(3), Some(4))
        );
        assert_eq!(r["end_time"], 1_793_667_600_000i64);
        assert_eq!(r["duration"], 3_600_000);
        assert_eq!(r["type_name"], "Detection Finding: Close");
        let mut s = firing();
        s.suppressed = true;
        assert_eq!(encode(&s)["status"], "Suppressed");
        s.status = AlertStatus::Resolved;
        assert_eq!(encode(&s)["status_id"], 4);
    }

    #[test]
    fn severity_mapping_is_exhaustive_and_increasing() {
        let all = [Severity::Info, Severity::Warning, Severity::Critical];
        let ids: Vec<u32> = all.iter().map(|s| severity(*s).0).collect();
        assert_eq!(ids, [1, 3, 5]);
        for s in all {
            let mut a = firing();
            a.severity = s;
            let v = encode(&a);
            assert_eq!(v["severity_id"], severity(s).0);
            assert_eq!(v["severity"], severity(s).1);
        }
    }

    #[test]
    fn hostnames_outside_the_ocsf_syntax_stay_in_the_name_only() {
        assert!(is_hostname("db-1.acme.example"));
        assert!(is_hostname("a"));
        for bad in ["", "-a", "a-", "a..b", "db 1", "höst", "a_b", "a."] {
            assert!(!is_hostname(bad), "{bad}");
        }
        let mut a = firing();
        a.hostname = Some("DB_01 (primary)".into());
        let v = encode(&a);
        assert_eq!(v["device"]["name"], "DB_01 (primary)");
        assert!(v["device"].get("hostname").is_none());
        let v = encode(&offline());
        assert!(v["device"].get("name").is_none());
        assert!(v.get("resources").is_none());
    }

    #[test]
    fn vigil_fields_without_an_ocsf_attribute_are_unmapped() {
        let v = encode(&resolved());
        let u = &v["unmapped"]["vigil"];
        assert_eq!(u["fingerprint"], "0123456789abcdef");
        assert_eq!(u["value"], 71.0);
        assert_eq!(u["threshold"], 90.0);
        assert_eq!(u["labels"]["mount"], "/data");
        assert_eq!(u["resolve_reason"], "cleared");
        assert_eq!(u["flaps"], 2);
        let mut a = firing();
        a.value = Some(f64::INFINITY);
        assert!(encode(&a)["unmapped"]["vigil"].get("value").is_none());
        assert_eq!(v["resources"][0]["labels"][0], "mount=/data");
    }

    #[test]
    fn security_events_map_to_authentication_and_user_access() {
        let rows = crate::encoding::security::testing::every_kind();
        let v: Vec<Value> = rows
            .iter()
            .map(|e| {
                let mut out = Vec::new();
                Ocsf.encode_security_event(e, &mut out);
                serde_json::from_slice(&out).unwrap()
            })
            .collect();
        let brief: Vec<(u64, u64, u64, u64, &str)> = v
            .iter()
            .map(|x| {
                (
                    x["class_uid"].as_u64().unwrap(),
                    x["activity_id"].as_u64().unwrap(),
                    x["status_id"].as_u64().unwrap(),
                    x["severity_id"].as_u64().unwrap(),
                    x["user"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            brief,
            vec![
                (3002, 1, 2, 3, "root"),
                (3002, 1, 1, 1, "j.doe"),
                (3002, 1, 1, 1, "tech.ana"),
                (3002, 2, 1, 1, "tech.ana"),
                (3005, 1, 1, 3, "j.doe"),
                (3005, 2, 1, 3, "j.doe"),
            ]
        );
        for x in &v {
            assert_eq!(x["category_uid"], 3);
            assert_eq!(
                x["type_uid"].as_u64().unwrap(),
                x["class_uid"].as_u64().unwrap() * 100 + x["activity_id"].as_u64().unwrap()
            );
            assert_eq!(x["time"], rows[0].event.timestamp_ms);
            assert_eq!(x["device"]["uid"], "agent-7");
            assert_eq!(x["metadata"]["tenant_uid"], "acme");
            assert!(!x.to_string().contains("null"), "{x}");
        }
        assert_eq!(v[0]["src_endpoint"]["ip"], "203.0.113.50");
        // Authentication needs a service or a dst_endpoint: the agent.
        for x in &v[..4] {
            assert_eq!(x["dst_endpoint"]["uid"], "agent-7");
            assert_eq!(x["dst_endpoint"]["hostname"], "db-1.acme.example");
        }
        assert!(v[4].get("dst_endpoint").is_none());
        assert_eq!(v[1]["src_endpoint"]["hostname"], "laptop-3.acme.example");
        assert_eq!(v[2]["session"]["uid"], "s-42");
        assert_eq!(v[2]["logon_type_id"], 10);
        assert_eq!(v[4]["privileges"][0], "Administrators");
        assert_eq!(v[4]["actor"]["user"]["name"], "admin");
        assert!(v[5].get("actor").is_none());
    }

    #[test]
    fn long_strings_are_cut_to_the_schema_limit() {
        let mut a = firing();
        a.summary = "é".repeat(MAX_STRING_CHARS + 10);
        let v = encode(&a);
        assert_eq!(
            v["message"].as_str().unwrap().chars().count(),
            MAX_STRING_CHARS
        );
    }
}
